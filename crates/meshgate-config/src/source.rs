//! The text a config came from, kept so that later stages can point at lines.

use crate::error::ConfigError;
use crate::locate::locate;
use std::path::{Path, PathBuf};

/// A config file's name and text.
#[derive(Clone, Debug)]
pub struct Source {
    path: PathBuf,
    text: String,
}

impl Source {
    /// Wraps text read from `path`.
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        Source { path: path.into(), text: text.into() }
    }

    /// The file name used in messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// An error about `field` (a path like `routes[2].service`), located in the text.
    pub fn error(&self, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        let field = field.into();
        let (line, column) = match locate(&self.text, &field) {
            Some((l, c)) => (Some(l), Some(c)),
            None => (None, None),
        };
        ConfigError { file: self.path.clone(), line, column, field, message: message.into() }
    }
}
