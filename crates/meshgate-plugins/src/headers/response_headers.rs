//! `response-headers`: adds, overwrites or removes headers on responses to clients, e.g. security
//! headers, or removing `Server` and other internals an upstream leaks.

use meshgate_core::{
    BuildContext, Built, Phases, Plugin, PluginConfigError, PluginFactory, RequestCtx, async_trait, parse_config,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Registers `response-headers`.
pub struct Factory;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// Set when the response does not already have the header.
    add: BTreeMap<String, String>,
    /// Set, replacing any value the upstream sent.
    set: BTreeMap<String, String>,
    /// Removed.
    remove: Vec<String>,
}

type Pairs = Vec<(http::HeaderName, http::HeaderValue)>;

fn compile(map: &BTreeMap<String, String>, field: &str) -> Result<Pairs, PluginConfigError> {
    map.iter()
        .map(|(k, v)| {
            Ok((super::header_name(format!("{field}.{k}"), k)?, super::header_value(format!("{field}.{k}"), v)?))
        })
        .collect()
}

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "response-headers"
    }
    fn priority(&self) -> i32 {
        // After transformations, so its changes are the last word on the response head.
        100
    }
    fn build(&self, config: &serde_json::Value, _cx: &BuildContext) -> Result<Built, PluginConfigError> {
        let c: Config = parse_config(config)?;
        let remove = c
            .remove
            .iter()
            .enumerate()
            .map(|(i, n)| super::header_name(format!("remove[{i}]"), n))
            .collect::<Result<_, _>>()?;
        Ok(Built::Plugin(Arc::new(ResponseHeaders {
            add: compile(&c.add, "add")?,
            set: compile(&c.set, "set")?,
            remove,
        })))
    }
}

struct ResponseHeaders {
    add: Pairs,
    set: Pairs,
    remove: Vec<http::HeaderName>,
}

#[async_trait]
impl Plugin for ResponseHeaders {
    fn phases(&self) -> Phases {
        Phases::ON_RESPONSE
    }

    async fn on_response(&self, _cx: &mut RequestCtx, response: &mut http::response::Parts) {
        let h = &mut response.headers;
        for name in &self.remove {
            h.remove(name);
        }
        for (name, value) in &self.set {
            h.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            if !h.contains_key(name) {
                h.insert(name.clone(), value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn add_set_remove() {
        let p = crate::testing::plugin(
            &Factory,
            serde_json::json!({
                "add": {"X-Frame-Options": "DENY", "Cache-Control": "no-store"},
                "set": {"Server": "meshgate"},
                "remove": ["X-Powered-By"]
            }),
        )
        .unwrap();
        let (mut resp, _) = http::Response::builder()
            .header("cache-control", "max-age=60")
            .header("server", "nginx")
            .header("x-powered-by", "php")
            .body(())
            .unwrap()
            .into_parts();
        let (req, _) = http::Request::new(()).into_parts();
        let mut cx = RequestCtx::new(req, "127.0.0.1:1".parse().unwrap(), false);
        p.on_response(&mut cx, &mut resp).await;
        assert_eq!(resp.headers["x-frame-options"], "DENY");
        assert_eq!(resp.headers["cache-control"], "max-age=60");
        assert_eq!(resp.headers["server"], "meshgate");
        assert!(!resp.headers.contains_key("x-powered-by"));
    }

    #[test]
    fn bad_value_names_field() {
        let e = crate::testing::plugin(&Factory, serde_json::json!({"set": {"X-A": "bad\nvalue"}})).err().unwrap();
        assert_eq!(e.field, "set.X-A");
    }
}
