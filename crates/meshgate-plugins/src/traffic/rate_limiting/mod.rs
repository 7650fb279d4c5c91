//! `rate-limiting`: at most N requests per second, minute, hour and/or day, counted per consumer,
//! credential, client IP, route, service or header value, with fixed windows aligned to the
//! clock (so every node agrees where a window starts).
//!
//! Two stores: `local` counts in this process (sharded map, no global lock); `redis` counts in a
//! Redis shared by every gateway node, with one atomic script per request so the limit holds
//! exactly across nodes. A request is admitted only when every window has room, and only admitted
//! requests are counted. When Redis cannot be reached in `redis.timeout`, `on_store_error` says
//! whether to admit or refuse (503); either way it is counted and logged.

mod local;
mod redis;

use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use meshgate_config::units::Duration;
use meshgate_core::metrics::{self, MetricsRegistry};
use meshgate_core::{
    BuildContext, Built, ErrorKind, Flow, Phases, Plugin, PluginConfigError, PluginFactory, RequestCtx, Secret,
    async_trait, json_error, parse_config,
};
use serde::Deserialize;
use smallvec::SmallVec;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Registers `rate-limiting`.
pub struct Factory;

/// Requests refused with 429 since start (read by the metrics endpoint).
pub static REJECTED: AtomicU64 = AtomicU64::new(0);
/// Times the shared store could not be asked (Redis down or slow), since start.
pub static STORE_ERRORS: AtomicU64 = AtomicU64::new(0);

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Config {
    second: Option<u64>,
    minute: Option<u64>,
    hour: Option<u64>,
    day: Option<u64>,
    /// Whose requests are counted together.
    limit_by: LimitBy,
    /// For `limit_by: header`.
    header_name: Option<String>,
    /// Where counts are kept.
    policy: Policy,
    /// For `policy: redis`.
    redis: Option<RedisConfig>,
    /// What to do when the store cannot be asked.
    on_store_error: OnError,
    /// Do not send `RateLimit-*` headers to clients.
    hide_client_headers: bool,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum LimitBy {
    /// The authenticated consumer; the client IP for requests without one.
    #[default]
    Consumer,
    /// The credential used; the client IP for requests without one.
    Credential,
    Ip,
    Route,
    Service,
    /// The value of `header_name`; the client IP when the header is missing.
    Header,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum Policy {
    #[default]
    Local,
    Redis,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum OnError {
    /// Admit the request (availability over exactness).
    #[default]
    Allow,
    /// Refuse with 503.
    Refuse,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedisConfig {
    /// `redis://[:password@]host:port[/db]`; may be a secret reference.
    url: Secret,
    /// How long a request may wait for Redis.
    #[serde(default = "default_redis_timeout")]
    timeout: Duration,
    /// Prefix of the keys meshgate writes.
    #[serde(default = "default_prefix")]
    prefix: String,
}

fn default_redis_timeout() -> Duration {
    Duration::from_millis(100)
}
fn default_prefix() -> String {
    "meshgate:rl".to_owned()
}

/// One limit: at most `limit` requests per `seconds`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    pub(crate) name: &'static str,
    pub(crate) seconds: u64,
    pub(crate) limit: u64,
}

impl Window {
    /// Which window `now` (seconds since the epoch) falls in.
    pub(crate) fn index(&self, now: u64) -> u64 {
        now / self.seconds
    }
    /// Seconds until the window containing `now` ends.
    fn reset(&self, now: u64) -> u64 {
        self.seconds - now % self.seconds
    }
}

/// What the store said: admitted or not, and each window's count after the request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) admitted: bool,
    /// One count per window (four at most: no allocation).
    pub(crate) counts: SmallVec<[u64; 4]>,
}

/// Where counts live.
#[async_trait]
pub(crate) trait Store: Send + Sync {
    /// Counts one request for `key` when every window has room, atomically.
    async fn hit(&self, key: &str, windows: &[Window], now: u64) -> Result<Verdict, String>;
}

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "rate-limiting"
    }
    fn priority(&self) -> i32 {
        // After authentication and ACL (per-consumer limits need the consumer).
        910
    }
    fn build(&self, config: &serde_json::Value, cx: &BuildContext) -> Result<Built, PluginConfigError> {
        let c: Config = parse_config(config)?;
        let windows: Vec<Window> = [("second", 1, c.second), ("minute", 60, c.minute), ("hour", 3600, c.hour)]
            .into_iter()
            .chain([("day", 86_400, c.day)])
            .filter_map(|(name, seconds, limit)| limit.map(|limit| Window { name, seconds, limit }))
            .collect();
        if windows.is_empty() {
            return Err(PluginConfigError::new("", "set at least one of second, minute, hour, day"));
        }
        if let Some(w) = windows.iter().find(|w| w.limit == 0) {
            return Err(PluginConfigError::new(w.name, "a limit of 0 refuses everything; use a positive number"));
        }
        let header = match (c.limit_by, &c.header_name) {
            (LimitBy::Header, None) => {
                return Err(PluginConfigError::new("header_name", "limit_by: header needs header_name"));
            }
            (_, Some(h)) => Some(
                HeaderName::try_from(h.as_str())
                    .map_err(|_| PluginConfigError::new("header_name", "not a valid header name"))?,
            ),
            (_, None) => None,
        };
        let store: Arc<dyn Store> = match (c.policy, c.redis) {
            (Policy::Local, _) => Arc::new(local::LocalStore::default()),
            (Policy::Redis, None) => return Err(PluginConfigError::new("redis", "policy: redis needs redis.url")),
            (Policy::Redis, Some(r)) => {
                let url = r.url.resolve(&cx.consumers.base_dir).map_err(|m| PluginConfigError::new("redis.url", m))?;
                Arc::new(
                    redis::RedisStore::new(&url, r.timeout.get(), r.prefix)
                        .map_err(|m| PluginConfigError::new("redis.url", m))?,
                )
            }
        };
        Ok(Built::Plugin(Arc::new(RateLimiting {
            limits: windows.iter().map(|w| HeaderValue::from(w.limit)).collect(),
            windows,
            limit_by: c.limit_by,
            header,
            scope: cx.scope.to_string(),
            store,
            on_error: c.on_store_error,
            hide_headers: c.hide_client_headers,
        })))
    }
    fn register_metrics(&self, registry: &mut MetricsRegistry) {
        registry.register_collector(metrics::collector(|enc| {
            let n = |c: &AtomicU64| [(Vec::new(), c.load(Ordering::Relaxed))];
            metrics::counters(enc, "meshgate_rate_limit_rejected", "Requests refused with 429.", n(&REJECTED))?;
            metrics::counters(
                enc,
                "meshgate_rate_limit_store_errors",
                "Times the rate-limit store (Redis) could not be asked in time.",
                n(&STORE_ERRORS),
            )
        }));
    }
}

struct RateLimiting {
    windows: Vec<Window>,
    /// Each window's limit as a `RateLimit-Limit` value, made once: it never changes.
    limits: Vec<HeaderValue>,
    limit_by: LimitBy,
    header: Option<HeaderName>,
    /// Where the plugin is attached: counts are per attachment (`route:orders`, `global`).
    scope: String,
    store: Arc<dyn Store>,
    on_error: OnError,
    hide_headers: bool,
}

/// The `RateLimit-*` values for a request.
struct Headers {
    limit: HeaderValue,
    remaining: HeaderValue,
    reset: HeaderValue,
}

static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

impl RateLimiting {
    /// Who this request is counted as: `scope|kind:value`. Built in one buffer, without the
    /// formatting machinery: every counted request makes one.
    fn key(&self, cx: &RequestCtx) -> String {
        let mut key = String::with_capacity(self.scope.len() + 64);
        key.push_str(&self.scope);
        key.push('|');
        let (kind, value): (&str, std::borrow::Cow<'_, str>) = match self.limit_by {
            LimitBy::Consumer => match &cx.auth {
                Some(a) => ("consumer:", (&*a.consumer.username).into()),
                None => return push_ip(key, cx.client_addr.ip()),
            },
            LimitBy::Credential => match cx.auth.as_ref().and_then(|a| a.credential.as_ref()) {
                Some(c) => ("credential:", String::from_utf8_lossy(c.as_bytes())),
                None => return push_ip(key, cx.client_addr.ip()),
            },
            LimitBy::Ip => return push_ip(key, cx.client_addr.ip()),
            LimitBy::Route => ("route:", cx.route.as_ref().map_or("", |r| &r.name).into()),
            LimitBy::Service => ("service:", cx.route.as_ref().map_or("", |r| &r.service).into()),
            LimitBy::Header => match self.header.as_ref().and_then(|h| cx.request.headers.get(h)) {
                Some(v) => ("header:", String::from_utf8_lossy(v.as_bytes())),
                None => return push_ip(key, cx.client_addr.ip()),
            },
        };
        key.push_str(kind);
        key.push_str(&value);
        key
    }

    /// The window closest to its limit decides what the client is told.
    fn headers(&self, counts: &[u64], now: u64) -> (Headers, &Window) {
        let (i, w) = self
            .windows
            .iter()
            .enumerate()
            .min_by_key(|(i, w)| w.limit.saturating_sub(counts[*i]))
            .expect("at least one window");
        let remaining = w.limit.saturating_sub(counts[i]);
        let headers = Headers {
            limit: self.limits[i].clone(),
            remaining: HeaderValue::from(remaining),
            reset: HeaderValue::from(w.reset(now)),
        };
        (headers, w)
    }
}

/// `key` with `ip:{address}` appended.
fn push_ip(mut key: String, ip: std::net::IpAddr) -> String {
    key.push_str("ip:");
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    key.push('.');
                }
                key.push_str(itoa::Buffer::new().format(octet));
            }
        }
        std::net::IpAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(key, "{v6}");
        }
    }
    key
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[async_trait]
impl Plugin for RateLimiting {
    fn phases(&self) -> Phases {
        // The `RateLimit-*` headers of an admitted request go in `cx.response_headers`: no
        // `on_response` phase.
        Phases::ON_REQUEST
    }

    async fn on_request(&self, cx: &mut RequestCtx) -> Flow {
        let now = now_secs();
        let key = self.key(cx);
        let verdict = match self.store.hit(&key, &self.windows, now).await {
            Ok(v) => v,
            Err(e) => {
                STORE_ERRORS.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "rate-limiting: store unavailable");
                return match self.on_error {
                    OnError::Allow => Flow::Continue,
                    OnError::Refuse => Flow::Respond(ErrorKind::Unavailable.response("rate limit store unavailable")),
                };
            }
        };
        let (headers, window) = self.headers(&verdict.counts, now);
        // Only a refusal needs its own copy of the reset time (for `Retry-After`).
        let retry_after = (!verdict.admitted).then(|| headers.reset.clone());
        if !self.hide_headers {
            // Set by the proxy on whatever answers: the upstream's response, or the 429 below.
            let Headers { limit, remaining, reset } = headers;
            cx.response_headers.reserve(3);
            cx.response_headers.push((RATELIMIT_LIMIT.clone(), limit));
            cx.response_headers.push((RATELIMIT_REMAINING.clone(), remaining));
            cx.response_headers.push((RATELIMIT_RESET.clone(), reset));
        }
        let Some(retry_after) = retry_after else { return Flow::Continue };
        REJECTED.fetch_add(1, Ordering::Relaxed);
        let msg = format!("rate limit exceeded: {} requests per {}", window.limit, window.name);
        let mut resp: Response<_> = json_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", &msg);
        resp.headers_mut().insert(RETRY_AFTER, retry_after);
        Flow::Respond(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{plugin, request};
    use serde_json::json;

    async fn status(p: &Arc<dyn Plugin>, headers: &[(&str, &str)]) -> (u16, Option<String>) {
        let mut cx = request("/", headers);
        match p.on_request(&mut cx).await {
            Flow::Continue => {
                let remaining = cx.response_headers.iter().find(|(n, _)| n == "ratelimit-remaining");
                (200, remaining.map(|(_, v)| v.to_str().unwrap().to_owned()))
            }
            Flow::Respond(r) => {
                (r.status().as_u16(), r.headers().get("retry-after").map(|v| v.to_str().unwrap().into()))
            }
        }
    }

    #[tokio::test]
    async fn local_windows_and_keys() {
        // A day limit never resets during the test, so counts are exact whatever the clock does.
        let p = plugin(&Factory, json!({"day": 3, "limit_by": "header", "header_name": "x-tenant"})).unwrap();
        let a = [("x-tenant", "a")];
        assert_eq!(status(&p, &a).await, (200, Some("2".into())));
        assert_eq!(status(&p, &a).await, (200, Some("1".into())));
        assert_eq!(status(&p, &a).await, (200, Some("0".into())));
        let (code, retry) = status(&p, &a).await;
        assert_eq!(code, 429);
        assert!(retry.unwrap().parse::<u64>().unwrap() <= 86_400);
        // Another tenant has its own count; no header falls back to the client IP.
        assert_eq!(status(&p, &[("x-tenant", "b")]).await.0, 200);
        assert_eq!(status(&p, &[]).await.0, 200);
    }

    #[test]
    fn keys_keep_their_format() {
        // Keys name counters in Redis, shared by every gateway node: their text must not change.
        let limiter = |limit_by| RateLimiting {
            windows: vec![Window { name: "second", seconds: 1, limit: 1 }],
            limits: vec![HeaderValue::from(1u64)],
            limit_by,
            header: Some(HeaderName::from_static("x-tenant")),
            scope: "route:orders".into(),
            store: Arc::new(local::LocalStore::default()),
            on_error: OnError::Allow,
            hide_headers: false,
        };
        let mut cx = request("/", &[("x-tenant", "acme")]);
        cx.client_addr = "10.0.255.7:4000".parse().unwrap();
        cx.route = Some(meshgate_core::RouteInfo { name: "orders".into(), service: "shop".into() });
        assert_eq!(limiter(LimitBy::Ip).key(&cx), "route:orders|ip:10.0.255.7");
        assert_eq!(limiter(LimitBy::Header).key(&cx), "route:orders|header:acme");
        assert_eq!(limiter(LimitBy::Route).key(&cx), "route:orders|route:orders");
        assert_eq!(limiter(LimitBy::Service).key(&cx), "route:orders|service:shop");
        assert_eq!(limiter(LimitBy::Consumer).key(&cx), "route:orders|ip:10.0.255.7", "no consumer: the IP");
        cx.client_addr = "[2001:db8::1]:4000".parse().unwrap();
        assert_eq!(limiter(LimitBy::Credential).key(&cx), "route:orders|ip:2001:db8::1");
    }

    #[test]
    fn config_errors() {
        let err = |v| plugin(&Factory, v).err().unwrap().to_string();
        assert_eq!(err(json!({})), "set at least one of second, minute, hour, day");
        assert_eq!(err(json!({"minute": 0})), "minute: a limit of 0 refuses everything; use a positive number");
        assert_eq!(err(json!({"second": 1, "limit_by": "header"})), "header_name: limit_by: header needs header_name");
        assert_eq!(err(json!({"second": 1, "policy": "redis"})), "redis: policy: redis needs redis.url");
        assert!(err(json!({"second": 1, "limit_by": "planet"})).starts_with("limit_by: unknown variant `planet`"));
    }
}
