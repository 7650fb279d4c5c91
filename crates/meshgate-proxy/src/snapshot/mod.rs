//! A config compiled into the form the hot path reads: a precompiled router whose entries hold
//! everything a request needs (service, balancer, plugin chains, TLS settings). Snapshots are
//! immutable; a reload builds a new one and swaps it in whole.

use crate::chain::{self, Chain, Instance};
use crate::mirror::MirrorRt;
use crate::retry::{RetryBudget, RetryRt};
use crate::split::Split;
use crate::tls;
mod services;
use meshgate_balance::{ActiveConfig, Balancer, TargetRegistry, TargetState};
use meshgate_config::model::{Config, Listener, PluginRef, Retry, Route};
use meshgate_config::{ConfigError, ConfigErrors, Document, HashOn, Source};
use meshgate_core::{BuildContext, Consumer, Consumers, CredentialEntry, PluginScope, Registry, RouteInfo};
use meshgate_router::{PathRules, RouteSpec, Router};
use rustls::pki_types::ServerName;
use services::service;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// One compiled configuration.
pub struct Snapshot {
    /// Routes, precompiled.
    pub(crate) router: Router<RouteRt>,
    /// Global plugins, for requests that match no route.
    pub(crate) unmatched: Chain,
    /// Counts of requests that matched no route.
    pub(crate) unmatched_stats: Arc<crate::metrics::RouteStats>,
    /// Client-side limits.
    pub(crate) limits: Limits,
    /// How request paths are normalised before routing.
    pub(crate) path_rules: PathRules,
    /// Listener settings, including TLS.
    pub(crate) listeners: Vec<ListenerRt>,
    /// Upstreams with active health checks, for the control thread to probe.
    pub(crate) active_checks: Vec<(String, Vec<Arc<TargetState>>, ActiveConfig)>,
    /// `(upstream, address)` of every target, so reloads can forget removed targets' state.
    pub(crate) live_targets: Vec<(String, String)>,
    /// Each route's retry budgets by route name, for metrics: one, or one per service of a
    /// split route without a retry policy of its own.
    pub(crate) retry_budgets: Vec<(Arc<str>, Vec<Arc<RetryBudget>>)>,
    /// Worker threads wanted (only read at start).
    pub(crate) workers: Option<usize>,
    /// How long to wait for requests in flight on shutdown.
    pub(crate) drain_timeout: Duration,
    /// Whether to watch the config file.
    pub(crate) watch_config: bool,
}

/// Limits applied to every client connection and request.
#[derive(Clone, Debug)]
pub struct Limits {
    pub(crate) max_header_bytes: usize,
    pub(crate) max_headers: usize,
    pub(crate) max_body_bytes: u64,
    pub(crate) client_idle_timeout: Duration,
    pub(crate) client_header_timeout: Duration,
    pub(crate) client_body_timeout: Duration,
    pub(crate) client_send_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) max_concurrent_streams: u32,
}

/// A listener as compiled.
pub struct ListenerRt {
    pub(crate) name: Arc<str>,
    pub(crate) address: std::net::SocketAddr,
    pub(crate) tls: Option<tls::ListenerTlsRt>,
    pub(crate) http2: bool,
}

/// A route with everything the hot path needs, resolved.
pub struct RouteRt {
    pub(crate) info: RouteInfo,
    pub(crate) service: Arc<ServiceRt>,
    pub(crate) strip_path: bool,
    pub(crate) preserve_host: bool,
    /// Protocols clients may switch to here (`Upgrade`), in lower case.
    pub(crate) upgrades: Arc<[Box<str>]>,
    pub(crate) chain: Chain,
    /// A weighted split over several services, each compiled as a route of its own (this route
    /// then stands for the first of them and is not used to forward); `None` for one service.
    pub(crate) split: Option<Box<Split>>,
    /// Where copies of the route's requests go, if anywhere.
    pub(crate) mirror: Option<Arc<MirrorRt>>,
    /// The route's timeouts, falling back to the service's field by field.
    pub(crate) timeouts: UpstreamTimeouts,
    /// The route's retry policy (its own or the service's) with the route's own budget.
    pub(crate) retry: RetryRt,
    /// Request counts and latencies, allocated at the route's first request (a 10,000-route
    /// table pays only for the routes that get traffic).
    pub(crate) stats: std::sync::OnceLock<Arc<crate::metrics::RouteStats>>,
    /// The route's regex paths with named groups, captured into `PathParams` per request.
    pub(crate) params: Option<Arc<crate::params::ParamRegexes>>,
    /// An aggregation route's backends; the route then forwards nothing itself.
    pub(crate) aggregate: Option<Box<crate::aggregate::AggregateRt>>,
}

impl RouteRt {
    /// Whether every protocol the request's `Upgrade` offers may be switched to on this route.
    /// An offer with one that may not (`websocket, h2c`) is not forwarded at all: the upstream
    /// would choose among them.
    pub(crate) fn allows_upgrade(&self, headers: &http::HeaderMap) -> bool {
        let mut offers =
            headers.get_all(http::header::UPGRADE).iter().flat_map(|v| v.to_str().unwrap_or("\0").split(','));
        let allowed = |offer: &str| {
            let name = offer.trim().split('/').next().unwrap_or_default();
            self.upgrades.iter().any(|u| u.eq_ignore_ascii_case(name))
        };
        !self.upgrades.is_empty() && offers.all(allowed)
    }

    /// The route's request counters.
    pub(crate) fn stats(&self) -> &Arc<crate::metrics::RouteStats> {
        self.stats.get_or_init(Default::default)
    }

    /// The route as it applies to this request: itself, or for a split route the service
    /// chosen for the request, with that branch's index.
    pub(crate) fn choose(&self, headers: &http::HeaderMap) -> (usize, &RouteRt) {
        match &self.split {
            None => (0, self),
            Some(s) => {
                let i = s.pick(headers);
                (i, &s.branches[i])
            }
        }
    }

    /// Branch `i` as returned by [`RouteRt::choose`].
    pub(crate) fn branch(&self, i: usize) -> &RouteRt {
        self.split.as_ref().and_then(|s| s.branches.get(i)).unwrap_or(self)
    }
}

/// Timeouts of one exchange with an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    /// TCP connect plus TLS handshake.
    pub(crate) connect: Duration,
    /// Waiting for the response head, and between two reads of the response body.
    pub(crate) read: Duration,
    /// Between two writes; fixed when a connection opens (pooled connections keep theirs).
    pub(crate) write: Duration,
}

/// How the gateway talks to a service's servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.1 over TCP.
    Http1,
    /// HTTP/2 over TCP, prior knowledge.
    H2c,
    /// TLS; ALPN picks HTTP/2 or HTTP/1.1.
    Tls,
}

/// A service as compiled.
pub struct ServiceRt {
    pub(crate) name: Arc<str>,
    pub(crate) balancer: Balancer,
    /// Parallel to the balancer's targets.
    pub(crate) targets: Box<[TargetRt]>,
    pub(crate) proto: Proto,
    pub(crate) tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// Prepended to forwarded paths; "" for none.
    pub(crate) base_path: String,
    /// The service's timeouts; routes may override them.
    pub(crate) timeouts: UpstreamTimeouts,
    /// The service's retry policy (`retry` or the `retries` shorthand); routes may override it.
    pub(crate) retry: Retry,
    /// Idle HTTP/1.1 connections kept per server and worker.
    pub(crate) max_idle: usize,
    /// Idle connections older than this are not reused.
    pub(crate) idle_timeout: Duration,
}

/// One server of a service.
pub struct TargetRt {
    /// `host:port` to connect to.
    pub(crate) address: Arc<str>,
    /// Identifies pooled connections that can carry this service's requests to this server.
    pub(crate) pool_key: Arc<str>,
    /// Host header (HTTP/2: `:authority`) sent when the route does not preserve the client's.
    pub(crate) host_header: http::HeaderValue,
}

/// Compiles a loaded config. Errors found here (bad certificates, unknown plugins, bad plugin
/// settings) are located in the file like validation errors.
pub fn compile(doc: &Document, registry: &Registry, targets: &TargetRegistry) -> Result<Snapshot, ConfigErrors> {
    let (config, source) = (&doc.config, &doc.source);
    let mut errors = Vec::new();
    let consumers = Arc::new(consumers(config, source, registry, &mut errors));
    check_credentials(&consumers, registry, source, &mut errors);
    let plugins = Plugins::build(config, registry, source, &consumers, &mut errors);
    let listeners = listeners(&config.listeners, source, &mut errors);

    let mut services = HashMap::new();
    let mut active_checks = Vec::new();
    let mut live_targets = Vec::new();
    for (i, s) in config.services.iter().enumerate() {
        match service(config, s, i, source, targets, &mut active_checks) {
            Ok((rt, upstream)) => {
                live_targets.extend(rt.targets.iter().map(|t| (upstream.clone(), t.address.to_string())));
                services.insert(s.name.as_str(), Arc::new(rt));
            }
            Err(e) => errors.push(e),
        }
    }

    let mut routes = Vec::with_capacity(config.routes.len());
    let mut retry_budgets = Vec::with_capacity(config.routes.len());
    for (i, r) in config.routes.iter().enumerate() {
        let spec = match RouteSpec::from_config(r) {
            Ok(spec) => spec,
            Err(msg) => {
                errors.push(source.error(format!("routes[{i}]"), msg));
                continue;
            }
        };
        let Some(rt) = route(r, &services, &plugins) else { continue }; // validation reported it
        // A split route's services share the route's budget when it has a retry policy of its
        // own: listed once, so that its retries are not counted once per service.
        let mut budgets: Vec<Arc<RetryBudget>> = Vec::new();
        let branches = rt.split.as_ref().map_or(std::slice::from_ref(&rt), |s| &s.branches[..]);
        for b in branches {
            if !budgets.iter().any(|x| Arc::ptr_eq(x, &b.retry.budget)) {
                budgets.push(b.retry.budget.clone());
            }
        }
        retry_budgets.push((rt.info.name.clone(), budgets));
        routes.push((spec, rt));
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let router = Router::build(routes)
        .map_err(|e| ConfigErrors(vec![source.error(format!("routes[{}]", e.route_index), e.message)]))?;

    let l = &config.limits;
    Ok(Snapshot {
        router,
        unmatched: Chain::merge(&[&plugins.global]),
        unmatched_stats: Default::default(),
        limits: Limits {
            max_header_bytes: l.max_header_bytes.bytes() as usize,
            max_headers: l.max_headers,
            max_body_bytes: l.max_body_bytes.bytes(),
            client_idle_timeout: l.client_idle_timeout.get(),
            client_header_timeout: l.client_header_timeout.get(),
            client_body_timeout: l.client_body_timeout.get(),
            client_send_timeout: l.client_send_timeout.get(),
            max_connections: l.max_connections,
            max_concurrent_streams: l.max_concurrent_streams,
        },
        path_rules: PathRules {
            merge_slashes: config.http.merge_slashes,
            escaped_slashes: config.http.escaped_slashes,
        },
        listeners,
        active_checks,
        live_targets,
        retry_budgets,
        workers: config.runtime.workers,
        drain_timeout: config.runtime.drain_timeout.get(),
        watch_config: config.runtime.watch_config,
    })
}

/// A route's runtime form: one service, or a split whose every service is a complete route
/// (its balancer, timeouts and the plugins of global, that service and the route), and the
/// mirror shared by all of them. `None` when a service is unknown (validation said so).
fn route(r: &Route, services: &HashMap<&str, Arc<ServiceRt>>, plugins: &Plugins) -> Option<RouteRt> {
    // A route's own retry policy has one budget for the whole route, split or not; without one,
    // each service's policy applies with a budget of its own.
    let route_retry = r.retry.as_ref().map(RetryRt::new);
    let params = crate::params::ParamRegexes::compile(&r.paths);
    let upgrades: Arc<[Box<str>]> = r.upgrades.iter().map(|u| u.to_ascii_lowercase().into_boxed_str()).collect();
    let at = |svc: &Arc<ServiceRt>, chain: Chain, mirror: Option<Arc<MirrorRt>>| RouteRt {
        info: RouteInfo { name: r.name.as_str().into(), service: svc.name.clone() },
        service: svc.clone(),
        strip_path: r.strip_path,
        preserve_host: r.preserve_host,
        upgrades: upgrades.clone(),
        chain,
        split: None,
        mirror,
        timeouts: route_timeouts(svc.timeouts, r.timeouts.as_ref()),
        retry: route_retry.clone().unwrap_or_else(|| RetryRt::new(&svc.retry)),
        stats: Default::default(),
        params: params.clone(),
        aggregate: None,
    };
    let mirror = match &r.mirror {
        Some(m) if m.percentage > 0.0 => {
            let shadow = services.get(m.service.as_str())?;
            Some(Arc::new(MirrorRt::new(at(shadow, Chain::default(), None), m.percentage)))
        }
        _ => None,
    };
    let chain_of = |svc: &str| Chain::merge(&[&plugins.global, plugins.of_service(svc), plugins.of_route(&r.name)]);
    if !r.backends.is_empty() {
        let chain = |svcs: &[&str]| {
            let mut scopes = vec![&plugins.global[..]];
            scopes.extend(svcs.iter().map(|s| plugins.of_service(s)));
            scopes.push(plugins.of_route(&r.name));
            Chain::merge(&scopes)
        };
        return crate::aggregate::compile(r, services, &chain, &|svc, chain| at(svc, chain, None));
    }
    if let Some(name) = &r.service {
        let svc = services.get(name.as_str())?;
        return Some(at(svc, chain_of(name), mirror));
    }
    let mut branches = Vec::with_capacity(r.services.len());
    for w in &r.services {
        let svc = services.get(w.name.as_str())?;
        branches.push(at(svc, chain_of(&w.name), mirror.clone()));
    }
    let first = r.services.first()?;
    let weights: Vec<u32> = r.services.iter().map(|w| w.weight).collect();
    let sticky = r.sticky.as_ref().and_then(|s| match (&s.header, &s.cookie) {
        (Some(h), _) => http::HeaderName::try_from(h.as_str()).ok().map(HashOn::Header),
        (None, Some(c)) => Some(HashOn::Cookie(c.clone())),
        (None, None) => None,
    });
    let mut top = at(&branches[0].service, chain_of(&first.name), mirror);
    top.split = Some(Box::new(Split::new(branches, &weights, sticky)));
    Some(top)
}

/// The declared consumers; duplicate names are errors.
fn consumers(config: &Config, source: &Source, registry: &Registry, errors: &mut Vec<ConfigError>) -> Consumers {
    let mut out = Consumers::new(source.path().parent().map(Path::to_path_buf).unwrap_or_default());
    for (i, c) in config.consumers.iter().enumerate() {
        let at = format!("consumers[{i}]");
        let mut credentials = Vec::new();
        for (kind, entries) in &c.credentials {
            if !registry.get(kind).is_some_and(|f| f.takes_credentials()) {
                let known: Vec<_> =
                    registry.names().filter(|n| registry.get(n).is_some_and(|f| f.takes_credentials())).collect();
                let msg = format!("unknown credential kind {kind:?}; known: {}", known.join(", "));
                errors.push(source.error(format!("{at}.credentials.{kind}"), msg));
                continue;
            }
            for (j, value) in entries.iter().enumerate() {
                let field = format!("{at}.credentials.{kind}[{j}]");
                credentials.push((kind.clone(), CredentialEntry { field, value: value.clone() }));
            }
        }
        let groups = c.groups.iter().map(|g| g.as_str().into()).collect();
        let consumer = Consumer::new(&c.username, c.custom_id.as_deref(), groups);
        if let Err(msg) = out.add(consumer, credentials) {
            errors.push(source.error(format!("{at}.username"), msg));
        }
    }
    out
}

/// Lets each authentication plugin check every credential of its kind, used or not.
fn check_credentials(consumers: &Arc<Consumers>, registry: &Registry, source: &Source, errors: &mut Vec<ConfigError>) {
    let cx = BuildContext { consumers: consumers.clone(), scope: PluginScope::Global };
    // Only kinds owned by a registered plugin got this far (see `consumers`).
    for kind in consumers.credential_kinds() {
        let Some(factory) = registry.get(kind) else { continue };
        if let Err(e) = factory.check_credentials(&cx) {
            errors.push(chain::plugin_error(source, "", e));
        }
    }
}

/// Plugin instances by scope, each built once even when shared by many routes.
struct Plugins {
    global: Vec<Instance>,
    by_service: HashMap<String, Vec<Instance>>,
    by_route: HashMap<String, Vec<Instance>>,
}

impl Plugins {
    fn build(
        config: &Config,
        registry: &Registry,
        source: &Source,
        consumers: &Arc<Consumers>,
        errors: &mut Vec<ConfigError>,
    ) -> Plugins {
        let mut p = Plugins { global: Vec::new(), by_service: HashMap::new(), by_route: HashMap::new() };
        let mut add = |entry: &PluginRef, field: String, scope: PluginScope| {
            let at = BuildContext { consumers: consumers.clone(), scope: scope.clone() };
            match chain::build(registry, entry, source, &field, &at) {
                Ok(Some(inst)) => match scope {
                    PluginScope::Global => p.global.push(inst),
                    PluginScope::Service(s) => p.by_service.entry(s).or_default().push(inst),
                    PluginScope::Route(r) => p.by_route.entry(r).or_default().push(inst),
                },
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        };
        for (i, entry) in config.plugins.iter().enumerate() {
            let scope = match (&entry.route, &entry.service) {
                (Some(r), _) => PluginScope::Route(r.clone()),
                (None, Some(s)) => PluginScope::Service(s.clone()),
                (None, None) => PluginScope::Global,
            };
            add(entry, format!("plugins[{i}]"), scope);
        }
        for (i, s) in config.services.iter().enumerate() {
            for (j, entry) in s.plugins.iter().enumerate() {
                add(entry, format!("services[{i}].plugins[{j}]"), PluginScope::Service(s.name.clone()));
            }
        }
        for (i, r) in config.routes.iter().enumerate() {
            for (j, entry) in r.plugins.iter().enumerate() {
                add(entry, format!("routes[{i}].plugins[{j}]"), PluginScope::Route(r.name.clone()));
            }
        }
        p
    }

    fn of_service(&self, name: &str) -> &[Instance] {
        self.by_service.get(name).map_or(&[], Vec::as_slice)
    }

    fn of_route(&self, name: &str) -> &[Instance] {
        self.by_route.get(name).map_or(&[], Vec::as_slice)
    }
}

fn listeners(list: &[Listener], source: &Source, errors: &mut Vec<ConfigError>) -> Vec<ListenerRt> {
    let mut out = Vec::new();
    for (i, l) in list.iter().enumerate() {
        let field = format!("listeners[{i}]");
        let Ok(address) = l.address.parse() else { continue }; // validation reported it
        let tls = match &l.tls {
            Some(t) => match tls::server_config(t, l.http2, source, &field) {
                Ok(c) => Some(c),
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            },
            None => None,
        };
        out.push(ListenerRt { name: l.name.as_str().into(), address, tls, http2: l.http2 });
    }
    out
}

/// A route's timeouts: its own where set, else the service's.
fn route_timeouts(
    service: UpstreamTimeouts,
    route: Option<&meshgate_config::model::RouteTimeouts>,
) -> UpstreamTimeouts {
    let Some(r) = route else { return service };
    UpstreamTimeouts {
        connect: r.connect.map_or(service.connect, |d| d.get()),
        read: r.read.map_or(service.read, |d| d.get()),
        write: r.write.map_or(service.write, |d| d.get()),
    }
}

impl Snapshot {
    /// Each route's retry counters by route name, one row per route (a split route's services
    /// summed): `(route, retries attempted, retries refused because the budget was spent)`.
    /// Counters start at zero with each config snapshot.
    pub fn retry_stats(&self) -> Vec<(Arc<str>, u64, u64)> {
        let sum = |budgets: &[Arc<RetryBudget>], f: fn(&RetryBudget) -> u64| budgets.iter().map(|b| f(b)).sum();
        self.retry_budgets
            .iter()
            .map(|(r, b)| (r.clone(), sum(b, RetryBudget::retries_attempted), sum(b, RetryBudget::budget_exhausted)))
            .collect()
    }

    /// `(route, service, counters)` of every route (each service of a split route apart) that
    /// has had a request, and of the requests that matched no route (route and service "").
    pub(crate) fn route_stats(&self) -> Vec<(Arc<str>, Arc<str>, &crate::metrics::RouteStats)> {
        let mut out = vec![(Arc::from(""), Arc::from(""), &*self.unmatched_stats)];
        for i in 0..self.router.len() {
            let Some(r) = self.router.get(i) else { continue };
            let branches: Vec<&RouteRt> = match &r.split {
                Some(s) => s.branches.iter().collect(),
                None => vec![r],
            };
            for b in branches {
                if let Some(s) = b.stats.get() {
                    out.push((b.info.name.clone(), b.info.service.clone(), &**s));
                }
            }
        }
        out
    }

    /// Warnings about routes that can never match, for `validate` and reload logs.
    pub fn route_findings(&self) -> Vec<String> {
        use meshgate_router::Finding;
        let findings = self.router.analyze().into_iter().chain(self.router.analyze_paths(self.path_rules));
        findings
            .map(|f| match f {
                Finding::Unreachable { route, reason } => format!("route {route:?} can never match: {reason}"),
                Finding::Shadowed { route, by } => {
                    format!("route {route:?} can never match: every request it matches goes to {by}")
                }
                Finding::PathNeverMatches { route, path, reason } => {
                    format!("route {route:?}: path {path:?} can never match: {reason}")
                }
            })
            .collect()
    }
}
