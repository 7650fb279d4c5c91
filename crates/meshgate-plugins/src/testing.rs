//! Helpers for the plugins' unit tests: build from JSON config, make request contexts.

use meshgate_core::{
    Authenticator, BuildContext, Built, Consumer, Consumers, CredentialEntry, Plugin, PluginConfigError, PluginFactory,
    RequestCtx,
};
use std::sync::Arc;

/// A build context with the given consumers.
pub fn context(consumers: Consumers) -> BuildContext {
    BuildContext { consumers: Arc::new(consumers), scope: Default::default() }
}

/// Builds a phase plugin with no consumers declared.
pub fn plugin(f: &dyn PluginFactory, config: serde_json::Value) -> Result<Arc<dyn Plugin>, PluginConfigError> {
    match f.build(&config, &context(Consumers::default()))? {
        Built::Plugin(p) => Ok(p),
        Built::Authenticator(_) => panic!("{} is an authenticator", f.name()),
    }
}

/// Builds an authentication method.
pub fn authenticator(
    f: &dyn PluginFactory,
    config: serde_json::Value,
    cx: &BuildContext,
) -> Result<Arc<dyn Authenticator>, PluginConfigError> {
    match f.build(&config, cx)? {
        Built::Authenticator(a) => Ok(a),
        Built::Plugin(_) => panic!("{} is not an authenticator", f.name()),
    }
}

/// A request context for `uri` with `headers`.
pub fn request(uri: &str, headers: &[(&str, &str)]) -> RequestCtx {
    let mut req = http::Request::builder().uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (parts, ()) = req.body(()).unwrap().into_parts();
    RequestCtx::new(parts, "127.0.0.1:5000".parse().unwrap(), false)
}

/// What the proxy records before an attempt's `before_upstream`: the attempt (sent as `uri`),
/// after ending the previous one, which is being retried.
pub fn begin_attempt(cx: &mut RequestCtx, target: &str, uri: &str) {
    if let Some(prev) = cx.attempts.last_mut() {
        prev.retried = true;
        prev.end.get_or_insert(std::time::Instant::now());
    }
    cx.attempts.push(meshgate_core::Attempt {
        target: target.into(),
        start: std::time::Instant::now(),
        end: None,
        status: None,
        retried: false,
        uri: Some(Box::new(uri.parse().unwrap())),
        span_id: 0,
        failure: None,
        tls: false,
    });
}

/// Consumers `(username, credential)`, each with one credential of `kind`, located as
/// `consumers[i].credentials.<kind>[0]`.
pub fn consumers(kind: &str, entries: &[(&str, serde_json::Value)]) -> Consumers {
    let mut c = Consumers::new(std::env::temp_dir());
    for (i, (user, value)) in entries.iter().enumerate() {
        let entry = CredentialEntry { field: format!("consumers[{i}].credentials.{kind}[0]"), value: value.clone() };
        c.add(Consumer::new(user, None, vec![]), [(kind.to_owned(), entry)]).unwrap();
    }
    c
}
