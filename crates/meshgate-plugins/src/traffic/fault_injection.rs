//! `fault-injection`: delays and/or aborts a share of a route's requests, to see how clients and
//! callers behave when this service is slow or failing (chaos testing) without touching it.
//!
//! Applied in `on_request`, after authentication, ACL and rate limiting (so only requests that
//! would have been forwarded are hurt, and injected faults do not use up rate limits). A request
//! may get both: first the delay, then the abort draw. Each draw is independent, from a per-thread
//! generator (no lock). Percentages are floats from 0 to 100 (`0.5` is one request in 200).

use http::StatusCode;
use meshgate_config::units::Duration;
use meshgate_core::metrics::{self, MetricsRegistry};
use meshgate_core::{
    BuildContext, Built, Flow, Phases, Plugin, PluginConfigError, PluginFactory, RequestCtx, async_trait, json_error,
    parse_config,
};
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Registers `fault-injection`.
pub struct Factory;

/// Requests delayed since start.
pub static DELAYED: AtomicU64 = AtomicU64::new(0);
/// Requests aborted since start.
pub static ABORTED: AtomicU64 = AtomicU64::new(0);

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Config {
    delay: Option<DelayConfig>,
    abort: Option<AbortConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DelayConfig {
    percentage: f64,
    duration: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AbortConfig {
    percentage: f64,
    status: u16,
    /// The `message` of the JSON error; a default one says the fault was injected.
    body: Option<String>,
}

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "fault-injection"
    }
    fn priority(&self) -> i32 {
        // After authentication, ACL and rate limiting (910), before transforms.
        900
    }
    fn build(&self, config: &serde_json::Value, _cx: &BuildContext) -> Result<Built, PluginConfigError> {
        let c: Config = parse_config(config)?;
        if c.delay.is_none() && c.abort.is_none() {
            return Err(PluginConfigError::new("", "set delay, abort or both"));
        }
        let delay = match c.delay {
            Some(d) => {
                let share = Share::new(d.percentage).map_err(|m| PluginConfigError::new("delay.percentage", m))?;
                if d.duration.get().is_zero() {
                    return Err(PluginConfigError::new("delay.duration", "must be greater than zero"));
                }
                Some((share, d.duration.get()))
            }
            None => None,
        };
        let abort = match c.abort {
            Some(a) => {
                let share = Share::new(a.percentage).map_err(|m| PluginConfigError::new("abort.percentage", m))?;
                let status = StatusCode::from_u16(a.status)
                    .ok()
                    .filter(|s| s.is_client_error() || s.is_server_error())
                    .ok_or_else(|| PluginConfigError::new("abort.status", "must be an error status, 400 to 599"))?;
                let message = a.body.unwrap_or_else(|| "fault injected".to_owned());
                Some(Abort { share, status, message })
            }
            None => None,
        };
        Ok(Built::Plugin(Arc::new(FaultInjection { delay, abort })))
    }
    fn register_metrics(&self, registry: &mut MetricsRegistry) {
        registry.register_collector(metrics::collector(|enc| {
            let samples = [("delay", &DELAYED), ("abort", &ABORTED)]
                .map(|(fault, n)| (vec![("fault", fault.to_owned())], n.load(Ordering::Relaxed)));
            metrics::counters(enc, "meshgate_faults_injected", "Requests delayed or aborted on purpose.", samples)
        }));
    }
}

/// A share of requests: a request is picked when a uniform draw in `[0, 1)` is below `p`.
#[derive(Clone, Copy, Debug)]
struct Share(f64);

impl Share {
    fn new(percentage: f64) -> Result<Share, String> {
        if !(0.0..=100.0).contains(&percentage) {
            return Err(format!("must be between 0 and 100, not {percentage}"));
        }
        Ok(Share(percentage / 100.0))
    }

    fn draw(self) -> bool {
        self.0 >= 1.0 || (self.0 > 0.0 && rand::random::<f64>() < self.0)
    }
}

struct Abort {
    share: Share,
    status: StatusCode,
    message: String,
}

struct FaultInjection {
    delay: Option<(Share, std::time::Duration)>,
    abort: Option<Abort>,
}

#[async_trait]
impl Plugin for FaultInjection {
    fn phases(&self) -> Phases {
        Phases::ON_REQUEST
    }

    async fn on_request(&self, _cx: &mut RequestCtx) -> Flow {
        if let Some((share, duration)) = self.delay
            && share.draw()
        {
            DELAYED.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(duration).await;
        }
        if let Some(a) = &self.abort
            && a.share.draw()
        {
            ABORTED.fetch_add(1, Ordering::Relaxed);
            return Flow::Respond(json_error(a.status, "fault_injected", &a.message));
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{plugin, request};
    use serde_json::json;

    async fn status(p: &Arc<dyn Plugin>) -> u16 {
        match p.on_request(&mut request("/", &[])).await {
            Flow::Continue => 200,
            Flow::Respond(r) => r.status().as_u16(),
        }
    }

    #[tokio::test]
    async fn aborts_about_the_share_asked() {
        let p = plugin(&Factory, json!({"abort": {"percentage": 25, "status": 503}})).unwrap();
        let mut aborted = 0;
        for _ in 0..4000 {
            if status(&p).await == 503 {
                aborted += 1;
            }
        }
        assert!((800..1200).contains(&aborted), "{aborted} of 4000 aborted at 25 %");
        let all = plugin(&Factory, json!({"abort": {"percentage": 100, "status": 418, "body": "teapot"}})).unwrap();
        assert_eq!(status(&all).await, 418);
        let none = plugin(&Factory, json!({"abort": {"percentage": 0, "status": 500}})).unwrap();
        assert_eq!(status(&none).await, 200);
    }

    #[tokio::test]
    async fn delays_then_continues() {
        let p = plugin(&Factory, json!({"delay": {"percentage": 100, "duration": "50ms"}})).unwrap();
        let t = std::time::Instant::now();
        assert_eq!(status(&p).await, 200);
        assert!(t.elapsed() >= std::time::Duration::from_millis(50));
    }

    #[test]
    fn config_errors() {
        let err = |v| plugin(&Factory, v).err().unwrap().to_string();
        assert_eq!(err(json!({})), "set delay, abort or both");
        assert_eq!(
            err(json!({"abort": {"percentage": 100.5, "status": 500}})),
            "abort.percentage: must be between 0 and 100, not 100.5"
        );
        assert_eq!(
            err(json!({"abort": {"percentage": 10, "status": 302}})),
            "abort.status: must be an error status, 400 to 599"
        );
        assert_eq!(
            err(json!({"delay": {"percentage": 10, "duration": 0}})),
            "delay.duration: must be greater than zero"
        );
        assert!(err(json!({"delay": {"percentage": 10}})).starts_with("delay: missing field `duration`"));
    }
}
