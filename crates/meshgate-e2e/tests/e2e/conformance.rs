//! RFC 9112 message framing and RFC 9110 Host rules on raw sockets, against the real gateway and
//! an upstream that records exactly the bytes it receives. Every case is either refused with the
//! right status or forwarded as exactly one well-formed request (parsed by `httparse`, framed
//! strictly) — never two, never a desync: after each case the same client connection is either
//! closed or carries a follow-up request that arrives, alone and intact, after the case's own.

use meshgate_e2e::raw::{Message, RawConn, RawUpstream, Read, Recorder};
use meshgate_e2e::{TestGateway, config};

/// What must become of a case.
enum Want {
    /// Refused with this status (a JSON error when `json`); the upstream sees nothing.
    Refused { status: u16, json: bool },
    /// Forwarded as one well-formed request, which `check` inspects; the client gets the
    /// upstream's 200.
    Forwarded(fn(&Message)),
    /// Either refused with 400 or forwarded as one well-formed request (RFC 9112 lets a
    /// recipient choose, e.g. for a bare LF).
    RefusedOrForwarded(fn(&Message)),
}
use Want::*;

const fn refused(status: u16) -> Want {
    Refused { status, json: true }
}
/// Refused by hyper's parser before meshgate sees a request: a bodiless answer.
const fn refused_by_parser(status: u16) -> Want {
    Refused { status, json: false }
}

fn body_is_hello(m: &Message) {
    assert_eq!(m.text(), "hello", "{:?}", String::from_utf8_lossy(&m.raw));
}
fn no_body(m: &Message) {
    assert!(m.body.is_empty(), "{:?}", String::from_utf8_lossy(&m.raw));
}
fn path_is_x(m: &Message) {
    assert!(m.start.starts_with("GET /x "), "{}", m.start);
}

/// `(name, request bytes, expectation)`, grouped by the rule they test.
const CASES: &[(&str, &str, Want)] = &[
    // --- message body length (RFC 9112 §6.3) ---
    ("content-length", "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", Forwarded(body_is_hello)),
    (
        "chunked",
        "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Forwarded(body_is_hello),
    ),
    (
        "chunked in two chunks with an extension",
        "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2;a=b\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n",
        Forwarded(body_is_hello),
    ),
    (
        "chunked with a trailer",
        "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
        Forwarded(body_is_hello),
    ),
    (
        "chunked, upper-case coding name",
        "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Forwarded(body_is_hello),
    ),
    ("no length: no body", "GET /x HTTP/1.1\r\nHost: t\r\n\r\n", Forwarded(no_body)),
    // Transfer-Encoding overrides Content-Length, which is not forwarded (RFC 9112 §6.3).
    (
        "content-length and transfer-encoding",
        "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Forwarded(body_is_hello),
    ),
    (
        "transfer-encoding and content-length",
        "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Forwarded(body_is_hello),
    ),
    (
        "two different content-lengths",
        "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        refused_by_parser(400),
    ),
    (
        "a content-length list",
        "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 6\r\n\r\nhello!",
        refused_by_parser(400),
    ),
    (
        "two equal content-lengths",
        "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        RefusedOrForwarded(body_is_hello),
    ),
    (
        "content-length with a sign",
        "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello",
        refused_by_parser(400),
    ),
    (
        "negative content-length",
        "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\nhello",
        refused_by_parser(400),
    ),
    ("hex content-length", "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 0x5\r\n\r\nhello", refused_by_parser(400)),
    (
        "content-length past u64",
        "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999999\r\n\r\nhello",
        refused_by_parser(400),
    ),
    (
        "gzip, chunked",
        "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        refused(501),
    ),
    (
        "chunked, chunked",
        "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        refused(400),
    ),
    (
        "chunked twice in two fields",
        "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        refused(400),
    ),
    (
        "identity coding",
        "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello",
        refused_by_parser(400),
    ),
    (
        "chunked not last",
        "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        refused_by_parser(400),
    ),
    (
        "transfer-encoding in HTTP/1.0",
        "POST /x HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        refused_by_parser(400),
    ),
    (
        "xchunked",
        "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        refused_by_parser(400),
    ),
    // --- chunked coding (RFC 9112 §7.1) ---
    (
        "chunk size not hex",
        "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        refused(400),
    ),
    (
        "chunk size overflow",
        "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        refused(400),
    ),
    (
        "chunk data without its CRLF",
        "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        refused(400),
    ),
    (
        "chunk data longer than its size",
        "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
        refused(400),
    ),
    // --- header fields (RFC 9112 §5, RFC 9110 §5.5) ---
    ("obs-fold", "GET /x HTTP/1.1\r\nHost: t\r\nX-A: one\r\n two\r\n\r\n", refused_by_parser(400)),
    ("space before the colon", "GET /x HTTP/1.1\r\nHost: t\r\nX-A : one\r\n\r\n", refused_by_parser(400)),
    ("space in a field name", "GET /x HTTP/1.1\r\nHost: t\r\nX A: one\r\n\r\n", refused_by_parser(400)),
    ("control character in a field name", "GET /x HTTP/1.1\r\nHost: t\r\nX\x01A: one\r\n\r\n", refused_by_parser(400)),
    ("NUL in a field value", "GET /x HTTP/1.1\r\nHost: t\r\nX-A: o\x00ne\r\n\r\n", refused_by_parser(400)),
    ("bare CR in a field value", "GET /x HTTP/1.1\r\nHost: t\r\nX-A: o\rne\r\n\r\n", refused_by_parser(400)),
    ("empty field name", "GET /x HTTP/1.1\r\nHost: t\r\n: one\r\n\r\n", refused_by_parser(400)),
    ("bare LF line ends", "GET /x HTTP/1.1\nHost: t\nX-A: one\n\n", RefusedOrForwarded(path_is_x)),
    // --- request line and target (RFC 9112 §3) ---
    (
        "origin-form",
        "GET /x?q=1 HTTP/1.1\r\nHost: t\r\n\r\n",
        Forwarded(|m| assert_eq!(m.start, "GET /x?q=1 HTTP/1.1")),
    ),
    ("absolute-form is sent in origin-form", "GET http://t/x HTTP/1.1\r\nHost: t\r\n\r\n", Forwarded(path_is_x)),
    ("absolute-form with userinfo", "GET http://user@t/x HTTP/1.1\r\nHost: t\r\n\r\n", refused(400)),
    ("authority-form (CONNECT)", "CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n", refused(501)),
    ("target without a leading slash", "GET x HTTP/1.1\r\nHost: t\r\n\r\n", refused_by_parser(400)),
    ("space in the target", "GET /a b HTTP/1.1\r\nHost: t\r\n\r\n", refused_by_parser(400)),
    ("two spaces after the method", "GET  /x HTTP/1.1\r\nHost: t\r\n\r\n", refused_by_parser(400)),
    ("unknown HTTP version", "GET /x HTTP/1.2\r\nHost: t\r\n\r\n", refused_by_parser(400)),
    ("HTTP/2 version on HTTP/1 framing", "GET /x HTTP/2.0\r\nHost: t\r\n\r\n", refused_by_parser(400)),
    ("leading empty line", "\r\nGET /x HTTP/1.1\r\nHost: t\r\n\r\n", RefusedOrForwarded(path_is_x)),
    // --- Host (RFC 9112 §3.2, RFC 9110 §7.2) ---
    ("HTTP/1.1 without Host", "GET /x HTTP/1.1\r\n\r\n", refused(400)),
    ("HTTP/1.0 without Host", "GET /x HTTP/1.0\r\n\r\n", Forwarded(path_is_x)),
    ("two Host fields", "GET /x HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n", refused(400)),
    ("Host with a space", "GET /x HTTP/1.1\r\nHost: a b\r\n\r\n", refused(400)),
    ("Host with userinfo", "GET /x HTTP/1.1\r\nHost: x@evil.example\r\n\r\n", refused(400)),
    ("Host with a path", "GET /x HTTP/1.1\r\nHost: evil/../admin\r\n\r\n", refused(400)),
    ("Host with a bad port", "GET /x HTTP/1.1\r\nHost: t:80x\r\n\r\n", refused(400)),
    ("Host list", "GET /x HTTP/1.1\r\nHost: t, u\r\n\r\n", refused(400)),
];

/// The upstream's request is one well-formed message whose framing header is the only one.
fn well_formed(m: &Message) {
    let te = m.all("transfer-encoding");
    let cl = m.all("content-length");
    assert!(te.len() + cl.len() <= 1, "framing headers {te:?} {cl:?} in {:?}", String::from_utf8_lossy(&m.raw));
    assert_eq!(m.all("host").len(), 1, "one Host upstream: {:?}", String::from_utf8_lossy(&m.raw));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_framing_and_host_rules() {
    let upstream = RawUpstream::ok().await;
    let gw = TestGateway::start(&config(&format!(
        "services: [{{name: s, url: \"http://{}\"}}]\nroutes: [{{name: r, service: s, paths: [/]}}]",
        upstream.addr()
    )));
    let mut failures = Vec::new();
    for (name, bytes, want) in CASES {
        upstream.recorder().clear();
        let outcome = tokio::spawn(run_case(gw.addr(), bytes.as_bytes(), upstream.recorder().clone())).await;
        let (resp, requests, garbage, follow_up) = match outcome {
            Ok(o) => o,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let check = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            assert!(garbage.is_empty(), "the upstream got malformed bytes: {garbage:?}");
            let resp = resp.as_ref().expect("an answer before the connection closed");
            let forwarded = |check: &fn(&Message)| {
                assert_eq!(resp.status(), 200, "forwarded: {}", resp.text());
                assert_eq!(requests.len(), 1, "exactly one request upstream: {requests:?}");
                well_formed(&requests[0]);
                check(&requests[0]);
            };
            match want {
                Refused { status, json } => {
                    assert_eq!(resp.status(), *status, "{}", resp.text());
                    assert!(requests.is_empty(), "refused, yet the upstream got {requests:?}");
                    if *json {
                        let body: serde_json::Value = serde_json::from_slice(&resp.body).expect("a JSON error body");
                        assert_eq!(body["status"], *status);
                    }
                }
                Forwarded(check) => forwarded(check),
                RefusedOrForwarded(check) if resp.status() == 400 => {
                    assert!(requests.is_empty(), "refused, yet the upstream got {requests:?}");
                    let _ = check;
                }
                RefusedOrForwarded(check) => forwarded(check),
            }
            if let Some(next) = &follow_up {
                assert_eq!(next.0, 200, "follow-up on the same connection");
                assert_eq!(next.1.as_deref(), Some("GET /after HTTP/1.1"), "what the upstream saw next");
            }
        }));
        if let Err(panic) = check {
            let msg =
                panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            failures.push(format!("{name}: {}", msg.unwrap_or_default()));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), CASES.len(), failures.join("\n"));
}

/// Sends the case, reads the answer, then tries a follow-up on the same connection unless the
/// gateway closed it. Returns the answer, what the upstream received for the case, garbage it
/// saw, and the follow-up's status with the start line the upstream saw for it.
async fn run_case(
    addr: std::net::SocketAddr,
    bytes: &'static [u8],
    upstream: Recorder,
) -> (Option<Message>, Vec<Message>, Vec<String>, Option<(u16, Option<String>)>) {
    let mut conn = RawConn::connect(addr).await;
    conn.send(bytes).await;
    let resp = conn.response(false).await;
    let (requests, garbage) = (upstream.requests(), upstream.garbage());
    // A closed connection answers the follow-up with nothing.
    let follow_up = if resp.is_some() {
        conn.send(b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n").await;
        let next = conn.response(false).await;
        let after = upstream.requests();
        next.map(|n| (n.status(), after.get(requests.len()).map(|m| m.start.clone())))
    } else {
        None
    };
    (resp, requests, garbage, follow_up)
}

/// What the client must get when the upstream answers a case.
enum Answer {
    /// A well-formed 200 with this body, framed once.
    Passed(&'static str),
    /// 502 with a JSON error.
    BadGateway,
    /// Either a 502, or the head passed on and the body cut off with the connection (the
    /// fault is found while the body streams): never a complete message the client would trust.
    BadGatewayOrCut,
    /// Either of [`Answer::Passed`] (with this body) or a 502.
    PassedOrBadGateway(&'static str),
}

/// `(name, upstream answer bytes, what the client gets)`: RFC 9112 framing of responses.
const RESPONSES: &[(&str, &str, Answer)] = &[
    ("content-length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", Answer::Passed("hello")),
    (
        "chunked",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Answer::Passed("hello"),
    ),
    (
        "content-length and chunked",
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Answer::Passed("hello"),
    ),
    (
        "chunked and content-length",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Answer::Passed("hello"),
    ),
    (
        "two different content-lengths",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        Answer::BadGateway,
    ),
    ("a content-length list", "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!", Answer::BadGateway),
    (
        "gzip, chunked",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Answer::BadGateway,
    ),
    (
        "chunk size not hex",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        Answer::BadGatewayOrCut,
    ),
    (
        "chunk data without its CRLF",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        Answer::BadGatewayOrCut,
    ),
    (
        "body shorter than content-length",
        "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\nhello",
        Answer::BadGatewayOrCut,
    ),
    (
        "bytes after the body",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsmuggl",
        Answer::Passed("hello"),
    ),
    (
        "no length: the body ends with the connection",
        "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello",
        Answer::Passed("hello"),
    ),
    ("HTTP/1.0 without a length", "HTTP/1.0 200 OK\r\nConnection: close\r\n\r\nhello", Answer::Passed("hello")),
    (
        "100 Continue first",
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        Answer::Passed("hello"),
    ),
    (
        "103 Early Hints first",
        "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        Answer::Passed("hello"),
    ),
    ("bare LF line ends", "HTTP/1.1 200 OK\nContent-Length: 5\n\nhello", Answer::PassedOrBadGateway("hello")),
    (
        "obs-fold",
        "HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 5\r\n\r\nhello",
        Answer::PassedOrBadGateway("hello"),
    ),
    (
        "space before the colon",
        "HTTP/1.1 200 OK\r\nX-A : one\r\nContent-Length: 5\r\n\r\nhello",
        Answer::PassedOrBadGateway("hello"),
    ),
    ("not HTTP", "SSH-2.0-OpenSSH_9.2\r\n", Answer::BadGateway),
    ("status code out of range", "HTTP/1.1 999 Odd\r\nContent-Length: 5\r\n\r\nhello", Answer::BadGateway),
    ("status code 600", "HTTP/1.1 600 Odd\r\nContent-Length: 5\r\n\r\nhello", Answer::BadGateway),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_response_framing() {
    let mut upstreams = Vec::new();
    let mut yaml = String::from("services:\n");
    let mut routes = String::from("routes:\n");
    for (i, (_, answer, _)) in RESPONSES.iter().enumerate() {
        let u = RawUpstream::answering(answer.as_bytes()).await;
        yaml += &format!("  - {{name: s{i}, url: \"http://{}\"}}\n", u.addr());
        routes += &format!("  - {{name: r{i}, service: s{i}, paths: [\"=/case/{i}\"]}}\n");
        upstreams.push(u);
    }
    let gw = TestGateway::start(&config(&format!("{yaml}{routes}")));
    let mut failures = Vec::new();
    for (i, (name, _, want)) in RESPONSES.iter().enumerate() {
        // Twice on one client connection (when it stays open): a response that poisons the
        // gateway's pooled upstream connection shows in the second answer.
        let mut conn = RawConn::connect(gw.addr()).await;
        for round in 0..2 {
            conn.send(format!("GET /case/{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).await;
            let got = conn.read_response(false).await;
            if let Err(why) = judge(want, &got) {
                failures.push(format!("{name} (round {round}): {why}"));
            }
            if !matches!(got, Read::Complete(_)) {
                break;
            }
        }
        let garbage = upstreams[i].recorder().garbage();
        if !garbage.is_empty() {
            failures.push(format!("{name}: the upstream got malformed bytes: {garbage:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), RESPONSES.len(), failures.join("\n"));
}

fn judge(want: &Answer, got: &Read) -> Result<(), String> {
    let passed = |body: &str, m: &Message| {
        let framing = m.all("content-length").len() + m.all("transfer-encoding").len();
        if m.status() == 200 && m.text() == body && framing <= 1 {
            Ok(())
        } else {
            Err(format!("want 200 {body:?}, got {} {:?} ({framing} framing headers)", m.status(), m.text()))
        }
    };
    let bad_gateway = |m: &Message| {
        let json: Option<serde_json::Value> = serde_json::from_slice(&m.body).ok();
        let code = json.as_ref().map(|j| j["error"].clone());
        if m.status() == 502 && code == Some("upstream_unavailable".into()) {
            Ok(())
        } else {
            Err(format!("want 502 upstream_unavailable, got {} {:?}", m.status(), m.text()))
        }
    };
    match (want, got) {
        (Answer::Passed(body), Read::Complete(m)) => passed(body, m),
        (Answer::BadGateway | Answer::BadGatewayOrCut, Read::Complete(m)) => bad_gateway(m),
        // hyper sends the head with the first body frame: a body that fails at once leaves
        // nothing to send before the connection is closed.
        (Answer::BadGatewayOrCut, Read::Cut(_) | Read::Closed) => Ok(()),
        (Answer::PassedOrBadGateway(body), Read::Complete(m)) => passed(body, m).or_else(|_| bad_gateway(m)),
        (_, other) => Err(format!("got {other:?}")),
    }
}
