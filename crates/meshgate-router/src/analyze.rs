//! Static analysis of a route table: routes that can never be chosen.
//!
//! Only certainties are reported. A route is called shadowed when, for every host/path
//! combination it can match by, some other route provably matches every such request too and
//! provably wins; anything the analysis cannot decide (regexes that merely overlap, header
//! regexes with different sources, …) is assumed reachable.

use crate::host::{HostPattern, wildcard_suffixes};
use crate::index::{Bucket, Cand, HOST_ANY, HOST_EXACT, Hit, Rank, host_wildcard, path_rank};
use crate::normalize::{PathRules, normalize};
use crate::router::Router;
use crate::spec::RouteSpec;
use meshgate_config::PathPattern;

/// A route that will never be chosen for any request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// The route's own conditions can never all hold.
    Unreachable {
        /// Name of the route.
        route: String,
        /// Which condition cannot hold.
        reason: String,
    },
    /// Every request the route matches is also matched by a route that beats it. Two identical
    /// routes are reported this way: the later is shadowed by the earlier.
    Shadowed {
        /// Name of the route.
        route: String,
        /// Name of the route that takes its requests; several names, comma-separated, when
        /// different routes take different parts (e.g. one per host).
        by: String,
    },
    /// One of the route's paths is not in the normal form requests are matched in
    /// ([`crate::normalize`]), so no request ever matches it.
    PathNeverMatches {
        /// Name of the route.
        route: String,
        /// The path as written.
        path: String,
        /// Why: its normal form, or why requests spelled that way are refused.
        reason: String,
    },
}

impl<T> Router<T> {
    /// Reports routes that can never be chosen, in declaration order. Conservative: a route
    /// that is not reported may still be unreachable in ways the analysis cannot prove (for
    /// instance a regex path covered by another regex). Shadowing is proven when another route
    /// (a) matches all of the route's hosts (same exact host, a covering wildcard, or no host
    /// condition), (b) matches all of its paths (same exact path; a prefix of it; for an exact
    /// path also a regex that matches it; for a regex path only the same regex; or no path
    /// condition), (c) asks for no method or header the route does not also require, and
    /// (d) ranks higher under the precedence rules for each such host/path combination.
    pub fn analyze(&self) -> Vec<Finding> {
        let mut out = Vec::new();
        for (b, e) in self.routes.iter().enumerate() {
            if let Some(h) = e.spec.headers.iter().find(|h| h.values.is_empty()) {
                let reason = format!("header condition {:?} lists no accepted value", h.name.as_str());
                out.push(Finding::Unreachable { route: e.spec.name.clone(), reason });
                continue;
            }
            if let Some(by) = self.shadowed_by(b) {
                let by: Vec<&str> = by.iter().map(|&i| self.routes[i as usize].spec.name.as_str()).collect();
                out.push(Finding::Shadowed { route: e.spec.name.clone(), by: by.join(", ") });
            }
        }
        out
    }

    /// Reports exact and prefix paths that no normalised request path can match: `=/a//b`,
    /// `/api/%61`, `/a/../b`. A prefix is judged with a character after it, since `/a/.` still
    /// matches `/a/.well-known`; one that ends inside an escape (`/a%2`) is not judged.
    pub fn analyze_paths(&self, rules: PathRules) -> Vec<Finding> {
        let mut out = Vec::new();
        for e in &self.routes {
            for p in &e.spec.paths {
                let (path, probe) = match p {
                    PathPattern::Exact(x) => (format!("={x}"), x.clone()),
                    PathPattern::Prefix(x) if !ends_in_escape(x) => (x.clone(), format!("{x}x")),
                    _ => continue,
                };
                let reason = match normalize(&probe, rules) {
                    Ok(None) => continue,
                    Ok(Some(normal)) => {
                        let normal =
                            if path.starts_with('=') { &normal } else { normal.strip_suffix('x').unwrap_or(&normal) };
                        format!("requests are matched on their normal form ({normal})")
                    }
                    Err(e) => format!("requests with such paths are refused: {e}"),
                };
                out.push(Finding::PathNeverMatches { route: e.spec.name.clone(), path, reason });
            }
        }
        out
    }

    /// The routes that take all of route `b`'s requests, or `None` if some request may reach it.
    fn shadowed_by(&self, b: usize) -> Option<Vec<u32>> {
        let e = &self.routes[b];
        let spec = &e.spec;
        let hosts: Vec<Option<&HostPattern>> =
            if e.hosts.is_empty() { vec![None] } else { e.hosts.iter().map(Some).collect() };
        let paths: Vec<Option<&PathPattern>> =
            if spec.paths.is_empty() { vec![None] } else { spec.paths.iter().map(Some).collect() };
        let mut by: Vec<u32> = Vec::new();
        for &h in &hosts {
            let host_rank = match h {
                None => HOST_ANY,
                Some(HostPattern::Exact(_)) => HOST_EXACT,
                Some(HostPattern::Wildcard(s)) => host_wildcard(s.len()),
            };
            for &p in &paths {
                let rank = Rank::new(
                    spec.priority,
                    host_rank,
                    path_rank(p),
                    spec.headers.len(),
                    !spec.methods.is_empty(),
                    b as u32,
                );
                let mut winner: Option<Cand> = None;
                let mut consider = |list: &mut dyn Iterator<Item = &Cand>| {
                    for c in list {
                        if c.rank <= rank {
                            break;
                        }
                        if c.route as usize != b && implies(spec, &self.routes[c.route as usize].spec) {
                            if winner.is_none_or(|w| c.rank > w.rank) {
                                winner = Some(*c);
                            }
                            break;
                        }
                    }
                };
                for bucket in self.covering_buckets(h) {
                    self.covering_lists(bucket, p, &mut consider);
                }
                let w = winner?;
                if !by.contains(&w.route) {
                    by.push(w.route);
                }
            }
        }
        Some(by)
    }

    /// Host buckets whose routes match every request host `h` matches.
    fn covering_buckets<'s>(&'s self, h: Option<&'s HostPattern>) -> impl Iterator<Item = &'s Bucket> {
        let (own, suffixes_of) = match h {
            None => (None, None),
            Some(HostPattern::Exact(n)) => (self.exact_hosts.get(n.as_str()), Some(n.as_str())),
            Some(HostPattern::Wildcard(s)) => (self.wildcard_hosts.get(s.as_str()), Some(s.as_str())),
        };
        let wild = suffixes_of.into_iter().flat_map(wildcard_suffixes).filter_map(|s| self.wildcard_hosts.get(s));
        own.into_iter().chain(wild).chain([&self.any_host])
    }

    /// Feeds `consider` the best-first candidate lists of `bucket` whose path condition holds
    /// for every path `p` matches.
    fn covering_lists(
        &self,
        bucket: &Bucket,
        p: Option<&PathPattern>,
        consider: &mut impl FnMut(&mut dyn Iterator<Item = &Cand>),
    ) {
        let prefixes_of = |s: &str, consider: &mut dyn FnMut(&mut dyn Iterator<Item = &Cand>)| {
            for &(len, _) in &bucket.prefix_lens {
                if let Some(list) = s.get(..len).and_then(|k| bucket.prefixes.get(k)) {
                    consider(&mut list.iter());
                }
            }
        };
        match p {
            None => {}
            Some(PathPattern::Exact(x)) => {
                if let Some(list) = bucket.exact.get(x.as_str()) {
                    consider(&mut list.iter());
                }
                prefixes_of(x, consider);
                if let Some(rx) = &bucket.regex {
                    consider(&mut rx.cands.iter().filter(|c| match c.hit {
                        Hit::Regex(id) => self.regexes[id as usize].is_match(x),
                        Hit::Len(_) => false,
                    }));
                }
            }
            Some(PathPattern::Prefix(q)) => prefixes_of(q, consider),
            Some(PathPattern::Regex(r)) => {
                if let Some(rx) = &bucket.regex {
                    consider(&mut rx.cands.iter().zip(&rx.sources).filter(|(_, s)| *s == r).map(|(c, _)| c));
                }
            }
        }
        consider(&mut bucket.any_path.iter());
    }
}

/// True when every request satisfying `b`'s method and header conditions also satisfies
/// `a`'s: `a` asks for no method `b` does not restrict to, and each of `a`'s header conditions
/// is implied by one of `b`'s with the same name whose values `a` all accepts too.
fn implies(b: &RouteSpec, a: &RouteSpec) -> bool {
    let methods = a.methods.is_empty() || (!b.methods.is_empty() && b.methods.iter().all(|m| a.methods.contains(m)));
    methods
        && a.headers.iter().all(|ha| {
            b.headers
                .iter()
                .any(|hb| hb.name == ha.name && hb.values.iter().all(|vb| ha.values.iter().any(|va| va.same_as(vb))))
        })
}

/// Whether a prefix ends inside a percent-escape (`/a%2`): what follows completes it.
fn ends_in_escape(prefix: &str) -> bool {
    let b = prefix.as_bytes();
    b.last() == Some(&b'%') || (b.len() >= 2 && b[b.len() - 2] == b'%')
}
