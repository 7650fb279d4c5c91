//! The upstream of the transformation tests: a real HTTP/1.1 server on `127.0.0.1:0` whose
//! answers are chosen by the last segment of the path.
//!
//! | last segment | answer |
//! | --- | --- |
//! | `echo` | JSON: the request's method, path, query, headers, `content_length` and `transfer_encoding` as received, `body` (text) and `body_len` (bytes received) |
//! | `nested` | [`NESTED`], `application/json`, with `Content-Length` |
//! | `nested-chunked` | the same in three chunks, no `Content-Length` |
//! | `problem` | [`NESTED`] as `application/problem+json` |
//! | `text` | [`TEXT`] as `text/plain` |
//! | `malformed` | [`MALFORMED`] labelled `application/json` |
//! | `large` / `large-chunked` | [`large`]`()`: a 4 KiB JSON object, with `Content-Length` / chunked |
//! | `gzip` | [`NESTED`] gzip-compressed, `Content-Encoding: gzip` |
//! | `flaky` | 503 to the first, third, … request to a `flaky` path, else `echo` |
//! | `stall` | the head and `{"a":`, then nothing more |
//!
//! Every answer also carries `x-internal: 1`, `x-old: o`, `x-env: stage` and `x-tag: up`.

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use meshgate_e2e::body::{self, Body, BoxError};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A nested JSON document, with a number no f64 holds.
pub const NESTED: &str = r#"{"user":{"id":7,"name":"Ann","password":"s3cret","address":{"city":"Paris","zip":"75001"}},"items":[1,2,3],"big":123456789012345678901234567890,"debug":true}"#;
/// A body that is not JSON.
pub const TEXT: &str = "plain text, not JSON {\"user\": 1}";
/// A body labelled JSON that is not.
pub const MALFORMED: &str = r#"{"user": {"id": 7,"#;

/// A 4 KiB JSON object.
pub fn large() -> String {
    let pad = "x".repeat(4096 - r#"{"pad":""}"#.len());
    format!(r#"{{"pad":"{pad}"}}"#)
}

/// `data` gzip-compressed with stored (uncompressed) deflate blocks: a real gzip stream any
/// decoder reads, made without a compression library.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut chunks = data.chunks(0xffff).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(c) = chunks.next() {
        out.push(u8::from(chunks.peek().is_none()));
        let len = c.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(c);
    }
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    out.extend_from_slice(&(!crc).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// A running origin; stops when dropped.
pub struct Origin {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Origin {
    /// Starts on a free port.
    pub async fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let flaky = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (hits, flaky) = (counter.clone(), flaky.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(req, hits.clone(), flaky.clone()));
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
                });
            }
        });
        Origin { addr, hits, task }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn chunked(parts: Vec<Bytes>, tail: bool) -> Body {
    let frames = futures_util::stream::iter(parts.into_iter().map(|p| Ok::<_, BoxError>(Frame::data(p))));
    if tail {
        StreamBody::new(futures_util::StreamExt::chain(frames, futures_util::stream::pending())).boxed()
    } else {
        StreamBody::new(frames).boxed()
    }
}

async fn answer(
    req: Request<Incoming>,
    hits: Arc<AtomicUsize>,
    flaky: Arc<AtomicUsize>,
) -> Result<Response<Body>, Infallible> {
    hits.fetch_add(1, Ordering::Relaxed);
    let (parts, incoming) = req.into_parts();
    let last = parts.uri.path().rsplit('/').next().unwrap_or("").to_owned();
    let n = if last == "flaky" { flaky.fetch_add(1, Ordering::Relaxed) + 1 } else { 0 };
    let json = "application/json";
    let (status, ctype, body) = match last.as_str() {
        "nested" => (200, json, body::full(NESTED)),
        "nested-chunked" => {
            let b = Bytes::from_static(NESTED.as_bytes());
            (200, json, chunked(vec![b.slice(..10), b.slice(10..50), b.slice(50..)], false))
        }
        "problem" => (200, "application/problem+json", body::full(NESTED)),
        "text" => (200, "text/plain", body::full(TEXT)),
        "malformed" => (200, json, body::full(MALFORMED)),
        "large" => (200, json, body::full(large())),
        "large-chunked" => {
            let b = Bytes::from(large());
            (200, json, chunked(vec![b.slice(..1000), b.slice(1000..2000), b.slice(2000..)], false))
        }
        "gzip" => (200, json, body::full(gzip(NESTED.as_bytes()))),
        "stall" => (200, json, chunked(vec![Bytes::from_static(b"{\"a\":")], true)),
        "flaky" if n % 2 == 1 => (503, json, body::full(r#"{"flaky":true}"#)),
        _ => {
            let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let mut headers = serde_json::Map::new();
            for name in parts.headers.keys() {
                let all: Vec<&str> = parts.headers.get_all(name).iter().map(|v| v.to_str().unwrap_or("?")).collect();
                headers.insert(name.as_str().to_owned(), all.join(", ").into());
            }
            let received = incoming.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let echo = serde_json::json!({
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "query": parts.uri.query().unwrap_or(""),
                "headers": headers,
                "content_length": header("content-length"),
                "transfer_encoding": header("transfer-encoding"),
                "body": String::from_utf8_lossy(&received),
                "body_len": received.len(),
            });
            (200, json, body::full(echo.to_string()))
        }
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status).expect("status");
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static(ctype));
    if last == "gzip" {
        h.insert("content-encoding", HeaderValue::from_static("gzip"));
    }
    for (k, v) in [("x-internal", "1"), ("x-old", "o"), ("x-env", "stage"), ("x-tag", "up")] {
        h.insert(k, HeaderValue::from_static(v));
    }
    Ok(resp)
}
