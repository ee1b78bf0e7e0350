//! Device rules on cgroup v2: v2 has no `devices` controller; the kernel
//! asks a BPF_PROG_TYPE_CGROUP_DEVICE program attached to the cgroup for
//! every open/mknod of a device node. This module compiles the OCI rules
//! (`linux.resources.devices`, later rules overriding earlier ones, default
//! deny) into such a program, loads it and attaches it, replacing the
//! programs keel attached before (as runc's devicefilter does).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::spec::DeviceCgroup;

// From linux/bpf.h.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;
// bpf_cgroup_dev_ctx.access_type: type in the low 16 bits, access above.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

/// One eBPF instruction (struct bpf_insn).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    /// dst in the low nibble, src in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

// Opcodes used (class | op | source).
const LDX_MEM_W: u8 = 0x61;
const ALU32_AND_K: u8 = 0x54;
const ALU32_RSH_K: u8 = 0x74;
const ALU32_MOV_X: u8 = 0xbc;
const ALU64_MOV_K: u8 = 0xb7;
const JMP_JNE_K: u8 = 0x55;
const JMP_JNE_X: u8 = 0x5d;
const JMP_EXIT: u8 = 0x95;

/// The program for `rules`: the last rule that matches a request decides;
/// none matching denies.
pub fn compile(rules: &[DeviceCgroup]) -> Result<Vec<Insn>> {
    let mut program = vec![
        // r2 = type, r3 = access, r4 = major, r5 = minor
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU32_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU32_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for rule in rules.iter().rev() {
        let kind = match rule.kind.as_deref().unwrap_or("a") {
            "a" => None,
            "c" => Some(DEV_CHAR),
            "b" => Some(DEV_BLOCK),
            other => {
                return Err(Error::msg(format!(
                    "device rule type {other:?}: use a, b or c"
                )));
            }
        };
        let mut access = 0;
        for c in rule.access.as_deref().unwrap_or("rwm").chars() {
            access |= match c {
                'r' => ACC_READ,
                'w' => ACC_WRITE,
                'm' => ACC_MKNOD,
                other => {
                    return Err(Error::msg(format!(
                        "device rule access {other:?}: use r, w and m"
                    )));
                }
            };
        }
        // Checks, each jumping past the rest of the block when it fails.
        let mut checks: Vec<Vec<Insn>> = Vec::new();
        if let Some(kind) = kind {
            checks.push(vec![insn(JMP_JNE_K, 2, 0, 0, kind)]);
        }
        if access != ACC_READ | ACC_WRITE | ACC_MKNOD {
            // Every access asked for must be in the rule's.
            checks.push(vec![
                insn(ALU32_MOV_X, 1, 3, 0, 0),
                insn(ALU32_AND_K, 1, 0, 0, access),
                insn(JMP_JNE_X, 1, 3, 0, 0),
            ]);
        }
        for (register, value) in [(4u8, rule.major), (5u8, rule.minor)] {
            if let Some(value) = value.filter(|v| *v >= 0) {
                let value = i32::try_from(value)
                    .map_err(|_| Error::msg(format!("device number {value} is too large")))?;
                checks.push(vec![insn(JMP_JNE_K, register, 0, 0, value)]);
            }
        }
        let verdict = [
            insn(ALU64_MOV_K, 0, 0, 0, i32::from(rule.allow)),
            insn(JMP_EXIT, 0, 0, 0, 0),
        ];
        let mut block: Vec<Insn> = checks.iter().flatten().copied().collect();
        block.extend(verdict);
        // Fix the jumps: each goes to the end of the block.
        let len = block.len();
        for (i, instruction) in block.iter_mut().enumerate() {
            if instruction.code == JMP_JNE_K || instruction.code == JMP_JNE_X {
                instruction.off = (len - i - 1) as i16;
            }
        }
        program.extend(block);
        if checks.is_empty() {
            // It matches everything: what comes after is unreachable, and
            // the kernel refuses a program with unreachable code.
            return Ok(program);
        }
    }
    program.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    program.push(insn(JMP_EXIT, 0, 0, 0, 0));
    Ok(program)
}

fn bpf<T>(command: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: the bpf syscall with a pointer to an attr of the size passed;
    // the kernel reads (and for queries writes) only within it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr as *mut T,
            std::mem::size_of::<T>(),
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

#[repr(C)]
#[derive(Default)]
struct LoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetFdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

fn load(program: &[Insn]) -> Result<OwnedFd> {
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 64 * 1024];
    let mut name = [0u8; 16];
    name[..11].copy_from_slice(b"keel_device");
    let mut attr = LoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: program.len() as u32,
        insns: program.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name: name,
        ..LoadAttr::default()
    };
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: a new fd the kernel gave us.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            Err(Error::msg(format!(
                "load the device rules as an eBPF program: {e}: {}",
                String::from_utf8_lossy(&log[..end]).trim()
            )))
        }
    }
}

/// The programs attached to `cgroup` for devices.
fn attached(cgroup: &OwnedFd) -> Vec<u32> {
    let mut ids = vec![0u32; 64];
    let mut attr = QueryAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..QueryAttr::default()
    };
    match bpf(BPF_PROG_QUERY, &mut attr) {
        Ok(_) => {
            ids.truncate(attr.prog_cnt as usize);
            ids
        }
        Err(_) => Vec::new(),
    }
}

/// Compiles `rules` and attaches the program to the cgroup v2 directory
/// `dir`, then detaches the device programs attached there before.
pub fn apply(dir: &Path, rules: &[DeviceCgroup]) -> Result<()> {
    let program = compile(rules)?;
    let path = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| Error::msg(format!("{} holds a NUL byte", dir.display())))?;
    // SAFETY: open with a valid C string; returns a new fd or -1.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Error::io(
            format!("open {}", dir.display()),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: a new fd we own.
    let cgroup = unsafe { OwnedFd::from_raw_fd(fd) };
    let before = attached(&cgroup);
    let loaded = load(&program)?;
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: loaded.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..AttachAttr::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attr)
        .map_err(|e| Error::io(format!("attach the device program to {}", dir.display()), e))?;
    for id in before {
        let mut get = GetFdAttr {
            prog_id: id,
            ..GetFdAttr::default()
        };
        let Ok(old) = bpf(BPF_PROG_GET_FD_BY_ID, &mut get) else {
            continue;
        };
        // SAFETY: a new fd the kernel gave us.
        let old = unsafe { OwnedFd::from_raw_fd(old as i32) };
        let mut detach = AttachAttr {
            target_fd: cgroup.as_raw_fd() as u32,
            attach_bpf_fd: old.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            ..AttachAttr::default()
        };
        bpf(BPF_PROG_DETACH, &mut detach).map_err(|e| {
            Error::io(
                format!("detach the old device program of {}", dir.display()),
                e,
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        allow: bool,
        kind: &str,
        major: Option<i64>,
        minor: Option<i64>,
        access: &str,
    ) -> DeviceCgroup {
        DeviceCgroup {
            allow,
            kind: Some(kind.into()),
            major,
            minor,
            access: Some(access.into()),
        }
    }

    /// Runs the program on a request the way the kernel would (a tiny
    /// interpreter for the instructions `compile` emits).
    fn verdict(program: &[Insn], kind: i32, access: i32, major: u32, minor: u32) -> bool {
        let ctx = [((access << 16) | kind) as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = program[pc];
            let (dst, src) = ((i.regs & 0x0f) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => r[dst] = ctx[(i.off / 4) as usize] as u64,
                ALU32_AND_K => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
                ALU32_RSH_K => r[dst] = ((r[dst] as u32) >> i.imm) as u64,
                ALU32_MOV_X => r[dst] = r[src] as u32 as u64,
                ALU64_MOV_K => r[dst] = i.imm as u64,
                JMP_JNE_K => {
                    if r[dst] != i.imm as u32 as u64 {
                        pc += i.off as usize
                    }
                }
                JMP_JNE_X => {
                    if r[dst] != r[src] {
                        pc += i.off as usize
                    }
                }
                JMP_EXIT => return r[0] == 1,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn later_rules_override_earlier_ones_and_the_default_denies() {
        let rules = [
            rule(false, "a", None, None, "rwm"),
            rule(true, "c", Some(1), Some(3), "rwm"),
            rule(true, "c", Some(136), None, "rw"),
            rule(false, "c", Some(1), Some(3), "w"),
        ];
        let p = compile(&rules).unwrap();
        assert!(verdict(&p, DEV_CHAR, ACC_READ, 1, 3), "/dev/null readable");
        assert!(
            !verdict(&p, DEV_CHAR, ACC_WRITE, 1, 3),
            "the later deny of w wins"
        );
        assert!(
            verdict(&p, DEV_CHAR, ACC_MKNOD, 1, 3),
            "mknod stays allowed"
        );
        assert!(
            verdict(&p, DEV_CHAR, ACC_READ | ACC_WRITE, 136, 7),
            "any pty minor"
        );
        assert!(!verdict(&p, DEV_CHAR, ACC_MKNOD, 136, 7), "but no mknod");
        assert!(!verdict(&p, DEV_CHAR, ACC_READ, 1, 5), "not listed: denied");
        assert!(!verdict(&p, DEV_BLOCK, ACC_READ, 1, 3), "the type counts");
        let open = compile(&[rule(true, "a", None, None, "rwm")]).unwrap();
        assert!(verdict(&open, DEV_BLOCK, ACC_WRITE, 8, 0));
        assert!(!verdict(&compile(&[]).unwrap(), DEV_CHAR, ACC_READ, 1, 3));
        assert!(compile(&[rule(true, "x", None, None, "r")]).is_err());
        assert!(compile(&[rule(true, "c", None, None, "q")]).is_err());
    }

    /// The real thing, where the kernel can: a process in a cgroup2
    /// directory with the program attached opens /dev/null but not
    /// /dev/zero.
    #[test]
    fn the_kernel_enforces_the_program() {
        let base = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.join("cgroup.procs").exists() && !p.join("tasks").exists());
        let Some(base) = base else {
            panic!("no cgroup2 hierarchy at /sys/fs/cgroup/unified or /sys/fs/cgroup");
        };
        if !nix::unistd::geteuid().is_root() {
            panic!("this test needs root (it makes a cgroup and loads an eBPF program)");
        }
        let dir = base.join(format!("keel-test-bpf-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        struct Remove<'a>(&'a Path);
        impl Drop for Remove<'_> {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir(self.0);
            }
        }
        let _remove = Remove(&dir);
        apply(
            &dir,
            &[
                rule(false, "a", None, None, "rwm"),
                rule(true, "c", Some(1), Some(3), "rwm"),
            ],
        )
        .unwrap();
        // Applying again replaces the program rather than adding one.
        apply(
            &dir,
            &[
                rule(false, "a", None, None, "rwm"),
                rule(true, "c", Some(1), Some(3), "rw"),
            ],
        )
        .unwrap();
        let cgroup = std::fs::File::open(&dir).unwrap();
        let fd = OwnedFd::from(cgroup);
        assert_eq!(attached(&fd).len(), 1, "one program attached");
        let procs = dir.join("cgroup.procs");
        let output = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}; (exec 3</dev/null && echo null-ok); (exec 3</dev/zero && echo zero-ok) 2>/dev/null; true",
                procs.display()
            ))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            text,
            "null-ok\n",
            "stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
