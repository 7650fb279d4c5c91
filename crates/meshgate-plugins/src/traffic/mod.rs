//! Plugins that shape the flow of requests: how many, how fast, how large, and faults on purpose.

pub mod concurrency_limit;
pub mod fault_injection;
pub mod rate_limiting;
pub mod request_size_limiting;
