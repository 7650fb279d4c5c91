//! Tests of `jwt` with a JWKS endpoint: a real HTTP server on the loopback, counting its requests.

use super::tests::{accepted, build, claims, keypair, rejected, rsa_pems, run, sign};
use crate::testing::{authenticator, context};
use base64::Engine;
use bytes::Bytes;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use meshgate_core::Consumers;
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A JWKS endpoint serving whatever `doc` holds, counting requests.
struct Server {
    addr: SocketAddr,
    doc: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
}

impl Server {
    /// Serves `doc` on a free loopback port.
    async fn start(doc: serde_json::Value) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Server {
            addr: listener.local_addr().unwrap(),
            doc: Arc::new(Mutex::new(doc.to_string())),
            hits: Arc::default(),
        };
        let (doc, hits) = (server.doc.clone(), server.hits.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (doc, hits) = (doc.clone(), hits.clone());
                let svc = hyper::service::service_fn(move |_req| {
                    hits.fetch_add(1, Ordering::SeqCst);
                    let body = Bytes::from(doc.lock().unwrap().clone());
                    async move { Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(body))) }
                });
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
                });
            }
        });
        server
    }

    /// The document's URL.
    fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    /// Requests served so far.
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Serves `doc` from now on.
    fn serve(&self, doc: serde_json::Value) {
        *self.doc.lock().unwrap() = doc.to_string();
    }
}

/// A P-256 key: its signing key and its JWK with `kid`.
fn es256(kid: &str) -> (EncodingKey, serde_json::Value) {
    let (signing, _, _) = keypair(&rcgen::PKCS_ECDSA_P256_SHA256);
    let mut jwk = Jwk::from_encoding_key(&signing, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    (signing, serde_json::to_value(jwk).unwrap())
}

#[tokio::test]
async fn key_families_from_jwks() {
    let rsa = EncodingKey::from_rsa_pem(rsa_pems().0.as_bytes()).unwrap();
    let mut rsa_jwk = serde_json::to_value(Jwk::from_encoding_key(&rsa, Algorithm::RS256).unwrap()).unwrap();
    rsa_jwk["kid"] = json!("r1");
    rsa_jwk.as_object_mut().unwrap().remove("alg"); // no `alg`: any RSA algorithm
    let (es, es_jwk) = es256("e1");
    let (es384, _, raw384) = keypair(&rcgen::PKCS_ECDSA_P384_SHA384);
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let p384_jwk = json!({"kty": "EC", "crv": "P-384", "kid": "e3", "x": b64(&raw384[1..49]), "y": b64(&raw384[49..])});
    let (ed, _, ed_raw) = keypair(&rcgen::PKCS_ED25519);
    let ed_jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": "d1", "x": b64(&ed_raw), "use": "sig"});
    let enc_jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": "enc", "x": b64(&ed_raw), "use": "enc"});
    let oct_jwk = json!({"kty": "oct", "kid": "h1", "k": b64(b"shared-secret"), "alg": "HS256"});
    let weird = json!({"kty": "XYZ", "kid": "w"});
    let server = Server::start(json!({"keys": [rsa_jwk, es_jwk, p384_jwk, ed_jwk, enc_jwk, oct_jwk, weird]})).await;
    // HS256 allowed, so that only the JWKS loader can keep the `oct` key out.
    let a =
        build(json!({"jwks_url": server.url(), "algorithms": ["RS256", "PS512", "ES256", "ES384", "EdDSA", "HS256"]}));
    accepted(run(&*a, &sign(Algorithm::RS256, &rsa, Some("r1"), claims("b"))).await);
    accepted(run(&*a, &sign(Algorithm::PS512, &rsa, Some("r1"), claims("b"))).await);
    accepted(run(&*a, &sign(Algorithm::ES256, &es, Some("e1"), claims("b"))).await);
    accepted(run(&*a, &sign(Algorithm::ES384, &es384, Some("e3"), claims("b"))).await);
    let who = accepted(run(&*a, &sign(Algorithm::EdDSA, &ed, Some("d1"), claims("b"))).await);
    assert_eq!(who.credential.unwrap(), "d1");
    accepted(run(&*a, &sign(Algorithm::EdDSA, &ed, None, claims("b"))).await);
    assert_eq!(server.hits(), 1, "one fetch serves every key");
    let hs = EncodingKey::from_secret(b"shared-secret");
    assert_eq!(rejected(run(&*a, &sign(Algorithm::HS256, &hs, Some("h1"), claims("b"))).await), "unknown kid");
    assert_eq!(rejected(run(&*a, &sign(Algorithm::EdDSA, &ed, Some("enc"), claims("b"))).await), "unknown kid");
    // Confusion through the JWKS: HS256 with the EC key's kid.
    let t = sign(Algorithm::HS256, &EncodingKey::from_secret(b"x"), Some("e1"), claims("b"));
    assert_eq!(rejected(run(&*a, &t).await), "algorithm does not match the key");
    // By default, only public-key algorithms are allowed with a JWKS.
    let a = build(json!({"jwks_url": server.url()}));
    assert_eq!(
        rejected(run(&*a, &sign(Algorithm::HS256, &hs, Some("h1"), claims("b"))).await),
        "algorithm not allowed"
    );
}

#[tokio::test]
async fn single_flight_and_the_refetch_floor() {
    let (k1, jwk1) = es256("k1");
    let server = Server::start(json!({"keys": [jwk1]})).await;
    // Default floor: 30s.
    let a = build(json!({"jwks_url": server.url()}));
    // A burst of tokens before any key is known: one fetch for all (single flight).
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (a, kid) = (a.clone(), if i % 2 == 0 { "k1".to_owned() } else { format!("made-up-{i}") });
        let token = sign(Algorithm::ES256, &k1, Some(&kid), claims("b"));
        tasks.push(tokio::spawn(async move { matches!(run(&*a, &token).await, super::AuthOutcome::Accepted(_)) }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap());
    }
    assert_eq!((ok, server.hits()), (10, 1));
    // Unknown kids within the floor: refused without asking the server.
    for i in 0..20 {
        let t = sign(Algorithm::ES256, &k1, Some(&format!("other-{i}")), claims("b"));
        assert_eq!(rejected(run(&*a, &t).await), "unknown kid");
    }
    assert_eq!(server.hits(), 1, "the floor holds");
}

#[tokio::test]
async fn routes_share_an_endpoint() {
    let (k1, jwk1) = es256("k1");
    let server = Server::start(json!({"keys": [jwk1]})).await;
    let cx = context(Consumers::default());
    let route = |config| authenticator(&super::Factory, config, &cx).unwrap();
    let (a, b) = (route(json!({"jwks_url": server.url()})), route(json!({"jwks_url": server.url(), "issuer": ["x"]})));
    let other_timing = route(json!({"jwks_url": server.url(), "jwks_timeout": "2s"}));
    let t = sign(Algorithm::ES256, &k1, Some("k1"), claims("b"));
    accepted(run(&*a, &t).await);
    assert_eq!(rejected(run(&*b, &t).await), "missing required claim", "verified with the shared keys");
    assert_eq!(server.hits(), 1);
    accepted(run(&*other_timing, &t).await);
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn rotation() {
    let (k1, jwk1) = es256("k1");
    let (k2, jwk2) = es256("k2");
    let server = Server::start(json!({"keys": [jwk1]})).await;
    let a = build(json!({"jwks_url": server.url(), "jwks_min_refresh_interval": "1s"}));
    let (t1, t2) =
        (sign(Algorithm::ES256, &k1, Some("k1"), claims("b")), sign(Algorithm::ES256, &k2, Some("k2"), claims("b")));
    accepted(run(&*a, &t1).await);
    // The provider rotates to k2: within the floor, k2 is not known yet.
    server.serve(json!({"keys": [jwk2]}));
    assert_eq!(rejected(run(&*a, &t2).await), "unknown kid");
    assert_eq!(server.hits(), 1);
    // Once the floor has passed, the unknown kid makes the keys be fetched again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    accepted(run(&*a, &t2).await);
    assert_eq!(server.hits(), 2);
    accepted(run(&*a, &t2).await);
    assert_eq!(rejected(run(&*a, &t1).await), "unknown kid", "k1 is gone");
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn stale_keys_refresh_in_the_background() {
    let (k1, jwk1) = es256("k1");
    let server = Server::start(json!({"keys": [jwk1]})).await;
    let a =
        build(json!({"jwks_url": server.url(), "jwks_refresh_interval": "300ms", "jwks_min_refresh_interval": "0s"}));
    let t = sign(Algorithm::ES256, &k1, Some("k1"), claims("b"));
    accepted(run(&*a, &t).await);
    assert_eq!(server.hits(), 1);
    tokio::time::sleep(Duration::from_millis(350)).await;
    // Stale: this request is served with the known keys and starts a refresh.
    accepted(run(&*a, &t).await);
    for _ in 0..50 {
        if server.hits() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.hits(), 2);
    accepted(run(&*a, &t).await);
    assert_eq!(server.hits(), 2, "fresh again");
}

#[tokio::test]
async fn provider_down_is_a_rejection() {
    let (k1, _) = es256("k1");
    let t = sign(Algorithm::ES256, &k1, Some("k1"), claims("b"));
    // Nothing listens on the port.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let a = build(json!({"jwks_url": format!("http://{closed}/jwks")}));
    assert_eq!(rejected(run(&*a, &t).await), "unknown kid");
    // A server that accepts and never answers: the timeout ends the wait.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", silent.local_addr().unwrap());
    let a = build(json!({"jwks_url": url, "jwks_timeout": "200ms"}));
    let outcome = tokio::time::timeout(Duration::from_secs(5), run(&*a, &t)).await.expect("no hang");
    assert_eq!(rejected(outcome), "unknown kid");
    // A server answering garbage.
    let server = Server::start(json!("not a key set")).await;
    let a = build(json!({"jwks_url": server.url()}));
    assert_eq!(rejected(run(&*a, &t).await), "unknown kid");
    drop(silent);
}
