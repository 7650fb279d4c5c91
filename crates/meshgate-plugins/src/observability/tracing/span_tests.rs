//! Unit tests of the Zipkin v2 encoder.

use super::fixtures::{call, record};
use super::*;
use serde_json::{Value, json};

/// The spans `records` encode to, through one encoder, as a Zipkin batch.
fn batch(records: &[&Record]) -> Vec<Value> {
    let mut encoder = Encoder::default();
    let mut out = vec![b'['];
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        encoder.record(r, &mut out);
    }
    out.push(b']');
    serde_json::from_slice::<Value>(&out).unwrap().as_array().unwrap().clone()
}

#[test]
fn zipkin_v2_json() {
    let spans = batch(&[&record(vec![call("10.0.0.5:8080")])]);
    assert_eq!(
        spans,
        [
            json!({
                "traceId": "a3ce929d0e0e4736", "id": "0000000000001234", "parentId": "0000000000000099",
                "kind": "SERVER", "name": "get orders-api",
                "timestamp": 1_764_134_400_000_000u64, "duration": 2000,
                "localEndpoint": {"serviceName": "meshgate"},
                "tags": {"http.method": "GET", "http.path": "/v1/orders", "http.status_code": "503",
                         "error": "503", "meshgate.route": "orders-api", "meshgate.service": "Orders"}
            }),
            json!({
                "traceId": "a3ce929d0e0e4736", "id": "00f067aa0ba902b7", "parentId": "0000000000001234",
                "kind": "CLIENT", "name": "get",
                "timestamp": 1_764_134_400_000_100u64, "duration": 1500,
                "localEndpoint": {"serviceName": "meshgate"},
                "remoteEndpoint": {"serviceName": "orders", "ipv4": "10.0.0.5", "port": 8080},
                "tags": {"http.method": "GET", "http.path": "/v1/orders", "http.status_code": "503", "error": "503"}
            }),
        ]
    );

    // A 128-bit root trace, debug, an escaped route name, a plugin's tag, no call.
    let mut root = record(Vec::new());
    root.trace_id = TraceId { value: 7, short: false };
    root.debug = true;
    root.server.parent_id = None;
    root.server.status = None;
    root.server.route = Some(RouteInfo { name: "a \"Quoted\"\nroute".into(), service: "Orders".into() });
    root.server.tags = vec![("meshgate.transform.request", "transformed".into())];
    assert_eq!(
        batch(&[&root]),
        [json!({
            "traceId": "00000000000000000000000000000007", "id": "0000000000001234",
            "kind": "SERVER", "name": "get a \"quoted\"\nroute",
            "timestamp": 1_764_134_400_000_000u64, "duration": 2000,
            "localEndpoint": {"serviceName": "meshgate"}, "debug": true,
            "tags": {"http.method": "GET", "http.path": "/v1/orders",
                     "meshgate.route": "a \"Quoted\"\nroute", "meshgate.service": "Orders",
                     "meshgate.transform.request": "transformed"}
        })]
    );
}

#[test]
fn calls_name_their_ends() {
    let retried = Call { retried: true, status: None, remote_service: None, ..call("[::1]:81") };
    let named = Call { remote_service: None, ..call("svc.local:9") };
    let nameless = Call { remote_service: None, ..call("svc.local") };
    let backend = Call {
        backend: Some("user".into()),
        error: Some("timed out".into()),
        method: Some(http::Method::POST),
        url: Some(PathQuery::of(&"/users/7?x=1".parse().unwrap())),
        status: None,
        ..call("10.0.0.5:8080")
    };
    let spans = batch(&[&record(vec![retried, named, nameless, backend])]);
    assert_eq!(
        (&spans[1]["remoteEndpoint"], &spans[1]["tags"]["error"]),
        (&json!({"ipv6": "::1", "port": 81}), &json!("retried"))
    );
    assert_eq!(spans[2]["remoteEndpoint"], json!({"port": 9}));
    assert_eq!(spans[3]["remoteEndpoint"], json!({}));
    let b = &spans[4];
    assert_eq!((&b["tags"]["meshgate.backend"], &b["tags"]["error"]), (&json!("user"), &json!("timed out")));
    assert_eq!(
        (&b["name"], &b["tags"]["http.method"], &b["tags"]["http.path"]),
        (&json!("post"), &json!("POST"), &json!("/users/7"))
    );
    assert!(spans[1..].iter().all(|s| s["parentId"] == spans[0]["id"]));
}

#[test]
fn errors_as_brave_tags_them() {
    let refused = |target: &str| format!("connect to {target}: Connection refused (os error 111)");
    let mut r = record(vec![
        Call { status: None, error: Some(refused("10.0.0.5:8080").into()), retried: true, ..call("10.0.0.5:8080") },
        Call { status: None, error: Some(refused("10.0.0.6:8080").into()), resend: 1, ..call("10.0.0.6:8080") },
        Call { status: Some(404), ..call("10.0.0.7:8080") },
        Call { status: Some(503), retried: true, ..call("10.0.0.7:8080") },
        Call { status: None, retried: true, ..call("10.0.0.7:8080") },
        Call { status: Some(200), ..call("10.0.0.7:8080") },
    ]);
    r.server.status = Some(404);
    let spans = batch(&[&r]);
    let error = |i: usize| spans[i]["tags"].get("error").cloned();
    assert_eq!(error(0), None, "a 404 is the client's business, not the gateway's");
    assert_eq!(error(1), Some(json!(refused("10.0.0.5:8080"))), "a retried attempt's failure");
    assert_eq!(error(2), Some(json!(refused("10.0.0.6:8080"))), "the last attempt's failure too");
    assert_eq!(error(3), Some(json!("404")), "4xx from the upstream: an error of the call");
    assert_eq!(error(4), Some(json!("503")));
    assert_eq!(error(5), Some(json!("retried")));
    assert_eq!(error(6), None);
}

#[test]
fn one_encoder_for_a_batch() {
    // The blocks kept for one span are not reused for another target, method or route.
    let first = record(vec![call("10.0.0.5:8080")]);
    let mut other = record(vec![call("10.0.0.6:8080")]);
    other.method = http::Method::PATCH;
    let mut custom = other.clone();
    custom.method = http::Method::from_bytes(b"PURGE").unwrap();
    let mut renamed = first.clone();
    renamed.server.route = Some(RouteInfo { name: "B".into(), service: "S2".into() });
    let v = batch(&[&first, &other, &custom, &renamed, &first]);
    assert_eq!(v.len(), 10);
    let (names, targets): (Vec<_>, Vec<_>) =
        v.iter().map(|s| (s["name"].clone(), s["remoteEndpoint"]["ipv4"].clone())).unzip();
    assert_eq!(
        names,
        [
            "get orders-api",
            "get",
            "patch orders-api",
            "patch",
            "purge orders-api",
            "purge",
            "get b",
            "get",
            "get orders-api",
            "get"
        ]
    );
    assert_eq!(
        targets,
        [
            Value::Null,
            json!("10.0.0.5"),
            Value::Null,
            json!("10.0.0.6"),
            Value::Null,
            json!("10.0.0.6"),
            Value::Null,
            json!("10.0.0.5"),
            Value::Null,
            json!("10.0.0.5")
        ]
    );
    assert_eq!((&v[5]["tags"]["http.method"], &v[6]["tags"]["meshgate.service"]), (&json!("PURGE"), &json!("S2")));
    assert_eq!(v[8]["tags"]["meshgate.service"], "Orders");
}
