//! Several `meshgate` processes sharing one cluster-wide rate limit through the machine's Redis
//! (127.0.0.1:6379): hammered concurrently, together they admit exactly the limit.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use support::{Gateway, get, tiny};

const LIMIT: usize = 100;
const NODES: usize = 3;
const CLIENTS: usize = 30;
const PER_CLIENT: usize = 10;

fn hour() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() / 3600
}

/// One round: fresh keys, three nodes, `CLIENTS` threads each sending `PER_CLIENT` requests to
/// the nodes in turn. `(admitted, refused)`.
fn round(prefix: &str) -> (usize, usize) {
    let up = tiny("up");
    let nodes: Vec<Gateway> = (0..NODES)
        .map(|_| {
            Gateway::start(|port| {
                format!(
                    "runtime: {{workers: 2, watch_config: false}}
listeners: [{{name: main, address: \"127.0.0.1:{port}\"}}]
services: [{{name: s, url: \"http://{up}\"}}]
routes:
  - name: r
    service: s
    paths: [\"/\"]
    plugins:
      - name: rate-limiting
        config: {{hour: {LIMIT}, limit_by: route, policy: redis, on_store_error: refuse,
                  redis: {{url: \"redis://127.0.0.1:6379\", prefix: \"{prefix}\", timeout: 2s}}}}
",
                    up = up.addr
                )
            })
        })
        .collect();
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr).collect();
    let (admitted, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|s| {
        for c in 0..CLIENTS {
            let (addrs, admitted, refused) = (&addrs, &admitted, &refused);
            s.spawn(move || {
                for i in 0..PER_CLIENT {
                    match get(addrs[(c + i) % NODES], "/").expect("request").0 {
                        200 => admitted.fetch_add(1, Ordering::Relaxed),
                        429 => refused.fetch_add(1, Ordering::Relaxed),
                        other => panic!("unexpected status {other}"),
                    };
                }
            });
        }
    });
    assert_eq!(up.started.load(Ordering::SeqCst), admitted.load(Ordering::Relaxed), "only admitted requests reach it");
    (admitted.into_inner(), refused.into_inner())
}

#[test]
fn three_nodes_admit_exactly_the_limit() {
    // Windows are aligned to the clock: a round that straddles the hour is run again.
    for attempt in 0..2 {
        let before = hour();
        let prefix = format!("meshgate-cluster-test:{}:{attempt}:{}", std::process::id(), before);
        let (admitted, refused) = round(&prefix);
        if hour() != before {
            continue;
        }
        assert_eq!(admitted, LIMIT, "exactly the limit across {NODES} nodes");
        assert_eq!(refused, CLIENTS * PER_CLIENT - LIMIT);
        return;
    }
    panic!("two rounds in a row straddled the hour");
}
