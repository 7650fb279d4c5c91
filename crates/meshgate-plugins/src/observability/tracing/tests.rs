//! The plugin's phases on a request context, with spans read from the plugin's queue.

use super::*;
use crate::testing::{plugin, request};
use meshgate_core::{ResponseInfo, RouteInfo};
use serde_json::{Value, json};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// A tracer whose spans arrive, as Zipkin JSON, on the returned channel.
pub(super) fn tracer(sampling: f64) -> (Tracing, Receiver<Value>) {
    let (out, rx) = channel();
    let tx = crate::observability::handoff::spawn(
        "test-spans",
        100,
        1,
        Duration::from_millis(5),
        move |b: &crate::observability::handoff::Batch<'_, export::Queued>| {
            while let Some(record) = b.pop() {
                let mut json = vec![b'['];
                span::Encoder::default().record(&record, &mut json);
                json.push(b']');
                for span in serde_json::from_slice::<Vec<Value>>(&json).unwrap() {
                    let _ = out.send(span);
                }
            }
        },
    )
    .unwrap();
    let t = Tracing {
        formats: both().into(),
        read: Forms::read_by(&both()),
        inject: Inject::Preserve { default: Forms::B3_SINGLE | Forms::W3C },
        sampler: Sampler::new(sampling),
        local: Arc::new(span::Local { service: "meshgate".into(), redact: url::Redact::default() }),
        tx,
    };
    (t, rx)
}

/// The `n` spans a request recorded, server span first.
fn spans(rx: &Receiver<Value>, n: usize) -> Vec<Value> {
    let mut spans: Vec<Value> = (0..n).map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap()).collect();
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err(), "no more than {n} spans");
    spans.sort_by_key(|s| s["kind"] != "SERVER");
    spans
}

/// The upstream request's head: the client's headers travel on in it, as the proxy sends them.
pub(super) fn upstream_parts(cx: &RequestCtx) -> http::request::Parts {
    let mut parts = http::Request::builder().uri("/v1/items").body(()).unwrap().into_parts().0;
    parts.headers = cx.request.headers.clone();
    parts
}

#[test]
fn config_errors() {
    let err = |v| plugin(&Factory, v).err().unwrap().to_string();
    assert_eq!(err(json!({})), "zipkin: name a collector: `zipkin` (Zipkin v2) or `otlp` (OTLP/HTTP)");
    let both = json!({"zipkin": {"url": "http://c/api/v2/spans"}, "otlp": {"url": "http://c/v1/traces"}});
    assert_eq!(err(both), "otlp: name one collector, `zipkin` or `otlp`");
    assert_eq!(
        err(json!({"otlp": {"url": "http://c/v1/traces", "batch_size": 0}})),
        "otlp.batch_size: must be at least 1"
    );
    assert_eq!(
        err(json!({"otlp": {"url": "http://c/v1/traces", "headers": {"bad name": "x"}}})),
        "otlp.headers.bad name: not a valid header name and value"
    );
    assert!(plugin(&Factory, json!({"otlp": {"url": "http://c/v1/traces", "headers": {"api-key": "k"}}})).is_ok());
    assert!(err(json!({"zipkin": {}})).contains("missing field `url`"));
    let url = "http://127.0.0.1:9/api/v2/spans";
    assert_eq!(err(json!({"zipkin": {"url": url}, "sampling": 1.5})), "sampling: must be between 0 and 1");
    assert_eq!(err(json!({"zipkin": {"url": url, "queue": 0}})), "zipkin.queue: must be at least 1");
    assert_eq!(err(json!({"zipkin": {"url": url, "timeout": "0s"}})), "zipkin.timeout: must be longer than 0");
    assert!(err(json!({"zipkin": {"url": "nope"}})).starts_with("zipkin.url: "));
    assert!(
        err(json!({"zipkin": {"url": url}, "propagation": ["jaeger"]})).starts_with("propagation[0]: unknown variant")
    );
    assert!(plugin(&Factory, json!({"zipkin": {"url": url, "flush_interval": "50ms"}, "sampling": 0})).is_ok());
    let z = json!({"url": url});
    assert_eq!(
        err(json!({"zipkin": z, "inject": ["w3c", "jaeger"]})),
        "inject[1]: not a header form: name b3, b3-single or w3c"
    );
    assert_eq!(err(json!({"zipkin": z, "inject": []})), "inject: name at least one form (b3, b3-single, w3c)");
    assert!(err(json!({"zipkin": z, "inject": "keep"})).starts_with("inject: `preserve`, or a list"));
    assert!(err(json!({"zipkin": z, "inject_default": ["b4"]})).starts_with("inject_default[0]: "));
    assert!(plugin(&Factory, json!({"zipkin": z, "inject": ["b3-single", "w3c"]})).is_ok());
    assert_eq!(
        err(json!({"zipkin": z, "redact_query": "none"})),
        "redact_query: `all`, or a list of query parameter names"
    );
    assert!(err(json!({"zipkin": z, "redact_query": ["token", "a&b"]})).starts_with("redact_query[1]: "));
    for ok in [json!("all"), json!(["token", "api_key"]), json!([])] {
        assert!(plugin(&Factory, json!({"zipkin": z, "redact_query": ok})).is_ok());
    }
}

#[test]
fn sampling_decisions() {
    let id = |v: u128| TraceId { value: v, short: false };
    for s in [Sampler::new(0.0), Sampler::new(1.0), Sampler::new(0.5)] {
        assert!(s.decide(Some(Decision::Sample), id(u128::MAX)), "an incoming yes is respected");
        assert!(s.decide(Some(Decision::Debug), id(u128::MAX)));
        assert!(!s.decide(Some(Decision::Deny), id(1)), "an incoming no is respected");
    }
    assert!(Sampler::new(1.0).decide(None, id(u128::MAX)));
    assert!(!Sampler::new(0.0).decide(None, id(1)));
    let quarter = Sampler::new(0.25);
    let n = (0..20_000).filter(|_| quarter.decide(None, id(rand::random()))).count();
    assert!((4_300..5_700).contains(&n), "{n} of 20000 sampled at 0.25");
    // The same trace gets the same answer, wherever it is decided.
    let t = id(rand::random());
    assert_eq!(quarter.decide(None, t), quarter.decide(None, t));
}

#[tokio::test]
async fn spans_of_a_retried_request() {
    let (t, rx) = tracer(0.0);
    let mut cx = request(
        "/items?secret=1",
        &[("x-b3-traceid", "a3ce929d0e0e4736"), ("x-b3-spanid", "00f067aa0ba902b7"), ("x-b3-sampled", "1")],
    );
    cx.route = Some(RouteInfo { name: "items".into(), service: "Inventory".into() });
    t.on_request(&mut cx).await;
    let tc = cx.trace.unwrap();
    assert!(tc.sampled, "the caller's decision beats sampling: 0");
    let mut heads = Vec::new();
    // The first attempt answers 503 and is retried; the second finds no server.
    let refused = "connect to 10.0.0.2:80: Connection refused (os error 111)";
    for target in ["10.0.0.1:80", "10.0.0.2:80"] {
        if let Some(first) = cx.attempts.last_mut() {
            first.status = Some(503);
        }
        crate::testing::begin_attempt(&mut cx, target, "/v1/items?secret=1");
        let mut parts = upstream_parts(&cx);
        t.before_upstream(&mut cx, &mut parts).await;
        heads.push(parts.headers);
    }
    let last = cx.attempts.last_mut().unwrap();
    let failure = meshgate_core::AttemptFailure { class: "connect_error", cause: refused.into() };
    (last.end, last.failure) = (Some(Instant::now()), Some(failure));
    cx.response = Some(ResponseInfo { status: http::StatusCode::BAD_GATEWAY, body_bytes: 0, request_bytes: 0 });
    t.on_log(&cx);

    let spans = spans(&rx, 3);
    let (server, first, second) = (&spans[0], &spans[1], &spans[2]);
    assert_eq!((&server["kind"], &server["name"]), (&json!("SERVER"), &json!("get items")));
    assert_eq!(server["traceId"], "a3ce929d0e0e4736");
    assert_eq!(server["parentId"], "00f067aa0ba902b7");
    assert_eq!(server["id"], format!("{:016x}", tc.span_id));
    let tags = &server["tags"];
    assert_eq!(
        (&tags["http.path"], &tags["http.status_code"], &tags["error"]),
        (&json!("/items"), &json!("502"), &json!("502"))
    );
    assert_eq!((&tags["meshgate.route"], &tags["meshgate.service"]), (&json!("items"), &json!("Inventory")));
    let str_of = |v: &Value| v.as_str().unwrap().to_owned();
    for (span, head) in [(first, &heads[0]), (second, &heads[1])] {
        assert_eq!(span["kind"], "CLIENT");
        assert_eq!(span["parentId"], server["id"]);
        assert_eq!(span["traceId"], server["traceId"]);
        assert_eq!(head["x-b3-spanid"], str_of(&span["id"]).as_str(), "the upstream hangs its spans under the attempt");
        assert_eq!(head["x-b3-parentspanid"], str_of(&server["id"]).as_str());
        assert!(head.get("traceparent").is_none(), "the caller spoke B3 only: B3 is what goes on");
        assert_eq!(span["tags"]["http.path"], "/v1/items");
        assert!(span["duration"].as_u64().unwrap() >= 1);
        assert!(span["timestamp"].as_u64() >= server["timestamp"].as_u64());
    }
    assert_ne!(first["id"], second["id"]);
    let (first, second) = if first["tags"]["error"] == "503" { (first, second) } else { (second, first) };
    assert_eq!((&first["tags"]["error"], &first["tags"]["http.status_code"]), (&json!("503"), &json!("503")));
    assert_eq!(second["tags"]["error"], refused, "the last attempt failed too, and says why");
    assert!(second["tags"].get("http.status_code").is_none());
    assert_eq!(second["remoteEndpoint"], json!({"serviceName": "inventory", "ipv4": "10.0.0.2", "port": 80}));
    let end = |s: &Value| s["timestamp"].as_u64().unwrap() + s["duration"].as_u64().unwrap();
    assert!(second["timestamp"].as_u64().unwrap() >= end(first));
}

#[tokio::test]
async fn unsampled_requests_propagate_and_record_nothing() {
    let (t, rx) = tracer(0.0);
    let mut cx = request("/", &[]);
    t.on_request(&mut cx).await;
    let tc = cx.trace.unwrap();
    assert!(!tc.sampled && tc.parent_id.is_none());
    assert!(!tc.trace_id.short && tc.trace_id.value != 0, "a new 128-bit trace id");
    let mut parts = upstream_parts(&cx);
    t.before_upstream(&mut cx, &mut parts).await;
    let b3 = parts.headers["b3"].to_str().unwrap();
    assert!(b3.starts_with(&format!("{}-", tc.trace_id.hex())) && b3.contains("-0-"), "{b3}");
    assert!(parts.headers.get("x-b3-traceid").is_none(), "B3's multiple headers only when asked for");
    assert!(
        parts.headers["traceparent"].to_str().unwrap().ends_with("-02"),
        "a new trace gets the default forms (unsampled, random)"
    );
    t.on_log(&cx);
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err(), "nothing recorded");

    // Sampled by ratio, a request without context is a trace root.
    let (t, rx) = tracer(1.0);
    let mut cx = request("/", &[("traceparent", "00-zz")]);
    t.on_request(&mut cx).await;
    t.on_log(&cx);
    let spans = spans(&rx, 1);
    assert_eq!(spans[0].get("parentId"), None);
    assert_eq!((spans[0]["traceId"].as_str().unwrap().len(), &spans[0]["name"]), (32, &json!("get")));
}

#[test]
fn inject_plans() {
    let read = Forms::read_by(&both());
    let preserve = Inject::Preserve { default: Forms::B3 | Forms::W3C };
    assert_eq!(preserve.plan(Forms::NONE, read), (Forms::B3 | Forms::W3C, Forms::NONE), "nothing came: the default");
    assert_eq!(preserve.plan(Forms::B3_SINGLE, read), (Forms::B3_SINGLE, Forms::NONE), "the form that came");
    let w3c_only = Forms::read_by(&[Format::W3c]);
    assert_eq!(preserve.plan(Forms::B3, w3c_only), (Forms::B3 | Forms::W3C, Forms::NONE), "unread forms do not count");
    let always = Inject::Always(Forms::W3C);
    assert_eq!(always.plan(Forms::B3 | Forms::W3C, read), (Forms::W3C, Forms::B3), "read, not rewritten: removed");
    assert_eq!(always.plan(Forms::B3, w3c_only), (Forms::W3C, Forms::NONE), "not read: left alone");
}

#[tokio::test]
async fn b3_headers_are_rewritten_whole() {
    // The caller sent debug flags and a sampled state; what goes on is ours: flags alone.
    let (t, _rx) = tracer(0.0);
    let mut cx = request(
        "/",
        &[
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "1"),
            ("x-b3-flags", "1"),
        ],
    );
    t.on_request(&mut cx).await;
    crate::testing::begin_attempt(&mut cx, "10.0.0.1:80", "/");
    let mut parts = upstream_parts(&cx);
    t.before_upstream(&mut cx, &mut parts).await;
    let h = &parts.headers;
    assert_eq!((h.get("x-b3-sampled"), &h["x-b3-flags"]), (None, &http::HeaderValue::from_static("1")));
    assert_eq!(h["x-b3-traceid"], "a3ce929d0e0e4736");
    assert_eq!(h["x-b3-parentspanid"], format!("{:016x}", cx.trace.unwrap().span_id).as_str());
    assert!(h.get("b3").is_none() && h.get("traceparent").is_none(), "no form added");
}

#[tokio::test]
async fn debug_is_recorded_and_passed_on() {
    let (t, rx) = tracer(0.0);
    let mut cx = request("/", &[("b3", "a3ce929d0e0e4736-00f067aa0ba902b7-d")]);
    t.on_request(&mut cx).await;
    crate::testing::begin_attempt(&mut cx, "10.0.0.1:80", "/");
    let mut parts = upstream_parts(&cx);
    t.before_upstream(&mut cx, &mut parts).await;
    let b3 = parts.headers["b3"].to_str().unwrap();
    assert!(b3.starts_with("a3ce929d0e0e4736-") && b3.contains("-d-"), "the single header, rewritten: {b3}");
    assert!(!b3.contains("00f067aa0ba902b7"), "the caller's b3 named the caller's span");
    assert!(parts.headers.get("x-b3-flags").is_none() && parts.headers.get("traceparent").is_none());
    t.on_log(&cx);
    let spans = spans(&rx, 2); // debug beats sampling: 0
    assert_eq!((&spans[0]["debug"], &spans[0]["traceId"]), (&json!(true), &json!("a3ce929d0e0e4736")));
}
