//! What tests read of the gateway's observability: a `/metrics` scrape parsed by a real
//! Prometheus text parser, and a Zipkin collector that keeps the spans it is sent.

use crate::body;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// `name{label=value,…}` (labels sorted) → value of every counter, gauge and untyped sample of a
/// scrape, parsed by `prometheus-parse`. Panics when a series appears twice: Prometheus rejects
/// such samples.
pub fn scrape_values(text: &str) -> HashMap<String, f64> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("a valid Prometheus text exposition");
    let n = scrape.samples.len();
    let values: HashMap<String, f64> = scrape
        .samples
        .into_iter()
        .map(|s| {
            let mut labels: Vec<_> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            };
            (format!("{}{{{}}}", s.metric, labels.join(",")), value)
        })
        .collect();
    assert_eq!(values.len(), n, "a series appears more than once in the scrape:\n{text}");
    values
}

/// A Zipkin collector: accepts POSTed JSON arrays of spans on `/api/v2/spans` and keeps every
/// span. Stops when dropped.
pub struct Collector {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Every span received, in arrival order.
    pub spans: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    /// A collector on a free `127.0.0.1` port, answering 202.
    pub async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = spans.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let kept = kept.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let kept = kept.clone();
                        async move {
                            assert_eq!(req.uri().path(), "/api/v2/spans");
                            let bytes = req.into_body().collect().await.unwrap().to_bytes();
                            let batch: Vec<Value> = serde_json::from_slice(&bytes).expect("a JSON array of spans");
                            kept.lock().unwrap().extend(batch);
                            Ok::<_, Infallible>(Response::builder().status(202).body(body::empty()).unwrap())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
                });
            }
        });
        Collector { addr, spans, task }
    }

    /// Its spans endpoint.
    pub fn url(&self) -> String {
        format!("http://{}/api/v2/spans", self.addr)
    }

    /// Waits for `n` spans of trace `trace`, sorted by timestamp.
    pub async fn trace(&self, trace: &str, n: usize) -> Vec<Value> {
        crate::wait_for(&format!("{n} spans of {trace}"), Duration::from_secs(5), || async {
            let mut got: Vec<Value> =
                self.spans.lock().unwrap().iter().filter(|s| s["traceId"] == trace).cloned().collect();
            got.sort_by_key(|s| s["timestamp"].as_u64());
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}
