//! Templates: `{source.name}` in the transformers' values (compiled by `request-transformer`
//! at config load, rendered per request) and in aggregation backend paths
//! (`meshgate_config::aggregate::parse_template`). The first line of the input is the template,
//! the rest a request head (`METHOD URI`, then `name: value` lines). Invariants: a template
//! without placeholders renders to itself (its `{{`/`}}` unescaped); an aggregation template
//! written back from its parsed pieces parses to the same pieces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshgate_config::aggregate::{Piece, Placeholder, parse_template};
use meshgate_core::{Built, Consumers, PathParams};
use meshgate_fuzz::{block_on, build, build_context, parse_head, request_ctx};
use meshgate_plugins::transform::request_transformer::Factory;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (template, head) = text.split_once('\n').unwrap_or((text, "GET /"));
    aggregation(template);
    let config = serde_json::json!({
        "add": { "headers": { "x-t": template }, "query": { "t": template }, "json": { "t": template } },
        "append": { "headers": { "x-a": template } },
    });
    let Some(Built::Plugin(plugin)) = build(&Factory, &config, &build_context(Consumers::default())) else { return };
    let mut cx = request_ctx(parse_head(head));
    cx.request.headers.remove("x-t");
    cx.vars.insert(PathParams(vec![("id".into(), "7".to_owned())]));
    block_on(plugin.on_request(&mut cx));
    assert!(cx.request.uri.to_string().parse::<http::Uri>().is_ok(), "{}", cx.request.uri);
    if !template.contains(['{', '}']) {
        let value = cx.request.headers.get("x-t").expect("a fixed header value is always set");
        assert_eq!(value.as_bytes(), template.as_bytes());
    }
});

fn aggregation(template: &str) {
    let Ok(pieces) = parse_template(template) else { return };
    let mut written = String::new();
    for piece in &pieces {
        match piece {
            Piece::Literal(s) => written.push_str(&s.replace('{', "{{").replace('}', "}}")),
            Piece::Value(Placeholder::Path(n)) => written.push_str(&format!("{{path.{n}}}")),
            Piece::Value(Placeholder::Query(n)) => written.push_str(&format!("{{query.{n}}}")),
            Piece::Value(Placeholder::Header(n)) => written.push_str(&format!("{{header.{n}}}")),
            Piece::Value(Placeholder::Resp { backend, field }) => {
                written.push_str(&format!("{{resp.{backend}.{}}}", field.join(".")))
            }
        }
    }
    assert_eq!(parse_template(&written).as_ref(), Ok(&pieces), "{written:?}");
}
