//! Upstreams in the config: named sets of targets with their balancing, per-target limits and
//! health checks (re-exported from [`model`](crate::model)).

use crate::model::yes;
use crate::units::Duration;
use serde::{Deserialize, Serialize};

/// A named set of targets that share load balancing and health checks.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Unique name, referenced by services.
    pub name: String,
    /// How a target is picked for each request.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// For `consistent-hash`: `header:NAME`, `cookie:NAME` or `ip`.
    #[serde(default)]
    pub hash_on: Option<String>,
    /// The servers behind this upstream.
    pub targets: Vec<Target>,
    /// Active and passive health checking.
    #[serde(default)]
    pub health: Health,
    /// At most this many requests with each target at once; the rest wait in a queue.
    #[serde(default)]
    pub target_limit: Option<TargetLimit>,
}

/// A hard limit of requests in flight per upstream target (like Knative's
/// `containerConcurrency`), with a bounded queue for the requests that find every target full.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetLimit {
    /// Requests one target may have in flight (until its response head arrives).
    pub max_in_flight: u32,
    /// Where requests wait when every healthy target is full.
    #[serde(default)]
    pub queue: Queue,
}

/// A bounded wait.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Queue {
    /// Requests that may wait; more are refused at once with 503 (0: none wait).
    pub size: usize,
    /// How long a request may wait.
    pub timeout: Duration,
}

impl Default for Queue {
    fn default() -> Self {
        Queue { size: 100, timeout: Duration::from_secs(5) }
    }
}

/// Load-balancing algorithm.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Smooth weighted round robin.
    #[default]
    RoundRobin,
    /// Fewest requests in flight relative to weight.
    LeastConnections,
    /// Same key, same target (by header, cookie or client IP).
    ConsistentHash,
}

/// One server of an upstream.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `host:port`.
    pub address: String,
    /// Relative share of traffic; 0 drains the target.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

/// Health checking of an upstream's targets.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Periodic probes.
    #[serde(default)]
    pub active: Option<ActiveHealth>,
    /// Judging targets by the outcome of real traffic.
    #[serde(default)]
    pub passive: Option<PassiveHealth>,
}

/// Periodic HTTP probes of each target.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveHealth {
    /// Path probed with GET.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// Time between probes of one target.
    #[serde(default = "default_health_interval")]
    pub interval: Duration,
    /// A probe slower than this counts as failed.
    #[serde(default = "default_health_timeout")]
    pub timeout: Duration,
    /// Consecutive successful probes that bring a target back.
    #[serde(default = "two")]
    pub healthy_after: u32,
    /// Consecutive failed probes that take a target out.
    #[serde(default = "three")]
    pub unhealthy_after: u32,
    /// Statuses counted as healthy; empty means 200–399.
    #[serde(default)]
    pub healthy_statuses: Vec<u16>,
    /// Host header sent with probes.
    #[serde(default)]
    pub host: Option<String>,
}

/// Taking targets out after failures seen on real traffic.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealth {
    /// Consecutive failed requests (connect error, reset, timeout, 5xx) that take a target out.
    #[serde(default = "five")]
    pub unhealthy_after: u32,
    /// Without active checks, an ejected target gets one trial request after this time.
    #[serde(default = "default_recover_after")]
    pub recover_after: Duration,
    /// Count 5xx answers as failures (connect errors, resets and timeouts always count).
    #[serde(default = "yes")]
    pub count_5xx: bool,
    /// Longest ejection: each consecutive ejection of a target rests `recover_after` longer,
    /// up to this.
    #[serde(default = "default_max_ejection_time")]
    pub max_ejection_time: Duration,
    /// Most targets (in percent of the upstream's) ejected at once; an ejection past it is
    /// skipped, except that one target may always be ejected.
    #[serde(default = "fifty")]
    pub max_ejected_percent: u32,
}

fn two() -> u32 {
    2
}
fn three() -> u32 {
    3
}
fn five() -> u32 {
    5
}
fn default_weight() -> u32 {
    100
}
fn default_health_path() -> String {
    "/".to_owned()
}
fn default_health_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_health_timeout() -> Duration {
    Duration::from_secs(2)
}
fn fifty() -> u32 {
    50
}
fn default_max_ejection_time() -> Duration {
    Duration::from_secs(300)
}
fn default_recover_after() -> Duration {
    Duration::from_secs(30)
}
