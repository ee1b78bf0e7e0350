//! keel's virtio-blk device as a vhost-user backend: another VMM (QEMU,
//! cloud-hypervisor) runs the guest and its Linux driver, and hands the
//! queue to this process over a unix socket. The very code that serves
//! keel's own VMs ([`crate::devices::virtio::blk::Block`]) serves the
//! queue, so Linux's `virtio_blk` driver is tested against it (this
//! machine's KVM cannot boot Linux: QEMU's TCG can).
//!
//! `keel vm vhost-user-blk --socket PATH --disk FILE[,ro]` runs it: it
//! listens on PATH, serves one VMM until it goes, and exits.

use std::path::Path;
use std::sync::{Arc, RwLock};

use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

use crate::devices::virtio::Device;
use crate::devices::virtio::blk::Block;
use crate::error::{Error, Result};

/// `VHOST_USER_F_PROTOCOL_FEATURES`.
const F_PROTOCOL_FEATURES: u64 = 1 << 30;

struct Backend {
    block: Block,
    memory: GuestMemoryAtomic<GuestMemoryMmap>,
}

impl VhostUserBackendMut for Backend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        1
    }

    fn max_queue_size(&self) -> usize {
        256
    }

    fn features(&self) -> u64 {
        self.block.features() | crate::devices::virtio::F_VERSION_1 | F_PROTOCOL_FEATURES
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ
    }

    fn set_event_idx(&mut self, _enabled: bool) {}

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let mut data = vec![0u8; size as usize];
        self.block.read_config(u64::from(offset), &mut data);
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
            self.block
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
    let block = Block::open(disk, read_only)?;
    let memory = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let backend = Arc::new(RwLock::new(Backend {
        block,
        memory: memory.clone(),
    }));
    let mut daemon = VhostUserDaemon::new("keel-vhost-user-blk".into(), backend, memory)
        .map_err(|e| Error::Msg(format!("the vhost-user daemon: {e}")))?;
    let _ = std::fs::remove_file(socket);
    daemon
        .serve(socket)
        .map_err(|e| Error::Msg(format!("vhost-user on {}: {e}", socket.display())))
}
