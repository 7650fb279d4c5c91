//! Credentials in request heads: `key-auth` (key in a header or a query argument, removed from
//! the request with `hide_credentials`) through its authenticator, and basic-auth's decoding of
//! `Authorization: Basic …`. The input is a request head (`METHOD URI`, then `name: value`
//! lines). Invariants: only a configured key is accepted, hiding it leaves the path and the
//! other query arguments as they were, and decoded Basic credentials encode back to the header.
#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use meshgate_core::{AuthOutcome, Built, Consumer, Consumers, CredentialEntry};
use meshgate_fuzz::{block_on, build, build_context, parse_head, request_ctx};
use meshgate_plugins::auth::key_auth::Factory;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let head = parse_head(text);
    for value in head.headers.get_all(http::header::AUTHORIZATION) {
        basic(value);
    }
    static KEY_AUTH: OnceLock<Built> = OnceLock::new();
    let Built::Authenticator(auth) = KEY_AUTH.get_or_init(key_auth) else { unreachable!() };
    let before = head.uri.clone();
    let mut cx = request_ctx(head);
    if let AuthOutcome::Accepted(who) = block_on(auth.authenticate(&mut cx)) {
        assert!(["alice", "bob"].contains(&&*who.consumer.username));
        let after = &cx.request.uri;
        assert_eq!(after.path(), before.path());
        let kept: Vec<&str> = before.query().unwrap_or("").split('&').filter(|p| !p.is_empty()).collect();
        for pair in after.query().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            assert!(kept.contains(&pair), "{pair:?} was not in {before}, now {after}");
        }
    }
});

/// Alice's key is in plain ASCII, Bob's has characters a query must percent-encode.
fn key_auth() -> Built {
    let mut consumers = Consumers::new(std::env::temp_dir());
    for (i, (name, key)) in [("alice", "k-alice"), ("bob", "k b+é")].into_iter().enumerate() {
        let entry = CredentialEntry {
            field: format!("consumers[{i}].credentials.key-auth[0]"),
            value: serde_json::json!({"key": key}),
        };
        consumers.add(Consumer::new(name, None, vec![]), [("key-auth".to_owned(), entry)]).expect("a consumer");
    }
    let config = serde_json::json!({"key_names": ["apikey", "x-api-key"], "hide_credentials": true});
    build(&Factory, &config, &build_context(consumers)).expect("key-auth builds")
}

/// A decoded `Basic` header is the standard base64 of `user:password`, so encoding it again gives
/// the header's credentials back.
fn basic(value: &http::HeaderValue) {
    let Some(Ok((user, password))) = meshgate_plugins::fuzzing::basic_credentials(value) else { return };
    assert!(!user.contains(':'));
    let mut plain = user.into_bytes();
    plain.push(b':');
    plain.extend_from_slice(&password);
    let encoded = base64::engine::general_purpose::STANDARD.encode(plain);
    assert_eq!(encoded.as_bytes(), value.as_bytes()[6..].trim_ascii());
}
