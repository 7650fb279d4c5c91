//! Plugin chains: the plugins that apply to one route, split by phase and ordered by priority.
//!
//! A plugin may be configured globally, on a service and on a route; the most specific instance
//! wins (route over service over global), so a route can override a global plugin's settings.

use meshgate_config::model::PluginRef;
use meshgate_config::{ConfigError, Source};
use meshgate_core::auth::AuthStage;
use meshgate_core::{BuildContext, Built, Phases, Plugin, PluginConfigError, Registry};
use std::sync::Arc;

/// A built plugin instance with its name and priority.
#[derive(Clone)]
pub struct Instance {
    name: Arc<str>,
    priority: i32,
    built: Built,
}

/// Builds an enabled plugin from its config entry; `field` is where the entry is in the file.
pub fn build(
    registry: &Registry,
    entry: &PluginRef,
    source: &Source,
    field: &str,
    cx: &BuildContext,
) -> Result<Option<Instance>, ConfigError> {
    if !entry.enabled {
        return Ok(None);
    }
    let factory = registry.get(&entry.name).ok_or_else(|| {
        let known: Vec<_> = registry.names().collect();
        source.error(format!("{field}.name"), format!("unknown plugin {:?}; known: {}", entry.name, known.join(", ")))
    })?;
    let built = factory.build(&entry.config, cx).map_err(|e| plugin_error(source, field, e))?;
    Ok(Some(Instance { name: entry.name.as_str().into(), priority: factory.priority(), built }))
}

/// Locates a plugin's error: inside its `config:` block at `field`, or elsewhere in the document.
pub fn plugin_error(source: &Source, field: &str, e: PluginConfigError) -> ConfigError {
    if e.in_document {
        return source.error(e.field, e.message);
    }
    let sub = if e.field.is_empty() { "config".to_owned() } else { format!("config.{}", e.field) };
    source.error(format!("{field}.{sub}"), e.message)
}

/// The plugins of one scope, by phase, highest priority first. Empty phases cost one branch.
#[derive(Default)]
pub struct Chain {
    /// Plugins with an `on_request` phase.
    pub on_request: Box<[Arc<dyn Plugin>]>,
    /// Plugins with a `before_upstream` phase.
    pub before_upstream: Box<[Arc<dyn Plugin>]>,
    /// Plugins with an `on_response` phase.
    pub on_response: Box<[Arc<dyn Plugin>]>,
    /// Plugins with an `on_log` phase.
    pub on_log: Box<[Arc<dyn Plugin>]>,
    /// Plugins that may want the whole request body; when empty, bodies stream untouched.
    pub request_body: Box<[Arc<dyn Plugin>]>,
    /// Plugins that may want the whole body of the upstream's answer.
    pub response_body: Box<[Arc<dyn Plugin>]>,
}

impl Chain {
    /// Merges scopes from least to most specific: a later instance of the same plugin replaces
    /// an earlier one.
    pub fn merge(scopes: &[&[Instance]]) -> Chain {
        let mut picked: Vec<&Instance> = Vec::new();
        for scope in scopes {
            for inst in *scope {
                match picked.iter_mut().find(|p| p.name == inst.name) {
                    Some(slot) => *slot = inst,
                    None => picked.push(inst),
                }
            }
        }
        // Stable sort: equal priorities keep config order.
        picked.sort_by_key(|p| std::cmp::Reverse(p.priority));
        // The authentication methods become one step, where the first of them would have run.
        let mut plugins: Vec<Arc<dyn Plugin>> = Vec::with_capacity(picked.len());
        let mut methods = Vec::new();
        let mut stage_at = None;
        for p in &picked {
            match &p.built {
                Built::Plugin(plugin) => plugins.push(plugin.clone()),
                Built::Authenticator(a) => {
                    stage_at.get_or_insert(plugins.len());
                    methods.push(a.clone());
                }
            }
        }
        if let Some(at) = stage_at {
            plugins.insert(at, Arc::new(AuthStage::new(methods)));
        }
        let phase = |ph: Phases| -> Box<[Arc<dyn Plugin>]> {
            plugins.iter().filter(|p| p.phases().contains(ph)).cloned().collect()
        };
        Chain {
            on_request: phase(Phases::ON_REQUEST),
            before_upstream: phase(Phases::BEFORE_UPSTREAM),
            on_response: phase(Phases::ON_RESPONSE),
            on_log: phase(Phases::ON_LOG),
            request_body: phase(Phases::REQUEST_BODY),
            response_body: phase(Phases::RESPONSE_BODY),
        }
    }
}
