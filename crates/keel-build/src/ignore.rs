//! `.dockerignore` and `COPY --exclude` patterns, after moby/patternmatcher
//! (and `ignorefile.ReadAll` for the file format), plus Go's
//! `filepath.Match` for `COPY` source globs.
//!
//! Paths are slash-separated and relative to the context root. A pattern
//! that matches a directory excludes everything inside it; a later `!`
//! pattern can re-include.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IgnoreError {
    #[error("illegal exclusion pattern: \"!\"")]
    LoneExclamation,
    #[error("syntax error in pattern {pattern:?}")]
    BadPattern { pattern: String },
}

/// An ordered list of patterns; the last one that matches decides.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<Pattern>,
    has_exclusions: bool,
}

#[derive(Debug, Clone)]
struct Pattern {
    /// `!pattern`: re-includes what earlier patterns excluded.
    exclusion: bool,
    /// Cleaned, without the `!`.
    text: String,
    kind: MatchKind,
}

#[derive(Debug, Clone)]
enum MatchKind {
    Exact,
    /// `dir/**`: everything under the text before `**`.
    Prefix,
    /// `**/name`: anything ending so.
    Suffix,
    Tokens(Vec<Token>),
}

/// The pieces patternmatcher turns into a regular expression.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(char),
    /// `*`: any run without `/`.
    Star,
    /// `?`: one character but `/`.
    One,
    /// `**` inside: nothing, or anything ending in `/`.
    AnyDirs,
    /// `**` at the end: anything (but a newline, like `.*`).
    AnyTail,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Matcher {
    /// Reads a `.dockerignore`: `#` at the start of a line is a comment,
    /// blank lines are skipped, each line is trimmed and cleaned, and a
    /// leading `/` is dropped (the root is the context).
    pub fn parse(text: &str) -> Result<Matcher, IgnoreError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.starts_with('#') {
                continue;
            }
            let mut pattern = line.trim();
            if pattern.is_empty() {
                continue;
            }
            let invert = pattern.starts_with('!');
            if invert {
                pattern = pattern[1..].trim();
            }
            let mut cleaned = String::new();
            if !pattern.is_empty() {
                cleaned = clean(pattern);
                if cleaned.len() > 1 && cleaned.starts_with('/') {
                    cleaned.remove(0);
                }
            }
            patterns.push(if invert {
                format!("!{cleaned}")
            } else {
                cleaned
            });
        }
        Matcher::new(&patterns)
    }

    /// Patterns given one by one (`COPY --exclude`): trimmed and cleaned,
    /// empty ones skipped, `!` for exceptions.
    pub fn new(patterns: &[String]) -> Result<Matcher, IgnoreError> {
        let mut matcher = Matcher::default();
        for pattern in patterns {
            let pattern = pattern.trim();
            if pattern.is_empty() {
                continue;
            }
            let cleaned = clean(pattern);
            let (exclusion, text) = match cleaned.strip_prefix('!') {
                Some("") => return Err(IgnoreError::LoneExclamation),
                Some(rest) => (true, rest.to_string()),
                None => (false, cleaned.clone()),
            };
            // patternmatcher checks the syntax with filepath.Match.
            path_match(&text, ".").map_err(|_| IgnoreError::BadPattern {
                pattern: pattern.to_string(),
            })?;
            let kind = compile(&text);
            matcher.has_exclusions |= exclusion;
            matcher.patterns.push(Pattern {
                exclusion,
                text,
                kind,
            });
        }
        Ok(matcher)
    }

    /// No patterns at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `path` is excluded: by a pattern matching it or one of its
    /// parent directories, and not re-included by a later `!` pattern.
    pub fn matches(&self, path: &str) -> bool {
        let path = clean(path);
        let path = path.trim_start_matches('/');
        if path.is_empty() || path == "." {
            return false;
        }
        let parents: Vec<&str> = match path.rfind('/') {
            Some(at) => path[..at].split('/').collect(),
            None => Vec::new(),
        };
        let mut matched = false;
        for pattern in &self.patterns {
            // Only an inclusion can turn it on, only an exception off.
            if pattern.exclusion != matched {
                continue;
            }
            let mut hit = pattern.matches(path);
            if !hit {
                let mut prefix = String::new();
                for (i, dir) in parents.iter().enumerate() {
                    if i > 0 {
                        prefix.push('/');
                    }
                    prefix.push_str(dir);
                    if pattern.matches(&prefix) {
                        hit = true;
                        break;
                    }
                }
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        matched
    }

    /// For an excluded directory: false when a walk may skip it whole,
    /// because no exception could re-include anything under it. Follows
    /// BuildKit's fsutil: any exception with wildcards (other than a
    /// trailing `/*` or `/**`) disables skipping.
    pub fn dir_may_contain_included(&self, dir: &str) -> bool {
        if !self.has_exclusions {
            return false;
        }
        let exceptions: Vec<&str> = self
            .patterns
            .iter()
            .filter(|p| p.exclusion)
            .map(|p| without_trailing_glob(&p.text))
            .collect();
        if exceptions
            .iter()
            .any(|p| p.contains(['*', '[', ']', '?', '^', '\\']))
        {
            return true;
        }
        let dir = clean(dir);
        let dir_slash = format!("{}/", dir.trim_start_matches('/'));
        exceptions
            .iter()
            .any(|p| format!("{p}/").starts_with(&dir_slash))
    }
}

fn without_trailing_glob(pattern: &str) -> &str {
    let pattern = pattern.strip_suffix("/**").unwrap_or(pattern);
    pattern.strip_suffix("/*").unwrap_or(pattern)
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            MatchKind::Exact => path == self.text,
            MatchKind::Prefix => {
                path.starts_with(self.text.strip_suffix("**").unwrap_or(&self.text))
            }
            MatchKind::Suffix => {
                let suffix = self.text.strip_prefix("**").unwrap_or(&self.text);
                path.ends_with(suffix) || suffix.strip_prefix('/').is_some_and(|bare| path == bare)
            }
            MatchKind::Tokens(tokens) => match_tokens(tokens, path),
        }
    }
}

/// patternmatcher's `compile`, producing tokens instead of a regexp.
fn compile(pattern: &str) -> MatchKind {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut kind = Kind::Exact;
    let mut i = 0;
    let mut first = true;
    #[derive(PartialEq)]
    enum Kind {
        Exact,
        Prefix,
        Suffix,
        Regexp,
    }
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        match ch {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= chars.len() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        tokens.push(Token::AnyTail);
                        kind = Kind::Regexp;
                    }
                } else {
                    tokens.push(Token::AnyDirs);
                    kind = Kind::Regexp;
                }
                if first {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                tokens.push(Token::Star);
                kind = Kind::Regexp;
            }
            '?' => {
                tokens.push(Token::One);
                kind = Kind::Regexp;
            }
            '\\' => match chars.get(i) {
                Some(&next) => {
                    i += 1;
                    tokens.push(Token::Literal(next));
                    kind = Kind::Regexp;
                }
                None => tokens.push(Token::Literal('\\')),
            },
            '[' => match parse_class(&chars[i..]) {
                Some((token, used)) => {
                    i += used;
                    tokens.push(token);
                    kind = Kind::Regexp;
                }
                None => {
                    tokens.push(Token::Literal('['));
                    kind = Kind::Regexp;
                }
            },
            ']' => {
                tokens.push(Token::Literal(']'));
                kind = Kind::Regexp;
            }
            other => tokens.push(Token::Literal(other)),
        }
        first = false;
    }
    match kind {
        Kind::Exact => MatchKind::Exact,
        Kind::Prefix => MatchKind::Prefix,
        Kind::Suffix => MatchKind::Suffix,
        Kind::Regexp => MatchKind::Tokens(tokens),
    }
}

/// A `[...]` class after the `[`: the token and how many characters it
/// took, `]` included.
fn parse_class(chars: &[char]) -> Option<(Token, usize)> {
    let mut i = 0;
    let negated = chars.first() == Some(&'^');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    loop {
        let ch = *chars.get(i)?;
        if ch == ']' && !ranges.is_empty() {
            return Some((Token::Class { negated, ranges }, i + 1));
        }
        let (lo, used) = class_char(&chars[i..])?;
        i += used;
        let mut hi = lo;
        if chars.get(i) == Some(&'-') {
            let (h, used) = class_char(&chars[i + 1..])?;
            hi = h;
            i += 1 + used;
        }
        ranges.push((lo, hi));
    }
}

fn class_char(chars: &[char]) -> Option<(char, usize)> {
    match chars {
        ['\\', c, ..] => Some((*c, 2)),
        [c, ..] => Some((*c, 1)),
        [] => None,
    }
}

/// Whole-path match of the tokens, by a table over (token, position) so
/// that it stays linear per token.
fn match_tokens(tokens: &[Token], path: &str) -> bool {
    let chars: Vec<char> = path.chars().collect();
    let n = chars.len();
    // next[i]: the rest of the tokens match chars[i..] exactly.
    let mut next: Vec<bool> = (0..=n).map(|i| i == n).collect();
    for token in tokens.iter().rev() {
        let mut row = vec![false; n + 1];
        for i in (0..=n).rev() {
            let here = chars.get(i).copied();
            row[i] = match token {
                Token::Literal(c) => here == Some(*c) && next[i + 1],
                Token::One => here.is_some_and(|c| c != '/') && next[i + 1],
                Token::Star => next[i] || (here.is_some_and(|c| c != '/') && row[i + 1]),
                Token::AnyTail => next[i] || (here.is_some_and(|c| c != '\n') && row[i + 1]),
                Token::AnyDirs => {
                    // Empty, or `.*` then a `/`.
                    next[i] || dirs_then(&chars, i, &next)
                }
                Token::Class { negated, ranges } => match here {
                    Some(c) => {
                        let inside = ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi);
                        inside != *negated && next[i + 1]
                    }
                    None => false,
                },
            };
        }
        next = row;
    }
    next[0]
}

/// `(.*/)` from `start`: some `/` at or after `start`, with no newline
/// before it, after which the rest matches.
fn dirs_then(chars: &[char], start: usize, next: &[bool]) -> bool {
    for (offset, c) in chars[start..].iter().enumerate() {
        match c {
            '\n' => return false,
            '/' if next[start + offset + 1] => return true,
            _ => {}
        }
    }
    false
}

/// Go's `filepath.Match` on Unix: `*` (not `/`), `?`, `[...]` with `^`
/// and ranges, `\` escapes. An error means the pattern is malformed.
pub fn path_match(pattern: &str, name: &str) -> Result<bool, IgnoreError> {
    let bad = || IgnoreError::BadPattern {
        pattern: pattern.to_string(),
    };
    let mut pattern_rest = pattern;
    let mut name = name;
    'chunks: while !pattern_rest.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern_rest);
        pattern_rest = rest;
        if star && chunk.is_empty() {
            // A trailing star matches the rest unless it has a `/`.
            return Ok(!name.contains('/'));
        }
        let (remaining, ok) = match_chunk(chunk, name).map_err(|()| bad())?;
        if ok && (remaining.is_empty() || !pattern_rest.is_empty()) {
            name = remaining;
            continue;
        }
        if star {
            for (i, c) in name.char_indices() {
                if c == '/' {
                    break;
                }
                let after = &name[i + c.len_utf8()..];
                let (remaining, ok) = match_chunk(chunk, after).map_err(|()| bad())?;
                if ok {
                    // The last chunk must use up the name.
                    if pattern_rest.is_empty() && !remaining.is_empty() {
                        continue;
                    }
                    name = remaining;
                    continue 'chunks;
                }
            }
        }
        // No match; still report a malformed rest of the pattern.
        while !pattern_rest.is_empty() {
            let (_, chunk, rest) = scan_chunk(pattern_rest);
            pattern_rest = rest;
            match_chunk(chunk, "").map_err(|()| bad())?;
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

/// The next run of non-star pattern, after any stars.
fn scan_chunk(pattern: &str) -> (bool, &str, &str) {
    let trimmed = pattern.trim_start_matches('*');
    let star = trimmed.len() != pattern.len();
    let bytes = trimmed.as_bytes();
    let mut in_range = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if i + 1 < bytes.len() => {
                i += 1;
            }
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    // `i` stops on an ASCII byte or the end, so these are char boundaries;
    // an escaped multi-byte character is stepped over whole.
    let mut end = i.min(trimmed.len());
    while !trimmed.is_char_boundary(end) {
        end += 1;
    }
    (star, &trimmed[..end], &trimmed[end..])
}

/// Matches `chunk` (no stars) against the start of `s`: the rest of `s`
/// and whether it matched. Keeps checking the chunk's syntax after a
/// mismatch, as Go does.
fn match_chunk<'a>(chunk: &str, s: &'a str) -> Result<(&'a str, bool), ()> {
    let mut chunk = chunk;
    let mut s = s;
    let mut failed = false;
    while let Some(first) = chunk.chars().next() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match first {
            '[' => {
                let mut r = '\0';
                if !failed && let Some(c) = s.chars().next() {
                    r = c;
                    s = &s[c.len_utf8()..];
                }
                chunk = &chunk[1..];
                let mut negated = false;
                if let Some(rest) = chunk.strip_prefix('^') {
                    negated = true;
                    chunk = rest;
                }
                let mut matched = false;
                let mut count = 0;
                loop {
                    if count > 0
                        && let Some(rest) = chunk.strip_prefix(']')
                    {
                        chunk = rest;
                        break;
                    }
                    let (lo, rest) = get_escaped(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if let Some(rest) = chunk.strip_prefix('-') {
                        let (h, rest) = get_escaped(rest)?;
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    count += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            '?' => {
                if !failed && let Some(c) = s.chars().next() {
                    if c == '/' {
                        failed = true;
                    }
                    s = &s[c.len_utf8()..];
                }
                chunk = &chunk[1..];
            }
            _ => {
                let literal = if first == '\\' {
                    chunk = &chunk[1..];
                    chunk.chars().next().ok_or(())?
                } else {
                    first
                };
                if !failed {
                    match s.chars().next() {
                        Some(c) if c == literal => s = &s[c.len_utf8()..],
                        Some(c) => {
                            failed = true;
                            s = &s[c.len_utf8()..];
                        }
                        None => failed = true,
                    }
                }
                chunk = &chunk[literal.len_utf8()..];
            }
        }
    }
    if failed {
        Ok(("", false))
    } else {
        Ok((s, true))
    }
}

/// One possibly escaped character of a class; a class cannot end there.
fn get_escaped(chunk: &str) -> Result<(char, &str), ()> {
    let mut chunk = chunk;
    match chunk.chars().next() {
        None | Some('-' | ']') => return Err(()),
        Some('\\') => chunk = &chunk[1..],
        Some(_) => {}
    }
    let c = chunk.chars().next().ok_or(())?;
    let rest = &chunk[c.len_utf8()..];
    if rest.is_empty() {
        return Err(());
    }
    Ok((c, rest))
}

/// Go's `path.Clean`: no `.`, no `x/..`, no doubled or trailing `/`.
pub(crate) fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|last| *last != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(patterns: &[&str]) -> Matcher {
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        Matcher::new(&patterns).unwrap()
    }

    /// patternmatcher's `TestMatches` table (single patterns), checked the
    /// way `MatchesOrParentMatches` does.
    #[test]
    fn patternmatcher_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("**", "file", true),
            ("**", "file/", true),
            ("**/", "file", true),
            ("**/", "file/", true),
            ("**", "/", true),
            ("**/", "/", true),
            ("**", "dir/file", true),
            ("**/", "dir/file", true),
            ("**", "dir/file/", true),
            ("**/", "dir/file/", true),
            ("**/**", "dir/file", true),
            ("**/**", "dir/file/", true),
            ("dir/**", "dir/file", true),
            ("dir/**", "dir/file/", true),
            ("dir/**", "dir/dir2/file", true),
            ("dir/**", "dir/dir2/file/", true),
            ("**/dir", "dir", true),
            ("**/dir", "dir/file", true),
            ("**/dir2/*", "dir/dir2/file", true),
            ("**/dir2/*", "dir/dir2/file/", true),
            ("**/dir2/**", "dir/dir2/dir3/file", true),
            ("**/dir2/**", "dir/dir2/dir3/file/", true),
            ("**file", "file", true),
            ("**file", "dir/file", true),
            ("**/file", "dir/file", true),
            ("**file", "dir/dir/file", true),
            ("**/file", "dir/dir/file", true),
            ("**/file*", "dir/dir/file", true),
            ("**/file*", "dir/dir/file.txt", true),
            ("**/file*txt", "dir/dir/file.txt", true),
            ("**/file*.txt", "dir/dir/file.txt", true),
            ("**/file*.txt*", "dir/dir/file.txt", true),
            ("**/**/*.txt", "dir/dir/file.txt", true),
            ("**/**/*.txt2", "dir/dir/file.txt", false),
            ("**/*.txt", "file.txt", true),
            ("**/**/*.txt", "file.txt", true),
            ("a**/*.txt", "a/file.txt", true),
            ("a**/*.txt", "a/dir/file.txt", true),
            ("a**/*.txt", "a/dir/dir/file.txt", true),
            ("a/*.txt", "a/dir/file.txt", false),
            ("a/*.txt", "a/file.txt", true),
            ("a/*.txt**", "a/file.txt", true),
            ("a[b-d]e", "ae", false),
            ("a[b-d]e", "ace", true),
            ("a[b-d]e", "aae", false),
            ("a[^b-d]e", "aze", true),
            (".*", ".foo", true),
            (".*", "foo", false),
            ("abc.def", "abcdef", false),
            ("abc.def", "abc.def", true),
            ("abc.def", "abcZdef", false),
            ("abc?def", "abcZdef", true),
            ("abc?def", "abcdef", false),
            ("**/foo/bar", "foo/bar", true),
            ("**/foo/bar", "dir/foo/bar", true),
            ("**/foo/bar", "dir/dir2/foo/bar", true),
            ("abc/**", "abc", false),
            ("abc/**", "abc/def", true),
            ("abc/**", "abc/def/ghi", true),
            ("**/.foo", ".foo", true),
            ("**/.foo", "bar.foo", false),
            ("a(b)c/def", "a(b)c/def", true),
            ("a(b)c/def", "a(b)c/xyz", false),
            ("a.|)$(}+{bc", "a.|)$(}+{bc", true),
            (
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                true,
            ),
            (
                "dist/*.whl",
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                true,
            ),
            ("a\\\\", "a\\", true),
            ("a\\*b", "a*b", true),
        ];
        for (pattern, path, expected) in cases {
            // patternmatcher matches the raw text; clean() would drop the
            // trailing slash the table uses, so test the pattern directly.
            let m = matcher(&[pattern]);
            let got = m.matches(path) || m.patterns[0].matches(path);
            assert_eq!(got, *expected, "pattern {pattern:?} path {path:?}");
        }
    }

    #[test]
    fn exceptions_and_parents() {
        let m = matcher(&["**", "!util/docker/web"]);
        assert!(!m.matches("util/docker/web/foo"));
        let m = matcher(&["**", "!util/docker/web", "util/docker/web/foo"]);
        assert!(m.matches("util/docker/web/foo"));
        let m = matcher(&["**", "!dist/*.whl"]);
        assert!(!m.matches("dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl"));
        let m = matcher(&["docs", "!docs/README.md"]);
        assert!(!m.matches("docs/README.md"));
        assert!(m.matches("docs/other.md"));
        let m = matcher(&["docs/", "!docs/README.md"]);
        assert!(!m.matches("docs/README.md"));
        let m = matcher(&["*.go", "!fileutils.go"]);
        assert!(!m.matches("fileutils.go"));
        assert!(m.matches("main.go"));
        let m = matcher(&["!fileutils.go", "*.go"]);
        assert!(m.matches("fileutils.go"));
        assert!(!matcher(&["*.go"]).matches("."));
        assert!(matcher(&["a*"]).matches("ab/c"));
        assert!(!matcher(&["a*/b"]).matches("a/c/b"));
    }

    #[test]
    fn dockerignore_file_format() {
        let m = Matcher::parse(
            "\u{feff}# comment\n\n  node_modules  \n/build\n./tmp/\n*.log\n!keep.log\n  # not a comment\n",
        )
        .unwrap();
        let texts: Vec<(bool, &str)> = m
            .patterns
            .iter()
            .map(|p| (p.exclusion, p.text.as_str()))
            .collect();
        assert_eq!(
            texts,
            [
                (false, "node_modules"),
                (false, "build"),
                (false, "tmp"),
                (false, "*.log"),
                (true, "keep.log"),
                (false, "# not a comment"),
            ]
        );
        assert!(m.matches("node_modules/x/y.js"));
        assert!(m.matches("build"));
        assert!(m.matches("tmp/a"));
        assert!(m.matches("debug.log"));
        assert!(!m.matches("keep.log"));
        assert!(!m.matches("src/main.rs"));
        assert_eq!(
            Matcher::parse("a\n!\n").unwrap_err(),
            IgnoreError::LoneExclamation
        );
        assert_eq!(
            Matcher::parse("! /\n").unwrap_err(),
            IgnoreError::LoneExclamation
        );
        assert!(matches!(
            Matcher::parse("[\n"),
            Err(IgnoreError::BadPattern { .. })
        ));
        let crlf = Matcher::parse("a\r\nb\r\n").unwrap();
        assert!(crlf.matches("a") && crlf.matches("b"));
    }

    #[test]
    fn skipping_excluded_directories() {
        let m = matcher(&["vendor", "node_modules"]);
        assert!(!m.dir_may_contain_included("vendor"));
        let m = matcher(&["vendor", "!vendor/keep/**"]);
        assert!(m.dir_may_contain_included("vendor"));
        assert!(m.dir_may_contain_included("vendor/keep"));
        assert!(!m.dir_may_contain_included("vendor/other"));
        assert!(!m.matches("vendor/keep/a.go"));
        assert!(m.matches("vendor/other/a.go"));
        let m = matcher(&["vendor", "!**/*.keep"]);
        assert!(m.dir_may_contain_included("vendor"));
        assert!(!m.matches("vendor/x/y.keep"));
        let m = matcher(&["*", "!README.md"]);
        assert!(!m.dir_may_contain_included("src"));
        assert!(!m.matches("README.md"));
    }

    /// Go's filepath.Match tests.
    #[test]
    fn go_filepath_match() {
        let cases: &[(&str, &str, Option<bool>)] = &[
            ("abc", "abc", Some(true)),
            ("*", "abc", Some(true)),
            ("*c", "abc", Some(true)),
            ("a*", "a", Some(true)),
            ("a*", "abc", Some(true)),
            ("a*", "ab/c", Some(false)),
            ("a*/b", "abc/b", Some(true)),
            ("a*/b", "a/c/b", Some(false)),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", Some(true)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Some(true)),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Some(false)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", Some(false)),
            ("a*b?c*x", "abxbbxdbxebxczzx", Some(true)),
            ("a*b?c*x", "abxbbxdbxebxczzy", Some(false)),
            ("ab[c]", "abc", Some(true)),
            ("ab[b-d]", "abc", Some(true)),
            ("ab[e-g]", "abc", Some(false)),
            ("ab[^c]", "abc", Some(false)),
            ("ab[^b-d]", "abc", Some(false)),
            ("ab[^e-g]", "abc", Some(true)),
            ("a\\*b", "a*b", Some(true)),
            ("a\\*b", "ab", Some(false)),
            ("a?b", "a☺b", Some(true)),
            ("a[^a]b", "a☺b", Some(true)),
            ("a???b", "a☺b", Some(false)),
            ("a[^a][^a][^a]b", "a☺b", Some(false)),
            ("[a-ζ]*", "α", Some(true)),
            ("*[a-ζ]", "A", Some(false)),
            ("a?b", "a/b", Some(false)),
            ("a*b", "a/b", Some(false)),
            ("[\\]a]", "]", Some(true)),
            ("[\\-]", "-", Some(true)),
            ("[x\\-]", "x", Some(true)),
            ("[x\\-]", "-", Some(true)),
            ("[x\\-]", "z", Some(false)),
            ("[\\-x]", "x", Some(true)),
            ("[\\-x]", "-", Some(true)),
            ("[\\-x]", "a", Some(false)),
            ("[]a]", "]", None),
            ("[-]", "-", None),
            ("[x-]", "x", None),
            ("[x-]", "-", None),
            ("[x-]", "z", None),
            ("[-x]", "x", None),
            ("[-x]", "-", None),
            ("[-x]", "a", None),
            ("\\", "a", None),
            ("[a-b-c]", "a", None),
            ("[", "a", None),
            ("[^", "a", None),
            ("[^bc", "a", None),
            ("a[", "a", None),
            ("a[", "ab", None),
            ("a[", "x", None),
            ("a/b[", "x", None),
            ("*x", "xxx", Some(true)),
        ];
        for (pattern, name, expected) in cases {
            let got = path_match(pattern, name).ok();
            assert_eq!(got, *expected, "Match({pattern:?}, {name:?})");
        }
    }

    #[test]
    fn go_path_clean() {
        for (input, want) in [
            ("", "."),
            ("abc", "abc"),
            ("abc/", "abc"),
            ("a//b", "a/b"),
            ("./a", "a"),
            ("a/./b/../c", "a/c"),
            ("../a", "../a"),
            ("/../a", "/a"),
            ("/", "/"),
            ("a/..", "."),
            ("!./x/", "!./x"),
        ] {
            assert_eq!(clean(input), want, "clean({input:?})");
        }
    }
}
