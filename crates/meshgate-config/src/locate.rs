//! Finds where a config field is written, so that errors found after parsing (an unknown service,
//! a certificate that cannot be read) still name the line, not only the field.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;
use std::fmt;

/// A YAML document reduced to its shape and the position of every node.
enum Node {
    Map(Vec<(String, Spanned<Node>)>),
    Seq(Vec<Spanned<Node>>),
    Leaf,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<KeyText>()? {
            entries.push((key.0, map.next_value::<Spanned<Node>>()?));
        }
        Ok(Node::Map(entries))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_str<E>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
}

/// A mapping key of any scalar type, kept as text for path lookups.
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// One step of a field path such as `routes[3].service`.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

fn parse_path(path: &str) -> Vec<Step<'_>> {
    let mut steps = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if !key.is_empty() {
            steps.push(Step::Key(key));
        }
        for idx in rest.split('[').filter_map(|s| s.strip_suffix(']')) {
            if let Ok(i) = idx.parse() {
                steps.push(Step::Index(i));
            }
        }
    }
    steps
}

/// Returns the (line, column), 1-based, of the deepest node of `path` that exists in `text`.
///
/// A path that goes deeper than the document (a missing field) resolves to its nearest parent,
/// which is where the user has to add it.
pub fn locate(text: &str, path: &str) -> Option<(u64, u64)> {
    // Same boolean rules as loading, so that a key such as `on` stays the text `on`.
    let options = serde_saphyr::options! { strict_booleans: true };
    let root: Spanned<Node> = serde_saphyr::from_str_with_options(text, options).ok()?;
    let mut node = &root;
    let mut best = position(node);
    for step in parse_path(path) {
        let next = match (&node.value, step) {
            (Node::Map(entries), Step::Key(k)) => entries.iter().find(|(name, _)| name == k).map(|(_, v)| v),
            (Node::Seq(items), Step::Index(i)) => items.get(i),
            _ => None,
        };
        match next {
            Some(n) => {
                node = n;
                best = position(n).or(best);
            }
            None => break,
        }
    }
    best.map(|at| within(text, at))
}

/// The position, or the end of the text when it is past it: the parser puts an empty document
/// (only comments) at the start of a line after the last one when the text has no final newline.
/// Lines end as in YAML: at `\n`, `\r\n` or a lone `\r`.
pub(crate) fn within(text: &str, (line, column): (u64, u64)) -> (u64, u64) {
    let lines: Vec<&str> = text.split('\n').flat_map(|l| l.strip_suffix('\r').unwrap_or(l).split('\r')).collect();
    let count = lines.len() as u64;
    if line <= count {
        return (line, column);
    }
    (count, lines.last().map_or(0, |l| l.chars().count()) as u64 + 1)
}

fn position(node: &Spanned<Node>) -> Option<(u64, u64)> {
    let loc = node.referenced;
    (loc.line() > 0).then(|| (loc.line(), loc.column()))
}

#[cfg(test)]
mod tests {
    use super::{locate, within};

    const DOC: &str = "listeners:\n  - name: a\n    address: 1.2.3.4:80\nroutes:\n  - name: r1\n    service: s1\n  - name: r2\n    service: s2\n    paths: [\"/a\", \"/b\"]\n";

    #[test]
    fn finds_nested_fields() {
        assert_eq!(locate(DOC, "routes[1].service"), Some((8, 14)));
        assert_eq!(locate(DOC, "routes[0]").map(|p| p.0), Some(5));
        assert_eq!(locate(DOC, "listeners[0].address").map(|p| p.0), Some(3));
        assert_eq!(locate(DOC, "routes[1].paths[1]").map(|p| p.0), Some(9));
    }

    /// Found by fuzzing (fuzz/fuzz_targets/config_load.rs): a comment-only file without a final
    /// newline was located on line 2.
    #[test]
    fn never_past_the_text() {
        assert_eq!(locate("# only a comment", "listeners"), Some((1, 17)));
        assert_eq!(locate("# a comment\n", "listeners").map(|p| p.0), Some(2));
        assert_eq!(locate("# a\n# b", "listeners"), Some((2, 4)));
        assert_eq!(within("a\r\nb\rc", (9, 1)), (3, 2));
        assert_eq!(within("a\r\nb\rc", (3, 1)), (3, 1));
    }

    #[test]
    fn missing_field_resolves_to_parent() {
        assert_eq!(locate(DOC, "routes[1].hosts").map(|p| p.0), Some(7));
    }
}
