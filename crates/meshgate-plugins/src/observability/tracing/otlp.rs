//! A traced request's spans as OTLP/HTTP JSON (`ExportTraceServiceRequest`, `POST /v1/traces`),
//! for OpenTelemetry collectors and the vendors that take OTLP.
//!
//! A batch is `{"resourceSpans":[…]}` with one entry per [`Record`]: the gateway's service name
//! is the resource (`service.name`), and a record's spans (the SERVER span, then a CLIENT span
//! per call) are one scope's. Ids are lower-case hex (OTLP's JSON rule, not protobuf's base64),
//! times are nanoseconds written as strings (int64 in protobuf's JSON mapping), names, attributes
//! and statuses follow OpenTelemetry's HTTP semantic conventions, plus the `meshgate.*`
//! attributes the Zipkin spans carry. Written by hand, as the Zipkin JSON is, and for the same
//! reason (see [`span`]).
//!
//! [`span`]: super::span

use super::span::{Blocks, Ends, Outcome, Record, split_target};
use crate::observability::json::{hex_digits, hex16, lower_string, number, string, utf8_string};

/// What opens and closes a batch of records, and what separates two of them.
pub const BATCH_START: &[u8] = b"{\"resourceSpans\":[";
/// See [`BATCH_START`].
pub const BATCH_END: &[u8] = b"]}";

/// Writes records as OTLP JSON. As for Zipkin, what spans of one route and target share (name,
/// kind and most attributes) is written once and kept for the next span that shares it.
#[derive(Default)]
pub struct Encoder {
    blocks: Blocks,
    /// Where a URL is put together before it is written as a string.
    scratch: Vec<u8>,
}

impl Encoder {
    /// One record as a `ResourceSpans` object.
    pub fn record(&mut self, r: &Record, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":");
        string(out, &r.local.service);
        out.extend_from_slice(b"}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"meshgate\",\"version\":\"");
        out.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
        out.extend_from_slice(b"\"},\"spans\":[{");

        // Short (64-bit) B3 trace ids are the low half of a 128-bit one: OTLP wants 32 digits.
        let trace = hex_digits(r.trace_id.value);
        let s = &r.server;
        let server_id = hex16(s.id);
        let redact = &r.local.redact;
        out.extend_from_slice(self.blocks.get(&Ends::server(r), block));
        attr_bytes(out, "url.path", r.url.path());
        if let Some(q) = r.url.query() {
            self.scratch.clear();
            redact.query(q, &mut self.scratch);
            attr_bytes(out, "url.query", &self.scratch);
        }
        attr(out, "url.scheme", if r.tls { "https" } else { "http" });
        for (k, v) in &s.tags {
            out.extend_from_slice(b",{\"key\":");
            string(out, k);
            out.extend_from_slice(b",\"value\":{\"stringValue\":");
            string(out, v);
            out.extend_from_slice(b"}}");
        }
        outcome(out, s.status, Outcome::server(s.status));
        ids_and_times(out, &trace, &server_id, s.parent_id.map(hex16).as_ref(), s.timestamp, s.duration);

        for c in &r.calls {
            out.extend_from_slice(b",{");
            out.extend_from_slice(self.blocks.get(&Ends::client(r, c), block));
            let url = c.url.as_ref().unwrap_or(&r.url);
            attr_bytes(out, "url.path", url.path());
            self.scratch.clear();
            self.scratch.extend_from_slice(if c.tls { b"https://" } else { b"http://" });
            self.scratch.extend_from_slice(c.remote.as_bytes());
            self.scratch.extend_from_slice(url.path());
            let at = self.scratch.len();
            if let Some(q) = url.query() {
                self.scratch.push(b'?');
                redact.query(q, &mut self.scratch);
                attr_bytes(out, "url.query", &self.scratch[at + 1..]);
            }
            attr_bytes(out, "url.full", &self.scratch);
            if c.resend > 0 {
                attr_int(out, "http.request.resend_count", c.resend.into());
            }
            outcome(out, c.status, Outcome::client(c));
            ids_and_times(out, &trace, &hex16(c.id), Some(&server_id), c.timestamp, c.duration);
        }
        out.extend_from_slice(b"]}]}");
    }
}

/// A span's shared block: its name and kind, and its attributes up to `url.path`:
/// `http.request.method` (and `http.request.method_original`); on a SERVER span
/// `meshgate.route` and `meshgate.service`; on a CLIENT span `server.address`, `server.port`,
/// `peer.service` (in lower case, like `service.name` and the Zipkin spans' service names) and
/// `meshgate.backend`. The name is `{method} {route}` for a SERVER span that matched a route
/// (the route's name is the low-cardinality target the conventions ask for; it is no path
/// template, so `http.route` is not set), else `{method}`; a method the conventions do not know
/// is `HTTP` there and `_OTHER` in `http.request.method`.
fn block(e: &Ends<'_>, out: &mut Vec<u8>) {
    let m = e.method.as_str();
    let known =
        matches!(m, "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS" | "TRACE" | "PATCH" | "QUERY");
    let name = if known { m } else { "HTTP" };
    out.extend_from_slice(b"\"name\":");
    match e.route {
        Some(r) => string(out, &format!("{name} {}", r.name)),
        None => string(out, name),
    }
    // SPAN_KIND_SERVER and SPAN_KIND_CLIENT.
    out.extend_from_slice(if e.server { b",\"kind\":2,\"attributes\":[" } else { b",\"kind\":3,\"attributes\":[" });
    out.extend_from_slice(b"{\"key\":\"http.request.method\",\"value\":{\"stringValue\":");
    string(out, if known { m } else { "_OTHER" });
    out.extend_from_slice(b"}}");
    if !known {
        attr(out, "http.request.method_original", m);
    }
    if let Some(r) = e.route {
        attr(out, "meshgate.route", &r.name);
        attr(out, "meshgate.service", &r.service);
    }
    if let Some(target) = e.remote {
        let (host, port) = split_target(target);
        attr(out, "server.address", host);
        if let Some(port) = port {
            attr_int(out, "server.port", port.into());
        }
    }
    if let Some(s) = e.remote_service {
        out.extend_from_slice(b",{\"key\":\"peer.service\",\"value\":{\"stringValue\":");
        lower_string(out, s);
        out.extend_from_slice(b"}}");
    }
    if let Some(b) = e.backend {
        attr(out, "meshgate.backend", b);
    }
}

/// [`attr`] with a value kept as bytes that were a `str` (a URL's).
fn attr_bytes(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    out.extend_from_slice(b",{\"key\":\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\",\"value\":{\"stringValue\":");
    utf8_string(out, value);
    out.extend_from_slice(b"}}");
}

/// The status attribute, the end of the attributes, and the span's `status`, as the HTTP
/// conventions ask: an error status sets `error.type` to the code and leaves the status without
/// a message (the code says it); a failure without an answer sets `error.type` to its class
/// (`connect_error`, `read_timeout`, …; `_OTHER`, the conventions' value for errors an
/// instrumentation does not classify, when it has none) and the status message to the cause.
fn outcome(out: &mut Vec<u8>, status: Option<u16>, outcome: Outcome<'_>) {
    if let Some(code) = status {
        attr_int(out, "http.response.status_code", code.into());
    }
    let message = match outcome {
        Outcome::Ok => {
            out.push(b']');
            return;
        }
        Outcome::Status(code) => {
            out.extend_from_slice(b",{\"key\":\"error.type\",\"value\":{\"stringValue\":\"");
            number(out, code.into());
            out.extend_from_slice(b"\"}}");
            None
        }
        Outcome::Failed(why, class) => Some((why, class)),
        Outcome::Retried => Some(("retried", "_OTHER")),
    };
    if let Some((_, class)) = message {
        attr(out, "error.type", class);
    }
    // STATUS_CODE_ERROR.
    out.extend_from_slice(b"],\"status\":{\"code\":2");
    if let Some((m, _)) = message {
        out.extend_from_slice(b",\"message\":");
        string(out, m);
    }
    out.push(b'}');
}

/// A span's ids and times (nanoseconds, as strings: int64 in protobuf's JSON mapping), and its end.
fn ids_and_times(
    out: &mut Vec<u8>,
    trace: &[u8; 32],
    id: &[u8; 16],
    parent: Option<&[u8; 16]>,
    start_us: u64,
    duration_us: u64,
) {
    out.extend_from_slice(b",\"traceId\":\"");
    out.extend_from_slice(trace);
    out.extend_from_slice(b"\",\"spanId\":\"");
    out.extend_from_slice(id);
    if let Some(p) = parent {
        out.extend_from_slice(b"\",\"parentSpanId\":\"");
        out.extend_from_slice(p);
    }
    out.extend_from_slice(b"\",\"startTimeUnixNano\":\"");
    nanos(out, start_us);
    out.extend_from_slice(b"\",\"endTimeUnixNano\":\"");
    nanos(out, start_us + duration_us);
    out.extend_from_slice(b"\"}");
}

/// Microseconds as nanoseconds: the digits and three zeros (no multiplication to overflow).
fn nanos(out: &mut Vec<u8>, us: u64) {
    number(out, us);
    out.extend_from_slice(b"000");
}

/// A string attribute after another; `key` is a constant that needs no escaping.
fn attr(out: &mut Vec<u8>, key: &str, value: &str) {
    attr_bytes(out, key, value.as_bytes());
}

/// An integer attribute after another (int64: a string in JSON); `key` as for [`attr`].
fn attr_int(out: &mut Vec<u8>, key: &str, value: u64) {
    out.extend_from_slice(b",{\"key\":\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\",\"value\":{\"intValue\":\"");
    number(out, value);
    out.extend_from_slice(b"\"}}");
}

#[cfg(test)]
mod tests {
    use super::super::span::fixtures::{call, record};
    use super::super::span::{Call, Local};
    use super::super::url::{PathQuery, Redact};
    use super::*;
    use serde_json::{Value, json};
    use std::sync::Arc;

    /// The fixtures' record, with a service name to write as it is and a plugin's tag.
    fn sample(calls: Vec<Call>) -> Record {
        let mut r = record(calls);
        r.local = Arc::new(Local { service: "edge".into(), redact: Redact::default() });
        r.server.tags = vec![("meshgate.transform.request", "transformed".into())];
        r
    }

    /// Records as one batch, parsed.
    fn batch(records: &[Record]) -> Value {
        let mut out = BATCH_START.to_vec();
        let mut encoder = Encoder::default();
        for (i, r) in records.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            encoder.record(r, &mut out);
        }
        out.extend_from_slice(BATCH_END);
        serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)))
    }

    /// The spans of the first record of a batch of `records`.
    fn spans(records: &[Record]) -> Vec<Value> {
        batch(records)["resourceSpans"][0]["scopeSpans"][0]["spans"].as_array().unwrap().clone()
    }

    /// `[{key, value}]` as a map of key to value.
    fn attrs(span: &Value) -> serde_json::Map<String, Value> {
        span["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["key"].as_str().unwrap().to_owned(), a["value"].clone()))
            .collect()
    }

    #[test]
    fn otlp_json() {
        let retried = Call { retried: true, status: Some(502), ..call("10.0.0.5:8080") };
        let backend = Call {
            backend: Some("user".into()),
            error: Some("timed out".into()),
            method: Some(http::Method::POST),
            url: Some(PathQuery::of(&"/users/7".parse().unwrap())),
            status: None,
            remote_service: None,
            ..call("[::1]:81")
        };
        let ok = Call { status: Some(200), resend: 1, ..call("svc.local:9") };
        let first = sample(vec![retried, ok, backend]);
        let v = batch(&[first.clone(), sample(Vec::new()), first]);
        let resources = v["resourceSpans"].as_array().unwrap();
        assert_eq!(resources.len(), 3, "one entry per request");
        assert_eq!(resources[0], resources[2], "the blocks kept from the first are the same");
        let r = &resources[0];
        assert_eq!(r["resource"]["attributes"], json!([{"key": "service.name", "value": {"stringValue": "edge"}}]));
        let scope = &r["scopeSpans"][0];
        assert_eq!(scope["scope"]["name"], "meshgate");
        let spans = scope["spans"].as_array().unwrap();
        assert_eq!(spans.len(), 4);

        let server = &spans[0];
        assert_eq!(server["traceId"], "0000000000000000a3ce929d0e0e4736", "64-bit ids padded to 32 digits");
        assert_eq!(
            (&server["spanId"], &server["parentSpanId"]),
            (&json!("0000000000001234"), &json!("0000000000000099"))
        );
        assert_eq!((&server["name"], &server["kind"]), (&json!("GET orders-api"), &json!(2)));
        assert_eq!(server["startTimeUnixNano"], "1764134400000000000");
        assert_eq!(server["endTimeUnixNano"], "1764134400002000000");
        let a = attrs(server);
        assert_eq!(a["http.request.method"], json!({"stringValue": "GET"}));
        assert_eq!(a["url.path"], json!({"stringValue": "/v1/orders"}));
        assert_eq!(a["url.query"], json!({"stringValue": "secret=1&sig=REDACTED"}), "a signature is redacted");
        assert_eq!(a["url.scheme"], json!({"stringValue": "http"}));
        assert_eq!(a["http.response.status_code"], json!({"intValue": "503"}));
        assert_eq!(a["meshgate.route"], json!({"stringValue": "orders-api"}));
        assert_eq!(a["meshgate.service"], json!({"stringValue": "Orders"}));
        assert_eq!(a["meshgate.transform.request"], json!({"stringValue": "transformed"}));
        assert_eq!(server["status"], json!({"code": 2}), "the status code says why");
        assert_eq!(a["error.type"], json!({"stringValue": "503"}));
        assert!(a.get("url.full").is_none() && a.get("http.route").is_none());

        for c in &spans[1..] {
            assert_eq!(
                (&c["traceId"], &c["parentSpanId"], &c["kind"]),
                (&server["traceId"], &server["spanId"], &json!(3))
            );
        }
        let (retried, named, backend) = (&spans[1], &spans[2], &spans[3]);
        assert_eq!((&retried["name"], &retried["status"]), (&json!("GET"), &json!({"code": 2})));
        let a = attrs(retried);
        assert_eq!(
            (&a["server.address"], &a["server.port"], &a["peer.service"]),
            (&json!({"stringValue": "10.0.0.5"}), &json!({"intValue": "8080"}), &json!({"stringValue": "orders"}))
        );
        assert_eq!(a["url.full"], json!({"stringValue": "http://10.0.0.5:8080/v1/orders?secret=1&sig=REDACTED"}));
        assert_eq!(a["url.query"], json!({"stringValue": "secret=1&sig=REDACTED"}));
        assert_eq!(a["error.type"], json!({"stringValue": "502"}));
        assert!(a.get("http.request.resend_count").is_none(), "the first attempt");
        assert_eq!(named.get("status"), None, "a 200 is no error");
        let a = attrs(named);
        assert_eq!(a["server.address"], json!({"stringValue": "svc.local"}));
        assert_eq!(a["http.request.resend_count"], json!({"intValue": "1"}));
        assert!(a.get("error.type").is_none());
        let a = attrs(backend);
        assert_eq!(
            (&backend["name"], &backend["status"]),
            (&json!("POST"), &json!({"code": 2, "message": "timed out"}))
        );
        assert_eq!(
            (&a["server.address"], &a["url.path"], &a["meshgate.backend"]),
            (&json!({"stringValue": "::1"}), &json!({"stringValue": "/users/7"}), &json!({"stringValue": "user"}))
        );
        assert_eq!(
            (&a["url.full"], &a["error.type"]),
            (&json!({"stringValue": "http://[::1]:81/users/7"}), &json!({"stringValue": "_OTHER"}))
        );
        assert!(
            a.get("http.response.status_code").is_none()
                && a.get("peer.service").is_none()
                && a.get("url.query").is_none()
        );

        let root = &resources[1]["scopeSpans"][0]["spans"];
        assert_eq!(root.as_array().unwrap().len(), 1, "a request without calls: its server span only");
    }

    #[test]
    fn statuses_follow_the_http_conventions() {
        let refused = "connect to 10.0.0.5:8080: Connection refused (os error 111)";
        let mut r = sample(vec![
            Call { status: Some(404), ..call("10.0.0.5:8080") },
            Call { status: None, error: Some(refused.into()), resend: 1, ..call("10.0.0.5:8080") },
            Call {
                status: None,
                error: Some("timed out waiting for the answer".into()),
                error_type: Some("read_timeout"),
                tls: true,
                resend: 2,
                ..call("10.0.0.6:8443")
            },
        ]);
        r.server.status = Some(404);
        r.tls = true;
        let s = spans(&[r]);
        assert!(
            s[0].get("status").is_none() && attrs(&s[0]).get("error.type").is_none(),
            "4xx: no error of the server"
        );
        assert_eq!(attrs(&s[0])["url.scheme"], json!({"stringValue": "https"}));
        assert_eq!(
            (&s[1]["status"], &attrs(&s[1])["error.type"]),
            (&json!({"code": 2}), &json!({"stringValue": "404"}))
        );
        assert_eq!(s[2]["status"], json!({"code": 2, "message": refused}), "the last attempt's failure, in full");
        assert_eq!(attrs(&s[2])["error.type"], json!({"stringValue": "_OTHER"}), "a failure of no known class");
        assert_eq!(
            (&attrs(&s[3])["error.type"], &attrs(&s[3])["url.full"]),
            (
                &json!({"stringValue": "read_timeout"}),
                &json!({"stringValue": "https://10.0.0.6:8443/v1/orders?secret=1&sig=REDACTED"})
            )
        );
    }

    #[test]
    fn names_and_methods() {
        let mut r = sample(vec![call("10.0.0.5:8080")]);
        r.method = http::Method::from_bytes(b"PURGE").unwrap();
        r.server.route = Some(meshgate_core::RouteInfo { name: "Mixed-Case".into(), service: "S".into() });
        r.local = Arc::new(Local { service: "edge".into(), redact: Redact::All });
        let s = spans(&[r.clone()]);
        let (server, client) = (attrs(&s[0]), attrs(&s[1]));
        assert_eq!((&s[0]["name"], &s[1]["name"]), (&json!("HTTP Mixed-Case"), &json!("HTTP")), "an unknown method");
        assert_eq!(server["http.request.method"], json!({"stringValue": "_OTHER"}));
        assert_eq!(server["http.request.method_original"], json!({"stringValue": "PURGE"}));
        assert_eq!(client["http.request.method"], json!({"stringValue": "_OTHER"}));
        assert_eq!(server["url.query"], json!({"stringValue": "secret=REDACTED&sig=REDACTED"}), "redact_query: all");
        assert_eq!(
            client["url.full"],
            json!({"stringValue": "http://10.0.0.5:8080/v1/orders?secret=REDACTED&sig=REDACTED"})
        );
        r.server.route = None;
        r.method = http::Method::DELETE;
        assert_eq!(spans(&[r])[0]["name"], "DELETE", "no route matched: the method alone");
    }
}
