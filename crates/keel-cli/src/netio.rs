//! Network I/O without SIGPIPE. keel restores SIGPIPE's default action at
//! start (so `keel images | head` ends quietly), but hyper writes to
//! sockets with writev, which raises SIGPIPE when the peer has closed: the
//! whole process would die mid-pull or mid-push instead of getting an
//! error. The runtimes here block SIGPIPE on their threads, and
//! [`block_on`] blocks it on the calling thread while it runs a future, then
//! discards a SIGPIPE that came meanwhile before unblocking.

use std::future::Future;

use anyhow::{Context as _, Result};

fn sigpipe_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        set
    }
}

fn block_sigpipe() -> libc::sigset_t {
    let set = sigpipe_set();
    // SAFETY: pthread_sigmask on this thread with valid sets.
    unsafe {
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        old
    }
}

/// A tokio runtime whose threads never die of SIGPIPE (None: one thread,
/// the caller's).
pub fn runtime(worker_threads: Option<usize>) -> Result<tokio::runtime::Runtime> {
    let mut builder = match worker_threads {
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_current_thread(),
    };
    builder
        .enable_all()
        // Blocking threads (file I/O) end after a second idle, not tokio's
        // ten: a server's memory goes back down soon after a burst.
        .thread_keep_alive(std::time::Duration::from_secs(1))
        .on_thread_start(|| {
            block_sigpipe();
        })
        .build()
        .context("start the I/O runtime")
}

/// `runtime.block_on(future)` with SIGPIPE blocked on this thread.
pub fn block_on<F: Future>(runtime: &tokio::runtime::Runtime, future: F) -> F::Output {
    let old = block_sigpipe();
    let out = runtime.block_on(future);
    let set = sigpipe_set();
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: sigtimedwait with a valid set and a zero timeout takes a
    // pending SIGPIPE (if any) without waiting; then the old mask returns.
    unsafe {
        while libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) == libc::SIGPIPE {}
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    out
}
