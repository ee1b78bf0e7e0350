//! Parts of the runc contract not covered elsewhere: refused flags, the
//! session keyring, debug logging, and block I/O limits on this host.

use keel_testutil::{BusyboxBundle, CgroupGuard, Runtime, TempRoot, require_root, runtime_bin};
use serde_json::{Value, json};

struct Setup {
    runtime: Runtime,
    _cgroup: CgroupGuard,
    bundle: BusyboxBundle,
    _temp: TempRoot,
}

fn setup(args: &[&str]) -> Setup {
    require_root();
    let temp = TempRoot::new();
    let bundle = BusyboxBundle::create(temp.subdir("bundle"));
    let cgroup = bundle.cgroup_guard();
    let runtime = Runtime::with_temp_root(runtime_bin(env!("CARGO_BIN_EXE_keel-runtime")), &temp);
    let mut config = bundle.config_json();
    config["process"]["args"] = json!(args);
    bundle.write_config(&config);
    Setup {
        runtime,
        _cgroup: cgroup,
        bundle,
        _temp: temp,
    }
}

impl Setup {
    fn run(&self, global: &[&str], extra: &[&str]) -> std::process::Output {
        let id = self.bundle.unique().to_string();
        let dir = self.bundle.dir().to_str().unwrap().to_string();
        let mut args: Vec<String> = global.iter().map(|s| s.to_string()).collect();
        args.extend(["run".to_string(), "--bundle".to_string(), dir]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(id);
        self.runtime.run(args)
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn systemd_cgroup_is_refused_with_a_clear_message_and_nothing_made() {
    let s = setup(&["true"]);
    let out = s.run(&["--systemd-cgroup"], &[]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--systemd-cgroup is not supported"),
        "{stderr}"
    );
    assert!(
        std::fs::read_dir(s.runtime.root()).map_or(true, |mut d| d.next().is_none()),
        "state left behind"
    );
}

/// Whether the host's /proc/keys lists a keyring with this description.
fn host_has_keyring(name: &str) -> bool {
    std::fs::read_to_string("/proc/keys")
        .unwrap()
        .lines()
        .any(|l| l.contains(&format!(" keyring   {name}:")))
}

#[test]
fn each_container_gets_its_own_session_keyring_unless_told_not_to() {
    let s = setup(&["sleep", "1000"]);
    let dir = s.bundle.dir().to_str().unwrap().to_string();
    let id = s.bundle.unique().to_string();
    let _container = s.runtime.guard(id.clone());
    s.runtime.run_ok(["create", "--bundle", &dir, &id]);
    assert!(
        host_has_keyring(&format!("_ses.{id}")),
        "no session keyring _ses.{id}"
    );
    s.runtime.run_ok(["delete", "--force", &id]);

    let other = format!("{id}-nokeyring");
    let _other = s.runtime.guard(other.clone());
    s.runtime
        .run_ok(["create", "--no-new-keyring", "--bundle", &dir, &other]);
    assert!(
        !host_has_keyring(&format!("_ses.{other}")),
        "--no-new-keyring made one"
    );
}

#[test]
fn debug_writes_runc_style_json_lines_to_the_log() {
    let s = setup(&["true"]);
    let log = s._temp.path().join("debug.json");
    let log_arg = log.to_str().unwrap().to_string();
    let out = s.run(&["--debug", "--log", &log_arg, "--log-format", "json"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let content = std::fs::read_to_string(&log).expect("debug log written");
    let lines: Vec<Value> = content
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let level = line["level"].as_str().unwrap_or("");
        assert!(["debug", "info", "warn"].contains(&level), "{line}");
        assert!(
            line["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "{line}"
        );
        assert!(
            line["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{line}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l["msg"].as_str().unwrap().contains("created container")),
        "{content}"
    );
}

#[test]
fn text_log_format_writes_runc_style_key_values() {
    let s = setup(&["no-such-binary"]);
    let log = s._temp.path().join("log.txt");
    let log_arg = log.to_str().unwrap().to_string();
    let out = s.run(&["--log", &log_arg, "--log-format", "text"], &[]);
    assert!(!out.status.success());
    let content = std::fs::read_to_string(&log).expect("log written");
    assert_eq!(content.lines().count(), 1, "{content}");
    assert!(content.starts_with("time=\""), "{content}");
    assert!(content.contains(" level=error msg="), "{content}");
    assert!(
        content.contains("executable file not found in $PATH"),
        "{content}"
    );
}

/// A block device of this machine, as (major, minor): the one holding "/"
/// if "/" is on one, else the first the kernel lists (an overlay or 9p root,
/// as in the cgroup lanes, is on no block device).
fn block_device() -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata("/").unwrap().dev();
    let (major, minor) = (libc::major(dev) as u64, libc::minor(dev) as u64);
    if std::path::Path::new(&format!("/sys/dev/block/{major}:{minor}")).exists() {
        return (major, minor);
    }
    let mut disks: Vec<_> = std::fs::read_dir("/sys/block")
        .expect("list /sys/block")
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with("loop"))
        .collect();
    disks.sort_by_key(|e| e.file_name());
    let disk = disks.first().expect("this machine has a block device");
    let text = std::fs::read_to_string(disk.path().join("dev")).unwrap();
    let (major, minor) = text.trim().split_once(':').unwrap();
    (major.parse().unwrap(), minor.parse().unwrap())
}

#[test]
fn block_io_throttles_and_weight_reach_the_cgroup() {
    let s = setup(&["sleep", "1000"]);
    let (major, minor) = block_device();
    let id = s.bundle.unique().to_string();
    let dir = s.bundle.dir().to_str().unwrap().to_string();
    let _container = s.runtime.guard(id.clone());
    let mut config = s.bundle.config_json();
    config["linux"]["resources"]["blockIO"] = json!({
        "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1048576}],
        "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 300}]
    });
    s.bundle.write_config(&config);
    s.runtime.run_ok(["create", "--bundle", &dir, &id]);
    let path = s.bundle.cgroups_path();
    let blkio_v1 =
        std::path::Path::new("/sys/fs/cgroup/blkio/blkio.throttle.read_bps_device").exists();
    if !blkio_v1 {
        // cgroup2: the io controller's io.max holds both limits.
        let (io_max, _) = keel_testutil::cgroup_file(&path, "io", "", "io.max");
        let limits = std::fs::read_to_string(&io_max)
            .unwrap_or_else(|e| panic!("read {}: {e}", io_max.display()));
        assert_eq!(
            limits.trim(),
            format!("{major}:{minor} rbps=1048576 wbps=max riops=max wiops=300")
        );
        return;
    }
    let (read_file, _) =
        keel_testutil::cgroup_file(&path, "blkio", "blkio.throttle.read_bps_device", "");
    let cgroup = read_file.parent().unwrap().to_path_buf();
    let read = std::fs::read_to_string(&read_file).unwrap();
    assert_eq!(read.trim(), format!("{major}:{minor} 1048576"));
    let write = std::fs::read_to_string(cgroup.join("blkio.throttle.write_iops_device")).unwrap();
    assert_eq!(write.trim(), format!("{major}:{minor} 300"));

    // Weights live in child cgroups only (CFQ's blkio.weight or BFQ's
    // blkio.bfq.weight, depending on the I/O scheduler).
    let weight_file = ["blkio.weight", "blkio.bfq.weight"]
        .into_iter()
        .find(|f| cgroup.join(f).exists());
    let out = s.runtime.run(["update", "--blkio-weight", "500", &id]);
    match weight_file {
        Some(file) => {
            assert!(out.status.success(), "{}", text(&out.stderr));
            let weight = std::fs::read_to_string(cgroup.join(file)).unwrap();
            // BFQ prints "default 500".
            assert_eq!(weight.split_whitespace().last(), Some("500"), "{weight}");
        }
        None => {
            assert!(!out.status.success());
            let stderr = text(&out.stderr);
            assert!(stderr.contains("blkio.weight"), "{stderr}");
        }
    }
}
