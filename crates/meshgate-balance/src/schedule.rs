//! The precomputed structures that make picks a few atomic loads: the smooth weighted
//! round-robin schedule and the consistent-hash ring. Both are built once per config snapshot.

use std::fmt::Write;
use xxhash_rust::xxh3::xxh3_64;

/// Longest round-robin schedule; larger weight sums are scaled down to fit (slightly
/// approximating the ratios) so that a snapshot never holds a huge table.
pub(crate) const MAX_SCHEDULE: u64 = 10_000;

/// Ring points per target of average weight; enough for an even spread of keys.
pub(crate) const POINTS_PER_TARGET: u64 = 160;

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Weights reduced by their gcd and, when they still sum past [`MAX_SCHEDULE`], scaled down
/// (every positive weight keeps at least 1). Zero stays zero.
fn reduce(weights: &[u32]) -> Vec<u64> {
    let g = weights.iter().fold(0u64, |g, &w| gcd(g, u64::from(w)));
    if g == 0 {
        return vec![0; weights.len()];
    }
    let mut w: Vec<u64> = weights.iter().map(|&w| u64::from(w) / g).collect();
    let sum: u64 = w.iter().sum();
    if sum > MAX_SCHEDULE {
        for x in w.iter_mut().filter(|x| **x > 0) {
            *x = (*x * MAX_SCHEDULE / sum).max(1);
        }
        let g = w.iter().fold(0, |g, &x| gcd(g, x));
        w.iter_mut().for_each(|x| *x /= g);
    }
    w
}

/// nginx's smooth weighted round robin, unrolled into one full cycle of target indexes. Over the
/// cycle each target appears exactly its (reduced) weight times, spread as evenly as possible;
/// weight-0 targets never appear.
pub(crate) fn smooth_wrr(weights: &[u32]) -> Vec<u32> {
    let w = reduce(weights);
    let total: u64 = w.iter().sum();
    let total_i = i64::try_from(total).unwrap_or(i64::MAX);
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best: Option<usize> = None;
        for (i, &wi) in w.iter().enumerate() {
            if wi == 0 {
                continue;
            }
            current[i] += wi as i64;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        // `total > 0` means some weight is positive, so `best` is set.
        let Some(best) = best else { break };
        current[best] -= total_i;
        out.push(best as u32);
    }
    out
}

/// A ketama-style ring: `(point, target index)` sorted by point. Each target gets points in
/// proportion to its weight relative to the average (160 at average weight, at least 1), named
/// `xxh3("address#i")` so a target's points do not depend on which other targets exist.
pub(crate) fn ring(addresses: &[&str], weights: &[u32]) -> Vec<(u64, u32)> {
    let positive = weights.iter().filter(|&&w| w > 0).count() as u64;
    let sum: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    let mut ring = Vec::new();
    if sum == 0 {
        return ring;
    }
    let mut name = String::new();
    for (i, (&addr, &w)) in addresses.iter().zip(weights).enumerate() {
        if w == 0 {
            continue;
        }
        // Rounded share of POINTS_PER_TARGET * positive points.
        let points = ((u64::from(w) * POINTS_PER_TARGET * positive + sum / 2) / sum).max(1);
        for p in 0..points {
            name.clear();
            let _ = write!(name, "{addr}#{p}");
            ring.push((xxh3_64(name.as_bytes()), i as u32));
        }
    }
    ring.sort_unstable();
    ring
}
