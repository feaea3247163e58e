//! Permissions: who is asking (`Ctx`), the mode-bit check, the sticky-directory rule, and the
//! set-id bits a write or a change of owner drops, as the kernel decides them for local
//! filesystems.

use super::*;

/// Drops the set-id bits as Linux does when a file is written, truncated or given away by
/// `ctx` (setattr_should_drop_suidgid): set-user-ID always; set-group-ID when the file is
/// group-executable, or when the caller is neither capable nor in the file's group
/// (`Ctx::keeps_setgid`).
pub(super) fn kill_setid(ctx: &Ctx, i: &mut Inode) {
    i.drop_setid();
    if !ctx.keeps_setgid(i.gid) {
        i.mode &= !S_ISGID;
    }
}

/// CAP_FSETID (include/uapi/linux/capability.h): its holder keeps set-group-ID through a
/// chown, truncate or write of a file whose group it is not in.
const CAP_FSETID: u32 = 4;

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) pid: u32,
    /// The umask a creating call passes (create, mkdir, mknod, O_TMPFILE); 0 for the others.
    /// Applied unless the directory has a default ACL, which replaces it.
    pub(crate) umask: u32,
    /// A SETXATTR with FUSE_SETXATTR_EXT: whether the kernel found the caller neither in the
    /// file's group nor holding CAP_FSETID, through the mount's idmapping
    /// (FUSE_SETXATTR_ACL_KILL_SGID, computed when the connection has FUSE_POSIX_ACL); None
    /// for other requests.
    pub(crate) acl_kill_sgid: Option<bool>,
}

/// The uid and gid the kernel sends for a caller it does not name (FUSE_INVALID_UIDGID): on a
/// connection that took FUSE_ALLOW_IDMAP, every request but those that create (MKNOD, MKDIR,
/// SYMLINK, CREATE, TMPFILE, a RENAME2 with RENAME_WHITEOUT), whichever mount it came
/// through. Never a real id: without FUSE_ALLOW_IDMAP the kernel refuses a caller with no id
/// in the connection's namespace (EOVERFLOW) rather than send this.
pub(crate) const ID_UNKNOWN: u32 = u32::MAX;

impl Ctx {
    pub const ROOT: Ctx = Ctx {
        uid: 0,
        gid: 0,
        pid: 0,
        umask: 0,
        acl_kill_sgid: None,
    };

    /// User `uid` in group `gid`, for process `pid` (whose /proc entry lists its other groups).
    pub const fn new(uid: u32, gid: u32, pid: u32) -> Ctx {
        Ctx {
            uid,
            gid,
            pid,
            umask: 0,
            acl_kill_sgid: None,
        }
    }

    /// Is the caller root (uid 0 in the daemon's namespace, which is the filesystem's)? For an
    /// unnamed caller, by its filesystem uid as /proc shows it to the daemon: the kernel's
    /// own, not the mount's idmapping, so a caller mapped to 0 by an idmapped mount is not
    /// root (as XFS asks CAP_SYS_ADMIN of the initial namespace). The caller waits in its
    /// system call for the answer, so its PID names it.
    pub(crate) fn is_root(&self) -> bool {
        if !self.unknown() {
            return self.uid == 0;
        }
        let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", self.pid)) else {
            return false;
        };
        // "Uid:" real, effective, saved, filesystem.
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(3))
            .is_some_and(|fsuid| fsuid == "0")
    }

    /// Did the kernel leave the caller unnamed (`ID_UNKNOWN`)? It then checked the request's
    /// permissions itself, with the mount's idmapping (`Fs::vouched`).
    pub(crate) fn unknown(&self) -> bool {
        self.uid == ID_UNKNOWN || self.gid == ID_UNKNOWN
    }

    /// May the caller keep a file's set-group-ID that is not group-executable through a chown,
    /// truncate or write (the kernel's in_group_or_capable, for `kill_setid` only)? A named caller when
    /// root or in group `gid`. A caller the kernel did not name (`unknown`) is asked of /proc:
    /// CAP_FSETID in its effective set, or `gid` its filesystem group or a supplementary one.
    /// Those are its ids as the daemon's namespace sees them, not through an idmapped mount's
    /// mapping, so through one this may keep a bit the kernel would drop, or the reverse; the
    /// bit concerned grants nothing (exec takes set-group-ID only with group-execute, and a
    /// chmod that adds group-execute drops it for a caller outside the group), so this is not
    /// a permission check, and a plain mount gets the kernel's answer.
    pub(super) fn keeps_setgid(&self, gid: u32) -> bool {
        if !self.unknown() {
            return self.uid == 0 || self.in_group(gid);
        }
        let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", self.pid)) else {
            return false;
        };
        let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name));
        // A capability counts over the file only in the daemon's user namespace: root of a
        // namespace of its own (`unshare -Ur`) has CAP_FSETID there, and none over the file.
        let same_userns = {
            let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/user")).ok();
            ns(&self.pid.to_string()).is_some_and(|theirs| Some(theirs) == ns("self"))
        };
        let capable = same_userns
            && field("CapEff:")
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
                .is_some_and(|caps| caps & (1 << CAP_FSETID) != 0);
        let ids = |s: Option<&str>| -> Vec<u32> {
            s.map(|s| {
                s.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
        };
        // "Gid:" real, effective, saved, filesystem.
        let fsgid = ids(field("Gid:")).get(3).copied();
        capable || fsgid == Some(gid) || ids(field("Groups:")).contains(&gid)
    }

    /// Is `gid` the caller's group or one of its supplementary groups (from /proc)? Never for
    /// an unnamed caller: its /proc groups are not in the filesystem's ids on an idmapped
    /// mount.
    pub(super) fn in_group(&self, gid: u32) -> bool {
        if self.unknown() {
            return false;
        }
        if gid == self.gid {
            return true;
        }
        let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", self.pid)) else {
            return false;
        };
        status
            .lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .is_some_and(|g| g.split_whitespace().any(|x| x.parse::<u32>() == Ok(gid)))
    }
}

/// May `ctx` (not root) do `want` to `i` by its access ACL `a`: the owner by the owner entry, a
/// named user by its entry, a member of the owning group or of named groups by any of those
/// entries that grants it all (named entries and groups limited by the mask), anyone else by
/// the others entry (POSIX.1e, as the kernel's posix_acl_permission).
fn acl_permits(ctx: &Ctx, i: &Inode, a: &crate::format::acl::Acl, want: u32) -> R<()> {
    use crate::format::acl::{GROUP, GROUP_OBJ, MASK, OTHER, USER, USER_OBJ};
    let perm = |tag: u16| a.0.iter().find(|e| e.tag == tag).map(|e| e.perm as u32);
    let mask = perm(MASK).unwrap_or(7);
    let granted = |p: u32| p & want == want;
    let ok = if ctx.uid == i.uid {
        granted(perm(USER_OBJ).unwrap_or(0))
    } else if let Some(e) = a.0.iter().find(|e| e.tag == USER && e.id == ctx.uid) {
        granted(e.perm as u32 & mask)
    } else {
        let groups: Vec<u32> =
            a.0.iter()
                .filter(|e| {
                    (e.tag == GROUP_OBJ && ctx.in_group(i.gid))
                        || (e.tag == GROUP && ctx.in_group(e.id))
                })
                .map(|e| e.perm as u32 & mask)
                .collect();
        if groups.is_empty() {
            granted(perm(OTHER).unwrap_or(0))
        } else {
            groups.into_iter().any(granted)
        }
    };
    if ok {
        Ok(())
    } else {
        Err(FsError::Access)
    }
}

/// May `ctx` do `want` (4 read, 2 write, 1 search/execute, or'ed) to `i`, by its mode bits?
fn mode_permits(ctx: &Ctx, i: &Inode, want: u32) -> R<()> {
    if ctx.uid == 0 {
        // Root may do anything but execute a file with no execute bit at all.
        if want & 1 != 0 && !is_dir(i) && i.mode & 0o111 == 0 {
            return Err(FsError::Access);
        }
        return Ok(());
    }
    let bits = if ctx.uid == i.uid {
        (i.mode >> 6) & 7
    } else if ctx.in_group(i.gid) {
        (i.mode >> 3) & 7
    } else {
        i.mode & 7
    };
    if bits & want == want {
        Ok(())
    } else {
        Err(FsError::Access)
    }
}

/// A new inode is owned by its creator: the kernel names the caller of every request that
/// creates (mapped through an idmapped mount). One that does not is refused before anything
/// is changed, rather than give the inode the marker as its owner.
pub(super) fn creator_named(ctx: &Ctx) -> R<()> {
    if ctx.unknown() {
        return Err(FsError::Invalid(
            "a request that creates an inode without its caller's ids".into(),
        ));
    }
    Ok(())
}

/// The sticky-directory rule: in a sticky directory only the owner of the entry, the owner of
/// the directory or root may remove or rename the entry. For an unnamed caller the kernel's
/// `may_delete` has applied it (on every mount, whatever its permission checks).
pub(super) fn sticky_ok(ctx: &Ctx, dir: &Inode, victim: &Inode) -> R<()> {
    if ctx.unknown() {
        return Ok(());
    }
    if dir.mode & S_ISVTX != 0 && ctx.uid != 0 && ctx.uid != dir.uid && ctx.uid != victim.uid {
        return Err(FsError::Perm);
    }
    Ok(())
}

impl Fs {
    /// Has the kernel checked this request's permissions for a caller it did not name? Then
    /// the daemon's own checks of who the caller is stand aside: the kernel's verdict, made
    /// with the caller's credentials through the mount's idmapping, is the only one there can
    /// be. The kernel sends no ids only on a connection that took FUSE_ALLOW_IDMAP, which it
    /// grants only with default_permissions; should an unnamed caller come otherwise, nobody
    /// checked, and it is refused (EACCES).
    pub(super) fn vouched(&self, ctx: &Ctx) -> R<bool> {
        if !ctx.unknown() {
            return Ok(false);
        }
        if self.kernel_checks() {
            Ok(true)
        } else {
            Err(FsError::Access)
        }
    }

    /// May `ctx` open `ino` with this access (4 read, 2 write)? Counts the open.
    /// Returns whether the kernel may keep the file's cached pages from earlier opens: only when
    /// no access-time update is due (`atime_due`), since reads served from those pages never
    /// reach the daemon (under strictatime: never).
    pub fn open(&self, ctx: &Ctx, ino: u64, want: u32) -> R<bool> {
        self.open_as(ctx, ino, want, false)
    }

    /// `open`, `append` telling whether the open is for appending (O_APPEND), which is how an
    /// append-only file may be opened for writing.
    pub(crate) fn open_as(&self, ctx: &Ctx, ino: u64, want: u32, append: bool) -> R<bool> {
        let i = self.read_inode(ino)?;
        if want & 2 != 0 {
            if is_dir(&i) {
                return Err(FsError::IsDir);
            }
            self.writable()?;
            refuse_immutable(&i)?;
        }
        self.may(ctx, ino, &i, want)?;
        if want & 2 != 0 {
            flags::refuse_open_for_write(&i, append)?;
        }
        *self.open.lock().entry(ino).or_insert(0) += 1;
        // An open handle is memory that grows with load: charged beside the cache.
        self.eng.cache().charge_outside(HANDLE_BYTES);
        Ok(!self.atime_due(&i, now()))
    }

    pub(crate) fn access(&self, ctx: &Ctx, ino: u64, mask: u32) -> R<()> {
        let i = self.read_inode(ino)?;
        if mask & 2 != 0 {
            self.writable()?;
            refuse_immutable(&i)?;
        }
        self.may(ctx, ino, &i, mask & 7)
    }

    /// May `ctx` do `want` (4 read, 2 write, 1 search/execute, or'ed) to inode `ino`, `i`? Its
    /// access ACL decides, or its mode bits when it has none. Checked here even where the
    /// kernel checks too (default_permissions), by the ids the request names only: a caller
    /// that keeps CAP_DAC_OVERRIDE through its setuid (setpriv) passes the kernel's check of a
    /// file it does not own, and is refused here. For an unnamed caller the kernel's check
    /// is the only one (`vouched`).
    pub(super) fn may(&self, ctx: &Ctx, ino: u64, i: &Inode, want: u32) -> R<()> {
        if self.vouched(ctx)? {
            return Ok(());
        }
        // As the kernel's acl_permission_check: the owner by the owner bits, and the ACL only
        // when the mode's group bits (its mask) grant anything.
        if ctx.uid == 0 || ctx.uid == i.uid || i.xattr_blk == 0 || i.mode & 0o070 == 0 {
            return mode_permits(ctx, i, want);
        }
        // A transaction of its own: the callers hold the inode's chunk, so no writer holds
        // its attribute blocks (they are joined after the chunk), and reading pins nothing.
        let mut tx = self.eng.begin(TransKind::Read)?;
        let acl = self.access_acl(&mut tx, ino, i)?;
        tx.cancel()?;
        match acl {
            None => mode_permits(ctx, i, want),
            Some(a) => acl_permits(ctx, i, &a, want),
        }
    }
}
