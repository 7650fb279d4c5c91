//! Shadow and reachability analysis.

use super::{R, r, router};
use crate::{Finding, HeaderMatch, Router};

fn shadowed(route: &str, by: &str) -> Finding {
    Finding::Shadowed { route: route.into(), by: by.into() }
}

fn analyze(routes: &[R]) -> Vec<Finding> {
    router(routes).analyze()
}

#[test]
fn duplicates_are_shadowed_by_the_first() {
    let a = r("a").hosts(&["api.example.com"]).paths(&["/x"]).methods(&["GET"]);
    let mut b = a.clone();
    b.0.name = "b".into();
    let mut c = a.clone();
    c.0.name = "c".into();
    assert_eq!(analyze(&[a, b, c]), vec![shadowed("b", "a"), shadowed("c", "a")]);
}

#[test]
fn prefixes() {
    // A longer prefix declared later still wins for its paths: not shadowed.
    assert_eq!(analyze(&[r("api").paths(&["/api"]), r("v1").paths(&["/api/v1"])]), vec![]);
    // Unless the shorter one has a higher priority.
    assert_eq!(analyze(&[r("api").paths(&["/api"]).prio(1), r("v1").paths(&["/api/v1"])]), vec![shadowed("v1", "api")]);
    // An exact path under a higher-priority prefix.
    assert_eq!(analyze(&[r("api").paths(&["/api"]).prio(1), r("x").paths(&["=/api/x"])]), vec![shadowed("x", "api")]);
    // A prefix that does not cover: `/apx` is not under `/api`.
    assert_eq!(analyze(&[r("api").paths(&["/api"]).prio(1), r("x").paths(&["/apx"])]), vec![]);
    // Equal prefixes: the later loses.
    assert_eq!(analyze(&[r("a").paths(&["/a"]), r("b").paths(&["/a"])]), vec![shadowed("b", "a")]);
}

#[test]
fn regexes() {
    // An exact path a higher-priority regex matches is shadowed.
    assert_eq!(analyze(&[r("re").paths(&["~/u/\\d+"]).prio(1), r("x").paths(&["=/u/42"])]), vec![shadowed("x", "re")]);
    // A regex path is only covered by the same regex or by no path condition.
    assert_eq!(analyze(&[r("re").paths(&["~/u/\\d+"]).prio(1), r("x").paths(&["~/u/4\\d"])]), vec![]);
    assert_eq!(analyze(&[r("re").paths(&["~/u"]), r("x").paths(&["~/u"])]), vec![shadowed("x", "re")]);
    assert_eq!(analyze(&[r("all").prio(1), r("x").paths(&["~/u"])]), vec![shadowed("x", "all")]);
    // A prefix does not prove coverage of a regex (conservative).
    assert_eq!(analyze(&[r("root").paths(&["/"]).prio(1), r("x").paths(&["~/u"])]), vec![]);
}

#[test]
fn hosts() {
    let catchall = r("catchall").paths(&["/"]).prio(1);
    assert_eq!(
        analyze(&[catchall.clone(), r("x").hosts(&["api.example.com"]).paths(&["/x"])]),
        vec![shadowed("x", "catchall")]
    );
    // A hostless route is not covered by a route with hosts.
    assert_eq!(analyze(&[r("h").hosts(&["api.example.com"]).prio(1), r("x")]), vec![]);
    let wild = r("wild").hosts(&["*.example.com"]).prio(1);
    assert_eq!(
        analyze(&[
            wild.clone(),
            r("deeper").hosts(&["*.api.example.com"]),
            r("exact").hosts(&["a.example.com"]),
            r("apex").hosts(&["example.com"]),
            r("other").hosts(&["*.other.com"]),
        ]),
        vec![shadowed("deeper", "wild"), shadowed("exact", "wild")]
    );
    // Without priority the more specific host wins, so nothing is shadowed.
    assert_eq!(analyze(&[r("wild").hosts(&["*.example.com"]), r("exact").hosts(&["a.example.com"])]), vec![]);
    // Each host taken by a different route.
    assert_eq!(
        analyze(&[
            r("a").hosts(&["a.com"]).prio(1),
            r("b").hosts(&["b.com"]).prio(1),
            r("both").hosts(&["a.com", "b.com"]),
        ]),
        vec![shadowed("both", "a, b")]
    );
    // One host uncovered: reachable.
    assert_eq!(analyze(&[r("a").hosts(&["a.com"]).prio(1), r("both").hosts(&["a.com", "c.com"])]), vec![]);
}

#[test]
fn methods_and_headers() {
    let get = r("get").paths(&["/x"]).methods(&["GET"]).prio(1);
    assert_eq!(analyze(&[get.clone(), r("post").paths(&["/x"]).methods(&["GET", "POST"])]), vec![]);
    assert_eq!(analyze(&[get.clone(), r("g").paths(&["/x"]).methods(&["GET"])]), vec![shadowed("g", "get")]);
    assert_eq!(analyze(&[get, r("any").paths(&["/x"])]), vec![]);
    // The shadower's header conditions must be implied by the route's own.
    let android = r("android").header("Client", &["Android", "IOS"]).prio(1);
    assert_eq!(analyze(&[android.clone(), r("plain")]), vec![]);
    assert_eq!(analyze(&[android.clone(), r("ios").header("client", &["IOS"])]), vec![shadowed("ios", "android")]);
    assert_eq!(analyze(&[android.clone(), r("web").header("Client", &["Web"])]), vec![]);
    assert_eq!(
        analyze(&[android, r("two").header("Client", &["IOS"]).header("X", &["1"])]),
        vec![shadowed("two", "android")]
    );
    // More header conditions outrank an earlier route of the same priority.
    assert_eq!(analyze(&[r("plain"), r("hdr").header("X", &["1"])]), vec![]);
    assert_eq!(analyze(&[r("hdr").header("X", &["1"]), r("plain")]), vec![]);
}

#[test]
fn unreachable_header_condition() {
    let mut spec = r("never").spec();
    spec.headers.push(HeaderMatch { name: http::header::ACCEPT, values: vec![] });
    let router = Router::build(vec![(spec, ())]).unwrap();
    assert!(matches!(&router.analyze()[..], [Finding::Unreachable { route, .. }] if route == "never"));
}

#[test]
fn sane_config_has_no_findings() {
    assert_eq!(
        analyze(&[
            r("health").paths(&["=/health"]),
            r("users").hosts(&["api.example.com"]).paths(&["/users", "~/users/\\d+"]),
            r("android").hosts(&["api.example.com"]).paths(&["/app"]).header("Client", &["Android"]),
            r("ios").hosts(&["api.example.com"]).paths(&["/app"]).header("Client", &["IOS"]),
            r("app").hosts(&["api.example.com"]).paths(&["/app"]),
            r("tenants").hosts(&["*.example.com"]),
            r("fallback"),
        ]),
        vec![]
    );
}

#[test]
fn paths_requests_never_have() {
    use crate::PathRules;
    let never = |route: &str, path: &str, reason: &str| Finding::PathNeverMatches {
        route: route.into(),
        path: path.into(),
        reason: reason.into(),
    };
    let routes = [
        r("fine").paths(&["/api/", "=/a/b", "/a/.", "/a%20b", "~/x//y"]),
        r("dots").paths(&["/a/../b", "=/a/./b"]),
        r("escaped").paths(&["/%61pi", "=/a%2fb", "/a%2"]),
        r("slashes").paths(&["//api"]),
    ];
    assert_eq!(
        router(&routes).analyze_paths(PathRules::default()),
        vec![
            never("dots", "/a/../b", "requests are matched on their normal form (/b)"),
            never("dots", "=/a/./b", "requests are matched on their normal form (/a/b)"),
            never("escaped", "/%61pi", "requests are matched on their normal form (/api)"),
            never(
                "escaped",
                "=/a%2fb",
                "requests with such paths are refused: the path has an encoded slash or a backslash (%2F, %5C, \\)"
            ),
            never("slashes", "//api", "requests are matched on their normal form (/api)"),
        ]
    );
}
