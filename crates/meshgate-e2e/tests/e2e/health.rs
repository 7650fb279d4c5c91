//! Health checking: active probes eject and restore targets; passive checks eject targets that
//! fail real requests; with every target down the gateway answers 503 `no_healthy_target`.

use meshgate_e2e::client::{self, Conn};
use meshgate_e2e::upstream::closed_port;
use meshgate_e2e::{TestGateway, Upstream, config, wait_for};
use std::time::{Duration, Instant};

fn two_targets(a: &Upstream, b: &str, health: &str) -> String {
    config(&format!(
        r#"
upstreams:
  - name: pool
    targets: [{{address: "{}"}}, {{address: "{b}"}}]
    health: {health}
services: [{{name: pool, upstream: pool}}]
routes: [{{name: pool, service: pool, paths: ["/"]}}]
"#,
        a.addr()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_ejection_and_recovery() {
    let (a, b) = (Upstream::http("a").await, Upstream::http("b").await);
    let health = "{active: {path: /health, interval: 100ms, timeout: 500ms, healthy_after: 2, unhealthy_after: 2}}";
    let gw = TestGateway::start(&two_targets(&a, &b.addr().to_string(), health));
    let mut conn = Conn::h1(gw.addr()).await.unwrap();
    for _ in 0..4 {
        assert_eq!(conn.get("/x").await.unwrap().status, 200);
    }
    assert!(a.hits() >= 1 && b.hits() >= 1, "both targets serve while healthy");

    let started = Instant::now();
    a.set_healthy(false);
    wait_for("a to be ejected", Duration::from_secs(5), || async {
        let before = a.hits();
        for _ in 0..6 {
            assert_eq!(Conn::h1(gw.addr()).await.unwrap().get("/x").await.unwrap().status, 200);
        }
        (a.hits() == before).then_some(())
    })
    .await;
    let ejected_after = started.elapsed();
    let before = a.hits();
    for _ in 0..20 {
        let resp = conn.get("/x").await.unwrap();
        assert_eq!((resp.status.as_u16(), resp.name().as_str()), (200, "b"));
    }
    assert_eq!(a.hits(), before, "an unhealthy target got traffic");

    let started = Instant::now();
    a.set_healthy(true);
    wait_for("a to come back", Duration::from_secs(5), || async { (conn_get_name(&gw).await == "a").then_some(()) })
        .await;
    eprintln!("ejected after {ejected_after:?}, recovered after {:?}", started.elapsed());
}

async fn conn_get_name(gw: &TestGateway) -> String {
    client::get(gw.addr(), "/x").await.name()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_ejection_on_5xx() {
    let (a, b) = (Upstream::http("a").await, Upstream::http("b").await);
    a.set_status(500);
    let gw = TestGateway::start(&two_targets(
        &a,
        &b.addr().to_string(),
        "{passive: {unhealthy_after: 2, recover_after: 60s}}",
    ));
    let mut conn = Conn::h1(gw.addr()).await.unwrap();
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(conn.get("/x").await.unwrap().status.as_u16());
    }
    assert_eq!(a.hits(), 2, "a failing target is ejected after unhealthy_after failures; statuses {statuses:?}");
    assert_eq!(statuses.iter().filter(|&&s| s == 500).count(), 2, "{statuses:?}");
    assert!(statuses[10..].iter().all(|&s| s == 200), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_port_target_is_retried_and_ejected() {
    let b = Upstream::http("b").await;
    let closed = closed_port();
    let yaml = config(&format!(
        r#"
upstreams:
  - name: pool
    targets: [{{address: "{closed}"}}, {{address: "{}"}}]
    health: {{passive: {{unhealthy_after: 1, recover_after: 60s}}}}
services: [{{name: pool, upstream: pool}}]
routes: [{{name: pool, service: pool, paths: ["/"]}}]
"#,
        b.addr()
    ));
    let gw = TestGateway::start(&yaml);
    let mut conn = Conn::h1(gw.addr()).await.unwrap();
    for i in 0..20 {
        let resp = conn.get("/x").await.unwrap();
        assert_eq!((resp.status.as_u16(), resp.name().as_str()), (200, "b"), "request {i}: {}", resp.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_targets_down_gives_503() {
    // Passive: both targets refuse connections.
    let (c1, c2) = (closed_port(), closed_port());
    let yaml = config(&format!(
        r#"
upstreams:
  - name: dead
    targets: [{{address: "{c1}"}}, {{address: "{c2}"}}]
    health: {{passive: {{unhealthy_after: 1, recover_after: 60s, max_ejected_percent: 100}}}}
services: [{{name: dead, upstream: dead}}]
routes: [{{name: dead, service: dead, paths: ["/"]}}]
"#
    ));
    let gw = TestGateway::start(&yaml);
    let first = client::get(gw.addr(), "/x").await;
    first.assert_error(502, "upstream_unavailable");
    for _ in 0..3 {
        client::get(gw.addr(), "/x").await.assert_error(503, "no_healthy_target");
    }

    // Active: the only target starts failing its probes.
    let a = Upstream::http("a").await;
    let yaml = config(&format!(
        r#"
upstreams:
  - name: one
    targets: [{{address: "{}"}}]
    health: {{active: {{path: /health, interval: 100ms, timeout: 500ms, unhealthy_after: 1, healthy_after: 1}}}}
services: [{{name: one, upstream: one}}]
routes: [{{name: one, service: one, paths: ["/"]}}]
"#,
        a.addr()
    ));
    let gw = TestGateway::start(&yaml);
    assert_eq!(client::get(gw.addr(), "/x").await.name(), "a");
    a.set_healthy(false);
    wait_for("503 once the only target is unhealthy", Duration::from_secs(5), || async {
        let resp = client::get(gw.addr(), "/x").await;
        (resp.status == 503).then_some(resp)
    })
    .await
    .assert_error(503, "no_healthy_target");
    a.set_healthy(true);
    wait_for("the target to come back", Duration::from_secs(5), || async {
        (client::get(gw.addr(), "/x").await.status == 200).then_some(())
    })
    .await;
}
