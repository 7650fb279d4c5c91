//! The precompiled indexes: precedence keys, candidate lists, and the per-host path index.
//!
//! Every (route, host pattern, path pattern) combination becomes one [`Cand`] with its
//! precedence key computed at build time, filed under the host and the path it needs. Each list
//! is sorted best-first, so a lookup walks a list only until the first candidate whose methods
//! and headers also match, or until the list can no longer beat what was already found.

use meshgate_config::PathPattern;
use regex::{Regex, RegexSet, RegexSetBuilder};
use std::cmp::Reverse;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Precedence key; a larger key wins. Packed into one integer so choosing between candidates is
/// a single comparison. From the most significant bits down:
/// priority (32) | host rank (16) | path rank (32) | header count (15) | has methods (1) |
/// inverted declaration index (32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Rank(u128);

/// Host rank of a route without hosts.
pub(crate) const HOST_ANY: u16 = 0;
/// Host rank of an exact host: above every wildcard.
pub(crate) const HOST_EXACT: u16 = u16::MAX;

/// Host rank of `*.suffix`: longer suffixes are more specific.
pub(crate) fn host_wildcard(suffix_len: usize) -> u16 {
    // Clamped below HOST_EXACT; real names stop at 253 bytes, far below the clamp.
    1 + suffix_len.min(usize::from(u16::MAX - 2)) as u16
}

/// Path rank: exact > regex > prefix (longer first) > no path condition.
pub(crate) fn path_rank(p: Option<&PathPattern>) -> u32 {
    match p {
        None => 0,
        Some(PathPattern::Prefix(s)) => 1 + s.len().min(0xFFFF_FFF0) as u32,
        Some(PathPattern::Regex(_)) => u32::MAX - 1,
        Some(PathPattern::Exact(_)) => u32::MAX,
    }
}

impl Rank {
    /// Packs the precedence rules; see the crate documentation for their order.
    pub(crate) fn new(priority: i32, host: u16, path: u32, headers: usize, methods: bool, index: u32) -> Rank {
        // Flipping the sign bit maps i32 order onto u32 order.
        let priority = u128::from((priority as u32) ^ 0x8000_0000);
        // 15 bits; only routes with over 32767 header conditions would tie here.
        let headers = headers.min(0x7FFF) as u128;
        Rank(
            priority << 96
                | u128::from(host) << 80
                | u128::from(path) << 48
                | headers << 33
                | u128::from(methods) << 32
                | u128::from(u32::MAX - index),
        )
    }
}

/// What part of the path a candidate's pattern consumed, resolved for the winner only.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Hit {
    /// A known length: the exact path, the prefix, or 0 without a path condition.
    Len(u32),
    /// A regex path, by id in the router's anchored regexes; its match end is the length.
    Regex(u32),
}

/// One way a route can match: its key, the route, and how its path matched.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cand {
    /// Precedence of this combination.
    pub(crate) rank: Rank,
    /// Index of the route in declaration order.
    pub(crate) route: u32,
    /// Path consumed, for `strip_path`.
    pub(crate) hit: Hit,
}

/// True when nothing with key `rank` can beat the current best.
#[inline]
fn beaten(best: &Option<Cand>, rank: Rank) -> bool {
    best.is_some_and(|b| b.rank >= rank)
}

/// Walks a best-first list: the first candidate that passes `accept` is the list's best, and
/// once candidates stop beating `best` the rest cannot either.
#[inline]
pub(crate) fn scan(list: &[Cand], best: &mut Option<Cand>, accept: &impl Fn(u32) -> bool) {
    for c in list {
        if beaten(best, c.rank) {
            return;
        }
        if accept(c.route) {
            *best = Some(*c);
            return;
        }
    }
}

/// Small multiply-based hasher. Keys are inserted only from the (trusted) config; requests only look
/// up, so attacker-chosen hosts and paths cannot lengthen probe sequences, and a keyed hash
/// (SipHash) would cost more than the rest of the lookup.
#[derive(Clone, Copy, Default)]
pub struct FoldHasher(u64);

impl FoldHasher {
    /// Folded multiply (as in wyhash/foldhash): the 128-bit product's halves XORed together
    /// mix every input bit into both the low bits hashbrown indexes with and the high bits it
    /// tags with, which a plain Fx multiply does not (it never moves entropy downwards).
    #[inline]
    fn add(&mut self, word: u64) {
        // The added constant keeps an all-zero input from folding to zero.
        let p = u128::from((self.0 ^ word).wrapping_add(0x243f_6a88_85a3_08d3)) * u128::from(0xf135_7aea_2e62_a9c5_u64);
        self.0 = (p as u64) ^ (p >> 64) as u64;
    }
}

impl Hasher for FoldHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ (rest.len() as u64) << 59);
        }
    }

    /// Only `str`'s constant 0xff terminator comes through here; it carries no information
    /// for our keys, so it is folded in without a multiply round.
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.0 ^= u64::from(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Hash map with [`FoldHasher`], for keys that come from the config (never from clients).
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FoldHasher>>;

/// Up to this many regex paths in one host bucket are tried one by one in precedence order
/// (no allocation); beyond it a `RegexSet` finds all matching ones in one pass.
const REGEX_SET_MIN: usize = 5;

/// The regex paths of one host bucket.
pub(crate) struct RegexIndex {
    /// Best-first; with a set, pattern `i` of the set is `cands[i]`.
    pub(crate) cands: Vec<Cand>,
    /// Source of each candidate's regex (unanchored, as written), for shadow analysis.
    pub(crate) sources: Vec<String>,
    set: Option<RegexSet>,
}

/// The routes reachable under one host pattern (or without host), indexed by path.
pub(crate) struct Bucket {
    /// Best key of anything in the bucket, so a lookup can skip buckets that cannot win.
    max: Option<Rank>,
    /// Exact paths.
    pub(crate) exact: FastMap<Box<str>, Vec<Cand>>,
    /// Prefixes; looked up with the request path cut at each length in `prefix_lens`, so only
    /// prefixes the path really starts with are touched. (A cut that splits a UTF-8 character
    /// cannot equal any prefix, which is a valid string, so such lengths are skipped.)
    pub(crate) prefixes: FastMap<Box<str>, Vec<Cand>>,
    /// Distinct prefix lengths, longest first, each with the best key among its prefixes.
    pub(crate) prefix_lens: Vec<(usize, Rank)>,
    /// Regex paths.
    pub(crate) regex: Option<RegexIndex>,
    /// Routes without a path condition.
    pub(crate) any_path: Vec<Cand>,
}

impl Bucket {
    /// Finds this bucket's best candidate for `path` that beats `best`, if any.
    #[inline]
    pub(crate) fn search(&self, path: &str, regexes: &[Regex], best: &mut Option<Cand>, accept: &impl Fn(u32) -> bool) {
        match self.max {
            Some(max) if !beaten(best, max) => {}
            _ => return,
        }
        if let Some(list) = self.exact.get(path) {
            scan(list, best, accept);
        }
        if let Some(rx) = &self.regex {
            rx.search(path, regexes, best, accept);
        }
        for &(len, max) in &self.prefix_lens {
            if !beaten(best, max)
                && let Some(cut) = path.get(..len)
                && let Some(list) = self.prefixes.get(cut)
            {
                scan(list, best, accept);
            }
        }
        scan(&self.any_path, best, accept);
    }
}

impl RegexIndex {
    fn search(&self, path: &str, regexes: &[Regex], best: &mut Option<Cand>, accept: &impl Fn(u32) -> bool) {
        if beaten(best, self.cands[0].rank) {
            return;
        }
        let Some(set) = &self.set else {
            for c in &self.cands {
                if beaten(best, c.rank) {
                    return;
                }
                if let Hit::Regex(id) = c.hit
                    && regexes[id as usize].is_match(path)
                    && accept(c.route)
                {
                    *best = Some(*c);
                    return;
                }
            }
            return;
        };
        // `is_match` first: it does not allocate, and most paths match none of the regexes.
        if !set.is_match(path) {
            return;
        }
        for i in set.matches(path).iter() {
            let c = &self.cands[i];
            if beaten(best, c.rank) {
                return;
            }
            if accept(c.route) {
                *best = Some(*c);
                return;
            }
        }
    }
}

/// Collects a bucket's candidates before sorting and indexing them.
#[derive(Default)]
pub(crate) struct BucketBuilder {
    exact: FastMap<Box<str>, Vec<Cand>>,
    prefixes: FastMap<Box<str>, Vec<Cand>>,
    regex: Vec<(Cand, String)>,
    any_path: Vec<Cand>,
}

impl BucketBuilder {
    /// Files a candidate under the path it needs.
    pub(crate) fn add(&mut self, path: Option<&PathPattern>, cand: Cand) {
        match path {
            None => self.any_path.push(cand),
            Some(PathPattern::Exact(p)) => self.exact.entry(p.as_str().into()).or_default().push(cand),
            Some(PathPattern::Prefix(p)) => self.prefixes.entry(p.as_str().into()).or_default().push(cand),
            Some(PathPattern::Regex(re)) => self.regex.push((cand, re.clone())),
        }
    }

    /// Sorts every list best-first and compiles the regex set. An error carries the route
    /// index to blame and a message.
    pub(crate) fn finish(mut self) -> Result<Bucket, (usize, String)> {
        let best_first = |l: &mut Vec<Cand>| l.sort_unstable_by_key(|c| Reverse(c.rank));
        let mut max = None;
        let mut seen = |l: &[Cand]| {
            if let Some(c) = l.first() {
                max = max.max(Some(c.rank));
            }
        };
        for l in self.exact.values_mut().chain(self.prefixes.values_mut()).chain([&mut self.any_path]) {
            best_first(l);
            seen(l);
        }
        let mut lens: FastMap<usize, Rank> = FastMap::default();
        for (p, l) in &self.prefixes {
            let m = lens.entry(p.len()).or_insert(l[0].rank);
            *m = (*m).max(l[0].rank);
        }
        let mut prefix_lens: Vec<(usize, Rank)> = lens.into_iter().collect();
        prefix_lens.sort_unstable_by_key(|&(len, _)| Reverse(len));
        self.regex.sort_unstable_by_key(|(c, _)| Reverse(c.rank));
        let regex = if self.regex.is_empty() {
            None
        } else {
            seen(&[self.regex[0].0]);
            let (cands, sources): (Vec<Cand>, Vec<String>) = self.regex.into_iter().unzip();
            let set = if cands.len() >= REGEX_SET_MIN {
                // The set compiles all patterns into one automaton; each already compiled
                // alone within the default limit, so allow their sum (capped).
                let limit = (10usize << 20).saturating_mul(cands.len()).min(1 << 30);
                let set = RegexSetBuilder::new(sources.iter().map(|s| format!("^(?:{s})")))
                    .size_limit(limit)
                    .build()
                    .map_err(|e| (cands[0].route as usize, format!("cannot combine regex paths: {e}")))?;
                Some(set)
            } else {
                None
            };
            Some(RegexIndex { cands, sources, set })
        };
        Ok(Bucket { max, exact: self.exact, prefixes: self.prefixes, prefix_lens, regex, any_path: self.any_path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_order() {
        let r = |p, h, pa, hd, m, i| Rank::new(p, h, pa, hd, m, i);
        assert!(r(1, 0, 0, 0, false, 9) > r(0, HOST_EXACT, u32::MAX, 99, true, 0));
        assert!(r(-1, 0, 0, 0, false, 0) < r(0, 0, 0, 0, false, 9));
        assert!(r(i32::MIN, 0, 0, 0, false, 0) < r(i32::MAX, 0, 0, 0, false, 0));
        assert!(r(0, HOST_EXACT, 0, 0, false, 9) > r(0, host_wildcard(200), u32::MAX, 0, false, 0));
        assert!(r(0, host_wildcard(12), 0, 0, false, 9) > r(0, host_wildcard(11), u32::MAX, 0, false, 0));
        assert!(r(0, HOST_ANY + 1, 0, 0, false, 9) > r(0, HOST_ANY, u32::MAX, 0, false, 0));
        assert!(r(0, 0, 5, 0, false, 9) > r(0, 0, 4, 9, true, 0));
        assert!(r(0, 0, 0, 2, false, 9) > r(0, 0, 0, 1, true, 0));
        assert!(r(0, 0, 0, 0, true, 9) > r(0, 0, 0, 0, false, 0));
        assert!(r(0, 0, 0, 0, false, 0) > r(0, 0, 0, 0, false, 1));
    }

    #[test]
    fn hash_spreads_low_bits() {
        // 10,000 random keys fill about 7,490 of 16,384 slots; a hash whose low bits ignore
        // part of the key fills far fewer (plain Fx managed about 4,100 on the third set).
        use std::hash::BuildHasher;
        let b = BuildHasherDefault::<FoldHasher>::default();
        let sets: [fn(usize) -> String; 3] =
            [|i| format!("svc{i}.example.com"), |i| format!("/svc{i}/"), |i| format!("/api/v1/users/{i}")];
        for key in sets {
            let slots: std::collections::HashSet<u64> = (0..10_000).map(|i| b.hash_one(key(i)) & 16383).collect();
            assert!(slots.len() > 7_200, "{} slots for {}", slots.len(), key(0));
        }
    }
}
