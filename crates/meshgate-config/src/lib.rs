//! meshgate's declarative configuration: the YAML model, loading with errors that name the file,
//! line and field, and validation of everything that can be checked without starting the gateway.
//!
//! The data plane compiles a [`Document`] into its runtime form; problems found then (unreadable
//! certificates, unknown plugins) are reported through [`Source::error`] so they too point at a line.

pub mod aggregate;
mod error;
mod flow;
mod load;
mod locate;
pub mod model;
mod patterns;
mod source;
pub mod units;
mod upstream;
mod validate;

pub use error::{ConfigError, ConfigErrors};
pub use load::{Document, load_file, load_str};
pub use model::Config;
pub use patterns::{HashOn, PathPattern, ServiceUrl, regex_error};
pub use source::Source;
