//! JWT decoding and verification through the `jwt` authenticator, with fixed keys: an HS256
//! secret and an ES256 public key (`kid: ec1`). Input `sign KEY\nHEADER\nCLAIMS\nHEAD…` makes a
//! token from the header and claims JSON, signed with HMAC-SHA256 by KEY (`secret`: the
//! configured secret; `pem`: the ES256 public key's PEM, the classic algorithm-confusion forgery;
//! anything else: that text as the secret) and sends it as `Authorization: Bearer`; any other
//! input is a request head (`METHOD URI`, then `name: value` lines) whose token is used as it is.
//! Invariants: only a token signed with the configured secret, naming HS256, with a current
//! `exp` and a non-empty `sub` is accepted; claim headers only ever come from such a token.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use meshgate_core::{AuthOutcome, Built, Consumers};
use meshgate_fuzz::{block_on, build, build_context, parse_head, request_ctx};
use meshgate_plugins::auth::jwt::Factory;
use serde_json::Value;
use std::sync::OnceLock;

const SECRET: &str = "fuzz-secret";
const EC_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEAfFXdpB2MUUUZH/qrbpBm+cRkz1m
fO7/Rr9X+jNOcY14Gpv3RBpaKiH+7aePHN06aZCqtHIKhSmGzFXEIVzMYA==
-----END PUBLIC KEY-----
";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (head, signed) = match text.strip_prefix("sign ") {
        Some(rest) => {
            let mut lines = rest.splitn(4, '\n');
            let (key, header, claims) =
                (lines.next().unwrap_or(""), lines.next().unwrap_or(""), lines.next().unwrap_or(""));
            let mut head = parse_head(lines.next().unwrap_or(""));
            let secret = match key {
                "secret" => SECRET,
                "pem" => EC_PUBLIC,
                other => other,
            };
            let token = sign(secret, header, claims);
            let Ok(value) = http::HeaderValue::from_str(&format!("Bearer {token}")) else { return };
            head.headers.insert(http::header::AUTHORIZATION, value);
            (head, (secret == SECRET).then_some((header, claims)))
        }
        None => (parse_head(text), None),
    };
    static JWT: OnceLock<Built> = OnceLock::new();
    let Built::Authenticator(jwt) = JWT.get_or_init(jwt) else { unreachable!() };
    let mut cx = request_ctx(head);
    let outcome = block_on(jwt.authenticate(&mut cx));
    let accepted = matches!(outcome, AuthOutcome::Accepted(_));
    if accepted || cx.request.headers.contains_key("x-user") {
        let Some((header, claims)) = signed else { panic!("a token nobody signed was accepted") };
        let header: Value = serde_json::from_str(header).expect("the header was JSON");
        let claims: Value = serde_json::from_str(claims).expect("the claims were JSON");
        assert_eq!(header["alg"], "HS256", "accepted with {header}");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let exp = claims["exp"].as_f64().expect("accepted without a numeric exp");
        assert!(exp + 30.0 + 2.0 >= now, "accepted an expired token: {claims}");
        assert!(claims["sub"].as_str().is_some_and(|s| !s.is_empty()), "accepted without a sub: {claims}");
    }
});

fn jwt() -> Built {
    let config = serde_json::json!({
        "keys": [
            {"algorithm": "HS256", "secret": SECRET},
            {"algorithm": "ES256", "public_key": EC_PUBLIC, "kid": "ec1"},
        ],
        "claims_to_headers": {"sub": "x-user", "groups": "x-groups", "n": "x-n"},
        "groups_claim": "groups",
        "query_param_names": ["jwt"],
        "cookie_names": ["jwt"],
        "hide_credentials": true,
        "cache_ttl": "0s",
    });
    build(&Factory, &config, &build_context(Consumers::default())).expect("jwt builds")
}

/// `base64url(header).base64url(claims).HMAC-SHA256(secret)` as JWS compact serialization.
fn sign(secret: &str, header: &str, claims: &str) -> String {
    let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes()), input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}
