//! Plugins that shape the flow of requests: how many, how fast, how large.

pub mod rate_limiting;
