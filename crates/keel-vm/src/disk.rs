//! Disk images for VMs: raw files. `create` makes a sparse one;
//! `from_layers` makes an ext4 image of a container image's root file
//! system (its layers stacked as overlayfs shows them), written by
//! `mkfs.ext4 -d`, without mounting the image file itself. The overlay is
//! mounted in a mount namespace of its own (`unshare --mount`), so a
//! command killed midway leaves no mount behind; a file that could not be
//! made whole is removed.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

/// A sparse raw disk of `size` bytes at `path` (which must not exist).
pub fn create(path: &Path, size: u64) -> Result<()> {
    if size < 1 << 20 {
        return Err(Error::invalid(format!(
            "--size {size}: a disk needs at least 1 MiB"
        )));
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(Error::path("create the disk", path))?;
    if let Err(e) = file.set_len(size) {
        let _ = std::fs::remove_file(path);
        return Err(Error::path("size the disk", path)(e));
    }
    Ok(())
}

/// An ext4 image of `size` bytes at `path` (which must not exist) of the
/// file system that `layers` (bottom first) make.
pub fn from_layers(layers: &[PathBuf], path: &Path, size: u64, label: &str) -> Result<()> {
    if layers.is_empty() {
        return Err(Error::invalid("the image has no layers"));
    }
    if path.exists() {
        return Err(Error::invalid(format!("{} exists", path.display())));
    }
    let temp = tempdir_beside(path)?;
    let merged = temp.join("merged");
    std::fs::create_dir(&merged).map_err(Error::path("create", &merged))?;
    // overlayfs wants the top layer first; one layer is used as it is.
    let source = if layers.len() == 1 {
        layers[0].display().to_string()
    } else {
        merged.display().to_string()
    };
    let lower = layers
        .iter()
        .rev()
        .map(|l| l.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let script = r#"set -e
if [ "$1" = "$2" ]; then mount -t overlay -o ro,lowerdir="$3" overlay "$2"; fi
mkfs.ext4 -q -F -L "$6" -E root_owner=0:0 -d "$1" "$4" "$5"
"#;
    let output = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&source)
        .arg(&merged)
        .arg(&lower)
        .arg(path)
        .arg(format!("{}k", size >> 10))
        .arg(label)
        .output();
    let _ = std::fs::remove_dir_all(&temp);
    let output = match output {
        Ok(output) => output,
        Err(e) => {
            let _ = std::fs::remove_file(path);
            return Err(Error::Io {
                what: "run unshare and mkfs.ext4 (util-linux, e2fsprogs)".into(),
                source: e,
            });
        }
    };
    if !output.status.success() {
        let _ = std::fs::remove_file(path);
        return Err(Error::Msg(format!(
            "make the ext4 image {}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

fn tempdir_beside(path: &Path) -> Result<PathBuf> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temp = parent.join(format!(
        ".{}.making-{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&temp);
    std::fs::create_dir(&temp).map_err(Error::path("create", &temp))?;
    Ok(temp)
}
