//! The helpers checked against a real runtime: Debian's runc (`$KEEL_TEST_RUNC`,
//! default `runc` on PATH), so that they are known good before keel-runtime uses them.
//! Root only: these make containers, cgroups, mounts and network namespaces.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use keel_testutil::{
    BusyboxBundle, MountGuard, NetnsGuard, ProcessGuard, Runtime, TempRoot, cgroup_dirs, mountinfo,
    require_root,
};
use serde_json::json;

fn runc(temp: &TempRoot) -> Runtime {
    let bin = std::env::var_os("KEEL_TEST_RUNC")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("runc"));
    Runtime::with_temp_root(bin, temp)
}

fn mounted_below(dir: &Path) -> Vec<PathBuf> {
    mountinfo::unmount_order(&mountinfo::read_self().unwrap(), dir)
}

#[test]
fn busybox_bundle_runs_in_the_foreground() {
    require_root();
    let temp = TempRoot::new();
    let bundle = BusyboxBundle::create(temp.subdir("bundle"));
    let _cgroup = bundle.cgroup_guard();
    let runtime = runc(&temp);
    let _container = runtime.guard(bundle.unique());

    let mut config = bundle.config_json();
    config["process"]["args"] = json!(["sh", "-c", "echo hi; cat /etc/hostname; id -u; hostname"]);
    bundle.write_config(&config);
    let bundle_dir = bundle.dir().to_str().unwrap();
    let out = runtime.run_ok(["run", "--bundle", bundle_dir, bundle.unique()]);
    assert_eq!(out, "hi\nkeel\n0\nkeel\n");

    // The user from /etc/passwd.
    config["process"]["user"] = json!({ "uid": 1000, "gid": 1000 });
    config["process"]["args"] = json!(["id"]);
    bundle.write_config(&config);
    let out = runtime.run_ok(["run", "--bundle", bundle_dir, bundle.unique()]);
    assert_eq!(out.trim(), "uid=1000(keel) gid=1000(keel)");

    // A failing command's status comes back.
    config["process"]["args"] = json!(["sh", "-c", "exit 7"]);
    bundle.write_config(&config);
    let output = runtime.run(["run", "--bundle", bundle_dir, bundle.unique()]);
    assert_eq!(output.status.code(), Some(7));
}

#[test]
fn guards_remove_a_created_container_and_its_cgroup() {
    require_root();
    let temp = TempRoot::new();
    let bundle = BusyboxBundle::create(temp.subdir("bundle"));
    let runtime = runc(&temp);
    let id = bundle.unique().to_string();
    let cgroup = bundle.cgroup_guard();
    let container = runtime.guard(&id);

    runtime.run_ok(["create", "--bundle", bundle.dir().to_str().unwrap(), &id]);
    let state = runtime.state(&id).expect("state of a created container");
    assert_eq!(state["status"], "created");
    assert!(state["pid"].as_i64().unwrap() > 0);
    let dirs = cgroup_dirs(Path::new(&bundle.cgroups_path()));
    assert!(
        !dirs.is_empty(),
        "runc made no cgroup {}",
        bundle.cgroups_path()
    );

    // The cgroup guard kills what is inside and removes the cgroup everywhere.
    drop(cgroup);
    let dirs = cgroup_dirs(Path::new(&bundle.cgroups_path()));
    assert!(dirs.is_empty(), "cgroup left: {dirs:?}");

    // The container guard deletes the (now stopped) container.
    drop(container);
    assert!(runtime.state(&id).is_none(), "container {id} still exists");
}

#[test]
fn temp_root_unmounts_and_removes_everything() {
    require_root();
    let temp = TempRoot::new();
    let path = temp.path().to_path_buf();
    let outer = temp.subdir("outer");
    let mount = |dir: &Path| {
        nix::mount::mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=1m"),
        )
        .unwrap_or_else(|e| panic!("mount tmpfs on {}: {e}", dir.display()));
    };
    mount(&outer);
    let inner = outer.join("inner");
    fs::create_dir(&inner).unwrap();
    mount(&inner);
    fs::write(inner.join("file"), "x").unwrap();

    // MountGuard unmounts just its path.
    let guarded = temp.subdir("guarded");
    mount(&guarded);
    drop(MountGuard(guarded.clone()));
    assert_eq!(mounted_below(&guarded), Vec::<PathBuf>::new());

    assert_eq!(mounted_below(&path).len(), 2);
    drop(temp);
    assert_eq!(mounted_below(&path), Vec::<PathBuf>::new());
    assert!(!path.exists(), "{} still exists", path.display());
}

#[test]
fn netns_guard_adds_and_deletes() {
    require_root();
    let netns = NetnsGuard::new();
    let path = netns.path();
    assert!(path.exists(), "{} missing", path.display());
    let name = netns.name().to_string();
    // The namespace is really separate: only loopback, and it is down.
    let out = Command::new("ip")
        .args(["netns", "exec", &name, "ip", "-o", "link"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let links = String::from_utf8_lossy(&out.stdout);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo:"));
    drop(netns);
    assert!(!path.exists(), "{} still exists", path.display());
}

#[test]
#[allow(clippy::zombie_processes)] // the guard is what reaps it
fn process_guard_kills_and_reaps() {
    let child = Command::new("sleep").arg("1000").spawn().unwrap();
    let pid = child.id() as i32;
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    assert!(proc_dir.exists());
    drop(ProcessGuard(pid));
    let deadline = Instant::now() + Duration::from_secs(5);
    while proc_dir.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!proc_dir.exists(), "pid {pid} still exists (not reaped?)");
}
