//! `access-log`: JSON lines with the request's facts, written off the request path.

use meshgate_e2e::{TestGateway, Upstream, client, config};
use meshgate_plugins::observability::access_log::DROPPED;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_with_the_request_facts() {
    let up = Upstream::http("up").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let gw = TestGateway::start(&config(&format!(
        r#"
services: [{{name: s, url: "http://{a}"}}]
routes:
  - name: logged
    service: s
    paths: ["/logged"]
    plugins: [{{name: key-auth, config: {{anonymous: guest}}}}]
plugins:
  - name: request-id
  - {{name: access-log, config: {{path: "{log}"}}}}
consumers: [{{username: alice, credentials: {{key-auth: [{{key: k1}}]}}}}, {{username: guest}}]
"#,
        a = up.addr(),
        log = log.display()
    )));
    let addr = gw.addr();
    let ok = client::get_with(addr, "/logged/x?secret=1", &[("apikey", "k1")]).await;
    assert_eq!(ok.status, 200);
    assert_eq!(client::get(addr, "/nowhere").await.status, 404);

    let lines = meshgate_e2e::wait_for("two log lines", Duration::from_secs(5), || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (text.lines().count() >= 2).then_some(text)
    })
    .await;
    let lines: Vec<serde_json::Value> =
        lines.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let first = &lines[0];
    assert_eq!(first["route"], "logged");
    assert_eq!(first["service"], "s");
    assert_eq!(first["consumer"], "alice");
    assert_eq!(first["client_ip"], "127.0.0.1");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/logged/x", "no query string: it may hold credentials");
    assert_eq!(first["status"], 200);
    assert_eq!(first["response_bytes"], ok.body.len() as u64);
    assert_eq!(first["upstream"], up.addr().to_string());
    assert_eq!(first["request_id"], ok.header("x-request-id").unwrap());
    assert!(first["duration_ms"].as_f64().unwrap() >= first["upstream_ms"].as_f64().unwrap());
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    let miss = &lines[1];
    assert_eq!(miss["status"], 404);
    assert!(miss.get("route").is_none() && miss.get("upstream").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_output_never_slows_requests() {
    let up = Upstream::http("up").await;
    let dir = tempfile::tempdir().unwrap();
    // A named pipe nobody reads: the writer blocks opening it, as on a hung disk.
    let fifo = dir.path().join("stalled.pipe");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let gw = TestGateway::start(&config(&format!(
        r#"
services: [{{name: s, url: "http://{a}"}}]
routes: [{{name: r, service: s, paths: ["/"]}}]
plugins: [{{name: access-log, config: {{path: "{fifo}", buffer: 10}}}}]
"#,
        a = up.addr(),
        fifo = fifo.display()
    )));
    let dropped = DROPPED.load(Ordering::Relaxed);
    let t = Instant::now();
    let mut conn = client::Conn::h1(gw.addr()).await.unwrap();
    for _ in 0..200 {
        assert_eq!(conn.get("/").await.unwrap().status, 200);
    }
    assert!(t.elapsed() < Duration::from_secs(5), "200 requests took {:?}", t.elapsed());
    assert!(DROPPED.load(Ordering::Relaxed) - dropped >= 190, "lines past the buffer of 10 are dropped");
    // Unblock the writer so its thread can finish with the test.
    let _ = std::fs::File::open(&fifo);
}
