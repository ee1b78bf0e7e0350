//! cgroup v2 (unified hierarchy): controller delegation, limits, freezer,
//! stats.

use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::stats::{self, BlkioStats, HugetlbStats, MemoryEntry, MemoryStats, Stats};
use super::{read_file, read_optional, write_file};
use crate::error::{Error, Result};
use crate::spec::{BlockIo, Cpu, Memory, Resources};

/// Controllers keel may set limits through; enabled for the subtree when
/// the parent offers them. Others the host offers are left alone.
const WANTED_CONTROLLERS: &[&str] = &["cpu", "cpuset", "io", "memory", "pids", "hugetlb", "misc"];

/// Enables in `dir/cgroup.subtree_control` the wanted controllers that
/// `dir` offers. Best effort: a cgroup holding processes refuses (the v2
/// "no internal processes" rule), and the limit writes then say which file
/// is missing.
pub(super) fn enable_controllers(dir: &Path) {
    let Ok(Some(available)) = read_optional(dir, "cgroup.controllers") else {
        return;
    };
    let enabled = read_optional(dir, "cgroup.subtree_control")
        .ok()
        .flatten()
        .unwrap_or_default();
    let missing: Vec<&str> = available
        .split_whitespace()
        .filter(|c| WANTED_CONTROLLERS.contains(c))
        .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
        .collect();
    if missing.is_empty() {
        return;
    }
    let all = missing
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    if write_file(dir, "cgroup.subtree_control", &all).is_ok() {
        return;
    }
    // One refusal fails the whole write; enable what can be.
    for controller in missing {
        if let Err(error) = write_file(dir, "cgroup.subtree_control", &format!("+{controller}")) {
            tracing::debug!(%error, "cannot enable cgroup controller");
        }
    }
}

/// cpu.weight from cpu shares (runc's formula: [2, 262144] → [1, 10000]).
pub(crate) fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// io.weight from a blkio weight (runc's formula: [10, 1000] → [1, 10000]).
pub(crate) fn blkio_weight_to_io_weight(weight: u64) -> u64 {
    if weight == 0 {
        return 0;
    }
    let weight = weight.clamp(10, 1000);
    1 + (weight - 10) * 9999 / 990
}

/// The cgroup v2 file value for an OCI number: None for 0 (unset), "max"
/// for negative (unlimited), else the number.
pub(crate) fn limit_value(value: i64) -> Option<String> {
    match value {
        0 => None,
        v if v < 0 => Some("max".to_string()),
        v => Some(v.to_string()),
    }
}

/// memory.swap.max from OCI's memory+swap `swap` and `limit` (runc's
/// ConvertMemorySwapToCgroupV2Value): 0 unset, -1 unlimited.
pub(crate) fn swap_to_v2(swap: i64, limit: i64) -> Result<i64> {
    if limit == -1 && swap == 0 {
        return Ok(-1);
    }
    if swap == -1 || swap == 0 {
        return Ok(swap);
    }
    if limit == 0 || limit == -1 {
        return Err(Error::msg(format!(
            "cannot set memory+swap limit {swap} without a memory limit"
        )));
    }
    if limit < 0 {
        return Err(Error::msg(format!("invalid memory limit {limit}")));
    }
    if swap < limit {
        return Err(Error::msg(format!(
            "memory+swap limit {swap} must not be below the memory limit {limit}"
        )));
    }
    Ok(swap - limit)
}

/// cpu.max from quota and period: "quota period", "max period", or just
/// the quota when the period is left as is.
pub(crate) fn cpu_max(quota: i64, period: u64) -> Option<String> {
    if quota == 0 && period == 0 {
        return None;
    }
    let mut value = if quota > 0 {
        quota.to_string()
    } else {
        "max".to_string()
    };
    if period != 0 {
        value.push_str(&format!(" {period}"));
    }
    Some(value)
}

/// Writes a v2 file, explaining a missing one (controller not enabled).
fn write(dir: &Path, name: &str, value: &str) -> Result<()> {
    write_file(dir, name, value).map_err(|error| {
        if dir.join(name).exists() {
            return error;
        }
        let controller = name.split('.').next().unwrap_or(name);
        Error::msg(format!(
            "cannot write {value:?} to {}: the file does not exist (is the {controller} \
             controller enabled in the parent's cgroup.subtree_control?)",
            dir.join(name).display()
        ))
    })
}

pub(super) fn apply(dir: &Path, resources: &Resources) -> Result<()> {
    if let Some(cpu) = &resources.cpu {
        apply_cpu(dir, cpu)?;
    }
    if let Some(memory) = &resources.memory {
        apply_memory(dir, memory)?;
    }
    if let Some(pids) = &resources.pids {
        write(dir, "pids.max", &super::pids_max(pids.limit))?;
    }
    if let Some(block_io) = &resources.block_io {
        apply_io(dir, block_io)?;
    }
    for limit in &resources.hugepage_limits {
        let size = super::check_page_size(&limit.page_size)?;
        write(
            dir,
            &format!("hugetlb.{size}.max"),
            &limit.limit.to_string(),
        )?;
        let reserved = format!("hugetlb.{size}.rsvd.max");
        if dir.join(&reserved).exists() {
            write(dir, &reserved, &limit.limit.to_string())?;
        }
    }
    if !resources.devices.is_empty() {
        super::bpf_devices::apply(dir, &resources.devices)?;
    }
    for (key, value) in &resources.unified {
        super::check_unified_key(key)?;
        write(dir, key, value)?;
    }
    Ok(())
}

fn apply_cpu(dir: &Path, cpu: &Cpu) -> Result<()> {
    if let Some(idle) = cpu.idle {
        write(dir, "cpu.idle", &idle.to_string())?;
    }
    let weight = shares_to_weight(cpu.shares.unwrap_or(0));
    if weight != 0 {
        write(dir, "cpu.weight", &weight.to_string())?;
    }
    if let Some(value) = cpu_max(cpu.quota.unwrap_or(0), cpu.period.unwrap_or(0)) {
        write(dir, "cpu.max", &value)?;
    }
    if let Some(burst) = cpu.burst {
        write(dir, "cpu.max.burst", &burst.to_string())?;
    }
    if let Some(cpus) = cpu.cpus.as_deref().filter(|s| !s.is_empty()) {
        write(dir, "cpuset.cpus", cpus)?;
    }
    if let Some(mems) = cpu.mems.as_deref().filter(|s| !s.is_empty()) {
        write(dir, "cpuset.mems", mems)?;
    }
    if cpu.realtime_runtime.is_some_and(|r| r != 0) || cpu.realtime_period.is_some_and(|p| p != 0) {
        return Err(Error::msg(
            "cpu.realtimeRuntime/realtimePeriod are not supported on cgroup v2",
        ));
    }
    Ok(())
}

fn apply_memory(dir: &Path, memory: &Memory) -> Result<()> {
    let limit = memory.limit.unwrap_or(0);
    let swap = swap_to_v2(memory.swap.unwrap_or(0), limit)?;
    let swap_value = match swap {
        // memory and memory+swap equal: no swap at all.
        0 if memory.swap.is_some_and(|s| s > 0) => Some("0".to_string()),
        swap => limit_value(swap),
    };
    if let Some(value) = swap_value
        && let Err(error) = write_file(dir, "memory.swap.max", &value)
    {
        // Without swap accounting, "unlimited" and "none" are what we have
        // anyway.
        if dir.join("memory.swap.max").exists() || !(value == "max" || value == "0") {
            return Err(error);
        }
    }
    if let Some(value) = limit_value(limit) {
        write(dir, "memory.max", &value)?;
    }
    if let Some(value) = limit_value(memory.reservation.unwrap_or(0)) {
        write(dir, "memory.low", &value)?;
    }
    if memory.swappiness.is_some() {
        tracing::warn!("memory.swappiness is ignored on cgroup v2");
    }
    if memory.disable_oom_killer == Some(true) {
        tracing::warn!("memory.disableOOMKiller is ignored on cgroup v2");
    }
    if memory.kernel.is_some_and(|k| k != 0) || memory.kernel_tcp.is_some_and(|k| k != 0) {
        tracing::warn!("memory.kernel/kernelTCP are ignored on cgroup v2");
    }
    Ok(())
}

fn apply_io(dir: &Path, block_io: &BlockIo) -> Result<()> {
    let bfq = dir.join("io.bfq.weight").exists();
    if let Some(weight) = block_io.weight.filter(|w| *w != 0) {
        if bfq {
            // BFQ takes the blkio range [1, 1000] as is.
            write(dir, "io.bfq.weight", &weight.to_string())?;
        } else {
            let weight = blkio_weight_to_io_weight(u64::from(weight));
            write(dir, "io.weight", &weight.to_string())?;
        }
    }
    for device in &block_io.weight_device {
        let (major, minor, weight) = super::weight_device(device)?;
        if let Some(weight) = weight {
            if bfq {
                write(dir, "io.bfq.weight", &format!("{major}:{minor} {weight}"))?;
            } else {
                let weight = blkio_weight_to_io_weight(weight);
                write(dir, "io.weight", &format!("{major}:{minor} {weight}"))?;
            }
        }
    }
    let throttles = [
        ("rbps", &block_io.throttle_read_bps_device),
        ("wbps", &block_io.throttle_write_bps_device),
        ("riops", &block_io.throttle_read_iops_device),
        ("wiops", &block_io.throttle_write_iops_device),
    ];
    for (key, list) in throttles {
        for device in list {
            let rate = if device.rate == 0 {
                "max".to_string()
            } else {
                device.rate.to_string()
            };
            write(
                dir,
                "io.max",
                &format!("{}:{} {key}={rate}", device.major, device.minor),
            )?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Freezer

const FREEZE_TIMEOUT: Duration = Duration::from_secs(2);

fn wait_frozen(dir: &Path, frozen: bool) -> Result<bool> {
    let want = if frozen { "1" } else { "0" };
    let deadline = Instant::now() + FREEZE_TIMEOUT;
    loop {
        let events = read_file(dir, "cgroup.events")?;
        let state = events.lines().find_map(|line| line.strip_prefix("frozen "));
        if state.is_none_or(|s| s.trim() == want) {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        sleep(Duration::from_millis(1));
    }
}

pub(super) fn freeze(dir: &Path) -> Result<()> {
    if !dir.join("cgroup.freeze").exists() {
        return Err(Error::msg(format!(
            "cannot freeze cgroup {}: cgroup.freeze does not exist (kernel older than 5.2?)",
            dir.display()
        )));
    }
    write_file(dir, "cgroup.freeze", "1")?;
    if wait_frozen(dir, true)? {
        return Ok(());
    }
    let _ = write_file(dir, "cgroup.freeze", "0");
    Err(Error::msg(format!(
        "unable to freeze cgroup {}: not frozen after {}s",
        dir.display(),
        FREEZE_TIMEOUT.as_secs()
    )))
}

pub(super) fn thaw(dir: &Path) -> Result<()> {
    write_file(dir, "cgroup.freeze", "0")?;
    if !wait_frozen(dir, false)? {
        tracing::debug!(cgroup = %dir.display(), "cgroup.events still says frozen after thaw");
    }
    Ok(())
}

pub(super) fn is_frozen(dir: &Path) -> Result<bool> {
    Ok(read_optional(dir, "cgroup.freeze")?.is_some_and(|s| s == "1"))
}

// ---------------------------------------------------------------------------
// Stats

fn read_u64(dir: &Path, name: &str) -> Result<u64> {
    Ok(read_optional(dir, name)?
        .and_then(|text| stats::parse_value(&text, u64::MAX))
        .unwrap_or(0))
}

fn keyed(dir: &Path, name: &str) -> Result<std::collections::BTreeMap<String, u64>> {
    Ok(read_optional(dir, name)?
        .map(|text| stats::parse_flat_keyed(&text))
        .unwrap_or_default())
}

pub(super) fn stats(dir: &Path) -> Result<Stats> {
    let mut stats = Stats::default();

    let cpu = keyed(dir, "cpu.stat")?;
    let get = |key: &str| cpu.get(key).copied().unwrap_or(0);
    stats.cpu.usage.total = get("usage_usec") * 1000;
    stats.cpu.usage.user = get("user_usec") * 1000;
    stats.cpu.usage.kernel = get("system_usec") * 1000;
    stats.cpu.throttling.periods = get("nr_periods");
    stats.cpu.throttling.throttled_periods = get("nr_throttled");
    stats.cpu.throttling.throttled_time = get("throttled_usec") * 1000;

    let raw = keyed(dir, "memory.stat")?;
    let events = keyed(dir, "memory.events")?;
    let usage = MemoryEntry {
        limit: read_u64(dir, "memory.max")?,
        usage: read_u64(dir, "memory.current")?,
        max: read_u64(dir, "memory.peak")?,
        failcnt: events.get("max").copied().unwrap_or(0),
    };
    // runc reports swap as memory+swap, like v1's memsw files.
    let swap = if dir.join("memory.swap.current").exists() {
        MemoryEntry {
            limit: read_u64(dir, "memory.swap.max")?.saturating_add(usage.limit),
            usage: read_u64(dir, "memory.swap.current")?.saturating_add(usage.usage),
            max: 0,
            failcnt: 0,
        }
    } else {
        MemoryEntry::default()
    };
    stats.memory = MemoryStats {
        cache: raw.get("file").copied().unwrap_or(0),
        usage,
        swap,
        raw,
        ..MemoryStats::default()
    };

    stats.pids.current = read_u64(dir, "pids.current")?;
    stats.pids.limit = read_optional(dir, "pids.max")?
        .and_then(|text| stats::parse_value(&text, 0))
        .unwrap_or(0);

    if let Some(text) = read_optional(dir, "io.stat")? {
        let (bytes, ios) = stats::parse_io_stat(&text);
        stats.blkio = BlkioStats {
            io_service_bytes_recursive: bytes,
            io_serviced_recursive: ios,
        };
    }

    for size in super::v1::hugetlb_sizes(dir, ".max")? {
        let events = keyed(dir, &format!("hugetlb.{size}.events"))?;
        let entry = HugetlbStats {
            usage: read_u64(dir, &format!("hugetlb.{size}.current"))?,
            max: 0,
            failcnt: events.get("max").copied().unwrap_or(0),
        };
        stats.hugetlb.insert(size, entry);
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_convert_like_runc() {
        assert_eq!(shares_to_weight(0), 0);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        // Out of range is clamped, never underflows.
        assert_eq!(shares_to_weight(1), 1);
        assert_eq!(shares_to_weight(1 << 40), 10_000);
    }

    #[test]
    fn blkio_weight_converts_like_runc() {
        assert_eq!(blkio_weight_to_io_weight(0), 0);
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(500), 4950);
        assert_eq!(blkio_weight_to_io_weight(1000), 10_000);
        assert_eq!(blkio_weight_to_io_weight(5), 1);
    }

    #[test]
    fn swap_conversion() {
        assert_eq!(swap_to_v2(0, 0).unwrap(), 0);
        assert_eq!(swap_to_v2(0, -1).unwrap(), -1);
        assert_eq!(swap_to_v2(-1, 100).unwrap(), -1);
        assert_eq!(swap_to_v2(300, 100).unwrap(), 200);
        assert_eq!(swap_to_v2(100, 100).unwrap(), 0);
        assert!(swap_to_v2(50, 100).is_err());
        assert!(swap_to_v2(100, 0).is_err());
        assert!(swap_to_v2(100, -1).is_err());
    }

    #[test]
    fn limit_values() {
        assert_eq!(limit_value(0), None);
        assert_eq!(limit_value(-1).as_deref(), Some("max"));
        assert_eq!(limit_value(4096).as_deref(), Some("4096"));
    }

    #[test]
    fn cpu_max_values() {
        assert_eq!(cpu_max(0, 0), None);
        assert_eq!(cpu_max(50_000, 100_000).as_deref(), Some("50000 100000"));
        assert_eq!(cpu_max(-1, 100_000).as_deref(), Some("max 100000"));
        assert_eq!(cpu_max(20_000, 0).as_deref(), Some("20000"));
        assert_eq!(cpu_max(0, 50_000).as_deref(), Some("max 50000"));
    }

    #[test]
    fn apply_and_stats_on_a_fake_v2_dir() {
        // Regular files stand in for the cgroup files: checks which files
        // get which values without root or a v2 host.
        let dir = tempfile::tempdir().expect("temp dir");
        for name in [
            "memory.max",
            "memory.low",
            "memory.swap.max",
            "cpu.weight",
            "cpu.max",
            "pids.max",
            "io.weight",
            "io.max",
            "memory.high",
        ] {
            std::fs::write(dir.path().join(name), "").expect("create fake cgroup file");
        }
        let resources: Resources = serde_json::from_value(serde_json::json!({
            "memory": {"limit": 67108864, "swap": 134217728, "reservation": 1048576},
            "cpu": {"shares": 1024, "quota": 50000, "period": 100000},
            "pids": {"limit": -1},
            // (devices need a real cgroup2 directory: bpf_devices tests them)
            "unified": {"memory.high": "50000000"}
        }))
        .expect("resources parse");
        // Built directly: the JSON key is "blockIO", which spec.rs may spell
        // differently.
        let mut resources = resources;
        resources.block_io = Some(BlockIo {
            weight: Some(500),
            throttle_read_bps_device: vec![crate::spec::ThrottleDevice {
                major: 8,
                minor: 0,
                rate: 1000,
            }],
            ..BlockIo::default()
        });
        apply(dir.path(), &resources).expect("apply to fake v2 dir");
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!(read("memory.max"), "67108864");
        assert_eq!(read("memory.low"), "1048576");
        assert_eq!(read("memory.swap.max"), "67108864");
        assert_eq!(read("cpu.weight"), "39");
        assert_eq!(read("cpu.max"), "50000 100000");
        assert_eq!(read("pids.max"), "max");
        assert_eq!(read("io.weight"), "4950");
        assert_eq!(read("io.max"), "8:0 rbps=1000");
        assert_eq!(read("memory.high"), "50000000");

        // A missing controller file is named in the error.
        let resources: Resources =
            serde_json::from_value(serde_json::json!({"unified": {"misc.max": "x 1"}}))
                .expect("resources parse");
        let error = apply(dir.path(), &resources).unwrap_err().to_string();
        assert!(error.contains("misc.max"), "{error}");
        assert!(error.contains("\"x 1\""), "{error}");

        std::fs::write(dir.path().join("memory.current"), "4096\n").unwrap();
        std::fs::write(dir.path().join("memory.max"), "max\n").unwrap();
        std::fs::write(dir.path().join("pids.current"), "3\n").unwrap();
        std::fs::write(dir.path().join("pids.max"), "max\n").unwrap();
        std::fs::write(
            dir.path().join("cpu.stat"),
            "usage_usec 10\nuser_usec 6\nsystem_usec 4\nnr_periods 5\nnr_throttled 1\nthrottled_usec 2\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("memory.stat"), "anon 1\nfile 2\n").unwrap();
        std::fs::write(
            dir.path().join("memory.events"),
            "low 0\nmax 7\noom 1\noom_kill 1\n",
        )
        .unwrap();
        let stats = stats(dir.path()).expect("stats of fake v2 dir");
        assert_eq!(stats.memory.usage.usage, 4096);
        assert_eq!(stats.memory.usage.limit, u64::MAX);
        assert_eq!(stats.memory.usage.failcnt, 7);
        assert_eq!(stats.memory.cache, 2);
        assert_eq!(stats.pids.current, 3);
        assert_eq!(stats.pids.limit, 0);
        assert_eq!(stats.cpu.usage.total, 10_000);
        assert_eq!(stats.cpu.usage.user, 6_000);
        assert_eq!(stats.cpu.usage.kernel, 4_000);
        assert_eq!(stats.cpu.throttling.throttled_time, 2_000);
    }
}
