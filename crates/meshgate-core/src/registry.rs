//! Plugin factories by name, so the proxy can build plugins from config without knowing them.

use crate::auth::Authenticator;
use crate::consumers::Consumers;
use crate::plugin::Plugin;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// A problem in one plugin's `config:` block, or in a consumer's credentials for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginConfigError {
    /// Path inside the plugin's `config:` (e.g. `add[0].name`; empty for the block as a whole),
    /// or from the document's root when `in_document` is set.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// `field` is a path from the document's root (e.g. `consumers[1].credentials.key-auth[0]`).
    pub in_document: bool,
}

impl PluginConfigError {
    /// An error about a field of the plugin's config.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        PluginConfigError { field: field.into(), message: message.into(), in_document: false }
    }

    /// An error about a field elsewhere in the document, such as a consumer's credential.
    pub fn in_document(field: impl Into<String>, message: impl Into<String>) -> Self {
        PluginConfigError { field: field.into(), message: message.into(), in_document: true }
    }
}

/// What a plugin's config is built into.
#[derive(Clone)]
pub enum Built {
    /// A plugin that runs in its phases.
    Plugin(Arc<dyn Plugin>),
    /// An authentication method, run with the route's other methods as one step (any of them).
    Authenticator(Arc<dyn Authenticator>),
}

/// What a factory may see of the rest of the config while building.
pub struct BuildContext {
    /// The declared consumers and their credentials.
    pub consumers: Arc<Consumers>,
    /// Where the instance being built is attached.
    pub scope: PluginScope,
}

/// Where a plugin instance is attached, for plugins whose state is per attachment (a rate limit
/// set on a route counts that route's requests; set globally, all of them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PluginScope {
    /// The top-level list without `route:` or `service:`.
    #[default]
    Global,
    /// A service's routes.
    Service(String),
    /// One route.
    Route(String),
}

impl fmt::Display for PluginScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginScope::Global => f.write_str("global"),
            PluginScope::Service(s) => write!(f, "service:{s}"),
            PluginScope::Route(r) => write!(f, "route:{r}"),
        }
    }
}

impl fmt::Display for PluginConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.field, self.message) }
    }
}

/// Builds instances of one plugin from their config.
pub trait PluginFactory: Send + Sync + 'static {
    /// The name used in config files.
    fn name(&self) -> &'static str;
    /// Order within a phase: higher runs first (authentication 1000s, limits 900s, transforms
    /// 800s, headers and logging below). Fixed per plugin, not per config file, so the order in
    /// which users list plugins cannot break authentication-before-limits.
    fn priority(&self) -> i32;
    /// Builds an instance; `config` is the plugin's `config:` block (null when absent).
    fn build(&self, config: &serde_json::Value, cx: &BuildContext) -> Result<Built, PluginConfigError>;
    /// Whether consumers may hold credentials of this plugin's kind
    /// (`consumers[].credentials.<name>`).
    fn takes_credentials(&self) -> bool {
        false
    }
    /// Checks every consumer credential of this plugin's kind, so that a mistake is reported
    /// even when no route uses the plugin.
    fn check_credentials(&self, _cx: &BuildContext) -> Result<(), PluginConfigError> {
        Ok(())
    }
    /// Registers the plugin's metrics (collectors read at scrape time, see [`crate::metrics`]);
    /// called once when the gateway starts.
    fn register_metrics(&self, _registry: &mut crate::metrics::MetricsRegistry) {}
}

/// The plugins a gateway knows, by name.
#[derive(Default)]
pub struct Registry {
    factories: BTreeMap<&'static str, Arc<dyn PluginFactory>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Adds a factory; a later one with the same name replaces the earlier.
    pub fn register(&mut self, factory: impl PluginFactory) -> &mut Self {
        self.factories.insert(factory.name(), Arc::new(factory));
        self
    }

    /// The factory for `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn PluginFactory>> {
        self.factories.get(name)
    }

    /// Every registered factory, sorted by name.
    pub fn factories(&self) -> impl Iterator<Item = &Arc<dyn PluginFactory>> + '_ {
        self.factories.values()
    }

    /// Registered names, sorted, for error messages.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.factories.keys().copied()
    }
}

/// Deserializes a plugin's config block into its typed form, with the failing field's path.
/// A missing block (`null`) is read as an empty map so that all-default configs need no `config:`.
pub fn parse_config<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, PluginConfigError> {
    let empty = serde_json::Value::Object(Default::default());
    let value = if value.is_null() { &empty } else { value };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        PluginConfigError::new(if path == "." { String::new() } else { path }, e.into_inner().to_string())
    })
}
