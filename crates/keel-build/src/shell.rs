//! Docker's shell-word lexer, after BuildKit's `frontend/dockerfile/shell`
//! (`ProcessWord` / `ProcessWords`): quote removal, escapes and `$VAR`,
//! `${VAR}`, `${VAR:-x}`, `${VAR:+x}`, `${VAR:?msg}`, `${VAR#pat}`,
//! `${VAR%pat}` and `${VAR/pat/repl}` expansion. It is not a shell: no
//! command substitution, no globbing, no arithmetic, exactly like docker.

use thiserror::Error;

/// A word that cannot be expanded (unterminated quote, bad `${...}`, a
/// `${VAR?msg}` whose variable is unset).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct ShellError {
    pub message: String,
}

/// Variable lookup: `Some(value)` when set (possibly empty), `None` when
/// unset; the difference matters to `${VAR-x}` versus `${VAR:-x}`.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Expands one word the way BuildKit's `ProcessWord` does: quotes removed,
/// escapes applied, variables substituted (unknown ones are empty), spaces
/// kept.
pub fn expand(word: &str, lookup: Lookup<'_>, escape: char) -> Result<String, ShellError> {
    process(word, lookup, escape, Options::default()).map(|(word, _)| word)
}

/// Expands `text` and splits it into words on unquoted whitespace, after
/// expansion, like BuildKit's `ProcessWords` (used for `EXPOSE`, `VOLUME`,
/// `ARG` names, ...). Empty quoted words (`""`) produce no word, as there.
pub fn expand_words(
    text: &str,
    lookup: Lookup<'_>,
    escape: char,
) -> Result<Vec<String>, ShellError> {
    process(text, lookup, escape, Options::default()).map(|(_, words)| words)
}

/// Expands a here-document body meant for `COPY`/`ADD` (BuildKit's
/// `ExpandRaw`): variables are substituted but quotes are left alone, and
/// the escape character is always `\`.
pub fn expand_raw(text: &str, lookup: Lookup<'_>) -> Result<String, ShellError> {
    let options = Options {
        skip_quotes: true,
        ..Options::default()
    };
    process(text, lookup, '\\', options).map(|(word, _)| word)
}

/// Lexer switches, as BuildKit's `Lex` fields (the parser uses the raw
/// modes to find here-document words without expanding anything).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Options {
    /// Keep quote characters in the output.
    pub raw_quotes: bool,
    /// Keep escape characters in the output.
    pub raw_escapes: bool,
    /// Leave `$VAR` of unset variables as written.
    pub skip_unset: bool,
    /// Treat quotes as plain characters.
    pub skip_quotes: bool,
}

/// One pass over `text`: the expanded word and its whitespace-split words.
pub(crate) fn process(
    text: &str,
    lookup: Lookup<'_>,
    escape: char,
    options: Options,
) -> Result<(String, Vec<String>), ShellError> {
    let mut lexer = Lexer {
        chars: text.chars().collect(),
        pos: 0,
        escape,
        options,
        raw_escapes: options.raw_escapes,
        lookup,
        depth: 0,
    };
    lexer
        .process_stop_on(None, options.raw_escapes)
        .map_err(|inner| ShellError {
            message: format!("failed to process {text:?}: {inner}"),
        })
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    options: Options,
    /// Current raw-escapes mode: `${VAR#pattern}` turns it on for the
    /// pattern, as BuildKit does, so that `\*` reaches the pattern.
    raw_escapes: bool,
    lookup: Lookup<'a>,
    /// `${...}` nesting, bounded so that hostile input cannot exhaust the
    /// stack (Go's growable stacks never had to care).
    depth: usize,
}

const MAX_NESTING: usize = 256;

#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, text: &str) {
        for ch in text.chars() {
            self.add_char(ch);
        }
    }

    fn add_raw_string(&mut self, text: &str) {
        self.word.push_str(text);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

const MISSING_BRACE: &str = "syntax error: missing '}'";

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let ch = self.chars.get(self.pos).copied();
        if ch.is_some() {
            self.pos += 1;
        }
        ch
    }

    fn get_env(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), String> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let result = self.process_stop_on_inner(stop);
        self.raw_escapes = saved;
        result
    }

    fn process_stop_on_inner(
        &mut self,
        stop: Option<char>,
    ) -> Result<(String, Vec<String>), String> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if stop == Some(ch) {
                self.next();
                return Ok((result, words.finish()));
            }
            if ch == '$' {
                let value = self.process_dollar()?;
                result.push_str(&value);
                words.add_string(&value);
                continue;
            }
            if !self.options.skip_quotes && (ch == '\'' || ch == '"') {
                let value = if ch == '\'' {
                    self.process_single_quote()?
                } else {
                    self.process_double_quote()?
                };
                result.push_str(&value);
                words.add_raw_string(&value);
                continue;
            }
            self.next();
            if ch == self.escape {
                if self.raw_escapes {
                    words.add_raw_char(ch);
                    result.push(ch);
                }
                // The escape character escapes anything, except at the end.
                match self.next() {
                    None => break,
                    Some(escaped) => {
                        words.add_raw_char(escaped);
                        result.push(escaped);
                    }
                }
            } else {
                words.add_char(ch);
                result.push(ch);
            }
        }
        if let Some(stop) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        Ok((result, words.finish()))
    }

    /// Everything up to the next `'` is literal; a `'` cannot be escaped.
    fn process_single_quote(&mut self) -> Result<String, String> {
        let mut result = String::new();
        if let Some(quote) = self.next()
            && self.options.raw_quotes
        {
            result.push(quote);
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .to_string(),
                    );
                }
                Some('\'') => {
                    if self.options.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(ch) => result.push(ch),
            }
        }
    }

    /// Literal up to the next `"`, except `$` expansions; the escape
    /// character only escapes `"`, `$` and itself (otherwise it stays).
    fn process_double_quote(&mut self) -> Result<String, String> {
        let mut result = String::new();
        if let Some(quote) = self.next()
            && self.options.raw_quotes
        {
            result.push(quote);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .to_string(),
                    );
                }
                Some('"') => {
                    self.next();
                    if self.options.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                }
                Some(_) => {
                    let Some(mut ch) = self.next() else { continue };
                    if ch == self.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            // An escape at the very end: dropped, then the
                            // missing quote is reported.
                            None => continue,
                            Some(next) if next == '"' || next == '$' || next == self.escape => {
                                self.next();
                                ch = next;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn process_dollar(&mut self) -> Result<String, String> {
        self.depth += 1;
        let result = if self.depth > MAX_NESTING {
            Err("syntax error: substitutions nested too deeply".to_string())
        } else {
            self.process_dollar_inner()
        };
        self.depth -= 1;
        result
    }

    fn process_dollar_inner(&mut self) -> Result<String, String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.get_env(&name) {
                Some(value) => value,
                None if self.options.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.next();
        match self.peek() {
            None => return Err(MISSING_BRACE.to_string()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".to_string()),
            Some(_) => {}
        }
        let name = self.process_name();
        // BuildKit reports "unsupported modifier" here; a missing brace is
        // what actually happened.
        let Some(first) = self.next() else {
            return Err(MISSING_BRACE.to_string());
        };
        let mut modifier = first.to_string();
        match first {
            '}' => Ok(match self.get_env(&name) {
                Some(value) => value,
                None if self.options.skip_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let mut null_is_unset = false;
                let mut op = first;
                if first == ':' {
                    null_is_unset = true;
                    let Some(next) = self.next() else {
                        return Err(MISSING_BRACE.to_string());
                    };
                    op = next;
                    modifier.push(next);
                }
                let raw = op == '#' || op == '%';
                let word = match self.process_stop_on(Some('}'), raw) {
                    Ok((word, _)) => word,
                    Err(error) => {
                        if self.peek().is_none() {
                            return Err(MISSING_BRACE.to_string());
                        }
                        return Err(error);
                    }
                };
                let value = self.get_env(&name);
                if self.options.skip_unset && value.is_none() {
                    return Ok(format!("${{{name}{modifier}{word}}}"));
                }
                let unset_or_null = match &value {
                    None => true,
                    Some(value) => null_is_unset && value.is_empty(),
                };
                match op {
                    '-' => Ok(if unset_or_null {
                        word
                    } else {
                        value.unwrap_or_default()
                    }),
                    '+' => Ok(if unset_or_null { String::new() } else { word }),
                    '?' => match value {
                        None => Err(format!(
                            "{name}: {}",
                            if word.is_empty() {
                                "is not allowed to be unset"
                            } else {
                                &word
                            }
                        )),
                        Some(value) if null_is_unset && value.is_empty() => Err(format!(
                            "{name}: {}",
                            if word.is_empty() {
                                "is not allowed to be empty"
                            } else {
                                &word
                            }
                        )),
                        Some(value) => Ok(value),
                    },
                    '%' | '#' => {
                        // `%`/`#` remove the shortest match, `%%`/`##` the longest.
                        let (greedy, pattern) = match word.strip_prefix(op) {
                            Some(rest) => (true, rest.to_string()),
                            None => (false, word),
                        };
                        let value = value.unwrap_or_default();
                        if op == '%' {
                            trim_suffix(&pattern, &value, greedy)
                        } else {
                            trim_prefix(&pattern, &value, greedy)
                        }
                    }
                    _ => Err(format!("unsupported modifier ({modifier}) in substitution")),
                }
            }
            '/' => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.next();
                }
                let pattern = match self.process_stop_on(Some('/'), true) {
                    Ok((word, _)) => word,
                    Err(error) => {
                        if self.peek().is_none() {
                            return Err("syntax error: missing '/' in ${}".to_string());
                        }
                        return Err(error);
                    }
                };
                let replacement = match self.process_stop_on(Some('}'), true) {
                    Ok((word, _)) => word,
                    Err(error) => {
                        if self.peek().is_none() {
                            return Err(MISSING_BRACE.to_string());
                        }
                        return Err(error);
                    }
                };
                let value = self.get_env(&name);
                if self.options.skip_unset && value.is_none() {
                    return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                }
                let value = value.unwrap_or_default();
                let compiled = Pattern::compile(&pattern, true)
                    .map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))?;
                Ok(compiled.replace(&value, &replacement, replace_all))
            }
            _ => Err(format!("unsupported modifier ({modifier}) in substitution")),
        }
    }

    /// A variable name: letters, digits and `_`; or a run of digits
    /// (`$1`); or one special parameter (`$?`, `$@`, ...).
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_digit(ch) {
                while let Some(digit) = self.peek().filter(|c| is_digit(*c)) {
                    self.next();
                    name.push(digit);
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.next();
                return ch.to_string();
            }
            if !(ch.is_alphabetic() || is_digit(ch) || ch == '_') {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }
}

fn is_digit(ch: char) -> bool {
    ch.is_ascii_digit() || (!ch.is_ascii() && ch.is_numeric())
}

fn is_special_param(ch: char) -> bool {
    matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// A `${VAR#...}` / `${VAR/...}` pattern: `*` any run, `?` any one
/// character (neither matches a newline, as in BuildKit's regexp), `\*`,
/// `\?`, `\\` literal; no bracket expressions.
#[derive(Debug, Clone)]
struct Pattern {
    tokens: Vec<Token>,
    greedy: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Literal(char),
    Any,
    Star,
}

impl Pattern {
    fn compile(pattern: &str, greedy: bool) -> Result<Pattern, String> {
        let mut tokens = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(ch) = chars.next() {
            match ch {
                '*' => tokens.push(Token::Star),
                '?' => tokens.push(Token::Any),
                '\\' => {
                    // `\}` and `\/` inside `${}` are the delimiters, escaped.
                    if let Some(&next) = chars.peek()
                        && (next == '}' || next == '/')
                    {
                        continue;
                    }
                    match chars.next() {
                        Some(escaped @ ('*' | '?' | '\\')) => tokens.push(Token::Literal(escaped)),
                        Some(other) => return Err(format!("invalid escape '\\{other}'")),
                        None => return Err("invalid escape '\\'".to_string()),
                    }
                }
                other => tokens.push(Token::Literal(other)),
            }
        }
        Ok(Pattern { tokens, greedy })
    }

    fn reversed(&self) -> Pattern {
        let mut tokens = self.tokens.clone();
        tokens.reverse();
        Pattern {
            tokens,
            greedy: self.greedy,
        }
    }

    /// For every start position, where the leftmost-first (Perl-style)
    /// match starting there ends, if any. A table over (token, position)
    /// built backwards keeps this linear in the value length per token.
    fn match_ends(&self, value: &[char]) -> Vec<Option<usize>> {
        let n = value.len();
        let width = n + 1;
        // The run of non-newline characters from each position.
        let mut run_end = vec![n; width];
        for i in (0..n).rev() {
            run_end[i] = if value[i] == '\n' { i } else { run_end[i + 1] };
        }
        let tokens = &self.tokens;
        let mut next_row: Vec<Option<usize>> = (0..width).map(Some).collect();
        for token in tokens.iter().rev() {
            let mut row: Vec<Option<usize>> = vec![None; width];
            for i in (0..width).rev() {
                row[i] = match token {
                    Token::Literal(c) => {
                        if i < n && value[i] == *c {
                            next_row[i + 1]
                        } else {
                            None
                        }
                    }
                    Token::Any => {
                        if i < n && value[i] != '\n' {
                            next_row[i + 1]
                        } else {
                            None
                        }
                    }
                    Token::Star => {
                        let can_extend = i < run_end[i];
                        let longer = if can_extend { row[i + 1] } else { None };
                        if self.greedy {
                            longer.or(next_row[i])
                        } else {
                            next_row[i].or(longer)
                        }
                    }
                };
            }
            next_row = row;
        }
        next_row
    }

    fn replace(&self, value: &str, replacement: &str, all: bool) -> String {
        let chars: Vec<char> = value.chars().collect();
        let ends = self.match_ends(&chars);
        let find_from = |start: usize| -> Option<(usize, usize)> {
            (start..ends.len()).find_map(|s| ends[s].map(|e| (s, e)))
        };
        let slice = |from: usize, to: usize| -> String { chars[from..to].iter().collect() };
        if !all {
            return match find_from(0) {
                Some((start, end)) => {
                    let mut out = slice(0, start);
                    out.push_str(replacement);
                    out.push_str(&slice(end, chars.len()));
                    out
                }
                None => value.to_string(),
            };
        }
        // Go's Regexp.ReplaceAllString: non-overlapping matches, an empty
        // match right after a match is skipped, `$0`/`$$` expand.
        let mut out = String::new();
        let mut last_end = 0;
        let mut search = 0;
        while search <= chars.len() {
            let Some((start, end)) = find_from(search) else {
                break;
            };
            out.push_str(&slice(last_end, start));
            if end > last_end || start == 0 {
                out.push_str(&expand_template(replacement, &slice(start, end)));
            }
            last_end = end;
            search = if search + 1 > end { search + 1 } else { end };
        }
        out.push_str(&slice(last_end.min(chars.len()), chars.len()));
        out
    }
}

/// Go's `Regexp.Expand` for a pattern without groups: `$0`/`${0}` is the
/// match, `$$` a dollar, other names are empty, a bad `$` stays.
fn expand_template(template: &str, matched: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        let (braced, body) = match rest.strip_prefix('{') {
            Some(body) => (true, body),
            None => (false, rest),
        };
        let name_len: usize = body
            .chars()
            .take_while(|c| c.is_alphabetic() || c.is_numeric() || *c == '_')
            .map(char::len_utf8)
            .sum();
        if name_len == 0 || (braced && !body[name_len..].starts_with('}')) {
            out.push('$');
            continue;
        }
        let name = &body[..name_len];
        rest = if braced {
            &body[name_len + 1..]
        } else {
            &body[name_len..]
        };
        if name == "0" {
            out.push_str(matched);
        }
    }
    out.push_str(rest);
    out
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let compiled = Pattern::compile(pattern, greedy)
        .map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))?;
    let chars: Vec<char> = value.chars().collect();
    let ends = compiled.match_ends(&chars);
    Ok(match ends.first().copied().flatten() {
        Some(end) => chars[end..].iter().collect(),
        None => value.to_string(),
    })
}

/// Shortest/longest suffix removal: the pattern and the value are both
/// reversed so that it becomes a prefix match, as BuildKit does.
fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let compiled = Pattern::compile(pattern, greedy)
        .map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))?
        .reversed();
    let mut chars: Vec<char> = value.chars().collect();
    chars.reverse();
    let ends = compiled.match_ends(&chars);
    Ok(match ends.first().copied().flatten() {
        Some(end) => chars[end..].iter().rev().collect(),
        None => value.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn word(text: &str, vars: &HashMap<String, String>) -> Result<String, ShellError> {
        expand(text, &|name| vars.get(name).cloned(), '\\')
    }

    /// BuildKit's `envVarTest` table (the rows for Unix and all
    /// platforms), with PWD=/home SHELL=bash KOREAN=한국어 NULL=.
    #[test]
    fn env_var_test_table() {
        let vars = env(&[
            ("PWD", "/home"),
            ("SHELL", "bash"),
            ("KOREAN", "한국어"),
            ("NULL", ""),
        ]);
        let cases: &[(&str, Option<&str>)] = &[
            ("hello", Some("hello")),
            ("he'll'o", Some("hello")),
            ("he'llo", None),
            ("he\\'llo", Some("he'llo")),
            ("he\\\\'llo", None),
            ("abc\\tdef", Some("abctdef")),
            ("\"abc\\tdef\"", Some("abc\\tdef")),
            ("\"abc\\\\tdef\"", Some("abc\\tdef")),
            ("'abc\\tdef'", Some("abc\\tdef")),
            ("hello\\", Some("hello")),
            ("hello\\\\", Some("hello\\")),
            ("\"hello", None),
            ("\"hello\\\"", None),
            ("\"hel'lo\"", Some("hel'lo")),
            ("'hello", None),
            ("'hello\\'", Some("hello\\")),
            ("'hello\\there'", Some("hello\\there")),
            ("'hello\\\\there'", Some("hello\\\\there")),
            ("\"''\"", Some("''")),
            ("$.", Some("$.")),
            ("$1", Some("")),
            ("he$1x", Some("hex")),
            ("he$.x", Some("he$.x")),
            ("he$pwd.", Some("he.")),
            ("he$PWD", Some("he/home")),
            ("he\\$PWD", Some("he$PWD")),
            ("he\\\\$PWD", Some("he\\/home")),
            ("\"he\\$PWD\"", Some("he$PWD")),
            ("\"he\\\\$PWD\"", Some("he\\/home")),
            ("\\${}", Some("${}")),
            ("\\${}aaa", Some("${}aaa")),
            ("he\\${}", Some("he${}")),
            ("he\\${}xx", Some("he${}xx")),
            ("${}", None),
            ("${}aaa", None),
            ("he${}", None),
            ("he${}xx", None),
            ("he${hi}", Some("he")),
            ("he${hi}xx", Some("hexx")),
            ("he${PWD}", Some("he/home")),
            ("he${.}", None),
            ("he${XXX:-000}xx", Some("he000xx")),
            ("he${PWD:-000}xx", Some("he/homexx")),
            ("he${XXX:-$PWD}xx", Some("he/homexx")),
            ("he${XXX:-${PWD:-yyy}}xx", Some("he/homexx")),
            ("he${XXX:-${YYY:-yyy}}xx", Some("heyyyxx")),
            ("he${XXX:YYY}", None),
            ("he${XXX:+${PWD}}xx", Some("hexx")),
            ("he${PWD:+${XXX}}xx", Some("hexx")),
            ("he${PWD:+${SHELL}}xx", Some("hebashxx")),
            ("he${XXX:+000}xx", Some("hexx")),
            ("he${PWD:+000}xx", Some("he000xx")),
            ("'he${XX}'", Some("he${XX}")),
            ("\"he${PWD}\"", Some("he/home")),
            ("\"he'$PWD'\"", Some("he'/home'")),
            ("\"$PWD\"", Some("/home")),
            ("'$PWD'", Some("$PWD")),
            ("'\\$PWD'", Some("\\$PWD")),
            ("'\"hello\"'", Some("\"hello\"")),
            ("'he\\$PWD'", Some("he\\$PWD")),
            ("he${PWD", None),
            ("he${PWD:=000}xx", None),
            ("he${PWD:+${PWD}:}xx", Some("he/home:xx")),
            ("he${XXX:-\\$PWD:}xx", Some("he$PWD:xx")),
            ("he${XXX:-\\${PWD}z}xx", Some("he${PWDz}xx")),
            ("안녕하세요", Some("안녕하세요")),
            ("안'녕'하세요", Some("안녕하세요")),
            ("안'녕하세요", None),
            ("안녕\\'하세요", Some("안녕'하세요")),
            ("안녕$1x", Some("안녕x")),
            ("$KOREAN", Some("한국어")),
            ("안녕$KOREAN", Some("안녕한국어")),
            ("${{aaa}", None),
            ("${aaa}}", Some("}")),
            ("${aaa", None),
            ("${{aaa:-bbb}", None),
            ("${aaa:-bbb}}", Some("bbb}")),
            ("${aaa:-bbb", None),
            ("${aaa:-bbb}", Some("bbb")),
            ("${aaa:-${bbb:-ccc}}", Some("ccc")),
            ("${aaa:-bbb ${foo}", None),
            ("${aaa:-bbb {foo}", Some("bbb {foo")),
            ("${:}", None),
            ("${:-bbb}", None),
            ("${:+bbb}", None),
        ];
        for (source, expected) in cases {
            let got = word(source, &vars);
            match expected {
                Some(expected) => assert_eq!(got.as_deref(), Ok(*expected), "expanding {source:?}"),
                None => assert!(got.is_err(), "{source:?} should fail, got {got:?}"),
            }
        }
    }

    /// BuildKit's `TestProcessWithMatches` cases.
    #[test]
    fn modifiers_and_patterns() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Option<&'a str>);
        let cases: &[Case] = &[
            ("x ${UNUSED}", &[("DUMMY", "dummy")], Some("x ")),
            (
                "${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}",
                &[("FOO", "xxx"), ("BAR", "")],
                Some("xxx  ccc"),
            ),
            (
                "${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}",
                &[("FOO", "xxx"), ("BAR", "")],
                Some("xxx bbb ccc"),
            ),
            ("${FOO:-}", &[], Some("")),
            (
                "${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}",
                &[("FOO", "xxx"), ("BAR", "")],
                Some("aaa bbb "),
            ),
            (
                "${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}",
                &[("FOO", "xxx"), ("BAR", "")],
                Some("aaa  "),
            ),
            ("${FOO?aaa}", &[("FOO", "xxx")], Some("xxx")),
            ("${BAR?bbb}", &[("BAR", "")], Some("")),
            ("${BAZ?ccc}", &[], None),
            ("${FOO:?aaa}", &[("FOO", "xxx")], Some("xxx")),
            ("${BAR:?bbb}", &[("BAR", "")], None),
            ("${BAZ:?}", &[], None),
            ("${FOO=aaa}", &[("FOO", "xxx")], None),
            ("${FOO=:aaa}", &[("FOO", "xxx")], None),
            ("${FOO=}", &[], None),
            (
                "${FOO#()[]{\\}^$.\\*\\?|\\\\}",
                &[("FOO", "()[]{}^$.*?|\\x")],
                Some("x"),
            ),
            ("${FOO%%\\**}", &[("FOO", "xx**")], Some("xx")),
            ("${FOO#*x*y}", &[("FOO", "xxyy")], Some("y")),
            ("${FOO#*}", &[("FOO", "xxyy")], Some("xxyy")),
            ("${FOO#$BAR}", &[("FOO", "xxyy"), ("BAR", "x")], Some("xyy")),
            ("${FOO#$BAR}", &[("FOO", "xxyy"), ("BAR", "")], Some("xxyy")),
            ("${FOO#}", &[("FOO", "xxyy")], Some("xxyy")),
            ("${FOO##*x}", &[("FOO", "xxyy")], Some("yy")),
            ("${FOO##}", &[("FOO", "xxyy")], Some("xxyy")),
            ("${FOO#?\\?}", &[("FOO", "???y")], Some("?y")),
            (
                "${ABC:-.}${FOO%x}${ABC:-.}",
                &[("FOO", "xxyy")],
                Some(".xxyy."),
            ),
            ("${FOO%%\\**\\*}", &[("FOO", "a***yy*")], Some("a")),
            ("${FOO%}", &[("FOO", "xxyy")], Some("xxyy")),
            (
                "${FOO%%$BAR}",
                &[("FOO", "xxyy"), ("BAR", "")],
                Some("xxyy"),
            ),
            (
                "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}",
                &[("FOO", "/foo*/*/*.txt"), ("NEEDLE", "\\*/")],
                Some("/foo.*/*.txt - /foo..*.txt"),
            ),
            (
                "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}",
                &[("FOO", "/tmp/tmp/bar.txt"), ("NEEDLE", "/tmp")],
                Some("/tmp/bar.txt - /bar.txt"),
            ),
            (
                "${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
                &[
                    ("FOO", "/a/foo/b/c.txt"),
                    ("NEEDLE", "/?/"),
                    ("REPLACEMENT", "/"),
                ],
                Some("/foo/b/c.txt - /foo/c.txt"),
            ),
            (
                "${FOO/$NEEDLE/$REPLACEMENT}",
                &[
                    ("FOO", "http://google.de"),
                    ("NEEDLE", "http://"),
                    ("REPLACEMENT", "https://"),
                ],
                Some("https://google.de"),
            ),
            (
                "${FOO//\\//\\/}",
                &[("FOO", "/tmp/foo.txt")],
                Some("\\/tmp\\/foo.txt"),
            ),
            (
                "${FOO/$BAR/ww}",
                &[("FOO", "xxyy"), ("BAR", "")],
                Some("wwxxyy"),
            ),
            ("${FOO//ww}", &[("FOO", "xxyy")], None),
            ("${FOO//}", &[("FOO", "xxyy")], None),
            ("${FOO///}", &[("FOO", "xxyy")], Some("xxyy")),
            ("${FOO///}", &[], Some("")),
        ];
        for (source, vars, expected) in cases {
            let vars = env(vars);
            let got = word(source, &vars);
            match expected {
                Some(expected) => {
                    assert_eq!(got.as_deref(), Ok(*expected), "expanding {source:?}")
                }
                None => assert!(got.is_err(), "{source:?} should fail, got {got:?}"),
            }
        }
    }

    #[test]
    fn mandatory_variables_report_the_message() {
        let set = env(&[("VAR", "plain"), ("ARG", "x")]);
        let empty = env(&[("VAR", ""), ("ARG", "x")]);
        let unset = env(&[("ARG", "x")]);
        let no_empty = "${VAR:?message here$ARG}";
        let no_unset = "${VAR?message here$ARG}";
        assert_eq!(word(no_empty, &set).as_deref(), Ok("plain"));
        let error = word(no_empty, &empty).unwrap_err();
        assert!(error.message.contains("VAR: message herex"), "{error}");
        assert!(word(no_empty, &unset).is_err());
        assert_eq!(word(no_unset, &set).as_deref(), Ok("plain"));
        assert_eq!(word(no_unset, &empty).as_deref(), Ok(""));
        let error = word(no_unset, &unset).unwrap_err();
        assert!(error.message.contains("message herex"), "{error}");
        let error = word("${NOPE?}", &unset).unwrap_err();
        assert!(
            error.message.contains("NOPE: is not allowed to be unset"),
            "{error}"
        );
        let error = word("${VAR:?}", &empty).unwrap_err();
        assert!(
            error.message.contains("VAR: is not allowed to be empty"),
            "{error}"
        );
    }

    /// After BuildKit's `wordsTest`: splitting happens after expansion,
    /// quoted text is never split, empty quotes make no word.
    #[test]
    fn words_split_after_expansion() {
        let vars = env(&[
            ("hi", "hi"),
            ("space", "abc  def"),
            ("leading", "  ab   c"),
            ("trailing", "ab   c   "),
            ("tab", "x\ty"),
            ("empty", ""),
        ]);
        let lookup = |name: &str| vars.get(name).cloned();
        let split = |text: &str| expand_words(text, &lookup, '\\').unwrap();
        assert_eq!(split("hello"), ["hello"]);
        assert_eq!(split("hello${hi}bye"), ["hellohibye"]);
        assert_eq!(split("hello${space}bye"), ["helloabc", "defbye"]);
        assert_eq!(split("hello\"${space}\"bye"), ["helloabc  defbye"]);
        assert_eq!(split("hello \"${space}\"bye"), ["hello", "abc  defbye"]);
        assert_eq!(split("hello${leading}def"), ["hello", "ab", "cdef"]);
        assert_eq!(split("hello\"${leading}\" def"), ["hello  ab   c", "def"]);
        assert_eq!(split("hello${trailing}d"), ["helloab", "c", "d"]);
        assert_eq!(split("hello\"${trailing}\"d"), ["helloab   c   d"]);
        assert_eq!(split("hello${tab}d"), ["hellox", "yd"]);
        assert_eq!(split("hello${empty}d"), ["hellod"]);
        assert_eq!(split("hello'${empty}'d"), ["hello${empty}d"]);
        assert_eq!(split("hello\"${empty}\"d"), ["hellod"]);
        assert_eq!(split("a \"\" b"), ["a", "b"]);
        assert_eq!(split("  80/tcp   $hi  "), ["80/tcp", "hi"]);
        assert_eq!(split("a\\ b c"), ["a b", "c"]);
    }

    #[test]
    fn backtick_escape() {
        let vars = env(&[("X", "1")]);
        let lookup = |name: &str| vars.get(name).cloned();
        assert_eq!(expand("C:\\dir\\$X", &lookup, '`').unwrap(), "C:\\dir\\1");
        assert_eq!(expand("`$X", &lookup, '`').unwrap(), "$X");
        assert_eq!(expand("\"a`\"b\"", &lookup, '`').unwrap(), "a\"b");
    }

    #[test]
    fn raw_expansion_keeps_quotes() {
        let vars = env(&[("NAME", "world")]);
        let lookup = |name: &str| vars.get(name).cloned();
        assert_eq!(
            expand_raw("echo \"hello $NAME\" 'x'\n", &lookup).unwrap(),
            "echo \"hello world\" 'x'\n"
        );
        assert_eq!(expand_raw("cost \\$5", &lookup).unwrap(), "cost $5");
    }

    #[test]
    fn skip_unset_keeps_references() {
        let options = Options {
            skip_unset: true,
            ..Options::default()
        };
        let (word, _) = process("$A ${B} ${C:-x} ${D/a/b}", &|_| None, '\\', options).unwrap();
        assert_eq!(word, "$A ${B} ${C:-x} ${D/a/b}");
    }

    #[test]
    fn replace_all_with_empty_and_template() {
        let vars = env(&[("V", "abc"), ("E", "")]);
        assert_eq!(word("${V//$E/-}", &vars).unwrap(), "-a-b-c-");
        assert_eq!(word("${V//b/[$$0]}", &vars).unwrap(), "a[0]c");
        assert_eq!(word("${V//b/\\$0}", &vars).unwrap(), "a\\bc");
        assert_eq!(word("${V/*/x}", &vars).unwrap(), "x");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = "${a:-".repeat(100_000);
        assert!(word(&deep, &env(&[])).is_err());
        let ok = format!("{}x{}", "${a:-".repeat(100), "}".repeat(100));
        assert_eq!(word(&ok, &env(&[])).unwrap(), "x");
    }

    #[test]
    fn long_values_stay_fast() {
        let long = "ab".repeat(20_000);
        let vars = env(&[("L", &long)]);
        assert_eq!(word("${L##*a}", &vars).unwrap(), "b");
        assert_eq!(word("${L%%b*}", &vars).unwrap(), "a");
        assert_eq!(word("${L//ab/}", &vars).unwrap(), "");
    }
}
