//! Authentication methods. Each is an [`Authenticator`](meshgate_core::Authenticator): a route
//! with several of them accepts a caller that any one accepts (see `meshgate_core::auth`).

pub mod basic_auth;
mod cache;
pub mod jwt;
pub mod key_auth;
pub mod mtls_auth;

use http::uri::{PathAndQuery, Uri};
use meshgate_core::{Consumer, Consumers, CredentialEntry, PluginConfigError, parse_config};
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// A consumer's credential entry in its typed form; errors are located in the document
/// (`consumers[1].credentials.key-auth[0].key: …`).
pub(crate) fn parse_credential<T: DeserializeOwned>(entry: &CredentialEntry) -> Result<T, PluginConfigError> {
    parse_config(&entry.value).map_err(|e| credential_error(entry, &e.field, e.message))
}

/// An error about `field` (empty: the whole entry) of a consumer's credential entry.
pub(crate) fn credential_error(entry: &CredentialEntry, field: &str, message: impl Into<String>) -> PluginConfigError {
    let at = if field.is_empty() { entry.field.clone() } else { format!("{}.{field}", entry.field) };
    PluginConfigError::in_document(at, message)
}

/// The consumer named by a method's `anonymous:` setting, which must be declared.
pub(crate) fn anonymous(consumers: &Consumers, name: Option<&str>) -> Result<Option<Arc<Consumer>>, PluginConfigError> {
    let Some(name) = name else { return Ok(None) };
    match consumers.find(name) {
        Some(c) => Ok(Some(c.clone())),
        None => Err(PluginConfigError::new("anonymous", format!("no consumer is named {name:?}"))),
    }
}

/// `uri` without every `name=…` query parameter.
pub(crate) fn without_param(uri: &Uri, name: &str) -> Uri {
    let query: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && p.split_once('=').map_or(*p, |(n, _)| n) != name)
        .collect();
    let pq = if query.is_empty() { uri.path().to_owned() } else { format!("{}?{}", uri.path(), query.join("&")) };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = PathAndQuery::try_from(pq).ok();
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}
