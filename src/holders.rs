//! Who else is using a file, as /proc shows it: the processes holding a flock on it
//! (`/proc/locks`) and the ticketfs daemons that have it open (`/proc/PID/fd`). mkfs, fsck and
//! the daemon ask this when an image's lock is refused, to tell a real user of the image (a
//! mount, a running mkfs or fsck: root's or the image owner's) from a process of someone who
//! can merely read the file: anyone who can open a file can flock it, and must not keep its
//! owner or root from it (e2fsck and mke2fs ignore such a holder altogether).

use std::path::Path;

/// The main thread's name of the mount daemon (the `ticketfs` binary: `/proc/PID/comm`).
const DAEMON_COMM: &str = "ticketfs";

/// A process using the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// Its real user ID: who runs it (a set-user-ID program a user starts, `su` waiting for a
    /// password, stays theirs).
    pub uid: u32,
    /// Its name (`/proc/PID/comm`).
    pub comm: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "process {} ({}, uid {})", self.pid, self.comm, self.uid)
    }
}

/// Does a use by `h` count against the owner `owner` of the file? Root's and the owner's do;
/// another user's is someone who can read the file, not a mount of it (the daemon serves only
/// an image its user owns, or root).
pub fn counts(h: &Holder, owner: u32) -> bool {
    h.uid == 0 || h.uid == owner
}

/// The process `pid` as /proc shows it; None once it has gone.
fn holder(pid: u32) -> Option<Holder> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    // "Uid:\treal\teffective\tsaved\tfs"
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(Holder {
        pid,
        uid,
        comm: comm.trim_end().to_string(),
    })
}

/// The takers of a flock of `/proc/locks` (`text`) on the file of device `dev`, inode `ino`:
/// their PIDs. Lines of waiters (`->`) hold nothing; POSIX and OFD locks never conflict with a
/// flock.
fn lock_pids(text: &str, dev: u64, ino: u64) -> Vec<u32> {
    // "1: FLOCK  ADVISORY  WRITE 1234 fe:00:10010990 0 EOF": the device's major and minor in hex.
    let want = format!("{:02x}:{:02x}:{ino}", libc::major(dev), libc::minor(dev));
    let mut pids: Vec<u32> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 6 || f[1] != "FLOCK" || f[5] != want {
                return None;
            }
            f[4].parse().ok()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// The processes other than this one holding a flock on the file of device `dev`, inode `ino`:
/// first those with a descriptor of it whose `/proc/PID/fdinfo` shows the lock (who holds it
/// now, whatever process took it; root sees every process's), else the takers `/proc/locks`
/// names that are still alive (it names the file by its superblock's device, which is not
/// always the one stat gives: btrfs). Empty when neither shows one.
pub fn lock_holders(dev: u64, ino: u64) -> Vec<Holder> {
    let me = std::process::id();
    let mut found: Vec<Holder> = pids()
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            fds_of(pid, dev, ino)
                .iter()
                .any(|fd| fd_holds_flock(pid, fd))
        })
        .filter_map(holder)
        .collect();
    if found.is_empty() {
        let text = std::fs::read_to_string("/proc/locks").unwrap_or_default();
        found = lock_pids(&text, dev, ino)
            .into_iter()
            .filter(|&p| p != me)
            .filter_map(holder)
            .collect();
    }
    found
}

/// Every process's PID.
fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
}

/// The descriptors of process `pid` open on the file of device `dev`, inode `ino` (none when
/// its /proc/PID/fd cannot be read: another user's, for anyone but root).
fn fds_of(pid: u32, dev: u64, ino: u64) -> Vec<std::ffi::OsString> {
    let dir = format!("/proc/{pid}/fd");
    let Ok(fds) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    fds.filter_map(|e| e.ok())
        .filter(|e| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(Path::new(&dir).join(e.file_name()))
                .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
        })
        .map(|e| e.file_name())
        .collect()
}

/// Does descriptor `fd` of process `pid` hold a flock (its fdinfo's `lock:` lines; a waiter's
/// has `->`)?
fn fd_holds_flock(pid: u32, fd: &std::ffi::OsStr) -> bool {
    let path = Path::new("/proc")
        .join(pid.to_string())
        .join("fdinfo")
        .join(fd);
    std::fs::read_to_string(path).is_ok_and(|t| {
        t.lines().any(|l| {
            l.strip_prefix("lock:").is_some_and(|rest| {
                let f: Vec<&str> = rest.split_whitespace().collect();
                f.get(1) == Some(&"FLOCK")
            })
        })
    })
}

/// The ticketfs daemons other than this process, run by root or by `owner`, that have the file
/// of device `dev`, inode `ino` open, among the processes whose descriptors this one may look
/// at (root: all). The owner is checked before any descriptor is looked at: a descriptor on
/// another user's FUSE mount that never answers would hang the look.
pub fn daemons_with_open(dev: u64, ino: u64, owner: u32) -> Vec<Holder> {
    let me = std::process::id();
    pids()
        .filter(|&pid| pid != me)
        .filter_map(holder)
        .filter(|h| h.comm == DAEMON_COMM && counts(h, owner) && has_open(h.pid, dev, ino))
        .collect()
}

/// Has process `pid` a descriptor of the file of device `dev`, inode `ino`?
fn has_open(pid: u32, dev: u64, ino: u64) -> bool {
    !fds_of(pid, dev, ino).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_lines_are_matched_by_device_and_inode() {
        let dev = libc::makedev(0xfe, 0);
        let text = "1: FLOCK  ADVISORY  READ 15284 fe:00:10010990 0 EOF\n\
                    2: FLOCK  ADVISORY  WRITE 15277 fe:00:765204 0 EOF\n\
                    2: -> FLOCK  ADVISORY  WRITE 16000 fe:00:10010990 0 EOF\n\
                    3: FLOCK  ADVISORY  WRITE 15290 fe:01:10010990 0 EOF\n\
                    4: POSIX  ADVISORY  READ 15300 fe:00:10010990 0 EOF\n\
                    5: OFDLCK ADVISORY  READ -1 fe:00:10010990 0 EOF\n";
        assert_eq!(lock_pids(text, dev, 10010990), vec![15284]);
        assert_eq!(lock_pids(text, dev, 765204), vec![15277]);
        assert!(lock_pids(text, dev, 1).is_empty());
        assert!(lock_pids("garbage\n1:\n", dev, 10010990).is_empty());
    }

    #[test]
    fn this_process_is_found_and_left_out() {
        let me = holder(std::process::id()).expect("this process in /proc");
        assert_eq!(me.uid, unsafe { libc::getuid() });
        assert!(counts(&me, me.uid));
        assert!(counts(
            &Holder {
                uid: 0,
                ..me.clone()
            },
            12345
        ));
        assert!(!counts(&Holder { uid: 777, ..me }, 12345));
    }
}
