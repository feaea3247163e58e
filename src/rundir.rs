//! The daemon's private runtime directory: where the one-daemon-per-image lock and the
//! statistics socket live, out of every other user's reach (docs/security.md).
//!
//! Both used to live where any local user could take them first: the lock was an flock on the
//! image itself (a read descriptor was enough to hold it, and root's mount then waited and
//! failed), the socket an abstract name anyone could bind (root's mount then failed, or a
//! user answered `ticketfs stats` in the daemon's place, or sent it `stop`). Here they are
//! files in a directory only their owner may enter: `/run/ticketfs` for root (0700, owned by
//! root), `$XDG_RUNTIME_DIR/ticketfs` (or `/run/user/UID/ticketfs`, or one in /tmp that every
//! process of the user finds alike, whatever names another user took first: `tmp_dir`) for
//! anyone else; the directory is refused unless it is a
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
        return tmp_dir(Path::new(SHARED_TMP), uid);
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

/// Names `tmp_dir` tries in /tmp: `ticketfs-UID`, then `ticketfs-UID.1` and on. Another user can
/// take every one of them first (anyone may create names in /tmp, and the owner cannot remove
/// them): the user is then told to set XDG_RUNTIME_DIR, rather than given a name no other
/// process of theirs would find.
const TMP_NAMES_MAX: u32 = 1024;

/// The runtime directory of `uid` in `shared` (/tmp): the first of `ticketfs-UID`,
/// `ticketfs-UID.1`, ... that is theirs and private, made if none is. Every process of the user
/// walks the same names in the same order, so they all find the same one: one already made
/// (a squatter's name removed later does not move them), else the first they can make, which
/// two making at once agree on (the second finds the first's). Random names (mkdtemp) let two
/// processes that raced pick two directories, and so two daemons of one image two locks.
fn tmp_dir(shared: &Path, uid: u32) -> io::Result<PathBuf> {
    let name = |k: u32| match k {
        0 => shared.join(format!("ticketfs-{uid}")),
        k => shared.join(format!("ticketfs-{uid}.{k}")),
    };
    if let Some(d) = (0..TMP_NAMES_MAX).map(name).find(|d| private_to(d, uid)) {
        return Ok(d);
    }
    for d in (0..TMP_NAMES_MAX).map(name) {
        match std::fs::DirBuilder::new().mode(0o700).create(&d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", d.display()))),
        }
        if private_to(&d, uid) {
            return Ok(d);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "{} to {}: all taken by other users; set XDG_RUNTIME_DIR to a directory of yours",
            name(0).display(),
            name(TMP_NAMES_MAX - 1).display()
        ),
    ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Processes of one user that look for their /tmp runtime directory at once, its plain name
    /// taken by another user, all find the same one: each daemon's lock of an image must be in
    /// the one directory every other process of the user looks in.
    #[test]
    fn processes_of_one_user_racing_for_a_squatted_name_agree() {
        // SAFETY: geteuid cannot fail.
        let me = unsafe { libc::geteuid() };
        for round in 0..200 {
            let shared = tempfile::tempdir().unwrap();
            let squatted = shared.path().join(format!("ticketfs-{me}"));
            std::fs::create_dir(&squatted).unwrap();
            // Another user's: owned by nobody when the test may chown, else open to all (which
            // is not private either).
            let _ = std::os::unix::fs::chown(&squatted, Some(65534), Some(65534));
            std::fs::set_permissions(&squatted, std::fs::Permissions::from_mode(0o777)).unwrap();
            let barrier = std::sync::Barrier::new(4);
            let got: Vec<PathBuf> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..4)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            tmp_dir(shared.path(), me).unwrap()
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert!(
                got.iter().all(|g| *g == got[0] && *g != squatted),
                "round {round}: {got:?}"
            );
            // And the next look agrees too.
            assert_eq!(tmp_dir(shared.path(), me).unwrap(), got[0], "round {round}");
        }
    }
}
