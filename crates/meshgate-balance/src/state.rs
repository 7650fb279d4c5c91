//! Per-target shared state (health, counters) and the registry that keeps it across reloads.
//!
//! Everything read on the request path is an atomic: many worker threads pick targets at once and
//! none of them may wait for another.

use crate::balancer::PassiveConfig;
use crate::outlier::{TargetStatus, UpstreamGroup, ejection_time};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Milliseconds since the first call in this process: a monotonic clock that fits in an atomic.
pub(crate) fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Whole milliseconds of `d`, saturating, for deadlines stored in atomics.
pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Shared, reload-surviving state of one target (health, counters). Keyed by (upstream name,
/// address) in [`TargetRegistry`], so every config snapshot that names the target sees the same
/// health and in-flight count.
#[derive(Debug)]
pub struct TargetState {
    upstream: String,
    address: String,
    /// False while ejected (passive) or marked down (active).
    healthy: AtomicBool,
    /// Consecutive failures seen on real traffic (passive health).
    failures: AtomicU32,
    /// Consecutive successes seen on real traffic since the last failure.
    successes: AtomicU32,
    /// When a passively ejected target may get its half-open trial, in [`now_ms`] time.
    ejected_until: AtomicU64,
    /// Set while the single half-open trial request is in flight.
    trial: AtomicBool,
    /// Requests currently holding a [`crate::Pick`] of this target.
    in_flight: AtomicU32,
    /// Number of running active checkers probing this target; half-open trials are only for
    /// targets nobody probes (probes decide recovery otherwise).
    probers: AtomicU32,
    /// Set while ejected by passive health, holding one of the upstream's ejection slots.
    ejected: AtomicBool,
    /// Consecutive passive ejections without a successful trial; lengthens the next one.
    ejections: AtomicU32,
    /// The upstream's shared ejection count.
    group: Arc<UpstreamGroup>,
}

impl TargetState {
    /// A fresh, healthy target; only the registry creates them so that state is shared.
    fn new(upstream: &str, address: &str, group: Arc<UpstreamGroup>) -> Self {
        TargetState {
            upstream: upstream.to_owned(),
            address: address.to_owned(),
            healthy: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            successes: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            trial: AtomicBool::new(false),
            in_flight: AtomicU32::new(0),
            probers: AtomicU32::new(0),
            ejected: AtomicBool::new(false),
            ejections: AtomicU32::new(0),
            group,
        }
    }

    /// Whether passive health (outlier detection) has ejected this target.
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Acquire)
    }

    /// Consecutive ejections without a successful trial in between.
    pub fn consecutive_ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Everything about this target at once, for metrics.
    pub fn status(&self) -> TargetStatus {
        let until = self.ejected_until.load(Ordering::Acquire);
        let ejected = self.is_ejected();
        TargetStatus {
            upstream: self.upstream.clone(),
            address: self.address.clone(),
            healthy: self.is_healthy(),
            ejected,
            consecutive_ejections: self.consecutive_ejections(),
            consecutive_failures: self.consecutive_failures(),
            in_flight: self.in_flight(),
            ejected_for: Duration::from_millis(if ejected { until.saturating_sub(now_ms()) } else { 0 }),
        }
    }

    pub(crate) fn group(&self) -> &Arc<UpstreamGroup> {
        &self.group
    }

    /// Whether the target currently takes regular traffic (a half-open trial aside).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Requests in flight to this target across all config snapshots; least-connections reads it.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The `host:port` the proxy connects to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The upstream this target belongs to, for logs and metrics.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// Consecutive failures seen on real traffic; exposed for metrics and tests.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Consecutive successes seen on real traffic since the last failure; for metrics and tests.
    pub fn consecutive_successes(&self) -> u32 {
        self.successes.load(Ordering::Relaxed)
    }

    /// Whether an [`crate::ActiveChecker`] currently probes this target (then probes, not
    /// half-open trials, bring it back).
    pub fn is_actively_checked(&self) -> bool {
        self.probers.load(Ordering::Acquire) > 0
    }

    pub(crate) fn begin_flight(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one more request in flight unless `max` already are (per-target limits).
    pub(crate) fn try_begin_flight(&self, max: u32) -> bool {
        self.in_flight.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| (n < max).then_some(n + 1)).is_ok()
    }

    pub(crate) fn end_flight(&self) {
        self.in_flight.fetch_sub(1, Ordering::Release);
        self.group.waiters.slot_freed();
    }

    pub(crate) fn add_prober(&self) {
        self.probers.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn remove_prober(&self) {
        self.probers.fetch_sub(1, Ordering::AcqRel);
    }

    /// Tries to take this target for one request. `Some(false)`: healthy. `Some(true)`: the
    /// half-open trial was granted to the caller, who must release it ([`Self::end_trial`]).
    /// `now` is filled lazily because healthy targets never need the clock.
    pub(crate) fn try_acquire(&self, now: &mut Option<u64>) -> Option<bool> {
        if self.is_healthy() {
            return Some(false);
        }
        if self.is_actively_checked() || self.trial.load(Ordering::Relaxed) {
            return None;
        }
        let now = *now.get_or_insert_with(now_ms);
        if now < self.ejected_until.load(Ordering::Acquire) {
            return None;
        }
        self.trial.compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed).ok().map(|_| true)
    }

    /// Releases the half-open trial without a verdict (the request was dropped unreported).
    pub(crate) fn end_trial(&self) {
        self.trial.store(false, Ordering::Release);
    }

    /// A request to this target succeeded. A successful trial brings the target back and
    /// forgets its past ejections.
    pub(crate) fn record_success(&self, trial: bool) {
        self.failures.store(0, Ordering::Relaxed);
        self.successes.fetch_add(1, Ordering::Relaxed);
        if trial {
            self.ejected_until.store(0, Ordering::Release);
            self.ejections.store(0, Ordering::Relaxed);
            if self.ejected.swap(false, Ordering::AcqRel) {
                self.group.release();
            }
            if !self.healthy.swap(true, Ordering::AcqRel) {
                tracing::info!(upstream = %self.upstream, target = %self.address, "target recovered: trial request succeeded");
            }
            self.end_trial();
        }
    }

    /// A request to this target failed. With `passive`: eject after `unhealthy_after`
    /// consecutive failures when the upstream's `max_ejected_percent` allows, or re-eject for
    /// longer when this was the half-open trial. Without it only the count moves (and a trial is
    /// released, so the next request tries again).
    pub(crate) fn record_failure(&self, trial: bool, passive: Option<PassiveConfig>) {
        self.successes.store(0, Ordering::Relaxed);
        let failures = self.failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let Some(p) = passive else {
            if trial {
                self.end_trial();
            }
            return;
        };
        if trial {
            let rest = self.next_ejection(&p);
            self.end_trial();
            tracing::warn!(
                upstream = %self.upstream, target = %self.address, retry_in = ?rest,
                "target still failing: trial request failed"
            );
        } else if failures >= p.unhealthy_after.max(1) && self.is_healthy() {
            if !self.group.try_eject(p.max_ejected_percent) {
                tracing::debug!(
                    upstream = %self.upstream, target = %self.address,
                    "ejection skipped: max_ejected_percent reached"
                );
                return;
            }
            if self.ejected.swap(true, Ordering::AcqRel) {
                self.group.release(); // another thread ejected it a moment ago
                return;
            }
            // Deadline first, so a picker that sees `healthy == false` also sees the deadline.
            let rest = self.next_ejection(&p);
            self.healthy.store(false, Ordering::Release);
            tracing::warn!(
                upstream = %self.upstream, target = %self.address, failures, retry_in = ?rest,
                "target ejected after consecutive failures"
            );
        }
    }

    /// Counts one more consecutive ejection and sets its deadline; returns its length.
    fn next_ejection(&self, p: &PassiveConfig) -> Duration {
        let n = self.ejections.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let rest = ejection_time(p.recover_after, n, p.max_ejection_time);
        self.ejected_until.store(now_ms().saturating_add(duration_ms(rest)), Ordering::Release);
        rest
    }

    /// Active checks decided the target is up: clear any ejection.
    pub(crate) fn mark_up(&self) -> bool {
        self.failures.store(0, Ordering::Relaxed);
        self.ejected_until.store(0, Ordering::Release);
        self.ejections.store(0, Ordering::Relaxed);
        if self.ejected.swap(false, Ordering::AcqRel) {
            self.group.release();
        }
        !self.healthy.swap(true, Ordering::AcqRel)
    }

    /// Active checks decided the target is down. No trial deadline: should the checker stop
    /// (config reload without active checks), the next request may try the target at once.
    pub(crate) fn mark_down(&self) -> bool {
        self.ejected_until.store(0, Ordering::Release);
        self.healthy.swap(false, Ordering::AcqRel)
    }
}

/// Survives config reloads so a reload does not reset health or in-flight counts: each new
/// balancer asks it for its targets' state instead of creating fresh state.
///
/// The interior mutex is only taken while compiling a config, never per request.
#[derive(Debug, Default)]
pub struct TargetRegistry {
    states: Mutex<HashMap<(String, String), Arc<TargetState>>>,
    groups: Mutex<HashMap<String, Arc<UpstreamGroup>>>,
}

impl TargetRegistry {
    /// An empty registry; the proxy keeps one for its whole life.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state of `address` in `upstream`, created healthy on first use.
    pub fn get_or_create(&self, upstream: &str, address: &str) -> Arc<TargetState> {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = states.get(&(upstream.to_owned(), address.to_owned())) {
            return Arc::clone(s);
        }
        let group = {
            let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(groups.entry(upstream.to_owned()).or_default())
        };
        let state = Arc::new(TargetState::new(upstream, address, group));
        states.insert((upstream.to_owned(), address.to_owned()), Arc::clone(&state));
        state
    }

    /// Drops states whose (upstream, address) is not in `live`, so removed targets do not leak
    /// and a target re-added later starts fresh. Balancers still holding a state keep it alive.
    pub fn retain(&self, live: &[(String, String)]) {
        let live: HashSet<(&str, &str)> = live.iter().map(|(u, a)| (u.as_str(), a.as_str())).collect();
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        states.retain(|(u, a), _| live.contains(&(u.as_str(), a.as_str())));
        let upstreams: HashSet<&str> = live.iter().map(|(u, _)| *u).collect();
        self.groups.lock().unwrap_or_else(|e| e.into_inner()).retain(|u, _| upstreams.contains(u.as_str()));
    }

    /// The status of every target held, sorted by upstream and address; for metrics. Takes the
    /// registry's lock, so it is for scrapes, not for the request path.
    pub fn statuses(&self) -> Vec<TargetStatus> {
        let states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<TargetStatus> = states.values().map(|s| s.status()).collect();
        out.sort_by(|a, b| (&a.upstream, &a.address).cmp(&(&b.upstream, &b.address)));
        out
    }

    /// Number of states held; for tests and metrics.
    pub fn len(&self) -> usize {
        self.states.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no state is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
