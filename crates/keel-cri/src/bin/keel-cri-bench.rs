//! keel-cri-bench: what a Kubernetes node spends on pods, per runtime
//! handler, through containerd's CRI plugin (bench/cri runs it and prints
//! the ratios).
//!
//!     keel-cri-bench --keel-runtime PATH [--handlers keel,runc,crun] [--runs N] [--churn N] [--resident N]
//!
//! For each handler, in rounds that take the handlers in turn:
//! - `start H MS`: one pod started as kubelet starts it (RunPodSandbox,
//!   CreateContainer, StartContainer of `sleep`), until StartContainer
//!   returns (the container is running), N times;
//! - `churn H SECONDS`: N pods made and removed, two at a time;
//! - `resident H KB`: the node-side memory per running pod (the PSS of the
//!   containerd shims and anything else left outside the pods' cgroups
//!   that names the node), with `--resident` pods up.
//!
//! It makes its own node (containerd in a temp dir and a network namespace
//! of its own) and removes it at the end.

use std::time::Instant;

use keel_cri::{Client, Node};

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut keel, mut handlers, mut runs, mut churn, mut resident) =
        (None, "keel,runc".to_string(), 10usize, 50usize, 10usize);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--keel-runtime" => keel = Some(value()),
            "--handlers" => handlers = value(),
            "--runs" => runs = value().parse().unwrap_or_else(|_| usage()),
            "--churn" => churn = value().parse().unwrap_or_else(|_| usage()),
            "--resident" => resident = value().parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    let keel = keel.unwrap_or_else(|| usage());
    let handlers: Vec<&str> = handlers.split(',').collect();
    let temp = keel_testutil::TempRoot::new();
    let node = Node::start(&temp, std::path::Path::new(&keel));
    let mut serial = 0usize;
    let mut next = |what: &str| {
        serial += 1;
        format!("{what}-{serial}")
    };

    // A first pod on each, not timed (image unpacks, first shim).
    for handler in &handlers {
        start_pod(&node, &node.client, handler, &next("warm"));
        remove_all(&node.client);
    }
    for _ in 0..runs {
        for handler in &handlers {
            let name = next("start");
            let begin = Instant::now();
            start_pod(&node, &node.client, handler, &name);
            println!(
                "start {handler} {:.1}",
                begin.elapsed().as_secs_f64() * 1000.0
            );
            remove_all(&node.client);
        }
    }
    for handler in &handlers {
        let begin = Instant::now();
        std::thread::scope(|scope| {
            for worker in 0..2 {
                let node = &node;
                scope.spawn(move || {
                    let client = Client::connect(&node.socket()).expect("connect");
                    for i in 0..churn / 2 {
                        let name = format!("churn-{handler}-{worker}-{i}");
                        let pod = start_pod(node, &client, handler, &name);
                        client.stop_pod(&pod).expect("StopPodSandbox");
                        client.remove_pod(&pod).expect("RemovePodSandbox");
                    }
                });
            }
        });
        println!("churn {handler} {:.3}", begin.elapsed().as_secs_f64());
    }
    for handler in &handlers {
        for i in 0..resident {
            start_pod(
                &node,
                &node.client,
                handler,
                &format!("resident-{handler}-{i}"),
            );
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
        let kb: u64 = keel_testutil::peers::pids_mentioning(&node.dir().to_string_lossy())
            .into_iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() != "containerd")
            })
            .map(pss_kb)
            .sum();
        println!("resident {handler} {}", kb / resident.max(1) as u64);
        remove_all(&node.client);
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: keel-cri-bench --keel-runtime PATH [--handlers keel,runc,crun] [--runs N] [--churn N] [--resident N]"
    );
    std::process::exit(2);
}

/// A pod with one running `sleep` container; its sandbox id.
fn start_pod(node: &Node, client: &Client, handler: &str, name: &str) -> String {
    let config = node.pod_config(name);
    let pod = client
        .run_pod(&config, handler)
        .unwrap_or_else(|e| panic!("{handler}: RunPodSandbox: {e}"));
    let id = client
        .create_container(
            &pod,
            &node.container_config("app", &["sleep", "100000"]),
            &config,
        )
        .unwrap_or_else(|e| panic!("{handler}: CreateContainer: {e}"));
    client
        .start_container(&id)
        .unwrap_or_else(|e| panic!("{handler}: StartContainer: {e}"));
    pod
}

fn remove_all(client: &Client) {
    for pod in client.list_pods().expect("ListPodSandbox") {
        client.stop_pod(&pod.id).expect("StopPodSandbox");
        client.remove_pod(&pod.id).expect("RemovePodSandbox");
    }
}

/// A process's proportional set size, kB.
fn pss_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Pss:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}
