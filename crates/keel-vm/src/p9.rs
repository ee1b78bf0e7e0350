//! keel's 9P2000.L file server: a host directory shared with a guest, as
//! QEMU's `-fsdev local,security_model=passthrough` shares one. Linux's
//! `9p` file system is the client, over virtio (keel's virtio-9p device,
//! [`crate::devices::virtio::p9`]) or over any stream (`trans=fd`: a vsock
//! connection, a pipe; [`Server::serve_stream`]).
//!
//! The server never leaves its directory: every file a fid names is held
//! as an `O_PATH` descriptor reached one name at a time with `O_NOFOLLOW`
//! from the shared directory (the client resolves symbolic links itself,
//! by reading them), names with a `/` are refused, and `..` never climbs
//! above the top. Ownership is passed through: new files belong to the
//! user the client attached as and the group it names. What the guest
//! cannot reach through the server: the host's devices (a device node is
//! never opened, and only FIFOs, sockets and the 0:0 character device
//! overlayfs uses for deletions can be made).

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The largest message the server takes (the client asks; Linux's
/// virtio transport is limited by its descriptors anyway).
pub const MAX_MSIZE: u32 = 1 << 20;
/// The size of a message's header: size[4] type[1] tag[2].
const HEADER: usize = 7;
/// An xattr's value, at most (Linux's limit).
const XATTR_MAX: u64 = 64 << 10;

// Message types (the T-message; its answer is one more).
const TLERROR: u8 = 6;
const TSTATFS: u8 = 8;
const TLOPEN: u8 = 12;
const TLCREATE: u8 = 14;
const TSYMLINK: u8 = 16;
const TMKNOD: u8 = 18;
const TRENAME: u8 = 20;
const TREADLINK: u8 = 22;
const TGETATTR: u8 = 24;
const TSETATTR: u8 = 26;
const TXATTRWALK: u8 = 30;
const TXATTRCREATE: u8 = 32;
const TREADDIR: u8 = 40;
const TFSYNC: u8 = 50;
const TLOCK: u8 = 52;
const TGETLOCK: u8 = 54;
const TLINK: u8 = 70;
const TMKDIR: u8 = 72;
const TRENAMEAT: u8 = 74;
const TUNLINKAT: u8 = 76;
const TVERSION: u8 = 100;
const TAUTH: u8 = 102;
const TATTACH: u8 = 104;
const TFLUSH: u8 = 108;
const TWALK: u8 = 110;
const TREAD: u8 = 116;
const TWRITE: u8 = 118;
const TCLUNK: u8 = 120;
const TREMOVE: u8 = 122;

/// qid types.
const QTDIR: u8 = 0x80;
const QTSYMLINK: u8 = 0x02;
/// Tgetattr's "basic" fields: everything but btime, gen, data_version.
const GETATTR_BASIC: u64 = 0x7ff;

/// An errno to answer with.
type Errno = i32;
type Answer = std::result::Result<(), Errno>;

fn errno() -> Errno {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Fails with errno when a libc call returned a negative value.
fn check<T: PartialOrd + Default>(value: T) -> std::result::Result<T, Errno> {
    if value < T::default() {
        Err(errno())
    } else {
        Ok(value)
    }
}

/// A message being read.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], Errno> {
        if self.bytes.len() < n {
            return Err(libc::EPROTO);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u8(&mut self) -> std::result::Result<u8, Errno> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> std::result::Result<u16, Errno> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> std::result::Result<u32, Errno> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> std::result::Result<u64, Errno> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn bytes(&mut self) -> std::result::Result<&'a [u8], Errno> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    /// A file name: one component, not `.` or `..` unless `dots`.
    fn name(&mut self) -> std::result::Result<CString, Errno> {
        let bytes = self.bytes()?;
        if bytes.is_empty() || bytes.contains(&b'/') || bytes.contains(&0) {
            return Err(libc::EINVAL);
        }
        if bytes == b"." || bytes == b".." {
            return Err(libc::EINVAL);
        }
        Ok(CString::new(bytes).expect("no NUL"))
    }
}

/// An answer being written (after the header, filled in at the end).
struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u16(v.len() as u16);
        self.out.extend_from_slice(v);
    }
    fn qid(&mut self, q: Qid) {
        self.u8(q.kind);
        self.u32(0);
        self.u64(q.path);
    }
}

#[derive(Debug, Clone, Copy)]
struct Qid {
    kind: u8,
    path: u64,
}

/// What a fid holds.
struct Fid {
    /// The file, `O_PATH`.
    file: OwnedFd,
    /// Its names from the top (for `..` and Tremove).
    rel: PathBuf,
    /// The user the client attached as (new files are theirs).
    uid: u32,
    /// The file opened for I/O (Tlopen, Tlcreate).
    open: Option<OwnedFd>,
    /// An xattr read (Txattrwalk) or being written (Txattrcreate).
    xattr: Option<Xattr>,
}

enum Xattr {
    Read(Vec<u8>),
    Write {
        name: CString,
        size: usize,
        flags: i32,
        value: Vec<u8>,
    },
}

/// A 9P2000.L server over one directory.
pub struct Server {
    top: OwnedFd,
    fids: HashMap<u32, Fid>,
    msize: u32,
    /// Host devices seen, numbered for qid paths (a share may hold mounts).
    devices: HashMap<u64, u64>,
}

/// Opens `name` under `dir` as an `O_PATH` descriptor, not following a
/// symbolic link.
fn open_path(dir: RawFd, name: &CStr) -> std::result::Result<OwnedFd, Errno> {
    // SAFETY: openat with a NUL-terminated name; the fd is ours.
    let fd = check(unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: a new fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn stat(fd: RawFd) -> std::result::Result<libc::stat, Errno> {
    // SAFETY: fstatat of an fd we hold into a zeroed stat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe {
        libc::fstatat(
            fd,
            c"".as_ptr(),
            &mut st,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

fn stat_at(dir: RawFd, name: &CStr) -> std::result::Result<libc::stat, Errno> {
    // SAFETY: as above, a name under a directory we hold.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

/// `/proc/self/fd/N`: the file an `O_PATH` fd holds, for the calls that
/// take no descriptor of that kind.
fn proc_path(fd: RawFd) -> CString {
    CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL")
}

fn is_kind(st: &libc::stat, kind: libc::mode_t) -> bool {
    st.st_mode & libc::S_IFMT == kind
}

impl Server {
    /// A server for `dir` (which must be a directory).
    pub fn new(dir: &Path) -> std::io::Result<Server> {
        let path = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: open with a NUL-terminated path; the fd is ours.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Server {
            // SAFETY: a new fd nothing else owns.
            top: unsafe { OwnedFd::from_raw_fd(fd) },
            fids: HashMap::new(),
            msize: MAX_MSIZE,
            devices: HashMap::new(),
        })
    }

    /// The message size agreed with the client.
    pub fn msize(&self) -> u32 {
        self.msize
    }

    /// Answers one message (`request` is the whole message, size first)
    /// into `reply` (cleared first).
    pub fn handle(&mut self, request: &[u8], reply: &mut Vec<u8>) {
        reply.clear();
        let (kind, tag) = match request {
            [_, _, _, _, kind, t0, t1, ..] => (*kind, u16::from_le_bytes([*t0, *t1])),
            _ => (0, u16::MAX),
        };
        reply.extend_from_slice(&[0, 0, 0, 0, kind.wrapping_add(1)]);
        reply.extend_from_slice(&tag.to_le_bytes());
        let mut r = Reader {
            bytes: request.get(HEADER..).unwrap_or_default(),
        };
        let answer = if request.len() < HEADER {
            Err(libc::EPROTO)
        } else {
            self.dispatch(kind, &mut r, reply)
        };
        if let Err(errno) = answer {
            reply.truncate(HEADER);
            reply[4] = TLERROR + 1;
            reply.extend_from_slice(&(errno as u32).to_le_bytes());
        }
        let size = reply.len() as u32;
        reply[..4].copy_from_slice(&size.to_le_bytes());
    }

    /// Serves a client on a stream (Linux's `trans=fd`) until it hangs up.
    pub fn serve_stream(&mut self, mut stream: impl Read + Write) -> std::io::Result<()> {
        let mut request = Vec::new();
        let mut reply = Vec::new();
        loop {
            let mut size = [0u8; 4];
            match stream.read_exact(&mut size) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
            let size = u32::from_le_bytes(size) as usize;
            if !(HEADER..=MAX_MSIZE as usize).contains(&size) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("a 9p message of {size} bytes"),
                ));
            }
            request.resize(size, 0);
            request[..4].copy_from_slice(&(size as u32).to_le_bytes());
            stream.read_exact(&mut request[4..])?;
            self.handle(&request, &mut reply);
            stream.write_all(&reply)?;
        }
    }

    fn dispatch(&mut self, kind: u8, r: &mut Reader, out: &mut Vec<u8>) -> Answer {
        let mut w = Writer { out };
        match kind {
            TVERSION => {
                let msize = r.u32()?;
                let version = r.bytes()?;
                self.fids.clear();
                self.msize = msize.clamp(4096, MAX_MSIZE);
                w.u32(self.msize);
                w.bytes(if version == b"9P2000.L" {
                    b"9P2000.L"
                } else {
                    b"unknown"
                });
                Ok(())
            }
            TAUTH => Err(libc::EOPNOTSUPP),
            TATTACH => {
                let fid = r.u32()?;
                let _afid = r.u32()?;
                let _uname = r.bytes()?;
                let _aname = r.bytes()?;
                let uid = r.u32()?;
                let uid = if uid == u32::MAX { 0 } else { uid };
                let file = dup(self.top.as_raw_fd())?;
                let qid = self.qid(&stat(file.as_raw_fd())?);
                self.insert(fid, file, PathBuf::new(), uid)?;
                w.qid(qid);
                Ok(())
            }
            TFLUSH => Ok(()),
            TWALK => self.walk(r, &mut w),
            TGETATTR => {
                let fid = self.fid(r.u32()?)?;
                let st = stat(fid.file.as_raw_fd())?;
                let qid = self.qid(&st);
                w.u64(GETATTR_BASIC);
                w.qid(qid);
                w.u32(st.st_mode);
                w.u32(st.st_uid);
                w.u32(st.st_gid);
                w.u64(st.st_nlink);
                w.u64(st.st_rdev);
                w.u64(st.st_size as u64);
                w.u64(st.st_blksize as u64);
                w.u64(st.st_blocks as u64);
                for (sec, nsec) in [
                    (st.st_atime, st.st_atime_nsec),
                    (st.st_mtime, st.st_mtime_nsec),
                    (st.st_ctime, st.st_ctime_nsec),
                    (0, 0),
                ] {
                    w.u64(sec as u64);
                    w.u64(nsec as u64);
                }
                w.u64(0);
                w.u64(0);
                Ok(())
            }
            TSETATTR => self.setattr(r),
            TSTATFS => {
                let fid = self.fid(r.u32()?)?;
                // SAFETY: fstatfs of an fd we hold into a zeroed struct.
                let mut st: libc::statfs = unsafe { std::mem::zeroed() };
                check(unsafe { libc::fstatfs(fid.file.as_raw_fd(), &mut st) })?;
                w.u32(st.f_type as u32);
                w.u32(st.f_bsize as u32);
                w.u64(st.f_blocks);
                w.u64(st.f_bfree);
                w.u64(st.f_bavail);
                w.u64(st.f_files);
                w.u64(st.f_ffree);
                // SAFETY: fsid is two ints.
                let fsid: [i32; 2] = unsafe { std::mem::transmute(st.f_fsid) };
                w.u64(fsid[0] as u32 as u64 | (fsid[1] as u32 as u64) << 32);
                w.u32(st.f_namelen as u32);
                Ok(())
            }
            TLOPEN => {
                let id = r.u32()?;
                let flags = r.u32()?;
                let fid = self.fid(id)?;
                let st = stat(fid.file.as_raw_fd())?;
                let open = reopen(fid.file.as_raw_fd(), &st, flags)?;
                let qid = self.qid(&st);
                self.fid_mut(id)?.open = Some(open);
                w.qid(qid);
                w.u32(0);
                Ok(())
            }
            TLCREATE => {
                let id = r.u32()?;
                let name = r.name()?;
                let flags = r.u32()?;
                let mode = r.u32()?;
                let gid = r.u32()?;
                let fid = self.fid(id)?;
                let dir = fid.file.as_raw_fd();
                let flags = open_flags(flags) | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
                // SAFETY: openat under a directory we hold.
                let fd = check(unsafe {
                    libc::openat(dir, name.as_ptr(), flags, (mode & 0o7777) as libc::c_uint)
                })?;
                // SAFETY: a new fd nothing else owns.
                let open = unsafe { OwnedFd::from_raw_fd(fd) };
                own(dir, &name, fid.uid, gid, Some(mode))?;
                let file = open_path(dir, &name)?;
                let st = stat(file.as_raw_fd())?;
                let rel = fid.rel.join(OsStr::from_bytes(name.as_bytes()));
                let qid = self.qid(&st);
                let fid = self.fid_mut(id)?;
                fid.file = file;
                fid.rel = rel;
                fid.open = Some(open);
                w.qid(qid);
                w.u32(0);
                Ok(())
            }
            TSYMLINK => {
                let fid = self.fid(r.u32()?)?;
                let name = r.name()?;
                let target = CString::new(r.bytes()?).map_err(|_| libc::EINVAL)?;
                let gid = r.u32()?;
                let dir = fid.file.as_raw_fd();
                // SAFETY: symlinkat under a directory we hold.
                check(unsafe { libc::symlinkat(target.as_ptr(), dir, name.as_ptr()) })?;
                own(dir, &name, fid.uid, gid, None)?;
                let qid = self.qid(&stat_at(dir, &name)?);
                w.qid(qid);
                Ok(())
            }
            TMKNOD => {
                let fid = self.fid(r.u32()?)?;
                let name = r.name()?;
                let mode = r.u32()?;
                let major = r.u32()?;
                let minor = r.u32()?;
                let gid = r.u32()?;
                let allowed = match mode & libc::S_IFMT {
                    libc::S_IFIFO | libc::S_IFSOCK => true,
                    libc::S_IFCHR => major == 0 && minor == 0,
                    _ => false,
                };
                if !allowed {
                    return Err(libc::EPERM);
                }
                let dir = fid.file.as_raw_fd();
                // SAFETY: mknodat under a directory we hold.
                check(unsafe {
                    libc::mknodat(dir, name.as_ptr(), mode, libc::makedev(major, minor))
                })?;
                own(dir, &name, fid.uid, gid, Some(mode))?;
                let qid = self.qid(&stat_at(dir, &name)?);
                w.qid(qid);
                Ok(())
            }
            TMKDIR => {
                let fid = self.fid(r.u32()?)?;
                let name = r.name()?;
                let mode = r.u32()?;
                let gid = r.u32()?;
                let dir = fid.file.as_raw_fd();
                // SAFETY: mkdirat under a directory we hold.
                check(unsafe { libc::mkdirat(dir, name.as_ptr(), mode & 0o7777) })?;
                own(dir, &name, fid.uid, gid, Some(mode))?;
                let qid = self.qid(&stat_at(dir, &name)?);
                w.qid(qid);
                Ok(())
            }
            TREADLINK => {
                let fid = self.fid(r.u32()?)?;
                let mut buf = vec![0u8; libc::PATH_MAX as usize];
                // SAFETY: readlinkat of an O_PATH fd of a link, into buf.
                let n = check(unsafe {
                    libc::readlinkat(
                        fid.file.as_raw_fd(),
                        c"".as_ptr(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                    )
                })?;
                w.bytes(&buf[..n as usize]);
                Ok(())
            }
            TRENAME => Err(libc::EOPNOTSUPP),
            TRENAMEAT => {
                let old = self.fid(r.u32()?)?.file.as_raw_fd();
                let old_name = r.name()?;
                let new = self.fid(r.u32()?)?.file.as_raw_fd();
                let new_name = r.name()?;
                // SAFETY: renameat between directories we hold.
                check(unsafe { libc::renameat(old, old_name.as_ptr(), new, new_name.as_ptr()) })?;
                Ok(())
            }
            TUNLINKAT => {
                let dir = self.fid(r.u32()?)?.file.as_raw_fd();
                let name = r.name()?;
                let flags = r.u32()? as i32 & libc::AT_REMOVEDIR;
                // SAFETY: unlinkat under a directory we hold.
                check(unsafe { libc::unlinkat(dir, name.as_ptr(), flags) })?;
                Ok(())
            }
            TLINK => {
                let dir = self.fid(r.u32()?)?.file.as_raw_fd();
                let file = self.fid(r.u32()?)?.file.as_raw_fd();
                let name = r.name()?;
                // SAFETY: linkat of a file we hold into a directory we hold.
                check(unsafe {
                    libc::linkat(file, c"".as_ptr(), dir, name.as_ptr(), libc::AT_EMPTY_PATH)
                })?;
                Ok(())
            }
            TREADDIR => self.readdir(r, &mut w),
            TREAD => {
                let fid = self.fid(r.u32()?)?;
                let offset = r.u64()?;
                let count = (r.u32()?).min(self.msize - 11) as usize;
                let at = w.out.len();
                w.u32(0);
                let data = if let Some(Xattr::Read(value)) = &fid.xattr {
                    let start = (offset as usize).min(value.len());
                    let end = (start + count).min(value.len());
                    w.out.extend_from_slice(&value[start..end]);
                    end - start
                } else {
                    let open = fid.open.as_ref().ok_or(libc::EBADF)?;
                    w.out.resize(at + 4 + count, 0);
                    // SAFETY: pread into the space just made.
                    let n = check(unsafe {
                        libc::pread(
                            open.as_raw_fd(),
                            w.out[at + 4..].as_mut_ptr().cast(),
                            count,
                            offset as libc::off_t,
                        )
                    })? as usize;
                    w.out.truncate(at + 4 + n);
                    n
                };
                w.out[at..at + 4].copy_from_slice(&(data as u32).to_le_bytes());
                Ok(())
            }
            TWRITE => {
                let id = r.u32()?;
                let offset = r.u64()?;
                let count = r.u32()? as usize;
                let data = r.take(count)?;
                let fid = self.fid_mut(id)?;
                if let Some(Xattr::Write { size, value, .. }) = &mut fid.xattr {
                    if offset as usize != value.len() || value.len() + data.len() > *size {
                        return Err(libc::EINVAL);
                    }
                    value.extend_from_slice(data);
                    w.u32(data.len() as u32);
                    return Ok(());
                }
                let open = fid.open.as_ref().ok_or(libc::EBADF)?;
                // SAFETY: pwrite from the message's bytes.
                let n = check(unsafe {
                    libc::pwrite(
                        open.as_raw_fd(),
                        data.as_ptr().cast(),
                        data.len(),
                        offset as libc::off_t,
                    )
                })?;
                w.u32(n as u32);
                Ok(())
            }
            TFSYNC => {
                let fid = self.fid(r.u32()?)?;
                let datasync = r.u32().unwrap_or(0) != 0;
                if let Some(open) = &fid.open {
                    // SAFETY: fsync/fdatasync of an fd we hold.
                    check(unsafe {
                        if datasync {
                            libc::fdatasync(open.as_raw_fd())
                        } else {
                            libc::fsync(open.as_raw_fd())
                        }
                    })?;
                }
                Ok(())
            }
            TLOCK => {
                // As QEMU's server: locks are the guest's own business
                // (one client per share), so every lock is granted.
                self.fid(r.u32()?)?;
                w.u8(0);
                Ok(())
            }
            TGETLOCK => {
                self.fid(r.u32()?)?;
                let _kind = r.u8()?;
                let start = r.u64()?;
                let length = r.u64()?;
                let proc_id = r.u32()?;
                let client = r.bytes()?;
                w.u8(libc::F_UNLCK as u8);
                w.u64(start);
                w.u64(length);
                w.u32(proc_id);
                w.bytes(client);
                Ok(())
            }
            TXATTRWALK => {
                let id = r.u32()?;
                let new = r.u32()?;
                let name = r.bytes()?;
                let fid = self.fid(id)?;
                let value = get_xattr(fid.file.as_raw_fd(), name)?;
                let (file, rel, uid) = (dup(fid.file.as_raw_fd())?, fid.rel.clone(), fid.uid);
                w.u64(value.len() as u64);
                self.insert(new, file, rel, uid)?;
                self.fid_mut(new)?.xattr = Some(Xattr::Read(value));
                Ok(())
            }
            TXATTRCREATE => {
                let id = r.u32()?;
                let name = CString::new(r.bytes()?).map_err(|_| libc::EINVAL)?;
                let size = r.u64()?;
                let flags = r.u32()? as i32;
                if size > XATTR_MAX || name.as_bytes().is_empty() {
                    return Err(libc::E2BIG);
                }
                self.fid_mut(id)?.xattr = Some(Xattr::Write {
                    name,
                    size: size as usize,
                    flags: flags & (libc::XATTR_CREATE | libc::XATTR_REPLACE),
                    value: Vec::new(),
                });
                Ok(())
            }
            TCLUNK => {
                let fid = self.fids.remove(&r.u32()?).ok_or(libc::EBADF)?;
                if let Some(Xattr::Write {
                    name, flags, value, ..
                }) = &fid.xattr
                {
                    let path = proc_path(fid.file.as_raw_fd());
                    // SAFETY: setxattr of the file the fid holds.
                    check(unsafe {
                        libc::setxattr(
                            path.as_ptr(),
                            name.as_ptr(),
                            value.as_ptr().cast(),
                            value.len(),
                            *flags,
                        )
                    })?;
                }
                Ok(())
            }
            TREMOVE => {
                let fid = self.fids.remove(&r.u32()?).ok_or(libc::EBADF)?;
                let st = stat(fid.file.as_raw_fd())?;
                let (Some(parent), Some(name)) = (fid.rel.parent(), fid.rel.file_name()) else {
                    return Err(libc::EBUSY);
                };
                let dir = self.walk_names(parent)?;
                let name = CString::new(name.as_bytes()).map_err(|_| libc::EINVAL)?;
                let flags = if is_kind(&st, libc::S_IFDIR) {
                    libc::AT_REMOVEDIR
                } else {
                    0
                };
                // SAFETY: unlinkat under a directory we hold.
                check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })?;
                Ok(())
            }
            _ => Err(libc::EOPNOTSUPP),
        }
    }

    fn fid(&self, id: u32) -> std::result::Result<&Fid, Errno> {
        self.fids.get(&id).ok_or(libc::EBADF)
    }

    fn fid_mut(&mut self, id: u32) -> std::result::Result<&mut Fid, Errno> {
        self.fids.get_mut(&id).ok_or(libc::EBADF)
    }

    fn insert(&mut self, id: u32, file: OwnedFd, rel: PathBuf, uid: u32) -> Answer {
        if id == u32::MAX {
            return Err(libc::EINVAL);
        }
        self.fids.insert(
            id,
            Fid {
                file,
                rel,
                uid,
                open: None,
                xattr: None,
            },
        );
        Ok(())
    }

    fn qid(&mut self, st: &libc::stat) -> Qid {
        let next = self.devices.len() as u64;
        let device = *self.devices.entry(st.st_dev).or_insert(next);
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => QTDIR,
            libc::S_IFLNK => QTSYMLINK,
            _ => 0,
        };
        Qid {
            kind,
            path: (device << 48) ^ st.st_ino,
        }
    }

    /// The directory `rel` names from the top, one name at a time.
    fn walk_names(&self, rel: &Path) -> std::result::Result<OwnedFd, Errno> {
        let mut at = dup(self.top.as_raw_fd())?;
        for name in rel.iter() {
            let name = CString::new(name.as_bytes()).map_err(|_| libc::EINVAL)?;
            at = open_path(at.as_raw_fd(), &name)?;
        }
        Ok(at)
    }

    fn walk(&mut self, r: &mut Reader, w: &mut Writer) -> Answer {
        let id = r.u32()?;
        let new = r.u32()?;
        let count = r.u16()?;
        if count > 16 {
            return Err(libc::EINVAL);
        }
        let fid = self.fid(id)?;
        let uid = fid.uid;
        let mut at = dup(fid.file.as_raw_fd())?;
        let mut rel = fid.rel.clone();
        let mut qids = Vec::new();
        for i in 0..count {
            let name = r.bytes()?;
            let step = if name == b".." {
                rel.pop();
                self.walk_names(&rel)
            } else if name.is_empty() || name == b"." || name.contains(&b'/') || name.contains(&0) {
                Err(libc::EINVAL)
            } else {
                let name = CString::new(name).expect("no NUL");
                if !is_kind(&stat(at.as_raw_fd())?, libc::S_IFDIR) {
                    Err(libc::ENOTDIR)
                } else {
                    let file = open_path(at.as_raw_fd(), &name);
                    rel.push(OsStr::from_bytes(name.as_bytes()));
                    file
                }
            };
            match step {
                Ok(file) => {
                    let st = stat(file.as_raw_fd())?;
                    qids.push(self.qid(&st));
                    at = file;
                }
                Err(e) if i == 0 => return Err(e),
                Err(_) => break,
            }
        }
        if qids.len() == count as usize {
            if new != id && self.fids.contains_key(&new) {
                return Err(libc::EBADF);
            }
            self.insert(new, at, rel, uid)?;
        }
        w.u16(qids.len() as u16);
        for q in qids {
            w.qid(q);
        }
        Ok(())
    }

    fn setattr(&mut self, r: &mut Reader) -> Answer {
        const MODE: u32 = 0x1;
        const UID: u32 = 0x2;
        const GID: u32 = 0x4;
        const SIZE: u32 = 0x8;
        const ATIME: u32 = 0x10;
        const MTIME: u32 = 0x20;
        const ATIME_SET: u32 = 0x80;
        const MTIME_SET: u32 = 0x100;
        let fid = self.fid(r.u32()?)?;
        let valid = r.u32()?;
        let mode = r.u32()?;
        let uid = r.u32()?;
        let gid = r.u32()?;
        let size = r.u64()?;
        let atime = (r.u64()?, r.u64()?);
        let mtime = (r.u64()?, r.u64()?);
        let fd = fid.file.as_raw_fd();
        let st = stat(fd)?;
        let symlink = is_kind(&st, libc::S_IFLNK);
        let path = proc_path(fd);
        if valid & MODE != 0 && !symlink {
            // SAFETY: chmod of the file the fid holds.
            check(unsafe { libc::chmod(path.as_ptr(), mode & 0o7777) })?;
        }
        if valid & (UID | GID) != 0 {
            let uid = if valid & UID != 0 { uid } else { u32::MAX };
            let gid = if valid & GID != 0 { gid } else { u32::MAX };
            // SAFETY: fchownat of the fd itself.
            check(unsafe {
                libc::fchownat(
                    fd,
                    c"".as_ptr(),
                    uid,
                    gid,
                    libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
                )
            })?;
        }
        if valid & SIZE != 0 {
            if !is_kind(&st, libc::S_IFREG) {
                return Err(libc::EINVAL);
            }
            // SAFETY: truncate of the file the fid holds.
            check(unsafe { libc::truncate(path.as_ptr(), size as libc::off_t) })?;
        }
        if valid & (ATIME | MTIME) != 0 && !symlink {
            let time = |set: bool, given: bool, (sec, nsec): (u64, u64)| libc::timespec {
                tv_sec: if given { sec as libc::time_t } else { 0 },
                tv_nsec: match (set, given) {
                    (false, _) => libc::UTIME_OMIT,
                    (true, false) => libc::UTIME_NOW,
                    (true, true) => nsec as libc::c_long,
                },
            };
            let times = [
                time(valid & ATIME != 0, valid & ATIME_SET != 0, atime),
                time(valid & MTIME != 0, valid & MTIME_SET != 0, mtime),
            ];
            // SAFETY: utimensat of the file the fid holds.
            check(unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), times.as_ptr(), 0) })?;
        }
        Ok(())
    }

    fn readdir(&mut self, r: &mut Reader, w: &mut Writer) -> Answer {
        let id = r.u32()?;
        let offset = r.u64()?;
        let count = (r.u32()?).min(self.msize - 11) as usize;
        let fd = self.fid(id)?.open.as_ref().ok_or(libc::EBADF)?.as_raw_fd();
        // SAFETY: lseek of a directory we opened.
        check(unsafe { libc::lseek(fd, offset as libc::off_t, libc::SEEK_SET) })?;
        let at = w.out.len();
        w.u32(0);
        let mut used = 0usize;
        let mut buf = vec![0u8; count.max(512)];
        'fill: loop {
            // SAFETY: getdents64 into our buffer.
            let n = check(unsafe {
                libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len())
            })? as usize;
            if n == 0 {
                break;
            }
            let mut pos = 0;
            while pos < n {
                let ino = u64::from_ne_bytes(buf[pos..pos + 8].try_into().unwrap());
                let off = u64::from_ne_bytes(buf[pos + 8..pos + 16].try_into().unwrap());
                let reclen = u16::from_ne_bytes(buf[pos + 16..pos + 18].try_into().unwrap());
                let kind = buf[pos + 18];
                let name = &buf[pos + 19..pos + reclen as usize];
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                pos += reclen as usize;
                let size = 13 + 8 + 1 + 2 + name.len();
                if used + size > count {
                    break 'fill;
                }
                let qtype = match kind {
                    libc::DT_DIR => QTDIR,
                    libc::DT_LNK => QTSYMLINK,
                    _ => 0,
                };
                w.qid(Qid {
                    kind: qtype,
                    path: ino,
                });
                w.u64(off);
                w.u8(kind);
                w.bytes(name);
                used += size;
            }
            if used > 0 {
                // What the next call would read may not fit: the client
                // asks again from the last offset it was given.
                break;
            }
        }
        w.out[at..at + 4].copy_from_slice(&(used as u32).to_le_bytes());
        Ok(())
    }
}

fn dup(fd: RawFd) -> std::result::Result<OwnedFd, Errno> {
    // SAFETY: F_DUPFD_CLOEXEC of an fd we hold; the new one is ours.
    let new = check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// The open flags of a Tlopen or Tlcreate that keep their meaning on the
/// host (9P2000.L's are Linux's x86 ones).
fn open_flags(flags: u32) -> i32 {
    let keep = libc::O_ACCMODE
        | libc::O_TRUNC
        | libc::O_APPEND
        | libc::O_DSYNC
        | libc::O_SYNC
        | libc::O_DIRECTORY
        | libc::O_NONBLOCK;
    (flags as i32 & keep) | libc::O_CLOEXEC
}

/// Opens the file an `O_PATH` fd holds for I/O; never a device.
fn reopen(fd: RawFd, st: &libc::stat, flags: u32) -> std::result::Result<OwnedFd, Errno> {
    let flags = if is_kind(st, libc::S_IFDIR) {
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC
    } else if is_kind(st, libc::S_IFREG) {
        open_flags(flags) & !libc::O_DIRECTORY
    } else {
        return Err(libc::EPERM);
    };
    let path = proc_path(fd);
    // SAFETY: open through /proc of a file we hold; the fd is ours.
    let new = check(unsafe { libc::open(path.as_ptr(), flags) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Gives a new file to the client's user and group (and the mode the
/// client asked for, which the server's umask must not trim).
fn own(dir: RawFd, name: &CStr, uid: u32, gid: u32, mode: Option<u32>) -> Answer {
    // SAFETY: fchownat/fchmodat of a name under a directory we hold.
    check(unsafe { libc::fchownat(dir, name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })?;
    if let Some(mode) = mode {
        check(unsafe { libc::fchmodat(dir, name.as_ptr(), mode & 0o7777, 0) })?;
    }
    Ok(())
}

/// An xattr's value, or (for an empty name) the list of names.
fn get_xattr(fd: RawFd, name: &[u8]) -> std::result::Result<Vec<u8>, Errno> {
    let path = proc_path(fd);
    let name = if name.is_empty() {
        None
    } else {
        Some(CString::new(name).map_err(|_| libc::EINVAL)?)
    };
    let call = |buf: &mut [u8]| -> isize {
        // SAFETY: getxattr/listxattr into buf (or a size query).
        unsafe {
            match &name {
                Some(name) => libc::getxattr(
                    path.as_ptr(),
                    name.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                ),
                None => libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()),
            }
        }
    };
    let size = check(call(&mut []))? as usize;
    let mut value = vec![0u8; size.min(XATTR_MAX as usize)];
    let n = check(call(&mut value))? as usize;
    value.truncate(n);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// A client speaking to the server, one message at a time.
    struct Client {
        server: Server,
        tag: u16,
    }

    enum Arg<'a> {
        B(u8),
        W(u16),
        D(u32),
        Q(u64),
        S(&'a [u8]),
    }
    use Arg::*;

    impl Client {
        fn new(dir: &Path) -> Client {
            let mut client = Client {
                server: Server::new(dir).unwrap(),
                tag: 0,
            };
            let reply = client.ok(TVERSION, &[D(65536), S(b"9P2000.L")]);
            assert_eq!(&reply[4..], b"\x08\x009P2000.L");
            client.ok(TATTACH, &[D(0), D(u32::MAX), S(b"root"), S(b""), D(1000)]);
            client
        }

        /// The answer's body, or the errno.
        fn call(&mut self, kind: u8, args: &[Arg]) -> std::result::Result<Vec<u8>, i32> {
            let mut m = vec![0, 0, 0, 0, kind];
            self.tag += 1;
            m.extend_from_slice(&self.tag.to_le_bytes());
            for a in args {
                match a {
                    B(v) => m.push(*v),
                    W(v) => m.extend_from_slice(&v.to_le_bytes()),
                    D(v) => m.extend_from_slice(&v.to_le_bytes()),
                    Q(v) => m.extend_from_slice(&v.to_le_bytes()),
                    S(v) => {
                        m.extend_from_slice(&(v.len() as u16).to_le_bytes());
                        m.extend_from_slice(v);
                    }
                }
            }
            let size = m.len() as u32;
            m[..4].copy_from_slice(&size.to_le_bytes());
            let mut reply = Vec::new();
            self.server.handle(&m, &mut reply);
            assert_eq!(
                u32::from_le_bytes(reply[..4].try_into().unwrap()) as usize,
                reply.len()
            );
            assert_eq!(&reply[5..7], &self.tag.to_le_bytes());
            if reply[4] == TLERROR + 1 {
                return Err(i32::from_le_bytes(reply[7..11].try_into().unwrap()));
            }
            assert_eq!(reply[4], kind + 1);
            Ok(reply[7..].to_vec())
        }

        fn ok(&mut self, kind: u8, args: &[Arg]) -> Vec<u8> {
            self.call(kind, args).unwrap()
        }

        fn walk(&mut self, fid: u32, new: u32, names: &[&[u8]]) -> std::result::Result<u16, i32> {
            let mut args = vec![D(fid), D(new), W(names.len() as u16)];
            args.extend(names.iter().map(|n| S(n)));
            let reply = self.call(TWALK, &args)?;
            Ok(u16::from_le_bytes([reply[0], reply[1]]))
        }

        fn read_all(&mut self, fid: u32) -> Vec<u8> {
            self.ok(TLOPEN, &[D(fid), D(0)]);
            let reply = self.ok(TREAD, &[D(fid), Q(0), D(4096)]);
            reply[4..].to_vec()
        }

        fn names(&mut self, fid: u32, count: u32) -> Vec<String> {
            self.ok(TLOPEN, &[D(fid), D(libc::O_DIRECTORY as u32)]);
            let mut names = Vec::new();
            let mut offset = 0u64;
            loop {
                let reply = self.ok(TREADDIR, &[D(fid), Q(offset), D(count)]);
                let n = u32::from_le_bytes(reply[..4].try_into().unwrap()) as usize;
                if n == 0 {
                    break;
                }
                let mut at = 4;
                while at < 4 + n {
                    offset = u64::from_le_bytes(reply[at + 13..at + 21].try_into().unwrap());
                    let len = u16::from_le_bytes([reply[at + 22], reply[at + 23]]) as usize;
                    names.push(String::from_utf8_lossy(&reply[at + 24..at + 24 + len]).into());
                    at += 24 + len;
                }
            }
            names.sort();
            names
        }
    }

    fn share() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/hostname"), "guest\n").unwrap();
        dir
    }

    #[test]
    fn a_client_reads_a_file_it_walked_to() {
        let dir = share();
        let mut c = Client::new(dir.path());
        assert_eq!(c.walk(0, 1, &[b"etc", b"hostname"]), Ok(2));
        assert_eq!(c.read_all(1), b"guest\n");
        let attr = c.ok(TGETATTR, &[D(1), Q(GETATTR_BASIC)]);
        let size = u64::from_le_bytes(attr[8 + 13 + 12 + 16..8 + 13 + 12 + 24].try_into().unwrap());
        assert_eq!(size, 6);
        // A partial walk answers with the qids it found and makes no fid.
        assert_eq!(c.walk(0, 2, &[b"etc", b"missing"]), Ok(1));
        assert_eq!(
            c.call(TGETATTR, &[D(2), Q(GETATTR_BASIC)]),
            Err(libc::EBADF)
        );
        assert_eq!(c.walk(0, 2, &[b"missing"]), Err(libc::ENOENT));
    }

    #[test]
    fn nothing_outside_the_share_is_reached() {
        let dir = share();
        std::os::unix::fs::symlink("/etc", dir.path().join("escape")).unwrap();
        std::os::unix::fs::symlink("../../../..", dir.path().join("up")).unwrap();
        let mut c = Client::new(dir.path());
        // Through a link: the link itself, never its target (the walk
        // stops at the link and makes no fid).
        assert_eq!(c.walk(0, 1, &[b"escape", b"passwd"]), Ok(1));
        assert_eq!(c.walk(0, 1, &[b"up", b"etc"]), Ok(1));
        assert_eq!(
            c.call(TGETATTR, &[D(1), Q(GETATTR_BASIC)]),
            Err(libc::EBADF)
        );
        assert_eq!(c.walk(0, 1, &[b"escape"]), Ok(1));
        let target = c.ok(TREADLINK, &[D(1)]);
        assert_eq!(&target[2..], b"/etc");
        assert_eq!(c.call(TLOPEN, &[D(1), D(0)]), Err(libc::EPERM));
        // `..` above the top is the top.
        assert_eq!(c.walk(0, 2, &[b"..", b"..", b"etc", b"hostname"]), Ok(4));
        assert_eq!(c.read_all(2), b"guest\n");
        // Names with a slash, and creating through a link, are refused.
        assert_eq!(c.walk(0, 3, &[b"etc/hostname"]), Err(libc::EINVAL));
        assert_eq!(
            c.call(TLCREATE, &[D(1), S(b"x"), D(2), D(0o644), D(0)]),
            Err(libc::ENOTDIR)
        );
        // Host devices: never opened, and none made.
        assert_eq!(
            c.call(
                TMKNOD,
                &[D(0), S(b"sda"), D(libc::S_IFBLK | 0o600), D(8), D(0), D(0)]
            ),
            Err(libc::EPERM)
        );
        assert!(!dir.path().join("sda").exists());
        // SAFETY: mknod of /dev/null's numbers in our temp dir.
        let null = CString::new(dir.path().join("null").as_os_str().as_bytes()).unwrap();
        assert_eq!(
            unsafe { libc::mknod(null.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) },
            0
        );
        assert_eq!(c.walk(0, 4, &[b"null"]), Ok(1));
        assert_eq!(c.call(TLOPEN, &[D(4), D(2)]), Err(libc::EPERM));
        // The 0:0 character device overlayfs uses for deletions is made.
        c.ok(
            TMKNOD,
            &[D(0), S(b"gone"), D(libc::S_IFCHR), D(0), D(0), D(0)],
        );
    }

    #[test]
    fn files_made_by_the_client_belong_to_its_user_with_its_mode() {
        let dir = share();
        let mut c = Client::new(dir.path());
        c.walk(0, 1, &[b"etc"]).unwrap();
        c.ok(TLCREATE, &[D(1), S(b"new"), D(2), D(0o640), D(1001)]);
        let reply = c.ok(
            TWRITE,
            &[
                D(1),
                Q(0),
                D(5),
                B(b'h'),
                B(b'e'),
                B(b'l'),
                B(b'l'),
                B(b'o'),
            ],
        );
        assert_eq!(reply, 5u32.to_le_bytes());
        let meta = std::fs::metadata(dir.path().join("etc/new")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1000, 1001));
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
        assert_eq!(std::fs::read(dir.path().join("etc/new")).unwrap(), b"hello");
        // A directory with the sticky bit (the server's umask trims nothing).
        c.ok(TMKDIR, &[D(0), S(b"tmp"), D(0o1777), D(0)]);
        let meta = std::fs::metadata(dir.path().join("tmp")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o1777);
        c.ok(TSYMLINK, &[D(0), S(b"link"), S(b"etc/new"), D(0)]);
        assert_eq!(
            std::fs::read_link(dir.path().join("link")).unwrap(),
            Path::new("etc/new")
        );
        c.walk(0, 2, &[b"etc"]).unwrap();
        c.walk(0, 3, &[b"etc", b"new"]).unwrap();
        c.ok(TLINK, &[D(0), D(3), S(b"hard")]);
        assert_eq!(std::fs::read(dir.path().join("hard")).unwrap(), b"hello");
        c.ok(TRENAMEAT, &[D(2), S(b"hostname"), D(0), S(b"moved")]);
        assert!(dir.path().join("moved").exists());
        c.ok(TUNLINKAT, &[D(0), S(b"tmp"), D(libc::AT_REMOVEDIR as u32)]);
        assert!(!dir.path().join("tmp").exists());
        // Size, mode and times.
        let valid = 0x1 | 0x8 | 0x20 | 0x100;
        c.ok(
            TSETATTR,
            &[
                D(3),
                D(valid),
                D(0o600),
                D(0),
                D(0),
                Q(2),
                Q(0),
                Q(0),
                Q(1_000_000),
                Q(0),
            ],
        );
        let meta = std::fs::metadata(dir.path().join("etc/new")).unwrap();
        assert_eq!(
            (meta.len(), meta.mode() & 0o7777, meta.mtime()),
            (2, 0o600, 1_000_000)
        );
    }

    #[test]
    fn a_directory_is_listed_whole_in_small_pieces() {
        let dir = share();
        let mut expected = vec![".".to_string(), "..".to_string(), "etc".to_string()];
        for i in 0..200 {
            let name = format!("file-with-a-longish-name-{i:03}");
            std::fs::write(dir.path().join(&name), "").unwrap();
            expected.push(name);
        }
        expected.sort();
        let mut c = Client::new(dir.path());
        c.walk(0, 1, &[]).unwrap();
        assert_eq!(c.names(1, 300), expected);
        c.walk(0, 2, &[]).unwrap();
        assert_eq!(c.names(2, 8192), expected);
    }

    #[test]
    fn extended_attributes_are_written_and_read() {
        let dir = share();
        let mut c = Client::new(dir.path());
        c.walk(0, 1, &[b"etc", b"hostname"]).unwrap();
        c.walk(0, 2, &[b"etc", b"hostname"]).unwrap();
        c.ok(TXATTRCREATE, &[D(2), S(b"user.keel"), Q(3), D(0)]);
        c.ok(TWRITE, &[D(2), Q(0), D(3), B(b'y'), B(b'e'), B(b's')]);
        match c.call(TCLUNK, &[D(2)]) {
            Err(libc::EOPNOTSUPP) => return, // a file system without user xattrs
            other => assert!(other.is_ok(), "{other:?}"),
        }
        let size = c.ok(TXATTRWALK, &[D(1), D(3), S(b"user.keel")]);
        assert_eq!(size, 3u64.to_le_bytes());
        let value = c.ok(TREAD, &[D(3), Q(0), D(100)]);
        assert_eq!(&value[4..], b"yes");
        assert_eq!(
            c.call(TXATTRWALK, &[D(1), D(4), S(b"user.none")]),
            Err(libc::ENODATA)
        );
    }

    #[test]
    fn garbage_gets_an_error_not_a_panic() {
        let dir = share();
        let mut server = Server::new(dir.path()).unwrap();
        let mut reply = Vec::new();
        for message in [
            &b""[..],
            b"\x07\0\0\0\x6e\x01\0",
            b"\x0b\0\0\0\x18\x01\0\x05\0\0\0",
            b"\x09\0\0\0\x6e\x01\0\xff\xff",
        ] {
            server.handle(message, &mut reply);
            assert_eq!(reply[4], TLERROR + 1, "{message:?}");
        }
        // Over a stream: a message too big for the server ends the session.
        let mut stream = std::io::Cursor::new(b"\xff\xff\xff\xff".to_vec());
        struct Both<'a>(&'a mut std::io::Cursor<Vec<u8>>, Vec<u8>);
        impl Read for Both<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                self.0.read(buf)
            }
        }
        impl Write for Both<'_> {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.1.write(buf)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        assert!(server.serve_stream(Both(&mut stream, Vec::new())).is_err());
    }
}
