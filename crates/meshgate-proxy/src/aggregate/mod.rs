//! Aggregation routes: one client request fans out to several backend calls made at the same
//! time, and their JSON answers are shaped and merged into one object.
//!
//! Each backend is compiled as a route of its own to its service (a [`RouteRt`]), so a call goes
//! the way every proxied request goes, through `handler::forward_upstream`: target choice with
//! the balancer (health, outlier detection, target limits), retries and their budget, timeouts,
//! `before_upstream` plugins. What is added here is the fan-out: a context per call, forked from
//! the request's after `on_request` (plugins that record per attempt, such as tracing, then see
//! one call each), the wait for dependencies, the answers read whole within a size limit, and
//! the merge.
//!
//! Failure semantics: a backend fails when it cannot be reached, answers anything but 2xx, sends
//! more than `max_body_bytes`, sends something that is not JSON, or its answer does not fit its
//! shaping; it times out when its own `timeout` or the route's passes first. The client gets the
//! merge of what arrived, with `X-Meshgate-Incomplete` naming the backends that did not; when
//! none arrived, a JSON error: 504 when every backend that was called timed out, else 502.

mod compile;
mod shape;
mod template;

pub(crate) use compile::compile;

use crate::handler::{self, ConnCtx};
use crate::snapshot::RouteRt;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use meshgate_core::{ErrorKind, ProxyBody, RequestCtx, Subcall, Subcalls};
use serde_json::{Map, Value};
use shape::Shape;
use std::cell::{Cell, OnceCell, RefCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use template::PathTemplate;
use tokio::sync::watch;

/// The response header that lists the backends missing from a partial answer.
pub static INCOMPLETE: HeaderName = HeaderName::from_static("x-meshgate-incomplete");

/// An aggregation route's backends and limits, as compiled.
pub(crate) struct AggregateRt {
    pub(crate) backends: Box<[BackendRt]>,
    /// The whole route.
    timeout: Duration,
    /// Largest backend answer read.
    max_body: u64,
}

/// One backend call.
pub(crate) struct BackendRt {
    pub(crate) name: Arc<str>,
    /// The backend's service as this route reaches it (its plugins: `before_upstream` only).
    route: RouteRt,
    method: http::Method,
    path: PathTemplate,
    timeout: Duration,
    /// Backends that must have answered first (indexes).
    deps: Box<[usize]>,
    /// Whether another backend reads this one's answer.
    has_dependents: bool,
    shape: Shape,
    /// Calls by outcome, indexed by [`Outcome::index`], for `/metrics`.
    pub(crate) outcomes: [AtomicU64; 3],
}

/// Outcome labels, in the order of [`BackendRt::outcomes`].
pub(crate) const OUTCOMES: [&str; 3] = ["ok", "failed", "timeout"];

/// How one backend call ended.
enum Outcome {
    /// Its shaped fields.
    Ok(Map<String, Value>),
    /// Called, and failed: why.
    Failed(String),
    /// Not called: a backend it waits for failed, or its path could not be filled.
    Skipped(String),
    /// Its own or the route's timeout passed first.
    Timeout,
}

impl Outcome {
    fn index(&self) -> usize {
        match self {
            Outcome::Ok(_) => 0,
            Outcome::Failed(_) | Outcome::Skipped(_) => 1,
            Outcome::Timeout => 2,
        }
    }
}

/// One backend's state during a request, shared by the calls that wait for it.
#[derive(Default)]
struct Slot {
    outcome: RefCell<Option<Outcome>>,
    /// The answer as it came, kept only for backends whose answer others read.
    answer: OnceCell<Value>,
    status: Cell<Option<u16>>,
    ended: Cell<Option<Instant>>,
    /// Set once the outcome is known, for the backends that wait for this one.
    done: Option<watch::Sender<bool>>,
}

/// Answers the request from the route's backends.
pub(crate) async fn run(
    agg: &AggregateRt,
    cx: &mut RequestCtx,
    conn: &ConnCtx,
    client_host: Option<HeaderValue>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let headers = backend_headers(&cx.request.headers);
    let mut forks: Vec<RequestCtx> = agg.backends.iter().map(|b| fork(cx, b, &headers)).collect();
    let slots: Vec<Slot> = agg
        .backends
        .iter()
        .map(|b| Slot { done: b.has_dependents.then(|| watch::channel(false).0), ..Slot::default() })
        .collect();
    {
        let parent: &RequestCtx = cx;
        let calls = agg.backends.iter().zip(forks.iter_mut()).enumerate().map(|(i, (b, fork))| {
            let call = Call { agg, b, slot: &slots[i], slots: &slots, parent, conn, client_host: client_host.as_ref() };
            call.run(fork)
        });
        // The futures own nothing: on the route's timeout they are dropped and the forks and
        // slots keep what the calls got so far.
        let _ = tokio::time::timeout(agg.timeout, futures_util::future::join_all(calls)).await;
    }
    let now = Instant::now();
    cx.upstream_time = Some(started.elapsed());

    let mut merged = Map::new();
    let (mut failed, mut reasons) = (Vec::new(), Vec::new());
    let (mut any_ok, mut any_failed) = (false, false);
    let mut calls = Vec::with_capacity(forks.len());
    for ((b, slot), fork) in agg.backends.iter().zip(&slots).zip(forks) {
        let outcome = slot.outcome.take().unwrap_or(Outcome::Timeout);
        b.outcomes[outcome.index()].fetch_add(1, Ordering::Relaxed);
        let error = match outcome {
            Outcome::Ok(fields) => {
                any_ok = true;
                shape::merge(&mut merged, fields);
                None
            }
            other => {
                let reason = match other {
                    Outcome::Failed(r) => {
                        any_failed = true;
                        r
                    }
                    Outcome::Skipped(r) => r,
                    _ => "timed out".to_owned(),
                };
                tracing::debug!(backend = %b.name, %reason, "aggregation backend missing from the answer");
                reasons.push(format!("{}: {reason}", b.name));
                failed.push(&*b.name);
                Some(reason)
            }
        };
        calls.push(Subcall {
            name: b.name.clone(),
            service: b.route.service.name.clone(),
            method: b.method.clone(),
            status: slot.status.get(),
            error,
            ended: slot.ended.get().unwrap_or(now),
            attempts: fork.attempts,
            vars: fork.vars,
        });
    }
    cx.vars.insert(Subcalls(calls));

    let mut resp = if any_ok {
        let body = serde_json::to_vec(&Value::Object(merged)).unwrap_or_default();
        let mut resp = Response::new(ProxyBody::full(body));
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp
    } else {
        // Only timeouts among the calls made (skipped ones were not made): the gateway waited.
        let kind = if any_failed { ErrorKind::UpstreamUnavailable } else { ErrorKind::UpstreamTimeout };
        // Which backends failed and why goes to the log (the client has X-Meshgate-Incomplete).
        let route = cx.route.as_ref().map_or("", |r| &*r.name);
        tracing::warn!(route, reasons = %reasons.join("; "), "no backend answered");
        crate::handler::gateway_error(kind, cx)
    };
    if !failed.is_empty()
        && let Ok(v) = HeaderValue::from_str(&failed.join(", "))
    {
        resp.headers_mut().insert(INCOMPLETE.clone(), v);
    }
    resp
}

/// What one backend call needs besides its own context.
struct Call<'a> {
    agg: &'a AggregateRt,
    b: &'a BackendRt,
    slot: &'a Slot,
    slots: &'a [Slot],
    /// The client's request, for the path template.
    parent: &'a RequestCtx,
    conn: &'a ConnCtx,
    client_host: Option<&'a HeaderValue>,
}

impl Call<'_> {
    async fn run(self, fork: &mut RequestCtx) {
        let outcome = self.outcome(fork).await;
        self.slot.ended.set(Some(Instant::now()));
        *self.slot.outcome.borrow_mut() = Some(outcome);
        if let Some(done) = &self.slot.done {
            done.send_replace(true);
        }
    }

    async fn outcome(&self, fork: &mut RequestCtx) -> Outcome {
        for &d in self.b.deps.iter() {
            let dep = &self.slots[d];
            if let Some(done) = &dep.done {
                let _ = done.subscribe().wait_for(|done| *done).await;
            }
            if dep.answer.get().is_none() {
                return Outcome::Skipped(format!("{} did not answer", self.agg.backends[d].name));
            }
        }
        let path = match self.b.path.render(self.parent, |d| self.slots[d].answer.get()) {
            Ok(p) => p,
            Err(e) => return Outcome::Skipped(e),
        };
        match path.parse() {
            Ok(uri) => fork.request.uri = uri,
            Err(_) => return Outcome::Skipped(format!("{path:?} is not a valid path")),
        }
        tokio::time::timeout(self.b.timeout, self.exchange(fork)).await.unwrap_or(Outcome::Timeout)
    }

    /// One call through the common upstream path, its answer read whole and shaped.
    async fn exchange(&self, fork: &mut RequestCtx) -> Outcome {
        let host = self.client_host.cloned();
        let resp =
            match handler::forward_upstream(fork, self.conn, &self.b.route, host, 0, ProxyBody::Empty.into(), false)
                .await
            {
                Ok(resp) => resp,
                // The gateway's own 504 means a connect or read timeout of the service.
                Err(e) if e.status() == StatusCode::GATEWAY_TIMEOUT => return Outcome::Timeout,
                Err(e) => return Outcome::Failed(format!("no answer ({})", e.status().as_u16())),
            };
        let status = resp.status();
        self.slot.status.set(Some(status.as_u16()));
        let (parts, body) = resp.into_parts();
        // Read even an error's body (within the limit), so its connection goes back to the pool.
        let bytes = match read_limited(body, self.agg.max_body).await {
            Ok(b) => b,
            Err(e) => return Outcome::Failed(e),
        };
        if !status.is_success() {
            return Outcome::Failed(format!("answered {}", status.as_u16()));
        }
        if let Some(enc) = parts.headers.get(header::CONTENT_ENCODING)
            && enc.as_bytes() != b"identity"
        {
            return Outcome::Failed(format!("answered with content-encoding {enc:?}"));
        }
        let answer: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(_) => return Outcome::Failed("the answer is not JSON".to_owned()),
        };
        let kept = self.b.has_dependents.then(|| answer.clone());
        match self.b.shape.apply(answer) {
            Ok(fields) => {
                if let Some(a) = kept {
                    let _ = self.slot.answer.set(a);
                }
                Outcome::Ok(fields)
            }
            Err(e) => Outcome::Failed(e),
        }
    }
}

/// The whole body, or why not: larger than `limit` (by `Content-Length` or as read), or broken.
async fn read_limited(mut body: crate::client::UpstreamBody, limit: u64) -> Result<Bytes, String> {
    let too_large = || format!("the answer is larger than {limit} bytes");
    if http_body::Body::size_hint(&body).lower() > limit {
        return Err(too_large());
    }
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("the answer broke off: {e}"))?;
        if let Some(data) = frame.data_ref() {
            if (buf.len() + data.len()) as u64 > limit {
                return Err(too_large());
            }
            buf.extend_from_slice(data);
        }
    }
    Ok(buf.freeze())
}

/// The client's headers as every backend call starts from them. Without a body (calls send
/// none), conditions or ranges (they were about the client's copy of the merged answer), or
/// compression (the gateway reads the answers); asking for JSON.
fn backend_headers(client: &HeaderMap) -> HeaderMap {
    let mut h = client.clone();
    for name in [
        header::CONTENT_LENGTH,
        header::CONTENT_TYPE,
        header::CONTENT_ENCODING,
        header::EXPECT,
        header::ACCEPT_ENCODING,
        header::IF_MATCH,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
        header::RANGE,
    ] {
        h.remove(name);
    }
    h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    h
}

/// A context for one backend call: the request as `on_request` left it, aimed at the backend.
fn fork(cx: &RequestCtx, b: &BackendRt, headers: &HeaderMap) -> RequestCtx {
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = b.method.clone();
    parts.uri = cx.request.uri.clone();
    parts.version = cx.request.version;
    parts.headers = headers.clone();
    let mut fork = RequestCtx::new(parts, cx.client_addr, cx.tls);
    fork.route = Some(b.route.info.clone());
    fork.client_cert = cx.client_cert.clone();
    fork.auth = cx.auth.clone();
    fork.started = cx.started;
    fork.trace = cx.trace;
    fork.vars = cx.vars.clone();
    fork
}

/// `(route, backend, calls by outcome)` of every aggregation backend of `snap`, for `/metrics`.
pub(crate) fn stats(snap: &crate::Snapshot) -> Vec<(Arc<str>, Arc<str>, [u64; 3])> {
    let mut out = Vec::new();
    for i in 0..snap.router.len() {
        let Some(r) = snap.router.get(i) else { continue };
        let Some(agg) = &r.aggregate else { continue };
        for b in agg.backends.iter() {
            let n = b.outcomes.each_ref().map(|n| n.load(Ordering::Relaxed));
            if n.iter().any(|&n| n > 0) {
                out.push((r.info.name.clone(), b.name.clone(), n));
            }
        }
    }
    out
}
