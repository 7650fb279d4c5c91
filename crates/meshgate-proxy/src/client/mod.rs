//! Sending a request to one upstream server: reuse a pooled connection or open one (TCP, TLS,
//! HTTP/1.1 or HTTP/2), apply the service's timeouts, and classify failures so the caller knows
//! whether retrying is safe and which status to answer.

mod body;
pub(crate) mod io;
mod pool;

pub use body::{ReadTimedOut, UpstreamBody};
pub(crate) use pool::mark_worker;

use crate::limits::{BodyWatch, ClientFault};
use crate::snapshot::{Proto, ServiceRt, TargetRt, UpstreamTimeouts};
use body::Returnable;
use http::{Request, Response};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioIo, TokioTimer};
use io::{Stream, TimedStream};
use meshgate_core::ProxyBody;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

/// The most an HTTP/1.1 upstream connection reads ahead of what the client takes.
const UPSTREAM_READ_BUFFER: usize = 16 * 1024;

/// Why an exchange with an upstream server failed.
#[derive(Debug)]
pub enum Failure {
    /// No connection could be made (refused, unreachable, TLS or protocol handshake failed).
    /// Nothing was sent, so another target may be tried.
    Connect(String),
    /// Connecting took longer than the connect timeout. Nothing was sent.
    ConnectTimeout,
    /// No response head within the read timeout.
    ReadTimeout,
    /// The connection broke or the upstream answered something that is not HTTP.
    Broken(String),
    /// The client's side of the request failed (its body malformed, stalled, cut short or too
    /// large): not the upstream's fault.
    Client(ClientFault),
}

impl std::fmt::Display for Failure {
    /// The full cause, for logs and traces (it may name addresses and OS errors: never for
    /// clients).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(msg) | Failure::Broken(msg) => f.write_str(msg),
            Failure::ConnectTimeout => f.write_str("connect timed out"),
            Failure::ReadTimeout => f.write_str("timed out waiting for the answer"),
            Failure::Client(fault) => write!(f, "client: {fault}"),
        }
    }
}

impl Failure {
    /// The failure's class for traces (OpenTelemetry's `error.type`).
    pub fn class(&self) -> &'static str {
        match self {
            Failure::Connect(_) => "connect_error",
            Failure::ConnectTimeout => "connect_timeout",
            Failure::ReadTimeout => "read_timeout",
            Failure::Broken(_) => "connection_broken",
            Failure::Client(_) => "client_fault",
        }
    }

    /// True when the request never left the gateway, so retrying cannot duplicate it.
    pub fn nothing_sent(&self) -> bool {
        matches!(self, Failure::Connect(_) | Failure::ConnectTimeout)
    }
}

/// A failed send; `request` is handed back when it was not sent, for a retry.
pub struct SendError {
    /// What went wrong.
    pub failure: Failure,
    /// The request, when it can be sent again.
    pub request: Option<Request<ProxyBody>>,
}

enum Conn {
    H1(http1::SendRequest<ProxyBody>),
    H2(http2::SendRequest<ProxyBody>),
}

/// Spawns connection tasks on the worker's own event loop (workers are single-threaded).
#[derive(Clone, Copy)]
pub(crate) struct LocalExec;

impl<F: Future + 'static> hyper::rt::Executor<F> for LocalExec {
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// Sends `req` to `target` within the timeouts `t` (the route's, falling back to the service's).
/// For `upgrade` requests (WebSocket) a fresh HTTP/1.1 connection is used and never pooled: after
/// the 101 it belongs to the tunnel. `watch` is the client's streamed body, if any: a failure on
/// its side is the client's ([`Failure::Client`]), and the read timeout counts from its end.
pub async fn send(
    svc: &ServiceRt,
    t: &UpstreamTimeouts,
    target: &TargetRt,
    req: Request<ProxyBody>,
    upgrade: bool,
    watch: Option<&BodyWatch>,
) -> Result<Response<UpstreamBody>, SendError> {
    let mut result = exchange(svc, t, target, req, upgrade, watch).await;
    if let Err(e) = &mut result
        && let Some(fault) = watch.and_then(BodyWatch::fault)
    {
        e.failure = Failure::Client(fault);
    }
    result
}

async fn exchange(
    svc: &ServiceRt,
    t: &UpstreamTimeouts,
    target: &TargetRt,
    req: Request<ProxyBody>,
    upgrade: bool,
    watch: Option<&BodyWatch>,
) -> Result<Response<UpstreamBody>, SendError> {
    let mut req = req;
    if !upgrade {
        if matches!(svc.proto, Proto::H2c | Proto::Tls)
            && let Some(sender) = pool::h2(&target.pool_key)
        {
            return send_h2(svc, t, sender, req, watch).await;
        }
        // Idle HTTP/1.1 connections may have been closed by the server since; a request that
        // could not be sent on one comes back and goes on the next or a new connection.
        while let Some(mut sender) = pool::take_h1(&target.pool_key, svc.idle_timeout) {
            if sender.ready().await.is_err() {
                continue;
            }
            // A server may close an idle keep-alive connection just as it is reused, after the
            // request went out: a bodiless idempotent request lost that way is sent again on a
            // fresh connection, as nginx and browsers do. Its head is kept for that.
            let mut again = stale_retry_copy(&req);
            match send_h1(svc, t, target, sender, req, watch).await {
                Err(SendError { failure: Failure::Broken(_), request: Some(r) }) => req = r,
                Err(SendError { failure: Failure::Broken(_), request: None }) if again.is_some() => {
                    req = again.take().expect("checked");
                    break;
                }
                done => return done,
            }
        }
    }
    let conn = match timeout(t.connect, connect(svc, t, target, upgrade)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return Err(SendError { failure: Failure::Connect(e), request: Some(req) }),
        Err(_) => return Err(SendError { failure: Failure::ConnectTimeout, request: Some(req) }),
    };
    match conn {
        Conn::H1(sender) if upgrade => {
            let resp = answer(sender_send(sender, req), t.read, watch).await;
            match resp {
                Some(Ok(r)) => Ok(r.map(|b| UpstreamBody::new(b, t.read, None))),
                Some(Err(e)) => Err(SendError { failure: classify(&e), request: None }),
                None => Err(SendError { failure: Failure::ReadTimeout, request: None }),
            }
        }
        Conn::H1(sender) => send_h1(svc, t, target, sender, req, watch).await,
        Conn::H2(sender) => {
            pool::put_h2(target.pool_key.clone(), sender.clone());
            send_h2(svc, t, sender, req, watch).await
        }
    }
}

/// A copy of `req` for resending after a stale pooled connection broke, when that is safe: no
/// body, and a method that may be repeated.
fn stale_retry_copy(req: &Request<ProxyBody>) -> Option<Request<ProxyBody>> {
    use http::Method;
    let idempotent =
        matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE);
    if !idempotent || !http_body::Body::is_end_stream(req.body()) {
        return None;
    }
    let mut copy = Request::new(ProxyBody::Empty);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

async fn sender_send(
    mut sender: http1::SendRequest<ProxyBody>,
    req: Request<ProxyBody>,
) -> hyper::Result<Response<hyper::body::Incoming>> {
    sender.send_request(req).await
}

async fn send_h1(
    svc: &ServiceRt,
    t: &UpstreamTimeouts,
    target: &TargetRt,
    mut sender: http1::SendRequest<ProxyBody>,
    req: Request<ProxyBody>,
    watch: Option<&BodyWatch>,
) -> Result<Response<UpstreamBody>, SendError> {
    let fut = sender.try_send_request(req);
    match answer(fut, t.read, watch).await {
        Some(Ok(resp)) => {
            let conn = Returnable { key: target.pool_key.clone(), sender, max_idle: svc.max_idle };
            Ok(resp.map(|b| UpstreamBody::new(b, t.read, Some(conn))))
        }
        Some(Err(mut e)) => {
            let request = e.take_message();
            Err(SendError { failure: classify(e.error()), request })
        }
        None => Err(SendError { failure: Failure::ReadTimeout, request: None }),
    }
}

async fn send_h2(
    svc: &ServiceRt,
    t: &UpstreamTimeouts,
    mut sender: http2::SendRequest<ProxyBody>,
    mut req: Request<ProxyBody>,
    watch: Option<&BodyWatch>,
) -> Result<Response<UpstreamBody>, SendError> {
    to_h2(&mut req, svc.tls.is_some());
    let fut = sender.try_send_request(req);
    match answer(fut, t.read, watch).await {
        Some(Ok(resp)) => Ok(resp.map(|b| UpstreamBody::new(b, t.read, None))),
        Some(Err(mut e)) => {
            let request = e.take_message();
            Err(SendError { failure: classify(e.error()), request })
        }
        None => Err(SendError { failure: Failure::ReadTimeout, request: None }),
    }
}

/// Waits for the response head for `read`, counted from the end of the client's streamed body
/// (`watch`) rather than from the start: a slow upload is not an upstream timeout. While the
/// body streams, its own timeouts apply (`client_body_timeout` on the client's side, the write
/// timeout on the upstream's). `None` when the time is up.
async fn answer<F: Future>(fut: F, read: Duration, watch: Option<&BodyWatch>) -> Option<F::Output> {
    let Some(watch) = watch else { return timeout(read, fut).await.ok() };
    let mut fut = std::pin::pin!(fut);
    let mut deadline = Instant::now() + read;
    loop {
        if let Ok(out) = timeout_at(deadline, fut.as_mut()).await {
            return Some(out);
        }
        deadline = if watch.done() { Instant::from_std(watch.last_moved()) + read } else { Instant::now() + read };
        if deadline <= Instant::now() {
            return None;
        }
    }
}

/// HTTP/2 carries the target in `:scheme` and `:authority` instead of a Host header.
fn to_h2(req: &mut Request<ProxyBody>, tls: bool) {
    let authority = req.headers_mut().remove(http::header::HOST);
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(if tls { http::uri::Scheme::HTTPS } else { http::uri::Scheme::HTTP });
    parts.authority = authority.and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok());
    parts.path_and_query = req.uri().path_and_query().cloned();
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = http::Version::HTTP_2;
}

fn classify(e: &hyper::Error) -> Failure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(fault) = s.downcast_ref::<ClientFault>() {
            return Failure::Client(*fault);
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return Failure::ReadTimeout;
        }
        source = s.source();
    }
    Failure::Broken(e.to_string())
}

async fn connect(svc: &ServiceRt, t: &UpstreamTimeouts, target: &TargetRt, upgrade: bool) -> Result<Conn, String> {
    let tcp = TcpStream::connect(&*target.address).await.map_err(|e| format!("connect to {}: {e}", target.address))?;
    let _ = tcp.set_nodelay(true);
    let stream = match &svc.tls {
        Some((config, name)) => {
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name.clone(), tcp)
                .await
                .map_err(|e| format!("TLS handshake with {}: {e}", target.address))?;
            Stream::Tls(Box::new(tls))
        }
        None => Stream::Tcp(tcp),
    };
    let h2 = !upgrade && (svc.proto == Proto::H2c || io::is_h2(&stream));
    let io = TokioIo::new(TimedStream::new(stream, t.write));
    let handshake_err = |e: hyper::Error| format!("HTTP handshake with {}: {e}", target.address);
    if h2 {
        let (sender, conn) =
            http2::Builder::new(LocalExec).timer(TokioTimer::new()).handshake(io).await.map_err(handshake_err)?;
        tokio::task::spawn_local(conn);
        Ok(Conn::H2(sender))
    } else {
        // hyper reads ahead into a buffer that grows to ~400 KB; a response the client is slow to
        // take would hold that much per connection. 64 KB reads large bodies just as fast.
        let (sender, conn) =
            http1::Builder::new().max_buf_size(UPSTREAM_READ_BUFFER).handshake(io).await.map_err(handshake_err)?;
        if upgrade {
            tokio::task::spawn_local(conn.with_upgrades());
        } else {
            tokio::task::spawn_local(conn);
        }
        Ok(Conn::H1(sender))
    }
}
