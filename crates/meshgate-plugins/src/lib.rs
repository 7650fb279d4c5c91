//! meshgate's built-in plugins. Each plugin is one module with one job; modules are grouped by
//! concern (`access`, `auth`, `headers`, `observability`, `traffic`, `transform`). Adding a plugin
//! means adding its module and one line in [`builtin`].

pub mod access;
pub mod auth;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod headers;
pub mod observability;
mod outbound;
#[cfg(test)]
mod testing;
pub mod traffic;
pub mod transform;

use meshgate_core::Registry;

/// A registry with every built-in plugin.
pub fn builtin() -> Registry {
    auth::jwt::install_crypto();
    let mut r = Registry::new();
    r.register(access::acl::Factory);
    r.register(observability::access_log::Factory);
    r.register(observability::tracing::Factory);
    r.register(access::ip_restriction::Factory);
    r.register(auth::basic_auth::Factory);
    r.register(auth::jwt::Factory);
    r.register(auth::key_auth::Factory);
    r.register(auth::mtls_auth::Factory);
    r.register(headers::request_id::Factory);
    r.register(headers::response_headers::Factory);
    r.register(traffic::concurrency_limit::Factory);
    r.register(traffic::fault_injection::Factory);
    r.register(traffic::rate_limiting::Factory);
    r.register(traffic::request_size_limiting::Factory);
    r.register(transform::cors::Factory);
    r.register(transform::request_transformer::Factory);
    r.register(transform::response_transformer::Factory);
    r
}

#[cfg(test)]
mod tests {
    /// Prometheus refuses a whole scrape that describes a family twice, so the plugins together
    /// describe each of theirs once, whichever are configured (the e2e tests check the gateway's
    /// whole page with Prometheus' own `promtool`).
    #[test]
    fn every_plugin_family_is_described_once() {
        let mut r = meshgate_core::metrics::MetricsRegistry::default();
        for f in super::builtin().factories() {
            f.register_metrics(&mut r);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        let mut families: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).collect();
        let n = families.len();
        families.sort_unstable();
        families.dedup();
        assert_eq!(families.len(), n, "{text}");
        assert!(text.contains("meshgate_transform_bodies_total{plugin=\"response-transformer\""), "{text}");
    }
}
