//! Authentication methods. Each is an [`Authenticator`](meshgate_core::Authenticator): a route
//! with several of them accepts a caller that any one accepts (see `meshgate_core::auth`).

pub mod key_auth;
pub mod mtls_auth;

use meshgate_core::{Consumer, Consumers, PluginConfigError};
use std::sync::Arc;

/// The consumer named by a method's `anonymous:` setting, which must be declared.
pub(crate) fn anonymous(consumers: &Consumers, name: Option<&str>) -> Result<Option<Arc<Consumer>>, PluginConfigError> {
    let Some(name) = name else { return Ok(None) };
    match consumers.find(name) {
        Some(c) => Ok(Some(c.clone())),
        None => Err(PluginConfigError::new("anonymous", format!("no consumer is named {name:?}"))),
    }
}
