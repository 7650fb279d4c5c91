//! `request-id`: gives every request an id that follows it upstream and back to the client, so a
//! client's bug report and the upstream's logs can be joined. An id sent by the client (or by a
//! gateway in front) is kept, unless configured otherwise.

use meshgate_core::{
    BuildContext, Built, Flow, Phases, Plugin, PluginConfigError, PluginFactory, RequestCtx, async_trait, parse_config,
};
use serde::Deserialize;
use std::sync::Arc;

/// Registers `request-id`.
pub struct Factory;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// Header carrying the id.
    header_name: String,
    /// Keep an id the client sent instead of replacing it.
    trust_incoming: bool,
    /// Copy the id into the response to the client.
    echo_downstream: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config { header_name: "x-request-id".into(), trust_incoming: true, echo_downstream: true }
    }
}

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "request-id"
    }
    fn priority(&self) -> i32 {
        // Before everything else, so that even requests refused by auth carry an id.
        100_000
    }
    fn build(&self, config: &serde_json::Value, _cx: &BuildContext) -> Result<Built, PluginConfigError> {
        let c: Config = parse_config(config)?;
        let header = super::header_name("header_name".into(), &c.header_name)?;
        Ok(Built::Plugin(Arc::new(RequestId { header, trust_incoming: c.trust_incoming, echo: c.echo_downstream })))
    }
}

struct RequestId {
    header: http::HeaderName,
    trust_incoming: bool,
    echo: bool,
}

#[async_trait]
impl Plugin for RequestId {
    fn phases(&self) -> Phases {
        // The echoed id goes in `cx.response_headers`: no `on_response` phase.
        Phases::ON_REQUEST
    }

    async fn on_request(&self, cx: &mut RequestCtx) -> Flow {
        let incoming = self.request_header(cx).filter(|v| !v.is_empty() && v.len() <= 200);
        let id = match incoming {
            Some(v) if self.trust_incoming => v.clone(),
            _ => new_id(),
        };
        cx.request.headers.insert(self.header.clone(), id.clone());
        if self.echo {
            cx.response_headers.push((self.header.clone(), id.clone()));
        }
        // Kept for access logs.
        cx.vars.insert(meshgate_core::RequestId(id));
        Flow::Continue
    }
}

impl RequestId {
    fn request_header<'a>(&self, cx: &'a RequestCtx) -> Option<&'a http::HeaderValue> {
        cx.request.headers.get(&self.header)
    }
}

/// A random UUIDv4 string: unique without coordination between gateway nodes.
fn new_id() -> http::HeaderValue {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 36];
    let mut o = 0;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[o] = b'-';
            o += 1;
        }
        out[o] = HEX[(byte >> 4) as usize];
        out[o + 1] = HEX[(byte & 0xf) as usize];
        o += 2;
    }
    http::HeaderValue::from_bytes(&out).expect("hex and dashes are valid header bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(headers: &[(&str, &str)]) -> RequestCtx {
        let mut b = http::Request::builder().uri("/x");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let (parts, _) = b.body(()).unwrap().into_parts();
        RequestCtx::new(parts, "127.0.0.1:1".parse().unwrap(), false)
    }

    #[tokio::test]
    async fn generates_and_echoes() {
        let p = crate::testing::plugin(&Factory, serde_json::Value::Null).unwrap();
        let mut cx = ctx(&[]);
        assert!(matches!(p.on_request(&mut cx).await, Flow::Continue));
        let id = cx.request.headers.get("x-request-id").unwrap().clone();
        assert_eq!(id.len(), 36);
        assert_eq!(cx.response_headers, [(http::HeaderName::from_static("x-request-id"), id.clone())], "echoed");
        assert_ne!(new_id(), new_id());
        let quiet = crate::testing::plugin(&Factory, serde_json::json!({"echo_downstream": false})).unwrap();
        let mut cx = ctx(&[]);
        quiet.on_request(&mut cx).await;
        assert!(cx.request.headers.contains_key("x-request-id") && cx.response_headers.is_empty());
    }

    #[tokio::test]
    async fn keeps_or_replaces_incoming() {
        let p = crate::testing::plugin(&Factory, serde_json::Value::Null).unwrap();
        let mut cx = ctx(&[("x-request-id", "abc")]);
        p.on_request(&mut cx).await;
        assert_eq!(cx.request.headers["x-request-id"], "abc");

        let p =
            crate::testing::plugin(&Factory, serde_json::json!({"trust_incoming": false, "header_name": "X-Trace"}))
                .unwrap();
        let mut cx = ctx(&[("x-trace", "abc")]);
        p.on_request(&mut cx).await;
        assert_ne!(cx.request.headers["x-trace"], "abc");
    }

    #[test]
    fn bad_config_names_field() {
        let e = crate::testing::plugin(&Factory, serde_json::json!({"header_name": "bad header"})).err().unwrap();
        assert_eq!(e.field, "header_name");
        let e = crate::testing::plugin(&Factory, serde_json::json!({"headr_name": "x"})).err().unwrap();
        assert!(e.message.contains("unknown field"), "{e}");
    }
}
