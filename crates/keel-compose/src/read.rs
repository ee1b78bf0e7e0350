//! Reading typed values out of [`Node`]s, with docker compose's messages
//! and the file, line and key path of whatever is wrong.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::yaml::{Node, Value};

/// A node and where it is: its key path and the files' names.
#[derive(Clone, Copy)]
pub struct At<'a> {
    pub node: &'a Node,
    pub path: &'a str,
    pub files: &'a [String],
}

impl<'a> At<'a> {
    pub fn new(node: &'a Node, path: &'a str, files: &'a [String]) -> At<'a> {
        At { node, path, files }
    }

    pub fn err(&self, message: impl Into<String>) -> Error {
        Error::Invalid {
            file: self
                .files
                .get(self.node.loc.file as usize)
                .cloned()
                .unwrap_or_else(|| "compose file".into()),
            line: self.node.loc.line,
            path: self.path.to_string(),
            message: message.into(),
        }
    }

    fn must_be(&self, what: &str) -> Error {
        self.err(format!("must be {what}, not {}", self.node.kind()))
    }

    /// The entries of a mapping (null counts as an empty one); a key not in
    /// `allowed` (and not an `x-` extension) is an error.
    pub fn fields(&self, allowed: &[&str]) -> Result<Vec<(&'a str, &'a Node)>> {
        let entries = match &self.node.value {
            Value::Map(entries) => entries,
            Value::Null => return Ok(Vec::new()),
            _ => return Err(self.must_be("a mapping")),
        };
        let mut out = Vec::new();
        for (key, value) in entries {
            if key.starts_with("x-") {
                continue;
            }
            if !allowed.contains(&key.as_str()) {
                return Err(Error::Invalid {
                    file: self
                        .files
                        .get(value.loc.file as usize)
                        .cloned()
                        .unwrap_or_default(),
                    line: value.loc.line,
                    path: self.path.to_string(),
                    message: format!("additional property '{key}' is not allowed"),
                });
            }
            out.push((key.as_str(), value));
        }
        Ok(out)
    }

    pub fn string(&self) -> Result<String> {
        self.node
            .scalar_text()
            .ok_or_else(|| self.must_be("a string"))
    }

    pub fn opt_string(&self) -> Result<Option<String>> {
        match self.node.value {
            Value::Null => Ok(None),
            _ => self.string().map(Some),
        }
    }

    pub fn bool(&self) -> Result<bool> {
        match &self.node.value {
            Value::Bool(b) => Ok(*b),
            Value::Str(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "yes" | "y" | "on" => Ok(true),
                "false" | "no" | "n" | "off" => Ok(false),
                _ => Err(self.must_be("a boolean")),
            },
            _ => Err(self.must_be("a boolean")),
        }
    }

    pub fn int(&self) -> Result<i64> {
        match &self.node.value {
            Value::Int(i) => Ok(*i),
            Value::Str(s) => s.trim().parse().map_err(|_| self.must_be("an integer")),
            _ => Err(self.must_be("an integer")),
        }
    }

    pub fn uint(&self) -> Result<u64> {
        let value = self.int()?;
        u64::try_from(value).map_err(|_| self.err(format!("must be 0 or more, not {value}")))
    }

    pub fn float(&self) -> Result<f64> {
        match &self.node.value {
            Value::Int(i) => Ok(*i as f64),
            Value::Float(f) => Ok(*f),
            Value::Str(s) => s.trim().parse().map_err(|_| self.must_be("a number")),
            _ => Err(self.must_be("a number")),
        }
    }

    /// A list of strings (scalars are taken as text).
    pub fn strings(&self) -> Result<Vec<String>> {
        match &self.node.value {
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let path = format!("{}[{i}]", self.path);
                    At::new(item, &path, self.files).string()
                })
                .collect(),
            Value::Null => Ok(Vec::new()),
            _ => Err(self.must_be("a list")),
        }
    }

    /// A string or a list of strings (`dns`, `env_file`, `tmpfs`).
    pub fn string_or_strings(&self) -> Result<Vec<String>> {
        match &self.node.value {
            Value::Seq(_) | Value::Null => self.strings(),
            _ => Ok(vec![self.string()?]),
        }
    }

    /// `command`/`entrypoint`: a list as it is, a string split as a shell
    /// would split its words.
    pub fn command(&self) -> Result<Option<Vec<String>>> {
        match &self.node.value {
            Value::Null => Ok(None),
            Value::Seq(_) => self.strings().map(Some),
            _ => {
                let text = self.string()?;
                shell_words(&text).map(Some).map_err(|e| self.err(e))
            }
        }
    }

    /// A mapping of strings, or a list of `KEY=VALUE` (`environment`,
    /// `labels`, `build.args`, `sysctls`): a key with no value maps to None.
    pub fn dict(&self) -> Result<BTreeMap<String, Option<String>>> {
        let mut out = BTreeMap::new();
        match &self.node.value {
            Value::Null => {}
            Value::Map(entries) => {
                for (key, value) in entries {
                    let path = format!("{}.{key}", self.path);
                    let at = At::new(value, &path, self.files);
                    let text = match &value.value {
                        Value::Null => None,
                        Value::Seq(_) | Value::Map(_) => {
                            return Err(at.must_be("a string, number, boolean or null"));
                        }
                        _ => Some(at.string()?),
                    };
                    out.insert(key.clone(), text);
                }
            }
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let path = format!("{}[{i}]", self.path);
                    let text = At::new(item, &path, self.files).string()?;
                    match text.split_once('=') {
                        Some((k, v)) => out.insert(k.to_string(), Some(v.to_string())),
                        None => out.insert(text, None),
                    };
                }
            }
            _ => return Err(self.must_be("a mapping or a list")),
        }
        Ok(out)
    }

    /// A duration: `1m30s`, `500ms`, or a number of seconds.
    pub fn duration_ms(&self) -> Result<u64> {
        match &self.node.value {
            Value::Int(i) if *i >= 0 => Ok(*i as u64 * 1000),
            _ => {
                let text = self.string()?;
                keel_engine::spec::parse_duration_ms(&text).map_err(|e| self.err(e.to_string()))
            }
        }
    }

    /// A size: `512m`, `1g`, or a number of bytes.
    pub fn size(&self) -> Result<u64> {
        match &self.node.value {
            Value::Int(i) if *i >= 0 => Ok(*i as u64),
            _ => {
                let text = self.string()?;
                keel_engine::spec::parse_size(&text).map_err(|e| self.err(e.to_string()))
            }
        }
    }

    pub fn items(&self) -> Result<Vec<(String, &'a Node)>> {
        match &self.node.value {
            Value::Seq(items) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, item)| (format!("{}[{i}]", self.path), item))
                .collect()),
            Value::Null => Ok(Vec::new()),
            _ => Err(self.must_be("a list")),
        }
    }

    pub fn entries(&self) -> Result<Vec<(String, &'a str, &'a Node)>> {
        match &self.node.value {
            Value::Map(entries) => Ok(entries
                .iter()
                .filter(|(k, _)| !k.starts_with("x-"))
                .map(|(k, v)| (format!("{}.{k}", self.path), k.as_str(), v))
                .collect()),
            Value::Null => Ok(Vec::new()),
            _ => Err(self.must_be("a mapping")),
        }
    }
}

/// Splits a command string into words as a POSIX shell would (quotes and
/// backslashes; no expansion), as docker compose does.
pub fn shell_words(text: &str) -> std::result::Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated single quote in {text:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(format!("unterminated double quote in {text:?}")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated double quote in {text:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_as_a_shell_splits_them() {
        assert_eq!(
            shell_words(r#"sh -c 'echo "a b"; exit 3' x\ y "q\"t""#).unwrap(),
            vec!["sh", "-c", "echo \"a b\"; exit 3", "x y", "q\"t"]
        );
        assert!(shell_words("echo 'open").is_err());
        assert_eq!(shell_words("  ").unwrap(), Vec::<String>::new());
        assert_eq!(shell_words("''").unwrap(), vec![""]);
    }
}
