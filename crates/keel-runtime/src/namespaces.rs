//! Namespaces: which to create, which to join by path, uid/gid maps and
//! time offsets.

use std::fs::File;
use std::os::fd::OwnedFd;

use crate::error::{Context, Error, Result};
use crate::spec::{IdMapping, NamespaceType, Spec};

/// A namespace to enter with setns(2).
pub struct Join {
    pub kind: NamespaceType,
    pub fd: OwnedFd,
    pub path: String,
}

/// The plan for a new container: namespaces to join (opened now, on the
/// host, before anything changes) and the clone flags of those to create.
pub struct Plan {
    pub join: Vec<Join>,
    pub new: libc::c_int,
}

impl Plan {
    pub fn for_spec(spec: &Spec) -> Result<Plan> {
        let mut join = Vec::new();
        let mut new = 0;
        for ns in &spec.linux().namespaces {
            match ns.path.as_deref().filter(|p| !p.is_empty()) {
                Some(path) => join.push(open(ns.kind, path)?),
                None => new |= ns.kind.clone_flag(),
            }
        }
        order(&mut join);
        Ok(Plan { join, new })
    }

    /// Joining the namespaces of a running process (for exec): every
    /// namespace the container has, skipping those we already share (setns
    /// into our own user namespace fails).
    pub fn for_process(spec: &Spec, pid: i32) -> Result<Plan> {
        let mut join = Vec::new();
        for ns in &spec.linux().namespaces {
            let theirs = format!("/proc/{pid}/ns/{}", ns.kind.proc_name());
            let ours = format!("/proc/self/ns/{}", ns.kind.proc_name());
            if std::fs::read_link(&theirs).ok() == std::fs::read_link(&ours).ok() {
                continue;
            }
            join.push(open(ns.kind, &theirs)?);
        }
        order(&mut join);
        Ok(Plan { join, new: 0 })
    }

    pub fn creates(&self, kind: NamespaceType) -> bool {
        self.new & kind.clone_flag() != 0
    }

    pub fn joins(&self, kind: NamespaceType) -> bool {
        self.join.iter().any(|j| j.kind == kind)
    }

    /// setns into every namespace to join: user first (it grants the
    /// rights for the others), mount last (it changes our root).
    pub fn enter(&self) -> Result<()> {
        for ns in &self.join {
            nix::sched::setns(
                &ns.fd,
                nix::sched::CloneFlags::from_bits_retain(ns.kind.clone_flag()),
            )
            .context(|| format!("join {} namespace {}", ns.kind.name(), ns.path))?;
        }
        Ok(())
    }
}

fn order(join: &mut [Join]) {
    join.sort_by_key(|j| match j.kind {
        NamespaceType::User => 0,
        NamespaceType::Mount => 2,
        _ => 1,
    });
}

fn open(kind: NamespaceType, path: &str) -> Result<Join> {
    let file = File::open(path)
        .map_err(|e| Error::msg(format!("{} namespace path {path}: {e}", kind.name())))?;
    Ok(Join {
        kind,
        fd: file.into(),
        path: path.to_string(),
    })
}

pub fn unshare(flags: libc::c_int) -> Result<()> {
    if flags == 0 {
        return Ok(());
    }
    nix::sched::unshare(nix::sched::CloneFlags::from_bits_retain(flags))
        .context(|| format!("unshare namespaces (flags {flags:#x})"))
}

fn format_map(maps: &[IdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size))
        .collect()
}

/// Writes /proc/<pid>/{uid,gid}_map (done by the runtime on the host side).
pub fn write_id_maps(pid: i32, uid: &[IdMapping], gid: &[IdMapping]) -> Result<()> {
    if !uid.is_empty() {
        crate::util::write_file(format!("/proc/{pid}/uid_map").as_ref(), &format_map(uid))?;
    }
    if !gid.is_empty() {
        crate::util::write_file(format!("/proc/{pid}/gid_map").as_ref(), &format_map(gid))?;
    }
    Ok(())
}

/// Writes the time namespace offsets of a freshly unshared time namespace
/// (before its first child exists).
pub fn write_time_offsets(spec: &Spec) -> Result<()> {
    let Some(offsets) = &spec.linux().time_offsets else {
        return Ok(());
    };
    let mut text = String::new();
    for (clock, offset) in offsets {
        let name = match clock.as_str() {
            "monotonic" | "boottime" => clock.as_str(),
            other => {
                return Err(Error::msg(format!(
                    "unknown time namespace clock {other:?}"
                )));
            }
        };
        text.push_str(&format!("{name} {} {}\n", offset.secs, offset.nanosecs));
    }
    crate::util::write_file("/proc/self/timens_offsets".as_ref(), &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_format_like_the_kernel_wants() {
        let maps = [
            IdMapping {
                container_id: 0,
                host_id: 100000,
                size: 1,
            },
            IdMapping {
                container_id: 1,
                host_id: 100001,
                size: 65535,
            },
        ];
        assert_eq!(format_map(&maps), "0 100000 1\n1 100001 65535\n");
    }
}
