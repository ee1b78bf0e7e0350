//! The functions: Go's builtins and docker's (`json`, `join`, `split`, ...).

use std::cmp::Ordering;

use anyhow::Result;
use serde_json::{Number, Value};

use super::*;

/// Name, number of arguments, and whether more may follow.
#[rustfmt::skip]
pub(super) const FUNCS: [(&str, usize, bool); 27] = [
    ("and", 1, true), ("or", 1, true), ("not", 1, false), ("len", 1, false), ("index", 1, true),
    ("slice", 1, true), ("print", 0, true), ("printf", 1, true), ("println", 0, true),
    ("eq", 1, true), ("ne", 2, false), ("lt", 2, false), ("le", 2, false), ("gt", 2, false),
    ("ge", 2, false), ("html", 0, true), ("js", 0, true), ("urlquery", 0, true), ("call", 1, true),
    // docker's
    ("json", 1, false), ("split", 2, false), ("join", 2, false), ("title", 1, false),
    ("lower", 1, false), ("upper", 1, false), ("pad", 3, false), ("truncate", 2, false),
];

/// docker's header functions leave the column title alone.
pub(super) const HEADER_FUNCS: [&str; 7] = [
    "json", "split", "join", "title", "lower", "upper", "truncate",
];

pub(super) fn check_arity(name: &str, n: usize) -> Result<(), String> {
    match FUNCS.iter().find(|f| f.0 == name) {
        None => Err(format!("function {} not defined", quote(name))),
        Some(&(_, want, false)) if n != want => Err(format!(
            "wrong number of args for {name}: want {want} got {n}"
        )),
        Some(&(_, want, true)) if n < want => Err(format!(
            "wrong number of args for {name}: want at least {want} got {n}"
        )),
        _ => Ok(()),
    }
}

/// Calls a function on arguments whose count `check_arity` has checked.
pub(super) fn builtin(
    name: &str,
    mut args: Vec<Value>,
    header: bool,
) -> Result<Option<Value>, String> {
    let failed = |e: String| format!("error calling {name}: {e}");
    if header && HEADER_FUNCS.contains(&name) {
        return Ok(args.into_iter().next());
    }
    if name == "index" && !args.is_empty() {
        let item = args.remove(0);
        return index(item, &args).map_err(failed);
    }
    let string = |s: String| Ok(Some(Value::String(s)));
    let boolean = |b: Result<bool, String>| Ok(Some(Value::Bool(b.map_err(failed)?)));
    match (name, args.as_slice()) {
        ("not", [a]) => boolean(Ok(!truth(Some(a)))),
        ("len", [a]) => Ok(Some(Value::from(go_len(a).map_err(failed)?))),
        ("slice", [a, idx @ ..]) => Ok(Some(slice(a, idx).map_err(failed)?)),
        ("print", a) => string(sprint(a)),
        ("println", a) => string(a.iter().map(display).collect::<Vec<_>>().join(" ") + "\n"),
        ("printf", [f, a @ ..]) => string(sprintf(want_str(f)?, a)),
        ("eq", [a, rest @ ..]) => boolean(eq(a, rest)),
        ("ne", [a, b]) => boolean(eq(a, std::slice::from_ref(b)).map(|e| !e)),
        ("lt", [a, b]) => boolean(lt(a, b)),
        ("le", [a, b]) => boolean(le(a, b)),
        ("gt", [a, b]) => boolean(le(a, b).map(|le| !le)),
        ("ge", [a, b]) => boolean(lt(a, b).map(|lt| !lt)),
        ("html" | "js" | "urlquery", a) => {
            let s = match a {
                [Value::String(s)] => s.clone(),
                _ => sprint(a),
            };
            string(match name {
                "html" => html_escape(&s),
                "js" => js_escape(&s),
                _ => url_query(&s),
            })
        }
        ("call", [f, ..]) => Err(failed(match f {
            Value::Null => "call of nil".into(),
            _ => format!("non-function of type {}", type_name(f)),
        })),
        ("json", [a]) => {
            let mut s = String::new();
            go_json(a, &mut s);
            string(s)
        }
        ("split", [s, sep]) => {
            let (s, sep) = (want_str(s)?, want_str(sep)?);
            let parts: Vec<Value> = match sep {
                "" => s.chars().map(|c| Value::from(c.to_string())).collect(),
                _ => s.split(sep).map(Value::from).collect(),
            };
            Ok(Some(Value::Array(parts)))
        }
        // Lenient: items that are not strings print as with `{{.}}`.
        ("join", [Value::Array(items), sep]) => string(
            items
                .iter()
                .map(display)
                .collect::<Vec<_>>()
                .join(want_str(sep)?),
        ),
        ("join", [Value::Null, _]) => string(String::new()),
        ("join", [a, _]) => Err(format!(
            "wrong type for value; expected []string; got {}",
            type_name(a)
        )),
        ("title", [s]) => string(title(want_str(s)?)),
        ("lower", [s]) => string(want_str(s)?.chars().map(|c| case(c, false)).collect()),
        ("upper", [s]) => string(want_str(s)?.chars().map(|c| case(c, true)).collect()),
        ("pad", [s, left, right]) => {
            let (s, left, right) = (want_str(s)?, want_int(left)?, want_int(right)?);
            let spaces = |n: i64| " ".repeat(usize::try_from(n).unwrap_or(0));
            match () {
                _ if s.is_empty() => string(String::new()),
                _ if left < 0 || right < 0 => Err(failed("strings: negative Repeat count".into())),
                _ if left.saturating_add(right) > 1 << 20 => {
                    Err(failed("strings: Repeat output length overflow".into()))
                }
                _ => string(format!("{}{s}{}", spaces(left), spaces(right))),
            }
        }
        // Unlike docker, counts characters rather than bytes, to never split one.
        ("truncate", [s, n]) => match (want_str(s)?, want_int(n)?) {
            (_, n) if n < 0 => Err(failed(format!(
                "runtime error: slice bounds out of range [:{n}]"
            ))),
            (s, n) => string(s.chars().take(usize::try_from(n).unwrap_or(0)).collect()),
        },
        _ => Err(format!("function {} not defined", quote(name))),
    }
}

pub(super) fn want_str(v: &Value) -> Result<&str, String> {
    match v {
        Value::String(s) => Ok(s),
        Value::Null => Err("invalid value; expected string".into()),
        _ => Err(format!(
            "wrong type for value; expected string; got {}",
            type_name(v)
        )),
    }
}

pub(super) fn want_int(v: &Value) -> Result<i64, String> {
    match v {
        Value::Number(n) if n.as_i64().is_some() => Ok(n.as_i64().unwrap_or(0)),
        Value::Null => Err("invalid value; expected int".into()),
        _ => Err(format!(
            "wrong type for value; expected int; got {}",
            type_name(v)
        )),
    }
}

pub(super) fn go_len(v: &Value) -> Result<usize, String> {
    match v {
        Value::String(s) => Ok(s.len()),
        Value::Array(a) => Ok(a.len()),
        Value::Object(m) => Ok(m.len()),
        Value::Null => Err("len of nil pointer".into()),
        _ => Err(format!("len of type {}", type_name(v))),
    }
}

/// An index into something of length `len`; `len` itself is allowed (a slice bound).
pub(super) fn index_arg(i: &Value, len: usize) -> Result<usize, String> {
    let x = match i {
        Value::Number(n) if int(n).is_some() => int(n).unwrap_or(0),
        Value::Null => return Err("cannot index slice/array with nil".into()),
        _ => {
            return Err(format!(
                "cannot index slice/array with type {}",
                type_name(i)
            ));
        }
    };
    usize::try_from(x)
        .ok()
        .filter(|x| *x <= len)
        .ok_or_else(|| format!("index out of range: {x}"))
}

pub(super) fn index(item: Value, idx: &[Value]) -> Result<Option<Value>, String> {
    if item.is_null() {
        return Err("index of untyped nil".into());
    }
    let mut cur = Some(item);
    for i in idx {
        cur = match cur {
            None | Some(Value::Null) => return Err("index of nil pointer".into()),
            Some(Value::Array(mut a)) => match index_arg(i, a.len())? {
                x if x == a.len() => return Err(format!("index out of range: {x}")),
                x => Some(a.swap_remove(x)),
            },
            Some(Value::String(s)) => {
                let x = index_arg(i, s.len())?;
                let byte = s
                    .as_bytes()
                    .get(x)
                    .ok_or_else(|| format!("index out of range: {x}"))?;
                Some(Value::from(*byte))
            }
            Some(Value::Object(mut m)) => match i {
                Value::String(k) => m.remove(k),
                _ => return Err(format!("value has type {}; should be string", type_name(i))),
            },
            Some(v) => return Err(format!("can't index item of type {}", type_name(&v))),
        };
    }
    Ok(cur)
}

pub(super) fn slice(item: &Value, idx: &[Value]) -> Result<Value, String> {
    if idx.len() > 3 {
        return Err(format!("too many slice indexes: {}", idx.len()));
    }
    let len = match item {
        Value::String(_) if idx.len() == 3 => return Err("cannot 3-index slice a string".into()),
        Value::String(s) => s.len(),
        Value::Array(a) => a.len(),
        Value::Null => return Err("slice of untyped nil".into()),
        _ => return Err(format!("can't slice item of type {}", type_name(item))),
    };
    let mut b = [0, len, len];
    for (slot, i) in b.iter_mut().zip(idx) {
        *slot = index_arg(i, len)?;
    }
    if b[0] > b[1] {
        return Err(format!("invalid slice index: {} > {}", b[0], b[1]));
    }
    if b[1] > b[2] {
        return Err(format!("invalid slice index: {} > {}", b[1], b[2]));
    }
    match item {
        Value::String(s) => Ok(Value::from(
            s.get(b[0]..b[1]).ok_or("slice splits a UTF-8 character")?,
        )),
        Value::Array(a) => Ok(Value::Array(
            a.get(b[0]..b[1]).map(<[Value]>::to_vec).unwrap_or_default(),
        )),
        _ => Ok(Value::Null),
    }
}

pub(super) fn num_cmp(a: &Number, b: &Number) -> Option<Ordering> {
    match (int(a), int(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// Go's `eq`: whether `a` equals any of `rest`. Ints and floats compare by value (JSON numbers
/// have no Go type); nil equals only nil.
pub(super) fn eq(a: &Value, rest: &[Value]) -> Result<bool, String> {
    if rest.is_empty() {
        return Err("missing argument for comparison".into());
    }
    for b in rest {
        let equal = match (a, b) {
            (Value::Null, _) | (_, Value::Null) => a.is_null() && b.is_null(),
            (Value::Bool(x), Value::Bool(y)) => x == y,
            (Value::String(x), Value::String(y)) => x == y,
            (Value::Number(x), Value::Number(y)) => num_cmp(x, y) == Some(Ordering::Equal),
            (Value::Array(_), Value::Array(_)) | (Value::Object(_), Value::Object(_)) => {
                return Err(format!("non-comparable type {}", type_name(a)));
            }
            _ => return Err("incompatible types for comparison".into()),
        };
        if equal {
            return Ok(true);
        }
    }
    Ok(false)
}

pub(super) fn lt(a: &Value, b: &Value) -> Result<bool, String> {
    match (a, b) {
        (Value::String(x), Value::String(y)) => Ok(x < y),
        (Value::Number(x), Value::Number(y)) => Ok(num_cmp(x, y) == Some(Ordering::Less)),
        (Value::String(_) | Value::Number(_), Value::String(_) | Value::Number(_)) => {
            Err("incompatible types for comparison".into())
        }
        _ => Err("invalid type for comparison".into()),
    }
}

pub(super) fn le(a: &Value, b: &Value) -> Result<bool, String> {
    Ok(lt(a, b)? || eq(a, std::slice::from_ref(b))?)
}

/// Go's per-character case mapping: `ß` stays `ß` rather than becoming `SS`.
pub(super) fn case(c: char, upper: bool) -> char {
    let mut mapped = if upper {
        c.to_uppercase().collect::<Vec<_>>()
    } else {
        c.to_lowercase().collect()
    };
    match mapped.len() {
        1 => mapped.remove(0),
        _ => c,
    }
}

/// Go's `strings.Title`: upper-cases the first letter of each word.
pub(super) fn title(s: &str) -> String {
    let separator = |c: char| match c {
        _ if c.is_ascii() => !(c.is_ascii_alphanumeric() || c == '_'),
        _ => !c.is_alphanumeric() && c.is_whitespace(),
    };
    let mut out = String::with_capacity(s.len());
    let mut prev = ' ';
    for c in s.chars() {
        out.push(if separator(prev) { case(c, true) } else { c });
        prev = c;
    }
    out
}

/// Replaces the characters that `table` lists; `other` handles the rest.
pub(super) fn escape(s: &str, table: &[(char, &str)], other: impl Fn(char, &mut String)) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match table.iter().find(|(from, _)| *from == c) {
            Some((_, to)) => out.push_str(to),
            None => other(c, &mut out),
        }
    }
    out
}

pub(super) fn html_escape(s: &str) -> String {
    let table = [
        ('"', "&#34;"),
        ('\'', "&#39;"),
        ('&', "&amp;"),
        ('<', "&lt;"),
        ('>', "&gt;"),
    ];
    escape(s, &table, |c, out| {
        out.push(if c == '\0' { '\u{FFFD}' } else { c })
    })
}

pub(super) fn js_escape(s: &str) -> String {
    #[rustfmt::skip]
    let table = [('\\', "\\\\"), ('\'', "\\'"), ('"', "\\\""), ('<', "\\u003C"), ('>', "\\u003E"),
                 ('&', "\\u0026"), ('=', "\\u003D")];
    escape(s, &table, |c, out| match c {
        _ if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
        _ => out.push(c),
    })
}

/// Go's `url.QueryEscape`.
pub(super) fn url_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            _ if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Go's `strconv.Quote`, or with `'` its quoting of a rune.
pub(super) fn quote_with(s: &str, q: char) -> String {
    #[rustfmt::skip]
    let table = [('\x07', "\\a"), ('\x08', "\\b"), ('\x0c', "\\f"), ('\n', "\\n"), ('\r', "\\r"),
                 ('\t', "\\t"), ('\x0b', "\\v"), ('\\', "\\\\")];
    let body = escape(s, &table, |c, out| match c {
        _ if c == q => out.extend(['\\', c]),
        _ if c < ' ' || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
        _ if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
        _ => out.push(c),
    });
    format!("{q}{body}{q}")
}

pub(super) fn quote(s: &str) -> String {
    quote_with(s, '"')
}
