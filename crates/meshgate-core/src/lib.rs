//! The contract between meshgate's data plane and its plugins.
//!
//! A plugin is one module with one job. It implements [`Plugin`], whose methods are the phases of
//! a request (see [`Phases`]), and is created from its config by a [`PluginFactory`] registered in
//! a [`Registry`]. The proxy never knows plugins by name: it asks the registry.

mod body;
mod context;
mod error;
mod plugin;
mod registry;

pub use body::{BoxError, ProxyBody};
pub use context::{Consumer, RequestCtx, ResponseInfo, RouteInfo};
pub use error::{ErrorKind, json_error};
pub use plugin::{Flow, Phases, Plugin};
pub use registry::{PluginConfigError, PluginFactory, Registry, parse_config};

/// Re-exported so plugins implement the trait with the same macro version the proxy uses.
pub use async_trait::async_trait;
