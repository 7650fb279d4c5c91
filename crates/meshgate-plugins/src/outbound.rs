//! What plugins that call out (JWKS fetches, span export) share: checking the URL they are
//! configured with, and an http/https connector trusting the web roots.

use http::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

/// `url` parsed, when it is an `http://` or `https://` URL with a host.
pub(crate) fn http_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err("must be an http:// or https:// URL with a host".to_owned());
    }
    Ok(uri)
}

/// A connector for `http` and `https` (ring, webpki roots, HTTP/1.1).
pub(crate) fn https_connector() -> Result<HttpsConnector<HttpConnector>, String> {
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .https_or_http()
        .enable_http1()
        .build())
}
