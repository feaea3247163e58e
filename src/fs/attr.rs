//! Attributes: what stat shows, setattr (mode, owner, size, times), and when reads update the
//! access time.

use super::*;

/// When reads update the access time (mount options `relatime`, the default, `strictatime`,
/// `noatime`), as the kernel does for local filesystems.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AtimePolicy {
    /// Only when the access time is not after the modification or change time, or is a day old.
    Relatime,
    /// At every read.
    Strict,
    Never,
}

/// Times a chmod measures its access ACL's rewrite before it reserves an attribute change's
/// worst case: once in its first transaction, once more if another change came between.
const CHMOD_ACL_MEASURES_MAX: u32 = 2;

/// relatime updates an access time at least this often (as Linux: a day).
pub(super) const RELATIME_MAX_AGE_SECS: i64 = 24 * 3600;

pub(crate) fn now() -> Time {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Time {
        sec: d.as_secs() as i64,
        nsec: d.subsec_nanos(),
    }
}

impl Fs {
    pub(super) fn attr(&self, ino: u64, i: &Inode) -> Attr {
        let bs = self.eng.geometry().block_size as u64;
        Attr {
            ino,
            mode: i.mode,
            nlink: i.nlink,
            uid: i.uid,
            gid: i.gid,
            // A directory's size is the space its tree and names take, or for an inline one the
            // bytes of its entries (as XFS reports short-form directories).
            size: if is_dir(i) {
                if i.format == DataFormat::Local {
                    dir::inline_bytes(i)
                } else {
                    i.blocks.saturating_mul(bs)
                }
            } else {
                i.size
            },
            // Saturating: the count comes from the image (fsck reports one that is wrong).
            blocks: i.blocks.saturating_mul(bs / 512),
            atime: i.atime,
            mtime: i.mtime,
            ctime: i.ctime,
            crtime: i.crtime,
            rdev: i.rdev,
            blksize: bs as u32,
            generation: i.generation,
            flags: i.flags,
        }
    }

    pub fn getattr(&self, ino: u64) -> R<Attr> {
        let i = self.read_inode(ino)?;
        Ok(self.attr(ino, &i))
    }

    /// Changes attributes; checks ownership and permissions as chmod, chown, truncate and
    /// utimensat do.
    pub fn setattr(&self, ctx: &Ctx, ino: u64, a: &SetAttr) -> R<Attr> {
        self.writable()?;
        let cur = self.read_inode(ino)?;
        self.flags_allow_setattr(&cur, a)?;
        // An unnamed caller passed the kernel's setattr_prepare: owner or capable for a chmod,
        // chown or given times, the right to the new owner and group, and write permission for
        // the current time; set-group-ID already dropped from a chmod by someone outside the
        // group.
        let vouched = self.vouched(ctx)?;
        let owner = vouched || ctx.uid == 0 || ctx.uid == cur.uid;
        // Nothing to set: the kernel's way (FUSE_HANDLE_KILLPRIV_V2) of passing on a chown to
        // the same owner (chown -1 -1) or the drop of privileges before someone's write,
        // fallocate or copy into the file: both clear the set-id bits (capabilities the kernel
        // removes itself, with a REMOVEXATTR), which a non-owner may do only if they may write
        // the file.
        let kill_only = a.mode.is_none()
            && a.uid.is_none()
            && a.gid.is_none()
            && a.size.is_none()
            && a.atime.is_none()
            && a.mtime.is_none()
            && !is_dir(&cur);
        if kill_only && !owner && cur.mode & (S_ISUID | S_ISGID) != 0 {
            self.may(ctx, ino, &cur, 2)?;
        }
        if let Some(m) = a.mode.filter(|_| !owner) {
            // The kernel drops set-id bits itself before a write, truncate or fallocate by
            // someone else (file_remove_privs), and FUSE passes that on as a chmod by the
            // writer: allowed to whoever may write the file when it only clears those bits.
            let setid = S_ISUID | S_ISGID;
            let only_drops = m & 0o7777 & !setid == cur.mode & 0o7777 & !setid
                && m & setid & !cur.mode == 0
                && cur.mode & setid & !m != 0;
            if !only_drops {
                return Err(FsError::Perm);
            }
            self.may(ctx, ino, &cur, 2)?;
        }
        if let Some(u) = a.uid {
            if u != cur.uid && ctx.uid != 0 && !vouched {
                return Err(FsError::Perm);
            }
        }
        if let Some(g) = a.gid {
            if g != cur.gid && ctx.uid != 0 && !vouched && !(ctx.uid == cur.uid && ctx.in_group(g))
            {
                return Err(FsError::Perm);
            }
        }
        for t in [a.atime, a.mtime].into_iter().flatten() {
            match t {
                _ if self.kernel_checks() => {}
                SetTime::At(_) if !owner => return Err(FsError::Perm),
                SetTime::Now if !owner => self.may(ctx, ino, &cur, 2)?,
                _ => {}
            }
        }
        if let Some(size) = a.size {
            if is_dir(&cur) {
                return Err(FsError::IsDir);
            }
            if cur.mode & S_IFMT != S_IFREG {
                return Err(FsError::Invalid("truncate of a non-regular file".into()));
            }
            if !a.via_open_file {
                self.may(ctx, ino, &cur, 2)?;
            }
            let _g = self.data_lock(ino);
            self.io().truncate(ino, size, now())?;
        }
        // A chmod of an inode with an access ACL rewrites it at its own size: an attribute
        // change measured as that set (in place in its attribute block: no block), measured
        // again whenever the transaction finds more is needed (another change came between),
        // the worst case after the last measure. Without one it writes the inode alone.
        let mut begun: Option<XattrBegun> = None;
        let mut measures = 0;
        let (_blocks, mut tx, r, mut i) = loop {
            let (blocks, mut tx) = match begun {
                Some(b) => {
                    let (blocks, tx) = self.begin_xattr(b)?;
                    (Some(blocks), tx)
                }
                None => (None, self.eng.begin(TransKind::Setattr)?),
            };
            let (r, i) = inode::read(&mut tx, ino)?;
            if a.mode.is_some() && i.xattr_blk != 0 {
                let need = self.chmod_acl_size(&mut tx, ino, &i)?;
                let held = match (begun, need) {
                    (_, None) | (Some(XattrBegun::Worst), _) => true,
                    (Some(XattrBegun::Sized(had)), Some(n)) => had.covers(n),
                    (None, Some(_)) => false,
                };
                if let (false, Some(n)) = (held, need) {
                    tx.cancel()?;
                    measures += 1;
                    begun = Some(if measures < CHMOD_ACL_MEASURES_MAX {
                        XattrBegun::Sized(n)
                    } else {
                        XattrBegun::Worst
                    });
                    continue;
                }
            }
            break (blocks, tx, r, i);
        };
        let t = now();
        if let Some(m) = a.mode {
            let mut m = (i.mode & S_IFMT) | (m & 0o7777);
            // Setting setgid on a file of a group one is not in quietly drops it.
            if ctx.uid != 0
                && !ctx.unknown()
                && !is_dir(&i)
                && m & S_ISGID != 0
                && !ctx.in_group(i.gid)
            {
                m &= !S_ISGID;
            }
            i.mode = m;
            if i.xattr_blk != 0 {
                self.chmod_acl(&mut tx, ino, &mut i)?;
            }
        }
        let chown = a.uid.is_some_and(|u| u != i.uid) || a.gid.is_some_and(|g| g != i.gid);
        if let Some(u) = a.uid {
            i.uid = u;
        }
        if let Some(g) = a.gid {
            i.gid = g;
        }
        let given_away = (chown || a.uid.is_some() || a.gid.is_some()) && !is_dir(&i);
        // A truncate by anyone but root (the kernel's FATTR_KILL_SUIDGID, which FUSE passes for
        // a caller without CAP_FSETID, and which alone says it for a caller it did not name)
        // drops them as a write does.
        let truncated = a.size.is_some()
            && if ctx.unknown() {
                a.kill_suidgid
            } else {
                ctx.uid != 0
            };
        if (given_away || kill_only || truncated) && a.mode.is_none() {
            kill_setid(ctx, &mut i);
        }
        let pick = |s: SetTime| match s {
            SetTime::Now => t,
            SetTime::At(x) => x,
        };
        if let Some(x) = a.atime {
            i.atime = pick(x);
        }
        if let Some(x) = a.mtime {
            i.mtime = pick(x);
        }
        if a.size.is_some() && a.mtime.is_none() {
            i.mtime = t;
        }
        i.ctime = t;
        inode::write(&mut tx, &r, &i);
        tx.commit()?;
        // Mode, owner or set-id bits: more than times.
        if a.mode.is_some() || a.uid.is_some() || a.gid.is_some() || kill_only || truncated {
            self.note_change(ino);
        }
        self.durable_if(flags::is_sync(&i))?;
        Ok(self.attr(ino, &i))
    }

    /// What an immutable or append-only inode refuses of a setattr, before any permission is
    /// looked at (`notify_change`, ext4_setattr): everything when immutable; when append-only,
    /// a mode, an owner, a size or a given time, but not the time "now" (touch) nor the drop
    /// of set-id bits before someone's write. With the kernel's writeback cache the kernel
    /// sends a modification time it stamped as a given one: the times of cached writes (alone:
    /// an append-only file takes them, or fsync after appending would fail) and a touch's (with
    /// the access time "now"). Only a given modification time with a given access time is a
    /// user's setting then; one given alone (utimensat with UTIME_OMIT) passes.
    fn flags_allow_setattr(&self, cur: &Inode, a: &SetAttr) -> R<()> {
        refuse_immutable(cur)?;
        let given = |t: Option<SetTime>| matches!(t, Some(SetTime::At(_)));
        let mtime_given = given(a.mtime) && (given(a.atime) || !self.kernel_times);
        let fixing = a.mode.is_some()
            || a.uid.is_some()
            || a.gid.is_some()
            || a.size.is_some()
            || given(a.atime)
            || mtime_given;
        if fixing {
            refuse_fixed(cur)?;
        }
        Ok(())
    }

    /// Sets when reads update access times (the default is relatime).
    pub(crate) fn set_atime_policy(&mut self, p: AtimePolicy) {
        self.atime = p;
    }

    /// A read of `ino`'s data or entries: updates its access time as the policy says.
    pub(super) fn accessed(&self, ino: u64) -> R<()> {
        self.accessed_as(ino, None)
    }

    /// Would a read of `i` at `t` update its access time (the mount's policy; never read-only)?
    pub(super) fn atime_due(&self, i: &Inode, t: Time) -> bool {
        if self.is_read_only() || flags::is_noatime(i) {
            return false;
        }
        match self.atime {
            AtimePolicy::Never => false,
            AtimePolicy::Strict => true,
            AtimePolicy::Relatime => {
                i.atime <= i.mtime
                    || i.atime <= i.ctime
                    || t.sec - i.atime.sec >= RELATIME_MAX_AGE_SECS
            }
        }
    }

    /// `accessed`, with the inode as the read just found it when the caller has it (no second
    /// look to decide; the update itself rereads it).
    pub(super) fn accessed_as(&self, ino: u64, seen: Option<&Inode>) -> R<()> {
        if self.is_read_only() || self.atime == AtimePolicy::Never {
            return Ok(());
        }
        let t = now();
        let due = |i: &Inode| self.atime_due(i, t);
        let is_due = match seen {
            Some(i) => due(i),
            None => due(&self.read_inode(ino)?),
        };
        if !is_due {
            return Ok(());
        }
        let mut tx = self.eng.begin(TransKind::Setattr)?;
        let (r, mut i) = inode::read(&mut tx, ino)?;
        if !due(&i) {
            tx.cancel()?;
            return Ok(());
        }
        i.atime = t;
        inode::write(&mut tx, &r, &i);
        tx.commit()?;
        Ok(())
    }
}
