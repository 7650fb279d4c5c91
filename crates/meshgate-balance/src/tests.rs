//! Unit tests of picking and passive health (active checks are tested in `tests/active.rs`).

use crate::schedule::{MAX_SCHEDULE, smooth_wrr};
use crate::*;
use meshgate_config::HashOn;
use meshgate_config::model::Algorithm;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

fn specs(weights: &[u32]) -> Vec<TargetSpec> {
    weights.iter().enumerate().map(|(i, &w)| TargetSpec { address: format!("10.0.0.{i}:80"), weight: w }).collect()
}

fn balancer(algorithm: Algorithm, weights: &[u32], passive: Option<PassiveConfig>) -> (Balancer, TargetRegistry) {
    let registry = TargetRegistry::new();
    let hash_on = (algorithm == Algorithm::ConsistentHash).then_some(HashOn::Ip);
    let b = Balancer::new("up", algorithm, hash_on, &specs(weights), passive, &registry);
    (b, registry)
}

/// Passive health whose ejections outlast any test (recovery is tested with its own timing),
/// with no cap on the share of targets ejected.
fn passive(unhealthy_after: u32) -> PassiveConfig {
    PassiveConfig {
        unhealthy_after,
        recover_after: Duration::from_secs(600),
        count_5xx: true,
        max_ejection_time: Duration::from_secs(600),
        max_ejected_percent: 100,
    }
}

/// Index picked by `pick`, dropping the pick at once.
fn pick_index(b: &Balancer, key: Option<u64>, exclude: &[usize]) -> usize {
    b.pick(key, exclude).expect("a target").index()
}

fn eject(b: &Balancer, index: usize, failures: u32) {
    for _ in 0..failures {
        // Keep picking until the wanted target comes up (round robin gets there).
        loop {
            let p = b.pick(None, &[]).expect("a target");
            if p.index() == index {
                p.failure();
                break;
            }
        }
    }
}

#[test]
fn balancer_is_send_and_sync() {
    fn assert<T: Send + Sync>() {}
    assert::<Balancer>();
    assert::<Pick>();
    assert::<TargetRegistry>();
    assert::<ActiveChecker>();
}

#[test]
fn round_robin_matches_weights_exactly() {
    let (b, _r) = balancer(Algorithm::RoundRobin, &[5, 3, 1], None);
    let cycles = 50;
    let mut counts = [0usize; 3];
    for _ in 0..9 * cycles {
        counts[pick_index(&b, None, &[])] += 1;
    }
    assert_eq!(counts, [5 * cycles, 3 * cycles, cycles]);

    // Weights are reduced by their gcd: 100:100:200 is a cycle of 4.
    assert_eq!(smooth_wrr(&[100, 100, 200]).len(), 4);
    // Huge sums are scaled down but keep every positive target.
    let s = smooth_wrr(&[1_000_000, 1, 500_000]);
    assert!(s.len() as u64 <= MAX_SCHEDULE && s.contains(&1), "len {}", s.len());
}

#[test]
fn round_robin_is_smooth() {
    for weights in [&[5u32, 3, 1][..], &[5, 1, 1], &[8, 1, 1], &[1, 1, 8], &[10, 1], &[1, 1, 1], &[7, 5, 3, 2]] {
        let s = smooth_wrr(weights);
        let total: u32 = weights.iter().sum();
        assert_eq!(s.len() as u32, total);
        for (i, &w) in weights.iter().enumerate() {
            // Every prefix of the cycle gives each target its proportional share, give or take
            // one (the smooth-WRR property)...
            let hits: Vec<f64> = s.iter().map(|&x| f64::from(u8::from(x as usize == i))).collect();
            let share = f64::from(w) / f64::from(total);
            let mut seen = 0.0;
            for (k, hit) in hits.iter().enumerate() {
                seen += hit;
                let ideal = (k + 1) as f64 * share;
                assert!((seen - ideal).abs() <= 1.0 + 1e-9, "{weights:?}: target {i} at {k}: {seen} vs {ideal}");
            }
            // ...so any window of the repeating schedule is within two of its share, which bounds
            // how long one target can be picked in a row: r * (1 - share) <= 2.
            for start in 0..s.len() {
                let mut seen = 0.0;
                for len in 1..=s.len() {
                    seen += hits[(start + len - 1) % s.len()];
                    assert!((seen - len as f64 * share).abs() <= 2.0 + 1e-9, "{weights:?}: window {start}+{len}");
                }
            }
            let mut longest = 0;
            let mut run = 0;
            for &x in s.iter().chain(s.iter()) {
                run = if x as usize == i { run + 1 } else { 0 };
                longest = longest.max(run);
            }
            let bound = 2 * total / (total - w);
            assert!(longest <= bound, "{weights:?}: target {i} ran {longest} > {bound} in {s:?}");
        }
    }
    assert_eq!(smooth_wrr(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
}

#[test]
fn weight_zero_never_picked_and_no_target_is_none() {
    let (b, _r) = balancer(Algorithm::RoundRobin, &[1, 0, 1], None);
    assert!((0..100).all(|_| pick_index(&b, None, &[]) != 1));
    let (b, _r) = balancer(Algorithm::LeastConnections, &[0, 1], None);
    assert!((0..100).all(|_| pick_index(&b, None, &[]) == 1));
    for algorithm in [Algorithm::RoundRobin, Algorithm::LeastConnections, Algorithm::ConsistentHash] {
        let (b, _r) = balancer(algorithm, &[0, 0], None);
        assert!(b.pick(Some(1), &[]).is_none());
        let (b, _r) = balancer(algorithm, &[], None);
        assert!(b.pick(Some(1), &[]).is_none());
    }
}

#[test]
fn unhealthy_targets_are_skipped() {
    let (b, _r) = balancer(Algorithm::RoundRobin, &[2, 1, 1], Some(passive(2)));
    eject(&b, 0, 2);
    assert!(!b.targets()[0].is_healthy());
    let mut counts = [0usize; 3];
    for _ in 0..400 {
        counts[pick_index(&b, None, &[])] += 1;
    }
    assert_eq!(counts[0], 0);
    assert_eq!(counts, [0, 200, 200], "the others share the slots by weight");

    eject(&b, 1, 2);
    eject(&b, 2, 2);
    for algorithm in [Algorithm::RoundRobin, Algorithm::LeastConnections, Algorithm::ConsistentHash] {
        let r = TargetRegistry::new();
        let b2 = Balancer::new("up", algorithm, None, &specs(&[1, 1]), Some(passive(1)), &r);
        b2.pick(None, &[0]).unwrap().failure();
        b2.pick(None, &[1]).unwrap().failure();
        assert!(b2.pick(Some(7), &[]).is_none(), "{algorithm:?}: all unhealthy means 503");
    }
    assert!(b.pick(None, &[]).is_none());
}

#[test]
fn exclude_is_respected_when_possible() {
    for algorithm in [Algorithm::RoundRobin, Algorithm::LeastConnections, Algorithm::ConsistentHash] {
        let (b, _r) = balancer(algorithm, &[1, 1, 1], None);
        for key in 0..50u64 {
            let key = Some(key.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let first = pick_index(&b, key, &[]);
            let second = pick_index(&b, key, &[first]);
            assert_ne!(first, second, "{algorithm:?}");
            let third = pick_index(&b, key, &[first, second]);
            assert!(third != first && third != second, "{algorithm:?}");
            // Everything tried already: a retry still goes somewhere rather than failing.
            assert!(b.pick(key, &[0, 1, 2]).is_some(), "{algorithm:?}");
        }
    }
}

#[test]
fn least_connections_prefers_fewer_in_flight() {
    let (b, _r) = balancer(Algorithm::LeastConnections, &[1, 1, 1], None);
    let held: Vec<Pick> = (0..2).map(|_| b.pick(None, &[]).unwrap()).collect();
    let busy: Vec<usize> = held.iter().map(Pick::index).collect();
    assert_ne!(busy[0], busy[1]);
    let free = (0..3).find(|i| !busy.contains(i)).unwrap();
    assert_eq!(pick_index(&b, None, &[]), free);
    assert_eq!(b.targets()[busy[0]].in_flight(), 1);
    drop(held);
    assert!(b.targets().iter().all(|t| t.in_flight() == 0));

    // Equal load rotates: picks dropped at once spread evenly.
    let mut counts = [0usize; 3];
    for _ in 0..300 {
        counts[pick_index(&b, None, &[])] += 1;
    }
    assert_eq!(counts, [100, 100, 100]);
}

#[test]
fn least_connections_respects_weights() {
    let (b, _r) = balancer(Algorithm::LeastConnections, &[2, 1], None);
    let held: Vec<Pick> = (0..6).map(|_| b.pick(None, &[]).unwrap()).collect();
    let on_first = held.iter().filter(|p| p.index() == 0).count();
    assert_eq!((on_first, held.len() - on_first), (4, 2));
    assert_eq!((b.targets()[0].in_flight(), b.targets()[1].in_flight()), (4, 2));

    // Releasing load on one target sends the next requests there.
    let (b, _r) = balancer(Algorithm::LeastConnections, &[3, 1], None);
    let mut held: Vec<Pick> = (0..8).map(|_| b.pick(None, &[]).unwrap()).collect();
    held.retain(|p| p.index() != 0);
    assert_eq!(pick_index(&b, None, &[]), 0);
}

fn keys() -> impl Iterator<Item = u64> {
    (0..20_000u64).map(|i| xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes()))
}

/// Key → address for every test key.
fn owners(b: &Balancer) -> HashMap<u64, String> {
    keys().map(|k| (k, b.pick(Some(k), &[]).unwrap().address().to_owned())).collect()
}

#[test]
fn consistent_hash_is_stable() {
    let registry = TargetRegistry::new();
    let five = specs(&[1, 1, 1, 1, 1]);
    let b = Balancer::new("up", Algorithm::ConsistentHash, Some(HashOn::Ip), &five, None, &registry);
    assert_eq!(b.hash_on(), Some(&HashOn::Ip));
    let before = owners(&b);
    assert_eq!(owners(&b), before, "same key, same target");

    // Spread: each of 5 targets owns roughly a fifth.
    let mut share: HashMap<&str, usize> = HashMap::new();
    before.values().for_each(|a| *share.entry(a.as_str()).or_default() += 1);
    assert!(share.values().all(|&n| (2_500..5_500).contains(&n)), "{share:?}");

    // Removing one target moves only the keys it owned.
    let removed = five[2].address.clone();
    let four: Vec<TargetSpec> = five.iter().filter(|t| t.address != removed).cloned().collect();
    let b4 = Balancer::new("up", Algorithm::ConsistentHash, Some(HashOn::Ip), &four, None, &registry);
    let after = owners(&b4);
    let mut moved = 0;
    for (k, owner) in &before {
        if *owner != removed {
            assert_eq!(&after[k], owner, "a key not on the removed target moved");
        } else {
            moved += 1;
        }
    }
    assert!((2_500..5_500).contains(&moved), "moved {moved} of 20000");

    // Adding a sixth target takes about a sixth, only from the others.
    let mut six = five.clone();
    six.push(TargetSpec { address: "10.0.0.9:80".into(), weight: 1 });
    let b6 = Balancer::new("up", Algorithm::ConsistentHash, Some(HashOn::Ip), &six, None, &registry);
    let after = owners(&b6);
    let moved = before.iter().filter(|(k, o)| after[*k] != **o).count();
    assert!(before.iter().all(|(k, o)| after[k] == *o || after[k] == "10.0.0.9:80"));
    assert!((2_000..4_700).contains(&moved), "moved {moved} of 20000");
}

#[test]
fn consistent_hash_walks_past_unhealthy_and_falls_back_without_key() {
    let (b, _r) = balancer(Algorithm::ConsistentHash, &[1, 1, 1, 1], Some(passive(1)));
    let key = 0xdead_beef;
    let owner = pick_index(&b, Some(key), &[]);
    b.pick(Some(key), &[]).unwrap().failure();
    assert!(!b.targets()[owner].is_healthy());
    let next = pick_index(&b, Some(key), &[]);
    assert_ne!(next, owner);
    assert_eq!(pick_index(&b, Some(key), &[]), next, "the fallback is stable too");

    // No key: round robin over the healthy targets.
    let mut counts = [0usize; 4];
    for _ in 0..300 {
        counts[pick_index(&b, None, &[])] += 1;
    }
    assert_eq!(counts[owner], 0);
    assert!(counts.iter().filter(|&&n| n == 100).count() == 3, "{counts:?}");
}

#[test]
fn passive_ejection_and_half_open_recovery() {
    // Ejection time capped at recover_after: every ejection lasts the same here.
    let recover = PassiveConfig {
        recover_after: Duration::from_millis(100),
        max_ejection_time: Duration::from_millis(100),
        ..passive(3)
    };
    let (b, _r) = balancer(Algorithm::RoundRobin, &[1, 1], Some(recover));
    let t0 = &b.targets()[0];
    eject(&b, 0, 2);
    assert!(t0.is_healthy(), "two failures are not three");
    assert_eq!(t0.consecutive_failures(), 2);
    // A success in between resets the count.
    loop {
        let p = b.pick(None, &[]).unwrap();
        if p.index() == 0 {
            p.success();
            break;
        }
    }
    assert_eq!(t0.consecutive_failures(), 0);
    eject(&b, 0, 3);
    assert!(!t0.is_healthy());
    assert!((0..20).all(|_| pick_index(&b, None, &[]) == 1));

    // After recover_after exactly one request is offered to the ejected target.
    std::thread::sleep(Duration::from_millis(130));
    let mut trial = None;
    for _ in 0..4 {
        let p = b.pick(None, &[]).unwrap();
        if p.index() == 0 {
            assert!(p.is_trial() && trial.is_none(), "only one trial at a time");
            trial = Some(p);
        }
    }
    let trial = trial.expect("a trial request");
    assert!((0..10).all(|_| pick_index(&b, None, &[]) == 1), "no second trial while one runs");

    // A failed trial re-ejects for another recover_after.
    trial.failure();
    assert!(!t0.is_healthy());
    assert!((0..10).all(|_| pick_index(&b, None, &[]) == 1));
    std::thread::sleep(Duration::from_millis(130));

    // A trial dropped without a verdict changes nothing but frees the slot for another.
    let p = (0..4).map(|_| b.pick(None, &[]).unwrap()).find(|p| p.index() == 0).expect("trial");
    drop(p);
    assert!(!t0.is_healthy());
    let p = (0..4).map(|_| b.pick(None, &[]).unwrap()).find(|p| p.index() == 0).expect("trial again");
    assert!(p.is_trial());
    p.success();
    assert!(t0.is_healthy());
    let mut counts = [0usize; 2];
    for _ in 0..10 {
        counts[pick_index(&b, None, &[])] += 1;
    }
    assert_eq!(counts, [5, 5]);
}

#[test]
fn status_counts_5xx_only_when_asked() {
    let (b, _r) = balancer(Algorithm::RoundRobin, &[1], Some(passive(2)));
    b.pick(None, &[]).unwrap().status(502);
    b.pick(None, &[]).unwrap().status(404);
    assert_eq!(b.targets()[0].consecutive_failures(), 0, "a 4xx is a success");
    b.pick(None, &[]).unwrap().status(500);
    b.pick(None, &[]).unwrap().status(503);
    assert!(!b.targets()[0].is_healthy());

    let no_5xx = PassiveConfig { count_5xx: false, ..passive(1) };
    let (b, _r) = balancer(Algorithm::RoundRobin, &[1], Some(no_5xx));
    (0..5).for_each(|_| b.pick(None, &[]).unwrap().status(500));
    assert!(b.targets()[0].is_healthy());
    b.pick(None, &[]).unwrap().failure();
    assert!(!b.targets()[0].is_healthy(), "connect errors always count");

    // Without passive health, failures eject nothing; unreported picks change nothing.
    let (b, _r) = balancer(Algorithm::RoundRobin, &[1], None);
    (0..10).for_each(|_| b.pick(None, &[]).unwrap().failure());
    drop(b.pick(None, &[]));
    assert!(b.targets()[0].is_healthy());
}

#[test]
fn registry_keeps_state_across_balancers() {
    let registry = TargetRegistry::new();
    let targets = specs(&[1, 1]);
    let old = Balancer::new("up", Algorithm::LeastConnections, None, &targets, Some(passive(1)), &registry);
    let held = old.pick(None, &[1]).unwrap();
    assert_eq!(held.index(), 0);
    old.pick(None, &[0]).unwrap().failure();

    // The reloaded config sees the held request and the ejection.
    let new = Balancer::new("up", Algorithm::RoundRobin, None, &targets, Some(passive(1)), &registry);
    assert!(Arc::ptr_eq(&old.targets()[0], &new.targets()[0]));
    assert_eq!(new.targets()[0].in_flight(), 1);
    assert!(!new.targets()[1].is_healthy());
    drop(held);
    assert_eq!(new.targets()[0].in_flight(), 0);

    // Same address in another upstream is another target.
    let other = Balancer::new("other", Algorithm::RoundRobin, None, &targets, None, &registry);
    assert!(other.targets()[1].is_healthy());
    assert_eq!(registry.len(), 4);

    registry.retain(&[("up".into(), targets[0].address.clone())]);
    assert_eq!(registry.len(), 1);
    let fresh = registry.get_or_create("up", &targets[1].address);
    assert!(fresh.is_healthy() && !Arc::ptr_eq(&fresh, &old.targets()[1]));
    assert!(Arc::ptr_eq(&registry.get_or_create("up", &targets[0].address), &old.targets()[0]));
}

#[test]
fn concurrent_picks_keep_counts_consistent() {
    let (b, _r) = balancer(Algorithm::LeastConnections, &[1, 2, 3], None);
    let b = Arc::new(b);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let b = Arc::clone(&b);
            std::thread::spawn(move || {
                for i in 0..5_000 {
                    let p = b.pick(None, &[]).unwrap();
                    if i % 2 == 0 {
                        p.success();
                    }
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert!(b.targets().iter().all(|t| t.in_flight() == 0 && t.is_healthy()));
}

#[test]
fn ejection_arithmetic() {
    let ms = Duration::from_millis;
    assert_eq!(ejection_time(ms(100), 1, ms(1000)), ms(100));
    assert_eq!(ejection_time(ms(100), 0, ms(1000)), ms(100), "the first ejection is never shorter");
    assert_eq!(ejection_time(ms(100), 3, ms(1000)), ms(300));
    assert_eq!(ejection_time(ms(100), 20, ms(1000)), ms(1000), "capped by max_ejection_time");
    assert_eq!(ejection_time(Duration::MAX, u32::MAX, ms(5)), ms(5), "no overflow");

    assert!(may_eject(0, 1, 50), "one target may always be ejected");
    assert!(may_eject(0, 10, 0), "even at 0 %");
    assert!(!may_eject(1, 2, 50), "a second of two is past 50 %");
    assert!(may_eject(1, 4, 50) && !may_eject(2, 4, 50));
    assert!(may_eject(2, 3, 100) && !may_eject(3, 3, 100));
    assert!(!may_eject(1, 10, 10) && may_eject(1, 20, 10));
}

#[test]
fn max_ejected_percent_caps_ejections() {
    let half = PassiveConfig { max_ejected_percent: 50, ..passive(1) };
    let (b, r) = balancer(Algorithm::RoundRobin, &[1, 1, 1, 1], Some(half));
    eject(&b, 0, 1);
    eject(&b, 1, 1);
    assert_eq!(b.ejected_count(), 2);
    eject(&b, 2, 1);
    let t2 = &b.targets()[2];
    assert!(t2.is_healthy() && !t2.is_ejected(), "a third of four would pass 50 %");
    assert_eq!((t2.consecutive_failures(), b.ejected_count()), (1, 2));
    let mut counts = [0usize; 4];
    for _ in 0..40 {
        counts[pick_index(&b, None, &[])] += 1;
    }
    assert_eq!(counts, [0, 0, 20, 20], "the skipped target keeps serving");

    // A reload that drops an ejected target frees its slot: the next failure ejects.
    let mut specs4: Vec<TargetSpec> = specs(&[1, 1, 1, 1]).into_iter().skip(1).collect();
    specs4.push(TargetSpec { address: "10.0.0.9:80".into(), weight: 1 });
    let b4 = Balancer::new("up", Algorithm::RoundRobin, None, &specs4, Some(half), &r);
    assert_eq!(b4.ejected_count(), 1);
    b4.pick(None, &[0, 2, 3]).unwrap().failure(); // index 1 of b4 is 10.0.0.2
    assert!(!b4.targets()[1].is_healthy() && b4.ejected_count() == 2);
    b4.pick(None, &[0, 1, 3]).unwrap().failure();
    assert!(b4.targets()[2].is_healthy(), "3 of 4 is past 50 %, but...");

    // ...one target may always go, even with a cap of 0 %.
    let none = PassiveConfig { max_ejected_percent: 0, ..passive(1) };
    let (b, _r) = balancer(Algorithm::RoundRobin, &[1], Some(none));
    b.pick(None, &[]).unwrap().failure();
    assert!(b.pick(None, &[]).is_none(), "the only target is out: no target, no waiting");
}

#[test]
fn repeated_ejections_rest_longer_until_a_trial_succeeds() {
    let p = PassiveConfig {
        recover_after: Duration::from_millis(40),
        max_ejection_time: Duration::from_millis(100),
        ..passive(1)
    };
    let (b, r) = balancer(Algorithm::RoundRobin, &[1], Some(p));
    let t = Arc::clone(&b.targets()[0]);
    b.pick(None, &[]).unwrap().failure();
    let s = t.status();
    assert!(s.ejected && !s.healthy && s.consecutive_ejections == 1, "{s:?}");
    assert!(s.ejected_for <= Duration::from_millis(40), "{s:?}");

    // Each failed trial rests the target longer: 80ms, then 100ms (the cap), then 100ms.
    for (n, want) in [(2, 80), (3, 100), (4, 100)] {
        let trial = wait_trial(&b);
        trial.failure();
        let s = t.status();
        assert_eq!(s.consecutive_ejections, n);
        let want = Duration::from_millis(want);
        assert!(s.ejected_for <= want && s.ejected_for + Duration::from_millis(20) >= want, "{n}: {s:?}");
        assert!(b.pick(None, &[]).is_none(), "no trial before the longer rest is over");
    }
    // A successful trial closes the breaker and forgets the ejections.
    wait_trial(&b).success();
    let s = t.status();
    assert!(s.healthy && !s.ejected && s.consecutive_ejections == 0 && s.ejected_for.is_zero(), "{s:?}");
    assert_eq!(b.ejected_count(), 0);
    b.pick(None, &[]).unwrap().failure();
    assert_eq!(t.consecutive_ejections(), 1, "the next ejection starts short again");

    let statuses = r.statuses();
    assert_eq!(statuses.len(), 1);
    assert_eq!((statuses[0].upstream.as_str(), statuses[0].address.as_str()), ("up", "10.0.0.0:80"));
}

/// Waits (up to a second) for the half-open trial of the only target.
fn wait_trial(b: &Balancer) -> Pick {
    for _ in 0..200 {
        if let Some(p) = b.pick(None, &[]) {
            assert!(p.is_trial());
            return p;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("no trial within a second");
}
