//! `keel vm`: micro-VMs, each held by its own `keel-vmm` process (as a
//! container by its keel-monitor). `run` records the VM under keel's root
//! and starts its VMM; `ls`, `inspect` and `logs` read the records and the
//! console log; `stop`, `kill` and `rm` signal the VMM by its pid.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Args, Subcommand};
use keel_vm::store::{ConsoleMode, Status, Store, Vm, VmSpec, VmState};

use crate::containers::Context;

#[derive(Subcommand, Debug)]
pub enum VmCommand {
    /// Create and start a VM from a kernel
    Run(RunArgs),
    /// List VMs (running ones; all with -a)
    #[command(alias = "ps", alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more VMs
    Inspect(InspectArgs),
    /// Print a VM's serial console
    Logs(LogsArgs),
    /// Stop one or more running VMs
    Stop(StopArgs),
    /// Kill one or more running VMs (their VMM, at once)
    Kill(NamesArgs),
    /// Remove one or more VMs
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Pause all vCPUs of one or more VMs
    Pause(NamesArgs),
    /// Resume one or more paused VMs
    #[command(alias = "unpause")]
    Resume(NamesArgs),
    /// Write a VM's memory and vCPU state to a new directory (the VM goes on, or stops with --stop)
    Snapshot(SnapshotArgs),
    /// Start a new VM from a snapshot (memory loaded as the guest touches it)
    Restore(RestoreArgs),
    /// Move a running VM to another host's `keel vm receive` (live: pre-copy)
    Migrate(MigrateArgs),
    /// Wait for a VM to arrive by migration, and run it
    Receive(ReceiveArgs),
    /// Make disk images (raw files) for VMs
    #[command(subcommand)]
    Disk(DiskCommand),
    /// Change a running VM: the memory its guest keeps (through its balloon)
    Update(UpdateArgs),
    /// Serve a disk as keel's virtio-blk device to another VMM (QEMU, cloud-hypervisor) over vhost-user
    #[command(name = "vhost-user-blk")]
    VhostUserBlk(VhostUserBlkArgs),
    /// Serve keel's virtio-rng device to another VMM over vhost-user
    #[command(name = "vhost-user-rng")]
    VhostUserRng(VhostUserRngArgs),
    /// Serve keel's virtio-net device to another VMM over vhost-user, its
    /// frames through a tap device made for it
    #[command(name = "vhost-user-net")]
    VhostUserNet(VhostUserNetArgs),
    /// Serve keel's virtio-vsock device to another VMM over vhost-user
    #[command(name = "vhost-user-vsock")]
    VhostUserVsock(VhostUserVsockArgs),
    /// (keel-vmm's) Put a VM arriving by migration on its network at its
    /// address; its tap goes back over fd 3
    #[command(name = "join-network", hide = true)]
    JoinNetwork(JoinNetworkArgs),
}

#[derive(Args, Debug)]
pub struct JoinNetworkArgs {
    /// The VM's id
    pub vm: String,
    pub network: String,
    #[arg(long)]
    pub ip: Option<std::net::IpAddr>,
}

#[derive(Args, Debug)]
pub struct VhostUserVsockArgs {
    /// The unix socket to listen on (the VMM connects to it)
    #[arg(long)]
    pub socket: PathBuf,
    /// The unix socket host programs use (CONNECT PORT; PATH_PORT for the
    /// guest's connections)
    #[arg(long, value_name = "PATH")]
    pub vsock: PathBuf,
    /// The guest's context id
    #[arg(long, default_value_t = 3)]
    pub cid: u64,
}

#[derive(Args, Debug)]
pub struct VhostUserNetArgs {
    /// The unix socket to listen on (the VMM connects to it)
    #[arg(long)]
    pub socket: PathBuf,
    /// The tap device to make (it goes when this command ends)
    #[arg(long)]
    pub tap: String,
    /// The NIC's MAC address
    #[arg(long, default_value = "02:42:ac:11:00:99")]
    pub mac: String,
}

#[derive(Args, Debug)]
pub struct VhostUserRngArgs {
    /// The unix socket to listen on (the VMM connects to it)
    #[arg(long)]
    pub socket: PathBuf,
}

#[derive(Args, Debug)]
pub struct VhostUserBlkArgs {
    /// The unix socket to listen on (the VMM connects to it)
    #[arg(long)]
    pub socket: PathBuf,
    /// The raw disk image, read-write or with ",ro" read-only
    #[arg(long, value_name = "PATH[,ro]")]
    pub disk: String,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// The memory the guest is to keep; the rest goes back to the host
    /// through the VM's balloon (see run --balloon)
    #[arg(long)]
    pub memory_target: String,
    #[arg(required = true)]
    pub vms: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum DiskCommand {
    /// A sparse raw disk
    Create(DiskCreateArgs),
    /// An ext4 disk of an image's root file system (made without mounting the disk)
    FromImage(DiskFromImageArgs),
}

#[derive(Args, Debug)]
pub struct DiskCreateArgs {
    pub path: PathBuf,
    /// Its size (e.g. 1g)
    #[arg(long)]
    pub size: String,
}

#[derive(Args, Debug)]
pub struct DiskFromImageArgs {
    pub image: String,
    pub path: PathBuf,
    /// Its size [default: the files, plus a quarter and 64 MiB]
    #[arg(long)]
    pub size: Option<String>,
}

#[derive(Args, Debug)]
pub struct MigrateArgs {
    pub vm: String,
    /// The receiver's address (HOST:PORT)
    #[arg(long)]
    pub to: String,
}

#[derive(Args, Debug)]
pub struct ReceiveArgs {
    #[command(flatten)]
    pub start: StartArgs,
    /// Where to listen (ADDR:PORT)
    #[arg(long)]
    pub listen: String,
}

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    /// Leave the VM stopped after the snapshot
    #[arg(long)]
    pub stop: bool,
    pub vm: String,
    /// A directory that does not exist yet
    pub dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub start: StartArgs,
    /// The snapshot's directory
    pub dir: PathBuf,
}

/// What every command that starts a VM takes.
#[derive(Args, Debug)]
pub struct StartArgs {
    /// Assign a name to the VM
    #[arg(long)]
    pub name: Option<String>,
    /// Run in the background and print the VM's id
    #[arg(short, long)]
    pub detach: bool,
    /// Remove the VM when its guest ends
    #[arg(long)]
    pub rm: bool,
    /// Where the serial console goes: file (keel vm logs), tty, none
    /// [default: tty in the foreground, file with -d]
    #[arg(long)]
    pub console: Option<String>,
    /// Keep standard input open and send it to the guest's serial port
    /// (Ctrl-] stops the VM)
    #[arg(short, long)]
    pub interactive: bool,
    /// With -i on a terminal: pass keys through raw (Ctrl-C goes to the
    /// guest)
    #[arg(short, long)]
    pub tty: bool,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub start: StartArgs,
    /// Number of vCPUs
    #[arg(long, default_value_t = 1)]
    pub cpus: u32,
    /// Guest memory (e.g. 256m, 2g); reserved lazily on the host
    #[arg(short, long, default_value = "128m")]
    pub memory: String,
    /// The guest to boot: a Linux kernel (bzImage or vmlinux), or keel's
    /// own guest format (a static x86-64 ELF)
    #[arg(long)]
    pub kernel: PathBuf,
    /// An initrd for a Linux kernel
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// The guest's command line
    #[arg(long, default_value = "")]
    pub cmdline: String,
    /// Attach a raw disk image (virtio-blk), read-write or with ",ro" read-only; repeatable
    #[arg(long = "disk", value_name = "PATH[,ro]")]
    pub disks: Vec<String>,
    /// Share a host directory with the guest over virtio-9p (keel's 9P2000.L server); Linux
    /// mounts it with `mount -t 9p -o trans=virtio,version=9p2000.L TAG DIR`; repeatable
    #[arg(long = "share", value_name = "TAG=DIR")]
    pub shares: Vec<String>,
    /// Give the VM a virtio-balloon device (keel vm update --memory-target)
    #[arg(long)]
    pub balloon: bool,
    /// Give the VM a virtio-rng device (entropy from the host)
    #[arg(long)]
    pub rng: bool,
    /// Give the VM a vsock device: host programs reach the guest through
    /// the unix socket PATH (`CONNECT PORT`), the guest reaches host
    /// programs listening on PATH_PORT; the default PATH is
    /// <runroot>/vms/<id12>.vsock
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = "")]
    pub vsock: Option<PathBuf>,
    /// The guest's vsock context id (3 or more)
    #[arg(long, default_value_t = 3, value_name = "CID")]
    pub vsock_cid: u64,
    /// Connect the VM to a keel network (a virtio-net NIC on a tap on the
    /// network's bridge, beside its containers), or none
    #[arg(long, default_value = "none", value_name = "NAME|none")]
    pub network: String,
    /// Start even if the memory asked for is more than the host's RAM and
    /// swap together (it could never all be backed)
    #[arg(long)]
    pub overcommit: bool,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Show all VMs (default shows just running)
    #[arg(short, long)]
    pub all: bool,
    /// Only display VM ids
    #[arg(short, long)]
    pub quiet: bool,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Format: table, json, or a Go template ({{.Name}} ...)
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Format the output using a Go template
    #[arg(short, long)]
    pub format: Option<String>,
    #[arg(required = true)]
    pub vms: Vec<String>,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Follow the console until the VM ends
    #[arg(short, long)]
    pub follow: bool,
    pub vm: String,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds the guest has to power off after the power button, before
    /// the VMM ends the VM
    #[arg(short, long, default_value_t = 10)]
    pub time: u64,
    #[arg(required = true)]
    pub vms: Vec<String>,
}

#[derive(Args, Debug)]
pub struct NamesArgs {
    #[arg(required = true)]
    pub vms: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Kill a running VM and remove it
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true)]
    pub vms: Vec<String>,
}

pub fn run(ctx: &Context, command: &VmCommand) -> Result<i32> {
    let store = Store::open(&ctx.root)?;
    match command {
        VmCommand::Run(args) => run_vm(ctx, &store, args),
        VmCommand::Restore(args) => restore(ctx, &store, args),
        VmCommand::VhostUserBlk(args) => {
            let (path, read_only) = match args.disk.strip_suffix(",ro") {
                Some(path) => (path, true),
                None => (args.disk.strip_suffix(",rw").unwrap_or(&args.disk), false),
            };
            keel_vm::vhost_user::serve_block(&args.socket, Path::new(path), read_only)?;
            Ok(0)
        }
        VmCommand::VhostUserRng(args) => {
            keel_vm::vhost_user::serve_rng(&args.socket)?;
            Ok(0)
        }
        VmCommand::JoinNetwork(args) => {
            let spec = store.spec(&args.vm)?;
            let (_, tap) = join_network(ctx, &store, &args.network, args.ip, &spec)?;
            // SAFETY: keel-vmm hands its end of a socket pair over at 3.
            let channel = unsafe {
                <std::os::unix::net::UnixStream as std::os::fd::FromRawFd>::from_raw_fd(3)
            };
            let sent = keel_vm::fdpass::send_fd(&channel, &tap);
            if let Err(e) = sent {
                leave_network(ctx, &args.vm);
                bail!("hand the tap over: {e}");
            }
            Ok(0)
        }
        VmCommand::VhostUserVsock(args) => {
            keel_vm::vhost_user::serve_vsock(&args.socket, &args.vsock, args.cid)?;
            Ok(0)
        }
        VmCommand::VhostUserNet(args) => {
            let mac = keel_net::ipam::parse_mac(&args.mac)
                .ok_or_else(|| anyhow!("--mac {}: not six hex bytes (02:42:...)", args.mac))?;
            keel_vm::vhost_user::serve_net(&args.socket, &args.tap, mac)?;
            Ok(0)
        }
        VmCommand::Update(args) => {
            let target = keel_engine::spec::parse_size(&args.memory_target)
                .map_err(|e| anyhow!("--memory-target {}: {e}", args.memory_target))?;
            each(&store, &args.vms, |_, vm| {
                if vm.state.status != Status::Running {
                    bail!("VM {} is not running", vm.spec.name);
                }
                if !vm.spec.balloon {
                    bail!(
                        "VM {} has no balloon (start it with keel vm run --balloon)",
                        vm.spec.name
                    );
                }
                if target > vm.spec.memory {
                    bail!(
                        "--memory-target {}: more than VM {}'s memory ({})",
                        args.memory_target,
                        vm.spec.name,
                        mib_text(vm.spec.memory)
                    );
                }
                control(vm, &format!("balloon {target}")).map(drop)
            })
        }
        VmCommand::Disk(DiskCommand::Create(args)) => {
            let size = keel_engine::spec::parse_size(&args.size)
                .map_err(|e| anyhow!("--size {}: {e}", args.size))?;
            keel_vm::disk::create(&args.path, size)?;
            println!("{}", args.path.display());
            Ok(0)
        }
        VmCommand::Disk(DiskCommand::FromImage(args)) => {
            let size = args
                .size
                .as_deref()
                .map(|s| keel_engine::spec::parse_size(s).map_err(|e| anyhow!("--size {s}: {e}")))
                .transpose()?;
            let images = crate::images::open(&ctx.root)?;
            let record = images
                .resolve(&args.image)
                .map_err(|_| anyhow!("No such image: {}", args.image))?;
            let layers: Vec<PathBuf> = record
                .chain_ids
                .iter()
                .map(|c| images.snapshots.path(c))
                .collect();
            let label: String = args
                .image
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .take(16)
                .collect();
            // By default: what the files take, plus a quarter and 64 MiB.
            let size = size.unwrap_or_else(|| {
                let content: u64 = layers.iter().map(|l| keel_engine::copy::tree_size(l)).sum();
                (content + content / 4 + (64 << 20)).div_ceil(1 << 20) << 20
            });
            keel_vm::disk::from_layers(&layers, &args.path, size, &label)?;
            println!("{} ({})", args.path.display(), mib_text(size));
            Ok(0)
        }
        VmCommand::Receive(args) => {
            let spec = VmSpec {
                id: String::new(),
                name: String::new(),
                created: keel_vm::store::now(),
                vcpus: 0,
                memory: 0,
                kernel: PathBuf::new(),
                initrd: None,
                cmdline: String::new(),
                console: console_mode(args.start.console.as_deref(), args.start.detach)?,
                restored_from: None,
                auto_remove: args.start.rm,
                incoming: Some(args.listen.clone()),
                disks: Vec::new(),
                balloon: false,
                rng: false,
                network: None,
                vsock: None,
                shares: Vec::new(),
            };
            start(ctx, &store, &args.start, spec, None)
        }
        VmCommand::Migrate(args) => {
            let vm = store.find(&args.vm)?;
            if vm.state.status != Status::Running {
                bail!("VM {} is not running", vm.spec.name);
            }
            let text = control(&vm, &format!("migrate {}", args.to))?;
            let report: keel_vm::migrate::Report = serde_json::from_str(&text)
                .with_context(|| format!("the VMM's report {text:?}"))?;
            // The source is gone: its VMM ends; its record goes.
            let deadline = Instant::now() + Duration::from_secs(10);
            while store.find(&vm.spec.id).is_ok_and(|vm| vm.is_running())
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            if vm.spec.network.is_some() {
                leave_network(ctx, &vm.spec.id);
            }
            let _ = store.remove(&vm.spec.id);
            println!(
                "{} migrated to {} ({}, {} round{}, {:.1} MB sent) in {} ms; downtime {} ms",
                vm.spec.name,
                args.to,
                report.method,
                report.rounds,
                if report.rounds == 1 { "" } else { "s" },
                report.bytes_sent as f64 / 1e6,
                report.total_ms,
                report.downtime_ms
            );
            Ok(0)
        }
        VmCommand::Pause(args) => each(&store, &args.vms, |_, vm| {
            if vm.state.status != Status::Running {
                bail!("VM {} is not running", vm.spec.name);
            }
            control(vm, "pause").map(drop)
        }),
        VmCommand::Resume(args) => each(&store, &args.vms, |_, vm| {
            if vm.state.status != Status::Paused {
                bail!("VM {} is not paused", vm.spec.name);
            }
            control(vm, "resume").map(drop)
        }),
        VmCommand::Snapshot(args) => {
            let vm = store.find(&args.vm)?;
            if !vm.is_running() {
                bail!("VM {} is not running", vm.spec.name);
            }
            let dir = absolute(&args.dir)?;
            let request = if args.stop {
                format!("snapshot --stop {}", dir.display())
            } else {
                format!("snapshot {}", dir.display())
            };
            control(&vm, &request)?;
            if args.stop {
                // The VMM records the end as it exits.
                let deadline = Instant::now() + Duration::from_secs(10);
                while store.find(&vm.spec.id).is_ok_and(|vm| vm.is_running())
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            println!("{}", dir.display());
            Ok(0)
        }
        VmCommand::Ls(args) => ls(&store, args),
        VmCommand::Inspect(args) => inspect(&store, args),
        VmCommand::Logs(args) => logs(&store, args),
        VmCommand::Stop(args) => each(&store, &args.vms, |store, vm| {
            stop(store, vm, Duration::from_secs(args.time))
        }),
        VmCommand::Kill(args) => each(&store, &args.vms, |store, vm| {
            if !vm.is_running() {
                bail!("VM {} is not running", vm.spec.name);
            }
            kill(store, vm)
        }),
        VmCommand::Rm(args) => each(&store, &args.vms, |store, vm| {
            if vm.is_running() {
                if !args.force {
                    bail!(
                        "cannot remove VM {}: it is running (stop it first, or use rm -f)",
                        vm.spec.name
                    );
                }
                kill(store, vm)?;
            }
            if vm.spec.network.is_some() {
                leave_network(ctx, &vm.spec.id);
            }
            // A VMM that was killed left its vsock socket.
            if let Some(vsock) = &vm.spec.vsock
                && std::fs::symlink_metadata(&vsock.path)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            {
                let _ = std::fs::remove_file(&vsock.path);
            }
            store.remove(&vm.spec.id)?;
            Ok(())
        }),
    }
}

/// Runs `action` on each VM named, printing each name done (docker's
/// style); 1 if any failed.
fn each(
    store: &Store,
    names: &[String],
    mut action: impl FnMut(&Store, &Vm) -> Result<()>,
) -> Result<i32> {
    let mut code = 0;
    for name in names {
        let result = store
            .find(name)
            .map_err(anyhow::Error::from)
            .and_then(|vm| action(store, &vm));
        match result {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("Error: {e:#}");
                code = 1;
            }
        }
    }
    Ok(code)
}

fn vmm_binary() -> Result<PathBuf> {
    crate::containers::helper_binary("KEEL_VMM", "keel-vmm").ok_or_else(|| {
        anyhow!("keel-vmm was not found next to keel (build the workspace, or set KEEL_VMM)")
    })
}

fn run_vm(ctx: &Context, store: &Store, args: &RunArgs) -> Result<i32> {
    let memory = keel_engine::spec::parse_size(&args.memory)
        .map_err(|e| anyhow!("--memory {}: {e}", args.memory))?;
    let console = console_mode(args.start.console.as_deref(), args.start.detach)?;
    if !args.overcommit
        && let Some(host) = host_memory()
        && memory > host
    {
        bail!(
            "--memory {}: more than this host's RAM and swap together ({}); it could never all be backed (--overcommit starts it anyway)",
            args.memory,
            mib_text(host)
        );
    }
    let kernel = std::fs::canonicalize(&args.kernel)
        .with_context(|| format!("the kernel {}", args.kernel.display()))?;
    if !kernel.is_file() {
        bail!("the kernel {} is not a file", kernel.display());
    }
    if std::path::Path::new("/sys/module/kvm_pvm").exists()
        && std::fs::read(&kernel).is_ok_and(|image| keel_vm::linux::is_linux(&image))
    {
        eprintln!(
            "keel: warning: this host's /dev/kvm is PVM (software KVM): unmodified Linux stops \
             under it with a KVM internal error (a vmlinux) or spins in its decompressor (a bzImage)"
        );
    }
    let disks = args
        .disks
        .iter()
        .map(|text| {
            let (path, read_only) = match text.strip_suffix(",ro") {
                Some(path) => (path, true),
                None => (text.strip_suffix(",rw").unwrap_or(text), false),
            };
            let path = std::fs::canonicalize(path).with_context(|| format!("--disk {text}"))?;
            Ok(keel_vm::store::DiskSpec { path, read_only })
        })
        .collect::<Result<Vec<_>>>()?;
    let shares = args
        .shares
        .iter()
        .map(|text| {
            let (tag, dir) = text
                .split_once('=')
                .filter(|(tag, dir)| !tag.is_empty() && !dir.is_empty())
                .with_context(|| format!("--share {text}: expected TAG=DIR"))?;
            let path = std::fs::canonicalize(dir).with_context(|| format!("--share {text}"))?;
            if !path.is_dir() {
                bail!("--share {text}: {} is not a directory", path.display());
            }
            Ok(keel_vm::store::ShareSpec {
                tag: tag.to_string(),
                path,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(tag) = shares
        .iter()
        .enumerate()
        .find(|(i, s)| shares[..*i].iter().any(|o| o.tag == s.tag))
        .map(|(_, s)| &s.tag)
    {
        bail!("--share: the tag {tag} is given twice");
    }
    let spec = VmSpec {
        id: String::new(),
        name: String::new(),
        created: keel_vm::store::now(),
        vcpus: args.cpus,
        memory,
        kernel,
        initrd: args
            .initrd
            .as_ref()
            .map(|path| {
                std::fs::canonicalize(path)
                    .with_context(|| format!("the initrd {}", path.display()))
            })
            .transpose()?,
        cmdline: args.cmdline.clone(),
        console,
        restored_from: None,
        auto_remove: args.start.rm,
        incoming: None,
        disks,
        balloon: args.balloon,
        rng: args.rng,
        network: None,
        vsock: args
            .vsock
            .as_ref()
            .map(|path| {
                Ok::<_, anyhow::Error>(keel_vm::store::VsockSpec {
                    cid: args.vsock_cid,
                    path: if path.as_os_str().is_empty() {
                        PathBuf::new()
                    } else {
                        absolute(path)?
                    },
                })
            })
            .transpose()?,
        shares,
    };
    let network = Some(args.network.as_str())
        .filter(|n| *n != "none")
        .map(|n| (n.to_string(), None));
    start(ctx, store, &args.start, spec, network)
}

fn console_mode(text: Option<&str>, detach: bool) -> Result<ConsoleMode> {
    Ok(match text {
        Some(text) => text.parse::<ConsoleMode>()?,
        None if detach => ConsoleMode::File,
        None => ConsoleMode::Tty,
    })
}

fn absolute(path: &Path) -> Result<PathBuf> {
    Ok(if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .context("the current directory")?
            .join(path)
    })
}

fn restore(ctx: &Context, store: &Store, args: &RestoreArgs) -> Result<i32> {
    let dir = std::fs::canonicalize(&args.dir)
        .with_context(|| format!("the snapshot {}", args.dir.display()))?;
    let meta = keel_vm::snapshot::read_meta(&dir)?;
    let mut spec = VmSpec {
        id: String::new(),
        name: String::new(),
        created: keel_vm::store::now(),
        vcpus: meta.vcpus,
        memory: meta.memory,
        kernel: dir.clone(),
        initrd: None,
        cmdline: meta.cmdline,
        console: console_mode(args.start.console.as_deref(), args.start.detach)?,
        restored_from: Some(dir),
        auto_remove: args.start.rm,
        incoming: None,
        disks: Vec::new(),
        balloon: false,
        rng: false,
        network: None,
        vsock: None,
        shares: Vec::new(),
    };
    spec.take_devices(&meta.devices);
    // Back on its network, at the address its guest has.
    let network = meta.devices.iter().find_map(|d| match d {
        keel_vm::snapshot::DeviceSpec::Net { network, ipv4, .. } => Some((network.clone(), *ipv4)),
        _ => None,
    });
    start(ctx, store, &args.start, spec, network)
}

/// Records the VM and starts its VMM: in the foreground until the guest
/// ends (its exit code), or detached until it runs (its id printed).
/// `network`: the keel network it joins.
fn start(
    ctx: &Context,
    store: &Store,
    how: &StartArgs,
    mut spec: VmSpec,
    network: Option<(String, Option<std::net::IpAddr>)>,
) -> Result<i32> {
    vmm_binary()?;
    if how.interactive && how.detach {
        bail!("-i: a detached VM has no standard input to read (run it in the foreground)");
    }
    let id = keel_engine::engine::random_id()?;
    let seed = u64::from_str_radix(&id[..16], 16).unwrap_or(0);
    spec.id = id;
    let name = how.name.as_deref();
    let mut spec = store.create(
        name,
        &mut |attempt| keel_engine::names::generate(seed, attempt),
        spec,
    )?;
    if let Some(vsock) = spec
        .vsock
        .as_mut()
        .filter(|v| v.path.as_os_str().is_empty())
    {
        vsock.path = ctx
            .runroot
            .join("vms")
            .join(format!("{}.vsock", &spec.id[..12]));
        store.write_spec(&spec)?;
    }
    let tap = match network {
        Some((network, ipv4)) => match join_network(ctx, store, &network, ipv4, &spec) {
            Ok((joined, tap)) => {
                spec = joined;
                Some(tap)
            }
            Err(e) => {
                let _ = store.remove(&spec.id);
                return Err(e);
            }
        },
        None => None,
    };
    let result = run_vmm(ctx, store, how, &spec, tap);
    if spec.network.is_some() && !matches!(result, Ok(0) if how.detach) {
        // The VM ended (or never ran): its address is free again.
        leave_network(ctx, &spec.id);
    }
    result
}

/// Puts the VM on `network`: its tap (to hand to the VMM) and its spec
/// with the address, which the guest learns from its command line
/// (`ip=ADDRESS::GATEWAY:NETMASK:NAME:eth0:off`, the kernel's own form).
fn join_network(
    ctx: &Context,
    store: &Store,
    network: &str,
    ipv4: Option<std::net::IpAddr>,
    spec: &VmSpec,
) -> Result<(VmSpec, std::os::fd::OwnedFd)> {
    let mut engine = ctx.engine()?;
    let joined = keel_engine::network::vm::attach_vm(
        &engine.layout,
        &mut engine.db,
        network,
        &spec.id,
        &spec.name,
        ipv4,
    )?;
    let endpoint = &joined.endpoint;
    let network = keel_engine::network::find(&mut engine.db, &endpoint.network)?;
    let mut spec = spec.clone();
    if let (Some(ip), Some(gateway)) = (endpoint.ipv4, endpoint.gateway4)
        && !spec.cmdline.split(' ').any(|word| word.starts_with("ip="))
    {
        let mask = std::net::Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(endpoint.prefix4))
                .unwrap_or(0),
        );
        let word = format!("ip={ip}::{gateway}:{mask}:{}:eth0:off", spec.name);
        spec.cmdline = if spec.cmdline.is_empty() {
            word
        } else {
            format!("{} {word}", spec.cmdline)
        };
    }
    spec.network = Some(keel_vm::store::NetworkSpec {
        name: network.name.clone(),
        id: network.id.clone(),
        tap: endpoint.veth.clone(),
        mac: endpoint.mac.clone(),
        ipv4: endpoint.ipv4,
        prefix4: endpoint.prefix4,
        gateway4: endpoint.gateway4,
        ipv6: endpoint.ipv6,
        prefix6: endpoint.prefix6,
        mtu: joined.mtu,
    });
    if let Err(e) = store.write_spec(&spec) {
        let _ = keel_engine::network::vm::detach_vm(&engine.layout, &mut engine.db, &spec.id);
        return Err(e.into());
    }
    Ok((spec, joined.tap))
}

/// Forgets a VM's endpoints (its tap went with its VMM).
fn leave_network(ctx: &Context, id: &str) {
    let left = ctx.engine().and_then(|mut engine| {
        keel_engine::network::vm::detach_vm(&engine.layout, &mut engine.db, id)
            .map_err(anyhow::Error::from)
    });
    if let Err(e) = left {
        eprintln!("keel: VM {}: forget its network endpoint: {e}", &id[..12]);
    }
}

/// The terminal on standard input in raw mode, restored on drop.
struct RawTerminal(libc::termios);

impl RawTerminal {
    fn enter() -> Option<RawTerminal> {
        // SAFETY: termios calls on fd 0 with structs we own.
        unsafe {
            if libc::isatty(0) != 1 {
                return None;
            }
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut saved) != 0 {
                return None;
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            // Output stays as the guest sends it (a guest sends \r\n).
            raw.c_oflag = saved.c_oflag;
            libc::tcsetattr(0, libc::TCSANOW, &raw);
            Some(RawTerminal(saved))
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restoring the attributes read in enter().
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.0) };
    }
}

/// The fd number the VMM finds the tap at (`keel-vmm --tap-fd`).
const TAP_FD: i32 = 3;
/// And its pipe back to a foreground `vm run` (`--done-fd`).
const DONE_FD: i32 = 4;

/// A pipe, both ends close-on-exec: (read, write).
fn pipe() -> std::io::Result<(std::fs::File, std::fs::File)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 into an array of two.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: two fresh fds we own.
    Ok(unsafe {
        (
            <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]),
            <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[1]),
        )
    })
}

fn run_vmm(
    ctx: &Context,
    store: &Store,
    how: &StartArgs,
    spec: &VmSpec,
    tap: Option<std::os::fd::OwnedFd>,
) -> Result<i32> {
    let detach = how.detach;
    let vmm = vmm_binary()?;
    let dir = store.dir(&spec.id);
    let socket = ctx
        .runroot
        .join("vms")
        .join(format!("{}.sock", &spec.id[..12]));
    let vmm_log = std::fs::File::create(dir.join("vmm.log"))
        .with_context(|| format!("create {}", dir.join("vmm.log").display()))?;
    let mut command = Command::new(&vmm);
    command
        .arg(&dir)
        .arg("--control")
        .arg(&socket)
        .stderr(vmm_log)
        .stdin(Stdio::null());
    // In the foreground the VMM says when the guest has ended on a pipe
    // (fd 4), before KVM's teardown of the VM, which need not be waited.
    let done = if detach {
        command.stdout(Stdio::null());
        None
    } else {
        command
            .arg("--foreground")
            .arg("--done-fd")
            .arg(DONE_FD.to_string());
        Some(pipe().context("make a pipe for the VMM")?)
    };
    let done_fd = done
        .as_ref()
        .map(|(_, w)| std::os::fd::AsRawFd::as_raw_fd(w));
    if how.interactive {
        command.arg("--stdin").stdin(Stdio::inherit());
    }
    // Raw keys for the guest while it runs (restored when it ends).
    let _raw = (how.interactive && how.tty && !detach)
        .then(RawTerminal::enter)
        .flatten();
    let tap_fd = tap.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
    if tap_fd.is_some() {
        command.arg("--tap-fd").arg(TAP_FD.to_string());
    }
    // SAFETY: only async-signal-safe calls in the child before exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
            if detach {
                // Its own session: it outlives this command and the
                // terminal.
                libc::setsid();
            }
            // The tap at a known number, open across exec.
            for (fd, at) in [(tap_fd, TAP_FD), (done_fd, DONE_FD)] {
                if let Some(fd) = fd {
                    keel_vm::fdpass::place(fd, at)?;
                }
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("start {}", vmm.display()))?;
    // The VMM holds the tap alone: it goes when the VMM goes.
    drop(tap);
    if let Some((mut reader, writer)) = done {
        drop(writer);
        let mut code = [0u8; 1];
        // The guest's end (a byte), or nothing if the VMM died first.
        let status = match std::io::Read::read(&mut reader, &mut code) {
            Ok(1) => Some(i32::from(code[0])),
            _ => child.wait().context("wait for the VMM")?.code(),
        };
        let state = read_state(store, &spec.id);
        return match status {
            Some(125) => Err(start_failure(store, spec, &state)),
            Some(code) => {
                // A guest that did not power off: how it ended (the VMM's
                // own words are in its log).
                if !matches!(code, 0 | 143)
                    && let Some(reason) = &state.reason
                {
                    eprintln!("keel: VM {}: {reason}", spec.name);
                }
                if spec.auto_remove {
                    let _ = store.remove(&spec.id);
                }
                Ok(code)
            }
            None => {
                if spec.auto_remove {
                    let _ = store.remove(&spec.id);
                }
                Ok(137)
            }
        };
    }
    // Detached: wait until the guest runs (or could not start).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if !store.dir(&spec.id).exists() {
            // --rm, and the guest already ended.
            break;
        }
        let state = read_state(store, &spec.id);
        match state.status {
            Status::Running | Status::Paused | Status::Incoming => break,
            Status::Exited if state.exit_code == Some(125) => {
                let _ = child.wait();
                return Err(start_failure(store, spec, &state));
            }
            Status::Exited => break,
            Status::Created => {}
        }
        if let Ok(Some(status)) = child.try_wait() {
            let state = read_state(store, &spec.id);
            if state.status == Status::Created {
                let _ = store.remove(&spec.id);
                bail!("the VMM exited ({status}) before the guest ran");
            }
            continue;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = store.remove(&spec.id);
            bail!("the VMM did not start the guest within 30 seconds");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    println!("{}", spec.id);
    Ok(0)
}

/// One request to a VM's VMM; what its answer carries.
fn control(vm: &Vm, request: &str) -> Result<String> {
    let socket = vm
        .state
        .control
        .as_ref()
        .ok_or_else(|| anyhow!("VM {}'s VMM has no control socket", vm.spec.name))?;
    keel_vm::store::control(socket, request).map_err(|e| anyhow!("VM {}: {e}", vm.spec.name))
}

/// A VM that could not start is not kept: its record goes, its reason is
/// the error.
fn start_failure(store: &Store, spec: &VmSpec, state: &VmState) -> anyhow::Error {
    let reason = state
        .reason
        .clone()
        .unwrap_or_else(|| "the VMM failed".into());
    let _ = store.remove(&spec.id);
    anyhow!(
        "{}",
        reason.strip_prefix("failed to start: ").unwrap_or(&reason)
    )
}

fn read_state(store: &Store, id: &str) -> VmState {
    store.state(id).unwrap_or_default()
}

/// The power button (ACPI's event device), `timeout` for the guest to
/// power off; then SIGTERM to the VMM (it ends the VM), SIGKILL last.
fn stop(store: &Store, vm: &Vm, timeout: Duration) -> Result<()> {
    if !vm.is_running() {
        return Ok(());
    }
    // The power button first: a guest that listens powers off.
    if vm.state.status == Status::Running && control(vm, "power-button").is_ok() {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if gone(vm) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // Then the VMM stops the VM itself, and last, it is killed.
    signal(vm, libc::SIGTERM)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if gone(vm) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    kill(store, vm)
}

fn kill(store: &Store, vm: &Vm) -> Result<()> {
    signal(vm, libc::SIGKILL)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gone(vm) {
        if Instant::now() > deadline {
            bail!(
                "VM {}'s VMM (pid {}) did not die",
                vm.spec.name,
                vm.state.pid
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut state = vm.state.clone();
    state.status = Status::Exited;
    state.finished_at = Some(keel_vm::store::now());
    state.reason = Some("killed".into());
    state.exit_code = Some(137);
    store.write_state(&vm.spec.id, &state)?;
    Ok(())
}

fn alive(vm: &Vm) -> bool {
    keel_runtime::util::process_alive(vm.state.pid, vm.state.pid_start)
}

/// Whether the VMM has let go of everything it held (its disks' locks,
/// its tap, its sockets): not only its main thread dead, but every one
/// (a vCPU thread may take a moment to leave KVM).
fn gone(vm: &Vm) -> bool {
    if alive(vm) {
        return false;
    }
    match std::fs::read_dir(format!("/proc/{}/task", vm.state.pid)) {
        // A zombie main thread keeps its entry; others still listed are
        // threads still exiting.
        Ok(tasks) => tasks.count() <= 1,
        Err(_) => true,
    }
}

fn signal(vm: &Vm, signal: i32) -> Result<()> {
    if !alive(vm) {
        return Ok(());
    }
    // SAFETY: kill on the VMM's pid, checked alive with its start time.
    if unsafe { libc::kill(vm.state.pid, signal) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            bail!("signal VM {}'s VMM: {e}", vm.spec.name);
        }
    }
    Ok(())
}

/// The host memory a running VM holds (its VMM's resident set).
fn resident(vm: &Vm) -> Option<u64> {
    if !vm.is_running() {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", vm.state.pid)).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The host's RAM and swap, bytes.
fn host_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        info.lines()
            .find_map(|l| l.strip_prefix(name))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()
    };
    Some((field("MemTotal:")? + field("SwapTotal:").unwrap_or(0)) * 1024)
}

/// Binary units, as memory is assigned: "256MiB", "1.5GiB".
fn mib_text(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        let gib = bytes as f64 / (1u64 << 30) as f64;
        let text = format!("{gib:.2}");
        format!("{}GiB", text.trim_end_matches('0').trim_end_matches('.'))
    } else if bytes >= 1 << 20 {
        format!("{}MiB", bytes >> 20)
    } else {
        format!("{}KiB", bytes >> 10)
    }
}

fn status_text(vm: &Vm) -> String {
    let ago = |time: &Option<String>| {
        keel_engine::views::human_duration(keel_engine::views::seconds_since(time.as_deref()))
    };
    match vm.state.status {
        Status::Created => "Created".into(),
        Status::Incoming => format!("Incoming ({})", vm.spec.incoming.as_deref().unwrap_or("?")),
        Status::Running => format!("Up {}", ago(&vm.state.started_at)),
        Status::Paused => format!("Up {} (Paused)", ago(&vm.state.started_at)),
        Status::Exited => format!(
            "Exited ({}) {} ago",
            vm.state.reason.as_deref().unwrap_or("unknown"),
            ago(&vm.state.finished_at)
        ),
    }
}

fn value(vm: &Vm) -> serde_json::Value {
    let resident = resident(vm);
    serde_json::json!({
        "ID": vm.spec.id,
        "Name": vm.spec.name,
        "Created": vm.spec.created,
        "State": match vm.state.status {
            Status::Created => "created",
            Status::Incoming => "incoming",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Exited => "exited",
        },
        "Status": status_text(vm),
        "CPUs": vm.spec.vcpus,
        "Memory": vm.spec.memory,
        "MemoryResident": resident,
        "Kernel": vm.spec.kernel,
        "Initrd": vm.spec.initrd,
        "Cmdline": vm.spec.cmdline,
        "Console": vm.spec.console,
        "RestoredFrom": vm.spec.restored_from,
        "Disks": vm.spec.disks,
        "Shares": vm.spec.shares,
        "Balloon": vm.spec.balloon,
        "Rng": vm.spec.rng,
        "NetworkSettings": network_settings(vm),
        "Vsock": vm.spec.vsock.as_ref().map(|v| serde_json::json!({"CID": v.cid, "Path": v.path})),
        "Pid": if vm.is_running() { vm.state.pid } else { 0 },
        "StartedAt": vm.state.started_at,
        "FinishedAt": vm.state.finished_at,
        "Reason": vm.state.reason,
        "ExitCode": vm.state.exit_code,
    })
}

/// docker's `NetworkSettings` shape: the first network's addresses at
/// the top, each network by name.
fn network_settings(vm: &Vm) -> serde_json::Value {
    let Some(n) = &vm.spec.network else {
        return serde_json::json!({ "IPAddress": "", "MacAddress": "", "Networks": {} });
    };
    let text = |ip: &Option<std::net::IpAddr>| ip.map(|ip| ip.to_string()).unwrap_or_default();
    let endpoint = serde_json::json!({
        "NetworkID": n.id,
        "IPAddress": text(&n.ipv4),
        "IPPrefixLen": n.prefix4,
        "Gateway": text(&n.gateway4),
        "GlobalIPv6Address": text(&n.ipv6),
        "GlobalIPv6PrefixLen": n.prefix6,
        "MacAddress": n.mac,
        "Tap": n.tap,
    });
    serde_json::json!({
        "IPAddress": text(&n.ipv4),
        "Gateway": text(&n.gateway4),
        "MacAddress": n.mac,
        "Networks": { n.name.clone(): endpoint },
    })
}

fn ls(store: &Store, args: &LsArgs) -> Result<i32> {
    let vms: Vec<Vm> = store
        .list()?
        .into_iter()
        .filter(|vm| args.all || vm.is_running())
        .collect();
    let mut out = std::io::stdout().lock();
    let short = |id: &str| {
        if args.no_trunc {
            id.to_string()
        } else {
            id.chars().take(12).collect()
        }
    };
    if args.quiet {
        for vm in &vms {
            writeln!(out, "{}", short(&vm.spec.id))?;
        }
        return Ok(0);
    }
    let rows: Vec<serde_json::Value> = vms.iter().map(value).collect();
    let titles = [
        ("ID", "VM ID"),
        ("Name", "NAME"),
        ("Status", "STATUS"),
        ("CPUs", "CPUS"),
        ("Memory", "MEMORY"),
        ("MemoryResident", "RESIDENT"),
    ];
    if let Some(text) = crate::template::render_list(&rows, args.format.as_deref(), &titles)? {
        out.write_all(text.as_bytes())?;
        return Ok(0);
    }
    let mut table = vec![
        ["VM ID", "NAME", "STATUS", "CPUS", "MEMORY", "RESIDENT"]
            .map(String::from)
            .to_vec(),
    ];
    for vm in &vms {
        table.push(vec![
            short(&vm.spec.id),
            vm.spec.name.clone(),
            status_text(vm),
            vm.spec.vcpus.to_string(),
            mib_text(vm.spec.memory),
            resident(vm).map(mib_text).unwrap_or_else(|| "-".into()),
        ]);
    }
    out.write_all(crate::images::render_table(&table).as_bytes())?;
    Ok(0)
}

fn inspect(store: &Store, args: &InspectArgs) -> Result<i32> {
    let mut values = Vec::new();
    let mut code = 0;
    for name in &args.vms {
        match store.find(name) {
            Ok(vm) => values.push(value(&vm)),
            Err(e) => {
                eprintln!("Error: {e}");
                code = 1;
            }
        }
    }
    crate::template::print_values(&values, args.format.as_deref())?;
    Ok(code)
}

fn logs(store: &Store, args: &LogsArgs) -> Result<i32> {
    let vm = store.find(&args.vm)?;
    if vm.spec.console != ConsoleMode::File {
        bail!(
            "VM {} has no console log (its console is {})",
            vm.spec.name,
            serde_json::to_value(vm.spec.console)?
                .as_str()
                .unwrap_or("elsewhere")
        );
    }
    let path = store.dir(&vm.spec.id).join("console.log");
    follow_file(&path, args.follow, || {
        store.find(&vm.spec.id).is_ok_and(|vm| vm.is_running())
    })?;
    Ok(0)
}

/// Copies `path` to stdout; with `follow`, keeps copying what is added
/// while `running` says so.
fn follow_file(path: &Path, follow: bool, running: impl Fn() -> bool) -> Result<()> {
    use std::io::Read;
    let mut file = match std::fs::File::open(path) {
        Ok(file) => Some(file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("open {}", path.display())),
    };
    let mut out = std::io::stdout().lock();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        if file.is_none() {
            file = std::fs::File::open(path).ok();
        }
        let mut copied = false;
        if let Some(file) = file.as_mut() {
            loop {
                let n = file.read(&mut buffer)?;
                if n == 0 {
                    break;
                }
                out.write_all(&buffer[..n])?;
                copied = true;
            }
        }
        out.flush()?;
        if !follow {
            return Ok(());
        }
        if !copied && !running() {
            // One last read: what was written just before the end.
            if let Some(file) = file.as_mut() {
                std::io::copy(file, &mut out)?;
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
