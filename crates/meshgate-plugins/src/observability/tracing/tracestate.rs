//! W3C `tracestate`: the vendors' entries that travel beside `traceparent`, checked before they
//! go on.
//!
//! The gateway adds no entry of its own (it is no vendor with state to keep), so it passes the
//! list on as it came when that is valid: one header untouched (no copy), several combined into
//! one, in order, as the spec asks. A list goes only with the trace it describes, so it is
//! dropped when no valid `traceparent` came or the trace restarts; and it is dropped whole when
//! any member is invalid or there are more than 32, as the W3C test suite expects (a partial
//! list would misstate what the vendors wrote). Keys follow Level 2's grammar, which admits
//! every Level 1 key (`tenant@system` included). Nothing is truncated: a valid list is at most
//! 32 members of 513 characters, and the gateway's header limits bound it first.

use http::{HeaderMap, HeaderValue};

/// What becomes of a request's `tracestate` headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// One valid header: it goes on as it is.
    Keep,
    /// Invalid, empty, or with no trace to go with: removed.
    Drop,
    /// Several headers, valid together: this one instead.
    Combine(HeaderValue),
}

/// The verdict on the `tracestate` headers of `headers` (at least one).
pub fn check(headers: &HeaderMap) -> Verdict {
    let values = headers.get_all(&super::context::TRACESTATE);
    let mut members = 0;
    if !values.iter().all(|v| list(v.as_bytes(), &mut members)) {
        return Verdict::Drop;
    }
    match (members, values.iter().count()) {
        (0, _) => Verdict::Drop,
        (_, 1) => Verdict::Keep,
        _ => {
            // Rare (several headers): one value, made of each header's list without the
            // whitespace and empty members around it.
            let mut joined = Vec::new();
            let ends = |b: &u8| matches!(b, b',' | b' ' | b'\t');
            for v in values.iter().map(|v| trim(v.as_bytes(), ends)).filter(|v| !v.is_empty()) {
                if !joined.is_empty() {
                    joined.push(b',');
                }
                joined.extend_from_slice(v);
            }
            HeaderValue::from_bytes(&joined).map_or(Verdict::Drop, Verdict::Combine)
        }
    }
}

/// `v` without the bytes `cut` takes at either end.
fn trim(v: &[u8], cut: impl Fn(&u8) -> bool) -> &[u8] {
    let start = v.iter().position(|b| !cut(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !cut(b)).map_or(start, |i| i + 1);
    &v[start..end]
}

/// Checks one header's list, counting its members into `count`: false when a member is
/// invalid or the count passes 32. Empty members (and whitespace around members) are allowed.
fn list(v: &[u8], count: &mut usize) -> bool {
    for member in v.split(|&b| b == b',') {
        let m = member.trim_ascii();
        if m.is_empty() {
            continue;
        }
        *count += 1;
        if *count > 32 || !self::member(m) {
            return false;
        }
    }
    true
}

/// `key=value`: a key of 1 to 256 characters, a lower-case letter or digit first, then lower-case
/// letters, digits, `_`, `-`, `*`, `/`, `@`; a value of 1 to 256 printable ASCII characters
/// but `,` and `=`, not ending in a space (trailing spaces are optional whitespace, already cut).
fn member(m: &[u8]) -> bool {
    let Some(eq) = m.iter().position(|&b| b == b'=') else { return false };
    let (key, value) = (&m[..eq], &m[eq + 1..]);
    let key_ok = matches!(key.first(), Some(b'a'..=b'z' | b'0'..=b'9'))
        && key.len() <= 256
        && key.iter().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/' | b'@'));
    let value_ok = (1..=256).contains(&value.len())
        && value.last() != Some(&b' ')
        && value.iter().all(|&b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=');
    key_ok && value_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(values: &[&str]) -> Verdict {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("tracestate", HeaderValue::from_str(v).unwrap());
        }
        check(&h)
    }

    #[test]
    fn one_header_goes_on_untouched() {
        assert_eq!(verdict(&["rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"]), Verdict::Keep);
        assert_eq!(verdict(&["a=1 ,, \t b=2 "]), Verdict::Keep, "empty members and whitespace are allowed");
        for dropped in [&[""][..], &[" , "], &["A=1"], &["a=1,=2"], &["a=1,b"], &["a=b=c"], &["a=x\ty"]] {
            assert_eq!(verdict(dropped), Verdict::Drop, "{dropped:?}");
        }
    }

    #[test]
    fn several_headers_are_combined() {
        let one = |s: &str| Verdict::Combine(HeaderValue::from_str(s).unwrap());
        assert_eq!(verdict(&["a=1, b=2 ", "", "\tc=3"]), one("a=1, b=2,c=3"));
        assert_eq!(verdict(&["a=1,", ", b=2,,"]), one("a=1,b=2"), "no empty members at the seams");
        assert_eq!(verdict(&["a=1", " , "]), one("a=1"));
        assert_eq!(verdict(&["", " "]), Verdict::Drop);
        assert_eq!(verdict(&["a=1", "B=2"]), Verdict::Drop, "an invalid member drops every header");
    }
}
