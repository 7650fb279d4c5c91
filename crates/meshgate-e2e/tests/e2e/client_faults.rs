//! What goes wrong on the client's side of a request body (bad chunked framing, a body that
//! stops arriving, a client that goes away mid-upload) is the client's fault: answered 400/408,
//! never retried, and never counted against the upstream target, which stays healthy.

use bytes::Bytes;
use http::Method;
use meshgate_e2e::client::{self, request};
use meshgate_e2e::raw::RawConn;
use meshgate_e2e::{TestGateway, Upstream, body, config};
use std::time::{Duration, Instant};

/// A gateway in front of `up` whose passive health ejects a target after two failures.
fn gateway(up: &Upstream, protocol: &str) -> TestGateway {
    TestGateway::start(&config(&format!(
        r#"
limits: {{client_body_timeout: 300ms}}
upstreams: [{{name: u, targets: [{{address: "{}"}}], health: {{passive: {{unhealthy_after: 2}}}}}}]
services: [{{name: s, upstream: u, protocol: {protocol}, retry: {{attempts: 2, on: [reset, timeout, 502], idempotent_only: false}}}}]
routes: [{{name: r, service: s, paths: [/]}}]
"#,
        up.addr()
    )))
}

/// The single target's consecutive failures, and whether it takes traffic.
fn target(gw: &TestGateway) -> (u32, bool) {
    let s = gw.gateway().target_statuses();
    assert_eq!(s.len(), 1, "{s:?}");
    (s[0].consecutive_failures, s[0].healthy)
}

/// Sends raw bytes and returns the status of the answer (0 when the connection closed first).
async fn raw_status(gw: &TestGateway, bytes: &[u8]) -> (u16, String) {
    let mut c = RawConn::connect(gw.addr()).await;
    c.send(bytes).await;
    c.response(false).await.map_or((0, String::new()), |m| (m.status(), m.text()))
}

async fn faults_are_the_clients(protocol: &str, up: Upstream) {
    let gw = gateway(&up, protocol);
    for round in 0..3 {
        // Bad chunked framing found mid-stream: 400.
        let (status, text) = raw_status(
            &gw,
            b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
        )
        .await;
        assert_eq!(status, 400, "round {round}, bad chunk: {text}");
        assert!(text.contains("\"bad_request\""), "{text}");

        // A body that stops arriving: 408 after client_body_timeout.
        let mut stalled = RawConn::connect(gw.addr()).await;
        stalled.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc").await;
        let started = Instant::now();
        let resp = stalled.response(false).await.expect("an answer to the stalled body");
        assert_eq!(resp.status(), 408, "round {round}, stalled: {}", resp.text());
        assert!(resp.text().contains("\"request_timeout\""), "{}", resp.text());
        assert!(started.elapsed() >= Duration::from_millis(250), "answered before the body timeout");

        // A client that goes away mid-upload.
        let mut gone = RawConn::connect(gw.addr()).await;
        gone.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789").await;
        meshgate_e2e::wait_for("the upload to reach the upstream", Duration::from_secs(5), || async {
            (up.received() > 0).then_some(())
        })
        .await;
        drop(gone);
        meshgate_e2e::wait_for("the cut upload to end upstream", Duration::from_secs(5), || async {
            (up.in_flight() == 0).then_some(())
        })
        .await;

        assert_eq!(target(&gw), (0, true), "round {round}: no failure counted against the target");
    }
    // The target was never ejected: a good request goes through.
    let resp = client::send(gw.addr(), request(Method::POST, "/upload").body(body::full("hello")).unwrap()).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["body_len"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_body_faults_never_count_against_an_http1_target() {
    faults_are_the_clients("http", Upstream::http("a").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_body_faults_never_count_against_an_h2c_target() {
    faults_are_the_clients("h2c", Upstream::h2c("a").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_timeout_counts_from_the_end_of_the_upload() {
    let up = Upstream::http("a").await;
    let gw = TestGateway::start(&config(&format!(
        "services: [{{name: s, url: \"http://{}\", timeouts: {{read: 300ms}}}}]\nroutes: [{{name: r, service: s, paths: [/]}}]",
        up.addr()
    )));
    // Six chunks 100 ms apart: the upload takes twice the read timeout, and is not a timeout.
    let (tx, upload) = body::channel(1);
    let sender = tokio::spawn(async move {
        for _ in 0..6 {
            tx.send(Bytes::from_static(b"0123456789")).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let started = Instant::now();
    let resp = client::send(gw.addr(), request(Method::POST, "/upload").body(upload).unwrap()).await;
    sender.await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["body_len"], 60);
    assert!(started.elapsed() >= Duration::from_millis(500), "the upload itself took {:?}", started.elapsed());

    // After the body, the upstream's silence is timed: 504.
    let resp = client::send(gw.addr(), request(Method::POST, "/delay/2000").body(body::full("x")).unwrap()).await;
    resp.assert_error(504, "upstream_timeout");
}
