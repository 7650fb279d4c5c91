//! Keys fetched from an identity provider's JWKS endpoint.
//!
//! The key set is swapped in whole (`ArcSwap`), so requests read it without a lock. Fetches run on
//! the async runtime, never blocking a worker thread, and one at a time (single flight): requests
//! that need fresh keys while a fetch is under way wait for its result instead of starting
//! another. Every fetch, for whatever reason, counts against `jwks_min_refresh_interval`, so a
//! flood of tokens with made-up `kid`s cannot become a flood of requests to the provider. A failed
//! fetch keeps the keys already known.

use super::keys::{self, KeySet};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The largest JWKS document read; a provider's is a few KiB.
const MAX_DOCUMENT: usize = 1 << 20;

/// The JWKS endpoints of one config, so that routes naming the same endpoint (with the same
/// timing) share its keys and its fetches. Kept in the config's shared indexes: a reload starts
/// afresh.
#[derive(Default)]
pub(super) struct Shared(Mutex<HashMap<String, Arc<Jwks>>>);

impl Shared {
    /// The endpoint at `url` with `timing`, made on first use.
    pub(super) fn get(&self, url: &str, timing: Timing) -> Result<Arc<Jwks>, String> {
        let key = format!("{url} {:?} {:?} {:?}", timing.refresh, timing.min_refresh, timing.timeout);
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = map.get(&key) {
            return Ok(found.clone());
        }
        let jwks = Arc::new(Jwks::new(url, timing)?);
        map.insert(key, jwks.clone());
        Ok(jwks)
    }
}

/// When to fetch and how long to wait.
pub(super) struct Timing {
    /// Keys older than this are refreshed in the background.
    pub(super) refresh: Duration,
    /// At most one fetch per this long, whatever asks for it.
    pub(super) min_refresh: Duration,
    /// A fetch taking longer fails.
    pub(super) timeout: Duration,
}

/// The keys as last fetched.
pub(super) struct Fetched {
    /// The keys.
    pub(super) keys: KeySet,
    /// When they were fetched; `None` before the first successful fetch.
    at: Option<Instant>,
}

/// A JWKS endpoint and the keys last fetched from it; shared by every worker.
pub(super) struct Jwks {
    /// The document's URL.
    url: Uri,
    /// An http(s) client; webpki roots for https.
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    /// The keys requests use, swapped in whole after each successful fetch.
    current: ArcSwap<Fetched>,
    /// Held while fetching (single flight); holds when the last fetch started.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
    /// A background refresh is under way.
    refreshing: AtomicBool,
    /// When to fetch and how long to wait.
    timing: Timing,
}

impl Jwks {
    /// An endpoint at `url` (http or https); nothing is fetched until a token needs a key.
    pub(super) fn new(url: &str, timing: Timing) -> Result<Jwks, String> {
        let url = crate::outbound::http_url(url)?;
        let https = crate::outbound::https_connector()?;
        // No idle pool: fetches are minutes apart, and a pooled connection would belong to the
        // runtime of whichever worker opened it.
        let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(https);
        Ok(Jwks {
            url,
            client,
            current: ArcSwap::from_pointee(Fetched { keys: KeySet::default(), at: None }),
            last_attempt: tokio::sync::Mutex::new(None),
            refreshing: AtomicBool::new(false),
            timing,
        })
    }

    /// The keys as last fetched. When they are older than `jwks_refresh_interval`, a refresh is
    /// started in the background; this request goes on with them.
    pub(super) fn current(self: &Arc<Self>) -> Arc<Fetched> {
        let current = self.current.load_full();
        let stale = current.at.is_some_and(|at| at.elapsed() >= self.timing.refresh);
        // After a failed refresh the keys stay stale: wait out the floor before spawning again.
        let due = || match self.last_attempt.try_lock() {
            Ok(last) => last.is_none_or(|t| t.elapsed() >= self.timing.min_refresh),
            Err(_) => false,
        };
        if stale && due() && !self.refreshing.swap(true, Ordering::AcqRel) {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    let (jwks, seen) = (self.clone(), current.clone());
                    rt.spawn(async move {
                        jwks.refetch(&seen).await;
                        jwks.refreshing.store(false, Ordering::Release);
                    });
                }
                Err(_) => self.refreshing.store(false, Ordering::Release),
            }
        }
        current
    }

    /// Fetches the keys again because `seen` lacked one, unless another fetch replaced `seen`
    /// meanwhile or the last fetch is too recent. Returns the keys to use.
    pub(super) async fn refetch(&self, seen: &Arc<Fetched>) -> Arc<Fetched> {
        let mut last = self.last_attempt.lock().await;
        let current = self.current.load_full();
        if !Arc::ptr_eq(&current, seen) {
            return current;
        }
        if last.is_some_and(|t| t.elapsed() < self.timing.min_refresh) {
            return current;
        }
        *last = Some(Instant::now());
        match tokio::time::timeout(self.timing.timeout, self.fetch()).await {
            Ok(Ok(keys)) => {
                tracing::debug!(url = %self.url, keys = keys.len(), "JWKS fetched");
                let fresh = Arc::new(Fetched { keys, at: Some(Instant::now()) });
                self.current.store(fresh.clone());
                fresh
            }
            Ok(Err(e)) => {
                tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed; keeping the known keys");
                current
            }
            Err(_) => {
                tracing::warn!(url = %self.url, timeout = ?self.timing.timeout, "JWKS fetch timed out; keeping the known keys");
                current
            }
        }
    }

    /// One GET of the document, parsed.
    async fn fetch(&self) -> Result<KeySet, String> {
        let req = http::Request::get(self.url.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let resp = self.client.request(req).await.map_err(|e| format!("request failed: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status()));
        }
        let body = Limited::new(resp.into_body(), MAX_DOCUMENT)
            .collect()
            .await
            .map_err(|e| format!("reading the document failed: {e}"))?
            .to_bytes();
        keys::from_jwks(&body)
    }
}
