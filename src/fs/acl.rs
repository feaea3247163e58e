//! POSIX ACLs (`format::acl`): kept consistent with the mode (setting an access ACL sets the
//! mode's bits, a chmod rewrites the ACL's owner, mask and others entries) and inherited from a
//! directory's default ACL at creation. The kernel leaves all of this to a FUSE daemon that
//! takes FUSE_POSIX_ACL, and enforces the ACLs itself when the mount has default_permissions
//! (docs/design.md "POSIX ACLs").

use super::*;
use crate::format::acl::{self, Acl};
use crate::xattr::Attrs;

/// What a new inode inherits from its directory's default ACL: its access ACL (none when the
/// mode says all of it) and, for a directory, the default ACL itself.
pub(super) struct Inherited {
    access: Option<Acl>,
    default: Option<Acl>,
}

/// The decoded ACL stored under `name` in `all`, if any. One that does not decode is treated as
/// absent here (fsck reports it).
fn find(all: &Attrs, name: &[u8]) -> Option<Acl> {
    all.iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| acl::decode(v).ok())
}

fn put(all: &mut Attrs, name: &[u8], value: Option<Vec<u8>>) {
    all.retain(|(n, _)| n != name);
    if let Some(v) = value {
        all.push((name.to_vec(), v));
    }
}

impl Fs {
    /// The mode a new inode of `mode` in directory `dir` gets, and what it inherits: with a
    /// default ACL on `dir`, the ACL masked by the mode asked for (the caller's umask plays no
    /// part); without one, the mode less the umask. Symlinks take neither.
    pub(super) fn creation_mode(
        &self,
        ctx: &Ctx,
        dir: u64,
        mode: u32,
    ) -> R<(u32, Option<Inherited>)> {
        if mode & S_IFMT == S_IFLNK {
            return Ok((mode, None));
        }
        let mut tx = self.eng.begin(TransKind::Read)?;
        let (_, p) = inode::read(&mut tx, dir)?;
        let default = if p.xattr_blk != 0 {
            find(&crate::xattr::load(&mut tx, dir, &p)?, acl::DEFAULT)
        } else {
            None
        };
        tx.cancel()?;
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

    /// Stores what a new inode inherited, in its own transaction after the creation (as XFS
    /// sets an inherited ACL after its create).
    pub(super) fn store_inherited(&self, ino: u64, inherited: Inherited) -> R<()> {
        if inherited.access.is_none() && inherited.default.is_none() {
            return Ok(());
        }
        self.change_xattrs(&Ctx::ROOT, ino, acl::ACCESS, false, |all, _| {
            put(all, acl::ACCESS, inherited.access.map(|a| a.encode()));
            put(all, acl::DEFAULT, inherited.default.map(|a| a.encode()));
            Ok(())
        })
    }

    /// setxattr of an ACL name on `i` by `ctx`: the value checked, a default ACL only on a
    /// directory; an access ACL sets the mode's permission bits (dropping set-group-ID for a
    /// caller outside the file's group, as posix_acl_update_mode) and is not stored when the
    /// mode says all of it.
    pub(super) fn set_acl(
        ctx: &Ctx,
        i: &mut Inode,
        all: &mut Attrs,
        name: &[u8],
        value: &[u8],
    ) -> R<()> {
        let a = acl::decode(value)
            .map_err(|e| FsError::Invalid(format!("{}: {e}", String::from_utf8_lossy(name))))?;
        if name == acl::DEFAULT {
            if !is_dir(i) {
                return Err(FsError::Access);
            }
            put(all, name, Some(value.to_vec()));
            return Ok(());
        }
        i.mode = (i.mode & !0o777) | a.mode_bits();
        if ctx.uid != 0 && !ctx.in_group(i.gid) {
            i.mode &= !S_ISGID;
        }
        put(all, name, (!a.is_mode_only()).then(|| value.to_vec()));
        Ok(())
    }

    /// The inode's access ACL, read in `tx` (none without attributes).
    pub(super) fn access_acl(&self, tx: &mut Trans<'_>, ino: u64, i: &Inode) -> R<Option<Acl>> {
        if i.xattr_blk == 0 {
            return Ok(None);
        }
        Ok(find(&crate::xattr::load(tx, ino, i)?, acl::ACCESS))
    }

    /// A chmod of an inode whose attributes are `all`: its access ACL follows the new mode.
    /// Returns whether anything changed.
    pub(super) fn chmod_acl(all: &mut Attrs, mode: u32) -> bool {
        let Some(mut a) = find(all, acl::ACCESS) else {
            return false;
        };
        a.chmod(mode);
        put(all, acl::ACCESS, Some(a.encode()));
        true
    }
}
