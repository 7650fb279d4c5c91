//! Services as the proxy runs them: their targets (from `url` or an upstream), balancing,
//! health checks, connection settings and TLS to the upstream.

use super::{Proto, ServiceRt, TargetRt, UpstreamTimeouts};
use crate::tls;
use meshgate_balance::{ActiveConfig, Balancer, PassiveConfig, TargetLimit, TargetRegistry, TargetSpec, TargetState};
use meshgate_config::model::{Algorithm, Config, Health, Protocol, Service};
use meshgate_config::{ConfigError, HashOn, ServiceUrl, Source};
use std::sync::Arc;

pub(super) fn service(
    config: &Config,
    s: &Service,
    index: usize,
    source: &Source,
    registry: &TargetRegistry,
    active_checks: &mut Vec<(String, Vec<Arc<TargetState>>, ActiveConfig)>,
) -> Result<(ServiceRt, String), ConfigError> {
    let field = format!("services[{index}]");
    let origin = origin(config, s, &field, source)?;
    let url_tls = origin.url.as_ref().is_some_and(|u| u.tls);
    let proto = match (s.protocol, url_tls) {
        (Some(Protocol::H2c), _) => Proto::H2c,
        (Some(Protocol::Https), _) | (None, true) => Proto::Tls,
        _ => Proto::Http1,
    };
    let tls = if proto == Proto::Tls {
        let config = tls::client_config(&s.tls, source, &format!("{field}.tls"))?;
        let url_host = origin.url.as_ref().map(|u| u.host.clone());
        let host =
            s.tls.server_name.clone().or(url_host).unwrap_or_else(|| host_of(&origin.specs[0].address).to_owned());
        let name = tls::server_name(&host).map_err(|m| source.error(format!("{field}.tls.server_name"), m))?;
        Some((config, name))
    } else {
        None
    };
    let Origin { balancer_name, specs, algorithm, hash_on, health, target_limit, url, base_path } = origin;
    let passive = health.and_then(|h| h.passive.as_ref()).map(PassiveConfig::from);
    let mut balancer = Balancer::new(&balancer_name, algorithm, hash_on, &specs, passive, registry);
    if let Some(l) = target_limit {
        balancer = balancer.with_target_limit(TargetLimit {
            max_in_flight: l.max_in_flight,
            queue_size: l.queue.size,
            queue_timeout: l.queue.timeout.get(),
        });
    }
    if let Some(a) = health.and_then(|h| h.active.as_ref())
        && !active_checks.iter().any(|(n, _, _)| n == &balancer_name)
    {
        let cfg = ActiveConfig::from(a);
        active_checks.push((balancer_name.clone(), balancer.targets().to_vec(), cfg));
    }
    let targets = specs
        .iter()
        .map(|t| {
            // The Host header names the server as the URL did (no default port), or the target.
            let authority = match &url {
                Some(u) if u.port == if u.tls { 443 } else { 80 } => {
                    if u.host.contains(':') {
                        format!("[{}]", u.host)
                    } else {
                        u.host.clone()
                    }
                }
                _ => t.address.clone(),
            };
            let host_header = http::HeaderValue::try_from(authority)
                .map_err(|_| source.error(field.clone(), format!("invalid address {:?}", t.address)))?;
            let pool_key = match proto {
                Proto::Http1 => format!("http|{}", t.address),
                Proto::H2c => format!("h2c|{}", t.address),
                Proto::Tls => format!("tls|{}|{}", t.address, s.name),
            };
            Ok(TargetRt { address: t.address.as_str().into(), pool_key: pool_key.into(), host_header })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    let t = &s.timeouts;
    let rt = ServiceRt {
        name: s.name.as_str().into(),
        balancer,
        targets: targets.into(),
        proto,
        tls,
        base_path,
        timeouts: UpstreamTimeouts { connect: t.connect.get(), read: t.read.get(), write: t.write.get() },
        retry: s.retry_policy(),
        max_idle: s.keepalive.max_idle,
        idle_timeout: s.keepalive.idle_timeout.get(),
    };
    Ok((rt, balancer_name))
}

/// Where a service's requests go: its `url` (a one-target upstream of its own, so both kinds
/// share one code path) or its named `upstream`.
struct Origin<'a> {
    /// Name under which target state is kept (`service:NAME` for a URL).
    balancer_name: String,
    specs: Vec<TargetSpec>,
    algorithm: Algorithm,
    hash_on: Option<HashOn>,
    health: Option<&'a Health>,
    target_limit: Option<&'a meshgate_config::model::TargetLimit>,
    /// The parsed URL; its host names the server in Host and TLS.
    url: Option<ServiceUrl>,
    /// Prepended to forwarded paths.
    base_path: String,
}

fn origin<'a>(config: &'a Config, s: &'a Service, field: &str, source: &Source) -> Result<Origin<'a>, ConfigError> {
    match (&s.url, &s.upstream) {
        (Some(url), _) => {
            let u = ServiceUrl::parse(url).map_err(|m| source.error(format!("{field}.url"), m))?;
            let address = if u.host.contains(':') {
                format!("[{}]:{}", u.host, u.port)
            } else {
                format!("{}:{}", u.host, u.port)
            };
            Ok(Origin {
                balancer_name: format!("service:{}", s.name),
                specs: vec![TargetSpec { address, weight: 1 }],
                algorithm: Algorithm::default(),
                hash_on: None,
                health: s.health.as_ref(),
                target_limit: s.target_limit.as_ref(),
                base_path: u.base_path.clone(),
                url: Some(u),
            })
        }
        (None, Some(name)) => {
            let up = config
                .upstreams
                .iter()
                .find(|u| &u.name == name)
                .ok_or_else(|| source.error(format!("{field}.upstream"), "unknown upstream"))?;
            Ok(Origin {
                balancer_name: up.name.clone(),
                specs: up.targets.iter().map(|t| TargetSpec { address: t.address.clone(), weight: t.weight }).collect(),
                algorithm: up.algorithm,
                hash_on: up.hash_on.as_deref().and_then(|h| HashOn::parse(h).ok()),
                health: Some(&up.health),
                target_limit: up.target_limit.as_ref(),
                url: None,
                base_path: s.path.as_deref().unwrap_or("").trim_end_matches('/').to_owned(),
            })
        }
        (None, None) => Err(source.error(field, "needs `url` or `upstream`")),
    }
}

/// The host part of `host:port` (IPv6 brackets removed).
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}
