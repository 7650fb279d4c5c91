//! The status listener: health endpoints and `/metrics`, scraped and parsed with a Prometheus
//! text parser after known traffic.

use meshgate_e2e::observe::scrape_values;
use meshgate_e2e::{TestGateway, Upstream, body, client};
use std::collections::HashMap;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints_and_metrics_after_known_traffic() {
    let up = Upstream::http("up").await;
    let yaml = |limit: u32| {
        format!(
            r#"
runtime: {{workers: 2, watch_config: false, drain_timeout: 1s}}
listeners: [{{name: main, address: "127.0.0.1:0"}}]
status: {{address: "127.0.0.1:0"}}
upstreams: [{{name: pool, targets: [{{address: "{a}"}}]}}]
services: [{{name: s, upstream: pool}}]
routes:
  - name: keyed
    service: s
    paths: ["/keyed"]
    plugins: [{{name: key-auth}}, {{name: rate-limiting, config: {{day: {limit}, limit_by: consumer}}}}]
  - name: open
    service: s
    paths: ["/open"]
    plugins: [{{name: concurrency-limit, config: {{max_in_flight: 5}}}}]
consumers: [{{username: alice, credentials: {{key-auth: [{{key: k1}}]}}}}]
"#,
            a = up.addr()
        )
    };
    let gw = TestGateway::start(&yaml(2));
    let status = gw.gateway().status_addr().expect("status listener");
    let addr = gw.addr();

    let live = client::get(status, "/status/live").await;
    assert_eq!((live.status.as_u16(), live.json()["status"].clone()), (200, "live".into()));
    let ready = client::get(status, "/status/ready").await;
    assert_eq!(ready.status, 200);
    let info = client::get(status, "/status").await.json();
    assert_eq!(info["config_version"], 1);
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(client::get(status, "/nope").await.status, 404);

    // Known traffic: 2 missing-credential 401s, 1 invalid, 2 admitted and 1 rate-limited.
    let before = scrape_values(&client::get(status, "/metrics").await.text());
    let failures =
        |m: &HashMap<String, f64>, reason: &str| m[&format!("meshgate_auth_failures_total{{reason={reason}}}")];
    for _ in 0..2 {
        assert_eq!(client::get(addr, "/keyed").await.status, 401);
    }
    assert_eq!(client::get_with(addr, "/keyed", &[("apikey", "nope")]).await.status, 401);
    for status in [200, 200, 429] {
        assert_eq!(client::get_with(addr, "/keyed", &[("apikey", "k1")]).await.status, status);
    }
    assert_eq!(client::get(addr, "/open").await.status, 200);
    // One good reload and one bad one.
    gw.write_config(&yaml(5));
    gw.reload().expect("good reload");
    gw.write_config("routes: [oops");
    assert!(gw.reload().is_err());

    let metrics = client::get(status, "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert_eq!(metrics.header("content-type").unwrap(), "text/plain; version=0.0.4; charset=utf-8");
    let after = scrape_values(&metrics.text());
    // Counters are process-wide (other tests run in this process): compare differences.
    assert_eq!(failures(&after, "missing") - failures(&before, "missing"), 2.0);
    assert_eq!(failures(&after, "invalid") - failures(&before, "invalid"), 1.0);
    let rejected = "meshgate_rate_limit_rejected_total{}";
    assert!(after[rejected] - before[rejected] >= 1.0);
    assert_eq!(after["meshgate_config_reloads_total{result=ok}"], 1.0);
    assert_eq!(after["meshgate_config_reloads_total{result=failed}"], 1.0);
    assert_eq!(after["meshgate_config_version{}"], 2.0);
    assert_eq!(after[&format!("meshgate_upstream_target_healthy{{target={},upstream=pool}}", up.addr())], 1.0);
    assert_eq!(after[&format!("meshgate_upstream_target_in_flight{{target={},upstream=pool}}", up.addr())], 0.0);
    assert!(after.contains_key("meshgate_connections_open{listener=main}"));
    assert_eq!(after["meshgate_concurrency_limit{scope=route:open}"], 5.0);
    assert_eq!(after["meshgate_concurrency_in_flight{scope=route:open}"], 0.0);
    assert_eq!(client::get(status, "/status").await.json()["config_version"], 2);

    // Per-route counts of the config now serving (they start again with each config).
    let open = client::get(addr, "/open").await;
    assert_eq!(open.status, 200);
    let nowhere = client::get(addr, "/nowhere").await;
    assert_eq!(nowhere.status, 404);
    let text = client::get(status, "/metrics").await.text();
    let m = scrape_values(&text);
    assert_eq!(m["meshgate_requests_total{method=GET,route=open,service=s,status_class=2xx}"], 1.0);
    assert_eq!(m["meshgate_requests_total{method=GET,route=,service=,status_class=4xx}"], 1.0);
    assert!(text.contains("meshgate_request_duration_seconds_count{route=\"open\",service=\"s\"} 1"), "{text}");
    assert!(text.contains("meshgate_upstream_duration_seconds_count{route=\"open\",service=\"s\"} 1"), "{text}");
    assert!(
        text.contains("meshgate_request_duration_seconds_bucket{le=\"+Inf\",route=\"open\",service=\"s\"} 1")
            || text.contains("meshgate_request_duration_seconds_bucket{route=\"open\",service=\"s\",le=\"+Inf\"} 1"),
        "{text}"
    );

    // Body bytes both ways: a declared body, a chunked one, and the gateway's own 404.
    let post = |b| client::request(http::Method::POST, "/open").body(b).expect("request");
    let declared = client::send(addr, post(body::full("0123456789"))).await;
    let (tx, chunked) = body::channel(4);
    let sending = tokio::spawn(client::send(addr, post(chunked)));
    for part in ["abcde", "fgh"] {
        tx.send(bytes::Bytes::from_static(part.as_bytes())).await.unwrap();
    }
    drop(tx);
    let chunked = sending.await.unwrap();
    assert_eq!((declared.status.as_u16(), chunked.status.as_u16()), (200, 200));
    let m = scrape_values(&client::get(status, "/metrics").await.text());
    assert_eq!(m["meshgate_request_bytes_total{route=open,service=s}"], 18.0);
    let sent = open.body.len() + declared.body.len() + chunked.body.len();
    assert_eq!(m["meshgate_response_bytes_total{route=open,service=s}"], sent as f64);
    assert_eq!(m["meshgate_request_bytes_total{route=,service=}"], 0.0);
    assert_eq!(m["meshgate_response_bytes_total{route=,service=}"], nowhere.body.len() as f64);
}
