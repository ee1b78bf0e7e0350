//! Variables in compose files, as docker compose substitutes them:
//! `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`,
//! `${VAR?error}`, `${VAR:+replacement}`, `${VAR+replacement}` (defaults
//! and replacements may hold variables themselves) and `$$` for a `$`; and
//! the `.env` files the variables come from.

use std::collections::BTreeMap;

/// Where variables come from: the process's environment over the project's
/// `.env` (or `--env-file`) files, as docker compose orders them.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    pub values: BTreeMap<String, String>,
}

impl Vars {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }
}

/// Substitutes the variables in `text`; the error is docker compose's
/// message (without the place, which the caller adds).
pub fn substitute(text: &str, vars: &Vars) -> Result<String, String> {
    if !text.contains('$') {
        return Ok(text.to_string());
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '$' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('$') => {
                out.push('$');
                i += 2;
            }
            Some('{') => {
                let (end, replaced) = braced(&chars, i + 2, vars)?;
                out.push_str(&replaced);
                i = end;
            }
            Some(c) if c.is_ascii_alphabetic() || *c == '_' => {
                let mut j = i + 1;
                while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                let name: String = chars[i + 1..j].iter().collect();
                out.push_str(vars.get(&name).unwrap_or(""));
                i = j;
            }
            _ => {
                return Err(format!(
                    "invalid interpolation format for {text:?}: a '$' must be followed by a name, '{{' or '$' (write '$$' for a '$')"
                ));
            }
        }
    }
    Ok(out)
}

/// `${...}` starting after the brace at `start`: where it ends (past the
/// closing brace) and what it stands for.
fn braced(chars: &[char], start: usize, vars: &Vars) -> Result<(usize, String), String> {
    let whole = || chars.iter().collect::<String>();
    let mut j = start;
    while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
        j += 1;
    }
    let name: String = chars[start..j].iter().collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "invalid interpolation format for {:?}: a variable name is missing or invalid",
            whole()
        ));
    }
    if chars.get(j) == Some(&'}') {
        return Ok((j + 1, vars.get(&name).unwrap_or("").to_string()));
    }
    if j >= chars.len() {
        return Err(format!(
            "invalid interpolation format for {:?}: a '}}' is missing",
            whole()
        ));
    }
    // The operator: ":-", "-", ":?", "?", ":+", "+".
    let colon = chars.get(j) == Some(&':');
    let op_at = if colon { j + 1 } else { j };
    let op = match chars.get(op_at) {
        Some(c @ ('-' | '?' | '+')) => *c,
        _ => {
            return Err(format!(
                "invalid interpolation format for {:?}: unexpected character after ${{{name}",
                whole()
            ));
        }
    };
    // The argument runs to the matching brace (nested `${...}` allowed).
    let mut depth = 0;
    let mut k = op_at + 1;
    let arg_start = k;
    loop {
        match chars.get(k) {
            None => {
                return Err(format!(
                    "invalid interpolation format for {:?}: a '}}' is missing",
                    whole()
                ));
            }
            Some('$') if chars.get(k + 1) == Some(&'{') => {
                depth += 1;
                k += 2;
                continue;
            }
            Some('}') if depth == 0 => break,
            Some('}') => depth -= 1,
            _ => {}
        }
        k += 1;
    }
    let arg: String = chars[arg_start..k].iter().collect();
    let value = vars.get(&name);
    let set = if colon {
        value.is_some_and(|v| !v.is_empty())
    } else {
        value.is_some()
    };
    let replaced = match op {
        '-' if set => value.unwrap_or("").to_string(),
        '-' => substitute(&arg, vars)?,
        '?' if set => value.unwrap_or("").to_string(),
        '?' => {
            let message = substitute(&arg, vars)?;
            return Err(if colon {
                format!("required variable {name} is missing a value: {message}")
            } else {
                format!("required variable {name} is missing: {message}")
            });
        }
        '+' if set => substitute(&arg, vars)?,
        _ => String::new(),
    };
    Ok((k + 1, replaced))
}

/// A `.env` file as docker compose reads it: `KEY=VALUE` lines, `export`
/// allowed, `#` comments, single quotes literal, double quotes with `\n`
/// escapes and variables, unquoted values trimmed and cut at ` #`. Values
/// may use the variables set before them and `vars`.
pub fn parse_env_file(text: &str, vars: &Vars) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((n, raw)) = lines.next() {
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), v),
            None => {
                // A bare name: the environment's value, if any.
                let key = line.trim();
                if let Some(v) = vars.get(key) {
                    out.push((key.to_string(), v.to_string()));
                }
                continue;
            }
        };
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!(
                "line {}: unexpected character in variable name {key:?}",
                n + 1
            ));
        }
        let known = |name: &str| -> Option<String> {
            out.iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .or_else(|| vars.get(name).map(str::to_string))
        };
        let mut scope = Vars::default();
        let value = value.trim_start();
        let parsed = if let Some(rest) = value.strip_prefix('\'') {
            let mut text = rest.to_string();
            while !text.contains('\'') {
                match lines.next() {
                    Some((_, next)) => {
                        text.push('\n');
                        text.push_str(next);
                    }
                    None => return Err(format!("line {}: a closing quote is missing", n + 1)),
                }
            }
            text[..text.find('\'').unwrap_or(text.len())].to_string()
        } else if let Some(rest) = value.strip_prefix('"') {
            let mut text = rest.to_string();
            while closing_quote(&text).is_none() {
                match lines.next() {
                    Some((_, next)) => {
                        text.push('\n');
                        text.push_str(next);
                    }
                    None => return Err(format!("line {}: a closing quote is missing", n + 1)),
                }
            }
            let inner = &text[..closing_quote(&text).unwrap_or(text.len())];
            let unescaped = inner
                .replace("\\n", "\n")
                .replace("\\t", "\t")
                .replace("\\\"", "\"")
                .replace("\\\\", "\\");
            for name in referenced(&unescaped) {
                if let Some(v) = known(&name) {
                    scope.values.insert(name, v);
                }
            }
            substitute(&unescaped, &scope).map_err(|e| format!("line {}: {e}", n + 1))?
        } else {
            let cut = value.find(" #").map_or(value, |at| &value[..at]).trim();
            for name in referenced(cut) {
                if let Some(v) = known(&name) {
                    scope.values.insert(name, v);
                }
            }
            substitute(cut, &scope).map_err(|e| format!("line {}: {e}", n + 1))?
        };
        out.push((key.to_string(), parsed));
    }
    Ok(out)
}

fn closing_quote(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// The names `text` refers to with `$NAME` or `${NAME...}`.
fn referenced(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let mut j = i + 1;
            if bytes.get(j) == Some(&b'{') {
                j += 1;
            }
            let start = j;
            while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                j += 1;
            }
            if j > start {
                names.push(text[start..j].to_string());
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        Vars {
            values: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn every_form_docker_compose_substitutes() {
        let v = vars(&[("A", "x"), ("EMPTY", ""), ("PORT", "8080")]);
        let s = |t: &str| substitute(t, &v);
        assert_eq!(s("$A-${A}").unwrap(), "x-x");
        assert_eq!(s("${PORT}:80").unwrap(), "8080:80");
        assert_eq!(
            s("${MISSING:-d}|${EMPTY:-d}|${EMPTY-d}|${MISSING-d}").unwrap(),
            "d|d||d"
        );
        assert_eq!(
            s("${A:+yes}|${EMPTY:+yes}|${EMPTY+yes}|${MISSING+yes}").unwrap(),
            "yes||yes|"
        );
        assert_eq!(s("${MISSING:-${A}/sub}").unwrap(), "x/sub");
        assert_eq!(s("$$HOME and $${A}").unwrap(), "$HOME and ${A}");
        assert_eq!(s("${MISSING}").unwrap(), "");
        let e = s("${MISSING:?set it please}").unwrap_err();
        assert_eq!(
            e,
            "required variable MISSING is missing a value: set it please"
        );
        let e = s("${EMPTY?must exist}");
        assert_eq!(e.unwrap(), "");
        assert!(s("${A").unwrap_err().contains("missing"));
        assert!(s("cost: $5").unwrap_err().contains("$$"));
    }

    #[test]
    fn env_files_as_docker_compose_reads_them() {
        let env = "# comment\nexport A=1\nB = two words # trailing\nC='lit $A'\nD=\"line\\nnext $A\"\nE=${A}-${MISSING:-d}\nF=\n";
        let parsed = parse_env_file(env, &Vars::default()).unwrap();
        let get = |k: &str| parsed.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("A"), Some("1"));
        assert_eq!(get("B"), Some("two words"));
        assert_eq!(get("C"), Some("lit $A"));
        assert_eq!(get("D"), Some("line\nnext 1"));
        assert_eq!(get("E"), Some("1-d"));
        assert_eq!(get("F"), Some(""));
    }
}
