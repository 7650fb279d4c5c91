//! An aggregation route compiled: each backend as a route of its own to its service, its path
//! template and shaping precompiled, and the route's plugins merged over every backend's service.

use super::shape::Shape;
use super::template::PathTemplate;
use super::{AggregateRt, BackendRt};
use crate::chain::Chain;
use crate::snapshot::{RouteRt, ServiceRt};
use meshgate_config::aggregate::{dependencies, parse_template};
use meshgate_config::model::Route;
use std::collections::HashMap;
use std::sync::Arc;

/// The runtime form of aggregation route `r`. `chain` merges the plugins of global, the named
/// services and the route; `unit` makes the route's form for one service (balancer, retries,
/// timeouts). `None` when a service is unknown (validation said so).
pub(crate) fn compile(
    r: &Route,
    services: &HashMap<&str, Arc<ServiceRt>>,
    chain: &dyn Fn(&[&str]) -> Chain,
    unit: &dyn Fn(&Arc<ServiceRt>, Chain) -> RouteRt,
) -> Option<RouteRt> {
    let settings = r.aggregate.clone().unwrap_or_default();
    let deps = dependencies(&r.backends);
    let index: HashMap<&str, usize> = r.backends.iter().enumerate().map(|(i, b)| (b.name(), i)).collect();
    let mut budget = None;
    let mut backends = Vec::with_capacity(r.backends.len());
    for (i, b) in r.backends.iter().enumerate() {
        let svc = services.get(b.service.as_str())?;
        let mut route = unit(svc, chain(&[&b.service]));
        // One retry budget per route, however many backends share it (as for a split).
        let shared = budget.get_or_insert_with(|| route.retry.budget.clone());
        route.retry.budget = shared.clone();
        backends.push(BackendRt {
            name: b.name().into(),
            route,
            method: http::Method::from_bytes(b.method.as_bytes()).ok()?,
            path: PathTemplate::compile(parse_template(&b.path).ok()?, &index)?,
            timeout: b.timeout.unwrap_or(settings.timeout).get(),
            deps: deps[i].clone().into(),
            has_dependents: deps.iter().any(|d| d.contains(&i)),
            shape: Shape::compile(b),
            outcomes: Default::default(),
        });
    }
    let mut names: Vec<&str> = Vec::new();
    for b in &r.backends {
        if !names.contains(&b.service.as_str()) {
            names.push(&b.service);
        }
    }
    // The route stands for all its services: plugins of each apply (an authentication plugin on
    // a backend's service must not be bypassed through an aggregation route).
    let mut top = unit(&backends.first()?.route.service, chain(&names));
    top.info.service = names.join(",").into();
    top.retry.budget = budget?;
    top.aggregate = Some(Box::new(AggregateRt {
        backends: backends.into(),
        timeout: settings.timeout.get(),
        max_body: settings.max_body_bytes.bytes(),
    }));
    Some(top)
}
