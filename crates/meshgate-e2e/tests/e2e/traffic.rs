//! Flow control on real traffic: weighted and sticky splits between services, mirroring to a
//! shadow service (live, dead, saturated), fault injection, per-route request size limits.

use bytes::Bytes;
use http::Method;
use meshgate_e2e::client::{self, Conn};
use meshgate_e2e::upstream::closed_port;
use meshgate_e2e::{TestGateway, Upstream, body, config, wait_for};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_with_per_service_plugins() {
    let (a, b) = (Upstream::http("a").await, Upstream::http("b").await);
    let gw = TestGateway::start(&config(&format!(
        r#"
services:
  - {{name: v1, url: "http://{}"}}
  - name: v2
    url: "http://{}"
    plugins: [{{name: response-headers, config: {{set: {{X-Canary: "yes"}}}}}}]
routes:
  - name: split
    paths: ["/"]
    services: [{{name: v1, weight: 80}}, {{name: v2, weight: 20}}]
"#,
        a.addr(),
        b.addr()
    )));
    let mut conn = Conn::h1(gw.addr()).await.unwrap();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..2000 {
        let resp = conn.get("/x").await.unwrap();
        assert_eq!(resp.status, 200);
        let name = resp.name();
        // v2's service-level plugin runs on v2's share only.
        assert_eq!(resp.header("x-canary").is_some(), name == "b", "{name}: {:?}", resp.headers);
        *counts.entry(name).or_default() += 1;
    }
    let na = counts.get("a").copied().unwrap_or(0);
    assert!(na.abs_diff(1600) <= 80, "80/20 over 2000 requests gave {counts:?}");
    assert_eq!(a.hits() + b.hits(), 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_split_keeps_each_user_on_one_service() {
    let (a, b) = (Upstream::http("a").await, Upstream::http("b").await);
    let gw = TestGateway::start(&config(&format!(
        r#"
services: [{{name: v1, url: "http://{}"}}, {{name: v2, url: "http://{}"}}]
routes:
  - name: by-user
    paths: ["/u"]
    services: [{{name: v1, weight: 70}}, {{name: v2, weight: 30}}]
    sticky: {{header: X-User}}
  - name: by-cookie
    paths: ["/c"]
    services: [{{name: v1, weight: 50}}, {{name: v2, weight: 50}}]
    sticky: {{cookie: session}}
"#,
        a.addr(),
        b.addr()
    )));
    let mut conn = Conn::h1(gw.addr()).await.unwrap();
    let mut send = async |path: &str, header: &str, value: &str| {
        let req = client::request(Method::GET, path).header(header, value).body(body::empty()).unwrap();
        conn.send(req).await.unwrap().name()
    };
    let mut on_a = 0;
    for user in 0..300 {
        let id = format!("user-{user}");
        let first = send("/u", "x-user", &id).await;
        for _ in 0..3 {
            assert_eq!(send("/u", "x-user", &id).await, first, "{id} moved between services");
        }
        on_a += usize::from(first == "a");
    }
    // 70 % of 300 users is 210 (standard deviation ~8).
    assert!(on_a.abs_diff(210) <= 35, "{on_a} of 300 users on the 70 % service");
    let mut seen = HashMap::new();
    for s in 0..40 {
        let cookie = format!("theme=dark; session=s{s}");
        let first = send("/c", "cookie", &cookie).await;
        assert_eq!(send("/c", "cookie", &format!("session=s{s}")).await, first);
        *seen.entry(first).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "50/50 by cookie sent 40 sessions to {seen:?}");
    // Without the header the request is still served (placed at random).
    assert_eq!(client::get(gw.addr(), "/u").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_sends_copies_and_bodies_it_can_buffer() {
    let (main, shadow, half) =
        (Upstream::http("main").await, Upstream::http("shadow").await, Upstream::http("half").await);
    let gw = TestGateway::start(&config(&format!(
        r#"
services:
  - {{name: main, url: "http://{}"}}
  - {{name: shadow, url: "http://{}/v2"}}
  - {{name: half, url: "http://{}"}}
routes:
  - {{name: all, service: main, paths: ["/all"], mirror: {{service: shadow}}}}
  - {{name: half, service: main, paths: ["/half"], mirror: {{service: half, percentage: 50}}}}
"#,
        main.addr(),
        shadow.addr(),
        half.addr()
    )));
    let addr = gw.addr();
    // Not mirrored: a streaming (chunked) body, and one over the 64 KiB copy limit.
    let (tx, chunked) = body::channel(2);
    tokio::spawn(async move {
        let _ = tx.send(Bytes::from_static(b"streamed")).await;
    });
    let req = client::request(Method::POST, "/all").body(chunked).unwrap();
    assert_eq!(client::send(addr, req).await.json()["body_len"], 8);
    let req = client::request(Method::POST, "/all").body(body::full(vec![b'x'; 65 * 1024])).unwrap();
    assert_eq!(client::send(addr, req).await.json()["body_len"], 65 * 1024);
    // Mirrored: bodiless requests and small declared bodies (with the shadow's base path).
    let mut conn = Conn::h1(addr).await.unwrap();
    for i in 0..20 {
        assert_eq!(conn.get(&format!("/all/{i}")).await.unwrap().name(), "main");
    }
    for _ in 0..5 {
        let req = client::request(Method::POST, "/all/post").body(body::full(vec![b'y'; 100])).unwrap();
        let resp = conn.send(req).await.unwrap();
        assert_eq!((resp.name().as_str(), resp.json()["body_len"].as_u64()), ("main", Some(100)));
    }
    wait_for("25 copies at the shadow", Duration::from_secs(5), || async { (shadow.hits() >= 25).then_some(()) }).await;
    wait_for("the copied bodies", Duration::from_secs(5), || async { (shadow.received() == 500).then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(shadow.hits(), 25, "only bodiless and small declared bodies are mirrored");
    assert_eq!(main.hits(), 27);

    for _ in 0..400 {
        conn.get("/half").await.unwrap();
    }
    wait_for("half the copies", Duration::from_secs(5), || async { (half.hits() >= 140).then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(half.hits().abs_diff(200) <= 60, "50 % of 400 mirrored: {}", half.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_or_saturated_shadow_changes_nothing_for_clients() {
    let (main, hole) = (Upstream::http("main").await, Upstream::blackhole().await);
    let closed = closed_port();
    let gw = TestGateway::start(&config(&format!(
        r#"
services:
  - {{name: main, url: "http://{}"}}
  - {{name: hole, url: "http://{}", timeouts: {{read: 20s}}}}
  - {{name: closed, url: "http://{closed}"}}
routes:
  - {{name: to-hole, service: main, paths: ["/hole"], mirror: {{service: hole}}}}
  - {{name: to-closed, service: main, paths: ["/closed"], mirror: {{service: closed}}}}
"#,
        main.addr(),
        hole.addr()
    )));
    let mut conn = Conn::h1(gw.addr()).await.unwrap();
    let dropped_before = meshgate_proxy::mirror::DROPPED.load(Ordering::Relaxed);
    let started = Instant::now();
    // One connection is one worker: its 256 mirror slots fill with copies the black hole never
    // answers, and the rest are dropped. The client sees none of it.
    for i in 0..300 {
        let path = if i % 2 == 0 { "/hole" } else { "/closed" };
        let req = client::request(Method::POST, path).body(body::full(vec![b'z'; 10])).unwrap();
        let resp = conn.send(req).await.unwrap();
        assert_eq!((resp.status.as_u16(), resp.name().as_str()), (200, "main"), "{}", resp.text());
        assert_eq!(resp.json()["body_len"], 10);
    }
    for _ in 0..150 {
        assert_eq!(conn.get("/hole").await.unwrap().status, 200);
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "450 requests with dead shadows took {took:?}");
    wait_for("256 copies stuck in the black hole", Duration::from_secs(5), || async {
        (hole.connections() >= 256).then_some(())
    })
    .await;
    assert_eq!(hole.connections(), 256, "at most 256 mirror requests in flight per worker");
    let dropped = meshgate_proxy::mirror::DROPPED.load(Ordering::Relaxed) - dropped_before;
    assert!(dropped >= 300 - 256 - 1, "{dropped} copies dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_injection_aborts_and_delays_a_share() {
    let up = Upstream::http("up").await;
    let gw = TestGateway::start(&config(&format!(
        r#"
services: [{{name: s, url: "http://{}"}}]
routes:
  - name: abort
    service: s
    paths: ["/abort"]
    plugins: [{{name: fault-injection, config: {{abort: {{percentage: 50, status: 503, body: chaos}}}}}}]
  - name: delay
    service: s
    paths: ["/delay"]
    plugins: [{{name: fault-injection, config: {{delay: {{percentage: 50, duration: 150ms}}}}}}]
"#,
        up.addr()
    )));
    let mut conn = Conn::h1(gw.addr()).await.unwrap();
    let mut aborted = 0usize;
    for _ in 0..400 {
        let resp = conn.get("/abort").await.unwrap();
        if resp.status == 503 {
            resp.assert_error(503, "fault_injected");
            assert_eq!(resp.json()["message"], "chaos");
            aborted += 1;
        } else {
            assert_eq!(resp.name(), "up");
        }
    }
    assert!(aborted.abs_diff(200) <= 50, "{aborted} of 400 aborted at 50 %");
    assert_eq!(up.hits(), 400 - aborted, "aborted requests must not reach the upstream");
    let mut delayed = 0;
    for _ in 0..30 {
        let t = Instant::now();
        assert_eq!(conn.get("/delay").await.unwrap().status, 200);
        delayed += usize::from(t.elapsed() >= Duration::from_millis(150));
    }
    assert!((5..=25).contains(&delayed), "{delayed} of 30 delayed at 50 %");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_size_limit_per_route() {
    let up = Upstream::http("up").await;
    let gw = TestGateway::start(&config(&format!(
        r#"
services: [{{name: s, url: "http://{}"}}]
routes:
  - name: small
    service: s
    paths: ["/small"]
    plugins: [{{name: request-size-limiting, config: {{max_bytes: 1KiB}}}}]
  - {{name: big, service: s, paths: ["/big"]}}
"#,
        up.addr()
    )));
    let addr = gw.addr();
    let post = |path: &str, n: usize| client::request(Method::POST, path).body(body::full(vec![b'x'; n])).unwrap();
    let hits = up.hits();
    client::send(addr, post("/small", 1025)).await.assert_error(413, "body_too_large");
    assert_eq!(up.hits(), hits, "a declared oversized body must not reach the upstream");
    assert_eq!(client::send(addr, post("/small", 1024)).await.json()["body_len"], 1024);
    assert_eq!(client::send(addr, post("/big", 4096)).await.json()["body_len"], 4096);

    let chunked = |chunks: usize, size: usize| {
        let (tx, b) = body::channel(4);
        tokio::spawn(async move {
            for _ in 0..chunks {
                if tx.send(Bytes::from(vec![b'y'; size])).await.is_err() {
                    break;
                }
            }
        });
        b
    };
    let req = client::request(Method::POST, "/small").body(chunked(4, 512)).unwrap();
    match Conn::h1(addr).await.unwrap().send(req).await {
        Ok(resp) => resp.assert_error(413, "body_too_large"),
        Err(e) => panic!("chunked oversized body: expected a 413 answer, got a transport error: {e}"),
    }
    let req = client::request(Method::POST, "/small").body(chunked(2, 500)).unwrap();
    assert_eq!(client::send(addr, req).await.json()["body_len"], 1000);
    // HTTP/2 without content-length: counted while streaming too.
    let mut h2 = Conn::h2c(addr).await.unwrap();
    let req = client::request(Method::POST, "/small").body(chunked(4, 512)).unwrap();
    match h2.send(req).await {
        Ok(resp) => resp.assert_error(413, "body_too_large"),
        Err(e) => panic!("HTTP/2 oversized body: expected a 413 answer, got a transport error: {e}"),
    }
    let req = client::request(Method::POST, "/small").body(chunked(2, 500)).unwrap();
    assert_eq!(h2.send(req).await.unwrap().json()["body_len"], 1000);
    let req = client::request(Method::POST, "/big").body(chunked(4, 512)).unwrap();
    assert_eq!(client::send(addr, req).await.json()["body_len"], 2048);
}
