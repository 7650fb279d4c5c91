//! A finished span and its Zipkin v2 JSON.
//!
//! Spans are recorded on the request's thread as plain values (ids as numbers, names as shared
//! strings: no formatting, a few reference counts) and written as JSON on the exporter's thread.
//! The writer is by hand because a span's shape is fixed and most of it needs no escaping
//! (hex ids, numbers, constant keys): through serde, escaping and `Display` formatting made
//! encoding a span cost several times what the gateway spends on the whole request.

use crate::observability::json::{self, hex, number, string};
use meshgate_core::{RouteInfo, TraceId};
use smallvec::SmallVec;
use std::sync::Arc;

/// A finished span.
#[derive(Clone, Debug)]
pub struct Span {
    /// The trace's id.
    pub trace_id: TraceId,
    /// The span's id.
    pub id: u64,
    /// The parent span's id; absent for a trace's root.
    pub parent_id: Option<u64>,
    /// SERVER (the request) or CLIENT (an upstream attempt).
    pub kind: Kind,
    /// The matched route: the server span's name and tags, the client span's remote service.
    pub route: Option<RouteInfo>,
    /// The request's method.
    pub method: http::Method,
    /// The path as received (server) or as sent upstream (client); never the query.
    pub path: Path,
    /// Start, in microseconds since the Unix epoch.
    pub timestamp: u64,
    /// Microseconds, at least 1.
    pub duration: u64,
    /// `localEndpoint.serviceName`, lower case.
    pub local_service: Arc<str>,
    /// The upstream target of a client span (`ip:port` or `host:port`).
    pub remote: Option<Arc<str>>,
    /// The service a client span called (`remoteEndpoint.serviceName`, in lower case).
    pub remote_service: Option<Arc<str>>,
    /// The aggregation backend a client span called (`meshgate.backend`).
    pub backend: Option<Arc<str>>,
    /// Why the call failed, when that is more than its status (`timed out`): the `error` tag.
    pub error: Option<String>,
    /// More tags, from plugins (`meshgate_core::SpanTags`); server spans only.
    pub tags: Vec<(&'static str, std::borrow::Cow<'static, str>)>,
    /// Recorded because the caller asked for debug (B3 `X-B3-Flags: 1`).
    pub debug: bool,
    /// The status the span ended with, when it ended with an answer.
    pub status: Option<u16>,
    /// A client span whose attempt was followed by another (`error: retried`).
    pub retried: bool,
}

/// A span's `http.path`, copied out of the request into the span (on the heap only past 64
/// bytes). Holding a clone of the request's URI instead kept the connection's whole read buffer
/// alive until the exporter dropped the span: the connection had to take a new buffer for every
/// request, and the exporter's thread freed the old ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Path(SmallVec<[u8; 64]>);

impl Path {
    /// The path of `uri`.
    pub fn of(uri: &http::Uri) -> Path {
        Path(SmallVec::from_slice(uri.path().as_bytes()))
    }

    /// The path's bytes, UTF-8.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A span's kind, as Zipkin names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The request as the gateway received it.
    Server,
    /// One upstream attempt.
    Client,
}

/// Writes spans as Zipkin v2 JSON. The fields spans of one route and target share (kind, name,
/// endpoints, method, route tags) are written once and kept, per kind, for the next span that
/// shares them: a batch repeats them, and writing them (checking each string for characters to
/// escape, parsing a target's address) was most of a span's cost.
#[derive(Default)]
pub struct Encoder {
    /// The shared block of the last SERVER span and of the last CLIENT span.
    server: Option<Shared>,
    client: Option<Shared>,
}

/// What spans share, and its JSON: from `"kind"` to the first tag. The values are held (not
/// just compared by address) so that an address cannot be reused by another string while the
/// block is kept.
struct Shared {
    route: Option<RouteInfo>,
    method: http::Method,
    local: Arc<str>,
    remote: Option<Arc<str>>,
    remote_service: Option<Arc<str>>,
    backend: Option<Arc<str>>,
    json: Vec<u8>,
}

impl Shared {
    /// Whether `s` shares this block: the same strings (by address, which is what spans of
    /// one route and target share), the same method.
    fn fits(&self, s: &Span) -> bool {
        fn same(a: &Option<Arc<str>>, b: &Option<Arc<str>>) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
        }
        let route = match (&self.route, &s.route) {
            (Some(a), Some(b)) => Arc::ptr_eq(&a.name, &b.name) && Arc::ptr_eq(&a.service, &b.service),
            (None, None) => true,
            _ => false,
        };
        route
            && self.method == s.method
            && Arc::ptr_eq(&self.local, &s.local_service)
            && same(&self.remote, &s.remote)
            && same(&self.remote_service, &s.remote_service)
            && same(&self.backend, &s.backend)
    }

    /// The block for `s`.
    fn of(s: &Span) -> Shared {
        let server = s.kind == Kind::Server;
        // A client span names no route: only a server span's route is written.
        let route = s.route.clone().filter(|_| server);
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(if server { b"\"kind\":\"SERVER\",\"name\":" } else { b"\"kind\":\"CLIENT\",\"name\":" });
        match &route {
            Some(r) => string(&mut out, &r.name),
            None => method(&mut out, &s.method, true),
        }
        out.extend_from_slice(b",\"localEndpoint\":{\"serviceName\":");
        string(&mut out, &s.local_service);
        out.push(b'}');
        if let Some(target) = &s.remote {
            out.extend_from_slice(b",\"remoteEndpoint\":");
            endpoint(&mut out, target, s.remote_service.as_deref());
        }
        out.extend_from_slice(b",\"tags\":{\"http.method\":");
        method(&mut out, &s.method, false);
        if let Some(r) = &route {
            out.extend_from_slice(b",\"meshgate.route\":");
            string(&mut out, &r.name);
            out.extend_from_slice(b",\"meshgate.service\":");
            string(&mut out, &r.service);
        }
        if let Some(b) = &s.backend {
            out.extend_from_slice(b",\"meshgate.backend\":");
            string(&mut out, b);
        }
        Shared {
            route,
            method: s.method.clone(),
            local: s.local_service.clone(),
            remote: s.remote.clone(),
            remote_service: s.remote_service.clone(),
            backend: s.backend.clone(),
            json: out,
        }
    }
}

impl Encoder {
    /// One span as a Zipkin v2 JSON object.
    pub fn span(&mut self, s: &Span, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"traceId\":\"");
        hex(out, s.trace_id.value, if s.trace_id.short { 16 } else { 32 });
        out.extend_from_slice(b"\",\"id\":\"");
        hex(out, s.id.into(), 16);
        if let Some(p) = s.parent_id {
            out.extend_from_slice(b"\",\"parentId\":\"");
            hex(out, p.into(), 16);
        }
        out.extend_from_slice(b"\",\"timestamp\":");
        number(out, s.timestamp);
        out.extend_from_slice(b",\"duration\":");
        number(out, s.duration);
        out.push(b',');
        if s.debug {
            out.extend_from_slice(b"\"debug\":true,");
        }
        let kept = if s.kind == Kind::Server { &mut self.server } else { &mut self.client };
        match kept {
            Some(shared) if shared.fits(s) => {}
            _ => *kept = Some(Shared::of(s)),
        }
        out.extend_from_slice(kept.as_ref().map_or(&[], |k| &k.json));
        out.extend_from_slice(b",\"http.path\":");
        json::utf8_string(out, s.path.as_bytes());
        if let Some(status) = s.status {
            out.extend_from_slice(b",\"http.status_code\":\"");
            number(out, status.into());
            out.push(b'"');
        }
        if s.retried {
            out.extend_from_slice(b",\"error\":\"retried\"");
        } else if let Some(e) = &s.error {
            out.extend_from_slice(b",\"error\":");
            string(out, e);
        } else if let Some(status) = s.status.filter(|s| *s >= 500) {
            out.extend_from_slice(b",\"error\":\"");
            number(out, status.into());
            out.push(b'"');
        }
        for (k, v) in &s.tags {
            out.push(b',');
            string(out, k);
            out.push(b':');
            string(out, v);
        }
        out.extend_from_slice(b"}}");
    }
}

/// A method as a JSON string, in lower case for a client span's name: from constants for the
/// common ones.
fn method(out: &mut Vec<u8>, m: &http::Method, lower: bool) {
    use http::Method;
    let (upper, low) = match *m {
        Method::GET => ("\"GET\"", "\"get\""),
        Method::POST => ("\"POST\"", "\"post\""),
        Method::PUT => ("\"PUT\"", "\"put\""),
        Method::DELETE => ("\"DELETE\"", "\"delete\""),
        Method::HEAD => ("\"HEAD\"", "\"head\""),
        Method::OPTIONS => ("\"OPTIONS\"", "\"options\""),
        Method::PATCH => ("\"PATCH\"", "\"patch\""),
        _ if lower => return json::lower_string(out, m.as_str()),
        _ => return string(out, m.as_str()),
    };
    out.extend_from_slice(if lower { low } else { upper }.as_bytes());
}

/// A Zipkin endpoint for a target written `ip:port`, or `host:port`, which keeps the port only:
/// Zipkin endpoints carry addresses, not names. The service name is written in lower case, as
/// Zipkin indexes it.
fn endpoint(out: &mut Vec<u8>, target: &str, service: Option<&str>) {
    let mut sep = b'{';
    if let Some(s) = service {
        out.extend_from_slice(b"{\"serviceName\":");
        json::lower_string(out, s);
        sep = b',';
    }
    let (ip, port) = match target.parse::<std::net::SocketAddr>() {
        Ok(a) => (Some(a.ip()), Some(a.port())),
        Err(_) => (None, target.rsplit_once(':').and_then(|(_, p)| p.parse().ok())),
    };
    if let Some(ip) = ip {
        out.push(sep);
        out.extend_from_slice(if ip.is_ipv4() { b"\"ipv4\":" } else { b"\"ipv6\":" });
        json::ip(out, ip);
        sep = b',';
    }
    if let Some(port) = port {
        out.push(sep);
        out.extend_from_slice(b"\"port\":");
        number(out, port.into());
        sep = b',';
    }
    if sep == b'{' {
        out.push(b'{');
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn json_of(span: &Span) -> Value {
        let mut out = Vec::new();
        Encoder::default().span(span, &mut out);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn zipkin_v2_json() {
        let route = RouteInfo { name: "orders-api".into(), service: "Orders".into() };
        let span = Span {
            trace_id: TraceId { value: 0xa3ce929d0e0e4736, short: true },
            id: 0x00f067aa0ba902b7,
            parent_id: Some(0x1234),
            kind: Kind::Client,
            route: Some(route),
            method: http::Method::GET,
            path: Path::of(&"/v1/orders?secret=1".parse().unwrap()),
            timestamp: 1_764_134_400_000_000,
            duration: 1500,
            local_service: "meshgate".into(),
            remote: Some("10.0.0.5:8080".into()),
            remote_service: Some("Orders".into()),
            backend: None,
            error: None,
            tags: Vec::new(),
            debug: false,
            status: Some(503),
            retried: false,
        };
        assert_eq!(
            json_of(&span),
            json!({
                "traceId": "a3ce929d0e0e4736", "id": "00f067aa0ba902b7", "parentId": "0000000000001234",
                "kind": "CLIENT", "name": "get",
                "timestamp": 1_764_134_400_000_000u64, "duration": 1500,
                "localEndpoint": {"serviceName": "meshgate"},
                "remoteEndpoint": {"serviceName": "orders", "ipv4": "10.0.0.5", "port": 8080},
                "tags": {"http.method": "GET", "http.path": "/v1/orders", "http.status_code": "503", "error": "503"}
            })
        );
        let server = Span {
            kind: Kind::Server,
            parent_id: None,
            remote: None,
            debug: true,
            status: None,
            trace_id: TraceId { value: 7, short: false },
            route: Some(RouteInfo { name: "a \"quoted\"\nroute".into(), service: "Orders".into() }),
            tags: vec![("meshgate.transform.request", "transformed".into())],
            ..span.clone()
        };
        assert_eq!(
            json_of(&server),
            json!({
                "traceId": "00000000000000000000000000000007", "id": "00f067aa0ba902b7",
                "kind": "SERVER", "name": "a \"quoted\"\nroute",
                "timestamp": 1_764_134_400_000_000u64, "duration": 1500,
                "localEndpoint": {"serviceName": "meshgate"}, "debug": true,
                "tags": {"http.method": "GET", "http.path": "/v1/orders",
                         "meshgate.route": "a \"quoted\"\nroute", "meshgate.service": "Orders",
                         "meshgate.transform.request": "transformed"}
            })
        );
        let retried =
            Span { retried: true, status: None, remote_service: None, remote: Some("[::1]:81".into()), ..span.clone() };
        let j = json_of(&retried);
        assert_eq!(
            (&j["remoteEndpoint"], &j["tags"]["error"]),
            (&json!({"ipv6": "::1", "port": 81}), &json!("retried"))
        );
        let named = Span { remote: Some("svc.local:9".into()), remote_service: None, ..span.clone() };
        assert_eq!(json_of(&named)["remoteEndpoint"], json!({"port": 9}));
        let nameless = Span { remote: Some("svc.local".into()), remote_service: None, ..span.clone() };
        let call = Span { backend: Some("user".into()), error: Some("timed out".into()), ..span.clone() };
        let j = json_of(&call);
        assert_eq!((&j["tags"]["meshgate.backend"], &j["tags"]["error"]), (&json!("user"), &json!("timed out")));
        assert_eq!(json_of(&nameless)["remoteEndpoint"], json!({}));

        // One encoder for a batch: the endpoint written for one target is not reused for another.
        let mut batch = Vec::new();
        let other = Span { remote: Some("10.0.0.6:8080".into()), method: http::Method::PATCH, ..span.clone() };
        let custom = Span { method: http::Method::from_bytes(b"PURGE").unwrap(), ..other.clone() };
        let renamed = Span { route: Some(RouteInfo { name: "b".into(), service: "S2".into() }), ..server.clone() };
        let spans = [span.clone(), server.clone(), span.clone(), other, custom, renamed, server];
        let mut encoder = Encoder::default();
        batch.push(b'[');
        for (i, s) in spans.iter().enumerate() {
            if i > 0 {
                batch.push(b',');
            }
            encoder.span(s, &mut batch);
        }
        batch.push(b']');
        let v: Value = serde_json::from_slice(&batch).unwrap();
        let v = v.as_array().unwrap();
        assert_eq!(v.len(), 7);
        assert_eq!(
            (&v[4]["tags"]["http.method"], &v[5]["name"], &v[6]["name"]),
            (&json!("PURGE"), &json!("b"), &v[1]["name"])
        );
        assert_eq!(
            (&v[5]["tags"]["meshgate.service"], &v[6]["tags"]["meshgate.service"]),
            (&json!("S2"), &json!("Orders"))
        );
        assert_eq!(
            (&v[2]["remoteEndpoint"]["ipv4"], &v[3]["remoteEndpoint"]["ipv4"]),
            (&json!("10.0.0.5"), &json!("10.0.0.6"))
        );
        assert_eq!((&v[3]["name"], &v[4]["name"]), (&json!("patch"), &json!("purge")));
    }
}
