//! The daemon's private runtime directory: where the one-daemon-per-image lock and the
//! statistics socket live, out of every other user's reach (docs/security.md).
//!
//! Both used to live where any local user could take them first: the lock was an flock on the
//! image itself (a read descriptor was enough to hold it, and root's mount then waited and
//! failed), the socket an abstract name anyone could bind (root's mount then failed, or a
//! user answered `ticketfs stats` in the daemon's place, or sent it `stop`). Here they are
//! files in a directory only their owner may enter: `/run/ticketfs` for root (0700, owned by
//! root), `$XDG_RUNTIME_DIR/ticketfs` (or `/run/user/UID/ticketfs`, or one in /tmp that another
//! user cannot take first: `tmp_dir`) for anyone else; the directory is refused unless it is a
//! real directory, owned by the caller, closed to everyone else.

use crate::image::{identity, ImageId};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Root's runtime directory for ticketfs.
pub(crate) const ROOT_DIR: &str = "/run/ticketfs";

fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// Where a user's runtime directory goes when XDG_RUNTIME_DIR is unset and the system has no
/// /run/user/UID of theirs: a world-writable directory, so a name there may be taken by another
/// user first (`tmp_dir`).
const SHARED_TMP: &str = "/tmp";
/// The directory systemd-logind makes for each logged-in user (0700, theirs).
const RUN_USER: &str = "/run/user";

/// The caller's runtime directory, made if missing and checked: a directory (not a symlink),
/// owned by the caller, with no access for group or others. Root's is `/run/ticketfs`; another
/// user's `$XDG_RUNTIME_DIR/ticketfs`, else `/run/user/UID/ticketfs` when that directory is
/// theirs, else one in /tmp (`tmp_dir`).
pub(crate) fn dir() -> io::Result<PathBuf> {
    let uid = euid();
    let d = if uid == 0 {
        PathBuf::from(ROOT_DIR)
    } else if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|x| !x.is_empty()) {
        PathBuf::from(x).join("ticketfs")
    } else if private_to(Path::new(RUN_USER).join(uid.to_string()), uid) {
        Path::new(RUN_USER).join(uid.to_string()).join("ticketfs")
    } else {
        return tmp_dir(uid);
    };
    match std::fs::DirBuilder::new().mode(0o700).create(&d) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", d.display()))),
    }
    let m = std::fs::symlink_metadata(&d)?;
    if !private_to(&d, uid) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{}: not a directory of uid {uid} closed to everyone else (mode {:o}, owner {}): refused",
                d.display(),
                m.mode() & 0o7777,
                m.uid()
            ),
        ));
    }
    Ok(d)
}

/// Is `d` a directory (not a symlink) owned by `uid` and closed to everyone else?
fn private_to(d: impl AsRef<Path>, uid: u32) -> bool {
    std::fs::symlink_metadata(d)
        .is_ok_and(|m| m.file_type().is_dir() && m.uid() == uid && m.mode() & 0o077 == 0)
}

/// The runtime directory of `uid` in /tmp: `ticketfs-UID`, or, when another user took that
/// name first (anyone may create names in /tmp, and the owner cannot remove them), a
/// `ticketfs-UID.XXXXXX` of its own. Every process of the user must find the same one: the
/// first in name order of those that are theirs and private, so that two made at once by two
/// processes resolve to one.
fn tmp_dir(uid: u32) -> io::Result<PathBuf> {
    let base = format!("ticketfs-{uid}");
    let own = || -> Option<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(SHARED_TMP)
            .ok()?
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                let ours = name == base || name.strip_prefix(&base)?.starts_with('.');
                let p = Path::new(SHARED_TMP).join(&name);
                (ours && private_to(&p, uid)).then_some(p)
            })
            .collect();
        found.sort();
        found.into_iter().next()
    };
    if let Some(d) = own() {
        return Ok(d);
    }
    let plain = Path::new(SHARED_TMP).join(&base);
    match std::fs::DirBuilder::new().mode(0o700).create(&plain) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => make_unique(&plain)?,
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("{}: {e}", plain.display()),
            ))
        }
    }
    own().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{}: no directory of uid {uid} closed to everyone else",
                plain.display()
            ),
        )
    })
}

/// Makes a new private directory named `base` with a unique suffix (mkdtemp(3)).
fn make_unique(base: &Path) -> io::Result<()> {
    let template = format!("{}.XXXXXX", base.display());
    let mut bytes = std::ffi::CString::new(template)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))?
        .into_bytes_with_nul();
    // SAFETY: mkdtemp rewrites the XXXXXX of the NUL-terminated template in place.
    if unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) }.is_null() {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{}: {e}", base.display())));
    }
    Ok(())
}

/// A name for the image at `path` that every name of it shares (its identity).
pub(crate) fn image_key(path: &Path) -> io::Result<String> {
    Ok(match identity(path)? {
        ImageId::Block(rdev) => format!("blk-{}-{}", libc::major(rdev), libc::minor(rdev)),
        ImageId::File { dev, ino } => format!("file-{dev:x}-{ino}"),
    })
}

/// The lock file of the image at `path`.
pub(crate) fn lock_path(path: &Path) -> io::Result<PathBuf> {
    Ok(dir()?.join(format!("{}.lock", image_key(path)?)))
}

/// The statistics socket of the daemon serving the image at `path`.
pub fn socket_path(path: &Path) -> io::Result<PathBuf> {
    Ok(dir()?.join(format!("{}.sock", image_key(path)?)))
}

/// The one-daemon-per-image lock, held while it lives (an exclusive flock on its lock file):
/// the mount daemon holds it for the life of the mount, mkfs and fsck while they work.
pub struct ImageLock {
    _file: File,
}

/// Takes the image's lock without waiting: Err(None) when someone holds it, Err(Some(e)) when
/// the lock cannot be made (the runtime directory refused, the image missing).
pub fn try_lock(path: &Path) -> Result<ImageLock, Option<io::Error>> {
    let lock = lock_path(path).map_err(Some)?;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&lock)
        .map_err(|e| Some(io::Error::new(e.kind(), format!("{}: {e}", lock.display()))))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(None);
    }
    Ok(ImageLock { _file: f })
}

/// The credentials of the other end of a Unix socket: (pid, uid).
pub(crate) fn peer(fd: &impl AsRawFd) -> io::Result<(i32, u32)> {
    let mut c = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED fills a struct ucred of the length given.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut c as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((c.pid, c.uid))
}

/// May a process of `uid` talk to a ticketfs daemon of this user (root, or the same user)?
pub(crate) fn trusted_uid(uid: u32) -> bool {
    uid == 0 || uid == euid()
}
