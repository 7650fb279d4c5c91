//! CLIENT spans of an aggregation route's backend calls. The calls run at the same time, each on
//! its own fork of the request's context (see `meshgate_core::Subcalls`), so each fork's
//! `before_upstream` recorded that call's attempts (retries included) in its own copy of the
//! trace, with span ids of their own sent to the backend. Their spans are children of the
//! request's SERVER span like any attempt's; an attempt still open ends when its call did.

use super::export::{Endpoint, Span};
use super::{Recording, TraceContext, Tracing};
use meshgate_core::{RequestCtx, Subcalls};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

impl Tracing {
    /// The spans of every attempt of every backend call in `calls`, in call order.
    pub(super) fn subcall_spans(
        &self,
        cx: &RequestCtx,
        tc: &TraceContext,
        rec: &Recording,
        calls: &Subcalls,
    ) -> Vec<Span> {
        let at = |t: Instant| rec.start_us + t.saturating_duration_since(cx.started).as_micros() as u64;
        let local = Endpoint { service_name: Some(self.service.clone()), ..Endpoint::default() };
        let mut spans = Vec::new();
        for call in &calls.0 {
            let Some(attempts) = call.vars.get::<TraceContext>().and_then(|t| t.recording.as_deref()) else { continue };
            let service: Arc<str> = call.service.to_lowercase().into();
            let last = attempts.attempts.len().saturating_sub(1);
            for (k, a) in attempts.attempts.iter().enumerate() {
                let status = a.status.or(if k == last { call.status } else { None });
                let mut tags = HashMap::new();
                tags.insert("http.method", call.method.as_str().to_owned());
                tags.insert("http.path", a.path.clone());
                tags.insert("meshgate.backend", call.name.to_string());
                if let Some(s) = status {
                    tags.insert("http.status_code", s.to_string());
                }
                if a.retried {
                    tags.insert("error", "retried".to_owned());
                } else if let (true, Some(e)) = (k == last, &call.error) {
                    tags.insert("error", e.clone());
                }
                let end = a.end.unwrap_or(call.ended);
                spans.push(Span {
                    trace_id: tc.trace_id.hex(),
                    id: format!("{:016x}", a.id),
                    parent_id: Some(format!("{:016x}", tc.span_id)),
                    kind: "CLIENT",
                    name: call.method.as_str().to_lowercase(),
                    timestamp: at(a.start),
                    duration: (end.saturating_duration_since(a.start).as_micros() as u64).max(1),
                    local_endpoint: local.clone(),
                    remote_endpoint: a.target.as_deref().map(|t| Endpoint::of_target(t, Some(service.clone()))),
                    debug: tc.debug,
                    tags,
                });
            }
        }
        spans
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Sampler, both};
    use super::*;
    use crate::testing::request;
    use meshgate_core::{Plugin, RouteInfo, Subcall};
    use std::sync::mpsc::sync_channel;

    #[tokio::test]
    async fn concurrent_calls_get_a_client_span_each() {
        let (tx, rx) = sync_channel(100);
        let t = Tracing { formats: both().into(), sampler: Sampler::new(1.0), service: "edge".into(), tx };
        let mut cx = request("/profile/7", &[]);
        cx.route = Some(RouteInfo { name: "profile".into(), service: "Users,Orders".into() });
        t.on_request(&mut cx).await;
        // Two calls forked after on_request, started one after the other, the first still open
        // when the second starts (as when they run at the same time).
        let mut calls = Vec::new();
        let mut heads = Vec::new();
        for (name, target, status, error) in
            [("user", "10.0.0.1:80", Some(200), None), ("orders", "10.0.0.2:80", None, Some("timed out"))]
        {
            let mut fork = request("/x", &[]);
            fork.vars = cx.vars.clone();
            fork.upstream = Some(target.into());
            let mut parts = http::Request::builder().uri(format!("/{name}/7")).body(()).unwrap().into_parts().0;
            t.before_upstream(&mut fork, &mut parts).await;
            heads.push(parts.headers);
            calls.push(Subcall {
                name: name.into(),
                service: if name == "user" { "Users".into() } else { "Orders".into() },
                method: http::Method::GET,
                upstream: fork.upstream.clone(),
                status,
                error: error.map(str::to_owned),
                ended: Instant::now(),
                vars: fork.vars,
            });
        }
        cx.vars.insert(Subcalls(calls));
        t.on_log(&cx);

        let spans: Vec<Span> = rx.try_iter().collect();
        assert_eq!(spans.len(), 3, "the server span and one client span per call");
        let (server, user, orders) = (&spans[0], &spans[1], &spans[2]);
        assert_eq!(server.kind, "SERVER");
        for (span, head, backend) in [(user, &heads[0], "user"), (orders, &heads[1], "orders")] {
            assert_eq!(span.kind, "CLIENT");
            assert_eq!(span.parent_id.as_ref(), Some(&server.id));
            assert_eq!(head["x-b3-spanid"], span.id.as_str(), "each call is sent its own span id");
            assert_eq!(span.tags["meshgate.backend"], backend);
            assert_eq!(span.tags["http.path"], format!("/{backend}/7"));
        }
        assert_ne!(user.id, orders.id);
        assert_eq!(user.tags["http.status_code"], "200");
        assert!(!user.tags.contains_key("error"), "a call still open when the next began was not retried");
        assert_eq!(orders.tags["error"], "timed out");
        let remote = serde_json::to_value(&orders.remote_endpoint).unwrap();
        assert_eq!(remote, serde_json::json!({"serviceName": "orders", "ipv4": "10.0.0.2", "port": 80}));
    }
}
