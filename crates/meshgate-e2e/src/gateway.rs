//! The real gateway, started in-process from a YAML file in a temporary directory.

use meshgate_proxy::{Gateway, StartError};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The runtime and listener settings every test config starts with: two workers, no file
/// watching, a short drain so that dropping a gateway never waits long, and one plain listener
/// named `main` on a free port.
pub const PREAMBLE: &str = "\
runtime: {workers: 2, watch_config: false, drain_timeout: 1s}
listeners: [{name: main, address: \"127.0.0.1:0\"}]
";

/// A full config: [`PREAMBLE`] followed by `body` (upstreams, services, routes, limits, plugins).
pub fn config(body: &str) -> String {
    format!("{PREAMBLE}{body}\n")
}

/// A running gateway with its config file; shut down (draining) when dropped.
pub struct TestGateway {
    gateway: Option<Gateway>,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestGateway {
    /// Writes `yaml` to a file and starts a gateway on it; panics with the errors if it cannot.
    #[track_caller]
    pub fn start(yaml: &str) -> TestGateway {
        match TestGateway::try_start(yaml) {
            Ok(g) => g,
            Err(e) => panic!("gateway did not start: {e}\n--- config ---\n{yaml}"),
        }
    }

    /// Writes `yaml` to a file and starts a gateway on it.
    pub fn try_start(yaml: &str) -> Result<TestGateway, StartError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("gateway.yaml");
        std::fs::write(&path, yaml).expect("write config");
        let gateway = Gateway::start(&path, meshgate_plugins::builtin())?;
        Ok(TestGateway { gateway: Some(gateway), path, _dir: dir })
    }

    /// The gateway itself.
    pub fn gateway(&self) -> &Gateway {
        self.gateway.as_ref().expect("running")
    }

    /// The first listener's bound address.
    pub fn addr(&self) -> SocketAddr {
        self.gateway().local_addrs()[0].1
    }

    /// The bound address of the listener named `name`.
    pub fn addr_of(&self, name: &str) -> SocketAddr {
        self.gateway()
            .local_addrs()
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no listener named {name:?}"))
            .1
    }

    /// `http://addr/path` on the first listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// The config file.
    pub fn config_path(&self) -> &Path {
        &self.path
    }

    /// Replaces the config file's content (call [`TestGateway::reload`] to apply it).
    pub fn write_config(&self, yaml: &str) {
        std::fs::write(&self.path, yaml).expect("write config");
    }

    /// Reloads the config file; on success returns the warnings about unreachable routes.
    pub fn reload(&self) -> Result<Vec<String>, meshgate_config::ConfigErrors> {
        self.gateway().reload()
    }

    /// Shuts down now (draining requests in flight) instead of on drop.
    pub fn shutdown(&mut self) {
        if let Some(g) = self.gateway.take() {
            stop(g);
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Shuts a gateway down. Shutdown joins the worker threads, which can wait on requests in
/// flight to upstream servers running on the test's runtime: on a multi-thread runtime the
/// wait moves off the async worker so those servers keep running.
fn stop(gateway: Gateway) {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(move || drop(gateway));
    } else {
        drop(gateway);
    }
}
