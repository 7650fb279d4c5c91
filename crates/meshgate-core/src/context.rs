//! What a plugin sees of a request as it moves through the phases.

use crate::auth::Authenticated;
use http::StatusCode;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

/// The route a request matched, as plugins need to know it (for keys, logs, metrics).
#[derive(Clone, Debug)]
pub struct RouteInfo {
    /// The route's name from the config.
    pub name: Arc<str>,
    /// The name of the service it forwards to.
    pub service: Arc<str>,
}

/// The client's TLS certificate chain, leaf first. One per connection, shared by its requests.
///
/// Checking a chain (signatures, parsing, identity lookup) costs far more than the rest of a
/// request, and the answer cannot change during a connection: the chain was fixed by the
/// handshake. So each checker (an authentication plugin instance, named by a process-unique id)
/// checks it once per connection and the verdict is kept here. The cache is small and bounded:
/// a connection meets few checkers, and past [`ClientCert::MAX_VERDICTS`] the check just runs.
#[derive(Debug)]
pub struct ClientCert {
    /// DER certificates as the client sent them.
    pub chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// Whether the listener verified the chain against its CA bundle during the handshake.
    pub verified: bool,
    /// `(checker id, verdict)`, in the order the checkers first ran.
    verdicts: Mutex<Vec<(u64, Verdict)>>,
}

/// What a checker made of a certificate: who it names, or why it is not accepted.
pub type Verdict = Result<Authenticated, &'static str>;

impl ClientCert {
    /// Verdicts kept per connection; more checkers than this recompute theirs.
    pub const MAX_VERDICTS: usize = 8;

    /// A chain as received in the handshake; `verified` says whether the listener checked it
    /// against a CA.
    pub fn new(chain: Vec<rustls_pki_types::CertificateDer<'static>>, verified: bool) -> ClientCert {
        ClientCert { chain, verified, verdicts: Mutex::new(Vec::new()) }
    }

    /// The verdict of checker `id` on this chain: computed by `check` the first time, then
    /// remembered for the rest of the connection. `check` runs outside the lock.
    pub fn verdict(&self, id: u64, check: impl FnOnce(&ClientCert) -> Verdict) -> Verdict {
        let lock = || self.verdicts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, v)) = lock().iter().find(|(k, _)| *k == id) {
            return v.clone();
        }
        let v = check(self);
        let mut verdicts = lock();
        if verdicts.len() < Self::MAX_VERDICTS && !verdicts.iter().any(|(k, _)| *k == id) {
            verdicts.push((id, v.clone()));
        }
        v
    }
}

/// Named groups captured by the matched route's regex path (`~/users/(?<id>[0-9]+)`), for
/// templates in transformations and aggregation. Put in [`RequestCtx::vars`] by the proxy only
/// for routes whose regex paths name groups; groups that did not take part are absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathParams(pub Vec<(Arc<str>, String)>);

impl PathParams {
    /// The value captured by group `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| &**k == name).map(|(_, v)| v.as_str())
    }
}

/// A trace id: 128 bits, or 64 when it came in that way (B3 allows 16 hex digits; it is kept
/// short so the caller's spans and ours carry the same id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceId {
    /// The id's bits; the high half is zero for a 64-bit id.
    pub value: u128,
    /// Written as 16 hex digits (B3 and Zipkin); `traceparent` always takes 32.
    pub short: bool,
}

impl TraceId {
    /// The id in lower hex, 16 or 32 digits.
    pub fn hex(self) -> String {
        self.to_string()
    }
}

impl std::fmt::Display for TraceId {
    /// Lower hex through a table: `{:032x}` on a u128 is slow enough to show in a profile of
    /// traced, logged requests.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let n = if self.short { 16 } else { 32 };
        let mut buf = [0u8; 32];
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = DIGITS[((self.value >> (4 * (n - 1 - i))) & 0xf) as usize];
        }
        f.write_str(std::str::from_utf8(&buf[..n]).unwrap_or_default())
    }
}

/// The trace a request is part of ([`RequestCtx::trace`]), set by the tracing plugin so that
/// other plugins (access logs, span tags) can name it without depending on that plugin. A field
/// of its own rather than a `vars` entry: every traced request has one, and looking it up by
/// type in each phase showed in the profile of traced requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceIds {
    /// The trace's id, as it came in or new.
    pub trace_id: TraceId,
    /// The gateway's server span for this request.
    pub span_id: u64,
    /// The caller's span, the parent of ours; `None` when the trace starts here.
    pub parent_id: Option<u64>,
    /// Whether the request is recorded (its spans exported).
    pub sampled: bool,
    /// The caller asked every hop to record (B3 debug): passed on, and marked on the spans.
    pub debug: bool,
    /// The header forms the context came in, as the tracing plugin numbers them: kept so that
    /// writing them back to the upstream needs no second pass over the headers.
    pub forms: u8,
}

/// One upstream attempt, as the proxy made it: the tracing plugin turns each into a CLIENT span.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// The target it went to.
    pub target: Arc<str>,
    /// When it began, just before the `before_upstream` phase.
    pub start: Instant,
    /// When its response head came or it failed (or the request ended first); `None` while
    /// under way.
    pub end: Option<Instant>,
    /// The status of its answer, if one came.
    pub status: Option<u16>,
    /// Another attempt followed it.
    pub retried: bool,
    /// The URI as sent upstream, when its path is not the request's (`strip_path`, rewrites);
    /// boxed because it is rare and the context is moved whole between phases.
    pub uri: Option<Box<http::Uri>>,
    /// The id a plugin gave it (the tracing plugin's client span id); 0 for none.
    pub span_id: u64,
    /// Why it failed without an answer, for logs and traces only: clients get a fixed message
    /// per error code. `None` when an answer came.
    pub failure: Option<AttemptFailure>,
    /// It went over TLS (an `https` service): the scheme of the URL it called.
    pub tls: bool,
}

/// Why an upstream attempt failed without an answer.
#[derive(Clone, Debug)]
pub struct AttemptFailure {
    /// Its class, few enough to group by (OpenTelemetry's `error.type`): `connect_error`,
    /// `connect_timeout`, `read_timeout`, `connection_broken` or `client_fault`.
    pub class: &'static str,
    /// The full cause (`connect to 10.0.0.7:8080: Connection refused (os error 111)`).
    pub cause: Box<str>,
}

/// A request's upstream attempts, in order ([`RequestCtx::attempts`]). The first is kept inline:
/// nearly every request makes exactly one, and recording it must not cost an allocation.
#[derive(Clone, Debug, Default)]
pub struct Attempts {
    first: Option<Attempt>,
    more: Vec<Attempt>,
}

impl Attempts {
    /// Records the next attempt.
    pub fn push(&mut self, a: Attempt) {
        if self.first.is_none() {
            self.first = Some(a);
        } else {
            self.more.push(a);
        }
    }

    /// The latest attempt.
    pub fn last(&self) -> Option<&Attempt> {
        self.more.last().or(self.first.as_ref())
    }

    /// The latest attempt.
    pub fn last_mut(&mut self) -> Option<&mut Attempt> {
        self.more.last_mut().or(self.first.as_mut())
    }

    /// Every attempt, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Attempt> {
        self.first.iter().chain(&self.more)
    }

    /// How many attempts were made.
    pub fn len(&self) -> usize {
        self.first.is_some() as usize + self.more.len()
    }

    /// Whether none was made.
    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }
}

/// Facts plugins attach to the request's trace (`meshgate.transform.request: transformed`); the
/// tracing plugin writes them as tags of the request's server span.
#[derive(Clone, Debug, Default)]
pub struct SpanTags(pub Vec<(&'static str, std::borrow::Cow<'static, str>)>);

impl SpanTags {
    /// Adds `key: value` to the request's server span when the request is traced and sampled;
    /// otherwise does nothing, so plugins call it without asking.
    pub fn add(cx: &mut RequestCtx, key: &'static str, value: impl Into<std::borrow::Cow<'static, str>>) {
        if !cx.trace.is_some_and(|t| t.sampled) {
            return;
        }
        match cx.vars.get_mut::<SpanTags>() {
            Some(tags) => tags.0.push((key, value.into())),
            None => {
                cx.vars.insert(SpanTags(vec![(key, value.into())]));
            }
        }
    }
}

/// The backend calls an aggregation route made for this request, in config order; in
/// [`RequestCtx::vars`] from `on_response` on. The calls run at the same time, so each had a
/// context of its own, forked from the request's after `on_request` (its `vars` a clone): its
/// attempts, and what `before_upstream` plugins left in its `vars`, are here.
#[derive(Clone, Debug, Default)]
pub struct Subcalls(pub Vec<Subcall>);

/// One backend call of an aggregation route; see [`Subcalls`].
#[derive(Clone, Debug)]
pub struct Subcall {
    /// The backend's name.
    pub name: Arc<str>,
    /// The service it called.
    pub service: Arc<str>,
    /// The method it sent.
    pub method: http::Method,
    /// The status its answer came with, if one came.
    pub status: Option<u16>,
    /// Why it is missing from the merged answer (`timed out`, `answered 500`, …); `None` when it
    /// is in it.
    pub error: Option<String>,
    /// When its answer was read, or it failed, or the route stopped waiting for it.
    pub ended: Instant,
    /// Its upstream attempts.
    pub attempts: Attempts,
    /// Its own copy of the request's `vars`, as its `before_upstream` plugins left them.
    pub vars: http::Extensions,
}

/// The request's id (from `request-id`), for logs and traces.
#[derive(Clone, Debug)]
pub struct RequestId(pub http::HeaderValue);

/// The response as sent to the client, known in the log phase.
#[derive(Clone, Debug)]
pub struct ResponseInfo {
    /// The status sent to the client.
    pub status: StatusCode,
    /// Response body bytes sent to the client.
    pub body_bytes: u64,
    /// Request body bytes read from the client and forwarded (0 when none was forwarded).
    pub request_bytes: u64,
}

/// When an exchange ended, on both clocks: read once by the proxy for every `on_log` plugin
/// (an access log and a tracer each reading the two clocks cost a request four clock reads).
#[derive(Clone, Copy, Debug)]
pub struct Ended {
    /// The end (the response body sent, or the exchange abandoned), on the monotonic clock.
    pub at: Instant,
    /// When the request arrived, on the wall clock: now less the time the exchange took.
    pub arrived: SystemTime,
}

impl Ended {
    /// The clocks read now, for a request that arrived at `started`.
    pub fn now(started: Instant) -> Ended {
        let at = Instant::now();
        Ended { at, arrived: SystemTime::now() - at.saturating_duration_since(started) }
    }
}

/// A request body limit for this request, smaller than the global `limits.max_body_bytes`.
/// A plugin that cannot see the body (it runs before the body is read) puts it in
/// [`RequestCtx::vars`] in `on_request`; the proxy then enforces it while the body streams
/// (413 `body_too_large`). A limit above the global one changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyLimit(pub u64);

/// Per-request state shared by the proxy and the plugins.
pub struct RequestCtx {
    /// The client's request head. Plugins may change it in `on_request`. When the request is
    /// forwarded its headers move to the upstream request (see `before_upstream`), so in later
    /// phases `request.headers` is empty; method and URI stay.
    pub request: http::request::Parts,
    /// The client's address (the TCP peer).
    pub client_addr: SocketAddr,
    /// Whether the client connection is TLS.
    pub tls: bool,
    /// The matched route; `None` for requests that matched no route (global plugins still run).
    pub route: Option<RouteInfo>,
    /// The client's certificate, on TLS listeners that ask for one and got one.
    pub client_cert: Option<Arc<ClientCert>>,
    /// Who the caller is, once authentication has said so.
    pub auth: Option<Authenticated>,
    /// How long the answering upstream took to send its response head (the last attempt).
    pub upstream_time: Option<std::time::Duration>,
    /// Set before the log phase.
    pub response: Option<ResponseInfo>,
    /// When the exchange ended: set by the proxy just before the log phase (read it through
    /// [`RequestCtx::ended`]).
    pub ended: Option<Ended>,
    /// When the gateway received the request head.
    pub started: Instant,
    /// The request's trace, when the tracing plugin runs on it (sampled or not).
    pub trace: Option<TraceIds>,
    /// The upstream attempts made so far, each added just before its `before_upstream` phase.
    pub attempts: Attempts,
    /// Per-request values plugins hand from one phase to the next, keyed by type.
    pub vars: http::Extensions,
    /// Headers set on the response, whoever answers (the upstream, a plugin, the gateway), just
    /// before the `on_response` phase (whose plugins see them): a plugin that knows them early
    /// (`RateLimit-*`) needs no `on_response` phase and no hand-off through `vars`.
    pub response_headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl RequestCtx {
    /// The target of the latest upstream attempt, from `before_upstream` on.
    pub fn upstream(&self) -> Option<&Arc<str>> {
        self.attempts.last().map(|a| &a.target)
    }

    /// When the exchange ended, for the log phase: as the proxy read it, or now when nobody did
    /// (a plugin's `on_log` called directly, as in tests).
    pub fn ended(&self) -> Ended {
        self.ended.unwrap_or_else(|| Ended::now(self.started))
    }

    /// A context for a request that just arrived.
    pub fn new(request: http::request::Parts, client_addr: SocketAddr, tls: bool) -> Self {
        RequestCtx {
            request,
            client_addr,
            tls,
            route: None,
            client_cert: None,
            auth: None,
            upstream_time: None,
            response: None,
            ended: None,
            started: Instant::now(),
            trace: None,
            attempts: Attempts::default(),
            vars: http::Extensions::new(),
            response_headers: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumers::Consumer;
    use std::cell::Cell;

    #[test]
    fn the_log_phase_reads_the_clocks_once() {
        let parts = http::Request::new(()).into_parts().0;
        let mut cx = RequestCtx::new(parts, "127.0.0.1:1".parse().unwrap(), false);
        // Unset (a plugin called outside the proxy): now, after the request started.
        let now = cx.ended();
        assert!(now.at >= cx.started);
        assert!(now.arrived <= SystemTime::now());
        // Set by the proxy: every log plugin reads that one, however late it runs.
        let ended = Ended::now(cx.started);
        cx.ended = Some(ended);
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_eq!(cx.ended().at, ended.at);
        assert_eq!(cx.ended().arrived, ended.arrived);
    }

    #[test]
    fn span_tags_only_on_sampled_traces() {
        let parts = http::Request::new(()).into_parts().0;
        let mut cx = RequestCtx::new(parts, "127.0.0.1:1".parse().unwrap(), false);
        SpanTags::add(&mut cx, "a", "untraced");
        assert!(cx.vars.get::<SpanTags>().is_none());
        let ids = TraceIds {
            trace_id: TraceId { value: 1, short: false },
            span_id: 1,
            parent_id: None,
            sampled: false,
            debug: false,
            forms: 0,
        };
        cx.trace = Some(ids);
        SpanTags::add(&mut cx, "a", "unsampled");
        assert!(cx.vars.get::<SpanTags>().is_none());
        cx.trace = Some(TraceIds { sampled: true, ..ids });
        SpanTags::add(&mut cx, "a", "1");
        SpanTags::add(&mut cx, "b", String::from("2"));
        let tags = &cx.vars.get::<SpanTags>().unwrap().0;
        assert_eq!(tags.iter().map(|(k, v)| (*k, v.as_ref())).collect::<Vec<_>>(), [("a", "1"), ("b", "2")]);
    }

    #[test]
    fn trace_ids_in_hex() {
        let id = TraceId { value: 0x4bf92f3577b34da6a3ce929d0e0e4736, short: false };
        assert_eq!(id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(TraceId { value: 0xa3ce929d0e0e4736, short: true }.to_string(), "a3ce929d0e0e4736");
        assert_eq!(TraceId { value: 1, short: false }.hex(), format!("{:032x}", 1));
    }

    #[test]
    fn verdicts_are_computed_once_per_checker() {
        let cert = ClientCert::new(Vec::new(), false);
        let runs = Cell::new(0);
        let alice = Arc::new(Consumer::new("alice", None, vec![]));
        let check = |_: &ClientCert| {
            runs.set(runs.get() + 1);
            Ok(Authenticated { consumer: alice.clone(), credential: None, anonymous: false })
        };
        for _ in 0..3 {
            assert_eq!(&*cert.verdict(1, check).unwrap().consumer.username, "alice");
        }
        assert_eq!(runs.get(), 1);
        assert_eq!(cert.verdict(2, |_| Err("expired")).unwrap_err(), "expired");
        assert_eq!(cert.verdict(2, |_| unreachable!()).unwrap_err(), "expired");
        // Past the bound, verdicts are computed every time rather than kept.
        for id in 3..20 {
            cert.verdict(id, check).unwrap();
        }
        cert.verdict(19, check).unwrap();
        assert_eq!(runs.get(), 1 + 17 + 1);
    }
}
