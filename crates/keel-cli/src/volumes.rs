//! `keel volume create/ls/inspect/rm/prune`, with docker's output.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};

use crate::containers::Context;

#[derive(Subcommand)]
pub enum VolumeCommand {
    /// Create a volume
    Create(CreateArgs),
    /// List volumes
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more volumes
    Inspect(InspectArgs),
    /// Remove one or more volumes
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove unused volumes (anonymous ones; all unused with -a)
    Prune(PruneArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Set metadata for a volume (KEY=VALUE)
    #[arg(short, long = "label")]
    pub label: Vec<String>,
    /// Volume driver (local only)
    #[arg(short, long, default_value = "local")]
    pub driver: String,
    pub name: Option<String>,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only display volume names
    #[arg(short, long)]
    pub quiet: bool,
    /// Filter: dangling=true|false, name=..., label=KEY[=VALUE]
    #[arg(short, long = "filter")]
    pub filter: Vec<String>,
    /// Format: table, json, or a Go template
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Format the output using a Go template
    #[arg(short, long)]
    pub format: Option<String>,
    #[arg(required = true)]
    pub volumes: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Do not fail on a volume that does not exist
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true)]
    pub volumes: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Remove all unused volumes, not just anonymous ones
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
}

pub fn run(ctx: &Context, command: &VolumeCommand) -> Result<i32> {
    let mut engine = ctx.engine()?;
    match command {
        VolumeCommand::Create(args) => {
            if args.driver != "local" {
                bail!(
                    "error looking up volume plugin {}: plugin not found",
                    args.driver
                );
            }
            let mut labels = BTreeMap::new();
            for label in &args.label {
                let (k, v) = label.split_once('=').unwrap_or((label, ""));
                labels.insert(k.to_string(), v.to_string());
            }
            let volume = engine.create_volume(args.name.as_deref(), labels)?;
            println!("{}", volume.name);
            Ok(0)
        }
        VolumeCommand::Ls(args) => {
            let mut rows = Vec::new();
            for volume in engine.db.volumes()? {
                let in_use = !engine.volume_users(&volume.name)?.is_empty();
                let mut keep = true;
                for filter in &args.filter {
                    let Some((key, value)) = filter.split_once('=') else {
                        bail!("bad format of filter (expected name=value): {filter:?}");
                    };
                    keep &= match key {
                        "dangling" => match value {
                            "true" | "1" => !in_use,
                            "false" | "0" => in_use,
                            _ => bail!("invalid filter 'dangling={value}'"),
                        },
                        "name" => volume.name.contains(value),
                        "label" => match value.split_once('=') {
                            Some((k, v)) => volume.labels.get(k).is_some_and(|x| x == v),
                            None => volume.labels.contains_key(value),
                        },
                        "driver" => value == "local",
                        other => bail!("invalid filter '{other}'"),
                    };
                }
                if keep {
                    rows.push(volume);
                }
            }
            let mut out = std::io::stdout().lock();
            if args.quiet {
                for v in &rows {
                    writeln!(out, "{}", v.name)?;
                }
                return Ok(0);
            }
            let values: Vec<serde_json::Value> = rows
                .iter()
                .map(|v| {
                    serde_json::json!({
                        "Driver": "local",
                        "Name": v.name,
                        "Scope": "local",
                        "Mountpoint": engine.layout.volume_data(&v.name),
                        "Labels": v.labels.iter().map(|(k, x)| format!("{k}={x}")).collect::<Vec<_>>().join(","),
                    })
                })
                .collect();
            let listed = crate::template::render_list(
                &values,
                args.format.as_deref(),
                &[("Name", "VOLUME NAME")],
            )?;
            match listed {
                Some(text) => out.write_all(text.as_bytes())?,
                None => {
                    let mut table = vec![vec!["DRIVER".to_string(), "VOLUME NAME".to_string()]];
                    for v in &rows {
                        table.push(vec!["local".into(), v.name.clone()]);
                    }
                    out.write_all(crate::images::render_table(&table).as_bytes())?;
                }
            }
            Ok(0)
        }
        VolumeCommand::Inspect(args) => {
            let mut values = Vec::new();
            let mut code = 0;
            for name in &args.volumes {
                match engine.volume(name) {
                    Ok(volume) => values.push(engine.volume_value(&volume)),
                    Err(e) => {
                        eprintln!("Error: {e}");
                        code = 1;
                    }
                }
            }
            crate::template::print_values(&values, args.format.as_deref())?;
            Ok(code)
        }
        VolumeCommand::Rm(args) => {
            let mut code = 0;
            for name in &args.volumes {
                match engine.remove_volume(name, args.force) {
                    Ok(()) => println!("{name}"),
                    Err(e) => {
                        eprintln!("Error response from daemon: {e}");
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
        VolumeCommand::Prune(args) => {
            if !args.force {
                let warning = if args.all {
                    "WARNING! This will remove all local volumes not used by at least one container."
                } else {
                    "WARNING! This will remove anonymous local volumes not used by at least one container."
                };
                if !crate::system::confirm(warning)? {
                    return Ok(0);
                }
            }
            let (removed, freed) = engine.prune_volumes(args.all)?;
            if !removed.is_empty() {
                println!("Deleted Volumes:");
                for name in &removed {
                    println!("{name}");
                }
                println!();
            }
            println!(
                "Total reclaimed space: {}",
                keel_engine::views::human_size(freed)
            );
            Ok(0)
        }
    }
}
