//! One request through the gateway: limits, routing, the plugin phases, target choice with
//! retries, the upstream exchange, and the response on its way back.

use crate::buffer;
use crate::chain::Chain;
use crate::client::{self, Failure, UpstreamBody};
use crate::conn::BusyGuard;
use crate::forward::{self, ConnInfo};
use crate::limits::{self, ClientBody, ClientFault, RequestBody};
use crate::metrics::{BodyAccount, RequestBytes};
use crate::mirror;
use crate::server::ConnSlot;
use crate::snapshot::{RouteRt, Snapshot};
use crate::tunnel;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use meshgate_balance::NoTarget;
use meshgate_core::{
    Attempt, AttemptFailure, BodyLimit, ClientCert, ErrorKind, Flow, ProxyBody, RequestCtx, ResponseInfo,
};
use meshgate_router::RequestView;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What a connection knows about itself, shared by its requests.
pub struct ConnCtx {
    /// Values forwarded on every request.
    pub info: ConnInfo,
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether the client connection is TLS.
    pub tls: bool,
    /// The certificate the client presented in the TLS handshake, for every request.
    pub client_cert: Option<Arc<ClientCert>>,
    /// The connection's place in the limits; upgraded tunnels keep it.
    pub slot: Rc<ConnSlot>,
}

/// Handles one request to completion of its response head. Never fails: every problem becomes
/// a JSON error response. `busy` is held by a streamed response body until it ends.
pub async fn handle(
    snap: Arc<Snapshot>,
    conn: &ConnCtx,
    mut req: Request<Incoming>,
    busy: BusyGuard,
    abandoned: Option<Arc<AtomicBool>>,
) -> Response<ProxyBody> {
    let wants_upgrade = forward::is_upgrade(req.version(), req.headers());
    let client_upgrade = wants_upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let mut cx = RequestCtx::new(parts, conn.peer, conn.tls);
    cx.client_cert = conn.client_cert.clone();

    if let Some(resp) = limits::check_headers(&cx.request.headers, &snap.limits) {
        return finish(&snap, None, cx, resp, &NO_BODY, false).await;
    }
    let declared = content_length(&cx.request.headers);
    if declared.is_some_and(|n| n > snap.limits.max_body_bytes) {
        let msg = format!("request body is larger than {} bytes", snap.limits.max_body_bytes);
        return finish(&snap, None, cx, ErrorKind::BodyTooLarge.response(&msg), &NO_BODY, false).await;
    }

    let client_host = match crate::head::check(&mut cx.request, snap.path_rules) {
        Ok(host) => host,
        Err(e) => return finish(&snap, None, cx, e.response(), &NO_BODY, false).await,
    };
    let found = {
        let view = RequestView {
            host: client_host.as_ref().and_then(|h| h.to_str().ok()),
            path: cx.request.uri.path(),
            method: &cx.request.method,
            headers: &cx.request.headers,
        };
        snap.router.find(&view).map(|m| (m.value, m.route_index, m.matched_path_len))
    };
    let Some((matched, route_index, matched_len)) = found else {
        // Global plugins still see unmatched requests (request ids, logs, and later auth).
        for p in snap.unmatched.on_request.iter() {
            if let Flow::Respond(resp) = p.on_request(&mut cx).await {
                return finish(&snap, None, cx, resp, &NO_BODY, false).await;
            }
        }
        let resp = ErrorKind::NoRoute.response("no route matches the request");
        return finish(&snap, None, cx, resp, &NO_BODY, false).await;
    };
    // A split route's service is chosen first, so that its plugins run and logs name it.
    let (branch, route) = matched.choose(&cx.request.headers);
    let at = Some((route_index, branch, route));
    // Only upgrades the route allows are forwarded (and tunnelled); any other is removed with
    // the hop-by-hop headers and the request goes on as a plain one.
    let upgrade = wants_upgrade && route.allows_upgrade(&cx.request.headers);
    let client_upgrade = client_upgrade.filter(|_| upgrade);
    cx.route = Some(route.info.clone());
    if let Some(params) = route.params.as_ref().and_then(|p| p.capture(cx.request.uri.path())) {
        cx.vars.insert(params);
    }

    for p in route.chain.on_request.iter() {
        if let Flow::Respond(resp) = p.on_request(&mut cx).await {
            return finish(&snap, at, cx, resp, &NO_BODY, false).await;
        }
    }
    if let Some(agg) = &route.aggregate {
        let resp = crate::aggregate::run(agg, &mut cx, conn, client_host).await;
        return finish(&snap, at, cx, resp, &NO_BODY, false).await;
    }

    let mut body = ProxyBody::from(body);
    let mut declared = declared;
    if !route.chain.request_body.is_empty() {
        match buffer::request(&mut cx, &route.chain.request_body, body, &snap.limits).await {
            // A body held whole goes on with its length declared.
            Ok(b) => (body, declared) = (b, content_length(&cx.request.headers)),
            Err(resp) => return finish(&snap, at, cx, resp, &NO_BODY, false).await,
        }
    }
    let mut received = RequestBytes::Known(declared.unwrap_or(0));
    let mut watch = None;
    if !http_body::Body::is_end_stream(&body) && body.whole().is_none() {
        let (mut client_body, w) = ClientBody::new(body, snap.limits.client_body_timeout);
        if declared.is_none() {
            // A route's plugin (request-size-limiting) may ask for less than the global limit.
            let limit = cx.vars.get::<BodyLimit>().map_or(u64::MAX, |l| l.0).min(snap.limits.max_body_bytes);
            let count = Arc::new(AtomicU64::new(0));
            client_body = client_body.limit(limit, count.clone());
            received = RequestBytes::Counted(count);
        }
        body = ProxyBody::boxed(client_body);
        watch = Some(w);
    }
    if let Some(m) = &route.mirror {
        let f =
            mirror::Forwarding { conn: &conn.info, client_host: client_host.as_ref(), matched_len, declared, upgrade };
        body = mirror::start(m, &cx, &f, body);
    }
    let body = RequestBody { body, watch, abandoned };
    let resp = match forward_upstream(&mut cx, conn, route, client_host, matched_len, body, upgrade).await {
        Ok(mut resp) => {
            resp.body_mut().account(BodyAccount::new(route.stats().clone(), received.clone()));
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                let Some(client_upgrade) = client_upgrade else {
                    // Switching protocols without being asked would leave a tunnel nobody checks.
                    tracing::warn!(target = ?cx.upstream(), "upstream switched protocols without an upgrade asked for");
                    let resp = gateway_error(ErrorKind::UpstreamUnavailable, &cx);
                    return finish(&snap, at, cx, resp, &received, false).await;
                };
                tunnel::spawn(client_upgrade, hyper::upgrade::on(&mut resp), conn.slot.clone());
            }
            let (mut parts, mut body) = resp.into_parts();
            body.hold(busy);
            // The version is the client connection's, not the upstream's: an HTTP/1.0 answer
            // passed on as such would make hyper end a keep-alive HTTP/1.1 client connection to
            // frame it (hyper answers HTTP/1.0 clients in 1.0 by itself; HTTP/2 ignores it).
            parts.version = Version::HTTP_11;
            if parts.status != StatusCode::SWITCHING_PROTOCOLS {
                let found = forward::Found::scan(&parts.headers);
                if let Some(fault) = forward::unforwardable(&parts, found) {
                    tracing::warn!(target = ?cx.upstream(), %fault, "upstream answer cannot be passed on");
                    let resp = gateway_error(ErrorKind::UpstreamUnavailable, &cx);
                    return finish(&snap, at, cx, resp, &received, false).await;
                }
                forward::strip_hop_by_hop(&mut parts.headers, false, found);
            }
            let resp = Response::from_parts(parts, ProxyBody::boxed(body));
            // A transformed body was read through the upstream's, which counted its bytes.
            let resp = if route.chain.response_body.is_empty() {
                resp
            } else {
                buffer::response(&mut cx, &route.chain.response_body, resp, snap.limits.max_body_bytes).await
            };
            return finish(&snap, at, cx, resp, &received, true).await;
        }
        Err(resp) => resp,
    };
    finish(&snap, at, cx, resp, &received, false).await
}

/// For a request without a body, or answered before its body was forwarded.
static NO_BODY: RequestBytes = RequestBytes::Known(0);

/// Picks a target, sends, and retries on another target as the route's retry policy and budget
/// allow: after a failure that sent nothing (any method), or, for a request without a body whose
/// method may be replayed, after a reset, a timeout or a listed status. The last attempt's outcome
/// is what the client gets.
pub(crate) async fn forward_upstream(
    cx: &mut RequestCtx,
    conn: &ConnCtx,
    route: &RouteRt,
    client_host: Option<HeaderValue>,
    matched_len: usize,
    body: RequestBody,
    upgrade: bool,
) -> Result<Response<UpstreamBody>, Response<ProxyBody>> {
    let RequestBody { body, watch, abandoned } = body;
    let svc = &route.service;
    let policy = &route.retry;
    let mut headers = std::mem::take(&mut cx.request.headers);
    let key = svc.balancer.hash_on().and_then(|h| meshgate_balance::hash_key(h, &headers, cx.client_addr.ip()));
    let found = forward::Found::scan(&headers);
    forward::strip_hop_by_hop(&mut headers, upgrade, found);
    forward::set_forwarded(&mut headers, &conn.info, client_host.as_ref(), found);
    meshgate_core::auth::set_identity_headers(&mut headers, cx.auth.as_ref());

    // Only a request without a body, or with one read whole for the body phases, can be sent
    // again once it left: a streamed body is gone (see docs/traffic.md). Its head is copied up
    // front, and only when the policy could use it.
    let replayable = !upgrade
        && policy.retries_after_send()
        && (http_body::Body::is_end_stream(&body) || body.whole().is_some())
        && policy.may_replay(&cx.request.method);
    let held = if replayable { body.whole().cloned() } else { None };
    let mut req = Request::new(body);
    *req.method_mut() = cx.request.method.clone();
    *req.uri_mut() = forward::upstream_path(&cx.request.uri, route, matched_len).into();
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    let template = replayable.then(|| (req.method().clone(), req.uri().clone(), req.headers().clone(), held));
    // Attempts name the upstream URI only when it is not the request's (logs and spans need it).
    let rewritten = (req.uri().path() != cx.request.uri.path()).then(|| Box::new(req.uri().clone()));
    let preserve = if route.preserve_host { client_host.as_ref() } else { None };
    if policy.attempts > 0 {
        policy.budget.record_request();
    }

    let mut tried = Vec::new();
    let mut retries = 0;
    let mut last_failure: Option<Failure> = None;
    // A retried upstream answer, returned as it is should no target be left for the retry.
    let mut last_response: Option<Response<UpstreamBody>> = None;
    loop {
        if abandoned.as_ref().is_some_and(|a| a.load(Ordering::Relaxed)) {
            // The client reset its stream: no (further) attempt for nobody.
            return Err(ClientFault::Aborted.response());
        }
        let pick = match svc.balancer.pick_or_wait(key, &tried).await {
            Ok(pick) => pick,
            Err(NoTarget::Busy) => {
                tracing::debug!(service = %svc.name, "every target is at its limit");
                let mut resp = gateway_error(ErrorKind::Unavailable, cx);
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return Err(resp);
            }
            Err(NoTarget::Unavailable) => {
                // A retry that finds no other target answers with what actually went wrong.
                if let Some(resp) = last_response {
                    return Ok(resp);
                }
                if let Some(failure) = last_failure {
                    return Err(failure_response(&failure, cx));
                }
                tracing::warn!(service = %svc.name, "no healthy target");
                return Err(gateway_error(ErrorKind::NoHealthyTarget, cx));
            }
        };
        last_response = None;
        let index = pick.index();
        let target = &svc.targets[index];
        forward::aim(req.headers_mut(), target, preserve);
        let mut sent = std::time::Instant::now();
        cx.attempts.push(Attempt {
            target: target.address.clone(),
            start: sent,
            end: None,
            status: None,
            retried: false,
            uri: rewritten.clone(),
            span_id: 0,
            failure: None,
            tls: svc.tls.is_some(),
        });
        if !route.chain.before_upstream.is_empty() {
            let (mut parts, body) = req.into_parts();
            for p in route.chain.before_upstream.iter() {
                if let Flow::Respond(resp) = p.before_upstream(cx, &mut parts).await {
                    return Err(resp);
                }
            }
            req = Request::from_parts(parts, body);
            sent = std::time::Instant::now();
        }
        let retry_left = retries < policy.attempts;
        let result = client::send(svc, &route.timeouts, target, req, upgrade, watch.as_deref()).await;
        let ended = std::time::Instant::now();
        let attempt = cx.attempts.last_mut().expect("pushed above");
        attempt.end = Some(ended);
        match result {
            Ok(resp) => {
                cx.upstream_time = Some(ended - sent);
                let status = resp.status().as_u16();
                attempt.status = Some(status);
                pick.status(status);
                if retry_left
                    && policy.on_status(status)
                    && let Some(next) = replay(template.as_ref())
                    && policy.budget.try_retry()
                {
                    tracing::debug!(target = %target.address, status, "retrying upstream answer");
                    attempt.retried = true;
                    retries += 1;
                    tried.push(index);
                    req = next;
                    last_response = Some(resp);
                    last_failure = None;
                    continue;
                }
                return Ok(resp);
            }
            Err(e) => {
                attempt.failure =
                    Some(AttemptFailure { class: e.failure.class(), cause: e.failure.to_string().into() });
                if let Failure::Client(fault) = e.failure {
                    // The client's fault, not the target's: not counted, not retried.
                    drop(pick);
                    tracing::debug!(target = %target.address, %fault, "request body failed on the client's side");
                    return Err(fault.response());
                }
                pick.failure();
                // Sent nothing: the request came back and any method may go again.
                let next = match e.request {
                    Some(r) if e.failure.nothing_sent() || matches!(e.failure, Failure::Broken(_)) => Some(r),
                    _ => replay(template.as_ref()),
                };
                if retry_left
                    && policy.on_failure(&e.failure)
                    && let Some(next) = next
                    && policy.budget.try_retry()
                {
                    tracing::debug!(target = %target.address, failure = %e.failure, "upstream attempt failed; retrying");
                    attempt.retried = true;
                    retries += 1;
                    tried.push(index);
                    req = next;
                    last_failure = Some(e.failure);
                    continue;
                }
                tracing::warn!(service = %svc.name, target = %target.address, failure = %e.failure, "upstream attempt failed");
                return Err(failure_response(&e.failure, cx));
            }
        }
    }
}

/// A request's head and whole body (if any), kept for replays.
type Template = (http::Method, http::Uri, http::HeaderMap, Option<bytes::Bytes>);

/// A fresh copy of a request, from what was kept for replays.
fn replay(template: Option<&Template>) -> Option<Request<ProxyBody>> {
    let (method, uri, headers, body) = template?;
    let mut req = Request::new(body.clone().map_or(ProxyBody::Empty, ProxyBody::full));
    *req.method_mut() = method.clone();
    *req.uri_mut() = uri.clone();
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers.clone();
    Some(req)
}

/// The client's answer to a failed exchange: a fixed message per error code. The cause, which
/// may name internal addresses and OS errors, goes to the log and the trace only.
fn failure_response(failure: &Failure, cx: &RequestCtx) -> Response<ProxyBody> {
    match failure {
        Failure::Connect(_) | Failure::Broken(_) => gateway_error(ErrorKind::UpstreamUnavailable, cx),
        Failure::ConnectTimeout | Failure::ReadTimeout => gateway_error(ErrorKind::UpstreamTimeout, cx),
        Failure::Client(fault) => fault.response(),
    }
}

/// An error the gateway answers for the upstream's side, with the request id when there is one
/// so that a client's report can be found in the logs.
pub(crate) fn gateway_error(kind: ErrorKind, cx: &RequestCtx) -> Response<ProxyBody> {
    kind.response_with_id(cx.vars.get::<meshgate_core::RequestId>().map(|id| &id.0))
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Sets the headers plugins asked for, runs `on_response` and arranges `on_log`, for upstream
/// answers and the gateway's own alike; counts the request. `streamed` says the body is an
/// upstream's that counts its own bytes.
/// `route` is the matched route's index, branch (for split routes) and the branch itself, `None`
/// for requests answered before routing.
async fn finish(
    snap: &Arc<Snapshot>,
    route: Option<(usize, usize, &RouteRt)>,
    mut cx: RequestCtx,
    resp: Response<ProxyBody>,
    received: &RequestBytes,
    streamed: bool,
) -> Response<ProxyBody> {
    let stats = route.map_or(&snap.unmatched_stats, |(_, _, r)| r.stats());
    stats.record(&cx.request.method, resp.status(), cx.started.elapsed(), cx.upstream_time);
    if !streamed {
        // The gateway's own answer, complete: counted now. The request's body counts only if
        // it was being forwarded.
        let sent = http_body::Body::size_hint(resp.body()).exact().unwrap_or(0);
        stats.add_bytes(if cx.attempts.is_empty() { 0 } else { received.get() }, sent);
    }
    let chain: &Chain = route.map_or(&snap.unmatched, |(_, _, r)| &r.chain);
    if chain.on_response.is_empty() && chain.on_log.is_empty() && cx.response_headers.is_empty() {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    for (name, value) in cx.response_headers.drain(..) {
        parts.headers.insert(name, value);
    }
    for p in chain.on_response.iter() {
        p.on_response(&mut cx, &mut parts).await;
    }
    let body = if chain.on_log.is_empty() {
        body
    } else {
        cx.response = Some(ResponseInfo { status: parts.status, body_bytes: 0, request_bytes: 0 });
        let at = route.map(|(i, b, _)| (i, b));
        crate::log::LogBody::boxed(body, cx, snap.clone(), at, received.clone())
    };
    Response::from_parts(parts, body)
}
