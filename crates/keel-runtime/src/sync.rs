//! The channel between the runtime and the processes it forks while it
//! builds a container: a SOCK_SEQPACKET socketpair carrying small typed
//! messages, one per datagram. Both ends are close-on-exec, so the runtime
//! also learns that an exec succeeded when the channel reaches EOF.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};

use crate::error::{Context, Error, Result};

#[derive(Debug, PartialEq)]
pub enum Message {
    /// stage 1 → runtime: write the uid/gid maps of this pid.
    WriteMaps(i32),
    /// runtime → stage 1: maps written.
    MapsWritten,
    /// stage 1 → runtime: the pid of the container process (in host pid ns).
    Pid(i32),
    /// runtime → init: you are in the cgroup; go on. Carries the state
    /// JSON the createContainer hooks get on stdin.
    Continue(String),
    /// runtime → init: you are in the container's cgroup now (sent after
    /// Continue, so init's rootfs work overlaps the slow cgroup migration).
    Joined,
    /// init → runtime: mounts are done; run the prestart/createRuntime hooks.
    RunHooks,
    /// runtime → init: hooks done.
    HooksDone,
    /// init → runtime: waiting for `start` (create) / about to exec (exec).
    Ready,
    /// any → runtime: failed with this message.
    Failed(String),
}

const TAG_WRITE_MAPS: u8 = 1;
const TAG_MAPS_WRITTEN: u8 = 2;
const TAG_PID: u8 = 3;
const TAG_CONTINUE: u8 = 4;
const TAG_RUN_HOOKS: u8 = 5;
const TAG_HOOKS_DONE: u8 = 6;
const TAG_READY: u8 = 7;
const TAG_FAILED: u8 = 8;
const TAG_JOINED: u8 = 9;

impl Message {
    fn encode(&self) -> Vec<u8> {
        match self {
            Message::WriteMaps(pid) => [&[TAG_WRITE_MAPS][..], &pid.to_le_bytes()].concat(),
            Message::MapsWritten => vec![TAG_MAPS_WRITTEN],
            Message::Pid(pid) => [&[TAG_PID][..], &pid.to_le_bytes()].concat(),
            Message::Continue(state) => [&[TAG_CONTINUE][..], state.as_bytes()].concat(),
            Message::Joined => vec![TAG_JOINED],
            Message::RunHooks => vec![TAG_RUN_HOOKS],
            Message::HooksDone => vec![TAG_HOOKS_DONE],
            Message::Ready => vec![TAG_READY],
            Message::Failed(msg) => [&[TAG_FAILED][..], msg.as_bytes()].concat(),
        }
    }

    fn decode(buf: &[u8]) -> Result<Message> {
        let pid = || -> Result<i32> {
            buf.get(1..5)
                .and_then(|b| b.try_into().ok())
                .map(i32::from_le_bytes)
                .ok_or_else(|| Error::msg("sync: short message"))
        };
        Ok(match buf.first() {
            Some(&TAG_WRITE_MAPS) => Message::WriteMaps(pid()?),
            Some(&TAG_MAPS_WRITTEN) => Message::MapsWritten,
            Some(&TAG_PID) => Message::Pid(pid()?),
            Some(&TAG_CONTINUE) => {
                Message::Continue(String::from_utf8_lossy(&buf[1..]).into_owned())
            }
            Some(&TAG_JOINED) => Message::Joined,
            Some(&TAG_RUN_HOOKS) => Message::RunHooks,
            Some(&TAG_HOOKS_DONE) => Message::HooksDone,
            Some(&TAG_READY) => Message::Ready,
            Some(&TAG_FAILED) => Message::Failed(String::from_utf8_lossy(&buf[1..]).into_owned()),
            _ => return Err(Error::msg("sync: unknown message")),
        })
    }
}

pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// A connected pair: (runtime end, child end).
    pub fn pair() -> Result<(Channel, Channel)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .context(|| "socketpair".to_string())?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    pub fn send(&self, message: &Message) -> Result<()> {
        self.send_with_fd(message, None)
    }

    pub fn send_with_fd(&self, message: &Message, fd: Option<BorrowedFd>) -> Result<()> {
        let data = message.encode();
        let iov = [IoSlice::new(&data)];
        let fds: Vec<RawFd> = fd.map(|f| f.as_raw_fd()).into_iter().collect();
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
        loop {
            match sendmsg::<()>(
                self.fd.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => return other.map(|_| ()).context(|| "sync: send".to_string()),
            }
        }
    }

    /// The next message, or None at EOF (the other side exited or exec'd).
    pub fn recv(&self) -> Result<Option<Message>> {
        Ok(self.recv_with_fd()?.map(|(m, _)| m))
    }

    pub fn recv_with_fd(&self) -> Result<Option<(Message, Option<OwnedFd>)>> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut cmsg_space = nix::cmsg_space!(RawFd);
        let mut reset_seen = false;
        loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let result = recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg_space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            );
            match result {
                Err(nix::errno::Errno::EINTR) => continue,
                // A child that exits with messages of ours unread resets the
                // pair, and the kernel reports that before what the child
                // sent last (its `Failed`): the error is consumed by the
                // first recv, so read once more to get the message.
                Err(nix::errno::Errno::ECONNRESET) if !reset_seen => {
                    reset_seen = true;
                    continue;
                }
                Err(e) => return Err(Error::sys("sync: receive", e)),
                Ok(msg) => {
                    let mut fd = None;
                    if let Ok(cmsgs) = msg.cmsgs() {
                        for c in cmsgs {
                            if let ControlMessageOwned::ScmRights(fds) = c {
                                for raw in fds {
                                    // SAFETY: the kernel just installed this fd for us.
                                    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                                    fd.get_or_insert(owned);
                                }
                            }
                        }
                    }
                    let n = msg.bytes;
                    if n == 0 {
                        return Ok(None);
                    }
                    return Ok(Some((Message::decode(&buf[..n])?, fd)));
                }
            }
        }
    }

    /// In a forked child: reports how it ended and exits (0, or 1 after
    /// sending the error as `Failed`). Never returns to the parent's code.
    pub fn exit_with(&self, result: Result<()>) -> ! {
        match result {
            Ok(()) => crate::process::exit_child(0),
            Err(e) => {
                let _ = self.send(&Message::Failed(e.to_string()));
                crate::process::exit_child(1)
            }
        }
    }

    /// Waits for the runtime's `Continue` and returns the state JSON in it.
    pub fn wait_continue(&self) -> Result<String> {
        match self.recv()? {
            Some(Message::Continue(state_json)) => Ok(state_json),
            _ => Err(Error::msg("runtime went away")),
        }
    }

    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let (a, b) = Channel::pair().unwrap();
        for m in [
            Message::WriteMaps(42),
            Message::MapsWritten,
            Message::Pid(-7),
            Message::Continue("{}".into()),
            Message::Joined,
            Message::RunHooks,
            Message::HooksDone,
            Message::Ready,
            Message::Failed("boom: no such file".into()),
        ] {
            a.send(&m).unwrap();
            assert_eq!(b.recv().unwrap(), Some(m));
        }
        drop(a);
        assert_eq!(b.recv().unwrap(), None);
    }

    #[test]
    fn a_peer_that_exits_with_unread_messages_still_delivers_its_last() {
        let (parent, child) = Channel::pair().unwrap();
        // The parent sends what the child never reads, the child fails
        // and goes: its message must still arrive.
        parent.send(&Message::Joined).unwrap();
        child
            .send(&Message::Failed("mount /x: denied".into()))
            .unwrap();
        drop(child);
        assert_eq!(
            parent.recv().unwrap(),
            Some(Message::Failed("mount /x: denied".into()))
        );
        assert_eq!(parent.recv().unwrap(), None);
    }
}
