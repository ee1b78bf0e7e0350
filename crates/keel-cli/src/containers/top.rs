//! `keel top`.

use anyhow::{Context as _, Result, bail};
use clap::Args;

use super::*;

#[derive(Args, Debug)]
pub struct TopArgs {
    pub container: String,
    /// ps options (default -ef; e.g. aux, -o pid,user,args), as the host's ps takes them
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_options: Vec<String>,
}

pub fn top(ctx: &Context, args: &TopArgs) -> Result<i32> {
    let mut engine = ctx.engine()?;
    let pids = match engine.pids(&args.container) {
        Ok(pids) => pids,
        Err(e) => return fail_command(e),
    };
    // As docker: the host's `ps` with the options given (-ef by default),
    // keeping the rows of the container's processes.
    let options: Vec<String> = if args.ps_options.is_empty() {
        vec!["-ef".into()]
    } else {
        args.ps_options
            .iter()
            .flat_map(|o| o.split_whitespace().map(str::to_string))
            .collect()
    };
    let output = std::process::Command::new("ps")
        .args(&options)
        .stdin(std::process::Stdio::null())
        .output()
        .context("run ps (keel top uses the host's ps: apt install procps)")?;
    if !output.status.success() {
        bail!(
            "ps {}: {}",
            options.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    print!("{}", top_table(&text, &pids)?);
    Ok(0)
}

/// The rows of `ps` output whose PID is one of `pids`, cut into the
/// header's columns (the last one takes the rest of the line), aligned.
pub(super) fn top_table(text: &str, pids: &[i32]) -> Result<String> {
    let mut lines = text.lines();
    let titles: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let Some(pid_column) = titles.iter().position(|t| *t == "PID") else {
        bail!("Couldn't find PID field in ps output");
    };
    let mut table = vec![titles.iter().map(|t| t.to_string()).collect::<Vec<_>>()];
    for line in lines {
        let mut cells: Vec<String> = Vec::new();
        let mut rest = line.trim_start();
        while cells.len() + 1 < titles.len() && !rest.is_empty() {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            cells.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
        cells.push(rest.to_string());
        let pid = cells.get(pid_column).and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|pid| pids.contains(&pid)) {
            table.push(cells);
        }
    }
    Ok(crate::images::render_table(&table))
}
