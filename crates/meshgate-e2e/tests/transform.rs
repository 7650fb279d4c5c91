//! `request-transformer` and `response-transformer` end to end: a real origin (`transform/origin.rs`)
//! answering nested JSON, text, malformed, large, chunked, gzip and stalling bodies, the real
//! gateway, real HTTP/1.1 and HTTP/2 clients. Every transformed body is checked byte for byte
//! and against its `Content-Length`, as the upstream or the client received it.
//!
//! Body counters are process-wide: the metrics test runs alone (write lock), the others share.

#[path = "transform/origin.rs"]
mod origin;

use bytes::Bytes;
use http::Method;
use meshgate_e2e::client::{self, Conn, Resp, request};
use meshgate_e2e::observe::scrape_values;
use meshgate_e2e::{TestGateway, body, config};
use origin::{MALFORMED, NESTED, Origin, TEXT};
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

static COUNTERS: RwLock<()> = RwLock::const_new(());

/// A body sent in pieces, without a length up front (chunked on HTTP/1.1).
fn chunked(text: &str) -> body::Body {
    use http_body_util::BodyExt;
    let b = Bytes::copy_from_slice(text.as_bytes());
    let mid = b.len() / 2;
    let frames = [b.slice(..mid), b.slice(mid..)].map(|p| Ok::<_, body::BoxError>(hyper::body::Frame::data(p)));
    http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

async fn post(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)], b: body::Body) -> Resp {
    let mut req = request(Method::POST, path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    client::send(addr, req.body(b).unwrap()).await
}

/// The client got a body whose length is the one announced, not chunked.
#[track_caller]
fn length_is_right(r: &Resp) {
    assert_eq!(r.header("content-length"), Some(r.body.len().to_string().as_str()), "{}", r.text());
    assert_eq!(r.header("transfer-encoding"), None);
}

/// What the echo upstream received: its body (which must match its Content-Length) and the rest.
#[track_caller]
fn received(r: &Resp) -> (String, serde_json::Value) {
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.json();
    let body = echo["body"].as_str().unwrap().to_owned();
    assert_eq!(echo["body_len"], body.len());
    (body, echo)
}

const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_headers_query_and_json_body_with_templates() {
    let _shared = COUNTERS.read().await;
    let o = Origin::start().await;
    let gw = TestGateway::start(&config(&format!(
        r#"
services: [{{name: o, url: "http://{o}"}}]
routes:
  - name: req
    service: o
    paths: ["~/users/(?<id>[0-9]+)/"]
    plugins:
      - {{name: key-auth}}
      - name: request-transformer
        config:
          remove: {{headers: [x-debug], query: [debug], json: [password, user.internal]}}
          rename: {{headers: {{x-old: x-new}}, query: {{q: search}}, json: {{user.name: user.full_name}}}}
          replace: {{headers: {{x-env: prod}}, query: {{lang: en}}, json: {{user.role: member}}}}
          add:
            headers: {{x-user-id: "{{path.id}}", x-consumer: "{{consumer.username}}"}}
            query: {{page: "{{header.x-page}}"}}
            json:
              meta.consumer: "{{consumer.username}}"
              meta.user_id: "{{path.id}}"
              meta.page: "{{query.page}}"
              meta.debug: "{{header.x-debug}}"
              meta.missing: "{{consumer.custom_id}}"
          append: {{headers: {{x-tag: gateway}}, query: {{tag: gw}}}}
consumers: [{{username: alice, credentials: {{key-auth: [{{key: k-alice}}]}}}}]
"#,
        o = o.addr()
    )));
    let sent = r#"{"user":{"name":"Ann","role":"admin","internal":{"a":1},"id":7},"password":"p","items":[1,2]}"#;
    // Templates read the request as it reached the plugin: x-debug is removed, yet still read.
    let want = r#"{"user":{"full_name":"Ann","role":"member","id":7},"items":[1,2],"meta":{"consumer":"alice","debug":"on","page":"2","user_id":"7"}}"#;
    let path = "/users/7/echo?q=shoes&debug=1&lang=de&page=2";
    let headers = [
        JSON,
        ("apikey", "k-alice"),
        ("x-debug", "on"),
        ("x-old", "o1"),
        ("x-env", "stage"),
        ("x-tag", "client"),
        ("x-page", "5"),
    ];
    let check = |r: &Resp, how: &str| {
        let (body, echo) = received(r);
        assert_eq!(body, want, "{how}");
        assert_eq!(echo["content_length"], want.len().to_string(), "{how}: Content-Length recomputed");
        assert!(echo["transfer_encoding"].is_null(), "{how}");
        assert_eq!(echo["query"], "search=shoes&lang=en&page=2&tag=gw", "{how}");
        let h = &echo["headers"];
        assert!(h.get("x-debug").is_none() && h.get("x-old").is_none(), "{how}: {h}");
        assert_eq!((&h["x-new"], &h["x-env"], &h["x-tag"]), (&"o1".into(), &"prod".into(), &"client, gateway".into()));
        assert_eq!((&h["x-user-id"], &h["x-consumer"]), (&"7".into(), &"alice".into()), "{how}");
    };
    check(&post(gw.addr(), path, &headers, body::full(sent)).await, "HTTP/1.1 with Content-Length");
    check(&post(gw.addr(), path, &headers, chunked(sent)).await, "HTTP/1.1 chunked");
    let mut h2 = Conn::h2c(gw.addr()).await.unwrap();
    let mut req = request(Method::POST, path);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    check(&h2.send(req.body(chunked(sent)).unwrap()).await.unwrap(), "HTTP/2 without content-length");

    // Authentication runs first: a refused request's body is never read or sent.
    let hits = o.hits();
    let r = post(gw.addr(), path, &[JSON], body::full(sent)).await;
    assert_eq!((r.status.as_u16(), o.hits()), (401, hits));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_json_body_and_headers() {
    let _shared = COUNTERS.read().await;
    let o = Origin::start().await;
    let gw = TestGateway::start(&config(&format!(
        r#"
services: [{{name: o, url: "http://{o}"}}, {{name: down, url: "http://{down}"}}]
routes:
  - name: resp
    service: o
    paths: ["/r"]
    strip_path: true
    plugins:
      - name: response-transformer
        config:
          remove: {{headers: [x-internal], json: [user.password, debug]}}
          rename: {{headers: {{x-old: x-new}}, json: {{user.name: user.full_name, items: list}}}}
          replace: {{headers: {{x-env: prod}}, json: {{user.address.city: Lyon}}}}
          add:
            headers: {{x-served-for: "{{header.x-user}}"}}
            json: {{meta.page: "{{query.page}}", meta.consumer: "{{consumer.username}}", user.address.country: FR}}
          append: {{headers: {{x-tag: gateway}}}}
  - name: down
    service: down
    paths: ["/down"]
    plugins: [{{name: response-transformer, config: {{add: {{json: {{meta: 1}}}}}}}}]
"#,
        o = o.addr(),
        down = meshgate_e2e::upstream::closed_port()
    )));
    let want = r#"{"user":{"id":7,"full_name":"Ann","address":{"city":"Lyon","zip":"75001","country":"FR"}},"list":[1,2,3],"big":123456789012345678901234567890,"meta":{"page":"3"}}"#;
    for path in ["/r/nested?page=3", "/r/nested-chunked?page=3", "/r/problem?page=3"] {
        let r = client::get_with(gw.addr(), path, &[("x-user", "ann")]).await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, want), "{path}");
        length_is_right(&r);
        let all = |n: &str| r.headers.get_all(n).iter().map(|v| v.to_str().unwrap()).collect::<Vec<_>>();
        assert!(all("x-internal").is_empty() && all("x-old").is_empty(), "{path}");
        assert_eq!((all("x-new"), all("x-env"), all("x-tag")), (vec!["o"], vec!["prod"], vec!["up", "gateway"]));
        assert_eq!(all("x-served-for"), ["ann"], "{path}");
    }
    let mut h2 = Conn::h2c(gw.addr()).await.unwrap();
    let r = h2.get("/r/nested-chunked?page=3").await.unwrap();
    assert_eq!(r.text(), want);
    assert_eq!(r.header("content-length"), Some(want.len().to_string().as_str()));
    // HEAD answers have no body to transform and are not waited on.
    let r = client::send(gw.addr(), request(Method::HEAD, "/r/nested").body(body::empty()).unwrap()).await;
    assert_eq!((r.status.as_u16(), r.body.len()), (200, 0));
    // The gateway's own answers are not upstream bodies: untouched.
    let r = client::get(gw.addr(), "/down").await;
    r.assert_error(502, "upstream_unavailable");
    assert!(r.json().get("meta").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_bodies_pass_untouched() {
    let _shared = COUNTERS.read().await;
    let o = Origin::start().await;
    let gw = TestGateway::start(&config(&format!(
        r#"
services: [{{name: o, url: "http://{o}"}}]
routes:
  - name: resp
    service: o
    paths: ["/p"]
    strip_path: true
    plugins: [{{name: response-transformer, config: {{remove: {{json: [user]}}, max_body_bytes: 1KiB}}}}]
  - name: req
    service: o
    paths: ["/q"]
    plugins: [{{name: request-transformer, config: {{remove: {{json: [user]}}, max_body_bytes: 1KiB}}}}]
"#,
        o = o.addr()
    )));
    let large = origin::large();
    let gzip = origin::gzip(NESTED.as_bytes());
    let cases: [(&str, &[u8], &str); 5] = [
        ("text", TEXT.as_bytes(), "text/plain"),
        ("malformed", MALFORMED.as_bytes(), "application/json"),
        ("large", large.as_bytes(), "application/json"),
        ("large-chunked", large.as_bytes(), "application/json"),
        ("gzip", &gzip, "application/json"),
    ];
    for (name, bytes, ctype) in cases {
        let r = client::get(gw.addr(), &format!("/p/{name}")).await;
        assert_eq!(r.status, 200, "{name}");
        assert!(r.body == bytes, "{name}: the body must pass byte for byte, got {:?}", r.text());
        assert_eq!(r.header("content-type"), Some(ctype), "{name}");
        if let Some(n) = r.header("content-length") {
            assert_eq!(n, bytes.len().to_string(), "{name}");
        }
    }
    assert_eq!(client::get(gw.addr(), "/p/gzip").await.header("content-encoding"), Some("gzip"));
    let r = client::get(gw.addr(), "/p/nested").await;
    assert_eq!(r.text(), r#"{"items":[1,2,3],"big":123456789012345678901234567890,"debug":true}"#);

    // Requests: the upstream gets what the client sent.
    for (what, ctype, sent) in [("text", "text/plain", TEXT), ("malformed", "application/json", MALFORMED)] {
        let r = post(gw.addr(), "/q/echo", &[("content-type", ctype)], body::full(sent)).await;
        assert_eq!(received(&r).0, sent, "{what}");
    }
    let r = post(gw.addr(), "/q/echo", &[JSON], body::full(large.clone())).await;
    let (got, echo) = received(&r);
    assert_eq!((got.as_str(), echo["content_length"].as_str()), (large.as_str(), Some("4096")));
    // Chunked and over the limit: what was read goes first, the rest streams after it.
    let r = post(gw.addr(), "/q/echo", &[JSON], chunked(&large)).await;
    let (got, echo) = received(&r);
    assert_eq!((got.as_str(), echo["transfer_encoding"].as_str()), (large.as_str(), Some("chunked")));
    let r = post(gw.addr(), "/q/echo", &[JSON, ("content-encoding", "gzip")], body::full(gzip.clone())).await;
    let echo = r.json();
    assert_eq!(
        (echo["body_len"].as_u64(), echo["headers"]["content-encoding"].as_str()),
        (Some(gzip.len() as u64), Some("gzip"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_bodies_refused() {
    let _shared = COUNTERS.read().await;
    let o = Origin::start().await;
    let refuse = "{remove: {json: [user]}, max_body_bytes: 1KiB, on_unsupported_body: refuse}";
    let gw = TestGateway::start(&config(&format!(
        r#"
services: [{{name: o, url: "http://{o}"}}]
routes:
  - {{name: resp, service: o, paths: ["/f"], strip_path: true, plugins: [{{name: response-transformer, config: {refuse}}}]}}
  - {{name: req, service: o, paths: ["/g"], plugins: [{{name: request-transformer, config: {refuse}}}]}}
"#,
        o = o.addr()
    )));
    for (name, code) in [
        ("text", "upstream_body_not_json"),
        ("malformed", "upstream_body_invalid_json"),
        ("large", "upstream_body_too_large"),
        ("large-chunked", "upstream_body_too_large"),
    ] {
        client::get(gw.addr(), &format!("/f/{name}")).await.assert_error(502, code);
    }
    // Encoded bodies are never refused: they pass as they are.
    let r = client::get(gw.addr(), "/f/gzip").await;
    assert!(r.status == 200 && r.body == origin::gzip(NESTED.as_bytes()));
    assert_eq!(client::get(gw.addr(), "/f/nested").await.json()["items"], serde_json::json!([1, 2, 3]));

    let hits = o.hits();
    let large = origin::large();
    post(gw.addr(), "/g/echo", &[("content-type", "text/plain")], body::full(TEXT))
        .await
        .assert_error(415, "unsupported_media_type");
    post(gw.addr(), "/g/echo", &[], chunked(TEXT)).await.assert_error(415, "unsupported_media_type");
    post(gw.addr(), "/g/echo", &[JSON], body::full(MALFORMED)).await.assert_error(400, "invalid_json");
    post(gw.addr(), "/g/echo", &[JSON], body::full(large.clone())).await.assert_error(413, "body_too_large");
    post(gw.addr(), "/g/echo", &[JSON], chunked(&large)).await.assert_error(413, "body_too_large");
    assert_eq!(o.hits(), hits, "refused requests never reach the upstream");
    // No body, nothing to refuse; a JSON body within the limit is transformed.
    assert_eq!(client::get(gw.addr(), "/g/echo").await.status, 200);
    let r = post(gw.addr(), "/g/echo", &[JSON], body::full(r#"{"user":1,"a":2}"#)).await;
    assert_eq!(received(&r).0, r#"{"a":2}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_limit_timeouts_and_retries() {
    let _shared = COUNTERS.read().await;
    let o = Origin::start().await;
    let gw = TestGateway::start(&config(&format!(
        r#"
limits: {{max_body_bytes: 2KiB, client_body_timeout: 500ms}}
services: [{{name: o, url: "http://{o}"}}]
routes:
  - name: req
    service: o
    paths: ["/h"]
    retry: {{attempts: 1, on: [503], idempotent_only: false}}
    plugins: [{{name: request-transformer, config: {{add: {{json: {{via: gw}}}}, max_body_bytes: 1MiB}}}}]
  - name: slow
    service: o
    paths: ["/s"]
    timeouts: {{read: 300ms}}
    plugins: [{{name: response-transformer, config: {{add: {{json: {{via: gw}}}}}}}}]
"#,
        o = o.addr()
    )));
    // The plugin asks for more than the gateway accepts: the gateway's limit wins.
    let hits = o.hits();
    post(gw.addr(), "/h/echo", &[JSON], chunked(&origin::large())).await.assert_error(413, "body_too_large");
    assert_eq!(o.hits(), hits);
    let r = post(gw.addr(), "/h/echo", &[JSON], chunked(r#"{"a":1}"#)).await;
    assert_eq!(received(&r).0, r#"{"a":1,"via":"gw"}"#);

    // A body read whole is sent again on a retry: the 503 is retried with the same body.
    let hits = o.hits();
    let r = post(gw.addr(), "/h/flaky", &[JSON], chunked(r#"{"a":1}"#)).await;
    assert_eq!(received(&r).0, r#"{"a":1,"via":"gw"}"#);
    assert_eq!(o.hits(), hits + 2);

    // An upstream that stops sending its body: the read timeout still applies.
    let t = Instant::now();
    client::get(gw.addr(), "/s/stall").await.assert_error(504, "upstream_timeout");
    assert!(t.elapsed() < Duration::from_secs(5));

    // A client that stops sending its body: 408 after client_body_timeout.
    let (tx, upload) = body::channel(1);
    tx.send(Bytes::from_static(b"{\"a\":")).await.unwrap();
    let t = Instant::now();
    let r = post(gw.addr(), "/h/echo", &[JSON], upload).await;
    r.assert_error(408, "request_timeout");
    assert!(t.elapsed() < Duration::from_secs(5));
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_counted_by_outcome_and_reason() {
    let _alone = COUNTERS.write().await;
    let o = Origin::start().await;
    let gw = TestGateway::start(&format!(
        r#"
runtime: {{workers: 2, watch_config: false, drain_timeout: 1s}}
listeners: [{{name: main, address: "127.0.0.1:0"}}]
status: {{address: "127.0.0.1:0"}}
services: [{{name: o, url: "http://{o}"}}]
routes:
  - {{name: resp, service: o, paths: ["/p"], plugins: [{{name: response-transformer, config: {{remove: {{json: [a]}}, max_body_bytes: 1KiB}}}}]}}
  - {{name: req, service: o, paths: ["/g"], plugins: [{{name: request-transformer, config: {{remove: {{json: [a]}}, on_unsupported_body: refuse}}}}]}}
"#,
        o = o.addr()
    ));
    let status = gw.gateway().status_addr().unwrap();
    let before = scrape_values(&client::get(status, "/metrics").await.text());
    for path in ["/p/nested", "/p/nested", "/p/text", "/p/large", "/p/gzip", "/p/malformed"] {
        assert_eq!(client::get(gw.addr(), path).await.status, 200, "{path}");
    }
    post(gw.addr(), "/g/echo", &[("content-type", "text/plain")], body::full(TEXT))
        .await
        .assert_error(415, "unsupported_media_type");
    post(gw.addr(), "/g/echo", &[JSON], body::full(MALFORMED)).await.assert_error(400, "invalid_json");
    let after = scrape_values(&client::get(status, "/metrics").await.text());
    let delta = |plugin: &str, label: &str, family: &str| {
        let mut labels = [label.to_owned(), format!("plugin={plugin}")];
        labels.sort();
        let k = format!("meshgate_transform_{family}_total{{{}}}", labels.join(","));
        after.get(&k).unwrap_or_else(|| panic!("no {k}")) - before.get(&k).copied().unwrap_or(0.0)
    };
    let resp = "response-transformer";
    let req = "request-transformer";
    assert_eq!(delta(resp, "outcome=transformed", "bodies"), 2.0);
    assert_eq!(delta(resp, "outcome=passed", "bodies"), 4.0);
    assert_eq!(delta(resp, "outcome=refused", "bodies"), 0.0);
    for reason in ["not_json", "too_large", "encoded", "invalid_json"] {
        assert_eq!(delta(resp, &format!("reason={reason}"), "untouched"), 1.0, "{reason}");
    }
    assert_eq!(delta(req, "outcome=refused", "bodies"), 2.0);
    assert_eq!(delta(req, "reason=not_json", "untouched"), 1.0);
    assert_eq!(delta(req, "reason=invalid_json", "untouched"), 1.0);
}

#[test]
fn unknown_template_sources_are_refused_at_load() {
    let err = TestGateway::try_start(&config(
        r#"
services: [{name: o, url: "http://127.0.0.1:9"}]
routes:
  - name: r
    service: o
    paths: ["/"]
    plugins: [{name: request-transformer, config: {add: {headers: {x-a: "{cookie.sid}"}}}}]
"#,
    ))
    .err()
    .expect("a config with an unknown template source must not start")
    .to_string();
    assert!(
        err.contains("routes[0].plugins[0].config.add.headers.x-a: unknown template source \"cookie\" (known: header, query, path, consumer)"),
        "{err}"
    );
}
