//! `keel-vm-shim`: a container's micro-VM, started by keel-runtime's
//! `create` for a config with `io.keel.isolation: vm` (see keel-vm's
//! `guest::shim`). Not for people to run:
//!
//!     keel-vm-shim --bundle DIR --state DIR --id ID   (fds 3, 4, 5 from the runtime)

use std::path::PathBuf;

use keel_vm::guest::shim::{self, Args};

fn main() {
    let mut bundle = None;
    let mut state = None;
    let mut id = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--bundle") => bundle = args.next().map(PathBuf::from),
            Some("--state") => state = args.next().map(PathBuf::from),
            Some("--id") => id = args.next().and_then(|v| v.into_string().ok()),
            _ => usage(),
        }
    }
    let (Some(bundle), Some(state), Some(id)) = (bundle, state, id) else {
        usage();
    };
    std::process::exit(shim::main(Args { bundle, state, id }));
}

fn usage() -> ! {
    eprintln!("usage: keel-vm-shim --bundle DIR --state DIR --id ID (started by keel-runtime)");
    std::process::exit(2);
}
