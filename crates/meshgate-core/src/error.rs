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
    /// Every target of the upstream is unhealthy (503).
    NoHealthyTarget,
    /// The upstream refused, reset or broke the connection, or answered garbage (502).
    UpstreamUnavailable,
    /// The upstream did not connect or answer in time (504).
    UpstreamTimeout,
    /// The gateway is shutting down or overloaded (503).
    Unavailable,
}

impl ErrorKind {
    /// The HTTP status for this error.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::NoRoute => StatusCode::NOT_FOUND,
            ErrorKind::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::NoHealthyTarget | ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            ErrorKind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The stable code in the JSON body.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::NoRoute => "no_route",
            ErrorKind::HeadersTooLarge => "headers_too_large",
            ErrorKind::BodyTooLarge => "body_too_large",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::NoHealthyTarget => "no_healthy_target",
            ErrorKind::UpstreamUnavailable => "upstream_unavailable",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::Unavailable => "unavailable",
        }
    }

    /// A JSON response for this error with a human-readable message.
    pub fn response(self, message: &str) -> Response<ProxyBody> {
        json_error(self.status(), self.code(), message)
    }
}

/// A JSON error response: `{"status":503,"error":"code","message":"..."}`.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "status": status.as_u16(), "error": code, "message": message });
    let mut resp = Response::new(ProxyBody::full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
