//! Plugins that change requests and responses on their way through.

pub mod cors;
