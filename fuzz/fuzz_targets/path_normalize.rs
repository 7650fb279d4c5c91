//! The path normaliser (`meshgate_router::normalize`), which decides what path routing, access
//! control and the upstream see. The first byte picks the rules (merge slashes or not; escaped
//! slashes rejected, kept or decoded), the rest is the path. Invariants: a normal form is a valid
//! URI path that starts with `/`, holds no `.`/`..` segment, no escape of an unreserved character
//! and no lower-case escape (nor `//` when slashes merge, nor an escaped slash unless kept), and
//! is its own normal form; a path the http crate accepts is either refused or has a normal form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshgate_config::model::EscapedSlashes;
use meshgate_router::{PathRules, normalize};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let Ok(path) = std::str::from_utf8(rest) else { return };
    let escaped = [EscapedSlashes::Reject, EscapedSlashes::Keep, EscapedSlashes::Decode][usize::from(first % 3)];
    let rules = PathRules { merge_slashes: first & 0x80 != 0, escaped_slashes: escaped };
    // Only what a request can carry: the path the http crate reads from the request target.
    let Ok(target) = path.parse::<http::uri::PathAndQuery>() else { return };
    let path = target.path();
    if !path.starts_with('/') {
        return;
    }
    let Ok(normal) = normalize(path, rules) else { return };
    let normal = normal.unwrap_or_else(|| path.to_owned());
    assert!(normal.starts_with('/'), "{path:?} -> {normal:?}");
    assert!(normal.parse::<http::uri::PathAndQuery>().is_ok(), "{path:?} -> {normal:?} is not a valid path");
    for seg in normal.split('/').skip(1) {
        assert!(seg != "." && seg != "..", "{path:?} -> {normal:?} keeps a dot-segment");
    }
    if rules.merge_slashes {
        assert!(!normal.contains("//"), "{path:?} -> {normal:?} keeps //");
    }
    let bytes = normal.as_bytes();
    for (i, _) in normal.match_indices('%') {
        let hex = &bytes[i + 1..i + 3];
        assert!(
            hex.iter().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b)),
            "{path:?} -> {normal:?}: escape not upper case"
        );
        let byte = u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
        assert!(
            !(byte.is_ascii_alphanumeric() || b"-._~".contains(&byte)),
            "{path:?} -> {normal:?}: unreserved left escaped"
        );
        if matches!(byte, b'/' | b'\\') {
            assert_eq!(rules.escaped_slashes, EscapedSlashes::Keep, "{path:?} -> {normal:?}");
        }
    }
    assert!(!normal.contains('\\'), "{path:?} -> {normal:?} keeps a backslash");
    assert_eq!(normalize(&normal, rules), Ok(None), "{path:?} -> {normal:?} is not its own normal form");
});
