//! keel's test guest under this machine's KVM: each of its modes through a
//! real VM (memory, vCPU threads, the serial console, power-off, panic,
//! triple fault, a stop from outside).

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_vm::vm::{Config, Disk, Ending, Vm};

#[derive(Clone, Default)]
struct Console(Arc<Mutex<Vec<u8>>>);

impl Write for Console {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Console {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn config(vcpus: u32, memory: u64, cmdline: &str) -> Config {
    assert!(
        std::path::Path::new("/dev/kvm").exists(),
        "these tests run guests under KVM: /dev/kvm is missing"
    );
    Config {
        vcpus,
        memory,
        kernel: PathBuf::from(keel_vm::TEST_GUEST),
        cmdline: cmdline.into(),
        disks: Vec::new(),
        balloon: false,
        rng: false,
        nets: Vec::new(),
        shares: Vec::new(),
        vsock: None,
        initrd: None,
    }
}

fn run(config: &Config) -> (Ending, String) {
    let console = Console::default();
    let mut vm = Vm::create(config, Box::new(console.clone())).expect("create the VM");
    let ending = vm.run().expect("run the VM");
    (ending, console.text())
}

#[test]
fn hello_on_the_serial_console_then_power_off() {
    let (ending, out) = run(&config(1, 64 << 20, "hello"));
    assert_eq!(out, "hello from keel's test guest\n");
    assert_eq!(ending, Ending::PowerOff);
}

#[test]
fn every_vcpu_reports_in() {
    let (ending, out) = run(&config(4, 64 << 20, "cpus"));
    assert_eq!(ending, Ending::PowerOff, "{out}");
    for cpu in 0..4 {
        assert!(out.contains(&format!("cpu {cpu} of 4 up\n")), "{out}");
    }
    assert!(out.ends_with("all 4 cpus up\n"), "{out}");
}

#[test]
fn the_whole_memory_is_written_and_read_back() {
    let (ending, out) = run(&config(1, 256 << 20, "memory"));
    assert_eq!(out, "memory ok: 256 MiB\n");
    assert_eq!(ending, Ending::PowerOff);
}

#[test]
fn a_panic_and_a_triple_fault_are_told_apart() {
    let (ending, out) = run(&config(1, 64 << 20, "panic"));
    assert_eq!(ending, Ending::Panic, "{out}");
    assert_eq!(out, "the test guest panics on purpose\n");
    let (ending, out) = run(&config(1, 64 << 20, "triple-fault"));
    assert_eq!(ending, Ending::TripleFault, "{out}");
}

#[test]
fn a_spinning_guest_is_stopped_from_outside() {
    let console = Console::default();
    let mut vm = Vm::create(&config(2, 64 << 20, "count"), Box::new(console.clone())).unwrap();
    let stopper = vm.controller();
    let watcher = std::thread::spawn(move || {
        // Until it has counted a little.
        for _ in 0..1000 {
            if console.text().contains("count 3\n") {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        stopper.stop();
        console
    });
    let ending = vm.run().unwrap();
    let console = watcher.join().unwrap();
    assert_eq!(ending, Ending::Stopped);
    assert!(
        console.text().starts_with("count 1\ncount 2\ncount 3\n"),
        "{}",
        console.text()
    );
}

#[test]
fn bad_requests_are_refused_with_what_is_wrong() {
    let error = |config: &Config| match Vm::create(config, Box::new(Console::default())) {
        Ok(_) => panic!("{config:?} was accepted"),
        Err(e) => e.to_string(),
    };
    assert_eq!(
        error(&config(0, 64 << 20, "")),
        format!("0 vCPUs: KVM here allows 1 to {}", kvm_max_vcpus())
    );
    assert_eq!(
        error(&config(1, 1 << 20, "")),
        "1048576 bytes of memory: a VM needs at least 4 MiB"
    );
    let mut missing = config(1, 64 << 20, "");
    missing.kernel = PathBuf::from("/nonexistent/vmlinux");
    assert_eq!(
        error(&missing),
        "read the kernel /nonexistent/vmlinux: No such file or directory (os error 2)"
    );
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), "#!/bin/sh\n").unwrap();
    let mut not_a_kernel = config(1, 64 << 20, "");
    not_a_kernel.kernel = script.path().to_path_buf();
    assert_eq!(
        error(&not_a_kernel),
        format!(
            "{} is not a guest keel can boot: not an ELF file",
            script.path().display()
        )
    );
}

fn kvm_max_vcpus() -> usize {
    kvm_ioctls::Kvm::new().unwrap().get_max_vcpus()
}

/// The last complete count a counting guest printed, and what follows it
/// (a line cut short).
fn last_count(text: &str) -> (u64, String) {
    let (whole, rest) = match text.rfind('\n') {
        Some(i) => (&text[..i], &text[i + 1..]),
        None => ("", text),
    };
    let last = whole
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("count "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (last, rest.to_string())
}

fn wait_for(console: &Console, text: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !console.text().contains(text) {
        assert!(
            std::time::Instant::now() < deadline,
            "waited for {text:?}; the console has {:?}",
            console.text()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn pause_stops_the_guest_and_resume_goes_on() {
    let console = Console::default();
    let mut vm = Vm::create(&config(1, 64 << 20, "count"), Box::new(console.clone())).unwrap();
    let controller = vm.controller();
    let checker = {
        let console = console.clone();
        std::thread::spawn(move || {
            wait_for(&console, "count 2\n");
            controller.pause().unwrap();
            let paused = console.text();
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(console.text(), paused, "the guest ran while paused");
            controller.resume();
            let (last, _) = last_count(&paused);
            wait_for(&console, &format!("count {}\n", last + 2));
            controller.stop();
        })
    };
    assert_eq!(vm.run().unwrap(), Ending::Stopped);
    checker.join().unwrap();
}

#[test]
fn a_snapshot_restored_twice_gives_two_guests_that_go_on_from_it() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("snap");
    let console = Console::default();
    let mut vm = Vm::create(&config(2, 64 << 20, "count"), Box::new(console.clone())).unwrap();
    let controller = vm.controller();
    let snapshotter = {
        let (console, dir) = (console.clone(), dir.clone());
        std::thread::spawn(move || {
            wait_for(&console, "count 3\n");
            controller.snapshot(&dir, true).unwrap();
        })
    };
    assert_eq!(vm.run().unwrap(), Ending::Snapshotted);
    snapshotter.join().unwrap();
    drop(vm);
    let (last, cut) = last_count(&console.text());
    assert!(last >= 3);
    // Sparse: 64 MiB of guest memory, a few hundred KiB of it written.
    let memory = std::fs::metadata(dir.join("memory")).unwrap();
    assert_eq!(memory.len(), 64 << 20);
    use std::os::unix::fs::MetadataExt;
    assert!(
        memory.blocks() * 512 < 8 << 20,
        "{} bytes on disk",
        memory.blocks() * 512
    );

    // Two clones, each on from the snapshot's count, each on its own.
    let clones: Vec<Console> = (0..2).map(|_| Console::default()).collect();
    let mut vms: Vec<Vm> = clones
        .iter()
        .map(|c| Vm::restore(&dir, Box::new(c.clone())).expect("restore the snapshot"))
        .collect();
    let controllers: Vec<_> = vms.iter().map(Vm::controller).collect();
    let runs: Vec<_> = vms
        .drain(..)
        .map(|mut vm| std::thread::spawn(move || vm.run().unwrap()))
        .collect();
    for clone in &clones {
        wait_for(clone, &format!("count {}\n", last + 3));
    }
    for controller in &controllers {
        controller.stop();
    }
    for run in runs {
        assert_eq!(run.join().unwrap(), Ending::Stopped);
    }
    for clone in &clones {
        let text = format!("{cut}{}", clone.text());
        assert!(
            text.starts_with(&format!("count {}\ncount {}\n", last + 1, last + 2)),
            "a clone of a guest that had counted to {last} printed {text:?}"
        );
    }
}

#[test]
fn a_damaged_snapshot_is_refused_and_names_what_is_wrong() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("snap");
    let console = Console::default();
    let mut vm = Vm::create(&config(1, 16 << 20, "count"), Box::new(console.clone())).unwrap();
    let controller = vm.controller();
    let snapshotter = {
        let (console, dir) = (console.clone(), dir.clone());
        std::thread::spawn(move || {
            wait_for(&console, "count 1\n");
            controller.snapshot(&dir, true).unwrap();
            // The VM ended with that snapshot: another is refused.
            controller.snapshot(&dir, false).unwrap_err().to_string()
        })
    };
    vm.run().unwrap();
    let again = snapshotter.join().unwrap();
    assert_eq!(again, "the VM is not running");
    let restore = |dir: &std::path::Path| match Vm::restore(dir, Box::new(Console::default())) {
        Ok(_) => panic!("{} was restored", dir.display()),
        Err(e) => e.to_string(),
    };
    let copy = |name: &str| {
        let to = temp.path().join(name);
        std::fs::create_dir(&to).unwrap();
        for file in ["memory", "vcpus.json", "snapshot.json"] {
            std::fs::copy(dir.join(file), to.join(file)).unwrap();
        }
        to
    };
    let truncated = copy("truncated");
    std::fs::File::options()
        .write(true)
        .open(truncated.join("memory"))
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let error = restore(&truncated);
    assert!(
        error.ends_with(&format!(
            "its memory file is {} bytes; {} were written (truncated?)",
            8 << 20,
            16 << 20
        )),
        "{error}"
    );
    let corrupt = copy("corrupt");
    let mut states = std::fs::read(corrupt.join("vcpus.json")).unwrap();
    let at = states.len() / 2;
    states[at] = if states[at] == b'1' { b'2' } else { b'1' };
    std::fs::write(corrupt.join("vcpus.json"), states).unwrap();
    assert!(restore(&corrupt).ends_with("vcpus.json does not match its checksum (it is corrupt)"));
    let other = copy("other");
    let meta = std::fs::read_to_string(other.join("snapshot.json")).unwrap();
    let meta = meta.replace(
        &format!("\"keel_version\": \"{}\"", env!("CARGO_PKG_VERSION")),
        "\"keel_version\": \"0.0.1\"",
    );
    std::fs::write(other.join("snapshot.json"), meta).unwrap();
    assert!(
        restore(&other).ends_with(&format!(
            "it was made by keel 0.0.1; this is keel {}",
            env!("CARGO_PKG_VERSION")
        )),
        "{}",
        restore(&other)
    );
    let nothing = temp.path().join("nothing");
    std::fs::create_dir(&nothing).unwrap();
    assert!(restore(&nothing).contains("no snapshot.json"));
    // The one that is whole still restores.
    Vm::restore(&dir, Box::new(Console::default())).unwrap();
}

#[test]
fn the_guest_reads_and_writes_a_virtio_disk() {
    use std::os::unix::fs::FileExt;
    let temp = tempfile::tempdir().unwrap();
    let path = temp.path().join("disk.img");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(1 << 20).unwrap();
    file.write_all_at(b"keel disk sector 0\n", 0).unwrap();
    let sector = |n: u64| {
        let mut buffer = [0u8; 512];
        std::fs::File::open(&path)
            .unwrap()
            .read_exact_at(&mut buffer, n * 512)
            .unwrap();
        buffer
    };
    let mut read_write = config(1, 64 << 20, "blk");
    read_write.disks = vec![Disk {
        path: path.clone(),
        read_only: false,
    }];
    let (ending, out) = run(&read_write);
    assert_eq!(ending, Ending::PowerOff, "{out}");
    assert_eq!(
        out,
        "capacity 2048 sectors\nid disk.img\nsector 0: keel disk sector 0\nsector 1 written\nflushed\nread past the end refused\n"
    );
    assert!(sector(1).starts_with(b"written by keel's test guest\n"));
    // Read-only: the write is refused and the file keeps its bytes.
    file.write_all_at(&[0u8; 512], 512).unwrap();
    let mut read_only = read_write.clone();
    read_only.disks[0].read_only = true;
    let (_, out) = run(&read_only);
    assert!(
        out.contains("write refused: the disk is read-only\n"),
        "{out}"
    );
    assert_eq!(sector(1), [0u8; 512]);
    // A disk another VM writes is not opened again.
    let console = Console::default();
    let holder = Vm::create(&read_write, Box::new(console)).unwrap();
    for other in [&read_write, &read_only] {
        let error = match Vm::create(other, Box::new(Console::default())) {
            Ok(_) => panic!("a disk in use was attached twice"),
            Err(e) => e.to_string(),
        };
        assert!(
            error.starts_with(&format!(
                "the disk {} is in use by another VM",
                path.display()
            )),
            "{error}"
        );
    }
    drop(holder);
    // A snapshot names the disk (a restore opens it again at its path)
    // and keeps its queue's state.
    let mut idle = read_write.clone();
    idle.cmdline = "idle".into();
    let mut vm = Vm::create(&idle, Box::new(Console::default())).unwrap();
    let controller = vm.controller();
    let dir = temp.path().join("snap");
    let snapshotter = {
        let dir = dir.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let result = controller.snapshot(&dir, false);
            controller.stop();
            result
        })
    };
    let _ = vm.run();
    snapshotter.join().unwrap().unwrap();
    let meta = keel_vm::snapshot::read_meta(&dir).unwrap();
    assert_eq!(
        meta.devices,
        vec![keel_vm::snapshot::DeviceSpec::Disk {
            path: path.clone(),
            read_only: false
        }]
    );
}

#[test]
fn the_balloon_gives_memory_back_to_the_host() {
    let mut config = config(1, 256 << 20, "balloon");
    config.balloon = true;
    let console = Console::default();
    let mut vm = Vm::create(&config, Box::new(console.clone())).unwrap();
    let memory = vm.memory().clone();
    let controller = vm.controller();
    let asker = std::thread::spawn(move || {
        wait_for(&console, "filled\n");
        let full = keel_vm::memory::resident(&memory);
        assert!(
            full > 240 << 20,
            "the guest wrote all its memory: {full} resident"
        );
        // Keep 64 MiB: 192 MiB (49152 pages) back to the host.
        controller.set_memory_target(64 << 20).unwrap();
        wait_for(&console, "balloon 49152 pages\n");
        let after = keel_vm::memory::resident(&memory);
        let pages = controller.balloon_pages();
        controller.stop();
        (full, after, pages)
    });
    assert_eq!(vm.run().unwrap(), Ending::Stopped);
    let (full, after, pages) = asker.join().unwrap();
    assert_eq!(pages, Some((49152, 49152, 49152)));
    assert!(
        after < full - (180 << 20),
        "{full} resident before, {after} after"
    );
}

#[test]
fn the_guest_draws_entropy_from_virtio_rng() {
    let mut config = config(1, 64 << 20, "rng");
    config.rng = true;
    let (ending, out) = run(&config);
    assert_eq!(ending, Ending::PowerOff, "{out}");
    assert_eq!(out, "rng: 32 bytes, not all zero, twice different\n");
}

#[test]
fn the_guest_reads_and_writes_a_shared_directory_over_virtio_9p() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "from the host\n").unwrap();
    std::os::unix::fs::symlink("/etc", dir.path().join("escape")).unwrap();
    let mut config = config(1, 64 << 20, "p9");
    config.shares = vec![keel_vm::vm::Share {
        tag: "keelshare".into(),
        path: dir.path().to_path_buf(),
    }];
    let (ending, out) = run(&config);
    assert_eq!(ending, Ending::PowerOff, "{out}");
    assert_eq!(
        out,
        "tag keelshare\nversion 9P2000.L\nread: from the host\nwrote 23 bytes\n\
         walk through a link: 1 of 2 names\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("from-guest")).unwrap(),
        "written over virtio-9p\n"
    );
}
