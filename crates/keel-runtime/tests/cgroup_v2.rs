//! keel-runtime on a pure cgroup v2 host. This machine is hybrid (v1
//! controllers, cgroup2 at /sys/fs/cgroup/unified), so the test gives the
//! runtime a private mount namespace in which /sys/fs/cgroup is the cgroup2
//! hierarchy alone, the layout of a modern distribution. No controller is
//! enabled there (they are bound to v1), so this exercises what v2 gives
//! every cgroup: membership, cgroup.freeze, cgroup.kill, cpu.stat, a cgroup
//! namespace with its own cgroup2 mount, and clear errors for limits whose
//! controller is missing.

use std::process::Command;

use keel_testutil::{BusyboxBundle, TempRoot, require_root, runtime_bin};
use serde_json::json;

/// The host's cgroup2 root: the runtime, seeing a pure v2 layout, enables
/// controllers in its subtree_control; cgroupfs is not private to a mount
/// namespace, so that would outlive the test (and keep, say, hugetlb from
/// being mounted as a v1 hierarchy). Put back as found, once the test's
/// cgroups are gone.
const UNIFIED_ROOT: &str = "/sys/fs/cgroup/unified";

struct SubtreeControl(String);

impl SubtreeControl {
    fn save() -> SubtreeControl {
        SubtreeControl(
            std::fs::read_to_string(format!("{UNIFIED_ROOT}/cgroup.subtree_control"))
                .unwrap_or_default(),
        )
    }
}

impl Drop for SubtreeControl {
    fn drop(&mut self) {
        let path = format!("{UNIFIED_ROOT}/cgroup.subtree_control");
        let now = std::fs::read_to_string(&path).unwrap_or_default();
        for controller in now.split_whitespace() {
            if !self.0.split_whitespace().any(|c| c == controller) {
                let _ = std::fs::write(&path, format!("-{controller}"));
            }
        }
    }
}

#[test]
fn lifecycle_pause_kill_and_limits_on_pure_cgroup_v2() {
    require_root();
    // Dropped last: after the cgroups below are removed.
    let _subtree_control = SubtreeControl::save();
    let temp = TempRoot::new();
    let bundle = BusyboxBundle::create(temp.subdir("bundle"));
    // Removes /keel-test/<unique> from every hierarchy, the unified one too.
    let _cgroup = bundle.cgroup_guard();
    let id = bundle.unique().to_string();
    let cgroup_path = bundle.cgroups_path();
    let mut config = bundle.config_json();
    config["process"]["args"] = json!([
        "sh",
        "-c",
        "cat /proc/self/cgroup; ls /sys/fs/cgroup/cgroup.procs; sleep 1000"
    ]);
    config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "cgroup"}));
    bundle.write_config(&config);
    let mut limited = config.clone();
    limited["linux"]["resources"] = json!({"memory": {"limit": 67108864}});
    let limited_dir = temp.subdir("limited");
    std::fs::write(limited_dir.join("config.json"), limited.to_string()).unwrap();
    // The rootfs path in config.json is absolute, so the second bundle shares it.

    let script = r#"
set -u
umount -R -l /sys/fs/cgroup
mount -t cgroup2 cgroup2 /sys/fs/cgroup
K="$KEEL --root $ROOT"
cg=/sys/fs/cgroup$CGPATH
$K run -d --bundle "$BUNDLE" "$ID" > "$OUT/stdout" 2>&1 || echo "run-failed"
for i in $(seq 200); do grep -q cgroup.procs "$OUT/stdout" && break; sleep 0.05; done
pid=$($K state "$ID" | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
grep -qx "$pid" $cg/cgroup.procs && echo "init-in-cgroup"
$K pause "$ID" && echo "paused=$($K state "$ID" | grep -o '"status": "[a-z]*"') freeze=$(cat $cg/cgroup.freeze)"
$K resume "$ID" && echo "resumed=$($K state "$ID" | grep -o '"status": "[a-z]*"') freeze=$(cat $cg/cgroup.freeze)"
$K events --stats "$ID" | grep -q '"usage"' && echo "stats=ok"
$K kill --all "$ID" KILL && echo "killed"
for i in $(seq 100); do $K state "$ID" | grep -q stopped && break; sleep 0.05; done
$K delete "$ID" && echo "deleted"
[ -d "$cg" ] && echo "cgroup-left" || echo "cgroup-gone"
$K create --bundle "$LIMITED" "$ID-limited" 2> "$OUT/limited.err" && echo "limited-created"
$K delete --force "$ID-limited" 2>/dev/null
[ -d "$cg" ] && echo "limited-cgroup-left" || echo "limited-cgroup-gone"
"#;
    let out_dir = temp.subdir("out");
    let output = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            script,
        ])
        .env("KEEL", runtime_bin(env!("CARGO_BIN_EXE_keel-runtime")))
        .env("ROOT", temp.root())
        .env("BUNDLE", bundle.dir())
        .env("LIMITED", &limited_dir)
        .env("ID", &id)
        .env("CGPATH", &cgroup_path)
        .env("OUT", &out_dir)
        .output()
        .expect("run unshare");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let container_out = std::fs::read_to_string(out_dir.join("stdout")).unwrap_or_default();
    let context = format!(
        "script said:\n{stdout}\n{}\ncontainer said:\n{container_out}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!stdout.contains("run-failed"), "{context}");
    assert!(
        stdout.contains("init-in-cgroup"),
        "init in its v2 cgroup: {context}"
    );
    assert!(
        stdout.contains(r#"paused="status": "paused" freeze=1"#),
        "{context}"
    );
    assert!(
        stdout.contains(r#"resumed="status": "running" freeze=0"#),
        "{context}"
    );
    assert!(stdout.contains("stats=ok"), "{context}");
    assert!(
        stdout.contains("killed") && stdout.contains("deleted"),
        "{context}"
    );
    assert!(stdout.contains("cgroup-gone"), "{context}");
    // Inside: a cgroup namespace rooted at the container's cgroup, and a
    // cgroup2 mount of its own at /sys/fs/cgroup.
    assert!(container_out.lines().any(|l| l == "0::/"), "{context}");
    assert!(
        container_out.contains("/sys/fs/cgroup/cgroup.procs"),
        "{context}"
    );
    // A memory limit without the memory controller: refused, named, and
    // nothing left.
    assert!(!stdout.contains("limited-created"), "{context}");
    let err = std::fs::read_to_string(out_dir.join("limited.err")).unwrap_or_default();
    assert!(err.contains("memory"), "{err}");
    assert!(stdout.contains("limited-cgroup-gone"), "{context}");
}
