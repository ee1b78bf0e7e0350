//! `keel ps`.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Result;
use clap::Args;
use keel_engine::views;

use super::*;

// ---------------------------------------------------------------------------
// ps

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    pub all: bool,
    /// Only display container IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Show n last created containers (includes all states)
    #[arg(short = 'n', long)]
    pub last: Option<usize>,
    /// Show the latest created container (includes all states)
    #[arg(short, long)]
    pub latest: bool,
    /// Display total file sizes
    #[arg(short, long)]
    pub size: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Filter: status=, name=, id=, label=, ancestor=, exited=, network=, volume=, health=
    #[arg(short, long = "filter", value_name = "FILTER")]
    pub filter: Vec<String>,
    /// Format: table (default), json, or a Go template ({{.Names}} ...)
    #[arg(long)]
    pub format: Option<String>,
}

pub fn ps(ctx: &Context, args: &PsArgs) -> Result<i32> {
    let mut engine = ctx.engine()?;
    let mut containers = engine.list()?;
    let show_all = args.all || args.last.is_some() || args.latest || !args.filter.is_empty();
    if !show_all {
        containers.retain(|c| c.state.status.is_active());
    }
    let mut kept = Vec::new();
    for container in containers {
        if views::container::matches_filters(&container, &args.filter)? {
            kept.push(container);
        }
    }
    let limit = if args.latest { Some(1) } else { args.last };
    if let Some(limit) = limit {
        kept.truncate(limit);
    }
    let mut out = std::io::stdout().lock();
    if args.quiet {
        for c in &kept {
            writeln!(
                out,
                "{}",
                if args.no_trunc {
                    &c.id[..]
                } else {
                    &c.id[..12]
                }
            )?;
        }
        return Ok(0);
    }
    // -s: the writable layer, and with the image's size (docker's virtual).
    let image_sizes: BTreeMap<String, u64> = if args.size {
        crate::images::open(&ctx.root)?
            .metadata
            .images()?
            .into_iter()
            .map(|(record, _)| (record.id.to_string(), record.size))
            .collect()
    } else {
        BTreeMap::new()
    };
    let rows: Vec<serde_json::Value> = kept
        .iter()
        .map(|c| {
            let size = args.size.then(|| {
                (
                    keel_engine::copy::tree_size(&engine.layout.diff(&c.id)),
                    image_sizes.get(&c.image_id).copied().unwrap_or(0),
                )
            });
            let endpoints =
                keel_engine::network::endpoints_of(&mut engine.db, c).unwrap_or_default();
            let row = views::container::ps_row(
                c,
                args.no_trunc,
                size,
                views::network::ports_text(&endpoints),
            );
            serde_json::to_value(row).expect("a ps row serialises")
        })
        .collect();
    let listed = crate::template::render_list(
        &rows,
        args.format.as_deref(),
        &[
            ("ID", "CONTAINER ID"),
            ("RunningFor", "CREATED"),
            ("CreatedAt", "CREATED AT"),
        ],
    )?;
    match listed {
        Some(text) => out.write_all(text.as_bytes())?,
        None => {
            let mut table = vec![
                [
                    "CONTAINER ID",
                    "IMAGE",
                    "COMMAND",
                    "CREATED",
                    "STATUS",
                    "PORTS",
                    "NAMES",
                ]
                .map(String::from)
                .to_vec(),
            ];
            if args.size {
                table[0].push("SIZE".into());
            }
            for row in &rows {
                let cell = |k: &str| row[k].as_str().unwrap_or_default().to_string();
                let mut line = vec![
                    cell("ID"),
                    cell("Image"),
                    cell("Command"),
                    cell("RunningFor"),
                    cell("Status"),
                    cell("Ports"),
                    cell("Names"),
                ];
                if args.size {
                    line.push(cell("Size"));
                }
                table.push(line);
            }
            out.write_all(crate::images::render_table(&table).as_bytes())?;
        }
    }
    Ok(0)
}
