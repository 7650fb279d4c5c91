//! Helpers shared by the fuzz targets: running a plugin's async phases, building requests and
//! picking short strings from small alphabets (so that fuzzed routes and requests collide often
//! enough to exercise matching, not only parsing).

use arbitrary::{Result, Unstructured};
use meshgate_core::{BuildContext, Built, Consumers, PluginFactory, RequestCtx};
use std::future::Future;
use std::sync::{Arc, OnceLock};

/// Runs a plugin phase to completion on a current-thread runtime shared by every run (building
/// one per input would dominate the time of a run).
pub fn block_on<F: Future>(f: F) -> F::Output {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime"))
        .block_on(f)
}

/// A build context with `consumers`, as the gateway makes one per route.
pub fn build_context(consumers: Consumers) -> BuildContext {
    BuildContext { consumers: Arc::new(consumers), scope: Default::default() }
}

/// Builds a plugin the way the gateway does at config load; `None` when the config is refused
/// (refusing is a valid answer to a fuzzed config).
pub fn build(factory: &dyn PluginFactory, config: &serde_json::Value, cx: &BuildContext) -> Option<Built> {
    factory.build(config, cx).ok()
}

/// A request context for a request head, from a peer on loopback.
pub fn request_ctx(parts: http::request::Parts) -> RequestCtx {
    RequestCtx::new(parts, "127.0.0.1:40000".parse().expect("an address"), false)
}

/// A request head with `uri` (when it parses; else `/`) and the `headers` that are valid.
pub fn request_parts(method: http::Method, uri: &str, headers: &[(String, Vec<u8>)]) -> http::request::Parts {
    let mut parts = http::Request::new(()).into_parts().0;
    parts.method = method;
    if let Ok(uri) = uri.parse() {
        parts.uri = uri;
    }
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(name.as_bytes()), http::HeaderValue::from_bytes(value)) {
            parts.headers.append(n, v);
        }
    }
    parts
}

/// A string of up to `max` characters, each taken from `alphabet`.
pub fn pick_str(u: &mut Unstructured<'_>, alphabet: &[&str], max: usize) -> Result<String> {
    let len = u.int_in_range(0..=max)?;
    let mut s = String::new();
    for _ in 0..len {
        s.push_str(u.choose(alphabet)?);
    }
    Ok(s)
}

/// Up to `max` items made by `f`.
pub fn pick_vec<T>(
    u: &mut Unstructured<'_>,
    max: usize,
    mut f: impl FnMut(&mut Unstructured<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let len = u.int_in_range(0..=max)?;
    (0..len).map(|_| f(u)).collect()
}

/// A request head written as text, the form the seed corpora of the header targets use:
/// `METHOD URI` on the first line (optional: `GET /` when it does not parse), then one
/// `name: value` header per line. Lines that are not valid headers are left out, as a server
/// would never hand such a request to a plugin.
pub fn parse_head(text: &str) -> http::request::Parts {
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next().unwrap_or("");
    let (method, uri) = first.split_once(' ').unwrap_or(("GET", "/"));
    let method = http::Method::from_bytes(method.as_bytes()).unwrap_or(http::Method::GET);
    let headers: Vec<(String, Vec<u8>)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim_start().as_bytes().to_vec()))
        .collect();
    request_parts(method, uri.trim(), &headers)
}
