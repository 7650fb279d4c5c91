//! Request mirroring (shadow traffic): a copy of a sampled share of a route's requests goes to
//! another service, and its answer is thrown away. The copy must never cost the real request
//! anything but a header clone, so it is fire-and-forget: spawned on the worker's event loop,
//! its failures only counted and logged at debug level, and bounded, at most
//! [`MAX_IN_FLIGHT`] copies per worker at once (more are dropped and counted, not queued: a slow
//! shadow must not grow memory without bound).
//!
//! Bodies: a request without a body is mirrored as is. A body whose `Content-Length` is at most
//! [`MAX_BODY_BYTES`] is copied while it streams to the real upstream (the real request never
//! waits: the copy is taken from the frames as they pass), and the mirror is sent once the copy is
//! complete; when the real body does not complete (client gone, upstream answered without reading
//! it) the mirror is skipped. Streaming bodies of unknown length (chunked, HTTP/2 without
//! `content-length`), larger bodies and WebSocket upgrades are not mirrored: copying them would
//! mean buffering without bound or holding the real request back.
//!
//! The copy is the request as the upstream would get it after the `on_request` plugins (requests
//! they answer, such as a 401 or 429, are not mirrored), with the shadow service's path rewrite
//! and Host. Mirrors are not retried and run no `before_upstream` plugins; the shadow's targets
//! get passive health reports like any other.

use crate::client;
use crate::forward::{self, ConnInfo};
use crate::snapshot::RouteRt;
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use meshgate_core::{BoxError, ProxyBody, RequestCtx};
use std::cell::Cell;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use tokio::sync::oneshot;

/// Request bodies up to this many bytes (by `Content-Length`) are copied to the mirror; larger
/// ones are not mirrored. Small enough that [`MAX_IN_FLIGHT`] copies stay under 16 MiB per worker.
pub const MAX_BODY_BYTES: u64 = 64 * 1024;
/// Mirror requests in flight per worker thread; past this, copies are dropped.
pub const MAX_IN_FLIGHT: usize = 256;

/// Mirror requests that got an answer (any status), since start.
pub static SENT: AtomicU64 = AtomicU64::new(0);
/// Mirror requests that failed (no healthy target, connect error, timeout, reset), since start.
pub static FAILED: AtomicU64 = AtomicU64::new(0);
/// Sampled requests not mirrored because [`MAX_IN_FLIGHT`] were already in flight, since start.
pub static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Sampled requests not mirrored because of their body (streaming, too large, incomplete) or
/// because they were upgrades, since start.
pub static SKIPPED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static IN_FLIGHT: Cell<usize> = const { Cell::new(0) };
}

/// A route's mirror: the route as it would forward to the shadow service, and the sample rate.
pub struct MirrorRt {
    /// The shadow service with the route's path rewrite and Host rules; no plugins.
    pub(crate) route: RouteRt,
    /// Requests whose draw is below this are mirrored; `u64::MAX` with `every`.
    threshold: u64,
    /// 100 %: no draw.
    every: bool,
}

impl MirrorRt {
    /// Mirrors `percentage` (0 to 100) of the requests through `route`.
    pub(crate) fn new(route: RouteRt, percentage: f64) -> MirrorRt {
        let every = percentage >= 100.0;
        MirrorRt { route, threshold: (percentage / 100.0 * u64::MAX as f64) as u64, every }
    }

    fn sampled(&self) -> bool {
        self.every || crate::split::random() < self.threshold
    }
}

/// Counts a mirror request in flight on this worker until dropped.
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        IN_FLIGHT.with(|n| {
            if n.get() >= MAX_IN_FLIGHT {
                return None;
            }
            n.set(n.get() + 1);
            Some(Slot)
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // `try_with`: a task dropped while its thread exits may outlive the thread-local.
        let _ = IN_FLIGHT.try_with(|n| n.set(n.get().saturating_sub(1)));
    }
}

/// What the real request is forwarded with, besides the mirror.
pub(crate) struct Forwarding<'a> {
    pub(crate) conn: &'a ConnInfo,
    pub(crate) client_host: Option<&'a HeaderValue>,
    pub(crate) matched_len: usize,
    /// The client's `Content-Length`, if it sent one.
    pub(crate) declared: Option<u64>,
    pub(crate) upgrade: bool,
}

/// Mirrors this request when it is sampled and its body allows. Returns the body to forward to
/// the real upstream: `body` itself, or `body` wrapped so that it is copied as it streams.
pub(crate) fn start(m: &Arc<MirrorRt>, cx: &RequestCtx, f: &Forwarding<'_>, body: ProxyBody) -> ProxyBody {
    if !m.sampled() {
        return body;
    }
    let empty = f.declared == Some(0) || (f.declared.is_none() && body.is_end_stream());
    let copyable = f.declared.is_some_and(|n| n <= MAX_BODY_BYTES);
    if f.upgrade || !(empty || copyable) {
        SKIPPED.fetch_add(1, Ordering::Relaxed);
        return body;
    }
    let Some(slot) = Slot::take() else {
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return body;
    };
    let svc = &m.route.service;
    let mut headers = cx.request.headers.clone();
    let key = svc.balancer.hash_on().and_then(|h| meshgate_balance::hash_key(h, &headers, cx.client_addr.ip()));
    let found = forward::Found::scan(&headers);
    forward::strip_hop_by_hop(&mut headers, false, found);
    forward::set_forwarded(&mut headers, f.conn, f.client_host, found);
    meshgate_core::auth::set_identity_headers(&mut headers, cx.auth.as_ref());
    let mut req = Request::new(());
    *req.method_mut() = cx.request.method.clone();
    *req.uri_mut() = forward::upstream_path(&cx.request.uri, &m.route, f.matched_len).into();
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    let preserve = if m.route.preserve_host { f.client_host.cloned() } else { None };

    let (body, copy) = if empty {
        (body, None)
    } else {
        let (tx, rx) = oneshot::channel();
        let want = f.declared.unwrap_or(0);
        let tee = Tee { inner: body, want, buf: BytesMut::with_capacity(want as usize), tx: Some(tx) };
        (ProxyBody::boxed(tee), Some(rx))
    };
    let m = m.clone();
    tokio::task::spawn_local(async move {
        let _slot = slot;
        let body = match copy {
            None => ProxyBody::Empty,
            Some(rx) => match rx.await {
                Ok(bytes) => ProxyBody::full(bytes),
                Err(_) => {
                    SKIPPED.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
        };
        let (parts, ()) = req.into_parts();
        let mut req = Request::from_parts(parts, body);
        let svc = &m.route.service;
        let Some(pick) = svc.balancer.pick(key, &[]) else {
            FAILED.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(service = %svc.name, "mirror: no healthy target");
            return;
        };
        let target = &svc.targets[pick.index()];
        forward::aim(req.headers_mut(), target, preserve.as_ref());
        match client::send(svc, &m.route.timeouts, target, req, false, None).await {
            Ok(resp) => {
                pick.status(resp.status().as_u16());
                SENT.fetch_add(1, Ordering::Relaxed);
                // Read the answer to its end so the connection can go back to the pool.
                let mut body = resp.into_body();
                while let Some(Ok(_)) = body.frame().await {}
            }
            Err(e) => {
                pick.failure();
                FAILED.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(target = %target.address, failure = ?e.failure, "mirror request failed");
            }
        }
    });
    body
}

/// Passes a request body through unchanged while copying it; hands the copy over once all
/// `want` bytes have passed. Dropped before that, it hands nothing and the mirror is skipped.
struct Tee {
    inner: ProxyBody,
    want: u64,
    buf: BytesMut,
    tx: Option<oneshot::Sender<Bytes>>,
}

impl Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_frame(cx);
        match &poll {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && this.tx.is_some()
                {
                    this.buf.extend_from_slice(data);
                    if this.buf.len() as u64 >= this.want
                        && let Some(tx) = this.tx.take()
                    {
                        let _ = tx.send(std::mem::take(&mut this.buf).freeze());
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => this.tx = None,
            Poll::Ready(None) | Poll::Pending => {}
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
