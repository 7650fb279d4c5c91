//! 10,000 routes: building, lookups, analysis.

use super::{R, find, r, req, router};
use http::Method;
use std::time::Instant;

/// `svcN.example.com` + `/svcN` per service, a few hostless prefixes and regexes, and a
/// wildcard tenant route.
fn big() -> Vec<R> {
    let mut routes: Vec<R> = (0..10_000)
        .map(|i| {
            let route = r(&format!("svc{i}")).hosts(&[&format!("svc{i}.example.com")]).paths(&[&format!("/svc{i}")]);
            if i % 10 == 0 { route.methods(&["GET"]) } else { route }
        })
        .collect();
    routes.extend((0..100).map(|i| r(&format!("static{i}")).paths(&[&format!("/static/{i}/")])));
    routes.extend((0..20).map(|i| r(&format!("re{i}")).paths(&[&format!("~/items/{i}/\\d+$")])));
    routes.push(r("tenants").hosts(&["*.tenants.example.com"]));
    routes.push(r("fallback"));
    routes
}

#[test]
fn ten_thousand_routes() {
    let start = Instant::now();
    let router = router(&big());
    let built = start.elapsed();
    assert_eq!(router.len(), 10_122);
    // (host, path, winner and matched length)
    type Case = (&'static str, &'static str, Option<(&'static str, usize)>);
    let cases: &[Case] = &[
        ("svc0.example.com", "/svc0/users", Some(("svc0", 5))),
        ("SVC4321.example.com:443", "/svc4321", Some(("svc4321", 8))),
        ("svc9999.example.com", "/svc9999x", Some(("svc9999", 8))),
        // svc1's path on svc2's host: only hostless routes remain.
        ("svc2.example.com", "/svc1/x", Some(("fallback", 0))),
        ("svc2.example.com", "/static/42/a.css", Some(("static42", 11))),
        ("", "/static/7/", Some(("static7", 10))),
        ("", "/items/13/123", Some(("re13", 13))),
        ("", "/items/13/12x", Some(("fallback", 0))),
        ("a.b.tenants.example.com", "/svc1", Some(("tenants", 0))),
        ("nobody.example.com", "/svc1", Some(("fallback", 0))),
    ];
    for &(host, path, want) in cases {
        let got = find(&router, &req(host, path));
        assert_eq!(got, want.map(|(n, l)| (n.to_string(), l)), "{host} {path}");
    }
    // svc10 accepts GET only; POST falls through to the fallback.
    let post = req("svc10.example.com", "/svc10").method(Method::POST);
    assert_eq!(find(&router, &post), Some(("fallback".into(), 0)));
    // Every service route is found on its own host.
    for i in (0..10_000).step_by(37) {
        let host: &'static str = Box::leak(format!("svc{i}.example.com").into_boxed_str());
        let path: &'static str = Box::leak(format!("/svc{i}/x").into_boxed_str());
        assert_eq!(find(&router, &req(host, path)).map(|m| m.0), Some(format!("svc{i}")));
    }
    let start = Instant::now();
    assert_eq!(router.analyze(), vec![]);
    // Generous bounds: these catch quadratic behaviour, not slow machines.
    assert!(built.as_secs() < 20, "build took {built:?}");
    assert!(start.elapsed().as_secs() < 20, "analyze took {:?}", start.elapsed());
}
