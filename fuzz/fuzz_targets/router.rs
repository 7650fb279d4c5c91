//! The router: routes built from fuzzed host, path, method and header conditions
//! (`RouteSpec::from_config` → `Router::build`, as the gateway compiles a config), fuzzed requests
//! matched with `Router::find`, and each answer compared with a linear matcher written from the
//! precedence rules in meshgate-router's crate documentation. Route analysis must not panic.
#![no_main]

use arbitrary::{Arbitrary, Result, Unstructured};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use meshgate_config::PathPattern;
use meshgate_config::model::Route;
use meshgate_fuzz::{pick_str, pick_vec};
use meshgate_router::{HeaderMatch, RequestView, RouteSpec, Router, ValueMatch};
use regex::Regex;
use std::cmp::Reverse;

const HOST: &[&str] = &["a", "b", "api", "example", "com", ".", ".", "*.", "*", "A", ":", "80", "[", "]", "::1", "-"];
const PATH: &[&str] =
    &["/", "/", "a", "b", "api", "x", "?", "=", "~", "^", "$", ".*", "(", ")", "[0-9]+", "|", "\\", "é"];
const METHOD: &[&str] = &["GET", "POST", "PUT", "DELETE", "get", "PATCH", "PURGE", ""];
const HEADER: &[&str] = &["client", "Client", "x-v", "x-V", "bad name", "te"];
const VALUE: &[&str] = &["a", "b", "1", "~", "^", "$", ".", "*", "(", "droid", " "];

struct In {
    routes: Vec<Route>,
    requests: Vec<Req>,
}

struct Req {
    host: Option<String>,
    path: String,
    method: Method,
    headers: Vec<(String, String)>,
}

impl<'a> Arbitrary<'a> for In {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let mut n = 0;
        let routes = pick_vec(u, 10, |u| {
            n += 1;
            route(u, n)
        })?;
        let requests = pick_vec(u, 8, |u| {
            Ok(Req {
                host: if u.arbitrary()? { Some(pick_str(u, HOST, 8)?) } else { None },
                path: pick_str(u, PATH, 8)?,
                method: Method::from_bytes(u.choose(METHOD)?.as_bytes()).unwrap_or(Method::GET),
                headers: pick_vec(u, 3, |u| Ok((u.choose(HEADER)?.to_string(), pick_str(u, VALUE, 4)?)))?,
            })
        })?;
        Ok(In { routes, requests })
    }
}

fn route(u: &mut Unstructured<'_>, n: usize) -> Result<Route> {
    let headers = pick_vec(u, 2, |u| Ok((u.choose(HEADER)?.to_string(), pick_vec(u, 2, |u| pick_str(u, VALUE, 4))?)))?;
    let route = serde_json::json!({
        "name": format!("r{n}"),
        "service": "s",
        "hosts": pick_vec(u, 2, |u| pick_str(u, HOST, 6))?,
        "paths": pick_vec(u, 2, |u| pick_str(u, PATH, 6))?,
        "methods": pick_vec(u, 2, |u| Ok(u.choose(METHOD)?.to_string()))?,
        "headers": headers.into_iter().map(|(k, v)| (k, serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
        "priority": u.int_in_range(-1..=1)?,
    });
    Ok(serde_json::from_value(route).expect("a route"))
}

impl std::fmt::Debug for In {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for r in &self.routes {
            writeln!(
                f,
                "route {}: hosts {:?} paths {:?} methods {:?} headers {:?} priority {}",
                r.name, r.hosts, r.paths, r.methods, r.headers, r.priority
            )?;
        }
        for q in &self.requests {
            writeln!(f, "request {} host {:?} path {:?} headers {:?}", q.method, q.host, q.path, q.headers)?;
        }
        Ok(())
    }
}

fuzz_target!(|input: In| {
    // The gateway refuses a config with a bad route (a host the router cannot parse, a regex
    // that breaks when anchored); here such routes are left out, so the rest can be matched.
    let specs: Vec<RouteSpec> = input
        .routes
        .iter()
        .filter_map(|r| RouteSpec::from_config(r).ok())
        .filter(|s| Router::build(vec![(s.clone(), ())]).is_ok())
        .collect();
    // Together they may still be refused (a regex set over its size limit).
    let Ok(router) = Router::build(specs.iter().cloned().enumerate().map(|(i, s)| (s, i)).collect()) else {
        return;
    };
    let _ = router.analyze();
    let linear = Linear::new(&specs);
    for q in &input.requests {
        let mut headers = HeaderMap::new();
        for (name, value) in &q.headers {
            if let (Ok(n), Ok(v)) = (HeaderName::try_from(name.as_str()), HeaderValue::from_str(value)) {
                headers.append(n, v);
            }
        }
        let view = RequestView { host: q.host.as_deref(), path: &q.path, method: &q.method, headers: &headers };
        let got = router.find(&view).map(|m| (m.route_index, m.matched_path_len));
        let want = linear.find(&view);
        match (got, &want) {
            (None, None) => {}
            (Some((route, len)), Some((want_route, lens))) if route == *want_route && lens.contains(&len) => {}
            _ => panic!("router chose {got:?}, the linear matcher {want:?}"),
        }
    }
});

/// The precedence key of one (route, host pattern, path pattern) combination, compared as the
/// crate documentation orders the rules: priority, host specificity, path specificity, header
/// conditions, having methods, then declaration order.
type Key = (i32, u32, u64, usize, bool, Reverse<usize>);

/// A matcher that tries every route in turn, written from the crate documentation.
struct Linear<'a> {
    specs: &'a [RouteSpec],
    /// Each route's path patterns, regexes compiled as documented: `^(?:re)`.
    paths: Vec<Vec<(&'a PathPattern, Option<Regex>)>>,
}

impl<'a> Linear<'a> {
    fn new(specs: &'a [RouteSpec]) -> Linear<'a> {
        let paths = specs
            .iter()
            .map(|s| {
                s.paths
                    .iter()
                    .map(|p| match p {
                        PathPattern::Regex(re) => (p, Some(Regex::new(&format!("^(?:{re})")).expect("it built"))),
                        _ => (p, None),
                    })
                    .collect()
            })
            .collect();
        Linear { specs, paths }
    }

    /// The best key of the combinations that match, and the path lengths the winner's best
    /// combinations consumed (two regexes of one route may tie).
    fn find(&self, req: &RequestView<'_>) -> Option<(usize, Vec<usize>)> {
        let host = req.host.map(request_host);
        let path = req.path.split('?').next().unwrap_or("");
        let mut best: Option<(Key, usize, Vec<usize>)> = None;
        for (i, spec) in self.specs.iter().enumerate() {
            let method_ok = spec.methods.is_empty() || spec.methods.contains(req.method);
            if !method_ok || !spec.headers.iter().all(|h| header_holds(h, req.headers)) {
                continue;
            }
            let host_ranks: Vec<u32> = if spec.hosts.is_empty() {
                vec![0]
            } else {
                spec.hosts.iter().filter_map(|p| host_rank(p, host.as_deref()?)).collect()
            };
            let path_hits: Vec<(u64, usize)> = if spec.paths.is_empty() {
                vec![(0, 0)]
            } else {
                self.paths[i].iter().filter_map(|(p, re)| path_hit(p, re.as_ref(), path)).collect()
            };
            let (Some(&h), Some(&(p, _))) = (host_ranks.iter().max(), path_hits.iter().max_by_key(|x| x.0)) else {
                continue;
            };
            let key = (spec.priority, h, p, spec.headers.len(), !spec.methods.is_empty(), Reverse(i));
            let lens = path_hits.iter().filter(|x| x.0 == p).map(|x| x.1).collect();
            if best.as_ref().is_none_or(|b| key > b.0) {
                best = Some((key, i, lens));
            }
        }
        best.map(|(_, i, lens)| (i, lens))
    }
}

/// Some occurrence of the header has a value that one of the condition's values accepts: equal
/// bytes, or a regex found anywhere in it (UTF-8 values only).
fn header_holds(h: &HeaderMatch, headers: &HeaderMap) -> bool {
    headers.get_all(&h.name).iter().any(|v| {
        h.values.iter().any(|m| match m {
            ValueMatch::Exact(s) => s.as_bytes() == v.as_bytes(),
            ValueMatch::Regex(re) => std::str::from_utf8(v.as_bytes()).is_ok_and(|v| re.is_match(v)),
        })
    })
}

/// The request's host without port, brackets and one trailing dot, in lower case.
fn request_host(h: &str) -> String {
    let name = match h.strip_prefix('[') {
        Some(rest) if rest.contains(']') => rest.split(']').next().unwrap_or(h),
        Some(_) => h,
        None if h.matches(':').count() == 1 => h.split(':').next().unwrap_or(h),
        None => h,
    };
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// How specific a configured host is when it matches `host`: exact above every wildcard, longer
/// wildcard suffixes above shorter ones. `*.suffix` needs a non-empty label before `.suffix`.
fn host_rank(pattern: &str, host: &str) -> Option<u32> {
    let p = pattern.to_ascii_lowercase();
    let p = p.strip_suffix('.').unwrap_or(&p);
    let (wild, p) = match p.strip_prefix("*.") {
        Some(suffix) => (true, suffix),
        None => (false, p),
    };
    let p = p.strip_prefix('[').and_then(|p| p.strip_suffix(']')).unwrap_or(p);
    if wild {
        let label = host.strip_suffix(p)?.strip_suffix('.')?;
        (!label.is_empty()).then_some(1 + p.len() as u32)
    } else {
        (p == host).then_some(u32::MAX)
    }
}

/// How specific a path pattern is when it matches `path`, and how much of the path it consumed:
/// exact above regex above prefix, longer prefixes above shorter ones.
fn path_hit(p: &PathPattern, re: Option<&Regex>, path: &str) -> Option<(u64, usize)> {
    match (p, re) {
        (PathPattern::Exact(s), _) => (s == path).then_some((u64::MAX, s.len())),
        (PathPattern::Prefix(s), _) => path.starts_with(s.as_str()).then_some((1 + s.len() as u64, s.len())),
        (PathPattern::Regex(_), re) => Some((u64::MAX - 1, re?.find(path)?.end())),
    }
}
