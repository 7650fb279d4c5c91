//! Path normalisation against access control: a route protected by key-auth, ip-restriction or
//! request-size-limiting can never be reached through another spelling of its path that an open
//! route would take and the upstream would read as the protected one — over HTTP/1.1 (raw bytes,
//! so nothing on the client side cleans the path) and HTTP/2. Spellings that cannot be
//! normalised safely are refused with 400; every other one is routed, checked and forwarded in
//! its one normal form.

use bytes::Bytes;
use http::{Method, Request};
use meshgate_e2e::client::Conn;
use meshgate_e2e::raw::{RawConn, RawUpstream};
use meshgate_e2e::{TestGateway, body, config};

/// Three protected areas and an open catch-all, all to one recording upstream.
fn gateway(up: &RawUpstream, http: &str) -> TestGateway {
    TestGateway::start(&config(&format!(
        r#"
http: {http}
services: [{{name: s, url: "http://{}"}}]
consumers: [{{username: ops, credentials: {{key-auth: [{{key: secret-key}}]}}}}]
routes:
  - {{name: admin, service: s, paths: [/admin], plugins: [{{name: key-auth}}]}}
  - {{name: internal, service: s, paths: [/internal], plugins: [{{name: ip-restriction, config: {{deny: [0.0.0.0/0, "::/0"]}}}}]}}
  - {{name: small, service: s, paths: [/small], plugins: [{{name: request-size-limiting, config: {{max_bytes: 4}}}}]}}
  - {{name: open, service: s, paths: [/]}}
"#,
        up.addr()
    )))
}

/// `(spelling, what it is)`: `Ok(normal form)` when it is routed as that path, `Err(())` when
/// it is refused with 400. `admin` stands for each protected area's name; `%61dmin` for its
/// first letter percent-encoded, `%61%64%6d%69%6e` for all of it.
const SPELLINGS: &[(&str, Result<&str, ()>)] = &[
    ("/admin/secret", Ok("/admin/secret")),
    ("/public/../admin/secret", Ok("/admin/secret")),
    ("/public/%2e%2e/admin/secret", Ok("/admin/secret")),
    ("/public/%2E%2e/admin/secret", Ok("/admin/secret")),
    ("/public/.%2e/admin/secret", Ok("/admin/secret")),
    ("/%61dmin/secret", Ok("/admin/secret")),
    ("/%61%64%6d%69%6e/secret", Ok("/admin/secret")),
    ("/./admin/secret", Ok("/admin/secret")),
    ("//admin/secret", Ok("/admin/secret")),
    ("/public//../admin/secret", Ok("/admin/secret")),
    ("/../admin/secret", Ok("/admin/secret")),
    ("/public/x/../../admin/secret", Ok("/admin/secret")),
    ("/admin/./secret", Ok("/admin/secret")),
    ("/public/..%2Fadmin/secret", Err(())),
    ("/public/..%2fadmin/secret", Err(())),
    ("/public/..%5Cadmin/secret", Err(())),
    ("/public/..\\admin/secret", Err(())),
    ("/public/..;/admin/secret", Err(())),
    ("/public/%2e%2e;x/admin/secret", Err(())),
    ("/admin%00/secret", Err(())),
    ("/admin%zz", Err(())),
];

/// The protected prefixes and what refuses a request there without the right to it.
const AREAS: &[(&str, u16)] = &[("/admin", 401), ("/internal", 403), ("/small", 413)];

/// Sends `path` (with `/admin` replaced by each protected area) and checks the outcome.
async fn check_all(gw: &TestGateway, up: &RawUpstream, h2: bool) {
    let mut failures = Vec::new();
    for (area, refused) in AREAS {
        for (spelling, want) in SPELLINGS {
            let path = spell(spelling, &area[1..]);
            up.recorder().clear();
            let status = if h2 { h2_post(gw, &path).await } else { h1_post(gw, &path).await };
            let seen: Vec<String> = up.recorder().requests().iter().map(|m| m.start.clone()).collect();
            let ok = match want {
                Err(()) => status == 400 && seen.is_empty(),
                Ok(_) => status == *refused && seen.is_empty(),
            };
            if !ok {
                failures.push(format!("{path} over {}: {status}, upstream saw {seen:?}", if h2 { "h2" } else { "h1" }));
            }
        }
    }
    assert!(failures.is_empty(), "{} spellings got through:\n{}", failures.len(), failures.join("\n"));
}

/// `spelling` for the area `name` (see [`SPELLINGS`]).
fn spell(spelling: &str, name: &str) -> String {
    let hex = |b: u8| format!("%{b:02x}");
    let first = format!("{}{}", hex(name.as_bytes()[0]), &name[1..]);
    let all: String = name.bytes().map(hex).collect();
    spelling.replace("%61%64%6d%69%6e", &all).replace("%61dmin", &first).replace("admin", name)
}

/// A POST of 8 bytes (over `/small`'s limit) without credentials, on raw bytes.
async fn h1_post(gw: &TestGateway, path: &str) -> u16 {
    let mut c = RawConn::connect(gw.addr()).await;
    c.send(format!("POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\n12345678").as_bytes()).await;
    c.response(false).await.map_or(0, |m| m.status())
}

async fn h2_post(gw: &TestGateway, path: &str) -> u16 {
    let mut c = Conn::h2c(gw.addr()).await.unwrap();
    let uri = format!("http://t{path}");
    let req = Request::builder().method(Method::POST).uri(uri).body(body::full(Bytes::from_static(b"12345678")));
    c.send(req.unwrap()).await.map_or(0, |r| r.status.as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_spelling_of_a_protected_path_gets_around_its_route() {
    let up = RawUpstream::ok().await;
    let gw = gateway(&up, "{}");
    check_all(&gw, &up, false).await;
    check_all(&gw, &up, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_receives_the_normal_form() {
    let up = RawUpstream::ok().await;
    let gw = gateway(&up, "{}");
    for (spelling, want) in SPELLINGS {
        let Ok(normal) = want else { continue };
        let path = format!("{spelling}?q=%2e%2E&x=1");
        up.recorder().clear();
        let mut c = RawConn::connect(gw.addr()).await;
        c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\napikey: secret-key\r\n\r\n").as_bytes()).await;
        assert_eq!(c.response(false).await.map(|m| m.status()), Some(200), "{path}");
        let seen = up.recorder().requests();
        // The query string is the client's, untouched.
        assert_eq!(seen[0].start, format!("GET {normal}?q=%2e%2E&x=1 HTTP/1.1"), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaped_slashes_kept_or_decoded_as_configured() {
    let up = RawUpstream::ok().await;
    // Kept: `%2F` is not a separator, so `..%2F` is not a dot-segment; the upstream gets it
    // encoded, and an area is not reached through it.
    let gw = gateway(&up, "{escaped_slashes: keep}");
    let mut c = RawConn::connect(gw.addr()).await;
    c.send(b"GET /files/a%2fb HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(c.response(false).await.map(|m| m.status()), Some(200));
    assert_eq!(up.recorder().requests()[0].start, "GET /files/a%2Fb HTTP/1.1");
    drop(gw);
    // Decoded: a separator like any other, so `..%2F` climbs and the protected route decides.
    up.recorder().clear();
    let gw = gateway(&up, "{escaped_slashes: decode}");
    assert_eq!(h1_post(&gw, "/public/..%2Fadmin/secret").await, 401);
    let mut c = RawConn::connect(gw.addr()).await;
    c.send(b"GET /public/..%2Fadmin/secret HTTP/1.1\r\nHost: t\r\napikey: secret-key\r\n\r\n").await;
    assert_eq!(c.response(false).await.map(|m| m.status()), Some(200));
    assert_eq!(up.recorder().requests()[0].start, "GET /admin/secret HTTP/1.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_case_sensitive() {
    // RFC 3986: only the scheme and host are case-insensitive. `/ADMIN` is another path, which
    // the open route takes and forwards as it is.
    let up = RawUpstream::ok().await;
    let gw = gateway(&up, "{}");
    assert_eq!(h1_post(&gw, "/admin/x").await, 401);
    assert_eq!(h1_post(&gw, "/ADMIN/x").await, 200);
    assert_eq!(up.recorder().requests()[0].start, "POST /ADMIN/x HTTP/1.1");
}
