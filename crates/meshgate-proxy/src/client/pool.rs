//! Idle upstream connections, one pool per worker thread.
//!
//! Workers are single-threaded event loops, so the pool is a thread-local `RefCell`: no lock, no
//! atomic, no contention on the hot path. The cost is that workers do not share connections; with
//! one worker per core that is a handful of extra connections per upstream server.

use hyper::client::conn::{http1, http2};
use meshgate_core::ProxyBody;
use meshgate_router::FastMap;
use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An idle connection and when it went idle.
type Idle = (http1::SendRequest<ProxyBody>, Instant);

/// Pool keys are the gateway's own strings (never client input), so the router's fast
/// unkeyed hash is safe here; SipHash showed in profiles at two lookups per request.
#[derive(Default)]
struct Pool {
    h1: FastMap<Arc<str>, Vec<Idle>>,
    h2: FastMap<Arc<str>, http2::SendRequest<ProxyBody>>,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
    static WORKER: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as a worker: its event loop runs a `LocalSet`, so background work on its
/// pool (draining an abandoned body) can be spawned here.
pub(crate) fn mark_worker() {
    WORKER.set(true);
}

/// Whether this thread is a worker (see [`mark_worker`]).
pub(crate) fn on_worker() -> bool {
    WORKER.get()
}

/// An idle HTTP/1.1 connection, most recently used first (warmest socket, likeliest still
/// open). Connections idle longer than `idle_timeout` are closed: the oldest sit at the front.
pub(crate) fn take_h1(key: &str, idle_timeout: Duration) -> Option<http1::SendRequest<ProxyBody>> {
    POOL.with_borrow_mut(|p| {
        let idle = p.h1.get_mut(key)?;
        let now = Instant::now();
        let stale = idle.iter().take_while(|(_, since)| now.duration_since(*since) >= idle_timeout).count();
        idle.drain(..stale);
        while let Some((sender, _)) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    })
}

/// Returns an HTTP/1.1 connection whose exchange has finished; beyond `max_idle` it is closed.
pub(crate) fn put_h1(key: Arc<str>, sender: http1::SendRequest<ProxyBody>, max_idle: usize) {
    if sender.is_closed() || max_idle == 0 {
        return;
    }
    POOL.with_borrow_mut(|p| {
        let idle = p.h1.entry(key).or_default();
        if idle.len() < max_idle {
            idle.push((sender, Instant::now()));
        }
    });
}

/// The shared HTTP/2 connection to a server, if one is open.
pub(crate) fn h2(key: &str) -> Option<http2::SendRequest<ProxyBody>> {
    POOL.with_borrow_mut(|p| match p.h2.get(key) {
        Some(s) if !s.is_closed() => Some(s.clone()),
        Some(_) => {
            p.h2.remove(key);
            None
        }
        None => None,
    })
}

/// Records a new HTTP/2 connection for later requests to share.
pub(crate) fn put_h2(key: Arc<str>, sender: http2::SendRequest<ProxyBody>) {
    POOL.with_borrow_mut(|p| {
        p.h2.insert(key, sender);
    });
}
