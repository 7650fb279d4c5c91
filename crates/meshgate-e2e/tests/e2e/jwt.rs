//! `jwt` through the whole gateway: tokens signed by an inline HMAC key and by a key served from a
//! JWKS endpoint (fetched by the gateway's workers), identity headers upstream, 401s otherwise.

use bytes::Bytes;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use meshgate_e2e::client;
use meshgate_e2e::{TestGateway, Upstream, config};
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;

/// Serves `doc` at any path on a loopback port.
async fn jwks_server(doc: String) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let doc = Bytes::from(doc);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let doc = doc.clone();
            let svc = hyper::service::service_fn(move |_req| {
                let doc = doc.clone();
                async move { Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(doc))) }
            });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
            });
        }
    });
    addr
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: &str, claims: serde_json::Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    encode(&header, &claims, key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_from_inline_keys_and_jwks() {
    let up = Upstream::http("up").await;
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let es256 = EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap();
    let mut jwk = Jwk::from_encoding_key(&es256, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("idp-1".to_owned());
    let jwks = jwks_server(json!({"keys": [jwk]}).to_string()).await;
    let gw = TestGateway::start(&config(&format!(
        r#"
consumers:
  - {{username: alice, custom_id: u-1, groups: [admins]}}
services:
  - {{name: s, url: "http://{a}"}}
routes:
  - name: api
    service: s
    paths: ["/api"]
    plugins:
      - name: jwt
        config:
          keys: [{{kid: h1, algorithm: HS256, secret: e2e-secret}}]
          jwks_url: "http://{jwks}/.well-known/jwks.json"
          algorithms: [HS256, ES256]
          issuer: [https://idp.test]
          claims_to_headers: {{email: X-User-Email}}
          hide_credentials: true
"#,
        a = up.addr()
    )));
    let addr = gw.addr();
    let hs = EncodingKey::from_secret(b"e2e-secret");
    let claims = |sub: &str| json!({"sub": sub, "iss": "https://idp.test", "exp": now() + 600, "email": "a@idp.test"});

    // An inline-key token naming a declared consumer.
    let bearer = format!("Bearer {}", sign(Algorithm::HS256, &hs, "h1", claims("alice")));
    let spoofed = [("authorization", bearer.as_str()), ("x-user-email", "root@evil"), ("x-consumer-username", "root")];
    let resp = client::get_with(addr, "/api/x", &spoofed).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.seen_header("x-consumer-username").as_deref(), Some("alice"));
    assert_eq!(resp.seen_header("x-consumer-custom-id").as_deref(), Some("u-1"));
    assert_eq!(resp.seen_header("x-consumer-groups").as_deref(), Some("admins"));
    assert_eq!(resp.seen_header("x-credential-identifier").as_deref(), Some("https://idp.test"));
    assert_eq!(resp.seen_header("x-user-email").as_deref(), Some("a@idp.test"));
    assert_eq!(resp.seen_header("authorization"), None, "hidden from the upstream");

    // A JWKS-key token for a caller the config does not declare, fetched by a worker.
    let bearer = format!("Bearer {}", sign(Algorithm::ES256, &es256, "idp-1", claims("bob")));
    let resp = client::get_with(addr, "/api/y", &[("authorization", &bearer)]).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.seen_header("x-consumer-username").as_deref(), Some("bob"));
    assert_eq!(resp.seen_header("x-credential-identifier").as_deref(), Some("https://idp.test"));

    // No token: 401 with the challenge and a JSON body.
    let resp = client::get_with(addr, "/api/x", &[("x-consumer-username", "alice")]).await;
    resp.assert_error(401, "unauthorized");
    assert_eq!(resp.header("www-authenticate"), Some("Bearer realm=\"meshgate\""));

    // Invalid tokens: wrong key, expired, wrong issuer, unknown kid.
    let wrong_key = sign(Algorithm::HS256, &EncodingKey::from_secret(b"guess"), "h1", claims("alice"));
    let mut expired = claims("alice");
    expired["exp"] = json!(now() - 3600);
    let mut wrong_iss = claims("alice");
    wrong_iss["iss"] = json!("https://evil.test");
    let tokens = [
        wrong_key,
        sign(Algorithm::HS256, &hs, "h1", expired),
        sign(Algorithm::HS256, &hs, "h1", wrong_iss),
        sign(Algorithm::ES256, &es256, "idp-9", claims("bob")),
        "garbage".to_owned(),
    ];
    for token in tokens {
        let resp = client::get_with(addr, "/api/x", &[("authorization", &format!("Bearer {token}"))]).await;
        resp.assert_error(401, "invalid_credentials");
        assert_eq!(resp.header("www-authenticate"), Some("Bearer realm=\"meshgate\""));
    }
    assert_eq!(up.hits(), 2, "only the two valid requests reached the upstream");
}
