//! Dockerfile text to [`ast::Dockerfile`], after BuildKit's dockerfile
//! frontend (`parser` for lines, continuations, directives and
//! here-documents; `instructions` for each instruction's arguments and
//! flags). Words stay raw: variables are expanded at build time.
//!
//! Like BuildKit it works in two passes: the whole file is first cut into
//! instructions (so a line-level error anywhere wins), then each
//! instruction is checked and grouped into stages.

use std::collections::HashMap;
use std::fmt;

use crate::ast::{
    ArgDecl, Command, Copy, Directives, Dockerfile, Healthcheck, Heredoc, Instruction, Kind, Run,
    Stage,
};
use crate::shell;

/// A Dockerfile that cannot be parsed: where, why, and the line itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
    /// The text of `line`, without its newline.
    pub source_line: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}\n{:>4} | {}",
            self.file, self.line, self.column, self.message, self.line, self.source_line
        )
    }
}

impl std::error::Error for ParseError {}

/// Parses a whole Dockerfile. `file_name` only labels errors.
pub fn parse(text: &str, file_name: &str) -> Result<Dockerfile, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let source = Source::new(text, file_name);
    let mut state = DirectiveState::new('\\');
    let nodes = scan(text, &mut state).map_err(|fail| source.error(fail))?;
    build(nodes, state.directives()).map_err(|fail| source.error(fail))
}

/// Parses one instruction given as text, as an image stores an `ONBUILD`
/// trigger (here-document bodies included). It must not be `FROM`.
pub fn parse_instruction(text: &str, escape: char) -> Result<Instruction, ParseError> {
    let source = Source::new(text, "ONBUILD trigger");
    let mut state = DirectiveState::new(escape);
    // A trigger is never preceded by directives.
    state.done = true;
    let result = scan(text, &mut state).and_then(|nodes| {
        let count = nodes.len();
        let mut nodes = nodes.into_iter();
        let (Some(node), None) = (nodes.next(), nodes.next()) else {
            return Err(Fail::at(
                1,
                format!("an ONBUILD trigger must be a single instruction, found {count}"),
            ));
        };
        match convert(&node)? {
            Converted::Stage(_) => Err(Fail::at(
                node.start_line,
                "FROM isn't allowed as an ONBUILD trigger".to_string(),
            )),
            Converted::Instruction(instruction) => Ok(instruction),
        }
    });
    result.map_err(|fail| source.error(fail))
}

/// Go's `time.ParseDuration`, which BuildKit uses for `HEALTHCHECK`
/// durations: signed nanoseconds, or Go's error text.
pub fn parse_go_duration(text: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {text:?}");
    let mut rest = text;
    let mut negative = false;
    if let Some(stripped) = rest.strip_prefix('-') {
        negative = true;
        rest = stripped;
    } else if let Some(stripped) = rest.strip_prefix('+') {
        rest = stripped;
    }
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    const LIMIT: u64 = 1 << 63;
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let bytes = rest.as_bytes();
        if !(bytes[0] == b'.' || bytes[0].is_ascii_digit()) {
            return Err(invalid());
        }
        let mut i = 0;
        let mut whole: u64 = 0;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            if whole > (LIMIT - 1) / 10 {
                return Err(invalid());
            }
            whole = whole * 10 + u64::from(bytes[i] - b'0');
            if whole > LIMIT {
                return Err(invalid());
            }
            i += 1;
        }
        let had_whole = i > 0;
        let mut fraction: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut had_fraction = false;
        if i < bytes.len() && bytes[i] == b'.' {
            i += 1;
            let start = i;
            let mut overflow = false;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                if !overflow {
                    if fraction > (LIMIT - 1) / 10 {
                        overflow = true;
                    } else {
                        let next = fraction * 10 + u64::from(bytes[i] - b'0');
                        if next > LIMIT {
                            overflow = true;
                        } else {
                            fraction = next;
                            scale *= 10.0;
                        }
                    }
                }
                i += 1;
            }
            had_fraction = i > start;
        }
        if !had_whole && !had_fraction {
            return Err(invalid());
        }
        let unit_start = i;
        while i < bytes.len() && bytes[i] != b'.' && !bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == unit_start {
            return Err(format!("time: missing unit in duration {text:?}"));
        }
        let unit = &rest[unit_start..i];
        let unit_nanos: u64 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(format!("time: unknown unit {unit:?} in duration {text:?}")),
        };
        if whole > LIMIT / unit_nanos {
            return Err(invalid());
        }
        let mut value = whole * unit_nanos;
        if fraction > 0 {
            value += (fraction as f64 * (unit_nanos as f64 / scale)) as u64;
            if value > LIMIT {
                return Err(invalid());
            }
        }
        total = total
            .checked_add(value)
            .filter(|total| *total <= LIMIT)
            .ok_or_else(invalid)?;
        rest = &rest[i..];
    }
    if negative {
        return Ok((-(total as i128)) as i64);
    }
    if total > i64::MAX as u64 {
        return Err(invalid());
    }
    Ok(total as i64)
}

// ---------------------------------------------------------------------------
// Errors with a position.

/// An error before it is placed: the line and what to point at on it.
#[derive(Debug)]
struct Fail {
    line: usize,
    column: Column,
    message: String,
}

#[derive(Debug)]
enum Column {
    /// The first non-blank character (the instruction keyword).
    Start,
    /// Where this text first occurs on the line, else the start.
    Text(String),
}

impl Fail {
    fn at(line: usize, message: String) -> Fail {
        Fail {
            line,
            column: Column::Start,
            message,
        }
    }

    fn pointing(line: usize, text: &str, message: String) -> Fail {
        Fail {
            line,
            column: Column::Text(text.to_string()),
            message,
        }
    }
}

struct Source<'a> {
    file: &'a str,
    lines: Vec<&'a str>,
}

impl<'a> Source<'a> {
    fn new(text: &'a str, file: &'a str) -> Source<'a> {
        let lines = text
            .split('\n')
            .map(|line| line.trim_end_matches('\r'))
            .collect();
        Source { file, lines }
    }

    fn error(&self, fail: Fail) -> ParseError {
        let line = fail.line.max(1);
        let source_line = self.lines.get(line - 1).copied().unwrap_or("").to_string();
        let start = source_line
            .chars()
            .position(|c| !c.is_whitespace())
            .unwrap_or(0);
        let column = match &fail.column {
            Column::Start => start,
            Column::Text(text) => match source_line.find(text.as_str()) {
                Some(byte) => source_line[..byte].chars().count(),
                None => start,
            },
        } + 1;
        ParseError {
            file: self.file.to_string(),
            line,
            column,
            message: fail.message,
            source_line,
        }
    }
}

// ---------------------------------------------------------------------------
// Pass 1: lines to nodes (BuildKit's `parser.Parse`).

struct DirectiveState {
    escape: char,
    done: bool,
    seen: Vec<String>,
    syntax: Option<String>,
    check: Option<String>,
}

impl DirectiveState {
    fn new(escape: char) -> DirectiveState {
        DirectiveState {
            escape,
            done: false,
            seen: Vec::new(),
            syntax: None,
            check: None,
        }
    }

    fn directives(&self) -> Directives {
        Directives {
            syntax: self.syntax.clone(),
            escape: self.escape,
            check: self.check.clone(),
        }
    }

    /// `# name=value` at the very top; the first line that is not one
    /// (a blank line, another comment, an instruction) ends them.
    fn possible_directive(&mut self, line: &str) -> Result<(), String> {
        if self.done {
            return Ok(());
        }
        let Some((name, value)) = line.strip_prefix('#').and_then(directive_parts) else {
            self.done = true;
            return Ok(());
        };
        let key = name.to_ascii_lowercase();
        if !matches!(key.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(());
        }
        if self.seen.contains(&key) {
            return Err(format!("only one {key} parser directive can be used"));
        }
        self.seen.push(key.clone());
        match key.as_str() {
            "escape" => match value {
                "`" => self.escape = '`',
                "\\" => self.escape = '\\',
                _ => {
                    return Err(format!(
                        "invalid escape token '{value}' does not match ` or \\"
                    ));
                }
            },
            "syntax" => self.syntax = Some(value.to_string()),
            _ => self.check = Some(value.to_string()),
        }
        Ok(())
    }
}

/// `^\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` after the `#`.
fn directive_parts(rest: &str) -> Option<(&str, &str)> {
    let rest = rest.trim_start_matches(char::is_whitespace);
    let name_len = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(rest.len(), |(i, _)| i);
    if name_len == 0 {
        return None;
    }
    let (name, after) = rest.split_at(name_len);
    let after = after.trim_start_matches(is_go_space);
    let value = after.strip_prefix('=')?;
    let value = value
        .trim_start_matches(is_go_space)
        .trim_end_matches(is_go_space);
    if value.is_empty() || value.contains('\n') {
        return None;
    }
    Some((name, value))
}

/// Go regexp `\s`.
fn is_go_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\u{c}' | '\r')
}

/// BuildKit's `[\t\v\f\r ]+` separator.
fn is_token_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\u{b}' | '\u{c}' | '\r')
}

fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    line.trim_start_matches(char::is_whitespace)
        .starts_with('#')
}

/// Removes a trailing line-continuation escape (plus spaces and tabs after
/// it). An escape preceded by another escape is a literal, not a
/// continuation, as in BuildKit.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let trimmed = line.trim_end_matches([' ', '\t']);
    if let Some(before) = trimmed.strip_suffix(escape)
        && (before.is_empty() || !before.ends_with(escape))
    {
        return (before, false);
    }
    (line, true)
}

/// Lines with their endings, like BuildKit's `scanLines`.
fn split_lines(text: &str) -> Vec<&str> {
    text.split_inclusive('\n').collect()
}

#[derive(Debug, Clone)]
struct RawHeredoc {
    name: String,
    content: String,
    expand: bool,
    chomp: bool,
}

/// One instruction as the line parser leaves it (BuildKit's `Node`).
#[derive(Debug, Clone, Default)]
struct Node {
    /// The keyword as written.
    command: String,
    flags: Vec<String>,
    /// The whole instruction, continuation lines joined.
    original: String,
    values: Vec<String>,
    /// `ENV` and `LABEL`.
    pairs: Vec<(String, String)>,
    json: bool,
    /// `ONBUILD`'s trigger.
    child: Option<Box<Node>>,
    heredocs: Vec<RawHeredoc>,
    start_line: usize,
}

impl Node {
    fn keyword(&self) -> String {
        self.command.to_ascii_lowercase()
    }

    fn can_contain_heredoc(&self) -> bool {
        let node = match (&self.child, self.keyword().as_str()) {
            (Some(child), "onbuild") => child.as_ref(),
            _ => self,
        };
        matches!(node.keyword().as_str(), "run" | "copy" | "add") && !node.json
    }
}

fn scan(text: &str, state: &mut DirectiveState) -> Result<Vec<Node>, Fail> {
    let lines = split_lines(text);
    let mut nodes = Vec::new();
    let mut index = 0;
    let mut current_line = 0;
    while index < lines.len() {
        let raw = lines[index];
        index += 1;
        let token = trim_newline(raw).trim_start_matches(char::is_whitespace);
        state
            .possible_directive(token)
            .map_err(|message| Fail::at(current_line + 1, message))?;
        let body = if is_comment(token) { "" } else { token };
        current_line += 1;
        let start_line = current_line;
        let escape = state.escape;
        let (first, mut end_of_line) = trim_continuation(body, escape);
        if end_of_line && first.is_empty() {
            continue;
        }
        let mut line = first.to_string();
        while !end_of_line && index < lines.len() {
            let raw = lines[index];
            index += 1;
            let token = trim_newline(raw);
            state
                .possible_directive(token)
                .map_err(|message| Fail::at(current_line + 1, message))?;
            current_line += 1;
            // Comments inside a continued instruction are dropped, and so
            // are blank lines.
            if is_comment(raw) || token.trim_start_matches(char::is_whitespace).is_empty() {
                continue;
            }
            let (part, end) = trim_continuation(token, escape);
            end_of_line = end;
            line.push_str(part);
        }

        let mut node = new_node_from_line(&line, escape, 0)
            .map_err(|message| Fail::at(start_line, message))?;
        node.start_line = start_line;

        if node.can_contain_heredoc() && line.contains("<<") {
            let heredocs =
                heredocs_from_line(&line).map_err(|message| Fail::at(start_line, message))?;
            for mut heredoc in heredocs {
                let mut terminated = false;
                while index < lines.len() {
                    let raw = lines[index];
                    index += 1;
                    current_line += 1;
                    let mut possible = trim_newline(raw);
                    if heredoc.chomp {
                        possible = possible.trim_start_matches('\t');
                    }
                    if possible == heredoc.name {
                        terminated = true;
                        break;
                    }
                    heredoc.content.push_str(raw);
                }
                if !terminated {
                    return Err(Fail::pointing(
                        start_line,
                        "<<",
                        format!(
                            "unterminated heredoc (no line \"{}\" ends it)",
                            heredoc.name
                        ),
                    ));
                }
                node.heredocs.push(heredoc);
            }
        }
        nodes.push(node);
    }
    if nodes.is_empty() {
        return Err(Fail::at(
            current_line,
            "file with no instructions".to_string(),
        ));
    }
    Ok(nodes)
}

/// Splits `line` into keyword, flags and arguments, and parses the
/// arguments the way that instruction wants (BuildKit's dispatch table).
/// `depth` is 1 for an `ONBUILD` trigger; a trigger's own trigger is
/// not parsed (it is rejected later anyway), which bounds the recursion.
fn new_node_from_line(line: &str, escape: char, depth: usize) -> Result<Node, String> {
    let trimmed = line.trim();
    let (command, after) = match trimmed.find(is_token_space) {
        Some(at) => {
            let after = trimmed[at..].trim_start_matches(is_token_space);
            (&trimmed[..at], Some(after))
        }
        None => (trimmed, None),
    };
    let (rest, flags) = match after {
        Some(after) => extract_builder_flags(after),
        None => (String::new(), Vec::new()),
    };
    let rest = rest.trim().to_string();
    let mut node = Node {
        command: command.to_string(),
        flags,
        original: line.to_string(),
        ..Node::default()
    };
    match node.keyword().as_str() {
        "add" | "copy" | "volume" => {
            let (values, json) = parse_maybe_json_to_list(&rest)?;
            node.values = values;
            node.json = json;
        }
        "arg" => node.values = parse_words(&rest, escape),
        "cmd" | "entrypoint" | "run" | "shell" => {
            let (values, json) = parse_maybe_json(&rest)?;
            node.values = values;
            node.json = json;
        }
        "env" => node.pairs = parse_name_val(&rest, "ENV", escape)?,
        "label" => node.pairs = parse_name_val(&rest, "LABEL", escape)?,
        "expose" | "from" => node.values = split_whitespace_delimited(&rest),
        "healthcheck" => {
            let (values, json) = parse_health_config(&rest)?;
            node.values = values;
            node.json = json;
        }
        "maintainer" | "stopsignal" | "user" | "workdir" if !rest.is_empty() => {
            node.values = vec![rest.clone()];
        }
        "onbuild" if !rest.is_empty() && depth == 0 => {
            let child = new_node_from_line(&rest, escape, depth + 1)?;
            node.child = Some(Box::new(child));
        }
        _ => {}
    }
    Ok(node)
}

/// Leading `--name=value` words; quotes and `\` are processed in them
/// (always `\`, whatever the escape directive, as BuildKit). A bare `--`
/// ends the flags.
fn extract_builder_flags(line: &str) -> (String, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut i = 0;
    loop {
        let Some(&(byte, ch)) = chars.get(i) else {
            if phase != Phase::Spaces && word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            return (String::new(), words);
        };
        if phase == Phase::Spaces {
            if ch.is_whitespace() {
                i += 1;
                continue;
            }
            let next_is_dash = chars.get(i + 1).is_some_and(|&(_, c)| c == '-');
            if ch != '-' || !next_is_dash {
                return (line[byte..].to_string(), words);
            }
            phase = Phase::Word;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if word == "--" {
                    return (line[byte..].to_string(), words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                i += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                i += 1;
                continue;
            }
            let mut ch = ch;
            if ch == '\\' {
                match chars.get(i + 1) {
                    None => {
                        i += 1;
                        continue;
                    }
                    Some(&(_, next)) => {
                        i += 1;
                        ch = next;
                    }
                }
            }
            word.push(ch);
            i += 1;
            continue;
        }
        // Inside quotes.
        if ch == quote {
            phase = Phase::Word;
            i += 1;
            continue;
        }
        let mut ch = ch;
        if ch == '\\' {
            match chars.get(i + 1) {
                None => {
                    phase = Phase::Word;
                    i += 1;
                    continue;
                }
                Some(&(_, next)) => {
                    i += 1;
                    ch = next;
                }
            }
        }
        word.push(ch);
        i += 1;
    }
}

/// Words of `ENV`/`LABEL`/`ARG`, quotes and escapes kept (BuildKit's
/// `parseWords`); they are removed later, at expansion.
fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut word = String::new();
    let mut i = 0;
    loop {
        let Some(&ch) = chars.get(i) else {
            if phase != Phase::Spaces && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            return words;
        };
        if phase == Phase::Spaces {
            if ch.is_whitespace() {
                i += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                i += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            let mut ch = ch;
            if ch == escape {
                match chars.get(i + 1) {
                    // An escape at the end of the line is dropped.
                    None => {
                        i += 1;
                        continue;
                    }
                    Some(&next) => {
                        word.push(ch);
                        i += 1;
                        ch = next;
                    }
                }
            }
            word.push(ch);
            i += 1;
            continue;
        }
        // Inside quotes; nothing is escaped inside single quotes.
        if ch == quote {
            phase = Phase::Word;
        }
        let mut ch = ch;
        if ch == escape && quote != '\'' {
            match chars.get(i + 1) {
                None => {
                    phase = Phase::Word;
                    i += 1;
                    continue;
                }
                Some(&next) => {
                    word.push(ch);
                    i += 1;
                    ch = next;
                }
            }
        }
        word.push(ch);
        i += 1;
    }
}

/// `KEY=value ...` or the old `KEY value` (when the first word has no `=`:
/// then the rest of the line, raw, is the value).
fn parse_name_val(rest: &str, key: &str, escape: char) -> Result<Vec<(String, String)>, String> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let Some(at) = rest.find(is_token_space) else {
            return Err(format!("{key} must have two arguments"));
        };
        let name = &rest[..at];
        let value = rest[at..].trim_start_matches(is_token_space);
        return Ok(vec![(name.to_string(), value.to_string())]);
    }
    words
        .iter()
        .map(|word| match word.split_once('=') {
            Some((name, value)) => Ok((name.to_string(), value.to_string())),
            None => Err(format!(
                "Syntax error - can't find = in {word:?}. Must be of the form: name=value"
            )),
        })
        .collect()
}

fn split_whitespace_delimited(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    rest.split(is_token_space)
        .filter(|word| !word.is_empty())
        .map(str::to_string)
        .collect()
}

const NOT_STRING_ARRAY: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

/// `Ok(Some(words))` for a JSON array of strings, `Ok(None)` when it is
/// not JSON at all (then it is the shell form), an error for a JSON array
/// holding something else.
fn parse_json(rest: &str) -> Result<Option<Vec<String>>, String> {
    let rest = rest.trim_start_matches(char::is_whitespace);
    if !rest.starts_with('[') {
        return Ok(None);
    }
    let Ok(serde_json::Value::Array(items)) = serde_json::from_str::<serde_json::Value>(rest)
    else {
        return Ok(None);
    };
    items
        .into_iter()
        .map(|item| match item {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(NOT_STRING_ARRAY.to_string()),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn parse_maybe_json(rest: &str) -> Result<(Vec<String>, bool), String> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    Ok(match parse_json(rest)? {
        Some(words) => (words, true),
        None => (vec![rest.to_string()], false),
    })
}

fn parse_maybe_json_to_list(rest: &str) -> Result<(Vec<String>, bool), String> {
    Ok(match parse_json(rest)? {
        Some(words) => (words, true),
        None => (split_whitespace_delimited(rest), false),
    })
}

/// `HEALTHCHECK TYPE command...`: the type word, then the command in JSON
/// or shell form.
fn parse_health_config(rest: &str) -> Result<(Vec<String>, bool), String> {
    let sep = rest.find(char::is_whitespace).unwrap_or(rest.len());
    if sep == 0 {
        return Ok((Vec::new(), false));
    }
    let kind = &rest[..sep];
    let command = rest[sep..].trim_start_matches(char::is_whitespace);
    let (mut values, json) = parse_maybe_json(command)?;
    values.insert(0, kind.to_string());
    Ok((values, json))
}

fn heredocs_from_line(line: &str) -> Result<Vec<RawHeredoc>, String> {
    let options = shell::Options {
        raw_quotes: true,
        raw_escapes: true,
        skip_unset: true,
        skip_quotes: false,
    };
    // A line that does not lex has no here-documents, as in BuildKit.
    let words = match shell::process(line, &|_| None, '\\', options) {
        Ok((_, words)) => words,
        Err(_) => Vec::new(),
    };
    let mut heredocs = Vec::new();
    for word in words {
        if let Some(heredoc) = parse_heredoc(&word)? {
            heredocs.push(heredoc);
        }
    }
    Ok(heredocs)
}

/// A here-document word: `^(\d*)<<(-?)([^<]*)$` with a single-word
/// delimiter. Content is not expanded when any part of the delimiter is
/// quoted.
fn parse_heredoc(word: &str) -> Result<Option<RawHeredoc>, String> {
    let after_digits = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let Some(after) = after_digits.strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match after.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, after),
    };
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let plain = shell::Options {
        skip_unset: true,
        ..shell::Options::default()
    };
    let words = shell::process(rest, &|_| None, '\\', plain)
        .map_err(|e| e.message)?
        .1;
    if words.len() != 1 {
        return Ok(None);
    }
    let raw = shell::Options {
        raw_quotes: true,
        ..plain
    };
    let raw_words = shell::process(rest, &|_| None, '\\', raw)
        .map_err(|e| e.message)?
        .1;
    if raw_words.len() != words.len() {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    }
    let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    Ok(Some(RawHeredoc {
        expand: quotes(&words[0]) == quotes(&raw_words[0]),
        name: words[0].clone(),
        content: String::new(),
        chomp,
    }))
}

/// `<<-`: leading tabs go from every line.
fn chomp_heredoc(content: &str) -> String {
    content
        .split_inclusive('\n')
        .map(|line| line.trim_start_matches('\t'))
        .collect()
}

// ---------------------------------------------------------------------------
// Pass 2: nodes to instructions and stages (BuildKit's `instructions`).

enum Converted {
    Stage(Stage),
    Instruction(Instruction),
}

fn build(nodes: Vec<Node>, directives: Directives) -> Result<Dockerfile, Fail> {
    let mut dockerfile = Dockerfile {
        directives,
        meta_args: Vec::new(),
        stages: Vec::new(),
    };
    let first_line = nodes.first().map_or(1, |node| node.start_line);
    for node in &nodes {
        match convert(node)? {
            Converted::Stage(stage) => dockerfile.stages.push(stage),
            Converted::Instruction(instruction) => match dockerfile.stages.last_mut() {
                Some(stage) => stage.instructions.push(instruction),
                None => match instruction.kind {
                    Kind::Arg(args) => dockerfile.meta_args.extend(args),
                    _ => {
                        return Err(Fail::at(
                            node.start_line,
                            "no build stage in current context".to_string(),
                        ));
                    }
                },
            },
        }
    }
    if dockerfile.stages.is_empty() {
        return Err(Fail::at(
            first_line,
            "dockerfile contains no stages to build".to_string(),
        ));
    }
    Ok(dockerfile)
}

#[derive(Clone, Copy, PartialEq)]
enum FlagType {
    Bool,
    String,
    Strings,
}

#[derive(Default)]
struct Flags {
    bools: HashMap<&'static str, bool>,
    strings: HashMap<&'static str, String>,
    lists: HashMap<&'static str, Vec<String>>,
    used: Vec<&'static str>,
}

impl Flags {
    fn string(&self, name: &str) -> Option<String> {
        self.strings.get(name).filter(|v| !v.is_empty()).cloned()
    }

    fn bool(&self, name: &str) -> bool {
        self.bools.get(name).copied().unwrap_or(false)
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.lists.get(name).cloned().unwrap_or_default()
    }

    fn is_used(&self, name: &str) -> bool {
        self.used.contains(&name)
    }
}

/// BuildKit's `BFlags.Parse`: `--name=value` (a bool may omit `=value`),
/// unknown or repeated flags are errors, `--` ends the flags.
fn parse_flags(node: &Node, definitions: &[(&'static str, FlagType)]) -> Result<Flags, Fail> {
    let mut flags = Flags::default();
    for arg in &node.flags {
        if arg == "--" {
            break;
        }
        let fail = |message: String| Fail::pointing(node.start_line, arg, message);
        if !arg.starts_with("--") {
            return Err(fail(format!("arg should start with -- : {arg}")));
        }
        let (flag_name, value) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (arg.as_str(), None),
        };
        let name = &flag_name[2..];
        let Some(&(key, kind)) = definitions.iter().find(|(key, _)| *key == name) else {
            let known: Vec<&str> = definitions.iter().map(|(key, _)| *key).collect();
            let mut message = format!("unknown flag: {flag_name}");
            if let Some(suggestion) = suggest(name, &known, true) {
                message.push_str(&format!(" (did you mean {suggestion}?)"));
            }
            return Err(Fail::pointing(node.start_line, flag_name, message));
        };
        if flags.is_used(key) && kind != FlagType::Strings {
            return Err(fail(format!("duplicate flag specified: {flag_name}")));
        }
        flags.used.push(key);
        match kind {
            FlagType::Bool => {
                let value = value.unwrap_or("");
                if arg.contains('=') && value.is_empty() {
                    return Err(fail(format!("missing a value on flag: {flag_name}")));
                }
                let parsed = match value.to_ascii_lowercase().as_str() {
                    "true" | "" => true,
                    "false" => false,
                    _ => {
                        return Err(fail(format!(
                            "expecting boolean value for flag {flag_name}, not: {value}"
                        )));
                    }
                };
                flags.bools.insert(key, parsed);
            }
            FlagType::String => {
                let Some(value) = value else {
                    return Err(fail(format!("missing a value on flag: {flag_name}")));
                };
                flags.strings.insert(key, value.to_string());
            }
            FlagType::Strings => {
                let Some(value) = value else {
                    return Err(fail(format!("missing a value on flag: {flag_name}")));
                };
                flags.lists.entry(key).or_default().push(value.to_string());
            }
        }
    }
    Ok(flags)
}

/// The closest option within edit distance 2, matched to the case of
/// `value` (BuildKit's `suggest` package).
fn suggest(value: &str, options: &[&str], case_sensitive: bool) -> Option<String> {
    let wanted = if case_sensitive {
        value.to_string()
    } else {
        value.to_lowercase()
    };
    let mut best: Option<(usize, String)> = None;
    for option in options {
        let option = if case_sensitive {
            option.to_string()
        } else {
            option.to_lowercase()
        };
        if option == wanted {
            return None;
        }
        let distance = levenshtein(&wanted, &option);
        if distance < best.as_ref().map_or(3, |(d, _)| *d) {
            best = Some((distance, option));
        }
    }
    let (_, matched) = best?;
    if case_sensitive || value == value.to_lowercase() {
        Some(matched)
    } else if value == value.to_uppercase() {
        Some(matched.to_uppercase())
    } else {
        Some(matched)
    }
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            current[j + 1] = (previous[j] + cost)
                .min(previous[j + 1] + 1)
                .min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

const INSTRUCTIONS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

fn at_least_one(node: &Node, name: &str) -> Fail {
    Fail::at(
        node.start_line,
        format!("{name} requires at least one argument"),
    )
}

fn exactly_one(node: &Node, name: &str) -> Fail {
    Fail::at(
        node.start_line,
        format!("{name} requires exactly one argument"),
    )
}

fn no_destination(node: &Node, name: &str) -> Fail {
    Fail::at(
        node.start_line,
        format!(
            "{name} requires at least two arguments, but only one was provided. Destination could not be determined"
        ),
    )
}

fn single(node: &Node) -> Option<String> {
    match node.values.as_slice() {
        [value] => Some(value.clone()),
        _ => None,
    }
}

/// The JSON form as is, or the shell form as one string.
fn command_of(values: &[String], json: bool) -> Command {
    if json {
        Command::Exec(values.to_vec())
    } else {
        Command::Shell(values.join(" "))
    }
}

fn convert(node: &Node) -> Result<Converted, Fail> {
    let line = node.start_line;
    let instruction = |kind: Kind| -> Result<Converted, Fail> {
        Ok(Converted::Instruction(Instruction {
            line,
            original: node.original.clone(),
            kind,
        }))
    };
    match node.keyword().as_str() {
        "env" | "label" => {
            let name = node.command.to_ascii_uppercase();
            parse_flags(node, &[])?;
            if node.pairs.is_empty() {
                return Err(at_least_one(node, &name));
            }
            if node.pairs.iter().any(|(key, _)| key.is_empty()) {
                return Err(Fail::at(line, format!("{name} names can not be blank")));
            }
            let pairs = node.pairs.clone();
            instruction(if name == "ENV" {
                Kind::Env(pairs)
            } else {
                Kind::Label(pairs)
            })
        }
        "maintainer" => {
            let Some(maintainer) = single(node) else {
                return Err(exactly_one(node, "MAINTAINER"));
            };
            parse_flags(node, &[])?;
            instruction(Kind::Maintainer(maintainer))
        }
        "add" | "copy" => {
            let is_add = node.keyword() == "add";
            let name = if is_add { "ADD" } else { "COPY" };
            if node.values.len() < 2 {
                return Err(no_destination(node, name));
            }
            let mut definitions = vec![
                ("exclude", FlagType::Strings),
                ("chown", FlagType::String),
                ("chmod", FlagType::String),
                ("link", FlagType::Bool),
            ];
            if is_add {
                definitions.extend([
                    ("keep-git-dir", FlagType::Bool),
                    ("checksum", FlagType::String),
                    ("unpack", FlagType::Bool),
                ]);
            } else {
                definitions.extend([("parents", FlagType::Bool), ("from", FlagType::String)]);
            }
            let flags = parse_flags(node, &definitions)?;
            let copy = sources_and_dest(node, name, &flags)?;
            instruction(if is_add {
                Kind::Add(copy)
            } else {
                Kind::Copy(copy)
            })
        }
        "from" => convert_from(node),
        "onbuild" => {
            let Some(child) = node.child.as_deref() else {
                return Err(at_least_one(node, "ONBUILD"));
            };
            parse_flags(node, &[])?;
            let trigger = child.command.trim().to_ascii_uppercase();
            match trigger.as_str() {
                "ONBUILD" => {
                    return Err(Fail::at(
                        line,
                        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".to_string(),
                    ));
                }
                "MAINTAINER" | "FROM" => {
                    return Err(Fail::at(
                        line,
                        format!("{trigger} isn't allowed as an ONBUILD trigger"),
                    ));
                }
                _ => {}
            }
            let mut child = child.clone();
            child.heredocs = node.heredocs.clone();
            child.start_line = line;
            child.original = onbuild_expression(node);
            match convert(&child)? {
                Converted::Instruction(trigger) => instruction(Kind::Onbuild(Box::new(trigger))),
                Converted::Stage(_) => Err(Fail::at(
                    line,
                    "FROM isn't allowed as an ONBUILD trigger".to_string(),
                )),
            }
        }
        "workdir" => {
            let Some(path) = single(node) else {
                return Err(exactly_one(node, "WORKDIR"));
            };
            parse_flags(node, &[])?;
            instruction(Kind::Workdir(path))
        }
        "run" => {
            let flags = parse_flags(
                node,
                &[
                    ("mount", FlagType::Strings),
                    ("network", FlagType::String),
                    ("security", FlagType::String),
                ],
            )?;
            let network = flags.strings.get("network").cloned();
            if let Some(network) = &network
                && !matches!(network.as_str(), "default" | "none" | "host")
            {
                return Err(Fail::pointing(
                    line,
                    "--network",
                    format!("invalid network mode {network:?}"),
                ));
            }
            let security = flags.strings.get("security").cloned();
            if let Some(security) = &security
                && !matches!(security.as_str(), "insecure" | "sandbox")
            {
                return Err(Fail::pointing(
                    line,
                    "--security",
                    format!("security {security:?} is not valid"),
                ));
            }
            if node.values.is_empty() && node.heredocs.is_empty() && !node.json {
                return Err(at_least_one(node, "RUN"));
            }
            let heredocs = node
                .heredocs
                .iter()
                .map(|h| Heredoc {
                    name: h.name.clone(),
                    content: if h.chomp {
                        chomp_heredoc(&h.content)
                    } else {
                        h.content.clone()
                    },
                    expand: h.expand,
                })
                .collect();
            instruction(Kind::Run(Run {
                command: Some(command_of(&node.values, node.json)),
                heredocs,
                mounts: flags.list("mount"),
                network,
                security,
            }))
        }
        "cmd" => {
            parse_flags(node, &[])?;
            instruction(Kind::Cmd(command_of(&node.values, node.json)))
        }
        "entrypoint" => {
            parse_flags(node, &[])?;
            instruction(Kind::Entrypoint(command_of(&node.values, node.json)))
        }
        "healthcheck" => convert_healthcheck(node).and_then(instruction),
        "expose" => {
            if node.values.is_empty() {
                return Err(at_least_one(node, "EXPOSE"));
            }
            parse_flags(node, &[])?;
            instruction(Kind::Expose(node.values.clone()))
        }
        "user" => {
            let Some(user) = single(node) else {
                return Err(exactly_one(node, "USER"));
            };
            parse_flags(node, &[])?;
            instruction(Kind::User(user))
        }
        "volume" => {
            if node.values.is_empty() {
                return Err(at_least_one(node, "VOLUME"));
            }
            parse_flags(node, &[])?;
            let mut volumes = Vec::new();
            for volume in &node.values {
                let volume = volume.trim();
                if volume.is_empty() {
                    return Err(Fail::at(
                        line,
                        "VOLUME specified can not be an empty string".to_string(),
                    ));
                }
                volumes.push(volume.to_string());
            }
            instruction(Kind::Volume(volumes))
        }
        "stopsignal" => {
            // BuildKit takes no flags here and does not look at them.
            let Some(signal) = single(node) else {
                return Err(exactly_one(node, "STOPSIGNAL"));
            };
            instruction(Kind::StopSignal(signal))
        }
        "arg" => {
            if node.values.is_empty() {
                return Err(at_least_one(node, "ARG"));
            }
            parse_flags(node, &[])?;
            let mut args = Vec::new();
            for word in &node.values {
                let decl = match word.split_once('=') {
                    Some((name, default)) => {
                        if name.is_empty() {
                            return Err(Fail::at(line, "ARG names can not be blank".to_string()));
                        }
                        ArgDecl {
                            name: name.to_string(),
                            default: Some(default.to_string()),
                        }
                    }
                    None => ArgDecl {
                        name: word.clone(),
                        default: None,
                    },
                };
                args.push(decl);
            }
            instruction(Kind::Arg(args))
        }
        "shell" => {
            parse_flags(node, &[])?;
            if node.values.is_empty() {
                return Err(at_least_one(node, "SHELL"));
            }
            if !node.json {
                return Err(Fail::at(line, not_json("SHELL", &node.original)));
            }
            instruction(Kind::Shell(node.values.clone()))
        }
        _ => {
            let mut message = format!("unknown instruction: {}", node.command);
            if let Some(suggestion) = suggest(&node.command, INSTRUCTIONS, false) {
                message.push_str(&format!(" (did you mean {suggestion}?)"));
            }
            Err(Fail::at(line, message))
        }
    }
}

/// What an image keeps for an `ONBUILD` trigger: the instruction without
/// `ONBUILD`, then each here-document's body and delimiter.
fn onbuild_expression(node: &Node) -> String {
    let original = node.original.trim_start_matches(char::is_whitespace);
    let after = match original.get(..7) {
        Some(keyword) if keyword.eq_ignore_ascii_case("onbuild") => &original[7..],
        _ => original,
    };
    let mut expression = after.trim_start_matches(char::is_whitespace).to_string();
    for heredoc in &node.heredocs {
        expression.push('\n');
        expression.push_str(&heredoc.content);
        expression.push_str(&heredoc.name);
    }
    expression
}

fn not_json(command: &str, original: &str) -> String {
    // Like BuildKit, hint at unescaped Windows paths in a would-be array.
    let lower = original.to_lowercase();
    let args = lower.replace(&format!("{} ", command.to_lowercase()), "");
    let bytes = args.as_bytes();
    let has_drive_path = bytes
        .windows(4)
        .any(|w| w[0] == b'"' && w[1].is_ascii_lowercase() && w[2] == b':' && w[3] == b'\\');
    let extra = if has_drive_path
        && !args.contains("\\\\")
        && args.contains('[')
        && args.contains(']')
    {
        format!(
            ". It looks like '{args}' includes a file path without an escaped back-slash. JSON requires back-slashes to be escaped such as [\"c:\\\\path\\\\to\\\\file.exe\", \"/parameter\"]"
        )
    } else {
        String::new()
    };
    format!("{command} requires the arguments to be in JSON form{extra}")
}

fn sources_and_dest(node: &Node, name: &str, flags: &Flags) -> Result<Copy, Fail> {
    let line = node.start_line;
    let (dest, sources) = match node.values.split_last() {
        Some(split) => split,
        None => return Err(no_destination(node, name)),
    };
    if matches!(parse_heredoc(dest), Ok(Some(_))) {
        return Err(Fail::at(
            line,
            format!("{name} cannot accept a heredoc as a destination"),
        ));
    }
    let by_name: HashMap<&str, &RawHeredoc> = node
        .heredocs
        .iter()
        .map(|heredoc| (heredoc.name.as_str(), heredoc))
        .collect();
    let mut copy = Copy {
        dest: dest.clone(),
        ..Copy::default()
    };
    for source in sources {
        match parse_heredoc(source).ok().flatten() {
            Some(word) => {
                let content = by_name
                    .get(word.name.as_str())
                    .map(|h| h.content.clone())
                    .unwrap_or_default();
                let content = if word.chomp {
                    chomp_heredoc(&content)
                } else {
                    content
                };
                copy.sources.push(word.name.clone());
                copy.heredocs.push(Heredoc {
                    name: word.name,
                    content,
                    expand: word.expand,
                });
            }
            None => copy.sources.push(source.clone()),
        }
    }
    copy.from = flags.string("from");
    copy.chown = flags.string("chown");
    copy.chmod = flags.string("chmod");
    copy.link = flags.bool("link");
    copy.parents = flags.bool("parents");
    copy.excludes = flags.list("exclude");
    copy.checksum = flags.string("checksum");
    copy.keep_git_dir = flags.bool("keep-git-dir");
    copy.unpack = flags.is_used("unpack").then(|| flags.bool("unpack"));
    Ok(copy)
}

fn convert_from(node: &Node) -> Result<Converted, Fail> {
    let line = node.start_line;
    let args = &node.values;
    let name = match args.as_slice() {
        [_, keyword, name] if keyword.eq_ignore_ascii_case("as") => {
            let lowered = name.to_lowercase();
            let valid = lowered
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase())
                && lowered
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
            if !valid {
                return Err(Fail::pointing(
                    line,
                    name,
                    format!(
                        "invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
                    ),
                ));
            }
            Some(lowered)
        }
        [_] => None,
        _ => {
            return Err(Fail::at(
                line,
                "FROM requires either one or three arguments".to_string(),
            ));
        }
    };
    let flags = parse_flags(node, &[("platform", FlagType::String)])?;
    Ok(Converted::Stage(Stage {
        base: args[0].clone(),
        name,
        platform: flags.string("platform"),
        line,
        instructions: Vec::new(),
    }))
}

fn convert_healthcheck(node: &Node) -> Result<Kind, Fail> {
    let line = node.start_line;
    let Some((kind, args)) = node.values.split_first() else {
        return Err(at_least_one(node, "HEALTHCHECK"));
    };
    let kind = kind.to_uppercase();
    if kind == "NONE" {
        // BuildKit ignores flags on `HEALTHCHECK NONE`.
        if !args.is_empty() {
            return Err(Fail::at(
                line,
                "HEALTHCHECK NONE takes no arguments".to_string(),
            ));
        }
        return Ok(Kind::Healthcheck(Healthcheck::None));
    }
    let flags = parse_flags(
        node,
        &[
            ("interval", FlagType::String),
            ("timeout", FlagType::String),
            ("start-period", FlagType::String),
            ("start-interval", FlagType::String),
            ("retries", FlagType::String),
        ],
    )?;
    if kind != "CMD" {
        return Err(Fail::at(
            line,
            format!("Unknown type {kind:?} in HEALTHCHECK (try CMD)"),
        ));
    }
    if args.is_empty() {
        return Err(Fail::at(
            line,
            "Missing command after HEALTHCHECK CMD".to_string(),
        ));
    }
    let mut durations = Vec::new();
    for name in ["interval", "timeout", "start-period", "start-interval"] {
        let value = flags.string(name);
        if let Some(text) = &value {
            let flag = format!("--{name}");
            let nanos =
                parse_go_duration(text).map_err(|message| Fail::pointing(line, &flag, message))?;
            if nanos != 0 && nanos < 1_000_000 {
                return Err(Fail::pointing(
                    line,
                    &flag,
                    format!("Interval {name:?} cannot be less than 1ms"),
                ));
            }
        }
        durations.push(value);
    }
    let retries = match flags.string("retries") {
        None => None,
        Some(text) => {
            let value = parse_go_int32(&text)
                .map_err(|message| Fail::pointing(line, "--retries", message))?;
            if value < 0 {
                return Err(Fail::pointing(
                    line,
                    "--retries",
                    format!("--retries cannot be negative ({value})"),
                ));
            }
            Some(value as u32)
        }
    };
    let mut durations = durations.into_iter();
    let mut next = || durations.next().flatten();
    Ok(Kind::Healthcheck(Healthcheck::Check {
        test: command_of(args, node.json),
        interval: next(),
        timeout: next(),
        start_period: next(),
        start_interval: next(),
        retries,
    }))
}

/// Go's `strconv.ParseInt(s, 10, 32)`, with its error text.
fn parse_go_int32(text: &str) -> Result<i32, String> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "strconv.ParseInt: parsing {text:?}: invalid syntax"
        ));
    }
    text.parse::<i32>()
        .map_err(|_| format!("strconv.ParseInt: parsing {text:?}: value out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Dockerfile {
        match parse(text, "Dockerfile") {
            Ok(dockerfile) => dockerfile,
            Err(error) => panic!("{error}"),
        }
    }

    fn parse_err(text: &str) -> ParseError {
        match parse(text, "Dockerfile") {
            Ok(dockerfile) => panic!("expected an error, got {dockerfile:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn continuation_regex_semantics() {
        assert_eq!(trim_continuation("RUN a \\", '\\'), ("RUN a ", false));
        assert_eq!(trim_continuation("RUN a \\  \t", '\\'), ("RUN a ", false));
        assert_eq!(trim_continuation("\\", '\\'), ("", false));
        assert_eq!(trim_continuation("RUN a\\\\", '\\'), ("RUN a\\\\", true));
        assert_eq!(trim_continuation("RUN a `", '`'), ("RUN a ", false));
        assert_eq!(trim_continuation("RUN c:\\", '`'), ("RUN c:\\", true));
    }

    #[test]
    fn builder_flags_are_unquoted() {
        let (rest, flags) = extract_builder_flags("--mount=type=secret,id=\"a b\" --link cmd --x");
        assert_eq!(flags, ["--mount=type=secret,id=a b", "--link"]);
        assert_eq!(rest, "cmd --x");
        let (rest, flags) = extract_builder_flags("--a=1 -- --not-a-flag");
        assert_eq!(flags, ["--a=1"]);
        assert_eq!(rest.trim(), "--not-a-flag");
        let (rest, flags) = extract_builder_flags("--only");
        assert_eq!(flags, ["--only"]);
        assert_eq!(rest, "");
    }

    #[test]
    fn words_keep_quotes_and_escapes() {
        assert_eq!(
            parse_words(r#"a="x y" b='c\d' e=f\ g"#, '\\'),
            [r#"a="x y""#, r"b='c\d'", r"e=f\ g"]
        );
        assert_eq!(parse_words("a\\", '\\'), ["a"]);
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("30s"), Ok(30_000_000_000));
        assert_eq!(parse_go_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_go_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("250ms"), Ok(250_000_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("-2us"), Ok(-2_000));
        assert_eq!(parse_go_duration("5µs"), Ok(5_000));
        assert!(parse_go_duration("").is_err());
        assert!(
            parse_go_duration("10")
                .unwrap_err()
                .contains("missing unit")
        );
        assert!(
            parse_go_duration("3d")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_go_duration(".s").is_err());
        assert!(parse_go_duration("9999999999999999999h").is_err());
    }

    #[test]
    fn suggestions_follow_case() {
        assert_eq!(suggest("FOO", INSTRUCTIONS, false).as_deref(), Some("FROM"));
        assert_eq!(suggest("fro", INSTRUCTIONS, false).as_deref(), Some("from"));
        assert_eq!(suggest("Runn", INSTRUCTIONS, false).as_deref(), Some("run"));
        assert_eq!(suggest("XYZZY", INSTRUCTIONS, false), None);
        assert_eq!(
            suggest("chwon", &["chown", "from"], true).as_deref(),
            Some("chown")
        );
    }

    #[test]
    fn env_forms() {
        let d = parse_ok("FROM a\nENV A=1 B=\"two words\" C\\ D=x\nENV OLD some value here\n");
        let stage = &d.stages[0];
        assert_eq!(
            stage.instructions[0].kind,
            Kind::Env(vec![
                ("A".into(), "1".into()),
                ("B".into(), "\"two words\"".into()),
                ("C\\ D".into(), "x".into()),
            ])
        );
        assert_eq!(
            stage.instructions[1].kind,
            Kind::Env(vec![("OLD".into(), "some value here".into())])
        );
        let e = parse_err("FROM a\nENV lonely\n");
        assert_eq!(
            (e.line, e.message.as_str()),
            (2, "ENV must have two arguments")
        );
        let e = parse_err("FROM a\nLABEL a=b c\n");
        assert!(e.message.contains("can't find = in \"c\""), "{e}");
        let e = parse_err("FROM a\nENV =x\n");
        assert_eq!(e.message, "ENV names can not be blank");
    }

    #[test]
    fn json_or_shell() {
        let d = parse_ok("FROM a\nCMD [\"a\", \"b\"]\nCMD [a, b]\nCMD [\"a\"] x\nENTRYPOINT []\n");
        let kinds: Vec<&Kind> = d.stages[0].instructions.iter().map(|i| &i.kind).collect();
        assert_eq!(
            kinds[0],
            &Kind::Cmd(Command::Exec(vec!["a".into(), "b".into()]))
        );
        assert_eq!(kinds[1], &Kind::Cmd(Command::Shell("[a, b]".into())));
        assert_eq!(kinds[2], &Kind::Cmd(Command::Shell("[\"a\"] x".into())));
        assert_eq!(kinds[3], &Kind::Entrypoint(Command::Exec(vec![])));
        let e = parse_err("FROM a\nCMD [\"a\", 1]\n");
        assert_eq!((e.line, e.message.as_str()), (2, NOT_STRING_ARRAY));
    }

    #[test]
    fn heredoc_words() {
        let h = parse_heredoc("<<EOF").unwrap().unwrap();
        assert_eq!((h.name.as_str(), h.expand, h.chomp), ("EOF", true, false));
        let h = parse_heredoc("<<-'EOT'").unwrap().unwrap();
        assert_eq!((h.name.as_str(), h.expand, h.chomp), ("EOT", false, true));
        let h = parse_heredoc("3<<E\"O\"F").unwrap().unwrap();
        assert_eq!((h.name.as_str(), h.expand), ("EOF", false));
        assert!(parse_heredoc("<<").unwrap().is_none());
        assert!(parse_heredoc("cat<<EOF").unwrap().is_none());
        assert!(parse_heredoc("<<a<b").unwrap().is_none());
        assert_eq!(chomp_heredoc("\t\tx\n\ty\nz\t\n"), "x\ny\nz\t\n");
    }

    #[test]
    fn onbuild_expression_keeps_heredocs() {
        let d = parse_ok("FROM a\nonbuild   RUN <<EOF\necho hi\nEOF\n");
        let Kind::Onbuild(trigger) = &d.stages[0].instructions[0].kind else {
            panic!("not onbuild");
        };
        assert_eq!(trigger.original, "RUN <<EOF\necho hi\nEOF");
        let again = parse_instruction(&trigger.original, '\\').unwrap();
        assert_eq!(again.kind, trigger.kind);
        assert_eq!(again.original, "RUN <<EOF");
    }
}
