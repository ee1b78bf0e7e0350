//! `keel stats`, `keel update` and `keel port`, with docker's output.

use keel_engine::views::stats::Sample;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use keel_engine::spec;

use crate::containers::Context;

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    pub all: bool,
    /// Disable streaming stats and only pull the first result
    #[arg(long = "no-stream")]
    pub no_stream: bool,
    /// Do not truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Format: table, json, or a Go template ({{.Name}} {{.CPUPerc}} ...)
    #[arg(long)]
    pub format: Option<String>,
    pub containers: Vec<String>,
}

/// docker's memory sizes: binary units, four significant digits
/// (`1.953MiB`).
pub fn bytes_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{}{}", four_digits(value), UNITS[unit])
}

/// docker's network and block sizes: decimal units (the engine's).
pub use keel_engine::views::human_size;

/// Go's `%.4g`.
fn four_digits(value: f64) -> String {
    let digits = if value >= 1000.0 {
        0
    } else if value >= 100.0 {
        1
    } else if value >= 10.0 {
        2
    } else {
        3
    };
    let text = format!("{value:.digits$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

fn row(previous: Option<&Sample>, sample: &Sample, no_trunc: bool) -> serde_json::Value {
    let cpu_percent = previous.map(|b| sample.cpu_percent(b)).unwrap_or(0.0);
    let usage = sample.memory_usage();
    let limit = sample.memory_limit();
    let mem_percent = if limit > 0 {
        usage as f64 / limit as f64 * 100.0
    } else {
        0.0
    };
    let (read, write) = sample.block_io();
    let (rx, tx) = sample.network_io();
    let c = &sample.container;
    serde_json::json!({
        "ID": if no_trunc { c.id.clone() } else { c.id[..12].to_string() },
        "Container": if no_trunc { c.id.clone() } else { c.id[..12].to_string() },
        "Name": c.name,
        "CPUPerc": format!("{cpu_percent:.2}%"),
        "MemUsage": format!("{} / {}", bytes_size(usage), bytes_size(limit)),
        "MemPerc": format!("{mem_percent:.2}%"),
        "NetIO": format!("{} / {}", human_size(rx), human_size(tx)),
        "BlockIO": format!("{} / {}", human_size(read), human_size(write)),
        "PIDs": sample.stats.pids.current.to_string(),
    })
}

fn render(rows: &[serde_json::Value], format: Option<&str>) -> Result<String> {
    let mut out = String::new();
    let listed = crate::template::render_list(
        rows,
        format,
        &[
            ("CPUPerc", "CPU %"),
            ("MemUsage", "MEM USAGE / LIMIT"),
            ("MemPerc", "MEM %"),
            ("NetIO", "NET I/O"),
            ("BlockIO", "BLOCK I/O"),
            ("ID", "CONTAINER ID"),
            ("Container", "CONTAINER ID"),
        ],
    )?;
    match listed {
        Some(text) => out.push_str(&text),
        None => {
            let mut table = vec![
                [
                    "CONTAINER ID",
                    "NAME",
                    "CPU %",
                    "MEM USAGE / LIMIT",
                    "MEM %",
                    "NET I/O",
                    "BLOCK I/O",
                    "PIDS",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for r in rows {
                let cell = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                table.push(vec![
                    cell("ID"),
                    cell("Name"),
                    cell("CPUPerc"),
                    cell("MemUsage"),
                    cell("MemPerc"),
                    cell("NetIO"),
                    cell("BlockIO"),
                    cell("PIDs"),
                ]);
            }
            out.push_str(&crate::images::render_table(&table));
        }
    }
    Ok(out)
}

pub fn stats(ctx: &Context, args: &StatsArgs) -> Result<i32> {
    let mut engine = ctx.engine()?;
    let names: Vec<String> = if args.containers.is_empty() {
        engine
            .list()?
            .into_iter()
            .filter(|c| args.all || c.state.status.is_active())
            .map(|c| c.id)
            .collect()
    } else {
        args.containers.clone()
    };
    let sample_all = |engine: &mut keel_engine::Engine| -> Result<Vec<Sample>> {
        let mut samples = Vec::new();
        for name in &names {
            samples.push(Sample::take(engine, name)?);
        }
        Ok(samples)
    };
    let mut previous = sample_all(&mut engine)?;
    let interval = if args.no_stream {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(1)
    };
    loop {
        let started = Instant::now();
        std::thread::sleep(interval);
        let samples = sample_all(&mut engine)?;
        let rows: Vec<serde_json::Value> = samples
            .iter()
            .zip(&previous)
            .map(|(now, before)| row(Some(before), now, args.no_trunc))
            .collect();
        let text = render(&rows, args.format.as_deref())?;
        let mut out = std::io::stdout().lock();
        if !args.no_stream {
            // Redraw in place: home and clear, as docker does on a terminal.
            out.write_all(b"\x1b[2J\x1b[H")?;
        }
        out.write_all(text.as_bytes())?;
        out.flush()?;
        if args.no_stream {
            return Ok(0);
        }
        previous = samples;
        let _ = started;
    }
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// Memory limit
    #[arg(short, long)]
    pub memory: Option<String>,
    /// Swap limit equal to memory plus swap: -1 for unlimited
    #[arg(long = "memory-swap")]
    pub memory_swap: Option<String>,
    /// Memory soft limit
    #[arg(long = "memory-reservation")]
    pub memory_reservation: Option<String>,
    /// Number of CPUs
    #[arg(long)]
    pub cpus: Option<String>,
    /// CPU shares (relative weight)
    #[arg(short = 'c', long = "cpu-shares")]
    pub cpu_shares: Option<u64>,
    /// CPUs in which to allow execution (0-3, 0,1)
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// Tune container pids limit (-1 for unlimited)
    #[arg(long = "pids-limit")]
    pub pids_limit: Option<i64>,
    /// Restart policy to apply when a container exits
    #[arg(long)]
    pub restart: Option<String>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn update(ctx: &Context, args: &UpdateArgs) -> Result<i32> {
    let update = keel_engine::engine::Update {
        memory: args
            .memory
            .as_deref()
            .map(spec::parse_size)
            .transpose()?
            .map(|v| v as i64),
        memory_swap: args
            .memory_swap
            .as_deref()
            .map(spec::parse_swap)
            .transpose()?,
        memory_reservation: args
            .memory_reservation
            .as_deref()
            .map(spec::parse_size)
            .transpose()?
            .map(|v| v as i64),
        nano_cpus: args.cpus.as_deref().map(spec::parse_cpus).transpose()?,
        cpu_shares: args.cpu_shares,
        cpuset_cpus: args.cpuset_cpus.clone(),
        pids_limit: args.pids_limit,
        restart: args
            .restart
            .as_deref()
            .map(spec::parse_restart)
            .transpose()?,
    };
    let mut engine = ctx.engine()?;
    let mut code = 0;
    for name in &args.containers {
        match engine.update(name, &update) {
            Ok(_) => println!("{name}"),
            Err(e) => {
                eprintln!("Error response from daemon: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

#[derive(Args, Debug)]
pub struct PortArgs {
    pub container: String,
    /// PRIVATE_PORT[/PROTO]
    pub port: Option<String>,
}

/// `keel port`: the container's published ports.
pub fn port(ctx: &Context, args: &PortArgs) -> Result<i32> {
    let mut engine = ctx.engine()?;
    let container = engine.find(&args.container)?;
    crate::networks::port(&mut engine, &container, args.port.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_docker_stats_prints_them() {
        assert_eq!(bytes_size(0), "0B");
        assert_eq!(bytes_size(2_048_000), "1.953MiB");
        assert_eq!(bytes_size(64 << 20), "64MiB");
        assert_eq!(human_size(12_300), "12.3kB");
        assert_eq!(human_size(0), "0B");
    }
}
