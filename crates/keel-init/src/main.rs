//! keel-init: the init `keel run --init` puts at PID 1 of a container
//! (bound at `/sbin/docker-init`, as docker's is): it starts the command
//! as its child, passes every signal it gets on to it, reaps whatever
//! exits (orphans re-parent to PID 1), and exits as the command did:
//! its code, or 128 + the signal that ended it. A program that never
//! expected to be PID 1 (no SIGTERM handler, zombies piling up) behaves
//! as it would anywhere else.
//!
//!     keel-init [--] COMMAND [ARG]...
//!
//! Run as `pause` (a link or copy of that name, as a Kubernetes pod's
//! pause image has it) or with `--pause`, it is a pod's pause process:
//! PID 1 of the sandbox that holds the pod's namespaces, which sleeps,
//! reaps the orphans of a shared PID namespace and exits 0 on SIGTERM or
//! SIGINT (as Kubernetes' own pause does).
//!
//! Built static so that it runs in any image.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStringExt;

/// Signals that stop a process from the terminal: not for PID 1 to obey.
const TERMINAL_STOPS: [libc::c_int; 3] = [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU];

fn main() {
    let invoked_as = std::env::args_os().next().unwrap_or_default();
    let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if std::path::Path::new(&invoked_as)
        .file_name()
        .is_some_and(|n| n == "pause")
        || args.first().is_some_and(|a| a == "--pause")
    {
        std::process::exit(pause());
    }
    if args.first().is_some_and(|a| a == "--") {
        args.remove(0);
    }
    if args.is_empty() {
        eprintln!("keel-init: usage: keel-init [--] COMMAND [ARG]...");
        std::process::exit(2);
    }
    let argv: Vec<CString> = match args
        .into_iter()
        .map(|a| CString::new(a.into_vec()))
        .collect::<Result<_, _>>()
    {
        Ok(argv) => argv,
        Err(_) => {
            eprintln!("keel-init: an argument holds a NUL byte");
            std::process::exit(2);
        }
    };
    std::process::exit(run(&argv));
}

fn run(argv: &[CString]) -> i32 {
    // Every signal waits in a queue for the loop below; the child starts
    // with them unblocked.
    // SAFETY: signal-mask calls on our own thread with sets we own.
    let (all, previous) = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut previous: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, &mut previous);
        (all, previous)
    };
    // SAFETY: fork; the child only resets signals and execs (or _exits).
    let child = unsafe { libc::fork() };
    if child < 0 {
        eprintln!("keel-init: fork: {}", std::io::Error::last_os_error());
        return 1;
    }
    if child == 0 {
        exec_child(argv, &previous);
    }
    for signal in TERMINAL_STOPS {
        // SAFETY: ignoring terminal stop signals in PID 1.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
    loop {
        // SAFETY: siginfo is plain data that sigwaitinfo fills.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waiting for one of the blocked signals.
        let signal = unsafe { libc::sigwaitinfo(&all, &mut info) };
        if signal < 0 {
            continue;
        }
        if signal == libc::SIGCHLD {
            if let Some(code) = reap(child) {
                return code;
            }
        } else if !TERMINAL_STOPS.contains(&signal) {
            // SAFETY: passing the signal on to our own child.
            unsafe { libc::kill(child, signal) };
        }
    }
}

/// A pod's pause process: reaps what ends, exits 0 on SIGTERM or SIGINT.
fn pause() -> i32 {
    // SAFETY: signal-mask calls on our own thread with a set we own.
    let all = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
        all
    };
    loop {
        // SAFETY: siginfo is plain data that sigwaitinfo fills.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waiting for one of the blocked signals.
        match unsafe { libc::sigwaitinfo(&all, &mut info) } {
            libc::SIGTERM | libc::SIGINT => return 0,
            libc::SIGCHLD => {
                reap(0);
            }
            _ => {}
        }
    }
}

/// Reaps every exited child; the code to exit with once the command has.
fn reap(command: libc::pid_t) -> Option<i32> {
    let mut result = None;
    loop {
        let mut status = 0;
        // SAFETY: waitpid with WNOHANG into an int we own.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return result;
        }
        if pid == command {
            result = Some(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status)
            } else {
                255
            });
        }
    }
}

fn exec_child(argv: &[CString], mask: &libc::sigset_t) -> ! {
    // SAFETY: in the forked child: reset dispositions and the mask, then
    // exec; on failure report like a shell does and _exit.
    unsafe {
        for signal in 1..=libc::SIGRTMAX() {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::signal(signal, libc::SIG_DFL);
            }
        }
        libc::sigprocmask(libc::SIG_SETMASK, mask, std::ptr::null_mut());
        let mut pointers: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        pointers.push(std::ptr::null());
        libc::execvp(pointers[0], pointers.as_ptr());
        let error = std::io::Error::last_os_error();
        let code = if error.raw_os_error() == Some(libc::ENOENT) {
            127
        } else {
            126
        };
        eprintln!("keel-init: exec {:?}: {error}", argv[0]);
        libc::_exit(code);
    }
}
