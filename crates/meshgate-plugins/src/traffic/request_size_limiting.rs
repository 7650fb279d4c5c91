//! `request-size-limiting`: a smaller request body limit for one route (or service) than the
//! global `limits.max_body_bytes`, e.g. 1 MiB on an upload API but 16 KiB on a JSON one.
//!
//! A declared `Content-Length` over the limit is refused up front with 413 `body_too_large`,
//! before anything is forwarded. A body of unknown length (chunked, HTTP/2 without
//! `content-length`) cannot be judged yet: plugins run before the body is read and never see it,
//! so the plugin leaves a [`BodyLimit`] in the request's vars and the proxy counts the body as it
//! streams, failing it past the limit (413 when the upstream has not answered yet).

use meshgate_config::units::ByteSize;
use meshgate_core::{
    BodyLimit, BuildContext, Built, ErrorKind, Flow, Phases, Plugin, PluginConfigError, PluginFactory, RequestCtx,
    async_trait, parse_config,
};
use serde::Deserialize;
use std::sync::Arc;

/// Registers `request-size-limiting`.
pub struct Factory;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The largest request body accepted.
    max_bytes: ByteSize,
}

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "request-size-limiting"
    }
    fn priority(&self) -> i32 {
        // After authentication and ACL, before rate limiting (910): a refused body does not use
        // up the caller's limit.
        920
    }
    fn build(&self, config: &serde_json::Value, _cx: &BuildContext) -> Result<Built, PluginConfigError> {
        let c: Config = parse_config(config)?;
        let max = c.max_bytes.bytes();
        Ok(Built::Plugin(Arc::new(RequestSizeLimiting {
            max,
            message: format!("request body is larger than {max} bytes"),
        })))
    }
}

struct RequestSizeLimiting {
    max: u64,
    message: String,
}

#[async_trait]
impl Plugin for RequestSizeLimiting {
    fn phases(&self) -> Phases {
        Phases::ON_REQUEST
    }

    async fn on_request(&self, cx: &mut RequestCtx) -> Flow {
        let declared: Option<u64> =
            cx.request.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
        match declared {
            Some(n) if n > self.max => Flow::Respond(ErrorKind::BodyTooLarge.response(&self.message)),
            Some(_) => Flow::Continue, // the server side holds the body to its declared length
            None => {
                cx.vars.insert(BodyLimit(self.max));
                Flow::Continue
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{plugin, request};
    use serde_json::json;

    #[tokio::test]
    async fn declared_lengths_up_front_others_while_streaming() {
        let p = plugin(&Factory, json!({"max_bytes": "1KiB"})).unwrap();
        let mut cx = request("/", &[("content-length", "1025")]);
        match p.on_request(&mut cx).await {
            Flow::Respond(r) => assert_eq!(r.status(), 413),
            Flow::Continue => panic!("1025 bytes passed a 1 KiB limit"),
        }
        let mut cx = request("/", &[("content-length", "1024")]);
        assert!(matches!(p.on_request(&mut cx).await, Flow::Continue));
        assert_eq!(cx.vars.get::<BodyLimit>(), None);
        let mut cx = request("/", &[("transfer-encoding", "chunked")]);
        assert!(matches!(p.on_request(&mut cx).await, Flow::Continue));
        assert_eq!(cx.vars.get::<BodyLimit>(), Some(&BodyLimit(1024)));
    }

    #[test]
    fn config_errors() {
        let err = |v| plugin(&Factory, v).err().unwrap().to_string();
        assert!(err(json!({})).starts_with("missing field `max_bytes`"), "{}", err(json!({})));
        assert!(err(json!({"max_bytes": "lots"})).starts_with("max_bytes: invalid size \"lots\""));
    }
}
