//! `jwt`: Bearer tokens (JSON Web Tokens) signed by keys in the config or by an identity
//! provider's JWKS endpoint.
//!
//! The token is the credential: the plugin checks its signature, its validity period, issuer and
//! audience, and names the caller from a claim (`sub` by default), as a declared consumer when
//! one has that username or custom id, else as a consumer that exists for this request only.
//! Keys are bound to their algorithms when loaded (see [`keys`]), so the token's `alg` cannot turn
//! a public key into an HMAC secret, and `none` is never accepted. JWKS keys are fetched
//! asynchronously and shared by every worker (see [`jwks`]).

mod jwks;
#[cfg(test)]
mod jwks_tests;
mod keys;
mod ring_crypto;
#[cfg(test)]
mod tests;

pub use ring_crypto::install as install_crypto;

use super::{anonymous, cache, without_param};
use http::HeaderValue;
use http::header::{COOKIE, HeaderName};
use jsonwebtoken::{Algorithm, Header, Validation};
use keys::{ALL, Algs, InlineKey, Key, KeySet};
use meshgate_config::units::Duration;
use meshgate_core::{
    AuthOutcome, Authenticated, Authenticator, BuildContext, Built, Consumer, Consumers, PluginConfigError,
    PluginFactory, RequestCtx, async_trait, parse_config,
};
use percent_encoding::percent_decode_str;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Registers `jwt`.
pub struct Factory;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// Keys given in the config.
    keys: Vec<InlineKey>,
    /// An identity provider's JWKS document.
    jwks_url: Option<String>,
    /// Algorithms a token may use; default: those of `keys`, plus every public-key algorithm when
    /// `jwks_url` is set.
    algorithms: Option<Vec<Algorithm>>,
    /// JWKS keys older than this are refreshed in the background.
    jwks_refresh_interval: Duration,
    /// At most one JWKS fetch per this long (tokens with unknown `kid`s ask for one).
    jwks_min_refresh_interval: Duration,
    /// A JWKS fetch taking longer fails.
    jwks_timeout: Duration,
    /// When set, `iss` must be one of these.
    issuer: Vec<String>,
    /// When set, `aud` must hold one of these.
    audience: Vec<String>,
    /// Leeway for `exp` and `nbf`.
    clock_skew: Duration,
    /// Claims every token must have.
    required_claims: Vec<String>,
    /// The claim naming the caller.
    consumer_claim: String,
    /// Refuse tokens whose caller is not a declared consumer.
    require_consumer: bool,
    /// A claim with the caller's groups (a list, or a space-separated string), for callers who
    /// are not declared consumers.
    groups_claim: Option<String>,
    /// Claims sent upstream as request headers (`claim: Header-Name`).
    claims_to_headers: BTreeMap<String, String>,
    /// Headers that may carry `Bearer <token>`.
    header_names: Vec<String>,
    /// Query parameters that may carry the token.
    query_param_names: Vec<String>,
    /// Cookies that may carry the token.
    cookie_names: Vec<String>,
    /// Remove the token from the request before it goes upstream.
    hide_credentials: bool,
    /// Consumer to let in when no credential is valid.
    anonymous: Option<String>,
    /// How long a verified token is remembered (per worker thread, never past its `exp`), so
    /// that a client's next requests skip the signature check; `0s` checks every time.
    cache_ttl: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            keys: Vec::new(),
            jwks_url: None,
            algorithms: None,
            jwks_refresh_interval: Duration::from_secs(600),
            jwks_min_refresh_interval: Duration::from_secs(30),
            jwks_timeout: Duration::from_secs(5),
            issuer: Vec::new(),
            audience: Vec::new(),
            clock_skew: Duration::from_secs(30),
            required_claims: vec!["exp".to_owned()],
            consumer_claim: "sub".to_owned(),
            require_consumer: false,
            groups_claim: None,
            claims_to_headers: BTreeMap::new(),
            header_names: vec!["authorization".to_owned()],
            query_param_names: Vec::new(),
            cookie_names: Vec::new(),
            hide_credentials: false,
            anonymous: None,
            cache_ttl: Duration::from_secs(60),
        }
    }
}

/// Claims `jsonwebtoken` checks itself when required.
const SPEC_CLAIMS: [&str; 5] = ["exp", "nbf", "aud", "iss", "sub"];

/// The verified token's claims.
type Claims = Map<String, Value>;

/// A verified token: its claims, the `kid` of the key that verified it, and the JWKS key set that
/// held the key (`None` for keys from the config).
type Verified = (Claims, Option<HeaderValue>, Option<Arc<jwks::Fetched>>);

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "jwt"
    }
    fn priority(&self) -> i32 {
        1200
    }
    fn build(&self, config: &serde_json::Value, cx: &BuildContext) -> Result<Built, PluginConfigError> {
        let c: Config = parse_config(config)?;
        // Explicitly, so that another crate enabling a second backend cannot leave the choice
        // open (jsonwebtoken then panics on first use). Already installed is fine.
        ring_crypto::install();
        if c.keys.is_empty() && c.jwks_url.is_none() {
            return Err(PluginConfigError::new("keys", "give `keys`, `jwks_url` or both"));
        }
        let inline = keys::inline(&c.keys, &cx.consumers.base_dir)?;
        let jwks = match &c.jwks_url {
            None => None,
            Some(url) => {
                let timing = jwks::Timing {
                    refresh: c.jwks_refresh_interval.get(),
                    min_refresh: c.jwks_min_refresh_interval.get(),
                    timeout: c.jwks_timeout.get(),
                };
                let shared = cx.consumers.shared(|_| Ok::<_, PluginConfigError>(jwks::Shared::default()))?;
                Some(shared.get(url, timing).map_err(|m| PluginConfigError::new("jwks_url", m))?)
            }
        };
        if c.jwks_timeout.get().is_zero() {
            return Err(PluginConfigError::new("jwks_timeout", "must be more than zero"));
        }
        let allowed = match &c.algorithms {
            Some(list) => list.iter().fold(Algs::default(), |a, alg| a.union(Algs::of(*alg))),
            None => inline.algs().union(if jwks.is_some() { Algs::PUBLIC } else { Algs::default() }),
        };
        if allowed.is_empty() {
            return Err(PluginConfigError::new("algorithms", "allow at least one algorithm"));
        }
        let headers = names(&c.header_names, "header_names")?;
        if headers.is_empty() && c.query_param_names.is_empty() && c.cookie_names.is_empty() {
            return Err(PluginConfigError::new(
                "header_names",
                "name at least one place to look for the token (header_names, query_param_names, cookie_names)",
            ));
        }
        if c.consumer_claim.is_empty() {
            return Err(PluginConfigError::new("consumer_claim", "name a claim"));
        }
        let claim_headers = c
            .claims_to_headers
            .iter()
            .map(|(claim, header)| {
                HeaderName::try_from(header.as_str()).map(|h| (claim.clone(), h)).map_err(|_| {
                    PluginConfigError::new(format!("claims_to_headers.{claim}"), "not a valid header name")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut spec: HashSet<String> =
            c.required_claims.iter().filter(|n| SPEC_CLAIMS.contains(&n.as_str())).cloned().collect();
        if !c.issuer.is_empty() {
            spec.insert("iss".to_owned());
        }
        if !c.audience.is_empty() {
            spec.insert("aud".to_owned());
        }
        let validations = ALL.map(|alg| {
            allowed.contains(alg).then(|| {
                let mut v = Validation::new(alg);
                v.leeway = c.clock_skew.get().as_secs();
                v.validate_nbf = true;
                v.required_spec_claims = spec.clone();
                if !c.issuer.is_empty() {
                    v.set_issuer(&c.issuer);
                }
                if c.audience.is_empty() {
                    v.validate_aud = false;
                } else {
                    v.set_audience(&c.audience);
                }
                v
            })
        });
        Ok(Built::Authenticator(Arc::new(Jwt {
            inline,
            jwks,
            validations: Box::new(validations),
            other_required: c.required_claims.into_iter().filter(|n| !SPEC_CLAIMS.contains(&n.as_str())).collect(),
            consumer_claim: c.consumer_claim,
            require_consumer: c.require_consumer,
            groups_claim: c.groups_claim,
            claim_headers,
            headers,
            query_names: c.query_param_names,
            cookie_names: c.cookie_names,
            hide: c.hide_credentials,
            anonymous: anonymous(&cx.consumers, c.anonymous.as_deref())?,
            consumers: cx.consumers.clone(),
            challenge: HeaderValue::from_static("Bearer realm=\"meshgate\""),
            instance: cache::instance_id(),
            cache_ttl: c.cache_ttl.get(),
        })))
    }
}

/// `list` as header names; errors name `field[i]`.
fn names(list: &[String], field: &str) -> Result<Vec<HeaderName>, PluginConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, n)| {
            HeaderName::try_from(n.as_str())
                .map_err(|_| PluginConfigError::new(format!("{field}[{i}]"), "not a valid header name"))
        })
        .collect()
}

/// The `jwt` authentication method of one route.
struct Jwt {
    /// Keys from the config.
    inline: KeySet,
    /// Keys from the JWKS endpoint, if one is set.
    jwks: Option<Arc<jwks::Jwks>>,
    /// The checks for each allowed algorithm, by position in [`ALL`]; `None` when not allowed.
    validations: Box<[Option<Validation>; 12]>,
    /// Required claims `jsonwebtoken` does not know.
    other_required: Box<[String]>,
    /// The claim naming the caller.
    consumer_claim: String,
    /// Refuse callers that are not declared consumers.
    require_consumer: bool,
    /// The claim with an undeclared caller's groups.
    groups_claim: Option<String>,
    /// `(claim, header)` pairs set from the token; client copies of the headers are removed.
    claim_headers: Vec<(String, HeaderName)>,
    /// Headers that may carry `Bearer <token>`.
    headers: Vec<HeaderName>,
    /// Query parameters that may carry the token.
    query_names: Vec<String>,
    /// Cookies that may carry the token.
    cookie_names: Vec<String>,
    /// Remove the token before forwarding.
    hide: bool,
    /// The consumer let in when no method accepts the request.
    anonymous: Option<Arc<Consumer>>,
    /// The declared consumers, for the claim's lookup.
    consumers: Arc<Consumers>,
    /// `Bearer realm="meshgate"`.
    challenge: HeaderValue,
    /// Keeps this instance's remembered tokens apart from other instances'.
    instance: u64,
    /// How long a verified token is remembered; zero: not at all.
    cache_ttl: std::time::Duration,
}

/// What a verified token grants: the caller, and the headers its claims set.
struct Grant {
    consumer: Arc<Consumer>,
    credential: Option<HeaderValue>,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The JWKS key set whose key verified the token: once the keys are fetched again, the token
    /// is checked again (a key removed by rotation stops working at once).
    keys: Option<Arc<jwks::Fetched>>,
}

impl Grant {
    /// Whether the keys that verified the token are still the ones in use.
    fn current(&self, jwks: Option<&Arc<jwks::Jwks>>) -> bool {
        match (&self.keys, jwks) {
            (Some(seen), Some(jwks)) => Arc::ptr_eq(seen, &jwks.current()),
            _ => true,
        }
    }
}

thread_local! {
    /// Verified tokens of this worker thread.
    static VERIFIED: RefCell<cache::Verified<Arc<Grant>>> = RefCell::new(cache::Verified::new());
}

/// Until when a token verified at `now` may be remembered: `ttl` from now, but never past its
/// `exp` (unix seconds). `None`: not at all (already past `exp`, within the clock skew).
fn remember_until(now: Instant, now_unix: u64, exp: Option<u64>, ttl: std::time::Duration) -> Option<Instant> {
    let ttl = match exp {
        Some(exp) if exp <= now_unix => return None,
        Some(exp) => ttl.min(std::time::Duration::from_secs(exp - now_unix)),
        None => ttl,
    };
    (!ttl.is_zero()).then(|| now + ttl)
}

/// Where the token was found, so it can be hidden from the upstream.
enum Found {
    /// In `headers[i]`.
    Header(usize),
    /// In this query parameter.
    Query(String),
    /// In this cookie.
    Cookie(String),
}

/// Why a token was refused, for logs (never the token).
fn reason(e: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidSignature => "bad signature",
        K::ExpiredSignature => "token expired",
        K::ImmatureSignature => "token not yet valid",
        K::InvalidIssuer => "wrong issuer",
        K::InvalidAudience => "wrong audience",
        K::MissingRequiredClaim(_) => "missing required claim",
        K::InvalidAlgorithm => "algorithm not allowed",
        K::InvalidClaimFormat(_) => "malformed claim",
        _ => "malformed token",
    }
}

impl Jwt {
    /// The token and where it was: headers first, then query parameters, then cookies.
    fn locate(&self, cx: &RequestCtx) -> Option<(String, Found)> {
        for (i, name) in self.headers.iter().enumerate() {
            for value in cx.request.headers.get_all(name) {
                let Ok(value) = value.to_str() else { continue };
                let Some((scheme, token)) = value.trim().split_once(' ') else { continue };
                let token = token.trim();
                if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() {
                    return Some((token.to_owned(), Found::Header(i)));
                }
            }
        }
        if !self.query_names.is_empty() {
            for pair in cx.request.uri.query().unwrap_or("").split('&') {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                if !value.is_empty() && self.query_names.iter().any(|n| n == name) {
                    let token = percent_decode_str(value).decode_utf8_lossy().into_owned();
                    return Some((token, Found::Query(name.to_owned())));
                }
            }
        }
        if !self.cookie_names.is_empty() {
            for value in cx.request.headers.get_all(COOKIE) {
                let Ok(value) = value.to_str() else { continue };
                for pair in value.split(';') {
                    let Some((name, token)) = pair.trim().split_once('=') else { continue };
                    if !token.is_empty() && self.cookie_names.iter().any(|n| n == name) {
                        return Some((token.to_owned(), Found::Cookie(name.to_owned())));
                    }
                }
            }
        }
        None
    }

    /// Removes the token from where it was found.
    fn hide(&self, cx: &mut RequestCtx, found: Found) {
        match found {
            Found::Header(i) => {
                cx.request.headers.remove(&self.headers[i]);
            }
            Found::Query(name) => cx.request.uri = without_param(&cx.request.uri, &name),
            Found::Cookie(name) => {
                let kept: Vec<String> = cx
                    .request
                    .headers
                    .get_all(COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(';'))
                    .map(str::trim)
                    .filter(|p| !p.is_empty() && p.split_once('=').map_or(*p, |(n, _)| n) != name)
                    .map(str::to_owned)
                    .collect();
                cx.request.headers.remove(COOKIE);
                if !kept.is_empty()
                    && let Ok(v) = HeaderValue::from_str(&kept.join("; "))
                {
                    cx.request.headers.insert(COOKIE, v);
                }
            }
        }
    }

    /// The verified claims, the `kid` of the key that verified them, and the JWKS key set that
    /// held that key (`None` for keys from the config).
    async fn verify(&self, token: &str, header: &Header) -> Result<Verified, &'static str> {
        let validation = self.validations[keys::index(header.alg)].as_ref().ok_or("algorithm not allowed")?;
        let kid = header.kid.as_deref();
        let from = |set: Option<Arc<jwks::Fetched>>| move |(claims, kid)| (claims, kid, set);
        if let Some(r) = check_in(&self.inline, kid, header.alg, token, validation) {
            return r.map(from(None));
        }
        let unknown = if kid.is_some() { "unknown kid" } else { "no key for the token" };
        let Some(jwks) = &self.jwks else {
            let tried = self.inline.without_kid().any(|k| k.algs.contains(header.alg));
            return Err(if tried { "bad signature" } else { unknown });
        };
        let seen = jwks.current();
        if let Some(r) = check_in(&seen.keys, kid, header.alg, token, validation) {
            return r.map(from(Some(seen)));
        }
        let fresh = jwks.refetch(&seen).await;
        check_in(&fresh.keys, kid, header.alg, token, validation).unwrap_or(Err(unknown)).map(from(Some(fresh)))
    }

    /// The groups named by `groups_claim`.
    fn groups(&self, claims: &Claims) -> Vec<Arc<str>> {
        match self.groups_claim.as_ref().and_then(|c| claims.get(c)) {
            Some(Value::String(s)) => s.split_whitespace().map(Arc::from).collect(),
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).map(Arc::from).collect(),
            _ => Vec::new(),
        }
    }
}

/// Checks the token with the keys of `set` that may verify it: the one named by its `kid`, else
/// those without a `kid`. `None` when no key of the set applies (or, for a token with a `kid`,
/// none without a `kid` verified it): the caller may look elsewhere.
fn check_in(
    set: &KeySet,
    kid: Option<&str>,
    alg: Algorithm,
    token: &str,
    validation: &Validation,
) -> Option<Result<(Claims, Option<HeaderValue>), &'static str>> {
    if let Some(key) = kid.and_then(|k| set.get(k)) {
        return Some(check(key, alg, token, validation));
    }
    let mut bad_signature = false;
    let with_kid = kid.is_none().then(|| set.with_kid()).into_iter().flatten();
    for key in set.without_kid().chain(with_kid).filter(|k| k.algs.contains(alg)) {
        match check(key, alg, token, validation) {
            Err("bad signature") => bad_signature = true,
            r => return Some(r),
        }
    }
    (bad_signature && kid.is_none()).then_some(Err("bad signature"))
}

/// Checks the token with one key.
fn check(
    key: &Key,
    alg: Algorithm,
    token: &str,
    validation: &Validation,
) -> Result<(Claims, Option<HeaderValue>), &'static str> {
    if !key.algs.contains(alg) {
        return Err("algorithm does not match the key");
    }
    match jsonwebtoken::decode::<Claims>(token, &key.decoding, validation) {
        Ok(data) => Ok((data.claims, key.kid.clone())),
        Err(e) => Err(reason(&e)),
    }
}

/// A claim as a header value: strings as they are, numbers and booleans written out, lists of
/// strings joined with `, `. Anything else (or a value with control characters) is not sent.
fn header_value(v: &Value) -> Option<HeaderValue> {
    match v {
        Value::String(s) => HeaderValue::from_str(s).ok(),
        Value::Number(_) | Value::Bool(_) => HeaderValue::from_str(&v.to_string()).ok(),
        Value::Array(list) => {
            let items: Option<Vec<&str>> = list.iter().map(Value::as_str).collect();
            HeaderValue::from_str(&items?.join(", ")).ok()
        }
        _ => None,
    }
}

#[async_trait]
impl Authenticator for Jwt {
    fn name(&self) -> &'static str {
        "jwt"
    }
    fn challenge(&self) -> &HeaderValue {
        &self.challenge
    }
    fn anonymous(&self) -> Option<&Arc<Consumer>> {
        self.anonymous.as_ref()
    }
    async fn authenticate(&self, cx: &mut RequestCtx) -> AuthOutcome {
        // Only a verified token may set these: drop what the client sent, whatever happens next.
        for (_, name) in &self.claim_headers {
            cx.request.headers.remove(name);
        }
        let Some((token, found)) = self.locate(cx) else { return AuthOutcome::Missing };
        let now = Instant::now();
        let key = (!self.cache_ttl.is_zero()).then(|| cache::key(self.instance, token.as_bytes()));
        let cached = key.and_then(|k| VERIFIED.with_borrow(|c| c.get(&k, now)));
        let grant = match cached.filter(|g| g.current(self.jwks.as_ref())) {
            Some(grant) => grant,
            None => match self.grant(&token).await {
                Ok((grant, exp)) => {
                    let now_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                    if let (Some(k), Some(until)) = (key, remember_until(now, now_unix, exp, self.cache_ttl)) {
                        VERIFIED.with_borrow_mut(|c| c.insert(k, grant.clone(), until));
                    }
                    grant
                }
                Err(reason) => return AuthOutcome::Rejected(reason),
            },
        };
        for (name, value) in &grant.headers {
            cx.request.headers.insert(name.clone(), value.clone());
        }
        if self.hide {
            self.hide(cx, found);
        }
        AuthOutcome::Accepted(Authenticated {
            consumer: grant.consumer.clone(),
            credential: grant.credential.clone(),
            anonymous: false,
        })
    }
}

impl Jwt {
    /// Verifies `token` and works out what it grants, with its `exp`.
    async fn grant(&self, token: &str) -> Result<(Arc<Grant>, Option<u64>), &'static str> {
        // `alg: none` and unknown algorithms fail here: they are not `Algorithm`s.
        let header = jsonwebtoken::decode_header(token).map_err(|_| "malformed token")?;
        let (claims, kid, keys) = self.verify(token, &header).await?;
        if self.other_required.iter().any(|c| !claims.contains_key(c)) {
            return Err("missing required claim");
        }
        let Some(name) = claims.get(&self.consumer_claim).and_then(Value::as_str).filter(|n| !n.is_empty()) else {
            return Err("no consumer claim");
        };
        let consumer = match self.consumers.find(name) {
            Some(c) => c.clone(),
            None if self.require_consumer => return Err("unknown consumer"),
            None => Arc::new(Consumer::new(name, None, self.groups(&claims))),
        };
        let iss = claims.get("iss").and_then(Value::as_str).and_then(|i| HeaderValue::from_str(i).ok());
        let headers = self
            .claim_headers
            .iter()
            .filter_map(|(claim, header)| Some((header.clone(), claims.get(claim).and_then(header_value)?)))
            .collect();
        let exp = claims.get("exp").and_then(Value::as_u64);
        Ok((Arc::new(Grant { consumer, credential: iss.or(kid), headers, keys }), exp))
    }
}
