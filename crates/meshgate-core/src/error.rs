//! Errors the gateway answers itself, always as JSON with a stable machine-readable code.

use crate::body::ProxyBody;
use http::{HeaderValue, Response, StatusCode, header};

/// Why the gateway answered instead of the upstream. The code strings are part of the API:
/// clients and dashboards match on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// No route matches the request (404).
    NoRoute,
    /// The request head is too large (431).
    HeadersTooLarge,
    /// The request body is too large (413).
    BodyTooLarge,
    /// The request is malformed (400).
    BadRequest,
    /// The request body stopped arriving (408).
    RequestTimeout,
    /// Every target of the upstream is unhealthy (503).
    NoHealthyTarget,
    /// The upstream refused, reset or broke the connection, or answered garbage (502).
    UpstreamUnavailable,
    /// The upstream did not connect or answer in time (504).
    UpstreamTimeout,
    /// The gateway is shutting down or overloaded (503).
    Unavailable,
    /// The request uses something the gateway does not do (CONNECT, a transfer coding other
    /// than chunked) (501).
    NotImplemented,
}

impl ErrorKind {
    /// The HTTP status for this error.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::NoRoute => StatusCode::NOT_FOUND,
            ErrorKind::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::NoHealthyTarget | ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            ErrorKind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::NotImplemented => StatusCode::NOT_IMPLEMENTED,
        }
    }

    /// The stable code in the JSON body.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::NoRoute => "no_route",
            ErrorKind::HeadersTooLarge => "headers_too_large",
            ErrorKind::BodyTooLarge => "body_too_large",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::RequestTimeout => "request_timeout",
            ErrorKind::NoHealthyTarget => "no_healthy_target",
            ErrorKind::UpstreamUnavailable => "upstream_unavailable",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::NotImplemented => "not_implemented",
        }
    }

    /// A JSON response for this error with a human-readable message.
    pub fn response(self, message: &str) -> Response<ProxyBody> {
        json_error(self.status(), self.code(), message)
    }

    /// The fixed message for errors whose cause must not reach clients (upstream addresses, OS
    /// errors, service names): the cause goes to the log and the trace instead.
    pub fn fixed_message(self) -> &'static str {
        match self {
            ErrorKind::NoRoute => "no route matches the request",
            ErrorKind::HeadersTooLarge => "the request headers are too large",
            ErrorKind::BodyTooLarge => "the request body is too large",
            ErrorKind::BadRequest => "the request is malformed",
            ErrorKind::RequestTimeout => "the request body stopped arriving",
            ErrorKind::NoHealthyTarget => "no healthy upstream server is available",
            ErrorKind::UpstreamUnavailable => "the upstream server could not be reached or broke the exchange",
            ErrorKind::UpstreamTimeout => "the upstream server did not answer in time",
            ErrorKind::Unavailable => "the service is at capacity; retry later",
            ErrorKind::NotImplemented => "the request uses a feature the gateway does not support",
        }
    }

    /// A JSON response with [`ErrorKind::fixed_message`], and `request_id` when the request has
    /// one (`{"status":502,"error":"upstream_unavailable","message":"…","request_id":"…"}`).
    pub fn response_with_id(self, request_id: Option<&HeaderValue>) -> Response<ProxyBody> {
        let mut body = serde_json::json!({
            "status": self.status().as_u16(), "error": self.code(), "message": self.fixed_message()
        });
        if let Some(id) = request_id.and_then(|id| id.to_str().ok()) {
            body["request_id"] = id.into();
        }
        json_body(self.status(), body)
    }
}

/// A JSON error response: `{"status":503,"error":"code","message":"..."}`.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    json_body(status, serde_json::json!({ "status": status.as_u16(), "error": code, "message": message }))
}

fn json_body(status: StatusCode, body: serde_json::Value) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
