//! Per-target limits: exact under concurrency, the queue, refusals.

use crate::*;
use meshgate_config::model::Algorithm;
use std::sync::Arc;
use std::time::Duration;

fn limited(targets: usize, max: u32, queue_size: usize, timeout_ms: u64) -> (Arc<Balancer>, TargetRegistry) {
    let registry = TargetRegistry::new();
    let specs: Vec<TargetSpec> =
        (0..targets).map(|i| TargetSpec { address: format!("10.0.0.{i}:80"), weight: 1 }).collect();
    let limit = TargetLimit { max_in_flight: max, queue_size, queue_timeout: Duration::from_millis(timeout_ms) };
    let b = Balancer::new("lim", Algorithm::RoundRobin, None, &specs, None, &registry).with_target_limit(limit);
    (Arc::new(b), registry)
}

#[test]
fn never_more_than_the_limit_per_target() {
    let (b, _r) = limited(3, 2, 0, 0);
    let picks: Vec<Pick> = (0..6).map(|_| b.pick(None, &[]).expect("room for 6")).collect();
    assert!(b.pick(None, &[]).is_none(), "3 targets x 2 are full");
    assert!(b.targets().iter().all(|t| t.in_flight() == 2));
    drop(picks);
    assert!(b.targets().iter().all(|t| t.in_flight() == 0));
}

#[test]
fn exact_across_threads() {
    let (b, _r) = limited(2, 5, 0, 0);
    let held = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..50 {
                    if let Some(p) = b.pick(None, &[]) {
                        held.lock().unwrap().push(p);
                    }
                }
            });
        }
    });
    assert_eq!(held.lock().unwrap().len(), 10, "exactly 2 targets x 5 slots were handed out");
    assert!(b.targets().iter().all(|t| t.in_flight() == 5));
}

#[tokio::test]
async fn waits_for_a_freed_slot_then_refuses() {
    let (b, _r) = limited(1, 1, 1, 300);
    let first = b.pick_or_wait(None, &[]).await.unwrap();
    // One may wait: it gets the slot the moment the first request is done.
    let b2 = b.clone();
    let waiting = tokio::spawn(async move { b2.pick_or_wait(None, &[]).await.map(|p| p.index()) });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(b.queued(), 1);
    // The queue is full: refused at once.
    let t = std::time::Instant::now();
    assert_eq!(b.pick_or_wait(None, &[]).await.unwrap_err(), NoTarget::Busy);
    assert!(t.elapsed() < Duration::from_millis(100));
    drop(first);
    assert_eq!(waiting.await.unwrap(), Ok(0));
    assert_eq!(b.queued(), 0);
    // The waiter dropped its pick: the slot is free again.
    let held = b.pick_or_wait(None, &[]).await.unwrap();
    // A wait past the timeout is refused.
    let t = std::time::Instant::now();
    assert_eq!(b.pick_or_wait(None, &[]).await.unwrap_err(), NoTarget::Busy);
    assert!(t.elapsed() >= Duration::from_millis(300));
    drop(held);
}

#[tokio::test]
async fn unhealthy_is_not_busy() {
    let (b, _r) = limited(1, 1, 10, 1000);
    // Down by active checks (no half-open trial while a prober decides).
    b.targets()[0].add_prober();
    b.targets()[0].mark_down();
    let t = std::time::Instant::now();
    assert_eq!(b.pick_or_wait(None, &[]).await.unwrap_err(), NoTarget::Unavailable);
    assert!(t.elapsed() < Duration::from_millis(100), "no waiting for targets that are down");
}
