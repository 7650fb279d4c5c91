//! A bounded hand-off from the request threads to one background thread (a log writer, a span
//! exporter) that costs a request no system call.
//!
//! A channel that wakes its receiver for every item makes each request pay a futex wake and,
//! on a busy machine, a context switch: measured on the benchmark route, that was more than the
//! rest of the request. Here a request only pushes onto a lock-free queue; the consumer wakes by
//! itself every `interval`, or early when `wake_at` items wait, and takes everything there is.
//! A full queue refuses the item (the caller counts the drop): requests never wait.
//!
//! The consumer stops once no producer holds the hand-off any more (after taking what is left),
//! so a reload that removes the last plugin naming an output also ends its thread. Registries
//! of running consumers keep a [`Weak`] for that reason ([`shared`]).

use crossbeam_queue::ArrayQueue;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::Thread;
use std::time::Duration;

/// The producer side, shared by every plugin instance feeding one consumer. When the last one
/// is dropped the consumer drains what is left and ends; a registry's [`Weak`] then no longer
/// upgrades, so a later config starts a new consumer rather than feeding a finished one.
pub struct Handoff<T> {
    shared: Arc<Shared<T>>,
}

struct Shared<T> {
    queue: ArrayQueue<T>,
    /// Set right after the thread starts (it needs the queue first).
    consumer: OnceLock<Thread>,
    wake_at: usize,
}

impl<T> Shared<T> {
    fn wake(&self) {
        if let Some(t) = self.consumer.get() {
            t.unpark();
        }
    }
}

impl<T> Handoff<T> {
    /// Queues `item`; gives it back when the queue is full.
    pub fn push(&self, item: T) -> Result<(), T> {
        let s = &self.shared;
        s.queue.push(item)?;
        // Past the mark, wake the consumer early. `unpark` of a running thread is one atomic
        // swap, so a burst that keeps pushing while the consumer drains costs no system call.
        if s.queue.len() >= s.wake_at {
            s.wake();
        }
        Ok(())
    }
}

impl<T> Drop for Handoff<T> {
    fn drop(&mut self) {
        // The consumer finishes now rather than at its next timed wake-up.
        self.shared.wake();
    }
}

/// What a consumer gets each time it wakes.
pub struct Batch<'a, T> {
    queue: &'a ArrayQueue<T>,
    /// The last call: every producer is gone; take everything, flush, and return.
    pub closing: bool,
}

impl<T> Batch<'_, T> {
    /// The next waiting item, in push order.
    pub fn pop(&self) -> Option<T> {
        self.queue.pop()
    }

    /// How many items wait now.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing waits now.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// Running consumers by name (an output path, a collector URL), shared by every plugin instance
/// naming them. Entries are weak: a consumer whose producers are all gone has ended.
pub type Registry<T> = Mutex<Option<HashMap<String, Weak<Handoff<T>>>>>;

/// The running consumer named `key` in `registry`, or a new one from `start`.
pub fn shared<T>(
    registry: &Registry<T>,
    key: &str,
    start: impl FnOnce() -> Result<Arc<Handoff<T>>, String>,
) -> Result<Arc<Handoff<T>>, String> {
    let mut guard = registry.lock().unwrap_or_else(|e| e.into_inner());
    let map = guard.get_or_insert_with(HashMap::new);
    if let Some(h) = map.get(key).and_then(Weak::upgrade) {
        return Ok(h);
    }
    let h = start()?;
    map.retain(|_, w| w.strong_count() > 0);
    map.insert(key.to_owned(), Arc::downgrade(&h));
    Ok(h)
}

/// Starts thread `name` that calls `consume` every `interval` (and when `wake_at` items wait)
/// until every producer has dropped the hand-off; then once more with `closing` set. `consume`
/// takes what it wants from the batch; what it leaves waits for the next call. It is also called
/// when the thread wakes to nothing, so that time-based flushes can happen.
pub fn spawn<T, F>(
    name: &str,
    capacity: usize,
    wake_at: usize,
    interval: Duration,
    mut consume: F,
) -> std::io::Result<Arc<Handoff<T>>>
where
    T: Send + 'static,
    F: FnMut(&Batch<'_, T>) + Send + 'static,
{
    let capacity = capacity.max(1);
    let shared = Arc::new(Shared {
        queue: ArrayQueue::new(capacity),
        consumer: OnceLock::new(),
        wake_at: wake_at.clamp(1, capacity),
    });
    let handoff = Arc::new(Handoff { shared: shared.clone() });
    let producers = Arc::downgrade(&handoff);
    let queue = shared.clone();
    let thread = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        loop {
            std::thread::park_timeout(interval);
            let closing = producers.strong_count() == 0;
            consume(&Batch { queue: &queue.queue, closing });
            if closing {
                return;
            }
        }
    })?;
    let _ = shared.consumer.set(thread.thread().clone());
    Ok(handoff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Instant;

    #[test]
    fn items_arrive_in_order_and_a_full_queue_refuses() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let h = spawn("test-handoff", 4, 100, Duration::from_millis(20), move |b| {
            while let Some(x) = b.pop() {
                s.lock().unwrap().push(x);
            }
        })
        .unwrap();
        // Nothing is taken before the consumer's first wake-up, 20 ms away.
        for i in 0..4 {
            h.push(i).unwrap();
        }
        assert_eq!(h.push(4), Err(4), "the fifth item does not fit");
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.lock().unwrap().len() < 4 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn reaching_the_mark_wakes_the_consumer_early() {
        let (tx, rx) = std::sync::mpsc::channel();
        let h = spawn("test-handoff", 100, 3, Duration::from_secs(30), move |b| {
            while let Some(x) = b.pop() {
                let _ = tx.send(x);
            }
        })
        .unwrap();
        let started = Instant::now();
        for i in 0..3 {
            h.push(i).unwrap();
        }
        for i in 0..3 {
            assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), i);
        }
        assert!(started.elapsed() < Duration::from_secs(5), "woken by the mark, not the 30 s timer");
    }

    #[test]
    fn the_thread_ends_when_the_last_producer_is_gone() {
        let (tx, rx) = std::sync::mpsc::channel::<u32>();
        let h = spawn("test-handoff", 10, 10, Duration::from_millis(10), move |b| {
            while let Some(x) = b.pop() {
                let _ = tx.send(x);
            }
        })
        .unwrap();
        h.push(7).unwrap();
        drop(h);
        // The waiting item is still delivered, then the thread ends and drops its sender.
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 7);
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Err(std::sync::mpsc::RecvTimeoutError::Disconnected));
    }
}
