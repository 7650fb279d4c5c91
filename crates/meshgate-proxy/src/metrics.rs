//! The gateway's own metrics, read from state it keeps anyway when `/metrics` is scraped:
//! config reloads, open connections, target health, retries, mirroring; plus every plugin's
//! (`PluginFactory::register_metrics`) and authentication failures.

use crate::mirror;
use crate::server::Shared;
use meshgate_balance::TargetRegistry;
use meshgate_core::Registry;
use meshgate_core::metrics::{self, Labels, MetricsRegistry};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// Process-level facts for `/status` and `/metrics`.
pub(crate) struct GatewayStats {
    /// Config loaded and listeners up (false again while draining).
    pub(crate) ready: AtomicBool,
    pub(crate) reloads_ok: AtomicU64,
    pub(crate) reloads_failed: AtomicU64,
    /// Hash of the config text now serving.
    pub(crate) config_hash: AtomicU64,
    pub(crate) started: Instant,
}

impl GatewayStats {
    pub(crate) fn new(config_hash: u64) -> GatewayStats {
        GatewayStats {
            ready: AtomicBool::new(false),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            config_hash: AtomicU64::new(config_hash),
            started: Instant::now(),
        }
    }

    /// 1 for the config the gateway started with, +1 per successful reload.
    pub(crate) fn config_version(&self) -> u64 {
        1 + self.reloads_ok.load(Ordering::Relaxed)
    }
}

fn label(name: &'static str, value: impl Into<String>) -> Labels {
    vec![(name, value.into())]
}

/// A registry with the gateway's metrics and those of every plugin factory in `plugins`.
pub(crate) fn registry(
    stats: Arc<GatewayStats>,
    shared: Arc<Shared>,
    targets: Arc<TargetRegistry>,
    plugins: &Registry,
) -> MetricsRegistry {
    let mut r = MetricsRegistry::default();
    r.register_collector(metrics::collector(move |enc| {
        metrics::gauges(
            enc,
            "meshgate_info",
            "meshgate's version.",
            [(label("version", env!("CARGO_PKG_VERSION")), 1)],
        )?;
        metrics::gauges(
            enc,
            "meshgate_uptime_seconds",
            "Seconds since start.",
            [(Vec::new(), stats.started.elapsed().as_secs() as i64)],
        )?;
        metrics::gauges(
            enc,
            "meshgate_config_version",
            "Configs loaded: 1 at start, +1 per successful reload.",
            [(Vec::new(), stats.config_version() as i64)],
        )?;
        let reloads = [("ok", &stats.reloads_ok), ("failed", &stats.reloads_failed)]
            .map(|(result, n)| (label("result", result), n.load(Ordering::Relaxed)));
        metrics::counters(
            enc,
            "meshgate_config_reloads",
            "Config reloads by result (a failed one keeps the running config).",
            reloads,
        )?;
        let snap = shared.snapshot.load();
        let open = snap
            .listeners
            .iter()
            .zip(&shared.open)
            .map(|(l, n)| (label("listener", &*l.name), n.load(Ordering::Relaxed) as i64));
        metrics::gauges(enc, "meshgate_connections_open", "Open client connections per listener.", open)?;
        let statuses = targets.statuses();
        let target =
            |s: &meshgate_balance::TargetStatus| vec![("upstream", s.upstream.clone()), ("target", s.address.clone())];
        metrics::gauges(
            enc,
            "meshgate_upstream_target_healthy",
            "1 when the target takes traffic.",
            statuses.iter().map(|s| (target(s), i64::from(s.healthy))),
        )?;
        metrics::gauges(
            enc,
            "meshgate_upstream_target_ejected",
            "1 while ejected by outlier detection.",
            statuses.iter().map(|s| (target(s), i64::from(s.ejected))),
        )?;
        metrics::gauges(
            enc,
            "meshgate_upstream_target_in_flight",
            "Requests in flight to the target.",
            statuses.iter().map(|s| (target(s), i64::from(s.in_flight))),
        )?;
        let retries = snap.retry_stats();
        metrics::counters(
            enc,
            "meshgate_route_retries",
            "Retries attempted, per route.",
            retries.iter().map(|(r, n, _)| (label("route", &**r), *n)),
        )?;
        metrics::counters(
            enc,
            "meshgate_route_retry_budget_exhausted",
            "Retries refused by the route's retry budget.",
            retries.iter().map(|(r, _, n)| (label("route", &**r), *n)),
        )?;
        let mirrored = [
            ("sent", &mirror::SENT),
            ("failed", &mirror::FAILED),
            ("dropped", &mirror::DROPPED),
            ("skipped", &mirror::SKIPPED),
        ]
        .map(|(outcome, n)| (label("outcome", outcome), n.load(Ordering::Relaxed)));
        metrics::counters(enc, "meshgate_mirror_requests", "Mirror copies by outcome.", mirrored)
    }));
    meshgate_core::auth::register_metrics(&mut r);
    for f in plugins.factories() {
        f.register_metrics(&mut r);
    }
    r
}
