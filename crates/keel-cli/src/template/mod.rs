//! Go's `text/template`, as docker's `--format` flag uses it, over `serde_json::Value`.
//!
//! [`lexer`] turns the text into tokens, [`parser`] builds a small AST, [`executor`] walks it
//! with [`functions`] and [`printing`]. In short: `lex` turns the text into tokens, `Parser` builds a small AST and `Exec` walks it. Data
//! follows Go's rules for `map[string]interface{}`: a missing key is Go's invalid value (`None`
//! here, printed `<no value>`), JSON null is a nil (printed `<nil>`, as docker's nil pointers
//! are). The functions are Go's builtins plus docker's (`json`, `join`, `split`, `upper`, `pad`,
//! ...). Errors read like Go's, e.g. `template: :1: unexpected "}" in operand`.

use std::collections::HashMap;

use anyhow::Result;
use serde_json::Value;

mod executor;
mod functions;
mod lexer;
mod parser;
mod printing;
#[cfg(test)]
mod tests;

use executor::*;
use functions::*;
use lexer::*;
use parser::*;
use printing::*;

/// A parsed `--format` template.
#[derive(Debug, Clone)]
pub struct Template {
    /// `table ...`: print a header first.
    pub table: bool,
    /// The text after `table` and escape processing; error positions point into it.
    text: String,
    root: Vec<Node>,
    defs: HashMap<String, Vec<Node>>,
}

impl Template {
    /// Parses a `--format` value: an optional leading `table` word, docker's `\t` and `\n`
    /// escapes, then Go template syntax.
    pub fn parse(text: &str) -> Result<Template> {
        let (table, text) = match text.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
                (true, rest.trim_start().trim_end_matches(' '))
            }
            _ => (false, text),
        };
        let text = text.replace("\\t", "\t").replace("\\n", "\n");
        let mut parser = Parser {
            toks: lex(&text),
            i: 0,
            src: &text,
            vars: vec!["$".into()],
            range_depth: 0,
            depth: 0,
            defs: HashMap::new(),
        };
        let root = parser.root()?;
        let defs = parser.defs;
        Ok(Template {
            table,
            text,
            root,
            defs,
        })
    }

    /// Executes the template with `.` (and `$`) set to `value`.
    pub fn render(&self, value: &Value) -> Result<String> {
        let mut exec = Exec::new(self, value, None);
        exec.walk(Some(value), &self.root)?;
        Ok(exec.out)
    }

    /// The header row of a `table` template. Like docker, it executes the template in a
    /// context where every field chain `.A.B` is the column title `names("A.B")` and docker's
    /// string functions leave titles alone; `if`, `range` and `with` run their body once, and an
    /// action that fails prints nothing.
    pub fn header(&self, names: &dyn Fn(&str) -> String) -> String {
        let mut exec = Exec::new(self, &Value::Null, Some(names));
        let _ = exec.walk(None, &self.root);
        exec.out
    }

    /// Whether the template has tab-separated columns to align.
    pub fn has_tabs(&self) -> bool {
        self.text.contains('\t')
    }
}

/// `--format` of a listing command (`ps`, `images`, `volume ls`, ...):
/// `json` (or `{{json .}}`) prints one object a line; a Go template prints
/// a line a row, with a header row first for `table ...`, tab-separated
/// cells aligned as docker's tabwriter does. A field's column title is its
/// name in upper case (`Names` → `NAMES`) unless `titles` names another
/// (`("ID", "CONTAINER ID")`). None for plain `table` (or no format): the
/// caller's own table.
pub fn render_list(
    rows: &[Value],
    format: Option<&str>,
    titles: &[(&str, &str)],
) -> Result<Option<String>> {
    let format = match format.map(str::trim) {
        None | Some("") | Some("table") => return Ok(None),
        Some(format) => format,
    };
    if format == "json" || format == "{{json .}}" {
        let mut out = String::new();
        for row in rows {
            out.push_str(&serde_json::to_string(row)?);
            out.push('\n');
        }
        return Ok(Some(out));
    }
    let template = Template::parse(format)?;
    let mut lines = Vec::new();
    if template.table {
        lines.push(template.header(&|field| {
            titles
                .iter()
                .find(|(name, _)| *name == field)
                .map(|(_, title)| title.to_string())
                .unwrap_or_else(|| field.to_uppercase())
        }));
    }
    for row in rows {
        lines.push(template.render(row)?);
    }
    if !template.has_tabs() {
        let mut out = String::new();
        for line in lines {
            out.push_str(&line);
            out.push('\n');
        }
        return Ok(Some(out));
    }
    let cells: Vec<Vec<String>> = lines
        .iter()
        .map(|line| line.split('\t').map(str::to_string).collect())
        .collect();
    Ok(Some(crate::images::render_table(&cells)))
}

/// Prints each value with the template, or all of them as indented JSON (docker's `inspect`).
pub fn print_values(values: &[Value], format: Option<&str>) -> Result<()> {
    match format {
        Some(format) => {
            let template = Template::parse(format)?;
            for value in values {
                println!("{}", template.render(value)?);
            }
        }
        None => println!("{}", serde_json::to_string_pretty(values)?),
    }
    Ok(())
}
