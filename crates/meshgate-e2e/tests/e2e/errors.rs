//! Every error the gateway answers itself: the status and the JSON body
//! `{"status", "error", "message"}`.

use bytes::Bytes;
use http::Method;
use meshgate_e2e::client::{self, Conn};
use meshgate_e2e::upstream::{Unresponsive, closed_port};
use meshgate_e2e::{TestGateway, Upstream, body, config};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_statuses() {
    let up = Upstream::http("up").await;
    let blackhole = Upstream::blackhole().await;
    let closed = closed_port();
    let gw = TestGateway::start(&config(&format!(
        r#"
limits: {{max_body_bytes: 1KiB, max_header_bytes: 2KiB, max_headers: 20}}
upstreams:
  - name: dead
    targets: [{{address: "{closed}"}}]
    health: {{passive: {{unhealthy_after: 1, recover_after: 60s}}}}
services:
  - {{name: ok, url: "http://{}"}}
  - {{name: closed, url: "http://{closed}"}}
  - {{name: dead, upstream: dead, retries: 1}}
  - {{name: slow, url: "http://{}", timeouts: {{read: 300ms}}}}
routes:
  - {{name: ok, service: ok, paths: ["/ok"]}}
  - {{name: closed, service: closed, paths: ["/closed"]}}
  - {{name: dead, service: dead, paths: ["/dead"]}}
  - {{name: slow, service: slow, paths: ["/slow"]}}
"#,
        up.addr(),
        blackhole.addr()
    )));
    let addr = gw.addr();

    client::get(addr, "/nowhere").await.assert_error(404, "no_route");

    client::get(addr, "/closed").await.assert_error(502, "upstream_unavailable");

    // The failing attempt ejects the only target; its retry finds none, and the client is told
    // what actually happened (502), not 503. The next request finds no healthy target.
    client::get(addr, "/dead").await.assert_error(502, "upstream_unavailable");
    client::get(addr, "/dead").await.assert_error(503, "no_healthy_target");

    let started = Instant::now();
    client::get(addr, "/slow").await.assert_error(504, "upstream_timeout");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(3), "read timeout took {took:?}");

    // 413 on a declared Content-Length: refused before anything reaches the upstream.
    let hits = up.hits();
    let req = client::request(Method::POST, "/ok").body(body::full(vec![b'x'; 2048])).unwrap();
    client::send(addr, req).await.assert_error(413, "body_too_large");
    assert_eq!(up.hits(), hits, "an oversized declared body must not reach the upstream");
    // ... exactly at the limit is fine.
    let req = client::request(Method::POST, "/ok").body(body::full(vec![b'x'; 1024])).unwrap();
    assert_eq!(client::send(addr, req).await.json()["body_len"], 1024);

    // 413 on a chunked body that goes over the limit while streaming.
    let (tx, chunked) = body::channel(4);
    tokio::spawn(async move {
        for _ in 0..4 {
            if tx.send(Bytes::from(vec![b'y'; 512])).await.is_err() {
                break;
            }
        }
    });
    let req = client::request(Method::POST, "/ok").body(chunked).unwrap();
    let mut conn = Conn::h1(addr).await.unwrap();
    match conn.send(req).await {
        Ok(resp) => resp.assert_error(413, "body_too_large"),
        Err(e) => panic!("chunked oversized body: expected a 413 answer, got a transport error: {e}"),
    }
    // A chunked body within the limit passes.
    let (tx, chunked) = body::channel(4);
    tokio::spawn(async move {
        for _ in 0..2 {
            let _ = tx.send(Bytes::from(vec![b'y'; 500])).await;
        }
    });
    let req = client::request(Method::POST, "/ok").body(chunked).unwrap();
    assert_eq!(client::send(addr, req).await.json()["body_len"], 1000);

    // 431: a header block over max_header_bytes, and more headers than max_headers.
    let big = "v".repeat(3000);
    let resp = client::get_with(addr, "/ok", &[("x-big", &big)]).await;
    resp.assert_error(431, "headers_too_large");
    let names: Vec<String> = (0..25).map(|i| format!("x-h{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    client::get_with(addr, "/ok", &many).await.assert_error(431, "headers_too_large");
    // The same limits apply to HTTP/2 clients, with the same JSON answer.
    let mut h2 = Conn::h2c(addr).await.unwrap();
    let req = client::request(Method::GET, "/ok").header("x-big", &big).body(body::empty()).unwrap();
    h2.send(req).await.unwrap().assert_error(431, "headers_too_large");
    let mut req = client::request(Method::GET, "/ok");
    for (k, v) in &many {
        req = req.header(*k, *v);
    }
    h2.send(req.body(body::empty()).unwrap()).await.unwrap().assert_error(431, "headers_too_large");
    let req = client::request(Method::POST, "/ok").body(body::full(vec![b'x'; 2048])).unwrap();
    h2.send(req).await.unwrap().assert_error(413, "body_too_large");
    // ... and just under both limits is fine.
    let under: Vec<(&str, &str)> = many[..15].to_vec();
    assert_eq!(client::get_with(addr, "/ok", &under).await.status, 200);
    let fits = "v".repeat(1500);
    assert_eq!(client::get_with(addr, "/ok", &[("x-big", &fits)]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_gives_504() {
    let Some(unresponsive) = Unresponsive::new() else {
        eprintln!("skipped: could not make a listener that leaves connections unanswered");
        return;
    };
    let gw = TestGateway::start(&config(&format!(
        r#"
services: [{{name: s, url: "http://{}", timeouts: {{connect: 300ms}}, retries: 0}}]
routes: [{{name: r, service: s, paths: ["/"]}}]
"#,
        unresponsive.addr()
    )));
    let started = Instant::now();
    client::get(gw.addr(), "/x").await.assert_error(504, "upstream_timeout");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(3), "connect timeout took {took:?}");
}

/// An upstream failure's cause (its address, the OS error) goes to the log and the trace; the
/// client gets the fixed message of the error code, and the request id to quote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_tell_clients_nothing_internal() {
    let closed = closed_port();
    let blackhole = Upstream::blackhole().await;
    let gw = TestGateway::start(&config(&format!(
        r#"
upstreams: [{{name: gone, targets: [{{address: "{closed}"}}], health: {{passive: {{unhealthy_after: 1, recover_after: 60s}}}}}}]
services:
  - {{name: closed, url: "http://{closed}"}}
  - {{name: slow, url: "http://{}", timeouts: {{read: 200ms}}}}
  - {{name: gone, upstream: gone, retries: 0}}
plugins: [{{name: request-id}}]
routes:
  - {{name: closed, service: closed, paths: ["/closed"]}}
  - {{name: slow, service: slow, paths: ["/slow"]}}
  - {{name: gone, service: gone, paths: ["/gone"]}}
"#,
        blackhole.addr()
    )));
    let cases = [
        ("/closed", 502, "upstream_unavailable", "the upstream server could not be reached or broke the exchange"),
        ("/slow", 504, "upstream_timeout", "the upstream server did not answer in time"),
        ("/gone", 502, "upstream_unavailable", "the upstream server could not be reached or broke the exchange"),
        ("/gone", 503, "no_healthy_target", "no healthy upstream server is available"),
    ];
    for (path, status, code, message) in cases {
        let resp = client::get_with(gw.addr(), path, &[("x-request-id", "req-7")]).await;
        resp.assert_error(status, code);
        let body = resp.json();
        assert_eq!((&body["message"], &body["request_id"]), (&message.into(), &"req-7".into()), "{path}");
        assert_eq!(body.as_object().unwrap().len(), 4, "status, error, message, request_id: {body}");
        let text = resp.text();
        for internal in [closed.to_string(), blackhole.addr().to_string(), "os error".into(), "gone".into()] {
            assert!(!text.contains(&internal), "{path}: {internal:?} in {text}");
        }
    }
}
