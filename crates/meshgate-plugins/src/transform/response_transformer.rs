//! `response-transformer`: changes the answer on its way to the client: the fields of an
//! upstream's JSON body in the response body phase (read whole, up to `max_body_bytes`, within
//! the service's read timeout; `Content-Length` set after), then headers in `on_response` (on
//! every answer, the gateway's own errors included). Templates read the request
//! (`{header.x-user}` is a request header), copied in `on_request` before it went upstream.
//!
//! An upstream body that is not JSON, too large or not valid JSON goes to the client untouched,
//! or with `on_unsupported_body: refuse` is replaced by a 502 (`upstream_body_not_json`,
//! `upstream_body_too_large`, `upstream_body_invalid_json`): the client asked for nothing wrong,
//! the upstream answered what this route cannot serve. Encoded bodies always pass.

use super::template::{Captured, Scope, capture};
use super::{Compiled, Config, Reason, Stats};
use bytes::Bytes;
use http::StatusCode;
use meshgate_core::{
    BuildContext, Built, Flow, PathParams, Phases, Plugin, PluginConfigError, PluginFactory, RequestCtx, SpanTags,
    async_trait, json_error, parse_config,
};
use std::sync::Arc;

/// Registers `response-transformer`.
pub struct Factory;

/// Response bodies seen, since start; exported by request-transformer's factory, which writes
/// both transformers' counters in one family each.
pub(crate) static STATS: Stats = Stats::new();

pub(crate) const NAME: &str = "response-transformer";

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        NAME
    }
    fn priority(&self) -> i32 {
        800
    }
    fn build(&self, config: &serde_json::Value, _cx: &BuildContext) -> Result<Built, PluginConfigError> {
        let c: Config = parse_config(config)?;
        if let Some(field) = c.query_fields().first() {
            return Err(PluginConfigError::new(
                *field,
                "responses have no query arguments; use request-transformer to change the request's",
            ));
        }
        let compiled = super::compile(&c, &STATS)?;
        let mut phases = Phases::default();
        if !compiled.sources.0.is_empty() {
            phases = phases | Phases::ON_REQUEST;
        }
        if !compiled.headers.is_empty() {
            phases = phases | Phases::ON_RESPONSE;
        }
        if !compiled.body.ops.is_empty() {
            phases = phases | Phases::RESPONSE_BODY;
        }
        Ok(Built::Plugin(Arc::new(ResponseTransformer { c: compiled, phases })))
    }
}

struct ResponseTransformer {
    c: Compiled,
    phases: Phases,
}

/// The request's header and query values the templates read, copied before the request went.
#[derive(Clone)]
struct Captures(Captured);

impl ResponseTransformer {
    fn scope<'a>(&self, cx: &'a RequestCtx) -> Scope<'a> {
        Scope {
            captured: cx.vars.get::<Captures>().map(|c| &c.0),
            path: cx.vars.get::<PathParams>(),
            auth: cx.auth.as_ref(),
        }
    }
}

#[async_trait]
impl Plugin for ResponseTransformer {
    fn phases(&self) -> Phases {
        self.phases
    }

    async fn on_request(&self, cx: &mut RequestCtx) -> Flow {
        let captured = capture(&self.c.sources, &cx.request);
        cx.vars.insert(Captures(captured));
        Flow::Continue
    }

    async fn on_response(&self, cx: &mut RequestCtx, response: &mut http::response::Parts) {
        self.c.headers.apply(&mut response.headers, &self.scope(cx));
    }

    fn response_body_limit(&self, _cx: &RequestCtx, response: &http::response::Parts) -> Option<u64> {
        self.c.body.limit(&response.headers)
    }

    async fn on_response_body(
        &self,
        cx: &mut RequestCtx,
        response: &mut http::response::Parts,
        body: Option<&mut Bytes>,
    ) -> Flow {
        let result = self.c.body.apply(&response.headers, body, &self.scope(cx));
        SpanTags::add(cx, "meshgate.transform.response", super::trace_label(&result));
        match result {
            Ok(_) => Flow::Continue,
            Err(reason) => {
                let (code, msg) = match reason {
                    Reason::TooLarge => (
                        "upstream_body_too_large",
                        format!("the upstream's answer is larger than {} bytes, the most transformed", self.c.body.max),
                    ),
                    Reason::InvalidJson => {
                        ("upstream_body_invalid_json", "the upstream's answer is not valid JSON".into())
                    }
                    Reason::NotJson | Reason::Encoded => {
                        ("upstream_body_not_json", "the upstream answered something other than JSON".into())
                    }
                };
                Flow::Respond(json_error(StatusCode::BAD_GATEWAY, code, &msg))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{plugin, request};
    use serde_json::json;

    fn response(headers: &[(&str, &str)]) -> http::response::Parts {
        let mut b = http::Response::builder();
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[tokio::test]
    async fn body_and_headers_with_request_templates() {
        let p = plugin(
            &Factory,
            json!({
                "remove": {"headers": ["server"], "json": ["internal"]},
                "add": {"headers": {"x-served-for": "{header.x-user}"}, "json": {"page": "{query.page}"}},
                "rename": {"json": {"id": "user_id"}},
            }),
        )
        .unwrap();
        assert_eq!(p.phases(), Phases::ON_REQUEST | Phases::ON_RESPONSE | Phases::RESPONSE_BODY);
        let mut cx = request("/x?page=3", &[("x-user", "ann")]);
        assert!(matches!(p.on_request(&mut cx).await, Flow::Continue));
        // The request's headers leave with it; the copy stays.
        cx.request.headers.clear();
        let mut resp = response(&[("content-type", "application/json"), ("server", "up")]);
        assert_eq!(p.response_body_limit(&cx, &resp), Some(1024 * 1024));
        let mut body = Bytes::from_static(br#"{"id":1,"internal":{"x":1},"n":[1]}"#);
        assert!(matches!(p.on_response_body(&mut cx, &mut resp, Some(&mut body)).await, Flow::Continue));
        assert_eq!(body, r#"{"user_id":1,"n":[1],"page":"3"}"#);
        p.on_response(&mut cx, &mut resp).await;
        assert_eq!(resp.headers["x-served-for"], "ann");
        assert!(!resp.headers.contains_key("server"));
    }

    #[tokio::test]
    async fn refused_answers_are_502_with_a_reason() {
        let p = plugin(&Factory, json!({"remove": {"json": ["a"]}, "on_unsupported_body": "refuse"})).unwrap();
        let mut cx = request("/", &[]);
        let code = |f: Flow| match f {
            Flow::Respond(r) => (r.status().as_u16(), r.headers()["content-type"].clone()),
            Flow::Continue => panic!("refused"),
        };
        let mut html = response(&[("content-type", "text/html")]);
        assert_eq!(p.response_body_limit(&cx, &html), Some(0));
        assert_eq!(code(p.on_response_body(&mut cx, &mut html, None).await).0, 502);
        let mut json = response(&[("content-type", "application/json")]);
        assert_eq!(code(p.on_response_body(&mut cx, &mut json, None).await).0, 502);
    }

    #[test]
    fn query_operations_are_refused_on_responses() {
        let e = plugin(&Factory, json!({"add": {"query": {"a": "1"}}})).err().unwrap();
        assert_eq!(e.field, "add.query");
        assert!(e.message.contains("use request-transformer"), "{}", e.message);
    }
}
