//! The lexer: template text into tokens (text, actions, their words).

use anyhow::Result;
use serde_json::Value;

use super::*;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum K {
    Text(String),
    Left,
    Right,
    Space,
    Declare,
    Assign,
    Pipe,
    LParen,
    RParen,
    Str(String),
    Num(Value),
    Bool(bool),
    Nil,
    Dot,
    Field(String),
    Var(String),
    Ident(String),
    Kw(&'static str),
    /// Any other printable ASCII character, for the parser to report.
    Char(char),
    /// Lexing stops at the first error; the parser reports it when it gets there, as Go's does.
    Error(String),
    Eof,
}

#[derive(Debug, Clone)]
pub(super) struct Tok {
    pub(super) k: K,
    pub(super) pos: usize,
    pub(super) end: usize,
}

pub(super) fn tok(k: K, pos: usize, end: usize) -> Tok {
    Tok { k, pos, end }
}

pub(super) static EOF: Tok = Tok {
    k: K::Eof,
    pos: 0,
    end: 0,
};
pub(super) const KEYWORDS: [&str; 10] = [
    "block", "break", "continue", "define", "else", "end", "if", "range", "template", "with",
];

pub(super) fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

pub(super) fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// `}}`, or ` -}}` which also trims the text after it: (length, trim).
pub(super) fn right_delim(s: &str) -> Option<(usize, bool)> {
    if s.starts_with("}}") {
        return Some((2, false));
    }
    let trim = s.starts_with(is_space) && s.get(1..).is_some_and(|r| r.starts_with("-}}"));
    trim.then_some((4, true))
}

pub(super) fn lex(src: &str) -> Vec<Tok> {
    let mut toks = Vec::new();
    let (mut i, mut trim) = (0, false);
    loop {
        let open = src[i..].find("{{").map(|p| p + i);
        let (mut start, mut end) = (i, open.unwrap_or(src.len()));
        // `{{- ` trims the text before it.
        let ltrim = open
            .is_some_and(|p| src[p + 2..].starts_with('-') && src[p + 3..].starts_with(is_space));
        if trim {
            start = end - src[start..end].trim_start_matches(is_space).len();
        }
        if ltrim {
            end = start + src[start..end].trim_end_matches(is_space).len();
        }
        if start < end {
            toks.push(tok(K::Text(src[start..end].into()), start, end));
        }
        let Some(open) = open else {
            toks.push(tok(K::Eof, src.len(), src.len()));
            return toks;
        };
        i = open + if ltrim { 4 } else { 2 };
        let result = if src[i..].starts_with("/*") {
            lex_comment(src, &mut i)
        } else {
            toks.push(tok(K::Left, open, i));
            lex_action(src, &mut i, &mut toks)
        };
        match result {
            Ok(t) => trim = t,
            Err(msg) => {
                toks.push(tok(K::Error(msg), i, i));
                return toks;
            }
        }
    }
}

/// Skips `/* ... */` and the right delimiter that must follow it.
pub(super) fn lex_comment(src: &str, i: &mut usize) -> Result<bool, String> {
    let close = src[*i + 2..].find("*/").ok_or("unclosed comment")?;
    *i += close + 4;
    let (n, trim) = right_delim(&src[*i..]).ok_or("comment ends before closing delimiter")?;
    *i += n;
    Ok(trim)
}

/// Lexes the inside of an action up to and including its right delimiter; returns whether
/// that delimiter trims the text after it.
pub(super) fn lex_action(src: &str, i: &mut usize, toks: &mut Vec<Tok>) -> Result<bool, String> {
    loop {
        let start = *i;
        let rest = &src[start..];
        if let Some((n, trim)) = right_delim(rest) {
            *i += n;
            toks.push(tok(K::Right, start, *i));
            return Ok(trim);
        }
        let c = rest.chars().next().ok_or("unclosed action")?;
        let mut len = c.len_utf8();
        let word = |from: usize| {
            from + rest[from..]
                .find(|c| !is_alnum(c))
                .unwrap_or(rest.len() - from)
        };
        let k = match c {
            _ if is_space(c) => {
                len = rest.find(|c| !is_space(c)).unwrap_or(rest.len());
                // The last space may begin a trim-marked ` -}}`.
                if right_delim(&rest[len - 1..]).is_some_and(|(_, t)| t) {
                    len -= 1;
                }
                if len == 0 {
                    continue;
                }
                K::Space
            }
            '=' => K::Assign,
            ':' if rest.starts_with(":=") => {
                len = 2;
                K::Declare
            }
            ':' => return Err("expected :=".into()),
            '|' => K::Pipe,
            '(' => K::LParen,
            ')' => K::RParen,
            '"' | '`' | '\'' => {
                let (n, k) = lex_quote(rest, c)?;
                len = n;
                k
            }
            '$' | '.' if !rest[1..].starts_with(|d: char| c == '.' && d.is_ascii_digit()) => {
                len = word(1);
                check_terminator(&rest[len..])?;
                match (c, &rest[1..len]) {
                    ('$', _) => K::Var(rest[..len].into()),
                    (_, "") => K::Dot,
                    (_, name) => K::Field(name.into()),
                }
            }
            '+' | '-' | '.' | '0'..='9' => {
                len = scan_number(rest);
                if let Some(next) = rest[len..].chars().next().filter(|c| is_alnum(*c)) {
                    let bad = format!("{}{next}", &rest[..len]);
                    return Err(format!("bad number syntax: {}", quote(&bad)));
                }
                K::Num(parse_number(&rest[..len])?)
            }
            _ if is_alnum(c) => {
                len = word(0);
                check_terminator(&rest[len..])?;
                match &rest[..len] {
                    "true" => K::Bool(true),
                    "false" => K::Bool(false),
                    "nil" => K::Nil,
                    w => KEYWORDS
                        .iter()
                        .find(|k| **k == w)
                        .map_or(K::Ident(w.into()), |k| K::Kw(k)),
                }
            }
            _ if c.is_ascii_graphic() => K::Char(c),
            _ => return Err(format!("unrecognized character in action: {}", rune(c))),
        };
        *i = start + len;
        toks.push(tok(k, start, *i));
    }
}

/// Words end at a space, `.`, `,`, `|`, `:`, a parenthesis or `}}`.
pub(super) fn check_terminator(s: &str) -> Result<(), String> {
    match s.chars().next() {
        Some(c) if !(is_space(c) || ".,|:()".contains(c) || s.starts_with("}}")) => {
            Err(format!("bad character {}", rune(c)))
        }
        _ => Ok(()),
    }
}

/// Go's `%#U`.
pub(super) fn rune(c: char) -> String {
    format!("U+{:04X} '{c}'", c as u32)
}

/// A quoted string, raw string or character constant at the start of `s`: (length, token).
pub(super) fn lex_quote(s: &str, q: char) -> Result<(usize, K), String> {
    let mut escaped = false;
    for (j, c) in s.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' if q != '`' => escaped = true,
            '\n' if q == '\'' => break,
            _ if c == q => {
                let body = &s[1..j];
                let k = match q {
                    '`' => K::Str(body.replace('\r', "")),
                    '"' => K::Str(unescape(body, q)?),
                    _ => {
                        let u = unescape(body, q)?;
                        let mut cs = u.chars();
                        match (cs.next(), cs.next()) {
                            (Some(c), None) => K::Num(Value::from(c as u32)),
                            _ => return Err(format!("malformed character constant: {}", &s[..=j])),
                        }
                    }
                };
                return Ok((j + 1, k));
            }
            _ => {}
        }
    }
    Err(match q {
        '`' => "unterminated raw quoted string".into(),
        '"' => "unterminated quoted string".into(),
        _ => "unterminated character constant".into(),
    })
}

/// Go's escapes in a quoted string or character constant. Unlike Go, a newline may appear
/// inside "...": docker turns `\n` into a newline before parsing, even inside strings.
pub(super) fn unescape(s: &str, q: char) -> Result<String, String> {
    fn digits(it: &mut std::str::Chars, n: usize, radix: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |acc, _| {
            Some(acc * radix + it.next()?.to_digit(radix)?)
        })
    }
    let bad = || "invalid syntax".to_string();
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let e = it.next().ok_or_else(bad)?;
        let simple = "a\x07b\x08f\x0cn\nr\rt\tv\x0b\\\\"
            .chars()
            .collect::<Vec<_>>();
        out.push(match e {
            _ if e == q => e,
            'x' | 'u' | 'U' => {
                let n = match e {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                digits(&mut it, n, 16)
                    .and_then(char::from_u32)
                    .ok_or_else(bad)?
            }
            '0'..='7' => digits(&mut it, 2, 8)
                .map(|low| (e as u32 - '0' as u32) * 64 + low)
                .filter(|v| *v < 256)
                .and_then(char::from_u32)
                .ok_or_else(bad)?,
            _ => match simple.chunks(2).find(|p| p[0] == e) {
                Some(pair) => pair[1],
                None => return Err(bad()),
            },
        });
    }
    Ok(out)
}

/// Go's `scanNumber`: the length of the number-like text at the start of `s`.
pub(super) fn scan_number(s: &str) -> usize {
    let b = s.as_bytes();
    let accept = |j: &mut usize, set: &str| {
        let ok = b.get(*j).is_some_and(|c| set.as_bytes().contains(c));
        *j += usize::from(ok);
        ok
    };
    let run = |j: &mut usize, set: &str| while accept(j, set) {};
    let mut j = 0;
    accept(&mut j, "+-");
    let mut digits = "0123456789_";
    if accept(&mut j, "0") {
        for (prefix, set) in [
            ("xX", "0123456789abcdefABCDEF_"),
            ("oO", "01234567_"),
            ("bB", "01_"),
        ] {
            if accept(&mut j, prefix) {
                digits = set;
                break;
            }
        }
    }
    run(&mut j, digits);
    if accept(&mut j, ".") {
        run(&mut j, digits);
    }
    if digits.len() == 11 && accept(&mut j, "eE") {
        accept(&mut j, "+-");
        run(&mut j, "0123456789_");
    }
    accept(&mut j, "i");
    j
}

/// A number constant: an int where Go has one, else a float.
pub(super) fn parse_number(text: &str) -> Result<Value, String> {
    let bad = || format!("illegal number syntax: {}", quote(text));
    let t = text.replace('_', "");
    let (neg, body) = match t.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, t.strip_prefix('+').unwrap_or(&t)),
    };
    let octal = body.len() > 1 && body.starts_with('0') && body.bytes().all(|b| b.is_ascii_digit());
    let (radix, digits) = match body.get(..2) {
        Some("0x" | "0X") => (16, &body[2..]),
        Some("0o" | "0O") => (8, &body[2..]),
        Some("0b" | "0B") => (2, &body[2..]),
        _ if octal => (8, &body[1..]),
        _ => (10, body),
    };
    if radix != 10 {
        let u = i128::from(u64::from_str_radix(digits, radix).map_err(|_| bad())?);
        let v = if neg { -u } else { u };
        let v = i64::try_from(v)
            .map(Value::from)
            .or_else(|_| u64::try_from(v).map(Value::from));
        return v.map_err(|_| bad());
    }
    if body.contains(['.', 'e', 'E']) {
        let f = t
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .ok_or_else(bad)?;
        return Ok(Value::from(f));
    }
    let v = t
        .parse::<i64>()
        .map(Value::from)
        .or_else(|_| t.parse::<u64>().map(Value::from));
    v.map_err(|_| bad())
}
