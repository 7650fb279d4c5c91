//! Table-driven precedence and matching cases.

use super::{R, Req, find, r, req, router};
use crate::{BuildError, RouteSpec, Router};
use http::Method;

struct Case {
    what: &'static str,
    routes: Vec<R>,
    req: Req,
    /// Winning route name and matched path length; `None` for no match.
    want: Option<(&'static str, usize)>,
}

fn case(what: &'static str, routes: Vec<R>, req: Req, want: Option<(&'static str, usize)>) -> Case {
    Case { what, routes, req, want }
}

/// Three routes that differ only by the `Client` header they need.
fn clients() -> Vec<R> {
    vec![
        r("android").paths(&["/app"]).header("Client", &["Android"]),
        r("ios").paths(&["/app"]).header("Client", &["IOS"]),
        r("other").paths(&["/app"]),
    ]
}

fn cases() -> Vec<Case> {
    let ex = "api.example.com";
    vec![
        // 1. priority
        case(
            "higher priority beats every specificity",
            vec![r("specific").hosts(&[ex]).paths(&["=/x"]).methods(&["GET"]), r("catchall").prio(1)],
            req(ex, "/x"),
            Some(("catchall", 0)),
        ),
        case(
            "negative priority loses to the default",
            vec![r("low").hosts(&[ex]).paths(&["=/x"]).prio(-1), r("default").paths(&["/"])],
            req(ex, "/x"),
            Some(("default", 1)),
        ),
        case(
            "a higher priority route that does not match is ignored",
            vec![r("post").prio(10).methods(&["POST"]), r("any")],
            req(ex, "/"),
            Some(("any", 0)),
        ),
        // 2. host specificity
        case(
            "exact host beats wildcard",
            vec![r("wild").hosts(&["*.example.com"]), r("exact").hosts(&[ex])],
            req(ex, "/"),
            Some(("exact", 0)),
        ),
        case(
            "wildcard beats no host",
            vec![r("none"), r("wild").hosts(&["*.example.com"])],
            req("x.example.com", "/"),
            Some(("wild", 0)),
        ),
        case(
            "longer wildcard suffix wins",
            vec![r("short").hosts(&["*.example.com"]), r("long").hosts(&["*.api.example.com"])],
            req("v1.api.example.com", "/"),
            Some(("long", 0)),
        ),
        case(
            "wildcard matches several labels deep",
            vec![r("wild").hosts(&["*.example.com"]), r("none").paths(&["/"])],
            req("a.b.example.com", "/"),
            Some(("wild", 0)),
        ),
        case(
            "wildcard does not match the apex",
            vec![r("wild").hosts(&["*.example.com"])],
            req("example.com", "/"),
            None,
        ),
        case(
            "other host falls back to hostless",
            vec![r("exact").hosts(&[ex]), r("none")],
            req("other.org", "/"),
            Some(("none", 0)),
        ),
        case(
            "request without host only matches hostless routes",
            vec![r("exact").hosts(&[ex]).prio(5), r("none")],
            req("", "/"),
            Some(("none", 0)),
        ),
        case(
            "host specificity outranks path specificity",
            vec![r("exact-path").paths(&["=/x"]), r("host").hosts(&[ex]).paths(&["/"])],
            req(ex, "/x"),
            Some(("host", 1)),
        ),
        case("port is stripped", vec![r("exact").hosts(&[ex])], req("api.example.com:8443", "/"), Some(("exact", 0))),
        case(
            "host is case-insensitive",
            vec![r("exact").hosts(&["API.example.com"])],
            req("Api.Example.COM", "/"),
            Some(("exact", 0)),
        ),
        case("IPv6 literal with port", vec![r("v6").hosts(&["[::1]"])], req("[::1]:80", "/"), Some(("v6", 0))),
        case("trailing dot of a FQDN", vec![r("exact").hosts(&[ex])], req("api.example.com.", "/"), Some(("exact", 0))),
        // 3. path specificity
        case(
            "exact path beats regex",
            vec![r("regex").paths(&["~/users/\\d+"]), r("exact").paths(&["=/users/42"])],
            req("", "/users/42"),
            Some(("exact", 9)),
        ),
        case(
            "regex beats prefix; length is the match end",
            vec![r("prefix").paths(&["/users"]), r("regex").paths(&["~/users/\\d+"])],
            req("", "/users/42/posts"),
            Some(("regex", 9)),
        ),
        case(
            "longest prefix wins",
            vec![r("api").paths(&["/api"]), r("v1").paths(&["/api/v1"]), r("v").paths(&["/api/v"])],
            req("", "/api/v1/x"),
            Some(("v1", 7)),
        ),
        case("prefix is a byte prefix", vec![r("api").paths(&["/api"])], req("", "/apix"), Some(("api", 4))),
        case(
            "any path beats no path",
            vec![r("none"), r("root").paths(&["/"])],
            req("", "/anything"),
            Some(("root", 1)),
        ),
        case(
            "regex is anchored at the path start",
            vec![r("regex").paths(&["~/v\\d"]), r("none")],
            req("", "/api/v1"),
            Some(("none", 0)),
        ),
        case(
            "the matching pattern of a multi-path route decides (exact)",
            vec![r("multi").paths(&["/a", "=/a/b"]), r("regex").paths(&["~/a/"])],
            req("", "/a/b"),
            Some(("multi", 4)),
        ),
        case(
            "the matching pattern of a multi-path route decides (prefix)",
            vec![r("multi").paths(&["/a", "=/a/b"]), r("regex").paths(&["~/a/"])],
            req("", "/a/c"),
            Some(("regex", 3)),
        ),
        case(
            "prefixes are compared as bytes, also past multi-byte characters",
            vec![r("a").paths(&["/a"]), r("e").paths(&["/é"]), r("ex").paths(&["/éx/"])],
            req("", "/éxy"),
            Some(("e", 3)),
        ),
        case("query string is ignored", vec![r("exact").paths(&["=/x"])], req("", "/x?y=1"), Some(("exact", 2))),
        case("exact path length", vec![r("health").paths(&["=/health"])], req("", "/health"), Some(("health", 7))),
        // 4. headers, then methods
        case("header routing: Android", clients(), req("", "/app").header("client", "Android"), Some(("android", 4))),
        case("header routing: IOS", clients(), req("", "/app").header("Client", "IOS"), Some(("ios", 4))),
        case("header routing: no header", clients(), req("", "/app"), Some(("other", 4))),
        case(
            "header routing: unknown value",
            clients(),
            req("", "/app").header("Client", "Windows"),
            Some(("other", 4)),
        ),
        case(
            "exact header value is case-sensitive",
            clients(),
            req("", "/app").header("Client", "android"),
            Some(("other", 4)),
        ),
        case(
            "any occurrence of a repeated header may match",
            clients(),
            req("", "/app").header("Client", "X").header("Client", "IOS"),
            Some(("ios", 4)),
        ),
        case(
            "regex header value is unanchored",
            vec![r("droid").header("User-Agent", &["~droid"]), r("none")],
            req("", "/").header("user-agent", "Mozilla (Android 14)"),
            Some(("droid", 0)),
        ),
        case(
            "every header condition must hold",
            vec![r("both").header("A", &["1"]).header("B", &["2"]), r("none")],
            req("", "/").header("A", "1"),
            Some(("none", 0)),
        ),
        case(
            "more header conditions win",
            vec![r("one").header("A", &["1"]).methods(&["GET"]), r("two").header("A", &["1"]).header("B", &["~."])],
            req("", "/").header("A", "1").header("B", "x"),
            Some(("two", 0)),
        ),
        case(
            "methods beat no methods",
            vec![r("any").paths(&["/api"]), r("get").paths(&["/api"]).methods(&["GET", "HEAD"])],
            req("", "/api"),
            Some(("get", 4)),
        ),
        case(
            "method mismatch falls back",
            vec![r("any").paths(&["/api"]), r("get").paths(&["/api"]).methods(&["GET"])],
            req("", "/api").method(Method::POST),
            Some(("any", 4)),
        ),
        // 5. declaration order
        case(
            "earlier of two identical routes wins",
            vec![r("first").paths(&["/x"]), r("second").paths(&["/x"])],
            req("", "/x"),
            Some(("first", 2)),
        ),
        case(
            "earlier wins across host buckets with equal ranks",
            vec![r("a").hosts(&["*.example.com"]), r("b").hosts(&["*.example.com"])],
            req("q.example.com", "/"),
            Some(("a", 0)),
        ),
        case("nothing matches", vec![r("x").paths(&["/x"])], req("", "/y"), None),
    ]
}

#[test]
fn precedence_table() {
    let cases = cases();
    assert!(cases.len() >= 25);
    let mut failures = Vec::new();
    for c in &cases {
        let got = find(&router(&c.routes), &c.req);
        let want = c.want.map(|(n, l)| (n.to_string(), l));
        if got != want {
            failures.push(format!("{}: got {got:?}, want {want:?}", c.what));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn many_regexes_use_the_set_and_keep_order() {
    // Enough regex paths in one bucket to go through the RegexSet path.
    let mut routes: Vec<R> = (0..20).map(|i| r(&format!("re{i}")).paths(&[&format!("~/r{i}/\\w+")])).collect();
    routes.push(r("dup").paths(&["~/r7/\\w+"]).methods(&["GET"]));
    routes.push(r("prio").paths(&["~/r9/x"]).prio(1).methods(&["POST"]));
    let router = router(&routes);
    assert_eq!(find(&router, &req("", "/r3/abc/d")), Some(("re3".into(), 7)));
    assert_eq!(find(&router, &req("", "/r7/abc")), Some(("dup".into(), 7)));
    assert_eq!(find(&router, &req("", "/r9/xyz")), Some(("re9".into(), 7)));
    assert_eq!(find(&router, &req("", "/r9/xyz").method(Method::POST)), Some(("prio".into(), 5)));
    assert_eq!(find(&router, &req("", "/r3/")), None);
}

#[test]
fn route_index_and_accessors() {
    let router = router(&[r("a").paths(&["/a"]), r("b").paths(&["/b"])]);
    let q = req("", "/b");
    let m = router.find(&q.view()).unwrap();
    assert_eq!(m.route_index, 1);
    assert_eq!(router.len(), 2);
    assert!(!router.is_empty());
    assert_eq!(router.get(1).map(String::as_str), Some("b"));
    assert_eq!(router.spec(0).map(|s| s.name.as_str()), Some("a"));
    let empty: Router<()> = Router::build(vec![]).unwrap();
    assert!(empty.is_empty() && empty.find(&q.view()).is_none());
}

#[test]
fn build_errors_name_the_route() {
    let bad = r("bad").hosts(&["api.*.com"]).spec();
    let err = Router::build(vec![(r("ok").spec(), ()), (bad, ())]).unwrap_err();
    assert_eq!(err.route_index, 1);
    assert!(err.to_string().contains("api.*.com"), "{err}");
    let mut spec = r("re").spec();
    spec.paths = vec![meshgate_config::PathPattern::Regex("(".into())];
    let err: BuildError = Router::build(vec![(spec, ())]).unwrap_err();
    assert!(err.message.contains("~("), "{err}");
    let port = r("port").hosts(&["example.com:80"]).spec();
    assert!(Router::build(vec![(port, ())]).is_err());
}

#[test]
fn from_config_errors_name_the_value() {
    let e = |r: R| RouteSpec::from_config(&r.0).unwrap_err();
    assert!(e(r("m").methods(&["get"])).contains("\"get\""));
    assert!(e(r("p").paths(&["api"])).contains("\"api\""));
    assert!(e(r("h").header("X", &["~("])).contains("\"~(\""));
    assert!(e(r("h").header("bad name", &["1"])).contains("\"bad name\""));
    assert!(e(r("h").header("X", &[])).contains("\"X\""));
}

#[test]
fn router_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Router<String>>();
    assert_send_sync::<Router<std::sync::Arc<Vec<u8>>>>();
}
