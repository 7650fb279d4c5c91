//! Active health checks against real HTTP servers on 127.0.0.1: one healthy, one answering 500
//! until it is fixed, one stopped mid-test and restarted.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use meshgate_balance::{ActiveChecker, ActiveConfig, Balancer, PassiveConfig, TargetRegistry, TargetSpec};
use meshgate_config::model::Algorithm;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A tiny upstream: `/health` answers `status`; everything else 404. Records probe Host headers.
struct Server {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    probes: Arc<AtomicUsize>,
    last_host: Arc<Mutex<Option<String>>>,
    accept: JoinHandle<()>,
}

impl Server {
    async fn start(addr: SocketAddr, status: u16) -> Server {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let status = Arc::new(AtomicU16::new(status));
        let probes = Arc::new(AtomicUsize::new(0));
        let last_host = Arc::new(Mutex::new(None));
        let (s, p, h) = (Arc::clone(&status), Arc::clone(&probes), Arc::clone(&last_host));
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (s, p, h) = (Arc::clone(&s), Arc::clone(&p), Arc::clone(&h));
                let service = service_fn(move |req: Request<Incoming>| {
                    let code = if req.uri().path() == "/health" {
                        p.fetch_add(1, Ordering::Relaxed);
                        *h.lock().unwrap() =
                            req.headers().get(http::header::HOST).map(|v| v.to_str().unwrap().to_owned());
                        s.load(Ordering::Relaxed)
                    } else {
                        404
                    };
                    let mut resp = Response::new(Empty::<Bytes>::new());
                    *resp.status_mut() = StatusCode::from_u16(code).unwrap();
                    async move { Ok::<_, Infallible>(resp) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Server { addr, status, probes, last_host, accept }
    }

    /// Stops accepting: the listener is dropped, so new connections are refused.
    async fn stop(self) -> SocketAddr {
        self.accept.abort();
        let _ = self.accept.await;
        self.addr
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn config() -> ActiveConfig {
    ActiveConfig {
        path: "/health".into(),
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(500),
        healthy_after: 2,
        unhealthy_after: 2,
        healthy_statuses: Vec::new(),
        host: Some("health.internal".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_checks_eject_and_recover() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let ok = Server::start(any, 200).await;
    let broken = Server::start(any, 500).await;
    let doomed = Server::start(any, 204).await;

    let registry = TargetRegistry::new();
    let specs: Vec<TargetSpec> =
        [ok.addr, broken.addr, doomed.addr].iter().map(|a| TargetSpec { address: a.to_string(), weight: 1 }).collect();
    let passive = PassiveConfig {
        unhealthy_after: 1,
        recover_after: Duration::from_secs(3600),
        count_5xx: true,
        max_ejection_time: Duration::from_secs(3600),
        max_ejected_percent: 100,
    };
    let balancer = Balancer::new("up", Algorithm::RoundRobin, None, &specs, Some(passive), &registry);
    let checker = ActiveChecker::spawn("up", balancer.targets().to_vec(), config());
    assert!(balancer.has_active_health());
    let [t_ok, t_broken, t_doomed] = [0, 1, 2].map(|i| Arc::clone(&balancer.targets()[i]));

    // The 500 target is taken out; the others stay in.
    eventually("the 500 target is unhealthy", || !t_broken.is_healthy()).await;
    eventually("the healthy target was probed a few times", || ok.probes.load(Ordering::Relaxed) >= 3).await;
    assert!(t_ok.is_healthy() && t_doomed.is_healthy());
    assert_eq!(ok.last_host.lock().unwrap().as_deref(), Some("health.internal"));
    assert!((0..30).all(|_| balancer.pick(None, &[]).unwrap().index() != 1));

    // A server that goes away is taken out too.
    let doomed_addr = doomed.stop().await;
    eventually("the stopped target is unhealthy", || !t_doomed.is_healthy()).await;
    assert!((0..30).all(|_| balancer.pick(None, &[]).unwrap().index() == 0));

    // Fixed and restarted servers come back after `healthy_after` good probes.
    broken.status.store(200, Ordering::Relaxed);
    let restarted = Server::start(doomed_addr, 200).await;
    eventually("the fixed target is healthy", || t_broken.is_healthy()).await;
    eventually("the restarted target is healthy", || t_doomed.is_healthy()).await;
    let mut seen = [false; 3];
    (0..30).for_each(|_| seen[balancer.pick(None, &[]).unwrap().index()] = true);
    assert_eq!(seen, [true; 3]);

    // A passive ejection is undone by probes (not by a trial request, and not before
    // `recover_after`, which is an hour here).
    balancer.pick(None, &[1, 2]).unwrap().failure();
    assert!(!t_ok.is_healthy());
    assert!((0..30).all(|_| balancer.pick(None, &[]).is_some_and(|p| p.index() != 0 && !p.is_trial())));
    eventually("probes bring the passively ejected target back", || t_ok.is_healthy()).await;

    // Stopping the checker unmarks the targets; their health stays as it was.
    checker.stop();
    eventually("no target is actively checked", || !balancer.has_active_health()).await;
    let probes = ok.probes.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(ok.probes.load(Ordering::Relaxed) <= probes + 1, "probing stopped");
    assert!(t_ok.is_healthy() && t_broken.is_healthy() && t_doomed.is_healthy());
    drop(restarted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_statuses_and_timeouts() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let teapot = Server::start(any, 418).await;
    let fine = Server::start(any, 200).await;
    // Accepts connections but never answers: the probe must time out.
    let silent = std::net::TcpListener::bind(any).unwrap();
    let silent_addr = silent.local_addr().unwrap();

    let registry = TargetRegistry::new();
    let specs: Vec<TargetSpec> = [teapot.addr, fine.addr, silent_addr]
        .iter()
        .map(|a| TargetSpec { address: a.to_string(), weight: 1 })
        .collect();
    let balancer = Balancer::new("up", Algorithm::LeastConnections, None, &specs, None, &registry);
    let cfg = ActiveConfig {
        healthy_statuses: vec![418],
        unhealthy_after: 1,
        timeout: Duration::from_millis(100),
        host: None,
        ..config()
    };
    let checker = ActiveChecker::spawn("up", balancer.targets().to_vec(), cfg);
    eventually("200 is unhealthy when only 418 is listed", || !balancer.targets()[1].is_healthy()).await;
    eventually("a silent target times out", || !balancer.targets()[2].is_healthy()).await;
    assert!(balancer.targets()[0].is_healthy());
    assert_eq!(teapot.last_host.lock().unwrap().clone(), Some(teapot.addr.to_string()), "Host defaults to the address");
    assert!((0..10).all(|_| balancer.pick(None, &[]).unwrap().index() == 0));
    drop(checker);
    drop(silent);
}
