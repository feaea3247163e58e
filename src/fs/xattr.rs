//! Extended attributes: the namespaces a caller may read and write, and the calls.

use super::*;

impl Fs {
    /// May `ctx` read (`write` false) or set/remove the attribute `name` of `i`? Namespaces:
    /// user (regular files and directories, by their permission bits; in a sticky directory only
    /// its owner sets), trusted (root only), security (by write permission); others unsupported.
    pub(super) fn xattr_access(ctx: &Ctx, i: &Inode, name: &[u8], write: bool) -> R<()> {
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
            if write && t == S_IFDIR && i.mode & S_ISVTX != 0 && ctx.uid != 0 && ctx.uid != i.uid {
                return Err(FsError::Perm);
            }
            return may(ctx, i, if write { 2 } else { 4 });
        }
        if name.starts_with(b"trusted.") {
            return if ctx.uid == 0 {
                Ok(())
            } else if write {
                Err(FsError::Perm)
            } else {
                Err(FsError::NoAttr)
            };
        }
        if name.starts_with(b"security.") {
            return if write { may(ctx, i, 2) } else { Ok(()) };
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
        self.change_xattrs(ctx, ino, name, false, |all| {
            match all.iter().position(|(n, _)| n == name) {
                Some(_) if create => return Err(FsError::Exists),
                Some(p) => all[p].1 = value.to_vec(),
                None if replace => return Err(FsError::NoAttr),
                None => all.push((name.to_vec(), value.to_vec())),
            }
            Ok(())
        })
    }

    pub fn getxattr(&self, ctx: &Ctx, ino: u64, name: &[u8]) -> R<Vec<u8>> {
        let mut tx = self.eng.begin(TransKind::Read)?;
        let (_, i) = inode::read(&mut tx, ino)?;
        Self::xattr_access(ctx, &i, name, false)?;
        let all = crate::xattr::load(&mut tx, ino, &i)?;
        tx.cancel()?;
        all.into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .ok_or(FsError::NoAttr)
    }

    /// Names of the attributes the caller may see, each followed by a NUL.
    pub fn listxattr(&self, ctx: &Ctx, ino: u64) -> R<Vec<u8>> {
        let mut tx = self.eng.begin(TransKind::Read)?;
        let (_, i) = inode::read(&mut tx, ino)?;
        let all = crate::xattr::load(&mut tx, ino, &i)?;
        tx.cancel()?;
        let mut out = Vec::new();
        for (n, _) in all {
            if n.starts_with(b"trusted.") && ctx.uid != 0 {
                continue;
            }
            out.extend_from_slice(&n);
            out.push(0);
        }
        Ok(out)
    }

    pub fn removexattr(&self, ctx: &Ctx, ino: u64, name: &[u8]) -> R<()> {
        // Removing frees space: it may use the pool.
        self.change_xattrs(ctx, ino, name, true, |all| {
            let before = all.len();
            all.retain(|(n, _)| n != name);
            if all.len() == before {
                return Err(FsError::NoAttr);
            }
            Ok(())
        })
    }

    /// One change of `ino`'s attributes by `edit`, on behalf of `ctx` touching `name`: the
    /// block promise (`frees`: the change frees space and may use the pool), the access check,
    /// then the attributes stored and the change time set in one transaction.
    fn change_xattrs(
        &self,
        ctx: &Ctx,
        ino: u64,
        name: &[u8],
        frees: bool,
        edit: impl FnOnce(&mut crate::xattr::Attrs) -> R<()>,
    ) -> R<()> {
        self.writable()?;
        let _blocks = self.promise(TransKind::Xattr, frees)?;
        let mut tx = self.eng.begin(TransKind::Xattr)?;
        let (r, mut i) = inode::read(&mut tx, ino)?;
        // Before the namespace's rule, as the kernel's `xattr_permission` does.
        refuse_fixed(&i)?;
        Self::xattr_access(ctx, &i, name, true)?;
        let mut all = crate::xattr::load(&mut tx, ino, &i)?;
        edit(&mut all)?;
        crate::xattr::store(&mut tx, &self.alloc, ino, &mut i, &all)?;
        i.ctime = now();
        inode::write(&mut tx, &r, &i);
        tx.commit()?;
        self.note_change(ino);
        self.durable_if(flags::is_sync(&i))
    }
}
