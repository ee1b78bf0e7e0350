//! Where a container's files live (DESIGN.md, "State on disk"):
//!
//! - `<root>/containers/<id>/`: `config.json` (the bundle), `rootfs/` (the
//!   overlay mount point), `diff/` and `work/` (its writable layer),
//!   `hostname`, `hosts`, `resolv.conf`, `<id>-json.log` (+ rotations)
//! - `<root>/volumes/<name>/_data`
//! - `<runroot>/containers/<id>/`: `attach` (the monitor's socket), `lock`,
//!   `commit-pause` (while a commit holds the container paused)
//! - `<runroot>/runtime/`: keel-runtime's state

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
    pub runroot: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>, runroot: impl Into<PathBuf>) -> Layout {
        Layout {
            root: root.into(),
            runroot: runroot.into(),
        }
    }

    pub fn containers(&self) -> PathBuf {
        self.root.join("containers")
    }

    pub fn container(&self, id: &str) -> PathBuf {
        self.containers().join(id)
    }

    pub fn bundle(&self, id: &str) -> PathBuf {
        self.container(id)
    }

    pub fn rootfs(&self, id: &str) -> PathBuf {
        self.container(id).join("rootfs")
    }

    pub fn diff(&self, id: &str) -> PathBuf {
        self.container(id).join("diff")
    }

    pub fn work(&self, id: &str) -> PathBuf {
        self.container(id).join("work")
    }

    pub fn log(&self, id: &str) -> PathBuf {
        self.container(id).join(format!("{id}-json.log"))
    }

    pub fn file(&self, id: &str, name: &str) -> PathBuf {
        self.container(id).join(name)
    }

    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.runroot.join("containers").join(id)
    }

    pub fn attach_socket(&self, id: &str) -> PathBuf {
        self.run_dir(id).join("attach")
    }

    pub fn lock(&self, id: &str) -> PathBuf {
        self.run_dir(id).join("lock")
    }

    /// Who paused the container for a commit (`PID START_TIME`): if that
    /// process dies before resuming it, the next command does.
    pub fn commit_pause(&self, id: &str) -> PathBuf {
        self.run_dir(id).join("commit-pause")
    }

    pub fn runtime_root(&self) -> PathBuf {
        self.runroot.join("runtime")
    }

    pub fn volumes(&self) -> PathBuf {
        self.root.join("volumes")
    }

    pub fn volume(&self, name: &str) -> PathBuf {
        self.volumes().join(name)
    }

    pub fn volume_data(&self, name: &str) -> PathBuf {
        self.volume(name).join("_data")
    }
}

/// Whether `path` is a mount point (its device differs from its parent's,
/// or /proc/self/mountinfo lists it).
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    text.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .is_some_and(|mount_point| unescape(mount_point) == wanted)
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert!(is_mount_point(Path::new("/proc")));
    }
}
