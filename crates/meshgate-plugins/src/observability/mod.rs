//! Plugins that record what happened: access logs and distributed tracing.

pub mod access_log;
pub mod handoff;
mod json;
pub mod tracing;
