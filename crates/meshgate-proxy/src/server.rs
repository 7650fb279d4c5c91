//! Worker threads and client connections.
//!
//! Each worker is one thread with its own single-threaded tokio runtime and its own
//! `SO_REUSEPORT` socket per listener, so the kernel spreads connections over workers and a
//! connection never moves between threads: no work-stealing, no cross-core wake-ups, and
//! thread-local upstream pools without locks.

use crate::client::LocalExec;
use crate::forward::ConnInfo;
use crate::handler::{self, ConnCtx};
use crate::snapshot::{Limits, Snapshot};
use crate::stream::Stream;
use arc_swap::ArcSwap;
use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use meshgate_core::ClientCert;
use std::cell::Cell;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;

/// What all workers share.
pub struct Shared {
    /// The current config; swapped whole on reload.
    pub snapshot: ArcSwap<Snapshot>,
    /// Open connections per listener, for `max_connections`.
    pub open: Vec<AtomicUsize>,
    /// Set to true to stop accepting and drain.
    pub shutdown: watch::Sender<bool>,
}

/// Holds one place of `max_connections` and of the worker's drain count. Shared by the
/// connection and, after a WebSocket upgrade, by its tunnel, so an upgraded connection stays
/// counted until the tunnel closes.
pub struct ConnSlot {
    shared: Arc<Shared>,
    index: usize,
    live: Rc<Cell<usize>>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.shared.open[self.index].fetch_sub(1, Ordering::Relaxed);
        self.live.set(self.live.get() - 1);
    }
}

/// Counts a request as busy until its response body is finished or dropped, so the idle check
/// does not cut a response that pauses (long polling, server-sent events). Atomic because
/// response bodies must be `Send`.
pub struct BusyGuard(Arc<AtomicUsize>);

impl BusyGuard {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        BusyGuard(count.clone())
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Binds a listening socket that other workers can bind too (`SO_REUSEPORT`).
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let domain = if addr.is_ipv6() { socket2::Domain::IPV6 } else { socket2::Domain::IPV4 };
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Runs one worker until shutdown and drain are complete.
pub fn run_worker(id: usize, shared: Arc<Shared>, sockets: Vec<std::net::TcpListener>) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(worker = id, error = %e, "cannot start worker runtime");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let live = Rc::new(Cell::new(0usize));
        let mut accepting = Vec::new();
        for (index, socket) in sockets.into_iter().enumerate() {
            match TcpListener::from_std(socket) {
                Ok(l) => accepting.push(tokio::task::spawn_local(accept_loop(index, l, shared.clone(), live.clone()))),
                Err(e) => tracing::error!(worker = id, error = %e, "cannot use listening socket"),
            }
        }
        let mut stop = shared.shutdown.subscribe();
        let _ = stop.wait_for(|s| *s).await;
        for a in accepting {
            let _ = a.await;
        }
        // Connections were told to finish their requests; give them the drain timeout.
        let deadline = tokio::time::Instant::now() + shared.snapshot.load().drain_timeout;
        while live.get() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if live.get() > 0 {
            tracing::warn!(worker = id, connections = live.get(), "drain timeout: closing connections");
        }
    });
}

async fn accept_loop(index: usize, listener: TcpListener, shared: Arc<Shared>, live: Rc<Cell<usize>>) {
    let mut stop = shared.shutdown.subscribe();
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let port = HeaderValue::from(port);
    // Refusals are logged at most once a second: a flood must not become a log flood.
    let mut last_refusal_log: Option<tokio::time::Instant> = None;
    let mut refused = 0u64;
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        let snap = shared.snapshot.load_full();
        let open = &shared.open[index];
        if open.fetch_add(1, Ordering::Relaxed) >= snap.limits.max_connections {
            open.fetch_sub(1, Ordering::Relaxed);
            refused += 1;
            if last_refusal_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                let listener = &snap.listeners[index].name;
                tracing::warn!(%listener, refused, "max_connections reached: connections refused");
                last_refusal_log = Some(tokio::time::Instant::now());
                refused = 0;
            }
            continue;
        }
        let _ = tcp.set_nodelay(true);
        live.set(live.get() + 1);
        let slot = Rc::new(ConnSlot { shared: shared.clone(), index, live: live.clone() });
        tokio::task::spawn_local(serve(tcp, peer, port.clone(), snap, slot));
    }
}

async fn serve(tcp: TcpStream, peer: SocketAddr, port: HeaderValue, snap: Arc<Snapshot>, slot: Rc<ConnSlot>) {
    let shared = slot.shared.clone();
    let limits = snap.limits.clone();
    let listener = &snap.listeners[slot.index];
    let activity = Arc::new(AtomicBool::new(true));
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
    let busy = Arc::new(AtomicUsize::new(0));
    let service = {
        let (shared, busy) = (shared.clone(), busy.clone());
        service_fn(move |req| {
            let (snap, conn, guard) = (shared.snapshot.load_full(), conn.clone(), BusyGuard::new(&busy));
            async move { Ok::<_, Infallible>(handler::handle(snap, &conn, req, guard).await) }
        })
    };
    let builder = builder(&limits, listener.http2, h2_alpn);
    let io = TokioIo::new(Tracked { inner: stream, activity: activity.clone() });
    let mut conn = pin!(builder.serve_connection_with_upgrades(io, service));
    let mut stop = shared.shutdown.subscribe();
    let mut idle = tokio::time::interval(limits.client_idle_timeout);
    idle.reset();
    let mut draining = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "client connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|s| *s), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = idle.tick() => {
                // Idle means: no request or response body in flight and not a byte moved for a
                // whole period.
                if !activity.swap(false, Ordering::Relaxed) && busy.load(Ordering::Relaxed) == 0 {
                    tracing::debug!(%peer, "closing idle client connection");
                    return;
                }
            }
        }
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
        .max_concurrent_streams(limits.max_concurrent_streams);
    match h2_alpn {
        Some(true) => b.http2_only(),
        Some(false) => b.http1_only(),
        None if !http2 => b.http1_only(),
        None => b,
    }
}

/// A client connection: TCP or TLS.
type ClientStream = Stream<TlsStream<TcpStream>>;

/// Marks the connection active whenever bytes move, for the idle check.
struct Tracked {
    inner: ClientStream,
    activity: Arc<AtomicBool>,
}

impl Tracked {
    fn mark<T>(&self, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.activity.store(true, Ordering::Relaxed);
        }
        poll
    }
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.mark(poll)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.mark(poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.mark(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
