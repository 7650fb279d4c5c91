//! `tracing`: distributed tracing with B3 and W3C propagation, and Zipkin or OTLP export.
//!
//! A gateway sits in the middle of every trace, so it must do two things even when it records
//! nothing: carry the caller's trace on to the upstream (with its sampling decision), and start a
//! trace for callers that have none. Recording is what costs, so an unsampled request only reads
//! its headers and writes the upstream's: no span is kept, nothing is queued, no lock is taken.
//!
//! A sampled request records a SERVER span (arrival to the end of the response body) and a
//! CLIENT span per upstream attempt, so retries show up as what they are: several calls, each
//! failed one an error that says why. Each attempt is the parent of the upstream's own spans:
//! the headers written in `before_upstream` carry the attempt's span id. Spans are encoded and
//! sent by a background thread ([`export`]); a request never waits for the collector.

pub mod context;
pub mod export;
mod otlp;
pub mod span;
mod subcalls;
mod tracestate;
pub mod url;

use crate::observability::handoff::Handoff;
use context::{Decision, Format, Forms, Kept, Outgoing, TraceId};
use export::{DROPPED, EXPORT_ERRORS, EXPORTED, Protocol, Settings};
use meshgate_config::units::Duration;
use meshgate_core::metrics::{self, MetricsRegistry};
use meshgate_core::{
    BuildContext, Built, Flow, Phases, Plugin, PluginConfigError, PluginFactory, RequestCtx, SpanTags, TraceIds,
    async_trait, parse_config,
};
use serde::Deserialize;
use span::{Call, Local, Record, Server};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, UNIX_EPOCH};
use url::{PathQuery, Redact};

/// Registers `tracing`.
pub struct Factory;

/// The plugin's `config:` block.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Where spans go: a Zipkin v2 collector…
    #[serde(default)]
    zipkin: Option<CollectorConfig>,
    /// …or an OpenTelemetry (OTLP/HTTP, JSON) one.
    #[serde(default)]
    otlp: Option<CollectorConfig>,
    /// The share of new traces recorded, 0 to 1; an incoming decision wins.
    #[serde(default = "always")]
    sampling: f64,
    /// `localEndpoint.serviceName` of our spans.
    #[serde(default = "meshgate")]
    service_name: String,
    /// The formats read from requests, in this order of preference.
    #[serde(default = "both")]
    propagation: Vec<Format>,
    /// The header forms written to upstream requests: `preserve` (the forms the request came
    /// with, among those read; `inject_default` when it came with none), or a list of forms
    /// written to every upstream request.
    #[serde(default = "preserve")]
    inject: serde_json::Value,
    /// With `inject: preserve`, the forms a request that brought no context gets.
    #[serde(default = "default_forms")]
    inject_default: Vec<String>,
    /// Query parameters whose values spans show as `REDACTED`, besides the signatures of signed
    /// URLs; or `all`.
    #[serde(default)]
    redact_query: serde_json::Value,
}

/// `zipkin:` or `otlp:`: the collector and how spans are sent to it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CollectorConfig {
    /// The collector's spans endpoint (Zipkin `…/api/v2/spans`, OTLP `…/v1/traces`).
    url: String,
    /// Headers sent with every POST (a vendor's API key, say).
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    /// Spans per POST, at most (a request's spans are not split between two).
    #[serde(default = "batch_size")]
    batch_size: usize,
    /// How long a batch waits for more spans.
    #[serde(default = "flush_interval")]
    flush_interval: Duration,
    /// Sampled requests whose spans may wait for the exporter; more are dropped and counted.
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
/// Default `inject`.
fn preserve() -> serde_json::Value {
    "preserve".into()
}
/// Default `inject_default`: one header for each family of tracers, the single `b3` header
/// (read by Zipkin's own tracers, Envoy, Kong and OpenTelemetry's B3 propagator) and
/// `traceparent` (OpenTelemetry's default). Each header costs every traced request: B3's four
/// `X-B3-*` headers, for older Zipkin clients that read only those, are one `inject_default`
/// entry away.
fn default_forms() -> Vec<String> {
    vec!["b3-single".to_owned(), "w3c".to_owned()]
}
/// Default `batch_size` of a collector: about 450 KB of Zipkin JSON, under the 500 KB Zipkin's
/// own reporters send at most. Each POST costs the exporter as much as encoding dozens of
/// spans, so fewer, larger batches are cheaper for a busy gateway.
fn batch_size() -> usize {
    1000
}
/// Default `flush_interval` of a collector.
fn flush_interval() -> Duration {
    Duration::from_secs(1)
}
/// Default `queue` of a collector.
fn queue() -> usize {
    10_000
}
/// Default `timeout` of a collector.
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
        let (key, protocol, z) = match (&c.zipkin, &c.otlp) {
            (Some(z), None) => ("zipkin", Protocol::Zipkin, z),
            (None, Some(o)) => ("otlp", Protocol::Otlp, o),
            (None, None) => {
                return Err(PluginConfigError::new(
                    "zipkin",
                    "name a collector: `zipkin` (Zipkin v2) or `otlp` (OTLP/HTTP)",
                ));
            }
            (Some(_), Some(_)) => return Err(PluginConfigError::new("otlp", "name one collector, `zipkin` or `otlp`")),
        };
        for (field, v) in [("batch_size", z.batch_size), ("queue", z.queue)] {
            if v == 0 {
                return Err(PluginConfigError::new(format!("{key}.{field}"), "must be at least 1"));
            }
        }
        for (field, v) in [("flush_interval", z.flush_interval), ("timeout", z.timeout)] {
            if v.get().is_zero() {
                return Err(PluginConfigError::new(format!("{key}.{field}"), "must be longer than 0"));
            }
        }
        let mut headers = http::HeaderMap::new();
        for (name, value) in &z.headers {
            let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(name.as_bytes()), http::HeaderValue::from_str(value))
            else {
                return Err(PluginConfigError::new(
                    format!("{key}.headers.{name}"),
                    "not a valid header name and value",
                ));
            };
            headers.append(n, v);
        }
        let settings = Settings {
            protocol,
            batch_size: z.batch_size,
            flush_interval: z.flush_interval.get(),
            queue: z.queue,
            timeout: z.timeout.get(),
            headers,
        };
        let read = Forms::read_by(&c.propagation);
        let inject = match &c.inject {
            serde_json::Value::String(s) if s == "preserve" => {
                let names = c.inject_default.iter().map(|s| Some(s.as_str()));
                Inject::Preserve { default: forms("inject_default", names)? }
            }
            serde_json::Value::Array(items) => Inject::Always(forms("inject", items.iter().map(|v| v.as_str()))?),
            _ => return Err(PluginConfigError::new("inject", "`preserve`, or a list of forms: b3, b3-single, w3c")),
        };
        let redact = Redact::from_config(&c.redact_query)?;
        let tx = export::exporter(&z.url, settings).map_err(|m| PluginConfigError::new(format!("{key}.url"), m))?;
        let mut formats = c.propagation;
        formats.dedup();
        Ok(Built::Plugin(Arc::new(Tracing {
            formats: formats.into(),
            read,
            inject,
            sampler: Sampler::new(c.sampling),
            local: Arc::new(Local { service: c.service_name.to_lowercase().into(), redact }),
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

/// The header forms named in `field` (a list), at least one.
fn forms<'a>(field: &str, names: impl Iterator<Item = Option<&'a str>>) -> Result<Forms, PluginConfigError> {
    let mut set = Forms::NONE;
    for (i, name) in names.enumerate() {
        let form = name.and_then(Forms::named).ok_or_else(|| {
            PluginConfigError::new(format!("{field}[{i}]"), "not a header form: name b3, b3-single or w3c")
        })?;
        set = set | form;
    }
    if set.is_empty() {
        return Err(PluginConfigError::new(field, "name at least one form (b3, b3-single, w3c)"));
    }
    Ok(set)
}

/// Which header forms go to the upstream (`inject:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Inject {
    /// Rewrite the forms the request came with (so every hop reads the format it wrote);
    /// `default` for a request that came with none.
    Preserve { default: Forms },
    /// These forms on every upstream request.
    Always(Forms),
}

impl Inject {
    /// The forms to write, and the forms to remove: read from the request but not rewritten,
    /// they would name the caller's span as the upstream's parent. `seen` are the forms on the
    /// request, `read` those `propagation:` reads (others pass untouched).
    fn plan(self, seen: Forms, read: Forms) -> (Forms, Forms) {
        let seen = seen & read;
        let write = match self {
            Inject::Preserve { default } if seen.is_empty() => default,
            Inject::Preserve { .. } => seen,
            Inject::Always(forms) => forms,
        };
        (write, seen.without(write))
    }
}

/// One configured instance.
struct Tracing {
    /// Formats read (first valid wins).
    formats: Box<[Format]>,
    /// The header forms those formats read.
    read: Forms,
    /// The header forms written.
    inject: Inject,
    /// Decides for traces that come without a decision.
    sampler: Sampler,
    /// `localEndpoint.serviceName` and `redact_query`, shared by the instance's spans.
    local: Arc<Local>,
    /// The exporter's queue for this instance's collector.
    tx: Arc<Handoff<export::Queued>>,
}

/// A random non-zero span id. From a fast per-thread generator rather than `rand`'s
/// cryptographic one: ids must not collide, but nothing is protected by their being unguessable
/// (they travel in plain headers), and a traced request takes three.
fn new_id() -> u64 {
    fastrand::u64(1..)
}

#[async_trait]
impl Plugin for Tracing {
    fn phases(&self) -> Phases {
        Phases::ON_REQUEST | Phases::BEFORE_UPSTREAM | Phases::ON_LOG
    }

    async fn on_request(&self, cx: &mut RequestCtx) -> Flow {
        let seen = context::scan(&cx.request.headers);
        let incoming = context::extract(&seen, &self.formats);
        // A new trace's id is random through and through.
        let (trace_id, parent_id, random) = match incoming.ids {
            Some((t, s)) => (t, Some(s), incoming.w3c.is_some_and(|w| w.random)),
            None => (TraceId { value: fastrand::u128(1..), short: false }, None, true),
        };
        let sampled = self.sampler.decide(incoming.decision, trace_id);
        let debug = incoming.decision == Some(Decision::Debug);
        let forms = Kept { forms: seen.forms(), random }.bits();
        // `tracestate` goes on only with its own trace, and only when it is valid.
        if seen.tracestate && self.read.has(Forms::W3C) {
            let verdict = match incoming.w3c {
                Some(_) => tracestate::check(&cx.request.headers),
                None => tracestate::Verdict::Drop,
            };
            let headers = &mut cx.request.headers;
            match verdict {
                tracestate::Verdict::Keep => {}
                tracestate::Verdict::Drop => {
                    headers.remove(&context::TRACESTATE);
                }
                tracestate::Verdict::Combine(v) => {
                    headers.insert(&context::TRACESTATE, v);
                }
            }
        }
        cx.trace = Some(TraceIds { trace_id, span_id: new_id(), parent_id, sampled, debug, forms });
        Flow::Continue
    }

    async fn before_upstream(&self, cx: &mut RequestCtx, upstream: &mut http::request::Parts) -> Flow {
        let Some(t) = cx.trace else { return Flow::Continue };
        // The proxy records the attempt (target, times, status); its span id is ours to give.
        let id = new_id();
        if let Some(attempt) = cx.attempts.last_mut() {
            attempt.span_id = id;
        }
        let decision = match (t.debug, t.sampled) {
            (true, _) => Decision::Debug,
            (false, true) => Decision::Sample,
            (false, false) => Decision::Deny,
        };
        // The client's headers travel on in the upstream request, so the forms it came with
        // (noted in `on_request`) are the ones there; an earlier attempt wrote the same forms.
        let kept = Kept::from_bits(t.forms);
        let (write, stale) = self.inject.plan(kept.forms, self.read);
        let out = Outgoing { trace: t.trace_id, span: id, parent: t.span_id, decision, random: kept.random };
        context::inject(&mut upstream.headers, write, stale, out);
        Flow::Continue
    }

    fn on_log(&self, cx: &RequestCtx) {
        let Some(t) = cx.trace.filter(|t| t.sampled) else { return };
        // Arrival on the wall clock, in µs since the epoch: the clock of every span of the request.
        let ended = cx.ended();
        let now = ended.at;
        let start_us = ended.arrived.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        let mut record = Box::new(self.record(cx, &t, start_us, now));
        // An aggregation route's backend calls recorded their attempts in contexts of their own.
        if let Some(calls) = cx.vars.get::<meshgate_core::Subcalls>() {
            self.subcalls(cx, start_us, calls, &mut record.calls);
        }
        export::submit(&self.tx, record);
    }
}

impl Tracing {
    /// The finished spans of a sampled request: the server span and a call per attempt. Only
    /// values are copied here; formatting waits for the exporter's thread.
    fn record(&self, cx: &RequestCtx, t: &TraceIds, start_us: u64, now: Instant) -> Record {
        let at = |i: Instant| start_us + i.saturating_duration_since(cx.started).as_micros() as u64;
        let micros = |from: Instant, to: Instant| (to.saturating_duration_since(from).as_micros() as u64).max(1);
        let remote_service = cx.route.as_ref().map(|r| r.service.clone());
        let calls = cx
            .attempts
            .iter()
            .enumerate()
            .map(|(i, a)| Call {
                id: if a.span_id == 0 { new_id() } else { a.span_id },
                method: None,
                url: a.uri.as_deref().map(PathQuery::of),
                timestamp: at(a.start),
                duration: micros(a.start, a.end.unwrap_or(now)),
                remote: a.target.clone(),
                remote_service: remote_service.clone(),
                backend: None,
                error: a.failure.as_ref().map(|f| f.cause.clone()),
                error_type: a.failure.as_ref().map(|f| f.class),
                tls: a.tls,
                status: a.status,
                retried: a.retried,
                resend: i as u32,
            })
            .collect();
        Record {
            trace_id: t.trace_id,
            debug: t.debug,
            local: self.local.clone(),
            method: cx.request.method.clone(),
            url: PathQuery::of(&cx.request.uri),
            tls: cx.tls,
            server: Server {
                id: t.span_id,
                parent_id: t.parent_id,
                route: cx.route.clone(),
                timestamp: start_us,
                duration: micros(cx.started, now),
                status: cx.response.as_ref().map(|r| r.status.as_u16()),
                tags: cx.vars.get::<SpanTags>().map(|t| t.0.clone()).unwrap_or_default(),
            },
            calls,
        }
    }
}

#[cfg(test)]
mod spec_tests;
#[cfg(test)]
mod tests;
