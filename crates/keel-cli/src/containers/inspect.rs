//! `keel inspect` (of containers).

use anyhow::Result;
use clap::Args;
use keel_engine::views;

use super::*;

// ---------------------------------------------------------------------------
// inspect, top

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Format the output using a Go template
    #[arg(short, long)]
    pub format: Option<String>,
    /// Display total file sizes
    #[arg(short, long)]
    pub size: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn inspect(ctx: &Context, args: &InspectArgs) -> Result<i32> {
    let mut engine = ctx.engine()?;
    let mut values = Vec::new();
    let mut code = 0;
    for name in &args.containers {
        match engine.find(name) {
            Ok(c) => values.push(views::container::inspect_sized(&mut engine, &c, args.size)),
            Err(e) => {
                eprintln!("Error: {e}");
                code = 1;
            }
        }
    }
    crate::template::print_values(&values, args.format.as_deref())?;
    Ok(code)
}
