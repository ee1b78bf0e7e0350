//! The parser: tokens into a small tree of text, actions and controls.

use std::collections::HashMap;
use std::fmt::Display;

use anyhow::{Result, anyhow};
use serde_json::Value;

use super::*;

/// Byte offsets into the template text, for error messages.
pub(super) type Span = (usize, usize);

#[derive(Debug, Clone)]
pub(super) enum Node {
    Text(String),
    /// `{{pipeline}}`: prints the value unless the pipeline declares variables.
    Action(Pipe),
    Control(Kind, Box<Control>),
    Template(String, Option<Pipe>, Span),
    Break,
    Continue,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Kind {
    If,
    Range,
    With,
}

#[derive(Debug, Clone)]
pub(super) struct Control {
    pub(super) pipe: Pipe,
    pub(super) list: Vec<Node>,
    pub(super) else_list: Vec<Node>,
}

#[derive(Debug, Clone, Default)]
pub(super) struct Pipe {
    pub(super) decl: Vec<String>,
    pub(super) assign: bool,
    pub(super) cmds: Vec<Cmd>,
}

impl Pipe {
    pub(super) fn span(&self) -> Span {
        let first = self.cmds.first().map_or(0, |c| c.span.0);
        (first, self.cmds.last().map_or(first, |c| c.span.1))
    }
}

#[derive(Debug, Clone)]
pub(super) struct Cmd {
    pub(super) args: Vec<Arg>,
    pub(super) span: Span,
}

#[derive(Debug, Clone)]
pub(super) enum Arg {
    Dot,
    Nil,
    Bool(bool),
    Num(Value),
    Str(String),
    /// `.A.B`
    Field(Vec<String>),
    /// `$x.A.B`
    Var(String, Vec<String>),
    Func(String),
    Pipe(Box<Pipe>),
    /// `(pipeline).A.B`
    Chain(Box<Arg>, Vec<String>),
}

/// What `text_or_action` found: a node, or the `{{end}}` or `{{else}}` that closes a list.
pub(super) enum Item {
    Node(Node),
    End(usize),
    Else(usize),
}

/// Bounds the nesting of controls and parentheses, so that no input can overflow the stack.
pub(super) const MAX_NESTING: usize = 100;

pub(super) struct Parser<'s> {
    pub(super) toks: Vec<Tok>,
    pub(super) i: usize,
    pub(super) src: &'s str,
    /// Variables in scope, for Go's parse-time "undefined variable" check.
    pub(super) vars: Vec<String>,
    pub(super) range_depth: usize,
    pub(super) depth: usize,
    pub(super) defs: HashMap<String, Vec<Node>>,
}

impl Parser<'_> {
    /// Past the end the last token (EOF or the lexer's error) repeats.
    pub(super) fn tok(&self, i: usize) -> &Tok {
        self.toks.get(i).or(self.toks.last()).unwrap_or(&EOF)
    }
    pub(super) fn peek(&self) -> &Tok {
        self.tok(self.i)
    }
    pub(super) fn next(&mut self) -> Tok {
        self.i += 1;
        self.tok(self.i - 1).clone()
    }
    pub(super) fn backup(&mut self) {
        self.i = self.i.saturating_sub(1);
    }
    pub(super) fn skip_spaces(&mut self) {
        while self.peek().k == K::Space {
            self.i += 1;
        }
    }
    pub(super) fn next_non_space(&mut self) -> Tok {
        self.skip_spaces();
        self.next()
    }
    pub(super) fn last_end(&self) -> usize {
        self.tok(self.i.saturating_sub(1)).end
    }

    pub(super) fn err(&self, pos: usize, msg: impl Display) -> anyhow::Error {
        let line = 1 + self.src.get(..pos).unwrap_or("").matches('\n').count();
        anyhow!("template: :{line}: {msg}")
    }

    pub(super) fn unexpected(&self, t: &Tok, context: &str) -> anyhow::Error {
        let what = match &t.k {
            K::Error(msg) => return self.err(t.pos, msg),
            K::Eof => "EOF".to_string(),
            K::Kw(w) => format!("<{w}>"),
            K::Dot => "<.>".into(),
            K::Nil => "<nil>".into(),
            _ => {
                let s = self.src.get(t.pos..t.end).unwrap_or("");
                match s.char_indices().nth(10) {
                    Some((cut, _)) => format!("{}...", quote(&s[..cut])),
                    None => quote(s),
                }
            }
        };
        self.err(t.pos, format!("unexpected {what} in {context}"))
    }

    pub(super) fn enter(&mut self, pos: usize) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(self.err(pos, "template nesting too deep"));
        }
        Ok(())
    }

    pub(super) fn expect_right(&mut self, context: &str) -> Result<()> {
        let t = self.next_non_space();
        if t.k != K::Right {
            return Err(self.unexpected(&t, context));
        }
        Ok(())
    }

    pub(super) fn root(&mut self) -> Result<Vec<Node>> {
        let mut list = Vec::new();
        while self.peek().k != K::Eof {
            // `{{define}}` is only allowed at the top level.
            let mut j = self.i + 1;
            while self.tok(j).k == K::Space {
                j += 1;
            }
            if self.peek().k == K::Left && self.tok(j).k == K::Kw("define") {
                self.define()?;
                continue;
            }
            match self.text_or_action()? {
                Item::Node(n) => list.push(n),
                Item::End(pos) => return Err(self.err(pos, "unexpected {{end}}")),
                Item::Else(pos) => return Err(self.err(pos, "unexpected {{else}}")),
            }
        }
        Ok(list)
    }

    pub(super) fn text_or_action(&mut self) -> Result<Item> {
        let t = self.next_non_space();
        match t.k {
            K::Text(s) => Ok(Item::Node(Node::Text(s))),
            K::Left => self.action(t.pos),
            _ => Err(self.unexpected(&t, "input")),
        }
    }

    /// The nodes up to the `{{end}}` or `{{else}}` that closes them.
    pub(super) fn item_list(&mut self) -> Result<(Vec<Node>, Item)> {
        let mut list = Vec::new();
        loop {
            self.skip_spaces();
            if self.peek().k == K::Eof {
                return Err(self.err(self.peek().pos, "unexpected EOF"));
            }
            match self.text_or_action()? {
                Item::Node(n) => list.push(n),
                end => return Ok((list, end)),
            }
        }
    }

    pub(super) fn action(&mut self, left: usize) -> Result<Item> {
        let t = self.next_non_space();
        let node = match t.k {
            K::Kw("block") => self.block(left)?,
            K::Kw(w @ ("break" | "continue")) => {
                let r = self.next_non_space();
                if r.k != K::Right {
                    return Err(self.unexpected(&r, &format!("{{{{{w}}}}}")));
                }
                if self.range_depth == 0 {
                    return Err(self.err(t.pos, format!("{{{{{w}}}}} outside {{{{range}}}}")));
                }
                if w == "break" {
                    Node::Break
                } else {
                    Node::Continue
                }
            }
            K::Kw("else") => {
                // `{{else if ...}}` and `{{else with ...}}` go on as a nested control.
                self.skip_spaces();
                if !matches!(self.peek().k, K::Kw("if" | "with")) {
                    self.expect_right("else")?;
                }
                return Ok(Item::Else(t.pos));
            }
            K::Kw("end") => {
                self.expect_right("end")?;
                return Ok(Item::End(t.pos));
            }
            K::Kw("if") => self.control(Kind::If, left)?,
            K::Kw("range") => self.control(Kind::Range, left)?,
            K::Kw("with") => self.control(Kind::With, left)?,
            K::Kw("template") => {
                let name = self.name("template clause")?;
                let pipe = if self.next_non_space().k == K::Right {
                    None
                } else {
                    self.backup();
                    Some(self.pipeline("template clause", false)?)
                };
                Node::Template(name, pipe, (left, self.last_end()))
            }
            _ => {
                self.backup();
                Node::Action(self.pipeline("command", false)?)
            }
        };
        Ok(Item::Node(node))
    }

    pub(super) fn control(&mut self, kind: Kind, left: usize) -> Result<Node> {
        self.enter(left)?;
        let mark = self.vars.len();
        let context = match kind {
            Kind::If => "if",
            Kind::Range => "range",
            Kind::With => "with",
        };
        let pipe = self.pipeline(context, false)?;
        let in_range = usize::from(kind == Kind::Range);
        self.range_depth += in_range;
        let (list, closed) = self.item_list()?;
        self.range_depth -= in_range;
        let mut else_list = Vec::new();
        if let Item::Else(_) = closed {
            self.skip_spaces();
            let chained = match self.peek().k {
                K::Kw("if") => kind == Kind::If,
                K::Kw("with") => kind == Kind::With,
                _ => false,
            };
            if chained {
                let pos = self.next().pos;
                else_list.push(self.control(kind, pos)?);
            } else {
                let (list, closed) = self.item_list()?;
                if let Item::Else(pos) = closed {
                    return Err(self.err(pos, "expected end; found {{else}}"));
                }
                else_list = list;
            }
        }
        self.vars.truncate(mark);
        self.depth -= 1;
        Ok(Node::Control(
            kind,
            Box::new(Control {
                pipe,
                list,
                else_list,
            }),
        ))
    }

    pub(super) fn name(&mut self, context: &str) -> Result<String> {
        let t = self.next_non_space();
        match t.k {
            K::Str(s) => Ok(s),
            _ => Err(self.unexpected(&t, context)),
        }
    }

    pub(super) fn define(&mut self) -> Result<()> {
        let left = self.next().pos;
        self.next_non_space();
        let name = self.name("define clause")?;
        self.expect_right("define clause")?;
        let list = self.definition("define clause")?;
        self.add_definition(name, list, left)
    }

    pub(super) fn block(&mut self, left: usize) -> Result<Node> {
        let name = self.name("block clause")?;
        let pipe = self.pipeline("block clause", false)?;
        let span = (left, self.last_end());
        let list = self.definition("block clause")?;
        self.add_definition(name.clone(), list, left)?;
        Ok(Node::Template(name, Some(pipe), span))
    }

    /// The body of `{{define}}` or `{{block}}`, which has its own variables.
    pub(super) fn definition(&mut self, context: &str) -> Result<Vec<Node>> {
        self.enter(self.peek().pos)?;
        let vars = std::mem::replace(&mut self.vars, vec!["$".into()]);
        let range_depth = std::mem::replace(&mut self.range_depth, 0);
        let (list, closed) = self.item_list()?;
        if let Item::Else(pos) = closed {
            return Err(self.err(pos, format!("unexpected {{{{else}}}} in {context}")));
        }
        (self.vars, self.range_depth) = (vars, range_depth);
        self.depth -= 1;
        Ok(list)
    }

    /// As in Go, an empty definition never replaces another, and two non-empty ones clash.
    pub(super) fn add_definition(
        &mut self,
        name: String,
        list: Vec<Node>,
        pos: usize,
    ) -> Result<()> {
        let empty = |l: &[Node]| {
            l.iter()
                .all(|n| matches!(n, Node::Text(s) if s.trim().is_empty()))
        };
        let old_empty = self.defs.get(&name).is_none_or(|old| empty(old));
        if !old_empty && !empty(&list) {
            let msg = format!("template: multiple definition of template {}", quote(&name));
            return Err(self.err(pos, msg));
        }
        if old_empty {
            self.defs.insert(name, list);
        }
        Ok(())
    }

    pub(super) fn pipeline(&mut self, context: &str, paren: bool) -> Result<Pipe> {
        let mut pipe = Pipe::default();
        // Declarations: `$x :=`, `$x =`, and in range `$i, $v :=`.
        loop {
            let save = self.i;
            self.skip_spaces();
            let K::Var(name) = self.peek().k.clone() else {
                self.i = save;
                break;
            };
            self.i += 1;
            self.skip_spaces();
            let t = self.peek().clone();
            match t.k {
                K::Declare | K::Assign => {
                    self.i += 1;
                    if t.k == K::Assign && !self.vars.contains(&name) {
                        return Err(self.err(t.pos, format!("undefined variable {}", quote(&name))));
                    }
                    pipe.assign = t.k == K::Assign;
                    pipe.decl.push(name.clone());
                    self.vars.push(name);
                    break;
                }
                K::Char(',') => {
                    self.i += 1;
                    pipe.decl.push(name.clone());
                    self.vars.push(name);
                    if context == "range" && pipe.decl.len() < 2 {
                        self.skip_spaces();
                        if matches!(self.peek().k, K::Var(_) | K::Right | K::RParen) {
                            continue;
                        }
                        return Err(self.err(t.pos, "range can only initialize variables"));
                    }
                    return Err(self.err(t.pos, format!("too many declarations in {context}")));
                }
                _ => {
                    self.i = save;
                    break;
                }
            }
        }
        loop {
            let t = self.next_non_space();
            match t.k {
                K::Right | K::RParen if (t.k == K::RParen) == paren => {
                    if pipe.cmds.is_empty() {
                        return Err(self.err(t.pos, format!("missing value for {context}")));
                    }
                    break;
                }
                K::Bool(_) | K::Num(_) | K::Str(_) | K::Nil | K::Dot => {}
                K::Field(_) | K::Var(_) | K::Ident(_) | K::LParen => {}
                _ => return Err(self.unexpected(&t, context)),
            }
            self.backup();
            let cmd = self.command()?;
            pipe.cmds.push(cmd);
        }
        for (i, c) in pipe.cmds.iter().enumerate().skip(1) {
            if let Some(Arg::Bool(_) | Arg::Dot | Arg::Nil | Arg::Num(_) | Arg::Str(_)) =
                c.args.first()
            {
                let msg = format!("non executable command in pipeline stage {}", i + 1);
                return Err(self.err(c.span.0, msg));
            }
        }
        Ok(pipe)
    }

    pub(super) fn command(&mut self) -> Result<Cmd> {
        self.skip_spaces();
        let pos = self.peek().pos;
        let (mut args, mut end) = (Vec::new(), pos);
        loop {
            self.skip_spaces();
            if let Some(arg) = self.operand()? {
                args.push(arg);
                end = self.last_end();
            }
            let t = self.next();
            match t.k {
                K::Space => continue,
                K::Right | K::RParen => self.backup(),
                K::Pipe => {}
                _ => return Err(self.unexpected(&t, "operand")),
            }
            break;
        }
        if args.is_empty() {
            return Err(self.err(pos, "empty command"));
        }
        Ok(Cmd {
            args,
            span: (pos, end),
        })
    }

    pub(super) fn operand(&mut self) -> Result<Option<Arg>> {
        let Some(arg) = self.term()? else {
            return Ok(None);
        };
        let mut chain = Vec::new();
        while let K::Field(f) = &self.peek().k {
            chain.push(f.clone());
            self.i += 1;
        }
        Ok(Some(match arg {
            _ if chain.is_empty() => arg,
            Arg::Field(f) => Arg::Field([f, chain].concat()),
            Arg::Var(v, f) => Arg::Var(v, [f, chain].concat()),
            Arg::Bool(_) | Arg::Dot | Arg::Nil | Arg::Num(_) | Arg::Str(_) => {
                let msg = format!("unexpected . after term {}", quote(&describe(&arg)));
                return Err(self.err(self.last_end(), msg));
            }
            arg => Arg::Chain(Box::new(arg), chain),
        }))
    }

    pub(super) fn term(&mut self) -> Result<Option<Arg>> {
        let t = self.next_non_space();
        Ok(Some(match t.k {
            K::Ident(name) => {
                if !FUNCS.iter().any(|f| f.0 == name) {
                    return Err(self.err(t.pos, format!("function {} not defined", quote(&name))));
                }
                Arg::Func(name)
            }
            K::Var(name) => {
                if !self.vars.contains(&name) {
                    return Err(self.err(t.pos, format!("undefined variable {}", quote(&name))));
                }
                Arg::Var(name, Vec::new())
            }
            K::Dot => Arg::Dot,
            K::Nil => Arg::Nil,
            K::Field(f) => Arg::Field(vec![f]),
            K::Bool(b) => Arg::Bool(b),
            K::Num(n) => Arg::Num(n),
            K::Str(s) => Arg::Str(s),
            K::LParen => {
                self.enter(t.pos)?;
                let pipe = self.pipeline("parenthesized pipeline", true)?;
                self.depth -= 1;
                Arg::Pipe(Box::new(pipe))
            }
            _ => {
                self.backup();
                return Ok(None);
            }
        }))
    }
}

/// An argument as Go's `Node.String()` shows it, for error messages.
pub(super) fn describe(arg: &Arg) -> String {
    let chain = |f: &[String]| f.iter().map(|f| format!(".{f}")).collect::<String>();
    match arg {
        Arg::Dot => ".".into(),
        Arg::Nil => "nil".into(),
        Arg::Bool(b) => b.to_string(),
        Arg::Num(n) => display(n),
        Arg::Str(s) => quote(s),
        Arg::Field(f) => chain(f),
        Arg::Var(v, f) => format!("{v}{}", chain(f)),
        Arg::Func(name) => name.clone(),
        Arg::Pipe(_) => "(...)".into(),
        Arg::Chain(a, f) => format!("{}{}", describe(a), chain(f)),
    }
}
