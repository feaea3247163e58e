//! Extended attributes: the namespaces a caller may read and write, and the calls.

use super::*;
use crate::xattr::{Attr, SetOutcome, Target};

impl Fs {
    /// May `ctx` read (`write` false) or set/remove the attribute `name` of `i`? Namespaces:
    /// user (regular files and directories, by their permission bits; in a sticky directory only
    /// its owner sets), trusted (root only), security (by write permission); others unsupported.
    pub(super) fn xattr_access(
        &self,
        ctx: &Ctx,
        ino: u64,
        i: &Inode,
        name: &[u8],
        write: bool,
    ) -> R<()> {
        if name.len() > crate::xattr::XATTR_NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        if name.contains(&0) {
            // The kernel never sends one (names are C strings); the library refuses it too, as
            // the stored rule (`format::xattrblock::name_problem`) does.
            return Err(FsError::Invalid("attribute name with a NUL byte".into()));
        }
        if crate::format::xattrblock::name_problem(name).is_some() {
            return Err(FsError::NotSupported);
        }
        if name.starts_with(b"user.") {
            let t = i.mode & S_IFMT;
            if t != S_IFREG && t != S_IFDIR {
                return Err(if write {
                    FsError::Perm
                } else {
                    FsError::NoAttr
                });
            }
            // The kernel's xattr_permission applies this rule on every mount: to an unnamed
            // caller it has.
            if write
                && t == S_IFDIR
                && i.mode & S_ISVTX != 0
                && ctx.uid != 0
                && ctx.uid != i.uid
                && !ctx.unknown()
            {
                return Err(FsError::Perm);
            }
            return self.may(ctx, ino, i, if write { 2 } else { 4 });
        }
        if name.starts_with(b"trusted.") {
            // For an unnamed caller the kernel's xattr_permission has asked CAP_SYS_ADMIN.
            return if ctx.uid == 0 || ctx.unknown() {
                Ok(())
            } else if write {
                Err(FsError::Perm)
            } else {
                Err(FsError::NoAttr)
            };
        }
        if name.starts_with(b"security.") {
            return if write {
                self.may(ctx, ino, i, 2)
            } else {
                Ok(())
            };
        }
        if name == crate::format::acl::ACCESS || name == crate::format::acl::DEFAULT {
            // Anyone may read an ACL; only the owner or root set one.
            return if write && ctx.uid != 0 && ctx.uid != i.uid && !self.vouched(ctx)? {
                Err(FsError::Perm)
            } else {
                Ok(())
            };
        }
        Err(FsError::NotSupported)
    }

    /// Sets attribute `name`. `create`: fail if it exists; `replace`: fail if it does not.
    pub fn setxattr(
        &self,
        ctx: &Ctx,
        ino: u64,
        name: &[u8],
        value: &[u8],
        create: bool,
        replace: bool,
    ) -> R<()> {
        // A bare namespace ("user.") names nothing: EINVAL, as the kernel answers for a local
        // filesystem. (One an older version stored can still be read and removed.)
        if crate::format::xattrblock::NAMESPACES.contains(&name) {
            return Err(FsError::Invalid("empty attribute name".into()));
        }
        if value.len() > crate::xattr::XATTR_SIZE_MAX {
            return Err(FsError::ValueTooBig);
        }
        let acl_name = name == crate::format::acl::ACCESS || name == crate::format::acl::DEFAULT;
        // At most twice: an inode whose block no longer holds its attributes moves them to a
        // tree in a transaction of its own (it keeps every attribute), then the change is made.
        for _ in 0..2 {
            let done = self.change_xattrs(ctx, ino, name, false, |tx, alloc, i| {
                let exists = crate::xattr::get(tx, ino, i, name)?.is_some();
                if exists && create {
                    return Err(FsError::Exists);
                }
                if !exists && replace {
                    return Err(FsError::NoAttr);
                }
                // An ACL also sets the mode, and one the mode says all of is not stored.
                let (mode, value) = if acl_name {
                    Self::acl_to_set(ctx, i, name, value)?
                } else {
                    (i.mode, Some(value))
                };
                let Some(value) = value else {
                    crate::xattr::remove(tx, &mut Target { alloc, ino, i }, name)?;
                    i.mode = mode;
                    return Ok(true);
                };
                match crate::xattr::set(tx, &mut Target { alloc, ino, i }, Attr { name, value })? {
                    SetOutcome::Done => {
                        i.mode = mode;
                        Ok(true)
                    }
                    SetOutcome::NeedsTree => {
                        crate::xattr::to_tree(tx, &mut Target { alloc, ino, i })?;
                        Ok(false)
                    }
                }
            })?;
            if done {
                return Ok(());
            }
        }
        Err(FsError::Engine(EngineError::Invalid(format!(
            "inode {ino}: attributes moved to a tree still do not take {name:?}"
        ))))
    }

    pub fn getxattr(&self, ctx: &Ctx, ino: u64, name: &[u8]) -> R<Vec<u8>> {
        let mut tx = self.eng.begin(TransKind::Read)?;
        let (_, i) = inode::read(&mut tx, ino)?;
        self.xattr_access(ctx, ino, &i, name, false)?;
        let v = crate::xattr::get(&mut tx, ino, &i, name)?;
        tx.cancel()?;
        v.ok_or(FsError::NoAttr)
    }

    /// Names of the attributes the caller may see, each followed by a NUL.
    pub fn listxattr(&self, ctx: &Ctx, ino: u64) -> R<Vec<u8>> {
        let mut tx = self.eng.begin(TransKind::Read)?;
        let (_, i) = inode::read(&mut tx, ino)?;
        let all = crate::xattr::names(&mut tx, ino, &i)?;
        tx.cancel()?;
        let mut out = Vec::new();
        for n in all {
            if n.starts_with(b"trusted.") && !ctx.is_root() {
                continue;
            }
            out.extend_from_slice(&n);
            out.push(0);
        }
        Ok(out)
    }

    pub fn removexattr(&self, ctx: &Ctx, ino: u64, name: &[u8]) -> R<()> {
        // Removing frees space: it may use the pool.
        // Removing an ACL is how the kernel passes on "no ACL" (setfacl's empty ACL, an empty
        // value): no error when there is none, as ext4 and XFS answer.
        let acl_name = name == crate::format::acl::ACCESS || name == crate::format::acl::DEFAULT;
        self.change_xattrs(ctx, ino, name, true, |tx, alloc, i| {
            if crate::xattr::remove(tx, &mut Target { alloc, ino, i }, name)? || acl_name {
                Ok(())
            } else {
                Err(FsError::NoAttr)
            }
        })
    }

    /// One transaction changing `ino`'s attributes by `edit`, on behalf of `ctx` touching
    /// `name`: the block promise (`frees`: the change frees space and may use the pool), the
    /// access check, the change, and the change time set. Nothing is committed when `edit`
    /// fails.
    pub(super) fn change_xattrs<T>(
        &self,
        ctx: &Ctx,
        ino: u64,
        name: &[u8],
        frees: bool,
        edit: impl FnOnce(&mut Trans<'_>, &Allocator, &mut Inode) -> R<T>,
    ) -> R<T> {
        self.writable()?;
        // A removal frees (the promise of a freeing, from the pool if need be); a set may
        // allocate the xattr worst case.
        let _blocks = if frees {
            self.promise(TransKind::Inactive, true)?
        } else {
            self.promise(TransKind::Xattr, false)?
        };
        let mut tx = self.eng.begin(TransKind::Xattr)?;
        let (r, mut i) = inode::read(&mut tx, ino)?;
        // Before the namespace's rule, as the kernel's `xattr_permission` does.
        refuse_fixed(&i)?;
        self.xattr_access(ctx, ino, &i, name, true)?;
        let out = edit(&mut tx, &self.alloc, &mut i)?;
        i.ctime = now();
        inode::write(&mut tx, &r, &i);
        tx.commit()?;
        self.note_change(ino);
        self.durable_if(flags::is_sync(&i))?;
        Ok(out)
    }

    /// Frees every attribute of `ino` (no links left, being freed), one attribute per
    /// transaction while they are in the tree form: the tree of an inode can outgrow any one
    /// reservation. A crash between steps leaves the inode on its unlinked tree with fewer
    /// attributes; the next mount goes on.
    pub(super) fn free_xattrs(&self, ino: u64) -> R<()> {
        loop {
            // Freeing allocates nothing but free-space tree nodes from the AG's free list: the
            // promise of an inode's freeing, not the xattr worst case (two 64 KiB values and
            // splits), which a nearly full filesystem cannot promise and which failed an unlink
            // after its name was gone.
            let _blocks = self.promise(TransKind::Inactive, true)?;
            let mut tx = self.eng.begin(TransKind::Xattr)?;
            let (r, mut i) = inode::read(&mut tx, ino)?;
            if i.xattr_blk == 0 {
                tx.cancel()?;
                return Ok(());
            }
            let more = crate::xattr::free_step(
                &mut tx,
                &mut Target {
                    alloc: &self.alloc,
                    ino,
                    i: &mut i,
                },
            )?;
            inode::write(&mut tx, &r, &i);
            tx.commit()?;
            if !more {
                return Ok(());
            }
        }
    }
}
