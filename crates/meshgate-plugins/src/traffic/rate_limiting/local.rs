//! Counts kept in this process: a sharded concurrent map (`dashmap`), so workers counting
//! different keys never wait for each other and the same key waits only for its shard.

use super::{Store, Verdict, Window};
use dashmap::DashMap;
use meshgate_core::async_trait;
use std::sync::atomic::{AtomicU64, Ordering};

/// Windows a key can have: second, minute, hour, day.
const MAX_WINDOWS: usize = 4;
/// Every this many requests, keys whose windows have all ended are dropped.
const SWEEP_EVERY: u64 = 4096;

/// `(window index, count)` per configured window of one key.
type Slot = [(u64, u64); MAX_WINDOWS];

/// In-process counts for one plugin instance.
#[derive(Default)]
pub(crate) struct LocalStore {
    counts: DashMap<Box<str>, Slot>,
    hits: AtomicU64,
}

impl LocalStore {
    fn sweep(&self, windows: &[Window], now: u64) {
        self.counts.retain(|_, slot| windows.iter().zip(slot.iter()).any(|(w, (idx, _))| *idx == w.index(now)));
    }
}

#[async_trait]
impl Store for LocalStore {
    async fn hit(&self, key: &str, windows: &[Window], now: u64) -> Result<Verdict, String> {
        if self.hits.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep(windows, now);
        }
        let mut slot = match self.counts.get_mut(key) {
            Some(slot) => slot,
            None => self.counts.entry(key.into()).or_insert([(0, 0); MAX_WINDOWS]),
        };
        // A window that has moved on starts again from zero.
        let mut counts = smallvec::SmallVec::new();
        for (w, (idx, count)) in windows.iter().zip(slot.iter_mut()) {
            if *idx != w.index(now) {
                *idx = w.index(now);
                *count = 0;
            }
            counts.push(*count);
        }
        let admitted = windows.iter().zip(&counts).all(|(w, c)| *c < w.limit);
        if admitted {
            for ((_, count), c) in slot.iter_mut().zip(counts.iter_mut()) {
                *count += 1;
                *c = *count;
            }
        }
        Ok(Verdict { admitted, counts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smallvec::smallvec;

    fn windows() -> [Window; 2] {
        [Window { name: "hour", seconds: 3600, limit: 2 }, Window { name: "day", seconds: 86_400, limit: 3 }]
    }

    #[tokio::test]
    async fn admitted_only_when_every_window_has_room() {
        let s = LocalStore::default();
        let w = windows();
        let now = 1_000_000 * 86_400; // the start of a day and of an hour
        assert_eq!(s.hit("k", &w, now).await.unwrap(), Verdict { admitted: true, counts: smallvec![1, 1] });
        assert_eq!(s.hit("k", &w, now + 1).await.unwrap(), Verdict { admitted: true, counts: smallvec![2, 2] });
        // The hour is full; refusals use up nothing.
        for _ in 0..3 {
            assert_eq!(s.hit("k", &w, now + 2).await.unwrap(), Verdict { admitted: false, counts: smallvec![2, 2] });
        }
        // Next hour: room again in the hour, one left in the day.
        assert_eq!(s.hit("k", &w, now + 3600).await.unwrap(), Verdict { admitted: true, counts: smallvec![1, 3] });
        assert_eq!(s.hit("k", &w, now + 3601).await.unwrap(), Verdict { admitted: false, counts: smallvec![1, 3] });
        // Other keys are counted apart.
        assert!(s.hit("other", &w, now + 3601).await.unwrap().admitted);
        // Stale keys are swept.
        s.sweep(&w, now + 2 * 86_400);
        assert!(s.counts.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn exact_under_concurrency() {
        let s = std::sync::Arc::new(LocalStore::default());
        let w = [Window { name: "day", seconds: 86_400, limit: 1000 }];
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move {
                    let mut admitted = 0;
                    for _ in 0..500 {
                        admitted += u32::from(s.hit("k", &w, 86_400).await.unwrap().admitted);
                    }
                    admitted
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        assert_eq!(total, 1000, "4000 attempts against a limit of 1000");
    }
}
