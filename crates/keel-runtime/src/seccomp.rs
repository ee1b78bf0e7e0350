//! Seccomp from the OCI profile, with runc's semantics.
//!
//! [`compile`] turns `linux.seccomp` into a libseccomp filter the way runc's
//! `libcontainer/seccomp/seccomp_linux.go` does (same default errno, same
//! rule-per-condition fallback, redundant and unknown syscalls skipped), then
//! exports the BPF program and prepends runc's `patchbpf` stub: syscalls newer
//! than the newest one the profile names get `-ENOSYS` instead of the default
//! action, so programs fall back gracefully on syscalls the profile predates.
//! [`Filter::load`] installs the program with `seccomp(2)` itself, which is
//! where the requested filter flags and the notify listener come from.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{FromRawFd, OwnedFd};
use std::str::FromStr;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};

use crate::error::{Error, Result};
use crate::spec::{Seccomp, Syscall, SyscallArg};

/// The actions the runtime-spec defines, as `features` reports them.
pub const ACTIONS: &[&str] = &[
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_LOG",
    "SCMP_ACT_NOTIFY",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_TRAP",
];

/// The argument comparison operators the runtime-spec defines.
pub const OPERATORS: &[&str] = &[
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_LE",
    "SCMP_CMP_LT",
    "SCMP_CMP_MASKED_EQ",
    "SCMP_CMP_NE",
];

/// Every architecture name a profile may list. Whether the installed
/// libseccomp can add one is [`supported_architectures`].
pub const ARCHITECTURES: &[&str] = &[
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_SH",
    "SCMP_ARCH_SHEB",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
];

/// The filter flags the runtime-spec defines and keel understands.
pub const KNOWN_FLAGS: &[&str] = &[
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
];

/// Linux system calls have at most six arguments.
const MAX_ARGUMENTS: usize = 6;
/// The kernel's limit on a classic BPF program (`BPF_MAXINSNS`).
const MAX_INSTRUCTIONS: usize = 4096;
/// `SECCOMP_RET_ERRNO | ENOSYS`, what the stub returns for unknown syscalls.
const RET_ERRNO_ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
/// Set in the syscall number by x32 processes (`__X32_SYSCALL_BIT`).
const X32_SYSCALL_BIT: u32 = 1 << 30;

fn flag_bits(name: &str) -> Option<libc::c_ulong> {
    match name {
        "SECCOMP_FILTER_FLAG_TSYNC" => Some(libc::SECCOMP_FILTER_FLAG_TSYNC),
        "SECCOMP_FILTER_FLAG_LOG" => Some(libc::SECCOMP_FILTER_FLAG_LOG),
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => Some(libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW),
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" => {
            Some(libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV)
        }
        _ => None,
    }
}

/// Maps an OCI action to libseccomp's, with runc's defaults: `errnoRet`
/// defaults to EPERM for both SCMP_ACT_ERRNO and SCMP_ACT_TRACE.
fn parse_action(name: &str, errno_ret: Option<u32>) -> Option<ScmpAction> {
    let data = errno_ret.unwrap_or(libc::EPERM as u32);
    Some(match name {
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => ScmpAction::KillThread,
        "SCMP_ACT_KILL_PROCESS" => ScmpAction::KillProcess,
        "SCMP_ACT_TRAP" => ScmpAction::Trap,
        // validate() keeps data within u16.
        "SCMP_ACT_ERRNO" => ScmpAction::Errno(data as i32),
        "SCMP_ACT_TRACE" => ScmpAction::Trace(data as u16),
        "SCMP_ACT_ALLOW" => ScmpAction::Allow,
        "SCMP_ACT_LOG" => ScmpAction::Log,
        "SCMP_ACT_NOTIFY" => ScmpAction::Notify,
        _ => return None,
    })
}

fn parse_arch(name: &str) -> Option<ScmpArch> {
    if !ARCHITECTURES.contains(&name) {
        return None;
    }
    ScmpArch::from_str(name).ok()
}

fn parse_condition(arg: &SyscallArg) -> Option<ScmpArgCompare> {
    let op = match arg.op.as_str() {
        "SCMP_CMP_NE" => ScmpCompareOp::NotEqual,
        "SCMP_CMP_LT" => ScmpCompareOp::Less,
        "SCMP_CMP_LE" => ScmpCompareOp::LessOrEqual,
        "SCMP_CMP_EQ" => ScmpCompareOp::Equal,
        "SCMP_CMP_GE" => ScmpCompareOp::GreaterEqual,
        "SCMP_CMP_GT" => ScmpCompareOp::Greater,
        // As in runc (libseccomp-golang's MakeCondition): `value` is the
        // mask and `valueTwo` the value the masked argument must equal.
        "SCMP_CMP_MASKED_EQ" => {
            return Some(ScmpArgCompare::new(
                arg.index,
                ScmpCompareOp::MaskedEqual(arg.value),
                arg.value_two,
            ));
        }
        _ => return None,
    };
    Some(ScmpArgCompare::new(arg.index, op, arg.value))
}

fn check_errno_ret(errno_ret: Option<u32>, what: impl FnOnce() -> String) -> Result<()> {
    match errno_ret {
        Some(value) if value > u32::from(u16::MAX) => Err(Error::msg(format!(
            "seccomp: errnoRet {value} {} is out of range (at most {})",
            what(),
            u16::MAX
        ))),
        _ => Ok(()),
    }
}

/// Checks a profile without loading it: known action, operator,
/// architecture and flag names, argument indices below 6, errno values that
/// fit the kernel's 16 bits, and the SCMP_ACT_NOTIFY rules. Unknown syscall
/// names are not an error: they are skipped when compiling, as runc does.
pub fn validate(profile: &Seccomp) -> Result<()> {
    let default =
        parse_action(&profile.default_action, profile.default_errno_ret).ok_or_else(|| {
            Error::msg(format!(
                "seccomp: unknown defaultAction {:?}",
                profile.default_action
            ))
        })?;
    // A notifying default would catch the write that hands the notify fd over.
    if default == ScmpAction::Notify {
        return Err(Error::msg(
            "seccomp: SCMP_ACT_NOTIFY cannot be used as default action",
        ));
    }
    check_errno_ret(profile.default_errno_ret, || "of defaultErrnoRet".into())?;
    for arch in &profile.architectures {
        if parse_arch(arch).is_none() {
            return Err(Error::msg(format!(
                "seccomp: unknown architecture {arch:?}"
            )));
        }
    }
    for flag in &profile.flags {
        if flag_bits(flag).is_none() {
            return Err(Error::msg(format!("seccomp: unknown flag {flag:?}")));
        }
    }
    for call in &profile.syscalls {
        validate_syscall(profile, call)?;
    }
    Ok(())
}

fn validate_syscall(profile: &Seccomp, call: &Syscall) -> Result<()> {
    let names = &call.names;
    let action = parse_action(&call.action, call.errno_ret).ok_or_else(|| {
        Error::msg(format!(
            "seccomp: unknown action {:?} for syscalls {names:?}",
            call.action
        ))
    })?;
    check_errno_ret(call.errno_ret, || format!("for syscalls {names:?}"))?;
    if names.iter().any(|n| n.is_empty()) {
        return Err(Error::msg(format!(
            "seccomp: empty string is not a valid syscall name (in syscalls {names:?})"
        )));
    }
    if action == ScmpAction::Notify {
        // The runtime writes the notify fd to its parent after loading the
        // filter; a notifying write would hang there (runc refuses it too).
        if names.iter().any(|n| n == "write") {
            return Err(Error::msg(
                "seccomp: SCMP_ACT_NOTIFY cannot be used for the write syscall",
            ));
        }
        if profile.listener_path.as_deref().is_none_or(str::is_empty) {
            return Err(Error::msg(format!(
                "seccomp: SCMP_ACT_NOTIFY for syscalls {names:?} requires listenerPath"
            )));
        }
    }
    for arg in &call.args {
        if arg.index as usize >= MAX_ARGUMENTS {
            return Err(Error::msg(format!(
                "seccomp: argument index {} for syscalls {names:?} is out of range (syscalls have at most {MAX_ARGUMENTS} arguments)",
                arg.index
            )));
        }
        if parse_condition(arg).is_none() {
            return Err(Error::msg(format!(
                "seccomp: unknown operator {:?} for syscalls {names:?}",
                arg.op
            )));
        }
    }
    Ok(())
}

/// A compiled seccomp filter, ready to load.
pub struct Filter {
    /// The libseccomp context the rules were added to (kept for [`Filter::pfc`]).
    context: ScmpFilterContext,
    /// The final BPF program: the -ENOSYS stub followed by libseccomp's.
    program: Vec<libc::sock_filter>,
    /// `SECCOMP_FILTER_FLAG_*` bits for seccomp(2).
    flags: libc::c_ulong,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter")
            .field("instructions", &self.program.len())
            .field("flags", &self.flags)
            .finish()
    }
}

fn libseccomp_error(what: impl std::fmt::Display, err: libseccomp::error::SeccompError) -> Error {
    Error::msg(format!("seccomp: {what}: {err}"))
}

/// Builds the filter for `profile` (see the module documentation).
pub fn compile(profile: &Seccomp) -> Result<Filter> {
    validate(profile)?;
    let default = parse_action(&profile.default_action, profile.default_errno_ret)
        .ok_or_else(|| Error::msg("seccomp: invalid default action"))?;
    let mut context = ScmpFilterContext::new(default)
        .map_err(|e| libseccomp_error("create filter context", e))?;

    for name in &profile.architectures {
        let arch = parse_arch(name)
            .ok_or_else(|| Error::msg(format!("seccomp: unknown architecture {name:?}")))?;
        context
            .add_arch(arch)
            .map_err(|e| libseccomp_error(format_args!("add architecture {name}"), e))?;
    }

    // runc: binary-tree dispatch pays off for long profiles; libseccomp
    // <= 2.5.4 misbehaves with it on empty ones. Not fatal when missing.
    if profile.syscalls.len() > 32
        && let Err(err) = context.set_ctl_optimize(2)
    {
        tracing::debug!("seccomp binary tree optimization not available: {err}");
    }
    // The runtime sets no_new_privs itself, from process.noNewPrivileges.
    context
        .set_ctl_nnp(false)
        .map_err(|e| libseccomp_error("unset no_new_privs attribute", e))?;

    let mut uses_notify = false;
    for call in &profile.syscalls {
        let action = parse_action(&call.action, call.errno_ret).ok_or_else(|| {
            Error::msg(format!(
                "seccomp: unknown action {:?} for syscalls {:?}",
                call.action, call.names
            ))
        })?;
        uses_notify |= action == ScmpAction::Notify;
        add_rules(&mut context, call, action, default)?;
    }

    let mut program = generate_enosys_stub(profile)?;
    program.extend(export_bpf(&context)?);
    if program.len() > MAX_INSTRUCTIONS {
        return Err(Error::msg(format!(
            "seccomp: the filter has {} BPF instructions, more than the kernel's limit of {MAX_INSTRUCTIONS}",
            program.len()
        )));
    }

    let mut flags: libc::c_ulong = 0;
    for name in &profile.flags {
        flags |=
            flag_bits(name).ok_or_else(|| Error::msg(format!("seccomp: unknown flag {name:?}")))?;
    }
    if uses_notify {
        flags |= libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
        // The kernel refuses TSYNC with a listener unless failures to sync
        // are reported as ESRCH instead of a thread id.
        if flags & libc::SECCOMP_FILTER_FLAG_TSYNC != 0 {
            flags |= libc::SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
        }
    } else {
        // Only meaningful with a listener; the kernel rejects it otherwise.
        flags &= !libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
    }

    Ok(Filter {
        context,
        program,
        flags,
    })
}

/// Adds the rules for one OCI syscall entry, as runc's `matchCall` does.
fn add_rules(
    context: &mut ScmpFilterContext,
    call: &Syscall,
    action: ScmpAction,
    default: ScmpAction,
) -> Result<()> {
    if action == default {
        // Redundant, and libseccomp would refuse it.
        return Ok(());
    }
    let mut conditions = Vec::with_capacity(call.args.len());
    let mut per_index = [0usize; MAX_ARGUMENTS];
    for arg in &call.args {
        let condition = parse_condition(arg).ok_or_else(|| {
            Error::msg(format!(
                "seccomp: unknown operator {:?} for syscalls {:?}",
                arg.op, call.names
            ))
        })?;
        let count = per_index.get_mut(arg.index as usize).ok_or_else(|| {
            Error::msg(format!(
                "seccomp: argument index {} for syscalls {:?} is out of range",
                arg.index, call.names
            ))
        })?;
        *count += 1;
        conditions.push(condition);
    }
    // libseccomp cannot AND two conditions on the same argument; runc then
    // falls back to one rule per condition, which ORs them.
    let one_rule_per_condition = per_index.iter().any(|&n| n > 1);

    for name in &call.names {
        let Ok(syscall) = ScmpSyscall::from_name(name) else {
            // Newer than this libseccomp or not on this architecture.
            tracing::debug!("unknown seccomp syscall {name:?} ignored");
            continue;
        };
        let added = if conditions.is_empty() {
            context.add_rule(action, syscall).map(|_| ())
        } else if one_rule_per_condition {
            conditions.iter().try_for_each(|condition| {
                context
                    .add_rule_conditional(action, syscall, std::slice::from_ref(condition))
                    .map(|_| ())
            })
        } else {
            context
                .add_rule_conditional(action, syscall, &conditions)
                .map(|_| ())
        };
        added.map_err(|e| libseccomp_error(format_args!("add rule for syscall {name}"), e))?;
    }
    Ok(())
}

/// An anonymous file for libseccomp's fd-based exports.
fn memfd(name: &std::ffi::CStr) -> Result<File> {
    // SAFETY: `name` is NUL-terminated; the result is checked before use.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::io(
            "seccomp: memfd_create",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: `fd` was just created and nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn read_back(mut file: File, what: &str) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut data))
        .map_err(|e| Error::io(format!("seccomp: read exported {what}"), e))?;
    Ok(data)
}

/// libseccomp's program, in host byte order as the kernel wants it.
fn export_bpf(context: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>> {
    let file = memfd(c"keel-seccomp-bpf")?;
    context
        .export_bpf(&file)
        .map_err(|e| libseccomp_error("export BPF", e))?;
    let data = read_back(file, "BPF")?;
    if data.len() % 8 != 0 {
        return Err(Error::msg(format!(
            "seccomp: exported BPF is {} bytes, not a whole number of instructions",
            data.len()
        )));
    }
    Ok(data
        .chunks_exact(8)
        .map(|b| libc::sock_filter {
            code: u16::from_ne_bytes([b[0], b[1]]),
            jt: b[2],
            jf: b[3],
            k: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        })
        .collect())
}

// Classic BPF opcodes used by the stub.
const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_JGT_K: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const BPF_JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// A jump offset that fits a conditional jump. Callers check `<= 255` first.
fn short(offset: usize) -> u8 {
    u8::try_from(offset).unwrap_or(u8::MAX)
}

fn far(offset: usize) -> u32 {
    u32::try_from(offset).unwrap_or(u32::MAX)
}

/// `AUDIT_ARCH_*` for an architecture: the value the kernel puts in
/// `seccomp_data.arch`. x32 shares x86_64's and is told apart by bit 30 of
/// the syscall number. `None` for architectures runc's patchbpf does not
/// know; those get no stub (runc refuses them instead).
fn audit_arch(arch: ScmpArch) -> Option<u32> {
    const B64: u32 = 0x8000_0000; // __AUDIT_ARCH_64BIT
    const LE: u32 = 0x4000_0000; // __AUDIT_ARCH_LE
    const N32: u32 = 0x2000_0000; // __AUDIT_ARCH_CONVENTION_MIPS64_N32
    const EM_386: u32 = 3;
    const EM_MIPS: u32 = 8;
    const EM_PPC: u32 = 20;
    const EM_PPC64: u32 = 21;
    const EM_S390: u32 = 22;
    const EM_ARM: u32 = 40;
    const EM_X86_64: u32 = 62;
    const EM_AARCH64: u32 = 183;
    const EM_RISCV: u32 = 243;
    const EM_LOONGARCH: u32 = 258;
    Some(match arch {
        ScmpArch::Native => return audit_arch(ScmpArch::native()),
        ScmpArch::X86 => EM_386 | LE,
        ScmpArch::X8664 | ScmpArch::X32 => EM_X86_64 | B64 | LE,
        ScmpArch::Arm => EM_ARM | LE,
        ScmpArch::Aarch64 => EM_AARCH64 | B64 | LE,
        ScmpArch::Mips => EM_MIPS,
        ScmpArch::Mips64 => EM_MIPS | B64,
        ScmpArch::Mips64N32 => EM_MIPS | B64 | N32,
        ScmpArch::Mipsel => EM_MIPS | LE,
        ScmpArch::Mipsel64 => EM_MIPS | B64 | LE,
        ScmpArch::Mipsel64N32 => EM_MIPS | B64 | LE | N32,
        ScmpArch::Ppc => EM_PPC,
        ScmpArch::Ppc64 => EM_PPC64 | B64,
        ScmpArch::Ppc64Le => EM_PPC64 | B64 | LE,
        ScmpArch::S390 => EM_S390,
        ScmpArch::S390X => EM_S390 | B64,
        ScmpArch::Riscv64 => EM_RISCV | B64 | LE,
        ScmpArch::Loongarch64 => EM_LOONGARCH | B64 | LE,
        _ => return None,
    })
}

/// The largest syscall number the profile names, per `AUDIT_ARCH_*` and
/// (for x86_64 vs x32) per libseccomp architecture; runc's `findLastSyscalls`.
type LastSyscalls = std::collections::BTreeMap<u32, Vec<(ScmpArch, u32)>>;

fn find_last_syscalls(profile: &Seccomp) -> LastSyscalls {
    let mut last = LastSyscalls::new();
    for name in &profile.architectures {
        let Some(mut arch) = parse_arch(name) else {
            continue;
        };
        if arch == ScmpArch::Native {
            arch = ScmpArch::native();
        }
        let Some(native) = audit_arch(arch) else {
            tracing::debug!("seccomp: no -ENOSYS stub for architecture {name}");
            continue;
        };
        let entry = last.entry(native).or_default();
        if entry.iter().any(|(seen, _)| *seen == arch) {
            continue;
        }
        let largest = profile
            .syscalls
            .iter()
            .flat_map(|call| &call.names)
            .filter_map(|n| ScmpSyscall::from_name_by_arch(n, arch).ok())
            .map(|s| s.as_raw_syscall())
            .filter(|&nr| nr > 0)
            .max();
        match largest {
            Some(nr) => entry.push((arch, nr as u32)),
            None => tracing::debug!("seccomp: no known syscalls for architecture {name}"),
        }
    }
    last.retain(|_, arches| !arches.is_empty());
    last
}

/// runc's patchbpf stub: for each architecture, syscall numbers above the
/// largest one in the profile return -ENOSYS; everything else falls through
/// to libseccomp's program. Empty when the default action already lets
/// unknown syscalls through (allow, log, trace) or returns ENOSYS.
fn generate_enosys_stub(profile: &Seccomp) -> Result<Vec<libc::sock_filter>> {
    let default_is_enosys = profile.default_action == "SCMP_ACT_ERRNO"
        && profile.default_errno_ret == Some(libc::ENOSYS as u32);
    if default_is_enosys
        || matches!(
            profile.default_action.as_str(),
            "SCMP_ACT_ALLOW" | "SCMP_ACT_LOG" | "SCMP_ACT_TRACE"
        )
    {
        return Ok(Vec::new());
    }
    let last = find_last_syscalls(profile);
    let x86_64 = audit_arch(ScmpArch::X8664).unwrap_or_default();

    // Built back to front, so jump offsets are measured from the end.
    let mut tail = vec![
        // Fall-through from the last section: into the filter.
        stmt(BPF_JA, 1),
        // Sections jump here for -ENOSYS.
        stmt(BPF_RET_K, RET_ERRNO_ENOSYS),
    ];
    let mut arch_jump_table = Vec::new();
    for (&native, max_syscalls) in &last {
        let base_jump_enosys = tail.len() - 1;
        let base_jump_filter = base_jump_enosys + 1;
        let mut section = vec![stmt(BPF_LD_W_ABS, 0)]; // syscall number

        match max_syscalls.as_slice() {
            [] => continue,
            &[(arch, sysno)] => {
                if matches!(arch, ScmpArch::S390 | ScmpArch::S390X) {
                    // Unknown syscalls reach the filter as setup(2), number
                    // 0, on s390(x): answer -ENOSYS for it.
                    section.push(jump(BPF_JEQ_K, 0, 0, 1));
                    section.push(stmt(BPF_RET_K, RET_ERRNO_ENOSYS));
                }
                let mut section_tail = if base_jump_enosys < 255 {
                    vec![
                        jump(BPF_JGT_K, sysno, short(base_jump_enosys + 1), 0),
                        stmt(BPF_JA, far(base_jump_filter)),
                    ]
                } else {
                    vec![
                        jump(BPF_JGT_K, sysno, 0, 1),
                        stmt(BPF_RET_K, RET_ERRNO_ENOSYS),
                        stmt(BPF_JA, far(base_jump_filter)),
                    ]
                };
                if native == x86_64 {
                    // Skip the check when in the other mode (x32 vs x86_64).
                    let skip = short(section_tail.len() - 1);
                    let mode_check = match arch {
                        ScmpArch::X32 => jump(BPF_JSET_K, X32_SYSCALL_BIT, 0, skip),
                        _ => jump(BPF_JSET_K, X32_SYSCALL_BIT, skip, 0),
                    };
                    section_tail.insert(0, mode_check);
                }
                section.extend(section_tail);
            }
            [_, _] => {
                let find = |wanted: ScmpArch| {
                    max_syscalls
                        .iter()
                        .find(|(arch, _)| *arch == wanted)
                        .map(|&(_, nr)| nr)
                };
                let (Some(x86_nr), Some(x32_nr), true) =
                    (find(ScmpArch::X8664), find(ScmpArch::X32), native == x86_64)
                else {
                    return Err(Error::msg(format!(
                        "seccomp: unexpected architecture overlap on AUDIT_ARCH {native:#x}"
                    )));
                };
                if base_jump_enosys + 2 <= 255 {
                    section.extend([
                        jump(BPF_JSET_K, X32_SYSCALL_BIT, 1, 0),
                        jump(BPF_JGT_K, x86_nr, short(base_jump_enosys + 2), 1),
                        jump(BPF_JGT_K, x32_nr, short(base_jump_enosys + 1), 0),
                        stmt(BPF_JA, far(base_jump_filter)),
                    ]);
                } else {
                    section.extend([
                        jump(BPF_JSET_K, X32_SYSCALL_BIT, 1, 0),
                        jump(BPF_JGT_K, x86_nr, 1, 2),
                        jump(BPF_JGT_K, x32_nr, 0, 1),
                        stmt(BPF_RET_K, RET_ERRNO_ENOSYS),
                        stmt(BPF_JA, far(base_jump_filter)),
                    ]);
                }
            }
            _ => {
                return Err(Error::msg(format!(
                    "seccomp: too many architectures on AUDIT_ARCH {native:#x}"
                )));
            }
        }
        section.extend(tail);
        tail = section;
        arch_jump_table.push((native, tail.len()));
    }

    // Architectures without a section go straight to the filter (which
    // applies its bad-architecture action).
    let mut program = vec![stmt(BPF_JA, far(tail.len()))];
    program.extend(tail);
    for (native, from_end) in arch_jump_table {
        let jump_by = program.len() - from_end;
        let mut head = if jump_by <= 255 {
            vec![jump(BPF_JEQ_K, native, short(jump_by), 0)]
        } else {
            vec![jump(BPF_JEQ_K, native, 0, 1), stmt(BPF_JA, far(jump_by))]
        };
        head.extend(program);
        program = head;
    }
    let mut stub = vec![stmt(BPF_LD_W_ABS, 4)]; // seccomp_data.arch
    stub.extend(program);
    Ok(stub)
}

impl Filter {
    /// Loads the filter into the calling process (the thread, or all
    /// threads with SECCOMP_FILTER_FLAG_TSYNC). The caller must have set
    /// no_new_privs or hold CAP_SYS_ADMIN. Returns the notify fd when the
    /// profile uses SCMP_ACT_NOTIFY (the caller sends it to listenerPath).
    ///
    /// Allocates nothing on success, so it is safe between fork and exec.
    pub fn load(self) -> Result<Option<OwnedFd>> {
        let program = libc::sock_fprog {
            // compile() keeps the program within BPF_MAXINSNS.
            len: self.program.len() as u16,
            filter: self.program.as_ptr().cast_mut(),
        };
        if self.flags == 0 {
            // SAFETY: `program` points into `self.program`, alive for the
            // call; the kernel copies it.
            let rc = unsafe {
                libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                    &program as *const libc::sock_fprog,
                )
            };
            if rc != 0 {
                return Err(Error::io(
                    "seccomp: load filter",
                    std::io::Error::last_os_error(),
                ));
            }
            return Ok(None);
        }
        // SAFETY: as above; seccomp(2) takes (operation, flags, program).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
                self.flags,
                &program as *const libc::sock_fprog,
            )
        };
        if rc < 0 {
            return Err(Error::io(
                format!("seccomp: load filter (flags {:#x})", self.flags),
                std::io::Error::last_os_error(),
            ));
        }
        if self.flags & libc::SECCOMP_FILTER_FLAG_NEW_LISTENER != 0 {
            let fd = libc::c_int::try_from(rc)
                .map_err(|_| Error::msg(format!("seccomp: invalid listener fd {rc}")))?;
            // SAFETY: with NEW_LISTENER the kernel returns a new fd we own.
            return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
        }
        Ok(None)
    }

    /// Number of BPF instructions, stub included.
    pub fn instruction_count(&self) -> usize {
        self.program.len()
    }

    /// The `SECCOMP_FILTER_FLAG_*` bits [`Filter::load`] passes to seccomp(2).
    pub fn flags(&self) -> libc::c_ulong {
        self.flags
    }

    /// libseccomp's human-readable form of the rules (without the stub),
    /// for debugging.
    pub fn pfc(&self) -> Result<String> {
        let file = memfd(c"keel-seccomp-pfc")?;
        self.context
            .export_pfc(&file)
            .map_err(|e| libseccomp_error("export PFC", e))?;
        let data = read_back(file, "PFC")?;
        Ok(String::from_utf8_lossy(&data).into_owned())
    }
}

/// Whether the kernel accepts these seccomp(2) filter flags. A NULL program
/// makes the kernel stop with EFAULT right after checking the flags (EINVAL
/// when it does not know them), so nothing is installed.
fn kernel_accepts_flags(flags: libc::c_ulong) -> bool {
    // SAFETY: the NULL program is never dereferenced by us; the kernel
    // fails the copy with EFAULT.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
            flags,
            std::ptr::null::<libc::sock_fprog>(),
        )
    };
    rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EFAULT)
}

/// The [`KNOWN_FLAGS`] this kernel accepts.
pub fn supported_flags() -> Vec<&'static str> {
    KNOWN_FLAGS
        .iter()
        .copied()
        .filter(|name| {
            let mut bits = flag_bits(name).unwrap_or_default();
            if bits == libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV {
                // Only valid together with a listener.
                bits |= libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
            }
            bits != 0 && kernel_accepts_flags(bits)
        })
        .collect()
}

/// The [`ARCHITECTURES`] the installed libseccomp can add to a filter.
pub fn supported_architectures() -> Vec<&'static str> {
    ARCHITECTURES
        .iter()
        .copied()
        .filter(|name| {
            let Some(arch) = parse_arch(name) else {
                return false;
            };
            // A fresh filter without the native architecture: libseccomp
            // refuses to mix endiannesses in one filter.
            let Ok(mut context) = ScmpFilterContext::new(ScmpAction::Allow) else {
                return false;
            };
            context.remove_arch(ScmpArch::Native).is_ok() && context.add_arch(arch).is_ok()
        })
        .collect()
}

/// The installed libseccomp's version, e.g. "2.5.4".
pub fn library_version() -> Option<String> {
    libseccomp::ScmpVersion::current()
        .ok()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::{WaitStatus, waitpid};
    use nix::unistd::{ForkResult, fork};

    fn profile(json: &str) -> Seccomp {
        serde_json::from_str(json).expect("test profile is valid JSON")
    }

    fn docker_default() -> Seccomp {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/docker-default-seccomp.json"
        );
        let data = std::fs::read(path).expect("read docker-default-seccomp.json");
        serde_json::from_slice(&data).expect("parse docker-default-seccomp.json")
    }

    /// Loads `filter` in a forked child (after setting no_new_privs), runs
    /// `body` there and returns its exit status. The child only makes
    /// syscalls, nothing that could deadlock after fork in a threaded test.
    fn run_in_child(filter: Filter, body: fn(Option<OwnedFd>) -> i32) -> i32 {
        // SAFETY: the child does only async-signal-safe work and _exits.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                // SAFETY: plain prctl/_exit calls.
                unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
                let code = match filter.load() {
                    Ok(fd) => body(fd),
                    Err(_) => 200,
                };
                // SAFETY: ends the forked child without running the
                // parent's atexit handlers or destructors.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                drop(filter);
                match waitpid(child, None).expect("waitpid") {
                    WaitStatus::Exited(_, code) => code,
                    other => panic!("child did not exit normally: {other:?}"),
                }
            }
        }
    }

    /// errno of a failed raw syscall, 0 on success.
    fn errno_of(rc: libc::c_long) -> i32 {
        if rc < 0 {
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(255)
        } else {
            0
        }
    }

    #[test]
    fn validate_names_unknown_action() {
        let err = validate(&profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_FOO"}]}"#,
        ))
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            r#"seccomp: unknown action "SCMP_ACT_FOO" for syscalls ["mkdir"]"#
        );
        let err = validate(&profile(r#"{"defaultAction":"SCMP_ACT_NOPE"}"#))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"SCMP_ACT_NOPE\"") && err.contains("defaultAction"),
            "{err}"
        );
    }

    #[test]
    fn validate_names_unknown_operator_arch_flag_and_index() {
        let err = validate(&profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["kill"],"action":"SCMP_ACT_ERRNO",
                "args":[{"index":0,"value":1,"op":"SCMP_CMP_XX"}]}]}"#,
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("\"SCMP_CMP_XX\"") && err.contains("[\"kill\"]"),
            "{err}"
        );

        let err = validate(&profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_VAX"]}"#,
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"SCMP_ARCH_VAX\""), "{err}");

        let err = validate(&profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_BOGUS"]}"#,
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"SECCOMP_FILTER_FLAG_BOGUS\""), "{err}");

        let err = validate(&profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["kill"],"action":"SCMP_ACT_ERRNO",
                "args":[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("index 6"), "{err}");
    }

    #[test]
    fn validate_checks_notify_rules_and_ignores_unknown_syscalls() {
        let err = validate(&profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getppid"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("listenerPath"), "{err}");
        let err = validate(&profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/agent.sock",
                "syscalls":[{"names":["write"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("write"), "{err}");
        assert!(validate(&profile(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#)).is_err());

        let unknown = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["no_such_syscall_2099","mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#,
        );
        validate(&unknown).unwrap();
        compile(&unknown).unwrap();
    }

    #[test]
    fn docker_default_profile_compiles_with_enosys_stub() {
        let docker = docker_default();
        validate(&docker).unwrap();
        let filter = compile(&docker).unwrap();
        assert_eq!(filter.flags(), 0);
        let stub = generate_enosys_stub(&docker).unwrap();
        assert!(!stub.is_empty());
        assert!(filter.instruction_count() > stub.len());
        let pfc = filter.pfc().unwrap();
        assert!(pfc.contains("x86_64"), "{pfc}");
    }

    #[test]
    fn rules_equal_to_the_default_action_are_skipped() {
        // libseccomp refuses a rule whose action is the default one.
        let filter = compile(&profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,"syscalls":[
                {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":1},
                {"names":["getpid"],"action":"SCMP_ACT_ALLOW"}]}"#,
        ))
        .unwrap();
        let pfc = filter.pfc().unwrap();
        assert!(!pfc.contains("mkdir"), "{pfc}");
    }

    #[test]
    fn errno_rule_blocks_mkdir_in_child() {
        let filter = compile(&profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
        ))
        .unwrap();
        let code = run_in_child(filter, |_| {
            // SAFETY: a NUL-terminated literal path.
            let rc =
                unsafe { libc::mkdir(c"/tmp/keel-seccomp-test-never-created".as_ptr(), 0o700) };
            if rc == 0 {
                return 0;
            }
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(255)
        });
        assert_eq!(code, libc::EPERM);
    }

    #[test]
    fn argument_conditions_follow_runc_semantics() {
        // personality: two conditions on arg 0 → one rule each (OR).
        // getpriority: conditions on args 0 and 1 → one rule (AND).
        // umask: MASKED_EQ takes the mask from value, the datum from valueTwo.
        let filter = compile(&profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["personality"],"action":"SCMP_ACT_ERRNO","errnoRet":7,
                 "args":[{"index":0,"value":4294967295,"op":"SCMP_CMP_EQ"},{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]},
                {"names":["getpriority"],"action":"SCMP_ACT_ERRNO","errnoRet":7,
                 "args":[{"index":0,"value":0,"op":"SCMP_CMP_EQ"},{"index":1,"value":424242,"op":"SCMP_CMP_EQ"}]},
                {"names":["umask"],"action":"SCMP_ACT_ERRNO","errnoRet":7,
                 "args":[{"index":0,"value":63,"valueTwo":18,"op":"SCMP_CMP_MASKED_EQ"}]}]}"#,
        ))
        .unwrap();
        let code = run_in_child(filter, |_| {
            let e2big = |rc| errno_of(rc) == libc::E2BIG;
            // SAFETY: raw syscalls with plain integer arguments.
            let checks = unsafe {
                [
                    e2big(libc::syscall(libc::SYS_personality, 0xffff_ffffu64)),
                    e2big(libc::syscall(libc::SYS_personality, 8u64)),
                    !e2big(libc::syscall(libc::SYS_personality, 0u64)),
                    e2big(libc::syscall(libc::SYS_getpriority, 0, 424242)),
                    !e2big(libc::syscall(libc::SYS_getpriority, 0, 0)),
                    !e2big(libc::syscall(libc::SYS_getpriority, 1, 424242)),
                    e2big(libc::syscall(libc::SYS_umask, 0o022)),
                    e2big(libc::syscall(libc::SYS_umask, 0o122)),
                ]
            };
            let mut failed = 0;
            for (bit, ok) in checks.iter().enumerate() {
                if !ok {
                    failed |= 1 << bit;
                }
            }
            // The last check is reported separately to keep within 8 bits.
            // SAFETY: as above.
            let allowed = unsafe { libc::syscall(libc::SYS_umask, 0o027) } >= 0;
            if !allowed {
                return 255;
            }
            failed
        });
        assert_eq!(code, 0, "failed checks (bit per check): {code:#b}");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn docker_default_profile_in_child() {
        let filter = compile(&docker_default()).unwrap();
        let code = run_in_child(filter, |_| {
            // SAFETY: raw syscalls; the mkdir path cannot exist, the others
            // are refused or unknown.
            unsafe {
                let mkdir = errno_of(libc::syscall(
                    libc::SYS_mkdir,
                    c"/nonexistent-keel-dir/x".as_ptr(),
                    0o700,
                ));
                let unshare = errno_of(libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUTS));
                let unknown = errno_of(libc::syscall(1000));
                let clone3 = errno_of(libc::syscall(libc::SYS_clone3, 0, 0));
                let checks = [
                    mkdir == libc::ENOENT,
                    unshare == libc::EPERM,
                    unknown == libc::ENOSYS,
                    clone3 == libc::ENOSYS,
                    libc::syscall(libc::SYS_getppid) > 0,
                ];
                checks
                    .iter()
                    .enumerate()
                    .filter(|(_, ok)| !**ok)
                    .fold(0, |acc, (bit, _)| acc | (1 << bit))
            }
        });
        assert_eq!(code, 0, "failed checks (bit per check): {code:#b}");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn syscalls_newer_than_the_profile_get_enosys() {
        let filter = compile(&profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
                "syscalls":[{"names":["exit","exit_group","getpid","read","write","rt_sigreturn"],"action":"SCMP_ACT_ALLOW"}]}"#,
        ))
        .unwrap();
        let code = run_in_child(filter, |_| {
            // SAFETY: raw syscalls without pointer arguments.
            unsafe {
                let older = errno_of(libc::syscall(libc::SYS_getppid)); // 110 < exit_group's 231
                let newer = errno_of(libc::syscall(libc::SYS_pidfd_open, 0, 0)); // 434
                let allowed = libc::syscall(libc::SYS_getpid) > 0;
                i32::from(older != libc::EPERM)
                    | i32::from(newer != libc::ENOSYS) << 1
                    | i32::from(!allowed) << 2
            }
        });
        assert_eq!(code, 0, "failed checks (bit per check): {code:#b}");
    }

    #[test]
    fn notify_returns_a_listener_fd() {
        let filter = compile(&profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/agent.sock",
                "syscalls":[{"names":["getppid"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        ))
        .unwrap();
        assert_ne!(filter.flags() & libc::SECCOMP_FILTER_FLAG_NEW_LISTENER, 0);
        let code = run_in_child(filter, |fd| i32::from(fd.is_none()));
        assert_eq!(code, 0);
    }

    #[test]
    fn flags_are_passed_and_probed() {
        let filter = compile(&profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_LOG","SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
                "syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#,
        ))
        .unwrap();
        // WAIT_KILLABLE_RECV is dropped without a listener.
        assert_eq!(filter.flags(), libc::SECCOMP_FILTER_FLAG_LOG);
        let supported = supported_flags();
        assert!(
            supported.contains(&"SECCOMP_FILTER_FLAG_LOG"),
            "{supported:?}"
        );
        let archs = supported_architectures();
        assert!(archs.contains(&"SCMP_ARCH_X86_64"), "{archs:?}");
    }
}
