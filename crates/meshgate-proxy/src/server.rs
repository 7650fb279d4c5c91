//! Worker threads, and the accepting of client connections (served by `conn.rs`).
//!
//! Each worker is one thread with its own single-threaded tokio runtime and its own
//! `SO_REUSEPORT` socket per listener, so the kernel spreads connections over workers and a
//! connection never moves between threads: no work-stealing, no cross-core wake-ups, and
//! thread-local upstream pools without locks.

use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use http::HeaderValue;
use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

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
    pub(crate) shared: Arc<Shared>,
    pub(crate) index: usize,
    live: Rc<Cell<usize>>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.shared.open[self.index].fetch_sub(1, Ordering::Relaxed);
        self.live.set(self.live.get() - 1);
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
        crate::client::mark_worker();
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
        tokio::task::spawn_local(crate::conn::serve(tcp, peer, port.clone(), snap, slot));
    }
}
