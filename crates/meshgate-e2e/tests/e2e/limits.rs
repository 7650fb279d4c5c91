//! Connection limits: `max_connections` per listener and `client_idle_timeout`.

use meshgate_e2e::client::Conn;
use meshgate_e2e::{TestGateway, Upstream, config, wait_for};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn gateway(up: &Upstream, limits: &str) -> TestGateway {
    TestGateway::start(&config(&format!(
        r#"
limits: {limits}
services: [{{name: s, url: "http://{}"}}]
routes: [{{name: r, service: s, paths: ["/"]}}]
"#,
        up.addr()
    )))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections() {
    let up = Upstream::http("up").await;
    let gw = gateway(&up, "{max_connections: 3}");
    let mut open = Vec::new();
    for i in 0..3 {
        let mut c = Conn::h1(gw.addr()).await.unwrap();
        assert_eq!(c.get("/x").await.unwrap().status, 200, "connection {i} within the limit");
        open.push(c);
    }
    // The fourth is accepted by the kernel, then closed by the gateway without an answer.
    let mut extra = Conn::h1(gw.addr()).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), extra.get("/x")).await.expect("answer or close in time");
    assert!(r.is_err(), "a connection over max_connections was served: {:?}", r.map(|r| r.status));
    // The first three still work.
    for c in &mut open {
        assert_eq!(c.get("/again").await.unwrap().status, 200);
    }
    // Closing one frees a slot.
    drop(open.pop());
    wait_for("a freed connection slot", Duration::from_secs(5), || async {
        let mut c = Conn::h1(gw.addr()).await.ok()?;
        c.get("/x").await.ok().filter(|r| r.status == 200)
    })
    .await;
}

/// Sends one keep-alive request on a raw socket and reads the response (Content-Length bodies).
async fn raw_exchange(tcp: &mut TcpStream) -> String {
    tcp.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tcp.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed mid-response");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let len: usize = text[..head_end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .expect("content-length");
            if buf.len() >= head_end + 4 + len {
                return text;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_client_connections_are_closed() {
    let up = Upstream::http("up").await;
    let gw = gateway(&up, "{client_idle_timeout: 500ms}");

    // Busy connections stay open past the timeout.
    let mut busy = TcpStream::connect(gw.addr()).await.unwrap();
    for _ in 0..8 {
        assert!(raw_exchange(&mut busy).await.starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // An idle one is closed after about the timeout.
    let mut idle = TcpStream::connect(gw.addr()).await.unwrap();
    assert!(raw_exchange(&mut idle).await.starts_with("HTTP/1.1 200"));
    let since = Instant::now();
    let mut b = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut b))
        .await
        .expect("idle connection still open 5s after a 500ms idle timeout")
        .unwrap_or(0);
    let took = since.elapsed();
    assert_eq!(n, 0, "expected the gateway to close the connection");
    assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(3), "closed after {took:?}");

    // A connection that never sends anything is closed too.
    let mut silent = TcpStream::connect(gw.addr()).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut b))
        .await
        .expect("silent connection still open 5s after a 500ms idle timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_spares_slow_responses() {
    let up = Upstream::http("up").await;
    let gw = gateway(&up, "{client_idle_timeout: 500ms}");

    // A slow upstream answer (no bytes move for 1.5 s) is not an idle connection.
    let mut conn = Conn::h1(gw.addr()).await.unwrap();
    let resp = conn.get("/delay/1500").await.expect("slow response on a connection with a 500ms idle timeout");
    assert_eq!(resp.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_spares_paused_response_bodies() {
    let up = Upstream::http("up").await;
    let gw = gateway(&up, "{client_idle_timeout: 500ms}");
    let mut conn = Conn::h1(gw.addr()).await.unwrap();
    // A response whose body pauses longer than the idle timeout (long polling, server-sent
    // events) is still in progress: the connection is not idle.
    let req = meshgate_e2e::client::request(http::Method::GET, "/gated-stream/200000")
        .body(meshgate_e2e::body::empty())
        .unwrap();
    let resp = conn.send_streaming(req).await.unwrap();
    let mut body = resp.into_body();
    use http_body_util::BodyExt;
    let first = body.frame().await.expect("first chunk").unwrap();
    assert!(first.data_ref().is_some_and(|d| !d.is_empty()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    up.open_gate();
    let rest = meshgate_e2e::body::count(body).await;
    assert!(rest.is_ok(), "a paused response body was cut by the idle timeout: {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_headers_are_cut_off() {
    let up = Upstream::http("up").await;
    let gw = gateway(&up, "{client_header_timeout: 500ms, client_idle_timeout: 30s}");
    let mut tcp = TcpStream::connect(gw.addr()).await.unwrap();
    tcp.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n").await.unwrap();
    let since = Instant::now();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "a client that never finishes its headers kept the connection for 5s");
    let took = since.elapsed();
    assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(3), "closed after {took:?}");
    let text = String::from_utf8_lossy(&buf);
    assert!(buf.is_empty() || text.starts_with("HTTP/1.1 408"), "unexpected answer: {text}");
}
