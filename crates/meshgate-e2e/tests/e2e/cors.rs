//! CORS on real traffic: preflights answered by the gateway (the upstream counts what reaches
//! it), actual requests from allowed (exact, wildcard, regex) and refused origins, credentials,
//! max-age, `Vary`, `*`, `preflight_continue`, and the counters on `/metrics`.

use http::Method;
use meshgate_e2e::{Resp, TestGateway, Upstream, body, client, config};
use meshgate_plugins::transform::cors::{PREFLIGHTS, REFUSED_PREFLIGHTS, REFUSED_REQUESTS};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// The CORS counters are process-wide: tests that move them run one at a time, so each can
/// check exact differences.
static COUNTERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn counts() -> [u64; 3] {
    [&PREFLIGHTS, &REFUSED_PREFLIGHTS, &REFUSED_REQUESTS].map(|c: &AtomicU64| c.load(Ordering::Relaxed))
}

/// `/api`: listed origins with credentials, behind key-auth. `/open`: any origin.
/// `/passthrough`: preflights forwarded to the upstream.
fn gateway(up: &Upstream) -> TestGateway {
    TestGateway::start(&config(&format!(
        r#"
status: {{address: "127.0.0.1:0"}}
services: [{{name: s, url: "http://{}"}}]
consumers: [{{username: app, credentials: {{key-auth: [{{key: k1}}]}}}}]
routes:
  - name: api
    service: s
    paths: [/api]
    plugins:
      - name: key-auth
      - name: cors
        config:
          origins: ["https://app.example.com", "https://*.example.org", '~http://localhost:\d+']
          methods: [GET, POST, PUT, DELETE]
          headers: [Content-Type, X-Api-Version, apikey]
          exposed_headers: [X-Upstream-Name]
          credentials: true
          max_age: 10m
  - name: open
    service: s
    paths: [/open]
    plugins: [{{name: cors, config: {{origins: ["*"], max_age: 5}}}}]
  - name: passthrough
    service: s
    paths: [/passthrough]
    plugins: [{{name: cors, config: {{origins: ["https://app.example.com"], preflight_continue: true}}}}]
"#,
        up.addr()
    )))
}

async fn send(addr: SocketAddr, method: Method, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = client::request(method, path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    client::send(addr, req.body(body::empty()).unwrap()).await
}

async fn preflight(addr: SocketAddr, path: &str, origin: &str, request_headers: Option<&str>) -> Resp {
    let mut headers = vec![("origin", origin), ("access-control-request-method", "PUT")];
    headers.extend(request_headers.map(|h| ("access-control-request-headers", h)));
    send(addr, Method::OPTIONS, path, &headers).await
}

fn cors_headers(r: &Resp) -> Vec<&str> {
    r.headers.keys().map(|k| k.as_str()).filter(|k| k.starts_with("access-control-")).collect()
}

/// `name{labels} value` from the status listener's `/metrics`.
async fn metric(gw: &TestGateway, sample: &str) -> u64 {
    let text = client::get(gw.gateway().status_addr().expect("status listener"), "/metrics").await.text();
    let line =
        text.lines().find(|l| l.starts_with(&format!("{sample} "))).unwrap_or_else(|| panic!("{sample}: {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflights_are_answered_by_the_gateway_and_never_reach_the_upstream() {
    let _serial = COUNTERS.lock().await;
    let up = Upstream::http("up").await;
    let gw = gateway(&up);
    let addr = gw.addr();
    let before = counts();
    let answered = "meshgate_cors_preflights_answered_total";
    let refused = "meshgate_cors_origins_refused_total{request=\"preflight\"}";
    let scraped = (metric(&gw, answered).await, metric(&gw, refused).await);

    // Exact, wildcard (two levels deep) and regex origins; no credentials sent, yet key-auth
    // (which runs after cors) does not refuse them.
    for origin in ["https://app.example.com", "https://a.b.example.org", "http://localhost:5173"] {
        let r = preflight(addr, "/api/orders", origin, Some("content-type,apikey")).await;
        assert_eq!(r.status, 204, "{origin}: {}", r.text());
        assert!(r.body.is_empty());
        assert_eq!(r.header("access-control-allow-origin"), Some(origin));
        assert_eq!(r.header("vary"), Some("Origin"));
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
        assert_eq!(r.header("access-control-allow-methods"), Some("GET, POST, PUT, DELETE"));
        assert_eq!(r.header("access-control-allow-headers"), Some("Content-Type, X-Api-Version, apikey"));
        assert_eq!(r.header("access-control-max-age"), Some("600"));
    }
    // A header outside the list: answered, but without Access-Control-Allow-Headers, so the
    // browser does not send the actual request.
    let r = preflight(addr, "/api/orders", "https://app.example.com", Some("content-type,x-secret")).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example.com"));
    assert_eq!(r.header("access-control-allow-headers"), None);
    // Refused origins (a look-alike suffix, the bare domain, another port, another scheme):
    // answered here too, with no CORS header at all.
    let refused_origins = [
        "https://app.example.com.evil.net",
        "https://example.org",
        "https://app.example.com:8443",
        "http://app.example.com",
    ];
    for origin in refused_origins {
        let r = preflight(addr, "/api/orders", origin, None).await;
        assert_eq!(r.status, 204, "{origin}");
        assert!(cors_headers(&r).is_empty(), "{origin}: {:?}", r.headers);
        assert_eq!(r.header("vary"), Some("Origin"));
    }
    assert_eq!(up.hits(), 0, "no preflight reached the upstream");

    // Counted, and exported on /metrics.
    let after = counts();
    assert_eq!(after[0] - before[0], 4, "preflights answered");
    assert_eq!(after[1] - before[1], 4, "refused preflights");
    assert_eq!(after[2], before[2], "no actual request was made");
    assert_eq!(metric(&gw, answered).await - scraped.0, 4);
    assert_eq!(metric(&gw, refused).await - scraped.1, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actual_requests_get_cors_headers_for_allowed_origins_only() {
    let _serial = COUNTERS.lock().await;
    let up = Upstream::http("up").await;
    let gw = gateway(&up);
    let addr = gw.addr();
    let before = counts();

    for origin in ["https://app.example.com", "https://shop.example.org", "http://localhost:3000"] {
        let r = send(addr, Method::POST, "/api/orders", &[("origin", origin), ("apikey", "k1")]).await;
        assert_eq!((r.status.as_u16(), r.name()), (200, "up".to_owned()), "{origin}");
        assert_eq!(r.seen_header("origin").as_deref(), Some(origin), "the upstream sees the Origin");
        assert_eq!(r.header("access-control-allow-origin"), Some(origin));
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
        assert_eq!(r.header("access-control-expose-headers"), Some("X-Upstream-Name"));
        assert_eq!(r.header("vary"), Some("Origin"));
        assert_eq!(r.header("access-control-allow-methods"), None, "only preflights list methods");
    }
    // The gateway's own answers carry the headers too, so the app can read a 401.
    let r = send(addr, Method::GET, "/api/orders", &[("origin", "https://app.example.com")]).await;
    r.assert_error(401, "unauthorized");
    assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example.com"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    // A refused origin is still served (CORS binds browsers, not the server) but gets no CORS
    // header; neither does a request without Origin. Both vary by Origin for caches.
    let hits = up.hits();
    for headers in [&[("origin", "https://evil.example.net"), ("apikey", "k1")][..], &[("apikey", "k1")]] {
        let r = send(addr, Method::GET, "/api/orders", headers).await;
        assert_eq!(r.status, 200);
        assert!(cors_headers(&r).is_empty(), "{headers:?}: {:?}", r.headers);
        assert_eq!(r.header("vary"), Some("Origin"));
    }
    assert_eq!(up.hits(), hits + 2);
    let after = counts();
    assert_eq!(after[2] - before[2], 1, "one refused actual request");
    assert_eq!((after[0], after[1]), (before[0], before[1]), "no preflight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_origin_and_preflight_continue() {
    let _serial = COUNTERS.lock().await;
    let up = Upstream::http("up").await;
    let gw = gateway(&up);
    let addr = gw.addr();

    // `*`: no credentials, `*` rather than the origin, nothing varies by Origin.
    let r = preflight(addr, "/open", "https://anyone.test", Some("x-whatever")).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("access-control-allow-headers"), Some("x-whatever"));
    assert_eq!(r.header("access-control-max-age"), Some("5"));
    assert_eq!((r.header("vary"), r.header("access-control-allow-credentials")), (None, None));
    assert_eq!(up.hits(), 0);
    for headers in [&[("origin", "https://anyone.test")][..], &[]] {
        let r = send(addr, Method::GET, "/open", headers).await;
        assert_eq!((r.status.as_u16(), r.name()), (200, "up".to_owned()));
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
        assert_eq!(r.header("vary"), None);
    }

    // preflight_continue: the upstream gets the preflight and its answer stands.
    let hits = up.hits();
    let r = preflight(addr, "/passthrough", "https://app.example.com", None).await;
    assert_eq!(up.hits(), hits + 1, "forwarded");
    assert_eq!((r.status.as_u16(), r.name()), (200, "up".to_owned()));
    assert_eq!(r.json()["method"], "OPTIONS");
    assert!(cors_headers(&r).is_empty(), "the echo upstream sets none, and the gateway adds none");
    // Actual requests on that route are still the gateway's to answer for.
    let r = send(addr, Method::GET, "/passthrough", &[("origin", "https://app.example.com")]).await;
    assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example.com"));
}

#[test]
fn star_with_credentials_is_refused_at_load() {
    let yaml = config(
        r#"services: [{name: s, url: "http://127.0.0.1:9"}]
routes: [{name: r, service: s, paths: [/]}]
plugins: [{name: cors, config: {origins: ["*"], credentials: true}}]"#,
    );
    let err = TestGateway::try_start(&yaml).err().expect("refused").to_string();
    assert!(err.contains("plugins[0].config.credentials: cannot be true with origins [\"*\"]"), "{err}");
}
