//! Per-target concurrency limits: at most `max_in_flight` requests with each target at once
//! (like Knative's `containerConcurrency`), so a slow server is never given more than it can
//! hold. A request that finds every healthy target full waits in a bounded queue, shared by the
//! upstream, for a slot to free up; a full queue or a wait past `queue_timeout` is refused at once
//! rather than piling up.
//!
//! Slots are taken with a compare-and-swap on the target's in-flight count, so the limit is exact
//! across worker threads without a lock; a finished request wakes one waiter.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// The limit of one upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetLimit {
    /// Requests one target may have in flight.
    pub max_in_flight: u32,
    /// Requests that may wait for a slot.
    pub queue_size: usize,
    /// How long a request may wait.
    pub queue_timeout: Duration,
}

/// Why no target was picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoTarget {
    /// No target is healthy (503 `no_healthy_target`).
    Unavailable,
    /// Every healthy target is full and the queue was full, or the wait timed out (503 with
    /// `Retry-After`).
    Busy,
}

/// Requests waiting for a slot of one upstream, shared across config snapshots with the targets'
/// state.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    /// Woken once per slot given back while someone waits.
    freed: Notify,
    /// Requests waiting now.
    queued: AtomicUsize,
}

impl Waiters {
    /// A slot was given back: wake one waiter, if any waits.
    pub(crate) fn slot_freed(&self) {
        if self.queued.load(Ordering::Acquire) > 0 {
            self.freed.notify_one();
        }
    }

    /// Requests waiting now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Waits in the queue until `attempt` succeeds (tried again after every freed slot), or
    /// gives up when the queue is full or `limit.queue_timeout` passes.
    pub(crate) async fn wait_for<T>(&self, limit: &TargetLimit, mut attempt: impl FnMut() -> Option<T>) -> Option<T> {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= limit.queue_size {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let deadline = tokio::time::Instant::now() + limit.queue_timeout;
        let got = loop {
            // Registered before trying, so a slot freed between the try and the wait is not missed.
            let mut freed = std::pin::pin!(self.freed.notified());
            freed.as_mut().enable();
            if let Some(v) = attempt() {
                break Some(v);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                break None;
            }
        };
        self.queued.fetch_sub(1, Ordering::AcqRel);
        got
    }
}
