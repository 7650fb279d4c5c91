//! Plugins that shape the flow of requests: how many, how fast, how large.

pub mod concurrency_limit;
pub mod rate_limiting;
