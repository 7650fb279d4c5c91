//! Unit tests of `jwt`: tokens signed here with keys made here, for every algorithm family.

use super::*;
use crate::testing::{authenticator, context, request};
use jsonwebtoken::{EncodingKey, encode};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::json;
use std::sync::OnceLock;

/// Seconds since the epoch.
pub(super) fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A signed token.
pub(super) fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: serde_json::Value) -> String {
    // Before jsonwebtoken's first use, so that the tests check tokens with ring, as production does.
    install_crypto();
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, &claims, key).unwrap()
}

/// One 2048-bit RSA key per test binary (private PKCS#8 PEM, public SPKI PEM).
pub(super) fn rsa_pems() -> &'static (String, String) {
    static KEY: OnceLock<(String, String)> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let private = key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
        let public = key.to_public_key().to_public_key_pem(LineEnding::LF).unwrap();
        (private, public)
    })
}

/// A fresh EC or Ed25519 key pair: (signing key, public SPKI PEM, raw public key).
pub(super) fn keypair(alg: &'static rcgen::SignatureAlgorithm) -> (EncodingKey, String, Vec<u8>) {
    let kp = rcgen::KeyPair::generate_for(alg).unwrap();
    let private = kp.serialize_pem();
    let signing = if alg == &rcgen::PKCS_ED25519 {
        EncodingKey::from_ed_pem(private.as_bytes())
    } else {
        EncodingKey::from_ec_pem(private.as_bytes())
    };
    (signing.unwrap(), kp.public_key_pem(), kp.public_key_raw().to_vec())
}

/// Claims valid for an hour.
pub(super) fn claims(sub: &str) -> serde_json::Value {
    json!({"sub": sub, "exp": now() + 3600, "iat": now()})
}

/// Consumers: alice (custom id u-1, group admins).
fn consumers() -> Consumers {
    let mut c = Consumers::new(std::env::temp_dir());
    c.add(Consumer::new("alice", Some("u-1"), vec!["admins".into()]), []).unwrap();
    c
}

/// The authenticator built from `config`, with [`consumers`].
pub(super) fn build(config: serde_json::Value) -> Arc<dyn Authenticator> {
    authenticator(&Factory, config, &context(consumers())).unwrap_or_else(|e| panic!("{e}"))
}

/// The outcome for a request with `Authorization: Bearer <token>`.
pub(super) async fn run(a: &dyn Authenticator, token: &str) -> AuthOutcome {
    a.authenticate(&mut request("/", &[("authorization", &format!("Bearer {token}"))])).await
}

/// The accepted identity, or a panic saying why not.
pub(super) fn accepted(outcome: AuthOutcome) -> Authenticated {
    match outcome {
        AuthOutcome::Accepted(a) => a,
        AuthOutcome::Missing => panic!("missing"),
        AuthOutcome::Rejected(r) => panic!("rejected: {r}"),
    }
}

/// The rejection reason, or a panic.
pub(super) fn rejected(outcome: AuthOutcome) -> &'static str {
    match outcome {
        AuthOutcome::Accepted(a) => panic!("accepted as {}", a.consumer.username),
        AuthOutcome::Missing => panic!("missing"),
        AuthOutcome::Rejected(r) => r,
    }
}

/// An HMAC signing key.
fn hs(secret: &str) -> EncodingKey {
    EncodingKey::from_secret(secret.as_bytes())
}

#[tokio::test]
async fn hmac_family() {
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let a = build(json!({"keys": [{"algorithm": format!("{alg:?}"), "secret": "s3cret", "kid": "h1"}]}));
        let who = accepted(run(&*a, &sign(alg, &hs("s3cret"), Some("h1"), claims("bob"))).await);
        assert_eq!(&*who.consumer.username, "bob", "{alg:?}");
        assert_eq!(who.credential.unwrap(), "h1", "the kid when there is no iss");
        assert_eq!(rejected(run(&*a, &sign(alg, &hs("other"), Some("h1"), claims("bob"))).await), "bad signature");
        // A key without kid is tried for tokens with any kid, or none.
        let a = build(json!({"keys": [{"algorithm": format!("{alg:?}"), "secret": "s3cret"}]}));
        accepted(run(&*a, &sign(alg, &hs("s3cret"), None, claims("bob"))).await);
        accepted(run(&*a, &sign(alg, &hs("s3cret"), Some("any"), claims("bob"))).await);
        assert_eq!(rejected(run(&*a, &sign(alg, &hs("nope"), None, claims("bob"))).await), "bad signature");
    }
    // Base64 secrets (URL-safe, unpadded) are decoded.
    let a = build(json!({"keys": [{"algorithm": "HS256", "secret": "_-8", "secret_base64": true}]}));
    let key = EncodingKey::from_secret(&[0xff, 0xef]);
    accepted(run(&*a, &sign(Algorithm::HS256, &key, None, claims("bob"))).await);
}

#[tokio::test]
async fn public_key_families() {
    let (rsa_private, rsa_public) = rsa_pems();
    let rsa = EncodingKey::from_rsa_pem(rsa_private.as_bytes()).unwrap();
    let (es256, es256_pub, _) = keypair(&rcgen::PKCS_ECDSA_P256_SHA256);
    let (es384, es384_pub, _) = keypair(&rcgen::PKCS_ECDSA_P384_SHA384);
    let (ed, ed_pub, _) = keypair(&rcgen::PKCS_ED25519);
    let a = build(json!({"keys": [
        {"kid": "rs", "algorithm": "RS256", "public_key": rsa_public},
        {"kid": "ps", "algorithm": "PS256", "public_key": rsa_public},
        {"kid": "e2", "algorithm": "ES256", "public_key": es256_pub},
        {"kid": "e3", "algorithm": "ES384", "public_key": es384_pub},
        {"kid": "ed", "algorithm": "EdDSA", "public_key": ed_pub},
    ]}));
    let cases = [
        (Algorithm::RS256, &rsa, "rs"),
        (Algorithm::PS256, &rsa, "ps"),
        (Algorithm::ES256, &es256, "e2"),
        (Algorithm::ES384, &es384, "e3"),
        (Algorithm::EdDSA, &ed, "ed"),
    ];
    for (alg, key, kid) in cases {
        let who = accepted(run(&*a, &sign(alg, key, Some(kid), claims("carol"))).await);
        assert_eq!(who.credential.unwrap(), kid, "{alg:?}");
    }
    // Each key verifies its own algorithm only: PS256 under the RS256 key's kid is refused.
    let t = sign(Algorithm::PS256, &rsa, Some("rs"), claims("carol"));
    assert_eq!(rejected(run(&*a, &t).await), "algorithm does not match the key");
    // Another key pair of the same kind does not verify.
    let (other, _, _) = keypair(&rcgen::PKCS_ECDSA_P256_SHA256);
    assert_eq!(rejected(run(&*a, &sign(Algorithm::ES256, &other, Some("e2"), claims("c"))).await), "bad signature");
    // A changed payload breaks the signature.
    let t = sign(Algorithm::RS256, &rsa, Some("rs"), claims("carol"));
    let forged = sign(Algorithm::HS256, &hs("x"), Some("rs"), claims("admin"));
    let parts: Vec<&str> = t.split('.').collect();
    let forged_payload = forged.split('.').nth(1).unwrap();
    let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert_eq!(rejected(run(&*a, &tampered).await), "bad signature");
    assert_eq!(rejected(run(&*a, &sign(Algorithm::RS256, &rsa, Some("zz"), claims("c"))).await), "unknown kid");
}

#[tokio::test]
async fn algorithm_confusion_and_none() {
    let (_, rsa_public) = rsa_pems();
    // The classic attack: HS256 with the RSA public key (which the attacker knows) as secret.
    let forged = |kid| sign(Algorithm::HS256, &hs(rsa_public), kid, claims("admin"));
    let a = build(json!({"keys": [{"kid": "r1", "algorithm": "RS256", "public_key": rsa_public}]}));
    assert_eq!(rejected(run(&*a, &forged(Some("r1"))).await), "algorithm not allowed");
    // Even when HS256 is allowed (for another key), the RSA key never verifies it.
    let a = build(json!({
        "algorithms": ["RS256", "HS256"],
        "keys": [{"kid": "r1", "algorithm": "RS256", "public_key": rsa_public},
                 {"kid": "h1", "algorithm": "HS256", "secret": "hmac-secret"},
                 {"algorithm": "RS256", "public_key": rsa_public}],
    }));
    assert_eq!(rejected(run(&*a, &forged(Some("r1"))).await), "algorithm does not match the key");
    assert!(matches!(run(&*a, &forged(None)).await, AuthOutcome::Rejected(_)));
    assert_eq!(rejected(run(&*a, &forged(Some("h1"))).await), "bad signature");
    // `alg: none`, unsigned.
    let b64 = |v: serde_json::Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!("{}.{}.", b64(json!({"alg": "none", "typ": "JWT"})), b64(claims("admin")));
    assert_eq!(rejected(run(&*a, &none).await), "malformed token");
    let none_kid = format!("{}.{}.", b64(json!({"alg": "none", "kid": "h1"})), b64(claims("admin")));
    assert_eq!(rejected(run(&*a, &none_kid).await), "malformed token");
    assert_eq!(rejected(run(&*a, "not-a-token").await), "malformed token");
    // `algorithms` narrows what the keys allow.
    let a = build(json!({"algorithms": ["HS512"], "keys": [{"algorithm": "HS256", "secret": "s"}]}));
    assert_eq!(rejected(run(&*a, &sign(Algorithm::HS256, &hs("s"), None, claims("b"))).await), "algorithm not allowed");
}

#[tokio::test]
async fn time_claims() {
    let key = json!([{"algorithm": "HS256", "secret": "s"}]);
    let a = build(json!({"keys": key}));
    let t = |c: serde_json::Value| sign(Algorithm::HS256, &hs("s"), None, c);
    let n = now();
    assert_eq!(rejected(run(&*a, &t(json!({"sub": "b", "exp": n - 120}))).await), "token expired");
    accepted(run(&*a, &t(json!({"sub": "b", "exp": n - 10}))).await);
    assert_eq!(rejected(run(&*a, &t(json!({"sub": "b", "exp": n + 60, "nbf": n + 120}))).await), "token not yet valid");
    accepted(run(&*a, &t(json!({"sub": "b", "exp": n + 60, "nbf": n + 10}))).await);
    assert_eq!(rejected(run(&*a, &t(json!({"sub": "b"}))).await), "missing required claim");
    // Skew is configurable; required claims may be any claim.
    let a = build(json!({"keys": key, "clock_skew": "0s", "required_claims": ["exp", "email"]}));
    assert_eq!(rejected(run(&*a, &t(json!({"sub": "b", "exp": n - 10, "email": "e"}))).await), "token expired");
    assert_eq!(rejected(run(&*a, &t(json!({"sub": "b", "exp": n + 60}))).await), "missing required claim");
    accepted(run(&*a, &t(json!({"sub": "b", "exp": n + 60, "email": "e"}))).await);
    let a = build(json!({"keys": key, "required_claims": []}));
    accepted(run(&*a, &t(json!({"sub": "b"}))).await);
    assert_eq!(rejected(run(&*a, &t(json!({"exp": n + 60}))).await), "no consumer claim");
}

#[tokio::test]
async fn issuer_and_audience() {
    let a = build(json!({
        "keys": [{"algorithm": "HS256", "secret": "s"}],
        "issuer": ["https://idp.example", "https://idp2.example"],
        "audience": ["api"],
    }));
    let t = |c: serde_json::Value| sign(Algorithm::HS256, &hs("s"), None, c);
    let exp = now() + 60;
    let who =
        accepted(run(&*a, &t(json!({"sub": "b", "exp": exp, "iss": "https://idp2.example", "aud": "api"}))).await);
    assert_eq!(who.credential.unwrap(), "https://idp2.example", "the issuer identifies the credential");
    accepted(run(&*a, &t(json!({"sub": "b", "exp": exp, "iss": "https://idp.example", "aud": ["x", "api"]}))).await);
    let wrong_iss = json!({"sub": "b", "exp": exp, "iss": "https://evil.example", "aud": "api"});
    assert_eq!(rejected(run(&*a, &t(wrong_iss)).await), "wrong issuer");
    let no_iss = json!({"sub": "b", "exp": exp, "aud": "api"});
    assert_eq!(rejected(run(&*a, &t(no_iss)).await), "missing required claim");
    let wrong_aud = json!({"sub": "b", "exp": exp, "iss": "https://idp.example", "aud": ["other"]});
    assert_eq!(rejected(run(&*a, &t(wrong_aud)).await), "wrong audience");
    let no_aud = json!({"sub": "b", "exp": exp, "iss": "https://idp.example"});
    assert_eq!(rejected(run(&*a, &t(no_aud)).await), "missing required claim");
    // Without `audience`, tokens with any `aud` pass.
    let a = build(json!({"keys": [{"algorithm": "HS256", "secret": "s"}]}));
    accepted(run(&*a, &t(json!({"sub": "b", "exp": exp, "aud": "whatever"}))).await);
}

#[tokio::test]
async fn consumers_and_groups() {
    let key = json!([{"algorithm": "HS256", "secret": "s"}]);
    let t = |c: serde_json::Value| sign(Algorithm::HS256, &hs("s"), None, c);
    let exp = now() + 60;
    let a = build(json!({"keys": key, "groups_claim": "roles"}));
    // Declared consumers, by username or custom id, keep their configured groups.
    let who = accepted(run(&*a, &t(json!({"sub": "alice", "exp": exp, "roles": ["x"]}))).await);
    assert_eq!((&*who.consumer.username, who.consumer.in_group("admins")), ("alice", true));
    assert!(!who.consumer.in_group("x"));
    let who = accepted(run(&*a, &t(json!({"sub": "u-1", "exp": exp}))).await);
    assert_eq!(&*who.consumer.username, "alice");
    // Others exist for the request, with the token's groups (a list or a space-separated string).
    let who = accepted(run(&*a, &t(json!({"sub": "dave", "exp": exp, "roles": ["ops", "dev"]}))).await);
    assert_eq!(&*who.consumer.username, "dave");
    assert_eq!(who.consumer.groups.iter().map(|g| &**g).collect::<Vec<_>>(), ["ops", "dev"]);
    let who = accepted(run(&*a, &t(json!({"sub": "erin", "exp": exp, "roles": "read write"}))).await);
    assert!(who.consumer.in_group("write"));
    // Another claim may name the consumer; require_consumer refuses unknown ones.
    let a = build(json!({"keys": key, "consumer_claim": "email", "require_consumer": true}));
    let who = accepted(run(&*a, &t(json!({"sub": "zed", "email": "alice", "exp": exp}))).await);
    assert_eq!(&*who.consumer.username, "alice");
    assert_eq!(rejected(run(&*a, &t(json!({"email": "mallory", "exp": exp}))).await), "unknown consumer");
    assert_eq!(rejected(run(&*a, &t(json!({"sub": "alice", "exp": exp}))).await), "no consumer claim");
}

#[tokio::test]
async fn claims_to_headers_replace_client_copies() {
    let a = build(json!({
        "keys": [{"algorithm": "HS256", "secret": "s"}],
        "claims_to_headers": {"email": "X-User-Email", "tier": "X-Tier", "roles": "X-Roles"},
    }));
    let token = sign(
        Algorithm::HS256,
        &hs("s"),
        None,
        json!({"sub": "b", "exp": now() + 60, "email": "b@x", "tier": 3, "roles": ["a", "b"]}),
    );
    let auth = format!("Bearer {token}");
    let mut r = request("/", &[("authorization", &auth), ("x-user-email", "admin@x"), ("x-tier", "9")]);
    accepted(a.authenticate(&mut r).await);
    let h = &r.request.headers;
    assert_eq!([&h["x-user-email"], &h["x-tier"], &h["x-roles"]], ["b@x", "3", "a, b"]);
    assert_eq!(h.get_all("x-user-email").iter().count(), 1);
    assert!(h.contains_key("authorization"), "kept unless hide_credentials");
    // A token without the claim: the client's copy is gone all the same.
    let token = sign(Algorithm::HS256, &hs("s"), None, json!({"sub": "b", "exp": now() + 60}));
    let auth = format!("Bearer {token}");
    let mut r = request("/", &[("authorization", &auth), ("x-user-email", "admin@x")]);
    accepted(a.authenticate(&mut r).await);
    assert!(!r.request.headers.contains_key("x-user-email"));
    // And without a token (another method or the anonymous consumer may let the request in).
    let mut r = request("/", &[("x-user-email", "admin@x")]);
    assert!(matches!(a.authenticate(&mut r).await, AuthOutcome::Missing));
    assert!(!r.request.headers.contains_key("x-user-email"));
}

#[tokio::test]
async fn sources_and_hiding() {
    let token = sign(Algorithm::HS256, &hs("s"), None, claims("b"));
    let a = build(json!({
        "keys": [{"algorithm": "HS256", "secret": "s"}],
        "header_names": ["authorization", "x-token"],
        "query_param_names": ["jwt"],
        "cookie_names": ["session"],
        "hide_credentials": true,
    }));
    let mut r = request("/", &[("authorization", &format!("bearer  {token}"))]);
    accepted(a.authenticate(&mut r).await);
    assert!(!r.request.headers.contains_key("authorization"));
    let mut r = request("/", &[("x-token", &format!("Bearer {token}"))]);
    accepted(a.authenticate(&mut r).await);
    assert!(!r.request.headers.contains_key("x-token"));
    let mut r = request(&format!("/p?a=1&jwt={token}&b=2"), &[]);
    accepted(a.authenticate(&mut r).await);
    assert_eq!(r.request.uri, "/p?a=1&b=2");
    let mut r = request("/", &[("cookie", &format!("theme=dark; session={token}; lang=en"))]);
    accepted(a.authenticate(&mut r).await);
    assert_eq!(r.request.headers["cookie"], "theme=dark; lang=en");
    let mut r = request("/", &[("cookie", &format!("session={token}"))]);
    accepted(a.authenticate(&mut r).await);
    assert!(!r.request.headers.contains_key("cookie"));
    // Other schemes and other names are not this method's credentials.
    let mut r = request("/?apikey=x", &[("authorization", "Basic YTpi"), ("cookie", "sess=1")]);
    assert!(matches!(a.authenticate(&mut r).await, AuthOutcome::Missing));
    assert!(r.request.headers.contains_key("authorization"), "left for the other methods");
    // By default only the Authorization header is read.
    let a = build(json!({"keys": [{"algorithm": "HS256", "secret": "s"}]}));
    let mut r = request(&format!("/?jwt={token}"), &[("cookie", &format!("session={token}"))]);
    assert!(matches!(a.authenticate(&mut r).await, AuthOutcome::Missing));
    let mut r = request("/", &[("authorization", &format!("Bearer {token}"))]);
    accepted(a.authenticate(&mut r).await);
    assert!(r.request.headers.contains_key("authorization"));
}

#[test]
fn config_errors_name_the_field() {
    let err = |config: serde_json::Value| match authenticator(&Factory, config, &context(consumers())) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted"),
    };
    let (_, rsa_public) = rsa_pems();
    let hs = json!({"algorithm": "HS256", "secret": "s"});
    assert_eq!(err(json!({})), "keys: give `keys`, `jwks_url` or both");
    assert!(
        err(json!({"keys": [{"algorithm": "HS256", "public_key": rsa_public}]})).starts_with("keys[0].public_key:")
    );
    assert_eq!(err(json!({"keys": [{"algorithm": "HS256"}]})), "keys[0].secret: required for HMAC algorithms");
    assert!(err(json!({"keys": [hs, {"algorithm": "RS256", "secret": "s"}]})).starts_with("keys[1].secret:"));
    assert!(
        err(json!({"keys": [{"algorithm": "ES256", "public_key": rsa_public}]})).starts_with("keys[0].public_key:")
    );
    assert!(
        err(json!({"keys": [{"algorithm": "RS256", "public_key": "junk"}]}))
            .starts_with("keys[0].public_key: not a PEM")
    );
    assert!(err(json!({"keys": [{"algorithm": "none", "secret": "s"}]})).starts_with("keys[0].algorithm:"));
    assert!(err(json!({"keys": [hs], "algorithms": ["none"]})).starts_with("algorithms[0]:"));
    assert!(
        err(json!({"keys": [{"algorithm": "HS256", "secret": {"env": "MESHGATE_UNSET_JWT"}}]}))
            .contains("MESHGATE_UNSET_JWT")
    );
    assert_eq!(
        err(
            json!({"keys": [{"kid": "a", "algorithm": "HS256", "secret": "s"}, {"kid": "a", "algorithm": "HS384", "secret": "t"}]})
        ),
        "keys[1].kid: kid \"a\" is given twice"
    );
    assert!(err(json!({"keys": [hs], "clock_skew": "soon"})).starts_with("clock_skew: invalid duration"));
    assert!(err(json!({"jwks_url": "ftp://idp/keys"})).starts_with("jwks_url:"));
    assert_eq!(err(json!({"jwks_url": "https://idp/keys", "jwks_timeout": 0})), "jwks_timeout: must be more than zero");
    assert_eq!(
        err(json!({"keys": [hs], "claims_to_headers": {"email": "bad header"}})),
        "claims_to_headers.email: not a valid header name"
    );
    assert_eq!(
        err(json!({"keys": [hs], "header_names": ["ok", "no way"]})),
        "header_names[1]: not a valid header name"
    );
    assert!(err(json!({"keys": [hs], "header_names": []})).starts_with("header_names: name at least one place"));
    assert!(err(json!({"keys": [hs], "algorithms": []})).starts_with("algorithms: allow at least one"));
    assert!(err(json!({"keys": [hs], "issuers": ["x"]})).contains("unknown field `issuers`"));
    assert_eq!(err(json!({"keys": [hs], "anonymous": "nobody"})), "anonymous: no consumer is named \"nobody\"");
    assert!(
        authenticator(&Factory, json!({"keys": [hs], "anonymous": "alice"}), &context(consumers()))
            .unwrap()
            .anonymous()
            .is_some()
    );
}

#[test]
fn remembered_until_ttl_or_exp() {
    let t = std::time::Instant::now();
    let s = std::time::Duration::from_secs;
    assert_eq!(remember_until(t, 1000, Some(1100), s(60)), Some(t + s(60)));
    assert_eq!(remember_until(t, 1000, Some(1010), s(60)), Some(t + s(10)), "never past exp");
    assert_eq!(remember_until(t, 1000, Some(1000), s(60)), None, "valid only within the clock skew");
    assert_eq!(remember_until(t, 1000, None, s(60)), Some(t + s(60)));
    assert_eq!(remember_until(t, 1000, None, s(0)), None);
}

#[tokio::test]
async fn a_remembered_token_still_expires() {
    let a = build(json!({"keys": [{"algorithm": "HS256", "secret": "0123456789abcdef0123456789abcdef"}],
                         "clock_skew": "0s", "claims_to_headers": {"email": "x-email"}}));
    let token = sign(
        Algorithm::HS256,
        &hs("0123456789abcdef0123456789abcdef"),
        None,
        json!({"sub": "alice", "email": "a@example.com", "exp": now() + 1}),
    );
    // Verified, then served from the cache with the same headers.
    for _ in 0..2 {
        let mut r = request("/", &[("authorization", &format!("Bearer {token}")), ("x-email", "spoof")]);
        assert_eq!(&*accepted(a.authenticate(&mut r).await).consumer.username, "alice");
        assert_eq!(r.request.headers["x-email"], "a@example.com");
    }
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(rejected(run(a.as_ref(), &token).await), "token expired");
}
