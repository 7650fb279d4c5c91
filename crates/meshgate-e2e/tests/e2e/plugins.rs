//! Built-in plugins through the whole gateway: `request-id` and `response-headers`, globally, per
//! service and per route (the most specific instance wins).

use meshgate_e2e::client::{self, Conn};
use meshgate_e2e::{TestGateway, Upstream, config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_and_response_headers() {
    let up = Upstream::http("up").await;
    let gw = TestGateway::start(&config(&format!(
        r#"
services:
  - name: s
    url: "http://{a}"
  - name: svc-level
    url: "http://{a}"
    plugins:
      - {{name: response-headers, config: {{set: {{X-Layer: service}}}}}}
routes:
  - {{name: plain, service: s, paths: ["/plain"]}}
  - name: special
    service: s
    paths: ["/special"]
    plugins:
      - {{name: response-headers, config: {{set: {{X-Layer: route}}, remove: [Content-Type]}}}}
  - {{name: by-service, service: svc-level, paths: ["/svc"]}}
  - name: custom-id
    service: s
    paths: ["/custom-id"]
    plugins:
      - {{name: request-id, config: {{header_name: X-Trace, trust_incoming: false}}}}
plugins:
  - name: request-id
  - name: response-headers
    config:
      add: {{X-Global-Only: "yes", Content-Type: "text/overridden"}}
      set: {{X-Layer: global, Server: meshgate}}
"#,
        a = up.addr()
    )));
    let addr = gw.addr();

    // request-id: generated, sent upstream and echoed to the client.
    let resp = client::get(addr, "/plain").await;
    let id = resp.header("x-request-id").expect("x-request-id on the response").to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(resp.seen_header("x-request-id").as_deref(), Some(id.as_str()), "the upstream saw the same id");
    let again = client::get(addr, "/plain").await;
    assert_ne!(again.header("x-request-id"), Some(id.as_str()), "ids are unique");

    // An incoming id is propagated unchanged.
    let resp = client::get_with(addr, "/plain", &[("x-request-id", "client-chosen-42")]).await;
    assert_eq!(resp.header("x-request-id"), Some("client-chosen-42"));
    assert_eq!(resp.seen_header("x-request-id").as_deref(), Some("client-chosen-42"));

    // Global response-headers: add only when missing, set always.
    assert_eq!(resp.header("x-layer"), Some("global"));
    assert_eq!(resp.header("server"), Some("meshgate"));
    assert_eq!(resp.header("x-global-only"), Some("yes"));
    assert_eq!(resp.header("content-type"), Some("application/json"), "add must not replace the upstream's header");

    // A route-level instance replaces the global one entirely (no X-Global-Only).
    let resp = client::get(addr, "/special").await;
    assert_eq!(resp.header("x-layer"), Some("route"));
    assert_eq!(resp.header("x-global-only"), None, "route-level response-headers overrides the global instance");
    assert_eq!(resp.header("content-type"), None, "removed by the route's instance");
    assert!(resp.header("x-request-id").is_some(), "other global plugins still apply");

    // A service-level instance applies to the service's routes.
    let resp = client::get(addr, "/svc").await;
    assert_eq!(resp.header("x-layer"), Some("service"));
    assert_eq!(resp.header("x-global-only"), None);

    // A route-level request-id with its own settings: another header, incoming ids not trusted.
    let resp = client::get_with(addr, "/custom-id", &[("x-trace", "forged"), ("x-request-id", "abc")]).await;
    let trace = resp.header("x-trace").expect("x-trace on the response").to_owned();
    assert_ne!(trace, "forged");
    assert_eq!(resp.seen_header("x-trace").as_deref(), Some(trace.as_str()));
    assert_eq!(resp.seen_header("x-request-id").as_deref(), Some("abc"), "the global instance was replaced");

    // Global plugins also run for requests that match no route.
    let resp = client::get(addr, "/no-such-route").await;
    resp.assert_error(404, "no_route");
    assert!(resp.header("x-request-id").is_some(), "404s carry a request id too");
    assert_eq!(resp.header("x-layer"), Some("global"));

    // Several requests on one connection each get their own id.
    let mut conn = Conn::h1(addr).await.unwrap();
    let (r1, r2) = (conn.get("/plain").await.unwrap(), conn.get("/plain").await.unwrap());
    assert_ne!(r1.header("x-request-id"), r2.header("x-request-id"));
}

/// `ip-restriction` on one route, judging the address that the one trusted proxy in front saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_restriction_with_except_ranges_and_trusted_hops() {
    let up = Upstream::http("up").await;
    let gw = TestGateway::start(&config(&format!(
        r#"
services: [{{name: s, url: "http://{}"}}]
routes:
  - {{name: open, service: s, paths: ["/open"]}}
  - name: internal
    service: s
    paths: ["/internal"]
    plugins:
      - name: ip-restriction
        config:
          allow: [{{cidr: 10.0.0.0/8, except: [10.66.0.0/16]}}, "2001:db8::/32"]
          deny: [10.9.9.9]
          trusted_hops: 1
"#,
        up.addr()
    )));
    let addr = gw.addr();
    let cases = [
        ("10.1.2.3", 200),
        ("10.66.1.1", 403),         // the allow block's except range
        ("10.9.9.9", 403),          // denied outright
        ("192.0.2.1", 403),         // outside every allow block
        ("2001:db8::7", 200),       // IPv6
        ("6.6.6.6, 10.1.2.3", 200), // the client's own entries on the left do not count
        ("10.1.2.3, 6.6.6.6", 403), // ... in either direction
    ];
    for (xff, status) in cases {
        let resp = client::get_with(addr, "/internal", &[("x-forwarded-for", xff)]).await;
        if status == 403 {
            resp.assert_error(403, "ip_forbidden");
        } else {
            assert_eq!(resp.status, 200, "X-Forwarded-For: {xff}");
        }
    }
    // No X-Forwarded-For although a proxy is said to be in front: cannot be judged, refused.
    client::get(addr, "/internal").await.assert_error(403, "ip_forbidden");
    // Other routes are not restricted.
    assert_eq!(client::get_with(addr, "/open", &[("x-forwarded-for", "192.0.2.1")]).await.status, 200);
}
