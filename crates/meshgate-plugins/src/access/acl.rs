//! `acl`: allow or deny callers by consumer group, after authentication has said who they are.
//! A request nobody authenticated gets 401 (the route needs an authentication plugin, or an
//! `anonymous` consumer whose groups the list can name); a known caller outside the rules, 403.

use meshgate_core::{
    BuildContext, Built, Flow, Phases, Plugin, PluginConfigError, PluginFactory, RequestCtx, async_trait, auth,
    json_error, parse_config,
};
use serde::Deserialize;
use std::sync::Arc;

/// Registers `acl`.
pub struct Factory;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// When not empty, only consumers in one of these groups may call.
    allow: Vec<String>,
    /// Consumers in any of these groups may not call, even when allowed.
    deny: Vec<String>,
}

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "acl"
    }
    fn priority(&self) -> i32 {
        // After authentication (1000s), before limits and transforms.
        950
    }
    fn build(&self, config: &serde_json::Value, _cx: &BuildContext) -> Result<Built, PluginConfigError> {
        let c: Config = parse_config(config)?;
        if c.allow.is_empty() && c.deny.is_empty() {
            return Err(PluginConfigError::new("", "set allow, deny or both"));
        }
        Ok(Built::Plugin(Arc::new(Acl { allow: c.allow, deny: c.deny })))
    }
}

struct Acl {
    allow: Vec<String>,
    deny: Vec<String>,
}

#[async_trait]
impl Plugin for Acl {
    fn phases(&self) -> Phases {
        Phases::ON_REQUEST
    }

    async fn on_request(&self, cx: &mut RequestCtx) -> Flow {
        let Some(who) = &cx.auth else {
            let msg = "credentials are required";
            return Flow::Respond(json_error(http::StatusCode::UNAUTHORIZED, "unauthorized", msg));
        };
        let c = &who.consumer;
        let denied = self.deny.iter().any(|g| c.in_group(g));
        let allowed = self.allow.is_empty() || self.allow.iter().any(|g| c.in_group(g));
        if denied || !allowed {
            return Flow::Respond(auth::forbidden(cx, "you are not allowed to call this route"));
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{plugin, request};
    use meshgate_core::{Authenticated, Consumer};
    use serde_json::json;

    async fn status(p: &Arc<dyn Plugin>, groups: Option<&[&str]>) -> u16 {
        let mut cx = request("/", &[]);
        cx.auth = groups.map(|g| Authenticated {
            consumer: Arc::new(Consumer::new("c", None, g.iter().map(|s| (*s).into()).collect())),
            credential: None,
            anonymous: false,
        });
        match p.on_request(&mut cx).await {
            Flow::Continue => 200,
            Flow::Respond(r) => r.status().as_u16(),
        }
    }

    #[tokio::test]
    async fn allow_and_deny_by_group() {
        let p = plugin(&Factory, json!({"allow": ["ops", "dev"], "deny": ["suspended"]})).unwrap();
        assert_eq!(status(&p, Some(&["dev"])).await, 200);
        assert_eq!(status(&p, Some(&["guest"])).await, 403);
        assert_eq!(status(&p, Some(&[])).await, 403);
        assert_eq!(status(&p, Some(&["ops", "suspended"])).await, 403);
        assert_eq!(status(&p, None).await, 401);
        let p = plugin(&Factory, json!({"deny": ["suspended"]})).unwrap();
        assert_eq!(status(&p, Some(&["anyone"])).await, 200);
        assert_eq!(status(&p, Some(&["suspended"])).await, 403);
        assert_eq!(plugin(&Factory, json!({})).err().unwrap().to_string(), "set allow, deny or both");
    }
}
