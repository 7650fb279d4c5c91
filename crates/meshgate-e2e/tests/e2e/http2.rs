//! HTTP/2 on both sides: h2c clients (prior knowledge), TLS clients negotiating `h2` by ALPN, and
//! h2c upstreams (service `protocol: h2c`), in every combination with HTTP/1.1.

use http::Version;
use meshgate_e2e::client::Conn;
use meshgate_e2e::{TestGateway, TestPki, Upstream, config};

fn services(h1: &Upstream, h2: &Upstream) -> String {
    format!(
        r#"
services:
  - {{name: h1, url: "http://{}"}}
  - {{name: h2, url: "http://{}", protocol: h2c}}
routes:
  - {{name: h1, service: h1, paths: ["/h1"]}}
  - {{name: h2, service: h2, paths: ["/h2"]}}
"#,
        h1.addr(),
        h2.addr()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_and_http1_in_all_combinations() {
    let (h1, h2) = (Upstream::http("h1").await, Upstream::h2c("h2").await);
    let gw = TestGateway::start(&config(&services(&h1, &h2)));
    // (client protocol, path, upstream version)
    for (client_h2, path, upstream_version) in [
        (true, "/h2/a", "HTTP/2.0"),
        (true, "/h1/a", "HTTP/1.1"),
        (false, "/h2/a", "HTTP/2.0"),
        (false, "/h1/a", "HTTP/1.1"),
    ] {
        let mut conn = if client_h2 { Conn::h2c(gw.addr()).await } else { Conn::h1(gw.addr()).await }.unwrap();
        for _ in 0..3 {
            let resp = conn.get(path).await.unwrap();
            assert_eq!(resp.status, 200, "{path}: {}", resp.text());
            let want = if client_h2 { Version::HTTP_2 } else { Version::HTTP_11 };
            assert_eq!(resp.version, want, "client side of {path}");
            let seen = resp.json();
            assert_eq!(seen["version"], upstream_version, "upstream side of {path} (client h2: {client_h2})");
            assert_eq!(seen["path"], path);
            assert_eq!(seen["name"], &path[1..3]);
        }
    }
    // The h2c upstream is reached over multiplexed connections (at most one per gateway
    // worker), not one per request.
    assert!(h2.connections() <= 2, "{} upstream connections for 12 h2c requests", h2.connections());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_on_one_connection() {
    let (h1, h2) = (Upstream::http("h1").await, Upstream::h2c("h2").await);
    let gw = TestGateway::start(&config(&services(&h1, &h2)));
    let conn = Conn::h2c(gw.addr()).await.unwrap();
    let Conn::H2(sender, _) = conn else { unreachable!() };
    let mut tasks = Vec::new();
    for i in 0..20 {
        let sender = sender.clone();
        let path = if i % 2 == 0 { format!("/h2/delay/{}", 50 + i) } else { format!("/h1/delay/{}", 50 + i) };
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::H2(sender, "gw".into());
            let resp = c.get(&path).await.unwrap();
            (path, resp)
        }));
    }
    for t in tasks {
        let (path, resp) = t.await.unwrap();
        assert_eq!(resp.status, 200, "{path}");
        assert_eq!(resp.json()["path"], path.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_with_alpn_h2() {
    let pki = TestPki::new("test CA");
    let leaf = pki.leaf(&["gw.test"]);
    let (h1, h2) = (Upstream::http("h1").await, Upstream::h2c("h2").await);
    let yaml = format!(
        r#"
runtime: {{workers: 2, watch_config: false, drain_timeout: 1s}}
listeners:
  - name: tls
    address: "127.0.0.1:0"
    tls: {{certificates: [{{cert: "{}", key: "{}"}}]}}
{}
"#,
        leaf.cert_path.display(),
        leaf.key_path.display(),
        services(&h1, &h2)
    );
    let gw = TestGateway::start(&yaml);
    for (alpn, want) in
        [(&[b"h2".as_slice(), b"http/1.1"][..], Version::HTTP_2), (&[b"http/1.1".as_slice()][..], Version::HTTP_11)]
    {
        let mut conn = Conn::tls(gw.addr(), pki.client_config(alpn), "gw.test").await.unwrap();
        for path in ["/h1/x", "/h2/x"] {
            let resp = conn.get(path).await.unwrap();
            assert_eq!(resp.status, 200, "{path}: {}", resp.text());
            assert_eq!(resp.version, want, "{path} with ALPN {alpn:?}");
            assert_eq!(resp.seen_header("x-forwarded-proto").as_deref(), Some("https"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_cross_protocols() {
    let (h1, h2) = (Upstream::http("h1").await, Upstream::h2c("h2").await);
    let gw = TestGateway::start(&config(&services(&h1, &h2)));
    let payload = vec![b'p'; 300 * 1024];
    for client_h2 in [false, true] {
        let mut conn = if client_h2 { Conn::h2c(gw.addr()).await } else { Conn::h1(gw.addr()).await }.unwrap();
        for path in ["/h1/upload", "/h2/upload"] {
            // A body of known length, then a streamed one of unknown length.
            let req = meshgate_e2e::client::request(http::Method::POST, path)
                .body(meshgate_e2e::body::full(payload.clone()))
                .unwrap();
            let resp = conn.send(req).await.unwrap();
            assert_eq!(resp.json()["body_len"], payload.len(), "{path}, client h2: {client_h2}");
            let (tx, streamed) = meshgate_e2e::body::channel(2);
            tokio::spawn(async move {
                for _ in 0..10 {
                    let _ = tx.send(bytes::Bytes::from(vec![b's'; 10_000])).await;
                }
            });
            let req = meshgate_e2e::client::request(http::Method::PUT, path).body(streamed).unwrap();
            let resp = conn.send(req).await.unwrap();
            assert_eq!(resp.json()["body_len"], 100_000, "{path} streamed, client h2: {client_h2}");
        }
    }
}

/// gRPC is HTTP/2 with trailers: `te: trailers` reaches the upstream and the `grpc-status`
/// trailers come back to the client, end to end over h2c.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_trailers_pass_through() {
    let h2 = Upstream::h2c("h2").await;
    let gw = TestGateway::start(&config(&format!(
        r#"
services: [{{name: grpc, url: "http://{}", protocol: h2c}}]
routes: [{{name: grpc, service: grpc, paths: ["/grpc"]}}]
"#,
        h2.addr()
    )));
    let mut conn = Conn::h2c(gw.addr()).await.unwrap();
    let req = meshgate_e2e::client::request(http::Method::POST, "/grpc")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(meshgate_e2e::body::full(&b"\0\0\0\0\x02hi"[..]))
        .unwrap();
    let resp = conn.send_streaming(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/grpc");
    let collected = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers reach the client");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "served-by-upstream");
    assert_eq!(&collected.to_bytes()[..], b"\0\0\0\0\x02hi");
}
