//! Retry policies as compiled for a route, and the per-route retry budget.
//!
//! Why a budget: a retry policy alone multiplies load exactly when upstreams are least able to
//! take it (during an outage every request becomes `1 + attempts` requests). Like Envoy's and
//! Linkerd's retry budgets, a route may add at most `ratio` × its recent request rate in retries,
//! plus `min_per_second` so that quiet routes can still retry. Past the budget the request fails
//! with its own response (502/503/504 or the upstream's answer) at once, never waiting.
//!
//! The budget is counted in one-second windows with atomics only: every request adds one to the
//! current window, every retry takes one of the window's allowance (`min_per_second` + `ratio` ×
//! the larger of this and the previous window's requests). Rolling to a new window is one
//! compare-and-swap; a request racing the roll may land in either window, which only blurs the
//! count by a request or two at the boundary.

use crate::client::Failure;
use http::Method;
use meshgate_config::model::{Retry, RetryFailure, RetryOn};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// A route's retry policy: which outcomes are retried, how often, and the route's budget.
#[derive(Clone)]
pub(crate) struct RetryRt {
    pub(crate) attempts: u32,
    connect_failure: bool,
    reset: bool,
    timeout: bool,
    any_5xx: bool,
    statuses: Box<[u16]>,
    idempotent_only: bool,
    pub(crate) budget: Arc<RetryBudget>,
}

impl RetryRt {
    /// Compiles a policy, with a fresh budget (budgets are per route and per config snapshot).
    pub(crate) fn new(r: &Retry) -> RetryRt {
        let has = |f: RetryFailure| r.on.contains(&RetryOn::Failure(f));
        let statuses = r.on.iter().filter_map(|o| if let RetryOn::Status(s) = o { Some(*s) } else { None }).collect();
        RetryRt {
            attempts: r.attempts,
            connect_failure: has(RetryFailure::ConnectFailure),
            reset: has(RetryFailure::Reset),
            timeout: has(RetryFailure::Timeout),
            any_5xx: has(RetryFailure::Status5xx),
            statuses,
            idempotent_only: r.idempotent_only,
            budget: Arc::new(RetryBudget::new(r.budget.ratio, r.budget.min_per_second)),
        }
    }

    /// Whether any outcome after the request was sent is retried (then a request without a
    /// body keeps a copy of its head for replaying).
    pub(crate) fn retries_after_send(&self) -> bool {
        self.attempts > 0 && (self.reset || self.timeout || self.any_5xx || !self.statuses.is_empty())
    }

    /// Whether `method` may be sent again once an upstream may have seen it.
    pub(crate) fn may_replay(&self, method: &Method) -> bool {
        !self.idempotent_only
            || matches!(
                *method,
                Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
            )
    }

    /// Whether the policy retries this failure of the exchange.
    pub(crate) fn on_failure(&self, failure: &Failure) -> bool {
        match failure {
            Failure::Connect(_) | Failure::ConnectTimeout => self.connect_failure,
            Failure::Broken(_) => self.reset,
            Failure::ReadTimeout => self.timeout,
            Failure::Client(_) => false,
        }
    }

    /// Whether the policy retries an upstream answer with this status.
    pub(crate) fn on_status(&self, status: u16) -> bool {
        (self.any_5xx && (500..600).contains(&status)) || self.statuses.contains(&status)
    }
}

/// Whole seconds since the first call in this process: the budget's window clock.
fn now_s() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs()
}

/// One route's retry budget and its counters (read by metrics).
#[derive(Debug)]
pub struct RetryBudget {
    /// Retries allowed per thousand requests.
    per_mille: u64,
    min_per_second: u64,
    /// The current window, in [`now_s`] seconds.
    window: AtomicU64,
    /// Requests seen in the current window.
    requests: AtomicU64,
    /// Requests seen in the previous window (0 when it was not the one just before).
    previous: AtomicU64,
    /// Retries granted in the current window.
    retries: AtomicU64,
    attempted: AtomicU64,
    exhausted: AtomicU64,
}

impl RetryBudget {
    /// A budget of `ratio` retries per request plus `min_per_second`.
    pub fn new(ratio: f64, min_per_second: u32) -> RetryBudget {
        RetryBudget {
            per_mille: (ratio.max(0.0) * 1000.0).round() as u64,
            min_per_second: u64::from(min_per_second),
            window: AtomicU64::new(now_s()),
            requests: AtomicU64::new(0),
            previous: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            attempted: AtomicU64::new(0),
            exhausted: AtomicU64::new(0),
        }
    }

    /// Retries granted so far.
    pub fn retries_attempted(&self) -> u64 {
        self.attempted.load(Ordering::Relaxed)
    }

    /// Retries refused because the budget was spent.
    pub fn budget_exhausted(&self) -> u64 {
        self.exhausted.load(Ordering::Relaxed)
    }

    /// Counts one request of the route.
    pub(crate) fn record_request(&self) {
        self.roll(now_s());
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget; false (counted as exhausted) when none is left.
    pub(crate) fn try_retry(&self) -> bool {
        self.try_retry_at(now_s())
    }

    fn try_retry_at(&self, now: u64) -> bool {
        self.roll(now);
        let seen = self.requests.load(Ordering::Relaxed).max(self.previous.load(Ordering::Relaxed));
        let allowed = self.min_per_second + seen.saturating_mul(self.per_mille) / 1000;
        if self.retries.fetch_add(1, Ordering::AcqRel) < allowed {
            self.attempted.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            self.retries.fetch_sub(1, Ordering::AcqRel);
            self.exhausted.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Starts a new window when `now` is past the current one; one thread wins the swap.
    fn roll(&self, now: u64) {
        let current = self.window.load(Ordering::Acquire);
        if current >= now {
            return;
        }
        if self.window.compare_exchange(current, now, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            let seen = self.requests.swap(0, Ordering::AcqRel);
            self.previous.store(if now == current + 1 { seen } else { 0 }, Ordering::Relaxed);
            self.retries.store(0, Ordering::Release);
        }
    }

    #[cfg(test)]
    fn record_request_at(&self, now: u64) {
        self.roll(now);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_ratio_of_requests_plus_minimum() {
        let b = RetryBudget::new(0.2, 2);
        let t = b.window.load(Ordering::Relaxed);
        for _ in 0..50 {
            b.record_request_at(t);
        }
        // 2 + 20 % of 50 = 12 retries in this second, then none.
        let granted = (0..30).filter(|_| b.try_retry_at(t)).count();
        assert_eq!(granted, 12);
        assert_eq!((b.retries_attempted(), b.budget_exhausted()), (12, 18));

        // The next second remembers the last one's rate: 12 again before any new request.
        assert_eq!((0..30).filter(|_| b.try_retry_at(t + 1)).count(), 12);
        // After a quiet gap only the minimum is left.
        assert_eq!((0..30).filter(|_| b.try_retry_at(t + 5)).count(), 2);
    }

    #[test]
    fn policy_matches_outcomes() {
        let on = vec![
            RetryOn::Failure(RetryFailure::Reset),
            RetryOn::Failure(RetryFailure::Status5xx),
            RetryOn::Status(429),
        ];
        let r = Retry { attempts: 2, on, ..Retry::shorthand(0) };
        let p = RetryRt::new(&r);
        assert!(p.retries_after_send());
        assert!(p.on_failure(&Failure::Broken("x".into())));
        assert!(!p.on_failure(&Failure::ConnectTimeout) && !p.on_failure(&Failure::ReadTimeout));
        assert!(p.on_status(500) && p.on_status(504) && p.on_status(429) && !p.on_status(404));
        assert!(p.may_replay(&Method::GET) && p.may_replay(&Method::PUT) && !p.may_replay(&Method::POST));

        let short = RetryRt::new(&Retry::shorthand(1));
        assert!(!short.retries_after_send(), "the shorthand never replays what was sent");
        assert!(short.on_failure(&Failure::Connect("refused".into())));
    }
}
