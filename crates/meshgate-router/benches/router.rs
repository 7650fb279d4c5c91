//! `Router::find` with 10 and with 10,000 routes: the indexes should make them cost about the
//! same.

#![allow(missing_docs)] // criterion's macros generate undocumented items.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method};
use meshgate_config::PathPattern;
use meshgate_router::{RequestView, RouteSpec, Router};
use std::hint::black_box;

fn spec(name: String, hosts: Vec<String>, paths: Vec<PathPattern>) -> RouteSpec {
    RouteSpec { name, hosts, paths, methods: vec![], headers: vec![], priority: 0 }
}

/// `n` service routes (host `svcN.example.com`, prefix `/svcN/`), one in ten also with an exact
/// path, plus 50 hostless prefixes and a hostless fallback.
fn routes(n: usize) -> Router<usize> {
    let mut list = Vec::new();
    for i in 0..n {
        let mut paths = vec![PathPattern::Prefix(format!("/svc{i}/"))];
        if i % 10 == 0 {
            paths.push(PathPattern::Exact(format!("/svc{i}/health")));
        }
        list.push(spec(format!("svc{i}"), vec![format!("svc{i}.example.com")], paths));
    }
    for i in 0..50 {
        list.push(spec(format!("static{i}"), vec![], vec![PathPattern::Prefix(format!("/static/{i}/"))]));
    }
    list.push(spec("fallback".into(), vec![], vec![]));
    let len = list.len();
    Router::build(list.into_iter().zip(0..len).collect()).unwrap()
}

fn bench(c: &mut Criterion) {
    let headers = HeaderMap::new();
    let method = Method::GET;
    let mut group = c.benchmark_group("find");
    for n in [10usize, 10_000] {
        let router = routes(n);
        let last = n - 1;
        let hit_host = format!("svc{last}.example.com");
        let hit_path = format!("/svc{last}/users/42");
        let requests = [
            ("host+prefix", Some(hit_host.as_str()), hit_path.as_str()),
            ("host+exact", Some("svc0.example.com"), "/svc0/health"),
            ("hostless-prefix", Some("unknown.example.com"), "/static/7/app.js"),
            ("fallback", None, "/nothing/here"),
        ];
        for (what, host, path) in requests {
            let req = RequestView { host, path, method: &method, headers: &headers };
            assert!(router.find(&req).is_some());
            group.bench_with_input(BenchmarkId::new(what, n), &req, |b, req| {
                b.iter(|| black_box(router.find(black_box(req)).map(|m| m.route_index)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
