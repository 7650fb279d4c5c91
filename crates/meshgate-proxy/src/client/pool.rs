//! Idle upstream connections, one pool per worker thread.
//!
//! Workers are single-threaded event loops, so the pool is a thread-local `RefCell`: no lock, no
//! atomic, no contention on the hot path. The cost is that workers do not share connections; with
//! one worker per core that is a handful of extra connections per upstream server.

use hyper::client::conn::{http1, http2};
use meshgate_core::ProxyBody;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

/// Idle HTTP/1.1 connections kept per upstream server and worker; more are closed when returned.
/// 128 caused connection churn under 500 concurrent requests (see docs/benchmarks.md).
const MAX_IDLE_PER_KEY: usize = 512;

#[derive(Default)]
struct Pool {
    h1: HashMap<Arc<str>, Vec<http1::SendRequest<ProxyBody>>>,
    h2: HashMap<Arc<str>, http2::SendRequest<ProxyBody>>,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// An idle HTTP/1.1 connection, most recently used first (warmest socket, likeliest still open).
pub(crate) fn take_h1(key: &str) -> Option<http1::SendRequest<ProxyBody>> {
    POOL.with_borrow_mut(|p| {
        let idle = p.h1.get_mut(key)?;
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    })
}

/// Returns an HTTP/1.1 connection whose exchange has finished.
pub(crate) fn put_h1(key: Arc<str>, sender: http1::SendRequest<ProxyBody>) {
    if sender.is_closed() {
        return;
    }
    POOL.with_borrow_mut(|p| {
        let idle = p.h1.entry(key).or_default();
        if idle.len() < MAX_IDLE_PER_KEY {
            idle.push(sender);
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
