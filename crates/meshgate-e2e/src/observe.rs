//! What tests read of the gateway's observability: a `/metrics` scrape parsed by a real
//! Prometheus text parser, and a Zipkin or OTLP collector that keeps the spans it is sent,
//! after checking them against the Zipkin v2 API's rules (`zipkin2-api.yaml`) or OpenTelemetry's
//! own model of OTLP and its HTTP conventions.

use crate::body;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// `name{label=value,…}` (labels sorted) → value of every counter, gauge and untyped sample of a
/// scrape, parsed by `prometheus-parse`. Panics when a family is described twice (a second
/// `# HELP` or `# TYPE` for a name) or a series appears twice: Prometheus rejects the whole scrape
/// for either, and `prometheus-parse` lets both pass.
pub fn scrape_values(text: &str) -> HashMap<String, f64> {
    let mut described = std::collections::HashSet::new();
    for line in text.lines() {
        let mut words = line.split(' ');
        if let (Some("#"), Some(kind @ ("HELP" | "TYPE")), Some(name)) = (words.next(), words.next(), words.next()) {
            assert!(described.insert((kind, name)), "a second {kind} line for {name}:\n{text}");
        }
    }
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("a valid Prometheus text exposition");
    let n = scrape.samples.len();
    let values: HashMap<String, f64> = scrape
        .samples
        .into_iter()
        .map(|s| {
            let mut labels: Vec<_> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            };
            (format!("{}{{{}}}", s.metric, labels.join(",")), value)
        })
        .collect();
    assert_eq!(values.len(), n, "a series appears more than once in the scrape:\n{text}");
    values
}

/// Checks a page in the Prometheus text format 0.0.4 with Prometheus' own parser and linter,
/// `promtool check metrics` (Debian package `prometheus`, installed by `scripts/test`). Panics
/// with what promtool said unless it exits 0: a parse error or any lint problem (a counter
/// without `_total`, a missing help, a non-base unit, …) fails.
pub fn promtool_check(text: &str) {
    let out = run_with_stdin("promtool", &["check", "metrics"], text);
    assert!(
        out.status.success(),
        "promtool check metrics refused the page ({}):\n{}{}\n--- page ---\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Python interpreter of the virtualenv that `scripts/test` makes, with `prometheus-client`.
const PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/e2e-venv/bin/python3");

/// Parses an OpenMetrics 1.0 page with the OpenMetrics parser of Prometheus' Python client
/// (`openmetrics_check.py`, run in the virtualenv `scripts/test` makes) and returns its families,
/// name → type. Panics with the parser's error if it refuses the page.
pub fn openmetrics_families(text: &str) -> std::collections::BTreeMap<String, String> {
    let script = include_str!("openmetrics_check.py");
    let out = run_with_stdin(PYTHON, &["-c", script], text);
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the page ({}):\n{}\n--- page ---\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the checker's JSON")
}

/// Runs `program` with `input` on its standard input. A missing program fails the test: the
/// check it makes must not be skipped.
fn run_with_stdin(program: &str, args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): scripts/test installs it"));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_owned();
    // Written from another thread, so that a child answering early cannot block both sides; a
    // child that stops reading shows in its exit status.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("wait for the child");
    let _ = writer.join();
    out
}

/// A span collector: Zipkin v2 (JSON arrays of spans POSTed to `/api/v2/spans`) or OTLP/HTTP
/// JSON (`ExportTraceServiceRequest`s POSTed to `/v1/traces`). Keeps every span and the headers
/// of every POST. Stops when dropped.
pub struct Collector {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Every span received, in arrival order. An OTLP span also gets its resource's
    /// `service.name` as `"service"`.
    pub spans: Arc<Mutex<Vec<Value>>>,
    /// The headers of every POST, in arrival order.
    pub posts: Arc<Mutex<Vec<http::HeaderMap>>>,
    otlp: bool,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    /// A Zipkin collector on a free `127.0.0.1` port, answering 202.
    pub async fn start() -> Collector {
        Collector::serve(false).await
    }

    /// An OTLP/HTTP collector on a free `127.0.0.1` port, answering 200 as OTLP asks.
    pub async fn otlp() -> Collector {
        Collector::serve(true).await
    }

    async fn serve(otlp: bool) -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let posts = Arc::new(Mutex::new(Vec::new()));
        let (kept, heads) = (spans.clone(), posts.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (kept, heads) = (kept.clone(), heads.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (kept, heads) = (kept.clone(), heads.clone());
                        async move {
                            assert_eq!(req.uri().path(), if otlp { "/v1/traces" } else { "/api/v2/spans" });
                            heads.lock().unwrap().push(req.headers().clone());
                            let bytes = req.into_body().collect().await.unwrap().to_bytes();
                            if otlp {
                                check_otlp(&bytes)
                            } else {
                                check_zipkin(&bytes)
                            }
                            let batch: Value = serde_json::from_slice(&bytes).expect("a JSON batch");
                            let spans =
                                if otlp { otlp_spans(&batch) } else { batch.as_array().expect("an array").clone() };
                            kept.lock().unwrap().extend(spans);
                            let status = if otlp { 200 } else { 202 };
                            Ok::<_, Infallible>(Response::builder().status(status).body(body::empty()).unwrap())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
                });
            }
        });
        Collector { addr, spans, posts, otlp, task }
    }

    /// Its spans endpoint.
    pub fn url(&self) -> String {
        let path = if self.otlp { "/v1/traces" } else { "/api/v2/spans" };
        format!("http://{}{path}", self.addr)
    }

    /// Waits for `n` spans of trace `trace`, sorted by start time.
    pub async fn trace(&self, trace: &str, n: usize) -> Vec<Value> {
        crate::wait_for(&format!("{n} spans of {trace}"), Duration::from_secs(5), || async {
            let mut got: Vec<Value> =
                self.spans.lock().unwrap().iter().filter(|s| s["traceId"] == trace).cloned().collect();
            got.sort_by_key(|s| {
                s["timestamp"].as_u64().or_else(|| s["startTimeUnixNano"].as_str().and_then(|t| t.parse().ok()))
            });
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

/// Checks a Zipkin v2 batch against the rules of the Zipkin API (`zipkin2-api.yaml`, `Span` and
/// `Endpoint`): only the fields it defines; ids of 16 or 32 lower-hex digits; names and service
/// names in lower case; a known kind; times in integer microseconds, durations at least 1;
/// endpoints with real addresses and non-zero ports; tags as strings.
fn check_zipkin(bytes: &[u8]) {
    let batch: Vec<Value> = serde_json::from_slice(bytes).expect("a JSON array of spans");
    let lower_hex = |v: &Value, lens: &[usize]| {
        v.as_str().is_some_and(|s| {
            lens.contains(&s.len())
                && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                && s.bytes().any(|b| b != b'0')
        })
    };
    let lower = |v: &Value| v.as_str().is_some_and(|s| !s.is_empty() && s == s.to_lowercase());
    let endpoint = |e: &Value| {
        let e = e.as_object().expect("an endpoint object");
        for (k, v) in e {
            match k.as_str() {
                "serviceName" => assert!(lower(v), "serviceName in lower case: {v}"),
                "ipv4" => assert!(v.as_str().unwrap().parse::<std::net::Ipv4Addr>().is_ok(), "{v}"),
                "ipv6" => assert!(v.as_str().unwrap().parse::<std::net::Ipv6Addr>().is_ok(), "{v}"),
                "port" => assert!((1..=65535).contains(&v.as_u64().unwrap()), "{v}"),
                _ => panic!("not an Endpoint field: {k}"),
            }
        }
    };
    for span in &batch {
        for (k, v) in span.as_object().expect("a span object") {
            match k.as_str() {
                "traceId" => assert!(lower_hex(v, &[16, 32]), "traceId {v}"),
                "id" | "parentId" => assert!(lower_hex(v, &[16]), "{k} {v}"),
                "name" => assert!(lower(v), "a span name in lower case: {v}"),
                "kind" => assert!(["CLIENT", "SERVER", "PRODUCER", "CONSUMER"].contains(&v.as_str().unwrap()), "{v}"),
                "timestamp" => assert!(v.is_u64(), "{v}"),
                "duration" => assert!(v.as_u64().is_some_and(|d| d >= 1), "{v}"),
                "debug" | "shared" => assert!(v.is_boolean()),
                "localEndpoint" | "remoteEndpoint" => endpoint(v),
                "tags" => assert!(v.as_object().unwrap().values().all(Value::is_string), "tags are strings: {v}"),
                "annotations" => assert!(v.is_array()),
                _ => panic!("not a Span field: {k}"),
            }
        }
        assert!(span.get("traceId").is_some() && span.get("id").is_some(), "required: {span}");
    }
}

/// Reads an OTLP batch through OpenTelemetry's own model of it (`opentelemetry-proto`, with
/// its JSON mapping) and checks what a collector needs of every span: a misnamed or mistyped
/// field would be missing there. Then the HTTP semantic conventions: the attributes they
/// require of a SERVER and a CLIENT span, a known method or `_OTHER`, the span name, and
/// `error.type` on a span whose status is Error.
fn check_otlp(bytes: &[u8]) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    let req: ExportTraceServiceRequest = serde_json::from_slice(bytes).expect("an OTLP ExportTraceServiceRequest");
    assert!(!req.resource_spans.is_empty());
    for rs in &req.resource_spans {
        let resource = rs.resource.as_ref().expect("a resource");
        assert!(resource.attributes.iter().any(|kv| kv.key == "service.name"), "service.name");
        for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
            assert_eq!((span.trace_id.len(), span.span_id.len()), (16, 8), "{span:?}");
            assert!(span.parent_span_id.is_empty() || span.parent_span_id.len() == 8, "{span:?}");
            assert!(!span.name.is_empty() && (span.kind == 2 || span.kind == 3), "{span:?}");
            assert!(span.start_time_unix_nano > 0 && span.end_time_unix_nano > span.start_time_unix_nano, "{span:?}");
            assert!(
                span.attributes
                    .iter()
                    .all(|kv| !kv.key.is_empty() && kv.value.as_ref().is_some_and(|v| v.value.is_some()))
            );
            let get =
                |key: &str| span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.clone()?.value);
            let string = |key: &str| match get(key) {
                Some(Any::StringValue(s)) => s,
                other => panic!("{key}: a string attribute, not {other:?}: {span:?}"),
            };
            let required: &[&str] = if span.kind == 2 {
                &["http.request.method", "url.path", "url.scheme"]
            } else {
                &["http.request.method", "server.address", "server.port", "url.full"]
            };
            for key in required {
                assert!(get(key).is_some(), "{key} is required: {span:?}");
            }
            let method = string("http.request.method");
            let known = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"];
            assert!(known.contains(&method.as_str()) || method == "_OTHER", "{method}");
            let named = if method == "_OTHER" { "HTTP" } else { &method };
            assert!(span.name == named || span.name.starts_with(&format!("{named} ")), "{}: {span:?}", span.name);
            if span.kind == 2 {
                assert!(["http", "https"].contains(&string("url.scheme").as_str()));
            } else {
                assert!(matches!(get("server.port"), Some(Any::IntValue(1..=65535))));
            }
            if span.status.as_ref().is_some_and(|s| s.code == 2) {
                assert!(get("error.type").is_some(), "an error has its error.type: {span:?}");
            }
        }
    }
}

/// The spans of an OTLP `ExportTraceServiceRequest`, each with its resource's `service.name`.
fn otlp_spans(batch: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for resource in batch["resourceSpans"].as_array().expect("resourceSpans") {
        let service = resource["resource"]["attributes"]
            .as_array()
            .and_then(|a| a.iter().find(|kv| kv["key"] == "service.name"))
            .map(|kv| kv["value"]["stringValue"].clone())
            .unwrap_or(Value::Null);
        for scope in resource["scopeSpans"].as_array().expect("scopeSpans") {
            for span in scope["spans"].as_array().expect("spans") {
                let mut span = span.clone();
                span["service"] = service.clone();
                out.push(span);
            }
        }
    }
    out
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::scrape_values;

    #[test]
    fn reads_a_scrape() {
        let m = scrape_values("# HELP a_total A.\n# TYPE a_total counter\na_total{k=\"v\"} 2\n");
        assert_eq!(m["a_total{k=v}"], 2.0);
    }

    #[test]
    #[should_panic(expected = "a second HELP line for t_total")]
    fn a_family_described_twice_fails() {
        let once = "# HELP t_total T.\n# TYPE t_total counter\nt_total{p=\"a\"} 1\n";
        scrape_values(&format!("{once}{}", once.replace("\"a\"", "\"b\"")));
    }

    #[test]
    #[should_panic(expected = "a series appears more than once")]
    fn a_series_written_twice_fails() {
        scrape_values("# HELP g G.\n# TYPE g gauge\ng 1\ng 2\n");
    }
}
