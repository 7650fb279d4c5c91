//! Upstream servers for tests, each on its own `127.0.0.1:0` port and stopped when dropped.
//!
//! The echo servers ([`Upstream::http`], [`Upstream::h2c`], [`Upstream::tls`]) answer every
//! request with JSON describing what they received:
//!
//! ```json
//! {"name": "a", "method": "GET", "path": "/x", "query": "q=1", "version": "HTTP/1.1",
//!  "headers": {"host": "...", ...}, "body_len": 0}
//! ```
//!
//! (header names lower case; repeated headers joined with `", "`). The path selects a behaviour:
//!
//! | path | behaviour |
//! | --- | --- |
//! | `/health` | 200, or 503 after [`Upstream::set_healthy`]`(false)`; not counted in [`Upstream::hits`] |
//! | `/status/<code>` | answers `<code>` (with the echo JSON) |
//! | `/delay/<ms>` | waits, then echoes |
//! | `/hold…` | waits until [`Upstream::open_gate`], then echoes |
//! | `/stream/<bytes>` | streams `<bytes>` bytes in 64 KiB chunks |
//! | `/gated-stream/<bytes>` | streams one chunk, waits for [`Upstream::open_gate`], streams the rest |
//! | `/hop-response` | echoes, with hop-by-hop response headers the gateway must drop |
//! | `/grpc` | a gRPC-style answer: `application/grpc`, one data frame, trailers `grpc-status: 0` and `grpc-message` (HTTP/2 only) |
//! | `/upload` (or any path) | counts the request body as it streams in ([`Upstream::received`]), then echoes `body_len` |
//! | anything else | echoes (request bodies are counted while streaming, never kept) |
//!
//! [`Upstream::set_status`] makes every path except `/health` answer a fixed status.
//!
//! [`Upstream::blackhole`] never answers and [`Upstream::reset`] resets every connection once a
//! request arrives; both count requests in [`Upstream::hits`].

use crate::body::{self, Body};
use crate::certs::LeafCert;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Chunk size of streamed response bodies.
pub const CHUNK: usize = 64 * 1024;

/// A running test server; stops (closing its connections) when dropped.
pub struct Upstream {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

/// What the handlers share with the test.
struct State {
    name: String,
    healthy: AtomicBool,
    forced_status: AtomicU16,
    hits: AtomicUsize,
    in_flight: AtomicUsize,
    connections: AtomicUsize,
    received: AtomicU64,
    sent: AtomicU64,
    gate: watch::Sender<bool>,
}

impl Upstream {
    /// An HTTP/1.1-only echo server.
    pub async fn http(name: &str) -> Upstream {
        Upstream::spawn(name, |tcp, state| async move {
            let svc = service_fn(move |req| handle(state.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
        })
        .await
    }

    /// An HTTP/2-only echo server without TLS (prior knowledge, as gRPC servers are).
    pub async fn h2c(name: &str) -> Upstream {
        Upstream::spawn(name, |tcp, state| async move {
            let svc = service_fn(move |req| handle(state.clone(), req));
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        })
        .await
    }

    /// A TLS echo server presenting `cert`, offering ALPN `h2` and `http/1.1`.
    pub async fn tls(name: &str, cert: &LeafCert) -> Upstream {
        let acceptor = tokio_rustls::TlsAcceptor::from(cert.server_config(&[b"h2", b"http/1.1"]));
        Upstream::spawn(name, move |tcp, state| {
            let acceptor = acceptor.clone();
            async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = service_fn(move |req| handle(state.clone(), req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            }
        })
        .await
    }

    /// A WebSocket server that sends every text and binary message back, prefixed with
    /// `name: `, and counts the upgrade in [`Upstream::hits`].
    pub async fn websocket(name: &str) -> Upstream {
        Upstream::spawn(name, |tcp, state| async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { return };
            state.hits.fetch_add(1, Ordering::Relaxed);
            use tokio_tungstenite::tungstenite::Message;
            while let Some(Ok(msg)) = ws.next().await {
                let reply = match msg {
                    Message::Text(t) => Message::text(format!("{}: {}", state.name, t.as_str())),
                    Message::Binary(b) => Message::binary(b),
                    Message::Close(_) => break,
                    _ => continue,
                };
                if ws.send(reply).await.is_err() {
                    break;
                }
            }
        })
        .await
    }

    /// A server that accepts connections, reads what is sent, and never answers (the gateway's
    /// read timeout must fire). A connection that sent something counts in [`Upstream::hits`].
    pub async fn blackhole() -> Upstream {
        Upstream::spawn("blackhole", |mut tcp, state| async move {
            let mut first = [0u8; 1];
            if matches!(tcp.read(&mut first).await, Ok(1)) {
                state.hits.fetch_add(1, Ordering::Relaxed);
            }
            let mut sink = tokio::io::sink();
            let _ = tokio::io::copy(&mut tcp, &mut sink).await;
            std::future::pending::<()>().await;
        })
        .await
    }

    /// A server that reads the start of each request, counts it in [`Upstream::hits`], then
    /// resets the connection (RST) without answering: the gateway sees a broken exchange after
    /// it sent the request.
    pub async fn reset(name: &str) -> Upstream {
        Upstream::spawn(name, |mut tcp, state| async move {
            let mut buf = [0u8; 4096];
            if matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {
                state.hits.fetch_add(1, Ordering::Relaxed);
                let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
            }
            drop(tcp);
        })
        .await
    }

    async fn spawn<F, Fut>(name: &str, serve: F) -> Upstream
    where
        F: Fn(TcpStream, Arc<State>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            name: name.to_owned(),
            healthy: AtomicBool::new(true),
            forced_status: AtomicU16::new(0),
            hits: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            gate: watch::channel(false).0,
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            // Connection tasks live in the set, so aborting the accept loop closes them all.
            let mut conns = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let _ = tcp.set_nodelay(true);
                shared.connections.fetch_add(1, Ordering::Relaxed);
                while conns.try_join_next().is_some() {}
                conns.spawn(serve(tcp, shared.clone()));
            }
        });
        Upstream { addr, state, task }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The name reported in echo answers.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Requests answered or in progress, not counting `/health` probes.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::Relaxed)
    }

    /// Requests in progress (not counting `/health`).
    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::Relaxed)
    }

    /// Request body bytes received so far, over all requests, counted as they arrive.
    pub fn received(&self) -> u64 {
        self.state.received.load(Ordering::Relaxed)
    }

    /// Response body bytes of `/stream` and `/gated-stream` handed to the connection so far.
    pub fn sent(&self) -> u64 {
        self.state.sent.load(Ordering::Relaxed)
    }

    /// Makes `/health` answer 200 (`true`) or 503 (`false`).
    pub fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Makes every path but `/health` answer `status` (0 restores normal behaviour).
    pub fn set_status(&self, status: u16) {
        self.state.forced_status.store(status, Ordering::Relaxed);
    }

    /// Releases every request waiting in `/hold…` or `/gated-stream`, now and later.
    pub fn open_gate(&self) {
        self.state.gate.send_replace(true);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A `127.0.0.1` port with nothing listening (bound once, then released), for 502 tests.
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("local addr")
}

/// A listening socket whose accept queue is full and never drained: new connections to it get
/// no answer to their SYN, so connecting hangs until the connector's timeout (Linux drops SYNs
/// to a listener with a full queue). Keep the returned value alive while it is needed.
pub struct Unresponsive {
    addr: SocketAddr,
    _listener: socket2::Socket,
    _fillers: Vec<std::net::TcpStream>,
}

impl Unresponsive {
    /// Binds with backlog 0 and fills the queue. `None` when the queue could not be shown to be
    /// full (a connection attempt still succeeded), so the caller can skip its test.
    pub fn new() -> Option<Unresponsive> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).ok()?;
        socket.listen(0).ok()?;
        let addr = socket.local_addr().ok()?.as_socket()?;
        let mut fillers = Vec::new();
        for _ in 0..8 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(s) => fillers.push(s),
                Err(_) => return Some(Unresponsive { addr, _listener: socket, _fillers: fillers }),
            }
        }
        None
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Counts a request as in flight until dropped.
struct Flight(Arc<State>);

impl Drop for Flight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/health" {
        let status =
            if state.healthy.load(Ordering::Relaxed) { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        return Ok(json_response(status, serde_json::json!({ "name": state.name, "health": status.as_u16() })));
    }
    state.hits.fetch_add(1, Ordering::Relaxed);
    state.in_flight.fetch_add(1, Ordering::Relaxed);
    let flight = Flight(state.clone());

    let (parts, incoming) = req.into_parts();
    let mut headers = serde_json::Map::new();
    for name in parts.headers.keys() {
        let values: Vec<String> =
            parts.headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
        headers.insert(name.as_str().to_owned(), values.join(", ").into());
    }
    // Count the body as it arrives, so tests can watch an upload make progress.
    let mut body_len = 0u64;
    let mut incoming = incoming;
    while let Some(frame) = incoming.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    body_len += d.len() as u64;
                    state.received.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
            }
            Err(_) => break,
        }
    }
    let echo = serde_json::json!({
        "name": state.name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query().unwrap_or(""),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": body_len,
    });

    let forced = state.forced_status.load(Ordering::Relaxed);
    if forced != 0 {
        return Ok(json_response(StatusCode::from_u16(forced).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), echo));
    }
    let mut segments = path.trim_start_matches('/').splitn(2, '/');
    let (first, arg) = (segments.next().unwrap_or(""), segments.next().unwrap_or(""));
    let resp = match first {
        "status" => json_response(StatusCode::from_u16(arg.parse().unwrap_or(500)).unwrap_or(StatusCode::OK), echo),
        "delay" => {
            tokio::time::sleep(Duration::from_millis(arg.parse().unwrap_or(0))).await;
            json_response(StatusCode::OK, echo)
        }
        p if p.starts_with("hold") => {
            let _ = state.gate.subscribe().wait_for(|open| *open).await;
            json_response(StatusCode::OK, echo)
        }
        "stream" | "gated-stream" => {
            let total: u64 = arg.parse().unwrap_or(0);
            let gated = first == "gated-stream";
            let (tx, body) = body::channel(2);
            let name = http::HeaderValue::from_str(&state.name).expect("name");
            let state = state.clone();
            tokio::spawn(async move {
                let _flight = flight;
                let chunk = Bytes::from(vec![b'x'; CHUNK]);
                let mut left = total;
                let mut first_chunk = true;
                while left > 0 {
                    let n = left.min(CHUNK as u64) as usize;
                    if tx.send(chunk.slice(..n)).await.is_err() {
                        return;
                    }
                    state.sent.fetch_add(n as u64, Ordering::Relaxed);
                    left -= n as u64;
                    if gated && first_chunk {
                        first_chunk = false;
                        let _ = state.gate.subscribe().wait_for(|open| *open).await;
                    }
                }
            });
            let mut resp = Response::new(body);
            resp.headers_mut().insert("x-upstream", name);
            return Ok(resp);
        }
        "grpc" => {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            trailers.insert("grpc-message", http::HeaderValue::from_static("served-by-upstream"));
            let frames: Vec<Result<http_body::Frame<Bytes>, body::BoxError>> = vec![
                Ok(http_body::Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi"))),
                Ok(http_body::Frame::trailers(trailers)),
            ];
            let stream = futures_util::stream::iter(frames);
            let mut resp = Response::new(http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(stream)));
            resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
            resp
        }
        "hop-response" => {
            let mut resp = json_response(StatusCode::OK, echo);
            let h = resp.headers_mut();
            h.insert("connection", http::HeaderValue::from_static("x-resp-hop"));
            h.insert("x-resp-hop", http::HeaderValue::from_static("1"));
            h.insert("keep-alive", http::HeaderValue::from_static("timeout=5"));
            h.insert("x-resp-end-to-end", http::HeaderValue::from_static("1"));
            resp
        }
        _ => json_response(StatusCode::OK, echo),
    };
    drop(flight);
    Ok(resp)
}

fn json_response(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(body::full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}
