//! CLIENT spans of an aggregation route's backend calls. The calls run at the same time, each on
//! its own fork of the request's context (see `meshgate_core::Subcalls`), so each fork's
//! `before_upstream` recorded that call's attempts (retries included) in its own copy of the
//! trace, with span ids of their own sent to the backend. Their spans are children of the
//! request's SERVER span like any attempt's; an attempt still open ends when its call did.

use super::span::Call;
use super::url::PathQuery;
use super::{Tracing, new_id};
use meshgate_core::{RequestCtx, Subcalls};
use smallvec::SmallVec;
use std::time::Instant;

impl Tracing {
    /// A call for every attempt of every backend call in `calls`, in call order.
    pub(super) fn subcalls(&self, cx: &RequestCtx, start_us: u64, calls: &Subcalls, out: &mut SmallVec<[Call; 1]>) {
        let at = |i: Instant| start_us + i.saturating_duration_since(cx.started).as_micros() as u64;
        for call in &calls.0 {
            let last = call.attempts.len().saturating_sub(1);
            for (k, a) in call.attempts.iter().enumerate() {
                let end = a.end.unwrap_or(call.ended);
                out.push(Call {
                    id: if a.span_id == 0 { new_id() } else { a.span_id },
                    method: (call.method != cx.request.method).then(|| call.method.clone()),
                    url: a.uri.as_deref().map(PathQuery::of),
                    timestamp: at(a.start),
                    duration: (end.saturating_duration_since(a.start).as_micros() as u64).max(1),
                    remote: a.target.clone(),
                    remote_service: Some(call.service.clone()),
                    backend: Some(call.name.clone()),
                    // The last attempt's failure, or why its answer did not count.
                    error: a
                        .failure
                        .as_ref()
                        .map(|f| f.cause.clone())
                        .or_else(|| (k == last).then(|| call.error.as_deref().map(Into::into)).flatten()),
                    error_type: a.failure.as_ref().map(|f| f.class),
                    tls: a.tls,
                    status: a.status.or(if k == last { call.status } else { None }),
                    retried: a.retried,
                    resend: k as u32,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::request;
    use meshgate_core::{Plugin, RouteInfo, Subcall};
    use serde_json::{Value, json};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_calls_get_a_client_span_each() {
        let (t, rx) = super::super::tests::tracer(1.0);
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
            fork.trace = cx.trace;
            crate::testing::begin_attempt(&mut fork, target, &format!("/{name}/7"));
            if let (Some(a), Some(s)) = (fork.attempts.last_mut(), status) {
                a.status = Some(s);
            }
            let mut parts = http::Request::builder().uri(format!("/{name}/7")).body(()).unwrap().into_parts().0;
            t.before_upstream(&mut fork, &mut parts).await;
            heads.push(parts.headers);
            calls.push(Subcall {
                name: name.into(),
                service: if name == "user" { "Users".into() } else { "Orders".into() },
                method: http::Method::GET,
                status,
                error: error.map(str::to_owned),
                ended: Instant::now(),
                attempts: fork.attempts,
                vars: fork.vars,
            });
        }
        cx.vars.insert(Subcalls(calls));
        t.on_log(&cx);

        let mut spans: Vec<Value> = (0..3).map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap()).collect();
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err(), "the server span and one client span per call");
        spans.sort_by_key(|s| (s["kind"] != "SERVER", s["tags"]["meshgate.backend"] != "user"));
        let (server, user, orders) = (&spans[0], &spans[1], &spans[2]);
        assert_eq!(server["kind"], "SERVER");
        for (span, head, backend) in [(user, &heads[0], "user"), (orders, &heads[1], "orders")] {
            assert_eq!(span["kind"], "CLIENT");
            assert_eq!(span["parentId"], server["id"]);
            let sent = head["b3"].to_str().unwrap().split('-').nth(1).unwrap().to_owned();
            assert_eq!(sent, span["id"].as_str().unwrap(), "each call is sent its own span id");
            assert_eq!(span["tags"]["meshgate.backend"], backend);
            assert_eq!(span["tags"]["http.path"], format!("/{backend}/7"));
        }
        assert_ne!(user["id"], orders["id"]);
        assert_eq!(user["tags"]["http.status_code"], "200");
        assert!(user["tags"].get("error").is_none(), "a call still open when the next began was not retried");
        assert_eq!(orders["tags"]["error"], "timed out");
        assert_eq!(orders["remoteEndpoint"], json!({"serviceName": "orders", "ipv4": "10.0.0.2", "port": 80}));
    }
}
