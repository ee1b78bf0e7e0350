//! keel-vmm: the process that holds one VM, as keel-monitor holds a
//! container. `keel vm run` (or `restore`) starts it:
//!
//!     keel-vmm VM-DIRECTORY [--control SOCKET]
//!
//! It reads `config.json` from the VM's directory (`<root>/vms/<id>`),
//! makes the VM (or restores it from the snapshot the config names),
//! records `state.json` (running, with its pid; then how the guest ended)
//! and runs the guest until it powers off, panics, crashes or is stopped
//! (SIGTERM, SIGINT, SIGHUP). On the control socket it takes one line per
//! connection: `pause`, `resume`, `snapshot [--stop] DIR`, `migrate
//! HOST:PORT`, `balloon BYTES` (the memory the guest is to keep); it answers `ok` (for a migration with its report) or
//! `error: WHY`. A VM whose config says `incoming` comes by migration: its
//! VMM listens there, receives it as a snapshot in `migrated/` and
//! restores it. Its own errors go to stderr and into `state.json`.
//!
//! Once the VM is made it confines itself with a seccomp filter (see
//! keel-vm's `seccomp`); `KEEL_VMM_NO_SECCOMP=1` leaves it out (to debug).
//!
//! Exit status: 0 when the guest powered off or was stopped after a
//! snapshot; 125 when the VM could not be made; 143 when it was stopped;
//! 1 for a panic, a triple fault or a failure of KVM.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use keel_vm::devices::Console;
use keel_vm::store::{self, ConsoleMode, Status, Store, VmSpec, VmState};
use keel_vm::vm::{Config, Controller, Ending, Vm};

fn main() {
    let mut args = std::env::args_os().skip(1);
    let mut dir = None;
    let mut control = None;
    let mut tap = None;
    let mut foreground = false;
    let mut stdin = false;
    let mut done = None;
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--control") => control = args.next().map(PathBuf::from),
            // The CLI waits for the guest and removes a --rm VM itself,
            // once it has read how it ended.
            Some("--foreground") => foreground = true,
            // Standard input goes to the guest's serial port.
            Some("--stdin") => stdin = true,
            // Where to say the guest has ended (a byte: the exit code),
            // before KVM's teardown of the VM.
            Some(flag @ ("--done-fd" | "--tap-fd")) => {
                // SAFETY: keel vm run hands the pipe or the tap over at
                // this number, and nothing else here owns it.
                let Some(fd) = args
                    .next()
                    .and_then(|a| unsafe { keel_vm::fdpass::adopt(a.to_str()?) })
                else {
                    usage()
                };
                if flag == "--done-fd" {
                    done = Some(std::fs::File::from(fd));
                } else {
                    tap = Some(fd);
                }
            }
            _ if dir.is_none() => dir = Some(PathBuf::from(arg)),
            _ => usage(),
        }
    }
    let Some(dir) = dir else { usage() };
    std::process::exit(run(&dir, control, tap, foreground, stdin, done));
}

fn usage() -> ! {
    eprintln!(
        "usage: keel-vmm VM-DIRECTORY [--control SOCKET] [--tap-fd FD] [--foreground] [--stdin] [--done-fd FD] (keel vm run starts it)"
    );
    std::process::exit(2);
}

fn run(
    dir: &Path,
    control: Option<PathBuf>,
    tap: Option<std::os::fd::OwnedFd>,
    foreground: bool,
    stdin: bool,
    done: Option<std::fs::File>,
) -> i32 {
    let (Some(id), Some(root)) = (
        dir.file_name().map(|n| n.to_string_lossy().into_owned()),
        dir.parent().and_then(Path::parent),
    ) else {
        eprintln!("keel-vmm: {} is not a VM's directory", dir.display());
        return 125;
    };
    let store = match Store::open(root) {
        Ok(store) => Arc::new(store),
        Err(e) => {
            eprintln!("keel-vmm: {e}");
            return 125;
        }
    };
    let spec: VmSpec = match store.spec(&id) {
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
    let mut incoming = None;
    let mut spec = spec;
    let mut tap = tap;
    let mut join_error = None;
    if let Some(address) = &spec.incoming {
        match receive(&store, &id, dir, address) {
            Ok(stream) => incoming = Some(stream),
            Err(e) => return fail(e),
        }
        // Its size is known now.
        if let Ok(meta) = keel_vm::snapshot::read_meta(&dir.join("migrated")) {
            spec.vcpus = meta.vcpus;
            spec.memory = meta.memory;
            spec.cmdline = meta.cmdline;
            spec.take_devices(&meta.devices);
            // A vsock listens beside the control socket.
            if let (Some(vsock), Some(control)) = (spec.vsock.as_mut(), &control)
                && vsock.path.as_os_str().is_empty()
            {
                vsock.path = control.with_extension("vsock");
            }
            let _ = store.write_spec(&spec);
            // Its NIC: on the same network here, at the address its guest
            // has (keel puts it there and hands the tap over).
            let net = meta.devices.iter().find_map(|d| match d {
                keel_vm::snapshot::DeviceSpec::Net { network, ipv4, .. } => {
                    Some((network.clone(), *ipv4))
                }
                _ => None,
            });
            if let Some((network, ipv4)) = net {
                match join_network(root, control.as_deref(), &id, &network, ipv4) {
                    Ok(fd) => {
                        tap = Some(fd);
                        if let Ok(joined) = store.spec(&id) {
                            spec = joined;
                        }
                    }
                    Err(e) => join_error = Some(e),
                }
            }
        }
    }
    let nic = match (&spec.network, tap) {
        (Some(network), Some(tap)) => match network.mac_bytes() {
            Some(mac) => Some(keel_vm::vm::Nic {
                tap: Arc::new(tap),
                mac,
                network: network.name.clone(),
                ipv4: network.ipv4,
            }),
            None => {
                return fail(format!("the MAC {:?} is not six hex bytes", network.mac));
            }
        },
        (Some(network), None) => {
            return fail(format!(
                "no tap device was handed over for network {}",
                network.name
            ));
        }
        (None, _) => None,
    };
    let vsock = spec.vsock.as_ref().map(|v| v.path.as_path());
    let made = match (&spec.restored_from, &incoming) {
        _ if join_error.is_some() => Err(keel_vm::Error::Msg(
            join_error.clone().expect("a join error"),
        )),
        (_, Some(_)) => Vm::restore_with(&dir.join("migrated"), console, vsock, nic.as_ref()),
        (Some(snapshot), None) => Vm::restore_with(snapshot, console, vsock, nic.as_ref()),
        (None, None) => Vm::create(
            &Config {
                vcpus: spec.vcpus,
                memory: spec.memory,
                kernel: spec.kernel.clone(),
                cmdline: spec.cmdline.clone(),
                disks: spec
                    .disks
                    .iter()
                    .map(|d| keel_vm::vm::Disk {
                        path: d.path.clone(),
                        read_only: d.read_only,
                    })
                    .collect(),
                balloon: spec.balloon,
                rng: spec.rng,
                nets: nic.iter().cloned().collect(),
                shares: spec
                    .shares
                    .iter()
                    .map(|s| keel_vm::vm::Share {
                        tag: s.tag.clone(),
                        path: s.path.clone(),
                    })
                    .collect(),
                initrd: spec.initrd.clone(),
                vsock: spec.vsock.as_ref().map(|v| keel_vm::vm::VsockConfig {
                    cid: v.cid,
                    path: v.path.clone(),
                }),
            },
            console,
        ),
    };
    if let Some(stream) = incoming.as_mut() {
        let answer = match &made {
            Ok(_) => Ok(()),
            Err(e) => Err(keel_vm::Error::Msg(e.to_string())),
        };
        keel_vm::migrate::answer(stream, &answer);
    }
    let mut vm = match made {
        Ok(vm) => vm,
        Err(e) => return fail(e.to_string()),
    };
    let listener = match &control {
        Some(path) => {
            let _ = std::fs::remove_file(path);
            if let Some(parent) = path.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            match UnixListener::bind(path) {
                Ok(listener) => Some(listener),
                Err(e) => return fail(format!("listen on {}: {e}", path.display())),
            }
        }
        None => None,
    };
    let pid = std::process::id() as i32;
    let state = Arc::new(Mutex::new(VmState {
        status: Status::Running,
        pid,
        pid_start: keel_runtime::util::proc_start_time(pid).unwrap_or(0),
        started_at: Some(store::now()),
        control: control.clone(),
        ..VmState::default()
    }));
    if let Err(e) = store.write_state(&id, &state.lock().expect("state lock")) {
        return fail(e.to_string());
    }
    // From here on, only the system calls the VMM needs (its other
    // threads inherit the filter).
    if std::env::var_os("KEEL_VMM_NO_SECCOMP").is_none()
        && let Err(e) = keel_vm::seccomp::confine(!spec.shares.is_empty())
    {
        return fail(e.to_string());
    }
    if stdin && let Err(e) = vm.attach_input(std::io::stdin()) {
        return fail(e.to_string());
    }
    let controller = vm.controller();
    {
        let controller = controller.clone();
        std::thread::spawn(move || {
            let mut signal = 0;
            // SAFETY: sigwait on the blocked set.
            unsafe { libc::sigwait(&stops, &mut signal) };
            controller.stop();
        });
    }
    if let Some(listener) = listener {
        let (store, state, id) = (store.clone(), state.clone(), id.clone());
        std::thread::spawn(move || serve(&listener, &controller, &store, &state, &id));
    }
    let ending = match vm.run() {
        Ok(ending) => ending,
        Err(e) => Ending::Failed(e.to_string()),
    };
    // The disks' locks, taps and sockets go now: a VM recorded as ended
    // holds none of them.
    vm.release_devices();
    if let Some(path) = &control {
        let _ = std::fs::remove_file(path);
    }
    let code = match ending {
        Ending::PowerOff | Ending::Snapshotted | Ending::Migrated(_) => 0,
        Ending::Stopped => 143,
        _ => 1,
    };
    {
        let mut state = state.lock().expect("state lock");
        state.status = Status::Exited;
        state.finished_at = Some(store::now());
        state.reason = Some(ending.reason());
        state.exit_code = Some(code);
        state.control = None;
        if let Err(e) = store.write_state(&id, &state) {
            eprintln!("keel-vmm: {e}");
        }
    }
    if spec.auto_remove
        && !foreground
        && let Err(e) = store.remove(&id)
    {
        eprintln!("keel-vmm: --rm: {e}");
    }
    if !matches!(
        ending,
        Ending::PowerOff | Ending::Stopped | Ending::Snapshotted | Ending::Migrated(_)
    ) {
        eprintln!("keel-vmm: VM {}: {}", spec.name, ending.reason());
    }
    let _ = std::io::stdout().flush();
    // Said before the VM is dropped (KVM tears it down, its interrupt
    // controllers taking some 20 ms): whoever waits has what it needs.
    if let Some(mut done) = done {
        let _ = done.write_all(&[code as u8]);
    }
    code
}

/// Puts VM `id`, arriving with a NIC, on `network` at `ipv4` through keel
/// (`keel vm join-network`, which records the endpoint and makes the tap)
/// and takes the tap it hands back over a socket pair.
fn join_network(
    root: &Path,
    control: Option<&Path>,
    id: &str,
    network: &str,
    ipv4: Option<std::net::IpAddr>,
) -> Result<std::os::fd::OwnedFd, String> {
    let runroot = control
        .and_then(|c| c.parent()?.parent())
        .ok_or("no runroot to join a network from (no control socket)")?;
    let keel = match std::env::var_os("KEEL_BIN") {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()
            .map_err(|e| format!("find keel-vmm's own path: {e}"))?
            .with_file_name("keel"),
    };
    let (ours, theirs) =
        std::os::unix::net::UnixStream::pair().map_err(|e| format!("a socket pair: {e}"))?;
    let theirs_fd = theirs.as_raw_fd();
    let mut command = std::process::Command::new(&keel);
    command
        .arg("--root")
        .arg(root)
        .arg("--runroot")
        .arg(runroot)
        .args(["vm", "join-network", id, network])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if let Some(ip) = ipv4 {
        command.arg("--ip").arg(ip.to_string());
    }
    // SAFETY: only dup2/fcntl in the child before exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
            keel_vm::fdpass::place(theirs_fd, 3)
        });
    }
    let child = command
        .spawn()
        .map_err(|e| format!("run {}: {e}", keel.display()))?;
    drop(theirs);
    let fd = keel_vm::fdpass::receive_fd(&ours);
    let out = child
        .wait_with_output()
        .map_err(|e| format!("wait for keel: {e}"))?;
    if !out.status.success() {
        let error = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "join network {network}: {}",
            error.trim().trim_start_matches("Error: ")
        ));
    }
    fd.map_err(|e| format!("take the tap: {e}"))?
        .ok_or_else(|| "keel handed no tap over".to_string())
}

/// The control socket: one request per connection.
fn serve(
    listener: &UnixListener,
    controller: &Controller,
    store: &Store,
    state: &Mutex<VmState>,
    id: &str,
) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut line = String::new();
        if BufReader::new(&stream).read_line(&mut line).is_err() {
            continue;
        }
        let request = line.trim_end();
        let record = |status: Status| {
            let mut state = state.lock().expect("state lock");
            if state.status != Status::Exited {
                state.status = status;
                let _ = store.write_state(id, &state);
            }
        };
        let result = match request.split_once(' ').unwrap_or((request, "")) {
            ("pause", "") => controller.pause().map(|()| record(Status::Paused)),
            ("power-button", "") => controller.power_button(),
            ("resume", "") => {
                controller.resume();
                record(Status::Running);
                Ok(())
            }
            ("migrate", to) if !to.is_empty() => match controller.migrate(to) {
                Ok(report) => {
                    let text = serde_json::to_string(&report).expect("a report serializes");
                    let _ = stream.write_all(format!("ok {text}\n").as_bytes());
                    drop(stream);
                    // Answered: now the VM here may end (the process exits).
                    controller.end_migrated(to);
                    continue;
                }
                Err(e) => Err(e),
            },
            ("balloon", target) => match target.parse::<u64>() {
                Ok(bytes) => controller.set_memory_target(bytes),
                Err(_) => Err(keel_vm::Error::invalid(format!(
                    "balloon {target}: a byte count"
                ))),
            },
            ("snapshot", rest) => {
                let (stop, path) = match rest.strip_prefix("--stop ") {
                    Some(path) => (true, path),
                    None => (false, rest),
                };
                if path.is_empty() {
                    Err(keel_vm::Error::invalid("snapshot: which directory?"))
                } else {
                    controller.snapshot(Path::new(path), stop)
                }
            }
            _ => Err(keel_vm::Error::invalid(format!(
                "unknown request {request:?}"
            ))),
        };
        let answer = match result {
            Ok(()) => "ok\n".to_string(),
            Err(e) => format!("error: {e}\n"),
        };
        let _ = stream.write_all(answer.as_bytes());
    }
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

/// Waits for a migration on `address` and writes it into `<dir>/migrated`
/// (a snapshot); the connection, to answer the sender once the VM is made.
fn receive(
    store: &Store,
    id: &str,
    dir: &Path,
    address: &str,
) -> Result<std::net::TcpStream, String> {
    let listener =
        std::net::TcpListener::bind(address).map_err(|e| format!("listen on {address}: {e}"))?;
    let pid = std::process::id() as i32;
    let state = VmState {
        status: Status::Incoming,
        pid,
        pid_start: keel_runtime::util::proc_start_time(pid).unwrap_or(0),
        reason: Some(format!("waiting for a migration on {address}")),
        ..VmState::default()
    };
    store.write_state(id, &state).map_err(|e| e.to_string())?;
    let (mut stream, _) = listener
        .accept()
        .map_err(|e| format!("accept on {address}: {e}"))?;
    let target = dir.join("migrated");
    let result = keel_vm::migrate::receive(&stream, &target);
    if let Err(e) = &result {
        keel_vm::migrate::answer(&mut stream, &Err(keel_vm::Error::Msg(e.to_string())));
    }
    result.map_err(|e| e.to_string())?;
    Ok(stream)
}
