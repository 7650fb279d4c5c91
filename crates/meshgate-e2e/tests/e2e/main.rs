//! End-to-end tests: real upstream servers, the real gateway in-process, real clients.
//! One test binary (one link) with a module per area; `streaming.rs` is separate because it
//! measures the process's memory and must run alone.

mod access_log;
mod auth;
mod balancing;
mod client_faults;
mod conformance;
mod cors;
mod errors;
mod forwarding;
mod h2_floods;
mod health;
mod http2;
mod jwt;
mod limits;
mod metrics;
mod mtls;
mod overload;
mod paths;
mod plugins;
mod pool;
mod rate_limit;
mod reload;
mod resilience;
mod routing;
mod slow_clients;
mod status;
mod tls;
mod tracing;
mod tracing_spec;
mod traffic;
mod websocket;
