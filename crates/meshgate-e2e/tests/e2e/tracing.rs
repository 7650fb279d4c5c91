//! `tracing`: spans exported to a real local Zipkin-style or OTLP collector (which checks them
//! against the Zipkin API's rules and OpenTelemetry's model), trace headers seen by real
//! upstreams, a two-hop chain through an instrumented service, and a dead collector that must
//! not slow requests. The W3C and B3 specs' cases, on the wire: `tracing_wire.rs`.

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use meshgate_e2e::observe::Collector;
use meshgate_e2e::{TestGateway, Upstream, body, client, config};
use meshgate_plugins::observability::tracing::export::{DROPPED, EXPORT_ERRORS};
use serde_json::Value;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;

/// The plugin's YAML entry exporting to `url` quickly, with `extra` config fields.
fn tracing_plugin(url: &str, extra: &str) -> String {
    format!("{{name: tracing, config: {{zipkin: {{url: \"{url}\", flush_interval: 50ms, batch_size: 50}}{extra}}}}}")
}

/// Lower hex of `len` digits, not all zero.
fn assert_id(v: &Value, len: usize) -> String {
    let s = v.as_str().unwrap_or_else(|| panic!("not a string id: {v}"));
    assert_eq!(s.len(), len, "{s}");
    assert!(s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{s}");
    assert!(s.bytes().any(|b| b != b'0'), "{s}");
    s.to_owned()
}

/// Now, in µs since the epoch.
fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_propagation_with_a_retry() {
    let collector = Collector::start().await;
    let (a, b) = (Upstream::http("a").await, Upstream::http("b").await);
    a.set_status(503);
    let gw = TestGateway::start(&config(&format!(
        r#"
upstreams: [{{name: pool, targets: [{{address: "{a}"}}, {{address: "{b}"}}]}}]
services: [{{name: Orders, upstream: pool}}]
routes: [{{name: orders, service: Orders, paths: ["/orders"], retry: {{attempts: 1, on: [503]}}}}]
plugins: [{plugin}]
"#,
        a = a.addr(),
        b = b.addr(),
        plugin = tracing_plugin(&collector.url(), ", service_name: Edge")
    )));
    let mut retried = None;
    for i in 0..6 {
        let trace = format!("{:016x}{:016x}", 0x4bf92f3577b34da6u64, i + 1);
        let before = a.hits();
        let resp = client::get_with(
            gw.addr(),
            "/orders/7?q=1",
            &[("x-b3-traceid", &trace), ("x-b3-spanid", PARENT), ("x-b3-sampled", "1"), ("tracestate", "vendor=abc")],
        )
        .await;
        assert_eq!((resp.status.as_u16(), resp.name().as_str()), (200, "b"));
        if a.hits() > before {
            retried = Some((trace, resp));
            break;
        }
    }
    let (trace, resp) = retried.expect("round robin sends a first attempt to a");
    let spans = collector.trace(&trace, 3).await;
    assert_eq!(spans.len(), 3, "one server span and one client span per attempt: {spans:#?}");
    let (server, first, second) = (&spans[0], &spans[1], &spans[2]);

    assert_eq!(server["kind"], "SERVER");
    assert_eq!(assert_id(&server["traceId"], 32), trace);
    assert_eq!(server["parentId"], PARENT, "the caller's span is the parent");
    let server_id = assert_id(&server["id"], 16);
    assert_eq!(server["name"], "get orders", "method and route, in lower case as Zipkin asks");
    assert_eq!(server["localEndpoint"]["serviceName"], "edge");
    let tags = &server["tags"];
    assert_eq!(tags["http.method"], "GET");
    assert_eq!(tags["http.path"], "/orders/7", "no query string");
    assert_eq!(tags["http.status_code"], "200");
    assert_eq!((&tags["meshgate.route"], &tags["meshgate.service"]), (&"orders".into(), &"Orders".into()));
    assert!(tags.get("error").is_none());
    let (ts, dur) = (server["timestamp"].as_u64().unwrap(), server["duration"].as_u64().unwrap());
    assert!(now_us().abs_diff(ts) < 10_000_000, "timestamp {ts} is in µs and recent");
    assert!((1..5_000_000).contains(&dur), "duration {dur} µs");

    // The retried attempt's answer (503) is recorded too.
    for (span, target, status) in [(first, a.addr(), Some("503")), (second, b.addr(), Some("200"))] {
        assert_eq!(span["kind"], "CLIENT");
        assert_eq!(span["traceId"], trace.as_str());
        assert_eq!(span["parentId"], server_id.as_str(), "attempts hang under the server span");
        assert_id(&span["id"], 16);
        assert_eq!(span["name"], "get");
        let remote = &span["remoteEndpoint"];
        assert_eq!((&remote["ipv4"], &remote["port"]), (&"127.0.0.1".into(), &target.port().into()));
        assert_eq!(remote["serviceName"], "orders");
        let (t, d) = (span["timestamp"].as_u64().unwrap(), span["duration"].as_u64().unwrap());
        assert!(t >= ts && t + d <= ts + dur + 1, "attempts lie within the server span");
        assert_eq!(span["tags"]["http.status_code"].as_str(), status);
    }
    assert_eq!(first["tags"]["error"], "503", "the retried attempt's answer");
    assert!(second["timestamp"].as_u64() >= first["timestamp"].as_u64());
    assert_ne!(first["id"], second["id"]);

    // The upstream that answered saw the trace, with the answering attempt's span as parent.
    let attempt = second["id"].as_str().unwrap();
    assert_eq!(resp.seen_header("x-b3-traceid").as_deref(), Some(trace.as_str()));
    assert_eq!(resp.seen_header("x-b3-spanid").as_deref(), Some(attempt));
    assert_eq!(resp.seen_header("x-b3-parentspanid").as_deref(), Some(server_id.as_str()));
    assert_eq!(resp.seen_header("x-b3-sampled").as_deref(), Some("1"));
    assert_eq!(resp.seen_header("traceparent"), None, "the caller spoke B3: B3 goes on, alone");
    assert_eq!(resp.seen_header("tracestate"), None, "no traceparent came: tracestate has no trace to go with");
    // The exporter asks any tracing proxy on its way not to trace its POSTs.
    assert!(collector.posts.lock().unwrap().iter().all(|h| h["b3"] == "0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_export() {
    let collector = Collector::otlp().await;
    let up = Upstream::http("up").await;
    let gw = TestGateway::start(&config(&format!(
        r#"
services: [{{name: Orders, url: "http://{up}"}}]
routes: [{{name: orders, service: Orders, paths: ["/orders"]}}]
plugins:
  - name: tracing
    config:
      service_name: Edge
      otlp: {{url: "{url}", flush_interval: 50ms, headers: {{authorization: Bearer otlp-key}}}}
      redact_query: [token]
"#,
        up = up.addr(),
        url = collector.url()
    )));
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    let path = "/orders/7?q=1&token=t0k&X-Amz-Signature=s1g";
    let resp = client::get_with(gw.addr(), path, &[("traceparent", &traceparent)]).await;
    assert_eq!(resp.status, 200);
    let spans = collector.trace(TRACE, 2).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let (server, call) = (&spans[0], &spans[1]);
    let attrs = |span: &Value| -> Value {
        span["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|kv| (kv["key"].as_str().unwrap().to_owned(), kv["value"].clone()))
            .collect()
    };

    assert_eq!(
        (&server["kind"], &server["name"], &server["service"]),
        (&2.into(), &"GET orders".into(), &"edge".into())
    );
    assert_eq!(server["parentSpanId"], PARENT, "the caller's span is the parent");
    let server_id = assert_id(&server["spanId"], 16);
    let a = attrs(server);
    assert_eq!(a["http.request.method"]["stringValue"], "GET");
    assert_eq!(a["url.path"]["stringValue"], "/orders/7");
    let redacted = "q=1&token=REDACTED&X-Amz-Signature=REDACTED";
    assert_eq!(a["url.query"]["stringValue"], redacted, "signatures and `redact_query` hidden, keys kept");
    assert_eq!(a["url.scheme"]["stringValue"], "http");
    assert_eq!(a["http.response.status_code"]["intValue"], "200");
    assert_eq!(a["meshgate.route"]["stringValue"], "orders");
    assert!(server.get("status").is_none(), "a 200 is no error");
    let nanos = |v: &Value| v.as_str().unwrap().parse::<u64>().unwrap();
    let (start, end) = (nanos(&server["startTimeUnixNano"]), nanos(&server["endTimeUnixNano"]));
    assert!((now_us() * 1000).abs_diff(start) < 10_000_000_000, "start {start} is in ns and recent");
    assert!(start < end && end - start < 5_000_000_000);

    assert_eq!((&call["kind"], &call["name"]), (&3.into(), &"GET".into()));
    assert_eq!(call["parentSpanId"], server_id.as_str(), "the attempt hangs under the server span");
    let a = attrs(call);
    assert_eq!(a["server.address"]["stringValue"], "127.0.0.1");
    assert_eq!(a["server.port"]["intValue"], up.addr().port().to_string());
    assert_eq!(a["peer.service"]["stringValue"], "orders");
    assert_eq!(a["url.full"]["stringValue"], format!("http://{}/orders/7?{redacted}", up.addr()));
    assert!(nanos(&call["startTimeUnixNano"]) >= start && nanos(&call["endTimeUnixNano"]) <= end);
    // The upstream was told the attempt's span, in the caller's format.
    let call_id = assert_id(&call["spanId"], 16);
    assert_eq!(resp.seen_header("traceparent"), Some(format!("00-{TRACE}-{call_id}-01")));

    let posts = collector.posts.lock().unwrap();
    let post = posts.last().unwrap();
    assert_eq!(post["authorization"], "Bearer otlp-key");
    assert_eq!(post["content-type"], "application/json");
    assert_eq!(post["b3"], "0", "the export is not to be traced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w3c_in_unsampled_out_and_new_traces() {
    let collector = Collector::start().await;
    let up = Upstream::http("up").await;
    let gw = TestGateway::start(&config(&format!(
        r#"
services: [{{name: s, url: "http://{a}"}}]
routes: [{{name: r, service: s, paths: ["/"]}}]
plugins: [{plugin}]
"#,
        a = up.addr(),
        plugin = tracing_plugin(&collector.url(), ", sampling: 0")
    )));
    // A sampled traceparent is recorded even at `sampling: 0`.
    let resp = client::get_with(gw.addr(), "/w3c", &[("traceparent", &format!("00-{TRACE}-{PARENT}-01"))]).await;
    let spans = collector.trace(TRACE, 2).await;
    assert_eq!(spans[0]["parentId"], PARENT);
    assert_eq!(resp.seen_header("traceparent"), Some(format!("00-{TRACE}-{}-01", spans[1]["id"].as_str().unwrap())));
    assert_eq!(resp.seen_header("x-b3-traceid"), None, "the caller spoke W3C: W3C goes on, alone");

    // No context and `sampling: 0`: a new trace is propagated in both formats (`inject_default`:
    // the single `b3` header and `traceparent`), unsampled, and nothing recorded.
    let resp = client::get(gw.addr(), "/new").await;
    let b3 = resp.seen_header("b3").unwrap();
    let new = b3.split('-').next().unwrap().to_owned();
    assert_id(&Value::from(new.clone()), 32);
    assert_eq!(b3.split('-').nth(2), Some("0"), "{b3}");
    assert_eq!(resp.seen_header("x-b3-traceid"), None);
    let tp = resp.seen_header("traceparent").unwrap();
    assert!(tp.starts_with(&format!("00-{new}-")) && tp.ends_with("-02"), "unsampled, a random id: {tp}");
    // An unsampled caller stays unsampled; an invalid traceparent starts a new trace.
    let resp = client::get_with(gw.addr(), "/", &[("traceparent", &format!("00-{TRACE}-{PARENT}-00"))]).await;
    let tp = resp.seen_header("traceparent").unwrap();
    assert!(tp.starts_with(&format!("00-{TRACE}-")) && tp.ends_with("-00") && !tp.contains(PARENT), "{tp}");
    let resp =
        client::get_with(gw.addr(), "/", &[("traceparent", &format!("00-{}-{PARENT}-01", "0".repeat(32)))]).await;
    let tp = resp.seen_header("traceparent").unwrap();
    assert!(!tp.starts_with(&format!("00-{}", "0".repeat(32))), "the invalid context is replaced: {tp}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let traces: Vec<Value> = collector.spans.lock().unwrap().iter().map(|s| s["traceId"].clone()).collect();
    assert!(traces.iter().all(|t| t == TRACE), "only the sampled trace is recorded: {traces:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inject_forms_as_configured() {
    let collector = Collector::start().await;
    let up = Upstream::http("up").await;
    let url = collector.url();
    let gw = TestGateway::start(&config(&format!(
        r#"
services: [{{name: s, url: "http://{a}"}}]
routes:
  - {{name: single, service: s, paths: ["/single"], plugins: [{single}]}}
  - {{name: w3c, service: s, paths: ["/w3c"], plugins: [{w3c}]}}
"#,
        a = up.addr(),
        single = tracing_plugin(&url, ", sampling: 0, inject_default: [b3-single]"),
        w3c = tracing_plugin(&url, ", sampling: 0, inject: [w3c]"),
    )));
    // A new trace gets the one form `inject_default` names.
    let resp = client::get(gw.addr(), "/single").await;
    let b3 = resp.seen_header("b3").expect("the single b3 header");
    let parts: Vec<&str> = b3.split('-').collect();
    assert_eq!((parts.len(), parts[0].len(), parts[1].len(), parts[2], parts[3].len()), (4, 32, 16, "0", 16), "{b3}");
    assert_eq!((resp.seen_header("x-b3-traceid"), resp.seen_header("traceparent")), (None, None));
    // `inject: [w3c]`: B3 that came in is read, continued as traceparent, and not passed on stale.
    let headers = [("x-b3-traceid", TRACE), ("x-b3-spanid", PARENT), ("x-b3-sampled", "0"), ("b3", "0")];
    let resp = client::get_with(gw.addr(), "/w3c", &headers).await;
    let tp = resp.seen_header("traceparent").unwrap();
    assert!(tp.starts_with(&format!("00-{TRACE}-")) && tp.ends_with("-00"), "{tp}");
    for stale in ["x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "b3"] {
        assert_eq!(resp.seen_header(stale), None, "{stale} named the caller's span");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_hop_chain_keeps_one_trace() {
    let collector = Collector::start().await;
    let echo = Upstream::http("echo").await;
    // An instrumented service: calls the gateway's route B with the trace headers it received,
    // those named in its query (`?copy=b3,traceparent`), as a service speaking those formats does.
    let relay = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let gateway: Arc<OnceLock<SocketAddr>> = Arc::new(OnceLock::new());
    let gw_for_relay = gateway.clone();
    let relay_task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = relay.accept().await else { continue };
            let gw = gw_for_relay.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let gw = *gw.get().unwrap();
                    async move {
                        let query = req.uri().query().unwrap_or_default();
                        let names = query.strip_prefix("copy=").unwrap_or_default().split(',');
                        let copied: Vec<(&str, String)> =
                            names.filter_map(|n| Some((n, req.headers().get(n)?.to_str().ok()?.to_owned()))).collect();
                        let refs: Vec<(&str, &str)> = copied.iter().map(|(k, v)| (*k, v.as_str())).collect();
                        let inner = client::get_with(gw, "/b", &refs).await;
                        Ok::<_, Infallible>(Response::new(body::full(inner.body)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
            });
        }
    });
    let gw = TestGateway::start(&config(&format!(
        r#"
services: [{{name: relay, url: "http://{relay_addr}"}}, {{name: echo, url: "http://{e}"}}]
routes: [{{name: a, service: relay, paths: ["/a"]}}, {{name: b, service: echo, paths: ["/b"]}}]
plugins: [{plugin}]
"#,
        e = echo.addr(),
        plugin = tracing_plugin(&collector.url(), "")
    )));
    gateway.set(gw.addr()).unwrap();

    // Each chain: the trace's four spans hang together, and the last upstream was sent the
    // trace and the span of hop 2's upstream call in `form`.
    let chain = async |path: &str, sent: &[(&str, &str)], form: &str| {
        let resp = client::get_with(gw.addr(), path, sent).await;
        assert_eq!(resp.status, 200);
        let (trace, span) = match form {
            "b3" => {
                let b3 = resp.seen_header("b3").expect("the trace reached the end of the chain");
                let parts: Vec<String> = b3.split('-').map(str::to_owned).collect();
                (parts[0].clone(), parts[1].clone())
            }
            "w3c" => {
                let tp = resp.seen_header("traceparent").expect("the trace reached the end of the chain");
                (tp[3..35].to_owned(), tp[36..52].to_owned())
            }
            _ => (resp.seen_header("x-b3-traceid").unwrap(), resp.seen_header("x-b3-spanid").unwrap()),
        };
        let spans = collector.trace(&trace, 4).await;
        let server = |route: &str| {
            spans.iter().find(|s| s["kind"] == "SERVER" && s["tags"]["meshgate.route"] == route).unwrap().clone()
        };
        let client_of = |server: &Value| spans.iter().find(|s| s["parentId"] == server["id"]).unwrap().clone();
        let (server_a, server_b) = (server("a"), server("b"));
        let (client_a, client_b) = (client_of(&server_a), client_of(&server_b));
        assert_eq!(server_b["parentId"], client_a["id"], "hop 2 hangs under hop 1's upstream call ({form})");
        assert_eq!(client_b["kind"], "CLIENT");
        assert_eq!(client_b["id"].as_str(), Some(span.as_str()));
        assert!(spans.iter().all(|s| s["traceId"] == trace.as_str()), "one trace id ({form})");
        (resp, server_a)
    };
    // A new trace: both default forms go through both hops.
    let (resp, server_a) = chain("/a?copy=b3,traceparent", &[], "b3").await;
    assert!(server_a.get("parentId").is_none(), "hop 1 starts the trace");
    assert!(resp.seen_header("traceparent").is_some(), "both forms came to hop 2: both go on");
    // W3C only, end to end.
    let (resp, _) = chain("/a?copy=traceparent", &[], "w3c").await;
    assert_eq!(resp.seen_header("b3"), None, "hop 2 got traceparent alone and sends it alone");
    // B3's headers, from the caller to the end.
    let trace = "463ac35c9f6413ad48485a3953bb6124";
    let sent = [("x-b3-traceid", trace), ("x-b3-spanid", PARENT), ("x-b3-sampled", "1")];
    let (resp, server_a) = chain("/a?copy=x-b3-traceid,x-b3-spanid,x-b3-sampled", &sent, "multi").await;
    assert_eq!((server_a["traceId"].as_str(), server_a["parentId"].as_str()), (Some(trace), Some(PARENT)));
    assert_eq!(resp.seen_header("x-b3-sampled").as_deref(), Some("1"));
    relay_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_never_slows_requests() {
    let dead = Upstream::blackhole().await;
    let up = Upstream::http("up").await;
    let url = format!("http://{}/api/v2/spans", dead.addr());
    let gw = TestGateway::start(&config(&format!(
        r#"
status: {{address: "127.0.0.1:0"}}
services: [{{name: s, url: "http://{a}"}}]
routes: [{{name: r, service: s, paths: ["/"]}}]
plugins: [{{name: tracing, config: {{zipkin: {{url: "{url}", queue: 10, batch_size: 5, flush_interval: 10ms, timeout: 300ms}}}}}}]
"#,
        a = up.addr()
    )));
    let (dropped, errors) = (DROPPED.load(Ordering::Relaxed), EXPORT_ERRORS.load(Ordering::Relaxed));
    let t = Instant::now();
    let mut conn = client::Conn::h1(gw.addr()).await.unwrap();
    for _ in 0..200 {
        assert_eq!(conn.get("/").await.unwrap().status, 200);
    }
    assert!(t.elapsed() < Duration::from_secs(5), "200 requests took {:?}", t.elapsed());
    // 400 spans (server + client), a queue of 10 and a collector that never answers.
    assert!(DROPPED.load(Ordering::Relaxed) - dropped >= 300, "spans past the queue are dropped and counted");
    meshgate_e2e::wait_for("an export error", Duration::from_secs(3), || async {
        (EXPORT_ERRORS.load(Ordering::Relaxed) > errors).then_some(())
    })
    .await;
    assert!(dead.hits() >= 1, "the exporter did try");
    // The counters are exported.
    let metrics = client::get(gw.gateway().status_addr().expect("status listener"), "/metrics").await.text();
    let value = |name: &str| -> u64 {
        let line = metrics.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(value("meshgate_tracing_spans_dropped_total") >= 300);
    assert!(value("meshgate_tracing_export_errors_total") >= 1);
    value("meshgate_tracing_spans_exported_total");
}
