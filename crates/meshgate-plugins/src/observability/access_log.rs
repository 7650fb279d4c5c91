//! `access-log`: one JSON object per request, written by a thread of its own so that a slow
//! disk (or a stalled pipe) never slows a request. Lines wait in a bounded lock-free queue
//! ([`handoff`](super::handoff)); when it is full they are dropped and counted
//! (`meshgate_access_log_dropped_total`), never waited for. The writer wakes every 50 ms (or
//! early when half the queue is used) and writes what waits in one system call.
//!
//! Every instance writing to the same path shares one writer, so lines never interleave; when a
//! reload removes the last instance naming a path, its writer finishes and ends.
//!
//! Lines are written field by field into one buffer: building a `serde_json::Value` map per
//! request cost more than the rest of the plugin.

use super::handoff::{self, Batch, Handoff};
use super::json;
use meshgate_core::metrics::{self, MetricsRegistry};
use meshgate_core::{
    BuildContext, Built, Phases, Plugin, PluginConfigError, PluginFactory, RequestCtx, RequestId, async_trait,
    parse_config,
};
use serde::Deserialize;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

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
    /// Request body bytes received from the client.
    RequestBytes,
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
    /// The trace id, when the `tracing` plugin runs on the request (sampled or not).
    TraceId,
}

impl Field {
    const ALL: [Field; 15] = [
        Field::Time,
        Field::Route,
        Field::Service,
        Field::Consumer,
        Field::ClientIp,
        Field::Method,
        Field::Path,
        Field::Status,
        Field::RequestBytes,
        Field::ResponseBytes,
        Field::DurationMs,
        Field::UpstreamMs,
        Field::Upstream,
        Field::RequestId,
        Field::TraceId,
    ];

    /// `,"name":`, the field's key as written after another member (the first drops the comma).
    fn key(self) -> &'static Key {
        match self {
            Field::Time => &const { Key::new(b",\"time\":") },
            Field::Route => &const { Key::new(b",\"route\":") },
            Field::Service => &const { Key::new(b",\"service\":") },
            Field::Consumer => &const { Key::new(b",\"consumer\":") },
            Field::ClientIp => &const { Key::new(b",\"client_ip\":") },
            Field::Method => &const { Key::new(b",\"method\":") },
            Field::Path => &const { Key::new(b",\"path\":") },
            Field::Status => &const { Key::new(b",\"status\":") },
            Field::RequestBytes => &const { Key::new(b",\"request_bytes\":") },
            Field::ResponseBytes => &const { Key::new(b",\"response_bytes\":") },
            Field::DurationMs => &const { Key::new(b",\"duration_ms\":") },
            Field::UpstreamMs => &const { Key::new(b",\"upstream_ms\":") },
            Field::Upstream => &const { Key::new(b",\"upstream\":") },
            Field::RequestId => &const { Key::new(b",\"request_id\":") },
            Field::TraceId => &const { Key::new(b",\"trace_id\":") },
        }
    }

    /// Appends `"name":value` for this request; a field without a value is left out.
    fn write(self, line: &mut Line, cx: &RequestCtx, arrived: SystemTime, elapsed: Duration) {
        let response = cx.response.as_ref();
        match self {
            Field::Time => line.time(self, arrived),
            Field::Route => line.shared(self, Slot::Route, cx.route.as_ref().map(|r| &r.name)),
            Field::Service => line.shared(self, Slot::Service, cx.route.as_ref().map(|r| &r.service)),
            Field::Consumer => line.opt_str(self, cx.auth.as_ref().map(|a| &*a.consumer.username)),
            Field::ClientIp => {
                line.key(self);
                json::ip(&mut line.buf, cx.client_addr.ip());
            }
            Field::Method => line.str(self, cx.request.method.as_str()),
            Field::Path => line.str(self, cx.request.uri.path()),
            Field::Status => line.opt_num(self, response.map(|r| u64::from(r.status.as_u16()))),
            Field::RequestBytes => line.opt_num(self, response.map(|r| r.request_bytes)),
            Field::ResponseBytes => line.opt_num(self, response.map(|r| r.body_bytes)),
            Field::DurationMs => line.ms(self, elapsed),
            Field::UpstreamMs => {
                if let Some(d) = cx.upstream_time {
                    line.ms(self, d)
                }
            }
            Field::Upstream => line.shared(self, Slot::Upstream, cx.upstream()),
            Field::RequestId => line.opt_str(self, cx.vars.get::<RequestId>().and_then(|id| id.0.to_str().ok())),
            Field::TraceId => {
                if let Some(t) = cx.trace {
                    line.key(self);
                    line.buf.push(b'"');
                    json::hex(&mut line.buf, t.trace_id.value, if t.trace_id.short { 16 } else { 32 });
                    line.buf.push(b'"');
                }
            }
        }
    }
}

/// A field's key, `,"name":`, padded to a fixed size.
struct Key {
    padded: [u8; 32],
    len: usize,
}

impl Key {
    const fn new(key: &[u8]) -> Key {
        let mut padded = [0; 32];
        let mut i = 0;
        while i < key.len() {
            padded[i] = key[i];
            i += 1;
        }
        Key { padded, len: key.len() }
    }
}

/// A JSON object being written, one member at a time.
struct Line {
    buf: Vec<u8>,
}

/// The strings lines repeat, remembered per thread with their JSON; see [`Line::shared`].
#[derive(Clone, Copy)]
enum Slot {
    Route,
    Service,
    Upstream,
}

/// A string and its JSON. Holding the `Arc` keeps its address from being reused while it is
/// remembered.
type Remembered = Option<(Arc<str>, Vec<u8>)>;

thread_local! {
    /// The last route name, service name and upstream target written on this thread.
    static SHARED: std::cell::RefCell<[Remembered; 3]> = const { std::cell::RefCell::new([None, None, None]) };
}

impl Line {
    #[inline]
    fn key(&mut self, f: Field) {
        let key = f.key();
        let at = self.buf.len();
        // All 32 bytes, then the key's length kept: a copy of a known size is a few moves, one
        // of a varying size a call (and keys are most of a line's writes).
        self.buf.extend_from_slice(&key.padded);
        self.buf.truncate(at + key.len);
        if at == 0 {
            self.buf[0] = b'{';
        }
    }
    fn str(&mut self, f: Field, v: &str) {
        self.key(f);
        json::string(&mut self.buf, v);
    }
    fn opt_str(&mut self, f: Field, v: Option<&str>) {
        if let Some(v) = v {
            self.str(f, v);
        }
    }
    /// A string most lines repeat (a route's name, a target): its JSON is written once per
    /// thread and copied while the same string (by address) comes again. Checking each string
    /// for characters to escape was a good part of a line's cost.
    fn shared(&mut self, f: Field, slot: Slot, v: Option<&Arc<str>>) {
        let Some(v) = v else { return };
        self.key(f);
        SHARED.with_borrow_mut(|memo| match &mut memo[slot as usize] {
            Some((last, json)) if Arc::ptr_eq(last, v) => self.buf.extend_from_slice(json),
            other => {
                let start = self.buf.len();
                json::string(&mut self.buf, v);
                *other = Some((v.clone(), self.buf[start..].to_vec()));
            }
        });
    }
    /// RFC 3339 in UTC with milliseconds. The text up to the second is kept per thread: many
    /// lines share it, and formatting a date is a good part of a line's cost.
    fn time(&mut self, f: Field, t: SystemTime) {
        thread_local! {
            static SECOND: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
        }
        let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        self.key(f);
        SECOND.with_borrow_mut(|(at, text)| {
            if *at != secs {
                // "2026-11-26T07:17:20.000Z" without its ".000Z".
                let full =
                    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_secs(secs)).to_string();
                *text = full.trim_end_matches(".000Z").to_owned();
                *at = secs;
            }
            self.buf.push(b'"');
            self.buf.extend_from_slice(text.as_bytes());
        });
        let ms = since.subsec_millis();
        let digit = |n: u32| b'0' + (n % 10) as u8;
        self.buf.extend_from_slice(&[b'.', digit(ms / 100), digit(ms / 10), digit(ms), b'Z', b'"']);
    }
    fn opt_num(&mut self, f: Field, v: Option<u64>) {
        if let Some(v) = v {
            self.key(f);
            json::number(&mut self.buf, v);
        }
    }
    /// Milliseconds with three decimals (microsecond precision).
    fn ms(&mut self, f: Field, d: Duration) {
        self.key(f);
        json::thousandths(&mut self.buf, d.as_micros() as u64);
    }
}

/// One writer thread per output, shared by every instance that names it; see [`handoff`].
static WRITERS: handoff::Registry<Vec<u8>> = Mutex::new(None);

/// How often a writer wakes to write what waits.
const WRITE_INTERVAL: Duration = Duration::from_millis(50);

type Open = Box<dyn FnOnce() -> std::io::Result<Box<dyn Write + Send>> + Send>;

fn writer(path: &str, resolved: std::path::PathBuf, buffer: usize) -> Result<Arc<Handoff<Vec<u8>>>, String> {
    handoff::shared(&WRITERS, path, || {
        let open: Open = match path {
            "stdout" => Box::new(|| Ok(Box::new(std::io::stdout()) as Box<dyn Write + Send>)),
            "stderr" => Box::new(|| Ok(Box::new(std::io::stderr()) as Box<dyn Write + Send>)),
            _ => {
                if let Some(dir) = resolved.parent().filter(|d| !d.as_os_str().is_empty())
                    && !dir.is_dir()
                {
                    return Err(format!("directory {} does not exist", dir.display()));
                }
                // Opened by the writer thread: opening a stalled pipe must not block the config load.
                Box::new(move || {
                    let f = std::fs::OpenOptions::new().create(true).append(true).open(&resolved)?;
                    Ok(Box::new(f) as Box<dyn Write + Send>)
                })
            }
        };
        let mut output = Output::Closed(Some(open));
        let mut chunk = Vec::new();
        handoff::spawn("meshgate-access-log", buffer, buffer / 2, WRITE_INTERVAL, move |batch: &Batch<'_, Vec<u8>>| {
            // Open first: an output that blocks opening (a hung disk, a pipe nobody reads) must
            // leave the lines in the bounded queue, where the overflow is dropped and counted.
            output.open();
            let mut lines = 0;
            while let Some(line) = batch.pop() {
                chunk.extend_from_slice(&line);
                lines += 1;
            }
            if lines > 0 {
                output.write(&chunk, lines);
                chunk.clear();
            }
        })
        .map_err(|e| format!("cannot start the log writer: {e}"))
    })
}

/// A writer's output, opened at the first write (on the writer's thread).
enum Output {
    Closed(Option<Open>),
    Open(Box<dyn Write + Send>),
    Failed,
}

impl Output {
    /// Writes whole lines in one call, so that two writers appending to one file (for a moment
    /// after a reload) never split each other's lines.
    fn write(&mut self, chunk: &[u8], lines: u64) {
        self.open();
        let ok = match self {
            Output::Open(w) => w.write_all(chunk).and_then(|()| w.flush()).is_ok(),
            _ => false,
        };
        let counter = if ok { &WRITTEN } else { &WRITE_ERRORS };
        counter.fetch_add(lines, Ordering::Relaxed);
    }

    /// Opens the output the first time; after a failure, stays failed.
    fn open(&mut self) {
        if let Output::Closed(open) = self {
            *self = match open.take().map(|open| open()) {
                Some(Ok(w)) => Output::Open(w),
                Some(Err(e)) => {
                    tracing::error!(error = %e, "access log: cannot open the output; lines are dropped");
                    Output::Failed
                }
                None => Output::Failed,
            };
        }
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
        if c.buffer == 0 {
            return Err(PluginConfigError::new("buffer", "must be at least 1"));
        }
        let out = writer(&c.path, resolved, c.buffer).map_err(|m| PluginConfigError::new("path", m))?;
        Ok(Built::Plugin(Arc::new(AccessLog { fields: c.fields, out })))
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
    out: Arc<Handoff<Vec<u8>>>,
}

#[async_trait]
impl Plugin for AccessLog {
    fn phases(&self) -> Phases {
        Phases::ON_LOG
    }

    fn on_log(&self, cx: &RequestCtx) {
        let ended = cx.ended();
        let elapsed = ended.at.saturating_duration_since(cx.started);
        let arrived = ended.arrived;
        let mut line = Line { buf: Vec::with_capacity(320) };
        for f in &self.fields {
            f.write(&mut line, cx, arrived, elapsed);
        }
        line.buf.extend_from_slice(b"}\n");
        if self.out.push(line.buf).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::plugin;
    use meshgate_core::TraceIds;
    use serde_json::json;

    #[test]
    fn every_field_as_json() {
        use meshgate_core::{ResponseInfo, RouteInfo, TraceId};
        let mut cx = crate::testing::request("/items/a%22b?key=secret", &[]);
        cx.route = Some(RouteInfo { name: "items \"v2\"".into(), service: "inventory".into() });
        crate::testing::begin_attempt(&mut cx, "10.0.0.7:8080", "/items/a%22b");
        cx.upstream_time = Some(Duration::from_micros(1_234));
        cx.response = Some(ResponseInfo { status: http::StatusCode::CREATED, body_bytes: 42, request_bytes: 7 });
        cx.trace = Some(TraceIds {
            trace_id: TraceId { value: 0xabc, short: true },
            span_id: 1,
            parent_id: None,
            sampled: false,
            debug: false,
            forms: 0,
        });
        let arrived = std::time::UNIX_EPOCH + Duration::from_millis(1_764_134_400_045);
        let mut line = Line { buf: Vec::new() };
        for f in Field::ALL {
            f.write(&mut line, &cx, arrived, Duration::from_micros(2_500));
        }
        line.buf.push(b'}');
        let v: serde_json::Value = serde_json::from_slice(&line.buf).unwrap();
        assert_eq!(v["time"], "2025-11-26T05:20:00.045Z");
        assert_eq!((&v["route"], &v["service"]), (&json!("items \"v2\""), &json!("inventory")));
        assert_eq!((&v["method"], &v["path"], &v["status"]), (&json!("GET"), &json!("/items/a%22b"), &json!(201)));
        assert_eq!((&v["request_bytes"], &v["response_bytes"]), (&json!(7), &json!(42)));
        assert_eq!((&v["upstream_ms"], &v["upstream"]), (&json!(1.234), &json!("10.0.0.7:8080")));
        assert_eq!((&v["client_ip"], &v["trace_id"]), (&json!("127.0.0.1"), &json!("0000000000000abc")));
        assert_eq!(v["duration_ms"], json!(2.5));
        assert!(v.get("consumer").is_none() && v.get("request_id").is_none(), "fields without a value are left out");
        // Repeated strings come from the per-thread memory, a new one is written afresh.
        for name in ["items \"v2\"", "other"] {
            cx.route = Some(RouteInfo { name: name.into(), service: "inventory".into() });
            for _ in 0..2 {
                let mut line = Line { buf: Vec::new() };
                Field::Route.write(&mut line, &cx, arrived, Duration::ZERO);
                Field::Upstream.write(&mut line, &cx, arrived, Duration::ZERO);
                line.buf.push(b'}');
                let v: serde_json::Value = serde_json::from_slice(&line.buf).unwrap();
                assert_eq!((&v["route"], &v["upstream"]), (&json!(name), &json!("10.0.0.7:8080")));
            }
        }
        // The per-thread date text follows the clock across seconds.
        let mut line = Line { buf: Vec::new() };
        line.time(Field::Time, arrived + Duration::from_secs(61));
        assert_eq!(String::from_utf8(line.buf).unwrap(), "{\"time\":\"2025-11-26T05:21:01.045Z\"");
    }

    #[test]
    fn config_errors() {
        let err = |v| plugin(&Factory, v).err().unwrap().to_string();
        assert!(err(json!({"fields": ["time", "colour"]})).starts_with("fields[1]: unknown variant `colour`"));
        assert_eq!(err(json!({"fields": []})), "fields: name at least one field");
        assert!(err(json!({"path": "/no/such/dir/access.log"})).contains("does not exist"));
    }
}
