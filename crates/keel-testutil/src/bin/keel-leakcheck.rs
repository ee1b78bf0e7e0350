//! Fails (exit 1) if the test suite left anything behind: mounts, processes,
//! cgroups, network namespaces named like keel's tests (`keel-test*`), or nftables
//! tables named `keel*` in the host's namespace.
//!
//! Leaks found on the first look are re-checked for a few seconds, so that lazy
//! unmounts and processes being killed have time to go away.

use std::time::{Duration, Instant};

use keel_testutil::leaks;

fn main() {
    let grace = std::env::args()
        .skip_while(|a| a != "--grace")
        .nth(1)
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(5.0);
    let deadline = Instant::now() + Duration::from_secs_f64(grace);
    let (leaks, zombies) = loop {
        let (leaks, zombies) = leaks::find();
        if leaks.is_empty() || Instant::now() >= deadline {
            break (leaks, zombies);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    for zombie in &zombies {
        println!("note: zombie (not counted): {}", zombie.what);
    }
    if leaks.is_empty() {
        println!("leak check: nothing left behind (mounts, processes, cgroups, netns, nftables)");
        return;
    }
    println!("leak check: {} thing(s) left behind:", leaks.len());
    for leak in &leaks {
        println!("  {:8} {}", leak.kind, leak.what);
    }
    println!(
        "clean up by hand: umount -l <mount>; kill <pid>; rmdir <cgroup> (deepest first); ip netns delete <name>; nft delete table <family> <name>"
    );
    std::process::exit(1);
}
