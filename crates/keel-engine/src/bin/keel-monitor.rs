//! `keel-monitor`: the process that holds one running container (see
//! keel-engine's `monitor`). keel starts it; it is small on purpose (one
//! per container), so it takes its few arguments without an argument
//! parser:
//!
//!     keel-monitor --root DIR --runroot DIR --report-fd N [--wait-for-attach] ID

use keel_engine::monitor::{self, Options};
use keel_engine::paths::Layout;

fn main() {
    let mut root = None;
    let mut runroot = None;
    let mut report_fd = None;
    let mut wait_for_attach = false;
    let mut id = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--root") => root = args.next(),
            Some("--runroot") => runroot = args.next(),
            Some("--report-fd") => {
                report_fd = args
                    .next()
                    .and_then(|v| v.to_str().and_then(|v| v.parse().ok()))
            }
            Some("--wait-for-attach") => wait_for_attach = true,
            Some(other) if !other.starts_with("--") && id.is_none() => id = Some(other.to_string()),
            _ => usage(),
        }
    }
    let (Some(root), Some(runroot), Some(id)) = (root, runroot, id) else {
        usage();
    };
    std::process::exit(monitor::main(Options {
        layout: Layout::new(root, runroot),
        id,
        report_fd,
        wait_for_attach,
    }));
}

fn usage() -> ! {
    eprintln!(
        "usage: keel-monitor --root DIR --runroot DIR --report-fd N [--wait-for-attach] ID (started by keel)"
    );
    std::process::exit(2);
}
