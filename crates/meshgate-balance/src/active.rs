//! Active health checks: periodic HTTP/1.1 probes of each target, marking targets down and up
//! independently of real traffic (so a target comes back without risking a client request).

use crate::state::TargetState;
use bytes::Bytes;
use http::Request;
use http::header::{CONNECTION, HOST, USER_AGENT};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use meshgate_config::model::ActiveHealth;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// How targets are probed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveConfig {
    /// Path requested with GET.
    pub path: String,
    /// Time between two probes of one target.
    pub interval: Duration,
    /// A probe (connect, request, response head) slower than this fails.
    pub timeout: Duration,
    /// Consecutive successful probes that bring an unhealthy target back (0 behaves as 1).
    pub healthy_after: u32,
    /// Consecutive failed probes that take a healthy target out (0 behaves as 1).
    pub unhealthy_after: u32,
    /// Statuses counted as healthy; empty means 200–399.
    pub healthy_statuses: Vec<u16>,
    /// Host header of probes; defaults to the target's address.
    pub host: Option<String>,
}

impl From<&ActiveHealth> for ActiveConfig {
    fn from(a: &ActiveHealth) -> Self {
        ActiveConfig {
            path: a.path.clone(),
            interval: a.interval.get(),
            timeout: a.timeout.get(),
            healthy_after: a.healthy_after,
            unhealthy_after: a.unhealthy_after,
            healthy_statuses: a.healthy_statuses.clone(),
            host: a.host.clone(),
        }
    }
}

impl ActiveConfig {
    fn is_healthy_status(&self, status: u16) -> bool {
        if self.healthy_statuses.is_empty() {
            (200..=399).contains(&status)
        } else {
            self.healthy_statuses.contains(&status)
        }
    }
}

/// Active HTTP health probes of one upstream's targets, running on the tokio runtime (one task
/// per target, so a slow target does not delay the others) until stopped or dropped.
#[derive(Debug)]
pub struct ActiveChecker {
    tasks: Vec<JoinHandle<()>>,
}

impl ActiveChecker {
    /// Starts probing `targets` now (the first probe goes out immediately). Uses `tokio::spawn`,
    /// so it must be called inside a runtime. While it runs, the targets are marked as actively
    /// checked, which turns off passive half-open trials: probes decide recovery.
    pub fn spawn(upstream: &str, targets: Vec<Arc<TargetState>>, cfg: ActiveConfig) -> ActiveChecker {
        let cfg = Arc::new(cfg);
        let tasks = targets
            .into_iter()
            .map(|target| {
                let prober = Prober::new(target);
                tokio::spawn(run(upstream.to_owned(), prober, Arc::clone(&cfg)))
            })
            .collect();
        ActiveChecker { tasks }
    }

    /// Stops probing; the targets keep the health they had. Same as dropping.
    pub fn stop(self) {}
}

impl Drop for ActiveChecker {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Marks a target as actively checked for as long as its probe task exists (the task owns it, so
/// aborting the task or shutting the runtime down unmarks the target).
struct Prober(Arc<TargetState>);

impl Prober {
    fn new(target: Arc<TargetState>) -> Self {
        target.add_prober();
        Prober(target)
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.0.remove_prober();
    }
}

async fn run(upstream: String, prober: Prober, cfg: Arc<ActiveConfig>) {
    let target = &prober.0;
    let mut ticker = tokio::time::interval(cfg.interval.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (mut oks, mut fails) = (0u32, 0u32);
    let mut seen_healthy = target.is_healthy();
    loop {
        ticker.tick().await;
        let outcome = probe(target.address(), &cfg).await;
        let healthy = target.is_healthy();
        if healthy != seen_healthy {
            // Someone else (passive health) changed the verdict: count afresh from here.
            (oks, fails) = (0, 0);
            seen_healthy = healthy;
        }
        match outcome {
            Ok(()) => {
                fails = 0;
                oks = oks.saturating_add(1);
                if !healthy && oks >= cfg.healthy_after.max(1) {
                    seen_healthy = true;
                    if target.mark_up() {
                        tracing::info!(
                            upstream = %upstream, target = %target.address(), probes = oks,
                            "target healthy again: active health check succeeded"
                        );
                    }
                }
            }
            Err(reason) => {
                oks = 0;
                fails = fails.saturating_add(1);
                if healthy && fails >= cfg.unhealthy_after.max(1) {
                    seen_healthy = false;
                    if target.mark_down() {
                        tracing::warn!(
                            upstream = %upstream, target = %target.address(), probes = fails, %reason,
                            "target unhealthy: active health check failed"
                        );
                    }
                }
            }
        }
    }
}

/// One probe: `Ok` when the target answered a healthy status within the timeout.
async fn probe(address: &str, cfg: &ActiveConfig) -> Result<(), String> {
    match tokio::time::timeout(cfg.timeout, probe_status(address, cfg)).await {
        Ok(Ok(status)) if cfg.is_healthy_status(status) => Ok(()),
        Ok(Ok(status)) => Err(format!("status {status}")),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no response within {:?}", cfg.timeout)),
    }
}

/// GETs the health path over a fresh HTTP/1.1 connection and returns the response status (the
/// body is not read; the connection is closed afterwards).
async fn probe_status(address: &str, cfg: &ActiveConfig) -> Result<u16, String> {
    let stream = TcpStream::connect(address).await.map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
    let request = Request::get(cfg.path.as_str())
        .header(HOST, cfg.host.as_deref().unwrap_or(address))
        .header(USER_AGENT, "meshgate-health-check")
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("invalid probe request: {e}"))?;
    let mut response = pin!(sender.send_request(request));
    let mut conn = pin!(conn);
    let response = tokio::select! {
        biased;
        r = &mut response => r,
        r = &mut conn => match r {
            // The connection may finish in the same poll that delivered the response.
            Ok(()) => response.await,
            Err(e) => return Err(format!("connection: {e}")),
        },
    };
    response.map(|r| r.status().as_u16()).map_err(|e| format!("request: {e}"))
}
