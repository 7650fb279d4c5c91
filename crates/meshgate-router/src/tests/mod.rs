//! Tests through the public API, with small builders so each case reads like a config.

mod analysis;
mod precedence;
mod scale;

use crate::{RequestView, RouteSpec, Router};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use meshgate_config::model::{HeaderValues, Route};

/// A config route under construction.
#[derive(Clone)]
pub(crate) struct R(Route);

/// A route named `name` with no conditions.
pub(crate) fn r(name: &str) -> R {
    R(Route {
        name: name.into(),
        service: Some("svc".into()),
        services: vec![],
        backends: vec![],
        aggregate: None,
        sticky: None,
        mirror: None,
        hosts: vec![],
        paths: vec![],
        methods: vec![],
        headers: Default::default(),
        strip_path: false,
        preserve_host: false,
        upgrades: vec![],
        priority: 0,
        retry: None,
        timeouts: None,
        plugins: vec![],
    })
}

impl R {
    pub(crate) fn hosts(mut self, h: &[&str]) -> R {
        self.0.hosts = h.iter().map(|s| s.to_string()).collect();
        self
    }
    pub(crate) fn paths(mut self, p: &[&str]) -> R {
        self.0.paths = p.iter().map(|s| s.to_string()).collect();
        self
    }
    pub(crate) fn methods(mut self, m: &[&str]) -> R {
        self.0.methods = m.iter().map(|s| s.to_string()).collect();
        self
    }
    pub(crate) fn header(mut self, name: &str, values: &[&str]) -> R {
        self.0.headers.insert(name.into(), HeaderValues::Many(values.iter().map(|s| s.to_string()).collect()));
        self
    }
    pub(crate) fn prio(mut self, p: i32) -> R {
        self.0.priority = p;
        self
    }
    pub(crate) fn spec(&self) -> RouteSpec {
        RouteSpec::from_config(&self.0).unwrap()
    }
}

/// A router whose values are the route names.
pub(crate) fn router(routes: &[R]) -> Router<String> {
    Router::build(routes.iter().map(|r| (r.spec(), r.0.name.clone())).collect()).unwrap()
}

/// A request under construction.
pub(crate) struct Req {
    pub(crate) host: Option<&'static str>,
    pub(crate) path: &'static str,
    pub(crate) method: Method,
    pub(crate) headers: HeaderMap,
}

/// `GET path` with host `host` ("" for none).
pub(crate) fn req(host: &'static str, path: &'static str) -> Req {
    Req { host: (!host.is_empty()).then_some(host), path, method: Method::GET, headers: HeaderMap::new() }
}

impl Req {
    pub(crate) fn method(mut self, m: Method) -> Req {
        self.method = m;
        self
    }
    pub(crate) fn header(mut self, name: &str, value: &str) -> Req {
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
        self.headers.append(name, HeaderValue::from_str(value).unwrap());
        self
    }
    pub(crate) fn view(&self) -> RequestView<'_> {
        RequestView { host: self.host, path: self.path, method: &self.method, headers: &self.headers }
    }
}

/// The winning route's name and matched path length.
pub(crate) fn find(router: &Router<String>, req: &Req) -> Option<(String, usize)> {
    router.find(&req.view()).map(|m| (m.value.clone(), m.matched_path_len))
}
