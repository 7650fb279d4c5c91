//! Query argument operations (request side only). Arguments are matched by their decoded name;
//! arguments no operation touches keep their exact bytes, and new or changed ones are
//! percent-encoded.

use super::Ops;
use super::template::Scope;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use std::borrow::Cow;

/// Everything but RFC 3986's unreserved characters is encoded in names and values we write.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Decodes one form-encoded component (`+` is a space).
pub(crate) fn decode(s: &str) -> Cow<'_, str> {
    if s.contains('+') {
        Cow::Owned(percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned())
    } else {
        percent_decode_str(s).decode_utf8_lossy()
    }
}

/// The decoded `(name, value)` pairs of a query string.
pub(crate) fn decoded_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k).into_owned(), decode(v).into_owned())
        })
        .collect()
}

/// One argument: its decoded name and its text as it will be written (`name=value`).
struct Arg<'a> {
    name: Cow<'a, str>,
    raw: Cow<'a, str>,
}

fn encoded(name: &str, value: &str) -> String {
    format!("{}={}", utf8_percent_encode(name, ENCODE), utf8_percent_encode(value, ENCODE))
}

/// The query argument operations of a request transformer, in the order they run.
pub(crate) type QueryOps = Ops<String, String>;

impl QueryOps {
    /// The query after the operations, or `None` when nothing changed.
    pub(crate) fn apply(&self, query: &str, scope: &Scope<'_>) -> Option<String> {
        let mut args: Vec<Arg<'_>> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| Arg { name: decode(p.split_once('=').map_or(p, |(k, _)| k)), raw: Cow::Borrowed(p) })
            .collect();
        let before = args.len();
        let mut changed = false;
        args.retain(|a| !self.remove.iter().any(|r| *r == a.name));
        changed |= args.len() != before;
        for (from, to) in &self.rename {
            for a in args.iter_mut().filter(|a| a.name == from.as_str()) {
                let value = a.raw.split_once('=').map(|(_, v)| v);
                let name = utf8_percent_encode(to, ENCODE);
                a.raw = Cow::Owned(match value {
                    Some(v) => format!("{name}={v}"),
                    None => name.to_string(),
                });
                a.name = Cow::Owned(to.clone());
                changed = true;
            }
        }
        for (name, value) in &self.replace {
            if !args.iter().any(|a| a.name == name.as_str()) {
                continue;
            }
            let Some(v) = value.get(scope) else { continue };
            for a in args.iter_mut().filter(|a| a.name == name.as_str()) {
                a.raw = Cow::Owned(encoded(name, &v));
                changed = true;
            }
        }
        for (name, value) in &self.add {
            if args.iter().any(|a| a.name == name.as_str()) {
                continue;
            }
            let Some(v) = value.get(scope) else { continue };
            args.push(Arg { name: Cow::Owned(name.clone()), raw: Cow::Owned(encoded(name, &v)) });
            changed = true;
        }
        for (name, value) in &self.append {
            let Some(v) = value.get(scope) else { continue };
            args.push(Arg { name: Cow::Owned(name.clone()), raw: Cow::Owned(encoded(name, &v)) });
            changed = true;
        }
        if !changed {
            return None;
        }
        let mut out = String::with_capacity(query.len() + 32);
        for (i, a) in args.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            out.push_str(&a.raw);
        }
        Some(out)
    }
}

/// `uri` with its query replaced (`""`: no query at all).
pub(crate) fn with_query(uri: &http::Uri, query: &str) -> Option<http::Uri> {
    let path = uri.path();
    let pq = if query.is_empty() { path.to_owned() } else { format!("{path}?{query}") };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse().ok()?);
    http::Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::Value;
    use crate::transform::template::{Sources, Template};

    fn value(s: &str) -> Value<String> {
        Value::compile(Template::parse(s, &mut Sources::default()).unwrap(), |s| Ok::<_, ()>(s.to_owned())).unwrap()
    }

    const NONE: Scope<'static> = Scope { captured: None, path: None, auth: None };

    #[test]
    fn every_operation_in_order() {
        let ops = QueryOps {
            remove: vec!["debug".into()],
            rename: vec![("q".into(), "search".into())],
            replace: vec![("lang".into(), value("en")), ("absent".into(), value("x"))],
            add: vec![("page".into(), value("1")), ("lang".into(), value("fr"))],
            append: vec![("tag".into(), value("a b&c"))],
        };
        let out = ops.apply("q=caf%C3%A9&debug=1&lang=de&debug&tag=x&lang=it", &NONE).unwrap();
        assert_eq!(out, "search=caf%C3%A9&lang=en&tag=x&lang=en&page=1&tag=a%20b%26c");
        assert_eq!(decoded_pairs(&out)[0], ("search".to_owned(), "café".to_owned()));
    }

    #[test]
    fn untouched_queries_are_not_rewritten() {
        let ops = QueryOps { remove: vec!["x".into()], replace: vec![("y".into(), value("1"))], ..Default::default() };
        assert_eq!(ops.apply("a=%7e+b&&c", &NONE), None);
        // Names match decoded.
        assert_eq!(ops.apply("%78=1&b=2", &NONE).as_deref(), Some("b=2"));
        assert_eq!(ops.apply("x=1", &NONE).as_deref(), Some(""));
    }

    #[test]
    fn a_query_can_go_or_come() {
        let uri: http::Uri = "http://h/p?a=1".parse().unwrap();
        assert_eq!(with_query(&uri, "").unwrap().to_string(), "http://h/p");
        assert_eq!(with_query(&"/p".parse().unwrap(), "b=2").unwrap().to_string(), "/p?b=2");
    }
}
