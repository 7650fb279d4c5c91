//! Flow-control settings: retry policies (on services and routes) and per-route timeouts.
//!
//! Kept apart from `model.rs` because they are one concern (how hard the gateway tries, and for
//! how long) shared by two places in the file, services and routes; `model` re-exports them.

use crate::units::Duration;
use serde::{Deserialize, Serialize};

/// When and how often a failed request is sent again, each time to another target when one
/// exists. `services[].retries: N` is shorthand for `{attempts: N, on: [connect-failure]}`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Extra attempts after the first (0 turns retries off).
    #[serde(default = "one")]
    pub attempts: u32,
    /// Outcomes that are retried: `connect-failure`, `reset`, `timeout`, `5xx`, or a status code.
    #[serde(default = "default_on")]
    pub on: Vec<RetryOn>,
    /// Only GET, HEAD, OPTIONS, PUT, DELETE and TRACE are sent again once the upstream may have
    /// seen them (a connect failure sent nothing, so it is retried for any method).
    #[serde(default = "yes")]
    pub idempotent_only: bool,
    /// Caps retries to a share of the route's recent traffic, so an outage is not multiplied.
    #[serde(default)]
    pub budget: RetryBudget,
}

impl Retry {
    /// The policy `services[].retries: n` stands for: only requests that provably sent nothing.
    pub fn shorthand(attempts: u32) -> Retry {
        Retry {
            attempts,
            on: vec![RetryOn::Failure(RetryFailure::ConnectFailure)],
            idempotent_only: true,
            budget: RetryBudget::default(),
        }
    }
}

/// One outcome a retry policy reacts to.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum RetryOn {
    /// A failure of the exchange itself.
    Failure(RetryFailure),
    /// The upstream answered this status.
    Status(u16),
}

/// Failures of the exchange a retry policy can name.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RetryFailure {
    /// No connection could be made (refused, connect timeout, TLS handshake): nothing was sent.
    ConnectFailure,
    /// The connection broke after the request may have been sent.
    Reset,
    /// No response head within the read timeout.
    Timeout,
    /// Any 5xx answer.
    #[serde(rename = "5xx")]
    Status5xx,
}

/// A retry budget: at most `ratio` × the route's requests of the last second, plus
/// `min_per_second`, retries per second.
#[derive(Clone, Copy, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryBudget {
    /// Retries allowed per request seen (0.2: retries add at most 20 % load).
    pub ratio: f64,
    /// Retries always allowed per second, so quiet routes can still retry.
    pub min_per_second: u32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget { ratio: 0.2, min_per_second: 10 }
    }
}

/// A route's own timeouts; unset fields keep the service's.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteTimeouts {
    /// TCP connect plus TLS handshake.
    pub connect: Option<Duration>,
    /// Waiting for the response head, and between two reads of the response body.
    pub read: Option<Duration>,
    /// Between two successful writes of the request (on connections opened for this route; see
    /// `docs/traffic.md`).
    pub write: Option<Duration>,
}

fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}
fn default_on() -> Vec<RetryOn> {
    use RetryFailure::*;
    vec![
        RetryOn::Failure(ConnectFailure),
        RetryOn::Failure(Reset),
        RetryOn::Failure(Timeout),
        RetryOn::Status(502),
        RetryOn::Status(503),
        RetryOn::Status(504),
    ]
}
