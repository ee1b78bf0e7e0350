//! Published host ports held as docker's proxy holds them: for as long as
//! a container publishes `ADDRESS:PORT`, a socket of keel's is bound there,
//! so a program that binds the same port later fails with "address already
//! in use", and a port another program holds cannot be published.
//!
//! The socket is bound without `SO_REUSEADDR` and never listens: traffic to
//! the port is rewritten to the container (nftables) before any socket
//! sees it, and a program using `SO_REUSEADDR` still cannot share it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::{Error, Result};

/// Binds `address:port` (all IPv4 addresses when `address` is None) for
/// `protocol` (`tcp` or `udp`); the port is held until the fd is dropped.
pub fn hold(address: Option<IpAddr>, port: u16, protocol: &str) -> Result<OwnedFd> {
    bind(
        address.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        port,
        protocol,
        false,
    )
}

/// Whether this host has IPv6 (so a port published on all addresses is
/// published on `[::]` too, as docker does).
pub fn ipv6_available() -> bool {
    let disabled = crate::netns::read_sysctl("ipv6/conf/all/disable_ipv6");
    if disabled.is_none_or(|v| v.trim() != "0") {
        return false;
    }
    // SAFETY: socket returns a new fd (or -1), which we then own.
    let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return false;
    }
    // SAFETY: fd is new and ours.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    true
}

/// A socket for `protocol` bound to `ip:port`; an IPv6 one is IPv6 only
/// (`[::]` leaves 0.0.0.0 to the IPv4 socket). `SO_REUSEADDR` only for a
/// TCP socket that is to listen (`listener`): a listening socket cannot
/// be shared with it, and it lets the port be taken again while closed
/// connections of the last one linger in TIME_WAIT. The error reads as
/// docker's: `Bind for ADDRESS:PORT failed: ...`.
pub fn bind(ip: IpAddr, port: u16, protocol: &str, listener: bool) -> Result<OwnedFd> {
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
    let set = |level, option| {
        let on: libc::c_int = 1;
        // SAFETY: setsockopt with an int of the size given.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                level,
                option,
                (&raw const on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    };
    if ip.is_ipv6() {
        set(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY);
    }
    if listener && kind == libc::SOCK_STREAM {
        set(libc::SOL_SOCKET, libc::SO_REUSEADDR);
    }
    let (address, length) = sockaddr(SocketAddr::new(ip, port));
    // SAFETY: bind with a sockaddr of the length given.
    let result = unsafe { libc::bind(fd.as_raw_fd(), (&raw const address).cast(), length) };
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

/// `address` as the kernel takes it, with its length.
pub(crate) fn sockaddr(address: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all zero is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let length = match address {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in6.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, length as libc::socklen_t)
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
