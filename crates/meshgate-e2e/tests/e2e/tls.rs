//! TLS: certificates chosen by SNI on a listener, and `https` upstreams verified against a CA.

use meshgate_e2e::client::Conn;
use meshgate_e2e::{TestGateway, TestPki, Upstream, config};
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;

/// Connects with SNI `sni` (or none), checks the handshake against `verify_as`, and returns the
/// certificate the server presented after one HTTP request over the connection.
async fn served_cert(addr: SocketAddr, pki: &TestPki, sni: Option<&str>, verify_as: &str) -> CertificateDer<'static> {
    let mut config = (*pki.client_config(&[b"http/1.1"])).clone();
    config.enable_sni = sni.is_some();
    let name = ServerName::try_from(sni.unwrap_or(verify_as).to_owned()).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS handshake with SNI {sni:?}: {e}"));
    let cert = tls.get_ref().1.peer_certificates().expect("server certificate")[0].clone().into_owned();
    let mut conn = Conn::h1_over(tls, "gw".into()).await.unwrap();
    let resp = conn.get("/x").await.unwrap();
    assert_eq!(resp.status, 200, "request over TLS with SNI {sni:?}: {}", resp.text());
    cert
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_selects_the_certificate() {
    let pki = TestPki::new("test CA");
    let (a, b, c) = (pki.leaf(&["a.test"]), pki.leaf(&["*.b.test"]), pki.leaf(&["c.test"]));
    let up = Upstream::http("up").await;
    let yaml = format!(
        r#"
runtime: {{workers: 2, watch_config: false, drain_timeout: 1s}}
listeners:
  - name: tls
    address: "127.0.0.1:0"
    tls:
      certificates:
        - {{sni: [a.test], cert: "{}", key: "{}"}}
        - {{sni: ["*.b.test"], cert: "{}", key: "{}"}}
        - {{cert: "{}", key: "{}"}}
services: [{{name: s, url: "http://{}"}}]
routes: [{{name: r, service: s, paths: ["/"]}}]
"#,
        a.cert_path.display(),
        a.key_path.display(),
        b.cert_path.display(),
        b.key_path.display(),
        c.cert_path.display(),
        c.key_path.display(),
        up.addr()
    );
    let gw = TestGateway::start(&yaml);
    let addr = gw.addr();
    assert!(served_cert(addr, &pki, Some("a.test"), "a.test").await == a.der, "SNI a.test");
    assert!(served_cert(addr, &pki, Some("x.b.test"), "x.b.test").await == b.der, "SNI x.b.test");
    assert!(served_cert(addr, &pki, Some("c.test"), "c.test").await == c.der, "names taken from the certificate");
    assert!(served_cert(addr, &pki, None, "a.test").await == a.der, "no SNI gets the first certificate");
    // An unknown name also gets the first certificate (which the client then rejects).
    let mut config = (*pki.client_config(&[b"http/1.1"])).clone();
    config.enable_sni = true;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let err = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("unknown.test").unwrap(), tcp)
        .await
        .expect_err("a.test's certificate must not verify as unknown.test");
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_verification() {
    let pki = TestPki::new("upstream CA");
    let other = TestPki::new("some other CA");
    let leaf = pki.leaf(&["upstream.test"]);
    let up = Upstream::tls("secure", &leaf).await;
    let (a, ca, wrong_ca) = (up.addr(), pki.ca_path().display(), other.ca_path().display());
    let gw = TestGateway::start(&config(&format!(
        r#"
upstreams: [{{name: pool, targets: [{{address: "{a}"}}]}}]
services:
  - {{name: good, url: "https://{a}", tls: {{ca: "{ca}", server_name: upstream.test}}}}
  - {{name: pooled, upstream: pool, protocol: https, tls: {{ca: "{ca}", server_name: upstream.test}}}}
  - {{name: wrong-ca, url: "https://{a}", tls: {{ca: "{wrong_ca}", server_name: upstream.test}}}}
  - {{name: wrong-name, url: "https://{a}", tls: {{ca: "{ca}", server_name: other.test}}}}
  - {{name: web-roots, url: "https://{a}", tls: {{server_name: upstream.test}}}}
  - {{name: no-verify, url: "https://{a}", tls: {{verify: false}}}}
routes:
  - {{name: good, service: good, paths: ["/good"]}}
  - {{name: pooled, service: pooled, paths: ["/pooled"]}}
  - {{name: wrong-ca, service: wrong-ca, paths: ["/wrong-ca"]}}
  - {{name: wrong-name, service: wrong-name, paths: ["/wrong-name"]}}
  - {{name: web-roots, service: web-roots, paths: ["/web-roots"]}}
  - {{name: no-verify, service: no-verify, paths: ["/no-verify"]}}
"#
    )));
    let addr = gw.addr();
    for path in ["/good", "/pooled", "/no-verify"] {
        let resp = meshgate_e2e::client::get(addr, path).await;
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
        assert_eq!(resp.name(), "secure");
        assert_eq!(resp.json()["version"], "HTTP/2.0", "{path}: ALPN should pick h2 with the upstream");
    }
    for path in ["/wrong-ca", "/wrong-name", "/web-roots"] {
        meshgate_e2e::client::get(addr, path).await.assert_error(502, "upstream_unavailable");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_on_reload() {
    let pki = TestPki::new("test CA");
    let (old, new) = (pki.leaf(&["a.test"]), pki.leaf(&["a.test"]));
    let up = Upstream::http("up").await;
    let yaml = |leaf: &meshgate_e2e::LeafCert| {
        format!(
            r#"
runtime: {{workers: 2, watch_config: false, drain_timeout: 1s}}
listeners:
  - name: tls
    address: "127.0.0.1:0"
    tls: {{certificates: [{{cert: "{}", key: "{}"}}]}}
services: [{{name: s, url: "http://{}"}}]
routes: [{{name: r, service: s, paths: ["/"]}}]
"#,
            leaf.cert_path.display(),
            leaf.key_path.display(),
            up.addr()
        )
    };
    let gw = TestGateway::start(&yaml(&old));
    assert!(served_cert(gw.addr(), &pki, Some("a.test"), "a.test").await == old.der);
    gw.write_config(&yaml(&new));
    gw.reload().expect("a new certificate is a valid reload");
    assert!(
        served_cert(gw.addr(), &pki, Some("a.test"), "a.test").await == new.der,
        "new connections get the new certificate"
    );
}
