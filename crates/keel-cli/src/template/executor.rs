//! The executor: walks the tree with `.` bound to a JSON value.

use std::fmt::Display;

use anyhow::{Result, anyhow, bail};
use serde_json::{Map, Number, Value};

use super::*;

pub(super) enum Ctl {
    Normal,
    Break,
    Continue,
}

/// Bounds the depth of nested lists and template calls (`{{template}}` may recurse).
pub(super) const MAX_DEPTH: usize = 200;

pub(super) struct Exec<'t> {
    pub(super) tmpl: &'t Template,
    /// Header mode: the column title of a field chain.
    pub(super) names: Option<&'t dyn Fn(&str) -> String>,
    pub(super) out: String,
    pub(super) vars: Vec<(String, Option<Value>)>,
    /// The template being executed, for error messages.
    pub(super) name: &'t str,
    pub(super) depth: usize,
    /// Set when the depth limit is hit, so that header mode stops rather than going on.
    pub(super) fatal: bool,
}

impl<'t> Exec<'t> {
    pub(super) fn new(
        tmpl: &'t Template,
        root: &Value,
        names: Option<&'t dyn Fn(&str) -> String>,
    ) -> Self {
        let vars = vec![("$".to_string(), Some(root.clone()))];
        Exec {
            tmpl,
            names,
            out: String::new(),
            vars,
            name: "",
            depth: 0,
            fatal: false,
        }
    }

    /// An error located like Go's: `template: :LINE:COL: executing "NAME" at <...>: msg`.
    pub(super) fn error(&self, (pos, end): Span, msg: impl Display) -> anyhow::Error {
        let text = &self.tmpl.text;
        let before = text.get(..pos).unwrap_or("");
        let line = 1 + before.matches('\n').count();
        let col = before.rfind('\n').map_or(pos, |nl| pos - nl - 1);
        let mut context = text.get(pos..end).unwrap_or("").to_string();
        if let Some((cut, _)) = context.char_indices().nth(20) {
            context.replace_range(cut.., "...");
        }
        let name = quote(self.name);
        anyhow!("template: :{line}:{col}: executing {name} at <{context}>: {msg}")
    }

    pub(super) fn walk(&mut self, dot: Option<&Value>, list: &'t [Node]) -> Result<Ctl> {
        if self.depth >= MAX_DEPTH {
            self.fatal = true;
            bail!(
                "template: {}: exceeded maximum template depth ({MAX_DEPTH})",
                quote(self.name)
            );
        }
        self.depth += 1;
        let mut result = Ok(Ctl::Normal);
        for node in list {
            match self.node(dot, node) {
                Ok(Ctl::Normal) => {}
                Err(_) if self.names.is_some() && !self.fatal => {}
                other => {
                    result = other;
                    break;
                }
            }
        }
        self.depth -= 1;
        result
    }

    pub(super) fn node(&mut self, dot: Option<&Value>, node: &'t Node) -> Result<Ctl> {
        match node {
            Node::Text(s) => self.out.push_str(s),
            Node::Action(pipe) => {
                let v = self.pipe(dot, pipe)?;
                if pipe.decl.is_empty() {
                    match &v {
                        Some(v) => print_value(v, &mut self.out),
                        None => self.out.push_str("<no value>"),
                    }
                }
            }
            Node::Control(kind, c) => {
                let mark = self.vars.len();
                let result = self.control(dot, *kind, c);
                self.vars.truncate(mark);
                return result;
            }
            Node::Template(name, pipe, span) => {
                let v = match pipe {
                    Some(p) => self.pipe(dot, p)?,
                    None => None,
                };
                let tmpl = self.tmpl;
                let Some(body) = tmpl.defs.get(name) else {
                    return Err(self.error(*span, format!("template {} not defined", quote(name))));
                };
                // A template call has its own variables, with `$` as its dot.
                let vars = std::mem::replace(&mut self.vars, vec![("$".into(), v.clone())]);
                let outer = std::mem::replace(&mut self.name, name);
                let result = self.walk(v.as_ref(), body);
                (self.vars, self.name) = (vars, outer);
                result?;
            }
            Node::Break => return Ok(Ctl::Break),
            Node::Continue => return Ok(Ctl::Continue),
        }
        Ok(Ctl::Normal)
    }

    pub(super) fn control(
        &mut self,
        dot: Option<&Value>,
        kind: Kind,
        c: &'t Control,
    ) -> Result<Ctl> {
        if self.names.is_some() {
            // Header mode: the body once, in the same header context.
            let v = self
                .pipe_value(dot, &c.pipe)
                .unwrap_or_else(|_| Some(Value::from("")));
            self.vars
                .extend(c.pipe.decl.iter().map(|d| (d.clone(), v.clone())));
            let ctl = self.walk(dot, &c.list)?;
            return Ok(if kind == Kind::Range {
                Ctl::Normal
            } else {
                ctl
            });
        }
        if kind == Kind::Range {
            return self.range(dot, c);
        }
        let v = self.pipe(dot, &c.pipe)?;
        match kind {
            _ if !truth(v.as_ref()) => self.walk(dot, &c.else_list),
            Kind::With => self.walk(v.as_ref(), &c.list),
            _ => self.walk(dot, &c.list),
        }
    }

    pub(super) fn range(&mut self, dot: Option<&Value>, c: &'t Control) -> Result<Ctl> {
        let v = self.pipe_value(dot, &c.pipe)?;
        let empty = match &v {
            None | Some(Value::Null) => true,
            Some(Value::Array(a)) => {
                for (i, e) in a.iter().enumerate() {
                    if self.iteration(c, Value::from(i), e)? {
                        break;
                    }
                }
                a.is_empty()
            }
            Some(Value::Object(m)) => {
                for (k, e) in sorted(m) {
                    if self.iteration(c, Value::from(k.as_str()), e)? {
                        break;
                    }
                }
                m.is_empty()
            }
            // Go 1.22: range over an integer.
            Some(Value::Number(n)) if n.as_i64().is_some() => {
                if c.pipe.decl.len() > 1 {
                    let msg = format!("can't use {n} to iterate over more than one variable");
                    return Err(self.error(c.pipe.span(), msg));
                }
                let n = n.as_i64().unwrap_or(0);
                for i in 0..n {
                    if self.iteration(c, Value::from(i), &Value::from(i))? {
                        break;
                    }
                }
                n <= 0
            }
            Some(v) => {
                let msg = format!("range can't iterate over {}", display(v));
                return Err(self.error(c.pipe.span(), msg));
            }
        };
        if empty {
            self.walk(dot, &c.else_list)
        } else {
            Ok(Ctl::Normal)
        }
    }

    /// One range iteration; true on `{{break}}`.
    pub(super) fn iteration(&mut self, c: &'t Control, key: Value, elem: &Value) -> Result<bool> {
        let mark = self.vars.len();
        let vals = match c.pipe.decl.len() {
            1 => vec![elem.clone()],
            2 => vec![key, elem.clone()],
            _ => vec![],
        };
        for (name, v) in c.pipe.decl.iter().zip(vals) {
            if c.pipe.assign {
                self.set_var(name, Some(v))?;
            } else {
                self.vars.push((name.clone(), Some(v)));
            }
        }
        let result = self.walk(Some(elem), &c.list);
        self.vars.truncate(mark);
        Ok(matches!(result?, Ctl::Break))
    }

    pub(super) fn set_var(&mut self, name: &str, v: Option<Value>) -> Result<()> {
        match self.vars.iter_mut().rev().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = v,
            None => bail!("template: undefined variable: {name}"),
        }
        Ok(())
    }

    /// Evaluates a pipeline and declares or assigns its variables.
    pub(super) fn pipe(&mut self, dot: Option<&Value>, pipe: &'t Pipe) -> Result<Option<Value>> {
        let v = self.pipe_value(dot, pipe)?;
        for name in &pipe.decl {
            if pipe.assign {
                self.set_var(name, v.clone())?;
            } else {
                self.vars.push((name.clone(), v.clone()));
            }
        }
        Ok(v)
    }

    pub(super) fn pipe_value(
        &mut self,
        dot: Option<&Value>,
        pipe: &'t Pipe,
    ) -> Result<Option<Value>> {
        let mut last = None;
        for cmd in &pipe.cmds {
            last = Some(self.cmd(dot, cmd, last)?);
        }
        Ok(last.flatten())
    }

    /// `last` is the previous pipeline stage's value: the command's final argument.
    pub(super) fn cmd(
        &mut self,
        dot: Option<&Value>,
        c: &'t Cmd,
        last: Option<Option<Value>>,
    ) -> Result<Option<Value>> {
        let Some((first, args)) = c.args.split_first() else {
            return Err(self.error(c.span, "empty command"));
        };
        if let Arg::Func(name) = first {
            return self.call(dot, c, name, args, last);
        }
        if let (Arg::Field(f), [key], None) = (first, args, &last)
            && f.len() == 1
            && f[0] == "Label"
        {
            return self.label(dot, c, key);
        }
        if !args.is_empty() || last.is_some() {
            let msg = match first {
                Arg::Field(f) | Arg::Var(_, f) | Arg::Chain(_, f) if !f.is_empty() => {
                    format!("{} is not a method but has arguments", f.join("."))
                }
                _ => format!("can't give argument to non-function {}", describe(first)),
            };
            return Err(self.error(c.span, msg));
        }
        if let Arg::Nil = first {
            return Err(self.error(c.span, "nil is not a command"));
        }
        self.arg(dot, c, first)
    }

    /// docker's `.Label "key"` method of `ps`, `images`, `volume ls` and
    /// `network ls` rows: the value of one label, from `Labels` as an object
    /// or as docker's `k=v,k2=v2` text.
    fn label(&mut self, dot: Option<&Value>, c: &'t Cmd, key: &'t Arg) -> Result<Option<Value>> {
        if let Some(names) = self.names {
            return Ok(Some(Value::from(names("Label"))));
        }
        let key = match self.arg(dot, c, key)? {
            Some(Value::String(key)) => key,
            other => {
                let shown = other.map(|v| v.to_string()).unwrap_or_default();
                return Err(self.error(c.span, format!("Label wants a string, not {shown}")));
            }
        };
        let found = match dot.and_then(|d| d.get("Labels")) {
            Some(Value::Object(labels)) => labels.get(&key).cloned(),
            Some(Value::String(text)) => text
                .split(',')
                .filter_map(|pair| pair.split_once('='))
                .find(|(k, _)| *k == key)
                .map(|(_, v)| Value::from(v)),
            _ => None,
        };
        Ok(Some(found.unwrap_or_else(|| Value::from(""))))
    }

    pub(super) fn arg(
        &mut self,
        dot: Option<&Value>,
        c: &'t Cmd,
        arg: &'t Arg,
    ) -> Result<Option<Value>> {
        let v = match (arg, self.names) {
            (Arg::Field(f) | Arg::Var(_, f), Some(names)) if !f.is_empty() => {
                Ok(Some(Value::from(names(&f.join(".")))))
            }
            (Arg::Dot, Some(_)) => Ok(Some(Value::from(""))),
            (Arg::Dot, None) => Ok(dot.cloned()),
            (Arg::Nil, _) => Ok(Some(Value::Null)),
            (Arg::Bool(b), _) => Ok(Some(Value::Bool(*b))),
            (Arg::Num(n), _) => Ok(Some(n.clone())),
            (Arg::Str(s), _) => Ok(Some(Value::from(s.as_str()))),
            (Arg::Field(f), _) => fields(dot, f),
            (Arg::Var(name, f), _) => match self.vars.iter().rev().find(|(n, _)| n == name) {
                Some((_, v)) => fields(v.as_ref(), f),
                None => Err(format!("undefined variable: {name}")),
            },
            (Arg::Func(name), _) => return self.call(dot, c, name, &[], None),
            (Arg::Pipe(p), _) => return self.pipe(dot, p),
            (Arg::Chain(inner, f), _) => {
                let v = self.arg(dot, c, inner)?;
                fields(v.as_ref(), f)
            }
        };
        v.map_err(|msg| self.error(c.span, msg))
    }

    pub(super) fn call(
        &mut self,
        dot: Option<&Value>,
        c: &'t Cmd,
        name: &str,
        args: &'t [Arg],
        last: Option<Option<Value>>,
    ) -> Result<Option<Value>> {
        let n = args.len() + usize::from(last.is_some());
        check_arity(name, n).map_err(|msg| self.error(c.span, msg))?;
        if name == "and" || name == "or" {
            // They short-circuit: the first deciding argument is the value.
            let mut v = None;
            for arg in args {
                v = self.arg(dot, c, arg)?;
                if truth(v.as_ref()) == (name == "or") {
                    return Ok(v);
                }
            }
            return Ok(last.unwrap_or(v));
        }
        let mut vals = Vec::with_capacity(n);
        for arg in args {
            vals.push(self.arg(dot, c, arg)?.unwrap_or(Value::Null));
        }
        vals.extend(last.map(|v| v.unwrap_or(Value::Null)));
        builtin(name, vals, self.names.is_some()).map_err(|msg| self.error(c.span, msg))
    }
}

/// A field chain: map keys; a missing key is no value; anything else is an error.
pub(super) fn fields(mut v: Option<&Value>, names: &[String]) -> Result<Option<Value>, String> {
    for name in names {
        v = match v {
            None => return Ok(None),
            Some(Value::Object(m)) => m.get(name),
            Some(Value::Null) => {
                return Err(format!("nil pointer evaluating interface {{}}.{name}"));
            }
            Some(v) => {
                return Err(format!(
                    "can't evaluate field {name} in type {}",
                    type_name(v)
                ));
            }
        };
    }
    Ok(v.cloned())
}

/// Go's truth: false, 0, nil, and empty strings, arrays and maps are false.
pub(super) fn truth(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(m)) => !m.is_empty(),
    }
}

pub(super) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(n) if int(n).is_some() => "int",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

pub(super) fn int(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

/// Go maps print and range in key order.
pub(super) fn sorted(m: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}
