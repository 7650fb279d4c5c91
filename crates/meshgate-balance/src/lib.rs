//! Load balancing and target health for meshgate's upstreams.
//!
//! [`Balancer::pick`] runs on the request hot path in every worker thread at once, so it takes no
//! lock and allocates nothing: the round-robin schedule and the consistent-hash ring are computed
//! when a config is compiled, and health lives in per-target atomics ([`TargetState`]).
//! [`TargetRegistry`] keeps that state across config reloads, so a reload neither forgets ejected
//! targets nor loses in-flight counts.
//!
//! Health comes from two sources: passive (outcomes the proxy reports through [`Pick`]) and
//! active ([`ActiveChecker`] probing each target over HTTP/1.1). Without active checks an ejected
//! target gets one half-open trial request after its ejection time, which grows with consecutive
//! ejections; at most `max_ejected_percent` of an upstream's targets are ejected at once
//! (see `outlier.rs`).

mod active;
mod balancer;
mod hash;
mod limit;
mod outlier;
mod schedule;
mod state;

pub use active::{ActiveChecker, ActiveConfig};
pub use balancer::{Balancer, PassiveConfig, Pick, TargetSpec};
pub use hash::hash_key;
pub use limit::{NoTarget, TargetLimit};
pub use outlier::{TargetStatus, ejection_time, may_eject};
pub use state::{TargetRegistry, TargetState};

#[cfg(test)]
mod limit_tests;
#[cfg(test)]
mod tests;
