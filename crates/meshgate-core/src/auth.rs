//! Authentication as one step of the request: a route's authentication plugins are tried in
//! turn (any of them may accept the caller), then the anonymous consumer if one is configured,
//! else 401 with every method's challenge.

use crate::body::ProxyBody;
use crate::consumers::Consumer;
use crate::context::RequestCtx;
use crate::error::json_error;
use crate::plugin::{Flow, Phases, Plugin};
use async_trait::async_trait;
use http::header::{HeaderMap, HeaderName, HeaderValue, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Who the caller is and how they proved it.
#[derive(Clone, Debug)]
pub struct Authenticated {
    /// The consumer.
    pub consumer: Arc<Consumer>,
    /// Which credential was used (never the secret itself): sent as `X-Credential-Identifier`.
    pub credential: Option<HeaderValue>,
    /// True for the configured anonymous consumer: nobody proved anything.
    pub anonymous: bool,
}

/// What one authentication method made of a request.
pub enum AuthOutcome {
    /// The request carries a valid credential of this method.
    Accepted(Authenticated),
    /// The request carries no credential of this method.
    Missing,
    /// The request carries a credential of this method, and it is not valid. The reason is for
    /// logs and counters, never for the client: it must not say which part of a secret was wrong.
    Rejected(&'static str),
}

/// One authentication method (key-auth, basic-auth, jwt, mtls-auth). Built like a plugin, but run
/// by the route's [`AuthStage`] so that several methods on one route mean "any of them".
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The method's name, for logs.
    fn name(&self) -> &'static str;
    /// The `WWW-Authenticate` challenge sent when nobody is authenticated (`Key realm="meshgate"`).
    fn challenge(&self) -> &HeaderValue;
    /// The consumer to let in when no method accepts the request, if this method has one.
    fn anonymous(&self) -> Option<&Arc<Consumer>> {
        None
    }
    /// Looks for this method's credential and checks it. On success the method may also remove
    /// the credential from the request (hide it from the upstream) or add headers from it.
    async fn authenticate(&self, cx: &mut RequestCtx) -> AuthOutcome;
}

/// Refusals counted since start, by kind (read by the metrics endpoint).
pub struct AuthFailures {
    /// 401: no credential of any method of the route.
    pub missing: AtomicU64,
    /// 401: a credential was given and was not valid.
    pub invalid: AtomicU64,
    /// 403: the caller is known but not allowed (ACL).
    pub forbidden: AtomicU64,
}

/// Process-wide counters of authentication and authorization refusals.
pub static AUTH_FAILURES: AuthFailures =
    AuthFailures { missing: AtomicU64::new(0), invalid: AtomicU64::new(0), forbidden: AtomicU64::new(0) };

/// Registers `meshgate_auth_failures_total{reason}`.
pub fn register_metrics(registry: &mut crate::metrics::MetricsRegistry) {
    registry.register_collector(crate::metrics::collector(|enc| {
        let f = &AUTH_FAILURES;
        let samples = [("missing", &f.missing), ("invalid", &f.invalid), ("forbidden", &f.forbidden)]
            .map(|(reason, n)| (vec![("reason", reason.to_owned())], n.load(Ordering::Relaxed)));
        crate::metrics::counters(
            enc,
            "meshgate_auth_failures",
            "Requests refused: 401 missing or invalid credentials, 403 forbidden.",
            samples,
        )
    }));
}

/// The authentication methods of one route, as one `on_request` step.
pub struct AuthStage {
    methods: Box<[Arc<dyn Authenticator>]>,
    anonymous: Option<Arc<Consumer>>,
}

impl AuthStage {
    /// A stage trying `methods` in order. The anonymous consumer is the first one a method names.
    pub fn new(methods: Vec<Arc<dyn Authenticator>>) -> AuthStage {
        let anonymous = methods.iter().find_map(|m| m.anonymous().cloned());
        AuthStage { methods: methods.into(), anonymous }
    }
}

#[async_trait]
impl Plugin for AuthStage {
    fn phases(&self) -> Phases {
        Phases::ON_REQUEST
    }

    async fn on_request(&self, cx: &mut RequestCtx) -> Flow {
        let mut rejected = None;
        for m in self.methods.iter() {
            match m.authenticate(cx).await {
                AuthOutcome::Accepted(who) => {
                    cx.auth = Some(who);
                    return Flow::Continue;
                }
                AuthOutcome::Missing => {}
                AuthOutcome::Rejected(reason) => {
                    rejected.get_or_insert((m.name(), reason));
                }
            }
        }
        if let Some(anon) = &self.anonymous {
            cx.auth = Some(Authenticated { consumer: anon.clone(), credential: None, anonymous: true });
            return Flow::Continue;
        }
        let route = cx.route.as_ref().map_or("", |r| &r.name);
        let (code, message) = match rejected {
            Some((method, reason)) => {
                AUTH_FAILURES.invalid.fetch_add(1, Ordering::Relaxed);
                tracing::info!(route, client = %cx.client_addr.ip(), method, reason, "authentication failed");
                ("invalid_credentials", "the credentials given are not valid")
            }
            None => {
                AUTH_FAILURES.missing.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(route, client = %cx.client_addr.ip(), "no credentials");
                ("unauthorized", "credentials are required")
            }
        };
        let mut resp = json_error(StatusCode::UNAUTHORIZED, code, message);
        for m in self.methods.iter() {
            resp.headers_mut().append(WWW_AUTHENTICATE, m.challenge().clone());
        }
        Flow::Respond(resp)
    }
}

/// A 403 for a caller who is known but not allowed, counted.
pub fn forbidden(cx: &RequestCtx, message: &str) -> Response<ProxyBody> {
    AUTH_FAILURES.forbidden.fetch_add(1, Ordering::Relaxed);
    let who = cx.auth.as_ref().map_or("", |a| &a.consumer.username);
    tracing::info!(route = cx.route.as_ref().map_or("", |r| &r.name), consumer = who, "forbidden");
    json_error(StatusCode::FORBIDDEN, "forbidden", message)
}

static X_CONSUMER_USERNAME: HeaderName = HeaderName::from_static("x-consumer-username");
static X_CONSUMER_CUSTOM_ID: HeaderName = HeaderName::from_static("x-consumer-custom-id");
static X_CONSUMER_GROUPS: HeaderName = HeaderName::from_static("x-consumer-groups");
static X_CREDENTIAL_IDENTIFIER: HeaderName = HeaderName::from_static("x-credential-identifier");
static X_ANONYMOUS_CONSUMER: HeaderName = HeaderName::from_static("x-anonymous-consumer");

/// The headers that tell the upstream who called. Only the gateway may set them.
static IDENTITY: [&HeaderName; 5] =
    [&X_CONSUMER_USERNAME, &X_CONSUMER_CUSTOM_ID, &X_CONSUMER_GROUPS, &X_CREDENTIAL_IDENTIFIER, &X_ANONYMOUS_CONSUMER];

/// Removes any identity headers the client sent (an upstream trusts them), then adds the real
/// ones when someone was authenticated. Runs on every forwarded request, with or without
/// authentication on the route: one pass over the header names, hashed removals only for what
/// is there.
pub fn set_identity_headers(headers: &mut HeaderMap, auth: Option<&Authenticated>) {
    let spoofed = headers.keys().any(|n| n.as_str().starts_with("x-c") || n.as_str().starts_with("x-a"));
    if spoofed {
        for name in IDENTITY {
            headers.remove(name);
        }
    }
    let Some(auth) = auth else { return };
    let h = &auth.consumer.headers;
    let pairs = [
        (&X_CONSUMER_USERNAME, h.username.as_ref()),
        (&X_CONSUMER_CUSTOM_ID, h.custom_id.as_ref()),
        (&X_CONSUMER_GROUPS, h.groups.as_ref()),
        (&X_CREDENTIAL_IDENTIFIER, auth.credential.as_ref()),
    ];
    for (name, value) in pairs {
        if let Some(v) = value {
            headers.insert(name.clone(), v.clone());
        }
    }
    if auth.anonymous {
        headers.insert(X_ANONYMOUS_CONSUMER.clone(), HeaderValue::from_static("true"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spoofed_identity_is_replaced() {
        let mut h = HeaderMap::new();
        h.insert("x-consumer-username", HeaderValue::from_static("admin"));
        h.insert("x-consumer-groups", HeaderValue::from_static("admins"));
        h.insert("x-anonymous-consumer", HeaderValue::from_static("false"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        set_identity_headers(&mut h, None);
        assert_eq!(h.len(), 1, "{h:?}");

        let consumer = Arc::new(Consumer::new("alice", Some("u-1"), vec!["ops".into(), "dev".into()]));
        let auth = Authenticated { consumer, credential: Some(HeaderValue::from_static("k1")), anonymous: false };
        h.insert("x-consumer-username", HeaderValue::from_static("admin"));
        set_identity_headers(&mut h, Some(&auth));
        assert_eq!(h["x-consumer-username"], "alice");
        assert_eq!(h["x-consumer-custom-id"], "u-1");
        assert_eq!(h["x-consumer-groups"], "ops, dev");
        assert_eq!(h["x-credential-identifier"], "k1");
        assert!(!h.contains_key("x-anonymous-consumer"));
    }
}
