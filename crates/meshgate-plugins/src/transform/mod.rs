//! Message transformation: `cors` answers browsers' cross-origin checks (its own module);
//! `request-transformer` and `response-transformer` add, append,
//! remove, rename and replace headers, query arguments (requests only) and fields of JSON bodies,
//! with values that may be templates reading the request (`{header.x-user}`, `{query.page}`,
//! `{path.id}`, `{consumer.username}`). Everything is compiled at config load; a route pays for
//! a body only when a plugin has JSON operations, and then only for JSON bodies (or, with
//! `on_unsupported_body: refuse`, to refuse the others).

pub mod cors;
pub mod request_transformer;
pub mod response_transformer;

mod headers;
mod json;
mod query;
mod template;

use bytes::Bytes;
use headers::HeaderOps;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue};
use json::{JsonOps, JsonValue, Outcome, Path};
use meshgate_config::units::ByteSize;
use meshgate_core::PluginConfigError;
use meshgate_core::metrics::{self, MetricsRegistry};
use query::QueryOps;
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use template::{Scope, Sources, Template};

/// The operations on a set of named values (headers, query arguments), in the order they run:
/// names `K` and values `V`.
pub(crate) struct Ops<K, V> {
    pub(crate) remove: Vec<K>,
    pub(crate) rename: Vec<(K, K)>,
    pub(crate) replace: Vec<(K, Value<V>)>,
    pub(crate) add: Vec<(K, Value<V>)>,
    pub(crate) append: Vec<(K, Value<V>)>,
}

impl<K, V> Default for Ops<K, V> {
    fn default() -> Self {
        Ops { remove: Vec::new(), rename: Vec::new(), replace: Vec::new(), add: Vec::new(), append: Vec::new() }
    }
}

impl<K, V> Ops<K, V> {
    /// Whether there is nothing to do.
    pub(crate) fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.rename.is_empty()
            && self.replace.is_empty()
            && self.add.is_empty()
            && self.append.is_empty()
    }
}

/// A configured value: fixed, or a template rendered per request.
pub(crate) enum Value<T> {
    /// The same for every request.
    Const(T),
    /// Rendered per request.
    Template(Template),
}

impl<T> Value<T> {
    /// A fixed value when the template has no placeholder (converted once by `f`).
    pub(crate) fn compile<E>(t: Template, f: impl FnOnce(&str) -> Result<T, E>) -> Result<Value<T>, E> {
        match t.literal() {
            Some(text) => Ok(Value::Const(f(text)?)),
            None => Ok(Value::Template(t)),
        }
    }
}

impl Value<String> {
    /// The value for this request; `None` when a template names something the request lacks.
    pub(crate) fn get(&self, scope: &Scope<'_>) -> Option<Cow<'_, str>> {
        match self {
            Value::Const(s) => Some(Cow::Borrowed(s)),
            Value::Template(t) => t.render(scope).map(Cow::Owned),
        }
    }
}

/// What to do with a body that cannot be transformed: not JSON, over `max_body_bytes`, or
/// labelled JSON but not valid JSON.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OnUnsupported {
    /// Send it on untouched.
    #[default]
    Pass,
    /// Answer with an error instead.
    Refuse,
}

/// A transformer's `config:` block. Response transformers have no `query` operations.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    remove: Names,
    rename: Pairs,
    replace: Values,
    add: Values,
    append: Appends,
    max_body_bytes: ByteSize,
    on_unsupported_body: OnUnsupported,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            remove: Names::default(),
            rename: Pairs::default(),
            replace: Values::default(),
            add: Values::default(),
            append: Appends::default(),
            max_body_bytes: ByteSize::mib(1),
            on_unsupported_body: OnUnsupported::Pass,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Names {
    headers: Vec<String>,
    query: Vec<String>,
    json: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Pairs {
    headers: BTreeMap<String, String>,
    query: BTreeMap<String, String>,
    json: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Values {
    headers: BTreeMap<String, String>,
    query: BTreeMap<String, String>,
    json: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Appends {
    headers: BTreeMap<String, String>,
    query: BTreeMap<String, String>,
}

impl Config {
    /// The fields holding query operations that are set, for response transformers to refuse.
    fn query_fields(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (set, field) in [
            (!self.remove.query.is_empty(), "remove.query"),
            (!self.rename.query.is_empty(), "rename.query"),
            (!self.replace.query.is_empty(), "replace.query"),
            (!self.add.query.is_empty(), "add.query"),
            (!self.append.query.is_empty(), "append.query"),
        ] {
            if set {
                out.push(field);
            }
        }
        out
    }
}

/// A config compiled for the request path.
pub(crate) struct Compiled {
    pub(crate) headers: HeaderOps,
    pub(crate) query: QueryOps,
    /// The header and query values templates read, copied per request.
    pub(crate) sources: Sources,
    /// Whether the JSON operations read copied values (then they are kept for the body phase).
    pub(crate) json_reads_captured: bool,
    pub(crate) body: BodyRule,
}

/// Headers whose values frame the message: the gateway sets them, operations may not.
fn framing(name: &HeaderName) -> bool {
    name == CONTENT_LENGTH || name == TRANSFER_ENCODING
}

fn header_name(field: String, s: &str) -> Result<HeaderName, PluginConfigError> {
    let name = crate::headers::header_name(field.clone(), s)?;
    if framing(&name) {
        return Err(PluginConfigError::new(field, format!("{s} is set by the gateway to match the body")));
    }
    Ok(name)
}

fn template(field: &str, s: &str, sources: &mut Sources) -> Result<Template, PluginConfigError> {
    Template::parse(s, sources).map_err(|m| PluginConfigError::new(field, m))
}

fn header_values(
    map: &BTreeMap<String, String>,
    field: &str,
    sources: &mut Sources,
) -> Result<Vec<(HeaderName, Value<HeaderValue>)>, PluginConfigError> {
    map.iter()
        .map(|(k, v)| {
            let f = format!("{field}.{k}");
            let t = template(&f, v, sources)?;
            let value = Value::compile(t, |s| crate::headers::header_value(f.clone(), s))?;
            Ok((header_name(f, k)?, value))
        })
        .collect()
}

fn query_values(
    map: &BTreeMap<String, String>,
    field: &str,
    sources: &mut Sources,
) -> Result<Vec<(String, Value<String>)>, PluginConfigError> {
    map.iter()
        .map(|(k, v)| {
            let f = format!("{field}.{k}");
            let t = template(&f, v, sources)?;
            Ok((k.clone(), Value::compile(t, |s| Ok::<_, PluginConfigError>(s.to_owned()))?))
        })
        .collect()
}

fn json_path(field: String, s: &str) -> Result<Path, PluginConfigError> {
    Path::parse(s).map_err(|m| PluginConfigError::new(field, m))
}

fn json_values(
    map: &BTreeMap<String, serde_json::Value>,
    field: &str,
    sources: &mut Sources,
) -> Result<Vec<(Path, JsonValue)>, PluginConfigError> {
    map.iter()
        .map(|(k, v)| {
            let f = format!("{field}.{k}");
            let value = JsonValue::compile(v, sources).map_err(|m| PluginConfigError::new(f.clone(), m))?;
            Ok((json_path(f, k)?, value))
        })
        .collect()
}

/// Compiles a config; `stats` are the counters of the plugin it is for.
pub(crate) fn compile(c: &Config, stats: &'static Stats) -> Result<Compiled, PluginConfigError> {
    let mut sources = Sources::default();
    let headers = HeaderOps {
        remove: c
            .remove
            .headers
            .iter()
            .enumerate()
            .map(|(i, n)| header_name(format!("remove.headers[{i}]"), n))
            .collect::<Result<_, _>>()?,
        rename: c
            .rename
            .headers
            .iter()
            .map(|(k, v)| {
                let f = format!("rename.headers.{k}");
                Ok((header_name(f.clone(), k)?, header_name(f, v)?))
            })
            .collect::<Result<_, PluginConfigError>>()?,
        replace: header_values(&c.replace.headers, "replace.headers", &mut sources)?,
        add: header_values(&c.add.headers, "add.headers", &mut sources)?,
        append: header_values(&c.append.headers, "append.headers", &mut sources)?,
    };
    let query = QueryOps {
        remove: c.remove.query.clone(),
        rename: c.rename.query.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        replace: query_values(&c.replace.query, "replace.query", &mut sources)?,
        add: query_values(&c.add.query, "add.query", &mut sources)?,
        append: query_values(&c.append.query, "append.query", &mut sources)?,
    };
    let json = JsonOps {
        remove: c
            .remove
            .json
            .iter()
            .enumerate()
            .map(|(i, p)| json_path(format!("remove.json[{i}]"), p))
            .collect::<Result<_, _>>()?,
        rename: c
            .rename
            .json
            .iter()
            .map(|(k, v)| {
                let f = format!("rename.json.{k}");
                Ok((json_path(f.clone(), k)?, json_path(f, v)?))
            })
            .collect::<Result<_, PluginConfigError>>()?,
        replace: json_values(&c.replace.json, "replace.json", &mut sources)?,
        add: json_values(&c.add.json, "add.json", &mut sources)?,
    };
    Ok(Compiled {
        headers,
        query,
        json_reads_captured: json.reads_captured(),
        sources,
        body: BodyRule {
            ops: json,
            max: c.max_body_bytes.bytes(),
            refuse: c.on_unsupported_body == OnUnsupported::Refuse,
            stats,
        },
    })
}

/// Why a body was not transformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Its content type is not JSON (`application/json`, `application/*+json`).
    NotJson,
    /// Larger than `max_body_bytes`.
    TooLarge,
    /// Labelled JSON, but not valid JSON.
    InvalidJson,
    /// Compressed or otherwise encoded (`Content-Encoding`): never touched.
    Encoded,
}

const REASONS: [(Reason, &str); 4] = [
    (Reason::NotJson, "not_json"),
    (Reason::TooLarge, "too_large"),
    (Reason::InvalidJson, "invalid_json"),
    (Reason::Encoded, "encoded"),
];

impl Reason {
    /// The reason as metrics and trace tags name it.
    pub(crate) fn label(self) -> &'static str {
        REASONS.iter().find(|(r, _)| *r == self).map_or("", |(_, l)| l)
    }
}

/// What a transformer did with a body, as the request's trace shows it
/// (`meshgate.transform.request` / `.response`).
pub(crate) fn trace_label(result: &Result<&'static str, Reason>) -> std::borrow::Cow<'static, str> {
    match result {
        Ok(done) => (*done).into(),
        Err(reason) => format!("refused: {}", reason.label()).into(),
    }
}

/// A label value and its count.
pub(crate) type Count = (&'static str, u64);

/// Bodies a transformer saw, since start: transformed, passed on untouched, refused, and why.
pub(crate) struct Stats {
    transformed: AtomicU64,
    passed: AtomicU64,
    refused: AtomicU64,
    /// Passed or refused, by [`Reason`] in [`REASONS`] order.
    reasons: [AtomicU64; 4],
}

impl Stats {
    pub(crate) const fn new() -> Stats {
        Stats {
            transformed: AtomicU64::new(0),
            passed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            reasons: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    fn untouched(&self, reason: Reason, refused: bool) {
        let outcome = if refused { &self.refused } else { &self.passed };
        outcome.fetch_add(1, Ordering::Relaxed);
        let i = REASONS.iter().position(|(r, _)| *r == reason).unwrap_or(0);
        self.reasons[i].fetch_add(1, Ordering::Relaxed);
    }

    /// `(outcome, count)` and `(reason, count)`, for metrics and tests.
    pub(crate) fn read(&self) -> ([Count; 3], [Count; 4]) {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        (
            [("transformed", n(&self.transformed)), ("passed", n(&self.passed)), ("refused", n(&self.refused))],
            std::array::from_fn(|i| (REASONS[i].1, n(&self.reasons[i]))),
        )
    }
}

/// Registers the counters of both transformers, as one family each with a `plugin` label:
/// a family written twice (once per transformer) makes Prometheus reject the whole scrape.
/// Called by request-transformer's factory alone.
pub(crate) fn register_metrics(registry: &mut MetricsRegistry) {
    let plugins = [
        (request_transformer::NAME, &request_transformer::STATS),
        (response_transformer::NAME, &response_transformer::STATS),
    ];
    registry.register_collector(metrics::collector(move |enc| {
        let read = plugins.map(|(plugin, stats)| (plugin, stats.read()));
        let label = |plugin: &str, key, value: &str| vec![("plugin", plugin.to_owned()), (key, value.to_owned())];
        metrics::counters(
            enc,
            "meshgate_transform_bodies",
            "Bodies a transformer was given, by what became of them: transformed, passed on untouched, refused.",
            read.iter().flat_map(|(plugin, (outcomes, _))| outcomes.map(|(o, n)| (label(plugin, "outcome", o), n))),
        )?;
        metrics::counters(
            enc,
            "meshgate_transform_untouched",
            "Bodies a transformer passed on or refused, by reason: not_json, too_large, invalid_json, encoded.",
            read.iter().flat_map(|(plugin, (_, reasons))| reasons.map(|(r, n)| (label(plugin, "reason", r), n))),
        )
    }));
}

/// Whether a content type is JSON: `application/json` or `application/<anything>+json`.
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let mime = ct.split(';').next().unwrap_or("").trim();
    let Some((ty, sub)) = mime.split_once('/') else { return false };
    ty.eq_ignore_ascii_case("application")
        && (sub.eq_ignore_ascii_case("json")
            || sub.len() > 5 && sub.get(sub.len() - 5..).is_some_and(|s| s.eq_ignore_ascii_case("+json")))
}

/// Whether a body is encoded (gzip, br, …): such bodies are never touched.
fn encoded(headers: &HeaderMap) -> bool {
    headers.get_all(CONTENT_ENCODING).iter().any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
}

/// A transformer's JSON operations and what to do with bodies they cannot apply to.
pub(crate) struct BodyRule {
    pub(crate) ops: JsonOps,
    pub(crate) max: u64,
    pub(crate) refuse: bool,
    pub(crate) stats: &'static Stats,
}

impl BodyRule {
    /// How much of a body with this head to read, or `None` to let it go by. A body that is not
    /// JSON is read only to be refused, so 0 bytes are asked for: any byte means "there is one".
    pub(crate) fn limit(&self, headers: &HeaderMap) -> Option<u64> {
        if encoded(headers) {
            self.stats.untouched(Reason::Encoded, false);
            return None;
        }
        if is_json(headers) {
            return Some(self.max);
        }
        if self.refuse {
            return Some(0);
        }
        self.stats.untouched(Reason::NotJson, false);
        None
    }

    /// Applies the operations to `body` (`None`: over the limit). `Err` says why the body is
    /// refused; everything else goes on, changed or not, and `Ok` says which (`transformed`,
    /// `untouched: too_large`, …).
    pub(crate) fn apply(
        &self,
        headers: &HeaderMap,
        body: Option<&mut Bytes>,
        scope: &Scope<'_>,
    ) -> Result<&'static str, Reason> {
        let json = is_json(headers);
        let reason = match body {
            // Nothing to transform, nothing to refuse.
            Some(b) if b.is_empty() => return Ok("empty"),
            Some(_) if !json => Reason::NotJson,
            Some(b) => match self.ops.apply(b, scope) {
                Outcome::Changed(new) => {
                    *b = Bytes::from(new);
                    self.stats.transformed.fetch_add(1, Ordering::Relaxed);
                    return Ok("transformed");
                }
                Outcome::Unchanged => {
                    self.stats.transformed.fetch_add(1, Ordering::Relaxed);
                    return Ok("unchanged");
                }
                Outcome::Invalid => Reason::InvalidJson,
            },
            None if json => Reason::TooLarge,
            None => Reason::NotJson,
        };
        self.stats.untouched(reason, self.refuse);
        if !self.refuse {
            return Ok(match reason {
                Reason::NotJson => "untouched: not_json",
                Reason::TooLarge => "untouched: too_large",
                Reason::InvalidJson => "untouched: invalid_json",
                Reason::Encoded => "untouched: encoded",
            });
        }
        Err(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn json_content_types() {
        for ct in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/problem+json",
            "application/vnd.api+JSON",
        ] {
            assert!(is_json(&headers(&[("content-type", ct)])), "{ct}");
        }
        for ct in ["text/json", "application/jsonp", "application/+jso", "text/plain", "application/x-json-stream"] {
            assert!(!is_json(&headers(&[("content-type", ct)])), "{ct}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }
}
