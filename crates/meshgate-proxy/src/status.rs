//! The status listener: `/status/live`, `/status/ready`, `/status` and `/metrics`, on their own
//! address (`status.address`), served by the control thread so that a busy data plane never
//! hides its own health and scraping never takes a worker's time.

use crate::metrics::GatewayStats;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use meshgate_core::metrics::MetricsRegistry;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// What the status endpoints read.
pub(crate) struct StatusState {
    pub(crate) stats: Arc<GatewayStats>,
    pub(crate) metrics: MetricsRegistry,
}

/// Serves the status endpoints on `listener` until the runtime stops.
pub(crate) fn spawn(rt: &tokio::runtime::Handle, listener: std::net::TcpListener, state: Arc<StatusState>) {
    rt.spawn(async move {
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let state = state.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(answer(&state, &req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
            });
        }
    });
}

fn answer(state: &StatusState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return json(StatusCode::METHOD_NOT_ALLOWED, serde_json::json!({"error": "method_not_allowed"}));
    }
    let stats = &state.stats;
    match req.uri().path() {
        "/status/live" => json(StatusCode::OK, serde_json::json!({"status": "live"})),
        "/status/ready" => {
            if stats.ready.load(Ordering::Acquire) {
                json(StatusCode::OK, serde_json::json!({"status": "ready"}))
            } else {
                json(StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"status": "not_ready"}))
            }
        }
        "/status" => json(
            StatusCode::OK,
            serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "ready": stats.ready.load(Ordering::Acquire),
                "config_version": stats.config_version(),
                "config_hash": format!("{:016x}", stats.config_hash.load(Ordering::Relaxed)),
                "reloads": {"ok": stats.reloads_ok.load(Ordering::Relaxed), "failed": stats.reloads_failed.load(Ordering::Relaxed)},
                "uptime_seconds": stats.started.elapsed().as_secs(),
            }),
        ),
        "/metrics" => {
            let mut text = String::new();
            if prometheus_client::encoding::text::encode(&mut text, &state.metrics).is_err() {
                return json(StatusCode::INTERNAL_SERVER_ERROR, serde_json::json!({"error": "metrics_encoding"}));
            }
            let mut resp = Response::new(Full::new(Bytes::from(text)));
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            resp
        }
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "not_found", "endpoints": ["/status/live", "/status/ready", "/status", "/metrics"]}),
        ),
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
