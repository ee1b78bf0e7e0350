//! A container's files: `diff` (what its writable layer changed), `export`
//! (its root filesystem as a tar stream), `cp` (a path in or out, as tar
//! streams) and `commit` (its changes as a new image).
//!
//! `cp` works in the container's own view of its files: a child process
//! enters its mount namespace (running) or mounts its root filesystem and
//! volumes in a private one (stopped) and chroots there, so paths and
//! symlinks resolve as the container's processes see them, and nothing it
//! does can reach the host's files. Data crosses as tar over a pipe.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use keel_image::manifest::History;
use keel_image::reference::Reference;
use keel_image::store::ImageStore;
use serde::{Deserialize, Serialize};

use crate::db::Container;
use crate::engine::{Engine, RunConfig};
use crate::error::{Error, Result};
use crate::spec::MountKind;

/// A change `diff` reports, docker's letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    Added,
    Changed,
    Deleted,
}

impl Change {
    pub fn letter(self) -> char {
        match self {
            Change::Added => 'A',
            Change::Changed => 'C',
            Change::Deleted => 'D',
        }
    }
}

/// What a path in the container is (for `cp`'s rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Missing,
    Directory,
    Other,
}

/// Where `copy_out` puts the tar stream.
pub enum Sink<'a> {
    /// As it is (`cp CONTAINER:SRC -`).
    Writer(&'a mut dyn Write),
    /// Unpacked into this host directory.
    Directory(&'a Path),
}

/// What `copy_in` sends.
pub enum Source<'a> {
    /// A tar stream as it is (`cp - CONTAINER:DEST`).
    Reader(&'a mut dyn Read),
    /// This host path, its top named as given (its own name if None; its
    /// contents if the name is `None` and it is a directory... see pack).
    Path(&'a Path, Option<String>),
}

/// `commit` settings.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    pub author: Option<String>,
    pub message: Option<String>,
    /// Dockerfile instructions applied to the new image's config
    /// (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, USER, VOLUME,
    /// WORKDIR, STOPSIGNAL).
    pub changes: Vec<String>,
    /// Pause the container while its layer is read (docker's default).
    pub pause: bool,
}

impl Engine {
    /// `diff`: the paths the container's writable layer added, changed or
    /// deleted, sorted by path.
    pub fn diff(&mut self, name: &str) -> Result<Vec<(Change, String)>> {
        let container = self.find(name)?;
        let run = self.run_config(&container.id)?;
        let upper = self.layout.diff(&container.id);
        let mut changes = Vec::new();
        walk_diff(&upper, "", &run.layers, &mut changes, &mut Vec::new())?;
        changes.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(changes)
    }

    /// `export`: the container's root filesystem (without its volumes), as
    /// a tar stream to `out`.
    pub fn export(&mut self, name: &str, out: &mut dyn Write) -> Result<()> {
        let container = self.find(name)?;
        let run = self.run_config(&container.id)?;
        let rootfs = self.layout.rootfs(&container.id);
        let upper = self.layout.diff(&container.id);
        let work = self.layout.work(&container.id);
        let (read, write) = pipe()?;
        let child = fork_child(move || {
            // A private view: the mount (if we make one) goes with us.
            private_mount_namespace()?;
            if !crate::paths::is_mount_point(&rootfs) {
                crate::rootfs::mount_overlay(&run.layers, &upper, &work, &rootfs)
                    .map_err(|e| e.to_string())?;
            }
            let out = std::fs::File::from(write);
            keel_image::pack::pack(
                &rootfs,
                std::io::BufWriter::with_capacity(256 * 1024, out),
                &Default::default(),
            )
            .map_err(|e| e.to_string())
        })?;
        let mut reader = std::fs::File::from(read);
        let copied = std::io::copy(&mut reader, out).map_err(|e| Error::io("write the export", e));
        child.wait()?;
        copied.map(|_| ())
    }

    /// What `path` is in the container.
    pub fn stat_in(&mut self, name: &str, path: &str) -> Result<Kind> {
        let container = self.find(name)?;
        let run = self.run_config(&container.id)?;
        let (read, write) = pipe()?;
        let path = path.to_string();
        let child = self.in_container(&container, &run, move || {
            let kind = match std::fs::metadata(&path) {
                Ok(meta) if meta.is_dir() => Kind::Directory,
                Ok(_) => Kind::Other,
                Err(_) => Kind::Missing,
            };
            let mut out = std::fs::File::from(write);
            out.write_all(
                serde_json::to_string(&kind)
                    .expect("kinds serialize")
                    .as_bytes(),
            )
            .map_err(|e| e.to_string())
        })?;
        let mut text = String::new();
        let _ = std::fs::File::from(read).read_to_string(&mut text);
        child.wait()?;
        serde_json::from_str(&text)
            .map_err(|_| Error::msg(format!("stat {text:?} in the container")))
    }

    /// `cp CONTAINER:SRC ...`: `src` packed as a tar stream, its top named
    /// `top_name` (its own name if None), to `sink`.
    /// `follow`: a symlink at `src` is followed (`cp -L`).
    pub fn copy_out(
        &mut self,
        name: &str,
        src: &str,
        top_name: Option<String>,
        follow: bool,
        sink: Sink<'_>,
    ) -> Result<u64> {
        let container = self.find(name)?;
        let run = self.run_config(&container.id)?;
        let (read, write) = pipe()?;
        let src = src.to_string();
        // The child is forked before this process does anything else: no
        // thread of ours may hold a lock the child would need.
        let child = self.in_container(&container, &run, move || {
            let given = Path::new(&src);
            if std::fs::symlink_metadata(given).is_err() {
                return Err(format!("Could not find the file {src} in container"));
            }
            let resolved = if follow {
                std::fs::canonicalize(given).map_err(|e| format!("follow {src}: {e}"))?
            } else {
                given.to_path_buf()
            };
            let path = resolved.as_path();
            let out = std::fs::File::from(write);
            let options = keel_image::pack::PackOptions {
                overlay_diff: false,
                exclude: Vec::new(),
                top_name: Some(top_name.unwrap_or_else(|| {
                    given
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| ".".to_string())
                })),
            };
            keel_image::pack::pack(
                path,
                std::io::BufWriter::with_capacity(256 * 1024, out),
                &options,
            )
            .map_err(|e| e.to_string())
        })?;
        let mut reader = Counting::new(std::fs::File::from(read));
        let done = match sink {
            Sink::Writer(out) => std::io::copy(&mut reader, out)
                .map(|_| ())
                .map_err(|e| Error::io("read from the container", e)),
            Sink::Directory(into) => unpack_on_host(&mut reader, into).map(|()| {
                // The rest of the stream (tar's second end block): the child
                // writes it, and docker's count includes it.
                let _ = std::io::copy(&mut reader, &mut std::io::sink());
            }),
        };
        let copied = reader.count;
        drop(reader);
        let waited = child.wait();
        waited?;
        done.map(|()| copied)
    }

    /// `cp ... CONTAINER:DEST`: `source` unpacked into the directory
    /// `dest_dir` of the container.
    /// The bytes of the tar stream sent (what docker's "Successfully
    /// copied" counts).
    pub fn copy_in(&mut self, name: &str, dest_dir: &str, source: Source<'_>) -> Result<u64> {
        let container = self.find(name)?;
        let run = self.run_config(&container.id)?;
        let (read, write) = pipe()?;
        let dest = dest_dir.to_string();
        let child = self.in_container(&container, &run, move || {
            if !Path::new(&dest).is_dir() {
                return Err(format!("Could not find the file {dest} in container"));
            }
            let reader = std::fs::File::from(read);
            let mut archive =
                tar::Archive::new(std::io::BufReader::with_capacity(256 * 1024, reader));
            archive.set_preserve_permissions(true);
            archive.set_preserve_ownerships(true);
            archive.set_preserve_mtime(true);
            archive.set_overwrite(true);
            archive
                .unpack(&dest)
                .map_err(|e| format!("extract into {dest}: {e}"))
        })?;
        let mut writer = Counting::new(std::fs::File::from(write));
        let done = match source {
            Source::Reader(input) => std::io::copy(input, &mut writer)
                .map(|_| ())
                .map_err(|e| Error::io("send to the container", e)),
            Source::Path(path, top_name) => keel_image::pack::pack(
                path,
                std::io::BufWriter::with_capacity(256 * 1024, &mut writer),
                &keel_image::pack::PackOptions {
                    top_name,
                    ..Default::default()
                },
            )
            .map_err(Error::from),
        };
        let copied = writer.count;
        drop(writer);
        let waited = child.wait();
        waited?;
        done.map(|()| copied)
    }

    /// Runs `f` in a child whose `/` is the container's filesystem as its
    /// processes see it (volumes and binds included).
    fn in_container(
        &self,
        container: &Container,
        run: &RunConfig,
        f: impl FnOnce() -> std::result::Result<(), String>,
    ) -> Result<Child> {
        // A micro-VM's init on the host is its shim, in the host's mount
        // namespace: its files are reached through the rootfs the monitor
        // mounted (the one the guest shares), as for a stopped container.
        let running = container.spec.isolation != crate::spec::Isolation::Vm
            && container.state.status.is_active()
            && keel_runtime::util::process_alive(container.state.pid, container.state.pid_start);
        let pid = container.state.pid;
        let rootfs = self.layout.rootfs(&container.id);
        let upper = self.layout.diff(&container.id);
        let work = self.layout.work(&container.id);
        let layers = run.layers.clone();
        let mounts: Vec<(PathBuf, String)> = container
            .mounts
            .iter()
            .filter(|m| m.kind != MountKind::Tmpfs)
            .filter_map(|m| m.source.clone().map(|s| (s, m.target.clone())))
            .collect();
        let ns = if running {
            let path = format!("/proc/{pid}/ns/mnt");
            Some(std::fs::File::open(&path).map_err(|e| Error::io(format!("open {path}"), e))?)
        } else {
            None
        };
        fork_child(move || {
            match ns {
                Some(ns) => {
                    // SAFETY: setns into the container's mount namespace in
                    // our single-threaded child; root and cwd move with it.
                    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS) } != 0 {
                        return Err(format!(
                            "enter the container's mount namespace: {}",
                            std::io::Error::last_os_error()
                        ));
                    }
                }
                None => {
                    private_mount_namespace()?;
                    if !crate::paths::is_mount_point(&rootfs) {
                        crate::rootfs::mount_overlay(&layers, &upper, &work, &rootfs)
                            .map_err(|e| e.to_string())?;
                    }
                    for (source, target) in &mounts {
                        // Only where the image has the directory; found
                        // without leaving the rootfs.
                        if let Ok(Some(dir)) = crate::rootfs::open_dir_in_root(&rootfs, target) {
                            let at = format!("/proc/self/fd/{}", dir.as_raw_fd());
                            let _ = nix::mount::mount(
                                Some(source.as_path()),
                                Path::new(&at),
                                None::<&str>,
                                nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_REC,
                                None::<&str>,
                            );
                        }
                    }
                    let c =
                        CString::new(rootfs.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
                    // SAFETY: chroot and chdir with valid C strings.
                    if unsafe { libc::chroot(c.as_ptr()) } != 0
                        || unsafe { libc::chdir(c"/".as_ptr()) } != 0
                    {
                        return Err(format!(
                            "enter the container's root: {}",
                            std::io::Error::last_os_error()
                        ));
                    }
                }
            }
            f()
        })
    }

    /// `commit`: the container's changes as a new image on top of its
    /// image, with the container's settings (and `changes`) as its config.
    pub fn commit(
        &mut self,
        images: &mut ImageStore,
        name: &str,
        reference: Option<&Reference>,
        options: &CommitOptions,
    ) -> Result<keel_image::metadata::ImageRecord> {
        let container = self.find(name)?;
        let run = self.run_config(&container.id)?;
        let base = images
            .metadata
            .image(
                &container
                    .image_id
                    .parse()
                    .map_err(|_| Error::msg("the container's image id does not parse"))?,
            )?
            .ok_or_else(|| Error::msg(format!("the image of {} is gone", container.name)))?;
        let paused = options.pause && container.state.status == crate::db::Status::Running;
        let pause_record = self.layout.commit_pause(&container.id);
        if paused {
            // Recorded before the pause: should this process die before it
            // resumes the container, whoever finds the record does.
            let me = std::process::id() as i32;
            let start = keel_runtime::util::proc_start_time(me).unwrap_or(0);
            crate::engine::write_file(&pause_record, format!("{me} {start}\n").as_bytes())?;
            if let Err(e) = keel_runtime::container::pause(&self.runtime_root(), &container.id) {
                let _ = std::fs::remove_file(&pause_record);
                return Err(Error::runtime(format!("pause {}", container.name), e));
            }
        }
        let upper = self.layout.diff(&container.id);
        let packed = std::thread::scope(|scope| {
            // The mount points the runtime made stay out of the layer.
            let mut hidden = Vec::new();
            walk_diff(&upper, "", &run.layers, &mut Vec::new(), &mut hidden)?;
            let (reader, writer) = std::io::pipe().map_err(|e| Error::io("pipe", e))?;
            let packer = scope.spawn(move || {
                keel_image::pack::pack(
                    &upper,
                    std::io::BufWriter::with_capacity(256 * 1024, writer),
                    &keel_image::pack::PackOptions {
                        overlay_diff: true,
                        top_name: None,
                        exclude: hidden
                            .iter()
                            .map(|p| PathBuf::from(p.trim_start_matches('/')))
                            .collect(),
                    },
                )
            });
            let mut config = container_image_config(&run, &container);
            apply_changes(&mut config, &options.changes)?;
            let history = History {
                created_by: Some(container.args.join(" ")),
                author: options.author.clone(),
                comment: options.message.clone(),
                ..History::default()
            };
            let author = options.author.clone();
            let record = images.add_layer(
                &base,
                reader,
                history,
                |c| {
                    c.config = Some(config);
                    if author.is_some() {
                        c.author = author;
                    }
                },
                reference,
            );
            let packed = packer
                .join()
                .map_err(|_| Error::msg("the layer packer failed"))?;
            // The store's error first: the packer fails after it (EPIPE).
            let record = record?;
            packed?;
            Ok::<_, Error>(record)
        });
        if paused {
            let _ = keel_runtime::container::resume(&self.runtime_root(), &container.id);
            let _ = std::fs::remove_file(&pause_record);
        }
        packed
    }
}

/// The config of an image committed from `container`: its image's, with
/// the container's own settings over it (as docker commit does).
fn container_image_config(
    run: &RunConfig,
    container: &Container,
) -> keel_image::manifest::ContainerConfig {
    let mut config = run.image_config.config.clone().unwrap_or_default();
    let spec = &container.spec;
    let mut env = config.env.clone().unwrap_or_default();
    crate::oci::merge_env(&mut env, spec.env.iter().cloned());
    config.env = Some(env);
    if let Some(entrypoint) = &spec.entrypoint {
        config.entrypoint = Some(entrypoint.clone());
        config.cmd = Some(spec.command.clone());
    } else if !spec.command.is_empty() {
        config.cmd = Some(spec.command.clone());
    }
    if let Some(workdir) = &spec.workdir {
        config.working_dir = Some(workdir.clone());
    }
    if let Some(user) = &spec.user {
        config.user = Some(user.clone());
    }
    if !spec.labels.is_empty() {
        let mut labels = config.labels.clone().unwrap_or_default();
        labels.extend(spec.labels.clone());
        config.labels = Some(labels);
    }
    config
}

/// Unpacks a tar stream that came out of a container into the host
/// directory `into`, with tar's guards: no `..` or absolute names, nothing
/// written through a link. Owners are not kept (the host's user owns it).
pub fn unpack_on_host(reader: impl Read, into: &Path) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    archive
        .unpack(into)
        .map_err(|e| Error::io(format!("extract into {}", into.display()), e))
}

/// `--change` instructions, the Dockerfile subset docker commit takes.
pub fn apply_changes(
    config: &mut keel_image::manifest::ContainerConfig,
    changes: &[String],
) -> Result<()> {
    for change in changes {
        let change = change.trim();
        let (instruction, rest) = change
            .split_once(char::is_whitespace)
            .unwrap_or((change, ""));
        let rest = rest.trim();
        let list_or_shell = |text: &str| -> Vec<String> {
            serde_json::from_str::<Vec<String>>(text)
                .unwrap_or_else(|_| vec!["/bin/sh".into(), "-c".into(), text.to_string()])
        };
        let pairs = |text: &str| -> Vec<(String, String)> {
            if text.contains('=') {
                split_words(text)
                    .into_iter()
                    .map(|w| {
                        let (k, v) = w.split_once('=').unwrap_or((&w, ""));
                        (k.to_string(), v.to_string())
                    })
                    .collect()
            } else {
                let (k, v) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
                vec![(k.to_string(), v.trim().to_string())]
            }
        };
        match instruction.to_ascii_uppercase().as_str() {
            "CMD" => config.cmd = Some(list_or_shell(rest)),
            "ENTRYPOINT" => config.entrypoint = Some(list_or_shell(rest)),
            "ENV" => {
                let mut env = config.env.clone().unwrap_or_default();
                crate::oci::merge_env(
                    &mut env,
                    pairs(rest).into_iter().map(|(k, v)| format!("{k}={v}")),
                );
                config.env = Some(env);
            }
            "LABEL" => {
                let mut labels = config.labels.clone().unwrap_or_default();
                labels.extend(pairs(rest));
                config.labels = Some(labels);
            }
            "EXPOSE" => {
                let mut ports = config.exposed_ports.clone().unwrap_or_default();
                for port in rest.split_whitespace() {
                    let port = if port.contains('/') {
                        port.to_string()
                    } else {
                        format!("{port}/tcp")
                    };
                    ports.insert(port, serde_json::json!({}));
                }
                config.exposed_ports = Some(ports);
            }
            "VOLUME" => {
                let mut volumes = config.volumes.clone().unwrap_or_default();
                let paths = serde_json::from_str::<Vec<String>>(rest)
                    .unwrap_or_else(|_| rest.split_whitespace().map(str::to_string).collect());
                for path in paths {
                    volumes.insert(path, serde_json::json!({}));
                }
                config.volumes = Some(volumes);
            }
            "USER" => config.user = Some(rest.to_string()),
            "WORKDIR" => config.working_dir = Some(rest.to_string()),
            "STOPSIGNAL" => config.stop_signal = Some(rest.to_string()),
            "ONBUILD" => {
                let mut onbuild = config.on_build.clone().unwrap_or_default();
                onbuild.push(rest.to_string());
                config.on_build = Some(onbuild);
            }
            other => {
                return Err(Error::invalid(format!(
                    "{other} is not a valid change command"
                )));
            }
        }
    }
    Ok(())
}

/// Words of `KEY=VALUE KEY2="two words"`.
fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quote = None;
    for c in text.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// A reader or writer that counts the bytes through it.
struct Counting<T> {
    inner: T,
    count: u64,
}

impl<T> Counting<T> {
    fn new(inner: T) -> Counting<T> {
        Counting { inner, count: 0 }
    }
}

impl<T: Read> Read for Counting<T> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

impl<T: Write> Write for Counting<T> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The mount points every container gets. When the image lacks one, the
/// runtime makes it in the writable layer; docker keeps these in an init
/// layer of its own, so neither `diff` nor `commit` shows them.
const CONTAINER_MOUNT_POINTS: &[&str] = &[
    "/proc",
    "/dev",
    "/sys",
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
];

/// Walks the writable layer below `relative`: each change into `changes`,
/// each mount point the runtime made (and a directory that holds nothing
/// else and is as the image has it) into `hidden`. Whether anything under
/// `relative` was reported.
fn walk_diff(
    upper: &Path,
    relative: &str,
    layers: &[PathBuf],
    changes: &mut Vec<(Change, String)>,
    hidden: &mut Vec<String>,
) -> Result<bool> {
    let dir = upper.join(relative.trim_start_matches('/'));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(false);
    };
    let mut reported = false;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = format!("{relative}/{name}");
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        if meta.file_type().is_char_device() && meta.rdev() == 0 {
            changes.push((Change::Deleted, path));
            reported = true;
            continue;
        }
        let below = layers
            .iter()
            .find_map(|l| std::fs::symlink_metadata(l.join(path.trim_start_matches('/'))).ok());
        let stub = below.is_none()
            && CONTAINER_MOUNT_POINTS.contains(&path.as_str())
            && (meta.is_dir() || (meta.is_file() && meta.len() == 0));
        if stub {
            hidden.push(path);
            continue;
        }
        let change = if below.is_some() {
            Change::Changed
        } else {
            Change::Added
        };
        if !meta.is_dir() {
            changes.push((change, path));
            reported = true;
            continue;
        }
        let at = changes.len();
        let hidden_before = hidden.len();
        let inner = walk_diff(upper, &path, layers, changes, hidden)?;
        // A directory that is only there to hold mount points: as the image
        // has it (or absent from it) and with nothing else in it.
        let only_stubs = !inner
            && hidden.len() > hidden_before
            && below.as_ref().is_none_or(|b| {
                b.is_dir()
                    && b.mode() == meta.mode()
                    && (b.uid(), b.gid()) == (meta.uid(), meta.gid())
            })
            && !keel_image::pack::is_opaque(&entry.path());
        if only_stubs {
            hidden.truncate(hidden_before);
            hidden.push(path);
        } else {
            changes.insert(at, (change, path));
            reported = true;
        }
    }
    Ok(reported)
}

/// A forked child running a closure; its failure comes back as text.
pub struct Child {
    pid: i32,
    errors: OwnedFd,
}

impl Child {
    pub fn wait(self) -> Result<()> {
        let mut message = String::new();
        let _ = std::fs::File::from(self.errors).read_to_string(&mut message);
        let mut status = 0;
        // SAFETY: waitpid on our own child.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            return Ok(());
        }
        if message.is_empty() {
            message = format!("the helper process failed (status {status})");
        }
        Err(Error::msg(message))
    }
}

/// Forks; the child runs `f` and exits (its error written back).
fn fork_child(f: impl FnOnce() -> std::result::Result<(), String>) -> Result<Child> {
    let (errors_read, errors_write) = pipe()?;
    // SAFETY: fork of a single-threaded process (the CLI); the child runs
    // `f` and _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::io("fork", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(errors_read);
        let code = match f() {
            Ok(()) => 0,
            Err(message) => {
                let mut out = std::fs::File::from(errors_write);
                let _ = out.write_all(message.as_bytes());
                1
            }
        };
        // SAFETY: leaving the child without running the parent's atexit.
        unsafe { libc::_exit(code) };
    }
    drop(errors_write);
    Ok(Child {
        pid,
        errors: errors_read,
    })
}

fn private_mount_namespace() -> std::result::Result<(), String> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("unshare the mount namespace: {e}"))?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("make mounts private: {e}"))
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two fds we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::io("pipe", std::io::Error::last_os_error()));
    }
    // SAFETY: both fds are new and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_as_docker_commit_reads_them() {
        let mut config = keel_image::manifest::ContainerConfig::default();
        apply_changes(
            &mut config,
            &[
                "CMD [\"nginx\", \"-g\", \"daemon off;\"]".into(),
                "ENTRYPOINT /start.sh".into(),
                "ENV A=1 B=\"two words\"".into(),
                "ENV C 3".into(),
                "LABEL tier=web".into(),
                "EXPOSE 80 53/udp".into(),
                "VOLUME [\"/data\"]".into(),
                "USER app".into(),
                "WORKDIR /srv".into(),
            ],
        )
        .unwrap();
        assert_eq!(config.cmd.unwrap(), ["nginx", "-g", "daemon off;"]);
        assert_eq!(config.entrypoint.unwrap(), ["/bin/sh", "-c", "/start.sh"]);
        assert_eq!(config.env.unwrap(), ["A=1", "B=two words", "C=3"]);
        assert_eq!(config.labels.unwrap()["tier"], "web");
        let ports = config.exposed_ports.unwrap();
        assert!(ports.contains_key("80/tcp") && ports.contains_key("53/udp"));
        assert!(config.volumes.unwrap().contains_key("/data"));
        assert_eq!(config.user.unwrap(), "app");
        assert_eq!(config.working_dir.unwrap(), "/srv");
        let mut config = keel_image::manifest::ContainerConfig::default();
        assert!(apply_changes(&mut config, &["RUN rm -rf /".into()]).is_err());
    }
}
