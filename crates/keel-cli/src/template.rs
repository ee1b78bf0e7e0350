//! The part of Go's text/template that `--format` users type: `{{.Field}}`,
//! nested `{{.State.Status}}`, `{{json .Config}}`, `{{.}}`, `{{upper .X}}`,
//! `{{lower .X}}`, `{{index .Labels "key"}}`, and literal text with `\t`
//! and `\n` escapes, rendered over a JSON value. A `table` prefix (for
//! `ps`, `images`) asks for a header row made of the field names.

use anyhow::{Result, bail};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Field {
        func: Option<String>,
        path: Vec<String>,
        key: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct Template {
    pieces: Vec<Piece>,
    /// `table ...`: print a header first.
    pub table: bool,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template> {
        let (table, body) = match text.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
                (true, rest.trim_start())
            }
            _ => (false, text),
        };
        let body = body.replace("\\t", "\t").replace("\\n", "\n");
        let mut pieces = Vec::new();
        let mut rest = body.as_str();
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_string()));
            }
            let Some(end) = rest[start..].find("}}") else {
                bail!("template: unclosed action in {text:?}");
            };
            let action = rest[start + 2..start + end].trim();
            pieces.push(parse_action(action, text)?);
            rest = &rest[start + end + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(Template { pieces, table })
    }

    pub fn render(&self, value: &Value) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Field { func, path, key } => {
                    let mut found = lookup(value, path);
                    if let Some(key) = key {
                        found = found.and_then(|v| v.get(key.as_str()));
                    }
                    let text = match func.as_deref() {
                        Some("json") => {
                            serde_json::to_string(found.unwrap_or(&Value::Null)).unwrap_or_default()
                        }
                        Some("upper") => plain(found).to_uppercase(),
                        Some("lower") => plain(found).to_lowercase(),
                        _ => plain(found),
                    };
                    out.push_str(&text);
                }
            }
        }
        out
    }

    /// The header row of a `table` template: each field's name in
    /// docker's upper case with spaces (`.Names` → `NAMES`, `.ID` →
    /// `CONTAINER ID` when `id_header` says so).
    pub fn header(&self, names: &dyn Fn(&str) -> String) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Field { path, .. } => out.push_str(&names(&path.join("."))),
            }
        }
        out
    }

    /// Whether the template has tab-separated columns to align.
    pub fn has_tabs(&self) -> bool {
        self.pieces
            .iter()
            .any(|p| matches!(p, Piece::Text(t) if t.contains('\t')))
    }
}

/// Prints `values` as `inspect` does: one rendering of `format` a value,
/// or else a JSON array of them all.
pub fn print_values(values: &[Value], format: Option<&str>) -> Result<()> {
    match format {
        Some(format) => {
            let template = Template::parse(format)?;
            for value in values {
                println!("{}", template.render(value));
            }
        }
        None => println!("{}", serde_json::to_string_pretty(values)?),
    }
    Ok(())
}

fn parse_action(action: &str, text: &str) -> Result<Piece> {
    let words: Vec<&str> = action.split_whitespace().collect();
    let (func, field, key) = match words.as_slice() {
        [field] => (None, *field, None),
        [func @ ("json" | "upper" | "lower"), field] => (Some(func.to_string()), *field, None),
        ["index", field, key] => (None, *field, Some(key.trim_matches('"').to_string())),
        _ => bail!("template: unsupported action {{{{{action}}}}} in {text:?}"),
    };
    if !field.starts_with('.') {
        bail!("template: {field:?} is not a field (fields start with '.') in {text:?}");
    }
    let path = field[1..]
        .split('.')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    Ok(Piece::Field { func, path, key })
}

fn lookup<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut current = value;
    for part in path {
        current = current.get(part.as_str())?;
    }
    Some(current)
}

/// Go's default printing: strings bare, null as `<no value>`, maps and
/// lists as `map[k:v]` / `[a b]`.
fn plain(value: Option<&Value>) -> String {
    match value {
        None => "<no value>".into(),
        Some(Value::Null) => "<nil>".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Array(items)) => format!(
            "[{}]",
            items
                .iter()
                .map(|i| plain(Some(i)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Some(Value::Object(map)) => format!(
            "map[{}]",
            map.iter()
                .map(|(k, v)| format!("{k}:{}", plain(Some(v))))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_fields_json_and_text() {
        let value = json!({"Names": "web", "State": {"Status": "running", "Pid": 42},
                           "Labels": {"a": "b"}, "Args": ["sh", "-c"], "None": null});
        let render = |t: &str| Template::parse(t).unwrap().render(&value);
        assert_eq!(render("{{.Names}}"), "web");
        assert_eq!(render("{{.State.Status}}/{{.State.Pid}}"), "running/42");
        assert_eq!(render("{{json .Labels}}"), r#"{"a":"b"}"#);
        assert_eq!(render("{{index .Labels \"a\"}}"), "b");
        assert_eq!(render("{{upper .Names}}\\t{{.Args}}"), "WEB\t[sh -c]");
        assert_eq!(render("{{.Missing}}"), "<no value>");
        assert_eq!(render("{{.None}}"), "<nil>");
        assert_eq!(render("id: {{ .Names }}!"), "id: web!");
        assert!(Template::parse("{{.Names").is_err());
        assert!(Template::parse("{{range .X}}").is_err());
        let table = Template::parse("table {{.Names}}\t{{.Status}}").unwrap();
        assert!(table.table && table.has_tabs());
        assert_eq!(table.header(&|name| name.to_uppercase()), "NAMES\tSTATUS");
    }
}
