//! Request limits checked by the gateway itself, so that the client gets a JSON error rather
//! than a bare status or a reset; and the client's request body on its way upstream, watched so
//! that what goes wrong on the client's side (a malformed or stalled body, a client that goes
//! away) is answered as the client's fault and never counted against the upstream target.

use crate::client::io::{progressed, stalled};
use crate::snapshot::Limits;
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use meshgate_core::{BoxError, ErrorKind, ProxyBody};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::time::Sleep;

/// Checks the header block against the configured size and count; `None` when within limits.
pub fn check_headers(headers: &HeaderMap, limits: &Limits) -> Option<http::Response<ProxyBody>> {
    if headers.len() > limits.max_headers {
        let msg = format!("more than {} request headers", limits.max_headers);
        return Some(ErrorKind::HeadersTooLarge.response(&msg));
    }
    // Each field counts as `name: value\r\n`, as on the HTTP/1.1 wire.
    let size: usize = headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    if size > limits.max_header_bytes {
        let msg = format!("request headers are {size} bytes; the limit is {}", limits.max_header_bytes);
        return Some(ErrorKind::HeadersTooLarge.response(&msg));
    }
    None
}

/// What went wrong on the client's side of a request body. Never the upstream's fault: it is
/// answered as a client error, not retried, and not counted against the target's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientFault {
    /// Bad chunked framing, or an HTTP/2 DATA frame past the declared length: 400.
    #[error("the request body is malformed")]
    Malformed,
    /// No byte of the body for `client_body_timeout`: 408.
    #[error("the request body stopped arriving")]
    Stalled,
    /// The client closed its connection or reset its stream before the body's end: 400 (it
    /// is not there to read it; logs and metrics say what happened).
    #[error("the client went away before the end of the request body")]
    Aborted,
    /// The body went past the size limit while streaming: 413.
    #[error("the request body is over the size limit")]
    TooLarge,
}

impl ClientFault {
    /// What hyper's error on the client's body stream means. A body that does not parse is
    /// malformed; anything else (a closed connection, a reset stream, a body shorter than its
    /// `Content-Length`) is the client going away.
    pub fn of(e: &(dyn std::error::Error + 'static)) -> ClientFault {
        let mut source = Some(e);
        while let Some(s) = source {
            if let Some(fault) = s.downcast_ref::<ClientFault>() {
                return *fault;
            }
            if let Some(io) = s.downcast_ref::<std::io::Error>()
                && matches!(io.kind(), std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput)
            {
                return ClientFault::Malformed;
            }
            if let Some(h) = s.downcast_ref::<hyper::Error>()
                && h.is_parse()
            {
                return ClientFault::Malformed;
            }
            source = s.source();
        }
        ClientFault::Aborted
    }

    /// The answer for the client.
    pub fn response(self) -> http::Response<ProxyBody> {
        let kind = match self {
            ClientFault::Malformed | ClientFault::Aborted => ErrorKind::BadRequest,
            ClientFault::Stalled => ErrorKind::RequestTimeout,
            ClientFault::TooLarge => ErrorKind::BodyTooLarge,
        };
        kind.response(&self.to_string())
    }

    fn code(self) -> u8 {
        self as u8 + 1
    }

    fn from_code(code: u8) -> Option<ClientFault> {
        [ClientFault::Malformed, ClientFault::Stalled, ClientFault::Aborted, ClientFault::TooLarge]
            .get(usize::from(code).checked_sub(1)?)
            .copied()
    }
}

/// A streamed request body's state, shared by the body (which writes it) and the upstream
/// exchange (which reads it): whether it failed on the client's side, and when it last moved, so
/// that the upstream's read timeout counts from the end of the request body, not its start.
#[derive(Debug)]
pub struct BodyWatch {
    start: Instant,
    fault: AtomicU8,
    /// Microseconds from `start` to the last frame (or the end of the body).
    moved: AtomicU64,
    done: std::sync::atomic::AtomicBool,
}

impl BodyWatch {
    fn new() -> BodyWatch {
        BodyWatch { start: Instant::now(), fault: AtomicU8::new(0), moved: AtomicU64::new(0), done: false.into() }
    }

    /// The client's fault, if the body failed on its side.
    pub fn fault(&self) -> Option<ClientFault> {
        ClientFault::from_code(self.fault.load(Ordering::Relaxed))
    }

    /// When the body last moved (a frame, or its end); its start until it has.
    pub fn last_moved(&self) -> Instant {
        self.start + Duration::from_micros(self.moved.load(Ordering::Relaxed))
    }

    /// Whether the whole body has been read.
    pub fn done(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }

    fn moved(&self) {
        self.moved.store(self.start.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
}

/// A request body on its way upstream, and what is known of its client: the watch on the
/// body's client side when it streams from the client (`None` for no body or one held whole),
/// and a flag the connection sets when the client abandons the request (an HTTP/2 stream reset;
/// `None` where the request cannot outlive its client).
pub struct RequestBody {
    /// What is sent.
    pub body: ProxyBody,
    /// Set by [`ClientBody`].
    pub watch: Option<Arc<BodyWatch>>,
    /// True once the client has gone: no attempt is started after that.
    pub abandoned: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl From<ProxyBody> for RequestBody {
    fn from(body: ProxyBody) -> Self {
        RequestBody { body, watch: None, abandoned: None }
    }
}

/// The client's request body as it streams upstream: fails with a [`ClientFault`] when the
/// client's side breaks, stalls past `timeout`, or (for bodies without a declared length) goes
/// past `limit`, counting the bytes into `read` for metrics and logs.
pub struct ClientBody {
    inner: ProxyBody,
    remaining: u64,
    read: Option<Arc<AtomicU64>>,
    timeout: Duration,
    stall: Option<Pin<Box<Sleep>>>,
    watch: Arc<BodyWatch>,
}

impl ClientBody {
    /// Wraps `inner`; returns the body and the watch the upstream exchange reads.
    pub fn new(inner: ProxyBody, timeout: Duration) -> (ClientBody, Arc<BodyWatch>) {
        let watch = Arc::new(BodyWatch::new());
        let body = ClientBody { inner, remaining: u64::MAX, read: None, timeout, stall: None, watch: watch.clone() };
        (body, watch)
    }

    /// Allows `limit` bytes, counting them into `read`: for bodies whose length is not declared
    /// up front (chunked, HTTP/2 without content-length); declared ones are checked before.
    pub fn limit(mut self, limit: u64, read: Arc<AtomicU64>) -> ClientBody {
        self.remaining = limit;
        self.read = Some(read);
        self
    }

    fn fail(&mut self, fault: ClientFault) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.watch.fault.store(fault.code(), Ordering::Relaxed);
        Poll::Ready(Some(Err(Box::new(fault))))
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                if stalled(&mut this.stall, this.timeout, cx) {
                    return this.fail(ClientFault::Stalled);
                }
                Poll::Pending
            }
            Poll::Ready(Some(Err(e))) => {
                let fault = ClientFault::of(&*e);
                this.fail(fault)
            }
            Poll::Ready(None) => {
                this.watch.moved();
                this.watch.done.store(true, Ordering::Relaxed);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                progressed(&mut this.stall, this.timeout);
                this.watch.moved();
                if let Some(data) = frame.data_ref() {
                    match this.remaining.checked_sub(data.len() as u64) {
                        Some(rest) => this.remaining = rest,
                        None => return this.fail(ClientFault::TooLarge),
                    }
                    if let Some(read) = &this.read {
                        read.fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                }
                if this.inner.is_end_stream() {
                    this.watch.done.store(true, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
