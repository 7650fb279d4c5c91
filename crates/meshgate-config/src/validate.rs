//! Cross-field checks that the YAML types alone cannot express: unique names, references that
//! resolve, addresses and patterns that parse. Every problem is reported, not only the first.

use crate::error::ConfigError;
use crate::model::{Algorithm, Config, Health, PluginRef, Retry, RetryOn, Route, TargetLimit};
use crate::patterns::{HashOn, PathPattern, ServiceUrl, check_host_port};
use crate::source::Source;
use std::collections::HashSet;
use std::net::SocketAddr;

struct Checker<'a> {
    source: &'a Source,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn err(&mut self, field: String, message: impl Into<String>) {
        self.errors.push(self.source.error(field, message));
    }

    /// Reports every repeated name in `names` (a list of `(field, name)`).
    fn unique<'n>(&mut self, what: &str, names: impl Iterator<Item = (String, &'n str)>) {
        let mut seen = HashSet::new();
        for (field, name) in names {
            if name.is_empty() {
                self.err(field, format!("{what} name must not be empty"));
            } else if !seen.insert(name) {
                self.err(field, format!("duplicate {what} name {name:?}"));
            }
        }
    }
}

/// Checks a parsed config; returns every problem found (empty means valid).
pub fn validate(config: &Config, source: &Source) -> Vec<ConfigError> {
    let mut c = Checker { source, errors: Vec::new() };
    runtime_and_limits(config, &mut c);
    listeners(config, &mut c);
    upstreams(config, &mut c);
    services(config, &mut c);
    routes(config, &mut c);
    plugins(config, &mut c);
    c.errors
}

fn runtime_and_limits(config: &Config, c: &mut Checker) {
    if config.runtime.workers == Some(0) {
        c.err("runtime.workers".into(), "must be at least 1 (or left out: one per CPU)");
    }
    let l = &config.limits;
    if l.max_header_bytes.bytes() < 1024 {
        c.err("limits.max_header_bytes".into(), "must be at least 1KiB");
    }
    if l.max_headers == 0 {
        c.err("limits.max_headers".into(), "must be at least 1");
    }
    if l.max_concurrent_streams == 0 {
        c.err("limits.max_concurrent_streams".into(), "must be at least 1");
    }
    if l.max_connections == 0 {
        c.err("limits.max_connections".into(), "must be at least 1");
    }
    if l.client_idle_timeout.get().is_zero() || l.client_header_timeout.get().is_zero() {
        c.err("limits".into(), "client timeouts must be greater than zero");
    }
}

fn listeners(config: &Config, c: &mut Checker) {
    if config.listeners.is_empty() {
        c.err("listeners".into(), "at least one listener is needed");
    }
    c.unique(
        "listener",
        config.listeners.iter().enumerate().map(|(i, l)| (format!("listeners[{i}].name"), l.name.as_str())),
    );
    let mut addresses = HashSet::new();
    if let Some(st) = &config.status {
        match st.address.parse::<SocketAddr>() {
            Ok(addr) => {
                addresses.insert(addr);
            }
            Err(_) => c.err(
                "status.address".to_owned(),
                format!("invalid address {:?}: use ip:port, e.g. 127.0.0.1:8100", st.address),
            ),
        }
    }
    for (i, l) in config.listeners.iter().enumerate() {
        match l.address.parse::<SocketAddr>() {
            // Port 0 asks the OS for a free port: never a clash.
            Ok(addr) if addr.port() != 0 && !addresses.insert(addr) => c.err(
                format!("listeners[{i}].address"),
                format!("address {addr} is used by another listener or the status listener"),
            ),
            Ok(_) => {}
            Err(_) => c.err(
                format!("listeners[{i}].address"),
                format!("invalid address {:?}: use ip:port, e.g. 0.0.0.0:8000 or [::]:8000", l.address),
            ),
        }
        if let Some(tls) = &l.tls
            && tls.certificates.is_empty()
        {
            c.err(format!("listeners[{i}].tls.certificates"), "a TLS listener needs at least one certificate");
        }
    }
}

fn upstreams(config: &Config, c: &mut Checker) {
    c.unique(
        "upstream",
        config.upstreams.iter().enumerate().map(|(i, u)| (format!("upstreams[{i}].name"), u.name.as_str())),
    );
    for (i, u) in config.upstreams.iter().enumerate() {
        let at = |f: &str| format!("upstreams[{i}].{f}");
        if u.targets.is_empty() {
            c.err(at("targets"), "an upstream needs at least one target");
        }
        for (j, t) in u.targets.iter().enumerate() {
            if let Err(e) = check_host_port(&t.address) {
                c.err(format!("upstreams[{i}].targets[{j}].address"), e);
            }
        }
        match (&u.hash_on, u.algorithm) {
            (Some(h), Algorithm::ConsistentHash) => {
                if let Err(e) = HashOn::parse(h) {
                    c.err(at("hash_on"), e);
                }
            }
            (None, Algorithm::ConsistentHash) => {
                c.err(at("hash_on"), "consistent-hash needs hash_on: header:NAME, cookie:NAME or ip")
            }
            (Some(_), _) => c.err(at("hash_on"), "hash_on is only used with algorithm: consistent-hash"),
            (None, _) => {}
        }
        health(&u.health, &at("health"), c);
        target_limit(u.target_limit.as_ref(), &at("target_limit"), c);
    }
}

/// A per-target concurrency limit, of an upstream or of a `url` service.
fn target_limit(l: Option<&TargetLimit>, at: &str, c: &mut Checker) {
    if l.is_some_and(|l| l.max_in_flight == 0) {
        c.err(format!("{at}.max_in_flight"), "must be at least 1");
    }
}

/// Active and passive health settings, of an upstream or of a `url` service.
fn health(h: &Health, at: &str, c: &mut Checker) {
    if let Some(a) = &h.active {
        if a.interval.get().is_zero() || a.timeout.get().is_zero() {
            c.err(format!("{at}.active"), "interval and timeout must be greater than zero");
        }
        if a.healthy_after == 0 || a.unhealthy_after == 0 {
            c.err(format!("{at}.active"), "healthy_after and unhealthy_after must be at least 1");
        }
        if !a.path.starts_with('/') {
            c.err(format!("{at}.active.path"), format!("path {:?} must start with \"/\"", a.path));
        }
    }
    if let Some(p) = &h.passive {
        if p.unhealthy_after == 0 {
            c.err(format!("{at}.passive.unhealthy_after"), "must be at least 1");
        }
        if p.max_ejected_percent > 100 {
            c.err(format!("{at}.passive.max_ejected_percent"), "must be between 0 and 100");
        }
        if p.max_ejection_time < p.recover_after {
            c.err(
                format!("{at}.passive.max_ejection_time"),
                format!("must be at least recover_after ({})", p.recover_after),
            );
        }
    }
}

/// A retry policy of a service or route.
fn retry(r: &Retry, at: &str, c: &mut Checker) {
    if r.attempts > 10 {
        c.err(format!("{at}.attempts"), "at most 10 retries (more multiplies load during an outage)");
    }
    if r.attempts > 0 && r.on.is_empty() {
        c.err(format!("{at}.on"), "list at least one outcome to retry on (e.g. connect-failure, 503)");
    }
    for (j, on) in r.on.iter().enumerate() {
        if let RetryOn::Status(code) = on
            && !(400..=599).contains(code)
        {
            c.err(format!("{at}.on[{j}]"), format!("status {code} is not an error status (400-599)"));
        }
    }
    let b = &r.budget;
    if !b.ratio.is_finite() || b.ratio < 0.0 {
        c.err(format!("{at}.budget.ratio"), "must be a number of at least 0 (0.2: retries add at most 20 %)");
    }
}

fn services(config: &Config, c: &mut Checker) {
    c.unique(
        "service",
        config.services.iter().enumerate().map(|(i, s)| (format!("services[{i}].name"), s.name.as_str())),
    );
    let upstreams: HashSet<&str> = config.upstreams.iter().map(|u| u.name.as_str()).collect();
    for (i, s) in config.services.iter().enumerate() {
        let at = |f: &str| format!("services[{i}].{f}");
        match (&s.url, &s.upstream) {
            (Some(url), None) => {
                if let Err(e) = ServiceUrl::parse(url) {
                    c.err(at("url"), e);
                }
                if s.path.is_some() {
                    c.err(at("path"), "path goes with upstream:; put the base path in the url instead");
                }
            }
            (None, Some(up)) => {
                if !upstreams.contains(up.as_str()) {
                    c.err(
                        at("upstream"),
                        format!("unknown upstream {up:?}{}", known(config.upstreams.iter().map(|u| &u.name))),
                    );
                }
            }
            (Some(_), Some(_)) => c.err(at("url"), "set either url or upstream, not both"),
            (None, None) => c.err(format!("services[{i}]"), "a service needs a url or an upstream"),
        }
        if let Some(p) = &s.path
            && !p.starts_with('/')
        {
            c.err(at("path"), format!("path {p:?} must start with \"/\""));
        }
        if s.timeouts.connect.get().is_zero() || s.timeouts.read.get().is_zero() || s.timeouts.write.get().is_zero() {
            c.err(at("timeouts"), "timeouts must be greater than zero");
        }
        if s.keepalive.idle_timeout.get().is_zero() {
            c.err(
                at("keepalive.idle_timeout"),
                "must be greater than zero (set keepalive.max_idle: 0 to turn reuse off)",
            );
        }
        if s.retries.is_some_and(|n| n > 10) {
            c.err(at("retries"), "at most 10 retries (more multiplies load during an outage)");
        }
        match (&s.retry, s.retries) {
            (Some(_), Some(_)) => c.err(at("retries"), "set either retries (shorthand) or retry, not both"),
            (Some(r), None) => retry(r, &at("retry"), c),
            _ => {}
        }
        match (&s.target_limit, &s.upstream) {
            (Some(_), Some(_)) => {
                c.err(at("target_limit"), "a service with upstream: takes target_limit from the upstream")
            }
            (l, _) => target_limit(l.as_ref(), &at("target_limit"), c),
        }
        match (&s.health, &s.upstream) {
            (Some(_), Some(_)) => c.err(at("health"), "a service with upstream: takes health checks from the upstream"),
            (Some(h), None) => health(h, &at("health"), c),
            _ => {}
        }
        nested_plugins(&s.plugins, &at("plugins"), c);
    }
}

fn routes(config: &Config, c: &mut Checker) {
    c.unique("route", config.routes.iter().enumerate().map(|(i, r)| (format!("routes[{i}].name"), r.name.as_str())));
    let services: HashSet<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
    for (i, r) in config.routes.iter().enumerate() {
        let at = |f: &str| format!("routes[{i}].{f}");
        route_services(config, r, i, &services, c);
        for (j, h) in r.hosts.iter().enumerate() {
            let name = h.strip_prefix("*.").unwrap_or(h);
            if name.is_empty() || name.contains(['*', ' ', '/', ':']) {
                c.err(
                    format!("routes[{i}].hosts[{j}]"),
                    format!("invalid host {h:?}: use api.example.com or *.example.com"),
                );
            }
        }
        for (j, p) in r.paths.iter().enumerate() {
            if let Err(e) = PathPattern::parse(p) {
                c.err(format!("routes[{i}].paths[{j}]"), e);
            }
        }
        for (j, m) in r.methods.iter().enumerate() {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                c.err(format!("routes[{i}].methods[{j}]"), format!("invalid method {m:?}: use upper case, e.g. GET"));
            }
        }
        for (name, values) in &r.headers {
            let field = format!("routes[{i}].headers.{name}");
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                c.err(field.clone(), format!("invalid header name {name:?}"));
            }
            if values.as_slice().is_empty() {
                c.err(field.clone(), "list at least one value");
            }
            for v in values.as_slice() {
                if let Some(re) = v.strip_prefix('~')
                    && let Err(e) = regex::Regex::new(re)
                {
                    c.err(field.clone(), format!("invalid regex {v:?}: {}", crate::patterns::regex_error(&e)));
                }
            }
        }
        for (j, u) in r.upgrades.iter().enumerate() {
            let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&b);
            if u.eq_ignore_ascii_case("h2c") {
                let msg = "h2c upgrades are never forwarded: the tunnel would reach every path past the route's plugins; \
                           use h2c between the gateway and the service instead (services[].protocol: h2c)";
                c.err(format!("routes[{i}].upgrades[{j}]"), msg);
            } else if u.is_empty() || !u.bytes().all(token) {
                c.err(format!("routes[{i}].upgrades[{j}]"), format!("invalid protocol {u:?}: e.g. websocket"));
            }
        }
        if let Some(rt) = &r.retry {
            retry(rt, &at("retry"), c);
        }
        if let Some(t) = &r.timeouts
            && [t.connect, t.read, t.write].iter().any(|d| d.is_some_and(|d| d.get().is_zero()))
        {
            c.err(at("timeouts"), "timeouts must be greater than zero");
        }
        nested_plugins(&r.plugins, &at("plugins"), c);
    }
}

/// `service` or weighted `services` (with `sticky`), and `mirror`.
fn route_services(config: &Config, r: &Route, i: usize, services: &HashSet<&str>, c: &mut Checker) {
    let at = |f: &str| format!("routes[{i}].{f}");
    let unknown = |name: &str| format!("unknown service {name:?}{}", known(config.services.iter().map(|s| &s.name)));
    if !r.backends.is_empty() {
        return aggregation(r, i, services, &unknown, c);
    }
    if r.aggregate.is_some() {
        c.err(at("aggregate"), "aggregate goes with backends: (an aggregation route)");
    }
    match (&r.service, r.services.is_empty()) {
        (Some(s), true) => {
            if !services.contains(s.as_str()) {
                c.err(at("service"), unknown(s));
            }
        }
        (Some(_), false) => c.err(at("services"), "set either service or services, not both"),
        (None, true) => {
            c.err(format!("routes[{i}]"), "a route needs service (or weighted services, or aggregation backends)")
        }
        (None, false) => {
            let mut seen = HashSet::new();
            for (j, w) in r.services.iter().enumerate() {
                if !services.contains(w.name.as_str()) {
                    c.err(at(&format!("services[{j}].name")), unknown(&w.name));
                } else if !seen.insert(w.name.as_str()) {
                    c.err(at(&format!("services[{j}].name")), format!("service {:?} is listed twice", w.name));
                }
                if w.weight == 0 {
                    c.err(at(&format!("services[{j}].weight")), "must be greater than 0 (remove the entry instead)");
                }
            }
        }
    }
    if let Some(s) = &r.sticky {
        if r.services.is_empty() {
            c.err(at("sticky"), "sticky goes with services: (a weighted split)");
        }
        match (&s.header, &s.cookie) {
            (Some(h), None) => {
                if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    c.err(at("sticky.header"), format!("invalid header name {h:?}"));
                }
            }
            (None, Some(k)) => {
                if k.is_empty() || k.contains([';', '=', ' ', ',']) {
                    c.err(at("sticky.cookie"), format!("invalid cookie name {k:?}"));
                }
            }
            _ => c.err(at("sticky"), "set one of header or cookie"),
        }
    }
    if let Some(m) = &r.mirror {
        if !services.contains(m.service.as_str()) {
            c.err(at("mirror.service"), unknown(&m.service));
        }
        if !(0.0..=100.0).contains(&m.percentage) {
            c.err(at("mirror.percentage"), format!("must be between 0 and 100, not {}", m.percentage));
        }
    }
}

/// An aggregation route: `backends` instead of `service`/`services`, and what cannot go with it.
fn aggregation(r: &Route, i: usize, services: &HashSet<&str>, unknown: &dyn Fn(&str) -> String, c: &mut Checker) {
    let at = |f: &str| format!("routes[{i}].{f}");
    if r.service.is_some() {
        c.err(at("backends"), "set either service or backends, not both");
    }
    if !r.services.is_empty() {
        c.err(at("backends"), "set either services or backends, not both");
    }
    if r.mirror.is_some() {
        c.err(at("mirror"), "mirror goes with service: or services:, not with backends:");
    }
    if r.strip_path {
        c.err(at("strip_path"), "has no effect with backends: (each backend's path is its own)");
    }
    if let Some(a) = &r.aggregate {
        if a.timeout.get().is_zero() {
            c.err(at("aggregate.timeout"), "must be greater than zero");
        }
        if a.max_body_bytes.bytes() == 0 {
            c.err(at("aggregate.max_body_bytes"), "must be greater than zero");
        }
    }
    for (field, message) in crate::aggregate::check(&r.backends, &format!("routes[{i}]"), services, unknown) {
        c.err(field, message);
    }
}

fn nested_plugins(list: &[PluginRef], field: &str, c: &mut Checker) {
    for (j, p) in list.iter().enumerate() {
        if p.route.is_some() || p.service.is_some() {
            c.err(format!("{field}[{j}]"), "route:/service: belong in the top-level plugins list only");
        }
    }
}

fn plugins(config: &Config, c: &mut Checker) {
    for (i, p) in config.plugins.iter().enumerate() {
        if let Some(r) = &p.route
            && !config.routes.iter().any(|x| &x.name == r)
        {
            c.err(format!("plugins[{i}].route"), format!("unknown route {r:?}"));
        }
        if let Some(s) = &p.service
            && !config.services.iter().any(|x| &x.name == s)
        {
            c.err(format!("plugins[{i}].service"), format!("unknown service {s:?}"));
        }
        if p.route.is_some() && p.service.is_some() {
            c.err(format!("plugins[{i}]"), "set route or service, not both");
        }
    }
}

/// ` (known: a, b, c)` for messages about unknown references, so typos are easy to spot.
fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() { " (none are defined)".into() } else { format!(" (known: {})", names.join(", ")) }
}

#[cfg(test)]
mod tests {
    use crate::load_str;
    use std::path::Path;

    /// `file:line:col: field: message` for every error of `routes` (after two services and a listener).
    fn errors(routes: &str) -> Vec<String> {
        let text = format!(
            "listeners: [{{name: a, address: \"127.0.0.1:1\"}}]\nservices:\n- {{name: v1, url: \"http://127.0.0.1:2\"}}\n- {{name: v2, url: \"http://127.0.0.1:3\"}}\nroutes:\n{routes}"
        );
        match load_str(Path::new("c.yaml"), &text) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn h2c_upgrades_are_refused() {
        assert_eq!(errors("- {name: r, service: v1, upgrades: [websocket, SPDY/3.1]}\n"), Vec::<String>::new());
        assert_eq!(
            errors("- {name: r, service: v1, upgrades: [websocket, H2C, 'a b']}\n"),
            [
                "c.yaml:6:48: routes[0].upgrades[1]: h2c upgrades are never forwarded: the tunnel would reach every path past the route's plugins; use h2c between the gateway and the service instead (services[].protocol: h2c)",
                "c.yaml:6:53: routes[0].upgrades[2]: invalid protocol \"a b\": e.g. websocket",
            ]
        );
    }

    #[test]
    fn split_and_mirror_errors_name_the_field() {
        let ok = "- name: r\n  services: [{name: v1, weight: 90}, {name: v2, weight: 10}]\n  sticky: {header: X-User}\n  mirror: {service: v2, percentage: 12.5}\n";
        assert_eq!(errors(ok), Vec::<String>::new());
        assert_eq!(
            errors("- name: r\n  service: v1\n  services: [{name: v2, weight: 1}]\n"),
            ["c.yaml:8:13: routes[0].services: set either service or services, not both"]
        );
        assert_eq!(
            errors("- name: r\n  paths: [/]\n"),
            ["c.yaml:6:3: routes[0]: a route needs service (or weighted services, or aggregation backends)"]
        );
        assert_eq!(
            errors(
                "- name: r\n  services:\n  - {name: v1, weight: 0}\n  - {name: v3, weight: 1}\n  - {name: v1, weight: 2}\n"
            ),
            [
                "c.yaml:8:24: routes[0].services[0].weight: must be greater than 0 (remove the entry instead)",
                "c.yaml:9:12: routes[0].services[1].name: unknown service \"v3\" (known: v1, v2)",
                "c.yaml:10:12: routes[0].services[2].name: service \"v1\" is listed twice",
            ]
        );
        assert_eq!(
            errors("- name: r\n  service: v1\n  sticky: {header: X-User, cookie: s}\n"),
            [
                "c.yaml:8:11: routes[0].sticky: sticky goes with services: (a weighted split)",
                "c.yaml:8:11: routes[0].sticky: set one of header or cookie",
            ]
        );
        assert_eq!(
            errors("- name: r\n  service: v1\n  mirror: {service: shadow, percentage: 101}\n"),
            [
                "c.yaml:8:21: routes[0].mirror.service: unknown service \"shadow\" (known: v1, v2)",
                "c.yaml:8:41: routes[0].mirror.percentage: must be between 0 and 100, not 101",
            ]
        );
    }
}
