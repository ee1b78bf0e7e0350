//! `keel system df` and `keel image prune`, with docker's tables and words.
//! An image a container uses is "active": it is not reclaimable, and
//! `image prune -a` keeps it.

use std::io::{BufRead as _, Write as _};

use anyhow::{Context, Result};
use clap::Args;
use keel_image::reference::Reference;
use keel_image::store::ImageStore;

use crate::images::{render_table, since};
use keel_engine::views::human_size;

#[derive(Args, Debug)]
pub struct DfArgs {
    /// Show detailed information on space usage
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Remove all unused images, not just dangling ones
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
    /// Only images matching: until=TIME, label=KEY[=VALUE], label!=KEY[=VALUE] (repeatable)
    #[arg(long = "filter", value_name = "FILTER")]
    pub filter: Vec<String>,
}

/// Docker's RECLAIMABLE cell: `4.26MB (100%)`, or the size alone when the
/// total is 0.
pub fn reclaimable(reclaimable: u64, total: u64) -> String {
    match reclaimable.saturating_mul(100).checked_div(total) {
        Some(percent) => format!("{} ({percent}%)", human_size(reclaimable)),
        None => human_size(reclaimable),
    }
}

pub fn df(ctx: &crate::containers::Context, store: &ImageStore, args: &DfArgs) -> Result<()> {
    let mut engine = ctx.engine()?;
    let du = keel_engine::views::df::disk_usage(&mut engine, store)?;
    let mut out = std::io::stdout().lock();
    if !args.verbose {
        let rows = vec![
            ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
                .map(String::from)
                .to_vec(),
            vec![
                "Images".into(),
                du.images.len().to_string(),
                du.images_active.to_string(),
                human_size(du.images_total),
                reclaimable(du.images_reclaimable, du.images_total),
            ],
            vec![
                "Containers".into(),
                du.containers.len().to_string(),
                du.containers_active().to_string(),
                human_size(du.containers_total()),
                reclaimable(du.containers_reclaimable(), du.containers_total()),
            ],
            vec![
                "Local Volumes".into(),
                du.volumes.len().to_string(),
                du.volumes_active().to_string(),
                human_size(du.volumes_total()),
                reclaimable(du.volumes_reclaimable(), du.volumes_total()),
            ],
            vec![
                "Build Cache".into(),
                du.cache.len().to_string(),
                "0".into(),
                human_size(du.cache_total),
                human_size(du.cache_reclaimable),
            ],
        ];
        out.write_all(render_table(&rows).as_bytes())?;
        return Ok(());
    }
    let mut rows = vec![
        [
            "REPOSITORY",
            "TAG",
            "IMAGE ID",
            "CREATED",
            "SIZE",
            "SHARED SIZE",
            "UNIQUE SIZE",
            "CONTAINERS",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for image in &du.images {
        let names: Vec<(String, String)> = if image.tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            image
                .tags
                .iter()
                .filter_map(|t| Reference::parse(t).ok())
                .map(|r| (r.familiar_name(), r.tag().unwrap_or("<none>").to_string()))
                .collect()
        };
        for (repository, tag) in names {
            rows.push(vec![
                repository,
                tag,
                image.record.id.short().to_string(),
                since(&image.record.created),
                human_size(image.size),
                human_size(image.shared),
                human_size(image.size - image.shared),
                image.containers.to_string(),
            ]);
        }
    }
    writeln!(out, "Images space usage:\n")?;
    out.write_all(render_table(&rows).as_bytes())?;
    writeln!(out, "\nContainers space usage:\n")?;
    let mut table = vec![
        vec![
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "LOCAL VOLUMES",
            "SIZE",
            "CREATED",
            "STATUS",
            "NAMES",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>(),
    ];
    for (c, size) in &du.containers {
        table.push(vec![
            c.id[..12].to_string(),
            c.image.clone(),
            format!("\"{}\"", c.args.join(" ")),
            c.mounts
                .iter()
                .filter(|m| m.name.is_some())
                .count()
                .to_string(),
            human_size(*size),
            crate::images::since(&c.created),
            keel_engine::views::container::status_text(c),
            c.name.clone(),
        ]);
    }
    out.write_all(render_table(&table).as_bytes())?;
    writeln!(out, "\nLocal Volumes space usage:\n")?;
    let mut table = vec![["VOLUME NAME", "LINKS", "SIZE"].map(String::from).to_vec()];
    for (v, size, links) in &du.volumes {
        table.push(vec![v.name.clone(), links.to_string(), human_size(*size)]);
    }
    out.write_all(render_table(&table).as_bytes())?;
    let cache_total: u64 = du.cache.iter().map(|r| r.size).sum();
    writeln!(out, "\nBuild cache usage: {}\n", human_size(cache_total))?;
    let mut cache = vec![
        ["CACHE ID", "CACHE TYPE", "SIZE", "CREATED", "DESCRIPTION"]
            .map(String::from)
            .to_vec(),
    ];
    for record in &du.cache {
        cache.push(vec![
            record.key.chars().take(12).collect(),
            "regular".into(),
            human_size(record.size),
            record.created.clone(),
            record.description.lines().next().unwrap_or("").to_string(),
        ]);
    }
    out.write_all(render_table(&cache).as_bytes())?;
    Ok(())
}

/// `keel image prune`: dangling images (no tag), or with `-a` every image
/// no container uses; then the blobs and snapshots nothing references.
/// Docker's output.
pub fn prune(
    ctx: &crate::containers::Context,
    store: &mut ImageStore,
    args: &PruneArgs,
) -> Result<i32> {
    let _ = ctx;
    keel_engine::filter::Filters::parse(&args.filter, keel_engine::filter::PRUNE_KEYS)?;
    if !args.force {
        let warning = if args.all {
            "WARNING! This will remove all images without at least one container associated to them."
        } else {
            "WARNING! This will remove all dangling images."
        };
        if !confirm(warning)? {
            return Ok(0);
        }
    }
    let (lines, freed) = keel_engine::images::prune(store, args.all, &args.filter)?;
    let mut out = std::io::stdout().lock();
    if !lines.is_empty() {
        writeln!(out, "Deleted Images:")?;
        for line in &lines {
            writeln!(out, "{line}")?;
        }
        writeln!(out)?;
    }
    writeln!(out, "Total reclaimed space: {}", human_size(freed))?;
    Ok(0)
}

/// Docker's prune prompt: the warning, then "Are you sure you want to
/// continue? [y/N]"; whether the answer was yes.
pub fn confirm(warning: &str) -> Result<bool> {
    print!("{warning}\nAre you sure you want to continue? [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("read the answer from stdin")?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes" | "YES"))
}

#[derive(Args, Debug)]
pub struct SystemPruneArgs {
    /// Remove all unused images, not just dangling ones, and all build cache
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
    /// Prune anonymous volumes too
    #[arg(long)]
    pub volumes: bool,
}

/// `keel system prune`: stopped containers, unused networks, dangling (with
/// `-a` unused) images, the build cache and, with `--volumes`, unused
/// anonymous volumes; docker's prompt and output.
pub fn system_prune(ctx: &crate::containers::Context, args: &SystemPruneArgs) -> Result<i32> {
    if !args.force {
        let mut items = vec![
            "all stopped containers",
            "all networks not used by at least one container",
        ];
        if args.volumes {
            items.push("all anonymous volumes not used by at least one container");
        }
        items.push(if args.all {
            "all images without at least one container associated to them"
        } else {
            "all dangling images"
        });
        items.push(if args.all {
            "all build cache"
        } else {
            "unused build cache"
        });
        let mut warning = "WARNING! This will remove:".to_string();
        for item in items {
            warning.push_str(&format!("\n  - {item}"));
        }
        warning.push('\n');
        if !confirm(&warning)? {
            return Ok(0);
        }
    }
    let mut engine = ctx.engine()?;
    let mut out = std::io::stdout().lock();
    let mut section = |title: &str, lines: &[String]| -> std::io::Result<()> {
        if !lines.is_empty() {
            writeln!(out, "{title}:")?;
            for line in lines {
                writeln!(out, "{line}")?;
            }
            writeln!(out)?;
        }
        Ok(())
    };
    let (containers, mut freed) = engine.prune_stopped()?;
    section("Deleted Containers", &containers)?;
    let layout = engine.layout.clone();
    let networks: Vec<String> = keel_engine::network::prune(&layout, &mut engine.db, |_| false)?
        .into_iter()
        .map(|n| n.name)
        .collect();
    section("Deleted Networks", &networks)?;
    if args.volumes {
        let (volumes, bytes) = engine.prune_volumes(false)?;
        freed += bytes;
        section("Deleted Volumes", &volumes)?;
    }
    let mut store = crate::images::open(&ctx.root)?;
    let (images, bytes) = keel_engine::images::prune(&mut store, args.all, &[])?;
    freed += bytes;
    section("Deleted Images", &images)?;
    let (cache, bytes) = keel_build::cache::prune(&ctx.root, &mut store, args.all)?;
    freed += bytes;
    section("Deleted build cache objects", &cache)?;
    writeln!(out, "Total reclaimed space: {}", human_size(freed))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reclaimable_like_docker() {
        assert_eq!(reclaimable(0, 0), "0B");
        assert_eq!(reclaimable(4_261_000, 4_261_000), "4.26MB (100%)");
        assert_eq!(reclaimable(1_000, 3_000), "1kB (33%)");
    }
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Format the output using a Go template ({{.Containers}}, {{json .}})
    #[arg(short, long)]
    pub format: Option<String>,
}

/// `keel info`: what this keel is and holds, docker's field names.
pub fn info(ctx: &crate::containers::Context, args: &InfoArgs) -> Result<i32> {
    let mut engine = ctx.engine()?;
    let store = crate::images::open(&ctx.root)?;
    let mut value = keel_engine::views::system::info(&mut engine, &store)?;
    let (guest_kernel, vmm) = keel_vm::guest::describe();
    value["VMIsolation"] = serde_json::json!({ "GuestKernel": guest_kernel, "VMM": vmm });
    let number = |key: &str| value[key].as_u64().unwrap_or(0);
    let (running, paused, images, memory, free) = (
        number("ContainersRunning"),
        number("ContainersPaused"),
        number("Images"),
        number("MemTotal"),
        number("RootFreeSpace"),
    );
    let cgroup = value["CgroupVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let max_file = &value["LogOpts"]["max-file"];
    let total = number("Containers");
    if let Some(format) = &args.format {
        crate::template::print_values(std::slice::from_ref(&value), Some(format))?;
        return Ok(0);
    }
    let mut out = std::io::stdout().lock();
    let text = |key: &str| match &value[key] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    writeln!(out, "Server:")?;
    writeln!(out, " Containers: {total}")?;
    writeln!(out, "  Running: {running}")?;
    writeln!(out, "  Paused: {paused}")?;
    writeln!(out, "  Stopped: {}", total - running - paused)?;
    writeln!(out, " Images: {images}")?;
    writeln!(out, " Server Version: keel {}", keel_runtime::VERSION)?;
    writeln!(out, " Storage Driver: overlay")?;
    writeln!(
        out,
        " Logging Driver: json-file (max-size {}, max-file {max_file} by default; --log-opt changes it)",
        value["LogOpts"]["max-size"].as_str().unwrap_or("none")
    )?;
    writeln!(out, " Cgroup Driver: cgroupfs")?;
    writeln!(out, " Cgroup Version: {cgroup}")?;
    writeln!(out, " Runtimes: keel-runtime")?;
    writeln!(
        out,
        " Default Runtime: keel-runtime (OCI runtime-spec {})",
        keel_runtime::OCI_VERSION
    )?;
    writeln!(out, " Kernel Version: {}", text("KernelVersion"))?;
    writeln!(out, " Micro-VMs (--isolation vm):")?;
    writeln!(out, "  Guest Kernel: {guest_kernel}")?;
    writeln!(out, "  VMM: {vmm}")?;
    writeln!(out, " Operating System: {}", text("OperatingSystem"))?;
    writeln!(out, " OSType: linux")?;
    writeln!(out, " Architecture: {}", text("Architecture"))?;
    writeln!(out, " CPUs: {}", text("NCPU"))?;
    writeln!(out, " Total Memory: {}", human_size(memory))?;
    writeln!(out, " Name: {}", text("Name"))?;
    writeln!(out, " Keel Root Dir: {}", ctx.root.display())?;
    writeln!(out, " Keel Run Root: {}", ctx.runroot.display())?;
    writeln!(out, " Free Space In Root: {}", human_size(free))?;
    Ok(0)
}
