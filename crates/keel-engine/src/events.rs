//! `keel events`: what happened to containers, images and volumes, as
//! docker reports it (`container start`, `container die` with its
//! exitCode, `image pull`, ...). Every keel process appends its events, one
//! JSON line each, to `<root>/events.log` (one `write` per line with
//! O_APPEND, so lines of several processes never mix); the file is rotated
//! to `events.log.1` past [`MAX_LOG`].

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The log is rotated once it is this large.
pub const MAX_LOG: u64 = 8 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// `container`, `image`, `volume`.
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: Actor,
    /// Seconds since the epoch, and in nanoseconds (docker's two fields).
    pub time: i64,
    #[serde(rename = "timeNano")]
    pub time_nano: i128,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}

fn log_path(root: &Path) -> PathBuf {
    root.join("events.log")
}

/// Records a container event with docker's attributes: the container's
/// labels, its name and image, then `extra` (an exit code, a signal).
pub fn record_container(
    root: &Path,
    container: &crate::db::Container,
    action: &str,
    extra: &[(&str, &str)],
) {
    let mut attributes: Vec<(&str, &str)> = container
        .spec
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    attributes.push(("name", container.name.as_str()));
    attributes.push(("image", container.image.as_str()));
    attributes.extend_from_slice(extra);
    record(root, "container", action, &container.id, &attributes);
}

/// Appends an event; failing to record one never fails the operation.
pub fn record(root: &Path, kind: &str, action: &str, id: &str, attributes: &[(&str, &str)]) {
    let now = jiff::Timestamp::now();
    let event = Event {
        kind: kind.to_string(),
        action: action.to_string(),
        actor: Actor {
            id: id.to_string(),
            attributes: attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        },
        time: now.as_second(),
        time_nano: now.as_nanosecond(),
    };
    let mut line = serde_json::to_vec(&event).expect("events serialize");
    line.push(b'\n');
    let path = log_path(root);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > MAX_LOG) {
        let _ = std::fs::rename(&path, root.join("events.log.1"));
    }
    if let Ok(mut file) = OpenOptions::new().create(true).append(true).open(&path) {
        let _ = file.write_all(&line);
    }
}

/// Which events `keel events` shows.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Nanoseconds since the epoch.
    pub since: Option<i128>,
    pub until: Option<i128>,
    /// `type=`, `event=`, `container=`, `image=`, `volume=`, `label=`.
    pub filters: Vec<(String, String)>,
}

impl Filter {
    pub fn matches(&self, event: &Event) -> bool {
        if self.since.is_some_and(|s| event.time_nano < s)
            || self.until.is_some_and(|u| event.time_nano > u)
        {
            return false;
        }
        let mut by_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (k, v) in &self.filters {
            by_key.entry(k.as_str()).or_default().push(v.as_str());
        }
        by_key.into_iter().all(|(key, values)| {
            values.iter().any(|v| match key {
                "type" => event.kind == *v,
                "event" => event.action == *v || event.action.split(':').next() == Some(v),
                "container" | "image" | "volume" | "network" => {
                    event.kind == key
                        && (event.actor.id.starts_with(v)
                            || event.actor.attributes.get("name").is_some_and(|n| n == v))
                        || key == "image"
                            && event.actor.attributes.get("image").is_some_and(|i| i == v)
                }
                "label" => match v.split_once('=') {
                    Some((k, val)) => event.actor.attributes.get(k).is_some_and(|x| x == val),
                    None => event.actor.attributes.contains_key(*v),
                },
                _ => false,
            })
        })
    }
}

/// The recorded events that `filter` selects, oldest first.
pub fn read(root: &Path, filter: &Filter) -> Result<Vec<Event>> {
    let mut events = Vec::new();
    for path in [root.join("events.log.1"), log_path(root)] {
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        for line in BufReader::new(file).lines() {
            let line = line.map_err(|e| Error::io(format!("read {}", path.display()), e))?;
            if let Ok(event) = serde_json::from_str::<Event>(&line)
                && filter.matches(&event)
            {
                events.push(event);
            }
        }
    }
    Ok(events)
}

/// A time bound as `--since`/`--until` and the API's `since=`/`until=`
/// take it: RFC 3339, Unix seconds (with fractions), or a duration back
/// from now (`10m`); in nanoseconds.
pub fn parse_time(value: &str) -> Result<i128> {
    let now = jiff::Timestamp::now();
    if let Ok(t) = value.parse::<jiff::Timestamp>() {
        return Ok(t.as_nanosecond());
    }
    if let Ok(seconds) = value.parse::<f64>() {
        return Ok((seconds * 1e9) as i128);
    }
    let seconds = crate::filter::parse_until(value, now.as_second())?;
    Ok(i128::from(seconds) * 1_000_000_000)
}

impl Filter {
    /// The filter of `keel events` and the API's `/events`: bounds, and
    /// `key=value` filters (`type`, `event`, `container`, `image`, `volume`,
    /// `network`, `label`).
    pub fn parse(since: Option<&str>, until: Option<&str>, flags: &[String]) -> Result<Filter> {
        let mut filter = Filter {
            since: since
                .filter(|s| !s.is_empty())
                .map(parse_time)
                .transpose()?,
            until: until
                .filter(|s| !s.is_empty())
                .map(parse_time)
                .transpose()?,
            filters: Vec::new(),
        };
        for f in flags {
            let Some((key, value)) = f.split_once('=') else {
                return Err(Error::invalid(format!(
                    "bad format of filter (expected name=value): {f:?}"
                )));
            };
            if ![
                "type",
                "event",
                "container",
                "image",
                "volume",
                "network",
                "label",
            ]
            .contains(&key)
            {
                return Err(Error::invalid(format!("invalid filter '{key}'")));
            }
            filter.filters.push((key.to_string(), value.to_string()));
        }
        Ok(filter)
    }
}

/// docker's events: the past ones the bounds select, then (unless `until`
/// is past) the new ones as they come, until `emit` fails or `until`.
pub fn stream(
    root: &Path,
    filter: &Filter,
    mut emit: impl FnMut(&Event) -> std::io::Result<()>,
) -> Result<()> {
    let mut filter = filter.clone();
    if filter.since.is_some() || filter.until.is_some() {
        for event in read(root, &filter)? {
            if emit(&event).is_err() {
                return Ok(());
            }
        }
        if filter
            .until
            .is_some_and(|u| u <= jiff::Timestamp::now().as_nanosecond())
        {
            return Ok(());
        }
        filter.since = Some(jiff::Timestamp::now().as_nanosecond());
    }
    follow(root, &filter, emit)
}

/// Follows the log from its end, calling `emit` for each new event that
/// `filter` selects, until `emit` fails or `until` passes.
pub fn follow(
    root: &Path,
    filter: &Filter,
    mut emit: impl FnMut(&Event) -> std::io::Result<()>,
) -> Result<()> {
    let path = log_path(root);
    let open = |at_end: bool| -> Option<BufReader<std::fs::File>> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .ok()?;
        if at_end {
            file.seek(SeekFrom::End(0)).ok()?;
        } else {
            file.seek(SeekFrom::Start(0)).ok()?;
        }
        Some(BufReader::new(file))
    };
    let Some(mut reader) = open(true) else {
        return Err(Error::msg(format!("open {}", path.display())));
    };
    let mut position = reader.stream_position().unwrap_or(0);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).unwrap_or(0);
        if n > 0 && line.ends_with('\n') {
            position += n as u64;
            if let Ok(event) = serde_json::from_str::<Event>(&line)
                && filter.matches(&event)
                && emit(&event).is_err()
            {
                return Ok(());
            }
            continue;
        }
        if n > 0 {
            let _ = reader.seek(SeekFrom::Start(position));
        }
        if filter
            .until
            .is_some_and(|u| jiff::Timestamp::now().as_nanosecond() > u)
        {
            return Ok(());
        }
        // Rotated: carry on in the new file from its start.
        if std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) < position
            && let Some(new) = open(false)
        {
            reader = new;
            position = 0;
            continue;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_reads_and_filters() {
        let dir = tempfile::tempdir().unwrap();
        record(
            dir.path(),
            "container",
            "create",
            "abc",
            &[("name", "web"), ("image", "busybox")],
        );
        record(
            dir.path(),
            "container",
            "die",
            "abc",
            &[("name", "web"), ("exitCode", "3")],
        );
        record(
            dir.path(),
            "image",
            "pull",
            "busybox:latest",
            &[("name", "busybox")],
        );
        let all = read(dir.path(), &Filter::default()).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[1].actor.attributes["exitCode"], "3");
        let only = |filters: &[(&str, &str)]| {
            read(
                dir.path(),
                &Filter {
                    filters: filters
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Filter::default()
                },
            )
            .unwrap()
            .len()
        };
        assert_eq!(only(&[("type", "container")]), 2);
        assert_eq!(only(&[("event", "die")]), 1);
        assert_eq!(only(&[("container", "web")]), 2);
        assert_eq!(only(&[("image", "busybox")]), 2);
        assert_eq!(
            only(&[("type", "container"), ("event", "create"), ("event", "die")]),
            2
        );
        let later = Filter {
            since: Some(all[2].time_nano),
            ..Filter::default()
        };
        assert_eq!(read(dir.path(), &later).unwrap().len(), 1);
    }
}
