//! `keel logs`.

use std::io::Write;

use anyhow::{Context as _, Result};
use clap::Args;

use super::*;

// ---------------------------------------------------------------------------
// logs

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short, long)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs ("all" for all)
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Show logs since timestamp (e.g. 2013-01-02T13:23:37Z) or relative (e.g. 42m)
    #[arg(long)]
    pub since: Option<String>,
    /// Show logs before a timestamp or relative (e.g. 42m)
    #[arg(long)]
    pub until: Option<String>,
    /// Show timestamps
    #[arg(short, long)]
    pub timestamps: bool,
    pub container: String,
}

pub(super) fn time_bound(value: &str) -> Result<f64> {
    let now = jiff::Timestamp::now().as_second();
    let seconds = keel_engine::filter::parse_until(value, now)?;
    Ok(seconds as f64)
}

pub fn logs(ctx: &Context, args: &LogsArgs) -> Result<i32> {
    let mut engine = ctx.engine()?;
    let container = engine.find(&args.container)?;
    let options = keel_engine::logs::ReadOptions {
        tail: match args.tail.as_str() {
            "all" | "-1" => None,
            n => Some(
                n.parse()
                    .with_context(|| format!("invalid value for --tail: {n}"))?,
            ),
        },
        since: args.since.as_deref().map(time_bound).transpose()?,
        until: args.until.as_deref().map(time_bound).transpose()?,
    };
    let path = engine.layout.log(&container.id);
    let timestamps = args.timestamps;
    let emit = move |entry: &keel_engine::logs::Entry| -> std::io::Result<()> {
        let mut line = Vec::new();
        if timestamps {
            line.extend_from_slice(entry.time.as_bytes());
            line.push(b' ');
        }
        line.extend_from_slice(entry.log.as_bytes());
        match entry.stream {
            keel_engine::logs::Stream::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&line)?;
                out.flush()
            }
            keel_engine::logs::Stream::Stderr => {
                let mut err = std::io::stderr().lock();
                err.write_all(&line)?;
                err.flush()
            }
        }
    };
    let (entries, end) = keel_engine::logs::read_to(&path, &options)?;
    for entry in entries {
        if emit(&entry).is_err() {
            return Ok(0);
        }
    }
    if args.follow && container.state.status.is_active() {
        let id = container.id.clone();
        let follow_options = keel_engine::logs::ReadOptions {
            tail: None,
            ..options
        };
        keel_engine::logs::follow(&path, end, &follow_options, emit, || {
            engine
                .find(&id)
                .map(|c| !c.state.status.is_active())
                .unwrap_or(true)
        })?;
    }
    Ok(0)
}
