//! Aggregation routes (orchestration): a route whose `backends:` are several service calls made
//! concurrently, their JSON answers shaped and merged into one object.
//!
//! Kept apart from `model.rs` because it is one feature with its own small language (path
//! templates, field paths); `model` re-exports the types. The checks that need the whole route
//! (names, dependencies, placeholders) are in [`check`], called by validation.

use crate::units::{ByteSize, Duration};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Route-wide settings of an aggregation route (`aggregate:` beside `backends:`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Aggregate {
    /// The whole route: backends that have not answered by then count as timed out, and the
    /// client gets what arrived.
    pub timeout: Duration,
    /// Largest backend answer read; a larger one fails that backend.
    pub max_body_bytes: ByteSize,
}

impl Default for Aggregate {
    fn default() -> Self {
        Aggregate { timeout: Duration::from_secs(10), max_body_bytes: ByteSize::mib(1) }
    }
}

/// One call of an aggregation route.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// Names the backend in `X-Meshgate-Incomplete`, metrics, traces and `{resp.NAME…}`;
    /// the service's name when left out.
    #[serde(default)]
    pub name: Option<String>,
    /// The service called (its balancing, health checks, retries and timeouts apply).
    pub service: String,
    /// Path and query sent, a template: `{path.NAME}`, `{query.NAME}`, `{header.NAME}`,
    /// `{resp.BACKEND.FIELD…}`.
    pub path: String,
    /// HTTP method of the call.
    #[serde(default = "get")]
    pub method: String,
    /// The whole call, retries included; the route's `aggregate.timeout` when left out.
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// Backends that must have answered before this one starts (those named in `{resp.…}`
    /// placeholders are added by themselves).
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Keep only the value at this dotted path of the answer (`data` or `data.user`).
    #[serde(default)]
    pub target: Option<String>,
    /// Keep only these fields (dotted paths reach into objects).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Remove these fields (dotted paths reach into objects); applied after `allow`.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Renames top-level fields: `{old: new}`.
    #[serde(default)]
    pub mapping: BTreeMap<String, String>,
    /// Put the answer under this key instead of merging its fields at the top level.
    #[serde(default)]
    pub group: Option<String>,
}

impl Backend {
    /// The name the backend goes by: `name`, else its service's.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.service)
    }
}

fn get() -> String {
    "GET".to_owned()
}

/// Where a placeholder of a backend path takes its value from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placeholder {
    /// A named group of the route's regex path (`{path.id}`).
    Path(String),
    /// The first value of a query parameter of the client's request (`{query.page}`).
    Query(String),
    /// The first value of a request header (`{header.x-user}`, name in lower case).
    Header(String),
    /// A field of an earlier backend's JSON answer (`{resp.orders.user.id}`).
    Resp {
        /// The backend's name.
        backend: String,
        /// Keys from the answer's top level down.
        field: Vec<String>,
    },
}

/// One piece of a path template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Text sent as written.
    Literal(String),
    /// A value, percent-encoded when sent.
    Value(Placeholder),
}

/// Parses a backend path template. `{{` and `}}` stand for literal braces.
pub fn parse_template(text: &str) -> Result<Vec<Piece>, String> {
    if !text.starts_with('/') {
        return Err(format!("path {text:?} must start with \"/\""));
    }
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(['{', '}']) {
        literal.push_str(&rest[..i]);
        let (c, after) = (rest.as_bytes()[i], &rest[i + 1..]);
        if after.as_bytes().first() == Some(&c) {
            literal.push(c as char);
            rest = &after[1..];
            continue;
        }
        if c == b'}' {
            return Err(format!("unmatched \"}}\" in {text:?} (write }}}} for a literal brace)"));
        }
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed \"{{\" in {text:?}"));
        };
        if !literal.is_empty() {
            pieces.push(Piece::Literal(std::mem::take(&mut literal)));
        }
        pieces.push(Piece::Value(placeholder(&after[..end])?));
        rest = &after[end + 1..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    Ok(pieces)
}

fn placeholder(inner: &str) -> Result<Placeholder, String> {
    let bad = || {
        format!(
            "invalid placeholder {{{inner}}}: use {{path.NAME}}, {{query.NAME}}, {{header.NAME}} or {{resp.BACKEND.FIELD}}"
        )
    };
    let (kind, name) = inner.split_once('.').ok_or_else(bad)?;
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(bad());
    }
    match kind {
        "path" => Ok(Placeholder::Path(name.to_owned())),
        "query" => Ok(Placeholder::Query(name.to_owned())),
        "header" => match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => Ok(Placeholder::Header(h.as_str().to_owned())),
            Err(_) => Err(format!("invalid header name {name:?} in {{{inner}}}")),
        },
        "resp" => {
            let (backend, field) = name.split_once('.').ok_or_else(bad)?;
            let field = field_path(field).map_err(|e| format!("{{{inner}}}: {e}"))?;
            Ok(Placeholder::Resp { backend: backend.to_owned(), field })
        }
        _ => Err(bad()),
    }
}

/// Splits a dotted field path (`data.user.id`) into its keys.
pub fn field_path(text: &str) -> Result<Vec<String>, String> {
    let keys: Vec<String> = text.split('.').map(str::to_owned).collect();
    if keys.iter().any(String::is_empty) {
        return Err(format!("invalid field path {text:?}: use keys separated by dots, e.g. data.user"));
    }
    Ok(keys)
}

/// Whether `name` can name a backend: it goes into a header list and into `{resp.NAME.…}`.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The backends each backend waits for: `depends_on` plus those its path reads from, as
/// indexes into `backends`. Unknown names are left out (validation reports them).
pub fn dependencies(backends: &[Backend]) -> Vec<Vec<usize>> {
    let index: HashMap<&str, usize> = backends.iter().enumerate().map(|(i, b)| (b.name(), i)).collect();
    backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let from_path = parse_template(&b.path).unwrap_or_default().into_iter().filter_map(|p| match p {
                Piece::Value(Placeholder::Resp { backend, .. }) => Some(backend),
                _ => None,
            });
            let mut deps: Vec<usize> =
                b.depends_on.iter().cloned().chain(from_path).filter_map(|n| index.get(n.as_str()).copied()).collect();
            // Waiting for itself is reported apart; it is no cycle to look for.
            deps.retain(|&d| d != i);
            deps.sort_unstable();
            deps.dedup();
            deps
        })
        .collect()
}

/// Checks the backends of route `at` (`routes[i]`) against the declared `services`; returns
/// `(field, message)` for every problem.
/// `unknown` words the message about an unknown service.
pub(crate) fn check(
    backends: &[Backend],
    at: &str,
    services: &HashSet<&str>,
    unknown: &dyn Fn(&str) -> String,
) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    let mut err = |field: String, msg: String| errors.push((field, msg));
    let names: HashSet<&str> = backends.iter().map(Backend::name).collect();
    let mut seen = HashSet::new();
    for (j, b) in backends.iter().enumerate() {
        let f = |x: &str| format!("{at}.backends[{j}].{x}");
        if !services.contains(b.service.as_str()) {
            err(f("service"), unknown(&b.service));
        }
        let name_field = if b.name.is_some() { f("name") } else { f("service") };
        if !valid_name(b.name()) {
            err(name_field, format!("backend name {:?} may only have letters, digits, - and _ (set name:)", b.name()));
        } else if !seen.insert(b.name()) {
            err(name_field, format!("two backends are named {:?}: give each a distinct name:", b.name()));
        }
        if b.method.is_empty() || !b.method.bytes().all(|c| c.is_ascii_uppercase()) {
            err(f("method"), format!("invalid method {:?}: use upper case, e.g. GET", b.method));
        }
        if b.timeout.is_some_and(|t| t.get().is_zero()) {
            err(f("timeout"), "must be greater than zero".into());
        }
        match parse_template(&b.path) {
            Err(e) => err(f("path"), e),
            Ok(pieces) => {
                let sample: String =
                    pieces.iter().map(|p| if let Piece::Literal(s) = p { s.as_str() } else { "x" }).collect();
                if http::uri::PathAndQuery::try_from(sample).is_err() {
                    err(f("path"), format!("path {:?} has characters a URL cannot carry (escape them as %XX)", b.path));
                }
                for p in pieces {
                    if let Piece::Value(Placeholder::Resp { backend, .. }) = p {
                        if backend == b.name() {
                            err(f("path"), format!("{{resp.{backend}…}} is this backend's own answer"));
                        } else if !names.contains(backend.as_str()) {
                            err(f("path"), format!("{{resp.{backend}…}} names no backend of this route"));
                        }
                    }
                }
            }
        }
        for (k, d) in b.depends_on.iter().enumerate() {
            if d == b.name() {
                err(f(&format!("depends_on[{k}]")), "a backend cannot depend on itself".into());
            } else if !names.contains(d.as_str()) {
                err(f(&format!("depends_on[{k}]")), format!("no backend of this route is named {d:?}"));
            }
        }
        for (what, path) in [("target", &b.target), ("group", &b.group)] {
            if path.as_deref().is_some_and(str::is_empty) {
                err(f(what), "must not be empty".into());
            }
        }
        if let Some(Err(e)) = b.target.as_deref().map(field_path) {
            err(f("target"), e);
        }
        for (list, fields) in [("allow", &b.allow), ("deny", &b.deny)] {
            for (k, field) in fields.iter().enumerate() {
                if let Err(e) = field_path(field) {
                    err(f(&format!("{list}[{k}]")), e);
                }
            }
        }
        let mut renamed = HashSet::new();
        for (from, to) in &b.mapping {
            if from.is_empty() || to.is_empty() {
                err(f("mapping"), "field names must not be empty".into());
            } else if !renamed.insert(to.as_str()) {
                err(f(&format!("mapping.{from}")), format!("another field is renamed to {to:?} too"));
            }
        }
    }
    if let Some(cycle) = find_cycle(backends) {
        err(format!("{at}.backends"), format!("backends wait for each other in a cycle: {}", cycle.join(" -> ")));
    }
    errors
}

/// A cycle among the dependencies, as backend names from its start back to it.
fn find_cycle(backends: &[Backend]) -> Option<Vec<String>> {
    let deps = dependencies(backends);
    // 0 unvisited, 1 on the current path, 2 done.
    let mut state = vec![0u8; backends.len()];
    fn visit(i: usize, deps: &[Vec<usize>], state: &mut [u8], path: &mut Vec<usize>) -> Option<Vec<usize>> {
        state[i] = 1;
        path.push(i);
        for &d in &deps[i] {
            if state[d] == 1 {
                let start = path.iter().position(|&p| p == d).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(d);
                return Some(cycle);
            }
            if state[d] == 0
                && let Some(c) = visit(d, deps, state, path)
            {
                return Some(c);
            }
        }
        path.pop();
        state[i] = 2;
        None
    }
    (0..backends.len()).find_map(|i| {
        if state[i] != 0 {
            return None;
        }
        let cycle = visit(i, &deps, &mut state, &mut Vec::new())?;
        Some(cycle.into_iter().map(|c| backends[c].name().to_owned()).collect())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: Placeholder) -> Piece {
        Piece::Value(s)
    }

    #[test]
    fn templates_parse_into_literals_and_values() {
        assert_eq!(
            parse_template("/users/{path.id}/orders?page={query.page}&u={resp.user.profile.id}{{x}}").unwrap(),
            vec![
                Piece::Literal("/users/".into()),
                value(Placeholder::Path("id".into())),
                Piece::Literal("/orders?page=".into()),
                value(Placeholder::Query("page".into())),
                Piece::Literal("&u=".into()),
                value(Placeholder::Resp { backend: "user".into(), field: vec!["profile".into(), "id".into()] }),
                Piece::Literal("{x}".into()),
            ]
        );
        assert_eq!(parse_template("/h/{header.X-User}").unwrap()[1], value(Placeholder::Header("x-user".into())));
        for (bad, msg) in [
            ("users", "must start with"),
            ("/a/{path.id", "unclosed"),
            ("/a/}", "unmatched"),
            ("/a/{id}", "invalid placeholder {id}"),
            ("/a/{body.id}", "invalid placeholder"),
            ("/a/{resp.user}", "invalid placeholder"),
            ("/a/{resp.user.a..b}", "invalid field path"),
            ("/a/{header.bad name}", "invalid placeholder"),
        ] {
            let e = parse_template(bad).unwrap_err();
            assert!(e.contains(msg), "{bad}: {e}");
        }
    }

    #[test]
    fn dependencies_come_from_depends_on_and_resp_placeholders() {
        let b = |name: &str, path: &str, deps: &[&str]| Backend {
            name: Some(name.into()),
            service: "s".into(),
            path: path.into(),
            method: get(),
            timeout: None,
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            target: None,
            allow: vec![],
            deny: vec![],
            mapping: BTreeMap::new(),
            group: None,
        };
        let list = [b("a", "/a", &[]), b("b", "/b/{resp.a.id}", &["a"]), b("c", "/c/{resp.b.x}", &["a"])];
        assert_eq!(dependencies(&list), vec![vec![], vec![0], vec![0, 1]]);
        assert_eq!(find_cycle(&list), None);
        let cyclic = [b("a", "/a/{resp.c.id}", &[]), b("b", "/b", &["a"]), b("c", "/c", &["b"])];
        assert_eq!(find_cycle(&cyclic).unwrap(), ["a", "c", "b", "a"]);
    }

    /// `file:line:col: field: message` for every error of `routes` (after two services).
    fn errors(routes: &str) -> Vec<String> {
        let text = format!(
            "listeners: [{{name: a, address: \"127.0.0.1:1\"}}]\nservices:\n- {{name: users, url: \"http://127.0.0.1:2\"}}\n- {{name: orders, url: \"http://127.0.0.1:3\"}}\nroutes:\n{routes}"
        );
        match crate::load_str(std::path::Path::new("c.yaml"), &text) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn aggregation_routes_validate_with_located_errors() {
        let ok = r#"- name: r
  paths: ["~/u/(?<id>[0-9]+)"]
  aggregate: {timeout: 2s, max_body_bytes: 64KiB}
  backends:
  - {service: users, path: "/users/{path.id}", group: user, allow: [name, address.city], deny: [address.zip]}
  - {name: last, service: orders, path: "/orders/{resp.users.last_order}", target: data, mapping: {id: order_id}}
  - {name: all, service: orders, path: "/orders?user={query.u}&h={header.x-user}", method: POST, timeout: 500ms}
"#;
        assert_eq!(errors(ok), Vec::<String>::new());
        assert_eq!(
            errors("- name: r\n  service: users\n  backends: [{service: orders, path: /o}]\n"),
            ["c.yaml:8:13: routes[0].backends: set either service or backends, not both"]
        );
        assert_eq!(
            errors("- name: r\n  services: [{name: users, weight: 1}]\n  backends: [{service: orders, path: /o}]\n"),
            ["c.yaml:8:13: routes[0].backends: set either services or backends, not both"]
        );
        assert_eq!(
            errors("- name: r\n  backends:\n  - {service: billing, path: /b}\n"),
            ["c.yaml:8:15: routes[0].backends[0].service: unknown service \"billing\" (known: users, orders)"]
        );
        assert_eq!(
            errors("- name: r\n  backends: [{service: users, path: \"/a b/{path.x}\"}]\n"),
            [
                "c.yaml:7:37: routes[0].backends[0].path: path \"/a b/{path.x}\" has characters a URL cannot carry (escape them as %XX)"
            ]
        );
        assert_eq!(
            errors("- name: r\n  service: users\n  aggregate: {timeout: 1s}\n"),
            ["c.yaml:8:14: routes[0].aggregate: aggregate goes with backends: (an aggregation route)"]
        );
        assert_eq!(
            errors(
                r#"- name: r
  strip_path: true
  mirror: {service: users}
  aggregate: {timeout: 0s}
  backends:
  - {service: users, path: "users/{path.id}", method: get, timeout: 0s}
  - {service: users, path: "/u/{resp.nobody.id}", depends_on: [users], target: "a..b", allow: [""]}
  - {name: "a b", service: orders, path: "/o/{resp.a b.x}", mapping: {x: y, z: y}}
  - {name: p, service: orders, path: "/p/{resp.q.id}"}
  - {name: q, service: orders, path: "/q", depends_on: [p]}
"#
            ),
            [
                "c.yaml:8:11: routes[0].mirror: mirror goes with service: or services:, not with backends:",
                "c.yaml:7:15: routes[0].strip_path: has no effect with backends: (each backend's path is its own)",
                "c.yaml:9:24: routes[0].aggregate.timeout: must be greater than zero",
                "c.yaml:11:55: routes[0].backends[0].method: invalid method \"get\": use upper case, e.g. GET",
                "c.yaml:11:69: routes[0].backends[0].timeout: must be greater than zero",
                "c.yaml:11:28: routes[0].backends[0].path: path \"users/{path.id}\" must start with \"/\"",
                "c.yaml:12:15: routes[0].backends[1].service: two backends are named \"users\": give each a distinct name:",
                "c.yaml:12:28: routes[0].backends[1].path: {resp.nobody…} names no backend of this route",
                "c.yaml:12:64: routes[0].backends[1].depends_on[0]: a backend cannot depend on itself",
                "c.yaml:12:80: routes[0].backends[1].target: invalid field path \"a..b\": use keys separated by dots, e.g. data.user",
                "c.yaml:12:96: routes[0].backends[1].allow[0]: invalid field path \"\": use keys separated by dots, e.g. data.user",
                "c.yaml:13:12: routes[0].backends[2].name: backend name \"a b\" may only have letters, digits, - and _ (set name:)",
                "c.yaml:13:42: routes[0].backends[2].path: invalid placeholder {resp.a b.x}: use {path.NAME}, {query.NAME}, {header.NAME} or {resp.BACKEND.FIELD}",
                "c.yaml:13:80: routes[0].backends[2].mapping.z: another field is renamed to \"y\" too",
                "c.yaml:11:5: routes[0].backends: backends wait for each other in a cycle: p -> q -> p",
            ]
        );
    }
}
