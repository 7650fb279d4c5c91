//! `access-log`: one JSON object per request, written by a thread of its own so that a slow
//! disk (or a stalled pipe) never slows a request. Lines wait in a bounded queue; when it is full
//! they are dropped and counted (`meshgate_access_log_dropped_total`), never waited for.
//!
//! Every instance writing to the same path shares one writer, so lines never interleave.

use meshgate_core::metrics::{self, MetricsRegistry};
use meshgate_core::{
    BuildContext, Built, Phases, Plugin, PluginConfigError, PluginFactory, RequestCtx, RequestId, async_trait,
    parse_config,
};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Registers `access-log`.
pub struct Factory;

/// Lines dropped because the queue was full (the output could not keep up).
pub static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Lines written.
pub static WRITTEN: AtomicU64 = AtomicU64::new(0);
/// Failed writes (the output went away).
pub static WRITE_ERRORS: AtomicU64 = AtomicU64::new(0);

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// `stdout`, `stderr`, or a file path (appended to; relative to the config file).
    path: String,
    /// The fields of each line, in this order.
    fields: Vec<Field>,
    /// Lines that may wait for the writer; more are dropped and counted.
    buffer: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { path: "stdout".to_owned(), fields: Field::ALL.to_vec(), buffer: 10_000 }
    }
}

/// A field of the log line.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Field {
    /// RFC 3339 time the request arrived, in UTC with milliseconds.
    Time,
    /// The matched route's name.
    Route,
    /// The service it went to.
    Service,
    /// The authenticated consumer's username.
    Consumer,
    /// The client's IP address (the TCP peer).
    ClientIp,
    Method,
    /// The request path, without the query string (which may hold credentials).
    Path,
    /// The status sent to the client.
    Status,
    /// Response body bytes sent to the client.
    ResponseBytes,
    /// Milliseconds from the request head to the end of the response.
    DurationMs,
    /// Milliseconds the upstream took to send its response head.
    UpstreamMs,
    /// The upstream target that answered.
    Upstream,
    /// The id set by `request-id`.
    RequestId,
}

impl Field {
    const ALL: [Field; 13] = [
        Field::Time,
        Field::Route,
        Field::Service,
        Field::Consumer,
        Field::ClientIp,
        Field::Method,
        Field::Path,
        Field::Status,
        Field::ResponseBytes,
        Field::DurationMs,
        Field::UpstreamMs,
        Field::Upstream,
        Field::RequestId,
    ];

    fn name(self) -> &'static str {
        match self {
            Field::Time => "time",
            Field::Route => "route",
            Field::Service => "service",
            Field::Consumer => "consumer",
            Field::ClientIp => "client_ip",
            Field::Method => "method",
            Field::Path => "path",
            Field::Status => "status",
            Field::ResponseBytes => "response_bytes",
            Field::DurationMs => "duration_ms",
            Field::UpstreamMs => "upstream_ms",
            Field::Upstream => "upstream",
            Field::RequestId => "request_id",
        }
    }

    /// The field's value for this request; `None` leaves it out.
    fn value(self, cx: &RequestCtx, arrived: SystemTime) -> Option<Value> {
        let ms = |d: std::time::Duration| Value::from((d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0);
        Some(match self {
            Field::Time => Value::from(humantime::format_rfc3339_millis(arrived).to_string()),
            Field::Route => Value::from(&*cx.route.as_ref()?.name),
            Field::Service => Value::from(&*cx.route.as_ref()?.service),
            Field::Consumer => Value::from(&*cx.auth.as_ref()?.consumer.username),
            Field::ClientIp => Value::from(cx.client_addr.ip().to_string()),
            Field::Method => Value::from(cx.request.method.as_str()),
            Field::Path => Value::from(cx.request.uri.path()),
            Field::Status => Value::from(cx.response.as_ref()?.status.as_u16()),
            Field::ResponseBytes => Value::from(cx.response.as_ref()?.body_bytes),
            Field::DurationMs => ms(cx.started.elapsed()),
            Field::UpstreamMs => ms(cx.upstream_time?),
            Field::Upstream => Value::from(&**cx.upstream.as_ref()?),
            Field::RequestId => Value::from(cx.vars.get::<RequestId>()?.0.to_str().ok()?),
        })
    }
}

/// One writer thread per output, shared by every instance that names it.
static WRITERS: Mutex<Option<HashMap<String, SyncSender<String>>>> = Mutex::new(None);

fn writer(path: &str, resolved: std::path::PathBuf, buffer: usize) -> Result<SyncSender<String>, String> {
    let mut writers = WRITERS.lock().unwrap_or_else(|e| e.into_inner());
    let map = writers.get_or_insert_with(HashMap::new);
    if let Some(tx) = map.get(path) {
        return Ok(tx.clone());
    }
    let (tx, rx) = sync_channel::<String>(buffer.max(1));
    let out: Box<dyn FnOnce() -> std::io::Result<Box<dyn Write>> + Send> = match path {
        "stdout" => Box::new(|| Ok(Box::new(std::io::stdout()) as Box<dyn Write>)),
        "stderr" => Box::new(|| Ok(Box::new(std::io::stderr()) as Box<dyn Write>)),
        _ => {
            if let Some(dir) = resolved.parent().filter(|d| !d.as_os_str().is_empty())
                && !dir.is_dir()
            {
                return Err(format!("directory {} does not exist", dir.display()));
            }
            // Opened by the writer thread: opening a stalled pipe must not block the config load.
            Box::new(move || {
                let f = std::fs::OpenOptions::new().create(true).append(true).open(&resolved)?;
                Ok(Box::new(f) as Box<dyn Write>)
            })
        }
    };
    std::thread::Builder::new()
        .name("meshgate-access-log".into())
        .spawn(move || write_lines(out, rx))
        .map_err(|e| format!("cannot start the log writer: {e}"))?;
    map.insert(path.to_owned(), tx.clone());
    Ok(tx)
}

fn write_lines(open: Box<dyn FnOnce() -> std::io::Result<Box<dyn Write>> + Send>, rx: Receiver<String>) {
    let mut out = match open() {
        Ok(w) => std::io::BufWriter::new(w),
        Err(e) => {
            tracing::error!(error = %e, "access log: cannot open the output; lines are dropped");
            for _ in rx {
                WRITE_ERRORS.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
    };
    while let Ok(first) = rx.recv() {
        // Write what else is waiting too, then flush once: one syscall per burst, not per line.
        let mut lines = 0;
        let mut ok = true;
        for line in std::iter::once(first).chain(rx.try_iter()) {
            ok &= out.write_all(line.as_bytes()).is_ok();
            lines += 1;
        }
        ok &= out.flush().is_ok();
        let counter = if ok { &WRITTEN } else { &WRITE_ERRORS };
        counter.fetch_add(lines, Ordering::Relaxed);
    }
}

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "access-log"
    }
    fn priority(&self) -> i32 {
        // Logs see what every other plugin did.
        10
    }
    fn build(&self, config: &serde_json::Value, cx: &BuildContext) -> Result<Built, PluginConfigError> {
        let c: Config = parse_config(config)?;
        if c.fields.is_empty() {
            return Err(PluginConfigError::new("fields", "name at least one field"));
        }
        let resolved = cx.consumers.base_dir.join(&c.path);
        let tx = writer(&c.path, resolved, c.buffer).map_err(|m| PluginConfigError::new("path", m))?;
        Ok(Built::Plugin(Arc::new(AccessLog { fields: c.fields, tx })))
    }
    fn register_metrics(&self, registry: &mut MetricsRegistry) {
        registry.register_collector(metrics::collector(|enc| {
            let n = |c: &AtomicU64| [(Vec::new(), c.load(Ordering::Relaxed))];
            metrics::counters(
                enc,
                "meshgate_access_log_dropped",
                "Access log lines dropped: the output was too slow.",
                n(&DROPPED),
            )?;
            metrics::counters(
                enc,
                "meshgate_access_log_write_errors",
                "Access log writes that failed.",
                n(&WRITE_ERRORS),
            )
        }));
    }
}

struct AccessLog {
    fields: Vec<Field>,
    tx: SyncSender<String>,
}

#[async_trait]
impl Plugin for AccessLog {
    fn phases(&self) -> Phases {
        Phases::ON_LOG
    }

    fn on_log(&self, cx: &RequestCtx) {
        let arrived = SystemTime::now() - cx.started.elapsed();
        let mut line = Map::with_capacity(self.fields.len());
        for f in &self.fields {
            if let Some(v) = f.value(cx, arrived) {
                line.insert(f.name().to_owned(), v);
            }
        }
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        match self.tx.try_send(text) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::plugin;
    use serde_json::json;

    #[test]
    fn config_errors() {
        let err = |v| plugin(&Factory, v).err().unwrap().to_string();
        assert!(err(json!({"fields": ["time", "colour"]})).starts_with("fields[1]: unknown variant `colour`"));
        assert_eq!(err(json!({"fields": []})), "fields: name at least one field");
        assert!(err(json!({"path": "/no/such/dir/access.log"})).contains("does not exist"));
    }
}
