//! A compose file as a tree of YAML nodes that remember where they came
//! from (file and line), so that every error can name both, as docker
//! compose's do.
//!
//! The YAML is read with YAML 1.2's core schema, as docker compose (go-yaml
//! v3) reads it: `yes`, `no`, `on` and `off` are strings; anchors, aliases
//! and `<<` merge keys are expanded; a key given twice in one mapping is an
//! error.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::error::{Error, Result};

/// Where a node came from: an index into the loader's list of files, and a
/// line (1-based; 0 when the node was made, not read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Loc {
    pub file: u16,
    pub line: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Keys in the order they were written.
    Map(Vec<(String, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub loc: Loc,
}

impl Node {
    pub fn new(value: Value, loc: Loc) -> Node {
        Node { value, loc }
    }

    pub fn str(text: impl Into<String>) -> Node {
        Node::new(Value::Str(text.into()), Loc::default())
    }

    pub fn map(entries: Vec<(String, Node)>) -> Node {
        Node::new(Value::Map(entries), Loc::default())
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        match &mut self.value {
            Value::Map(entries) => entries.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Sets `key` (replacing its value where it is, or adding it last).
    pub fn set(&mut self, key: &str, value: Node) {
        if let Value::Map(entries) = &mut self.value {
            match entries.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = value,
                None => entries.push((key.to_string(), value)),
            }
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<Node> {
        if let Value::Map(entries) = &mut self.value {
            let at = entries.iter().position(|(k, _)| k == key)?;
            return Some(entries.remove(at).1);
        }
        None
    }

    /// The scalar as text (what a string field makes of a number or a
    /// boolean); None for null, sequences and mappings.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Str(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// What kind of node this is, for "must be a ..." messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "a number",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// Sets the file of this node and of every node under it.
    pub fn set_file(&mut self, file: u16) {
        self.loc.file = file;
        match &mut self.value {
            Value::Seq(items) => items.iter_mut().for_each(|n| n.set_file(file)),
            Value::Map(entries) => entries.iter_mut().for_each(|(_, n)| n.set_file(file)),
            _ => {}
        }
    }
}

/// Reads one YAML document. `name` is the file's name for messages.
pub fn parse(text: &str, name: &str, file: u16) -> Result<Node> {
    if text.trim().is_empty() {
        return Ok(Node::new(Value::Map(Vec::new()), Loc { file, line: 1 }));
    }
    let options = serde_saphyr::options! {
        strict_booleans: true,
        legacy_octal_numbers: true,
    };
    let root: Spanned<Raw> = serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let line = e.location().map(|l| l.line() as u32).unwrap_or(0);
        // The library's message carries a snippet after its first line.
        let message = e.to_string();
        let first = message.lines().next().unwrap_or("").to_string();
        let first = first
            .strip_prefix("error: ")
            .unwrap_or(&first)
            .split_once(": ")
            .filter(|(at, _)| at.starts_with("line "))
            .map(|(_, rest)| rest.to_string())
            .unwrap_or(first);
        Error::Yaml {
            file: name.to_string(),
            line,
            message: first,
        }
    })?;
    let mut node = spanned(root);
    node.set_file(file);
    Ok(node)
}

fn spanned(s: Spanned<Raw>) -> Node {
    Node {
        value: s.value.0,
        loc: Loc {
            file: 0,
            line: s.referenced.line() as u32,
        },
    }
}

/// A node's value as the YAML library hands it over.
struct Raw(Value);

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_unit<E>(self) -> std::result::Result<Raw, E> {
        Ok(Raw(Value::Null))
    }
    fn visit_none<E>(self) -> std::result::Result<Raw, E> {
        Ok(Raw(Value::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Raw, D::Error> {
        Raw::deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> std::result::Result<Raw, E> {
        Ok(Raw(Value::Bool(b)))
    }
    fn visit_i64<E>(self, i: i64) -> std::result::Result<Raw, E> {
        Ok(Raw(Value::Int(i)))
    }
    fn visit_u64<E: serde::de::Error>(self, i: u64) -> std::result::Result<Raw, E> {
        i64::try_from(i)
            .map(|i| Raw(Value::Int(i)))
            .map_err(|_| E::custom(format!("number {i} is too large")))
    }
    fn visit_f64<E>(self, f: f64) -> std::result::Result<Raw, E> {
        Ok(Raw(Value::Float(f)))
    }
    fn visit_str<E>(self, s: &str) -> std::result::Result<Raw, E> {
        Ok(Raw(Value::Str(s.to_string())))
    }
    fn visit_string<E>(self, s: String) -> std::result::Result<Raw, E> {
        Ok(Raw(Value::Str(s)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Raw>>()? {
            items.push(spanned(item));
        }
        Ok(Raw(Value::Seq(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Raw, A::Error> {
        let mut entries: Vec<(String, Node)> = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Raw>>()? {
            let value = map.next_value::<Spanned<Raw>>()?;
            let key = spanned(key);
            let name = match key.scalar_text() {
                Some(text) => text,
                None if key.value == Value::Null => "null".to_string(),
                None => {
                    return Err(serde::de::Error::custom(format!(
                        "line {}: a mapping key must be a scalar",
                        key.loc.line
                    )));
                }
            };
            // A merge (`<<`) may repeat a key the mapping sets itself: the
            // mapping's own value wins, as YAML's merge says.
            match entries.iter_mut().find(|(k, _)| *k == name) {
                Some(_) => continue,
                None => entries.push((name, spanned(value))),
            }
        }
        Ok(Raw(Value::Map(entries)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_1_2_scalars_anchors_and_merges() {
        let text = "x-base: &base\n  restart: always\n  n: 1\nservices:\n  web:\n    <<: *base\n    n: 2\n    y: yes\n    off: off\n    mode: 0755\n    e:\n";
        let root = parse(text, "compose.yaml", 3).unwrap();
        let web = root.get("services").unwrap().get("web").unwrap();
        assert_eq!(web.get("n").unwrap().value, Value::Int(2));
        assert_eq!(
            web.get("restart").unwrap().value,
            Value::Str("always".into())
        );
        assert_eq!(web.get("y").unwrap().value, Value::Str("yes".into()));
        assert_eq!(web.get("off").unwrap().value, Value::Str("off".into()));
        assert_eq!(web.get("mode").unwrap().value, Value::Int(0o755));
        assert_eq!(web.get("e").unwrap().value, Value::Null);
        assert_eq!(web.get("y").unwrap().loc, Loc { file: 3, line: 8 });
    }

    #[test]
    fn syntax_errors_and_duplicates_name_the_line() {
        let e = parse("services:\n  web:\n    image: [a\n", "c.yaml", 0).unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("c.yaml:3:"), "{text}");
        let e = parse("a: 1\na: 2\n", "c.yaml", 0).unwrap_err();
        assert!(e.to_string().contains("c.yaml:2:"), "{e}");
        assert!(e.to_string().contains("duplicate"), "{e}");
    }
}
