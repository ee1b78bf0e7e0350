//! keel's test guest under this machine's KVM: each of its modes through a
//! real VM (memory, vCPU threads, the serial console, power-off, panic,
//! triple fault, a stop from outside).

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_vm::vm::{Config, Ending, Vm};

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
    let stopper = vm.stopper();
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
