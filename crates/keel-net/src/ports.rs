//! Published host ports held as docker's proxy holds them: for as long as
//! a container publishes `ADDRESS:PORT`, a socket of keel's is bound there,
//! so a program that binds the same port later fails with "address already
//! in use", and a port another program holds cannot be published.
//!
//! The socket is bound without `SO_REUSEADDR` and never listens: traffic to
//! the port is rewritten to the container (nftables) before any socket
//! sees it, and a program using `SO_REUSEADDR` still cannot share it.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::{Error, Result};

/// Binds `address:port` (all IPv4 addresses when `address` is None) for
/// `protocol` (`tcp` or `udp`); the port is held until the fd is dropped.
pub fn hold(address: Option<IpAddr>, port: u16, protocol: &str) -> Result<OwnedFd> {
    let ip = address.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let shown = match ip {
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        IpAddr::V4(v4) => format!("{v4}:{port}"),
    };
    let kind = match protocol {
        "udp" => libc::SOCK_DGRAM,
        _ => libc::SOCK_STREAM,
    };
    let family = match ip {
        IpAddr::V4(_) => libc::AF_INET,
        IpAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: socket returns a new fd (or -1), which we then own.
    let fd = unsafe { libc::socket(family, kind | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(Error::msg(format!(
            "a socket to hold {shown}/{protocol}: {e}"
        )));
    }
    // SAFETY: fd is new and ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let result = match ip {
        IpAddr::V4(v4) => {
            let address = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(v4).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: bind with a sockaddr_in of the size given.
            unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&raw const address).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        IpAddr::V6(v6) => {
            let address = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: port.to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: bind with a sockaddr_in6 of the size given.
            unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&raw const address).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if result != 0 {
        let e = std::io::Error::last_os_error();
        let why = match e.raw_os_error() {
            Some(libc::EADDRINUSE) => "address already in use".to_string(),
            Some(libc::EADDRNOTAVAIL) => "no such address on this host".to_string(),
            _ => e.to_string(),
        };
        return Err(Error::msg(format!("Bind for {shown} failed: {why}")));
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_port_cannot_be_bound_again_in_either_order() {
        // Ours first: a later listener fails, with or without SO_REUSEADDR
        // (std's TcpListener sets it).
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let held = hold(Some("127.0.0.1".parse().unwrap()), port, "tcp").unwrap();
        let error = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
        drop(held);
        // Theirs first: holding fails and says so.
        let theirs = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let error = hold(None, port, "tcp").unwrap_err().to_string();
        assert_eq!(
            error,
            format!("Bind for 0.0.0.0:{port} failed: address already in use")
        );
        drop(theirs);
        // UDP too.
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        assert!(hold(Some("127.0.0.1".parse().unwrap()), port, "udp").is_err());
        drop(udp);
        let held = hold(Some("127.0.0.1".parse().unwrap()), port, "udp").unwrap();
        assert!(std::net::UdpSocket::bind(("127.0.0.1", port)).is_err());
        drop(held);
    }
}
