//! What a route matches on, in parsed form, and the request as the router sees it.
//!
//! The config keeps conditions as strings so errors can point at a line; the router wants them
//! parsed once (methods, header names, regexes) so that matching never parses anything.

use http::{HeaderMap, HeaderName, Method};
use meshgate_config::PathPattern;
use meshgate_config::model::Route;

/// The match conditions of one route. A request matches when every kind of condition matches:
/// any of `hosts` (or `hosts` is empty), any of `paths` (or empty), any of `methods` (or empty),
/// and every entry of `headers`.
#[derive(Clone, Debug)]
pub struct RouteSpec {
    /// Route name, used in [`Finding`](crate::Finding)s.
    pub name: String,
    /// `api.example.com` (exact, case-insensitive) or `*.example.com` (any name ending in
    /// `.example.com`, at any depth, but not `example.com` itself). Empty matches any host,
    /// including requests without one.
    pub hosts: Vec<String>,
    /// Path patterns; empty matches any path.
    pub paths: Vec<PathPattern>,
    /// Accepted methods; empty accepts any.
    pub methods: Vec<Method>,
    /// Header conditions; all must hold.
    pub headers: Vec<HeaderMatch>,
    /// Higher wins, before any other precedence rule.
    pub priority: i32,
}

/// One header condition: the request must carry header `name` with a value accepted by any of
/// `values`. When the header appears several times, any one occurrence may satisfy it. An
/// empty `values` list never matches.
#[derive(Clone, Debug)]
pub struct HeaderMatch {
    /// Header name (always lower case, as `http` normalizes it).
    pub name: HeaderName,
    /// Accepted values; any one suffices.
    pub values: Vec<ValueMatch>,
}

/// How one accepted header value is compared with the request's.
#[derive(Clone, Debug)]
pub enum ValueMatch {
    /// The whole header value, byte for byte (case-sensitive).
    Exact(String),
    /// A regex searched in the header value with `regex` semantics: unanchored, so `~droid`
    /// accepts `Android 14`; write `^...$` to require the whole value. Values that are not valid
    /// UTF-8 never match a regex.
    Regex(regex::Regex),
}

impl ValueMatch {
    /// True when this accepts the header value `v`.
    pub fn accepts(&self, v: &[u8]) -> bool {
        match self {
            ValueMatch::Exact(s) => s.as_bytes() == v,
            ValueMatch::Regex(re) => std::str::from_utf8(v).is_ok_and(|v| re.is_match(v)),
        }
    }

    /// Same condition as `other`, judged by source text; used by shadow analysis, which must
    /// only claim what is certain.
    pub(crate) fn same_as(&self, other: &ValueMatch) -> bool {
        match (self, other) {
            (ValueMatch::Exact(a), ValueMatch::Exact(b)) => a == b,
            (ValueMatch::Regex(a), ValueMatch::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl HeaderMatch {
    /// True when some occurrence of the header in `headers` is accepted by some value.
    pub fn matches(&self, headers: &HeaderMap) -> bool {
        headers.get_all(&self.name).iter().any(|v| self.values.iter().any(|m| m.accepts(v.as_bytes())))
    }
}

impl RouteSpec {
    /// Parses a config route's paths, methods and headers. The message of an error names the
    /// offending value, so it can be reported against the config field.
    pub fn from_config(route: &Route) -> Result<RouteSpec, String> {
        let paths = route.paths.iter().map(|p| PathPattern::parse(p)).collect::<Result<Vec<_>, _>>()?;
        let methods = route.methods.iter().map(|m| parse_method(m)).collect::<Result<Vec<_>, _>>()?;
        let mut headers = Vec::with_capacity(route.headers.len());
        for (name, values) in &route.headers {
            let header =
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("invalid header name {name:?}"))?;
            if values.as_slice().is_empty() {
                return Err(format!("header {name:?}: list at least one value"));
            }
            let values = values.as_slice().iter().map(|v| parse_value(v)).collect::<Result<Vec<_>, _>>()?;
            headers.push(HeaderMatch { name: header, values });
        }
        Ok(RouteSpec {
            name: route.name.clone(),
            hosts: route.hosts.clone(),
            paths,
            methods,
            headers,
            priority: route.priority,
        })
    }

    /// The method and header conditions, checked only on candidates the indexes found.
    pub(crate) fn matches_rest(&self, method: &Method, headers: &HeaderMap) -> bool {
        (self.methods.is_empty() || self.methods.contains(method)) && self.headers.iter().all(|h| h.matches(headers))
    }
}

/// Upper case only, like the config validator: `http` would accept `get` as an extension
/// method that never equals `GET`, silently making the route unreachable.
fn parse_method(m: &str) -> Result<Method, String> {
    if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!("invalid method {m:?}: use upper case, e.g. GET"));
    }
    Method::from_bytes(m.as_bytes()).map_err(|_| format!("invalid method {m:?}"))
}

fn parse_value(v: &str) -> Result<ValueMatch, String> {
    match v.strip_prefix('~') {
        Some(re) => regex::Regex::new(re)
            .map(ValueMatch::Regex)
            .map_err(|e| format!("invalid regex {v:?}: {}", meshgate_config::regex_error(&e))),
        None => Ok(ValueMatch::Exact(v.to_owned())),
    }
}

/// The parts of a request the router looks at, borrowed from wherever the proxy keeps them.
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    /// The `Host` header or `:authority`, possibly with a port (`example.com:8080`,
    /// `[::1]:80`) and in any case; `None` when the request has neither.
    pub host: Option<&'a str>,
    /// The request path. A query string, if the caller leaves one on, is ignored.
    pub path: &'a str,
    /// The request method.
    pub method: &'a Method,
    /// The request headers.
    pub headers: &'a HeaderMap,
}
