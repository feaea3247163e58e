//! Inode flags (chattr's i, a, S, A, d, P) and the project ID: what FS_IOC_GETFLAGS and
//! FS_IOC_FSGETXATTR show, who may change them (FS_IOC_SETFLAGS, FS_IOC_FSSETXATTR), and the
//! rules an immutable or append-only inode puts on every other operation, as the kernel applies
//! them for ext4 and XFS (`inode_permission`, `may_delete`, `notify_change`, `vfs_fallocate`,
//! `may_open`). The kernel keeps no flags of a FUSE inode (its `i_flags` never hold S_IMMUTABLE
//! or S_APPEND), so it applies none of these rules itself: each is applied here, to root too.
//!
//! The ioctls' bit values (FS_*_FL, FS_XFLAG_*, include/uapi/linux/fs.h) are translated here to
//! the format's own bits (`format::inode::FLAG_*`).

use super::*;
use crate::format::inode::{
    FLAGS_DIR_ONLY, FLAG_APPEND, FLAG_IMMUTABLE, FLAG_NOATIME, FLAG_NODUMP, FLAG_PROJINHERIT,
    FLAG_SYNC,
};

/// Each flag: the format's bit, its FS_*_FL (FS_IOC_SETFLAGS) and its FS_XFLAG_*
/// (FS_IOC_FSSETXATTR). Any other bit a caller sets is EOPNOTSUPP, as XFS answers (`chattr +c`).
const FLAG_MAP: [(u32, u32, u32); 6] = [
    (FLAG_IMMUTABLE, 0x10, 0x08),
    (FLAG_APPEND, 0x20, 0x10),
    (FLAG_SYNC, 0x08, 0x20),
    (FLAG_NOATIME, 0x80, 0x40),
    (FLAG_NODUMP, 0x40, 0x80),
    (FLAG_PROJINHERIT, 0x2000_0000, 0x200),
];

/// The flags a new inode takes from its directory (XFS's inherit_sync, inherit_nodump and
/// inherit_noatime, on by default; ext4 inherits them too), for regular files and directories.
const FLAGS_INHERITED: u32 = FLAG_SYNC | FLAG_NODUMP | FLAG_NOATIME;

/// The project ID no inode may have (the kernel's INVALID_PROJID).
const PROJID_INVALID: u32 = u32::MAX;

/// An inode's flags (`format::inode::FLAG_*`) and project ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileFlags {
    pub flags: u32,
    pub projid: u32,
}

/// `flags` as FS_IOC_GETFLAGS shows them.
pub(crate) fn to_fs_flags(flags: u32) -> u32 {
    FLAG_MAP
        .iter()
        .filter(|(ours, _, _)| flags & ours != 0)
        .fold(0, |a, (_, fl, _)| a | fl)
}

/// `flags` as FS_IOC_FSGETXATTR shows them.
pub(crate) fn to_xflags(flags: u32) -> u32 {
    FLAG_MAP
        .iter()
        .filter(|(ours, _, _)| flags & ours != 0)
        .fold(0, |a, (_, _, x)| a | x)
}

/// The format's flags for `bits` in the ioctl's values (`pick` chooses FS_*_FL or FS_XFLAG_*);
/// a bit with no meaning here is EOPNOTSUPP.
fn from_bits(bits: u32, pick: impl Fn(&(u32, u32, u32)) -> u32) -> R<u32> {
    let mut left = bits;
    let mut ours = 0;
    for m in &FLAG_MAP {
        if bits & pick(m) != 0 {
            ours |= m.0;
            left &= !pick(m);
        }
    }
    if left != 0 {
        return Err(FsError::NotSupported);
    }
    Ok(ours)
}

/// The statx attributes (STATX_ATTR_*, include/uapi/linux/stat.h) the flags show as, and the
/// ones this filesystem can show at all (`stx_attributes_mask`): immutable, append-only and
/// no-dump, as XFS reports (`xfs_vn_getattr`); compression, encryption and verity are not kept.
const STATX_MAP: [(u32, u64); 3] = [
    (FLAG_IMMUTABLE, 0x10),
    (FLAG_APPEND, 0x20),
    (FLAG_NODUMP, 0x40),
];

/// `stx_attributes_mask`: every attribute `statx_attributes` may set.
pub(crate) const STATX_ATTRIBUTES_MASK: u64 = STATX_MAP[0].1 | STATX_MAP[1].1 | STATX_MAP[2].1;

/// `flags` as statx's `stx_attributes` shows them.
pub(crate) fn statx_attributes(flags: u32) -> u64 {
    STATX_MAP
        .iter()
        .filter(|(ours, _)| flags & ours != 0)
        .fold(0, |a, (_, attr)| a | attr)
}

/// The format's flags for FS_IOC_SETFLAGS's `fl`.
pub(crate) fn from_fs_flags(fl: u32) -> R<u32> {
    from_bits(fl, |m| m.1)
}

/// The format's flags for FS_IOC_FSSETXATTR's `xflags`.
pub(crate) fn from_xflags(xflags: u32) -> R<u32> {
    from_bits(xflags, |m| m.2)
}

/// Nobody changes an immutable inode: its data, attributes, xattrs, links, or, for a
/// directory, its entries (EPERM; the kernel's `inode_permission` for MAY_WRITE).
pub(super) fn refuse_immutable(i: &Inode) -> R<()> {
    if i.flags & FLAG_IMMUTABLE != 0 {
        return Err(FsError::Perm);
    }
    Ok(())
}

/// Nor an append-only inode, but for what appending needs: its mode, owner, given times, size,
/// xattrs and links (EPERM; `notify_change`, `vfs_link`, `xattr_permission`).
pub(super) fn refuse_fixed(i: &Inode) -> R<()> {
    if i.flags & (FLAG_IMMUTABLE | FLAG_APPEND) != 0 {
        return Err(FsError::Perm);
    }
    Ok(())
}

/// May the entry of `victim` leave directory `dir` (unlink, rmdir, a rename away or over it)?
/// Not from an append-only directory, nor when the victim is immutable or append-only
/// (`may_delete`; the directory's immutability is checked with its write permission).
pub(super) fn refuse_removal(dir: &Inode, victim: &Inode) -> R<()> {
    if dir.flags & FLAG_APPEND != 0 {
        return Err(FsError::Perm);
    }
    refuse_fixed(victim)
}

/// May `i` be opened for writing (`want` has 2), `append` (O_APPEND) or not? Not an immutable
/// inode; an append-only one only for appending (`may_open`).
pub(super) fn refuse_open_for_write(i: &Inode, append: bool) -> R<()> {
    refuse_immutable(i)?;
    if i.flags & FLAG_APPEND != 0 && !append {
        return Err(FsError::Perm);
    }
    Ok(())
}

/// An entry may name `i` in `dir` (a link, a rename into it) only if a directory that passes on
/// its project ID has the same one: EXDEV otherwise, so the caller copies (XFS and ext4).
pub(super) fn refuse_other_project(dir: &Inode, i: &Inode) -> R<()> {
    if dir.flags & FLAG_PROJINHERIT != 0 && dir.projid != i.projid {
        return Err(FsError::CrossProject);
    }
    Ok(())
}

/// What a new inode of type `ftype` takes from its directory `p`: the inherited flags, and
/// under a project-inheriting directory its project ID (and for a directory the flag too).
pub(super) fn inherit(p: &Inode, ftype: u32, i: &mut Inode) {
    if ftype == S_IFREG || ftype == S_IFDIR {
        i.flags |= p.flags & FLAGS_INHERITED;
    }
    if p.flags & FLAG_PROJINHERIT != 0 {
        i.projid = p.projid;
        if ftype == S_IFDIR {
            i.flags |= FLAG_PROJINHERIT;
        }
    }
}

/// Is every change to `i` to be durable when it returns (the sync flag)?
pub(super) fn is_sync(i: &Inode) -> bool {
    i.flags & FLAG_SYNC != 0
}

/// Reads of `i` leave its access time (the noatime flag).
pub(super) fn is_noatime(i: &Inode) -> bool {
    i.flags & FLAG_NOATIME != 0
}

impl Fs {
    /// `ino`'s flags and project ID.
    pub fn file_flags(&self, ino: u64) -> R<FileFlags> {
        let i = self.read_inode(ino)?;
        Ok(FileFlags {
            flags: i.flags,
            projid: i.projid,
        })
    }

    /// The extent count FS_IOC_FSGETXATTR reports: a regular file's extent records, else 0.
    pub(crate) fn extent_count(&self, ino: u64) -> R<u32> {
        let i = self.read_inode(ino)?;
        Ok(if i.mode & S_IFMT == S_IFREG {
            i.nextents
        } else {
            0
        })
    }

    /// Sets `ino`'s flags to `flags` (`format::inode::FLAG_*`), its project ID to `projid` (None:
    /// as it is) and its change time to now. Only its owner or
    /// root may (EPERM), and only root may set or clear immutable or append-only (the kernel
    /// asks CAP_LINUX_IMMUTABLE); other flags and the project ID change on an immutable inode
    /// too, as on XFS. A directory's flag (project inheritance) on anything else is dropped, as
    /// XFS drops it. Serialised with the inode's data operations (its data lock), which check
    /// the flags under that lock.
    pub fn set_file_flags(&self, ctx: &Ctx, ino: u64, flags: u32, projid: Option<u32>) -> R<Attr> {
        self.writable()?;
        if flags & !crate::format::inode::FLAGS_KNOWN != 0 {
            return Err(FsError::NotSupported);
        }
        if projid == Some(PROJID_INVALID) {
            return Err(FsError::Invalid(format!("project ID {PROJID_INVALID}")));
        }
        let _g = self.data_lock(ino);
        let mut tx = self.eng.begin(TransKind::Setattr)?;
        let (r, mut i) = inode::read(&mut tx, ino)?;
        // For an unnamed caller the kernel's vfs_fileattr_set has asked for the owner or
        // CAP_FOWNER, and CAP_LINUX_IMMUTABLE to change immutable or append-only.
        let vouched = self.vouched(ctx)?;
        if ctx.uid != 0 && ctx.uid != i.uid && !vouched {
            return Err(FsError::Perm);
        }
        let mut flags = flags;
        if !is_dir(&i) {
            flags &= !FLAGS_DIR_ONLY;
        }
        if (flags ^ i.flags) & (FLAG_IMMUTABLE | FLAG_APPEND) != 0 && ctx.uid != 0 && !vouched {
            return Err(FsError::Perm);
        }
        let sync = is_sync(&i) || flags & FLAG_SYNC != 0;
        i.flags = flags;
        i.projid = projid.unwrap_or(i.projid);
        i.ctime = now();
        inode::write(&mut tx, &r, &i);
        tx.commit()?;
        self.note_change(ino);
        if sync {
            self.fsync()?;
        }
        Ok(self.attr(ino, &i))
    }

    /// For a write of `data` at `off` to `i` (`ino`): refused on an immutable file, and on an
    /// append-only one where it would change a byte before the end. A write through an
    /// O_APPEND descriptor starts at the end; the kernel's write-back of cached pages
    /// (writeback_cache, mmap) starts at a page boundary and carries the page's old bytes
    /// before the end, which pass when unchanged.
    pub(super) fn admit_write(&self, ino: u64, i: &Inode, off: u64, data: &[u8]) -> R<()> {
        refuse_immutable(i)?;
        if i.flags & FLAG_APPEND == 0 || off >= i.size {
            return Ok(());
        }
        let n = ((i.size - off) as usize).min(data.len());
        let old = self.io().read(ino, off, n)?;
        if old != data[..n] {
            return Err(FsError::Perm);
        }
        Ok(())
    }

    /// After a change to an inode with the sync flag (or an entry of a directory with it):
    /// everything made durable before the change returns (O_SYNC; dirsync for a directory).
    pub(super) fn durable_if(&self, sync: bool) -> R<()> {
        if sync {
            self.fsync()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_bits_translate_both_ways() {
        let all = crate::format::inode::FLAGS_KNOWN;
        assert_eq!(from_fs_flags(to_fs_flags(all)).unwrap(), all);
        assert_eq!(from_xflags(to_xflags(all)).unwrap(), all);
        // chattr +i and xfs_io's chattr +i.
        assert_eq!(from_fs_flags(0x10).unwrap(), FLAG_IMMUTABLE);
        assert_eq!(from_xflags(0x08).unwrap(), FLAG_IMMUTABLE);
        assert_eq!(to_fs_flags(FLAG_APPEND | FLAG_NODUMP), 0x60);
        assert_eq!(to_xflags(FLAG_SYNC | FLAG_NOATIME), 0x60);
    }

    #[test]
    fn bits_without_meaning_here_are_not_supported() {
        // chattr +c (FS_COMPR_FL), +e (FS_EXTENT_FL); FS_XFLAG_DAX, FS_XFLAG_EXTSIZE.
        for fl in [0x4, 0x80000] {
            assert!(matches!(from_fs_flags(fl), Err(FsError::NotSupported)));
        }
        for x in [0x8000, 0x800] {
            assert!(matches!(from_xflags(x), Err(FsError::NotSupported)));
        }
    }
}
