//! Upstream connection reuse: `keepalive.max_idle` and `keepalive.idle_timeout`.

use meshgate_e2e::{TestGateway, Upstream, client};
use std::time::Duration;

fn gateway(up: &Upstream, keepalive: &str) -> TestGateway {
    // One worker: pools are per worker, and these tests count the upstream's connections.
    TestGateway::start(&format!(
        r#"
runtime: {{workers: 1, watch_config: false, drain_timeout: 1s}}
listeners: [{{name: main, address: "127.0.0.1:0"}}]
services: [{{name: s, url: "http://{}", keepalive: {keepalive}}}]
routes: [{{name: r, service: s, paths: ["/"]}}]
"#,
        up.addr()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_reuse_one_upstream_connection() {
    let up = Upstream::http("up").await;
    let gw = gateway(&up, "{max_idle: 8}");
    for _ in 0..20 {
        assert_eq!(client::get(gw.addr(), "/x").await.status, 200);
    }
    assert_eq!(up.connections(), 1, "20 sequential requests should share one pooled connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_idle_zero_turns_reuse_off() {
    let up = Upstream::http("up").await;
    let gw = gateway(&up, "{max_idle: 0}");
    for _ in 0..5 {
        assert_eq!(client::get(gw.addr(), "/x").await.status, 200);
    }
    assert_eq!(up.connections(), 5, "without reuse every request opens a connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_idle_past_the_timeout_are_not_reused() {
    let up = Upstream::http("up").await;
    let gw = gateway(&up, "{idle_timeout: 200ms}");
    assert_eq!(client::get(gw.addr(), "/x").await.status, 200);
    assert_eq!(client::get(gw.addr(), "/x").await.status, 200);
    assert_eq!(up.connections(), 1, "a fresh idle connection is reused");
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(client::get(gw.addr(), "/x").await.status, 200);
    assert_eq!(up.connections(), 2, "a connection idle past idle_timeout is replaced");
}
