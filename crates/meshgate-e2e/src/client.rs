//! HTTP clients for tests, built on hyper's connection API so a test decides exactly which
//! connection, protocol and headers are used (nothing is added behind its back: HTTP/1.1
//! requests carry the Host header the test set, or `127.0.0.1:port` by default).

use crate::body::{self, Body, BoxError};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A response read to its end.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: StatusCode,
    /// Protocol version the response came over.
    pub version: Version,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Resp {
    /// The body parsed as JSON; panics (showing the body) when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The `name` of the echo upstream that answered ("" when the body has none).
    pub fn name(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_owned))
            .unwrap_or_default()
    }

    /// A header the echo upstream received, by lower-case name.
    pub fn seen_header(&self, name: &str) -> Option<String> {
        self.json()["headers"].get(name).and_then(|v| v.as_str()).map(str::to_owned)
    }

    /// A response header as a string.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts that this is one of the gateway's JSON errors with `status` and `code`.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.text());
        assert_eq!(self.header("content-type"), Some("application/json"), "error content type");
        let v = self.json();
        assert_eq!(v["status"], status, "status in body: {v}");
        assert_eq!(v["error"], code, "error code in body: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "message in body: {v}");
    }
}

/// One client connection, HTTP/1.1 (keep-alive) or HTTP/2.
pub enum Conn {
    /// HTTP/1.1.
    H1(http1::SendRequest<Body>, String),
    /// HTTP/2.
    H2(http2::SendRequest<Body>, String),
}

impl Conn {
    /// Opens a plain HTTP/1.1 connection.
    pub async fn h1(addr: SocketAddr) -> std::io::Result<Conn> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        Conn::h1_over(tcp, addr.to_string()).await
    }

    /// Opens a plain HTTP/2 connection with prior knowledge (h2c).
    pub async fn h2c(addr: SocketAddr) -> std::io::Result<Conn> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        Conn::h2_over(tcp, addr.to_string()).await
    }

    /// Opens a TLS connection with SNI `server_name` and the ALPN of `config`, then speaks
    /// HTTP/2 when ALPN chose `h2` and HTTP/1.1 otherwise.
    pub async fn tls(addr: SocketAddr, config: Arc<rustls::ClientConfig>, server_name: &str) -> std::io::Result<Conn> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from(server_name.to_owned()).map_err(std::io::Error::other)?;
        let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
        let authority = format!("{server_name}:{}", addr.port());
        if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
            Conn::h2_over(tls, authority).await
        } else {
            Conn::h1_over(tls, authority).await
        }
    }

    /// HTTP/1.1 over any stream; `authority` is the default Host.
    pub async fn h1_over<S>(io: S, authority: String) -> std::io::Result<Conn>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http1::handshake(TokioIo::new(io)).await.map_err(std::io::Error::other)?;
        tokio::spawn(conn.with_upgrades());
        Ok(Conn::H1(sender, authority))
    }

    /// HTTP/2 over any stream; `authority` is the default `:authority`.
    pub async fn h2_over<S>(io: S, authority: String) -> std::io::Result<Conn>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) =
            http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await.map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(Conn::H2(sender, authority))
    }

    /// Sends a request and returns the response head with its body still streaming. For
    /// HTTP/1.1 a missing Host header is set to the connection's authority; for HTTP/2 a
    /// relative URI is made absolute with it.
    pub async fn send_streaming(&mut self, mut req: Request<Body>) -> Result<Response<Incoming>, hyper::Error> {
        match self {
            Conn::H1(sender, authority) => {
                if !req.headers().contains_key(http::header::HOST) {
                    let host = http::HeaderValue::from_str(authority).expect("authority is a header value");
                    req.headers_mut().insert(http::header::HOST, host);
                }
                sender.ready().await?;
                sender.send_request(req).await
            }
            Conn::H2(sender, authority) => {
                if req.uri().authority().is_none() {
                    let host = req
                        .headers_mut()
                        .remove(http::header::HOST)
                        .and_then(|h| h.to_str().ok().map(str::to_owned))
                        .unwrap_or_else(|| authority.clone());
                    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
                    *req.uri_mut() = format!("http://{host}{pq}").parse().expect("absolute URI");
                }
                *req.version_mut() = Version::HTTP_2;
                sender.ready().await?;
                sender.send_request(req).await
            }
        }
    }

    /// Sends a request and reads the whole response.
    pub async fn send(&mut self, req: Request<Body>) -> Result<Resp, BoxError> {
        let resp = self.send_streaming(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Resp { status: parts.status, version: parts.version, headers: parts.headers, body })
    }

    /// `GET path` on this connection.
    pub async fn get(&mut self, path: &str) -> Result<Resp, BoxError> {
        self.send(request(Method::GET, path).body(body::empty()).expect("request")).await
    }
}

/// A request builder for `method path`, to which a test adds headers and a body.
pub fn request(method: Method, path: &str) -> http::request::Builder {
    Request::builder().method(method).uri(path)
}

/// `GET path` on a new HTTP/1.1 connection; panics on transport errors.
pub async fn get(addr: SocketAddr, path: &str) -> Resp {
    send(addr, request(Method::GET, path).body(body::empty()).expect("request")).await
}

/// `GET path` with extra headers on a new HTTP/1.1 connection; panics on transport errors.
pub async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut b = request(Method::GET, path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(addr, b.body(body::empty()).expect("request")).await
}

/// Sends `req` on a new HTTP/1.1 connection and reads the whole response; panics on transport
/// errors (use [`Conn`] to see them).
pub async fn send(addr: SocketAddr, req: Request<Body>) -> Resp {
    let what = format!("{} {}", req.method(), req.uri());
    let mut conn = Conn::h1(addr).await.unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    conn.send(req).await.unwrap_or_else(|e| panic!("{what} via {addr}: {e}"))
}
