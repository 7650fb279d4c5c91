//! The contract between meshgate's data plane and its plugins.
//!
//! A plugin is one module with one job. It implements [`Plugin`], whose methods are the phases of
//! a request (see [`Phases`]), and is created from its config by a [`PluginFactory`] registered in
//! a [`Registry`]. The proxy never knows plugins by name: it asks the registry.

pub mod auth;
mod body;
mod consumers;
mod context;
mod error;
pub mod metrics;
mod plugin;
mod registry;
mod secret;

pub use auth::{AuthOutcome, Authenticated, Authenticator};
pub use body::{BoxError, ProxyBody};
pub use consumers::{Consumer, Consumers, CredentialEntry};
pub use context::{
    Attempt, AttemptFailure, Attempts, BodyLimit, ClientCert, Ended, PathParams, RequestCtx, RequestId, ResponseInfo,
    RouteInfo, SpanTags, Subcall, Subcalls, TraceId, TraceIds, Verdict,
};
pub use error::{ErrorKind, json_error};
pub use plugin::{Flow, Phases, Plugin};
pub use registry::{BuildContext, Built, PluginConfigError, PluginFactory, PluginScope, Registry, parse_config};
pub use secret::Secret;

/// Re-exported so plugins implement the trait with the same macro version the proxy uses.
pub use async_trait::async_trait;
