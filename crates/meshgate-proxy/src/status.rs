//! The status listener: `/status/live`, `/status/ready`, `/status` and `/metrics` (OpenMetrics or
//! the Prometheus text format, as the scraper's `Accept` asks), on their own address
//! (`status.address`), served by the control thread so that a busy data plane never hides its
//! own health and scraping never takes a worker's time.

use crate::metrics::GatewayStats;
use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderValue, VARY};
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
            let format = Exposition::negotiate(req.headers().get(ACCEPT));
            let Ok(text) = format.encode(&state.metrics) else {
                return json(StatusCode::INTERNAL_SERVER_ERROR, serde_json::json!({"error": "metrics_encoding"}));
            };
            let mut resp = Response::new(Full::new(Bytes::from(text)));
            resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
            resp.headers_mut().insert(VARY, HeaderValue::from_static("accept"));
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

/// The formats `/metrics` is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exposition {
    /// OpenMetrics 1.0 (`# EOF` at the end; counters as a family `x` with samples `x_total`).
    OpenMetrics,
    /// The Prometheus text format 0.0.4: what every scraper reads.
    Text,
}

impl Exposition {
    /// Chooses as Prometheus' own client (Go `expfmt.NegotiateIncludingOpenMetrics`) does: of the
    /// media ranges in `Accept`, the one with the highest `q` (the first among equals) that names
    /// a format written here wins: `application/openmetrics-text` of version 1.0.0 or none, or
    /// `text/plain` of version 0.0.4 or none. Wildcards name no format, so `*/*` (curl), no
    /// `Accept` at all, or nothing known, get the text format (prometheus/common's newer
    /// `NegotiateAccept` gives `*/*` the server's first choice; curl's `*/*` is a person, who
    /// reads the text format). Unlike Go's, a range with `q=0` is refused, as HTTP says; names
    /// and parameters are matched ignoring case.
    fn negotiate(accept: Option<&HeaderValue>) -> Exposition {
        let Some(accept) = accept.and_then(|v| v.to_str().ok()) else { return Exposition::Text };
        let mut best: Option<(f32, Exposition)> = None;
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            let (mut q, mut version) = (1.0, None);
            for param in parts {
                let Some((key, value)) = param.split_once('=') else { continue };
                let value = value.trim().trim_matches('"');
                match key.trim() {
                    k if k.eq_ignore_ascii_case("q") => q = value.parse().unwrap_or(0.0),
                    k if k.eq_ignore_ascii_case("version") => version = Some(value),
                    _ => {}
                }
            }
            let format = if media.eq_ignore_ascii_case("application/openmetrics-text") {
                matches!(version, None | Some("1.0.0")).then_some(Exposition::OpenMetrics)
            } else if media.eq_ignore_ascii_case("text/plain") {
                matches!(version, None | Some("0.0.4")).then_some(Exposition::Text)
            } else {
                None
            };
            if let Some(format) = format
                && q > 0.0
                && best.is_none_or(|(b, _)| q > b)
            {
                best = Some((q, format));
            }
        }
        best.map_or(Exposition::Text, |(_, f)| f)
    }

    fn content_type(self) -> &'static str {
        match self {
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Exposition::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }

    /// The page: both come from the same collectors, written by prometheus-client.
    fn encode(self, metrics: &MetricsRegistry) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        match self {
            Exposition::OpenMetrics => prometheus_client::encoding::text::encode(&mut text, metrics)?,
            Exposition::Text => prometheus_client::encoding::prometheus_text::encode(&mut text, metrics)?,
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::Exposition::{self, OpenMetrics, Text};
    use http::HeaderValue;

    fn negotiate(accept: &str) -> Exposition {
        Exposition::negotiate(Some(&HeaderValue::from_str(accept).unwrap()))
    }

    #[test]
    fn scrapers_get_what_they_ask_for() {
        // Prometheus 2.x, and 3.x without and with protobuf scraping: OpenMetrics 1.0 first.
        let prometheus2 = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let prometheus3 = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1";
        let protobuf_first = format!(
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,{prometheus3}"
        );
        for accept in [prometheus2, prometheus3, &protobuf_first] {
            assert_eq!(negotiate(accept), OpenMetrics, "{accept}");
        }
        // Scrapers that ask for the text format (protobuf first, which is not written here).
        let text_only = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3";
        assert_eq!(negotiate(text_only), Text);
        assert_eq!(negotiate("text/plain; version=0.0.4"), Text);
        assert_eq!(negotiate("application/openmetrics-text"), OpenMetrics);
        assert_eq!(negotiate("Application/OpenMetrics-Text; Version=\"1.0.0\"; charset=utf-8"), OpenMetrics);
    }

    #[test]
    fn anything_else_gets_the_text_format() {
        assert_eq!(Exposition::negotiate(None), Text);
        for accept in
            ["", "*/*", "text/*", "text/html, */*;q=0.8", "application/json", ",;=,", "text/plain;version=1.0.0"]
        {
            assert_eq!(negotiate(accept), Text, "{accept:?}");
        }
        // Only versions written here count: 0.0.1 is passed over for what follows.
        assert_eq!(negotiate("application/openmetrics-text;version=0.0.1"), Text);
        assert_eq!(
            negotiate("application/openmetrics-text;version=0.0.1,application/openmetrics-text;q=0.2"),
            OpenMetrics
        );
    }

    #[test]
    fn quality_decides_then_order() {
        assert_eq!(negotiate("text/plain;q=0.5, application/openmetrics-text;q=0.9"), OpenMetrics);
        assert_eq!(negotiate("application/openmetrics-text;q=0.5, text/plain;q=0.9"), Text);
        assert_eq!(negotiate("application/openmetrics-text, text/plain"), OpenMetrics);
        assert_eq!(negotiate("text/plain, application/openmetrics-text"), Text);
        // q=0 means "not this one"; a q that is not a number counts as 0.
        assert_eq!(negotiate("application/openmetrics-text;q=0"), Text);
        assert_eq!(negotiate("application/openmetrics-text;q=high"), Text);
    }
}
