//! Weighted traffic splitting (canary releases): a route sends shares of its requests to several
//! services. Each service of a split is compiled as its own copy of the route (its balancer,
//! timeouts and service-level plugins), so after the choice the request path is the one-service
//! path unchanged.
//!
//! The choice maps a 64-bit number into the weight space `[0, total)` and takes the service whose
//! cumulative range holds it. Without `sticky` the number is random from a per-thread generator (no
//! lock, no shared counter to bounce between cores). With `sticky` it is a hash of the header or
//! cookie value, so one value always lands on the same service for as long as the weights stay the
//! same; a request without the value is placed at random. The hash is the balancer's (`xxh3`)
//! passed through a mixer, so a split and a consistent-hash balancer keyed on the same header do
//! not correlate.

use crate::snapshot::RouteRt;
use http::HeaderMap;
use meshgate_config::HashOn;
use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr};

/// A route's weighted services, each as a complete route of its own.
pub struct Split {
    /// The route once per service, in config order.
    pub(crate) branches: Box<[RouteRt]>,
    /// Weights as they are written; see [`Shares`].
    shares: Shares,
    /// What keeps a caller on one service.
    sticky: Option<HashOn>,
}

impl Split {
    /// `branches` and their weights (same order, weights > 0, validated).
    pub(crate) fn new(branches: Vec<RouteRt>, weights: &[u32], sticky: Option<HashOn>) -> Split {
        Split { branches: branches.into(), shares: Shares::new(weights), sticky }
    }

    /// The index of the branch this request goes to.
    pub(crate) fn pick(&self, headers: &HeaderMap) -> usize {
        let sticky = self.sticky.as_ref().and_then(|h| {
            // The IP is never used: `sticky` is a header or a cookie.
            meshgate_balance::hash_key(h, headers, IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        });
        let x = sticky.map_or_else(random, mix);
        self.shares.index(x)
    }
}

/// Cumulative weights: branch `i` owns `[upper[i-1], upper[i])` of `[0, total)`.
#[derive(Debug)]
pub(crate) struct Shares {
    upper: Box<[u64]>,
}

impl Shares {
    pub(crate) fn new(weights: &[u32]) -> Shares {
        let mut sum = 0u64;
        let upper = weights
            .iter()
            .map(|w| {
                sum += u64::from(*w);
                sum
            })
            .collect();
        Shares { upper }
    }

    /// The branch owning `x`, a uniformly distributed 64-bit number, scaled into the weight space
    /// by a multiply-shift (no division, no modulo bias worth the name).
    pub(crate) fn index(&self, x: u64) -> usize {
        let total = *self.upper.last().expect("a split has at least one service");
        let point = ((u128::from(x) * u128::from(total)) >> 64) as u64;
        self.upper.iter().position(|&u| point < u).unwrap_or(self.upper.len() - 1)
    }
}

/// splitmix64's finalizer: spreads any input over all 64 bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

thread_local! {
    /// splitmix64 state, seeded per thread from the std library's random hasher keys.
    static RNG: Cell<u64> = Cell::new(std::collections::hash_map::RandomState::new().build_hasher().finish());
}

/// A fast non-cryptographic random number from this thread's generator.
pub(crate) fn random() -> u64 {
    RNG.with(|s| {
        let next = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(next);
        mix(next)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_follow_the_weights() {
        let s = Shares::new(&[90, 10]);
        // The weight space is cut at 90 %: the first 90/100 of the u64 range is branch 0.
        assert_eq!(s.index(0), 0);
        assert_eq!(s.index(u64::MAX / 100 * 89), 0);
        assert_eq!(s.index(u64::MAX / 100 * 91), 1);
        assert_eq!(s.index(u64::MAX), 1);
        let one = Shares::new(&[7]);
        assert_eq!(one.index(u64::MAX), 0);
        // Counted over many random draws, each branch gets its weight's share (±1 %).
        let s = Shares::new(&[50, 30, 20]);
        let mut counts = [0u32; 3];
        for _ in 0..100_000 {
            counts[s.index(random())] += 1;
        }
        for (got, want) in counts.iter().zip([50_000, 30_000, 20_000]) {
            assert!(got.abs_diff(want) < 1_000, "{counts:?}");
        }
    }

    #[test]
    fn sticky_values_keep_their_branch_and_spread_by_weight() {
        let s = Shares::new(&[80, 20]);
        let branch = |user: u32| s.index(mix(xxhash_rust::xxh3::xxh3_64(format!("user-{user}").as_bytes())));
        let first: Vec<usize> = (0..5_000).map(branch).collect();
        assert_eq!(first, (0..5_000).map(branch).collect::<Vec<_>>());
        let second = first.iter().filter(|&&b| b == 1).count();
        assert!((900..1_100).contains(&second), "{second} of 5000 users on the 20 % branch");
    }
}
