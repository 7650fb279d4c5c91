//! Hot reload: under continuous load no request fails while the route's target flips back and
//! forth; a bad config is refused with located errors and the running config keeps serving; a
//! listener change is refused.

use meshgate_e2e::client::Conn;
use meshgate_e2e::{TestGateway, Upstream, config};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn pointing_at(up: &Upstream) -> String {
    config(&format!(
        r#"
services: [{{name: s, url: "http://{}"}}]
routes: [{{name: r, service: s, paths: ["/"]}}]
"#,
        up.addr()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_loses_nothing() {
    let (a, b) = (Upstream::http("a").await, Upstream::http("b").await);
    let gw = TestGateway::start(&pointing_at(&a));
    let addr = gw.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for i in 0..4 {
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            // Two clients keep one connection; two open a new connection for every request;
            // one of each speaks HTTP/2.
            let h2 = i % 2 == 1;
            let reuse = i < 2;
            let connect = || async move { if h2 { Conn::h2c(addr).await } else { Conn::h1(addr).await } };
            let mut conn = connect().await.unwrap();
            let mut seen: BTreeMap<String, usize> = BTreeMap::new();
            let mut failures = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(10);
            for n in 0..20_000 {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                if !reuse {
                    conn = connect().await.unwrap();
                }
                match conn.get(&format!("/load/{i}/{n}")).await {
                    Ok(r) if r.status == 200 => *seen.entry(r.name()).or_default() += 1,
                    Ok(r) => failures.push(format!("client {i} request {n}: {} {}", r.status, r.text())),
                    Err(e) => failures.push(format!("client {i} request {n}: {e}")),
                }
            }
            (seen, failures)
        }));
    }
    let configs = [pointing_at(&b), pointing_at(&a)];
    for round in 0..8 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let next = &configs[round % 2];
        gw.write_config(next);
        gw.reload().unwrap_or_else(|e| panic!("reload {round}: {e}"));
        let expected = if round % 2 == 0 { "b" } else { "a" };
        let mut probe = Conn::h1(addr).await.unwrap();
        assert_eq!(probe.get("/probe").await.unwrap().name(), expected, "right after reload {round}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for c in clients {
        let (seen, f) = c.await.unwrap();
        for (k, v) in seen {
            *total.entry(k).or_default() += v;
        }
        failures.extend(f);
    }
    eprintln!("requests during reloads: {total:?}");
    assert!(failures.is_empty(), "{} requests failed during reloads:\n{}", failures.len(), failures.join("\n"));
    assert!(total.get("a").is_some_and(|&n| n > 10) && total.get("b").is_some_and(|&n| n > 10), "{total:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reloads_keep_the_running_config() {
    let (a, b) = (Upstream::http("a").await, Upstream::http("b").await);
    let gw = TestGateway::start(&pointing_at(&a));
    let path = gw.config_path().display().to_string();
    let serves_a = || async { Conn::h1(gw.addr()).await.unwrap().get("/x").await.unwrap().name() };

    // Unknown field (a typo), with the line it is on.
    let typo = pointing_at(&b).replace("routes:", "routs:");
    gw.write_config(&typo);
    let errors = gw.reload().expect_err("a config with an unknown field must be refused").to_string();
    assert!(errors.starts_with(&format!("{path}:5:")), "error should point at {path}:5: {errors}");
    assert!(errors.contains("routs"), "{errors}");
    assert_eq!(serves_a().await, "a");

    // Wrong type.
    gw.write_config(&pointing_at(&b).replace("paths: [\"/\"]", "paths: [\"/\"], priority: high"));
    let errors = gw.reload().expect_err("wrong type").to_string();
    assert!(errors.contains(&format!("{path}:5:")) && errors.contains("routes[0].priority"), "{errors}");
    assert_eq!(serves_a().await, "a");

    // Unknown service.
    gw.write_config(&pointing_at(&b).replace("service: s", "service: nope"));
    let errors = gw.reload().expect_err("unknown service").to_string();
    assert!(errors.contains(&format!("{path}:5:")), "{errors}");
    assert!(errors.contains("routes[0].service") && errors.contains("unknown service \"nope\""), "{errors}");
    assert_eq!(serves_a().await, "a");

    // Listeners cannot change while running.
    let moved = pointing_at(&b).replace("listeners: [{name: main,", "listeners: [{name: other,");
    gw.write_config(&moved);
    let errors = gw.reload().expect_err("listener change").to_string();
    assert!(errors.contains("listeners") && errors.contains("cannot change"), "{errors}");
    assert_eq!(serves_a().await, "a");

    // A good config after the bad ones applies.
    gw.write_config(&pointing_at(&b));
    assert_eq!(gw.reload().expect("good config"), Vec::<String>::new());
    assert_eq!(serves_a().await, "b");

    // Process-level settings apply, but only at restart: the reload says so.
    gw.write_config(&pointing_at(&b).replace("workers: 2", "workers: 3"));
    let warnings = gw.reload().expect("a workers change is not an error");
    assert!(warnings.iter().any(|w| w.contains("runtime.workers") && w.contains("restart")), "{warnings:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_state_survives_reload() {
    let (a, b) = (Upstream::http("a").await, Upstream::http("b").await);
    a.set_status(500);
    let yaml = |extra_route: &str| {
        config(&format!(
            r#"
upstreams:
  - name: pool
    targets: [{{address: "{}"}}, {{address: "{}"}}]
    health: {{passive: {{unhealthy_after: 1, recover_after: 60s}}}}
services: [{{name: pool, upstream: pool}}]
routes:
  - {{name: r, service: pool, paths: ["/"]}}
{extra_route}
"#,
            a.addr(),
            b.addr()
        ))
    };
    let gw = TestGateway::start(&yaml(""));
    let mut conn = Conn::h1(gw.addr()).await.unwrap();
    for _ in 0..4 {
        conn.get("/x").await.unwrap();
    }
    assert_eq!(a.hits(), 1, "a is ejected after one failure");
    // A reload that keeps the upstream keeps its targets' health: a stays out.
    gw.write_config(&yaml("  - {name: extra, service: pool, paths: [\"/extra\"]}"));
    gw.reload().unwrap();
    for _ in 0..10 {
        assert_eq!(conn.get("/x").await.unwrap().name(), "b");
    }
    assert_eq!(a.hits(), 1, "an ejected target came back because of a reload");
}
