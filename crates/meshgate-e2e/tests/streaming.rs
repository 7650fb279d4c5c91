//! Large bodies stream through the gateway instead of being buffered whole.
//!
//! Two kinds of evidence: (1) gated transfers, where the upstream sends one chunk and then waits
//! for the test: the client must receive that chunk while the upstream is still waiting (and the
//! upstream must receive the first chunk of an upload while the client is still holding the rest);
//! (2) a 64 MiB download and a 32 MiB upload whose peak memory (VmHWM of this process, which hosts
//! client, gateway and upstream) grows far less than the body. This file is its own test binary
//! and runs its steps in one test, so no other test's memory use blurs the measurement.

use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;
use meshgate_e2e::client::{self, Conn};
use meshgate_e2e::upstream::CHUNK;
use meshgate_e2e::{TestGateway, Upstream, body, config, wait_for};
use std::time::Duration;

const MIB: u64 = 1024 * 1024;

/// Peak resident memory of this process, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream() {
    let up = Upstream::http("up").await;
    let gw = TestGateway::start(&config(&format!(
        r#"
limits: {{max_body_bytes: 100MiB}}
services: [{{name: s, url: "http://{}"}}]
routes: [{{name: r, service: s, paths: ["/"]}}]
"#,
        up.addr()
    )));
    let addr = gw.addr();

    // (1a) Download: the first chunk arrives while the upstream is still holding the rest.
    let mut conn = Conn::h1(addr).await.unwrap();
    let req = client::request(Method::GET, &format!("/gated-stream/{}", 4 * MIB)).body(body::empty()).unwrap();
    let resp = conn.send_streaming(req).await.expect("response head before the body is complete");
    let mut body = resp.into_body();
    let mut got = 0usize;
    while got < CHUNK {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("the first chunk did not arrive while the upstream waited: the gateway buffers responses")
            .expect("body ended early")
            .unwrap();
        got += frame.data_ref().map_or(0, |d| d.len());
    }
    assert_eq!(up.sent(), CHUNK as u64, "the upstream must still be waiting at the gate");
    up.open_gate();
    let rest = body::count(body).await.unwrap();
    assert_eq!(got as u64 + rest, 4 * MIB);

    // (1b) Upload: the upstream receives the first chunk while the client holds back the rest.
    let (tx, upload) = body::channel(1);
    let req = client::request(Method::POST, "/upload").body(upload).unwrap();
    let mut conn = Conn::h1(addr).await.unwrap();
    let pending = tokio::spawn(async move { conn.send(req).await });
    tx.send(Bytes::from(vec![b'u'; CHUNK])).await.unwrap();
    wait_for("the first upload chunk to reach the upstream", Duration::from_secs(5), || async {
        (up.received() >= CHUNK as u64).then_some(())
    })
    .await;
    tx.send(Bytes::from(vec![b'u'; CHUNK])).await.unwrap();
    drop(tx);
    let resp = pending.await.unwrap().unwrap();
    assert_eq!(resp.json()["body_len"], 2 * CHUNK as u64);

    // (2) Big transfers with bounded memory.
    let before = peak_rss();
    let resp = conn_get_streaming(addr, &format!("/stream/{}", 64 * MIB)).await;
    assert_eq!(body::count(resp).await.unwrap(), 64 * MIB);
    let after_download = peak_rss();

    let (tx, upload) = body::channel(4);
    let feeder = tokio::spawn(async move {
        let chunk = Bytes::from(vec![b'u'; 256 * 1024]);
        for _ in 0..(32 * MIB / chunk.len() as u64) {
            tx.send(chunk.clone()).await.unwrap();
        }
    });
    let req = client::request(Method::PUT, "/upload").body(upload).unwrap();
    let resp = client::send(addr, req).await;
    feeder.await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["body_len"], 32 * MIB);
    let after_upload = peak_rss();
    // The kernel's RSS counters are approximate (per-CPU batches), so a later reading can be a
    // little lower than an earlier one.
    let (download_growth, upload_growth) =
        (after_download.saturating_sub(before), after_upload.saturating_sub(after_download));
    eprintln!(
        "peak RSS: {} MiB before, +{} MiB after a 64 MiB download, +{} MiB after a 32 MiB upload",
        before / MIB,
        download_growth / MIB,
        upload_growth / MIB
    );
    assert!(download_growth < 16 * MIB, "a 64 MiB download raised peak memory by {} MiB", download_growth / MIB);
    assert!(upload_growth < 16 * MIB, "a 32 MiB upload raised peak memory by {} MiB", upload_growth / MIB);
}

async fn conn_get_streaming(addr: std::net::SocketAddr, path: &str) -> hyper::body::Incoming {
    let mut conn = Conn::h1(addr).await.unwrap();
    let req = client::request(Method::GET, path).body(body::empty()).unwrap();
    let resp = conn.send_streaming(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body()
}
