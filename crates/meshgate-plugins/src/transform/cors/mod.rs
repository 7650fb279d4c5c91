//! `cors`: Cross-Origin Resource Sharing answered by the gateway, so that browser apps served
//! from other origins may call the APIs behind it without each service implementing CORS.
//!
//! - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered here
//!   with 204 and never reaches the upstream. From a refused origin it is answered too, without
//!   any CORS header, as Kong does (Envoy forwards it instead, letting the upstream's own CORS or
//!   its authentication answer for the gateway's policy). `preflight_continue` forwards them all.
//! - Other requests from an allowed origin get `Access-Control-Allow-Origin` on their response
//!   whoever answered it, the upstream or the gateway (a 401 or 429 is then readable by the app).
//! - The gateway's policy is the only one on the route: CORS headers an upstream sets itself are
//!   replaced or removed, so a refused origin gets none.
//!
//! Priority 2000: after `ip-restriction`, before authentication, because browsers send
//! preflights without credentials.

mod origins;

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, HeaderMap, HeaderName, HeaderValue, ORIGIN, VARY,
};
use http::{Method, Response, StatusCode};
use meshgate_config::units::Duration;
use meshgate_core::metrics::{self, MetricsRegistry};
use meshgate_core::{
    BuildContext, Built, Flow, Phases, Plugin, PluginConfigError, PluginFactory, ProxyBody, RequestCtx, async_trait,
    parse_config,
};
use origins::Origins;
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Registers `cors`.
pub struct Factory;

/// Preflights answered by the gateway for allowed origins, since start.
pub static PREFLIGHTS: AtomicU64 = AtomicU64::new(0);
/// Preflights from origins not allowed, since start.
pub static REFUSED_PREFLIGHTS: AtomicU64 = AtomicU64::new(0);
/// Other requests from origins not allowed, since start.
pub static REFUSED_REQUESTS: AtomicU64 = AtomicU64::new(0);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Exact origins, `scheme://*.domain` wildcards, `~regex`es, or `["*"]`.
    origins: Vec<String>,
    /// `Access-Control-Allow-Methods`.
    #[serde(default = "default_methods")]
    methods: Vec<String>,
    /// Request headers a preflight may ask for; absent (or `["*"]`): whatever it asks for.
    #[serde(default)]
    headers: Option<Vec<String>>,
    /// Response headers scripts may read, beyond the CORS-safelisted ones.
    #[serde(default)]
    exposed_headers: Vec<String>,
    /// Whether cookies and `Authorization` may come with requests.
    #[serde(default)]
    credentials: bool,
    /// How long browsers may cache a preflight's answer.
    #[serde(default)]
    max_age: Option<Duration>,
    /// Forward preflights to the upstream instead of answering them.
    #[serde(default)]
    preflight_continue: bool,
}

fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS"].map(String::from).to_vec()
}

/// Request headers a preflight may ask for.
enum AllowHeaders {
    /// Whatever it asks for (its `Access-Control-Request-Headers` is echoed).
    Any,
    /// These names; `joined` is the header value, `None` for an empty list.
    Listed { names: Vec<HeaderName>, joined: Option<HeaderValue> },
}

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "cors"
    }
    fn priority(&self) -> i32 {
        // After ip-restriction (3000); before authentication (1000s): browsers never send
        // credentials with a preflight, so authentication would refuse every one.
        2000
    }
    fn build(&self, config: &serde_json::Value, _cx: &BuildContext) -> Result<Built, PluginConfigError> {
        let c: Config = parse_config(config)?;
        let origins = Origins::parse(&c.origins).map_err(|(i, m)| {
            PluginConfigError::new(if c.origins.is_empty() { "origins".to_owned() } else { format!("origins[{i}]") }, m)
        })?;
        if origins.any && c.credentials {
            return Err(PluginConfigError::new(
                "credentials",
                "cannot be true with origins [\"*\"]: browsers refuse credentialed responses allowed to any \
                 origin; list the origins instead",
            ));
        }
        let methods = parse_methods(&c.methods)?;
        let headers = match c.headers.as_deref() {
            None => AllowHeaders::Any,
            Some([star]) if star == "*" => AllowHeaders::Any,
            Some(list) => {
                let names = header_names("headers", list)?;
                AllowHeaders::Listed { names, joined: joined("headers", list)? }
            }
        };
        let expose = match c.exposed_headers.as_slice() {
            [star] if star == "*" && c.credentials => {
                return Err(PluginConfigError::new(
                    "exposed_headers[0]",
                    "\"*\" exposes every header only without credentials; with credentials: true browsers read \
                     it as a header named \"*\": list the headers",
                ));
            }
            [star] if star == "*" => Some(HeaderValue::from_static("*")),
            list => {
                header_names("exposed_headers", list)?;
                joined("exposed_headers", list)?
            }
        };
        let max_age = match c.max_age.map(Duration::get) {
            Some(d) if d.subsec_nanos() != 0 => {
                return Err(PluginConfigError::new("max_age", "must be whole seconds (browsers read seconds)"));
            }
            d => d.map(|d| HeaderValue::from(d.as_secs())),
        };
        Ok(Built::Plugin(Arc::new(Cors {
            origins,
            methods,
            headers,
            expose,
            credentials: c.credentials,
            max_age,
            preflight_continue: c.preflight_continue,
        })))
    }
    fn register_metrics(&self, registry: &mut MetricsRegistry) {
        registry.register_collector(metrics::collector(|enc| {
            let answered = [(Vec::new(), PREFLIGHTS.load(Ordering::Relaxed))];
            metrics::counters(
                enc,
                "meshgate_cors_preflights_answered",
                "CORS preflights from allowed origins answered by the gateway.",
                answered,
            )?;
            let refused = [("preflight", &REFUSED_PREFLIGHTS), ("actual", &REFUSED_REQUESTS)]
                .map(|(kind, n)| (vec![("request", kind.to_owned())], n.load(Ordering::Relaxed)));
            metrics::counters(
                enc,
                "meshgate_cors_origins_refused",
                "Requests whose Origin the cors plugin does not allow (answered without CORS headers).",
                refused,
            )
        }));
    }
}

/// Method names, checked and joined into one header value.
fn parse_methods(list: &[String]) -> Result<HeaderValue, PluginConfigError> {
    if list.is_empty() {
        return Err(PluginConfigError::new("methods", "list at least one method"));
    }
    for (i, m) in list.iter().enumerate() {
        let field = || format!("methods[{i}]");
        let upper = m.to_ascii_uppercase();
        let standard = ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS", "CONNECT", "TRACE"];
        if *m != upper && standard.contains(&upper.as_str()) {
            return Err(PluginConfigError::new(field(), format!("methods are case-sensitive: write {upper:?}")));
        }
        Method::from_bytes(m.as_bytes())
            .map_err(|_| PluginConfigError::new(field(), format!("invalid method {m:?}")))?;
    }
    crate::headers::header_value("methods".to_owned(), &list.join(", "))
}

/// Header names, checked; `*` only alone.
fn header_names(field: &str, list: &[String]) -> Result<Vec<HeaderName>, PluginConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, n)| {
            if n == "*" {
                return Err(PluginConfigError::new(format!("{field}[{i}]"), "\"*\" means any header: list it alone"));
            }
            crate::headers::header_name(format!("{field}[{i}]"), n)
        })
        .collect()
}

/// `a, b, c` as one header value, as written; `None` for an empty list.
fn joined(field: &str, list: &[String]) -> Result<Option<HeaderValue>, PluginConfigError> {
    if list.is_empty() {
        return Ok(None);
    }
    crate::headers::header_value(field.to_owned(), &list.join(", ")).map(Some)
}

struct Cors {
    origins: Origins,
    methods: HeaderValue,
    headers: AllowHeaders,
    expose: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
    preflight_continue: bool,
}

/// What `on_request` decided, for `on_response` (the request's headers are gone by then).
#[derive(Clone)]
enum Seen {
    /// An actual request from this allowed origin (not set for `*`, which needs no echo).
    Allowed(HeaderValue),
    /// A preflight, answered whole in `on_request` or forwarded (`preflight_continue`): its
    /// response is left as it is.
    Preflight,
}

const STAR: HeaderValue = HeaderValue::from_static("*");
const TRUE: HeaderValue = HeaderValue::from_static("true");
const ORIGIN_VARY: HeaderValue = HeaderValue::from_static("Origin");

impl Cors {
    /// The 204 answer to a preflight; CORS headers only when the origin is allowed.
    fn preflight(&self, origin: &HeaderValue, allowed: bool, requested: Option<&HeaderValue>) -> Response<ProxyBody> {
        let mut resp = Response::new(ProxyBody::Empty);
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        if !self.origins.any {
            h.insert(VARY, ORIGIN_VARY);
        }
        if !allowed {
            return resp;
        }
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, if self.origins.any { STAR } else { origin.clone() });
        if self.credentials {
            h.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
        }
        h.insert(ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
        if let Some(v) = self.allow_headers(requested) {
            h.insert(ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        if let Some(v) = &self.max_age {
            h.insert(ACCESS_CONTROL_MAX_AGE, v.clone());
        }
        resp
    }

    /// `Access-Control-Allow-Headers` for a preflight asking for `requested`: none when it asks
    /// for a header not allowed, so the browser refuses the actual request.
    fn allow_headers(&self, requested: Option<&HeaderValue>) -> Option<HeaderValue> {
        match &self.headers {
            AllowHeaders::Any => requested.filter(|v| !v.is_empty()).cloned(),
            AllowHeaders::Listed { names, joined } => {
                if let Some(req) = requested {
                    let all_listed = req.to_str().is_ok_and(|s| {
                        s.split(',')
                            .map(str::trim)
                            .filter(|t| !t.is_empty())
                            .all(|t| names.iter().any(|n| n.as_str().eq_ignore_ascii_case(t)))
                    });
                    if !all_listed {
                        return None;
                    }
                }
                joined.clone()
            }
        }
    }
}

#[async_trait]
impl Plugin for Cors {
    fn phases(&self) -> Phases {
        Phases::ON_REQUEST | Phases::ON_RESPONSE
    }

    async fn on_request(&self, cx: &mut RequestCtx) -> Flow {
        let h = &cx.request.headers;
        let Some(origin) = h.get(ORIGIN) else { return Flow::Continue };
        let allowed = self.origins.allows(origin);
        if cx.request.method == Method::OPTIONS && h.contains_key(ACCESS_CONTROL_REQUEST_METHOD) {
            if !allowed {
                REFUSED_PREFLIGHTS.fetch_add(1, Ordering::Relaxed);
            }
            cx.vars.insert(Seen::Preflight);
            if self.preflight_continue {
                return Flow::Continue;
            }
            if allowed {
                PREFLIGHTS.fetch_add(1, Ordering::Relaxed);
            }
            let resp = self.preflight(origin, allowed, h.get(ACCESS_CONTROL_REQUEST_HEADERS));
            return Flow::Respond(resp);
        }
        if !allowed {
            REFUSED_REQUESTS.fetch_add(1, Ordering::Relaxed);
        } else if !self.origins.any {
            let origin = origin.clone();
            cx.vars.insert(Seen::Allowed(origin));
        }
        Flow::Continue
    }

    async fn on_response(&self, cx: &mut RequestCtx, response: &mut http::response::Parts) {
        let h = &mut response.headers;
        let origin = match cx.vars.get::<Seen>() {
            Some(Seen::Preflight) => return,
            Some(Seen::Allowed(origin)) => Some(origin.clone()),
            None if self.origins.any => Some(STAR),
            // No Origin, or one not allowed: no CORS headers, whatever the upstream said.
            None => None,
        };
        if !self.origins.any {
            // Also on answers without CORS headers: a cache must not hand them to an allowed
            // origin (nor an allowed origin's answer to another).
            vary_origin(h);
        }
        let Some(origin) = origin else {
            h.remove(ACCESS_CONTROL_ALLOW_ORIGIN);
            h.remove(ACCESS_CONTROL_ALLOW_CREDENTIALS);
            h.remove(ACCESS_CONTROL_EXPOSE_HEADERS);
            return;
        };
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        set_or_remove(h, ACCESS_CONTROL_ALLOW_CREDENTIALS, self.credentials.then_some(TRUE));
        set_or_remove(h, ACCESS_CONTROL_EXPOSE_HEADERS, self.expose.clone());
    }
}

fn set_or_remove(h: &mut HeaderMap, name: HeaderName, value: Option<HeaderValue>) {
    match value {
        Some(v) => h.insert(name, v),
        None => h.remove(name),
    };
}

/// Adds `Origin` to `Vary` unless it is there already (or `Vary: *`).
fn vary_origin(h: &mut HeaderMap) {
    let listed = h.get_all(VARY).iter().any(|v| {
        v.to_str().is_ok_and(|s| s.split(',').map(str::trim).any(|t| t == "*" || t.eq_ignore_ascii_case("origin")))
    });
    if !listed {
        h.append(VARY, ORIGIN_VARY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{plugin, request};
    use serde_json::json;

    /// One exchange: `on_request`, then (unless the plugin answered) an upstream answer with
    /// `upstream` headers, then `on_response`. Returns the status and the headers sent.
    async fn exchange(
        p: &Arc<dyn Plugin>,
        method: Method,
        headers: &[(&str, &str)],
        upstream: &[(&str, &str)],
    ) -> (u16, HeaderMap) {
        let mut cx = request("/", headers);
        cx.request.method = method;
        let resp = match p.on_request(&mut cx).await {
            Flow::Respond(r) => r,
            Flow::Continue => {
                let mut r = Response::builder();
                for (k, v) in upstream {
                    r = r.header(*k, *v);
                }
                // The proxy moves the request's headers to the upstream request.
                cx.request.headers.clear();
                r.body(ProxyBody::Empty).unwrap()
            }
        };
        let (mut parts, _) = resp.into_parts();
        p.on_response(&mut cx, &mut parts).await;
        (parts.status.as_u16(), parts.headers)
    }

    fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
        h.get(name).map(|v| v.to_str().unwrap())
    }

    fn vary(h: &HeaderMap) -> Vec<&str> {
        h.get_all(VARY).iter().map(|v| v.to_str().unwrap()).collect()
    }

    fn listed() -> Arc<dyn Plugin> {
        plugin(
            &Factory,
            json!({
                "origins": ["https://app.example.com", "https://*.example.org", "~http://localhost:\\d+"],
                "methods": ["GET", "POST", "PUT"],
                "headers": ["Content-Type", "X-Api-Version"],
                "exposed_headers": ["X-Request-Id", "RateLimit-Remaining"],
                "credentials": true,
                "max_age": "10m"
            }),
        )
        .unwrap()
    }

    const PREFLIGHT: [(&str, &str); 2] =
        [("origin", "https://app.example.com"), ("access-control-request-method", "PUT")];

    #[tokio::test]
    async fn preflight_from_allowed_origin_is_answered_here() {
        let p = listed();
        for origin in ["https://app.example.com", "https://a.b.example.org", "http://localhost:5173"] {
            let headers = [
                ("origin", origin),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "content-type,x-api-version"),
            ];
            let (status, h) = exchange(&p, Method::OPTIONS, &headers, &[]).await;
            assert_eq!(status, 204, "{origin}");
            assert_eq!(get(&h, "access-control-allow-origin"), Some(origin));
            assert_eq!(vary(&h), ["Origin"]);
            assert_eq!(get(&h, "access-control-allow-credentials"), Some("true"));
            assert_eq!(get(&h, "access-control-allow-methods"), Some("GET, POST, PUT"));
            assert_eq!(get(&h, "access-control-allow-headers"), Some("Content-Type, X-Api-Version"));
            assert_eq!(get(&h, "access-control-max-age"), Some("600"));
            // Exposed headers matter to actual responses only.
            assert_eq!(get(&h, "access-control-expose-headers"), None);
        }
    }

    #[tokio::test]
    async fn preflight_asking_for_an_unlisted_header_gets_no_allow_headers() {
        let p = listed();
        let ask = |headers: &'static str| {
            let p = p.clone();
            async move {
                let mut h = PREFLIGHT.to_vec();
                h.push(("access-control-request-headers", headers));
                exchange(&p, Method::OPTIONS, &h, &[]).await.1
            }
        };
        let h = ask("content-type,x-secret").await;
        assert_eq!(get(&h, "access-control-allow-headers"), None);
        assert_eq!(get(&h, "access-control-allow-origin"), Some("https://app.example.com"), "the rest is answered");
        let h = ask("X-API-VERSION").await;
        assert_eq!(get(&h, "access-control-allow-headers"), Some("Content-Type, X-Api-Version"));
        // Asking for none: the list, which is harmless.
        let h = exchange(&p, Method::OPTIONS, &PREFLIGHT, &[]).await.1;
        assert_eq!(get(&h, "access-control-allow-headers"), Some("Content-Type, X-Api-Version"));
    }

    #[tokio::test]
    async fn any_header_echoes_what_the_preflight_asks_for() {
        for headers in [json!(null), json!(["*"])] {
            let mut config = json!({"origins": ["https://app.example.com"]});
            if !headers.is_null() {
                config["headers"] = headers;
            }
            let p = plugin(&Factory, config).unwrap();
            let mut h = PREFLIGHT.to_vec();
            h.push(("access-control-request-headers", "x-anything,content-type"));
            let (_, h) = exchange(&p, Method::OPTIONS, &h, &[]).await;
            assert_eq!(get(&h, "access-control-allow-headers"), Some("x-anything,content-type"));
            assert_eq!(get(&h, "access-control-allow-methods"), Some("GET, HEAD, PUT, PATCH, POST, DELETE, OPTIONS"));
            assert_eq!(get(&h, "access-control-allow-credentials"), None);
            assert_eq!(get(&h, "access-control-max-age"), None);
            let (_, h) = exchange(&p, Method::OPTIONS, &PREFLIGHT, &[]).await;
            assert_eq!(get(&h, "access-control-allow-headers"), None);
        }
    }

    #[tokio::test]
    async fn refused_preflight_is_answered_without_cors_headers() {
        let p = listed();
        for origin in ["https://evil.example.net", "https://example.org", "null"] {
            let headers = [("origin", origin), ("access-control-request-method", "GET")];
            let (status, h) = exchange(&p, Method::OPTIONS, &headers, &[]).await;
            assert_eq!(status, 204);
            assert!(h.keys().all(|k| !k.as_str().starts_with("access-control-")), "{origin}: {h:?}");
            assert_eq!(vary(&h), ["Origin"]);
        }
    }

    #[tokio::test]
    async fn actual_request_from_allowed_origin_gets_the_gateways_headers() {
        let p = listed();
        let upstream = [
            ("vary", "Accept-Encoding"),
            ("access-control-allow-origin", "*"), // the upstream's own policy is replaced
            ("access-control-expose-headers", "X-Internal"),
        ];
        let (status, h) = exchange(&p, Method::POST, &[("origin", "https://x.example.org")], &upstream).await;
        assert_eq!(status, 200);
        assert_eq!(get(&h, "access-control-allow-origin"), Some("https://x.example.org"));
        assert_eq!(h.get_all("access-control-allow-origin").iter().count(), 1);
        assert_eq!(get(&h, "access-control-allow-credentials"), Some("true"));
        assert_eq!(get(&h, "access-control-expose-headers"), Some("X-Request-Id, RateLimit-Remaining"));
        assert_eq!(vary(&h), ["Accept-Encoding", "Origin"]);
        assert_eq!(get(&h, "access-control-allow-methods"), None, "preflight-only headers");
        // OPTIONS without Access-Control-Request-Method is an ordinary request, forwarded.
        let (_, h) = exchange(&p, Method::OPTIONS, &[("origin", "https://app.example.com")], &[]).await;
        assert_eq!(get(&h, "access-control-allow-origin"), Some("https://app.example.com"));
        // Vary already naming Origin is left alone.
        let (_, h) = exchange(&p, Method::GET, &PREFLIGHT[..1], &[("vary", "accept, origin")]).await;
        assert_eq!(vary(&h), ["accept, origin"]);
    }

    #[tokio::test]
    async fn refused_or_absent_origin_gets_no_cors_headers_but_vary() {
        let p = listed();
        let upstream = [("access-control-allow-origin", "*"), ("access-control-allow-credentials", "true")];
        for headers in [&[("origin", "https://evil.example.net")][..], &[]] {
            let (status, h) = exchange(&p, Method::GET, headers, &upstream).await;
            assert_eq!(status, 200);
            assert!(h.keys().all(|k| !k.as_str().starts_with("access-control-")), "{headers:?}: {h:?}");
            assert_eq!(vary(&h), ["Origin"]);
        }
    }

    #[tokio::test]
    async fn star_answers_any_origin_with_star_and_no_vary() {
        let p = plugin(&Factory, json!({"origins": ["*"], "exposed_headers": ["*"], "max_age": 60})).unwrap();
        let headers = [("origin", "https://anyone.test"), ("access-control-request-method", "DELETE")];
        let (status, h) = exchange(&p, Method::OPTIONS, &headers, &[]).await;
        assert_eq!(status, 204);
        assert_eq!(get(&h, "access-control-allow-origin"), Some("*"));
        assert_eq!(get(&h, "access-control-max-age"), Some("60"));
        assert!(vary(&h).is_empty());
        for headers in [&[("origin", "https://anyone.test")][..], &[]] {
            let (_, h) = exchange(&p, Method::GET, headers, &[("access-control-allow-credentials", "true")]).await;
            assert_eq!(get(&h, "access-control-allow-origin"), Some("*"));
            assert_eq!(get(&h, "access-control-expose-headers"), Some("*"));
            assert_eq!(get(&h, "access-control-allow-credentials"), None);
            assert!(vary(&h).is_empty());
        }
    }

    #[tokio::test]
    async fn preflight_continue_leaves_preflights_to_the_upstream() {
        let p = plugin(&Factory, json!({"origins": ["https://app.example.com"], "preflight_continue": true})).unwrap();
        let upstream =
            [("access-control-allow-origin", "https://app.example.com"), ("access-control-allow-methods", "GET")];
        let (status, h) = exchange(&p, Method::OPTIONS, &PREFLIGHT, &upstream).await;
        assert_eq!(status, 200, "forwarded");
        assert_eq!(get(&h, "access-control-allow-methods"), Some("GET"), "the upstream's answer stands");
        assert!(vary(&h).is_empty());
        // Actual requests are still the gateway's.
        let (_, h) = exchange(&p, Method::GET, &PREFLIGHT[..1], &[]).await;
        assert_eq!(get(&h, "access-control-allow-origin"), Some("https://app.example.com"));
    }

    #[test]
    fn config_errors() {
        let err = |v| plugin(&Factory, v).err().unwrap().to_string();
        assert!(err(json!({})).starts_with("missing field `origins`"), "{}", err(json!({})));
        assert_eq!(err(json!({"origins": []})), "origins: list at least one origin, or \"*\" for any");
        assert!(
            err(json!({"origins": ["https://a.test", "https://b.test/"]}))
                .starts_with("origins[1]: origin \"https://b.test/\" has a path")
        );
        assert!(
            err(json!({"origins": ["*"], "credentials": true}))
                .starts_with("credentials: cannot be true with origins [\"*\"]")
        );
        assert!(
            err(json!({"origins": ["https://a.test"], "credentials": true, "exposed_headers": ["*"]}))
                .starts_with("exposed_headers[0]: \"*\" exposes every header only without credentials")
        );
        assert_eq!(err(json!({"origins": ["*"], "methods": []})), "methods: list at least one method");
        assert_eq!(
            err(json!({"origins": ["*"], "methods": ["GET", "post"]})),
            "methods[1]: methods are case-sensitive: write \"POST\""
        );
        assert_eq!(err(json!({"origins": ["*"], "methods": ["GE T"]})), "methods[0]: invalid method \"GE T\"");
        assert_eq!(
            err(json!({"origins": ["*"], "headers": ["X-A", "bad header"]})),
            "headers[1]: invalid header name \"bad header\""
        );
        assert_eq!(
            err(json!({"origins": ["*"], "headers": ["X-A", "*"]})),
            "headers[1]: \"*\" means any header: list it alone"
        );
        assert_eq!(
            err(json!({"origins": ["*"], "max_age": "1500ms"})),
            "max_age: must be whole seconds (browsers read seconds)"
        );
        assert!(err(json!({"origins": ["*"], "max_age": "soon"})).starts_with("max_age: "));
        assert!(err(json!({"origins": ["*"], "origin": ["*"]})).contains("unknown field `origin`"));
    }
}
