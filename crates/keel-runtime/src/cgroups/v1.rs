//! cgroup v1 (and the v1 side of hybrid hosts): limits, freezer, stats.

use std::fs;
use std::io;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::stats::{self, BlkioStats, CpuStats, HugetlbStats, MemoryEntry, MemoryStats, Stats};
use super::{Cgroup, Mode, device_writes, read_file, read_optional, write_file};
use crate::error::{Error, Result};
use crate::spec::{BlockIo, Cpu, HugepageLimit, Memory, Resources};

/// A new cpuset cgroup starts with empty cpuset.cpus/mems, and joining
/// it then fails with ENOSPC: copy them down from the nearest ancestor.
pub(super) fn fill_cpuset(mountpoint: &Path, dir: &Path) -> Result<()> {
    let Ok(relative) = dir.strip_prefix(mountpoint) else {
        return Ok(());
    };
    let mut parent = mountpoint.to_path_buf();
    for component in relative.components() {
        let current = parent.join(component);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let Some(value) = read_optional(&current, file)? else {
                continue;
            };
            if value.is_empty() {
                let inherited = read_file(&parent, file)?;
                write_file(&current, file, &inherited)?;
            }
        }
        parent = current;
    }
    Ok(())
}

/// The container's directory for `controller`, or an error saying the
/// controller is needed for `what` but not mounted.
fn require<'a>(cgroup: &'a Cgroup, controller: &str, what: &str) -> Result<&'a Path> {
    cgroup.v1_dir(controller).ok_or_else(|| {
        Error::msg(format!(
            "cannot apply {what} to cgroup {}: no cgroup v1 {controller} hierarchy is mounted",
            cgroup.path
        ))
    })
}

pub(super) fn apply(cgroup: &Cgroup, resources: &Resources) -> Result<()> {
    if let Some(cpu) = &resources.cpu
        && (cpu.cpus.as_deref().is_some_and(|s| !s.is_empty())
            || cpu.mems.as_deref().is_some_and(|s| !s.is_empty()))
    {
        let dir = require(cgroup, "cpuset", "cpuset.cpus/cpuset.mems")?;
        if let Some(cpus) = cpu.cpus.as_deref().filter(|s| !s.is_empty()) {
            write_file(dir, "cpuset.cpus", cpus)?;
        }
        if let Some(mems) = cpu.mems.as_deref().filter(|s| !s.is_empty()) {
            write_file(dir, "cpuset.mems", mems)?;
        }
    }
    if !resources.devices.is_empty() {
        let dir = require(cgroup, "devices", "device rules")?;
        for (file, rule) in device_writes(&resources.devices)? {
            write_file(dir, file, &rule)?;
        }
    }
    if let Some(memory) = &resources.memory {
        apply_memory(cgroup, memory)?;
    }
    if let Some(cpu) = &resources.cpu {
        apply_cpu(cgroup, cpu)?;
    }
    if let Some(pids) = &resources.pids {
        let dir = require(cgroup, "pids", "the pids limit")?;
        write_file(dir, "pids.max", &super::pids_max(pids.limit))?;
    }
    if let Some(block_io) = &resources.block_io {
        apply_block_io(cgroup, block_io)?;
    }
    if !resources.hugepage_limits.is_empty() {
        apply_hugetlb(cgroup, &resources.hugepage_limits)?;
    }
    Ok(())
}

fn apply_memory(cgroup: &Cgroup, memory: &Memory) -> Result<()> {
    let limit = memory.limit.unwrap_or(0);
    let mut swap = memory.swap.unwrap_or(0);
    let wants_any = limit != 0
        || swap != 0
        || memory.reservation.is_some_and(|r| r != 0)
        || memory.swappiness.is_some()
        || memory.disable_oom_killer == Some(true)
        || memory.kernel_tcp.is_some_and(|k| k != 0);
    if !wants_any {
        return Ok(());
    }
    let dir = require(cgroup, "memory", "memory limits")?;
    let has_swap_file = dir.join("memory.memsw.limit_in_bytes").exists();
    // Unlimited memory with swap unset means unlimited memory+swap too.
    if limit == -1 && swap == 0 && has_swap_file {
        swap = -1;
    }
    if swap != 0 && !has_swap_file {
        if swap > 0 {
            return Err(Error::msg(format!(
                "cannot set memory+swap limit {swap}: {} does not exist (swap accounting is \
                 disabled in this kernel; boot with swapaccount=1 or drop the swap limit)",
                dir.join("memory.memsw.limit_in_bytes").display()
            )));
        }
        swap = 0;
    }
    // The kernel requires memory <= memory+swap at every moment, so the
    // order depends on whether the limits grow or shrink.
    let swap_first = limit != 0 && swap != 0 && {
        let current = read_file(dir, "memory.limit_in_bytes")?;
        swap == -1 || current.parse::<i64>().is_ok_and(|c| c < swap)
    };
    if swap_first {
        set_swap(dir, swap)?;
        set_memory_limit(dir, limit)?;
    } else {
        set_memory_limit(dir, limit)?;
        set_swap(dir, swap)?;
    }
    if let Some(reservation) = memory.reservation.filter(|r| *r != 0) {
        write_file(dir, "memory.soft_limit_in_bytes", &reservation.to_string())?;
    }
    if memory.kernel.is_some_and(|k| k != 0) {
        tracing::warn!(
            "memory.kernel is deprecated and ignored (kernel memory limits are gone from recent kernels)"
        );
    }
    if let Some(kernel_tcp) = memory.kernel_tcp.filter(|k| *k != 0) {
        if dir.join("memory.kmem.tcp.limit_in_bytes").exists() {
            write_file(
                dir,
                "memory.kmem.tcp.limit_in_bytes",
                &kernel_tcp.to_string(),
            )?;
        } else {
            tracing::warn!(
                "memory.kernelTCP ignored: this kernel has no memory.kmem.tcp.limit_in_bytes"
            );
        }
    }
    if let Some(swappiness) = memory.swappiness {
        if swappiness > 100 {
            return Err(Error::msg(format!(
                "invalid memory swappiness {swappiness}: the valid range is 0-100"
            )));
        }
        write_file(dir, "memory.swappiness", &swappiness.to_string())?;
    }
    if memory.disable_oom_killer == Some(true) {
        write_file(dir, "memory.oom_control", "1")?;
    }
    Ok(())
}

fn set_memory_limit(dir: &Path, limit: i64) -> Result<()> {
    if limit == 0 {
        return Ok(());
    }
    write_file(dir, "memory.limit_in_bytes", &limit.to_string()).map_err(|error| {
        let busy = matches!(&error, Error::Io { source, .. } if source.raw_os_error() == Some(libc::EBUSY));
        if !busy {
            return error;
        }
        let usage = read_file(dir, "memory.usage_in_bytes").unwrap_or_default();
        let peak = read_file(dir, "memory.max_usage_in_bytes").unwrap_or_default();
        Error::msg(format!(
            "cannot set memory limit to {limit} in {}: current usage {usage}, peak usage {peak}",
            dir.display()
        ))
    })
}

fn set_swap(dir: &Path, swap: i64) -> Result<()> {
    if swap == 0 {
        return Ok(());
    }
    write_file(dir, "memory.memsw.limit_in_bytes", &swap.to_string())
}

fn apply_cpu(cgroup: &Cgroup, cpu: &Cpu) -> Result<()> {
    let shares = cpu.shares.unwrap_or(0);
    let quota = cpu.quota.unwrap_or(0);
    let period = cpu.period.unwrap_or(0);
    let rt_runtime = cpu.realtime_runtime.unwrap_or(0);
    let rt_period = cpu.realtime_period.unwrap_or(0);
    if shares == 0
        && quota == 0
        && period == 0
        && rt_runtime == 0
        && rt_period == 0
        && cpu.burst.is_none()
        && cpu.idle.is_none()
    {
        return Ok(());
    }
    let dir = require(cgroup, "cpu", "cpu limits")?;
    if shares != 0 {
        write_file(dir, "cpu.shares", &shares.to_string())?;
        // The kernel clamps out-of-range shares silently; say so instead.
        let actual = read_file(dir, "cpu.shares")?;
        if let Ok(actual) = actual.parse::<u64>() {
            if shares > actual {
                return Err(Error::msg(format!(
                    "cpu shares {shares} too large: the maximum allowed is {actual}"
                )));
            }
            if shares < actual {
                return Err(Error::msg(format!(
                    "cpu shares {shares} too small: the minimum allowed is {actual}"
                )));
            }
        }
    }
    // Period before quota; a smaller period can be refused (EINVAL) while
    // the old quota is in force, so then retry it after the quota.
    let mut period_pending = false;
    if period != 0
        && let Err(error) = write_file(dir, "cpu.cfs_period_us", &period.to_string())
    {
        if !is_errno(&error, libc::EINVAL) || quota == 0 {
            return Err(error);
        }
        period_pending = true;
    }
    if quota != 0 {
        let quota = if quota < 0 { -1 } else { quota };
        write_file(dir, "cpu.cfs_quota_us", &quota.to_string())?;
        if period_pending {
            write_file(dir, "cpu.cfs_period_us", &period.to_string())?;
        }
    }
    if let Some(burst) = cpu.burst {
        write_file(dir, "cpu.cfs_burst_us", &burst.to_string())?;
    }
    if let Some(idle) = cpu.idle {
        write_file(dir, "cpu.idle", &idle.to_string())?;
    }
    if rt_period != 0 {
        write_file(dir, "cpu.rt_period_us", &rt_period.to_string())?;
    }
    if rt_runtime != 0 {
        write_file(dir, "cpu.rt_runtime_us", &rt_runtime.to_string())?;
    }
    Ok(())
}

fn apply_block_io(cgroup: &Cgroup, block_io: &BlockIo) -> Result<()> {
    let throttles = [
        (
            "blkio.throttle.read_bps_device",
            &block_io.throttle_read_bps_device,
        ),
        (
            "blkio.throttle.write_bps_device",
            &block_io.throttle_write_bps_device,
        ),
        (
            "blkio.throttle.read_iops_device",
            &block_io.throttle_read_iops_device,
        ),
        (
            "blkio.throttle.write_iops_device",
            &block_io.throttle_write_iops_device,
        ),
    ];
    let wants_any = block_io.weight.is_some_and(|w| w != 0)
        || block_io.leaf_weight.is_some_and(|w| w != 0)
        || !block_io.weight_device.is_empty()
        || throttles.iter().any(|(_, list)| !list.is_empty());
    if !wants_any {
        return Ok(());
    }
    let dir = require(cgroup, "blkio", "block I/O limits")?;
    // CFQ's blkio.weight is gone from recent kernels; BFQ offers the same
    // knob as blkio.bfq.weight.
    let (weight_file, weight_device_file) = if dir.join("blkio.weight").exists() {
        ("blkio.weight", "blkio.weight_device")
    } else {
        ("blkio.bfq.weight", "blkio.bfq.weight_device")
    };
    if let Some(weight) = block_io.weight.filter(|w| *w != 0) {
        if !dir.join(weight_file).exists() {
            return Err(Error::msg(format!(
                "cannot set block I/O weight {weight}: neither {} nor {} exists (no CFQ or BFQ \
                 I/O scheduler)",
                dir.join("blkio.weight").display(),
                dir.join("blkio.bfq.weight").display()
            )));
        }
        write_file(dir, weight_file, &weight.to_string())?;
    }
    if let Some(leaf_weight) = block_io.leaf_weight.filter(|w| *w != 0) {
        if dir.join("blkio.leaf_weight").exists() {
            write_file(dir, "blkio.leaf_weight", &leaf_weight.to_string())?;
        } else {
            tracing::warn!("blockIO.leafWeight ignored: this kernel has no blkio.leaf_weight");
        }
    }
    for device in &block_io.weight_device {
        let (major, minor, weight) = super::weight_device(device)?;
        if let Some(weight) = weight {
            write_file(
                dir,
                weight_device_file,
                &format!("{major}:{minor} {weight}"),
            )?;
        }
    }
    for (file, list) in throttles {
        for device in list {
            write_file(
                dir,
                file,
                &format!("{}:{} {}", device.major, device.minor, device.rate),
            )?;
        }
    }
    Ok(())
}

fn apply_hugetlb(cgroup: &Cgroup, limits: &[HugepageLimit]) -> Result<()> {
    let Some(dir) = cgroup.v1_dir("hugetlb") else {
        tracing::warn!(
            cgroup = %cgroup.path,
            "hugepage limits not applied: no cgroup v1 hugetlb hierarchy is mounted"
        );
        return Ok(());
    };
    for limit in limits {
        let size = super::check_page_size(&limit.page_size)?;
        let value = limit.limit.to_string();
        write_file(dir, &format!("hugetlb.{size}.limit_in_bytes"), &value)?;
        // Reservations are limited too where the kernel has them (5.7+),
        // as runc does.
        let reserved = format!("hugetlb.{size}.rsvd.limit_in_bytes");
        if dir.join(&reserved).exists() {
            write_file(dir, &reserved, &value)?;
        }
    }
    Ok(())
}

/// `linux.resources.unified` on a v1 or hybrid host: only files that exist
/// in the v2 directory (hybrid) can be honoured.
pub(super) fn apply_unified_keys(cgroup: &Cgroup, resources: &Resources) -> Result<()> {
    if resources.unified.is_empty() {
        return Ok(());
    }
    let dir = match (cgroup.mode, cgroup.unified_dir()) {
        (Mode::Hybrid, Some(dir)) => dir,
        _ => {
            return Err(Error::msg(format!(
                "linux.resources.unified ({}) needs cgroup v2, but this host uses cgroup v1",
                resources
                    .unified
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    };
    for (key, value) in &resources.unified {
        super::check_unified_key(key)?;
        if !dir.join(key).exists() {
            return Err(Error::msg(format!(
                "cannot apply linux.resources.unified {key:?}: {} does not exist (on this hybrid \
                 host the cgroup v2 hierarchy does not offer it; use the v1 resource fields)",
                dir.join(key).display()
            )));
        }
        write_file(dir, key, value)?;
    }
    Ok(())
}

pub(super) fn is_errno(error: &Error, errno: i32) -> bool {
    matches!(error, Error::Io { source, .. } if source.raw_os_error() == Some(errno))
}

// ---------------------------------------------------------------------------
// Freezer

const FREEZE_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) fn freeze(dir: &Path) -> Result<()> {
    let deadline = Instant::now() + FREEZE_TIMEOUT;
    let mut attempt: u32 = 0;
    loop {
        // v1 can stay FREEZING while processes keep forking; an
        // occasional thaw and pause gives it a chance to settle (runc
        // does the same).
        if attempt % 50 == 49 {
            let _ = write_file(dir, "freezer.state", "THAWED");
            sleep(Duration::from_millis(10));
        }
        write_file(dir, "freezer.state", "FROZEN")?;
        let state = read_file(dir, "freezer.state")?;
        match state.as_str() {
            "FROZEN" => return Ok(()),
            "FREEZING" => {}
            other => {
                return Err(Error::msg(format!(
                    "unexpected state {other:?} in {} while freezing",
                    dir.join("freezer.state").display()
                )));
            }
        }
        if Instant::now() >= deadline {
            // Stuck half-frozen is worse than not frozen.
            let _ = write_file(dir, "freezer.state", "THAWED");
            return Err(Error::msg(format!(
                "unable to freeze cgroup {}: still FREEZING after {}s",
                dir.display(),
                FREEZE_TIMEOUT.as_secs()
            )));
        }
        attempt += 1;
        sleep(Duration::from_millis(1));
    }
}

pub(super) fn thaw(dir: &Path) -> Result<()> {
    write_file(dir, "freezer.state", "THAWED")
}

pub(super) fn is_frozen(dir: &Path) -> Result<bool> {
    let deadline = Instant::now() + FREEZE_TIMEOUT;
    loop {
        let state = match read_optional(dir, "freezer.state")? {
            Some(state) => state,
            None => return Ok(false),
        };
        match state.as_str() {
            "THAWED" => return Ok(false),
            // FROZEN because an ancestor is frozen is not "paused".
            "FROZEN" => {
                return Ok(read_optional(dir, "freezer.self_freezing")?.is_none_or(|s| s == "1"));
            }
            "FREEZING" if Instant::now() < deadline => sleep(Duration::from_millis(1)),
            other => {
                return Err(Error::msg(format!(
                    "unexpected freezer state {other:?} in {}",
                    dir.join("freezer.state").display()
                )));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Stats

fn read_u64(dir: &Path, name: &str) -> Result<u64> {
    Ok(read_optional(dir, name)?
        .and_then(|text| stats::parse_value(&text, u64::MAX))
        .unwrap_or(0))
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions and only returns a value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

pub(super) fn stats(cgroup: &Cgroup) -> Result<Stats> {
    let mut stats = Stats::default();
    if let Some(dir) = cgroup.v1_dir("cpuacct") {
        stats.cpu = cpu_stats(dir, cgroup.v1_dir("cpu"))?;
    } else if let Some(dir) = cgroup.v1_dir("cpu") {
        stats.cpu.throttling = throttling(dir)?;
    }
    if let Some(dir) = cgroup.v1_dir("memory") {
        stats.memory = memory_stats(dir)?;
    }
    if let Some(dir) = cgroup.v1_dir("pids") {
        stats.pids.current = read_u64(dir, "pids.current")?;
        stats.pids.limit = read_optional(dir, "pids.max")?
            .and_then(|text| stats::parse_value(&text, 0))
            .unwrap_or(0);
    }
    if let Some(dir) = cgroup.v1_dir("blkio") {
        stats.blkio = blkio_stats(dir)?;
    }
    if let Some(dir) = cgroup.v1_dir("hugetlb") {
        for size in hugetlb_sizes(dir, ".limit_in_bytes")? {
            let entry = HugetlbStats {
                usage: read_u64(dir, &format!("hugetlb.{size}.usage_in_bytes"))?,
                max: read_u64(dir, &format!("hugetlb.{size}.max_usage_in_bytes"))?,
                failcnt: read_u64(dir, &format!("hugetlb.{size}.failcnt"))?,
            };
            stats.hugetlb.insert(size, entry);
        }
    }
    Ok(stats)
}

pub(super) fn hugetlb_sizes(dir: &Path, suffix: &str) -> Result<Vec<String>> {
    let names: Vec<String> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io(format!("list {}", dir.display()), e)),
    };
    Ok(stats::hugetlb_sizes(
        names.iter().map(String::as_str),
        suffix,
    ))
}

fn throttling(dir: &Path) -> Result<stats::Throttling> {
    let cpu_stat = read_optional(dir, "cpu.stat")?.unwrap_or_default();
    let map = stats::parse_flat_keyed(&cpu_stat);
    let get = |key: &str| map.get(key).copied().unwrap_or(0);
    Ok(stats::Throttling {
        periods: get("nr_periods"),
        throttled_periods: get("nr_throttled"),
        throttled_time: get("throttled_time"),
    })
}

fn cpu_stats(cpuacct: &Path, cpu: Option<&Path>) -> Result<CpuStats> {
    let mut stats = CpuStats::default();
    stats.usage.total = read_u64(cpuacct, "cpuacct.usage")?;
    let list = |name: &str| -> Result<Vec<u64>> {
        Ok(read_optional(cpuacct, name)?
            .map(|text| stats::parse_number_list(&text))
            .unwrap_or_default())
    };
    stats.usage.percpu = list("cpuacct.usage_percpu")?;
    stats.usage.percpu_kernel = list("cpuacct.usage_percpu_sys")?;
    stats.usage.percpu_user = list("cpuacct.usage_percpu_user")?;
    let ticks = read_optional(cpuacct, "cpuacct.stat")?.unwrap_or_default();
    let ticks = stats::parse_flat_keyed(&ticks);
    let nanos_per_tick = 1_000_000_000 / clock_ticks();
    stats.usage.user = ticks.get("user").copied().unwrap_or(0) * nanos_per_tick;
    stats.usage.kernel = ticks.get("system").copied().unwrap_or(0) * nanos_per_tick;
    if let Some(cpu) = cpu {
        stats.throttling = throttling(cpu)?;
    }
    Ok(stats)
}

fn memory_entry(dir: &Path, prefix: &str) -> Result<MemoryEntry> {
    Ok(MemoryEntry {
        limit: read_u64(dir, &format!("{prefix}.limit_in_bytes"))?,
        usage: read_u64(dir, &format!("{prefix}.usage_in_bytes"))?,
        max: read_u64(dir, &format!("{prefix}.max_usage_in_bytes"))?,
        failcnt: read_u64(dir, &format!("{prefix}.failcnt"))?,
    })
}

fn memory_stats(dir: &Path) -> Result<MemoryStats> {
    let raw = read_optional(dir, "memory.stat")?
        .map(|text| stats::parse_flat_keyed(&text))
        .unwrap_or_default();
    Ok(MemoryStats {
        cache: raw.get("cache").copied().unwrap_or(0),
        usage: memory_entry(dir, "memory")?,
        swap: memory_entry(dir, "memory.memsw")?,
        kernel: memory_entry(dir, "memory.kmem")?,
        kernel_tcp: memory_entry(dir, "memory.kmem.tcp")?,
        raw,
    })
}

fn blkio_stats(dir: &Path) -> Result<BlkioStats> {
    let first = |names: &[&str]| -> Result<Vec<stats::BlkioEntry>> {
        for name in names {
            if let Some(text) = read_optional(dir, name)? {
                let entries = stats::parse_blkio_v1(&text);
                if !entries.is_empty() {
                    return Ok(entries);
                }
            }
        }
        Ok(Vec::new())
    };
    Ok(BlkioStats {
        io_service_bytes_recursive: first(&[
            "blkio.io_service_bytes_recursive",
            "blkio.bfq.io_service_bytes_recursive",
            "blkio.throttle.io_service_bytes_recursive",
        ])?,
        io_serviced_recursive: first(&[
            "blkio.io_serviced_recursive",
            "blkio.bfq.io_serviced_recursive",
            "blkio.throttle.io_serviced_recursive",
        ])?,
    })
}
