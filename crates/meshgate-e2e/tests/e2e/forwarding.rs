//! What the upstream receives: the path after `strip_path` and the service's base path, the Host
//! header (`preserve_host` or the target's), `X-Forwarded-*`, and no hop-by-hop headers.

use http::Method;
use meshgate_e2e::client::{self, Conn};
use meshgate_e2e::{TestGateway, Upstream, body, config};

fn gateway(up: &Upstream) -> TestGateway {
    let a = up.addr();
    TestGateway::start(&config(&format!(
        r#"
upstreams:
  - {{name: pool, targets: [{{address: "{a}"}}]}}
services:
  - {{name: based, url: "http://{a}/base"}}
  - {{name: based-slash, url: "http://{a}/base/"}}
  - {{name: plain, url: "http://{a}"}}
  - {{name: pooled, upstream: pool, path: /v2}}
routes:
  - {{name: strip, service: based, paths: ["/api"], strip_path: true}}
  - {{name: nostrip, service: based, paths: ["/keep"]}}
  - {{name: slash, service: based-slash, paths: ["/slash"], strip_path: true}}
  - {{name: preserve, service: plain, paths: ["/preserve"], preserve_host: true}}
  - {{name: strip-plain, service: plain, paths: ["/s"], strip_path: true}}
  - {{name: strip-exact, service: plain, paths: ["=/exact"], strip_path: true}}
  - {{name: regex-strip, service: plain, paths: ["~/r/[a-z]+"], strip_path: true}}
  - {{name: pooled, service: pooled, paths: ["/up"], strip_path: true}}
  - {{name: pooled-keep, service: pooled, paths: ["/pk"]}}
  - {{name: plain, service: plain, paths: ["/"]}}
"#
    )))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_and_host() {
    let up = Upstream::http("up").await;
    let gw = gateway(&up);
    let target = up.addr().to_string();
    // (request path, client Host, path the upstream must see, query, Host the upstream must see)
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        ("/api/users?x=1&y=2", "gw.test", "/base/users", "x=1&y=2", &target),
        ("/api", "gw.test", "/base", "", &target),
        ("/keep/a", "gw.test", "/base/keep/a", "", &target),
        ("/slash/a", "gw.test", "/base/a", "", &target),
        ("/preserve/x?q", "client.example:8080", "/preserve/x", "q", "client.example:8080"),
        ("/s", "gw.test", "/", "", &target),
        ("/s/a/b", "gw.test", "/a/b", "", &target),
        ("/exact", "gw.test", "/", "", &target),
        ("/r/abc/def", "gw.test", "/def", "", &target),
        ("/up/x", "gw.test", "/v2/x", "", &target),
        ("/pk/x", "gw.test", "/v2/pk/x", "", &target),
        ("/other/%20x", "gw.test", "/other/%20x", "", &target),
    ];
    let mut conn = Conn::h1(gw.addr()).await.unwrap();
    for (path, host, want_path, want_query, want_host) in cases {
        let req = client::request(Method::GET, path).header("host", *host).body(body::empty()).unwrap();
        let resp = conn.send(req).await.unwrap();
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
        let seen = resp.json();
        assert_eq!(seen["path"], *want_path, "{path}: path seen upstream");
        assert_eq!(seen["query"], *want_query, "{path}: query seen upstream");
        assert_eq!(seen["headers"]["host"], *want_host, "{path}: Host seen upstream");
        assert_eq!(seen["headers"]["x-forwarded-host"], *host, "{path}: X-Forwarded-Host");
        assert_eq!(seen["version"], "HTTP/1.1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_and_hop_by_hop_headers() {
    let up = Upstream::http("up").await;
    let gw = gateway(&up);
    let req = client::request(Method::POST, "/plain")
        .header("host", "front.test")
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "keep-alive, X-Secret-Hop")
        .header("x-secret-hop", "must not pass")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("upgrade", "h2c")
        .header("te", "trailers")
        .header("x-end-to-end", "kept")
        .body(body::full("hello"))
        .unwrap();
    let resp = client::send(gw.addr(), req).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = resp.json();
    let h = &seen["headers"];
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "front.test");
    assert_eq!(h["x-forwarded-port"], gw.addr().port().to_string());
    assert_eq!(h["te"], "trailers", "te: trailers is end-to-end (gRPC needs it)");
    assert_eq!(h["x-end-to-end"], "kept");
    assert_eq!(seen["body_len"], 5);
    for hop in ["x-secret-hop", "keep-alive", "proxy-connection", "proxy-authorization", "upgrade", "transfer-encoding"]
    {
        assert!(h.get(hop).is_none(), "hop-by-hop header {hop} was forwarded: {h}");
    }
    // `Connection` itself may be set by the gateway's own HTTP/1.1 client, but never to the
    // client's value.
    if let Some(c) = h.get("connection") {
        assert!(!c.as_str().unwrap_or("").to_ascii_lowercase().contains("x-secret-hop"), "{c}");
    }

    // Without a client X-Forwarded-For, it is just the client's address; other TE values go.
    let req = client::request(Method::GET, "/plain").header("te", "gzip").body(body::empty()).unwrap();
    let seen = client::send(gw.addr(), req).await.json();
    assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1");
    assert!(seen["headers"].get("te").is_none(), "te other than trailers is hop-by-hop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_headers_are_dropped() {
    let up = Upstream::http("up").await;
    let gw = gateway(&up);
    let resp = client::get(gw.addr(), "/hop-response").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-resp-end-to-end"), Some("1"));
    assert_eq!(resp.header("x-resp-hop"), None, "header listed in the upstream's Connection");
    assert_eq!(resp.header("keep-alive"), None);
    if let Some(c) = resp.header("connection") {
        assert!(!c.contains("x-resp-hop"), "{c}");
    }
}

/// A keep-alive HTTP/1.1 upstream that closes each connection `close_after` after its last
/// response (or immediately with zero), without saying so in a `Connection` header, as servers
/// with a short keep-alive timeout do.
async fn closing_upstream(close_after: std::time::Duration) -> std::net::SocketAddr {
    let body = r#"{"name":"closing"}"#;
    raw_upstream(close_after, format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len())).await
}

/// An upstream that writes `answer` to every request and closes the connection `close_after`
/// later (or right away with zero).
async fn raw_upstream(close_after: std::time::Duration, answer: String) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else { continue };
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let read = if buf.is_empty() && !close_after.is_zero() {
                        match tokio::time::timeout(close_after, tcp.read(&mut chunk)).await {
                            Ok(r) => r,
                            Err(_) => return, // idle too long: close
                        }
                    } else {
                        tcp.read(&mut chunk).await
                    };
                    let n = match read {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if tcp.write_all(answer.as_bytes()).await.is_err() || close_after.is_zero() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_keep_alive_timeouts_are_not_errors() {
    let addr = closing_upstream(std::time::Duration::from_millis(30)).await;
    let gw = TestGateway::start(&config(&format!(
        "services: [{{name: s, url: \"http://{addr}\"}}]\nroutes: [{{name: r, service: s, paths: [\"/\"]}}]"
    )));
    let mut conn = Conn::h1(gw.addr()).await.unwrap();
    for i in 0..8 {
        let resp = conn.get("/x").await.unwrap();
        assert_eq!(resp.status, 200, "request {i} after the upstream closed its idle connection: {}", resp.text());
        tokio::time::sleep(std::time::Duration::from_millis(80)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_right_after_each_response() {
    let addr = closing_upstream(std::time::Duration::ZERO).await;
    let gw = TestGateway::start(&config(&format!(
        "services: [{{name: s, url: \"http://{addr}\"}}]\nroutes: [{{name: r, service: s, paths: [\"/\"]}}]"
    )));
    let mut conn = Conn::h1(gw.addr()).await.unwrap();
    let mut failed = Vec::new();
    for i in 0..200 {
        let resp = conn.get("/x").await.unwrap();
        if resp.status != 200 {
            failed.push(format!("request {i}: {} {}", resp.status, resp.text()));
        }
    }
    assert!(failed.is_empty(), "{} of 200 GETs failed:\n{}", failed.len(), failed.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_upstream_answer_goes_out_as_http11() {
    // As old servers and simple CGI scripts do: no length, the end of the body is the close.
    let answer = "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nold server".to_owned();
    let addr = raw_upstream(std::time::Duration::ZERO, answer).await;
    let gw = TestGateway::start(&config(&format!(
        "services: [{{name: s, url: \"http://{addr}\"}}]\nroutes: [{{name: r, service: s, paths: [\"/\"]}}]"
    )));
    // The client's connection speaks HTTP/1.1 and stays open: the answer is re-framed (chunked)
    // instead of ending the client's connection the way the upstream ended its own.
    let mut conn = Conn::h1(gw.addr()).await.unwrap();
    for i in 0..3 {
        let resp = conn.get("/old").await.unwrap();
        assert_eq!(resp.status, 200, "request {i}: {}", resp.text());
        assert_eq!(resp.version, http::Version::HTTP_11, "request {i}");
        assert_eq!(resp.text(), "old server", "request {i}");
    }
}

/// What only the gateway may say about a request is never taken from the client: `Forwarded`,
/// `X-Real-IP`, and the `_` spellings of the gateway's own headers, which CGI-style upstreams
/// read as the same variable as the `-` ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofable_client_headers_are_removed() {
    let up = Upstream::http("up").await;
    let gw = gateway(&up);
    let spoofed = [
        ("Forwarded", "for=10.6.6.6;proto=https"),
        ("X-Real-IP", "10.6.6.6"),
        ("X_Real_IP", "10.6.6.6"),
        ("X_Consumer_Username", "admin"),
        ("X-Consumer_Groups", "admins"),
        ("X_Forwarded_For", "10.6.6.6"),
        ("X_Anonymous_Consumer", "false"),
    ];
    let mut headers: Vec<(&str, &str)> = spoofed.to_vec();
    headers.push(("X_Request_Id", "kept"));
    let resp = client::get_with(gw.addr(), "/x", &headers).await;
    assert_eq!(resp.status, 200);
    for (name, _) in spoofed {
        assert_eq!(resp.seen_header(&name.to_ascii_lowercase()), None, "{name} reached the upstream");
    }
    assert_eq!(resp.seen_header("x_request_id").as_deref(), Some("kept"), "other underscore headers pass");
    assert_eq!(resp.seen_header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
}

/// Over HTTP/2 the target is `:authority`, whatever a `host` field says (RFC 9113 §8.3.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_authority_wins_over_host() {
    let (a, b) = (Upstream::http("a").await, Upstream::http("b").await);
    let gw = TestGateway::start(&config(&format!(
        r#"
services: [{{name: a, url: "http://{}"}}, {{name: b, url: "http://{}"}}]
routes:
  - {{name: a, service: a, hosts: [a.example]}}
  - {{name: b, service: b, hosts: [b.example]}}
"#,
        a.addr(),
        b.addr()
    )));
    // The h2 crate sends the fields as given (hyper's client would drop `host`).
    let tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let (mut h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("http://a.example/x").header("host", "b.example").body(()).unwrap();
    let (resp, _) = h2.send_request(req, true).unwrap();
    let mut body = resp.await.unwrap().into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    let resp: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(resp["name"], "a", "routed by :authority");
    assert_eq!(resp["headers"]["x-forwarded-host"], "a.example");
}
