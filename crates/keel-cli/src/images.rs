//! Image commands: `images`, `load`, `import`, `tag`, `rmi`,
//! `image inspect`, `image history`, with docker's columns and output.

use keel_engine::views::human_size;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use keel_image::metadata::ImageRecord;
use keel_image::reference::Reference;
use keel_image::store::ImageStore;

use keel_engine::filter::{self, Filters};

#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Show all images (keel keeps no intermediate images yet, so the same as without)
    #[arg(short, long)]
    pub all: bool,
    /// Only show image IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Show digests
    #[arg(long)]
    pub digests: bool,
    /// Show full image IDs
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Format: table (default), json, or a Go template ({{.Repository}}:{{.Tag}}, table {{.ID}}\t{{.Size}})
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Filter: dangling=true|false, reference=PATTERN, label=KEY[=VALUE],
    /// before=IMAGE, since=IMAGE, until=TIME (repeatable)
    #[arg(short, long = "filter", value_name = "FILTER")]
    pub filter: Vec<String>,
    /// Only images whose name matches: REPOSITORY[:TAG], globs allowed (`busybox`, `localhost/app:*`)
    pub repository: Option<String>,
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Read from a tar archive file (docker save, podman save, OCI layout), or a layout directory; default stdin
    #[arg(short, long)]
    pub input: Option<PathBuf>,
    /// Suppress the load output
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Apply Dockerfile instruction to the created image (CMD, ENV, ...)
    #[arg(short, long = "change")]
    pub change: Vec<String>,
    /// Set commit message for imported image
    #[arg(short, long)]
    pub message: Option<String>,
    /// A root filesystem tarball (plain, gzip or zstd), or - for stdin
    pub file: String,
    /// The name to give the image
    pub reference: Option<String>,
}

#[derive(Args, Debug)]
pub struct TagArgs {
    pub source: String,
    pub target: String,
}

#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Remove the image even if it has several tags
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Format the output using a Go template
    #[arg(short, long)]
    pub format: Option<String>,
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Only show image IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Format: table (default), json, or a Go template ({{.CreatedBy}} ...)
    #[arg(long)]
    pub format: Option<String>,
    pub image: String,
}

pub fn open(root: &Path) -> Result<ImageStore> {
    ImageStore::open(root).with_context(|| format!("open keel's store at {}", root.display()))
}

/// Docker's "2 weeks ago" from an RFC 3339 time.
pub fn since(created: &str) -> String {
    let Some(then) = parse_rfc3339(created) else {
        return "N/A".to_string();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let secs = (now - then).max(0);
    let (n, unit) = match secs {
        s if s < 1 => return "Less than a second ago".to_string(),
        s if s < 60 => (s, "second"),
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86_400 => (s / 3600, "hour"),
        s if s < 86_400 * 14 => (s / 86_400, "day"),
        s if s < 86_400 * 60 => (s / (86_400 * 7), "week"),
        s if s < 86_400 * 365 * 2 => (s / (86_400 * 30), "month"),
        s => (s / (86_400 * 365), "year"),
    };
    match (n, unit) {
        (1, "hour") => "About an hour ago".to_string(),
        (1, "minute") => "About a minute ago".to_string(),
        (1, unit) => format!("1 {unit} ago"),
        (n, unit) => format!("{n} {unit}s ago"),
    }
}

/// Seconds since the epoch of an RFC 3339 time (as image configs hold).
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    text.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

fn short_id(record: &ImageRecord, no_trunc: bool) -> String {
    if no_trunc {
        record.id.to_string()
    } else {
        record.id.short().to_string()
    }
}

pub fn images(store: &ImageStore, args: &ImagesArgs) -> Result<()> {
    let mut flags = args.filter.clone();
    if let Some(repository) = &args.repository {
        flags.push(format!("reference={repository}"));
    }
    let filters = Filters::parse(&flags, filter::IMAGES_KEYS)?;
    let mut rows = Vec::new();
    for (record, tags) in filter::select(store, &filters)? {
        let names: Vec<(String, String)> = if tags.is_empty() {
            vec![("<none>".to_string(), "<none>".to_string())]
        } else {
            tags.iter()
                .filter_map(|t| Reference::parse(t).ok())
                .map(|r| (r.familiar_name(), r.tag().unwrap_or("<none>").to_string()))
                .collect()
        };
        for (repository, tag) in names {
            rows.push((repository, tag, record.clone()));
        }
    }
    let mut out = std::io::stdout().lock();
    if args.quiet {
        let mut seen = std::collections::BTreeSet::new();
        for (_, _, record) in &rows {
            if seen.insert(record.id.clone()) {
                writeln!(out, "{}", short_id(record, args.no_trunc))?;
            }
        }
        return Ok(());
    }
    let values: Vec<serde_json::Value> = rows
        .iter()
        .map(|(repository, tag, record)| {
            serde_json::json!({
                "Containers": "N/A",
                "CreatedAt": record.created,
                "CreatedSince": since(&record.created),
                "Digest": record.manifest.to_string(),
                "ID": short_id(record, args.no_trunc),
                "Repository": repository,
                "SharedSize": "N/A",
                "Size": human_size(record.size),
                "Tag": tag,
                "UniqueSize": "N/A",
                "VirtualSize": human_size(record.size),
            })
        })
        .collect();
    let listed = crate::template::render_list(
        &values,
        Some(&args.format),
        &[
            ("ID", "IMAGE ID"),
            ("CreatedSince", "CREATED"),
            ("CreatedAt", "CREATED AT"),
            ("VirtualSize", "SIZE"),
            ("SharedSize", "SHARED SIZE"),
            ("UniqueSize", "UNIQUE SIZE"),
        ],
    )?;
    if let Some(text) = listed {
        out.write_all(text.as_bytes())?;
        return Ok(());
    }
    let mut table: Vec<Vec<String>> = Vec::new();
    let mut header = vec!["REPOSITORY", "TAG"];
    if args.digests {
        header.push("DIGEST");
    }
    header.extend(["IMAGE ID", "CREATED", "SIZE"]);
    table.push(header.into_iter().map(String::from).collect());
    for (repository, tag, record) in &rows {
        let mut row = vec![repository.clone(), tag.clone()];
        if args.digests {
            row.push(record.manifest.to_string());
        }
        row.extend([
            short_id(record, args.no_trunc),
            since(&record.created),
            human_size(record.size),
        ]);
        table.push(row);
    }
    out.write_all(render_table(&table).as_bytes())?;
    Ok(())
}

/// Columns separated by at least three spaces, as docker's tabwriter does.
pub fn render_table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}", width = widths[i] + 3));
            }
        }
        out.push('\n');
    }
    out
}

pub fn load(store: &mut ImageStore, args: &LoadArgs) -> Result<()> {
    let loaded = match &args.input {
        Some(path) => store.load(path)?,
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                bail!("requested load from stdin, but stdin is empty");
            }
            store.load_stream(std::io::stdin().lock())?
        }
    };
    for (record, tags) in &loaded {
        let name = tags.first().cloned().unwrap_or_default();
        keel_engine::events::record(
            store.root(),
            "image",
            "load",
            &record.id.to_string(),
            &[("name", &name)],
        );
    }
    if !args.quiet {
        for (record, tags) in loaded {
            if tags.is_empty() {
                println!("Loaded image ID: {}", record.id);
            }
            for tag in tags {
                let familiar = Reference::parse(&tag)
                    .map(|r| format!("{}:{}", r.familiar_name(), r.tag().unwrap_or("latest")))
                    .unwrap_or(tag);
                println!("Loaded image: {familiar}");
            }
        }
    }
    Ok(())
}

pub fn import(store: &mut ImageStore, args: &ImportArgs) -> Result<()> {
    let reference = args
        .reference
        .as_deref()
        .map(Reference::parse)
        .transpose()?;
    // The changes are checked before anything is read.
    let mut container_config = keel_image::manifest::ContainerConfig::default();
    keel_engine::files::apply_changes(&mut container_config, &args.change)?;
    let message = args.message.clone();
    let change = |config: &mut keel_image::manifest::ImageConfig| {
        if !args.change.is_empty() {
            config.config = Some(container_config);
        }
        if let (Some(message), Some(entry)) = (message, config.history.last_mut()) {
            entry.comment = Some(message);
        }
    };
    let record = if args.file == "-" {
        store.import_with(std::io::stdin().lock(), reference.as_ref(), change)?
    } else {
        let file =
            std::fs::File::open(&args.file).with_context(|| format!("open {}", args.file))?;
        store.import_with(file, reference.as_ref(), change)?
    };
    let name = reference.as_ref().map(Reference::full).unwrap_or_default();
    keel_engine::events::record(
        store.root(),
        "image",
        "import",
        &record.id.to_string(),
        &[("name", &name)],
    );
    println!("{}", record.id);
    Ok(())
}

pub fn tag(store: &mut ImageStore, args: &TagArgs) -> Result<()> {
    Ok(keel_engine::images::tag(store, &args.source, &args.target)?)
}

pub fn rmi(store: &mut ImageStore, args: &RmiArgs) -> Result<i32> {
    let mut failed = false;
    for name in &args.images {
        match keel_engine::images::remove(store, name, args.force) {
            Ok(lines) => {
                for line in lines {
                    println!("{line}");
                }
            }
            Err(e) => {
                eprintln!("Error: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

pub fn inspect(store: &ImageStore, args: &InspectArgs) -> Result<i32> {
    let mut out = Vec::new();
    let mut failed = false;
    for name in &args.images {
        match store.inspect(name) {
            Ok(image) => out.push(serde_json::to_value(image)?),
            Err(e) => {
                tracing::debug!("inspect {name}: {e}");
                eprintln!("Error: No such image: {name}");
                failed = true;
            }
        }
    }
    crate::template::print_values(&out, args.format.as_deref())?;
    Ok(if failed { 1 } else { 0 })
}

pub fn history(store: &ImageStore, args: &HistoryArgs) -> Result<()> {
    let record = store.resolve(&args.image)?;
    let config = store.config(&record)?;
    let mut rows = vec![
        ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]
            .map(String::from)
            .to_vec(),
    ];
    let sizes = store.layer_sizes(&record);
    let mut layer = sizes.len();
    let mut values = Vec::new();
    let entries: Vec<_> = config.history.iter().rev().collect();
    for (i, entry) in entries.iter().enumerate() {
        let size = if entry.empty_layer {
            0
        } else {
            layer = layer.saturating_sub(1);
            sizes.get(layer).copied().unwrap_or(0)
        };
        let id = if i == 0 {
            short_id(&record, args.no_trunc)
        } else {
            "<missing>".to_string()
        };
        if args.quiet {
            println!("{id}");
            continue;
        }
        let mut created_by = entry.created_by.clone().unwrap_or_default();
        if !args.no_trunc && created_by.chars().count() > 45 {
            created_by = created_by.chars().take(44).collect::<String>() + "…";
        }
        let created_since = entry
            .created
            .as_deref()
            .map(since)
            .unwrap_or_else(|| "N/A".into());
        values.push(serde_json::json!({
            "ID": id,
            "CreatedAt": entry.created.clone().unwrap_or_default(),
            "CreatedSince": created_since,
            "CreatedBy": created_by,
            "Size": human_size(size),
            "Comment": entry.comment.clone().unwrap_or_default(),
        }));
        rows.push(vec![
            id,
            created_since,
            created_by,
            human_size(size),
            entry.comment.clone().unwrap_or_default(),
        ]);
    }
    if args.quiet {
        return Ok(());
    }
    let listed = crate::template::render_list(
        &values,
        args.format.as_deref(),
        &[
            ("ID", "IMAGE"),
            ("CreatedSince", "CREATED"),
            ("CreatedAt", "CREATED AT"),
            ("CreatedBy", "CREATED BY"),
        ],
    )?;
    match listed {
        Some(text) => print!("{text}"),
        None => print!("{}", render_table(&rows)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(4_261_000), "4.26MB");
        assert_eq!(human_size(77_800_000), "77.8MB");
        assert_eq!(human_size(1_000_000_000), "1GB");
        assert_eq!(human_size(123_456_789), "123MB");
    }

    #[test]
    fn rfc3339_parses() {
        assert_eq!(parse_rfc3339("1970-01-02T00:00:00Z"), Some(86_400));
        assert_eq!(parse_rfc3339("2000-03-01T01:02:03.5Z"), Some(951_872_523));
        assert_eq!(since("garbage"), "N/A");
    }
}
