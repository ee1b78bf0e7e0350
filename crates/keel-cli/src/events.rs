//! `keel events`, with docker's lines and filters.

use std::io::Write;

use anyhow::Result;
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
    let filter = Filter::parse(args.since.as_deref(), args.until.as_deref(), &args.filter)?;
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
    events::stream(&ctx.root, &filter, emit)?;
    Ok(0)
}
