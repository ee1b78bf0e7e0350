//! What `keel info` and the API's `/info` say: the engine, the host, and
//! what the store holds, in docker's field names.

use keel_image::store::ImageStore;

use crate::engine::Engine;
use crate::error::Result;

/// docker's `info` object for the fields keel has.
pub fn info(engine: &mut Engine, store: &ImageStore) -> Result<serde_json::Value> {
    let containers = engine.list()?;
    let count = |pick: &dyn Fn(&crate::db::Status) -> bool| {
        containers.iter().filter(|c| pick(&c.state.status)).count()
    };
    use crate::db::Status;
    let running = count(&|s| matches!(s, Status::Running | Status::Restarting));
    let paused = count(&|s| *s == Status::Paused);
    let images = store.metadata.images()?.len();
    let cgroup = match keel_runtime::cgroups::host_mode() {
        Ok(keel_runtime::cgroups::Mode::V2) => "2",
        Ok(keel_runtime::cgroups::Mode::Hybrid) => "1 (hybrid: v1 controllers, cgroup2 mounted)",
        Ok(keel_runtime::cgroups::Mode::V1) => "1",
        Err(_) => "none",
    };
    let uname = nix::sys::utsname::uname().ok();
    let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        uname
            .as_ref()
            .map(|u| f(u).to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024;
    let (max_size, max_file) = crate::logs::limits(&Default::default());
    let free = keel_image::sqlite::free_bytes(&engine.layout.root).unwrap_or(0);
    let value = serde_json::json!({
        "Containers": containers.len(),
        "ContainersRunning": running,
        "ContainersPaused": paused,
        "ContainersStopped": containers.len() - running - paused,
        "Images": images,
        "Driver": "overlay",
        "DockerRootDir": engine.layout.root,
        "KeelRunRoot": engine.layout.runroot,
        "CgroupParent": engine.options.cgroup_parent,
        "LoggingDriver": "json-file",
        "LogOpts": {
            "max-size": max_size.map(option_size).unwrap_or_else(|| "none".into()),
            "max-file": max_file,
        },
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": cgroup,
        "DefaultRuntime": "keel-runtime",
        "Runtimes": {"keel-runtime": {"path": "built in"}},
        "ServerVersion": keel_runtime::VERSION,
        "OCIRuntimeSpec": keel_runtime::OCI_VERSION,
        "KernelVersion": field(nix::sys::utsname::UtsName::release),
        "OperatingSystem": os,
        "OSType": "linux",
        "Architecture": field(nix::sys::utsname::UtsName::machine),
        "NCPU": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "MemTotal": memory,
        "Name": field(nix::sys::utsname::UtsName::nodename),
        "RootFreeSpace": free,
    });
    Ok(value)
}

/// A size as `--log-opt max-size=` takes it: `20m`, `512k`, `100`.
fn option_size(bytes: u64) -> String {
    match bytes {
        0 => "0".into(),
        b if b % (1 << 30) == 0 => format!("{}g", b >> 30),
        b if b % (1 << 20) == 0 => format!("{}m", b >> 20),
        b if b % (1 << 10) == 0 => format!("{}k", b >> 10),
        b => b.to_string(),
    }
}
