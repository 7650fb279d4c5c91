//! `rate-limiting` through the whole gateway: windows and headers, counting per consumer, and a
//! Redis store that goes away and comes back.

use meshgate_e2e::client;
use meshgate_e2e::redis::TestRedis;
use meshgate_e2e::{TestGateway, Upstream, config};
use meshgate_plugins::traffic::rate_limiting::STORE_ERRORS;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_limits_per_consumer_with_headers() {
    let up = Upstream::http("up").await;
    let gw = TestGateway::start(&config(&format!(
        r#"
services: [{{name: s, url: "http://{a}"}}]
routes:
  - name: limited
    service: s
    paths: ["/limited"]
    plugins:
      - {{name: key-auth, config: {{anonymous: guest}}}}
      - {{name: rate-limiting, config: {{hour: 3, day: 100, limit_by: consumer}}}}
  - {{name: free, service: s, paths: ["/free"]}}
  - name: chaos
    service: s
    paths: ["/chaos"]
    plugins:
      - {{name: rate-limiting, config: {{hour: 10, limit_by: ip}}}}
      - {{name: fault-injection, config: {{abort: {{percentage: 100, status: 503, body: chaos}}}}}}
consumers:
  - {{username: alice, credentials: {{key-auth: [{{key: ka}}]}}}}
  - {{username: bob, credentials: {{key-auth: [{{key: kb}}]}}}}
  - {{username: guest}}
"#,
        a = up.addr()
    )));
    let addr = gw.addr();
    for remaining in ["2", "1", "0"] {
        let resp = client::get_with(addr, "/limited", &[("apikey", "ka")]).await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("ratelimit-limit"), Some("3"));
        assert_eq!(resp.header("ratelimit-remaining"), Some(remaining));
        let reset: u64 = resp.header("ratelimit-reset").unwrap().parse().unwrap();
        assert!((1..=3600).contains(&reset), "{reset}");
    }
    let resp = client::get_with(addr, "/limited", &[("apikey", "ka")]).await;
    resp.assert_error(429, "rate_limited");
    let retry: u64 = resp.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry));
    assert_eq!(up.hits(), 3, "refused requests never reach the upstream");
    // Bob has his own count; the anonymous guest too; a route without the plugin is unlimited.
    assert_eq!(client::get_with(addr, "/limited", &[("apikey", "kb")]).await.status, 200);
    assert_eq!(client::get(addr, "/limited").await.status, 200);
    for _ in 0..5 {
        assert_eq!(client::get(addr, "/free").await.status, 200);
    }
    // The headers go on whatever answers the counted request: here a later plugin's own 503.
    let resp = client::get(addr, "/chaos").await;
    assert_eq!(resp.status, 503);
    assert_eq!(resp.header("ratelimit-remaining"), Some("9"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_then_back() {
    let mut redis = TestRedis::start();
    let up = Upstream::http("up").await;
    let prefix = format!("e2e-{}", std::process::id());
    let gw = TestGateway::start(&config(&format!(
        r#"
services: [{{name: s, url: "http://{a}"}}]
routes:
  - name: fail-open
    service: s
    paths: ["/open"]
    plugins:
      - name: rate-limiting
        config: {{day: 1000, limit_by: ip, policy: redis, redis: {{url: "{url}", timeout: 200ms, prefix: {prefix}}}}}
  - name: fail-closed
    service: s
    paths: ["/closed"]
    plugins:
      - name: rate-limiting
        config: {{day: 1000, limit_by: ip, policy: redis, on_store_error: refuse, redis: {{url: "{url}", timeout: 200ms, prefix: {prefix}}}}}
"#,
        a = up.addr(),
        url = redis.url()
    )));
    let addr = gw.addr();
    let resp = client::get(addr, "/closed").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("ratelimit-remaining"), Some("999"), "counted in Redis");

    redis.stop();
    let errors_before = STORE_ERRORS.load(Ordering::Relaxed);
    let t = Instant::now();
    let open = client::get(addr, "/open").await;
    assert_eq!(open.status, 200, "fail open: admitted while Redis is away");
    assert_eq!(open.header("ratelimit-remaining"), None, "no count to report");
    client::get(addr, "/closed").await.assert_error(503, "unavailable");
    assert!(t.elapsed() < Duration::from_secs(2), "bounded by the Redis timeout: {:?}", t.elapsed());
    assert!(STORE_ERRORS.load(Ordering::Relaxed) >= errors_before + 2, "store errors are counted");

    // Back (empty): the gateway reconnects by itself and counts again.
    redis.restart();
    let resp = meshgate_e2e::wait_for("requests counted in Redis again", Duration::from_secs(10), || async {
        let r = client::get(addr, "/closed").await;
        (r.status == 200).then_some(r)
    })
    .await;
    assert_eq!(resp.header("ratelimit-remaining"), Some("999"), "the restarted Redis is empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limit_queues_then_refuses_a_burst() {
    let up = Upstream::http("up").await;
    let gw = TestGateway::start(&config(&format!(
        r#"
services: [{{name: s, url: "http://{a}"}}]
routes:
  - name: held
    service: s
    paths: ["/hold"]
    plugins:
      - {{name: concurrency-limit, config: {{max_in_flight: 3, queue: {{size: 2, timeout: 5s}}}}}}
"#,
        a = up.addr()
    )));
    let addr = gw.addr();
    // A burst of 8 against a held upstream: 3 in flight, 2 queued, 3 refused at once.
    let burst: Vec<_> = (0..8).map(|_| tokio::spawn(async move { client::get(addr, "/hold").await })).collect();
    let in_flight = || {
        meshgate_plugins::traffic::concurrency_limit::snapshot()
            .into_iter()
            .find(|l| l.scope == "route:held" && l.max_in_flight == 3)
            .expect("the route's limiter")
    };
    meshgate_e2e::wait_for("3 in flight and 2 queued", Duration::from_secs(5), || async {
        let l = in_flight();
        (l.in_flight == 3 && l.queued == 2).then_some(())
    })
    .await;
    assert_eq!(up.in_flight(), 3, "the upstream never sees more than max_in_flight");
    up.open_gate();
    let mut statuses = Vec::new();
    for r in burst {
        let resp = r.await.unwrap();
        if resp.status == 503 {
            resp.assert_error(503, "unavailable");
            assert!(resp.header("retry-after").is_some());
        }
        statuses.push(resp.status.as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 503, 503, 503]);
    assert_eq!(up.hits(), 5);
    assert_eq!((in_flight().in_flight, in_flight().queued), (0, 0), "slots are given back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_limit_caps_each_server_and_queues_the_rest() {
    let (a, b) = (Upstream::http("a").await, Upstream::http("b").await);
    let gw = TestGateway::start(&config(&format!(
        r#"
upstreams:
  - name: pool
    targets: [{{address: "{a}"}}, {{address: "{b}"}}]
    target_limit: {{max_in_flight: 2, queue: {{size: 2, timeout: 5s}}}}
services: [{{name: s, upstream: pool}}]
routes: [{{name: r, service: s, paths: ["/"]}}]
"#,
        a = a.addr(),
        b = b.addr()
    )));
    let addr = gw.addr();
    // 7 at once against held servers: 2 per server, 2 waiting, 1 refused at once.
    let burst: Vec<_> = (0..7).map(|_| tokio::spawn(async move { client::get(addr, "/hold").await })).collect();
    meshgate_e2e::wait_for("both servers full", Duration::from_secs(5), || async {
        (a.in_flight() == 2 && b.in_flight() == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!((a.in_flight(), b.in_flight()), (2, 2), "never more than max_in_flight per server");
    a.open_gate();
    b.open_gate();
    let mut statuses = Vec::new();
    for r in burst {
        let resp = r.await.unwrap();
        if resp.status == 503 {
            resp.assert_error(503, "unavailable");
            assert_eq!(resp.header("retry-after"), Some("1"));
        }
        statuses.push(resp.status.as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 503]);
    assert_eq!(a.hits() + b.hits(), 6);
}
