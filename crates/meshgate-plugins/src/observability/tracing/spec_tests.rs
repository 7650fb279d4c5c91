//! The propagation specs' cases as tables, run through the plugin's phases: what a request
//! brings in, and what the upstream is sent.
//!
//! W3C Trace Context (Level 1, and Level 2's random flag): the cases of the W3C test suite
//! (`w3c/trace-context`, `test/test.py`) that apply to a proxy, written in our own words and
//! values, grouped as the suite groups them; a few more from the spec's text. B3
//! (`openzipkin/b3-propagation`, README): multi-header, single header, and both. What the
//! upstream got is read here by splitting the header text, not by the plugin's own parser.

use super::tests::{tracer, upstream_parts};
use crate::testing::request;
use meshgate_core::Plugin;

/// A trace id and a parent id a caller sends, and another trace.
const T: &str = "5ce0e9a56015fec5aadfa328ae398115";
const P: &str = "ab42124a3c573678";
const T2: &str = "0d2d5b0a8c6b4e7f9a1c3e5f7b9d1f3a";
/// A 64-bit B3 trace id.
const T16: &str = "aadfa328ae398115";

/// The headers the upstream is sent for a request bringing `headers`, through a tracer reading
/// `[b3, w3c]` with `inject: preserve` and `sampling: 0` (so a trace that starts here is
/// unsampled, and an incoming decision shows).
async fn forward(t: &super::Tracing, headers: &[(&str, &str)]) -> http::HeaderMap {
    let mut cx = request("/", headers);
    t.on_request(&mut cx).await;
    crate::testing::begin_attempt(&mut cx, "10.0.0.1:80", "/");
    let mut parts = upstream_parts(&cx);
    t.before_upstream(&mut cx, &mut parts).await;
    parts.headers
}

/// The one `traceparent` sent: trace id, parent id and flags, checked against the grammar.
fn traceparent(h: &http::HeaderMap) -> (String, String, String) {
    let all: Vec<_> = h.get_all("traceparent").iter().collect();
    assert_eq!(all.len(), 1, "one traceparent: {all:?}");
    let v = all[0].to_str().unwrap();
    let f: Vec<&str> = v.split('-').collect();
    let lower_hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    assert!(f.len() == 4 && f[0] == "00" && lower_hex(f[1], 32) && lower_hex(f[2], 16) && lower_hex(f[3], 2), "{v}");
    assert!(f[1] != "0".repeat(32) && f[2] != "0".repeat(16), "{v}");
    (f[1].to_owned(), f[2].to_owned(), f[3].to_owned())
}

/// The `tracestate` sent, as the W3C suite reads it: one header, its members with the optional
/// whitespace around them removed, empty ones left out.
fn tracestate(h: &http::HeaderMap) -> Option<String> {
    let all: Vec<_> = h.get_all("tracestate").iter().collect();
    assert!(all.len() <= 1, "tracestate is sent as one header: {all:?}");
    let v = all.first()?.to_str().unwrap();
    let members: Vec<&str> = v.split(',').map(|m| m.trim_matches([' ', '\t'])).filter(|m| !m.is_empty()).collect();
    assert!(!members.is_empty(), "an empty tracestate is not sent: {v:?}");
    Some(members.join(","))
}

/// What a W3C case must do.
#[derive(Clone, Copy, Debug)]
enum W3c {
    /// The caller's trace `T` goes on, with a new parent id and these flags.
    Continue(&'static str),
    /// The context is invalid: a new trace starts (unsampled, random: flags `02`).
    Restart,
    /// Another context is read first: its trace goes on, with these flags.
    Other(&'static str, &'static str),
}

/// A request's headers.
type Headers = Vec<(&'static str, String)>;

/// Runs W3C cases: `(name, headers, outcome, tracestate sent)`.
async fn w3c_cases(cases: &[(&str, Headers, W3c, Option<&str>)]) {
    let (t, _rx) = tracer(0.0);
    let mut failed = Vec::new();
    for (name, headers, want, state) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let sent = forward(&t, &headers).await;
        let check = || {
            let (trace, parent, flags) = traceparent(&sent);
            match want {
                W3c::Continue(f) => {
                    assert_eq!(trace, T, "{name}: the trace goes on");
                    assert_ne!(parent, P, "{name}: with our span as the parent");
                    assert_eq!(flags, *f, "{name}: flags");
                }
                W3c::Restart => {
                    assert!(trace != T && trace != T2, "{name}: a new trace, not {trace}");
                    assert_eq!(flags, "02", "{name}: a new trace: unsampled here, its id random");
                }
                W3c::Other(other, f) => assert_eq!((trace.as_str(), flags.as_str()), (*other, *f), "{name}"),
            }
            assert_eq!(tracestate(&sent).as_deref(), *state, "{name}: tracestate");
        };
        if std::panic::catch_unwind(check).is_err() {
            failed.push(*name);
        }
    }
    assert!(failed.is_empty(), "cases that failed: {failed:#?}");
}

/// `traceparent` with `value`, and the other headers of a case.
fn tp(value: impl Into<String>) -> Headers {
    vec![("traceparent", value.into())]
}

/// A valid unsampled `traceparent` with `tracestate` headers.
fn with_state(states: &[&str]) -> Headers {
    let mut h = tp(format!("00-{T}-{P}-00"));
    h.extend(states.iter().map(|s| ("tracestate", (*s).to_owned())));
    h
}

#[tokio::test]
async fn w3c_traceparent() {
    use W3c::{Continue, Restart};
    let ok = |version: &str, flags: &str| format!("{version}-{T}-{P}-{flags}");
    let z32 = "0".repeat(32);
    let z16 = "0".repeat(16);
    w3c_cases(&[
        // The header, its name and how many.
        ("no context: a new trace", vec![], Restart, None),
        ("a valid context, sampled", tp(ok("00", "01")), Continue("01"), None),
        ("a valid context, not sampled", tp(ok("00", "00")), Continue("00"), None),
        ("two traceparent headers", [tp(ok("00", "01")), tp(format!("00-{T2}-{P}-01"))].concat(), Restart, None),
        ("the same traceparent twice", [tp(ok("00", "01")), tp(ok("00", "01"))].concat(), Restart, None),
        ("a misnamed header: trace-parent", vec![("trace-parent", ok("00", "01"))], Restart, None),
        ("a misnamed header: trace.parent", vec![("trace.parent", ok("00", "01"))], Restart, None),
        // Version.
        ("version 00 with a character more", tp(ok("00", "01.")), Restart, None),
        ("version 00 with a field more", tp(ok("00", "01-and-more")), Restart, None),
        ("a later version (0xcc)", tp(ok("cc", "01")), Continue("01"), None),
        ("a later version with fields more", tp(ok("cc", "01-and-more")), Continue("01"), None),
        ("a later version, more without a dash", tp(ok("cc", "01.and-more")), Restart, None),
        ("a later version, shorter than 55", tp(format!("cc-{T}-{P}-0")), Restart, None),
        ("version ff", tp(ok("ff", "01")), Restart, None),
        ("version with a non-hex character first", tp(ok(".0", "01")), Restart, None),
        ("version with a non-hex character last", tp(ok("0.", "01")), Restart, None),
        ("version in upper case", tp(ok("0A", "01")), Restart, None),
        ("version of 3 digits", tp(ok("000", "01")), Restart, None),
        ("version of 4 digits", tp(ok("0000", "01")), Restart, None),
        ("version of 1 digit", tp(ok("0", "01")), Restart, None),
        // Trace id.
        ("trace id all zero", tp(format!("00-{z32}-{P}-01")), Restart, None),
        ("trace id with a non-hex character first", tp(format!("00-.{}-{P}-01", &T[1..])), Restart, None),
        ("trace id with a non-hex character last", tp(format!("00-{}.-{P}-01", &T[..31])), Restart, None),
        ("trace id of 33 digits", tp(format!("00-{T}a-{P}-01")), Restart, None),
        ("trace id of 31 digits", tp(format!("00-{}-{P}-01", &T[1..])), Restart, None),
        ("trace id in upper case", tp(format!("00-{}-{P}-01", T.to_uppercase())), Restart, None),
        // Parent id.
        ("parent id all zero", tp(format!("00-{T}-{z16}-01")), Restart, None),
        ("parent id with a non-hex character first", tp(format!("00-{T}-.{}-01", &P[1..])), Restart, None),
        ("parent id with a non-hex character last", tp(format!("00-{T}-{}.-01", &P[..15])), Restart, None),
        ("parent id of 17 digits", tp(format!("00-{T}-{P}a-01")), Restart, None),
        ("parent id of 15 digits", tp(format!("00-{T}-{}-01", &P[1..])), Restart, None),
        ("parent id in upper case", tp(format!("00-{T}-{}-01", P.to_uppercase())), Restart, None),
        // Flags.
        ("flags with a non-hex character first", tp(ok("00", ".0")), Restart, None),
        ("flags with a non-hex character last", tp(ok("00", "0.")), Restart, None),
        ("flags of 3 digits", tp(ok("00", "001")), Restart, None),
        ("flags of 1 digit", tp(ok("00", "1")), Restart, None),
        ("flags in upper case", tp(ok("00", "0B")), Restart, None),
        // Optional whitespace around the value.
        ("a space before", tp(format!(" {}", ok("00", "01"))), Continue("01"), None),
        ("a tab before", tp(format!("\t{}", ok("00", "01"))), Continue("01"), None),
        ("a space after", tp(format!("{} ", ok("00", "01"))), Continue("01"), None),
        ("a tab after", tp(format!("{}\t", ok("00", "01"))), Continue("01"), None),
        ("tabs and spaces around", tp(format!("\t {} \t", ok("00", "01"))), Continue("01"), None),
        // Level 2: the random-trace-id flag goes on with the trace; flags not defined go as 0.
        ("the random flag", tp(ok("00", "02")), Continue("02"), None),
        ("sampled and random", tp(ok("00", "03")), Continue("03"), None),
        ("an undefined flag is not passed on", tp(ok("00", "05")), Continue("01"), None),
        ("every flag set", tp(ok("00", "ff")), Continue("03"), None),
    ])
    .await;
}

#[tokio::test]
async fn w3c_tracestate() {
    use W3c::{Continue, Restart};
    let many = |from: usize, to: usize| (from..=to).map(|i| format!("k{i:02}={i:02}")).collect::<Vec<_>>().join(",");
    let first_32 = [many(1, 10), many(11, 20), many(21, 30), many(31, 32)];
    let first_33 = [many(1, 10), many(11, 20), many(21, 30), many(31, 33)];
    let key_chars = "abcdefghijklmnopqrstuvwxyz0123456789_-*/";
    let value_chars: String =
        (0x20u8..=0x7e).filter(|b| *b != b',' && *b != b'=').map(char::from).collect::<String>() + "x";
    let all_chars = format!("{key_chars}={value_chars}");
    let vendor_chars = format!("{key_chars}@a-z0-9_-*/={value_chars}");
    let key = |k: String| format!("{k}=1");
    let (k256, k257) = (key("z".repeat(256)), key("z".repeat(257)));
    let (tenant241, tenant242, system15) = (
        key(format!("{}@{}", "t".repeat(241), "v".repeat(14))),
        key(format!("{}@v", "t".repeat(242))),
        key(format!("t@{}", "v".repeat(15))),
    );
    let (v256, v257) = (format!("k={}", "v".repeat(256)), format!("k={}", "v".repeat(257)));
    let b3 = |trace: &str| ("b3", format!("{trace}-{P}-1"));
    w3c_cases(&[
        // With and without a valid traceparent.
        ("tracestate without traceparent", vec![("tracestate", "foo=1".into())], Restart, None),
        (
            "tracestate with traceparent",
            with_state(&["rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"]),
            Continue("00"),
            Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
        ),
        (
            "an invalid traceparent restarts the trace",
            [tp(format!("00-{}-{P}-01", "0".repeat(32))), vec![("tracestate", "foo=1".into())]].concat(),
            Restart,
            None,
        ),
        (
            "two traceparents restart the trace",
            [tp(format!("00-{T}-{P}-01")), tp(format!("00-{T2}-{P}-01")), vec![("tracestate", "foo=1".into())]]
                .concat(),
            Restart,
            None,
        ),
        (
            "a misnamed header: trace-state",
            [tp(format!("00-{T}-{P}-00")), vec![("trace-state", "foo=1".into())]].concat(),
            Continue("00"),
            None,
        ),
        (
            "a misnamed header: trace.state",
            [tp(format!("00-{T}-{P}-00")), vec![("trace.state", "foo=1".into())]].concat(),
            Continue("00"),
            None,
        ),
        // Empty headers, several headers.
        ("an empty tracestate", with_state(&[""]), Continue("00"), None),
        ("only optional whitespace and commas", with_state(&[" , \t,"]), Continue("00"), None),
        ("an empty header after one", with_state(&["foo=1", ""]), Continue("00"), Some("foo=1")),
        ("an empty header before one", with_state(&["", "foo=1"]), Continue("00"), Some("foo=1")),
        (
            "several headers, combined in order",
            with_state(&["a=1,b=2", "c=3,d=4", "e=5"]),
            Continue("00"),
            Some("a=1,b=2,c=3,d=4,e=5"),
        ),
        ("duplicated keys in one header", with_state(&["foo=1,foo=2"]), Continue("00"), Some("foo=1,foo=2")),
        ("the same member twice in one header", with_state(&["foo=1,foo=1"]), Continue("00"), Some("foo=1,foo=1")),
        ("the same member in two headers", with_state(&["foo=1", "foo=1"]), Continue("00"), Some("foo=1,foo=1")),
        ("duplicated keys in two headers", with_state(&["foo=1", "foo=2"]), Continue("00"), Some("foo=1,foo=2")),
        // Characters.
        ("every character a key and a value may have", with_state(&[&all_chars]), Continue("00"), Some(&all_chars)),
        ("the same with a vendor after @", with_state(&[&vendor_chars]), Continue("00"), Some(&vendor_chars)),
        (
            "optional whitespace between members",
            with_state(&["foo=1 \t , \t bar=2, \t baz=3"]),
            Continue("00"),
            Some("foo=1,bar=2,baz=3"),
        ),
        (
            "tabs and spaces between members",
            with_state(&["foo=1\t \t,\t \tbar=2,\t \tbaz=3"]),
            Continue("00"),
            Some("foo=1,bar=2,baz=3"),
        ),
        ("a space before the list", with_state(&[" foo=1"]), Continue("00"), Some("foo=1")),
        ("a tab before the list", with_state(&["\tfoo=1"]), Continue("00"), Some("foo=1")),
        ("a space after the list", with_state(&["foo=1 "]), Continue("00"), Some("foo=1")),
        ("a tab after the list", with_state(&["foo=1\t"]), Continue("00"), Some("foo=1")),
        ("tabs and spaces around the list", with_state(&["\t foo=1 \t"]), Continue("00"), Some("foo=1")),
        ("a value starting with a space", with_state(&["foo= 1"]), Continue("00"), Some("foo= 1")),
        ("a space before =", with_state(&["foo =1"]), Continue("00"), None),
        ("a key in upper case", with_state(&["FOO=1"]), Continue("00"), None),
        ("a dot in a key", with_state(&["foo.bar=1"]), Continue("00"), None),
        ("a key ending in @", with_state(&["foo@=1,bar=2"]), Continue("00"), Some("foo@=1,bar=2")),
        ("a key starting with @ drops the whole list", with_state(&["@foo=1,bar=2"]), Continue("00"), None),
        ("a key with @@", with_state(&["foo@@bar=1,bar=2"]), Continue("00"), Some("foo@@bar=1,bar=2")),
        ("a key with two @", with_state(&["foo@bar@baz=1,bar=2"]), Continue("00"), Some("foo@bar@baz=1,bar=2")),
        ("a value with =", with_state(&["foo=bar=baz"]), Continue("00"), None),
        ("an empty value drops the whole list", with_state(&["foo=,bar=3"]), Continue("00"), None),
        ("a member without =", with_state(&["foo,bar=3"]), Continue("00"), None),
        ("a tab inside a value", with_state(&["foo=a\tb"]), Continue("00"), None),
        // Limits.
        (
            "32 members over four headers",
            with_state(&first_32.each_ref().map(String::as_str)),
            Continue("00"),
            Some(&many(1, 32)),
        ),
        ("33 members drop the whole list", with_state(&first_33.each_ref().map(String::as_str)), Continue("00"), None),
        ("a key of 256 characters", with_state(&["foo=1", &k256]), Continue("00"), Some(&format!("foo=1,{k256}"))),
        ("a key of 257 characters drops every header", with_state(&["foo=1", &k257]), Continue("00"), None),
        (
            "a tenant of 241 and a system of 14",
            with_state(&["foo=1", &tenant241]),
            Continue("00"),
            Some(&format!("foo=1,{tenant241}")),
        ),
        ("a tenant of 242", with_state(&["foo=1", &tenant242]), Continue("00"), Some(&format!("foo=1,{tenant242}"))),
        ("a system of 15", with_state(&["foo=1", &system15]), Continue("00"), Some(&format!("foo=1,{system15}"))),
        ("a value of 256 characters", with_state(&[&v256]), Continue("00"), Some(&v256)),
        ("a value of 257 characters", with_state(&[&v257]), Continue("00"), None),
        // Beside B3 (read first): tracestate goes with the traceparent's trace only.
        (
            "B3 continues the traceparent's trace",
            [vec![b3(T)], tp(format!("00-{T}-{P}-03")), vec![("tracestate", "foo=1".into())]].concat(),
            Continue("03"),
            Some("foo=1"),
        ),
        (
            "B3 continues another trace",
            [vec![b3(T2)], tp(format!("00-{T}-{P}-03")), vec![("tracestate", "foo=1".into())]].concat(),
            W3c::Other(T2, "01"),
            None,
        ),
    ])
    .await;
}

/// The W3C suite's "advanced" cases, where the service calls out several times: for a proxy,
/// the attempts of a retried request. Each gets its own parent id, in the same trace.
#[tokio::test]
async fn w3c_several_calls_out() {
    let (t, _rx) = tracer(0.0);
    let zero = format!("00-{}-{P}-01", "0".repeat(32));
    let valid = format!("00-{T}-{P}-01");
    for (name, headers) in [
        ("a valid traceparent", vec![("traceparent", valid.as_str())]),
        ("none", vec![]),
        ("an invalid traceparent", vec![("traceparent", zero.as_str())]),
    ] {
        let mut cx = request("/", &headers);
        t.on_request(&mut cx).await;
        let mut sent = Vec::new();
        for target in ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"] {
            crate::testing::begin_attempt(&mut cx, target, "/");
            let mut parts = upstream_parts(&cx);
            t.before_upstream(&mut cx, &mut parts).await;
            sent.push(traceparent(&parts.headers));
        }
        let traces: std::collections::HashSet<_> = sent.iter().map(|(t, _, _)| t.clone()).collect();
        let parents: std::collections::HashSet<_> = sent.iter().map(|(_, p, _)| p.clone()).collect();
        assert_eq!((traces.len(), parents.len()), (1, 3), "{name}: one trace, a parent id per call");
        let trace = traces.into_iter().next().unwrap();
        assert_eq!(trace == T, name == "a valid traceparent", "{name}: {trace}");
    }
}

/// A B3 decision as sent: `1`, `0` or `d`.
type Sent = char;

/// The trace and decision the upstream was sent in B3, from every B3 form sent (they must agree).
fn b3_sent(h: &http::HeaderMap) -> (String, Sent) {
    let get = |n: &str| h.get(n).map(|v| v.to_str().unwrap().to_owned());
    let mut seen = Vec::new();
    if let Some(b3) = get("b3") {
        let f: Vec<&str> = b3.split('-').collect();
        assert!(f.len() == 4 && f[1].len() == 16 && f[2].len() == 1 && f[3].len() == 16, "{b3}");
        seen.push((f[0].to_owned(), f[2].chars().next().unwrap()));
    }
    if let Some(trace) = get("x-b3-traceid") {
        assert_eq!(
            (get("x-b3-spanid").map(|s| s.len()), get("x-b3-parentspanid").map(|s| s.len())),
            (Some(16), Some(16))
        );
        let decision = match (get("x-b3-flags").as_deref(), get("x-b3-sampled").as_deref()) {
            (Some("1"), None) => 'd',
            (None, Some(s @ ("0" | "1"))) => s.chars().next().unwrap(),
            other => panic!("X-B3 sampling state {other:?}"),
        };
        seen.push((trace, decision));
    }
    assert!(!seen.is_empty(), "B3 was sent: {h:?}");
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "the B3 forms agree: {seen:?}");
    seen.remove(0)
}

/// Runs B3 cases: `(name, headers, the trace that goes on (`None`: a new one), the decision sent)`.
async fn b3_cases(cases: &[(&str, Headers, Option<&str>, Sent)]) {
    let (t, _rx) = tracer(0.0);
    let mut failed = Vec::new();
    for (name, headers, trace, decision) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let sent = forward(&t, &headers).await;
        let check = || {
            let (got, d) = b3_sent(&sent);
            match trace {
                Some(trace) => assert_eq!(got, *trace, "{name}: the trace goes on"),
                None => assert!(
                    got.len() == 32 && got != T && got != T2 && !got.ends_with(T16),
                    "{name}: a new trace, not {got}"
                ),
            }
            assert_eq!(d, *decision, "{name}: the decision");
        };
        if std::panic::catch_unwind(check).is_err() {
            failed.push(*name);
        }
    }
    assert!(failed.is_empty(), "cases that failed: {failed:#?}");
}

/// X-B3 headers: trace id, span id and more.
fn multi(trace: &str, span: &str, more: &[(&'static str, &str)]) -> Headers {
    let mut h = vec![("x-b3-traceid", trace.to_owned()), ("x-b3-spanid", span.to_owned())];
    h.extend(more.iter().map(|(k, v)| (*k, (*v).to_owned())));
    h
}

/// A `b3` header.
fn single(v: impl Into<String>) -> Headers {
    vec![("b3", v.into())]
}

#[tokio::test]
async fn b3_multiple_headers() {
    let sampled = |v| [("x-b3-sampled", v)];
    let z16 = "0".repeat(16);
    b3_cases(&[
        // Identifiers and sampling state.
        ("128-bit trace id, sampled", multi(T, P, &sampled("1")), Some(T), '1'),
        ("64-bit trace id stays 64-bit", multi(T16, P, &sampled("1")), Some(T16), '1'),
        (
            "with a parent span id",
            multi(T, P, &[("x-b3-parentspanid", "0020000000000001"), ("x-b3-sampled", "1")]),
            Some(T),
            '1',
        ),
        ("no sampling state: deferred to the gateway", multi(T, P, &[]), Some(T), '0'),
        ("deny", multi(T, P, &sampled("0")), Some(T), '0'),
        ("debug", multi(T, P, &[("x-b3-flags", "1")]), Some(T), 'd'),
        (
            "debug implies accept, whatever X-B3-Sampled says",
            multi(T, P, &[("x-b3-flags", "1"), ("x-b3-sampled", "0")]),
            Some(T),
            'd',
        ),
        ("flags other than 1 are ignored", multi(T, P, &[("x-b3-flags", "0"), ("x-b3-sampled", "1")]), Some(T), '1'),
        ("true, as old tracers sent", multi(T, P, &sampled("true")), Some(T), '1'),
        ("false, as old tracers sent", multi(T, P, &sampled("false")), Some(T), '0'),
        // Sampling state alone.
        ("deny alone", vec![("x-b3-sampled", "0".into())], None, '0'),
        ("accept alone", vec![("x-b3-sampled", "1".into())], None, '1'),
        ("debug alone", vec![("x-b3-flags", "1".into())], None, 'd'),
        // Malformed: the context is ignored.
        ("trace id without span id", vec![("x-b3-traceid", T.into()), ("x-b3-sampled", "1".into())], None, '0'),
        ("span id without trace id", vec![("x-b3-spanid", P.into()), ("x-b3-sampled", "1".into())], None, '0'),
        ("trace id of 20 digits", multi(&T[..20], P, &sampled("1")), None, '0'),
        ("span id of 15 digits", multi(T, &P[1..], &sampled("1")), None, '0'),
        ("trace id in upper case", multi(&T.to_uppercase(), P, &sampled("1")), None, '0'),
        ("span id in upper case", multi(T, &P.to_uppercase(), &sampled("1")), None, '0'),
        ("trace id all zero", multi(&"0".repeat(32), P, &sampled("1")), None, '0'),
        ("span id all zero", multi(T, &z16, &sampled("1")), None, '0'),
        ("an empty sampling state", multi(T, P, &sampled("")), None, '0'),
        ("a sampling state of 2", multi(T, P, &sampled("2")), None, '0'),
        (
            "a parent span id that is not one",
            multi(T, P, &[("x-b3-parentspanid", "-"), ("x-b3-sampled", "1")]),
            None,
            '0',
        ),
        // Repeated headers: the first value wins.
        ("a repeated trace id", [multi(T, P, &sampled("1")), vec![("x-b3-traceid", T2.into())]].concat(), Some(T), '1'),
    ])
    .await;
}

#[tokio::test]
async fn b3_single_header() {
    let z16 = "0".repeat(16);
    b3_cases(&[
        ("trace and span: deferred to the gateway", single(format!("{T}-{P}")), Some(T), '0'),
        ("accept", single(format!("{T}-{P}-1")), Some(T), '1'),
        ("deny", single(format!("{T}-{P}-0")), Some(T), '0'),
        ("debug", single(format!("{T}-{P}-d")), Some(T), 'd'),
        ("with a parent span id", single(format!("{T}-{P}-1-0020000000000001")), Some(T), '1'),
        ("64-bit trace id stays 64-bit", single(format!("{T16}-{P}-1")), Some(T16), '1'),
        ("deny alone", single("0"), None, '0'),
        ("accept alone", single("1"), None, '1'),
        ("debug alone", single("d"), None, 'd'),
        // Malformed: the context is ignored.
        ("empty", single(""), None, '0'),
        ("a trace id alone", single(T), None, '0'),
        ("a trailing dash", single(format!("{T}-{P}-")), None, '0'),
        ("true is not a sampling state here", single(format!("{T}-{P}-true")), None, '0'),
        ("a sampling state of 2", single(format!("{T}-{P}-2")), None, '0'),
        ("a parent id where the sampling state goes", single(format!("{T}-{P}-0020000000000001")), None, '0'),
        ("a field more", single(format!("{T}-{P}-1-0020000000000001-1")), None, '0'),
        ("an all-zero parent id", single(format!("{T}-{P}-1-{z16}")), None, '0'),
        ("an all-zero span id", single(format!("{T}-{z16}-1")), None, '0'),
        ("trace id in upper case", single(format!("{}-{P}-1", T.to_uppercase())), None, '0'),
        ("a sampling state in upper case", single(format!("{T}-{P}-D")), None, '0'),
        // Repeated: the first value wins, as for X-B3 headers.
        ("a repeated b3", [single(format!("{T}-{P}-1")), single(format!("{T2}-{P}-0"))].concat(), Some(T), '1'),
    ])
    .await;
}

#[tokio::test]
async fn b3_both_forms() {
    b3_cases(&[
        (
            "b3 takes precedence",
            [single(format!("{T}-{P}-1")), multi(T2, P, &[("x-b3-sampled", "0")])].concat(),
            Some(T),
            '1',
        ),
        ("b3: 0 with X-B3 ids", [single("0"), multi(T, P, &[])].concat(), Some(T), '0'),
        ("b3: d with X-B3 ids", [single("d"), multi(T, P, &[])].concat(), Some(T), 'd'),
        (
            "b3's decision takes precedence over X-B3-Sampled",
            [single("0"), multi(T, P, &[("x-b3-sampled", "1")])].concat(),
            Some(T),
            '0',
        ),
        (
            "an invalid b3 beside valid X-B3",
            [single("nope"), multi(T2, P, &[("x-b3-sampled", "1")])].concat(),
            Some(T2),
            '1',
        ),
    ])
    .await;
}
