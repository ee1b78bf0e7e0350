//! `keel system df` and `keel image prune`, with docker's tables and words.
//!
//! keel has no containers yet (issue 4): no image is "active", so every
//! image is reclaimable and `image prune -a` may remove them all. Once
//! containers exist, the images they use count as active here and are kept
//! by the prune.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, Write as _};

use anyhow::{Context, Result};
use clap::Args;
use keel_image::digest::Digest;
use keel_image::reference::Reference;
use keel_image::store::ImageStore;

use crate::images::{human_size, render_table, since};

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

/// Per image: its size, the part shared with other images (snapshots more
/// than one image uses) and the rest.
struct ImageUsage {
    size: u64,
    shared: u64,
}

fn image_usage(store: &ImageStore, chains: &[Vec<Digest>]) -> Vec<ImageUsage> {
    let mut users: BTreeMap<&Digest, usize> = BTreeMap::new();
    for chain_ids in chains {
        for chain_id in chain_ids.iter().collect::<BTreeSet<_>>() {
            *users.entry(chain_id).or_default() += 1;
        }
    }
    chains
        .iter()
        .map(|chain_ids| {
            let unique: BTreeSet<&Digest> = chain_ids.iter().collect();
            let size = unique.iter().map(|c| store.snapshots.size(c)).sum();
            let shared = unique
                .iter()
                .filter(|c| users.get(*c).copied().unwrap_or(0) > 1)
                .map(|c| store.snapshots.size(c))
                .sum();
            ImageUsage { size, shared }
        })
        .collect()
}

pub fn df(store: &ImageStore, args: &DfArgs) -> Result<()> {
    let images = store.metadata.images()?;
    // What the images take on disk: each blob and each snapshot once.
    let blobs: u64 = store.content.list()?.iter().map(|(_, size)| size).sum();
    let snapshots: u64 = store
        .snapshots
        .list()?
        .iter()
        .map(|c| store.snapshots.size(c))
        .sum();
    let total = blobs + snapshots;
    // No containers yet: no image is active, all of it is reclaimable.
    let active = 0;
    let mut out = std::io::stdout().lock();
    if !args.verbose {
        let rows = vec![
            ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
                .map(String::from)
                .to_vec(),
            vec![
                "Images".into(),
                images.len().to_string(),
                active.to_string(),
                human_size(total),
                reclaimable(total, total),
            ],
            zero_row("Containers"),
            zero_row("Local Volumes"),
            zero_row("Build Cache"),
        ];
        out.write_all(render_table(&rows).as_bytes())?;
        return Ok(());
    }
    let chains: Vec<Vec<Digest>> = images.iter().map(|(r, _)| r.chain_ids.clone()).collect();
    let usage = image_usage(store, &chains);
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
    for ((record, tags), usage) in images.iter().zip(&usage) {
        let names: Vec<(String, String)> = if tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            tags.iter()
                .filter_map(|t| Reference::parse(t).ok())
                .map(|r| (r.familiar_name(), r.tag().unwrap_or("<none>").to_string()))
                .collect()
        };
        for (repository, tag) in names {
            rows.push(vec![
                repository,
                tag,
                record.id.short().to_string(),
                since(&record.created),
                human_size(usage.size),
                human_size(usage.shared),
                human_size(usage.size - usage.shared),
                "0".into(),
            ]);
        }
    }
    writeln!(out, "Images space usage:\n")?;
    out.write_all(render_table(&rows).as_bytes())?;
    writeln!(out, "\nContainers space usage:\n")?;
    let containers = [vec![
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
    .collect()];
    out.write_all(render_table(&containers).as_bytes())?;
    writeln!(out, "\nLocal Volumes space usage:\n")?;
    let volumes = [["VOLUME NAME", "LINKS", "SIZE"].map(String::from).to_vec()];
    out.write_all(render_table(&volumes).as_bytes())?;
    writeln!(out, "\nBuild cache usage: 0B\n")?;
    let cache = [[
        "CACHE ID",
        "CACHE TYPE",
        "SIZE",
        "CREATED",
        "LAST USED",
        "USAGE",
        "SHARED",
    ]
    .map(String::from)
    .to_vec()];
    out.write_all(render_table(&cache).as_bytes())?;
    Ok(())
}

fn zero_row(kind: &str) -> Vec<String> {
    vec![
        kind.into(),
        "0".into(),
        "0".into(),
        "0B".into(),
        "0B".into(),
    ]
}

/// `keel image prune`: dangling images (no tag), or with `-a` every image
/// no container uses (all of them, until containers exist); then the blobs
/// and snapshots nothing references. Docker's output.
pub fn prune(store: &mut ImageStore, args: &PruneArgs) -> Result<i32> {
    let mut flags = args.filter.clone();
    crate::filter::Filters::parse(&flags, crate::filter::PRUNE_KEYS)?;
    if !args.all {
        flags.push("dangling=true".into());
    }
    let filters = crate::filter::Filters::parse(&flags, crate::filter::IMAGES_KEYS)?;
    if !args.force {
        let warning = if args.all {
            "WARNING! This will remove all images without at least one container associated to them."
        } else {
            "WARNING! This will remove all dangling images."
        };
        print!("{warning}\nAre you sure you want to continue? [y/N] ");
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .context("read the answer from stdin")?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "Yes" | "YES") {
            return Ok(0);
        }
    }
    let mut lines = Vec::new();
    let mut digests = BTreeSet::new();
    for (record, tags) in crate::images::select(store, &filters)? {
        for tag in &tags {
            store.metadata.untag(tag)?;
            if let Ok(reference) = Reference::parse(tag) {
                let name = reference.familiar_name();
                lines.push(format!(
                    "untagged: {name}:{}",
                    reference.tag().unwrap_or("latest")
                ));
                let by_digest = format!("untagged: {name}@{}", record.manifest);
                if digests.insert(by_digest.clone()) {
                    lines.push(by_digest);
                }
            }
        }
        if store.metadata.delete_image(&record.id)? {
            lines.push(format!("deleted: {}", record.id));
        }
    }
    let freed = store.collect_garbage()?;
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
