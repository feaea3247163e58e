//! Mounting through the kernel: `/dev/fuse`, the loop device a `fuseblk` mount of an image file
//! stands on, mount(2) and umount2(2).
//!
//! Two kinds of FUSE mount (see "Mount, remount, unmount" in docs/design.md):
//! - `fuseblk` (the default for root): the source is a block device, the image's own or a loop
//!   device over the image file. The kernel sends DESTROY while unmounting and waits for its
//!   answer, so umount(2) returns only once the daemon has written everything home and released
//!   the image. The kernel holds the block device exclusively while mounted.
//! - `fuse`: the source is only a name (the image's path). The kernel sends no DESTROY:
//!   umount(2) returns at once and the daemon finishes on its own (fstests needs this type).

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// `/dev/loop-control`'s LOOP_CTL_GET_FREE, and a loop device's LOOP_CONFIGURE.
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
/// `lo_flags`: detach when the last user (the mount) lets go.
const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// Bytes of `struct loop_config` and the offsets of the fields set here.
const LOOP_CONFIG_BYTES: usize = 304;
const LOOP_CONFIG_FLAGS_AT: usize = 8 + 52;
const LOOP_CONFIG_NAME_AT: usize = 8 + 56;
const LO_NAME_SIZE: usize = 64;
/// A free loop device can be taken by someone else between asking for it and configuring it:
/// this many tries.
const LOOP_TRIES: usize = 8;

/// What a mount is: its source, where it goes, and its options.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// The source /proc/mounts shows: the image's path (`fuse`), or the block device
    /// (`fuseblk`).
    pub(crate) source: PathBuf,
    pub(crate) point: PathBuf,
    /// `fuseblk` (the source is a block device) rather than `fuse`.
    pub(crate) blkdev: bool,
    pub(crate) read_only: bool,
    pub(crate) allow_other: bool,
    pub(crate) default_permissions: bool,
    /// MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_SYNCHRONOUS, MS_DIRSYNC as asked.
    pub(crate) ms_flags: libc::c_ulong,
    /// The largest read the kernel may send (the daemon's request buffer holds that much).
    pub(crate) max_read: u32,
}

/// A new FUSE connection.
pub(crate) fn open_dev_fuse() -> io::Result<OwnedFd> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/fuse")
        .map_err(|e| io::Error::new(e.kind(), format!("/dev/fuse: {e}")))?;
    Ok(f.into())
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path with a NUL byte"))
}

/// The kernel's options for the connection `dev`.
fn options(spec: &Spec, dev: &OwnedFd) -> String {
    // SAFETY: getuid and getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut o = format!(
        "fd={},rootmode=40000,user_id={uid},group_id={gid},max_read={}",
        dev.as_raw_fd(),
        spec.max_read
    );
    if spec.allow_other {
        o.push_str(",allow_other");
    }
    if spec.default_permissions {
        o.push_str(",default_permissions");
    }
    if spec.blkdev {
        // /proc/mounts then says `fuseblk.ticketfs`: no other fuseblk filesystem is taken
        // for this one. (A `fuse` mount keeps the bare type, which fstests looks for.)
        o.push_str(",subtype=ticketfs");
    }
    o
}

/// Mounts the connection `dev` as `spec` says.
pub(crate) fn mount(spec: &Spec, dev: &OwnedFd) -> io::Result<()> {
    let src = cstr(&spec.source)?;
    let dst = cstr(&spec.point)?;
    let fstype: &std::ffi::CStr = if spec.blkdev { c"fuseblk" } else { c"fuse" };
    let data = CString::new(options(spec, dev)).map_err(|_| io::Error::other("options"))?;
    let flags = spec.ms_flags | if spec.read_only { libc::MS_RDONLY } else { 0 };
    // SAFETY: NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Mounts through `fusermount3` (Debian's fuse3), the set-user-ID helper through which a user
/// other than root mounts FUSE: it opens `/dev/fuse`, mounts (type `fuse`, with nosuid and
/// nodev) and hands the connection back over a socket (libfuse's protocol: the socket's number
/// in `_FUSE_COMMFD`, the descriptor in an SCM_RIGHTS message).
pub(crate) fn mount_fusermount(spec: &Spec) -> io::Result<OwnedFd> {
    let mut fds = [0; 2];
    // SAFETY: socketpair fills two descriptors we then own.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are fresh and ours; ours is close-on-exec, the helper's end is inherited.
    let (theirs, ours) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    unsafe { libc::fcntl(ours.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    let mut opts = vec![
        if spec.read_only { "ro" } else { "rw" }.to_string(),
        "nosuid".to_string(),
        "nodev".to_string(),
        format!("fsname={}", spec.source.display()),
        format!("max_read={}", spec.max_read),
    ];
    if spec.allow_other {
        opts.push("allow_other".into());
    }
    if spec.default_permissions {
        opts.push("default_permissions".into());
    }
    if spec.ms_flags & libc::MS_NOEXEC != 0 {
        opts.push("noexec".into());
    }
    let status = std::process::Command::new("fusermount3")
        .arg("-o")
        .arg(opts.join(","))
        .arg("--")
        .arg(&spec.point)
        .env("_FUSE_COMMFD", theirs.as_raw_fd().to_string())
        .stdin(std::process::Stdio::null())
        .status()
        .map_err(|e| {
            io::Error::new(e.kind(), format!("fusermount3: {e} (Debian package fuse3)"))
        })?;
    drop(theirs);
    if !status.success() {
        return Err(io::Error::other(format!("fusermount3 failed ({status})")));
    }
    receive_fd(&ours)
}

/// One descriptor sent over `sock` in an SCM_RIGHTS message.
fn receive_fd(sock: &OwnedFd) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // Room for one descriptor's control message, aligned as cmsghdr wants.
    let mut space = [0u64; 8];
    // SAFETY: a zeroed msghdr pointing at our iovec and control buffer.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    msg.msg_controllen =
        unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    // SAFETY: recvmsg fills the buffers msg names, all ours and live.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the control buffer holds what recvmsg wrote; CMSG_FIRSTHDR checks its length.
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    if cmsg.is_null() {
        return Err(io::Error::other("fusermount3 sent no descriptor"));
    }
    // SAFETY: cmsg points into our control buffer, checked non-null above.
    let (level, kind) = unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type) };
    if level != libc::SOL_SOCKET || kind != libc::SCM_RIGHTS {
        return Err(io::Error::other(
            "fusermount3 sent something else than a descriptor",
        ));
    }
    // SAFETY: an SCM_RIGHTS message's data is the descriptor, which is now ours.
    let fd = unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::c_int) };
    // SAFETY: a descriptor the kernel just installed for us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Unmounts `point` (what SIGTERM to the daemon does).
pub(crate) fn umount(point: &Path) -> io::Result<()> {
    let p = cstr(point)?;
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::umount2(p.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EPERM) {
        return Err(e);
    }
    // Not root: the helper that mounted it unmounts it.
    let st = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg(point)
        .status()?;
    if st.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("fusermount3 -u failed ({st})")))
    }
}

/// Is `path` a block device?
pub(crate) fn is_block_device(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

/// A loop device attached to an image file; detached by the kernel once the last user lets go
/// (LO_FLAGS_AUTOCLEAR): the mount, or, should the mount fail, the descriptor held here.
pub(crate) struct LoopDevice {
    pub(crate) path: PathBuf,
    /// Held until the mount stands, so the device is not detached before it is used.
    _fd: File,
}

/// Attaches a loop device over `image`. Read-write even for a read-only mount: the kernel
/// never does I/O through it (the daemon reads and writes the image), but it refuses to remount
/// read-write a filesystem whose block device is read-only.
pub(crate) fn attach_loop(image: &Path) -> io::Result<LoopDevice> {
    let backing = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(image)?;
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/loop-control")?;
    let mut last = io::Error::other("no loop device");
    for _ in 0..LOOP_TRIES {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        // Someone else may take the device, or it may go away, between the two steps: try
        // another.
        let dev = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(d) => d,
            Err(e) => {
                last = io::Error::new(e.kind(), format!("{}: {e}", path.display()));
                continue;
            }
        };
        let mut cfg = [0u8; LOOP_CONFIG_BYTES];
        cfg[0..4].copy_from_slice(&(backing.as_raw_fd() as u32).to_ne_bytes());
        let flags = LO_FLAGS_AUTOCLEAR;
        cfg[LOOP_CONFIG_FLAGS_AT..LOOP_CONFIG_FLAGS_AT + 4].copy_from_slice(&flags.to_ne_bytes());
        let name = image.as_os_str().as_bytes();
        let k = name.len().min(LO_NAME_SIZE - 1);
        cfg[LOOP_CONFIG_NAME_AT..LOOP_CONFIG_NAME_AT + k].copy_from_slice(&name[..k]);
        // SAFETY: LOOP_CONFIGURE reads a struct loop_config, which `cfg` holds.
        if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, cfg.as_ptr()) } == 0 {
            return Ok(LoopDevice { path, _fd: dev });
        }
        last = io::Error::last_os_error();
        if last.raw_os_error() != Some(libc::EBUSY) {
            break;
        }
    }
    Err(last)
}
