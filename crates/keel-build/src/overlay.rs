//! Scratch space for a step under `<root>/build/tmp/`: an overlay of a
//! stage's snapshots with a fresh upper directory (what the step changes
//! becomes its layer), or a read-only view of a stage (`COPY --from`).
//! Everything is unmounted and removed when the [`Scratch`] goes, also on
//! errors; `keel build` runs in a mount namespace of its own, so a killed
//! build leaves no mount behind either.

use std::cell::Cell;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsops::Root;

pub struct Scratch {
    dir: PathBuf,
    upper: PathBuf,
    mounted: Cell<bool>,
}

impl Scratch {
    pub fn new(root: &Path) -> Result<Scratch> {
        let mut bytes = [0u8; 8];
        crate::build::getrandom(&mut bytes).map_err(|e| Error::io("read /dev/urandom", e))?;
        // Named by the build's pid: a later build removes what a killed
        // one left (see [`sweep`]).
        let dir = root.join("build").join("tmp").join(format!(
            "{}-{}",
            std::process::id(),
            hex::encode(bytes)
        ));
        for sub in ["upper", "work", "merged"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(|e| Error::path("create", &path, e))?;
        }
        Ok(Scratch {
            upper: dir.join("upper"),
            dir,
            mounted: Cell::new(false),
        })
    }

    pub fn upper(&self) -> &Path {
        &self.upper
    }

    fn sub(&self, sub: &str) -> PathBuf {
        self.dir.join(sub)
    }

    /// A writable root: `lowers` (topmost first) under the upper directory.
    pub fn mount(&self, lowers: &[PathBuf]) -> Result<Root> {
        if lowers.is_empty() {
            return Root::open(&self.sub("upper"));
        }
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            join_lowers(lowers),
            escape(&self.sub("upper")),
            escape(&self.sub("work"))
        );
        self.mount_with(&data)?;
        Root::open(&self.sub("merged"))
    }

    /// A read-only root of `lowers` (topmost first).
    pub fn mount_read_only(&self, lowers: &[PathBuf]) -> Result<Root> {
        match lowers {
            [] => Root::open(&self.sub("merged")),
            [only] => Root::open(only),
            _ => {
                let data = format!("lowerdir={}", join_lowers(lowers));
                self.mount_with(&data)?;
                Root::open(&self.sub("merged"))
            }
        }
    }

    fn mount_with(&self, data: &str) -> Result<()> {
        if data.len() >= 4096 {
            return Err(Error::msg(
                "the stage has too many layers for one overlay mount",
            ));
        }
        let merged = self.sub("merged");
        nix::mount::mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(data),
        )
        .map_err(|e| Error::path("mount an overlay at", &merged, e.into()))?;
        self.mounted.set(true);
        Ok(())
    }

    pub fn unmount(&self) -> Result<()> {
        if self.mounted.get() {
            let merged = self.sub("merged");
            nix::mount::umount2(&merged, nix::mount::MntFlags::empty())
                .map_err(|e| Error::path("unmount", &merged, e.into()))?;
            self.mounted.set(false);
        }
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.mounted.get() {
            let _ = nix::mount::umount2(&self.sub("merged"), nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes scratch space under `<root>/build/tmp` left by builds that are
/// gone (killed: their mounts went with their mount namespace).
pub fn sweep(root: &Path) {
    let dir = root.join("build").join("tmp");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = entry.path();
        let _ = nix::mount::umount2(&path.join("merged"), nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(&path);
    }
}

fn escape(path: &Path) -> String {
    path.display()
        .to_string()
        .replace('\\', "\\\\")
        .replace(':', "\\:")
        .replace(',', "\\,")
}

fn join_lowers(lowers: &[PathBuf]) -> String {
    lowers
        .iter()
        .map(|p| escape(p))
        .collect::<Vec<_>>()
        .join(":")
}
