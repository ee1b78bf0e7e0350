//! `keel top`.

use anyhow::Result;
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
    let (titles, rows) = keel_engine::views::container::top_of(&pids, &args.ps_options)?;
    let mut table = vec![titles];
    table.extend(rows);
    print!("{}", crate::images::render_table(&table));
    Ok(0)
}
