//! A bounded soak (the full one is `bench/soak.sh`): hundreds of connections that hold the
//! gateway without using it (idle, slowloris heads, dribbled uploads, responses never read)
//! while a normal client keeps sending requests. The normal client is served throughout; the
//! idle, slow and stalled connections are closed by their limits; uploads past the target's
//! limit are shed with 503; and once the attack is gone the gateway holds nothing of it.

use meshgate_e2e::raw::RawConn;
use meshgate_e2e::{TestGateway, Upstream, client, config, observe, wait_for};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const IDLE: usize = 150;
const SLOWLORIS: usize = 150;
const UPLOADS: usize = 40;
const READERS: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_sheds_and_recovers_while_normal_clients_are_served() {
    let (api, files) = (Upstream::http("api").await, Upstream::http("files").await);
    let gw = TestGateway::start(&config(&format!(
        r#"
status: {{address: "127.0.0.1:0"}}
limits: {{client_header_timeout: 1s, client_send_timeout: 1s, client_idle_timeout: 30s}}
upstreams:
  - {{name: files, targets: [{{address: "{}"}}], target_limit: {{max_in_flight: 20, queue: {{size: 5, timeout: 200ms}}}}}}
services: [{{name: api, url: "http://{}"}}, {{name: files, upstream: files}}]
routes:
  - {{name: files, service: files, paths: [/upload, /stream]}}
  - {{name: api, service: api, paths: [/]}}
"#,
        files.addr(),
        api.addr()
    )));
    let addr = gw.addr();

    // The normal client, all along.
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let normal = {
        let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
        tokio::spawn(async move {
            let mut conn = client::Conn::h1(addr).await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                match conn.get("/hello").await {
                    Ok(r) if r.status == 200 => served.fetch_add(1, Ordering::Relaxed),
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                };
            }
        })
    };

    let mut held = Vec::new();
    for _ in 0..IDLE {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut slowloris = Vec::new();
    for _ in 0..SLOWLORIS {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\nX-A: ").await.unwrap();
        slowloris.push(c);
    }
    let mut uploads = Vec::new();
    for _ in 0..UPLOADS {
        let mut c = RawConn::connect(addr).await;
        c.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\nsome").await;
        uploads.push(c);
    }
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /stream/16777216 HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
        readers.push(c);
    }
    let open =
        || async { observe::scrape_values(&client::get(gw.gateway().status_addr().unwrap(), "/metrics").await.text()) };
    // (Shed uploads are answered and closed at once.)
    let attackers = (IDLE + SLOWLORIS + READERS + 25) as f64;
    wait_for("the attacking connections to be accepted", Duration::from_secs(5), || async {
        (open().await["meshgate_connections_open{listener=main}"] >= attackers).then_some(())
    })
    .await;

    // Uploads past the 20 in flight are queued, then shed with 503 at the queue's timeout (the
    // 20 never finish); they are answered together, at about that timeout.
    let answers: Vec<_> = uploads
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let status = tokio::time::timeout(Duration::from_secs(1), c.response(false)).await;
                (status.ok().flatten().map(|m| m.status()), c)
            })
        })
        .collect();
    let mut shed = 0;
    let mut answered = Vec::new();
    for a in answers {
        let (status, c) = a.await.unwrap();
        shed += usize::from(status == Some(503));
        answered.push(c);
    }
    assert_eq!(shed, UPLOADS - 20, "uploads shed past max_in_flight");
    assert_eq!(files.in_flight(), 20, "the target's limit");

    // The slowloris heads keep dribbling; they, the idle ones and the stalled readers are closed
    // by the header and send timeouts.
    for _ in 0..8 {
        for c in &mut slowloris {
            let _ = c.write_all(b"a").await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for (what, conns) in [("idle", &mut held), ("slowloris", &mut slowloris)] {
        for c in conns.iter_mut() {
            let mut b = [0u8; 64];
            let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut b)).await;
            assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "an {what} connection still open: {n:?}");
        }
    }
    for c in &mut readers {
        let mut total = 0usize;
        let mut b = vec![0u8; 1 << 16];
        loop {
            match tokio::time::timeout(Duration::from_secs(2), c.read(&mut b)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => total += n,
                Err(_) => panic!("a stalled reader still open after {total} bytes"),
            }
        }
        assert!(total < 16 << 20, "a stalled reader got the whole body");
    }

    // The normal client was served all along, and nothing of the attack stays.
    stop.store(true, Ordering::Relaxed);
    normal.await.unwrap();
    assert_eq!(failed.load(Ordering::Relaxed), 0, "normal requests failed during the attack");
    assert!(served.load(Ordering::Relaxed) >= 20, "{} normal requests in ~4 s", served.load(Ordering::Relaxed));
    drop(answered);
    wait_for("the attack's connections to close", Duration::from_secs(5), || async {
        (open().await["meshgate_connections_open{listener=main}"] == 0.0).then_some(())
    })
    .await;
    wait_for("the uploads' upstream exchanges to end", Duration::from_secs(5), || async {
        (files.in_flight() == 0).then_some(())
    })
    .await;
    assert_eq!(client::get(addr, "/hello").await.status, 200);
}
