//! `/metrics` of a gateway with every plugin kind configured (and split, mirror and aggregation
//! routes, an upstream with health checks and a target limit), after traffic through all of
//! them, read by parsers from outside the project: Prometheus' `promtool` for the text format
//! 0.0.4 and the OpenMetrics parser of Prometheus' Python client, which enforces OpenMetrics'
//! rules. Then the families on the page against those documented in `docs/observability.md` and
//! those the Grafana dashboard queries.

use meshgate_e2e::observe::{Collector, openmetrics_families, promtool_check, scrape_values};
use meshgate_e2e::redis::TestRedis;
use meshgate_e2e::{Resp, TestGateway, Upstream, body, client};
use meshgate_plugins::auth::basic_auth::hash_password;
use std::collections::BTreeSet;
use std::net::SocketAddr;

/// Every plugin kind on some route or globally. `ROUTE` (a name with a quote, a backslash and a
/// non-ASCII letter) puts label values that need escaping on the page.
const CONFIG: &str = r#"
runtime: {workers: 2, watch_config: false, drain_timeout: 1s}
listeners: [{name: main, address: "127.0.0.1:0"}]
status: {address: "127.0.0.1:0"}
upstreams:
  - name: pool
    targets: [{address: "UP_A"}, {address: "UP_B"}]
    health:
      active: {path: /health, interval: 100ms}
      passive: {unhealthy_after: 3}
    target_limit: {max_in_flight: 10, queue: {size: 5, timeout: 1s}}
services:
  - {name: pooled, upstream: pool, retry: {attempts: 1}}
  - {name: a, url: "http://UP_A"}
  - {name: b, url: "http://UP_B"}
consumers:
  - {username: alice, groups: [ops], credentials: {key-auth: [{key: k-alice}], basic-auth: [{password_hash: 'HASH'}]}}
  - {username: carol, groups: [dev], credentials: {key-auth: [{key: k-carol}]}}
routes:
  - name: keyed
    service: pooled
    paths: [/keyed]
    plugins:
      - {name: key-auth}
      - {name: basic-auth}
      - {name: acl, config: {allow: [ops]}}
      - {name: rate-limiting, config: {minute: 3, limit_by: consumer}}
  - name: token
    service: a
    paths: [/token]
    plugins: [{name: jwt, config: {keys: [{kid: h1, algorithm: HS256, secret: e2e-secret}]}}]
  - name: cert
    service: a
    paths: [/cert]
    plugins: [{name: mtls-auth}]
  - name: 'ROUTE'
    service: a
    paths: [/limited]
    plugins:
      - {name: ip-restriction, config: {allow: [127.0.0.0/8]}}
      - {name: rate-limiting, config: {minute: 1000, limit_by: ip, policy: redis, redis: {url: "REDIS", timeout: 1s}}}
      - {name: concurrency-limit, config: {max_in_flight: 4}}
      - {name: request-size-limiting, config: {max_bytes: 1KiB}}
  - name: faulty
    service: a
    paths: [/faulty]
    plugins: [{name: fault-injection, config: {abort: {percentage: 100, status: 503}}}]
  - name: transformed
    service: a
    paths: [/transformed]
    plugins:
      - {name: request-transformer, config: {add: {json: {added: "yes"}}}}
      - {name: response-transformer, config: {remove: {json: [headers]}}}
      - {name: cors, config: {origins: ["https://app.example.com"]}}
      - {name: response-headers, config: {set: {X-Served-By: meshgate}}}
  - name: canary
    services: [{name: a, weight: 50}, {name: b, weight: 50}]
    mirror: {service: b, percentage: 100}
    paths: [/canary]
  - name: dash
    paths: [/dash]
    backends:
      - {name: first, service: a, path: /first}
      - {name: second, service: b, path: /status/500}
plugins:
  - {name: request-id}
  - {name: access-log, config: {path: access.log}}
  - {name: tracing, config: {zipkin: {url: "ZIPKIN", flush_interval: 50ms}}}
"#;

/// The route whose name needs escaping in a label value.
const ROUTE: &str = r#"quoted "route" \ é"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_of_every_plugin_passes_prometheus_parsers() {
    let (a, b) = (Upstream::http("a").await, Upstream::http("b").await);
    let redis = TestRedis::start();
    let zipkin = Collector::start().await;
    let yaml = CONFIG
        .replace("UP_A", &a.addr().to_string())
        .replace("UP_B", &b.addr().to_string())
        .replace("HASH", &hash_password("pw"))
        .replace("ROUTE", ROUTE)
        .replace("REDIS", &redis.url())
        .replace("ZIPKIN", &zipkin.url());
    let gw = TestGateway::start(&yaml);
    traffic(gw.addr()).await;
    let status = gw.gateway().status_addr().expect("status listener");

    // What a scraper that asks for nothing in particular, or for the text format, gets.
    let mut text = String::new();
    for accept in [Some("*/*"), Some("text/plain;version=0.0.4"), None] {
        let page = scrape(status, accept).await;
        assert_eq!(page.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"), "{accept:?}");
        text = page.text();
    }
    assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
    promtool_check(&text);
    let values = scrape_values(&text);
    let route = ROUTE.replace('\\', "\\\\").replace('"', "\\\"");
    assert!(text.contains(&format!("meshgate_requests_total{{route=\"{route}\",service=\"a\"")), "{text}");
    assert!(values["meshgate_faults_injected_total{fault=abort}"] >= 1.0);

    // What Prometheus itself asks for: OpenMetrics first.
    let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let page = scrape(status, Some(prometheus)).await;
    assert_eq!(page.header("content-type"), Some("application/openmetrics-text; version=1.0.0; charset=utf-8"));
    let om = page.text();
    assert!(om.ends_with("\n# EOF\n"), "{om}");
    let families = openmetrics_families(&om);
    assert_eq!(families.get("meshgate_requests").map(String::as_str), Some("counter"));
    assert_eq!(families.get("meshgate").map(String::as_str), Some("info"));
    assert_eq!(families.get("meshgate_request_duration_seconds").map(String::as_str), Some("histogram"));

    // The same families in both formats: in 0.0.4 a counter is named as its samples and an info
    // is a gauge `NAME_info`.
    let described = described(&text);
    let from_om: BTreeSet<String> = families
        .iter()
        .map(|(name, ty)| match ty.as_str() {
            "counter" => format!("{name}_total"),
            "info" => format!("{name}_info"),
            _ => name.clone(),
        })
        .collect();
    assert_eq!(described, from_om);

    // Every family is documented, and every documented one is on the page.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/observability.md")).unwrap();
    let documented = documented(&doc);
    assert_eq!(described, documented, "docs/observability.md's metrics table against the page");

    // Every series the Grafana dashboard queries is on the page.
    let dashboard =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/grafana/meshgate.json")).unwrap();
    let series: BTreeSet<&str> =
        text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
    for name in metric_names(&dashboard) {
        assert!(series.contains(name.as_str()), "the dashboard queries {name}, not on the page");
    }
}

/// Requests through every route and plugin: refusals of each kind, transformed bodies, CORS,
/// a split and mirrored route, an aggregation with a failing backend, a 404.
async fn traffic(addr: SocketAddr) {
    let get = |path: &'static str, headers: &'static [(&'static str, &'static str)]| async move {
        client::get_with(addr, path, headers).await.status.as_u16()
    };
    assert_eq!(get("/keyed", &[]).await, 401);
    assert_eq!(get("/keyed", &[("apikey", "wrong")]).await, 401);
    assert_eq!(get("/keyed", &[("apikey", "k-carol")]).await, 403);
    for status in [200, 200, 200, 429] {
        assert_eq!(get("/keyed", &[("apikey", "k-alice")]).await, status);
    }
    assert_eq!(get("/token", &[("authorization", "Bearer not.a.token")]).await, 401);
    assert_eq!(get("/cert", &[]).await, 401);
    assert_eq!(get("/limited", &[]).await, 200);
    let big = client::request(http::Method::POST, "/limited").body(body::full(vec![b'x'; 4096])).unwrap();
    assert_eq!(client::send(addr, big).await.status, 413);
    assert_eq!(get("/faulty", &[]).await, 503);
    let json = client::request(http::Method::POST, "/transformed")
        .header("content-type", "application/json")
        .body(body::full(r#"{"a": 1}"#))
        .unwrap();
    let transformed: Resp = client::send(addr, json).await;
    assert_eq!(transformed.status, 200, "{}", transformed.text());
    let preflight = client::request(http::Method::OPTIONS, "/transformed")
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .body(body::empty())
        .unwrap();
    assert_eq!(client::send(addr, preflight).await.status, 204);
    assert_eq!(get("/transformed", &[("origin", "https://evil.example")]).await, 200);
    for _ in 0..4 {
        assert_eq!(get("/canary", &[]).await, 200);
    }
    assert_eq!(get("/dash", &[]).await, 200);
    assert_eq!(get("/nowhere", &[]).await, 404);
}

async fn scrape(status: SocketAddr, accept: Option<&str>) -> Resp {
    let mut req = client::request(http::Method::GET, "/metrics");
    if let Some(accept) = accept {
        req = req.header("accept", accept);
    }
    let page = client::send(status, req.body(body::empty()).unwrap()).await;
    assert_eq!(page.status, 200);
    page
}

/// The families a 0.0.4 page describes (`# TYPE` lines).
fn described(text: &str) -> BTreeSet<String> {
    text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).map(str::to_owned).collect()
}

/// The metric names in the first column of the metrics table of `docs/observability.md`.
fn documented(doc: &str) -> BTreeSet<String> {
    let section = doc.split("\n## Metrics\n").nth(1).expect("a Metrics section").split("\n## ").next().unwrap();
    let rows = section.lines().filter_map(|l| l.strip_prefix("| ")?.split(" |").next());
    rows.flat_map(metric_names).collect()
}

/// Every `meshgate_…` name in `text`.
fn metric_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("meshgate_") {
        let name: String = rest[at..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
        rest = &rest[at + name.len()..];
        out.push(name);
    }
    out
}
