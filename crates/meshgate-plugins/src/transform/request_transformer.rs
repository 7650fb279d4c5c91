//! `request-transformer`: changes the request before it goes upstream: headers and query
//! arguments in `on_request`, then the fields of a JSON body in the request body phase (the
//! proxy reads the body whole for it, up to `max_body_bytes`, and sets `Content-Length` after).
//!
//! A body that is not JSON, is larger than `max_body_bytes`, or is labelled JSON without being
//! JSON goes upstream untouched, or with `on_unsupported_body: refuse` is answered 415
//! `unsupported_media_type`, 413 `body_too_large` or 400 `invalid_json`. Encoded bodies
//! (`Content-Encoding: gzip`, …) always go on untouched.

use super::template::{Captured, Scope, capture};
use super::{Compiled, Config, Reason, Stats};
use bytes::Bytes;
use meshgate_core::metrics::MetricsRegistry;
use meshgate_core::{
    BuildContext, Built, ErrorKind, Flow, PathParams, Phases, Plugin, PluginConfigError, PluginFactory, RequestCtx,
    SpanTags, async_trait, json_error, parse_config,
};
use std::sync::Arc;

/// Registers `request-transformer`.
pub struct Factory;

/// Request bodies seen, since start.
pub(crate) static STATS: Stats = Stats::new();

pub(crate) const NAME: &str = "request-transformer";

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        NAME
    }
    fn priority(&self) -> i32 {
        // Transformations come after authentication and limits (so a refused request costs no
        // body read) and see the consumer.
        801
    }
    fn build(&self, config: &serde_json::Value, _cx: &BuildContext) -> Result<Built, PluginConfigError> {
        let c: Config = parse_config(config)?;
        let compiled = super::compile(&c, &STATS)?;
        let mut phases = Phases::default();
        if !compiled.headers.is_empty() || !compiled.query.is_empty() || compiled.json_reads_captured {
            phases = phases | Phases::ON_REQUEST;
        }
        if !compiled.body.ops.is_empty() {
            phases = phases | Phases::REQUEST_BODY;
        }
        Ok(Built::Plugin(Arc::new(RequestTransformer { c: compiled, phases })))
    }
    /// Registers the counters of both transformers (response-transformer registers none).
    fn register_metrics(&self, registry: &mut MetricsRegistry) {
        super::register_metrics(registry);
    }
}

struct RequestTransformer {
    c: Compiled,
    phases: Phases,
}

/// The request's header and query values the JSON operations' templates read, copied before
/// the header and query operations changed them.
#[derive(Clone)]
struct Captures(Captured);

#[async_trait]
impl Plugin for RequestTransformer {
    fn phases(&self) -> Phases {
        self.phases
    }

    async fn on_request(&self, cx: &mut RequestCtx) -> Flow {
        let captured = (!self.c.sources.0.is_empty()).then(|| capture(&self.c.sources, &cx.request));
        let scope = Scope { captured: captured.as_ref(), path: cx.vars.get::<PathParams>(), auth: cx.auth.as_ref() };
        self.c.headers.apply(&mut cx.request.headers, &scope);
        if !self.c.query.is_empty()
            && let Some(q) = self.c.query.apply(cx.request.uri.query().unwrap_or(""), &scope)
            && let Some(uri) = super::query::with_query(&cx.request.uri, &q)
        {
            cx.request.uri = uri;
        }
        if self.c.json_reads_captured
            && let Some(c) = captured
        {
            cx.vars.insert(Captures(c));
        }
        Flow::Continue
    }

    fn request_body_limit(&self, cx: &RequestCtx) -> Option<u64> {
        self.c.body.limit(&cx.request.headers)
    }

    async fn on_request_body(&self, cx: &mut RequestCtx, body: Option<&mut Bytes>) -> Flow {
        let scope = Scope {
            captured: cx.vars.get::<Captures>().map(|c| &c.0),
            path: cx.vars.get::<PathParams>(),
            auth: cx.auth.as_ref(),
        };
        let result = self.c.body.apply(&cx.request.headers, body, &scope);
        SpanTags::add(cx, "meshgate.transform.request", super::trace_label(&result));
        match result {
            Ok(_) => Flow::Continue,
            Err(reason) => Flow::Respond(refusal(reason, self.c.body.max)),
        }
    }
}

fn refusal(reason: Reason, max: u64) -> http::Response<meshgate_core::ProxyBody> {
    use http::StatusCode;
    match reason {
        Reason::TooLarge => {
            ErrorKind::BodyTooLarge.response(&format!("request body is larger than {max} bytes, the most transformed"))
        }
        Reason::NotJson | Reason::Encoded => json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "this route takes JSON request bodies (Content-Type: application/json)",
        ),
        Reason::InvalidJson => json_error(StatusCode::BAD_REQUEST, "invalid_json", "request body is not valid JSON"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{plugin, request};
    use serde_json::json;

    #[tokio::test]
    async fn headers_query_and_body_with_templates_read_before_any_change() {
        let p = plugin(
            &Factory,
            json!({
                "remove": {"headers": ["x-user"], "query": ["debug"]},
                "add": {"headers": {"x-caller": "{header.x-user}"}, "query": {"who": "{header.x-user}"},
                        "json": {"meta.user": "{header.x-user}", "meta.page": "{query.page}"}},
            }),
        )
        .unwrap();
        assert_eq!(p.phases(), Phases::ON_REQUEST | Phases::REQUEST_BODY);
        let mut cx = request("/p?page=2&debug=1", &[("x-user", "ann"), ("content-type", "application/json")]);
        assert!(matches!(p.on_request(&mut cx).await, Flow::Continue));
        assert_eq!(cx.request.headers["x-caller"], "ann");
        assert!(!cx.request.headers.contains_key("x-user"));
        assert_eq!(cx.request.uri, "/p?page=2&who=ann");
        assert_eq!(p.request_body_limit(&cx), Some(1024 * 1024));
        let mut body = Bytes::from_static(br#"{"a":1}"#);
        assert!(matches!(p.on_request_body(&mut cx, Some(&mut body)).await, Flow::Continue));
        assert_eq!(body, r#"{"a":1,"meta":{"page":"2","user":"ann"}}"#);
    }

    #[tokio::test]
    async fn refusals_by_reason() {
        let p =
            plugin(&Factory, json!({"remove": {"json": ["a"]}, "on_unsupported_body": "refuse", "max_body_bytes": 8}))
                .unwrap();
        let status = |f: Flow| match f {
            Flow::Respond(r) => r.status().as_u16(),
            Flow::Continue => 0,
        };
        let mut cx = request("/", &[("content-type", "text/plain")]);
        assert_eq!(p.request_body_limit(&cx), Some(0), "read just enough to know there is a body");
        assert_eq!(status(p.on_request_body(&mut cx, None).await), 415);
        let mut cx = request("/", &[("content-type", "application/json")]);
        // A sampled trace gets what happened as tags of the server span.
        let trace_id = meshgate_core::TraceId { value: 1, short: false };
        cx.trace = Some(meshgate_core::TraceIds {
            trace_id,
            span_id: 1,
            parent_id: None,
            sampled: true,
            debug: false,
            forms: 0,
        });
        assert_eq!(status(p.on_request_body(&mut cx, None).await), 413);
        assert_eq!(status(p.on_request_body(&mut cx, Some(&mut Bytes::from_static(b"{"))).await), 400);
        assert_eq!(status(p.on_request_body(&mut cx, Some(&mut Bytes::new())).await), 0);
        let tags: Vec<_> = cx.vars.get::<SpanTags>().unwrap().0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let key = "meshgate.transform.request";
        assert_eq!(
            tags,
            [format!("{key}=refused: too_large"), format!("{key}=refused: invalid_json"), format!("{key}=empty")]
        );
        let cx = request("/", &[("content-type", "application/json"), ("content-encoding", "gzip")]);
        assert_eq!(p.request_body_limit(&cx), None, "encoded bodies are never read");
    }

    #[tokio::test]
    async fn passing_leaves_bodies_alone() {
        let p = plugin(&Factory, json!({"remove": {"json": ["a"]}})).unwrap();
        let cx = request("/", &[("content-type", "text/plain")]);
        assert_eq!(p.request_body_limit(&cx), None);
        let mut cx = request("/", &[("content-type", "application/json")]);
        let mut body = Bytes::from_static(b"{oops");
        assert!(matches!(p.on_request_body(&mut cx, Some(&mut body)).await, Flow::Continue));
        assert_eq!(body, "{oops");
        // Only body operations: no on_request phase at all.
        assert_eq!(p.phases(), Phases::REQUEST_BODY);
    }

    #[test]
    fn config_errors_name_the_field() {
        let err = |v| plugin(&Factory, v).err().unwrap().to_string();
        assert_eq!(
            err(json!({"add": {"headers": {"x-a": "{cookie.sid}"}}})),
            "add.headers.x-a: unknown template source \"cookie\" (known: header, query, path, consumer) in \"{cookie.sid}\""
        );
        assert_eq!(err(json!({"remove": {"json": ["a..b"]}})), "remove.json[0]: empty field name in path \"a..b\"");
        assert!(
            err(json!({"replace": {"headers": {"Content-Length": "1"}}}))
                .starts_with("replace.headers.Content-Length: Content-Length is set by the gateway")
        );
        let e = err(json!({"append": {"json": {"a": 1}}}));
        assert!(e.starts_with("append.json: unknown field `json`, expected `headers` or `query`"), "{e}");
        assert!(err(json!({"on_unsupported_body": "drop"})).starts_with("on_unsupported_body: unknown variant `drop`"));
    }
}
