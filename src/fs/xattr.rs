//! Extended attributes: the namespaces a caller may read and write, and the calls.

use super::*;
use crate::xattr::{Attr, Roll, SetOutcome, Target};

/// Times a set is measured before it reserves the worst case: once before its transaction, once
/// more if another change of the inode's attributes came between.
const XATTR_MEASURES_MAX: u32 = 2;

/// A set's measure: the buffers its transaction reserves for, the blocks it promises.
#[derive(Debug, Clone, Copy)]
pub(super) struct XattrSize {
    buffers: u32,
    blocks: u64,
}

impl XattrSize {
    fn of(t: &crate::resv::ResvTable, c: crate::resv::XattrChange) -> XattrSize {
        XattrSize {
            buffers: t.xattr_change(c),
            blocks: t.xattr_blocks(c),
        }
    }

    /// Does what was reserved for `self` hold `other`?
    pub(super) fn covers(&self, other: XattrSize) -> bool {
        other.buffers <= self.buffers && other.blocks <= self.blocks
    }
}

/// How an attribute change begun to its measure or to the worst case reserved.
#[derive(Debug, Clone, Copy)]
pub(super) enum XattrBegun {
    Sized(XattrSize),
    Worst,
}

/// What an attribute change may need, for its block promise and its reservation.
#[derive(Debug, Clone, Copy)]
pub(super) enum XattrNeed<'a> {
    /// A removal: it frees, so it promises what a freeing needs, from the pool if need be.
    Frees,
    /// Setting this attribute: sized from it and the inode as it stands.
    Sets(Attr<'a>),
}

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
            let sets = XattrNeed::Sets(Attr { name, value });
            let done = self.change_xattrs(ctx, ino, name, sets, |tx, alloc, i, roll| {
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
                    crate::xattr::remove(tx, &mut Target { alloc, ino, i }, name, roll)?;
                    i.mode = mode;
                    return Ok(Some(true));
                };
                let a = Attr { name, value };
                match crate::xattr::set(tx, &mut Target { alloc, ino, i }, a, roll)? {
                    SetOutcome::Done => {
                        i.mode = mode;
                        Ok(Some(true))
                    }
                    SetOutcome::NeedsTree => {
                        crate::xattr::to_tree(tx, &mut Target { alloc, ino, i })?;
                        Ok(Some(false))
                    }
                    // Undone, and committed as it stands: the steps before were.
                    SetOutcome::NoSpace => Ok(None),
                }
            })?;
            match done {
                Some(true) => return Ok(()),
                Some(false) => {}
                None => {
                    return Err(FsError::Engine(EngineError::NoSpace(format!(
                        "inode {ino}: no free blocks for the value of {:?}",
                        String::from_utf8_lossy(name)
                    ))))
                }
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
        // "Not set" is decided after the name's leftovers (changes a crash cut short) are
        // freed: when that took steps, already committed, the transaction commits too (the
        // inode changed), then ENODATA; otherwise nothing changed and nothing is committed.
        let found =
            self.change_xattrs(ctx, ino, name, XattrNeed::Frees, |tx, alloc, i, roll| {
                let mut rolled = false;
                let mut counting = |tx: &mut Trans<'_>, i: &Inode| {
                    rolled = true;
                    roll(tx, i)
                };
                let target = &mut Target { alloc, ino, i };
                let found = crate::xattr::remove(tx, target, name, &mut counting)?;
                if found || acl_name || rolled {
                    Ok(found)
                } else {
                    Err(FsError::NoAttr)
                }
            })?;
        if found || acl_name {
            Ok(())
        } else {
            Err(FsError::NoAttr)
        }
    }

    /// One transaction changing `ino`'s attributes by `edit`, on behalf of `ctx` touching
    /// `name`: the block promise and the reservation of what it `may` need, the access check,
    /// the change, and the change time set. Nothing is committed when `edit` fails before its
    /// first roll (a value in several runs rolls the transaction between its steps: the inode's
    /// buffer is held across them, so no other change of the inode comes between).
    pub(super) fn change_xattrs<T>(
        &self,
        ctx: &Ctx,
        ino: u64,
        name: &[u8],
        may: XattrNeed<'_>,
        edit: impl FnOnce(&mut Trans<'_>, &Allocator, &mut Inode, Roll<'_>) -> R<T>,
    ) -> R<T> {
        self.writable()?;
        // A set is measured on the inode as it stands before anything is promised; measured
        // again once its transaction holds the inode, and begun again if another change came
        // between and it needs more; the worst case after the last measure.
        let mut measured = match may {
            XattrNeed::Frees => None,
            XattrNeed::Sets(a) => Some(self.xattr_measure(ino, a)?),
        };
        let mut measures = 1;
        loop {
            let (blocks, mut tx) = match (may, measured) {
                // A removal frees: the promise of a freeing, from the pool if need be.
                (XattrNeed::Frees, _) => (
                    self.promise(TransKind::Inactive, true)?,
                    self.eng.begin(TransKind::Xattr)?,
                ),
                (XattrNeed::Sets(_), Some(n)) => self.begin_xattr(XattrBegun::Sized(n))?,
                (XattrNeed::Sets(_), None) => self.begin_xattr(XattrBegun::Worst)?,
            };
            let (r, mut i) = inode::read(&mut tx, ino)?;
            // Before the namespace's rule, as the kernel's `xattr_permission` does.
            refuse_fixed(&i)?;
            self.xattr_access(ctx, ino, &i, name, true)?;
            if let (XattrNeed::Sets(a), Some(n)) = (may, measured) {
                let now = XattrSize::of(self.eng.table(), crate::xattr::plan(&mut tx, ino, &i, a)?);
                if now.buffers > n.buffers || now.blocks > n.blocks {
                    tx.cancel()?;
                    measured = (measures < XATTR_MEASURES_MAX).then_some(now);
                    measures += 1;
                    continue;
                }
            }
            let blocks_before = i.blocks;
            tx.hold(r.id);
            let mut roll = |tx: &mut Trans<'_>, i: &Inode| -> Result<(), EngineError> {
                inode::write(tx, &r, i);
                tx.roll().map(|_| ())
            };
            let out = edit(&mut tx, &self.alloc, &mut i, &mut roll)?;
            debug_assert!(
                i.blocks <= blocks_before + blocks.blocks,
                "inode {ino}: attribute change took {} blocks, {} promised",
                i.blocks - blocks_before,
                blocks.blocks
            );
            i.ctime = now();
            inode::write(&mut tx, &r, &i);
            tx.commit()?;
            self.note_change(ino);
            self.durable_if(flags::is_sync(&i))?;
            return Ok(out);
        }
    }

    /// An attribute change's block promise and transaction, as measured or the worst case.
    pub(super) fn begin_xattr(&self, b: XattrBegun) -> R<(crate::alloc::BlockResv<'_>, Trans<'_>)> {
        Ok(match b {
            XattrBegun::Sized(n) => (
                self.alloc.reserve(n.blocks, n.blocks, false)?,
                self.eng.begin_sized(TransKind::Xattr, n.buffers)?,
            ),
            XattrBegun::Worst => (
                self.promise(TransKind::Xattr, false)?,
                self.eng.begin(TransKind::Xattr)?,
            ),
        })
    }

    /// What a chmod of `ino` (`i`, read in `tx`) needs to rewrite its access ACL at its own
    /// size (None: it has none, and the chmod writes the inode alone).
    pub(super) fn chmod_acl_size(
        &self,
        tx: &mut Trans<'_>,
        ino: u64,
        i: &Inode,
    ) -> R<Option<XattrSize>> {
        let Some(acl) = self.access_acl(tx, ino, i)? else {
            return Ok(None);
        };
        let value = acl.encode();
        let a = Attr {
            name: crate::format::acl::ACCESS,
            value: &value,
        };
        let change = crate::xattr::plan(tx, ino, i, a)?;
        Ok(Some(XattrSize::of(self.eng.table(), change)))
    }

    /// What setting `a` on `ino` needs, measured on the inode as it stands (its attribute form,
    /// its tree's height, the value `a` replaces): what it promises and reserves instead of the
    /// worst case of any attribute change (XFS's `xfs_attr_calc_size`).
    pub(super) fn xattr_measure(&self, ino: u64, a: Attr<'_>) -> R<XattrSize> {
        let mut tx = self.eng.begin(TransKind::Read)?;
        let (_, i) = inode::read(&mut tx, ino)?;
        let change = crate::xattr::plan(&mut tx, ino, &i, a)?;
        tx.cancel()?;
        Ok(XattrSize::of(self.eng.table(), change))
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
