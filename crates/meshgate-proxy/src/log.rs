//! The log phase: runs once the response body has been sent (or the client went away), with the
//! final status and byte count. Only requests whose chain has `on_log` plugins pay for this.

use crate::metrics::RequestBytes;
use crate::snapshot::Snapshot;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use meshgate_core::{BoxError, Ended, ProxyBody, RequestCtx};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// A response body that counts bytes and calls `on_log` when it ends or is dropped.
pub struct LogBody {
    inner: ProxyBody,
    cx: Option<RequestCtx>,
    /// Holding the snapshot keeps the plugins alive after a reload.
    snap: Arc<Snapshot>,
    /// The matched route's index in the router and its branch (see `RouteRt::choose`); `None`
    /// uses the global chain.
    route: Option<(usize, usize)>,
    bytes: u64,
    /// The request body's size, final by the time the response ends.
    received: RequestBytes,
}

impl LogBody {
    /// Wraps a response body; `cx.response` must already hold the status. The context is moved
    /// once, into the body's allocation: built whole and then boxed, it was copied three times
    /// (it is some 600 bytes).
    #[inline]
    pub(crate) fn boxed(
        inner: ProxyBody,
        cx: RequestCtx,
        snap: Arc<Snapshot>,
        route: Option<(usize, usize)>,
        received: RequestBytes,
    ) -> ProxyBody {
        let mut body = Box::new(LogBody { inner, cx: None, snap, route, bytes: 0, received });
        body.cx = Some(cx);
        ProxyBody::Boxed(Box::into_pin(body))
    }

    fn log(&mut self) {
        // Logged where it lies: the context is large, and moving it out costs a copy.
        let Some(cx) = self.cx.as_mut() else { return };
        cx.ended = Some(Ended::now(cx.started));
        if let Some(r) = cx.response.as_mut() {
            r.body_bytes = self.bytes;
            r.request_bytes = if cx.attempts.is_empty() { 0 } else { self.received.get() };
        }
        let route = self.route.and_then(|(i, b)| Some(self.snap.router.get(i)?.branch(b)));
        let chain = route.map_or(&self.snap.unmatched, |r| &r.chain);
        for p in chain.on_log.iter() {
            p.on_log(cx);
        }
        self.cx = None;
    }
}

impl Body for LogBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_frame(cx);
        match &poll {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes += d.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.log(),
            Poll::Pending => {}
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

impl Drop for LogBody {
    fn drop(&mut self) {
        self.log();
    }
}
