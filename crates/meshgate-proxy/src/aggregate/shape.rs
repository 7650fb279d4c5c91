//! What a backend's answer becomes before it is merged: `target` (a sub-value), `allow` and
//! `deny` (field lists, dotted paths reaching into objects), `mapping` (renamed top-level
//! fields), `group` (nested under a key). Compiled once per config; applied to the parsed answer
//! in place, moving values rather than copying them.

use meshgate_config::aggregate::{Backend, field_path};
use serde_json::{Map, Value};

/// One backend's shaping, in the order it is applied.
pub(crate) struct Shape {
    /// JSON pointer of `target`.
    target: Option<String>,
    allow: Box<[Vec<String>]>,
    deny: Box<[Vec<String>]>,
    mapping: Box<[(String, String)]>,
    group: Option<String>,
}

impl Shape {
    /// Compiles a backend's settings (validated: field paths parse).
    pub(crate) fn compile(b: &Backend) -> Shape {
        let paths = |list: &[String]| list.iter().filter_map(|f| field_path(f).ok()).collect();
        let target = b
            .target
            .as_deref()
            .and_then(|t| field_path(t).ok())
            .map(|keys| keys.iter().map(|k| format!("/{}", k.replace('~', "~0").replace('/', "~1"))).collect());
        Shape {
            target,
            allow: paths(&b.allow),
            deny: paths(&b.deny),
            mapping: b.mapping.iter().map(|(from, to)| (from.clone(), to.clone())).collect(),
            group: b.group.clone(),
        }
    }

    /// The fields this answer adds to the merged object. An answer that does not fit (no value
    /// at `target`, not an object and no `group` to put it under) is an error.
    pub(crate) fn apply(&self, mut answer: Value) -> Result<Map<String, Value>, String> {
        if let Some(t) = &self.target {
            answer = answer.pointer_mut(t).map(Value::take).ok_or("the answer has nothing at target")?;
        }
        match &mut answer {
            Value::Object(map) => self.fields(map),
            // A list of records gets the same treatment record by record.
            Value::Array(items) => {
                for item in items.iter_mut() {
                    if let Value::Object(map) = item {
                        self.fields(map);
                    }
                }
            }
            _ => {}
        }
        match (answer, &self.group) {
            (v, Some(g)) => Ok(Map::from_iter([(g.clone(), v)])),
            (Value::Object(map), None) => Ok(map),
            _ => Err("the answer is not a JSON object (set group: to nest it)".to_owned()),
        }
    }

    fn fields(&self, map: &mut Map<String, Value>) {
        if !self.allow.is_empty() {
            let mut kept = Map::new();
            for path in self.allow.iter() {
                if let Some(v) = take(map, path) {
                    put(&mut kept, path, v);
                }
            }
            *map = kept;
        }
        for path in self.deny.iter() {
            take(map, path);
        }
        // All sources out first, so that renames may swap names.
        let moved: Vec<(&String, Value)> =
            self.mapping.iter().filter_map(|(from, to)| Some((to, map.remove(from)?))).collect();
        for (to, v) in moved {
            map.insert(to.clone(), v);
        }
    }
}

/// Removes and returns the value at `path` (through objects only).
fn take(map: &mut Map<String, Value>, path: &[String]) -> Option<Value> {
    let (last, parents) = path.split_last()?;
    let mut m = map;
    for k in parents {
        m = m.get_mut(k)?.as_object_mut()?;
    }
    m.remove(last)
}

/// Puts `v` at `path`, creating the objects on the way.
fn put(map: &mut Map<String, Value>, path: &[String], v: Value) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut m = map;
    for k in parents {
        let slot = m.entry(k.clone()).or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        let Value::Object(inner) = slot else { return };
        m = inner;
    }
    merge_value(m, last.clone(), v);
}

/// Adds one backend's fields to the merged answer: a key already there is replaced, except that
/// two objects under one key (a shared `group`) have their fields merged.
pub(crate) fn merge(into: &mut Map<String, Value>, from: Map<String, Value>) {
    for (k, v) in from {
        merge_value(into, k, v);
    }
}

fn merge_value(into: &mut Map<String, Value>, k: String, v: Value) {
    match (into.get_mut(&k), v) {
        (Some(Value::Object(old)), Value::Object(new)) => old.extend(new),
        (_, v) => {
            into.insert(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shape(yaml_fields: serde_json::Value) -> Shape {
        let mut b = json!({"service": "s", "path": "/"});
        b.as_object_mut().unwrap().extend(yaml_fields.as_object().unwrap().clone());
        Shape::compile(&serde_json::from_value(b).unwrap())
    }

    #[test]
    fn target_allow_deny_mapping_group_in_order() {
        let answer = json!({"data": {"id": 1, "name": "a", "secret": "x", "address": {"city": "c", "zip": "z", "street": "s"}}, "meta": 1});
        let s = shape(json!({
            "target": "data",
            "allow": ["id", "name", "address.city", "address.zip"],
            "deny": ["address.zip"],
            "mapping": {"id": "name", "name": "id"},
            "group": "user"
        }));
        assert_eq!(
            Value::Object(s.apply(answer.clone()).unwrap()),
            json!({"user": {"id": "a", "name": 1, "address": {"city": "c"}}})
        );
        // Lists of records are shaped record by record; without group they cannot be merged.
        let s = shape(json!({"target": "data.items", "deny": ["secret"]}));
        let list = json!({"data": {"items": [{"id": 1, "secret": 2}, 3]}});
        assert!(s.apply(list.clone()).unwrap_err().contains("not a JSON object"));
        let s = shape(json!({"target": "data.items", "deny": ["secret"], "group": "items"}));
        assert_eq!(Value::Object(s.apply(list).unwrap()), json!({"items": [{"id": 1}, 3]}));
        assert_eq!(shape(json!({"target": "nope"})).apply(answer).unwrap_err(), "the answer has nothing at target");
    }

    #[test]
    fn merging_replaces_keys_and_merges_shared_groups() {
        let mut out = Map::new();
        merge(&mut out, json!({"a": 1, "g": {"x": 1}}).as_object().unwrap().clone());
        merge(&mut out, json!({"a": 2, "g": {"y": 2}, "b": [1]}).as_object().unwrap().clone());
        assert_eq!(Value::Object(out), json!({"a": 2, "b": [1], "g": {"x": 1, "y": 2}}));
    }
}
