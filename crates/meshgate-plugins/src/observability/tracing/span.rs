//! A traced request's finished spans and their Zipkin v2 JSON (and the blocks of JSON spans of
//! one route and target share, kept for the OTLP encoder too).
//!
//! A sampled request's spans are recorded on its thread as one plain value, a [`Record`] (ids
//! as numbers, names as shared strings: no formatting, a few reference counts), queued once,
//! and written as JSON on the exporter's thread. What a request's spans share (the trace id,
//! the method and path, the gateway's service name) is held once and written once per record:
//! queued span by span, each span was copied three times on its way and its shared parts
//! formatted again. The writer is by hand because a span's shape is fixed and most of it needs
//! no escaping (hex ids, numbers, constant keys): through serde, escaping and `Display`
//! formatting made encoding a span cost several times what the gateway spends on the request.

use crate::observability::json::{self, hex_digits, hex16, number, string};
use meshgate_core::{RouteInfo, TraceId};
use smallvec::SmallVec;
use std::borrow::Cow;
use std::sync::Arc;

/// A sampled request's spans: its SERVER span and a CLIENT span per upstream call attempt.
#[derive(Clone, Debug)]
pub struct Record {
    /// The trace's id.
    pub trace_id: TraceId,
    /// Recorded because the caller asked for debug (B3 `X-B3-Flags: 1`).
    pub debug: bool,
    /// `localEndpoint.serviceName`, lower case.
    pub local_service: Arc<str>,
    /// The request's method.
    pub method: http::Method,
    /// The path as received; never the query.
    pub path: Path,
    /// The request as the gateway received it.
    pub server: Server,
    /// One per upstream attempt, in order (most requests make one).
    pub calls: SmallVec<[Call; 1]>,
}

/// The SERVER span: arrival to the end of the response body.
#[derive(Clone, Debug)]
pub struct Server {
    /// The span's id (the parent of every call).
    pub id: u64,
    /// The caller's span; absent for a trace's root.
    pub parent_id: Option<u64>,
    /// The matched route: the span's name and tags.
    pub route: Option<RouteInfo>,
    /// Start, in microseconds since the Unix epoch.
    pub timestamp: u64,
    /// Microseconds, at least 1.
    pub duration: u64,
    /// The status the client got, when it got an answer.
    pub status: Option<u16>,
    /// More tags, from plugins (`meshgate_core::SpanTags`).
    pub tags: Vec<(&'static str, Cow<'static, str>)>,
}

/// A CLIENT span: one upstream attempt.
#[derive(Clone, Debug)]
pub struct Call {
    /// The span's id, sent to the upstream as its parent.
    pub id: u64,
    /// The method sent, when not the request's (an aggregation backend's).
    pub method: Option<http::Method>,
    /// The path sent, when not the request's (`strip_path`, rewrites, backends).
    pub path: Option<Path>,
    /// Start, in microseconds since the Unix epoch.
    pub timestamp: u64,
    /// Microseconds, at least 1.
    pub duration: u64,
    /// The upstream target (`ip:port` or `host:port`).
    pub remote: Arc<str>,
    /// The service called (`remoteEndpoint.serviceName`, in lower case).
    pub remote_service: Option<Arc<str>>,
    /// The aggregation backend called (`meshgate.backend`).
    pub backend: Option<Arc<str>>,
    /// Why the call failed, when that is more than its status (`timed out`): the `error` tag.
    pub error: Option<String>,
    /// The status of its answer, if one came.
    pub status: Option<u16>,
    /// Another attempt followed it (`error: retried`).
    pub retried: bool,
}

/// A span's `http.path`, copied out of the request (on the heap only past 64 bytes). Holding a
/// clone of the request's URI instead kept the connection's whole read buffer alive until the
/// exporter dropped the span: the connection had to take a new buffer for every request, and
/// the exporter's thread freed the old ones.
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

/// Writes records as Zipkin v2 JSON. The fields spans of one route and target share (kind, name,
/// endpoints, method, route tags) are written once and kept, per kind, for the next span that
/// shares them: a batch repeats them, and writing them (checking each string for characters to
/// escape, parsing a target's address) was most of a span's cost.
#[derive(Default)]
pub struct Encoder {
    blocks: Blocks,
}

/// The shared block of the last SERVER span and of the last CLIENT span an encoder wrote.
#[derive(Default)]
pub(super) struct Blocks {
    server: Option<Shared>,
    client: Option<Shared>,
}

impl Blocks {
    /// The block for a span made of `ends`: the kept one if it fits, else a new one from `write`.
    pub(super) fn get(&mut self, ends: &Ends<'_>, write: fn(&Ends<'_>, &mut Vec<u8>)) -> &[u8] {
        let kept = if ends.server { &mut self.server } else { &mut self.client };
        match kept {
            Some(shared) if shared.fits(ends) => {}
            _ => *kept = Some(Shared::of(ends, write)),
        }
        kept.as_ref().map_or(&[], |k| &k.json)
    }
}

/// What a span's shared block is made of.
pub(super) struct Ends<'a> {
    /// A SERVER span (else a CLIENT one).
    pub server: bool,
    /// A SERVER span's route (a CLIENT span names none).
    pub route: Option<&'a RouteInfo>,
    /// The method of the request, or of the call.
    pub method: &'a http::Method,
    /// The gateway's service name.
    pub local: &'a Arc<str>,
    /// A CLIENT span's target.
    pub remote: Option<&'a Arc<str>>,
    /// A CLIENT span's service.
    pub remote_service: Option<&'a Arc<str>>,
    /// A CLIENT span's aggregation backend.
    pub backend: Option<&'a Arc<str>>,
}

impl<'a> Ends<'a> {
    /// A record's SERVER span.
    pub fn server(r: &'a Record) -> Ends<'a> {
        Ends {
            server: true,
            route: r.server.route.as_ref(),
            method: &r.method,
            local: &r.local_service,
            remote: None,
            remote_service: None,
            backend: None,
        }
    }

    /// The CLIENT span of call `c` of record `r`.
    pub fn client(r: &'a Record, c: &'a Call) -> Ends<'a> {
        Ends {
            server: false,
            route: None,
            method: c.method.as_ref().unwrap_or(&r.method),
            local: &r.local_service,
            remote: Some(&c.remote),
            remote_service: c.remote_service.as_ref(),
            backend: c.backend.as_ref(),
        }
    }
}

/// A shared block and its JSON. The values are held (not just compared by address) so that an
/// address cannot be reused by another string while the block is kept.
struct Shared {
    route: Option<RouteInfo>,
    method: http::Method,
    local: Arc<str>,
    remote: Option<Arc<str>>,
    remote_service: Option<Arc<str>>,
    backend: Option<Arc<str>>,
    json: Vec<u8>,
}

/// The same string by address (what spans of one route and target share), or both absent.
fn same(a: Option<&Arc<str>>, b: Option<&Arc<str>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

impl Shared {
    /// Whether a span made of `e` shares this block.
    fn fits(&self, e: &Ends<'_>) -> bool {
        let route = match (&self.route, e.route) {
            (Some(a), Some(b)) => Arc::ptr_eq(&a.name, &b.name) && Arc::ptr_eq(&a.service, &b.service),
            (None, None) => true,
            _ => false,
        };
        route
            && self.method == *e.method
            && Arc::ptr_eq(&self.local, e.local)
            && same(self.remote.as_ref(), e.remote)
            && same(self.remote_service.as_ref(), e.remote_service)
            && same(self.backend.as_ref(), e.backend)
    }

    /// The block for a span made of `e`, written by `write`.
    fn of(e: &Ends<'_>, write: fn(&Ends<'_>, &mut Vec<u8>)) -> Shared {
        let mut json = Vec::with_capacity(256);
        write(e, &mut json);
        Shared {
            route: e.route.cloned(),
            method: e.method.clone(),
            local: e.local.clone(),
            remote: e.remote.cloned(),
            remote_service: e.remote_service.cloned(),
            backend: e.backend.cloned(),
            json,
        }
    }
}

/// A Zipkin span's shared block: from `"kind"` to the first tag.
fn zipkin_block(e: &Ends<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(if e.server { b"\"kind\":\"SERVER\",\"name\":" } else { b"\"kind\":\"CLIENT\",\"name\":" });
    match e.route {
        Some(r) => string(out, &r.name),
        None => method(out, e.method, true),
    }
    out.extend_from_slice(b",\"localEndpoint\":{\"serviceName\":");
    string(out, e.local);
    out.push(b'}');
    if let Some(target) = e.remote {
        out.extend_from_slice(b",\"remoteEndpoint\":");
        endpoint(out, target, e.remote_service.map(|s| &**s));
    }
    out.extend_from_slice(b",\"tags\":{\"http.method\":");
    method(out, e.method, false);
    if let Some(r) = e.route {
        out.extend_from_slice(b",\"meshgate.route\":");
        string(out, &r.name);
        out.extend_from_slice(b",\"meshgate.service\":");
        string(out, &r.service);
    }
    if let Some(b) = e.backend {
        out.extend_from_slice(b",\"meshgate.backend\":");
        string(out, b);
    }
}

/// A span's ids and times, in hex and microseconds.
struct Head<'a> {
    trace: &'a [u8],
    id: &'a [u8; 16],
    parent: Option<&'a [u8; 16]>,
    timestamp: u64,
    duration: u64,
    debug: bool,
}

impl Encoder {
    /// A record's spans as Zipkin v2 JSON objects separated by commas: the SERVER span, then
    /// one CLIENT span per call. The trace id, the server span's id (every call's parent) and
    /// the request's path are formatted once for all of them.
    pub fn record(&mut self, r: &Record, out: &mut Vec<u8>) {
        let full = hex_digits(r.trace_id.value);
        let trace = &full[if r.trace_id.short { 16 } else { 0 }..];
        let s = &r.server;
        let server_id = hex16(s.id);
        let parent = s.parent_id.map(hex16);
        let head = Head {
            trace,
            id: &server_id,
            parent: parent.as_ref(),
            timestamp: s.timestamp,
            duration: s.duration,
            debug: r.debug,
        };
        self.begin(out, &head, &Ends::server(r));
        let at = out.len();
        json::utf8_string(out, r.path.as_bytes());
        let path = at..out.len();
        end(out, s.status, None, false, &s.tags);
        for c in &r.calls {
            out.push(b',');
            let id = hex16(c.id);
            let head = Head { id: &id, parent: Some(&server_id), timestamp: c.timestamp, duration: c.duration, ..head };
            self.begin(out, &head, &Ends::client(r, c));
            match &c.path {
                Some(p) => json::utf8_string(out, p.as_bytes()),
                None => out.extend_from_within(path.clone()),
            }
            end(out, c.status, c.error.as_deref(), c.retried, &[]);
        }
    }

    /// A span's members up to the value of its `http.path` tag.
    fn begin(&mut self, out: &mut Vec<u8>, h: &Head<'_>, ends: &Ends<'_>) {
        out.extend_from_slice(b"{\"traceId\":\"");
        out.extend_from_slice(h.trace);
        out.extend_from_slice(b"\",\"id\":\"");
        out.extend_from_slice(h.id);
        if let Some(p) = h.parent {
            out.extend_from_slice(b"\",\"parentId\":\"");
            out.extend_from_slice(p);
        }
        out.extend_from_slice(b"\",\"timestamp\":");
        number(out, h.timestamp);
        out.extend_from_slice(b",\"duration\":");
        number(out, h.duration);
        out.push(b',');
        if h.debug {
            out.extend_from_slice(b"\"debug\":true,");
        }
        out.extend_from_slice(self.blocks.get(ends, zipkin_block));
        out.extend_from_slice(b",\"http.path\":");
    }
}

/// A span's members after its path (status, error, more tags), and its end.
fn end(
    out: &mut Vec<u8>,
    status: Option<u16>,
    error: Option<&str>,
    retried: bool,
    tags: &[(&'static str, Cow<'static, str>)],
) {
    if let Some(status) = status {
        out.extend_from_slice(b",\"http.status_code\":\"");
        number(out, status.into());
        out.push(b'"');
    }
    if retried {
        out.extend_from_slice(b",\"error\":\"retried\"");
    } else if let Some(e) = error {
        out.extend_from_slice(b",\"error\":");
        string(out, e);
    } else if let Some(status) = status.filter(|s| *s >= 500) {
        out.extend_from_slice(b",\"error\":\"");
        number(out, status.into());
        out.push(b'"');
    }
    for (k, v) in tags {
        out.push(b',');
        string(out, k);
        out.push(b':');
        string(out, v);
    }
    out.extend_from_slice(b"}}");
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
    let (host, port) = split_target(target);
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
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

/// A target's host (an IPv6 address without its brackets) and port: `ip:port`, `[ip6]:port` or
/// `host:port`, as targets are written.
pub(super) fn split_target(target: &str) -> (&str, Option<u16>) {
    if let Some((host, rest)) = target.strip_prefix('[').and_then(|t| t.split_once(']')) {
        return (host, rest.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match target.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, port.parse().ok()),
        _ => (target, None),
    }
}

/// Records for the encoders' tests.
#[cfg(test)]
pub(super) mod fixtures {
    use super::*;

    /// A call answered 503 by `remote`, of service `Orders`.
    pub fn call(remote: &str) -> Call {
        Call {
            id: 0x00f067aa0ba902b7,
            method: None,
            path: None,
            timestamp: 1_764_134_400_000_100,
            duration: 1500,
            remote: remote.into(),
            remote_service: Some("Orders".into()),
            backend: None,
            error: None,
            status: Some(503),
            retried: false,
        }
    }

    /// A GET of `/v1/orders` on route `orders-api`, answered 503, with `calls`.
    pub fn record(calls: Vec<Call>) -> Record {
        Record {
            trace_id: TraceId { value: 0xa3ce929d0e0e4736, short: true },
            debug: false,
            local_service: "meshgate".into(),
            method: http::Method::GET,
            path: Path::of(&"/v1/orders?secret=1".parse().unwrap()),
            server: Server {
                id: 0x1234,
                parent_id: Some(0x99),
                route: Some(RouteInfo { name: "orders-api".into(), service: "Orders".into() }),
                timestamp: 1_764_134_400_000_000,
                duration: 2000,
                status: Some(503),
                tags: Vec::new(),
            },
            calls: calls.into(),
        }
    }
}

#[cfg(test)]
mod tests {
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
                    "kind": "SERVER", "name": "orders-api",
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
        root.server.route = Some(RouteInfo { name: "a \"quoted\"\nroute".into(), service: "Orders".into() });
        root.server.tags = vec![("meshgate.transform.request", "transformed".into())];
        assert_eq!(
            batch(&[&root]),
            [json!({
                "traceId": "00000000000000000000000000000007", "id": "0000000000001234",
                "kind": "SERVER", "name": "a \"quoted\"\nroute",
                "timestamp": 1_764_134_400_000_000u64, "duration": 2000,
                "localEndpoint": {"serviceName": "meshgate"}, "debug": true,
                "tags": {"http.method": "GET", "http.path": "/v1/orders",
                         "meshgate.route": "a \"quoted\"\nroute", "meshgate.service": "Orders",
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
            path: Some(Path::of(&"/users/7".parse().unwrap())),
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
    fn one_encoder_for_a_batch() {
        // The blocks kept for one span are not reused for another target, method or route.
        let first = record(vec![call("10.0.0.5:8080")]);
        let mut other = record(vec![call("10.0.0.6:8080")]);
        other.method = http::Method::PATCH;
        let mut custom = other.clone();
        custom.method = http::Method::from_bytes(b"PURGE").unwrap();
        let mut renamed = first.clone();
        renamed.server.route = Some(RouteInfo { name: "b".into(), service: "S2".into() });
        let v = batch(&[&first, &other, &custom, &renamed, &first]);
        assert_eq!(v.len(), 10);
        let (names, targets): (Vec<_>, Vec<_>) =
            v.iter().map(|s| (s["name"].clone(), s["remoteEndpoint"]["ipv4"].clone())).unzip();
        assert_eq!(
            names,
            ["orders-api", "get", "orders-api", "patch", "orders-api", "purge", "b", "get", "orders-api", "get"]
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
}
