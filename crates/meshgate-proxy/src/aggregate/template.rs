//! Backend path templates, compiled once per config: literal text and placeholders filled per
//! request from the route's path captures, the query, headers, or an earlier backend's answer.
//!
//! Values are percent-encoded on the way in, except for `%XX` escapes they already carry (path
//! captures and query values are taken from the URL as sent): a value can never add a path
//! segment, a query parameter or a fragment to the backend's URL.

use meshgate_config::aggregate::{Piece as ConfigPiece, Placeholder};
use meshgate_core::{PathParams, RequestCtx};
use serde_json::Value;
use std::collections::HashMap;

/// A compiled backend path.
pub(crate) struct PathTemplate {
    pieces: Box<[Piece]>,
}

enum Piece {
    Literal(String),
    Path(String),
    Query(String),
    Header(http::HeaderName),
    /// An earlier backend's answer (by index), at a JSON pointer.
    Resp {
        backend: usize,
        pointer: String,
        shown: String,
    },
}

impl PathTemplate {
    /// Compiles parsed pieces; `index` finds backends by name. `None` for a name it does not
    /// know (validation reported it).
    pub(crate) fn compile(pieces: Vec<ConfigPiece>, index: &HashMap<&str, usize>) -> Option<PathTemplate> {
        let pieces = pieces
            .into_iter()
            .map(|p| {
                Some(match p {
                    ConfigPiece::Literal(s) => Piece::Literal(s),
                    ConfigPiece::Value(Placeholder::Path(n)) => Piece::Path(n),
                    ConfigPiece::Value(Placeholder::Query(n)) => Piece::Query(n),
                    ConfigPiece::Value(Placeholder::Header(n)) => Piece::Header(n.parse().ok()?),
                    ConfigPiece::Value(Placeholder::Resp { backend, field }) => {
                        let pointer = field.iter().map(|k| format!("/{}", k.replace('~', "~0").replace('/', "~1")));
                        Piece::Resp {
                            backend: *index.get(backend.as_str())?,
                            pointer: pointer.collect(),
                            shown: format!("{{resp.{backend}.{}}}", field.join(".")),
                        }
                    }
                })
            })
            .collect::<Option<_>>()?;
        Some(PathTemplate { pieces })
    }

    /// The path and query for this request. Request values that are absent render empty; an
    /// answer value that is absent (or not a string, number or boolean) is an error, because the
    /// call it feeds would be wrong.
    pub(crate) fn render<'a>(
        &self,
        cx: &RequestCtx,
        answer: impl Fn(usize) -> Option<&'a Value>,
    ) -> Result<String, String> {
        let mut out = String::new();
        for p in self.pieces.iter() {
            match p {
                Piece::Literal(s) => out.push_str(s),
                Piece::Path(name) => {
                    let v = cx.vars.get::<PathParams>().and_then(|p| p.get(name));
                    encode(&mut out, v.unwrap_or(""));
                }
                Piece::Query(name) => encode(&mut out, query_value(cx.request.uri.query(), name).unwrap_or("")),
                Piece::Header(name) => {
                    let v = cx.request.headers.get(name).map(|v| v.as_bytes()).unwrap_or_default();
                    encode(&mut out, &String::from_utf8_lossy(v));
                }
                Piece::Resp { backend, pointer, shown } => match answer(*backend).and_then(|a| a.pointer(pointer)) {
                    Some(Value::String(s)) => encode(&mut out, s),
                    Some(v @ (Value::Number(_) | Value::Bool(_))) => encode(&mut out, &v.to_string()),
                    Some(_) => return Err(format!("{shown} is not a string, number or boolean")),
                    None => return Err(format!("{shown} is not in the answer")),
                },
            }
        }
        Ok(out)
    }
}

/// The first value of query parameter `name`, as written in the URL.
fn query_value<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// Appends `value`, keeping unreserved characters and existing `%XX` escapes, escaping the rest.
fn encode(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = value.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let escape_kept = b == b'%' && bytes.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || escape_kept {
            out.push(b as char);
        } else {
            out.extend(['%', HEX[usize::from(b >> 4)] as char, HEX[usize::from(b & 15)] as char]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn compile(text: &str) -> PathTemplate {
        let index = HashMap::from([("user", 0)]);
        PathTemplate::compile(meshgate_config::aggregate::parse_template(text).unwrap(), &index).unwrap()
    }

    fn request(uri: &str, headers: &[(&str, &str)]) -> RequestCtx {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let (parts, ()) = b.body(()).unwrap().into_parts();
        RequestCtx::new(parts, "127.0.0.1:1".parse().unwrap(), false)
    }

    #[test]
    fn fills_values_and_escapes_what_could_change_the_url() {
        let mut cx = request("/x?page=2&q=a%20b&q=second&flag", &[("x-user", "a/b ?c")]);
        cx.vars.insert(PathParams(vec![(Arc::from("id"), "42".to_owned())]));
        let answer = serde_json::json!({"profile": {"id": 7, "name": "Zoë/../x", "tags": ["a"]}, "ok": true});
        let t = compile("/u/{path.id}/{path.none}?p={query.page}&q={query.q}&f={query.flag}&h={header.x-user}");
        assert_eq!(t.render(&cx, |_| None).unwrap(), "/u/42/?p=2&q=a%20b&f=&h=a%2Fb%20%3Fc");
        let t = compile("/n/{resp.user.profile.name}/{resp.user.profile.id}/{resp.user.ok}");
        assert_eq!(t.render(&cx, |_| Some(&answer)).unwrap(), "/n/Zo%C3%AB%2F..%2Fx/7/true");
        let t = compile("/t/{resp.user.profile.tags}");
        assert_eq!(
            t.render(&cx, |_| Some(&answer)).unwrap_err(),
            "{resp.user.profile.tags} is not a string, number or boolean"
        );
        let t = compile("/t/{resp.user.missing}");
        assert_eq!(t.render(&cx, |_| Some(&answer)).unwrap_err(), "{resp.user.missing} is not in the answer");
    }
}
