//! keel's networking, the parts that talk to the kernel and the wire:
//!
//! - [`netlink`]: bridges, veth pairs, addresses and routes (rtnetlink,
//!   no `ip` command);
//! - [`fastpath`]: tc programs that take frames between a bridge's
//!   endpoints past the bridge (BPF, loaded with the bpf syscall);
//! - [`netns`]: network namespaces held by an fd, sysctls inside them;
//! - [`ipam`]: subnets and address allocation (pure; the caller keeps the
//!   addresses in use in its state database);
//! - [`nft`]: keel's own nftables table (masquerade, published ports,
//!   isolation), rendered whole from a description and applied in one
//!   transaction;
//! - [`ports`]: published host ports held by a bound socket (as docker's
//!   proxy holds them);
//! - [`relay`]: the IPv6 side of published ports, copied to the container
//!   in user space (docker's proxy);
//! - [`tap`]: tap devices, the host end of a VM's interface;
//! - [`dns`]: the name server a container's monitor runs inside the
//!   container's network namespace (127.0.0.11, as docker's).
//!
//! What a network *is* (its record, its endpoints, which container holds
//! which address) is the engine's business (`keel-engine::network`).

pub mod dns;
pub mod error;
pub mod fastpath;
pub mod ipam;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod ports;
pub mod relay;
pub mod tap;

pub use error::{Error, Result};
