//! End-to-end test support for meshgate: real upstream servers on `127.0.0.1:0`, the real
//! [`meshgate_proxy::Gateway`] started in-process from a YAML file, real HTTP/1.1, HTTP/2, TLS and
//! WebSocket clients, and certificates made on the fly.
//!
//! Nothing here is mocked: requests cross real sockets both ways, so what passes here passes
//! against real clients and servers.
//!
//! Typical use:
//!
//! ```no_run
//! # async fn demo() {
//! use meshgate_e2e::{Upstream, TestGateway, client, config};
//! let a = Upstream::http("a").await;
//! let gw = TestGateway::start(&config(&format!(
//!     "services: [{{name: s, url: 'http://{}'}}]\nroutes: [{{name: r, service: s, paths: [/]}}]",
//!     a.addr()
//! )));
//! let resp = client::get(gw.addr(), "/hello").await;
//! assert_eq!(resp.name(), "a");
//! # }
//! ```

pub mod body;
pub mod certs;
pub mod client;
pub mod gateway;
pub mod h2raw;
pub mod observe;
pub mod raw;
pub mod redis;
pub mod upstream;

pub use certs::{LeafCert, TestPki};
pub use client::Resp;
pub use gateway::{TestGateway, config};
pub use upstream::Upstream;

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what` after `timeout`.
/// Tests wait for conditions this way instead of sleeping a fixed time.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
