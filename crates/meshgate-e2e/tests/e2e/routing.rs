//! Route precedence, table-driven: one gateway with many overlapping routes, each route sending
//! to its own upstream (named like the route), and requests whose answering upstream shows which
//! route won.

use http::Method;
use meshgate_e2e::client::{self, Conn};
use meshgate_e2e::{TestGateway, Upstream, body, config};

/// `(name, extra route fields)`; every route's service and upstream server share its name.
const ROUTES: &[(&str, &str)] = &[
    // 1. priority beats everything, including declaration order and host specificity.
    ("prio-low", r#"paths: ["/prio"]"#),
    ("prio-high", r#"paths: ["/prio"], priority: 10"#),
    ("prio-vs-host", r#"paths: ["/ph"], priority: 1"#),
    ("ph-exact-host", r#"paths: ["/ph"], hosts: [ph.test]"#),
    // 2. host: exact > longer wildcard > wildcard > none.
    ("host-none", r#"paths: ["/h"]"#),
    ("host-wild", r#"paths: ["/h"], hosts: ["*.example.com"]"#),
    ("host-wild-long", r#"paths: ["/h"], hosts: ["*.api.example.com"]"#),
    ("host-exact", r#"paths: ["/h"], hosts: [api.example.com, "*.other.test"]"#),
    // Host specificity is judged before path specificity.
    ("host-over-path", r#"paths: ["/"], hosts: [hp.test]"#),
    ("path-exact-nohost", r#"paths: ["=/xp/exact"]"#),
    // 3. path: exact > regex > longest prefix.
    ("p-short", r#"paths: ["/p"]"#),
    ("p-long", r#"paths: ["/p/long"]"#),
    ("p-regex", r#"paths: ["~/p/long/[0-9]+$"]"#),
    ("p-exact", r#"paths: ["=/p/long/42"]"#),
    // 4. headers: exact values (case-sensitive), regex values, lists; more conditions win.
    ("app-android", r#"paths: ["/app"], headers: {Client: Android}"#),
    ("app-ios", r#"paths: ["/app"], headers: {Client: IOS}"#),
    ("app-default", r#"paths: ["/app"]"#),
    ("ua-bot", r#"paths: ["/ua"], headers: {User-Agent: "~(?i)bot"}"#),
    ("ua-bot-v2", r#"paths: ["/ua"], headers: {User-Agent: "~(?i)bot", X-Version: "2"}"#),
    ("ua-any", r#"paths: ["/ua"]"#),
    ("tier", r#"paths: ["/tier"], headers: {X-Tier: [gold, platinum]}"#),
    // Methods: having methods beats having none.
    ("m-any", r#"paths: ["/m"]"#),
    ("m-read", r#"paths: ["/m"], methods: [GET, HEAD]"#),
    ("m-write", r#"paths: ["/m"], methods: [POST, PUT]"#),
    // 5. declaration order: the earlier of two equal routes wins.
    ("decl-first", r#"paths: ["/dup"]"#),
    ("decl-second", r#"paths: ["/dup"]"#),
];

/// `(method, host, path, headers, expected route or None for 404)`.
type Case = (Method, &'static str, &'static str, &'static [(&'static str, &'static str)], Option<&'static str>);

const CASES: &[Case] = &[
    (Method::GET, "gw.test", "/prio", &[], Some("prio-high")),
    (Method::GET, "gw.test", "/prio/x", &[], Some("prio-high")),
    (Method::GET, "ph.test", "/ph", &[], Some("prio-vs-host")),
    (Method::GET, "api.example.com", "/h", &[], Some("host-exact")),
    (Method::GET, "API.Example.COM:8080", "/h/x", &[], Some("host-exact")),
    (Method::GET, "z.other.test", "/h", &[], Some("host-exact")),
    (Method::GET, "x.example.com", "/h", &[], Some("host-wild")),
    (Method::GET, "a.b.example.com", "/h", &[], Some("host-wild")),
    (Method::GET, "v1.api.example.com", "/h", &[], Some("host-wild-long")),
    (Method::GET, "example.com", "/h", &[], Some("host-none")),
    (Method::GET, "nothing.test", "/h", &[], Some("host-none")),
    (Method::GET, "hp.test", "/xp/exact", &[], Some("host-over-path")),
    (Method::GET, "gw.test", "/xp/exact", &[], Some("path-exact-nohost")),
    (Method::GET, "gw.test", "/xp/exact/more", &[], None),
    (Method::GET, "gw.test", "/p/long/42", &[], Some("p-exact")),
    (Method::GET, "gw.test", "/p/long/42?q=1", &[], Some("p-exact")),
    (Method::GET, "gw.test", "/p/long/7", &[], Some("p-regex")),
    (Method::GET, "gw.test", "/p/long/42/x", &[], Some("p-long")),
    (Method::GET, "gw.test", "/p/long/abc", &[], Some("p-long")),
    (Method::GET, "gw.test", "/p/longer", &[], Some("p-long")),
    (Method::GET, "gw.test", "/p/other", &[], Some("p-short")),
    (Method::GET, "gw.test", "/px", &[], Some("p-short")),
    (Method::GET, "gw.test", "/q", &[], None),
    (Method::GET, "gw.test", "/app", &[("Client", "Android")], Some("app-android")),
    (Method::GET, "gw.test", "/app/feed", &[("Client", "IOS")], Some("app-ios")),
    (Method::GET, "gw.test", "/app", &[], Some("app-default")),
    (Method::GET, "gw.test", "/app", &[("Client", "android")], Some("app-default")),
    (Method::GET, "gw.test", "/app", &[("Client", "Windows")], Some("app-default")),
    (Method::GET, "gw.test", "/ua", &[("User-Agent", "Googlebot/2.1")], Some("ua-bot")),
    (Method::GET, "gw.test", "/ua", &[("User-Agent", "MyBOT"), ("X-Version", "2")], Some("ua-bot-v2")),
    (Method::GET, "gw.test", "/ua", &[("User-Agent", "Mozilla/5.0"), ("X-Version", "2")], Some("ua-any")),
    (Method::GET, "gw.test", "/ua", &[], Some("ua-any")),
    (Method::GET, "gw.test", "/tier", &[("X-Tier", "platinum")], Some("tier")),
    (Method::GET, "gw.test", "/tier", &[("X-Tier", "gold")], Some("tier")),
    (Method::GET, "gw.test", "/tier", &[("X-Tier", "silver")], None),
    (Method::GET, "gw.test", "/m", &[], Some("m-read")),
    (Method::POST, "gw.test", "/m", &[], Some("m-write")),
    (Method::PUT, "gw.test", "/m/1", &[], Some("m-write")),
    (Method::DELETE, "gw.test", "/m/1", &[], Some("m-any")),
    (Method::GET, "gw.test", "/dup", &[], Some("decl-first")),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precedence_table() {
    let mut servers = Vec::new();
    let mut services = String::from("services:\n");
    let mut routes = String::from("routes:\n");
    for (name, fields) in ROUTES {
        let up = Upstream::http(name).await;
        services.push_str(&format!("  - {{name: {name}, url: \"http://{}\"}}\n", up.addr()));
        routes.push_str(&format!("  - {{name: {name}, service: {name}, {fields}}}\n"));
        servers.push(up);
    }
    let gw = TestGateway::start(&config(&format!("{services}{routes}")));

    // One keep-alive connection for all cases: routing must not depend on the connection. Every
    // case runs over HTTP/1.1 (Host header) and HTTP/2 (`:authority`).
    let mut failures = Vec::new();
    for h2 in [false, true] {
        let mut conn = if h2 { Conn::h2c(gw.addr()).await } else { Conn::h1(gw.addr()).await }.unwrap();
        let proto = if h2 { "h2c" } else { "http/1.1" };
        for (method, host, path, headers, expected) in CASES {
            let mut req = client::request(method.clone(), path).header("host", *host);
            for (k, v) in *headers {
                req = req.header(*k, *v);
            }
            let resp = conn.send(req.body(body::empty()).unwrap()).await.unwrap();
            let got = if resp.status == 404 && resp.name().is_empty() {
                resp.assert_error(404, "no_route");
                None
            } else {
                assert_eq!(resp.status, 200, "{method} {host}{path}: {}", resp.text());
                Some(resp.name())
            };
            if got.as_deref() != *expected {
                failures
                    .push(format!("[{proto}] {method} {host}{path} {headers:?}: expected {expected:?}, got {got:?}"));
            }
        }
    }
    assert!(CASES.len() >= 20);
    assert!(
        failures.is_empty(),
        "{} of {} cases routed wrong:\n{}",
        failures.len(),
        2 * CASES.len(),
        failures.join("\n")
    );
}
