//! Image filters (`keel images --filter`, `image prune`, the API's
//! `filters=`), as docker reads them:
//! `key=value` pairs; several values of one key match if any does, several
//! keys must all match.
//!
//! - `dangling=true|false`: untagged images, or tagged ones
//! - `reference=PATTERN`: a tag whose familiar form (`busybox:latest`,
//!   `localhost:5000/app:1`) or name (`busybox`) matches the glob (`*` and
//!   `?` stop at `/`, `[a-z]` classes, `\` escapes, as Go's `path.Match`)
//! - `label=KEY` or `label=KEY=VALUE`, from the image config (`label!=` for
//!   prune's "without")
//! - `before=IMAGE`, `since=IMAGE`: created before or after that image
//! - `until=TIME`: created before TIME (RFC 3339, a Unix time, or a
//!   duration such as `24h` or `1h30m` back from now)

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use keel_image::metadata::ImageRecord;
use keel_image::reference::Reference;
use keel_image::store::ImageStore;

/// The keys each command takes.
pub const IMAGES_KEYS: &[&str] = &[
    "dangling",
    "reference",
    "label",
    "label!",
    "before",
    "since",
    "until",
];
pub const PRUNE_KEYS: &[&str] = &["until", "label", "label!"];

/// Parsed `--filter` flags.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filters {
    values: BTreeMap<String, Vec<String>>,
}

impl Filters {
    /// Parses `key=value` flags, refusing keys not in `allowed` with
    /// docker's words.
    pub fn parse(flags: &[String], allowed: &[&str]) -> Result<Filters> {
        let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for flag in flags {
            let Some((key, value)) = flag.split_once('=') else {
                return Err(Error::invalid(format!(
                    "bad format of filter (expected name=value): {flag:?}"
                )));
            };
            let key = key.trim().to_ascii_lowercase();
            if !allowed.contains(&key.as_str()) {
                return Err(Error::invalid(format!("invalid filter '{key}'")));
            }
            values.entry(key).or_default().push(value.to_string());
        }
        let filters = Filters { values };
        for value in filters.get("dangling") {
            if !matches!(
                value.to_ascii_lowercase().as_str(),
                "true" | "false" | "1" | "0"
            ) {
                return Err(Error::invalid(format!("invalid filter 'dangling={value}'")));
            }
        }
        Ok(filters)
    }

    pub fn get(&self, key: &str) -> &[String] {
        self.values.get(key).map_or(&[], Vec::as_slice)
    }

    /// `dangling=`: Some(true) for untagged only, Some(false) for tagged.
    pub fn dangling(&self) -> Option<bool> {
        let values = self.get("dangling");
        if values.is_empty() {
            return None;
        }
        let wants_true = values.iter().any(|v| matches!(v.as_str(), "true" | "1"));
        let wants_false = values.iter().any(|v| matches!(v.as_str(), "false" | "0"));
        match (wants_true, wants_false) {
            (true, false) => Some(true),
            (false, true) => Some(false),
            _ => None,
        }
    }

    /// Whether `tag` (a full reference) passes the `reference=` patterns.
    pub fn reference_matches(&self, tag: &str) -> bool {
        let patterns = self.get("reference");
        if patterns.is_empty() {
            return true;
        }
        let Ok(reference) = Reference::parse(tag) else {
            return false;
        };
        let name = reference.familiar_name();
        let full = match reference.tag() {
            Some(t) => format!("{name}:{t}"),
            None => name.clone(),
        };
        // Docker matches the familiar forms; the full ones
        // (`docker.io/library/busybox`) are matched too.
        let forms = [full, name, reference.full(), reference.name()];
        patterns
            .iter()
            .any(|p| forms.iter().any(|form| glob_match(p, form)))
    }

    /// `label=` (all must be there) and `label!=` (none may be).
    pub fn labels_match(&self, labels: &BTreeMap<String, String>) -> bool {
        let has = |wanted: &String| match wanted.split_once('=') {
            Some((key, value)) => labels.get(key).is_some_and(|v| v == value),
            None => labels.contains_key(wanted.as_str()),
        };
        self.get("label").iter().all(has) && !self.get("label!").iter().any(has)
    }
}

/// The images `filters` keep, each with the tags to show (all of them,
/// or those `reference=` matches; none for an untagged image).
pub fn select(store: &ImageStore, filters: &Filters) -> Result<Vec<(ImageRecord, Vec<String>)>> {
    let created_of = |name: &str| -> Result<i64> {
        let record = store.resolve(name)?;
        crate::views::unix_seconds(&record.created).ok_or_else(|| {
            Error::invalid(format!("image {name} has no creation time to compare with"))
        })
    };
    let before = filters
        .get("before")
        .iter()
        .map(|n| created_of(n))
        .collect::<Result<Vec<_>>>()?;
    let since = filters
        .get("since")
        .iter()
        .map(|n| created_of(n))
        .collect::<Result<Vec<_>>>()?;
    let now = jiff::Timestamp::now().as_second();
    let until = filters
        .get("until")
        .iter()
        .map(|v| parse_until(v, now))
        .collect::<Result<Vec<_>>>()?;
    let by_reference = !filters.get("reference").is_empty();
    let by_label = !filters.get("label").is_empty() || !filters.get("label!").is_empty();

    let mut selected = Vec::new();
    for (record, tags) in store.metadata.images().map_err(Error::from)? {
        match filters.dangling() {
            Some(true) if !tags.is_empty() => continue,
            Some(false) if tags.is_empty() => continue,
            _ => {}
        }
        let created = crate::views::unix_seconds(&record.created);
        // Images without a time pass no time filter.
        let time_ok = |bounds: &[i64], keep: fn(i64, i64) -> bool| {
            bounds.is_empty() || created.is_some_and(|c| bounds.iter().all(|&b| keep(c, b)))
        };
        if !time_ok(&before, |c, b| c < b)
            || !time_ok(&since, |c, b| c > b)
            || !time_ok(&until, |c, b| c < b)
        {
            continue;
        }
        if by_label {
            let labels = store
                .config(&record)
                .ok()
                .and_then(|c| c.config)
                .and_then(|c| c.labels)
                .unwrap_or_default();
            if !filters.labels_match(&labels) {
                continue;
            }
        }
        let shown: Vec<String> = tags
            .iter()
            .filter(|t| filters.reference_matches(t))
            .cloned()
            .collect();
        if by_reference && shown.is_empty() {
            continue;
        }
        selected.push((record, shown));
    }
    Ok(selected)
}

/// Go's `path.Match`: `*` any run of non-`/`, `?` one non-`/`, `[...]`
/// a class (`^` or `!` negates, ranges), `\` escapes. A malformed pattern
/// matches nothing.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    glob(&pattern, &name).unwrap_or(false)
}

fn glob(pattern: &[char], name: &[char]) -> Option<bool> {
    let Some((&first, rest)) = pattern.split_first() else {
        return Some(name.is_empty());
    };
    match first {
        '*' => {
            // As many non-'/' characters as the rest needs.
            for skip in 0..=name.len() {
                if glob(rest, &name[skip..])? {
                    return Some(true);
                }
                if skip < name.len() && name[skip] == '/' {
                    break;
                }
            }
            Some(false)
        }
        '?' => match name.split_first() {
            Some((&c, tail)) if c != '/' => glob(rest, tail),
            _ => Some(false),
        },
        '[' => {
            let (matched, after) = class(rest, name.first().copied())?;
            if matched && name.first().is_some_and(|&c| c != '/') {
                glob(after, &name[1..])
            } else {
                Some(false)
            }
        }
        '\\' => {
            let (&escaped, rest) = rest.split_first()?;
            match name.split_first() {
                Some((&c, tail)) if c == escaped => glob(rest, tail),
                _ => Some(false),
            }
        }
        literal => match name.split_first() {
            Some((&c, tail)) if c == literal => glob(rest, tail),
            _ => Some(false),
        },
    }
}

/// A `[...]` class after its `[`: whether `c` is in it, and the pattern
/// after its `]`; None when it never closes.
fn class(pattern: &[char], c: Option<char>) -> Option<(bool, &[char])> {
    let mut i = 0;
    let negated = matches!(pattern.first(), Some('^' | '!'));
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let &low = pattern.get(i)?;
        if low == ']' && !first {
            i += 1;
            break;
        }
        first = false;
        let low = if low == '\\' {
            i += 1;
            *pattern.get(i)?
        } else {
            low
        };
        i += 1;
        let mut high = low;
        if pattern.get(i) == Some(&'-') && pattern.get(i + 1).is_some_and(|&h| h != ']') {
            high = *pattern.get(i + 1)?;
            if high == '\\' {
                high = *pattern.get(i + 2)?;
                i += 1;
            }
            i += 2;
        }
        if let Some(c) = c
            && low <= c
            && c <= high
        {
            matched = true;
        }
    }
    Some((matched != negated, &pattern[i..]))
}

/// `until=`: seconds since the epoch, from RFC 3339, a Unix time (with
/// fractions), or a Go duration back from `now`.
pub fn parse_until(value: &str, now: i64) -> Result<i64> {
    if let Ok(t) = value.parse::<jiff::Timestamp>() {
        return Ok(t.as_second());
    }
    if let Ok(seconds) = value.parse::<f64>() {
        return Ok(seconds as i64);
    }
    if let Some(seconds) = parse_go_duration(value) {
        return Ok(now - seconds);
    }
    // A date alone, or a date and time without a zone: UTC, as docker reads them.
    if let Ok(date) = value.parse::<jiff::civil::DateTime>()
        && let Ok(zoned) = date.to_zoned(jiff::tz::TimeZone::UTC)
    {
        return Ok(zoned.timestamp().as_second());
    }
    if let Ok(date) = value.parse::<jiff::civil::Date>()
        && let Ok(zoned) = date.to_zoned(jiff::tz::TimeZone::UTC)
    {
        return Ok(zoned.timestamp().as_second());
    }
    Err(Error::invalid(format!(
        "invalid filter 'until={value}': not a timestamp or a duration (e.g. 24h)"
    )))
}

/// `1h30m`, `90s`, `2.5h`: whole seconds.
fn parse_go_duration(text: &str) -> Option<i64> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit_end..];
    }
    Some(total as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn globs_like_go_path_match() {
        for (pattern, name, want) in [
            ("busybox", "busybox", true),
            ("busy*", "busybox", true),
            ("*", "busybox", true),
            ("*", "library/busybox", false),
            ("*/*", "localhost:5000/app", true),
            ("b?sybox", "busybox", true),
            ("b?sybox", "b/sybox", false),
            ("busybox:*", "busybox:latest", true),
            ("busybox:1.3[0-9]", "busybox:1.36", true),
            ("busybox:1.3[^0-5]", "busybox:1.36", true),
            ("busybox:1.3[!0-6]", "busybox:1.36", false),
            ("a\\*b", "a*b", true),
            ("a\\*b", "axb", false),
            ("[", "a", false),
            ("a[", "a", false),
            ("", "", true),
            ("*x", "abc", false),
        ] {
            assert_eq!(glob_match(pattern, name), want, "{pattern} vs {name}");
        }
    }

    #[test]
    fn parses_and_refuses_like_docker() {
        let filters = Filters::parse(
            &flags(&["dangling=true", "reference=busy*", "reference=alp*"]),
            IMAGES_KEYS,
        )
        .unwrap();
        assert_eq!(filters.dangling(), Some(true));
        assert_eq!(filters.get("reference").len(), 2);
        let err = Filters::parse(&flags(&["colour=red"]), IMAGES_KEYS).unwrap_err();
        assert_eq!(err.to_string(), "invalid filter 'colour'");
        let err = Filters::parse(&flags(&["dangling"]), IMAGES_KEYS).unwrap_err();
        assert!(err.to_string().contains("bad format of filter"), "{err}");
        let err = Filters::parse(&flags(&["dangling=maybe"]), IMAGES_KEYS).unwrap_err();
        assert_eq!(err.to_string(), "invalid filter 'dangling=maybe'");
        assert!(Filters::parse(&flags(&["reference=x"]), PRUNE_KEYS).is_err());
    }

    #[test]
    fn matches_references_and_labels() {
        let filters = Filters::parse(&flags(&["reference=busybox"]), IMAGES_KEYS).unwrap();
        assert!(filters.reference_matches("docker.io/library/busybox:latest"));
        assert!(!filters.reference_matches("docker.io/library/alpine:latest"));
        let filters = Filters::parse(
            &flags(&["reference=docker.io/library/busybox"]),
            IMAGES_KEYS,
        )
        .unwrap();
        assert!(filters.reference_matches("docker.io/library/busybox:1"));
        let filters =
            Filters::parse(&flags(&["reference=localhost:5000/*:1"]), IMAGES_KEYS).unwrap();
        assert!(filters.reference_matches("localhost:5000/app:1"));
        assert!(!filters.reference_matches("localhost:5000/app:2"));

        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())]
            .into_iter()
            .collect();
        let with = |list: &[&str]| Filters::parse(&flags(list), &["label", "label!"]).unwrap();
        assert!(with(&["label=app"]).labels_match(&labels));
        assert!(with(&["label=app=web"]).labels_match(&labels));
        assert!(!with(&["label=app=db"]).labels_match(&labels));
        assert!(!with(&["label=app", "label=tier"]).labels_match(&labels));
        assert!(!with(&["label!=app"]).labels_match(&labels));
        assert!(with(&["label!=tier"]).labels_match(&labels));
    }

    #[test]
    fn reads_until_values() {
        let now = 1_700_000_000;
        assert_eq!(parse_until("24h", now).unwrap(), now - 86_400);
        assert_eq!(parse_until("1h30m", now).unwrap(), now - 5_400);
        assert_eq!(
            parse_until("2023-11-14T22:13:20Z", now).unwrap(),
            1_700_000_000
        );
        assert_eq!(parse_until("1600000000", now).unwrap(), 1_600_000_000);
        assert_eq!(parse_until("2023-11-14", now).unwrap(), 1_699_920_000);
        assert!(parse_until("soon", now).is_err());
    }
}
