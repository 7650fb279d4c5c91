//! Request limits checked by the gateway itself, so that the client gets a JSON error rather
//! than a bare status or a reset.

use crate::snapshot::Limits;
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use meshgate_core::{BoxError, ErrorKind, ProxyBody};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

/// The error a request body stream ends with when it goes over `max_body_bytes`.
#[derive(Debug)]
pub struct BodyTooLarge;

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body over the size limit")
    }
}

impl std::error::Error for BodyTooLarge {}

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

/// Counts a streamed request body and fails it once it passes the limit. Used only when the
/// length is not declared up front (chunked or HTTP/2 without content-length); declared lengths
/// are checked before anything is forwarded. The count is shared with the request's metrics
/// and log line.
pub struct LimitedBody {
    inner: ProxyBody,
    remaining: u64,
    read: Arc<AtomicU64>,
}

impl LimitedBody {
    /// Wraps `inner`, allowing `limit` bytes; `read` counts the bytes that went through.
    pub fn new(inner: ProxyBody, limit: u64, read: Arc<AtomicU64>) -> Self {
        LimitedBody { inner, remaining: limit, read }
    }
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &poll
            && let Some(data) = frame.data_ref()
        {
            match this.remaining.checked_sub(data.len() as u64) {
                Some(rest) => {
                    this.remaining = rest;
                    this.read.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                None => return Poll::Ready(Some(Err(Box::new(BodyTooLarge)))),
            }
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
