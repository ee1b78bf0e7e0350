//! Tap devices: the host end of a VM's network interface. A VMM reads the
//! frames the host sends to the guest from the tap's fd and writes the
//! guest's frames to it. keel's taps are not persistent: the kernel
//! removes the interface when the last fd on it closes, so a VMM that dies
//! leaves no interface behind.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::error::{Error, Result};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

/// Makes the tap device `name` (at most 15 bytes) and returns its fd,
/// close-on-exec, blocking.
pub fn create(name: &str) -> Result<OwnedFd> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(Error::invalid(format!(
            "{name:?} is not an interface name (1 to 15 bytes)"
        )));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| Error::io("open /dev/net/tun (is the tun module loaded?)", e))?;
    // SAFETY: an ifreq is plain data; zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    request.ifr_ifru.ifru_flags = IFF_TAP | IFF_NO_PI;
    // SAFETY: TUNSETIFF reads and writes the ifreq we own.
    if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut request) } != 0 {
        return Err(Error::io(
            format!("create the tap device {name}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(file.into())
}

/// Whether an interface named `name` exists in this network namespace.
pub fn exists(name: &str) -> bool {
    let Ok(name) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: a NUL-terminated name.
    unsafe { libc::if_nametoindex(name.as_ptr()) != 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tap_lives_as_long_as_its_fd() {
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        // In a namespace of this test's own.
        let namespace = crate::netns::create().expect("a network namespace");
        crate::netns::run_in(std::os::fd::AsFd::as_fd(&namespace), || {
            let fd = create("keeltaptest0")?;
            assert!(exists("keeltaptest0"));
            assert!(create("keeltaptest0").is_err(), "one VMM per tap");
            drop(fd);
            assert!(!exists("keeltaptest0"));
            Ok(())
        })
        .unwrap();
        assert!(create("a-name-longer-than-15").is_err());
    }
}
