//! Mutual TLS: client certificates checked by the listener (`tls.client_auth`) or per route by
//! `mtls-auth`, with real handshakes and certificates made in the test.

use meshgate_e2e::client::Conn;
use meshgate_e2e::{LeafCert, Resp, TestGateway, TestPki, Upstream};
use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::crypto::ring::default_provider as provider;
use rustls::sign::CertifiedKey;
use std::net::SocketAddr;
use std::sync::Arc;

/// The gateway's own certificate: the name clients connect to, signed by `server_ca`.
const GW: &str = "gw.test";

/// A gateway with one TLS listener (`client_auth` as given, YAML flow style) and `routes`.
fn gateway(server_ca: &TestPki, client_auth: &str, up: &Upstream, routes: &str, consumers: &str) -> TestGateway {
    let cert = server_ca.leaf(&[GW]);
    TestGateway::start(&format!(
        r#"
runtime: {{workers: 2, watch_config: false, drain_timeout: 1s}}
listeners:
  - name: tls
    address: "127.0.0.1:0"
    tls:
      certificates: [{{cert: "{}", key: "{}"}}]
      client_auth: {client_auth}
services: [{{name: s, url: "http://{}"}}]
routes:
{routes}
consumers: {consumers}
"#,
        cert.cert_path.display(),
        cert.key_path.display(),
        up.addr(),
    ))
}

/// Connects (presenting `cert` if given, offering `alpn`) and sends GET `paths` in turn over the
/// one connection. Any failure, handshake or request, is an `Err` with its message.
async fn requests(
    addr: SocketAddr,
    server_ca: &TestPki,
    cert: Option<&LeafCert>,
    alpn: &[u8],
    paths: &[&str],
) -> Result<Vec<Resp>, String> {
    let config = match cert {
        Some(c) => server_ca.client_config_with_cert(&[alpn], c),
        None => server_ca.client_config(&[alpn]),
    };
    let mut conn = Conn::tls(addr, config, GW).await.map_err(|e| format!("handshake: {e}"))?;
    let mut out = Vec::new();
    for p in paths {
        out.push(conn.get(p).await.map_err(|e| format!("GET {p}: {e}"))?);
    }
    Ok(out)
}

/// One GET over a new connection, which must succeed at the TLS level.
async fn get(addr: SocketAddr, server_ca: &TestPki, cert: Option<&LeafCert>, path: &str) -> Resp {
    let mut r = requests(addr, server_ca, cert, b"http/1.1", &[path]).await.unwrap_or_else(|e| panic!("{e}"));
    r.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_certificate() {
    let (server_ca, clients, other) = (TestPki::new("server CA"), TestPki::new("client CA"), TestPki::new("other CA"));
    let up = Upstream::http("up").await;
    let client_auth = format!("{{ca: \"{}\"}}", clients.ca_path().display());
    let routes = "  - {name: r, service: s, paths: [\"/\"], plugins: [{name: mtls-auth}]}";
    let gw = gateway(&server_ca, &client_auth, &up, routes, "[]");
    let addr = gw.addr();

    let alice = clients.client("alice");
    let resp = get(addr, &server_ca, Some(&alice), "/x").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.seen_header("x-consumer-username").as_deref(), Some("alice"));
    let fingerprint = resp.seen_header("x-credential-identifier").unwrap_or_default();
    assert!(fingerprint.len() == 64 && fingerprint.bytes().all(|b| b.is_ascii_hexdigit()), "{fingerprint:?}");

    // HTTP/2: every stream of the connection carries the certificate.
    let h2 = requests(addr, &server_ca, Some(&alice), b"h2", &["/a", "/b"]).await.unwrap();
    for r in &h2 {
        assert_eq!((r.status.as_u16(), r.version), (200, http::Version::HTTP_2), "{}", r.text());
        assert_eq!(r.seen_header("x-consumer-username").as_deref(), Some("alice"));
    }

    let before = up.hits();
    let refused = [
        ("no certificate", None),
        ("expired certificate", Some(clients.expired_client("alice"))),
        ("certificate of another CA", Some(other.client("alice"))),
    ];
    for (what, cert) in &refused {
        let r = requests(addr, &server_ca, cert.as_ref(), b"http/1.1", &["/x"]).await;
        assert!(r.is_err(), "{what}: the handshake must fail, got {:?}", r.map(|r| r[0].status));
    }
    assert_eq!(up.hits(), before, "no refused connection reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_level_verification_and_identity() {
    let (server_ca, ca1, ca2) = (TestPki::new("server CA"), TestPki::new("CA one"), TestPki::new("CA two"));
    let up = Upstream::http("up").await;
    let (p1, p2) = (ca1.ca_path().display(), ca2.ca_path().display());
    let routes = format!(
        r#"  - {{name: one, service: s, paths: ["/one"], plugins: [{{name: mtls-auth, config: {{ca: "{p1}"}}}}]}}
  - {{name: two, service: s, paths: ["/two"], plugins: [{{name: mtls-auth, config: {{ca: "{p2}"}}}}]}}
  - {{name: listener, service: s, paths: ["/listener"], plugins: [{{name: mtls-auth}}]}}
  - name: strict
    service: s
    paths: ["/strict"]
    plugins: [{{name: mtls-auth, config: {{ca: "{p1}", require_consumer: true}}}}]
  - name: email
    service: s
    paths: ["/email"]
    plugins: [{{name: mtls-auth, config: {{ca: "{p1}", identity: san_email, require_consumer: true}}}}]
  - {{name: open, service: s, paths: ["/open"]}}"#
    );
    let consumers = r#"
  - {username: alice, custom_id: u-1, groups: [ops, dev]}
  - {username: robert, custom_id: bob@example.com}"#;
    let gw = gateway(&server_ca, "{required: false}", &up, &routes, consumers);
    let addr = gw.addr();
    let (alice, bob, mallory, carol) =
        (ca1.client("alice"), ca1.client("bob"), ca1.client("mallory"), ca2.client("carol"));

    // Without a certificate the connection is accepted; routes without mtls-auth work, routes
    // with it answer 401 with the challenge.
    let resp = get(addr, &server_ca, None, "/open").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = get(addr, &server_ca, None, "/one").await;
    resp.assert_error(401, "unauthorized");
    assert_eq!(resp.header("www-authenticate"), Some("ClientCert realm=\"meshgate\""));

    // Each route trusts its own CA.
    let resp = get(addr, &server_ca, Some(&alice), "/one").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.seen_header("x-consumer-username").as_deref(), Some("alice"));
    assert_eq!(resp.seen_header("x-consumer-custom-id").as_deref(), Some("u-1"));
    assert_eq!(resp.seen_header("x-consumer-groups").as_deref(), Some("ops, dev"));
    get(addr, &server_ca, Some(&alice), "/two").await.assert_error(401, "invalid_credentials");
    let resp = get(addr, &server_ca, Some(&carol), "/two").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.seen_header("x-consumer-username").as_deref(), Some("carol"), "a consumer made from the CN");
    assert_eq!(resp.seen_header("x-consumer-custom-id"), None);
    get(addr, &server_ca, Some(&carol), "/one").await.assert_error(401, "invalid_credentials");
    let expired = ca1.expired_client("alice");
    get(addr, &server_ca, Some(&expired), "/one").await.assert_error(401, "invalid_credentials");

    // Without a ca on the route, only a chain the listener verified would do; this one didn't.
    get(addr, &server_ca, Some(&alice), "/listener").await.assert_error(401, "invalid_credentials");

    // require_consumer: the identity must be a declared consumer (by username or custom id).
    assert_eq!(get(addr, &server_ca, Some(&alice), "/strict").await.status, 200);
    get(addr, &server_ca, Some(&mallory), "/strict").await.assert_error(401, "invalid_credentials");
    assert_eq!(get(addr, &server_ca, Some(&mallory), "/one").await.status, 200, "not required on /one");
    let resp = get(addr, &server_ca, Some(&bob), "/email").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.seen_header("x-consumer-username").as_deref(), Some("robert"), "found by custom id");
    get(addr, &server_ca, Some(&alice), "/email").await.assert_error(401, "invalid_credentials");

    // One connection, several routes: each route's verdict is its own.
    let rs = requests(addr, &server_ca, Some(&carol), b"h2", &["/two", "/one", "/two"]).await.unwrap();
    assert_eq!(rs.iter().map(|r| r.status.as_u16()).collect::<Vec<_>>(), [200, 401, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_certificate_verified_by_the_route() {
    let (server_ca, ca1, unknown) = (TestPki::new("server CA"), TestPki::new("CA one"), TestPki::new("unknown CA"));
    let up = Upstream::http("up").await;
    let routes = format!(
        "  - {{name: one, service: s, paths: [\"/one\"], plugins: [{{name: mtls-auth, config: {{ca: \"{}\"}}}}]}}\n  \
         - {{name: open, service: s, paths: [\"/open\"]}}",
        ca1.ca_path().display()
    );
    // `client_auth: {}`: a certificate is required, and any will do at the handshake.
    let gw = gateway(&server_ca, "{}", &up, &routes, "[]");
    let addr = gw.addr();
    let r = requests(addr, &server_ca, None, b"http/1.1", &["/open"]).await;
    assert!(r.is_err(), "no certificate: the handshake must fail, got {:?}", r.map(|r| r[0].status));
    let stranger = unknown.client("stranger");
    assert_eq!(get(addr, &server_ca, Some(&stranger), "/open").await.status, 200, "any certificate connects");
    get(addr, &server_ca, Some(&stranger), "/one").await.assert_error(401, "invalid_credentials");
    let alice = ca1.client("alice");
    let resp = get(addr, &server_ca, Some(&alice), "/one").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.seen_header("x-consumer-username").as_deref(), Some("alice"));

    // Nothing is verified at the handshake except that the client holds the certificate's key:
    // alice's certificate signed for with another key is refused.
    let mut config = (*server_ca.client_config(&[b"http/1.1"])).clone();
    config.client_auth_cert_resolver = Arc::new(Impostor(Arc::new(CertifiedKey::new(
        vec![alice.der.clone()],
        provider().key_provider.load_private_key(stranger.key()).unwrap(),
    ))));
    let r = async {
        let mut conn = Conn::tls(addr, Arc::new(config), GW).await.map_err(|e| e.to_string())?;
        conn.get("/open").await.map(|r| r.status).map_err(|e| e.to_string())
    };
    assert!(r.await.is_err(), "a certificate without its key must not connect");
}

/// Presents a certificate with whatever key it was given, checked or not.
#[derive(Debug)]
struct Impostor(Arc<CertifiedKey>);

impl ResolvesClientCert for Impostor {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}
