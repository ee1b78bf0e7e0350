//! The five capability sets of `process.capabilities`.

use caps::{CapSet, Capability, CapsHashSet};

use crate::error::{Error, Result};
use crate::spec::Capabilities;

pub fn parse(name: &str) -> Result<Capability> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    full.parse()
        .map_err(|_| Error::msg(format!("unknown capability {name:?}")))
}

fn set_of(names: &Option<Vec<String>>) -> Result<CapsHashSet> {
    let mut set = CapsHashSet::new();
    for name in names.iter().flatten() {
        // Capabilities the running kernel does not know are skipped, as runc
        // does, so newer profiles work on older kernels.
        let cap = parse(name)?;
        if caps::all().contains(&cap) && cap.index() <= last_cap() {
            set.insert(cap);
        }
    }
    Ok(set)
}

/// The highest capability the running kernel knows (read once).
fn last_cap() -> u8 {
    static LAST: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
    *LAST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40)
    })
}

/// Drops from the bounding set what is not listed. Needs CAP_SETPCAP, so it
/// runs before the uid switch.
pub fn apply_bounding(spec: &Capabilities) -> Result<()> {
    let keep = set_of(&spec.bounding)?;
    for cap in caps::all() {
        if cap.index() > last_cap() || keep.contains(&cap) {
            continue;
        }
        match caps::drop(None, CapSet::Bounding, cap) {
            Ok(()) => {}
            Err(e) => {
                // Already absent from the bounding set (e.g. this host lacks
                // CAP_SYS_RESOURCE) is fine.
                if caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
                    return Err(Error::msg(format!("drop {cap} from the bounding set: {e}")));
                }
            }
        }
    }
    Ok(())
}

/// Sets effective, permitted and inheritable in one capset(2) (the sets must
/// stay consistent at every step), then the ambient set.
pub fn apply_sets(spec: &Capabilities) -> Result<()> {
    let effective = set_of(&spec.effective)?;
    let permitted = set_of(&spec.permitted)?;
    let inheritable = set_of(&spec.inheritable)?;
    let ambient = set_of(&spec.ambient)?;
    let mask = |set: &CapsHashSet| -> u64 { set.iter().fold(0u64, |m, c| m | c.bitmask()) };
    let (e, p, i) = (mask(&effective), mask(&permitted), mask(&inheritable));
    let mut header = libc_cap_header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let data = [
        libc_cap_data {
            effective: e as u32,
            permitted: p as u32,
            inheritable: i as u32,
        },
        libc_cap_data {
            effective: (e >> 32) as u32,
            permitted: (p >> 32) as u32,
            inheritable: (i >> 32) as u32,
        },
    ];
    // SAFETY: header and data are valid for the v3 ABI (two data elements).
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(Error::io(
            "set capabilities (capset)",
            std::io::Error::last_os_error(),
        ));
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| Error::msg(format!("clear ambient: {e}")))?;
    // As runc: a capability that cannot be raised in the ambient set (not
    // in permitted and inheritable, as in `runc spec`'s default config) is
    // a warning, not an error.
    for cap in ambient {
        if let Err(e) = caps::raise(None, CapSet::Ambient, cap) {
            tracing::warn!("can't raise ambient capability {cap}: {e}");
        }
    }
    Ok(())
}

#[repr(C)]
struct libc_cap_header {
    version: u32,
    pid: i32,
}

#[repr(C)]
struct libc_cap_data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_with_and_without_prefix() {
        assert_eq!(parse("CAP_NET_ADMIN").unwrap(), Capability::CAP_NET_ADMIN);
        assert_eq!(parse("net_admin").unwrap(), Capability::CAP_NET_ADMIN);
        assert!(
            parse("CAP_BOGUS")
                .unwrap_err()
                .to_string()
                .contains("CAP_BOGUS")
        );
    }
}
