//! keel's virtio-blk device as a vhost-user backend: another VMM (QEMU,
//! cloud-hypervisor) runs the guest and its Linux driver, and hands the
//! queue to this process over a unix socket. The very code that serves
//! keel's own VMs ([`crate::devices::virtio::blk::Block`]) serves the
//! queue, so Linux's `virtio_blk` driver is tested against it (this
//! machine's KVM cannot boot Linux: QEMU's TCG can).
//!
//! `keel vm vhost-user-blk --socket PATH --disk FILE[,ro]` runs it (and
//! `keel vm vhost-user-rng --socket PATH` the entropy device): it listens
//! on PATH, serves one VMM until it goes, and exits.

use std::path::Path;
use std::sync::{Arc, RwLock};

use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

use crate::devices::virtio::Device;
use crate::devices::virtio::blk::Block;
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
        self.device.queue_sizes().into_iter().max().unwrap_or(0) as usize
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
        } else {
            VhostUserProtocolFeatures::empty()
        }
    }

    fn set_event_idx(&mut self, _enabled: bool) {}

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
        let Some(vring) = vrings.get(device_event as usize) else {
            return Ok(());
        };
        let memory = self.memory.memory();
        let used = {
            let mut state = vring.get_mut();
            self.device
                .serve(device_event as usize, state.get_queue_mut(), &memory)
        };
        if used {
            vring.signal_used_queue()?;
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

fn serve(socket: &Path, device: Box<dyn Device + Sync>, name: &str) -> Result<()> {
    let memory = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let backend = Arc::new(RwLock::new(Backend {
        device,
        memory: memory.clone(),
    }));
    let mut daemon = VhostUserDaemon::new(name.into(), backend, memory)
        .map_err(|e| Error::Msg(format!("the vhost-user daemon: {e}")))?;
    let _ = std::fs::remove_file(socket);
    daemon
        .serve(socket)
        .map_err(|e| Error::Msg(format!("vhost-user on {}: {e}", socket.display())))
}
