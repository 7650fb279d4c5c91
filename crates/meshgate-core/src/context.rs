//! What a plugin sees of a request as it moves through the phases.

use crate::auth::Authenticated;
use http::StatusCode;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// The route a request matched, as plugins need to know it (for keys, logs, metrics).
#[derive(Clone, Debug)]
pub struct RouteInfo {
    /// The route's name from the config.
    pub name: Arc<str>,
    /// The name of the service it forwards to.
    pub service: Arc<str>,
}

/// The client's TLS certificate chain, leaf first.
#[derive(Debug)]
pub struct ClientCert {
    /// DER certificates as the client sent them.
    pub chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// Whether the listener verified the chain against its CA bundle during the handshake.
    pub verified: bool,
}

/// The response as sent to the client, known in the log phase.
#[derive(Clone, Debug)]
pub struct ResponseInfo {
    /// The status sent to the client.
    pub status: StatusCode,
    /// Response body bytes sent to the client.
    pub body_bytes: u64,
    /// The upstream target that answered, if one did.
    pub upstream: Option<Arc<str>>,
}

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
    /// The upstream target chosen for this attempt, from `before_upstream` on.
    pub upstream: Option<Arc<str>>,
    /// Set before the log phase.
    pub response: Option<ResponseInfo>,
    /// When the gateway received the request head.
    pub started: Instant,
    /// Per-request values plugins hand from one phase to the next, keyed by type.
    pub vars: http::Extensions,
}

impl RequestCtx {
    /// A context for a request that just arrived.
    pub fn new(request: http::request::Parts, client_addr: SocketAddr, tls: bool) -> Self {
        RequestCtx {
            request,
            client_addr,
            tls,
            route: None,
            client_cert: None,
            auth: None,
            upstream: None,
            response: None,
            started: Instant::now(),
            vars: http::Extensions::new(),
        }
    }
}
