//! The upstream's response body on its way to the client: streamed frame by frame, failed when
//! the upstream stalls longer than the read timeout, and its HTTP/1.1 connection handed back to
//! the pool once the body has been read to the end (not before: the connection is busy until then).

use super::io::{progressed, stalled};
use super::pool;
use crate::conn::BusyGuard;
use crate::metrics::BodyAccount;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use meshgate_core::{BoxError, ProxyBody};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;

/// The error a response body ends with when the upstream stalls past the read timeout, typed so
/// that a body read whole (body phases) answers 504 rather than 502.
#[derive(Debug)]
pub struct ReadTimedOut;

impl std::fmt::Display for ReadTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upstream read timed out")
    }
}

impl std::error::Error for ReadTimedOut {}

/// An HTTP/1.1 connection to return to the pool when the body ends.
pub(crate) struct Returnable {
    pub(crate) key: Arc<str>,
    pub(crate) sender: http1::SendRequest<ProxyBody>,
    pub(crate) max_idle: usize,
}

/// A response body from an upstream.
pub struct UpstreamBody {
    /// `None` only once dropped (taken by the drain).
    inner: Option<Incoming>,
    read_timeout: Duration,
    idle: Option<Pin<Box<Sleep>>>,
    conn: Option<Returnable>,
    busy: Option<BusyGuard>,
    account: Option<BodyAccount>,
}

impl UpstreamBody {
    pub(crate) fn new(inner: Incoming, read_timeout: Duration, conn: Option<Returnable>) -> Self {
        let mut body = UpstreamBody { inner: Some(inner), read_timeout, idle: None, conn, busy: None, account: None };
        if body.is_end_stream() {
            body.finish();
        }
        body
    }

    /// Keeps the client connection marked busy while this body streams, and tells it whether
    /// the body waits for the client to take data.
    pub fn hold(&mut self, mut busy: BusyGuard) {
        busy.sending();
        self.busy = Some(busy);
    }

    /// Counts the bytes sent to the client into the route's metrics.
    pub(crate) fn account(&mut self, account: BodyAccount) {
        self.account = Some(account);
    }

    fn finish(&mut self) {
        if let Some(Returnable { key, sender, max_idle }) = self.conn.take() {
            pool::put_h1(key, sender, max_idle);
        }
        // Counted now rather than when the body is dropped, which may be after the client
        // already has the last byte.
        self.account = None;
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else { return Poll::Ready(None) };
        let poll = Pin::new(inner).poll_frame(cx);
        if let Some(busy) = this.busy.as_mut() {
            busy.polled(matches!(&poll, Poll::Ready(Some(Ok(_)))));
        }
        match poll {
            Poll::Pending => {
                if stalled(&mut this.idle, this.read_timeout, cx) {
                    this.conn = None;
                    return Poll::Ready(Some(Err(Box::new(ReadTimedOut))));
                }
                Poll::Pending
            }
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                progressed(&mut this.idle, this.read_timeout);
                if let (Some(a), Some(d)) = (this.account.as_mut(), frame.data_ref()) {
                    a.sent(d.len());
                }
                if this.is_end_stream() {
                    this.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.conn = None;
                Poll::Ready(Some(Err(e.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

/// Past this, the rest of an abandoned response body is not worth its connection.
const DRAIN_MAX: u64 = 64 * 1024;

impl Drop for UpstreamBody {
    /// A body dropped before its end (the client went away, reset its HTTP/2 stream, or a
    /// plugin answered instead) would take its HTTP/1.1 connection with it. Unless much is
    /// left, the rest is read in the background and the connection goes back to the pool: a
    /// client that abandons requests must not cost the upstream a connection each.
    fn drop(&mut self) {
        let (Some(conn), Some(inner)) = (self.conn.take(), self.inner.take()) else { return };
        let left = inner.size_hint().upper().unwrap_or(u64::MAX);
        if left <= DRAIN_MAX && pool::on_worker() {
            tokio::task::spawn_local(drain(inner, conn, self.read_timeout));
        }
    }
}

/// Reads `body` to its end (within `timeout` per frame, [`DRAIN_MAX`] bytes in all) and then
/// returns its connection to the pool.
async fn drain(mut body: Incoming, conn: Returnable, timeout: Duration) {
    use http_body_util::BodyExt;
    let mut read = 0u64;
    loop {
        match tokio::time::timeout(timeout, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                read += frame.data_ref().map_or(0, |d| d.len() as u64);
                if read > DRAIN_MAX {
                    return;
                }
            }
            Ok(None) => {
                let Returnable { key, sender, max_idle } = conn;
                return pool::put_h1(key, sender, max_idle);
            }
            Ok(Some(Err(_))) | Err(_) => return,
        }
    }
}
