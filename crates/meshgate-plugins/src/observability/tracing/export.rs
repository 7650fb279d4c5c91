//! Zipkin v2 export, off the request path.
//!
//! A finished span is handed to a bounded queue with `try_send` and nothing else: JSON encoding,
//! batching and the HTTP POST happen on a thread per collector URL, with its own current-thread
//! tokio runtime so that a slow or dead collector ties up neither the workers nor their
//! runtimes. When the queue is full, spans are dropped and counted; a failed POST drops its
//! batch and counts an error. Every instance naming the same URL shares the thread (the first
//! one's batch settings apply), so a reload does not start another.

use bytes::Bytes;
use http::{Method, Request, Uri};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Spans accepted by the collector.
pub static EXPORTED: AtomicU64 = AtomicU64::new(0);
/// Spans lost: the queue was full, or their batch failed to export.
pub static DROPPED: AtomicU64 = AtomicU64::new(0);
/// POSTs that failed (no answer in time, connection refused, a non-2xx status).
pub static EXPORT_ERRORS: AtomicU64 = AtomicU64::new(0);

/// A finished span, as Zipkin's v2 JSON model has it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Span {
    /// 16 or 32 lower-hex digits.
    pub trace_id: String,
    /// 16 lower-hex digits.
    pub id: String,
    /// The parent span's id; absent for a trace's root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// `SERVER` or `CLIENT`.
    pub kind: &'static str,
    /// The operation: the route's name, or the method in lower case.
    pub name: String,
    /// Start, in microseconds since the Unix epoch.
    pub timestamp: u64,
    /// Microseconds, at least 1.
    pub duration: u64,
    /// This gateway.
    pub local_endpoint: Endpoint,
    /// The other side: the upstream target for client spans.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_endpoint: Option<Endpoint>,
    /// Recorded because the caller asked for debug (B3 `X-B3-Flags: 1`).
    #[serde(skip_serializing_if = "is_false")]
    pub debug: bool,
    /// String-valued annotations (`http.method`, `error`, …).
    pub tags: HashMap<&'static str, String>,
}

/// A Zipkin endpoint.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// The service's name, in lower case as Zipkin indexes it.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "shared_str")]
    pub service_name: Option<Arc<str>>,
    /// An IPv4 address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
    /// An IPv6 address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    /// The port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// For `skip_serializing_if`: `debug` is written only when true.
fn is_false(b: &bool) -> bool {
    !b
}

/// Serializes a shared string (serde's `rc` feature is off in the workspace).
fn shared_str<S: serde::Serializer>(v: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.as_deref().unwrap_or_default())
}

impl Endpoint {
    /// The endpoint of an upstream target written `ip:port` (or `host:port`, which keeps the
    /// port only: Zipkin endpoints carry addresses, not names).
    pub fn of_target(target: &str, service: Option<Arc<str>>) -> Endpoint {
        let mut e = Endpoint { service_name: service, ..Endpoint::default() };
        match target.parse::<std::net::SocketAddr>() {
            Ok(std::net::SocketAddr::V4(a)) => (e.ipv4, e.port) = (Some(a.ip().to_string()), Some(a.port())),
            Ok(std::net::SocketAddr::V6(a)) => (e.ipv6, e.port) = (Some(a.ip().to_string()), Some(a.port())),
            Err(_) => e.port = target.rsplit_once(':').and_then(|(_, p)| p.parse().ok()),
        }
        e
    }
}

/// How a collector is fed.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Spans per POST at most.
    pub batch_size: usize,
    /// A batch waits at most this long for more spans.
    pub flush_interval: Duration,
    /// Spans that may wait; more are dropped.
    pub queue: usize,
    /// A POST taking longer fails.
    pub timeout: Duration,
}

/// One exporter thread per collector URL.
static EXPORTERS: Mutex<Option<HashMap<String, SyncSender<Span>>>> = Mutex::new(None);

/// The queue of the exporter for `url`, started on first use.
pub fn exporter(url: &str, settings: Settings) -> Result<SyncSender<Span>, String> {
    let uri = crate::outbound::http_url(url)?;
    let mut exporters = EXPORTERS.lock().unwrap_or_else(|e| e.into_inner());
    let map = exporters.get_or_insert_with(HashMap::new);
    if let Some(tx) = map.get(url) {
        return Ok(tx.clone());
    }
    let https = crate::outbound::https_connector()?;
    let (tx, rx) = sync_channel::<Span>(settings.queue.max(1));
    std::thread::Builder::new()
        .name("meshgate-tracing".into())
        .spawn(move || run(uri, https, settings, rx))
        .map_err(|e| format!("cannot start the exporter: {e}"))?;
    map.insert(url.to_owned(), tx.clone());
    Ok(tx)
}

/// Queues a finished span; never waits.
pub fn submit(tx: &SyncSender<Span>, span: Span) {
    if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(span) {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// The exporter thread: batches spans and POSTs them until every sender is gone.
fn run(url: Uri, https: HttpsConnector<HttpConnector>, settings: Settings, rx: Receiver<Span>) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            ::tracing::error!(error = %e, "tracing: cannot start the exporter runtime; spans are dropped");
            for _ in rx {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
    };
    let client: Client<_, Full<Bytes>> = rt.block_on(async { Client::builder(TokioExecutor::new()).build(https) });
    let mut batch = Vec::with_capacity(settings.batch_size.min(1024));
    while let Ok(first) = rx.recv() {
        batch.push(first);
        let deadline = Instant::now() + settings.flush_interval;
        while batch.len() < settings.batch_size {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(span) => batch.push(span),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        let n = batch.len() as u64;
        let body = serde_json::to_vec(&batch).unwrap_or_default();
        batch.clear();
        let ok = rt.block_on(async {
            let req = Request::builder()
                .method(Method::POST)
                .uri(url.clone())
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))
                .expect("a valid request");
            match tokio::time::timeout(settings.timeout, client.request(req)).await {
                Ok(Ok(resp)) if resp.status().is_success() => true,
                Ok(Ok(resp)) => {
                    ::tracing::debug!(status = %resp.status(), "tracing: the collector refused spans");
                    false
                }
                Ok(Err(e)) => {
                    ::tracing::debug!(error = %e, "tracing: export failed");
                    false
                }
                Err(_) => {
                    ::tracing::debug!("tracing: export timed out");
                    false
                }
            }
        });
        if ok {
            EXPORTED.fetch_add(n, Ordering::Relaxed);
        } else {
            EXPORT_ERRORS.fetch_add(1, Ordering::Relaxed);
            DROPPED.fetch_add(n, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn zipkin_v2_json() {
        let span = Span {
            trace_id: "a3ce929d0e0e4736".into(),
            id: "00f067aa0ba902b7".into(),
            parent_id: None,
            kind: "CLIENT",
            name: "get".into(),
            timestamp: 1_764_134_400_000_000,
            duration: 1500,
            local_endpoint: Endpoint { service_name: Some("meshgate".into()), ..Endpoint::default() },
            remote_endpoint: Some(Endpoint::of_target("10.0.0.5:8080", Some("orders".into()))),
            debug: false,
            tags: [("http.status_code", "200".to_owned())].into_iter().collect(),
        };
        assert_eq!(
            serde_json::to_value(&span).unwrap(),
            json!({
                "traceId": "a3ce929d0e0e4736", "id": "00f067aa0ba902b7", "kind": "CLIENT", "name": "get",
                "timestamp": 1_764_134_400_000_000u64, "duration": 1500,
                "localEndpoint": {"serviceName": "meshgate"},
                "remoteEndpoint": {"serviceName": "orders", "ipv4": "10.0.0.5", "port": 8080},
                "tags": {"http.status_code": "200"}
            })
        );
        let v6 = serde_json::to_value(Endpoint::of_target("[::1]:81", None)).unwrap();
        assert_eq!(v6, json!({"ipv6": "::1", "port": 81}));
        assert_eq!(serde_json::to_value(Endpoint::of_target("svc.local:9", None)).unwrap(), json!({"port": 9}));
    }

    #[test]
    fn urls_are_checked() {
        let s = Settings {
            batch_size: 1,
            flush_interval: Duration::from_secs(1),
            queue: 1,
            timeout: Duration::from_secs(1),
        };
        assert!(exporter("ftp://x/", s).unwrap_err().contains("http"));
        assert!(exporter("/api/v2/spans", s).is_err());
    }
}
