//! `keel container prune`.

use anyhow::Result;
use clap::Args;

use super::*;

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
}

pub fn prune(ctx: &Context, args: &PruneArgs) -> Result<i32> {
    if !args.force && !crate::system::confirm("WARNING! This will remove all stopped containers.")?
    {
        return Ok(0);
    }
    let mut engine = ctx.engine()?;
    let (removed, freed) = engine.prune_stopped()?;
    if !removed.is_empty() {
        println!("Deleted Containers:");
        for id in &removed {
            println!("{id}");
        }
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        keel_engine::views::human_size(freed)
    );
    Ok(0)
}
