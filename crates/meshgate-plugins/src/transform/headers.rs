//! Header operations, the same on requests and responses.

use super::template::Scope;
use super::{Ops, Value};
use http::{HeaderMap, HeaderName, HeaderValue};

/// The header operations of a transformer, in the order they run.
pub(crate) type HeaderOps = Ops<HeaderName, HeaderValue>;

impl Value<HeaderValue> {
    /// The value for this request; `None` when a template names something the request lacks or
    /// renders to something that cannot be a header value (a line break).
    fn header(&self, scope: &Scope<'_>) -> Option<HeaderValue> {
        match self {
            Value::Const(v) => Some(v.clone()),
            Value::Template(t) => HeaderValue::from_str(&t.render(scope)?).ok(),
        }
    }
}

impl HeaderOps {
    /// Applies every operation: remove, rename (the values move, replacing any under the new
    /// name), replace (only headers that are there), add (only headers that are not), append.
    pub(crate) fn apply(&self, h: &mut HeaderMap, scope: &Scope<'_>) {
        for name in &self.remove {
            h.remove(name);
        }
        for (from, to) in &self.rename {
            if !h.contains_key(from) {
                continue;
            }
            let values: Vec<HeaderValue> = match h.entry(from) {
                http::header::Entry::Occupied(e) => e.remove_entry_mult().1.collect(),
                http::header::Entry::Vacant(_) => continue,
            };
            h.remove(to);
            for v in values {
                h.append(to.clone(), v);
            }
        }
        for (name, value) in &self.replace {
            if h.contains_key(name)
                && let Some(v) = value.header(scope)
            {
                h.insert(name.clone(), v);
            }
        }
        for (name, value) in &self.add {
            if !h.contains_key(name)
                && let Some(v) = value.header(scope)
            {
                h.insert(name.clone(), v);
            }
        }
        for (name, value) in &self.append {
            if let Some(v) = value.header(scope) {
                h.append(name.clone(), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::template::{Sources, Template, capture};
    use meshgate_core::PathParams;

    #[test]
    fn every_operation_in_order() {
        let mut sources = Sources::default();
        let mut v = |s: &str| Value::compile(Template::parse(s, &mut sources).unwrap(), HeaderValue::from_str).unwrap();
        let name = |s: &str| HeaderName::from_bytes(s.as_bytes()).unwrap();
        let ops = HeaderOps {
            remove: vec![name("x-debug")],
            rename: vec![(name("x-old"), name("x-new")), (name("x-gone"), name("x-never"))],
            replace: vec![(name("x-env"), v("prod")), (name("x-absent"), v("no"))],
            add: vec![
                (name("x-user"), v("{header.x-who}/{path.id}")),
                (name("x-env"), v("dev")),
                (name("x-m"), v("{path.missing}")),
            ],
            append: vec![(name("x-tag"), v("gw"))],
        };
        let req = http::Request::builder()
            .header("x-debug", "1")
            .header("x-old", "a")
            .header("x-old", "b")
            .header("x-new", "overwritten")
            .header("x-env", "stage")
            .header("x-tag", "client")
            .header("x-who", "alice")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let captured = capture(&sources, &req);
        let path = PathParams(vec![("id".into(), "42".to_owned())]);
        let mut h = req.headers.clone();
        ops.apply(&mut h, &Scope { captured: Some(&captured), path: Some(&path), auth: None });
        let all = |n: &str| h.get_all(n).iter().map(|v| v.to_str().unwrap()).collect::<Vec<_>>();
        assert!(!h.contains_key("x-debug") && !h.contains_key("x-old") && !h.contains_key("x-never"));
        assert_eq!(all("x-new"), ["a", "b"]);
        assert_eq!(all("x-env"), ["prod"]);
        assert!(!h.contains_key("x-absent"));
        assert_eq!(all("x-user"), ["alice/42"]);
        assert!(!h.contains_key("x-m"), "a template naming a missing capture skips its operation");
        assert_eq!(all("x-tag"), ["client", "gw"]);
    }
}
