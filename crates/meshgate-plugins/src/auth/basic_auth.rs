//! `basic-auth`: HTTP Basic credentials (RFC 7617) checked against password hashes.
//!
//! Consumers declare `credentials: { basic-auth: [ { password_hash: "$argon2id$…" } ] }`
//! (`username` defaults to the consumer's). Only argon2 (PHC string) and bcrypt hashes are
//! accepted: a plain-text `password` is refused at load, with the command that makes a hash
//! (`meshgate hash-password`). Hashes are slow on purpose, so a check runs on the blocking pool,
//! never on a worker's event loop, and a successful check is remembered per worker thread for
//! `cache_ttl` under a salted digest of the header, so a client's next requests cost a hash
//! lookup. An unknown username costs the same hash as a wrong password: timing does not tell
//! which usernames exist.

use super::{anonymous, cache, credential_error, parse_credential};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use http::HeaderValue;
use http::header::AUTHORIZATION;
use meshgate_config::units::Duration;
use meshgate_core::{
    AuthOutcome, Authenticated, Authenticator, BuildContext, Built, Consumer, Consumers, PluginConfigError,
    PluginFactory, RequestCtx, Secret, async_trait, parse_config,
};
use serde::Deserialize;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// Registers `basic-auth`.
pub struct Factory;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// Realm named in the `WWW-Authenticate` challenge.
    realm: String,
    /// Remove the `Authorization` header before the request goes upstream.
    hide_credentials: bool,
    /// How long a verified header is remembered (per worker thread); `0s` checks every time.
    cache_ttl: Duration,
    /// Consumer to let in when no credential is valid.
    anonymous: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            realm: "meshgate".to_owned(),
            hide_credentials: false,
            cache_ttl: Duration::from_secs(60),
            anonymous: None,
        }
    }
}

/// One consumer credential entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credential {
    /// Defaults to the consumer's username.
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password_hash: Option<Secret>,
    /// Present only to refuse it with a useful message.
    #[serde(default)]
    password: Option<serde_json::Value>,
}

/// A stored hash, checked in the form it was written.
#[derive(Clone)]
enum Hash {
    Argon2(Arc<str>),
    Bcrypt(Arc<str>),
}

impl Hash {
    fn parse(s: String) -> Result<Hash, String> {
        if s.starts_with("$argon2") {
            let h = PasswordHash::new(&s).map_err(|e| format!("not a valid argon2 PHC string: {e}"))?;
            if h.salt.is_none() || h.hash.is_none() {
                return Err("not a valid argon2 PHC string: it has no salt or no hash".to_owned());
            }
            Ok(Hash::Argon2(s.into()))
        } else if ["$2a$", "$2b$", "$2y$"].iter().any(|p| s.starts_with(p)) {
            Ok(Hash::Bcrypt(s.into()))
        } else {
            Err("use an argon2 ($argon2id$…) or bcrypt ($2b$…) hash; `meshgate hash-password` makes one".to_owned())
        }
    }

    /// Slow by design: call from the blocking pool.
    fn verify(&self, password: &[u8]) -> bool {
        match self {
            Hash::Argon2(s) => {
                PasswordHash::new(s).is_ok_and(|h| Argon2::default().verify_password(password, &h).is_ok())
            }
            Hash::Bcrypt(s) => bcrypt::verify(password, s).unwrap_or(false),
        }
    }
}

/// An argon2id hash of `password` with a random salt and the default (OWASP) parameters, as a
/// PHC string for `password_hash:`.
pub fn hash_password(password: &str) -> String {
    let salt: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt length");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("default argon2 parameters are valid")
        .to_string()
}

/// A hash nobody's password matches, checked for unknown usernames so that they take as long
/// as known ones.
fn decoy() -> &'static Hash {
    static DECOY: OnceLock<Hash> = OnceLock::new();
    DECOY.get_or_init(|| Hash::Argon2(hash_password(&format!("{:x}", rand::random::<u128>())).into()))
}

struct BasicEntry {
    hash: Hash,
    consumer: Arc<Consumer>,
    id: HeaderValue,
}

/// Every consumer's basic credentials, by username; built once per config.
struct BasicIndex(HashMap<String, BasicEntry>);

impl BasicIndex {
    fn build(consumers: &Consumers) -> Result<BasicIndex, PluginConfigError> {
        let mut map = HashMap::new();
        for (consumer, entry) in consumers.credentials("basic-auth") {
            let bad = |field: &str, msg: &str| credential_error(entry, field, msg);
            let c: Credential = parse_credential(entry)?;
            if c.password.is_some() {
                let msg = "plain-text passwords are refused: store `password_hash` instead \
                           (`meshgate hash-password` prints one)";
                return Err(bad("password", msg));
            }
            let Some(hash) = c.password_hash else {
                return Err(bad("", "password_hash is required"));
            };
            let hash = hash.resolve(&consumers.base_dir).and_then(Hash::parse).map_err(|m| bad("password_hash", &m))?;
            let username = c.username.unwrap_or_else(|| consumer.username.to_string());
            if username.contains(':') {
                return Err(bad("username", "a Basic username cannot contain ':'"));
            }
            let id = HeaderValue::from_str(&username).map_err(|_| bad("username", "not a valid header value"))?;
            if map.insert(username, BasicEntry { hash, consumer: consumer.clone(), id }).is_some() {
                return Err(bad("username", "another basic-auth credential has this username"));
            }
        }
        Ok(BasicIndex(map))
    }
}

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "basic-auth"
    }
    fn priority(&self) -> i32 {
        1100
    }
    fn build(&self, config: &serde_json::Value, cx: &BuildContext) -> Result<Built, PluginConfigError> {
        let c: Config = parse_config(config)?;
        let challenge = format!("Basic realm=\"{}\", charset=\"UTF-8\"", c.realm.replace(['"', '\\'], ""));
        let challenge = HeaderValue::from_str(&challenge)
            .map_err(|_| PluginConfigError::new("realm", "not valid in a header (control characters?)"))?;
        Ok(Built::Authenticator(Arc::new(BasicAuth {
            index: cx.consumers.shared(BasicIndex::build)?,
            instance: cache::instance_id(),
            hide: c.hide_credentials,
            cache_ttl: c.cache_ttl.get(),
            anonymous: anonymous(&cx.consumers, c.anonymous.as_deref())?,
            challenge,
        })))
    }
    fn takes_credentials(&self) -> bool {
        true
    }
    fn check_credentials(&self, cx: &BuildContext) -> Result<(), PluginConfigError> {
        cx.consumers.shared(BasicIndex::build).map(drop)
    }
}

struct BasicAuth {
    index: Arc<BasicIndex>,
    /// Distinguishes this instance's cache entries from another config's.
    instance: u64,
    hide: bool,
    cache_ttl: std::time::Duration,
    anonymous: Option<Arc<Consumer>>,
    challenge: HeaderValue,
}

thread_local! {
    /// Verified `Authorization` headers of this worker thread, with the username they name.
    static VERIFIED: RefCell<cache::Verified<Arc<str>>> = RefCell::new(cache::Verified::new());
}

impl BasicAuth {
    fn accepted(&self, username: &str, cx: &mut RequestCtx) -> AuthOutcome {
        let Some(entry) = self.index.0.get(username) else { return AuthOutcome::Rejected("unknown user") };
        if self.hide {
            cx.request.headers.remove(AUTHORIZATION);
        }
        AuthOutcome::Accepted(Authenticated {
            consumer: entry.consumer.clone(),
            credential: Some(entry.id.clone()),
            anonymous: false,
        })
    }
}

/// `user:password` from `Basic <base64>`; `None` when the header is another scheme.
pub(crate) fn basic_credentials(header: &HeaderValue) -> Option<Result<(String, Vec<u8>), ()>> {
    let v = header.as_bytes();
    if v.len() < 6 || !v[..6].eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(v[6..].trim_ascii());
    Some(decoded.map_err(drop).and_then(|d| {
        let colon = d.iter().position(|&b| b == b':').ok_or(())?;
        let user = std::str::from_utf8(&d[..colon]).map_err(drop)?.to_owned();
        Ok((user, d[colon + 1..].to_vec()))
    }))
}

#[async_trait]
impl Authenticator for BasicAuth {
    fn name(&self) -> &'static str {
        "basic-auth"
    }
    fn challenge(&self) -> &HeaderValue {
        &self.challenge
    }
    fn anonymous(&self) -> Option<&Arc<Consumer>> {
        self.anonymous.as_ref()
    }
    async fn authenticate(&self, cx: &mut RequestCtx) -> AuthOutcome {
        let Some(header) = cx.request.headers.get(AUTHORIZATION) else { return AuthOutcome::Missing };
        let Some(parsed) = basic_credentials(header) else { return AuthOutcome::Missing };
        let Ok((user, password)) = parsed else { return AuthOutcome::Rejected("malformed basic credentials") };
        let key = cache::key(self.instance, header.as_bytes());
        let now = Instant::now();
        let cached = VERIFIED.with_borrow(|c| c.get(&key, now));
        if let Some(user) = cached {
            return self.accepted(&user, cx);
        }
        let hash = self.index.0.get(&user).map_or_else(|| decoy().clone(), |e| e.hash.clone());
        let known = self.index.0.contains_key(&user);
        let ok = tokio::task::spawn_blocking(move || hash.verify(&password)).await.unwrap_or(false);
        if !(ok && known) {
            return AuthOutcome::Rejected("unknown user or wrong password");
        }
        if !self.cache_ttl.is_zero() {
            VERIFIED.with_borrow_mut(|c| c.insert(key, user.as_str().into(), now + self.cache_ttl));
        }
        self.accepted(&user, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{authenticator, context, request};
    use serde_json::json;

    fn consumers(creds: &[(&str, serde_json::Value)]) -> Consumers {
        crate::testing::consumers("basic-auth", creds)
    }

    fn basic(user: &str, pass: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
    }

    #[tokio::test]
    async fn argon2_and_bcrypt_hashes() {
        let bcrypt_hash = bcrypt::hash("b-pass", 4).unwrap();
        let cx = context(consumers(&[
            ("alice", json!({"password_hash": hash_password("a-pass")})),
            ("bob", json!({"password_hash": bcrypt_hash, "username": "bobby"})),
        ]));
        let a = authenticator(&Factory, json!({"hide_credentials": true}), &cx).unwrap();
        let mut r = request("/", &[("authorization", &basic("alice", "a-pass"))]);
        match a.authenticate(&mut r).await {
            AuthOutcome::Accepted(who) => assert_eq!(&*who.consumer.username, "alice"),
            _ => panic!("alice refused"),
        }
        assert!(!r.request.headers.contains_key("authorization"), "hidden");
        // Cached the second time, same answer.
        let mut r = request("/", &[("authorization", &basic("alice", "a-pass"))]);
        assert!(matches!(a.authenticate(&mut r).await, AuthOutcome::Accepted(_)));
        let mut r = request("/", &[("authorization", &basic("bobby", "b-pass"))]);
        assert!(matches!(a.authenticate(&mut r).await, AuthOutcome::Accepted(_)));
        for (u, p) in [("alice", "b-pass"), ("bob", "b-pass"), ("nobody", "x"), ("alice", "")] {
            let mut r = request("/", &[("authorization", &basic(u, p))]);
            assert!(matches!(a.authenticate(&mut r).await, AuthOutcome::Rejected(_)), "{u}:{p}");
        }
        let mut r = request("/", &[("authorization", "Basic !!notbase64")]);
        assert!(matches!(a.authenticate(&mut r).await, AuthOutcome::Rejected(_)));
        let mut r = request("/", &[("authorization", "Bearer abc")]);
        assert!(matches!(a.authenticate(&mut r).await, AuthOutcome::Missing), "another scheme is not ours");
    }

    #[test]
    fn plain_text_passwords_are_refused() {
        let err = |c: Consumers| match authenticator(&Factory, json!({}), &context(c)) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted"),
        };
        let msg = err(consumers(&[("a", json!({"password": "hunter2"}))]));
        assert!(msg.starts_with("consumers[0].credentials.basic-auth[0].password: plain-text passwords are refused"));
        assert!(!msg.contains("hunter2"));
        let msg = err(consumers(&[("a", json!({"password_hash": "hunter2"}))]));
        assert!(msg.contains("use an argon2") && !msg.contains("hunter2"), "{msg}");
        let msg = err(consumers(&[("a", json!({"password_hash": "$argon2id$v=19$garbage"}))]));
        assert!(msg.contains("not a valid argon2 PHC string"), "{msg}");
    }
}
