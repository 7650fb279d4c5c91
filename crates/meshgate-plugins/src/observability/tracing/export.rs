//! Span export (Zipkin v2 or OTLP/HTTP JSON), off the request path.
//!
//! A request's finished spans (one [`Record`]) are pushed onto a bounded lock-free queue
//! ([`handoff`]) and nothing else: JSON encoding, batching and the HTTP POST happen on a thread
//! per collector URL and protocol, which wakes every `flush_interval` or as soon as
//! `batch_size` records wait. When the queue is full, the record's spans are dropped and
//! counted; a failed POST drops its batch and counts an error. Every instance naming the same
//! collector shares the thread (the first one's settings apply, headers included), so a reload
//! does not start another; a reload that removes the last one ends it.

use super::otlp;
use super::span::{self, Record};
use crate::observability::handoff::{self, Batch, Handoff};
use bytes::Bytes;
use http::{Method, Request, Uri};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Spans accepted by the collector.
pub static EXPORTED: AtomicU64 = AtomicU64::new(0);
/// Spans lost: the queue was full, or their batch failed to export.
pub static DROPPED: AtomicU64 = AtomicU64::new(0);
/// POSTs that failed (no answer in time, connection refused, a non-2xx status).
pub static EXPORT_ERRORS: AtomicU64 = AtomicU64::new(0);

/// The JSON a collector takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Zipkin v2: a JSON array of spans.
    Zipkin,
    /// OTLP/HTTP with JSON encoding: an `ExportTraceServiceRequest`.
    Otlp,
}

/// A protocol's writer, with the blocks it keeps between records.
enum Encoder {
    Zipkin(span::Encoder),
    Otlp(otlp::Encoder),
}

impl Encoder {
    fn new(protocol: Protocol) -> Encoder {
        match protocol {
            Protocol::Zipkin => Encoder::Zipkin(span::Encoder::default()),
            Protocol::Otlp => Encoder::Otlp(otlp::Encoder::default()),
        }
    }

    /// What a batch starts and ends with; records in between are separated by commas.
    fn frame(&self) -> (&'static [u8], &'static [u8]) {
        match self {
            Encoder::Zipkin(_) => (b"[", b"]"),
            Encoder::Otlp(_) => (otlp::BATCH_START, otlp::BATCH_END),
        }
    }

    fn record(&mut self, r: &Record, out: &mut Vec<u8>) {
        match self {
            Encoder::Zipkin(e) => e.record(r, out),
            Encoder::Otlp(e) => e.record(r, out),
        }
    }
}

/// How a collector is fed.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The JSON it takes.
    pub protocol: Protocol,
    /// Spans per POST, at most (a request's spans are not split between two).
    pub batch_size: usize,
    /// A batch waits at most this long for more spans.
    pub flush_interval: Duration,
    /// Sampled requests whose spans may wait; more are dropped.
    pub queue: usize,
    /// A POST taking longer fails.
    pub timeout: Duration,
    /// Sent with every POST.
    pub headers: http::HeaderMap,
}

/// A request's record as queued: boxed, so that the queue's slots are pointers. The queue is
/// allocated whole when the exporter starts; with records in place its default 10,000 slots took
/// ~5 MB of memory, and every record was copied into its slot and out again (~500 bytes each).
pub type Queued = Box<Record>;

/// One exporter thread per collector URL and protocol, shared by every instance naming them;
/// see [`handoff`].
static EXPORTERS: handoff::Registry<Queued> = Mutex::new(None);

/// The queue of the exporter for `url`, started on first use.
pub fn exporter(url: &str, settings: Settings) -> Result<Arc<Handoff<Queued>>, String> {
    let uri = crate::outbound::http_url(url)?;
    let key = format!("{:?} {url}", settings.protocol);
    handoff::shared(&EXPORTERS, &key, || {
        let https = crate::outbound::https_connector()?;
        // Built on the exporter's thread: a runtime cannot be started from within the one a
        // reload may run on.
        let mut post: Option<Poster> = None;
        let (queue, wake_at, interval) = (settings.queue, settings.batch_size, settings.flush_interval);
        let mut parts = Some((uri, https, settings));
        handoff::spawn("meshgate-tracing", queue, wake_at, interval, move |b| {
            if post.is_none()
                && let Some((uri, https, settings)) = parts.take()
            {
                match Poster::new(uri, https, settings) {
                    Ok(p) => post = Some(p),
                    Err(e) => ::tracing::error!(error = %e, "tracing: cannot start the exporter; spans are dropped"),
                }
            }
            match post.as_mut() {
                Some(p) => p.drain(b),
                None => {
                    while let Some(r) = b.pop() {
                        DROPPED.fetch_add(spans(&r), Ordering::Relaxed);
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start the exporter: {e}"))
    })
}

/// Queues a request's finished spans; never waits.
pub fn submit(tx: &Handoff<Queued>, record: Queued) {
    if let Err(r) = tx.push(record) {
        DROPPED.fetch_add(spans(&r), Ordering::Relaxed);
    }
}

/// How many spans a record holds.
fn spans(r: &Record) -> u64 {
    1 + r.calls.len() as u64
}

/// The exporter thread's state: a client on a current-thread runtime of its own, so that a
/// slow or dead collector ties up neither the workers nor their runtimes.
struct Poster {
    url: Uri,
    rt: tokio::runtime::Runtime,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    settings: Settings,
    encoder: Encoder,
}

impl Poster {
    fn new(url: Uri, https: HttpsConnector<HttpConnector>, settings: Settings) -> std::io::Result<Poster> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let client = rt.block_on(async { Client::builder(TokioExecutor::new()).build(https) });
        let encoder = Encoder::new(settings.protocol);
        Ok(Poster { url, rt, client, settings, encoder })
    }

    /// Posts what waits, about `batch_size` spans at a time (a request's spans are never
    /// split between two batches). Called every `flush_interval`, and as soon as a batch's worth
    /// waits. Records are encoded as they are taken from the queue, not gathered first: a
    /// record is a few hundred bytes, and every copy of it showed.
    fn drain(&mut self, waiting: &Batch<'_, Queued>) {
        let size = self.settings.batch_size as u64;
        let (start, end) = self.encoder.frame();
        loop {
            let mut body = Vec::with_capacity((waiting.len() * 1200).min(self.settings.batch_size * 640) + 32);
            body.extend_from_slice(start);
            let mut n = 0;
            while n < size {
                let Some(record) = waiting.pop() else { break };
                if n > 0 {
                    body.push(b',');
                }
                self.encoder.record(&record, &mut body);
                n += spans(&record);
            }
            if n == 0 {
                return;
            }
            body.extend_from_slice(end);
            self.post(body, n);
            if n < size {
                return;
            }
        }
    }

    /// Sends a batch. The POST carries `b3: 0`, as B3 asks of span reporters: a tracing proxy
    /// between the gateway and its collector (a mesh's sidecar, another gateway) then does not
    /// trace the export itself, which would feed it spans about spans.
    fn post(&mut self, body: Vec<u8>, n: u64) {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("b3", "0")
            .body(Full::new(Bytes::from(body)))
            .expect("a valid request");
        for (name, value) in &self.settings.headers {
            req.headers_mut().insert(name, value.clone());
        }
        let ok = self.rt.block_on(async {
            match tokio::time::timeout(self.settings.timeout, self.client.request(req)).await {
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

    #[test]
    fn urls_are_checked() {
        let s = Settings {
            protocol: Protocol::Zipkin,
            batch_size: 1,
            flush_interval: Duration::from_secs(1),
            queue: 1,
            timeout: Duration::from_secs(1),
            headers: http::HeaderMap::new(),
        };
        assert!(exporter("ftp://x/", s.clone()).err().unwrap().contains("http"));
        assert!(exporter("/api/v2/spans", s).is_err());
    }
}
