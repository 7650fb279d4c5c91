//! The JSON body transformer, through `request-transformer` as the gateway runs it: the first
//! line of the input is the plugin's `config:` (JSON; remove, rename, replace and add at dotted
//! paths, values with templates), the rest is the request body, sent as `application/json`.
//! Invariant: whenever the body was valid JSON, the body the upstream gets is valid JSON too
//! (checked with serde_json, not with the transformer's own parser).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use meshgate_core::{Authenticated, Built, Consumer, Consumers, PathParams};
use meshgate_fuzz::{block_on, build, build_context, parse_head, request_ctx};
use meshgate_plugins::transform::request_transformer::Factory;
use std::sync::Arc;

/// What templates may read: a header, a query argument, a path capture and a consumer, each with
/// characters JSON must escape.
const HEAD: &str =
    "POST /orders/7?page=2%22&q=%E2%9C%93\ncontent-type: application/json\nx-user: al\"ice\\\nx-user: bob";

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (config, body) = (&data[..split], data.get(split + 1..).unwrap_or_default());
    let Ok(config) = serde_json::from_slice::<serde_json::Value>(config) else { return };
    let Some(Built::Plugin(plugin)) = build(&Factory, &config, &build_context(Consumers::default())) else { return };
    let mut cx = request_ctx(parse_head(HEAD));
    cx.vars.insert(PathParams(vec![("id".into(), "7\u{1}\"".to_owned())]));
    let consumer = Arc::new(Consumer::new("carol\"", Some("c\\1"), vec!["ops".into(), "d\u{7f}v".into()]));
    cx.auth = Some(Authenticated { consumer, credential: None, anonymous: false });
    let was_json = serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok();
    let mut body = Bytes::copy_from_slice(body);
    block_on(async {
        let _ = plugin.on_request(&mut cx).await;
        if plugin.request_body_limit(&cx).is_some_and(|max| body.len() as u64 <= max) {
            let _ = plugin.on_request_body(&mut cx, Some(&mut body)).await;
        }
    });
    if was_json && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
        panic!("valid JSON in, invalid JSON out ({e}): {:?}", String::from_utf8_lossy(&body));
    }
});
