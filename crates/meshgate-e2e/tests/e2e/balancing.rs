//! Load-balancing algorithms measured on real traffic: weighted round robin, least connections,
//! consistent hashing by header and by cookie.

use http::Method;
use meshgate_e2e::client::{self, Conn};
use meshgate_e2e::{TestGateway, Upstream, body, config, wait_for};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin() {
    let (a, b, c) = (Upstream::http("a").await, Upstream::http("b").await, Upstream::http("c").await);
    let gw = TestGateway::start(&config(&format!(
        r#"
upstreams:
  - name: rr
    targets:
      - {{address: "{}", weight: 3}}
      - {{address: "{}", weight: 1}}
      - {{address: "{}", weight: 0}}
services: [{{name: rr, upstream: rr}}]
routes: [{{name: rr, service: rr, paths: ["/"]}}]
"#,
        a.addr(),
        b.addr(),
        c.addr()
    )));
    let mut conn = Conn::h1(gw.addr()).await.unwrap();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..400 {
        let resp = conn.get("/x").await.unwrap();
        assert_eq!(resp.status, 200);
        *counts.entry(resp.name()).or_default() += 1;
    }
    let (na, nb) = (counts.get("a").copied().unwrap_or(0), counts.get("b").copied().unwrap_or(0));
    assert!(na.abs_diff(300) <= 4 && nb.abs_diff(100) <= 4, "3:1 weights over 400 requests gave {counts:?}");
    assert_eq!(c.hits(), 0, "a weight-0 target must get no traffic: {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections() {
    let (a, b) = (Upstream::http("a").await, Upstream::http("b").await);
    let gw = TestGateway::start(&config(&format!(
        r#"
upstreams:
  - name: lc
    algorithm: least-connections
    targets: [{{address: "{}"}}, {{address: "{}"}}]
services: [{{name: lc, upstream: lc}}]
routes: [{{name: lc, service: lc, paths: ["/"]}}]
"#,
        a.addr(),
        b.addr()
    )));
    let addr = gw.addr();
    // Hold one slow request on whichever target gets it.
    let held = tokio::spawn(async move { client::get(addr, "/hold/1").await });
    let busy = wait_for("the held request to reach a target", Duration::from_secs(5), || async {
        match (a.in_flight(), b.in_flight()) {
            (1, 0) => Some("a"),
            (0, 1) => Some("b"),
            _ => None,
        }
    })
    .await;
    let idle = if busy == "a" { "b" } else { "a" };
    // Every new request goes to the other target while the first is busy (round robin would
    // alternate).
    let mut conn = Conn::h1(addr).await.unwrap();
    for i in 0..10 {
        let resp = conn.get("/quick").await.unwrap();
        assert_eq!(resp.name(), idle, "request {i} while {busy} holds one connection");
    }
    // A second slow request goes to the idle target: now each holds one.
    let held2 = tokio::spawn(async move { client::get(addr, "/hold/2").await });
    wait_for("each target to hold one request", Duration::from_secs(5), || async {
        (a.in_flight() == 1 && b.in_flight() == 1).then_some(())
    })
    .await;
    a.open_gate();
    b.open_gate();
    let (r1, r2) = (held.await.unwrap(), held2.await.unwrap());
    assert_eq!(r1.name(), busy);
    assert_eq!(r2.name(), idle);
}

async fn hashed(gw: &TestGateway, path: &str, header: (&str, String)) -> String {
    let req = client::request(Method::GET, path).header(header.0, header.1).body(body::empty()).unwrap();
    let resp = client::send(gw.addr(), req).await;
    assert_eq!(resp.status, 200);
    resp.name()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_by_header_and_cookie() {
    let ups = [Upstream::http("a").await, Upstream::http("b").await, Upstream::http("c").await];
    let targets: Vec<String> = ups.iter().map(|u| format!("{{address: \"{}\"}}", u.addr())).collect();
    let targets = targets.join(", ");
    let gw = TestGateway::start(&config(&format!(
        r#"
upstreams:
  - {{name: by-header, algorithm: consistent-hash, hash_on: "header:X-User", targets: [{targets}]}}
  - {{name: by-cookie, algorithm: consistent-hash, hash_on: "cookie:sid", targets: [{targets}]}}
services:
  - {{name: by-header, upstream: by-header}}
  - {{name: by-cookie, upstream: by-cookie}}
routes:
  - {{name: by-header, service: by-header, paths: ["/h"]}}
  - {{name: by-cookie, service: by-cookie, paths: ["/c"]}}
"#
    )));
    for (path, make) in [
        ("/h", (|k: &str| ("x-user", k.to_owned())) as fn(&str) -> (&'static str, String)),
        ("/c", |k: &str| ("cookie", format!("theme=dark; sid={k}; lang=en"))),
    ] {
        let mut chosen: HashMap<String, String> = HashMap::new();
        for round in 0..3 {
            for k in 0..40 {
                let key = format!("user-{k}");
                let name = hashed(&gw, path, make(&key)).await;
                match chosen.get(&key) {
                    None => {
                        assert_eq!(round, 0);
                        chosen.insert(key, name);
                    }
                    Some(first) => assert_eq!(&name, first, "{path}: key {key} moved between targets"),
                }
            }
        }
        let mut spread: BTreeMap<&str, usize> = BTreeMap::new();
        for name in chosen.values() {
            *spread.entry(name.as_str()).or_default() += 1;
        }
        assert!(spread.len() >= 2, "{path}: 40 keys all went to one target: {spread:?}");
        assert!(spread.values().all(|&n| n <= 32), "{path}: keys piled on one target: {spread:?}");
    }
    // Without a key, requests are spread (round robin), not piled on one target.
    let mut keyless = BTreeMap::new();
    for _ in 0..6 {
        *keyless.entry(client::get(gw.addr(), "/h").await.name()).or_insert(0) += 1;
    }
    assert!(keyless.len() >= 2, "keyless requests all went to one target: {keyless:?}");
}
