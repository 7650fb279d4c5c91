//! meshgate's data plane.
//!
//! [`Gateway::start`] compiles a config into a [`Snapshot`], binds the listeners and starts one
//! worker thread per core. Requests read the current snapshot through `arc-swap` (no lock);
//! [`Gateway::reload`] compiles a new one and swaps it in whole, so requests in flight finish on
//! the config they started with. A control thread runs active health checks and, through
//! [`Gateway::watch`], reloads on file changes.

mod aggregate;
mod buffer;
mod chain;
mod client;
mod conn;
mod forward;
mod frames;
mod handler;
mod head;
mod limits;
mod log;
mod metrics;
pub mod mirror;
mod params;
mod retry;
mod server;
mod snapshot;
mod split;
mod status;
mod stream;
mod tls;
mod tunnel;
mod watch;

pub use meshgate_balance::TargetStatus;
pub use retry::RetryBudget;
pub use snapshot::{Snapshot, compile};

use arc_swap::ArcSwap;
use meshgate_balance::{ActiveChecker, TargetRegistry};
use meshgate_config::{ConfigErrors, Document};
use meshgate_core::Registry;
use server::Shared;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config is invalid.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// A listener could not be bound, or a thread not started.
    #[error("{0}")]
    Io(String),
}

/// A running gateway.
pub struct Gateway {
    shared: Arc<Shared>,
    config_path: PathBuf,
    registry: Arc<Registry>,
    targets: Arc<TargetRegistry>,
    addrs: Vec<(String, SocketAddr)>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    control: tokio::runtime::Handle,
    control_thread: Mutex<Option<ControlThread>>,
    /// Hash of the config text now serving, so the watcher can tell whether the file changed
    /// before it started watching.
    loaded: AtomicU64,
    /// Health checkers of the current snapshot; replaced on reload. Only touched by reloads.
    checkers: Mutex<Vec<ActiveChecker>>,
    /// Readiness, reload counts and uptime, for the status endpoints.
    stats: Arc<metrics::GatewayStats>,
    /// Where the status endpoints listen, if configured.
    status_addr: Option<SocketAddr>,
}

impl Gateway {
    /// Loads `config_path`, binds every listener and starts serving.
    pub fn start(config_path: &Path, registry: Registry) -> Result<Gateway, StartError> {
        let doc = meshgate_config::load_file(config_path)?;
        Self::start_with(config_path, doc, registry)
    }

    /// Starts from an already loaded config (`config_path` is used for reloads).
    pub fn start_with(config_path: &Path, doc: Document, registry: Registry) -> Result<Gateway, StartError> {
        let (control, control_thread) = control_runtime()?;
        let targets = Arc::new(TargetRegistry::new());
        let snap = compile(&doc, &registry, &targets)?;
        for w in snap.route_findings() {
            tracing::warn!("{w}");
        }
        let workers = snap.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));

        // Bind once to learn the real port (for `:0`), then once more per extra worker.
        let mut sockets: Vec<Vec<std::net::TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
        let mut addrs = Vec::new();
        for l in &snap.listeners {
            let first = server::bind(l.address)
                .map_err(|e| StartError::Io(format!("listener {:?} on {}: {e}", l.name, l.address)))?;
            let addr = first.local_addr().map_err(|e| StartError::Io(e.to_string()))?;
            sockets[0].push(first);
            for per_worker in sockets.iter_mut().skip(1) {
                per_worker.push(
                    server::bind(addr).map_err(|e| StartError::Io(format!("listener {:?} on {addr}: {e}", l.name)))?,
                );
            }
            addrs.push((l.name.to_string(), addr));
        }
        let status_listener = match &doc.config.status {
            Some(st) => {
                let l = std::net::TcpListener::bind(st.address.as_str())
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(|e| StartError::Io(format!("status listener on {}: {e}", st.address)))?;
                Some(l)
            }
            None => None,
        };
        let status_addr = status_listener.as_ref().and_then(|l| l.local_addr().ok());
        let open = snap.listeners.iter().map(|_| AtomicUsize::new(0)).collect();
        let checkers = spawn_checkers(&control, &snap);
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snap),
            open,
            shutdown: tokio::sync::watch::channel(false).0,
        });
        let mut handles = Vec::new();
        for (id, socks) in sockets.into_iter().enumerate() {
            let shared = shared.clone();
            let h = std::thread::Builder::new()
                .name(format!("meshgate-worker-{id}"))
                .spawn(move || server::run_worker(id, shared, socks))
                .map_err(|e| StartError::Io(format!("cannot start worker thread: {e}")))?;
            handles.push(h);
        }
        let stats = Arc::new(metrics::GatewayStats::new(text_hash(doc.source.text())));
        if let Some(l) = status_listener {
            let metrics = metrics::registry(stats.clone(), shared.clone(), targets.clone(), &registry);
            status::spawn(&control, l, Arc::new(status::StatusState { stats: stats.clone(), metrics }));
        }
        stats.ready.store(true, Ordering::Release);
        tracing::info!(workers, listeners = ?addrs, status = ?status_addr, "meshgate started");
        Ok(Gateway {
            shared,
            config_path: config_path.to_owned(),
            loaded: AtomicU64::new(text_hash(doc.source.text())),
            registry: Arc::new(registry),
            targets,
            addrs,
            workers: Mutex::new(handles),
            control,
            control_thread: Mutex::new(Some(control_thread)),
            checkers: Mutex::new(checkers),
            stats,
            status_addr,
        })
    }

    /// Where the status endpoints (`/status/live`, `/status/ready`, `/status`, `/metrics`)
    /// listen, when `status.address` is configured.
    pub fn status_addr(&self) -> Option<SocketAddr> {
        self.status_addr
    }

    /// The bound address of each listener, by name (useful with port 0).
    pub fn local_addrs(&self) -> &[(String, SocketAddr)] {
        &self.addrs
    }

    /// Every upstream target's health (healthy or ejected, consecutive ejections, in flight),
    /// for metrics. Takes a lock held only while compiling configs; not for the request path.
    pub fn target_statuses(&self) -> Vec<TargetStatus> {
        self.targets.statuses()
    }

    /// Each route's `(name, retries attempted, retries refused by the budget)` in the config now
    /// serving.
    pub fn retry_stats(&self) -> Vec<(Arc<str>, u64, u64)> {
        self.shared.snapshot.load().retry_stats()
    }

    /// The config file this gateway reloads from.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Re-reads the config file. On success the new config serves every new request and the
    /// warnings about unreachable routes are returned; on failure nothing changes.
    pub fn reload(&self) -> Result<Vec<String>, ConfigErrors> {
        let result = self.try_reload();
        let counter = if result.is_ok() { &self.stats.reloads_ok } else { &self.stats.reloads_failed };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    fn try_reload(&self) -> Result<Vec<String>, ConfigErrors> {
        let doc = meshgate_config::load_file(&self.config_path)?;
        let snap = compile(&doc, &self.registry, &self.targets)?;
        let current = self.shared.snapshot.load();
        let same_listeners = snap.listeners.len() == current.listeners.len()
            && snap
                .listeners
                .iter()
                .zip(current.listeners.iter())
                .all(|(a, b)| a.address == b.address && a.name == b.name);
        if !same_listeners {
            let msg = "listeners cannot change while running (restart to change them); the running config is kept";
            return Err(ConfigErrors(vec![doc.source.error("listeners", msg)]));
        }
        let mut warnings = snap.route_findings();
        // These shape the process itself; say so rather than silently ignore the change.
        if snap.workers != current.workers {
            warnings.push("runtime.workers changed: takes effect at the next restart".to_owned());
        }
        if snap.watch_config != current.watch_config {
            warnings.push("runtime.watch_config changed: takes effect at the next restart".to_owned());
        }
        let status = doc.config.status.as_ref().and_then(|s| s.address.parse::<SocketAddr>().ok());
        // Port 0 means "any": the bound port then counts as the same address.
        let same_status = match (status, self.status_addr) {
            (None, None) => true,
            (Some(want), Some(bound)) => want.ip() == bound.ip() && (want.port() == 0 || want.port() == bound.port()),
            _ => false,
        };
        if !same_status {
            warnings.push("status.address changed: takes effect at the next restart".to_owned());
        }
        let mut checkers = lock(&self.checkers);
        // Old balancers keep their own handles on dropped targets until they go.
        self.targets.retain(&snap.live_targets);
        let new_checkers = spawn_checkers(&self.control, &snap);
        self.shared.snapshot.store(Arc::new(snap));
        self.loaded.store(text_hash(doc.source.text()), Ordering::Relaxed);
        self.stats.config_hash.store(text_hash(doc.source.text()), Ordering::Relaxed);
        for old in checkers.drain(..) {
            old.stop();
        }
        *checkers = new_checkers;
        Ok(warnings)
    }

    /// Stops accepting, lets requests in flight finish (up to the drain timeout), and returns
    /// when every worker has exited.
    /// Safe to call more than once; dropping the gateway does the same.
    pub fn shutdown(&self) {
        // Not ready while draining, so load balancers stop sending before the listeners close.
        self.stats.ready.store(false, Ordering::Release);
        self.shared.shutdown.send_replace(true);
        let workers = std::mem::take(&mut *lock(&self.workers));
        for w in workers {
            let _ = w.join();
        }
        lock(&self.checkers).clear();
        if let Some((thread, stop)) = lock(&self.control_thread).take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }

    /// Reloads and logs the outcome: what a SIGHUP or a file change does.
    pub fn reload_and_log(&self) -> bool {
        match self.reload() {
            Ok(warnings) => {
                for w in warnings {
                    tracing::warn!("{w}");
                }
                tracing::info!(config = %self.config_path.display(), "config reloaded");
                true
            }
            Err(errors) => {
                for e in &errors.0 {
                    tracing::error!("{e}");
                }
                tracing::error!(config = %self.config_path.display(), "config rejected; the running config is kept");
                false
            }
        }
    }

    /// Reloads whenever the config file changes, until the gateway is dropped or shut down.
    /// Does nothing when `runtime.watch_config` is false.
    pub fn watch(self: &Arc<Self>) -> Result<(), String> {
        if !self.shared.snapshot.load().watch_config {
            return Ok(());
        }
        watch::spawn(self.clone())
    }
}

impl Gateway {
    /// Whether the config file no longer holds the text that is serving.
    fn file_changed(&self) -> bool {
        std::fs::read_to_string(&self.config_path)
            .is_ok_and(|text| text_hash(&text) != self.loaded.load(Ordering::Relaxed))
    }
}

fn text_hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Locks a mutex that is only used off the request path; a panic elsewhere does not poison it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn spawn_checkers(control: &tokio::runtime::Handle, snap: &Snapshot) -> Vec<ActiveChecker> {
    let _guard = control.enter();
    snap.active_checks
        .iter()
        .map(|(name, targets, cfg)| ActiveChecker::spawn(name, targets.clone(), cfg.clone()))
        .collect()
}

/// A thread with a small runtime for background work that is not on the request path.
/// The control thread and the sender that stops it.
type ControlThread = (JoinHandle<()>, tokio::sync::oneshot::Sender<()>);

fn control_runtime() -> Result<(tokio::runtime::Handle, ControlThread), StartError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StartError::Io(format!("cannot start control runtime: {e}")))?;
    let handle = rt.handle().clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("meshgate-control".into())
        .spawn(move || {
            rt.block_on(async {
                let _ = rx.await;
            })
        })
        .map_err(|e| StartError::Io(format!("cannot start control thread: {e}")))?;
    Ok((handle, (thread, tx)))
}
