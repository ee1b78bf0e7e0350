//! keel-vmm: the process that holds one VM, as keel-monitor holds a
//! container. `keel vm run` starts it with the VM's directory
//! (`<root>/vms/<id>`); it reads `config.json`, makes the VM, records
//! `state.json` (running, with its pid; then how the guest ended) and
//! runs the guest until it powers off, panics, crashes or is stopped
//! (SIGTERM, SIGINT, SIGHUP). Its own errors go to stderr and into
//! `state.json`.
//!
//! Exit status: 0 when the guest powered off; 125 when the VM could not
//! be made; 143 when it was stopped; 1 for a panic, a triple fault or a
//! failure of KVM.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use keel_vm::devices::Console;
use keel_vm::store::{self, ConsoleMode, Status, Store, VmSpec, VmState};
use keel_vm::vm::{Config, Ending, Vm};

fn main() {
    let mut args = std::env::args_os().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: keel-vmm VM-DIRECTORY (keel vm run starts it)");
        std::process::exit(2);
    };
    std::process::exit(run(&dir));
}

fn run(dir: &Path) -> i32 {
    let (Some(id), Some(root)) = (
        dir.file_name().map(|n| n.to_string_lossy().into_owned()),
        dir.parent().and_then(Path::parent),
    ) else {
        eprintln!("keel-vmm: {} is not a VM's directory", dir.display());
        return 125;
    };
    let store = match Store::open(root) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("keel-vmm: {e}");
            return 125;
        }
    };
    let spec: VmSpec = match std::fs::read(dir.join("config.json"))
        .map_err(|e| e.to_string())
        .and_then(|data| serde_json::from_slice(&data).map_err(|e| e.to_string()))
    {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("keel-vmm: the VM's config.json: {e}");
            return 125;
        }
    };
    let fail = |why: String| {
        eprintln!("keel-vmm: {why}");
        let state = VmState {
            status: Status::Exited,
            finished_at: Some(store::now()),
            reason: Some(format!("failed to start: {why}")),
            exit_code: Some(125),
            ..VmState::default()
        };
        let _ = store.write_state(&id, &state);
        125
    };
    let console: Console = match spec.console {
        ConsoleMode::Tty => Box::new(std::io::stdout()),
        ConsoleMode::None => Box::new(std::io::sink()),
        ConsoleMode::File => {
            let path = dir.join("console.log");
            match OpenOptions::new().create(true).append(true).open(&path) {
                Ok(file) => Box::new(file),
                Err(e) => return fail(format!("open {}: {e}", path.display())),
            }
        }
    };
    // The stop signals wait for the signal thread below (every thread
    // made from here on inherits the mask; the vCPUs' kick signal is not
    // in it).
    let stops = stop_signals();
    // SAFETY: pthread_sigmask with a set we made.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &stops, std::ptr::null_mut()) };
    let config = Config {
        vcpus: spec.vcpus,
        memory: spec.memory,
        kernel: spec.kernel.clone(),
        cmdline: spec.cmdline.clone(),
    };
    let mut vm = match Vm::create(&config, console) {
        Ok(vm) => vm,
        Err(e) => return fail(e.to_string()),
    };
    let pid = std::process::id() as i32;
    let mut state = VmState {
        status: Status::Running,
        pid,
        pid_start: keel_runtime::util::proc_start_time(pid).unwrap_or(0),
        started_at: Some(store::now()),
        ..VmState::default()
    };
    if let Err(e) = store.write_state(&id, &state) {
        return fail(e.to_string());
    }
    let stopper = vm.stopper();
    std::thread::spawn(move || {
        let mut signal = 0;
        // SAFETY: sigwait on the blocked set.
        unsafe { libc::sigwait(&stops, &mut signal) };
        stopper.stop();
    });
    let ending = match vm.run() {
        Ok(ending) => ending,
        Err(e) => Ending::Failed(e.to_string()),
    };
    let code = match ending {
        Ending::PowerOff => 0,
        Ending::Stopped => 143,
        _ => 1,
    };
    state.status = Status::Exited;
    state.finished_at = Some(store::now());
    state.reason = Some(ending.reason());
    state.exit_code = Some(code);
    if let Err(e) = store.write_state(&id, &state) {
        eprintln!("keel-vmm: {e}");
    }
    if !matches!(ending, Ending::PowerOff | Ending::Stopped) {
        eprintln!("keel-vmm: VM {}: {}", spec.name, ending.reason());
    }
    let _ = std::io::stdout().flush();
    code
}

fn stop_signals() -> libc::sigset_t {
    // SAFETY: building a signal set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}
