//! Aggregation routes end to end: real echo upstreams as backends (one slow past its timeout, one
//! answering 500, one answering text), the merged answer and its `X-Meshgate-Incomplete` marker,
//! the route's timeout bounding the wait, shaping (target, allow, deny, mapping, group), path
//! captures and chained calls, all-fail answers, a service's authentication applying, and the
//! backend calls on `/metrics` and in traces.

use meshgate_e2e::observe::Collector;
use meshgate_e2e::{TestGateway, Upstream, body, client, config};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// `services:` for the named upstreams, each as `{name, url}`.
fn services(list: &[(&str, &Upstream)]) -> String {
    let items: Vec<String> =
        list.iter().map(|(name, up)| format!("{{name: {name}, url: \"http://{}\"}}", up.addr())).collect();
    format!("services: [{}]", items.join(", "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merges_what_arrived_and_marks_what_did_not_within_the_route_timeout() {
    let (users, orders, slow) =
        (Upstream::http("users").await, Upstream::http("orders").await, Upstream::http("slow").await);
    let gw = TestGateway::start(&config(&format!(
        r#"
{services}
routes:
  - name: profile
    paths: ["~/profile/(?<id>[0-9]+)$"]
    aggregate: {{timeout: 600ms}}
    backends:
      - {{name: user, service: users, path: "/users/{{path.id}}", group: user,
         allow: [name, path, method, headers.accept, headers.accept-encoding, headers.x-forwarded-for, headers.content-length]}}
      - {{name: orders, service: orders, path: "/status/500", group: orders}}
      - {{name: recommendations, service: slow, path: "/delay/3000", timeout: 5s, group: recommendations}}
"#,
        services = services(&[("users", &users), ("orders", &orders), ("slow", &slow)])
    )));

    let started = Instant::now();
    let req = client::request(http::Method::GET, "/profile/42")
        .header("accept-encoding", "gzip")
        .header("accept", "text/html")
        .body(body::full("ignored"))
        .unwrap();
    let resp = client::send(gw.addr(), req).await;
    let took = started.elapsed();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.header("x-meshgate-incomplete"), Some("orders, recommendations"));
    assert_eq!(
        resp.json(),
        json!({"user": {
            "name": "users",
            "path": "/users/42",
            "method": "GET",
            // The gateway reads the answers itself: plain JSON asked for, no body sent.
            "headers": {"accept": "application/json", "x-forwarded-for": "127.0.0.1"}
        }})
    );
    // The slow backend's own timeout is 5 s and it answers after 3 s: the route's 600 ms decide.
    assert!(took >= Duration::from_millis(550), "answered before the route's timeout: {took:?}");
    assert!(took < Duration::from_millis(2500), "waited for the slowest backend: {took:?}");
    assert_eq!((users.hits(), orders.hits(), slow.hits()), (1, 1, 1), "each backend called once, at the same time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shaping_captures_and_chained_calls() {
    let (a, b, c) = (Upstream::http("a").await, Upstream::http("b").await, Upstream::http("c").await);
    let gw = TestGateway::start(&config(&format!(
        r#"
{services}
routes:
  - name: shaped
    paths: ["~/shaped/(?<id>[^/]+)$"]
    backends:
      # allow + mapping, merged at the top level; path capture, query and header values.
      - {{name: who, service: sa, path: "/users/{{path.id}}/{{header.x-tenant}}?page={{query.page}}&x=1",
         allow: [name, path, query], mapping: {{name: served_by}}}}
      # target + allow, grouped.
      - {{name: hdrs, service: sb, path: "/h", target: headers, allow: [accept, x-forwarded-host], group: seen}}
      # deny + mapping, grouped, another method.
      - {{name: meta, service: sc, path: "/m", method: POST, deny: [headers, version, body_len, query],
         mapping: {{method: verb}}, group: meta}}
      # Waits for two others and uses their answers.
      - {{name: chained, service: sa, path: "/next/{{resp.who.name}}/{{resp.meta.method}}", allow: [path], group: chained}}
"#,
        services = services(&[("sa", &a), ("sb", &b), ("sc", &c)])
    )));
    let resp =
        client::get_with(gw.addr(), "/shaped/7%20x?page=2&page=3", &[("x-tenant", "acme/eu"), ("host", "api.test")])
            .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("x-meshgate-incomplete"), None);
    assert_eq!(
        resp.json(),
        json!({
            "served_by": "a",
            // Values are escaped so they stay one segment or one parameter (%20 was already).
            "path": "/users/7%20x/acme%2Feu",
            "query": "page=2&x=1",
            "seen": {"accept": "application/json", "x-forwarded-host": "api.test"},
            "meta": {"name": "c", "path": "/m", "verb": "POST"},
            "chained": {"path": "/next/a/POST"}
        })
    );
    assert_eq!(a.hits(), 2, "who and chained");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_failed_is_502_all_timed_out_is_504_and_text_counts_as_failed() {
    let up = Upstream::http("up").await;
    let collector = Collector::start().await;
    let gw = TestGateway::start(&config(&format!(
        r#"
{services}
plugins:
  - {{name: tracing, config: {{zipkin: {{url: "http://{collector}/api/v2/spans", flush_interval: 50ms}}}}}}
routes:
  - name: broken
    paths: ["/broken"]
    backends:
      - {{name: err, service: s, path: "/status/500"}}
      - {{name: text, service: s, path: "/stream/10"}}
  - name: stuck
    paths: ["/stuck"]
    aggregate: {{timeout: 2s}}
    backends:
      - {{name: one, service: s, path: "/delay/3000", timeout: 200ms}}
      - {{name: two, service: s, path: "/delay/3000", timeout: 300ms}}
  - name: partly-text
    paths: ["/partly"]
    backends:
      - {{name: text, service: s, path: "/stream/10"}}
      - {{name: fine, service: s, path: "/ok", allow: [name]}}
  - name: small
    paths: ["/small"]
    aggregate: {{max_body_bytes: 64}}
    backends:
      - {{name: big, service: s, path: "/ok"}}
  - name: chain-broken
    paths: ["/chain"]
    backends:
      - {{name: first, service: s, path: "/status/404"}}
      - {{name: second, service: s, path: "/after/{{resp.first.name}}"}}
"#,
        services = services(&[("s", &up)]),
        collector = collector.addr,
    )));
    // The client gets the fixed message; why each backend is missing goes to the trace (and the
    // log), never to the client.
    let addr = gw.addr();
    let traced = |path: &'static str, trace: &'static str| {
        let headers = [("x-b3-traceid", trace), ("x-b3-spanid", "00f067aa0ba902b7"), ("x-b3-sampled", "1")];
        async move { client::get_with(addr, path, &headers).await }
    };
    let reasons = |spans: &[Value]| -> Vec<(String, String)> {
        let mut r: Vec<(String, String)> = spans
            .iter()
            .filter(|s| s["kind"] == "CLIENT" && s["tags"]["error"].is_string())
            .map(|s| {
                (s["tags"]["meshgate.backend"].as_str().unwrap().into(), s["tags"]["error"].as_str().unwrap().into())
            })
            .collect();
        r.sort();
        r
    };
    let resp = traced("/broken", "1111111111111111").await;
    resp.assert_error(502, "upstream_unavailable");
    assert_eq!(resp.json()["message"], "the upstream server could not be reached or broke the exchange");
    assert_eq!(resp.header("x-meshgate-incomplete"), Some("err, text"));
    let spans = collector.trace("1111111111111111", 3).await;
    assert_eq!(
        reasons(&spans),
        [("err".into(), "500".into()), ("text".into(), "the answer is not JSON".into())],
        "{spans:#?}"
    );

    let started = Instant::now();
    let resp = client::get(gw.addr(), "/stuck").await;
    resp.assert_error(504, "upstream_timeout");
    assert_eq!(resp.header("x-meshgate-incomplete"), Some("one, two"));
    assert!(started.elapsed() < Duration::from_millis(1500), "the backends' own timeouts bound the wait");

    let resp = client::get(gw.addr(), "/partly").await;
    assert_eq!((resp.status.as_u16(), resp.json()), (200, json!({"name": "up"})));
    assert_eq!(resp.header("x-meshgate-incomplete"), Some("text"));

    // The echo's answer is a few hundred bytes: over the route's limit.
    let resp = traced("/small", "2222222222222222").await;
    resp.assert_error(502, "upstream_unavailable");
    let spans = collector.trace("2222222222222222", 2).await;
    assert_eq!(reasons(&spans), [("big".into(), "the answer is larger than 64 bytes".into())]);

    // A backend waiting for one that failed is not called.
    let before = up.hits();
    let resp = traced("/chain", "3333333333333333").await;
    resp.assert_error(502, "upstream_unavailable");
    assert_eq!(resp.header("x-meshgate-incomplete"), Some("first, second"));
    // `second` was never called: no span of its own (the log says why).
    let spans = collector.trace("3333333333333333", 2).await;
    assert_eq!(reasons(&spans), [("first".into(), "404".into())]);
    assert_eq!(up.hits(), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_metrics_and_a_client_span_per_backend() {
    let collector = Collector::start().await;
    let (a, b, c) = (Upstream::http("a").await, Upstream::http("b").await, Upstream::http("c").await);
    let gw = TestGateway::start(&format!(
        r#"
runtime: {{workers: 2, watch_config: false, drain_timeout: 1s}}
listeners: [{{name: main, address: "127.0.0.1:0"}}]
status: {{address: "127.0.0.1:0"}}
services:
  # The service's authentication applies to aggregation routes that call it.
  - {{name: sa, url: "http://{a}", plugins: [{{name: key-auth}}]}}
  - {{name: sb, url: "http://{b}"}}
  - {{name: sc, url: "http://{c}"}}
routes:
  - name: dash
    paths: ["/dash"]
    aggregate: {{timeout: 1s}}
    backends:
      - {{name: one, service: sa, path: "/one", target: headers, allow: [x-b3-spanid, x-b3-parentspanid], group: one}}
      - {{name: two, service: sb, path: "/two", target: headers, allow: [x-b3-spanid, x-b3-parentspanid], group: two}}
      - {{name: three, service: sc, path: "/delay/3000", timeout: 200ms}}
consumers: [{{username: alice, credentials: {{key-auth: [{{key: k1}}]}}}}]
plugins:
  - {{name: tracing, config: {{zipkin: {{url: "http://{collector}/api/v2/spans", flush_interval: 50ms}}}}}}
"#,
        collector = collector.addr,
        a = a.addr(),
        b = b.addr(),
        c = c.addr()
    ));
    client::get(gw.addr(), "/dash").await.assert_error(401, "unauthorized");
    assert_eq!(a.hits() + b.hits() + c.hits(), 0, "refused before any backend call");

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    let trace = [("apikey", "k1"), ("x-b3-traceid", TRACE), ("x-b3-spanid", "00f067aa0ba902b7"), ("x-b3-sampled", "1")];
    let resp = client::get_with(gw.addr(), "/dash", &trace).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("x-meshgate-incomplete"), Some("three"));
    let answer = resp.json();

    // Spans: the request's SERVER span, and one CLIENT span per backend call, each with the
    // span id its backend was sent.
    let spans = meshgate_e2e::wait_for("4 spans", Duration::from_secs(5), || async {
        let got: Vec<Value> =
            collector.spans.lock().unwrap().iter().filter(|s| s["traceId"] == TRACE).cloned().collect();
        (got.len() >= 4).then_some(got)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(collector.spans.lock().unwrap().iter().filter(|s| s["traceId"] == TRACE).count(), 4, "{spans:#?}");
    let server = spans.iter().find(|s| s["kind"] == "SERVER").expect("a server span");
    let client_span = |backend: &str| {
        spans
            .iter()
            .find(|s| s["kind"] == "CLIENT" && s["tags"]["meshgate.backend"] == backend)
            .unwrap_or_else(|| panic!("no client span of {backend}: {spans:#?}"))
            .clone()
    };
    for (backend, service) in [("one", "sa"), ("two", "sb")] {
        let span = client_span(backend);
        assert_eq!(span["parentId"], server["id"]);
        assert_eq!(span["traceId"], server["traceId"]);
        assert_eq!(answer[backend]["x-b3-spanid"], span["id"], "{backend} was sent its own span id");
        assert_eq!(answer[backend]["x-b3-parentspanid"], server["id"]);
        assert_eq!(span["tags"]["http.status_code"], "200");
        assert_eq!(span["remoteEndpoint"]["serviceName"], service);
    }
    let three = client_span("three");
    assert_eq!(three["tags"]["error"], "timed out");
    let us = three["duration"].as_u64().unwrap();
    assert!((150_000..1_000_000).contains(&us), "ended at its timeout: {us} µs");
    assert_ne!(client_span("one")["id"], client_span("two")["id"]);

    let status = gw.gateway().status_addr().unwrap();
    let metrics = client::get(status, "/metrics").await.text();
    for (backend, outcome, n) in [("one", "ok", 1), ("two", "ok", 1), ("three", "timeout", 1), ("three", "ok", 0)] {
        let line = format!(
            "meshgate_aggregate_backend_calls_total{{route=\"dash\",backend=\"{backend}\",outcome=\"{outcome}\"}} {n}"
        );
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in:\n{metrics}");
    }
}
