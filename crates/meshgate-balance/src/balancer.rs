//! Picking a target for a request: round robin, least connections or consistent hash over the
//! healthy targets, with atomics only so worker threads never wait on each other.

use crate::limit::{NoTarget, TargetLimit};
use crate::schedule::{ring, smooth_wrr};
use crate::state::{TargetRegistry, TargetState};
use meshgate_config::HashOn;
use meshgate_config::model::{Algorithm, PassiveHealth};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// One target as configured: where it is and its share of traffic (0 = never picked, which
/// drains it without removing its state).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetSpec {
    /// `host:port`.
    pub address: String,
    /// Relative share of traffic.
    pub weight: u32,
}

/// Passive health: judging targets by real traffic, reported through [`Pick`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassiveConfig {
    /// Consecutive failures that eject a target (0 behaves as 1).
    pub unhealthy_after: u32,
    /// How long an ejected target rests before one trial request (when no active checker runs).
    pub recover_after: Duration,
    /// Whether a 5xx answer counts as a failure in [`Pick::status`].
    pub count_5xx: bool,
    /// Longest ejection; consecutive ejections last `recover_after` × their number up to this.
    pub max_ejection_time: Duration,
    /// Most targets (percent) ejected at once; one may always be.
    pub max_ejected_percent: u32,
}

impl From<&PassiveHealth> for PassiveConfig {
    fn from(p: &PassiveHealth) -> Self {
        PassiveConfig {
            unhealthy_after: p.unhealthy_after,
            recover_after: p.recover_after.get(),
            count_5xx: p.count_5xx,
            max_ejection_time: p.max_ejection_time.get(),
            max_ejected_percent: p.max_ejected_percent,
        }
    }
}

/// The shared round-robin / tie-break cursor, alone on its cache line so that bumping it does not
/// slow down threads reading the balancer's (read-only) tables.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Cursor(AtomicUsize);

/// Load balancer of one upstream for one config snapshot. `Send + Sync`: built once when a config
/// is compiled, then shared by all worker threads; picks only read its tables and touch atomics.
#[derive(Debug)]
pub struct Balancer {
    algorithm: Algorithm,
    hash_on: Option<HashOn>,
    targets: Vec<Arc<TargetState>>,
    weights: Vec<u32>,
    /// Targets with a positive weight; scans stop once that many were rejected.
    pickable: usize,
    /// One smooth-WRR cycle (round robin, and consistent hash without a key).
    schedule: Vec<u32>,
    /// Consistent-hash ring of `(point, target index)`, sorted.
    ring: Vec<(u64, u32)>,
    cursor: Cursor,
    passive: Option<PassiveConfig>,
    /// Per-target concurrency limit, if any.
    limit: Option<TargetLimit>,
}

impl Balancer {
    /// Builds the balancer of `upstream`, taking each target's state from `registry` so health and
    /// in-flight counts carry over from the previous snapshot.
    pub fn new(
        upstream: &str,
        algorithm: Algorithm,
        hash_on: Option<HashOn>,
        targets: &[TargetSpec],
        passive: Option<PassiveConfig>,
        registry: &TargetRegistry,
    ) -> Balancer {
        let weights: Vec<u32> = targets.iter().map(|t| t.weight).collect();
        let states: Vec<Arc<TargetState>> =
            targets.iter().map(|t| registry.get_or_create(upstream, &t.address)).collect();
        if let Some(first) = states.first() {
            // This config's targets are the group now; removed targets no longer count.
            let ejected = states.iter().filter(|s| s.is_ejected()).count() as u32;
            first.group().reset(states.len() as u32, ejected);
        }
        let schedule = match algorithm {
            Algorithm::RoundRobin | Algorithm::ConsistentHash => smooth_wrr(&weights),
            Algorithm::LeastConnections => Vec::new(),
        };
        let ring = match algorithm {
            Algorithm::ConsistentHash => {
                let addresses: Vec<&str> = targets.iter().map(|t| t.address.as_str()).collect();
                ring(&addresses, &weights)
            }
            _ => Vec::new(),
        };
        Balancer {
            algorithm,
            hash_on,
            targets: states,
            pickable: weights.iter().filter(|&&w| w > 0).count(),
            weights,
            schedule,
            ring,
            cursor: Cursor::default(),
            passive,
            limit: None,
        }
    }

    /// Limits every target to `limit.max_in_flight` requests at once ([`Balancer::pick_or_wait`]
    /// queues the rest).
    pub fn with_target_limit(mut self, limit: TargetLimit) -> Balancer {
        self.limit = Some(limit);
        self
    }

    /// Like [`Balancer::pick`], but when every healthy target is at its limit, waits in the
    /// upstream's queue for a slot.
    pub async fn pick_or_wait(&self, key: Option<u64>, exclude: &[usize]) -> Result<Pick, NoTarget> {
        if let Some(p) = self.pick(key, exclude) {
            return Ok(p);
        }
        let (Some(limit), Some(first)) = (&self.limit, self.targets.first()) else { return Err(NoTarget::Unavailable) };
        // Waiting only helps when a target is up but full.
        if !self.targets.iter().any(|t| t.is_healthy()) {
            return Err(NoTarget::Unavailable);
        }
        first.group().waiters.wait_for(limit, || self.pick(key, exclude)).await.ok_or(NoTarget::Busy)
    }

    /// Requests waiting for a slot of this upstream now (0 without a target limit).
    pub fn queued(&self) -> usize {
        self.targets.first().map_or(0, |t| t.group().waiters.queued())
    }

    /// Whether target `index` may take one more request, limits considered; `Some(trial)` when
    /// it may (see [`TargetState::try_acquire`]).
    fn acquire(&self, index: usize, now: &mut Option<u64>) -> Option<bool> {
        let target = &self.targets[index];
        if self.limit.is_some_and(|l| target.in_flight() >= l.max_in_flight) {
            return None;
        }
        target.try_acquire(now)
    }

    /// Picks a target for one request. `key`: from [`crate::hash_key`] (consistent hash only;
    /// `None` falls back to round robin). `exclude`: target indexes already tried for this
    /// request, so retries go elsewhere when another target can take them (if none can, an
    /// excluded healthy target is picked rather than failing). `None` means no target is
    /// available, and the proxy answers 503.
    pub fn pick(&self, key: Option<u64>, exclude: &[usize]) -> Option<Pick> {
        // With a target limit, another thread may take a target's last slot between the check
        // and the count: pick again (each lost race means a target just filled up).
        for _ in 0..=self.targets.len() {
            let mut now = None;
            let (index, trial) = self
                .select(key, exclude, &mut now)
                .or_else(|| if exclude.is_empty() { None } else { self.select(key, &[], &mut now) })?;
            let state = Arc::clone(&self.targets[index]);
            match self.limit {
                None => state.begin_flight(),
                Some(l) if state.try_begin_flight(l.max_in_flight) => {}
                Some(_) => {
                    if trial {
                        state.end_trial();
                    }
                    continue;
                }
            }
            return Some(Pick { index, state, passive: self.passive, trial });
        }
        None
    }

    /// What consistent hashing hashes on, so the proxy knows which key to compute.
    pub fn hash_on(&self) -> Option<&HashOn> {
        self.hash_on.as_ref()
    }

    /// The targets' shared states, in config order ([`Pick::index`] indexes this).
    pub fn targets(&self) -> &[Arc<TargetState>] {
        &self.targets
    }

    /// The algorithm this balancer was built with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Targets of this balancer's upstream currently ejected by passive health.
    pub fn ejected_count(&self) -> u32 {
        self.targets.first().map_or(0, |t| t.group().ejected())
    }

    /// Whether an [`crate::ActiveChecker`] currently probes any of these targets (then probes,
    /// not half-open trials, bring ejected targets back).
    pub fn has_active_health(&self) -> bool {
        self.targets.iter().any(|t| t.is_actively_checked())
    }

    /// `(index, is_trial)` of the chosen target, honoring `exclude`.
    fn select(&self, key: Option<u64>, exclude: &[usize], now: &mut Option<u64>) -> Option<(usize, bool)> {
        match (self.algorithm, key) {
            (Algorithm::LeastConnections, _) => self.least_connections(exclude, now),
            (Algorithm::ConsistentHash, Some(key)) => self.hashed(key, exclude, now),
            _ => self.round_robin(exclude, now),
        }
    }

    fn round_robin(&self, exclude: &[usize], now: &mut Option<u64>) -> Option<(usize, bool)> {
        let n = self.schedule.len();
        // Each slot looked at is consumed, skipped or not: the healthy targets then share the
        // slots exactly as their weights say, instead of the target after a skipped one
        // inheriting its share. The iterator is lazy, so only slots looked at are consumed.
        let slots = (0..n).map(|_| self.schedule[self.cursor.0.fetch_add(1, Ordering::Relaxed) % n] as usize);
        self.first_usable(slots, exclude, now)
    }

    /// The first target in `candidates` that is usable: not excluded, healthy or due a trial.
    /// Stops early once every pickable target has been turned down.
    fn first_usable(
        &self,
        candidates: impl Iterator<Item = usize>,
        exclude: &[usize],
        now: &mut Option<u64>,
    ) -> Option<(usize, bool)> {
        let mut rejected = Rejected::default();
        for index in candidates {
            if rejected.contains(index) {
                continue;
            }
            if !exclude.contains(&index)
                && let Some(trial) = self.acquire(index, now)
            {
                return Some((index, trial));
            }
            if rejected.insert(index) >= self.pickable {
                break;
            }
        }
        None
    }

    fn least_connections(&self, exclude: &[usize], now: &mut Option<u64>) -> Option<(usize, bool)> {
        let n = self.targets.len();
        if n == 0 {
            return None;
        }
        // Rotating start: among equally loaded targets the first seen wins, so load spreads.
        let start = self.cursor.0.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(usize, u64, u64)> = None;
        for step in 0..n {
            let index = (start + step) % n;
            let weight = u64::from(self.weights[index]);
            if weight == 0 || exclude.contains(&index) {
                continue;
            }
            let target = &self.targets[index];
            match self.acquire(index, now) {
                None => continue,
                // A half-open trial is one request per `recover_after`: give it at once.
                Some(true) => return Some((index, true)),
                Some(false) => {
                    let load = u64::from(target.in_flight());
                    // load/weight < best_load/best_weight, cross-multiplied to stay in integers.
                    if best.is_none_or(|(_, bl, bw)| load * bw < bl * weight) {
                        best = Some((index, load, weight));
                    }
                }
            }
        }
        best.map(|(index, ..)| (index, false))
    }

    fn hashed(&self, key: u64, exclude: &[usize], now: &mut Option<u64>) -> Option<(usize, bool)> {
        let n = self.ring.len();
        // First point at or after the key, clockwise; past the last point wraps to the first.
        let start = self.ring.partition_point(|&(point, _)| point < key);
        let owners = (0..n).map(|step| self.ring[(start + step) % n].1 as usize);
        self.first_usable(owners, exclude, now)
    }
}

/// Targets already found unusable during one scan, so a scan over a long schedule or ring checks
/// each target once and stops when all are rejected. Lives on the stack: indexes past 127 are not
/// remembered (they are only re-checked, which is correct, just slower).
#[derive(Default)]
struct Rejected {
    bits: u128,
    count: usize,
}

impl Rejected {
    fn contains(&self, index: usize) -> bool {
        index < 128 && self.bits & (1 << index) != 0
    }

    /// Remembers `index`; returns how many distinct targets are now rejected.
    fn insert(&mut self, index: usize) -> usize {
        if index < 128 && self.bits & (1 << index) == 0 {
            self.bits |= 1 << index;
            self.count += 1;
        }
        self.count
    }
}

/// One request's use of a target. RAII: counts towards the target's in-flight requests while
/// alive (least connections reads that); report the outcome with [`Pick::success`],
/// [`Pick::failure`] or [`Pick::status`] for passive health. Dropping a pick without reporting
/// changes no health (e.g. the client went away), and releases a half-open trial for another
/// request.
#[derive(Debug)]
pub struct Pick {
    index: usize,
    state: Arc<TargetState>,
    passive: Option<PassiveConfig>,
    trial: bool,
}

impl Pick {
    /// Index of the target in [`Balancer::targets`]; pass it in `exclude` when retrying.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The `host:port` to connect to.
    pub fn address(&self) -> &str {
        self.state.address()
    }

    /// The target's shared state.
    pub fn state(&self) -> &Arc<TargetState> {
        &self.state
    }

    /// Whether this request is the half-open trial of an ejected target; its outcome decides
    /// whether the target comes back.
    pub fn is_trial(&self) -> bool {
        self.trial
    }

    /// The request succeeded: resets the target's consecutive failures (and brings it back when
    /// this was its trial).
    pub fn success(mut self) {
        self.state.record_success(self.trial);
        self.trial = false;
    }

    /// The request failed (connect error, reset, timeout): counts towards ejection, or re-ejects
    /// for longer when this was the trial. Without passive health configured nothing is ejected.
    pub fn failure(mut self) {
        self.state.record_failure(self.trial, self.passive);
        self.trial = false;
    }

    /// The upstream answered `status`: a 5xx is a failure when `count_5xx` is set (or, without
    /// passive health, for a trial), anything else a success.
    pub fn status(self, status: u16) {
        if status >= 500 && self.passive.is_none_or(|p| p.count_5xx) {
            self.failure();
        } else {
            self.success();
        }
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        if self.trial {
            self.state.end_trial();
        }
        self.state.end_flight();
    }
}
