//! Outlier detection arithmetic: how long an ejection lasts and how many of an upstream's targets
//! may be out at once.
//!
//! Repeated ejections of the same target rest it longer (`recover_after` × consecutive
//! ejections, capped by `max_ejection_time`), so a target that keeps failing its trial costs
//! fewer and fewer requests. The ejected share is capped (`max_ejected_percent`) because passive
//! health judges targets by traffic: when a shared dependency fails, every target looks bad, and
//! ejecting them all would turn a partial outage into a total one. As in Envoy, one target may
//! always be ejected whatever the percentage.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// How long the `ejections`-th consecutive ejection lasts: `recover_after` × `ejections`
/// (at least one), at most `max`.
pub fn ejection_time(recover_after: Duration, ejections: u32, max: Duration) -> Duration {
    recover_after.saturating_mul(ejections.max(1)).min(max)
}

/// Whether one more target may be ejected when `ejected` of `total` already are and at most
/// `max_percent` % may be: always for the first, else while the share stays within the limit.
pub fn may_eject(ejected: u32, total: u32, max_percent: u32) -> bool {
    ejected == 0 || u64::from(ejected + 1) * 100 <= u64::from(total) * u64::from(max_percent)
}

/// Passive-ejection bookkeeping shared by all targets of one upstream (across config snapshots,
/// like the targets' own state), so the ejected share can be capped without a lock.
#[derive(Debug, Default)]
pub(crate) struct UpstreamGroup {
    /// Targets in the current config.
    targets: AtomicU32,
    /// Targets currently ejected by passive health.
    ejected: AtomicU32,
    /// Requests waiting for a slot when the upstream has a target limit.
    pub(crate) waiters: crate::limit::Waiters,
}

impl UpstreamGroup {
    /// Takes a slot for one more ejection; false when the cap forbids it.
    pub(crate) fn try_eject(&self, max_percent: u32) -> bool {
        let total = self.targets.load(Ordering::Relaxed);
        self.ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| may_eject(n, total, max_percent).then_some(n + 1))
            .is_ok()
    }

    /// Gives an ejection slot back (the target recovered).
    pub(crate) fn release(&self) {
        let _ = self.ejected.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// A new config: `targets` targets, of which `ejected` are passively ejected now.
    pub(crate) fn reset(&self, targets: u32, ejected: u32) {
        self.targets.store(targets, Ordering::Relaxed);
        self.ejected.store(ejected, Ordering::Release);
    }

    /// Targets currently ejected by passive health.
    pub(crate) fn ejected(&self) -> u32 {
        self.ejected.load(Ordering::Acquire)
    }
}

/// A point-in-time view of one target, for metrics and admin endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetStatus {
    /// The upstream (`service:NAME` for a `url` service).
    pub upstream: String,
    /// `host:port`.
    pub address: String,
    /// Takes regular traffic.
    pub healthy: bool,
    /// Ejected by passive health (outlier detection), as opposed to marked down by probes.
    pub ejected: bool,
    /// Consecutive ejections without a successful trial in between (0 once recovered).
    pub consecutive_ejections: u32,
    /// Consecutive failed requests.
    pub consecutive_failures: u32,
    /// Requests in flight to it.
    pub in_flight: u32,
    /// Time left before an ejected target gets its trial (zero when due or not ejected).
    pub ejected_for: Duration,
}
