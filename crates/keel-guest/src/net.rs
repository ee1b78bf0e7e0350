//! The guest's network: its NICs take the container's interfaces over
//! (found by MAC, given the interface's name, MTU and IPv4 addresses, the
//! default route), and 127.0.0.11:53 relays name questions to keel's name
//! server over vsock.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use keel_runtime::vm::proto::{DNS_PORT, Interface};

/// An ioctl socket of `family` (AF_INET, AF_INET6).
fn socket(family: libc::c_int) -> Result<OwnedFd, String> {
    // SAFETY: socket returns a new fd or -1.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn request(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain data; zero is valid.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes().take(15)) {
        *slot = byte as libc::c_char;
    }
    request
}

fn ioctl(
    fd: &OwnedFd,
    op: libc::Ioctl,
    request: &mut libc::ifreq,
    what: &str,
) -> Result<(), String> {
    // SAFETY: the ifreq-taking socket ioctls, on our ifreq.
    if unsafe { libc::ioctl(fd.as_raw_fd(), op, request as *mut libc::ifreq) } != 0 {
        return Err(format!("{what}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn sockaddr(address: Ipv4Addr) -> libc::sockaddr {
    // SAFETY: sockaddr_in is plain data; it is copied into a sockaddr of
    // the same size.
    unsafe {
        let mut sin: libc::sockaddr_in = std::mem::zeroed();
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_addr.s_addr = u32::from(address).to_be();
        std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin)
    }
}

/// The guest's NIC with `mac` (`/sys/class/net/*/address`).
fn device_with_mac(mac: &str) -> Option<String> {
    std::fs::read_dir("/sys/class/net")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let address = std::fs::read_to_string(entry.path().join("address")).ok()?;
            address
                .trim()
                .eq_ignore_ascii_case(mac)
                .then(|| entry.file_name().to_string_lossy().into_owned())
        })
}

pub fn configure(
    interfaces: &[Interface],
    gateway: Option<&str>,
    gateway6: Option<&str>,
) -> Result<(), String> {
    let fd = socket(libc::AF_INET)?;
    let mut v6_device = None;
    for interface in interfaces {
        let mut name = device_with_mac(&interface.mac)
            .ok_or_else(|| format!("no NIC with the MAC {} in the VM", interface.mac))?;
        if name != interface.name {
            let mut r = request(&name);
            // SAFETY: writing the union's name member of a zeroed ifreq.
            let newname = unsafe { &mut r.ifr_ifru.ifru_newname };
            for (slot, byte) in newname.iter_mut().zip(interface.name.bytes().take(15)) {
                *slot = byte as libc::c_char;
            }
            ioctl(&fd, libc::SIOCSIFNAME, &mut r, "rename the NIC")?;
            name = interface.name.clone();
        }
        let mut r = request(&name);
        r.ifr_ifru.ifru_mtu = interface.mtu as libc::c_int;
        ioctl(&fd, libc::SIOCSIFMTU, &mut r, "set the MTU")?;
        if let Some(address) = interface.addresses.first() {
            let (ip, prefix) = address
                .split_once('/')
                .ok_or_else(|| format!("{address}: not ADDRESS/PREFIX"))?;
            let ip: Ipv4Addr = ip
                .parse()
                .map_err(|_| format!("{ip}: not an IPv4 address"))?;
            let prefix: u32 = prefix
                .parse()
                .map_err(|_| format!("{prefix}: not a prefix"))?;
            let mask = u32::MAX.checked_shl(32 - prefix.min(32)).unwrap_or(0);
            let mut r = request(&name);
            r.ifr_ifru.ifru_addr = sockaddr(ip);
            ioctl(&fd, libc::SIOCSIFADDR, &mut r, "set the address")?;
            let mut r = request(&name);
            r.ifr_ifru.ifru_netmask = sockaddr(Ipv4Addr::from(mask));
            ioctl(&fd, libc::SIOCSIFNETMASK, &mut r, "set the netmask")?;
        }
        // The container's addresses were checked for duplicates on the
        // host already: no wait for IPv6's duplicate address detection.
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/accept_dad"), "0");
        let mut r = request(&name);
        ioctl(&fd, libc::SIOCGIFFLAGS, &mut r, "read the NIC's flags")?;
        // SAFETY: reading the flags the kernel just wrote.
        unsafe { r.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
        ioctl(&fd, libc::SIOCSIFFLAGS, &mut r, "bring the NIC up")?;
        if !interface.addresses6.is_empty() {
            let index = index_of(&fd, &name)?;
            for address in &interface.addresses6 {
                add_ipv6(index, address)?;
            }
            v6_device.get_or_insert(index);
        }
    }
    if let (Some(gateway), Some(index)) = (gateway6, v6_device) {
        add_ipv6_default_route(index, gateway)?;
    }
    if let Some(gateway) = gateway {
        let gateway: Ipv4Addr = gateway
            .parse()
            .map_err(|_| format!("{gateway}: not an IPv4 gateway"))?;
        // SAFETY: rtentry is plain data; SIOCADDRT reads it.
        unsafe {
            let mut route: libc::rtentry = std::mem::zeroed();
            route.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
            route.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
            route.rt_gateway = sockaddr(gateway);
            route.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
            if libc::ioctl(fd.as_raw_fd(), libc::SIOCADDRT, &mut route) != 0 {
                return Err(format!(
                    "add the default route via {gateway}: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    Ok(())
}

fn index_of(fd: &OwnedFd, name: &str) -> Result<i32, String> {
    let mut r = request(name);
    ioctl(fd, libc::SIOCGIFINDEX, &mut r, "find the NIC's index")?;
    // SAFETY: the index the kernel just wrote.
    Ok(unsafe { r.ifr_ifru.ifru_ifindex })
}

fn in6_addr(address: Ipv6Addr) -> libc::in6_addr {
    libc::in6_addr {
        s6_addr: address.octets(),
    }
}

/// `ADDRESS/PREFIX` on the NIC with `index`.
fn add_ipv6(index: i32, address: &str) -> Result<(), String> {
    let (ip, prefix) = address
        .split_once('/')
        .ok_or_else(|| format!("{address}: not ADDRESS/PREFIX"))?;
    let ip: Ipv6Addr = ip
        .parse()
        .map_err(|_| format!("{ip}: not an IPv6 address"))?;
    let request = libc::in6_ifreq {
        ifr6_addr: in6_addr(ip),
        ifr6_prefixlen: prefix
            .parse()
            .map_err(|_| format!("{prefix}: not a prefix"))?,
        ifr6_ifindex: index,
    };
    let fd = socket(libc::AF_INET6)?;
    // SAFETY: SIOCSIFADDR on an IPv6 socket reads one in6_ifreq.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFADDR, &request) } != 0 {
        return Err(format!(
            "add {address}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// linux/ipv6_route.h's `in6_rtmsg` (libc's has private fields).
#[repr(C)]
struct In6Rtmsg {
    dst: libc::in6_addr,
    src: libc::in6_addr,
    gateway: libc::in6_addr,
    kind: u32,
    dst_len: u16,
    src_len: u16,
    metric: u32,
    info: libc::c_ulong,
    flags: u32,
    ifindex: libc::c_int,
}

fn add_ipv6_default_route(index: i32, gateway: &str) -> Result<(), String> {
    let gateway: Ipv6Addr = gateway
        .parse()
        .map_err(|_| format!("{gateway}: not an IPv6 gateway"))?;
    let route = In6Rtmsg {
        dst: in6_addr(Ipv6Addr::UNSPECIFIED),
        src: in6_addr(Ipv6Addr::UNSPECIFIED),
        gateway: in6_addr(gateway),
        kind: 0,
        dst_len: 0,
        src_len: 0,
        metric: 1,
        info: 0,
        flags: (libc::RTF_UP | libc::RTF_GATEWAY) as u32,
        ifindex: index,
    };
    let fd = socket(libc::AF_INET6)?;
    // SAFETY: SIOCADDRT on an IPv6 socket reads one in6_rtmsg.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCADDRT, &route) } != 0 {
        return Err(format!(
            "add the IPv6 default route via {gateway}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// A connection to the host's vsock port `port`.
pub fn vsock_connect(port: u32) -> Option<std::fs::File> {
    // SAFETY: socket/connect on a sockaddr_vm we fill.
    unsafe {
        let fd = libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let file = std::fs::File::from_raw_fd(fd);
        let mut address: libc::sockaddr_vm = std::mem::zeroed();
        address.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        address.svm_cid = libc::VMADDR_CID_HOST;
        address.svm_port = port;
        (libc::connect(
            fd,
            &address as *const libc::sockaddr_vm as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        ) == 0)
            .then_some(file)
    }
}

/// The resolver at 127.0.0.11:53 (UDP): each question to the host's
/// name server and its answer back, one at a time. Runs until killed.
pub fn serve_dns() -> ! {
    let Ok(socket) = UdpSocket::bind("127.0.0.11:53") else {
        keel_runtime::process::exit_child(1);
    };
    let mut host: Option<std::fs::File> = None;
    let mut buffer = vec![0u8; 65536];
    loop {
        let Ok((n, client)) = socket.recv_from(&mut buffer) else {
            continue;
        };
        for _ in 0..2 {
            if host.is_none() {
                host = vsock_connect(DNS_PORT);
            }
            let Some(stream) = host.as_mut() else {
                break;
            };
            let mut message = (n as u16).to_be_bytes().to_vec();
            message.extend_from_slice(&buffer[..n]);
            let mut length = [0u8; 2];
            // An empty answer: the name server did not answer in time (the
            // client asks again).
            let answered =
                stream.write_all(&message).is_ok() && stream.read_exact(&mut length).is_ok() && {
                    let mut answer = vec![0u8; u16::from_be_bytes(length) as usize];
                    stream.read_exact(&mut answer).is_ok()
                        && (answer.is_empty() || socket.send_to(&answer, client).is_ok())
                };
            if answered {
                break;
            }
            host = None;
        }
    }
}
