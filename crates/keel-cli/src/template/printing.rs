//! Printing, as Go's fmt and encoding/json do it (`%v`, `printf`, `json`).

use serde_json::Value;

use super::*;

/// Go's `%v`.
pub(super) fn print_value(v: &Value, out: &mut String) {
    fmt_value(out, v, 'v', &Spec::default());
}

pub(super) fn display(v: &Value) -> String {
    let mut s = String::new();
    print_value(v, &mut s);
    s
}

/// Go's `fmt.Sprint`: spaces between operands when neither is a string.
pub(super) fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 && !a.is_string() && !args[i - 1].is_string() {
            out.push(' ');
        }
        print_value(a, &mut out);
    }
    out
}

/// Digits and decimal exponent of Rust's `{:e}` output: "1.25e3" is ("125", 3).
pub(super) fn parse_exp(s: &str) -> (String, i64) {
    let (mantissa, exp) = s.split_once('e').unwrap_or((s, "0"));
    (mantissa.replace('.', ""), exp.parse().unwrap_or(0))
}

/// `d.ddde±XX`
pub(super) fn fmt_e(digits: &str, exp: i64, upper: bool) -> String {
    let (first, rest) = digits.split_at(digits.len().min(1));
    let dot = if rest.is_empty() { "" } else { "." };
    let e = if upper { 'E' } else { 'e' };
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{first}{dot}{rest}{e}{sign}{:02}", exp.abs())
}

/// `ddd.ddd`, with `decimals` digits after the point.
pub(super) fn fmt_f(digits: &str, exp: i64, decimals: i64) -> String {
    let d = digits.as_bytes();
    let digit = |i: i64| {
        usize::try_from(i)
            .ok()
            .and_then(|i| d.get(i))
            .map_or('0', |b| *b as char)
    };
    let mut out: String = if exp < 0 {
        "0".into()
    } else {
        (0..=exp).map(digit).collect()
    };
    if decimals > 0 {
        out.push('.');
        out.extend((0..decimals).map(|i| digit(exp + 1 + i)));
    }
    out
}

/// Go's formatting of a float for the verbs v, g, G, e, E, f and F.
pub(super) fn go_float(f: f64, verb: char, prec: Option<usize>) -> String {
    if !f.is_finite() {
        return if f.is_nan() {
            "NaN"
        } else if f > 0.0 {
            "+Inf"
        } else {
            "-Inf"
        }
        .into();
    }
    let sign = if f.is_sign_negative() { "-" } else { "" };
    let a = f.abs();
    let body = match verb {
        'e' | 'E' => {
            let (d, e) = parse_exp(&format!("{:.*e}", prec.unwrap_or(6), a));
            fmt_e(&d, e, verb == 'E')
        }
        'f' | 'F' => format!("{:.*}", prec.unwrap_or(6), a),
        _ => {
            // Shortest digits (or `prec` significant ones), exponent form for big and small.
            let (mut d, e) = match prec {
                None => parse_exp(&format!("{a:e}")),
                Some(p) => parse_exp(&format!("{:.*e}", p.max(1) - 1, a)),
            };
            while d.len() > 1 && d.ends_with('0') {
                d.pop();
            }
            let nd = d.len() as i64;
            let eprec = match prec.map(|p| p.max(1) as i64) {
                None => 6,
                Some(p) if p > nd && nd > e => nd,
                Some(p) => p,
            };
            match e < -4 || e >= eprec {
                true => fmt_e(&d, e, verb == 'G'),
                false => fmt_f(&d, e, (nd - e - 1).max(0)),
            }
        }
    };
    format!("{sign}{body}")
}

/// Go's `json.Marshal`, without HTML escaping as docker's `json` function sets it.
pub(super) fn go_json(v: &Value, out: &mut String) {
    match v {
        Value::Number(n) if int(n).is_none() => {
            let f = n.as_f64().unwrap_or(0.0);
            let (d, e) = parse_exp(&format!("{:e}", f.abs()));
            out.push_str(if f.is_sign_negative() { "-" } else { "" });
            if f != 0.0 && !(1e-6..1e21).contains(&f.abs()) {
                // Go writes e-7, not e-07.
                out.push_str(&fmt_e(&d, e, false).replace("e-0", "e-"));
            } else {
                out.push_str(&fmt_f(&d, e, d.len() as i64 - e - 1));
            }
        }
        Value::String(s) => {
            let quoted = serde_json::to_string(s).unwrap_or_default();
            out.push_str(
                &quoted
                    .replace('\u{2028}', "\\u2028")
                    .replace('\u{2029}', "\\u2029"),
            );
        }
        Value::Array(a) => {
            out.push('[');
            for (i, e) in a.iter().enumerate() {
                out.push_str(if i > 0 { "," } else { "" });
                go_json(e, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, e)) in m.iter().enumerate() {
                out.push_str(if i > 0 { "," } else { "" });
                go_json(&Value::from(k.as_str()), out);
                out.push(':');
                go_json(e, out);
            }
            out.push('}');
        }
        _ => out.push_str(&v.to_string()),
    }
}

/// Flags, width and precision of one `printf` verb.
#[derive(Default, Clone, Copy)]
pub(super) struct Spec {
    pub(super) minus: bool,
    pub(super) plus: bool,
    pub(super) sharp: bool,
    pub(super) space: bool,
    pub(super) zero: bool,
    pub(super) width: usize,
    pub(super) prec: Option<usize>,
}

/// Go's limit on widths and precisions.
pub(super) const MAX_WIDTH: i64 = 1_000_000;

/// Go's `fmt.Sprintf`, with its notes such as `%!d(string=x)`, `%!s(MISSING)` and `%!(EXTRA ...)`.
/// Not supported: explicit argument indexes (`%[1]d`).
pub(super) fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut next = 0;
    let mut it = format.chars().peekable();
    // A width or precision: digits, or `*` for an int argument.
    let number = |it: &mut std::iter::Peekable<std::str::Chars>, next: &mut usize| {
        if it.next_if_eq(&'*').is_some() {
            *next += 1;
            let n = args.get(*next - 1).and_then(Value::as_i64);
            return n
                .filter(|n| (-MAX_WIDTH..=MAX_WIDTH).contains(n))
                .map(Some)
                .ok_or(());
        }
        let mut n = None;
        while let Some(d) = it.next_if(char::is_ascii_digit) {
            n = Some((n.unwrap_or(0) * 10 + i64::from(d as u8 - b'0')).min(MAX_WIDTH + 1));
        }
        if n.is_some_and(|n| n > MAX_WIDTH) {
            Err(())
        } else {
            Ok(n)
        }
    };
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut sp = Spec::default();
        while let Some(f) = it.next_if(|c| "-+# 0".contains(*c)) {
            match f {
                '-' => (sp.minus, sp.zero) = (true, false),
                '+' => sp.plus = true,
                '#' => sp.sharp = true,
                ' ' => sp.space = true,
                _ => sp.zero = !sp.minus,
            }
        }
        match number(&mut it, &mut next) {
            Ok(Some(w)) => {
                sp.width = w.unsigned_abs() as usize;
                sp.minus |= w < 0;
                sp.zero &= !sp.minus;
            }
            Ok(None) => {}
            Err(()) => out.push_str("%!(BADWIDTH)"),
        }
        if it.next_if_eq(&'.').is_some() {
            match number(&mut it, &mut next) {
                Ok(p) => sp.prec = usize::try_from(p.unwrap_or(0)).ok(),
                Err(()) => out.push_str("%!(BADPREC)"),
            }
        }
        match (it.next(), args.get(next)) {
            (None, _) => out.push_str("%!(NOVERB)"),
            (Some('%'), _) => out.push('%'),
            (Some(verb), Some(a)) => {
                fmt_value(&mut out, a, verb, &sp);
                next += 1;
            }
            (Some(verb), None) => {
                out.push_str(&format!("%!{verb}(MISSING)"));
                next += 1;
            }
        }
    }
    if let Some(extra) = args.get(next..).filter(|e| !e.is_empty()) {
        let extra = extra.iter().map(|a| match a {
            Value::Null => "<nil>".to_string(),
            _ => format!("{}={}", type_name(a), display(a)),
        });
        out.push_str(&format!(
            "%!(EXTRA {})",
            extra.collect::<Vec<_>>().join(", ")
        ));
    }
    out
}

/// One value for one verb; arrays and maps format their elements with the same verb.
pub(super) fn fmt_value(out: &mut String, v: &Value, verb: char, sp: &Spec) {
    let items: Vec<(Option<&String>, &Value)> = match v {
        _ if verb == 'T' => return pad(out, type_name(v), sp),
        Value::Array(a) => a.iter().map(|e| (None, e)).collect(),
        Value::Object(m) => sorted(m).into_iter().map(|(k, e)| (Some(k), e)).collect(),
        Value::Null if verb == 'v' => return pad(out, "<nil>", sp),
        Value::Bool(b) if "vt".contains(verb) => return pad(out, &b.to_string(), sp),
        Value::String(s) if "vsqxX".contains(verb) => return fmt_str(out, s, verb, sp),
        Value::Number(n) => match int(n) {
            Some(i) if "vdbcoOqxXU".contains(verb) => return fmt_int(out, i, verb, sp),
            None if "veEfFgG".contains(verb) => {
                let s = go_float(n.as_f64().unwrap_or(0.0), verb, sp.prec);
                return fmt_num(out, &s, sp);
            }
            _ => return bad_verb(out, v, verb),
        },
        _ => return bad_verb(out, v, verb),
    };
    out.push_str(if v.is_object() { "map[" } else { "[" });
    for (i, (key, e)) in items.into_iter().enumerate() {
        out.push_str(if i > 0 { " " } else { "" });
        if let Some(k) = key {
            fmt_value(out, &Value::from(k.as_str()), verb, sp);
            out.push(':');
        }
        fmt_value(out, e, verb, sp);
    }
    out.push(']');
}

pub(super) fn bad_verb(out: &mut String, v: &Value, verb: char) {
    match v {
        Value::Null => out.push_str(&format!("%!{verb}(<nil>)")),
        _ => out.push_str(&format!("%!{verb}({}={})", type_name(v), display(v))),
    }
}

pub(super) fn fmt_str(out: &mut String, s: &str, verb: char, sp: &Spec) {
    let s: String = s.chars().take(sp.prec.unwrap_or(usize::MAX)).collect();
    let s = match verb {
        'q' => quote(&s),
        'x' | 'X' => {
            let mut hex = String::new();
            for (i, b) in s.bytes().enumerate() {
                hex.push_str(if i > 0 && sp.space { " " } else { "" });
                if sp.sharp && (sp.space || i == 0) {
                    hex.push_str(if verb == 'x' { "0x" } else { "0X" });
                }
                hex.push_str(&if verb == 'x' {
                    format!("{b:02x}")
                } else {
                    format!("{b:02X}")
                });
            }
            hex
        }
        _ => s,
    };
    pad(out, &s, sp);
}

pub(super) fn fmt_int(out: &mut String, i: i128, verb: char, sp: &Spec) {
    let u = i.unsigned_abs();
    let ch = u32::try_from(u)
        .ok()
        .and_then(char::from_u32)
        .unwrap_or('\u{FFFD}');
    let digits = match verb {
        'c' => return pad(out, &ch.to_string(), sp),
        'q' => return pad(out, &quote_with(&ch.to_string(), '\''), sp),
        'U' => return pad(out, &format!("U+{u:04X}"), sp),
        'b' => format!("{u:b}"),
        'o' | 'O' => format!("{u:o}"),
        'x' => format!("{u:x}"),
        'X' => format!("{u:X}"),
        _ => u.to_string(),
    };
    let prefix = match verb {
        'x' if sp.sharp => "0x",
        'X' if sp.sharp => "0X",
        'o' if sp.sharp => "0",
        'b' if sp.sharp => "0b",
        'O' => "0o",
        _ => "",
    };
    // Go pads with zeros as if the width were a precision (leaving room for a sign, not for
    // a prefix such as 0x); a precision turns zero padding off.
    let sign = usize::from(i < 0 || sp.plus || sp.space);
    let digits = match sp.prec {
        Some(0) if u == 0 => String::new(),
        Some(p) => format!("{digits:0>p$}"),
        None if sp.zero => format!("{digits:0>w$}", w = sp.width.saturating_sub(sign)),
        None => digits,
    };
    let s = format!("{}{prefix}{digits}", if i < 0 { "-" } else { "" });
    fmt_num(out, &s, &Spec { zero: false, ..*sp });
}

/// Pads a formatted number: sign flags, and zero padding after the sign.
pub(super) fn fmt_num(out: &mut String, s: &str, sp: &Spec) {
    let (sign, body) = match s.strip_prefix(['-', '+']) {
        Some(body) => (&s[..1], body),
        None if sp.plus => ("+", s),
        None if sp.space => (" ", s),
        None => ("", s),
    };
    let zeros = if sp.zero {
        sp.width.saturating_sub(sign.len() + body.len())
    } else {
        0
    };
    let s = format!("{sign}{}{body}", "0".repeat(zeros));
    pad(out, &s, &Spec { zero: false, ..*sp });
}

pub(super) fn pad(out: &mut String, s: &str, sp: &Spec) {
    let n = sp.width.saturating_sub(s.chars().count());
    let fill = if sp.zero { "0" } else { " " };
    out.push_str(&fill.repeat(if sp.minus { 0 } else { n }));
    out.push_str(s);
    out.push_str(&" ".repeat(if sp.minus { n } else { 0 }));
}
