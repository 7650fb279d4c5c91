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
        metrics::info(enc, "meshgate", "meshgate's version.", label("version", env!("CARGO_PKG_VERSION")))?;
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
        metrics::counters(enc, "meshgate_mirror_requests", "Mirror copies by outcome.", mirrored)?;
        let backends = crate::aggregate::stats(&snap);
        let by_outcome = backends.iter().flat_map(|(route, backend, n)| {
            crate::aggregate::OUTCOMES.iter().zip(n).map(move |(outcome, n)| {
                (
                    vec![
                        ("route", route.to_string()),
                        ("backend", backend.to_string()),
                        ("outcome", (*outcome).into()),
                    ],
                    *n,
                )
            })
        });
        metrics::counters(
            enc,
            "meshgate_aggregate_backend_calls",
            "Calls of aggregation route backends by outcome (ok, failed, timeout).",
            by_outcome,
        )?;
        encode_routes(enc, &snap)
    }));
    meshgate_core::auth::register_metrics(&mut r);
    for f in plugins.factories() {
        f.register_metrics(&mut r);
    }
    r
}

/// Methods with a label of their own; the rest count as `OTHER`.
const METHODS: [http::Method; 7] = [
    http::Method::GET,
    http::Method::HEAD,
    http::Method::POST,
    http::Method::PUT,
    http::Method::DELETE,
    http::Method::PATCH,
    http::Method::OPTIONS,
];
const METHOD_LABELS: [&str; 8] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER"];
const CLASS_LABELS: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Latency bucket upper bounds, in seconds.
const BOUNDS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// A latency histogram in relaxed atomics: one `fetch_add` per bucket hit, no lock.
#[derive(Default)]
struct Latency {
    /// Per-bucket counts; the last is everything above the last bound.
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_us: AtomicU64,
}

impl Latency {
    fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let i = BOUNDS.iter().position(|b| secs <= *b).unwrap_or(BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// `(sum in seconds, count, per-bucket (bound, count))` for the encoder.
    fn read(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets: Vec<(f64, u64)> = BOUNDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.buckets)
            .map(|(b, n)| (b, n.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        (self.sum_us.load(Ordering::Relaxed) as f64 / 1e6, count, buckets)
    }
}

/// Requests and latencies of one route (or of requests that matched none), counted when the
/// response head is sent. Relaxed atomics: no lock on the request path. Counts start again with
/// each config (Prometheus' `rate()` handles the reset).
#[derive(Default)]
pub(crate) struct RouteStats {
    requests: [[AtomicU64; CLASS_LABELS.len()]; METHOD_LABELS.len()],
    total: Latency,
    upstream: Latency,
    /// Request body bytes read from clients.
    bytes_in: AtomicU64,
    /// Response body bytes sent to clients.
    bytes_out: AtomicU64,
}

impl RouteStats {
    /// One request answered with `status` after `total`, of which `upstream` waiting for the
    /// upstream's response head (none when the gateway answered itself).
    pub(crate) fn record(
        &self,
        method: &http::Method,
        status: http::StatusCode,
        total: std::time::Duration,
        upstream: Option<std::time::Duration>,
    ) {
        let m = METHODS.iter().position(|x| x == method).unwrap_or(METHODS.len());
        let c = (usize::from(status.as_u16() / 100)).clamp(1, 5) - 1;
        self.requests[m][c].fetch_add(1, Ordering::Relaxed);
        self.total.observe(total);
        if let Some(u) = upstream {
            self.upstream.observe(u);
        }
    }

    /// The body bytes of one finished exchange.
    pub(crate) fn add_bytes(&self, received: u64, sent: u64) {
        self.bytes_in.fetch_add(received, Ordering::Relaxed);
        self.bytes_out.fetch_add(sent, Ordering::Relaxed);
    }
}

/// A request body's size as read from the client: declared up front (and checked against the
/// limit before anything was forwarded), or counted while it streams.
#[derive(Clone, Debug)]
pub(crate) enum RequestBytes {
    /// `Content-Length`, or 0 for a request without a body.
    Known(u64),
    /// Counted by the body as it streams (chunked uploads, HTTP/2 without a length).
    Counted(Arc<AtomicU64>),
}

impl RequestBytes {
    /// Bytes read so far.
    pub(crate) fn get(&self) -> u64 {
        match self {
            RequestBytes::Known(n) => *n,
            RequestBytes::Counted(n) => n.load(Ordering::Relaxed),
        }
    }
}

/// Adds a response body's bytes, and the request's, to its route's counters once the response
/// body ends or is dropped (a client that goes away mid-body counts what was sent).
pub(crate) struct BodyAccount {
    stats: Arc<RouteStats>,
    request: RequestBytes,
    sent: u64,
}

impl BodyAccount {
    pub(crate) fn new(stats: Arc<RouteStats>, request: RequestBytes) -> BodyAccount {
        BodyAccount { stats, request, sent: 0 }
    }

    /// A frame of `n` bytes went to the client.
    pub(crate) fn sent(&mut self, n: usize) {
        self.sent += n as u64;
    }
}

impl Drop for BodyAccount {
    fn drop(&mut self) {
        self.stats.add_bytes(self.request.get(), self.sent);
    }
}

/// Writes the request counters and latency histograms of every route of `snap`.
fn encode_routes(
    enc: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    snap: &crate::Snapshot,
) -> std::fmt::Result {
    use prometheus_client::metrics::MetricType;
    let all = snap.route_stats();
    let requests = all.iter().flat_map(|(route, service, s)| {
        s.requests.iter().enumerate().flat_map(move |(m, row)| {
            row.iter().enumerate().filter_map(move |(c, n)| {
                let n = n.load(Ordering::Relaxed);
                (n > 0).then(|| {
                    let labels: Labels = vec![
                        ("route", route.to_string()),
                        ("service", service.to_string()),
                        ("method", METHOD_LABELS[m].to_owned()),
                        ("status_class", CLASS_LABELS[c].to_owned()),
                    ];
                    (labels, n)
                })
            })
        })
    });
    metrics::counters(
        enc,
        "meshgate_requests",
        "Requests answered, by route, service, method and status class (empty route: matched none).",
        requests,
    )?;
    for (name, help, pick) in [
        (
            "meshgate_request_bytes",
            "Request body bytes received from clients.",
            (|s: &RouteStats| &s.bytes_in) as fn(&RouteStats) -> &AtomicU64,
        ),
        ("meshgate_response_bytes", "Response body bytes sent to clients.", |s: &RouteStats| &s.bytes_out),
    ] {
        let counts = all.iter().map(|(route, service, s)| {
            let labels: Labels = vec![("route", route.to_string()), ("service", service.to_string())];
            (labels, pick(s).load(Ordering::Relaxed))
        });
        metrics::counters(enc, name, help, counts)?;
    }
    for (name, help, pick) in [
        (
            "meshgate_request_duration_seconds",
            "Time from the request head to the response head.",
            (|s: &RouteStats| &s.total) as fn(&RouteStats) -> &Latency,
        ),
        (
            "meshgate_upstream_duration_seconds",
            "Time waiting for the upstream's response head, per attempt that got one.",
            |s: &RouteStats| &s.upstream,
        ),
    ] {
        let mut family = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (route, service, s) in &all {
            let (sum, count, buckets) = pick(s).read();
            if count == 0 {
                continue;
            }
            let labels: Labels = vec![("route", route.to_string()), ("service", service.to_string())];
            family.encode_family(&labels)?.encode_histogram::<Labels>(sum, count, &buckets, None)?;
        }
    }
    Ok(())
}
