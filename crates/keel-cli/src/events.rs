//! `keel events`, with docker's lines and filters.

use std::io::Write;

use anyhow::{Result, bail};
use clap::Args;
use keel_engine::events::{self, Event, Filter};

use crate::containers::Context;
use crate::template::Template;

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Show all events created since timestamp (or relative, e.g. 10m)
    #[arg(long)]
    pub since: Option<String>,
    /// Stream events until this timestamp (or relative)
    #[arg(long)]
    pub until: Option<String>,
    /// Filter: type=, event=, container=, image=, volume=, label=
    #[arg(short, long = "filter")]
    pub filter: Vec<String>,
    /// Format: json, or a Go template ({{.Action}} ...)
    #[arg(long)]
    pub format: Option<String>,
}

fn nanos(value: &str) -> Result<i128> {
    let now = jiff::Timestamp::now();
    if let Ok(t) = value.parse::<jiff::Timestamp>() {
        return Ok(t.as_nanosecond());
    }
    let seconds = keel_engine::filter::parse_until(value, now.as_second())?;
    Ok(i128::from(seconds) * 1_000_000_000)
}

/// docker's line: `TIME TYPE ACTION ID (k=v, ...)`.
pub fn line(event: &Event) -> String {
    let time = jiff::Timestamp::from_nanosecond(event.time_nano)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let attributes = event
        .actor
        .attributes
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{time} {} {} {} ({attributes})",
        event.kind, event.action, event.actor.id
    )
}

pub fn run(ctx: &Context, args: &EventsArgs) -> Result<i32> {
    let mut filter = Filter {
        since: args.since.as_deref().map(nanos).transpose()?,
        until: args.until.as_deref().map(nanos).transpose()?,
        filters: Vec::new(),
    };
    for f in &args.filter {
        let Some((key, value)) = f.split_once('=') else {
            bail!("bad format of filter (expected name=value): {f:?}");
        };
        if !["type", "event", "container", "image", "volume", "label"].contains(&key) {
            bail!("invalid filter '{key}'");
        }
        filter.filters.push((key.to_string(), value.to_string()));
    }
    let template = match args.format.as_deref() {
        None | Some("json") => None,
        Some(format) => Some(Template::parse(format)?),
    };
    let json = args.format.as_deref() == Some("json");
    let emit = |event: &Event| -> std::io::Result<()> {
        let text = if json {
            serde_json::to_string(event).unwrap_or_default()
        } else if let Some(template) = &template {
            template
                .render(&serde_json::to_value(event).unwrap_or_default())
                .map_err(|e| std::io::Error::other(e.to_string()))?
        } else {
            line(event)
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{text}")?;
        out.flush()
    };
    if filter.since.is_some() || filter.until.is_some() {
        for event in events::read(&ctx.root, &filter)? {
            match emit(&event) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(0),
                Err(e) => return Err(e.into()),
            }
        }
        // Past events only when the end is in the past.
        if filter
            .until
            .is_some_and(|u| u <= jiff::Timestamp::now().as_nanosecond())
        {
            return Ok(0);
        }
        filter.since = Some(jiff::Timestamp::now().as_nanosecond());
    }
    events::follow(&ctx.root, &filter, emit)?;
    Ok(0)
}
