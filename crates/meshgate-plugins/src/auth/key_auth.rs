//! `key-auth`: API keys, looked up in request headers and/or query parameters.
//!
//! Consumers declare their keys as credentials:
//! `credentials: { key-auth: [ { key: "…" }, { key: { env: PARTNER_KEY }, id: partner-2024 } ] }`.
//! Keys are indexed by their SHA-256 digest, and the stored key is then compared in constant
//! time, so response timing says nothing about how much of a guessed key was right.

use super::{anonymous, credential_error, parse_credential, without_param};
use http::HeaderValue;
use http::header::HeaderName;
use meshgate_core::{
    AuthOutcome, Authenticated, Authenticator, BuildContext, Built, Consumer, Consumers, PluginConfigError,
    PluginFactory, RequestCtx, Secret, async_trait, parse_config,
};
use percent_encoding::percent_decode_str;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Registers `key-auth`.
pub struct Factory;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// Header and query parameter names that may carry the key.
    key_names: Vec<String>,
    /// Look for the key in request headers.
    key_in_header: bool,
    /// Look for the key in the query string.
    key_in_query: bool,
    /// Remove the key from the request before it goes upstream.
    hide_credentials: bool,
    /// Consumer to let in when no credential is valid.
    anonymous: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            key_names: vec!["apikey".to_owned()],
            key_in_header: true,
            key_in_query: true,
            hide_credentials: false,
            anonymous: None,
        }
    }
}

/// One consumer credential entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credential {
    key: Secret,
    /// Sent upstream as `X-Credential-Identifier` and used in logs; defaults to `<username>#<n>`.
    #[serde(default)]
    id: Option<String>,
}

struct KeyEntry {
    key: Box<[u8]>,
    consumer: Arc<Consumer>,
    id: HeaderValue,
}

/// Every consumer's keys, by SHA-256 digest; built once per config.
struct KeyIndex(HashMap<[u8; 32], KeyEntry>);

impl KeyIndex {
    fn build(consumers: &Consumers) -> Result<KeyIndex, PluginConfigError> {
        let mut map = HashMap::new();
        for (n, (consumer, entry)) in consumers.credentials("key-auth").enumerate() {
            let c: Credential = parse_credential(entry)?;
            let key = c.key.resolve(&consumers.base_dir).map_err(|m| credential_error(entry, "key", m))?;
            let id = c.id.unwrap_or_else(|| format!("{}#{n}", consumer.username));
            let id =
                HeaderValue::from_str(&id).map_err(|_| credential_error(entry, "id", "not a valid header value"))?;
            let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
            let key_entry = KeyEntry { key: key.into_bytes().into(), consumer: consumer.clone(), id };
            if map.insert(digest, key_entry).is_some() {
                return Err(credential_error(entry, "key", "the same key is given twice; keys must be unique"));
            }
        }
        Ok(KeyIndex(map))
    }

    fn find(&self, key: &[u8]) -> Option<&KeyEntry> {
        let digest: [u8; 32] = Sha256::digest(key).into();
        self.0.get(&digest).filter(|e| bool::from(e.key.as_ref().ct_eq(key)))
    }
}

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "key-auth"
    }
    fn priority(&self) -> i32 {
        1250
    }
    fn build(&self, config: &serde_json::Value, cx: &BuildContext) -> Result<Built, PluginConfigError> {
        let c: Config = parse_config(config)?;
        if c.key_names.is_empty() || !(c.key_in_header || c.key_in_query) {
            return Err(PluginConfigError::new("key_names", "name at least one place to look for the key"));
        }
        let headers = c
            .key_names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                HeaderName::try_from(n.as_str())
                    .map_err(|_| PluginConfigError::new(format!("key_names[{i}]"), "not a valid header name"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Built::Authenticator(Arc::new(KeyAuth {
            keys: cx.consumers.shared(KeyIndex::build)?,
            headers: if c.key_in_header { headers } else { Vec::new() },
            query_names: if c.key_in_query { c.key_names } else { Vec::new() },
            hide: c.hide_credentials,
            anonymous: anonymous(&cx.consumers, c.anonymous.as_deref())?,
            challenge: HeaderValue::from_static("Key realm=\"meshgate\""),
        })))
    }
    fn takes_credentials(&self) -> bool {
        true
    }
    fn check_credentials(&self, cx: &BuildContext) -> Result<(), PluginConfigError> {
        cx.consumers.shared(KeyIndex::build).map(drop)
    }
}

struct KeyAuth {
    keys: Arc<KeyIndex>,
    headers: Vec<HeaderName>,
    query_names: Vec<String>,
    hide: bool,
    anonymous: Option<Arc<Consumer>>,
    challenge: HeaderValue,
}

/// Where the key was found, so it can be hidden from the upstream.
enum Found {
    Header(usize),
    Query(String),
}

impl KeyAuth {
    fn locate(&self, cx: &RequestCtx) -> Option<(Vec<u8>, Found)> {
        for (i, name) in self.headers.iter().enumerate() {
            if let Some(v) = cx.request.headers.get(name) {
                return Some((v.as_bytes().to_vec(), Found::Header(i)));
            }
        }
        let query = cx.request.uri.query()?;
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if self.query_names.iter().any(|n| n == name) {
                let key: Vec<u8> = percent_decode_str(&value.replace('+', " ")).collect();
                return Some((key, Found::Query(name.to_owned())));
            }
        }
        None
    }

    fn hide(&self, cx: &mut RequestCtx, found: Found) {
        match found {
            Found::Header(i) => {
                cx.request.headers.remove(&self.headers[i]);
            }
            Found::Query(name) => cx.request.uri = without_param(&cx.request.uri, &name),
        }
    }
}

#[async_trait]
impl Authenticator for KeyAuth {
    fn name(&self) -> &'static str {
        "key-auth"
    }
    fn challenge(&self) -> &HeaderValue {
        &self.challenge
    }
    fn anonymous(&self) -> Option<&Arc<Consumer>> {
        self.anonymous.as_ref()
    }
    async fn authenticate(&self, cx: &mut RequestCtx) -> AuthOutcome {
        let Some((key, found)) = self.locate(cx) else { return AuthOutcome::Missing };
        let Some(entry) = self.keys.find(&key) else { return AuthOutcome::Rejected("unknown key") };
        let who =
            Authenticated { consumer: entry.consumer.clone(), credential: Some(entry.id.clone()), anonymous: false };
        if self.hide {
            self.hide(cx, found);
        }
        AuthOutcome::Accepted(who)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{authenticator, context, request};
    use serde_json::json;

    fn consumers(keys: &[(&str, serde_json::Value)]) -> Consumers {
        crate::testing::consumers("key-auth", keys)
    }

    fn accepted(outcome: AuthOutcome) -> Authenticated {
        match outcome {
            AuthOutcome::Accepted(a) => a,
            AuthOutcome::Missing => panic!("missing"),
            AuthOutcome::Rejected(r) => panic!("rejected: {r}"),
        }
    }

    #[tokio::test]
    async fn header_and_query_keys() {
        let cx =
            context(consumers(&[("alice", json!({"key": "k-alice"})), ("bob", json!({"key": "k b", "id": "b1"}))]));
        let a = authenticator(&Factory, json!({}), &cx).unwrap();
        let who = accepted(a.authenticate(&mut request("/", &[("apikey", "k-alice")])).await);
        assert_eq!(&*who.consumer.username, "alice");
        assert_eq!(who.credential.unwrap(), "alice#0");
        let who = accepted(a.authenticate(&mut request("/x?a=1&apikey=k%20b", &[])).await);
        assert_eq!(who.credential.unwrap(), "b1");
        assert!(matches!(a.authenticate(&mut request("/", &[("apikey", "k-alicE")])).await, AuthOutcome::Rejected(_)));
        assert!(matches!(a.authenticate(&mut request("/", &[("apikey", "k-alic")])).await, AuthOutcome::Rejected(_)));
        assert!(matches!(a.authenticate(&mut request("/", &[("x-api-key", "k-alice")])).await, AuthOutcome::Missing));
    }

    #[tokio::test]
    async fn hidden_from_upstream() {
        let cx = context(consumers(&[("alice", json!({"key": "secret"}))]));
        let a =
            authenticator(&Factory, json!({"hide_credentials": true, "key_names": ["apikey", "x-key"]}), &cx).unwrap();
        let mut r = request("/p?x=1&apikey=secret&y=2", &[]);
        accepted(a.authenticate(&mut r).await);
        assert_eq!(r.request.uri, "/p?x=1&y=2");
        let mut r = request("/p", &[("x-key", "secret")]);
        accepted(a.authenticate(&mut r).await);
        assert!(!r.request.headers.contains_key("x-key"));
    }

    #[test]
    fn bad_credentials_are_located() {
        let err = |c: Consumers| match authenticator(&Factory, json!({}), &context(c)) {
            Err(e) => (e.in_document, e.to_string()),
            Ok(_) => panic!("accepted"),
        };
        let (doc, msg) = err(consumers(&[("a", json!({"key": "x"})), ("b", json!({"key": "x"}))]));
        assert!(doc);
        assert_eq!(msg, "consumers[1].credentials.key-auth[0].key: the same key is given twice; keys must be unique");
        let (_, msg) = err(consumers(&[("a", json!({"key": {"env": "MESHGATE_UNSET_KEY"}}))]));
        assert!(msg.contains("MESHGATE_UNSET_KEY is not set"), "{msg}");
        let (_, msg) = err(consumers(&[("a", json!({"kee": "x"}))]));
        assert!(msg.starts_with("consumers[0].credentials.key-auth[0]"), "{msg}");
        let e = authenticator(&Factory, json!({"anonymous": "nobody"}), &context(consumers(&[]))).err().unwrap();
        assert_eq!(e.to_string(), "anonymous: no consumer is named \"nobody\"");
    }
}
