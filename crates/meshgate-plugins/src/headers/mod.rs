//! Plugins that add, propagate or remove headers.

pub mod request_id;
pub mod response_headers;

use meshgate_core::PluginConfigError;

/// Parses a header name from config, naming the field on error.
pub(crate) fn header_name(field: String, s: &str) -> Result<http::HeaderName, PluginConfigError> {
    http::HeaderName::from_bytes(s.as_bytes())
        .map_err(|_| PluginConfigError::new(field, format!("invalid header name {s:?}")))
}

/// Parses a header value from config, naming the field on error.
pub(crate) fn header_value(field: String, s: &str) -> Result<http::HeaderValue, PluginConfigError> {
    http::HeaderValue::from_str(s).map_err(|_| PluginConfigError::new(field, format!("invalid header value {s:?}")))
}
