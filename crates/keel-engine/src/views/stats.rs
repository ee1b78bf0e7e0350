//! A running container's resource use, sampled: what `keel stats` shows
//! and the API's `/containers/{id}/stats` sends (docker's JSON, from which
//! docker's clients work out the same percentages).

use std::collections::BTreeMap;

use crate::db::Container;
use crate::engine::Engine;
use crate::error::Result;

/// One look at a container.
#[derive(Debug, Clone)]
pub struct Sample {
    pub container: Container,
    pub stats: keel_runtime::cgroups::stats::Stats,
    /// The host's CPU time so far (ns) and its number of CPUs.
    pub system: (u64, u64),
    /// Bytes received and sent per interface (loopback left out).
    pub networks: BTreeMap<String, (u64, u64)>,
    /// When it was taken, RFC 3339 with nanoseconds.
    pub read: String,
}

impl Sample {
    pub fn take(engine: &mut Engine, name: &str) -> Result<Sample> {
        let (container, stats) = engine.stats(name)?;
        let networks = networks(container.state.pid);
        Ok(Sample {
            container,
            stats,
            system: system_cpu(),
            networks,
            read: crate::logs::now_nanos(),
        })
    }

    /// Memory in use as docker counts it: without the page cache that can
    /// be dropped.
    pub fn memory_usage(&self) -> u64 {
        let memory = &self.stats.memory;
        let inactive = memory
            .raw
            .get("total_inactive_file")
            .or_else(|| memory.raw.get("inactive_file"))
            .copied()
            .unwrap_or(0);
        memory.usage.usage.saturating_sub(inactive)
    }

    /// The memory limit, the host's memory when there is none.
    pub fn memory_limit(&self) -> u64 {
        let host = host_memory();
        match self.stats.memory.usage.limit {
            0 => host,
            l if l >= (i64::MAX as u64) / 2 => host,
            l => l.min(host.max(1)),
        }
    }

    /// CPU use since `before`, in percent of one CPU (docker's CPU %).
    pub fn cpu_percent(&self, before: &Sample) -> f64 {
        let cpu = self
            .stats
            .cpu
            .usage
            .total
            .saturating_sub(before.stats.cpu.usage.total) as f64;
        let system = self.system.0.saturating_sub(before.system.0) as f64;
        if system > 0.0 {
            cpu / system * self.system.1 as f64 * 100.0
        } else {
            0.0
        }
    }

    /// Bytes read and written by block I/O.
    pub fn block_io(&self) -> (u64, u64) {
        self.stats
            .blkio
            .io_service_bytes_recursive
            .iter()
            .fold((0, 0), |(r, w), e| {
                match e.op.to_ascii_lowercase().as_str() {
                    "read" => (r + e.value, w),
                    "write" => (r, w + e.value),
                    _ => (r, w),
                }
            })
    }

    /// Bytes received and sent, every interface.
    pub fn network_io(&self) -> (u64, u64) {
        self.networks
            .values()
            .fold((0, 0), |(r, t), (rx, tx)| (r + rx, t + tx))
    }

    /// docker's stats object (`GET /containers/{id}/stats`), with the
    /// previous sample as `precpu_stats`.
    pub fn api_value(&self, before: Option<&Sample>) -> serde_json::Value {
        let cpu = |s: Option<&Sample>| match s {
            Some(s) => serde_json::json!({
                "cpu_usage": {
                    "total_usage": s.stats.cpu.usage.total,
                    "percpu_usage": s.stats.cpu.usage.percpu,
                    "usage_in_kernelmode": s.stats.cpu.usage.kernel,
                    "usage_in_usermode": s.stats.cpu.usage.user,
                },
                "system_cpu_usage": s.system.0,
                "online_cpus": s.system.1,
                "throttling_data": {
                    "periods": s.stats.cpu.throttling.periods,
                    "throttled_periods": s.stats.cpu.throttling.throttled_periods,
                    "throttled_time": s.stats.cpu.throttling.throttled_time,
                },
            }),
            None => serde_json::json!({"cpu_usage": {"total_usage": 0}, "throttling_data": {}}),
        };
        let memory = &self.stats.memory;
        let mut memory_stats = serde_json::json!({
            "usage": memory.usage.usage,
            "max_usage": memory.usage.max,
            "limit": self.memory_limit(),
            "stats": memory.raw,
        });
        if memory.usage.usage == 0 && !self.container.state.status.is_active() {
            memory_stats = serde_json::json!({});
        }
        let c = &self.container;
        serde_json::json!({
            "read": self.read,
            "preread": before.map(|b| b.read.clone()).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            "name": format!("/{}", c.name),
            "id": c.id,
            "pids_stats": {"current": self.stats.pids.current, "limit": self.stats.pids.limit},
            "blkio_stats": {
                "io_service_bytes_recursive": self.stats.blkio.io_service_bytes_recursive.iter().map(|e| serde_json::json!({
                    "major": e.major, "minor": e.minor, "op": e.op.to_ascii_lowercase(), "value": e.value,
                })).collect::<Vec<_>>(),
            },
            "num_procs": 0,
            "storage_stats": {},
            "cpu_stats": cpu(Some(self)),
            "precpu_stats": cpu(before),
            "memory_stats": memory_stats,
            "networks": self.networks.iter().map(|(name, (rx, tx))| (name.clone(), serde_json::json!({
                "rx_bytes": rx, "tx_bytes": tx, "rx_packets": 0, "tx_packets": 0,
                "rx_errors": 0, "tx_errors": 0, "rx_dropped": 0, "tx_dropped": 0,
            }))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// The host's CPU time so far (ns) and its number of CPUs.
pub fn system_cpu() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = text
        .lines()
        .next()
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .take(8)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    let cpus = text
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count() as u64;
    // USER_HZ is 100 on Linux.
    (ticks * 10_000_000, cpus.max(1))
}

/// The host's memory in bytes.
pub fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                })
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Bytes received and sent per interface of a process's network
/// namespace, loopback left out.
pub fn networks(pid: i32) -> BTreeMap<String, (u64, u64)> {
    if pid <= 0 {
        return BTreeMap::new();
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    text.lines()
        .skip(2)
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| name.trim() != "lo")
        .map(|(name, rest)| {
            let fields: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            (
                name.trim().to_string(),
                (
                    fields.first().copied().unwrap_or(0),
                    fields.get(8).copied().unwrap_or(0),
                ),
            )
        })
        .collect()
}
