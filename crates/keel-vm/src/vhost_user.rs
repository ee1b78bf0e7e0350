//! keel's virtio-blk device as a vhost-user backend: another VMM (QEMU,
//! cloud-hypervisor) runs the guest and its Linux driver, and hands the
//! queue to this process over a unix socket. The very code that serves
//! keel's own VMs ([`crate::devices::virtio::blk::Block`]) serves the
//! queue, so Linux's `virtio_blk` driver is tested against it (this
//! machine's KVM cannot boot Linux: QEMU's TCG can).
//!
//! `keel vm vhost-user-blk --socket PATH --disk FILE[,ro]` runs it (and
//! `keel vm vhost-user-net --socket PATH --tap NAME` the NIC, `keel vm
//! vhost-user-rng --socket PATH` the entropy device): it listens on PATH,
//! serves one VMM until it goes, and exits. A device with a file of its
//! own (the NIC's tap) has it watched by the daemon's epoll; the VMM's
//! messages pass through [`relay`] on their way to the daemon.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, RwLock};

use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

use crate::devices::virtio::Device;
use crate::devices::virtio::blk::Block;
use crate::devices::virtio::net::Net;
use crate::devices::virtio::rng::Rng;
use crate::error::{Error, Result};

/// `VHOST_USER_F_PROTOCOL_FEATURES`.
const F_PROTOCOL_FEATURES: u64 = 1 << 30;

struct Backend {
    device: Box<dyn Device + Sync>,
    memory: GuestMemoryAtomic<GuestMemoryMmap>,
}

impl VhostUserBackendMut for Backend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        self.device.queue_sizes().len()
    }

    fn max_queue_size(&self) -> usize {
        // What the VMM's transport offers the driver, which may be more
        // than keel's VMM offers (QEMU's virtio-mmio offers 1024).
        self.device
            .queue_sizes()
            .into_iter()
            .max()
            .unwrap_or(0)
            .max(1024) as usize
    }

    fn features(&self) -> u64 {
        self.device.features() | crate::devices::virtio::F_VERSION_1 | F_PROTOCOL_FEATURES
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        // Only a device with a configuration space offers CONFIG: QEMU
        // 7.2's vhost-user-rng reads a config it does not have (and dies)
        // when the backend offers it.
        if self.device.device_type() == 2 {
            VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ
        } else if self.device.device_type() == 19 {
            // vsock: the guest's CID is in its config.
            VhostUserProtocolFeatures::CONFIG
        } else {
            VhostUserProtocolFeatures::empty()
        }
    }

    fn set_event_idx(&mut self, _enabled: bool) {}

    fn acked_features(&mut self, features: u64) {
        self.device.ack_features(features);
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let mut data = vec![0u8; size as usize];
        self.device.read_config(u64::from(offset), &mut data);
        data
    }

    fn update_memory(&mut self, memory: GuestMemoryAtomic<GuestMemoryMmap>) -> std::io::Result<()> {
        self.memory = memory;
        Ok(())
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        _events: EventSet,
        vrings: &[VringRwLock],
        _thread: usize,
    ) -> std::io::Result<()> {
        let memory = self.memory.memory();
        if let Some(vring) = vrings.get(device_event as usize) {
            let used = {
                let mut state = vring.get_mut();
                self.device
                    .serve(device_event as usize, state.get_queue_mut(), &memory)
            };
            if used {
                vring.signal_used_queue()?;
            }
        }
        // The device's file was readable (its own token), or the guest
        // notified: what waits for the guest goes into its receive queue.
        if self.device.io_fd().is_some()
            && let Some(vring) = vrings.get(self.device.io_queue())
        {
            let io = {
                let mut state = vring.get_mut();
                if !virtio_queue::QueueT::ready(state.get_queue()) {
                    return Ok(());
                }
                self.device.serve_io(state.get_queue_mut(), &memory)
            };
            if io.used {
                vring.signal_used_queue()?;
            }
        }
        Ok(())
    }
}

/// Serves `disk` as a virtio-blk device on the vhost-user socket `socket`
/// until the VMM that connected goes away.
pub fn serve_block(socket: &Path, disk: &Path, read_only: bool) -> Result<()> {
    serve(
        socket,
        Box::new(Block::open(disk, read_only)?),
        "keel-vhost-user-blk",
    )
}

/// Serves a virtio-rng device on `socket` until the VMM goes away.
pub fn serve_rng(socket: &Path) -> Result<()> {
    serve(socket, Box::new(Rng), "keel-vhost-user-rng")
}

/// Serves a virtio-vsock device for guest `cid` on `socket` until the
/// VMM goes away; host programs reach the guest through the unix socket
/// `path` (see [`crate::devices::virtio::vsock`]).
pub fn serve_vsock(socket: &Path, path: &Path, cid: u64) -> Result<()> {
    let vsock = crate::devices::virtio::vsock::Vsock::new(cid, path)?;
    serve(socket, Box::new(vsock), "keel-vhost-user-vsock")
}

/// Serves a virtio-net device on `socket` until the VMM goes away: its
/// frames go through the tap device `tap` (made here, gone with this
/// process), its MAC is `mac`.
pub fn serve_net(socket: &Path, tap: &str, mac: [u8; 6]) -> Result<()> {
    let fd = keel_net::tap::create(tap).map_err(|e| Error::Msg(e.to_string()))?;
    let net = Net::new(fd, mac).map_err(|e| Error::Io {
        what: format!("use the tap {tap}"),
        source: e,
    })?;
    serve(socket, Box::new(net), "keel-vhost-user-net")
}

fn serve(socket: &Path, device: Box<dyn Device + Sync>, name: &str) -> Result<()> {
    let memory = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let backend = Arc::new(RwLock::new(Backend {
        device,
        memory: memory.clone(),
    }));
    let io = backend.read().expect("a fresh lock").device.io_fd();
    let queues = backend.read().expect("a fresh lock").num_queues();
    let mut daemon = VhostUserDaemon::new(name.into(), backend, memory)
        .map_err(|e| Error::Msg(format!("the vhost-user daemon: {e}")))?;
    if let Some(fd) = io {
        // Edge-triggered: a frame that waits for buffers is taken when
        // the guest offers them (its notification), not polled for.
        daemon.get_epoll_handlers()[0]
            .register_listener(
                fd,
                EventSet::IN | EventSet::EDGE_TRIGGERED,
                queues as u64 + 1,
            )
            .map_err(|e| Error::Msg(format!("watch the device's file: {e}")))?;
    }
    // The daemon listens on a socket of its own; the VMM connects to
    // `socket`, and its messages are relayed (see `relay`).
    let inner = socket.with_extension("keel-inner");
    let _ = std::fs::remove_file(socket);
    let _ = std::fs::remove_file(&inner);
    // The VMM's socket appears only once the daemon listens on its own
    // (a VMM that connects at once finds the daemon there).
    let relayed = {
        let (inner, socket) = (inner.clone(), socket.to_path_buf());
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while !std::fs::symlink_metadata(&inner)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            {
                if std::time::Instant::now() > deadline {
                    return Err(Error::Msg("the vhost-user daemon did not listen".into()));
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let listener =
                UnixListener::bind(&socket).map_err(Error::path("listen on", &socket))?;
            relay(&listener, &inner)
        })
    };
    let served = daemon
        .serve(&inner)
        .map_err(|e| Error::Msg(format!("vhost-user on {}: {e}", socket.display())));
    let _ = std::fs::remove_file(&inner);
    let _ = std::fs::remove_file(socket);
    match relayed.join() {
        Ok(Err(e)) if served.is_ok() => Err(e),
        _ => served,
    }
}

/// `VHOST_USER_SET_FEATURES` and `VHOST_USER_SET_VRING_ENABLE`.
const SET_FEATURES: u32 = 2;
const SET_VRING_ENABLE: u32 = 18;

/// Takes the one VMM that connects to `listener` and relays its messages
/// to the daemon listening at `inner`, and the daemon's replies back.
///
/// One change: the SET_VRING_ENABLEs that come before the first
/// SET_FEATURES are held and sent right after it. QEMU 7.2's virtio-net
/// sends them first (when its driver sets its features, and to restore
/// the rings' state as it starts the device); the vhost crate refuses a
/// SET_VRING_ENABLE until PROTOCOL_FEATURES is acked (the vhost-user spec
/// says it is only sent then) and ends the connection. They carry no
/// reply unless REPLY_ACK is negotiated, which keel's backends do not
/// offer.
fn relay(listener: &UnixListener, inner: &Path) -> Result<()> {
    let (vmm, _) = listener
        .accept()
        .map_err(|e| Error::Msg(format!("accept the VMM: {e}")))?;
    let mut daemon = None;
    for _ in 0..200 {
        match UnixStream::connect(inner) {
            Ok(stream) => {
                daemon = Some(stream);
                break;
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    }
    let daemon = daemon.ok_or_else(|| Error::Msg("the vhost-user daemon did not listen".into()))?;
    let (vmm_reader, mut daemon_writer) = (
        vmm.try_clone().map_err(|e| Error::Msg(e.to_string()))?,
        daemon.try_clone().map_err(|e| Error::Msg(e.to_string()))?,
    );
    // Replies carry no fds (keel offers no backend-initiated channel).
    let replies = {
        let (mut from, mut to) = (daemon, vmm);
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Both);
        })
    };
    // The SET_VRING_ENABLEs held until the first SET_FEATURES.
    let mut held: Option<Vec<([u8; 12], Vec<u8>)>> = Some(Vec::new());
    let result = loop {
        let (header, payload, fds) = match read_message(&vmm_reader) {
            Ok(Some(message)) => message,
            Ok(None) => break Ok(()),
            Err(e) => break Err(Error::Msg(format!("read from the VMM: {e}"))),
        };
        let request = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        if request == SET_VRING_ENABLE
            && let Some(held) = held.as_mut()
        {
            held.push((header, payload));
            continue;
        }
        let mut out = vec![(header, payload)];
        if request == SET_FEATURES {
            out.extend(held.take().unwrap_or_default());
        }
        let mut fds = Some(fds);
        let sent = out.iter().try_for_each(|(header, payload)| {
            let fds = fds.take().unwrap_or_default();
            write_message(&mut daemon_writer, header, payload, &fds)
        });
        if let Err(e) = sent {
            break Err(Error::Msg(format!("relay to the vhost-user daemon: {e}")));
        }
    };
    let _ = daemon_writer.shutdown(std::net::Shutdown::Both);
    let _ = replies.join();
    result
}

/// A vhost-user message: its 12-byte header, its payload, the fds sent
/// with it.
type Message = ([u8; 12], Vec<u8>, Vec<std::os::fd::OwnedFd>);

/// One vhost-user message; None at the end of the stream.
fn read_message(stream: &UnixStream) -> std::io::Result<Option<Message>> {
    use std::io::Read;
    let mut header = [0u8; 12];
    let mut fds = Vec::new();
    let mut got = 0;
    while got < header.len() {
        let (n, received) = crate::fdpass::receive(stream, &mut header[got..])?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        fds.extend(received);
        got += n;
    }
    let size = u32::from_le_bytes(header[8..].try_into().expect("4 bytes")) as usize;
    if size > 4096 + 8 * 32 {
        return Err(std::io::Error::other(format!(
            "a {size}-byte vhost-user message"
        )));
    }
    let mut payload = vec![0u8; size];
    (&*stream).read_exact(&mut payload)?;
    Ok(Some((header, payload, fds)))
}

fn write_message(
    stream: &mut UnixStream,
    header: &[u8; 12],
    payload: &[u8],
    fds: &[std::os::fd::OwnedFd],
) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, RawFd};
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let mut whole = Vec::with_capacity(header.len() + payload.len());
    whole.extend_from_slice(header);
    whole.extend_from_slice(payload);
    let sent = crate::fdpass::send(stream, &whole, &raw)?;
    if sent < whole.len() {
        use std::io::Write;
        stream.write_all(&whole[sent..])?;
    }
    Ok(())
}
