//! Templates in transformation values: `{header.x-user}`, `{query.page}`, `{path.id}`,
//! `{consumer.username}`. Parsed once at config load, where an unknown source or a malformed
//! placeholder is an error; `{{` and `}}` stand for literal braces.
//!
//! Header and query values are taken from the request as it reached the plugin, before any
//! plugin of the same request changed it, and only the ones some template names are copied
//! ([`capture`]); path captures and the consumer are read when rendering. A template that names
//! something the request does not have renders to nothing, and the operation using it is skipped.

use super::query;
use http::HeaderName;
use meshgate_core::{Authenticated, PathParams};

/// A request value that templates read and that must be copied before the request changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// A request header (all its values, joined with `, `).
    Header(HeaderName),
    /// A query argument (its first value, decoded).
    Query(String),
}

/// The copied sources of one plugin, deduplicated; a template refers to them by index.
#[derive(Default, Debug)]
pub(crate) struct Sources(pub(crate) Vec<Source>);

impl Sources {
    fn index(&mut self, s: Source) -> usize {
        match self.0.iter().position(|x| *x == s) {
            Some(i) => i,
            None => {
                self.0.push(s);
                self.0.len() - 1
            }
        }
    }
}

/// The values of a plugin's [`Sources`] for one request, in the same order.
#[derive(Clone, Debug, Default)]
pub(crate) struct Captured(Vec<Option<String>>);

/// Copies the values of `sources` from a request head.
pub(crate) fn capture(sources: &Sources, req: &http::request::Parts) -> Captured {
    let mut args: Option<Vec<(String, String)>> = None;
    let values = sources
        .0
        .iter()
        .map(|s| match s {
            Source::Header(name) => {
                let mut all = req.headers.get_all(name).iter();
                let first = all.next()?;
                let mut v = String::from_utf8_lossy(first.as_bytes()).into_owned();
                for more in all {
                    v.push_str(", ");
                    v.push_str(&String::from_utf8_lossy(more.as_bytes()));
                }
                Some(v)
            }
            Source::Query(name) => {
                let args = args.get_or_insert_with(|| query::decoded_pairs(req.uri.query().unwrap_or("")));
                args.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
            }
        })
        .collect();
    Captured(values)
}

/// What a template reads when it renders.
pub(crate) struct Scope<'a> {
    /// The copied header and query values.
    pub(crate) captured: Option<&'a Captured>,
    /// The route's regex path captures.
    pub(crate) path: Option<&'a PathParams>,
    /// Who the caller is.
    pub(crate) auth: Option<&'a Authenticated>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConsumerField {
    Username,
    CustomId,
    Groups,
}

#[derive(Debug, PartialEq, Eq)]
enum Part {
    Lit(String),
    Captured(usize),
    Path(Box<str>),
    Consumer(ConsumerField),
}

/// A parsed template string.
#[derive(Debug)]
pub(crate) struct Template(Vec<Part>);

/// The sources templates may name, for error messages.
const KNOWN: &str = "header, query, path, consumer";

impl Template {
    /// Parses `text`, registering the header and query values it reads in `sources`.
    pub(crate) fn parse(text: &str, sources: &mut Sources) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(i) = rest.find(['{', '}']) {
            lit.push_str(&rest[..i]);
            let brace = rest.as_bytes()[i];
            let after = &rest[i + 1..];
            if after.as_bytes().first() == Some(&brace) {
                // `{{` or `}}`: a literal brace.
                lit.push(brace as char);
                rest = &after[1..];
                continue;
            }
            if brace == b'}' {
                lit.push('}');
                rest = after;
                continue;
            }
            let Some(end) = after.find('}') else {
                return Err(format!("unclosed `{{` in {text:?} (write `{{{{` for a literal brace)"));
            };
            let inner = &after[..end];
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            parts.push(placeholder(inner, sources).map_err(|m| format!("{m} in {text:?}"))?);
            rest = &after[end + 1..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template(parts))
    }

    /// The text, when the template has no placeholder.
    pub(crate) fn literal(&self) -> Option<&str> {
        match self.0.as_slice() {
            [] => Some(""),
            [Part::Lit(s)] => Some(s),
            _ => None,
        }
    }

    /// Whether the template reads a header or query value (then requests must be captured).
    pub(crate) fn reads_captured(&self) -> bool {
        self.0.iter().any(|p| matches!(p, Part::Captured(_)))
    }

    /// The rendered text, or `None` when a placeholder names something the request lacks.
    pub(crate) fn render(&self, scope: &Scope<'_>) -> Option<String> {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Captured(i) => out.push_str(scope.captured?.0.get(*i)?.as_deref()?),
                Part::Path(name) => out.push_str(scope.path?.get(name)?),
                Part::Consumer(field) => {
                    let c = &scope.auth?.consumer;
                    match field {
                        ConsumerField::Username => out.push_str(&c.username),
                        ConsumerField::CustomId => out.push_str(c.custom_id.as_deref()?),
                        ConsumerField::Groups => {
                            if c.groups.is_empty() {
                                return None;
                            }
                            for (i, g) in c.groups.iter().enumerate() {
                                if i > 0 {
                                    out.push_str(", ");
                                }
                                out.push_str(g);
                            }
                        }
                    }
                }
            }
        }
        Some(out)
    }
}

fn placeholder(inner: &str, sources: &mut Sources) -> Result<Part, String> {
    let Some((source, name)) = inner.split_once('.') else {
        return Err(format!("`{{{inner}}}` is not `{{source.name}}` (sources: {KNOWN})"));
    };
    if name.is_empty() {
        return Err(format!("`{{{inner}}}` names no {source}"));
    }
    match source {
        "header" => {
            let h = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("invalid header name {name:?}"))?;
            Ok(Part::Captured(sources.index(Source::Header(h))))
        }
        "query" => Ok(Part::Captured(sources.index(Source::Query(name.to_owned())))),
        "path" => Ok(Part::Path(name.into())),
        "consumer" => match name {
            "username" => Ok(Part::Consumer(ConsumerField::Username)),
            "custom_id" => Ok(Part::Consumer(ConsumerField::CustomId)),
            "groups" => Ok(Part::Consumer(ConsumerField::Groups)),
            _ => Err(format!("unknown consumer field {name:?} (known: username, custom_id, groups)")),
        },
        _ => Err(format!("unknown template source {source:?} (known: {KNOWN})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshgate_core::Consumer;
    use std::sync::Arc;

    fn parse(s: &str) -> Result<(Template, Sources), String> {
        let mut sources = Sources::default();
        Template::parse(s, &mut sources).map(|t| (t, sources))
    }

    #[test]
    fn renders_every_source() {
        let (t, sources) =
            parse("u={consumer.username} id={path.id} p={query.page} h={header.X-User} g={consumer.groups}").unwrap();
        assert_eq!(sources.0.len(), 2);
        let req = http::Request::builder()
            .uri("/users/7?page=2%20b&x=1")
            .header("x-user", "alice")
            .header("x-user", "bob")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let captured = capture(&sources, &req);
        let path = PathParams(vec![("id".into(), "7".to_owned())]);
        let consumer = Arc::new(Consumer::new("carol", None, vec!["ops".into(), "dev".into()]));
        let auth = Authenticated { consumer, credential: None, anonymous: false };
        let scope = Scope { captured: Some(&captured), path: Some(&path), auth: Some(&auth) };
        assert_eq!(t.render(&scope).unwrap(), "u=carol id=7 p=2 b h=alice, bob g=ops, dev");
        // Anything missing: nothing is rendered.
        let scope = Scope { captured: Some(&captured), path: None, auth: Some(&auth) };
        assert_eq!(t.render(&scope), None);
        let (t, _) = parse("{consumer.custom_id}").unwrap();
        assert_eq!(t.render(&Scope { captured: None, path: None, auth: Some(&auth) }), None);
    }

    #[test]
    fn literals_and_escaped_braces() {
        let (t, s) = parse("plain").unwrap();
        assert_eq!((t.literal(), s.0.len()), (Some("plain"), 0));
        let (t, _) = parse("{{\"json\": 1}} and }").unwrap();
        assert_eq!(t.literal(), Some("{\"json\": 1} and }"));
        assert_eq!(parse("").unwrap().0.literal(), Some(""));
        let (t, _) = parse("{{{path.id}}}").unwrap();
        let path = PathParams(vec![("id".into(), "9".to_owned())]);
        assert_eq!(t.render(&Scope { captured: None, path: Some(&path), auth: None }).unwrap(), "{9}");
        assert!(!t.reads_captured());
    }

    #[test]
    fn errors_name_the_problem() {
        let err = |s| parse(s).err().unwrap();
        assert_eq!(
            err("a {cookie.session}"),
            "unknown template source \"cookie\" (known: header, query, path, consumer) in \"a {cookie.session}\""
        );
        assert!(err("{header.x").starts_with("unclosed `{`"), "{}", err("{header.x"));
        assert!(err("{page}").starts_with("`{page}` is not `{source.name}`"));
        assert!(err("{query.}").starts_with("`{query.}` names no query"));
        assert!(err("{consumer.email}").starts_with("unknown consumer field \"email\""));
        assert!(err("{header.bad name}").starts_with("invalid header name"));
    }
}
