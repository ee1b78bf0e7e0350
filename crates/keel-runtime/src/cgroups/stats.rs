//! Container statistics in the shape of runc's `events --stats` "data"
//! object (runc `types/events.go`), and parsers for the cgroup files they
//! come from. Field names and `omitempty` choices follow runc so tools that
//! read runc's JSON read ours.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

fn is_zero(value: &u64) -> bool {
    *value == 0
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    #[serde(default)]
    pub cpu: CpuStats,
    #[serde(default)]
    pub memory: MemoryStats,
    #[serde(default)]
    pub pids: PidsStats,
    #[serde(default)]
    pub blkio: BlkioStats,
    /// Keyed by page size as the kernel names it ("2MB", "1GB").
    #[serde(default)]
    pub hugetlb: BTreeMap<String, HugetlbStats>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CpuStats {
    #[serde(default)]
    pub usage: CpuUsage,
    #[serde(default)]
    pub throttling: Throttling,
}

/// All times in nanoseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CpuUsage {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub total: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percpu: Vec<u64>,
    #[serde(
        default,
        rename = "percpu_kernel",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub percpu_kernel: Vec<u64>,
    #[serde(default, rename = "percpu_user", skip_serializing_if = "Vec::is_empty")]
    pub percpu_user: Vec<u64>,
    #[serde(default)]
    pub kernel: u64,
    #[serde(default)]
    pub user: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Throttling {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub periods: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub throttled_periods: u64,
    /// Nanoseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub throttled_time: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MemoryStats {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache: u64,
    #[serde(default)]
    pub usage: MemoryEntry,
    #[serde(default)]
    pub swap: MemoryEntry,
    #[serde(default)]
    pub kernel: MemoryEntry,
    #[serde(default, rename = "kernelTCP")]
    pub kernel_tcp: MemoryEntry,
    /// Every key of memory.stat, as the kernel names it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub raw: BTreeMap<String, u64>,
}

/// Bytes. A limit of u64::MAX (v2 "max") or the v1 page-rounded i64::MAX
/// means unlimited, as in runc.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MemoryEntry {
    #[serde(default)]
    pub limit: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max: u64,
    #[serde(default)]
    pub failcnt: u64,
}

/// A limit of 0 means unlimited ("max"), as in runc.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PidsStats {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub current: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub limit: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BlkioStats {
    #[serde(
        default,
        rename = "ioServiceBytesRecursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    #[serde(
        default,
        rename = "ioServicedRecursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BlkioEntry {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub major: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub minor: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub op: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub value: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HugetlbStats {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max: u64,
    #[serde(default)]
    pub failcnt: u64,
}

/// Parses a single-value cgroup file: a number, or "max" (unlimited),
/// which becomes `max_value`.
pub(crate) fn parse_value(text: &str, max_value: u64) -> Option<u64> {
    let text = text.trim();
    if text == "max" {
        return Some(max_value);
    }
    if let Ok(value) = text.parse::<u64>() {
        return Some(value);
    }
    // v1 files may hold "-1"; anything negative means unlimited.
    text.parse::<i64>()
        .ok()
        .filter(|v| *v < 0)
        .map(|_| max_value)
}

/// Parses "key value" lines (memory.stat, cpu.stat, cpuacct.stat,
/// memory.events, memory.oom_control); lines that do not parse are skipped.
pub(crate) fn parse_flat_keyed(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let key = fields.next()?;
            let value = fields.next()?.parse::<u64>().ok()?;
            Some((key.to_string(), value))
        })
        .collect()
}

/// Parses whitespace-separated numbers (cpuacct.usage_percpu).
pub(crate) fn parse_number_list(text: &str) -> Vec<u64> {
    text.split_whitespace()
        .filter_map(|field| field.parse::<u64>().ok())
        .collect()
}

fn parse_device(text: &str) -> Option<(u64, u64)> {
    let (major, minor) = text.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Parses v1 blkio files: "8:0 Read 123" lines; the trailing "Total N"
/// line (no device) is dropped like runc does.
pub(crate) fn parse_blkio_v1(text: &str) -> Vec<BlkioEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() != 3 {
                return None;
            }
            let (major, minor) = parse_device(fields[0])?;
            Some(BlkioEntry {
                major,
                minor,
                op: fields[1].to_string(),
                value: fields[2].parse().ok()?,
            })
        })
        .collect()
}

/// Parses v2 io.stat ("8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0
/// dios=0") into (bytes, ios) entries with runc's op names.
pub(crate) fn parse_io_stat(text: &str) -> (Vec<BlkioEntry>, Vec<BlkioEntry>) {
    let mut bytes = Vec::new();
    let mut ios = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some((major, minor)) = fields.next().and_then(parse_device) else {
            continue;
        };
        for field in fields {
            let Some((key, value)) = field.split_once('=') else {
                continue;
            };
            let Ok(value) = value.parse::<u64>() else {
                continue;
            };
            let (list, op) = match key {
                "rbytes" => (&mut bytes, "Read"),
                "wbytes" => (&mut bytes, "Write"),
                "dbytes" => (&mut bytes, "Discard"),
                "rios" => (&mut ios, "Read"),
                "wios" => (&mut ios, "Write"),
                "dios" => (&mut ios, "Discard"),
                _ => continue,
            };
            list.push(BlkioEntry {
                major,
                minor,
                op: op.to_string(),
                value,
            });
        }
    }
    (bytes, ios)
}

/// Page sizes offered by a hugetlb cgroup directory, from file names like
/// `hugetlb.2MB.limit_in_bytes` (v1) or `hugetlb.2MB.max` (v2).
pub(crate) fn hugetlb_sizes<'a>(
    file_names: impl IntoIterator<Item = &'a str>,
    suffix: &str,
) -> Vec<String> {
    let mut sizes: Vec<String> = file_names
        .into_iter()
        .filter_map(|name| {
            let size = name.strip_prefix("hugetlb.")?.strip_suffix(suffix)?;
            (!size.is_empty() && !size.contains('.')).then(|| size.to_string())
        })
        .collect();
    sizes.sort();
    sizes.dedup();
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_max() {
        assert_eq!(parse_value("123\n", u64::MAX), Some(123));
        assert_eq!(parse_value("max\n", u64::MAX), Some(u64::MAX));
        assert_eq!(parse_value("max", 0), Some(0));
        assert_eq!(parse_value("-1", 7), Some(7));
        assert_eq!(parse_value("junk", 0), None);
    }

    #[test]
    fn flat_keyed() {
        let map = parse_flat_keyed("cache 4096\nrss 8192\nbroken\nx y\n");
        assert_eq!(map.get("cache"), Some(&4096));
        assert_eq!(map.get("rss"), Some(&8192));
        assert_eq!(map.len(), 2);
        let oom = parse_flat_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n");
        assert_eq!(oom.get("oom_kill"), Some(&3));
    }

    #[test]
    fn number_list() {
        assert_eq!(parse_number_list("1 2 3 \n"), vec![1, 2, 3]);
        assert!(parse_number_list("").is_empty());
    }

    #[test]
    fn blkio_v1() {
        let entries = parse_blkio_v1("8:0 Read 10\n8:0 Write 20\n8:0 Total 30\nTotal 30\n");
        assert_eq!(entries.len(), 3);
        assert_eq!(
            entries[1],
            BlkioEntry {
                major: 8,
                minor: 0,
                op: "Write".into(),
                value: 20
            }
        );
    }

    #[test]
    fn io_stat_v2() {
        let (bytes, ios) =
            parse_io_stat("8:16 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=5 dios=6\n253:0 rbytes=9\n");
        assert_eq!(bytes.len(), 4);
        assert_eq!(ios.len(), 3);
        assert_eq!(bytes[3].major, 253);
        assert_eq!(bytes[3].value, 9);
        assert_eq!(ios[0].op, "Read");
        assert_eq!(ios[0].value, 3);
    }

    #[test]
    fn hugetlb_size_names() {
        let names = [
            "hugetlb.2MB.limit_in_bytes",
            "hugetlb.2MB.rsvd.limit_in_bytes",
            "hugetlb.1GB.limit_in_bytes",
            "hugetlb.1GB.usage_in_bytes",
            "cgroup.procs",
        ];
        assert_eq!(
            hugetlb_sizes(names, ".limit_in_bytes"),
            vec!["1GB".to_string(), "2MB".to_string()]
        );
        assert_eq!(hugetlb_sizes(["hugetlb.2MB.max"], ".max"), vec!["2MB"]);
    }

    #[test]
    fn json_shape_matches_runc() {
        let mut stats = Stats::default();
        stats.memory.usage.limit = 64 << 20;
        stats.memory.usage.usage = 4096;
        stats.cpu.throttling.throttled_periods = 2;
        stats.pids.current = 1;
        let json = serde_json::to_value(&stats).expect("Stats serializes to JSON");
        assert_eq!(json["memory"]["usage"]["limit"], 64 << 20);
        assert_eq!(json["memory"]["usage"]["failcnt"], 0);
        assert!(json["memory"]["usage"].get("max").is_none());
        assert!(json["memory"].get("raw").is_none());
        assert_eq!(json["cpu"]["throttling"]["throttledPeriods"], 2);
        assert_eq!(json["cpu"]["usage"]["kernel"], 0);
        assert!(json["cpu"]["usage"].get("percpu").is_none());
        assert_eq!(json["pids"]["current"], 1);
        assert!(json["pids"].get("limit").is_none());
        assert!(json["memory"].get("kernelTCP").is_some());
        assert_eq!(json["hugetlb"], serde_json::json!({}));
        let back: Stats = serde_json::from_value(json).expect("Stats deserializes");
        assert_eq!(back, stats);
    }
}
