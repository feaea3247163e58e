//! POSIX ACLs (`format::acl`): kept consistent with the mode (setting an access ACL sets the
//! mode's bits, a chmod rewrites the ACL's owner, mask and others entries) and inherited from a
//! directory's default ACL at creation. The kernel leaves all of this to a FUSE daemon that
//! takes FUSE_POSIX_ACL, and enforces the ACLs itself when the mount has default_permissions
//! (docs/design.md "POSIX ACLs").

use super::*;
use crate::format::acl::{self, Acl};

/// What a new inode inherits from its directory's default ACL: its access ACL (none when the
/// mode says all of it) and, for a directory, the default ACL itself.
pub(super) struct Inherited {
    access: Option<Acl>,
    default: Option<Acl>,
}

impl Fs {
    /// The mode a new inode of `mode` in directory `dir` (`p`, read in `tx`) gets, and what it
    /// inherits: with a default ACL on `dir`, the ACL masked by the mode asked for (the
    /// caller's umask plays no part); without one, the mode less the umask. Symlinks take
    /// neither.
    pub(super) fn creation_mode(
        tx: &mut Trans<'_>,
        ctx: &Ctx,
        dir: u64,
        p: &Inode,
        mode: u32,
    ) -> R<(u32, Option<Inherited>)> {
        perm::creator_named(ctx)?;
        if mode & S_IFMT == S_IFLNK {
            return Ok((mode, None));
        }
        let default = if p.xattr_blk == 0 {
            None
        } else {
            crate::xattr::get(tx, dir, p, acl::DEFAULT)?.and_then(|v| acl::decode(&v).ok())
        };
        let Some(default) = default else {
            return Ok((mode & !(ctx.umask & 0o777), None));
        };
        let (access, mode) = default.create_masq(mode);
        let inherited = Inherited {
            access: (!access.is_mode_only()).then_some(access),
            default: (mode & S_IFMT == S_IFDIR).then_some(default),
        };
        Ok((mode, Some(inherited)))
    }

    /// Stores what a new inode inherited, after the creation (as XFS sets an inherited ACL
    /// after its create): as setxattr by root, which keeps the mode the masking set.
    pub(super) fn store_inherited(&self, ino: u64, inherited: Inherited) -> R<()> {
        for (name, a) in [
            (acl::ACCESS, inherited.access),
            (acl::DEFAULT, inherited.default),
        ] {
            if let Some(a) = a {
                self.setxattr(&Ctx::ROOT, ino, name, &a.encode(), false, false)?;
            }
        }
        Ok(())
    }

    /// setxattr of an ACL name on `i` by `ctx`: the value checked, a default ACL only on a
    /// directory. Returns the mode the inode takes and the value to store: an access ACL sets
    /// the mode's permission bits (dropping set-group-ID for a caller outside the file's group,
    /// as posix_acl_update_mode) and is not stored (None) when the mode says all of it.
    pub(super) fn acl_to_set<'v>(
        ctx: &Ctx,
        i: &Inode,
        name: &[u8],
        value: &'v [u8],
    ) -> R<(u32, Option<&'v [u8]>)> {
        let a = acl::decode(value)
            .map_err(|e| FsError::Invalid(format!("{}: {e}", String::from_utf8_lossy(name))))?;
        if name == acl::DEFAULT {
            if !is_dir(i) {
                return Err(FsError::Access);
            }
            return Ok((i.mode, Some(value)));
        }
        let mut mode = (i.mode & !0o777) | a.mode_bits();
        // A caller the kernel did not name: the kernel's verdict, made through the mount's
        // idmapping (posix_acl_update_mode), since its ids in /proc are not the filesystem's
        // there; without one, dropped. It is there whenever no caller is named: that takes
        // FUSE_ALLOW_IDMAP, which the kernel grants only with default_permissions, with which
        // the daemon asks FUSE_POSIX_ACL, under which the kernel computes it.
        let keeps = if ctx.unknown() {
            ctx.acl_kill_sgid == Some(false)
        } else {
            ctx.uid == 0 || ctx.in_group(i.gid)
        };
        if !keeps {
            mode &= !S_ISGID;
        }
        Ok((mode, (!a.is_mode_only()).then_some(value)))
    }

    /// The inode's access ACL, read in `tx` (none, or one that does not decode: fsck reports
    /// that).
    pub(super) fn access_acl(&self, tx: &mut Trans<'_>, ino: u64, i: &Inode) -> R<Option<Acl>> {
        if i.xattr_blk == 0 {
            return Ok(None);
        }
        Ok(crate::xattr::get(tx, ino, i, acl::ACCESS)?.and_then(|v| acl::decode(&v).ok()))
    }

    /// A chmod of inode `ino`, `i` (its mode already new) in `tx`: its access ACL follows.
    pub(super) fn chmod_acl(&self, tx: &mut Trans<'_>, ino: u64, i: &mut Inode) -> R<()> {
        let Some(mut a) = self.access_acl(tx, ino, i)? else {
            return Ok(());
        };
        a.chmod(i.mode);
        // The same size as before: it fits where it was.
        let attr = crate::xattr::Attr {
            name: acl::ACCESS,
            value: &a.encode(),
        };
        // Rewritten where it is (`xattr::tree`'s same-length rewrite, or the block form's
        // block): never in steps, so nothing here rolls the setattr.
        let mut no_roll = |_: &mut Trans<'_>, _: &Inode| -> Result<(), EngineError> {
            Err(EngineError::Invalid(format!(
                "inode {ino}: an ACL rewritten at its own size took steps"
            )))
        };
        let target = &mut crate::xattr::Target {
            alloc: &self.alloc,
            ino,
            i,
        };
        match crate::xattr::set(tx, target, attr, &mut no_roll)? {
            crate::xattr::SetOutcome::Done => Ok(()),
            crate::xattr::SetOutcome::NeedsTree | crate::xattr::SetOutcome::NoSpace => {
                Err(FsError::Engine(EngineError::Invalid(format!(
                    "inode {ino}: an ACL rewritten at its own size no longer fits"
                ))))
            }
        }
    }
}
