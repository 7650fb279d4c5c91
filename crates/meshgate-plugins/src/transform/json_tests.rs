use super::*;
use crate::transform::template::capture;
use meshgate_core::PathParams;
use serde_json::json;

fn path(s: &str) -> Path {
    Path::parse(s).unwrap()
}

fn value(v: serde_json::Value) -> JsonValue {
    JsonValue::compile(&v, &mut Sources::default()).unwrap()
}

const NONE: Scope<'static> = Scope { captured: None, path: None, auth: None };

fn run(ops: &JsonOps, body: &str) -> String {
    match ops.apply(body.as_bytes(), &NONE) {
        Outcome::Changed(b) => String::from_utf8(b).unwrap(),
        Outcome::Unchanged => body.to_owned(),
        Outcome::Invalid => panic!("{body} is valid JSON"),
    }
}

#[test]
fn paths_parse_with_escapes_and_refuse_empty_names() {
    assert_eq!(path("user.address.city").0, ["user", "address", "city"]);
    assert_eq!(path(r"a\.b.c\\d").0, ["a.b", r"c\d"]);
    for bad in ["", "a..b", ".a", "a.", r"a\x"] {
        assert!(Path::parse(bad).is_err(), "{bad:?}");
    }
    assert_eq!(Path::parse("a..b").unwrap_err(), "empty field name in path \"a..b\"");
}

#[test]
fn remove_nested_and_every_duplicate() {
    let ops =
        JsonOps { remove: vec![path("user.password"), path("dup"), path("nope.x"), path("n.x")], ..Default::default() };
    let body = r#"{"dup":1,"user":{"name":"a","password":"s"},"n":5,"dup":2}"#;
    assert_eq!(run(&ops, body), r#"{"user":{"name":"a"},"n":5}"#);
}

#[test]
fn untouched_values_keep_their_exact_text() {
    // Numbers past f64, number formats, escapes, key order and inner whitespace survive.
    let ops = JsonOps { add: vec![(path("z"), value(json!(true)))], ..Default::default() };
    let body =
        r#"{ "big": 123456789012345678901234567890, "f": 1.50, "e": "\u00e9\n", "b": [ 1, 2 ], "a": {"k" : 1} }"#;
    assert_eq!(
        run(&ops, body),
        r#"{"big":123456789012345678901234567890,"f":1.50,"e":"\u00e9\n","b":[ 1, 2 ],"a":{"k" : 1},"z":true}"#
    );
    // Nothing to do: the body is not rewritten at all.
    let ops = JsonOps { remove: vec![path("absent")], ..Default::default() };
    assert_eq!(ops.apply(body.as_bytes(), &NONE), Outcome::Unchanged);
}

#[test]
fn rename_in_place_across_objects_and_never_losing_a_value() {
    let ops = JsonOps {
        rename: vec![
            (path("a"), path("b")),
            (path("user.name"), path("profile.full_name")),
            (path("keep"), path("n.x")),
            (path("missing"), path("y")),
        ],
        ..Default::default()
    };
    let body = r#"{"a":1,"b":0,"c":2,"user":{"name":"Ann","id":7},"keep":true,"n":3}"#;
    assert_eq!(run(&ops, body), r#"{"b":1,"c":2,"user":{"id":7},"keep":true,"n":3,"profile":{"full_name":"Ann"}}"#);
}

#[test]
fn replace_only_what_exists_add_only_what_does_not() {
    let ops = JsonOps {
        replace: vec![(path("user.role"), value(json!("guest"))), (path("user.absent"), value(json!(1)))],
        add: vec![
            (path("user.role"), value(json!("admin"))),
            (path("meta.source.name"), value(json!({"gw": ["meshgate", 1]}))),
            (path("count.x"), value(json!(1))),
        ],
        ..Default::default()
    };
    let body = r#"{"user":{"role":"admin"},"count":3}"#;
    assert_eq!(
        run(&ops, body),
        r#"{"user":{"role":"guest"},"count":3,"meta":{"source":{"name":{"gw":["meshgate",1]}}}}"#
    );
}

#[test]
fn added_objects_can_be_changed_by_later_operations() {
    let ops = JsonOps {
        replace: vec![(path("a.b"), value(json!({"c": 1})))],
        add: vec![(path("a.b.d"), value(json!(2)))],
        ..Default::default()
    };
    assert_eq!(run(&ops, r#"{"a":{"b":null}}"#), r#"{"a":{"b":{"c":1,"d":2}}}"#);
}

#[test]
fn templates_render_into_strings_anywhere_in_a_value() {
    let mut sources = Sources::default();
    let v =
        JsonValue::compile(&json!({"by": "{header.x-user}", "id": "{path.id}", "n": 1, "lit": "{{x}}"}), &mut sources)
            .unwrap();
    assert!(v.reads_captured());
    let missing = JsonValue::compile(&json!("{path.nope}"), &mut sources).unwrap();
    let ops = JsonOps { add: vec![(path("meta"), v), (path("m"), missing)], ..Default::default() };
    let req = http::Request::builder().header("x-user", "a\"b").body(()).unwrap().into_parts().0;
    let captured = capture(&sources, &req);
    let params = PathParams(vec![("id".into(), "7".to_owned())]);
    let scope = Scope { captured: Some(&captured), path: Some(&params), auth: None };
    let Outcome::Changed(out) = ops.apply(b"{}", &scope) else { panic!("changed") };
    assert_eq!(String::from_utf8(out).unwrap(), r#"{"meta":{"by":"a\"b","id":"7","lit":"{x}","n":1}}"#);
}

#[test]
fn invalid_bodies_are_reported_not_mangled() {
    let ops = JsonOps { remove: vec![path("a")], ..Default::default() };
    for bad in [&b"{\"a\":}"[..], b"{\"a\":1", b"not json", b"{\"a\":1} x", b"", b"{\"a\":\"\xff\"}"] {
        assert_eq!(ops.apply(bad, &NONE), Outcome::Invalid, "{:?}", String::from_utf8_lossy(bad));
    }
    // Valid JSON that is not an object: no path matches.
    assert_eq!(ops.apply(b"[1,{\"a\":2}]", &NONE), Outcome::Unchanged);
    assert_eq!(ops.apply(b" 42 ", &NONE), Outcome::Unchanged);
}
