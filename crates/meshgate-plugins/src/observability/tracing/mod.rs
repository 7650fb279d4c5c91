//! `tracing`: distributed tracing with B3 and W3C propagation and Zipkin export.
//!
//! A gateway sits in the middle of every trace, so it must do two things even when it records
//! nothing: carry the caller's trace on to the upstream (with its sampling decision), and start a
//! trace for callers that have none. Recording is what costs, so an unsampled request only reads
//! its headers and writes the upstream's: no span is kept, nothing is queued, no lock is taken.
//!
//! A sampled request records a SERVER span (arrival to the end of the response body) and a
//! CLIENT span per upstream attempt, so retries show up as what they are: several calls, the
//! earlier ones tagged `error: retried`. Each attempt is the parent of the upstream's own spans:
//! the headers written in `before_upstream` carry the attempt's span id. Spans are encoded and
//! sent by a background thread ([`export`]); a request never waits for the collector.

pub mod context;
pub mod export;
pub mod span;
mod subcalls;

use crate::observability::handoff::Handoff;
use context::{Decision, Format, TraceId};
use export::{DROPPED, EXPORT_ERRORS, EXPORTED, Settings};
use meshgate_config::units::Duration;
use meshgate_core::metrics::{self, MetricsRegistry};
use meshgate_core::{
    BuildContext, Built, Flow, Phases, Plugin, PluginConfigError, PluginFactory, RequestCtx, SpanTags, TraceIds,
    async_trait, parse_config,
};
use serde::Deserialize;
use span::{Kind, Span};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Registers `tracing`.
pub struct Factory;

/// The plugin's `config:` block.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Where spans go.
    zipkin: ZipkinConfig,
    /// The share of new traces recorded, 0 to 1; an incoming decision wins.
    #[serde(default = "always")]
    sampling: f64,
    /// `localEndpoint.serviceName` of our spans.
    #[serde(default = "meshgate")]
    service_name: String,
    /// The formats read from requests and written to upstream requests, in this order of
    /// preference when reading.
    #[serde(default = "both")]
    propagation: Vec<Format>,
}

/// `zipkin:`: the collector and how spans are sent to it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ZipkinConfig {
    /// The collector's v2 spans endpoint (`…/api/v2/spans`).
    url: String,
    /// Spans per POST at most.
    #[serde(default = "batch_size")]
    batch_size: usize,
    /// How long a batch waits for more spans.
    #[serde(default = "flush_interval")]
    flush_interval: Duration,
    /// Spans that may wait for the exporter; more are dropped and counted.
    #[serde(default = "queue")]
    queue: usize,
    /// A POST taking longer fails (and its batch is dropped).
    #[serde(default = "timeout")]
    timeout: Duration,
}

/// Default `sampling`: every new trace.
fn always() -> f64 {
    1.0
}
/// Default `service_name`.
fn meshgate() -> String {
    "meshgate".to_owned()
}
/// Default `propagation`: B3 first, then W3C.
fn both() -> Vec<Format> {
    vec![Format::B3, Format::W3c]
}
/// Default `zipkin.batch_size`.
fn batch_size() -> usize {
    100
}
/// Default `zipkin.flush_interval`.
fn flush_interval() -> Duration {
    Duration::from_secs(1)
}
/// Default `zipkin.queue`.
fn queue() -> usize {
    10_000
}
/// Default `zipkin.timeout`.
fn timeout() -> Duration {
    Duration::from_secs(2)
}

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "tracing"
    }
    fn priority(&self) -> i32 {
        // First in `on_request` (after `request-id`), so the server span covers the other
        // plugins and requests they answer themselves (401, 429) are traced too.
        50_000
    }
    fn build(&self, config: &serde_json::Value, _cx: &BuildContext) -> Result<Built, PluginConfigError> {
        let c: Config = parse_config(config)?;
        if !(0.0..=1.0).contains(&c.sampling) {
            return Err(PluginConfigError::new("sampling", "must be between 0 and 1"));
        }
        if c.service_name.is_empty() {
            return Err(PluginConfigError::new("service_name", "must not be empty"));
        }
        let z = &c.zipkin;
        for (field, v) in [("zipkin.batch_size", z.batch_size), ("zipkin.queue", z.queue)] {
            if v == 0 {
                return Err(PluginConfigError::new(field, "must be at least 1"));
            }
        }
        for (field, v) in [("zipkin.flush_interval", z.flush_interval), ("zipkin.timeout", z.timeout)] {
            if v.get().is_zero() {
                return Err(PluginConfigError::new(field, "must be longer than 0"));
            }
        }
        let settings = Settings {
            batch_size: z.batch_size,
            flush_interval: z.flush_interval.get(),
            queue: z.queue,
            timeout: z.timeout.get(),
        };
        let tx = export::exporter(&z.url, settings).map_err(|m| PluginConfigError::new("zipkin.url", m))?;
        let mut formats = c.propagation;
        formats.dedup();
        Ok(Built::Plugin(Arc::new(Tracing {
            formats: formats.into(),
            sampler: Sampler::new(c.sampling),
            service: c.service_name.to_lowercase().into(),
            tx,
        })))
    }
    fn register_metrics(&self, registry: &mut MetricsRegistry) {
        registry.register_collector(metrics::collector(|enc| {
            let n = |c: &AtomicU64| [(Vec::new(), c.load(Ordering::Relaxed))];
            metrics::counters(enc, "meshgate_tracing_spans_exported", "Spans the collector accepted.", n(&EXPORTED))?;
            metrics::counters(
                enc,
                "meshgate_tracing_spans_dropped",
                "Spans lost: the export queue was full or their batch failed.",
                n(&DROPPED),
            )?;
            metrics::counters(
                enc,
                "meshgate_tracing_export_errors",
                "Span batches that failed to export.",
                n(&EXPORT_ERRORS),
            )
        }));
    }
}

/// Decides whether a new trace is recorded: a trace id below the threshold is. Deciding on the
/// id rather than a fresh random number gives every gateway the same answer for the same trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sampler {
    /// `sampling: 1`.
    Always,
    /// `sampling: 0`.
    Never,
    /// Ids whose low 64 bits are below this.
    Below(u64),
}

impl Sampler {
    /// The sampler for `sampling: ratio` (0 to 1).
    fn new(ratio: f64) -> Sampler {
        if ratio >= 1.0 {
            Sampler::Always
        } else if ratio <= 0.0 {
            Sampler::Never
        } else {
            Sampler::Below((ratio * u64::MAX as f64) as u64)
        }
    }

    /// The decision for a request that brought `decision` (if any) for trace `id`.
    fn decide(self, decision: Option<Decision>, id: TraceId) -> bool {
        match (decision, self) {
            (Some(Decision::Sample | Decision::Debug), _) => true,
            (Some(Decision::Deny), _) => false,
            (None, Sampler::Always) => true,
            (None, Sampler::Never) => false,
            (None, Sampler::Below(t)) => (id.value as u64) < t,
        }
    }
}

/// The trace a request belongs to, in [`RequestCtx::vars`] from `on_request` on (for other
/// plugins too: logs can name the trace).
#[derive(Clone, Debug)]
pub struct TraceContext {
    /// The trace's id, as it came in or new.
    pub trace_id: TraceId,
    /// Our server span's id.
    pub span_id: u64,
    /// The caller's span id, the parent of ours.
    pub parent_id: Option<u64>,
    /// Whether this request is recorded (and says so downstream).
    pub sampled: bool,
    /// The caller asked every hop to record (B3 debug): passed on, and marked on our spans.
    pub debug: bool,
    /// What is being recorded; `None` when not sampled.
    recording: Option<Box<Recording>>,
}

/// A sampled request's spans in progress.
#[derive(Clone, Debug)]
struct Recording {
    /// Arrival, in µs since the epoch: the clock of every span of this request.
    start_us: u64,
    /// One per upstream attempt, in order.
    attempts: Vec<Attempt>,
}

/// One upstream attempt (a CLIENT span).
#[derive(Clone, Debug)]
struct Attempt {
    /// The CLIENT span's id, sent upstream as the parent of the upstream's spans.
    id: u64,
    /// Just before the request was handed to the upstream connection.
    start: Instant,
    /// The response head came, or the next attempt started; `None` while under way.
    end: Option<Instant>,
    /// The upstream target (`cx.upstream`).
    target: Option<Arc<str>>,
    /// The URI as sent upstream (after rewrites); a shared copy, not a new string.
    uri: http::Uri,
    /// The status the attempt ended with, when it ended with an answer that was used.
    status: Option<u16>,
    /// Another attempt followed this one.
    retried: bool,
}

/// One configured instance.
struct Tracing {
    /// Formats read (first valid wins) and written.
    formats: Box<[Format]>,
    /// Decides for traces that come without a decision.
    sampler: Sampler,
    /// `localEndpoint.serviceName`, lower case.
    service: Arc<str>,
    /// The exporter's queue for this instance's collector.
    tx: Arc<Handoff<Span>>,
}

/// A random non-zero span id.
fn new_id() -> u64 {
    rand::random::<u64>().max(1)
}

#[async_trait]
impl Plugin for Tracing {
    fn phases(&self) -> Phases {
        Phases::ON_REQUEST | Phases::BEFORE_UPSTREAM | Phases::ON_RESPONSE | Phases::ON_LOG
    }

    async fn on_request(&self, cx: &mut RequestCtx) -> Flow {
        let incoming = context::extract(&cx.request.headers, &self.formats);
        let (trace_id, parent_id) = match incoming.ids {
            Some((t, s)) => (t, Some(s)),
            None => (TraceId { value: rand::random::<u128>().max(1), short: false }, None),
        };
        let sampled = self.sampler.decide(incoming.decision, trace_id);
        let recording = sampled.then(|| {
            let arrived = SystemTime::now() - cx.started.elapsed();
            let start_us = arrived.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
            Box::new(Recording { start_us, attempts: Vec::new() })
        });
        let debug = incoming.decision == Some(Decision::Debug);
        let span_id = new_id();
        cx.vars.insert(TraceIds { trace_id, span_id, sampled });
        cx.vars.insert(TraceContext { trace_id, span_id, parent_id, sampled, debug, recording });
        Flow::Continue
    }

    async fn before_upstream(&self, cx: &mut RequestCtx, upstream: &mut http::request::Parts) -> Flow {
        let Some(tc) = cx.vars.get_mut::<TraceContext>() else { return Flow::Continue };
        let id = new_id();
        if let Some(rec) = tc.recording.as_mut() {
            let now = Instant::now();
            if let Some(prev) = rec.attempts.last_mut().filter(|a| a.end.is_none()) {
                (prev.end, prev.retried) = (Some(now), true);
            }
            rec.attempts.push(Attempt {
                id,
                start: now,
                end: None,
                target: cx.upstream.clone(),
                uri: upstream.uri.clone(),
                status: None,
                retried: false,
            });
        }
        let decision = match (tc.debug, tc.sampled) {
            (true, _) => Decision::Debug,
            (false, true) => Decision::Sample,
            (false, false) => Decision::Deny,
        };
        context::inject(&mut upstream.headers, &self.formats, tc.trace_id, id, tc.span_id, decision);
        Flow::Continue
    }

    async fn on_response(&self, cx: &mut RequestCtx, response: &mut http::response::Parts) {
        let Some(rec) = cx.vars.get_mut::<TraceContext>().and_then(|tc| tc.recording.as_mut()) else { return };
        if let Some(last) = rec.attempts.last_mut().filter(|a| a.end.is_none()) {
            (last.end, last.status) = (Some(Instant::now()), Some(response.status.as_u16()));
        }
    }

    fn on_log(&self, cx: &RequestCtx) {
        let Some(tc) = cx.vars.get::<TraceContext>() else { return };
        let Some(rec) = tc.recording.as_deref() else { return };
        self.spans(cx, tc, rec, Instant::now(), |span| export::submit(&self.tx, span));
        // An aggregation route's backend calls recorded their attempts in contexts of their own.
        if let Some(calls) = cx.vars.get::<meshgate_core::Subcalls>() {
            self.subcall_spans(cx, tc, rec, calls, |span| export::submit(&self.tx, span));
        }
    }
}

impl Tracing {
    /// The finished spans of a sampled request: the client spans, then the server span. Only
    /// values are copied here; formatting waits for the exporter's thread.
    fn spans(&self, cx: &RequestCtx, tc: &TraceContext, rec: &Recording, now: Instant, mut out: impl FnMut(Span)) {
        let at = |t: Instant| rec.start_us + t.saturating_duration_since(cx.started).as_micros() as u64;
        let micros = |from: Instant, to: Instant| (to.saturating_duration_since(from).as_micros() as u64).max(1);
        let server = Span {
            trace_id: tc.trace_id,
            id: tc.span_id,
            parent_id: tc.parent_id,
            kind: Kind::Server,
            route: cx.route.clone(),
            method: cx.request.method.clone(),
            uri: cx.request.uri.clone(),
            timestamp: rec.start_us,
            duration: micros(cx.started, now),
            local_service: self.service.clone(),
            remote: None,
            remote_service: None,
            backend: None,
            error: None,
            tags: cx.vars.get::<SpanTags>().map(|t| t.0.clone()).unwrap_or_default(),
            debug: tc.debug,
            status: cx.response.as_ref().map(|r| r.status.as_u16()),
            retried: false,
        };
        for a in &rec.attempts {
            out(Span {
                id: a.id,
                parent_id: Some(tc.span_id),
                kind: Kind::Client,
                uri: a.uri.clone(),
                timestamp: at(a.start),
                duration: micros(a.start, a.end.unwrap_or(now)),
                remote: a.target.clone(),
                remote_service: cx.route.as_ref().map(|r| r.service.clone()),
                tags: Vec::new(),
                status: a.status,
                retried: a.retried,
                ..server.clone()
            });
        }
        out(server);
    }
}

#[cfg(test)]
mod tests;
