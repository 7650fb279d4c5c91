//! The router: building the indexes from route specs, and finding a request's route.

use crate::host::{HostPattern, strip_request_host, wildcard_suffixes, with_lowercase};
use crate::index::{Bucket, BucketBuilder, Cand, FastMap, HOST_ANY, HOST_EXACT, Hit, Rank, host_wildcard, path_rank};
use crate::spec::{RequestView, RouteSpec};
use meshgate_config::PathPattern;
use regex::Regex;

/// Why a set of routes could not be compiled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("routes[{route_index}]: {message}")]
pub struct BuildError {
    /// Position of the offending route in the list given to [`Router::build`].
    pub route_index: usize,
    /// What is wrong, naming the offending value.
    pub message: String,
}

/// The route chosen for a request.
#[derive(Debug)]
pub struct RouteMatch<'a, T> {
    /// The value stored with the route.
    pub value: &'a T,
    /// Position of the route in the list given to [`Router::build`].
    pub route_index: usize,
    /// Bytes at the start of the path consumed by the winning path pattern: the prefix's
    /// length, the exact path's length, or where the regex match ends; 0 when the route has no
    /// path condition. The proxy removes this much for `strip_path`.
    pub matched_path_len: usize,
}

// By hand: deriving would demand `T: Clone` although only a reference is copied.
impl<T> Clone for RouteMatch<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for RouteMatch<'_, T> {}

/// One route as the router keeps it.
pub(crate) struct Entry<T> {
    /// The conditions; methods and headers are checked from here.
    pub(crate) spec: RouteSpec,
    /// Hosts, normalized.
    pub(crate) hosts: Vec<HostPattern>,
    value: T,
}

/// Precompiled route table. Lookups consult a host index (exact names in a hash map, wildcard
/// suffixes in another, walked over the request host's label suffixes, plus the routes without
/// hosts) and, inside each host, a path index (exact paths hashed, prefixes hashed by length,
/// regexes in one `RegexSet`). Only the candidates those indexes return are examined, best
/// first, so lookup time does not grow with the number of routes.
pub struct Router<T> {
    pub(crate) routes: Vec<Entry<T>>,
    /// Anchored (`^(?:re)`) regex paths; `Hit::Regex` ids index this.
    pub(crate) regexes: Vec<Regex>,
    pub(crate) exact_hosts: FastMap<Box<str>, Bucket>,
    pub(crate) wildcard_hosts: FastMap<Box<str>, Bucket>,
    /// Shortest and longest wildcard suffix, so request hosts skip lookups that cannot hit.
    wildcard_lens: (usize, usize),
    pub(crate) any_host: Bucket,
}

impl<T> std::fmt::Debug for Router<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("routes", &self.routes.len())
            .field("exact_hosts", &self.exact_hosts.len())
            .field("wildcard_hosts", &self.wildcard_hosts.len())
            .finish_non_exhaustive()
    }
}

impl<T> Router<T> {
    /// Compiles the routes, in declaration order (which breaks the last precedence ties).
    /// Fails on a host that is not `name` or `*.suffix`, an invalid regex path, or too many
    /// routes (more than `u32::MAX`).
    pub fn build(routes: Vec<(RouteSpec, T)>) -> Result<Router<T>, BuildError> {
        if routes.len() >= u32::MAX as usize {
            return Err(BuildError { route_index: u32::MAX as usize, message: "too many routes".into() });
        }
        let mut regexes = Vec::new();
        let mut exact: FastMap<Box<str>, BucketBuilder> = FastMap::default();
        let mut wildcard: FastMap<Box<str>, BucketBuilder> = FastMap::default();
        let mut any = BucketBuilder::default();
        let mut entries = Vec::with_capacity(routes.len());
        for (i, (spec, value)) in routes.into_iter().enumerate() {
            let err = |message: String| BuildError { route_index: i, message };
            let hosts = spec.hosts.iter().map(|h| HostPattern::parse(h)).collect::<Result<Vec<_>, _>>().map_err(err)?;
            // One (path, hit) per path pattern, or a single "no path" entry.
            let mut paths: Vec<(Option<&PathPattern>, Hit)> = Vec::with_capacity(spec.paths.len().max(1));
            for p in &spec.paths {
                let hit = match p {
                    PathPattern::Exact(s) | PathPattern::Prefix(s) => Hit::Len(len_u32(s.len(), i)?),
                    PathPattern::Regex(re) => {
                        let anchored = Regex::new(&format!("^(?:{re})")).map_err(|e| {
                            err(format!(
                                "invalid regex path {:?}: {}",
                                format!("~{re}"),
                                meshgate_config::regex_error(&e)
                            ))
                        })?;
                        regexes.push(anchored);
                        Hit::Regex(len_u32(regexes.len() - 1, i)?)
                    }
                };
                paths.push((Some(p), hit));
            }
            if paths.is_empty() {
                paths.push((None, Hit::Len(0)));
            }
            let rank = |host: u16, path: Option<&PathPattern>| {
                Rank::new(spec.priority, host, path_rank(path), spec.headers.len(), !spec.methods.is_empty(), i as u32)
            };
            let file = |bucket: &mut BucketBuilder, host: u16| {
                for &(p, hit) in &paths {
                    bucket.add(p, Cand { rank: rank(host, p), route: i as u32, hit });
                }
            };
            if hosts.is_empty() {
                file(&mut any, HOST_ANY);
            }
            for h in &hosts {
                match h {
                    HostPattern::Exact(n) => file(exact.entry(n.as_str().into()).or_default(), HOST_EXACT),
                    HostPattern::Wildcard(s) => {
                        file(wildcard.entry(s.as_str().into()).or_default(), host_wildcard(s.len()))
                    }
                }
            }
            entries.push(Entry { spec, hosts, value });
        }
        let wildcard_lens =
            (wildcard.keys().map(|k| k.len()).min().unwrap_or(0), wildcard.keys().map(|k| k.len()).max().unwrap_or(0));
        let finish =
            |b: BucketBuilder| b.finish().map_err(|(route_index, message)| BuildError { route_index, message });
        let finish_all = |m: FastMap<Box<str>, BucketBuilder>| {
            m.into_iter().map(|(k, b)| Ok((k, finish(b)?))).collect::<Result<FastMap<_, _>, BuildError>>()
        };
        Ok(Router {
            routes: entries,
            regexes,
            exact_hosts: finish_all(exact)?,
            wildcard_hosts: finish_all(wildcard)?,
            wildcard_lens,
            any_host: finish(any)?,
        })
    }

    /// The route for a request: of all routes whose conditions hold, the one ranked first by
    /// the precedence rules in the crate documentation. Does not allocate (beyond the `regex`
    /// crate's reusable per-thread caches) unless the request host has upper case and is
    /// longer than 256 bytes, or a host bucket holding five or more regex paths has one that
    /// matches (the `RegexSet` reports matches in a fresh buffer).
    pub fn find(&self, req: &RequestView<'_>) -> Option<RouteMatch<'_, T>> {
        let path = match req.path.find('?') {
            Some(q) => &req.path[..q],
            None => req.path,
        };
        let accept = |i: u32| self.routes[i as usize].spec.matches_rest(req.method, req.headers);
        let mut best: Option<Cand> = None;
        // Most specific buckets first: with equal priorities their candidates win, and the
        // less specific buckets are then skipped on their best key alone.
        if let Some(host) = req.host
            && !(self.exact_hosts.is_empty() && self.wildcard_hosts.is_empty())
        {
            with_lowercase(strip_request_host(host), |host| {
                if let Some(b) = self.exact_hosts.get(host) {
                    b.search(path, &self.regexes, &mut best, &accept);
                }
                if !self.wildcard_hosts.is_empty() {
                    let (min, max) = self.wildcard_lens;
                    for s in wildcard_suffixes(host).filter(|s| s.len() >= min && s.len() <= max) {
                        if let Some(b) = self.wildcard_hosts.get(s) {
                            b.search(path, &self.regexes, &mut best, &accept);
                        }
                    }
                }
            });
        }
        self.any_host.search(path, &self.regexes, &mut best, &accept);
        let c = best?;
        let matched_path_len = match c.hit {
            Hit::Len(n) => n as usize,
            Hit::Regex(id) => self.regexes[id as usize].find(path).map_or(0, |m| m.end()),
        };
        Some(RouteMatch {
            value: &self.routes[c.route as usize].value,
            route_index: c.route as usize,
            matched_path_len,
        })
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when there are no routes (every lookup then finds nothing).
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The value stored with route `index`, e.g. to name a route from a [`RouteMatch`].
    pub fn get(&self, index: usize) -> Option<&T> {
        self.routes.get(index).map(|e| &e.value)
    }

    /// The conditions of route `index`.
    pub fn spec(&self, index: usize) -> Option<&RouteSpec> {
        self.routes.get(index).map(|e| &e.spec)
    }
}

fn len_u32(n: usize, route_index: usize) -> Result<u32, BuildError> {
    u32::try_from(n).map_err(|_| BuildError { route_index, message: "path pattern too long".into() })
}
