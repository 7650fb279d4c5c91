//! One client connection: TLS, hyper's HTTP/1.1 or HTTP/2 server, and the time limits hyper does
//! not enforce by itself.
//!
//! hyper times an HTTP/1.1 request head (`header_read_timeout`), nothing else. So the connection
//! loop here closes a connection:
//! * whose first request has not begun `client_header_timeout` after it was accepted (nothing
//!   sent, an HTTP/2 preface or SETTINGS sent a byte at a time);
//! * with an HTTP/2 header block (HEADERS and its CONTINUATIONs) open for `client_header_timeout`
//!   (`frames.rs` follows the client's frames as they are read);
//! * with no request in flight for `client_idle_timeout` (bytes that arrive without a request,
//!   a dribble or pings, do not count);
//! * that takes no response data for `client_send_timeout` while some is ready for it: a write
//!   the socket would not take (a slow reader), or a response body nobody asked for more of (an
//!   HTTP/2 client that keeps its flow-control window shut).
//!
//! It also counts requests the client abandons before their answer (an HTTP/2 stream reset, a
//! connection closed): once half of at least [`RESET_FLOOD_MIN`] requests are abandoned, the
//! connection is a reset flood (CVE-2023-44487 and its variants after the stream is accepted)
//! and is shut. HTTP/2 requests run as tasks of their own, so that an abandoned request still
//! finishes its upstream exchange and hands its connection back to the pool instead of dropping
//! it mid-request: a reset costs the upstream at most a request, never a connection.

use crate::client::LocalExec;
use crate::forward::ConnInfo;
use crate::frames::FrameFollower;
use crate::handler::{self, ConnCtx};
use crate::server::ConnSlot;
use crate::snapshot::{Limits, Snapshot};
use crate::stream::Stream;
use futures_util::task::AtomicWaker;
use http::{HeaderValue, Response, Version};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use meshgate_core::{ClientCert, ErrorKind, ProxyBody};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_rustls::server::TlsStream;

/// Abandoned requests are judged a flood only past this many requests on the connection.
pub const RESET_FLOOD_MIN: u32 = 50;

/// What a connection's requests, bodies and I/O tell its loop. Shared (atomics) because
/// response bodies must be `Send`; everything stays on one worker thread.
#[derive(Debug)]
pub struct ConnWatch {
    start: Instant,
    /// Requests in flight: a handler running or a response body streaming.
    busy: AtomicUsize,
    /// Requests begun, and those abandoned by the client before their answer.
    started: AtomicU32,
    abandoned: AtomicU32,
    /// Response bodies whose last poll gave data (or that were never polled): ready for a
    /// client that has not asked for more. The loop watches `polls` move while any is.
    ready_bodies: AtomicUsize,
    polls: AtomicU64,
    /// Milliseconds from `start` (plus one; 0 for none) to when a write found the socket full,
    /// and to when an open HTTP/2 header block began.
    write_blocked: AtomicU64,
    header_block: AtomicU64,
    /// Woken when the connection floods resets.
    flood: Notify,
    /// Set by the watchdog: end the connection gracefully (GOAWAY, requests in flight finish),
    /// or at once; `waker` wakes the connection's task to act on it.
    graceful: AtomicBool,
    kill: AtomicBool,
    waker: AtomicWaker,
}

impl ConnWatch {
    fn new() -> ConnWatch {
        ConnWatch {
            start: Instant::now(),
            busy: AtomicUsize::new(0),
            started: AtomicU32::new(0),
            abandoned: AtomicU32::new(0),
            ready_bodies: AtomicUsize::new(0),
            polls: AtomicU64::new(0),
            write_blocked: AtomicU64::new(0),
            header_block: AtomicU64::new(0),
            flood: Notify::new(),
            graceful: AtomicBool::new(false),
            kill: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        }
    }

    fn stamp(&self) -> u64 {
        self.start.elapsed().as_millis() as u64 + 1
    }

    fn at(&self, stamp: u64) -> Option<Instant> {
        (stamp != 0).then(|| self.start + Duration::from_millis(stamp - 1))
    }
}

/// Counts a request as in flight until its response body is finished or dropped, so the idle
/// check does not cut a response that pauses (long polling, server-sent events); and, once the
/// body is the client's, whether it waits on the client.
pub struct BusyGuard {
    watch: Arc<ConnWatch>,
    ready: bool,
}

impl BusyGuard {
    fn new(watch: &Arc<ConnWatch>) -> Self {
        watch.busy.fetch_add(1, Ordering::Relaxed);
        BusyGuard { watch: watch.clone(), ready: false }
    }

    /// The response body now goes to the client, which has not asked for any of it yet.
    pub fn sending(&mut self) {
        self.set_ready(true);
    }

    /// The response body was polled: `ready` when it gave data (the next poll is the client's
    /// to ask for), not when it waits on the upstream or has ended.
    pub fn polled(&mut self, ready: bool) {
        self.watch.polls.fetch_add(1, Ordering::Relaxed);
        self.set_ready(ready);
    }

    fn set_ready(&mut self, ready: bool) {
        if ready != self.ready {
            self.ready = ready;
            if ready {
                self.watch.ready_bodies.fetch_add(1, Ordering::Relaxed);
            } else {
                self.watch.ready_bodies.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.set_ready(false);
        self.watch.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a request the client abandoned: dropped by hyper before its answer was made. Sets
/// `flag`, which a request running on (HTTP/2) reads before each upstream attempt.
struct Abandoned {
    watch: Arc<ConnWatch>,
    answered: bool,
    flag: Option<Arc<AtomicBool>>,
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        if let Some(flag) = &self.flag {
            flag.store(true, Ordering::Relaxed);
        }
        let abandoned = self.watch.abandoned.fetch_add(1, Ordering::Relaxed) + 1;
        let started = self.watch.started.load(Ordering::Relaxed);
        if started >= RESET_FLOOD_MIN && abandoned * 2 >= started {
            // The loop takes one notice; more while it closes change nothing.
            self.watch.flood.notify_one();
        }
    }
}

/// Serves one accepted connection until it ends, is closed by one of the limits, or the
/// gateway drains.
pub async fn serve(tcp: TcpStream, peer: SocketAddr, port: HeaderValue, snap: Arc<Snapshot>, slot: Rc<ConnSlot>) {
    let shared = slot.shared.clone();
    let limits = snap.limits.clone();
    let listener = &snap.listeners[slot.index];
    let (stream, h2_alpn, client_cert) = match &listener.tls {
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
            match tokio::time::timeout(limits.client_header_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let session = stream.get_ref().1;
                    let h2 = session.alpn_protocol() == Some(b"h2");
                    // Only connections that presented a certificate pay for a copy of it.
                    let cert = session.peer_certificates().filter(|c| !c.is_empty()).map(|chain| {
                        Arc::new(ClientCert::new(
                            chain.iter().map(|c| c.clone().into_owned()).collect(),
                            tls.verifies_clients,
                        ))
                    });
                    (ClientStream::Tls(Box::new(stream)), Some(h2), cert)
                }
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
        None => (ClientStream::Tcp(tcp), None, None),
    };
    let conn = Rc::new(ConnCtx {
        info: ConnInfo {
            client_ip: HeaderValue::try_from(peer.ip().to_string()).expect("an IP address is a valid header value"),
            proto: HeaderValue::from_static(if h2_alpn.is_some() { "https" } else { "http" }),
            port,
        },
        peer,
        tls: h2_alpn.is_some(),
        client_cert,
        slot,
    });
    let watch = Arc::new(ConnWatch::new());
    let service = {
        let (shared, watch) = (shared.clone(), watch.clone());
        service_fn(move |req| {
            let snap = shared.snapshot.load_full();
            respond(snap, conn.clone(), req, watch.clone())
        })
    };
    // HTTP/2 is possible on this connection: follow its frames.
    let may_be_h2 = h2_alpn.unwrap_or(listener.http2);
    let builder = builder(&limits, listener.http2, h2_alpn);
    let frames = may_be_h2.then(FrameFollower::default);
    let io = TokioIo::new(Tracked { inner: stream, watch: watch.clone(), frames });
    let mut conn = pin!(builder.serve_connection_with_upgrades(io, service));
    let watchdog = tokio::task::spawn_local(watchdog(watch.clone(), limits, shared.shutdown.subscribe(), peer));
    // The connection's own task polls hyper and reads two flags the watchdog sets (it wakes
    // this task when it does): per wake, a waker registration and two loads, not a poll of
    // every timer and channel the limits need.
    let mut graceful = false;
    let ended = std::future::poll_fn(|cx| {
        watch.waker.register(cx.waker());
        if watch.kill.load(Ordering::Relaxed) {
            return Poll::Ready(None);
        }
        if !graceful && watch.graceful.load(Ordering::Relaxed) {
            graceful = true;
            conn.as_mut().graceful_shutdown();
        }
        conn.as_mut().poll(cx).map(Some)
    })
    .await;
    watchdog.abort();
    if let Some(Err(e)) = ended {
        tracing::debug!(%peer, error = %e, "client connection ended with an error");
    }
}

/// Watches a connection's limits from a task of its own, waking only at its deadlines, on
/// shutdown and on a reset flood; asks the connection's task to end gracefully (`graceful`) or
/// at once (`kill`).
async fn watchdog(
    watch: Arc<ConnWatch>,
    limits: Limits,
    mut stop: tokio::sync::watch::Receiver<bool>,
    peer: SocketAddr,
) {
    let end = |graceful: bool| {
        let flag = if graceful { &watch.graceful } else { &watch.kill };
        flag.store(true, Ordering::Relaxed);
        watch.waker.wake();
    };
    let mut clock = Clock::new(&watch);
    // Set once the connection is being shut: the last moment it may take to finish.
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        let wake = closing.unwrap_or_else(|| tokio::time::Instant::from_std(clock.next_wake(&limits)));
        tokio::select! {
            _ = stop.wait_for(|s| *s), if closing.is_none() => {
                // Draining: requests in flight finish; the worker's drain timeout bounds it.
                end(true);
                closing = Some(tokio::time::Instant::now() + Duration::from_secs(3600));
            }
            _ = watch.flood.notified(), if closing.is_none() => {
                tracing::warn!(%peer, started = watch.started.load(Ordering::Relaxed),
                    abandoned = watch.abandoned.load(Ordering::Relaxed), "client abandons most of its requests: closing");
                // A GOAWAY, flushed while the connection is polled a moment longer, then the close:
                // a graceful end would take streams until the client answers a PING.
                end(true);
                closing = Some(tokio::time::Instant::now() + Duration::from_millis(50));
            }
            _ = tokio::time::sleep_until(wake) => {
                if closing.is_some() {
                    tracing::debug!(%peer, "closing connection did not finish in time");
                    return end(false);
                }
                match clock.check(&watch, &limits) {
                    None => {}
                    Some(Close::Idle) => {
                        tracing::debug!(%peer, "closing idle client connection");
                        // HTTP/2 says goodbye (GOAWAY); nothing is in flight, so it ends at once.
                        end(true);
                        closing = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                    }
                    Some(why) => {
                        tracing::debug!(%peer, ?why, "closing client connection");
                        return end(false);
                    }
                }
            }
        }
    }
}

/// Answers one request; counts it, and whether the client abandons it. HTTP/2 requests run as
/// a task of their own (see the module docs).
async fn respond(
    snap: Arc<Snapshot>,
    conn: Rc<ConnCtx>,
    req: http::Request<hyper::body::Incoming>,
    watch: Arc<ConnWatch>,
) -> Result<Response<ProxyBody>, Infallible> {
    watch.started.fetch_add(1, Ordering::Relaxed);
    let busy = BusyGuard::new(&watch);
    let resp = if req.version() == Version::HTTP_2 {
        let flag = Arc::new(AtomicBool::new(false));
        let mut abandoned = Abandoned { watch: watch.clone(), answered: false, flag: Some(flag.clone()) };
        let task = tokio::task::spawn_local(async move { handler::handle(snap, &conn, req, busy, Some(flag)).await });
        let resp = task.await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "request handler failed");
            ErrorKind::Unavailable.response_with_id(None)
        });
        abandoned.answered = true;
        resp
    } else {
        let mut abandoned = Abandoned { watch: watch.clone(), answered: false, flag: None };
        let resp = handler::handle(snap, &conn, req, busy, None).await;
        abandoned.answered = true;
        resp
    };
    Ok(resp)
}

/// Why the loop closes a connection.
#[derive(Debug, PartialEq, Eq)]
enum Close {
    /// No request began within `client_header_timeout` of the accept.
    NoRequest,
    /// An HTTP/2 header block stayed open for `client_header_timeout`.
    SlowHeaders,
    /// No request in flight for `client_idle_timeout`.
    Idle,
    /// The client took no response data for `client_send_timeout`.
    SlowReader,
}

/// The loop's view of time: when the connection went idle, when response polls last moved.
struct Clock {
    accepted: Instant,
    idle_since: Option<Instant>,
    seen_started: u32,
    seen_polls: u64,
    polls_moved: Instant,
}

impl Clock {
    fn new(watch: &ConnWatch) -> Clock {
        Clock { accepted: watch.start, idle_since: None, seen_started: 0, seen_polls: 0, polls_moved: watch.start }
    }

    /// When to look again: at the nearest known deadline, and at least once per shortest
    /// limit, so that a state that began since (a header block, a blocked write) is seen
    /// before its own deadline.
    fn next_wake(&self, limits: &Limits) -> Instant {
        let now = Instant::now();
        let shortest = limits.client_header_timeout.min(limits.client_idle_timeout).min(limits.client_send_timeout);
        let mut wake = now + shortest;
        if let Some(idle) = self.idle_since {
            wake = wake.min(idle + limits.client_idle_timeout);
        }
        if self.seen_started == 0 {
            wake = wake.min(self.accepted + limits.client_header_timeout);
        }
        wake.max(now + Duration::from_millis(1))
    }

    /// The reason to close now, if any.
    fn check(&mut self, watch: &ConnWatch, limits: &Limits) -> Option<Close> {
        let now = Instant::now();
        let started = watch.started.load(Ordering::Relaxed);
        if started == 0 && now >= self.accepted + limits.client_header_timeout {
            return Some(Close::NoRequest);
        }
        if let Some(at) = watch.at(watch.header_block.load(Ordering::Relaxed))
            && now >= at + limits.client_header_timeout
        {
            return Some(Close::SlowHeaders);
        }
        if let Some(at) = watch.at(watch.write_blocked.load(Ordering::Relaxed))
            && now >= at + limits.client_send_timeout
        {
            return Some(Close::SlowReader);
        }
        let polls = watch.polls.load(Ordering::Relaxed);
        if polls != self.seen_polls || watch.ready_bodies.load(Ordering::Relaxed) == 0 {
            (self.seen_polls, self.polls_moved) = (polls, now);
        } else if now >= self.polls_moved + limits.client_send_timeout {
            return Some(Close::SlowReader);
        }
        // Idle: no request in flight, and none began since the last look.
        if started != self.seen_started || watch.busy.load(Ordering::Relaxed) > 0 {
            self.seen_started = started;
            self.idle_since = None;
        } else {
            let since = *self.idle_since.get_or_insert(now);
            if now >= since + limits.client_idle_timeout {
                return Some(Close::Idle);
            }
        }
        None
    }
}

fn builder(limits: &Limits, http2: bool, h2_alpn: Option<bool>) -> auto::Builder<LocalExec> {
    let mut b = auto::Builder::new(LocalExec);
    // hyper answers a bare 431 past its own limits; they sit above ours so that most oversized
    // requests reach our check and get a JSON answer.
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.client_header_timeout)
        .max_buf_size((limits.max_header_bytes * 2).max(16 * 1024))
        .max_headers((limits.max_headers * 2).max(100));
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size((limits.max_header_bytes * 2) as u32)
        .max_concurrent_streams(limits.max_concurrent_streams)
        // h2's own floods: streams reset before they are accepted, and streams the library
        // must reset for the client's errors; past these, GOAWAY ENHANCE_YOUR_CALM.
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(1024);
    match h2_alpn {
        Some(true) => b.http2_only(),
        Some(false) => b.http1_only(),
        None if !http2 => b.http1_only(),
        None => b,
    }
}

/// A client connection: TCP or TLS.
type ClientStream = Stream<TlsStream<TcpStream>>;

/// The client connection as hyper sees it, reporting to the loop: blocked writes, and (HTTP/2)
/// the header blocks that are arriving.
struct Tracked {
    inner: ClientStream,
    watch: Arc<ConnWatch>,
    frames: Option<FrameFollower>,
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.frames.is_none() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let this = self.get_mut();
        if let (Poll::Ready(Ok(())), Some(frames)) = (&poll, this.frames.as_mut()) {
            let header_block = &this.watch.header_block;
            if frames.feed(&buf.filled()[before..]) {
                header_block.store(this.watch.stamp(), Ordering::Relaxed);
            } else if !frames.in_block() && header_block.load(Ordering::Relaxed) != 0 {
                header_block.store(0, Ordering::Relaxed);
            }
            if frames.done() {
                this.frames = None;
            }
        }
        poll
    }
}

impl Tracked {
    fn wrote<T>(&self, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        let blocked = &self.watch.write_blocked;
        match &poll {
            Poll::Pending if blocked.load(Ordering::Relaxed) == 0 => {
                blocked.store(self.watch.stamp(), Ordering::Relaxed)
            }
            Poll::Ready(_) if blocked.load(Ordering::Relaxed) != 0 => blocked.store(0, Ordering::Relaxed),
            _ => {}
        }
        poll
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.wrote(poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
