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
use std::os::fd::{AsRawFd, OwnedFd};
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
pub struct Spec {
    /// The source /proc/mounts shows: the image's path (`fuse`), or the block device
    /// (`fuseblk`).
    pub source: PathBuf,
    pub point: PathBuf,
    /// `fuseblk` (the source is a block device) rather than `fuse`.
    pub blkdev: bool,
    pub read_only: bool,
    pub allow_other: bool,
    pub default_permissions: bool,
    /// MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_SYNCHRONOUS, MS_DIRSYNC as asked.
    pub ms_flags: libc::c_ulong,
    /// The largest read the kernel may send (the daemon's request buffer holds that much).
    pub max_read: u32,
}

/// A new FUSE connection.
pub fn open_dev_fuse() -> io::Result<OwnedFd> {
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
pub fn mount(spec: &Spec, dev: &OwnedFd) -> io::Result<()> {
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

/// Unmounts `point` (what SIGTERM to the daemon does).
pub fn umount(point: &Path) -> io::Result<()> {
    let p = cstr(point)?;
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::umount2(p.as_ptr(), 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Is `path` a block device?
pub fn is_block_device(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

/// A loop device attached to an image file; detached by the kernel once the last user lets go
/// (LO_FLAGS_AUTOCLEAR): the mount, or, should the mount fail, the descriptor held here.
pub struct LoopDevice {
    pub path: PathBuf,
    /// Held until the mount stands, so the device is not detached before it is used.
    _fd: File,
}

/// Attaches a loop device over `image`. Read-write even for a read-only mount: the kernel
/// never does I/O through it (the daemon reads and writes the image), but it refuses to remount
/// read-write a filesystem whose block device is read-only.
pub fn attach_loop(image: &Path) -> io::Result<LoopDevice> {
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

/// The file a loop device is attached to, if `dev` is one (`/sys/block/loopN/loop/backing_file`).
pub fn loop_backing_file(dev: &Path) -> Option<PathBuf> {
    let name = dev.file_name()?.to_str()?;
    if !name.starts_with("loop") {
        return None;
    }
    let s = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    let s = s.trim_end_matches('\n');
    Some(PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(s)))
}
