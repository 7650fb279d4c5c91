//! Plugins that record what happened: access logs (and later tracing).

pub mod access_log;
