//! The config file's data model, as users write it. Defaults live here so that the file can stay
//! short: only what differs from the default needs saying.

pub use crate::aggregate::{Aggregate, Backend};
pub use crate::flow::{Retry, RetryBudget, RetryFailure, RetryOn, RouteTimeouts};
use crate::units::{ByteSize, Duration};
pub use crate::upstream::{ActiveHealth, Algorithm, Health, PassiveHealth, Queue, Target, TargetLimit, Upstream};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The whole gateway configuration: one YAML document.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Process-level settings (threads, draining).
    #[serde(default)]
    pub runtime: Runtime,
    /// Where the gateway accepts client connections.
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Protection against oversized or idle clients, applied on every listener.
    #[serde(default)]
    pub limits: Limits,
    /// How request paths are read before routing (normalisation; docs/security.md).
    #[serde(default)]
    pub http: Http,
    /// Named groups of targets with load balancing and health checks.
    #[serde(default)]
    pub upstreams: Vec<Upstream>,
    /// The APIs behind the gateway.
    #[serde(default)]
    pub services: Vec<Service>,
    /// How requests are matched to services.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Plugins applied globally, or to a route/service named by `route:`/`service:`.
    #[serde(default)]
    pub plugins: Vec<PluginRef>,
    /// The callers that authentication plugins recognise.
    #[serde(default)]
    pub consumers: Vec<Consumer>,
    /// The status listener: health endpoints and Prometheus metrics, apart from client traffic.
    #[serde(default)]
    pub status: Option<Status>,
}

/// Where the status endpoints (`/status/live`, `/status/ready`, `/status`, `/metrics`) listen.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    /// `ip:port` to bind; keep it on a private interface.
    pub address: String,
}

/// A caller of the APIs (a user or a calling system), with its groups and credentials.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    /// Unique name, sent upstream as `X-Consumer-Username`.
    pub username: String,
    /// An identifier from another system (sent as `X-Consumer-Custom-ID`); unique like usernames.
    #[serde(default)]
    pub custom_id: Option<String>,
    /// Groups, for the `acl` plugin and `X-Consumer-Groups`.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Credentials by kind, which is the authentication plugin's name (`key-auth`, `basic-auth`):
    /// each plugin documents its entries.
    #[serde(default)]
    pub credentials: BTreeMap<String, Vec<serde_json::Value>>,
}

/// Process-level settings.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    /// Worker threads, each with its own event loop and upstream connection pool.
    /// Unset means one per CPU available to the process.
    pub workers: Option<usize>,
    /// How long requests in flight may take to finish after SIGTERM before the process exits.
    pub drain_timeout: Duration,
    /// Watch the config file and reload it when it changes (SIGHUP always reloads).
    pub watch_config: bool,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime { workers: None, drain_timeout: Duration::from_secs(30), watch_config: true }
    }
}

/// A socket the gateway listens on.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Unique name, used in logs and metrics.
    pub name: String,
    /// `ip:port` to bind.
    pub address: String,
    /// Terminate TLS here; certificates are chosen by the client's SNI.
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// Accept HTTP/2 (h2c with prior knowledge on plain listeners, ALPN `h2` on TLS ones).
    #[serde(default = "yes")]
    pub http2: bool,
}

/// TLS settings of a listener.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// Certificates chosen by SNI; the first is the default for clients that send no SNI or an
    /// unknown name.
    pub certificates: Vec<Certificate>,
    /// Ask clients for a certificate (mutual TLS).
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
}

/// Client certificates on a TLS listener.
///
/// With `ca`, the handshake verifies the client's chain against it. Without, any certificate is
/// taken as presented and left for routes to verify (the `mtls-auth` plugin's own `ca`), so one
/// listener can serve routes that trust different CAs.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAuth {
    /// PEM bundle of the CAs that issue client certificates.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Refuse the handshake without a certificate. When false, clients without one connect and
    /// routes decide.
    #[serde(default = "yes")]
    pub required: bool,
}

/// A certificate chain and its key, and the server names it serves.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// Names served with this certificate: exact (`api.example.com`) or wildcard
    /// (`*.example.com`). Empty means the names in the certificate itself are used.
    #[serde(default)]
    pub sni: Vec<String>,
    /// PEM file with the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Limits that protect the gateway from clients.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Total size of a request's header block; larger gets 431.
    pub max_header_bytes: ByteSize,
    /// Number of request headers; more gets 431.
    pub max_headers: usize,
    /// Request body size; larger gets 413 (checked on Content-Length and while streaming).
    pub max_body_bytes: ByteSize,
    /// A client connection with no request in flight for this long is closed (bytes that come
    /// without a request, pings or a dribble, do not count).
    pub client_idle_timeout: Duration,
    /// Time a client has to send a complete request header block, from its first byte (and a
    /// new connection its first request head).
    pub client_header_timeout: Duration,
    /// The longest a request body may pause between two reads; then 408 (nginx's
    /// `client_body_timeout`).
    pub client_body_timeout: Duration,
    /// The longest a client may take none of a response that is ready for it (a full socket, an
    /// HTTP/2 flow-control window kept shut); then the connection is closed (nginx's
    /// `send_timeout`).
    pub client_send_timeout: Duration,
    /// Open client connections per listener; connections past this are closed on accept.
    pub max_connections: usize,
    /// Concurrent streams a client may open on one HTTP/2 connection.
    pub max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: ByteSize::kib(32),
            max_headers: 100,
            max_body_bytes: ByteSize::mib(10),
            client_idle_timeout: Duration::from_secs(60),
            client_header_timeout: Duration::from_secs(10),
            client_body_timeout: Duration::from_secs(60),
            client_send_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_concurrent_streams: 256,
        }
    }
}

/// How the gateway reads requests. Every path is rewritten into one normal form before routing,
/// and that form is what plugins and the upstream see: see docs/security.md.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// `//` in a path counts as `/` (nginx's `merge_slashes`).
    pub merge_slashes: bool,
    /// What `%2F` and `%5C` (encoded slashes) and a raw `\` in a path become.
    pub escaped_slashes: EscapedSlashes,
}

impl Default for Http {
    fn default() -> Self {
        Http { merge_slashes: true, escaped_slashes: EscapedSlashes::Reject }
    }
}

/// What an encoded slash or backslash in a path becomes (Envoy's
/// `path_with_escaped_slashes_action`). Upstreams differ in whether they decode `%2F` before
/// resolving `..`; the gateway cannot know, so by default it refuses such paths.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EscapedSlashes {
    /// 400: the safe choice when upstreams may decode them.
    #[default]
    Reject,
    /// Kept encoded (`%2F`, `%5C`), not a separator for routing: for APIs that carry slashes
    /// inside a segment, behind upstreams that do not decode them before resolving paths.
    Keep,
    /// Decoded into `/` before dot-segments are resolved, and forwarded decoded.
    Decode,
}

/// An API behind the gateway.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Unique name, referenced by routes.
    pub name: String,
    /// A single server: `http://host:port/base/path` or `https://...`.
    #[serde(default)]
    pub url: Option<String>,
    /// A named upstream, instead of `url`.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Protocol towards an `upstream`: `http`, `h2c` or `https` (ALPN picks h2 or http/1.1).
    /// With `url`, the scheme decides; `h2c` forces HTTP/2 over plain TCP.
    #[serde(default)]
    pub protocol: Option<Protocol>,
    /// Base path prepended to the forwarded path when `upstream` is used.
    #[serde(default)]
    pub path: Option<String>,
    /// Timeouts towards the upstream.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Extra attempts, each on another target when one exists, after a failure that provably
    /// sent nothing (connect refused or timed out, TLS handshake failed); 1 when neither this
    /// nor `retry` is set. Shorthand for `retry: {attempts: N, on: [connect-failure]}`.
    #[serde(default)]
    pub retries: Option<u32>,
    /// The full retry policy (instead of `retries`); routes may override it.
    #[serde(default)]
    pub retry: Option<Retry>,
    /// Health checks of the single server of a `url` service (its implicit upstream); services
    /// with `upstream` take health from the upstream.
    #[serde(default)]
    pub health: Option<Health>,
    /// Per-target concurrency limit of a `url` service's server (with `upstream`, the upstream's).
    #[serde(default)]
    pub target_limit: Option<TargetLimit>,
    /// Reuse of idle connections to this service's servers.
    #[serde(default)]
    pub keepalive: Keepalive,
    /// TLS settings towards `https` upstreams.
    #[serde(default)]
    pub tls: UpstreamTls,
    /// Plugins applied to every route of this service.
    #[serde(default)]
    pub plugins: Vec<PluginRef>,
}

impl Service {
    /// The retry policy in force: `retry`, else the `retries` shorthand (1 by default).
    pub fn retry_policy(&self) -> Retry {
        self.retry.clone().unwrap_or_else(|| Retry::shorthand(self.retries.unwrap_or(1)))
    }
}

/// Idle upstream connections kept for reuse, per server and worker thread.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Keepalive {
    /// Idle HTTP/1.1 connections kept per server and worker; 0 turns reuse off. Set it near the
    /// number of requests in flight to one server at peak, or connections churn.
    pub max_idle: usize,
    /// An idle connection older than this is closed instead of reused (set it below the
    /// upstream's own keep-alive timeout).
    pub idle_timeout: Duration,
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive { max_idle: 512, idle_timeout: Duration::from_secs(60) }
    }
}

/// Wire protocol towards a service.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 over TCP.
    Http,
    /// HTTP/2 over TCP with prior knowledge (gRPC without TLS).
    H2c,
    /// TLS; ALPN chooses HTTP/2 or HTTP/1.1.
    Https,
}

/// Timeouts towards an upstream.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// TCP connect plus TLS handshake.
    pub connect: Duration,
    /// Waiting for the response head, and between two reads of the response body.
    pub read: Duration,
    /// Between two successful writes of the request to the upstream.
    pub write: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { connect: Duration::from_secs(5), read: Duration::from_secs(60), write: Duration::from_secs(60) }
    }
}

/// TLS towards upstreams.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTls {
    /// Verify the upstream's certificate (turn off only for tests).
    pub verify: bool,
    /// PEM bundle of CAs to trust instead of the built-in web roots.
    pub ca: Option<PathBuf>,
    /// Server name sent in SNI and verified; defaults to the URL's host.
    pub server_name: Option<String>,
}

impl Default for UpstreamTls {
    fn default() -> Self {
        UpstreamTls { verify: true, ca: None, server_name: None }
    }
}

/// How requests are matched to a service.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Unique name, used in logs, metrics and plugin attachment.
    pub name: String,
    /// The service requests go to. Set this, `services` or `backends`.
    #[serde(default)]
    pub service: Option<String>,
    /// Weighted shares of the route's requests to several services (canary releases); instead
    /// of `service`.
    #[serde(default)]
    pub services: Vec<WeightedService>,
    /// Calls to several services made at once, their JSON answers merged (aggregation); instead
    /// of `service`. See `docs/aggregation.md`.
    #[serde(default)]
    pub backends: Vec<Backend>,
    /// With `backends`: the whole route's timeout and the backend answer size limit.
    #[serde(default)]
    pub aggregate: Option<Aggregate>,
    /// With `services`: keep each caller on one service, chosen by a hash of a header or cookie.
    #[serde(default)]
    pub sticky: Option<Sticky>,
    /// Send a copy of (a share of) the requests to another service, answers discarded.
    #[serde(default)]
    pub mirror: Option<Mirror>,
    /// `api.example.com` or `*.example.com`; empty matches any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// `/prefix`, `=/exact/path`, or `~regex` (anchored at the start of the path).
    #[serde(default)]
    pub paths: Vec<String>,
    /// HTTP methods; empty matches any.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Header name → accepted values (any of); a value starting with `~` is a regex.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderValues>,
    /// Remove the matched path part before forwarding.
    #[serde(default)]
    pub strip_path: bool,
    /// Forward the client's Host header instead of the upstream's.
    #[serde(default)]
    pub preserve_host: bool,
    /// Protocols a client may switch to (`Upgrade`) on this route, tunnelled once the upstream
    /// answers 101: WebSocket by default; `[]` for none. Any other upgrade is removed from the
    /// request; `h2c` is never allowed (a tunnel past the route's plugins).
    #[serde(default = "websocket")]
    pub upgrades: Vec<String>,
    /// Higher wins when several routes match (before any other precedence rule).
    #[serde(default)]
    pub priority: i32,
    /// This route's retry policy, replacing the service's.
    #[serde(default)]
    pub retry: Option<Retry>,
    /// This route's timeouts; unset fields keep the service's.
    #[serde(default)]
    pub timeouts: Option<RouteTimeouts>,
    /// Plugins applied to this route only.
    #[serde(default)]
    pub plugins: Vec<PluginRef>,
}

/// One service of a split route and its share.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedService {
    /// The service's name.
    pub name: String,
    /// Its share, relative to the other services of the route (90 and 10: 90 %).
    pub weight: u32,
}

/// What keeps a caller on one service of a split route: a header or a cookie value (one of them).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Sticky {
    /// Request header whose value picks the service (e.g. `X-User`).
    #[serde(default)]
    pub header: Option<String>,
    /// Cookie whose value picks the service (e.g. `session`).
    #[serde(default)]
    pub cookie: Option<String>,
}

/// Where mirrored copies of a route's requests go.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// The shadow service.
    pub service: String,
    /// Share of requests copied, 0 to 100 (fractions allowed).
    #[serde(default = "hundred")]
    pub percentage: f64,
}

/// One value or a list of values accepted for a header.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum HeaderValues {
    /// A single accepted value.
    One(String),
    /// Any of these values.
    Many(Vec<String>),
}

impl HeaderValues {
    /// The accepted values as a slice, whatever form was written.
    pub fn as_slice(&self) -> &[String] {
        match self {
            HeaderValues::One(v) => std::slice::from_ref(v),
            HeaderValues::Many(v) => v,
        }
    }
}

/// A plugin instance with its configuration.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PluginRef {
    /// Registered plugin name, e.g. `request-id`.
    pub name: String,
    /// Set to false to keep a plugin in the file without running it.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// In the top-level list only: apply to this route.
    #[serde(default)]
    pub route: Option<String>,
    /// In the top-level list only: apply to this service's routes.
    #[serde(default)]
    pub service: Option<String>,
    /// Plugin-specific settings.
    #[serde(default)]
    pub config: serde_json::Value,
}

/// Serde default `true`, shared with the upstream model.
pub(crate) fn yes() -> bool {
    true
}
fn websocket() -> Vec<String> {
    vec!["websocket".into()]
}
fn hundred() -> f64 {
    100.0
}
