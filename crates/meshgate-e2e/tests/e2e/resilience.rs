//! Circuit breaking (outlier detection) and retries on real traffic: targets that refuse, reset,
//! hang or answer 5xx are ejected for growing times and come back through one trial; at most
//! `max_ejected_percent` are out at once; with every target out the answer is an immediate 503;
//! retries go to another target, only for replayable requests, within the route's budget; route
//! timeouts override the service's.

use http::Method;
use meshgate_e2e::client::{self, Conn, Resp};
use meshgate_e2e::observe::scrape_values;
use meshgate_e2e::upstream::closed_port;
use meshgate_e2e::{TestGateway, Upstream, body, config, wait_for};
use meshgate_proxy::TargetStatus;
use std::time::{Duration, Instant};

/// The state of the target at `addr` as the gateway sees it.
fn status_of(gw: &TestGateway, addr: impl ToString) -> TargetStatus {
    let addr = addr.to_string();
    let all = gw.gateway().target_statuses();
    all.iter().find(|s| s.address == addr).cloned().unwrap_or_else(|| panic!("no target {addr} in {all:?}"))
}

/// Sends requests (10 ms apart) until `up` has `hits` hits; returns the time it took and every
/// other answer's upstream name.
async fn until_hits(conn: &mut Conn, up: &Upstream, hits: usize) -> (Duration, Vec<String>) {
    let started = Instant::now();
    let mut others = Vec::new();
    while up.hits() < hits {
        assert!(started.elapsed() < Duration::from_secs(3), "{} never reached {hits} hits", up.name());
        let resp = conn.get("/x").await.unwrap();
        if up.hits() < hits {
            others.push(resp.name());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (started.elapsed(), others)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_half_opens_and_closes_with_growing_ejections() {
    let (a, b) = (Upstream::http("a").await, Upstream::http("b").await);
    a.set_status(500);
    let gw = TestGateway::start(&config(&format!(
        r#"
upstreams:
  - name: pool
    targets: [{{address: "{}"}}, {{address: "{}"}}]
    health: {{passive: {{unhealthy_after: 2, recover_after: 200ms, max_ejection_time: 1s}}}}
services: [{{name: pool, upstream: pool, retries: 0}}]
routes: [{{name: pool, service: pool, paths: ["/"]}}]
"#,
        a.addr(),
        b.addr()
    )));
    let mut conn = Conn::h1(gw.addr()).await.unwrap();
    until_hits(&mut conn, &a, 2).await;
    let s = status_of(&gw, a.addr());
    assert!(s.ejected && !s.healthy && s.consecutive_ejections == 1, "open after 2 failures: {s:?}");

    // Half-open after 200ms: one trial, which fails and re-ejects for 2 × 200ms, then 3 × 200ms.
    for (n, rest) in [(3, 200), (4, 400)] {
        let (waited, others) = until_hits(&mut conn, &a, n).await;
        assert!(waited >= Duration::from_millis(rest * 8 / 10), "trial {n} after {waited:?}, rest {rest}ms");
        assert!(others.iter().all(|o| o == "b"), "only b serves while a is out: {others:?}");
        let s = status_of(&gw, a.addr());
        assert_eq!((s.ejected, s.consecutive_ejections), (true, n as u32 - 1), "{s:?}");
        assert!(s.ejected_for > Duration::from_millis(rest), "the next rest is longer: {s:?}");
    }
    assert_eq!(a.hits(), 4, "exactly one trial per rest");

    // a is fixed: the next trial (after 600ms) closes the breaker and forgets the ejections.
    a.set_status(0);
    let (waited, _) = until_hits(&mut conn, &a, 5).await;
    assert!(waited >= Duration::from_millis(480), "third rest is 600ms, trial after {waited:?}");
    let s = status_of(&gw, a.addr());
    assert!(s.healthy && !s.ejected && s.consecutive_ejections == 0, "closed: {s:?}");
    let names: Vec<String> = futures_names(&mut conn, 10).await;
    assert_eq!(names.iter().filter(|n| *n == "a").count(), 5, "a takes its share again: {names:?}");
}

async fn futures_names(conn: &mut Conn, n: usize) -> Vec<String> {
    let mut names = Vec::new();
    for _ in 0..n {
        names.push(conn.get("/x").await.unwrap().name());
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_reset_and_hanging_targets_are_ejected() {
    let (closed, r, h, b) =
        (closed_port(), Upstream::reset("r").await, Upstream::blackhole().await, Upstream::http("b").await);
    let gw = TestGateway::start(&config(&format!(
        r#"
upstreams:
  - name: pool
    targets: [{{address: "{closed}"}}, {{address: "{}"}}, {{address: "{}"}}, {{address: "{}"}}]
    health: {{passive: {{unhealthy_after: 1, recover_after: 60s, max_ejected_percent: 75}}}}
services: [{{name: pool, upstream: pool, timeouts: {{read: 200ms}}, retry: {{attempts: 0}}}}]
routes: [{{name: pool, service: pool, paths: ["/"]}}]
"#,
        r.addr(),
        h.addr(),
        b.addr()
    )));
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let resp = client::get(gw.addr(), "/x").await;
        statuses.push((resp.status.as_u16(), resp.name()));
    }
    let count = |s: u16| statuses.iter().filter(|(x, _)| *x == s).count();
    assert_eq!((count(502), count(504), count(200)), (2, 1, 9), "refused and reset: 502, hang: 504: {statuses:?}");
    assert!(statuses[4..].iter().all(|(s, n)| *s == 200 && n == "b"), "{statuses:?}");
    assert_eq!((r.hits(), h.hits()), (1, 1));
    for addr in [closed.to_string(), r.addr().to_string(), h.addr().to_string()] {
        assert!(status_of(&gw, &addr).ejected, "{addr} ejected");
    }
    assert!(status_of(&gw, b.addr()).healthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_ejected_percent_and_immediate_503_when_all_are_out() {
    // Default max_ejected_percent (50): of two failing targets one is ejected, the other keeps
    // answering (its own 500s) instead of the upstream going dark.
    let (a, b) = (Upstream::http("a").await, Upstream::http("b").await);
    a.set_status(500);
    b.set_status(500);
    let gw = TestGateway::start(&config(&format!(
        r#"
upstreams:
  - name: pool
    targets: [{{address: "{}"}}, {{address: "{}"}}]
    health: {{passive: {{unhealthy_after: 1, recover_after: 60s}}}}
services: [{{name: pool, upstream: pool, retries: 0}}]
routes: [{{name: pool, service: pool, paths: ["/"]}}]
"#,
        a.addr(),
        b.addr()
    )));
    let mut conn = Conn::h1(gw.addr()).await.unwrap();
    for _ in 0..10 {
        assert_eq!(conn.get("/x").await.unwrap().status, 500);
    }
    let (sa, sb) = (status_of(&gw, a.addr()), status_of(&gw, b.addr()));
    assert!(sa.ejected != sb.ejected, "exactly one of two ejected at 50 %: {sa:?} {sb:?}");
    assert_eq!(a.hits() + b.hits(), 10);
    assert!(a.hits().min(b.hits()) == 1, "the ejected one got one request: {} {}", a.hits(), b.hits());

    // With 100 % both hanging targets go, and then callers get 503 at once (no read timeout).
    let (h1, h2) = (Upstream::blackhole().await, Upstream::blackhole().await);
    let gw = TestGateway::start(&config(&format!(
        r#"
upstreams:
  - name: pool
    targets: [{{address: "{}"}}, {{address: "{}"}}]
    health: {{passive: {{unhealthy_after: 1, recover_after: 60s, max_ejected_percent: 100}}}}
services: [{{name: pool, upstream: pool, timeouts: {{read: 300ms}}}}]
routes: [{{name: pool, service: pool, paths: ["/"]}}]
"#,
        h1.addr(),
        h2.addr()
    )));
    let mut conn = Conn::h1(gw.addr()).await.unwrap();
    for _ in 0..2 {
        conn.get("/x").await.unwrap().assert_error(504, "upstream_timeout");
    }
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let started = Instant::now();
        conn.get("/x").await.unwrap().assert_error(503, "no_healthy_target");
        slowest = slowest.max(started.elapsed());
    }
    assert!(slowest < Duration::from_millis(100), "503 must not wait (read timeout is 300ms): {slowest:?}");
    assert_eq!(h1.hits() + h2.hits(), 2);

    // A `url` service has its breaker too (services[].health).
    let c = Upstream::http("c").await;
    c.set_status(502);
    let gw = TestGateway::start(&config(&format!(
        r#"
services:
  - name: one
    url: "http://{}"
    retries: 0
    health: {{passive: {{unhealthy_after: 2, recover_after: 60s}}}}
routes: [{{name: one, service: one, paths: ["/"]}}]
"#,
        c.addr()
    )));
    let mut conn = Conn::h1(gw.addr()).await.unwrap();
    assert_eq!(conn.get("/x").await.unwrap().status, 502);
    assert_eq!(conn.get("/x").await.unwrap().status, 502);
    conn.get("/x").await.unwrap().assert_error(503, "no_healthy_target");
    assert_eq!(c.hits(), 2);
}

/// Two upstreams' worth of routes on one gateway: `/five…` to [a (503), b], `/reset…` to
/// [r (resets), b], `/hang…` to [h (never answers), b], each with `retry` as given.
fn retry_gateway(a: &Upstream, r: &Upstream, h: &Upstream, b: &Upstream, routes: &str) -> TestGateway {
    TestGateway::start(&config(&format!(
        r#"
upstreams:
  - {{name: five, targets: [{{address: "{}"}}, {{address: "{b}"}}]}}
  - {{name: reset, targets: [{{address: "{}"}}, {{address: "{b}"}}]}}
  - {{name: hang, targets: [{{address: "{}"}}, {{address: "{b}"}}]}}
services:
  - {{name: five, upstream: five}}
  - {{name: reset, upstream: reset}}
  - {{name: hang, upstream: hang, timeouts: {{read: 200ms}}}}
routes:
{routes}
"#,
        a.addr(),
        r.addr(),
        h.addr(),
        b = b.addr()
    )))
}

async fn send(conn: &mut Conn, method: Method, path: &str, body: &'static str) -> Resp {
    let b = if body.is_empty() { body::empty() } else { body::full(body) };
    conn.send(client::request(method, path).body(b).unwrap()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_go_to_another_target_for_replayable_requests_only() {
    let (a, r, h, b) =
        (Upstream::http("a").await, Upstream::reset("r").await, Upstream::blackhole().await, Upstream::http("b").await);
    a.set_status(503);
    let on = "retry: {attempts: 1, on: [reset, timeout, 503]}";
    let gw = retry_gateway(
        &a,
        &r,
        &h,
        &b,
        &format!(
            "  - {{name: five, service: five, paths: [/five], {on}}}\n  - {{name: any, service: five, paths: [/any], \
             retry: {{attempts: 1, on: [503], idempotent_only: false}}}}\n  - {{name: reset, service: reset, paths: \
             [/reset], {on}}}\n  - {{name: hang, service: hang, paths: [/hang], {on}}}"
        ),
    );
    let mut conn = Conn::h1(gw.addr()).await.unwrap();

    // GET: a's 503 is discarded and b answers; every request reaches b exactly once.
    for _ in 0..10 {
        let resp = conn.get("/five").await.unwrap();
        assert_eq!((resp.status.as_u16(), resp.name().as_str()), (200, "b"));
    }
    assert_eq!(b.hits(), 10);
    assert!(a.hits() >= 3, "round robin sent some first attempts to a: {}", a.hits());
    let retried = a.hits();
    // Resets and read timeouts are retried the same way.
    for path in ["/reset", "/reset", "/reset", "/hang", "/hang", "/hang"] {
        let resp = conn.get(path).await.unwrap();
        assert_eq!((resp.status.as_u16(), resp.name().as_str()), (200, "b"), "{path}");
    }
    assert!(r.hits() >= 1 && h.hits() >= 1, "r {} h {}", r.hits(), h.hits());
    let stats = gw.gateway().retry_stats();
    let five = stats.iter().find(|(n, ..)| &**n == "five").unwrap();
    assert_eq!((five.1, five.2), (retried as u64, 0), "retries counted: {stats:?}");

    // POST may have had effects: never sent twice. a's 503 comes back as it is, r's reset as 502.
    let (a0, b0) = (a.hits(), b.hits());
    let mut got = Vec::new();
    for _ in 0..10 {
        let resp = send(&mut conn, Method::POST, "/five", "").await;
        got.push((resp.status.as_u16(), resp.name()));
    }
    assert_eq!((a.hits() - a0) + (b.hits() - b0), 10, "no POST was sent twice: {got:?}");
    assert_eq!(got.iter().filter(|(s, n)| *s == 503 && n == "a").count(), a.hits() - a0, "{got:?}");
    assert!(a.hits() > a0, "{got:?}");
    let r0 = r.hits();
    let mut resets = 0;
    for _ in 0..6 {
        let resp = send(&mut conn, Method::POST, "/reset", "").await;
        if resp.status == 502 {
            resp.assert_error(502, "upstream_unavailable");
            resets += 1;
        }
    }
    assert!(resets >= 1 && r.hits() - r0 == resets, "each POST that reached r failed alone: {resets}");

    // idempotent_only: false replays a POST without a body, but a body that was sent is gone.
    for _ in 0..6 {
        let resp = send(&mut conn, Method::POST, "/any", "").await;
        assert_eq!((resp.status.as_u16(), resp.name().as_str()), (200, "b"));
    }
    let mut with_body = Vec::new();
    for _ in 0..6 {
        with_body.push(send(&mut conn, Method::POST, "/any", "payload").await.status.as_u16());
    }
    assert!(with_body.contains(&503) && with_body.contains(&200), "bodies are not replayed: {with_body:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_caps_amplification_in_an_outage() {
    let (a, b) = (Upstream::http("a").await, Upstream::http("b").await);
    a.set_status(503);
    b.set_status(503);
    let gw = TestGateway::start(&config(&format!(
        r#"
upstreams: [{{name: pool, targets: [{{address: "{}"}}, {{address: "{}"}}]}}]
services: [{{name: pool, upstream: pool}}]
routes:
  - name: budget
    service: pool
    paths: [/budget]
    retry: {{attempts: 3, on: [503], budget: {{ratio: 0.1, min_per_second: 2}}}}
  - name: free
    service: pool
    paths: [/free]
    retry: {{attempts: 3, on: [503], budget: {{ratio: 10, min_per_second: 1000}}}}
"#,
        a.addr(),
        b.addr()
    )));
    let hits = || a.hits() + b.hits();
    let mut conn = Conn::h1(gw.addr()).await.unwrap();
    // Without a real budget every request costs four upstream requests...
    for _ in 0..10 {
        assert_eq!(conn.get("/free").await.unwrap().status, 503);
    }
    assert_eq!(hits(), 40);

    // ...with one, retries add at most 10 % of the requests plus 2 per second.
    let n = 100;
    let started = Instant::now();
    for _ in 0..n {
        let resp = conn.get("/budget").await.unwrap();
        assert_eq!(resp.status, 503, "the upstream's own answer");
        assert!(!resp.name().is_empty());
    }
    let secs = started.elapsed().as_secs() as usize;
    let retries = hits() - 40 - n;
    // Each window allows 2 + 10 % of max(its requests, the previous window's).
    let bound = 2 * (secs + 2) + 2 * n / 10;
    assert!((2..=bound).contains(&retries), "{retries} retries for {n} requests in {secs}s (bound {bound})");
    let stats = gw.gateway().retry_stats();
    let budget = stats.iter().find(|(r, ..)| &**r == "budget").unwrap();
    assert_eq!(budget.1, retries as u64, "{stats:?}");
    assert!(budget.2 >= (n - retries) as u64, "refusals counted: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_routes_count_their_retries_once() {
    // Two services on the same targets, one of which answers 503 (retried on the other). On
    // `/own` each service's policy applies with a budget of its own; on `/shared` the route's
    // policy has one budget for both. Either way the route is one series on /metrics.
    let (a, b) = (Upstream::http("a").await, Upstream::http("b").await);
    a.set_status(503);
    let gw = TestGateway::start(&config(&format!(
        r#"
status: {{address: "127.0.0.1:0"}}
upstreams: [{{name: ab, targets: [{{address: "{a}"}}, {{address: "{b}"}}]}}]
services:
  - {{name: one, upstream: ab, retry: {{attempts: 1, on: [503], {budget}}}}}
  - {{name: two, upstream: ab, retry: {{attempts: 1, on: [503], {budget}}}}}
routes:
  - {{name: own, paths: [/own], services: [{{name: one, weight: 50}}, {{name: two, weight: 50}}]}}
  - name: shared
    paths: [/shared]
    services: [{{name: one, weight: 50}}, {{name: two, weight: 50}}]
    retry: {{attempts: 1, on: [503], {budget}}}
"#,
        a = a.addr(),
        b = b.addr(),
        budget = "budget: {ratio: 1.0, min_per_second: 100}"
    )));
    let mut conn = Conn::h1(gw.addr()).await.unwrap();
    let mut retried = Vec::new();
    for path in ["/own", "/shared"] {
        let before = a.hits();
        for _ in 0..20 {
            let resp = conn.get(path).await.unwrap();
            assert_eq!((resp.status.as_u16(), resp.name().as_str()), (200, "b"), "{path}");
        }
        retried.push((a.hits() - before) as f64);
    }
    assert!(retried.iter().all(|n| *n >= 2.0), "some first attempts went to a: {retried:?}");
    let status = gw.gateway().status_addr().expect("status listener");
    let m = scrape_values(&client::get(status, "/metrics").await.text());
    for (route, n) in ["own", "shared"].iter().zip(&retried) {
        assert_eq!(m.get(&format!("meshgate_route_retries_total{{route={route}}}")), Some(n), "{route}");
    }
    let stats = gw.gateway().retry_stats();
    assert_eq!(stats.iter().filter(|(r, ..)| &**r == "shared").count(), 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeouts_override_the_service() {
    let a = Upstream::http("a").await;
    let gw = TestGateway::start(&config(&format!(
        r#"
services: [{{name: s, url: "http://{}", timeouts: {{read: 400ms}}}}]
routes:
  - {{name: default, service: s, paths: ["/"]}}
  - {{name: fast, service: s, paths: ["/"], headers: {{x-route: fast}}, timeouts: {{read: 100ms}}}}
  - {{name: patient, service: s, paths: ["/"], headers: {{x-route: patient}}, timeouts: {{read: 2s}}}}
"#,
        a.addr()
    )));
    let addr = gw.addr();
    assert_eq!(client::get(addr, "/delay/200").await.status, 200, "service: 400ms");
    let started = Instant::now();
    client::get_with(addr, "/delay/300", &[("x-route", "fast")]).await.assert_error(504, "upstream_timeout");
    assert!(started.elapsed() < Duration::from_millis(280), "the route's 100ms, not 400ms: {:?}", started.elapsed());
    client::get(addr, "/delay/700").await.assert_error(504, "upstream_timeout");
    let resp = client::get_with(addr, "/delay/700", &[("x-route", "patient")]).await;
    assert_eq!((resp.status.as_u16(), resp.name().as_str()), (200, "a"), "the route's 2s");
    wait_for("a's requests to finish", Duration::from_secs(2), || async { (a.in_flight() == 0).then_some(()) }).await;
}
