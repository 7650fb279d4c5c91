//! `concurrency-limit`: at most `max_in_flight` requests of a route (or service, or all routes,
//! depending on where it is attached) are with the upstream at once, like Knative's
//! `containerConcurrency`. Requests past that wait in a bounded FIFO queue for at most
//! `queue.timeout`; a full queue or a timed-out wait is answered 503 with `Retry-After`, at once,
//! so a slow service makes its callers fail fast instead of piling up.
//!
//! A request holds its slot until its response body has been sent. In-flight and queued counts
//! are readable for metrics and autoscalers ([`snapshot`]).

use http::header::{HeaderValue, RETRY_AFTER};
use meshgate_config::units::Duration;
use meshgate_core::metrics::{self, MetricsRegistry};
use meshgate_core::{
    BuildContext, Built, ErrorKind, Flow, Phases, Plugin, PluginConfigError, PluginFactory, RequestCtx, async_trait,
    parse_config,
};
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Registers `concurrency-limit`.
pub struct Factory;

/// Requests refused because the queue was full or the wait timed out, since start.
pub static REJECTED: AtomicU64 = AtomicU64::new(0);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Requests with the upstream at once.
    max_in_flight: usize,
    /// Where the others wait.
    #[serde(default)]
    queue: QueueConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct QueueConfig {
    /// Requests that may wait; more are refused at once (0: no queue).
    size: usize,
    /// How long a request may wait for a slot.
    timeout: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig { size: 100, timeout: Duration::from_secs(5) }
    }
}

/// The counts of one limiter, for metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Load {
    /// Where the limiter is attached (`route:orders`, `service:api`, `global`).
    pub scope: String,
    /// The configured `max_in_flight`.
    pub max_in_flight: usize,
    /// Requests holding a slot now.
    pub in_flight: usize,
    /// Requests waiting for a slot now.
    pub queued: usize,
}

/// Every live limiter (of the running config and of configs still finishing requests).
static LIMITERS: Mutex<Vec<Weak<Limiter>>> = Mutex::new(Vec::new());

/// The current load of every live limiter.
pub fn snapshot() -> Vec<Load> {
    let mut list = LIMITERS.lock().unwrap_or_else(|e| e.into_inner());
    list.retain(|l| l.strong_count() > 0);
    list.iter().filter_map(Weak::upgrade).map(|l| l.load()).collect()
}

/// One load per scope. After a reload, the old config's limiters live on until their requests
/// finish, beside the new ones of the same scopes: one series each would be the same series
/// twice, which Prometheus refuses. The counts add up; the limit is the newest limiter's (the
/// running config's).
fn per_scope(loads: Vec<Load>) -> Vec<Load> {
    let mut out: Vec<Load> = Vec::with_capacity(loads.len());
    for l in loads {
        match out.iter_mut().find(|o| o.scope == l.scope) {
            Some(o) => {
                o.in_flight += l.in_flight;
                o.queued += l.queued;
                o.max_in_flight = l.max_in_flight;
            }
            None => out.push(l),
        }
    }
    out
}

struct Limiter {
    scope: String,
    max: usize,
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
    queue_size: usize,
    timeout: std::time::Duration,
    retry_after: HeaderValue,
}

impl Limiter {
    fn load(&self) -> Load {
        Load {
            scope: self.scope.clone(),
            max_in_flight: self.max,
            in_flight: self.max - self.slots.available_permits(),
            queued: self.queued.load(Ordering::Relaxed),
        }
    }

    /// A slot now, or after waiting in the queue; `None` when the queue is full or the wait
    /// timed out.
    async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Some(p);
        }
        // Reserve a place in the queue without a lock: undo if it was already full.
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.queue_size {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let got = tokio::time::timeout(self.timeout, self.slots.clone().acquire_owned()).await;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        got.ok().and_then(Result::ok)
    }
}

/// A held slot; released when the request context is dropped after the response body.
#[derive(Clone)]
struct Slot {
    _permit: Arc<OwnedSemaphorePermit>,
}

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "concurrency-limit"
    }
    fn priority(&self) -> i32 {
        // After rate limiting: a request refused by a rate limit never takes a slot or a place
        // in the queue.
        900
    }
    fn build(&self, config: &serde_json::Value, cx: &BuildContext) -> Result<Built, PluginConfigError> {
        let c: Config = parse_config(config)?;
        if c.max_in_flight == 0 {
            return Err(PluginConfigError::new("max_in_flight", "must be at least 1"));
        }
        let timeout = c.queue.timeout.get();
        let retry_after = HeaderValue::from(timeout.as_secs().max(1));
        let limiter = Arc::new(Limiter {
            scope: cx.scope.to_string(),
            max: c.max_in_flight,
            slots: Arc::new(Semaphore::new(c.max_in_flight)),
            queued: AtomicUsize::new(0),
            queue_size: c.queue.size,
            timeout,
            retry_after,
        });
        LIMITERS.lock().unwrap_or_else(|e| e.into_inner()).push(Arc::downgrade(&limiter));
        Ok(Built::Plugin(Arc::new(ConcurrencyLimit(limiter))))
    }
    fn register_metrics(&self, registry: &mut MetricsRegistry) {
        registry.register_collector(metrics::collector(|enc| {
            let loads = per_scope(snapshot());
            let by = |f: fn(&Load) -> usize| {
                loads.iter().map(move |l| (vec![("scope", l.scope.clone())], f(l) as i64)).collect::<Vec<_>>()
            };
            metrics::gauges(enc, "meshgate_concurrency_in_flight", "Requests holding a slot.", by(|l| l.in_flight))?;
            metrics::gauges(enc, "meshgate_concurrency_queued", "Requests waiting for a slot.", by(|l| l.queued))?;
            metrics::gauges(enc, "meshgate_concurrency_limit", "Configured max_in_flight.", by(|l| l.max_in_flight))?;
            let rejected = [(Vec::new(), REJECTED.load(Ordering::Relaxed))];
            metrics::counters(
                enc,
                "meshgate_concurrency_rejected",
                "Requests refused: queue full or wait timed out.",
                rejected,
            )
        }));
    }
}

struct ConcurrencyLimit(Arc<Limiter>);

#[async_trait]
impl Plugin for ConcurrencyLimit {
    fn phases(&self) -> Phases {
        // The log phase keeps the request context, and with it the slot, alive until the
        // response body is done.
        Phases::ON_REQUEST | Phases::ON_LOG
    }

    async fn on_request(&self, cx: &mut RequestCtx) -> Flow {
        match self.0.acquire().await {
            Some(permit) => {
                cx.vars.insert(Slot { _permit: Arc::new(permit) });
                Flow::Continue
            }
            None => {
                REJECTED.fetch_add(1, Ordering::Relaxed);
                let mut resp =
                    ErrorKind::Unavailable.response("too many requests in flight for this route; retry later");
                resp.headers_mut().insert(RETRY_AFTER, self.0.retry_after.clone());
                Flow::Respond(resp)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{plugin, request};
    use serde_json::json;

    #[test]
    fn one_load_per_scope() {
        let load = |scope: &str, max_in_flight, in_flight, queued| Load {
            scope: scope.into(),
            max_in_flight,
            in_flight,
            queued,
        };
        let merged = per_scope(vec![load("route:a", 5, 2, 1), load("global", 9, 0, 0), load("route:a", 3, 1, 0)]);
        assert_eq!(merged, [load("route:a", 3, 3, 1), load("global", 9, 0, 0)]);
    }

    #[tokio::test]
    async fn slots_queue_and_refusals() {
        let p = plugin(&Factory, json!({"max_in_flight": 2, "queue": {"size": 1, "timeout": "100ms"}})).unwrap();
        let load = || snapshot().into_iter().find(|l| l.max_in_flight == 2 && l.scope == "global").unwrap();
        let (mut a, mut b) = (request("/", &[]), request("/", &[]));
        assert!(matches!(p.on_request(&mut a).await, Flow::Continue));
        assert!(matches!(p.on_request(&mut b).await, Flow::Continue));
        assert_eq!((load().in_flight, load().queued), (2, 0));

        // The third waits in the queue; a fourth finds the queue full and is refused at once.
        let p2 = p.clone();
        let waiting = tokio::spawn(async move {
            let mut c = request("/", &[]);
            matches!(p2.on_request(&mut c).await, Flow::Continue).then_some(c)
        });
        tokio::task::yield_now().await;
        assert_eq!(load().queued, 1);
        let mut d = request("/", &[]);
        match p.on_request(&mut d).await {
            Flow::Respond(r) => {
                assert_eq!(r.status(), 503);
                assert_eq!(r.headers()["retry-after"], "1");
            }
            Flow::Continue => panic!("admitted past a full queue"),
        }
        // A finished request frees its slot for the waiting one.
        drop(a);
        let c = waiting.await.unwrap().expect("the queued request got the freed slot");
        assert_eq!((load().in_flight, load().queued), (2, 0));

        // A wait longer than the queue timeout is refused.
        let t = std::time::Instant::now();
        let mut e = request("/", &[]);
        assert!(matches!(p.on_request(&mut e).await, Flow::Respond(_)));
        assert!(t.elapsed() >= std::time::Duration::from_millis(100));
        drop((b, c));
        assert_eq!(load().in_flight, 0);
    }

    #[test]
    fn config_errors() {
        let err = |v| plugin(&Factory, v).err().unwrap().to_string();
        assert_eq!(err(json!({"max_in_flight": 0})), "max_in_flight: must be at least 1");
        assert!(err(json!({})).contains("missing field `max_in_flight`"));
    }
}
