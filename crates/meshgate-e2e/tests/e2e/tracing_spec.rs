//! `tracing` against the specs, end to end: W3C Trace Context and B3 headers as clients write
//! them on the wire (header names in any case, whitespace around values, repeated headers),
//! and the spans of failed and refused calls as Zipkin and OpenTelemetry's HTTP conventions
//! describe them. The specs' full case tables run against the plugin itself
//! (`meshgate-plugins`, `tracing/spec_tests.rs`).

use meshgate_e2e::client::Conn;
use meshgate_e2e::observe::Collector;
use meshgate_e2e::{TestGateway, TestPki, Upstream, client, config};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: &str = "5ce0e9a56015fec5aadfa328ae398115";
const T2: &str = "0d2d5b0a8c6b4e7f9a1c3e5f7b9d1f3a";
const P: &str = "ab42124a3c573678";

/// Sends a GET whose header lines are `lines`, byte for byte, and returns the headers the echo
/// upstream received.
async fn raw(addr: SocketAddr, lines: &[&str]) -> Value {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let head = format!("GET /echo HTTP/1.1\r\nHost: gw\r\n{}\r\nConnection: close\r\n\r\n", lines.join("\r\n"));
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tcp.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (status, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{lines:?}: {status}");
    let json = &body[body.find('{').unwrap()..=body.rfind('}').unwrap()];
    serde_json::from_str::<Value>(json).unwrap()["headers"].clone()
}

/// The trace id of the `traceparent` an upstream received.
fn trace_of(seen: &Value) -> &str {
    let tp = seen["traceparent"].as_str().expect("a traceparent");
    assert_eq!(tp.len(), 55, "one traceparent: {tp}");
    &tp[3..35]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_headers_as_written_on_the_wire() {
    let collector = Collector::start().await;
    let up = Upstream::http("up").await;
    let gw = TestGateway::start(&config(&format!(
        r#"
services: [{{name: s, url: "http://{up}"}}]
routes: [{{name: r, service: s, paths: ["/"]}}]
plugins: [{{name: tracing, config: {{zipkin: {{url: "{url}"}}, sampling: 0}}}}]
"#,
        up = up.addr(),
        url = collector.url()
    )));
    let addr = gw.addr();
    let tp = format!("traceparent: 00-{T}-{P}-01");

    // W3C: names in any case, whitespace around the value; two traceparents are invalid.
    assert_eq!(trace_of(&raw(addr, &[&format!("TrAcEpArEnT: 00-{T}-{P}-01")]).await), T);
    assert_eq!(trace_of(&raw(addr, &[&format!("traceparent:\t 00-{T}-{P}-01 \t")]).await), T);
    let two = raw(addr, &[&tp, &format!("traceparent: 00-{T2}-{P}-01")]).await;
    assert!(![T, T2].contains(&trace_of(&two)), "two traceparents: a new trace");
    // tracestate: several headers become one; it goes only with a valid traceparent.
    let seen = raw(addr, &[&tp, "TraceState: rojo=1, \t", "tracestate: congo=2"]).await;
    assert_eq!((trace_of(&seen), &seen["tracestate"]), (T, &Value::from("rojo=1,congo=2")), "one header, in order");
    let alone = raw(addr, &["tracestate: rojo=1"]).await;
    assert_eq!(alone.get("tracestate"), None, "no traceparent: no tracestate");
    let invalid = raw(addr, &[&format!("traceparent: ff-{T}-{P}-01"), "tracestate: rojo=1"]).await;
    assert!(trace_of(&invalid) != T && invalid.get("tracestate").is_none(), "a restarted trace: no tracestate");
    let bad_state = raw(addr, &[&tp, "tracestate: Rojo=1"]).await;
    assert_eq!((trace_of(&bad_state), bad_state.get("tracestate")), (T, None), "an invalid list is dropped");

    // B3: names in any case; the single header's debug goes on.
    let multi =
        raw(addr, &[&format!("X-B3-TraceId: {}", &T[16..]), &format!("X-B3-SpanId: {P}"), "X-B3-Sampled: 1"]).await;
    assert_eq!((multi["x-b3-traceid"].as_str(), multi["x-b3-sampled"].as_str()), (Some(&T[16..]), Some("1")));
    let single = raw(addr, &[&format!("B3: {T}-{P}-d")]).await;
    let b3 = single["b3"].as_str().unwrap();
    assert!(b3.starts_with(T) && b3.contains("-d-"), "{b3}");
    let upper = raw(addr, &[&format!("b3: {}-{P}-1", T.to_uppercase())]).await;
    assert!(!upper["b3"].as_str().unwrap().to_lowercase().starts_with(T), "ids are lower-case hex");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_refused_calls_are_errors() {
    let (zipkin, otlp) = (Collector::start().await, Collector::otlp().await);
    let missing = Upstream::http("missing").await;
    missing.set_status(404);
    // Two ports with nothing listening (bound together, so they differ, then released).
    let bound: Vec<_> = (0..2).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let dead: Vec<SocketAddr> = bound.iter().map(|l| l.local_addr().unwrap()).collect();
    drop(bound);
    let gw = TestGateway::start(&config(&format!(
        r#"
upstreams: [{{name: dead, targets: [{{address: "{d1}"}}, {{address: "{d2}"}}]}}]
services: [{{name: dead, upstream: dead, retries: 1}}, {{name: missing, url: "http://{missing}"}}]
routes:
  - {{name: Dead-End, service: dead, paths: ["/dead"]}}
  - {{name: missing, service: missing, paths: ["/missing"]}}
  - {{name: dead-otlp, service: dead, paths: ["/otlp/dead"], plugins: [{otlp_plugin}]}}
  - {{name: missing-otlp, service: missing, paths: ["/otlp/missing"], plugins: [{otlp_plugin}]}}
plugins: [{{name: tracing, config: {{zipkin: {{url: "{zipkin_url}", flush_interval: 50ms}}}}}}]
"#,
        d1 = dead[0],
        d2 = dead[1],
        missing = missing.addr(),
        otlp_plugin = format!("{{name: tracing, config: {{otlp: {{url: \"{}\", flush_interval: 50ms}}}}}}", otlp.url()),
        zipkin_url = zipkin.url(),
    )));
    let traced = async |path: &str, trace: &str| {
        client::get_with(gw.addr(), path, &[("b3", &format!("{trace}-{P}-1"))]).await.status.as_u16()
    };

    // Zipkin: every failed attempt says why, the last one too; a 4xx is the call's error.
    assert_eq!(traced("/dead", T).await, 502);
    let spans = zipkin.trace(T, 3).await;
    let (server, calls) = (&spans[0], &spans[1..]);
    assert_eq!((&server["name"], &server["tags"]["error"]), (&"get dead-end".into(), &"502".into()));
    for call in calls {
        let error = call["tags"]["error"].as_str().unwrap_or_else(|| panic!("an error tag: {call}"));
        let target = format!("127.0.0.1:{}", call["remoteEndpoint"]["port"]);
        assert!(error.starts_with("connect to ") && error.contains(&target), "{error}");
    }
    assert_eq!(traced("/missing", T2).await, 404);
    let spans = zipkin.trace(T2, 2).await;
    assert_eq!(spans[0]["tags"].get("error"), None, "a 404 is not the gateway's error");
    assert_eq!((&spans[1]["tags"]["error"], &spans[1]["tags"]["http.status_code"]), (&"404".into(), &"404".into()));

    // OTLP: the same, as the HTTP conventions put it.
    let (t3, t4) = ("1".repeat(32), "2".repeat(32));
    assert_eq!(traced("/otlp/dead", &t3).await, 502);
    let spans = otlp.trace(&t3, 3).await;
    let attr = |span: &Value, key: &str| {
        span["attributes"].as_array().unwrap().iter().find(|kv| kv["key"] == key).map(|kv| kv["value"].clone())
    };
    assert_eq!(
        (&spans[0]["status"], attr(&spans[0], "error.type")),
        (&json!({"code": 2}), Some(json!({"stringValue": "502"})))
    );
    for (i, call) in spans[1..].iter().enumerate() {
        let message = call["status"]["message"].as_str().unwrap_or_else(|| panic!("an error status: {call}"));
        assert!(message.starts_with("connect to "), "{message}");
        assert_eq!(attr(call, "error.type"), Some(json!({"stringValue": "connect_error"})));
        let resends = attr(call, "http.request.resend_count");
        assert_eq!(resends, (i > 0).then(|| json!({"intValue": "1"})), "the retry is a resend");
    }
    assert_eq!(traced("/otlp/missing", &t4).await, 404);
    let spans = otlp.trace(&t4, 2).await;
    assert!(spans[0].get("status").is_none(), "4xx: not an error of the server span");
    assert_eq!(spans[1]["status"], json!({"code": 2}), "4xx: an error of the client span");
    assert_eq!(attr(&spans[1], "error.type"), Some(json!({"stringValue": "404"})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_is_https() {
    let collector = Collector::otlp().await;
    let pki = TestPki::new("test CA");
    let cert = pki.leaf(&["gw.test"]);
    let up = Upstream::http("up").await;
    let gw = TestGateway::start(&format!(
        r#"
runtime: {{workers: 2, watch_config: false, drain_timeout: 1s}}
listeners: [{{name: tls, address: "127.0.0.1:0", tls: {{certificates: [{{cert: "{c}", key: "{k}"}}]}}}}]
services: [{{name: s, url: "http://{up}"}}]
routes: [{{name: r, service: s, paths: ["/"]}}]
plugins: [{{name: tracing, config: {{otlp: {{url: "{url}", flush_interval: 50ms}}}}}}]
"#,
        c = cert.cert_path.display(),
        k = cert.key_path.display(),
        up = up.addr(),
        url = collector.url()
    ));
    let tcp = TcpStream::connect(gw.addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("gw.test").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new((*pki.client_config(&[b"http/1.1"])).clone()))
        .connect(name, tcp)
        .await
        .unwrap();
    let mut conn = Conn::h1_over(tls, "gw.test".into()).await.unwrap();
    let req = client::request(http::Method::GET, "/x").header("traceparent", format!("00-{T}-{P}-01"));
    assert_eq!(conn.send(req.body(meshgate_e2e::body::empty()).unwrap()).await.unwrap().status, 200);
    let spans = collector.trace(T, 2).await;
    let scheme = spans[0]["attributes"].as_array().unwrap().iter().find(|kv| kv["key"] == "url.scheme").cloned();
    assert_eq!(scheme.unwrap()["value"]["stringValue"], "https");
}
