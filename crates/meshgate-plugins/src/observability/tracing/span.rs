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

use super::url::{PathQuery, Redact};
use crate::observability::json::{self, hex_digits, hex16, number, string};
use meshgate_core::{RouteInfo, TraceId};
use smallvec::SmallVec;
use std::borrow::Cow;
use std::sync::Arc;

/// What the spans of one plugin instance share, held once and pointed at by each record.
#[derive(Debug)]
pub struct Local {
    /// `localEndpoint.serviceName` (OTLP's `service.name`), lower case.
    pub service: Box<str>,
    /// Which query values the spans hide.
    pub redact: Redact,
}

/// A sampled request's spans: its SERVER span and a CLIENT span per upstream call attempt.
#[derive(Clone, Debug)]
pub struct Record {
    /// The trace's id.
    pub trace_id: TraceId,
    /// Recorded because the caller asked for debug (B3 `X-B3-Flags: 1`).
    pub debug: bool,
    /// The plugin instance's service name and redaction.
    pub local: Arc<Local>,
    /// The request's method.
    pub method: http::Method,
    /// The request's path and query.
    pub url: PathQuery,
    /// It came over TLS (`url.scheme` `https`).
    pub tls: bool,
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
    /// The path and query sent, when not the request's (`strip_path`, rewrites, backends).
    pub url: Option<PathQuery>,
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
    /// Why it failed without an answer (`connect to …: Connection refused`), or why its answer
    /// did not count (an aggregation backend's `the answer is not JSON`).
    pub error: Option<Box<str>>,
    /// The class of `error`, few enough to group by (OpenTelemetry's `error.type`); `_OTHER`
    /// is written when there is none.
    pub error_type: Option<&'static str>,
    /// It went over TLS: the scheme of `url.full`.
    pub tls: bool,
    /// The status of its answer, if one came.
    pub status: Option<u16>,
    /// Another attempt followed it.
    pub retried: bool,
    /// How many attempts of the same call came before it.
    pub resend: u32,
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
    /// The plugin instance's.
    pub local: &'a Arc<Local>,
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
            local: &r.local,
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
            local: &r.local,
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
    local: Arc<Local>,
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

/// A Zipkin span's shared block: from `"kind"` to the first tag. Names are in lower case, as
/// Zipkin's API asks: `{method} {route}` for a SERVER span that matched a route, else the
/// method.
fn zipkin_block(e: &Ends<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(if e.server { b"\"kind\":\"SERVER\",\"name\":" } else { b"\"kind\":\"CLIENT\",\"name\":" });
    match e.route {
        Some(r) => json::lower_string(out, &format!("{} {}", e.method, r.name)),
        None => method(out, e.method, true),
    }
    out.extend_from_slice(b",\"localEndpoint\":{\"serviceName\":");
    string(out, &e.local.service);
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
        json::utf8_string(out, r.url.path());
        let path = at..out.len();
        end(out, s.status, Outcome::server(s.status), &s.tags);
        for c in &r.calls {
            out.push(b',');
            let id = hex16(c.id);
            let head = Head { id: &id, parent: Some(&server_id), timestamp: c.timestamp, duration: c.duration, ..head };
            self.begin(out, &head, &Ends::client(r, c));
            match &c.url {
                Some(u) => json::utf8_string(out, u.path()),
                None => out.extend_from_within(path.clone()),
            }
            end(out, c.status, Outcome::client(c), &[]);
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

/// Whether a span ended in error, and why: what both encoders write (Zipkin's `error` tag,
/// OTLP's status and `error.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome<'a> {
    /// No error.
    Ok,
    /// An answer with an error status: 5xx, and for a CLIENT span 4xx too (the upstream refused
    /// the gateway's request; the gateway's client did get an answer). The status says it all.
    Status(u16),
    /// No answer, or one that did not count, for this reason (and of this class).
    Failed(&'a str, &'static str),
    /// Another attempt followed, for no reason recorded.
    Retried,
}

impl<'a> Outcome<'a> {
    /// A SERVER span's: its status, when 5xx (OpenTelemetry's HTTP conventions and Brave agree).
    pub fn server(status: Option<u16>) -> Outcome<'a> {
        status.filter(|s| *s >= 500).map_or(Outcome::Ok, Outcome::Status)
    }

    /// A CLIENT span's: its failure, else its status when 4xx or 5xx, else whether it was retried.
    pub fn client(c: &'a Call) -> Outcome<'a> {
        match (c.error.as_deref(), c.status) {
            (Some(e), s) if s.is_none_or(|s| s < 400) => Outcome::Failed(e, c.error_type.unwrap_or("_OTHER")),
            (_, Some(s)) if s >= 400 => Outcome::Status(s),
            _ if c.retried => Outcome::Retried,
            _ => Outcome::Ok,
        }
    }
}

/// A span's members after its path (status, error, more tags), and its end.
fn end(out: &mut Vec<u8>, status: Option<u16>, outcome: Outcome<'_>, tags: &[(&'static str, Cow<'static, str>)]) {
    if let Some(status) = status {
        out.extend_from_slice(b",\"http.status_code\":\"");
        number(out, status.into());
        out.push(b'"');
    }
    match outcome {
        Outcome::Ok => {}
        Outcome::Status(status) => {
            out.extend_from_slice(b",\"error\":\"");
            number(out, status.into());
            out.push(b'"');
        }
        Outcome::Failed(e, _) => {
            out.extend_from_slice(b",\"error\":");
            string(out, e);
        }
        Outcome::Retried => out.extend_from_slice(b",\"error\":\"retried\""),
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
            url: None,
            timestamp: 1_764_134_400_000_100,
            duration: 1500,
            remote: remote.into(),
            remote_service: Some("Orders".into()),
            backend: None,
            error: None,
            error_type: None,
            tls: false,
            status: Some(503),
            retried: false,
            resend: 0,
        }
    }

    /// A GET of `/v1/orders` on route `orders-api`, answered 503, with `calls`.
    pub fn record(calls: Vec<Call>) -> Record {
        Record {
            trace_id: TraceId { value: 0xa3ce929d0e0e4736, short: true },
            debug: false,
            local: Arc::new(Local { service: "meshgate".into(), redact: Redact::default() }),
            method: http::Method::GET,
            url: PathQuery::of(&"/v1/orders?secret=1&sig=abc".parse().unwrap()),
            tls: false,
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
#[path = "span_tests.rs"]
mod tests;
