//! Operations on JSON bodies at dotted paths (`user.address.city`).
//!
//! The body is not parsed into a tree of values: it is validated once, and only the objects on
//! the paths an operation walks are split into their entries, every value in them kept as its
//! original text (serde_json's `RawValue`). So what no operation touches goes out byte for byte
//! as it came (big integers, number formats, key order, escapes, whitespace inside untouched
//! values); the objects that were opened are written compactly, keys in their original order.
//! Paths go through objects only: an array is a value like any other.

use super::template::{Scope, Sources, Template};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;
use std::marker::PhantomData;

/// A dotted path to a field; `\.` is a dot inside a name and `\\` a backslash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Path(Vec<String>);

impl Path {
    /// Parses `user.address.city`.
    pub(crate) fn parse(s: &str) -> Result<Path, String> {
        let mut segments = Vec::new();
        let mut cur = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(e @ ('.' | '\\')) => cur.push(e),
                    _ => return Err(format!("in path {s:?}, `\\` may only escape `.` or `\\`")),
                },
                '.' => {
                    if cur.is_empty() {
                        return Err(format!("empty field name in path {s:?}"));
                    }
                    segments.push(std::mem::take(&mut cur));
                }
                c => cur.push(c),
            }
        }
        if cur.is_empty() {
            return Err(format!("empty field name in path {s:?}"));
        }
        segments.push(cur);
        Ok(Path(segments))
    }

    fn parent(&self) -> &[String] {
        &self.0[..self.0.len() - 1]
    }

    fn last(&self) -> &str {
        &self.0[self.0.len() - 1]
    }
}

/// A value to write into a body: fixed JSON, or JSON with templates in its strings.
#[derive(Debug)]
pub(crate) enum JsonValue {
    /// Fixed JSON text.
    Raw(Box<RawValue>),
    /// A string template.
    Str(Template),
    /// An array with templates inside.
    Array(Vec<JsonValue>),
    /// An object with templates inside.
    Object(Vec<(String, JsonValue)>),
}

impl JsonValue {
    /// Compiles a configured value; every string in it is a template.
    pub(crate) fn compile(v: &serde_json::Value, sources: &mut Sources) -> Result<JsonValue, String> {
        let compiled = match v {
            serde_json::Value::String(s) => {
                let t = Template::parse(s, sources)?;
                match t.literal() {
                    Some(text) => JsonValue::Raw(raw(&serde_json::to_string(text).map_err(|e| e.to_string())?)),
                    None => JsonValue::Str(t),
                }
            }
            serde_json::Value::Array(items) => {
                JsonValue::Array(items.iter().map(|i| JsonValue::compile(i, sources)).collect::<Result<_, _>>()?)
            }
            serde_json::Value::Object(map) => JsonValue::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), JsonValue::compile(v, sources)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => return Ok(JsonValue::Raw(raw(&other.to_string()))),
        };
        // Containers of fixed values are fixed text too.
        let fixed = match &compiled {
            JsonValue::Array(items) => items.iter().all(|i| matches!(i, JsonValue::Raw(_))),
            JsonValue::Object(entries) => entries.iter().all(|(_, v)| matches!(v, JsonValue::Raw(_))),
            _ => false,
        };
        if fixed {
            let mut text = String::new();
            let none = Scope { captured: None, path: None, auth: None };
            compiled.write(&none, &mut text);
            return Ok(JsonValue::Raw(raw(&text)));
        }
        Ok(compiled)
    }

    /// Whether some template in the value reads a header or query value.
    pub(crate) fn reads_captured(&self) -> bool {
        match self {
            JsonValue::Raw(_) => false,
            JsonValue::Str(t) => t.reads_captured(),
            JsonValue::Array(items) => items.iter().any(JsonValue::reads_captured),
            JsonValue::Object(entries) => entries.iter().any(|(_, v)| v.reads_captured()),
        }
    }

    fn write(&self, scope: &Scope<'_>, out: &mut String) -> Option<()> {
        match self {
            JsonValue::Raw(r) => out.push_str(r.get()),
            JsonValue::Str(t) => out.push_str(&serde_json::to_string(&t.render(scope)?).ok()?),
            JsonValue::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(scope, out)?;
                }
                out.push(']');
            }
            JsonValue::Object(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(k).ok()?);
                    out.push(':');
                    v.write(scope, out)?;
                }
                out.push('}');
            }
        }
        Some(())
    }

    /// The value for this request; `None` when a template names something the request lacks.
    fn node(&self, scope: &Scope<'_>) -> Option<Node<'_>> {
        if let JsonValue::Raw(r) = self {
            return Some(Node::Raw(r));
        }
        let mut text = String::new();
        self.write(scope, &mut text)?;
        RawValue::from_string(text).ok().map(Node::Owned)
    }
}

fn raw(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_owned()).expect("serde_json wrote valid JSON")
}

/// The JSON operations of a transformer, in the order they run.
#[derive(Default)]
pub(crate) struct JsonOps {
    /// Fields removed (every occurrence of a duplicated key).
    pub(crate) remove: Vec<Path>,
    /// Fields moved: the value leaves the first path for the second (replacing what is there,
    /// making missing objects on the way); within one object the key keeps its place.
    pub(crate) rename: Vec<(Path, Path)>,
    /// Fields given a new value, only when they exist.
    pub(crate) replace: Vec<(Path, JsonValue)>,
    /// Fields set only when they do not exist; missing objects on the way are made.
    pub(crate) add: Vec<(Path, JsonValue)>,
}

/// What the operations made of a body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The new body.
    Changed(Vec<u8>),
    /// Valid JSON that no operation changed: the body stays as it is.
    Unchanged,
    /// Not valid JSON (or not UTF-8).
    Invalid,
}

impl JsonOps {
    /// Whether there is nothing to do.
    pub(crate) fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.rename.is_empty() && self.replace.is_empty() && self.add.is_empty()
    }

    /// Whether some value reads a header or query value.
    pub(crate) fn reads_captured(&self) -> bool {
        self.replace.iter().chain(&self.add).any(|(_, v)| v.reads_captured())
    }

    /// Applies every operation to `body`.
    pub(crate) fn apply(&self, body: &[u8], scope: &Scope<'_>) -> Outcome {
        let Ok(text) = std::str::from_utf8(body) else { return Outcome::Invalid };
        let Ok(root) = serde_json::from_str::<&RawValue>(text) else { return Outcome::Invalid };
        let mut root = Node::Raw(root);
        let mut changed = false;
        for path in &self.remove {
            changed |= remove(&mut root, path);
        }
        for (from, to) in &self.rename {
            changed |= rename(&mut root, from, to);
        }
        for (path, value) in &self.replace {
            changed |= replace(&mut root, path, value, scope);
        }
        for (path, value) in &self.add {
            changed |= add(&mut root, path, value, scope);
        }
        if !changed {
            return Outcome::Unchanged;
        }
        let mut out = Vec::with_capacity(body.len() + 64);
        root.write(&mut out);
        Outcome::Changed(out)
    }
}

/// A JSON value: still its original text, a value written by an operation, or an object opened
/// into its entries.
enum Node<'a> {
    Raw(&'a RawValue),
    Owned(Box<RawValue>),
    Object(Vec<(String, Node<'a>)>),
}

type Entries<'a> = Vec<(String, Node<'a>)>;

impl<'a> Node<'a> {
    /// The node's entries when it is an object, opening it the first time.
    fn entries(&mut self) -> Option<&mut Entries<'a>> {
        match self {
            Node::Raw(r) => {
                let r: &'a RawValue = r;
                let KeyedRaw(list) = object(r.get())?;
                *self = Node::Object(list.into_iter().map(|(k, v)| (k, Node::Raw(v))).collect());
            }
            Node::Owned(r) => {
                let KeyedRaw::<Box<RawValue>>(list) = object(r.get())?;
                *self = Node::Object(list.into_iter().map(|(k, v)| (k, Node::Owned(v))).collect());
            }
            Node::Object(_) => {}
        }
        match self {
            Node::Object(e) => Some(e),
            _ => None,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Node::Raw(r) => out.extend_from_slice(r.get().as_bytes()),
            Node::Owned(r) => out.extend_from_slice(r.get().as_bytes()),
            Node::Object(entries) => {
                out.push(b'{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    // Writing to a Vec cannot fail.
                    let _ = serde_json::to_writer(&mut *out, k);
                    out.push(b':');
                    v.write(out);
                }
                out.push(b'}');
            }
        }
    }
}

/// An object's entries with their values as raw text, when `text` is an object.
fn object<'de, V: Deserialize<'de>>(text: &'de str) -> Option<KeyedRaw<V>> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str(text).ok()
}

/// An object's entries in their order, duplicates kept.
struct KeyedRaw<V>(Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for KeyedRaw<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Entries<V> {
            type Value = KeyedRaw<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyedRaw<V>, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(KeyedRaw(out))
            }
        }
        d.deserialize_map(Entries(PhantomData))
    }
}

/// The object at `path`; with `create`, missing objects on the way are made (an existing
/// non-object on the way is never replaced).
fn walk<'n, 'a>(root: &'n mut Node<'a>, path: &[String], create: bool) -> Option<&'n mut Entries<'a>> {
    let mut cur = root.entries()?;
    for seg in path {
        let i = match cur.iter().position(|(k, _)| k == seg) {
            Some(i) => i,
            None if create => {
                cur.push((seg.clone(), Node::Object(Vec::new())));
                cur.len() - 1
            }
            None => return None,
        };
        cur = cur[i].1.entries()?;
    }
    Some(cur)
}

fn remove(root: &mut Node<'_>, path: &Path) -> bool {
    let Some(obj) = walk(root, path.parent(), false) else { return false };
    let before = obj.len();
    obj.retain(|(k, _)| k != path.last());
    obj.len() != before
}

fn rename(root: &mut Node<'_>, from: &Path, to: &Path) -> bool {
    if from == to {
        return false;
    }
    if from.parent() == to.parent() {
        // Within one object: the key changes in place and replaces any entry of the new name.
        let Some(obj) = walk(root, from.parent(), false) else { return false };
        let Some(i) = obj.iter().position(|(k, _)| k == from.last()) else { return false };
        obj[i].0 = to.last().to_owned();
        let mut j = 0;
        obj.retain(|(k, _)| {
            j += 1;
            j - 1 == i || k != to.last()
        });
        return true;
    }
    let Some(obj) = walk(root, from.parent(), false) else { return false };
    let Some(i) = obj.iter().position(|(k, _)| k == from.last()) else { return false };
    let (key, node) = obj.remove(i);
    match walk(root, to.parent(), true) {
        Some(dest) => {
            dest.retain(|(k, _)| k != to.last());
            dest.push((to.last().to_owned(), node));
            true
        }
        None => {
            // The destination cannot exist (a non-object on its way): the field stays where it was.
            if let Some(obj) = walk(root, from.parent(), false) {
                obj.insert(i, (key, node));
            }
            false
        }
    }
}

fn replace<'a>(root: &mut Node<'a>, path: &Path, value: &'a JsonValue, scope: &Scope<'_>) -> bool {
    let Some(obj) = walk(root, path.parent(), false) else { return false };
    let Some(i) = obj.iter().position(|(k, _)| k == path.last()) else { return false };
    let Some(node) = value.node(scope) else { return false };
    obj[i].1 = node;
    true
}

fn add<'a>(root: &mut Node<'a>, path: &Path, value: &'a JsonValue, scope: &Scope<'_>) -> bool {
    if walk(root, path.parent(), false).is_some_and(|obj| obj.iter().any(|(k, _)| k == path.last())) {
        return false;
    }
    let Some(node) = value.node(scope) else { return false };
    let Some(obj) = walk(root, path.parent(), true) else { return false };
    obj.push((path.last().to_owned(), node));
    true
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;
