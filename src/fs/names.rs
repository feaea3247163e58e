//! The namespace: lookups, creating (files, directories, nodes, symlinks), links, removal and
//! rename, each one transaction that joins the inode chunks involved in ascending block order
//! and re-checks what it looked up before it changes anything.

use super::*;

/// Times a namespace operation retries when what it looked up changed before it locked.
pub(super) const RETRIES_MAX: usize = 16;

/// What a creation decided before its transaction ([`Fs::plan_new_inode`]).
pub(super) struct NewInode {
    /// The new inode's mode: the umask or the directory's default ACL applied.
    pub(super) mode: u32,
    /// The ACLs it inherits, stored after the creation.
    pub(super) inherited: Option<super::acl::Inherited>,
    /// A free inode to claim, if one was seen.
    pub(super) candidate: Option<u64>,
}

/// A name a request gives: the format's rule (`format::name`), except that "." and ".." pass
/// here, for the callers that answer them as the kernel expects (rmdir of "." is EINVAL, a
/// create of ".." EEXIST: the kernel resolves them before they reach us anyway).
pub(super) fn check_name(name: &[u8]) -> R<()> {
    use crate::format::name::{name_problem, NameProblem};
    match name_problem(name) {
        None | Some(NameProblem::Dot) => Ok(()),
        Some(NameProblem::TooLong) => Err(FsError::NameTooLong),
        Some(p) => Err(FsError::Invalid(format!("a name that {}", p.describe()))),
    }
}

/// A name to be stored (create, link, the target of a rename): "." and ".." always exist, as
/// mkdir(".") finds in the kernel (EEXIST); never stored (`format::name`).
pub(super) fn check_new_name(name: &[u8]) -> R<()> {
    check_name(name)?;
    if name == b"." || name == b".." {
        return Err(FsError::Exists);
    }
    Ok(())
}

/// Joins the chunks of `inos` in ascending block order: the lock order of every operation.
pub(super) fn lock_chunks(tx: &mut Trans<'_>, inos: &[u64]) -> R<()> {
    let mut chunks: Vec<u64> = inos
        .iter()
        .filter(|&&i| i != 0)
        .map(|&i| ino_split(i).0)
        .collect();
    chunks.sort_unstable();
    chunks.dedup();
    for c in chunks {
        tx.read_buf(c, BlockType::InodeChunk)?;
    }
    Ok(())
}

/// renameat2(2)'s flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenameHow {
    /// Fail with EEXIST if the target exists.
    pub noreplace: bool,
    /// Swap two existing entries.
    pub exchange: bool,
    /// Leave a whiteout at the source name (overlayfs's upper layer hides a lower file so).
    pub whiteout: bool,
}

/// A whiteout is a character device with these permission bits and device number (the
/// kernel's WHITEOUT_MODE and WHITEOUT_DEV): what overlayfs recognises.
const WHITEOUT_MODE: u32 = 0;
const WHITEOUT_DEV: u64 = 0;

impl Fs {
    /// Looks `name` up in directory `parent`.
    pub fn lookup(&self, ctx: &Ctx, parent: u64, name: &[u8]) -> R<Attr> {
        if name == b"." {
            // Path walks never ask for "." (the VFS answers it): this is a file handle.
            return self.lookup_handle(parent);
        }
        let mut tx = self.eng.begin(TransKind::Read)?;
        let (_, p) = inode::read(&mut tx, parent)?;
        if !is_dir(&p) {
            return Err(FsError::NotDir);
        }
        self.may(ctx, parent, &p, 1)?;
        let ino = match name {
            b".." => dir::parent(&p),
            _ => {
                check_name(name)?;
                dir::lookup(&mut tx, parent, &p, name)?
                    .ok_or(FsError::NotFound)?
                    .0
            }
        };
        // Let go of the parent first: its chunk may come after the child's in the lock order
        // (ascending block number), and a writer holding the child's chunk may be waiting for
        // it. Holding both here deadlocked readdirplus against link under stress-ng.
        tx.release_clean(crate::trans::BufMark::START, 0..u64::MAX);
        let (_, i) = inode::read(&mut tx, ino)?;
        tx.cancel()?;
        Ok(self.attr(ino, &i))
    }

    /// Inode `ino` itself, of any type, for a file handle: FUSE's export support asks for "."
    /// in an inode the kernel no longer caches (open_by_handle_at, NFS). The number comes from
    /// outside, so it is checked against the inode-chunk trees before its chunk is read; a free
    /// slot or a number that names no inode is ESTALE. The kernel compares the generation.
    pub(crate) fn lookup_handle(&self, ino: u64) -> R<Attr> {
        let mut tx = self.eng.begin(TransKind::Read)?;
        let known = self.alloc.is_inode_number(&mut tx, ino)?;
        tx.cancel()?;
        if !known {
            return Err(FsError::Stale);
        }
        let mut tx = self.eng.begin(TransKind::Read)?;
        let i = match inode::read(&mut tx, ino) {
            Ok((_, i)) => i,
            Err(EngineError::Stale(_)) => return Err(FsError::Stale),
            Err(e) => return Err(e.into()),
        };
        tx.cancel()?;
        Ok(self.attr(ino, &i))
    }

    /// The inode `name` names in `parent` now, without keeping locks (to know what to lock).
    pub(super) fn peek(&self, parent: u64, name: &[u8]) -> R<Option<u64>> {
        let mut tx = self.eng.begin(TransKind::Read)?;
        let (_, p) = inode::read(&mut tx, parent)?;
        if !is_dir(&p) {
            return Err(FsError::NotDir);
        }
        let r = dir::lookup(&mut tx, parent, &p, name)?.map(|x| x.0);
        tx.cancel()?;
        Ok(r)
    }

    pub(super) fn next_generation(&self) -> u32 {
        let mut g = self.generation.lock();
        *g = g.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *g
    }

    /// A free inode near `near` to claim, found before anything is locked (see
    /// alloc::peek_free_inode): the transaction that claims it joins its chunk in lock order.
    pub(super) fn free_inode_candidate(&self, near: u64) -> R<Option<u64>> {
        let mut tx = self.eng.begin(TransKind::Read)?;
        let c = self.alloc.peek_free_inode(&mut tx, near)?;
        tx.cancel()?;
        Ok(c)
    }

    /// What a creation of `mode` in directory `dir` decides before its transaction, in one
    /// read-only transaction: the new inode's mode and what it inherits
    /// ([`Fs::creation_mode`]), and a free inode to claim ([`Fs::free_inode_candidate`]).
    /// The creating transaction checks `dir` again under its lock.
    pub(super) fn plan_new_inode(&self, ctx: &Ctx, dir: u64, mode: u32) -> R<NewInode> {
        let mut tx = self.eng.begin(TransKind::Read)?;
        let (_, p) = inode::read(&mut tx, dir)?;
        let (mode, inherited) = Self::creation_mode(&mut tx, ctx, dir, &p, mode)?;
        let candidate = self.alloc.peek_free_inode(&mut tx, dir)?;
        tx.cancel()?;
        Ok(NewInode {
            mode,
            inherited,
            candidate,
        })
    }

    /// Claims `candidate` if it is still free, else an inode of a new chunk near `near`; the
    /// inode is joined to `tx`.
    pub(super) fn claim_inode(
        &self,
        tx: &mut Trans<'_>,
        near: u64,
        candidate: Option<u64>,
    ) -> R<(u64, inode::InodeRef)> {
        let claimed = match candidate {
            Some(c) if inode::join_new(tx, c).is_ok() && self.alloc.claim_inode(tx, c)? => Some(c),
            _ => None,
        };
        let ino = match claimed {
            Some(c) => c,
            None => self
                .alloc
                .alloc_inode_new_chunk(tx, near)?
                .ok_or_else(|| EngineError::NoSpace("no free inode".into()))?,
        };
        Ok((ino, inode::join_new(tx, ino)?))
    }

    /// A new inode of `mode` made by `ctx` in directory `p` at time `t`: owned by the caller,
    /// one link (two for a directory), with the set-group-ID rules of a local filesystem.
    pub(super) fn fresh_inode(&self, ctx: &Ctx, p: &Inode, mode: u32, rdev: u64, t: Time) -> Inode {
        let ftype = mode & S_IFMT;
        let mut i = Inode {
            mode,
            uid: ctx.uid,
            gid: ctx.gid,
            nlink: if ftype == S_IFDIR { 2 } else { 1 },
            generation: self.next_generation(),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            rdev: if matches!(ftype, S_IFCHR | S_IFBLK) {
                rdev
            } else {
                0
            },
            ..Default::default()
        };
        flags::inherit(p, ftype, &mut i);
        // A setgid directory passes its group on, and its setgid bit to subdirectories.
        if p.mode & S_ISGID != 0 {
            i.gid = p.gid;
            if ftype == S_IFDIR {
                i.mode |= S_ISGID;
            }
        } else if ftype != S_IFDIR && mode & S_ISGID != 0 && ctx.uid != 0 && !ctx.in_group(i.gid) {
            i.mode &= !S_ISGID;
        }
        i
    }

    /// Creates `name` in `parent`: a regular file, device, fifo or socket (`mode` has the type),
    /// a directory, or a symlink to `target`.
    pub fn make(
        &self,
        ctx: &Ctx,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u64,
        target: Option<&[u8]>,
    ) -> R<Attr> {
        self.writable()?;
        check_new_name(name)?;
        let ftype = mode & S_IFMT;
        if !matches!(
            ftype,
            S_IFREG | S_IFDIR | S_IFLNK | S_IFIFO | S_IFSOCK | S_IFCHR | S_IFBLK
        ) {
            return Err(FsError::Invalid(format!("file type {ftype:o}")));
        }
        if let Some(t) = target {
            if t.len() > SYMLINK_MAX || t.len() > self.symlink_block_max() {
                return Err(FsError::NameTooLong);
            }
            if t.is_empty() {
                return Err(FsError::NotFound);
            }
        }
        let NewInode {
            mode,
            inherited,
            candidate,
        } = self.plan_new_inode(ctx, parent, mode)?;
        let kind = match ftype {
            S_IFDIR => TransKind::Mkdir,
            S_IFLNK => TransKind::Symlink,
            _ => TransKind::Create,
        };
        let _blocks = self.promise(kind, false)?;
        let mut tx = self.eng.begin(kind)?;
        lock_chunks(&mut tx, &[parent, candidate.unwrap_or(0)])?;
        let (pr, mut p) = inode::read(&mut tx, parent)?;
        if !is_dir(&p) {
            return Err(FsError::NotDir);
        }
        if p.nlink == 0 {
            return Err(FsError::NotFound);
        }
        refuse_immutable(&p)?;
        self.may(ctx, parent, &p, 3)?;
        if dir::lookup(&mut tx, parent, &p, name)?.is_some() {
            return Err(FsError::Exists);
        }
        if ftype == S_IFDIR && p.nlink >= LINK_MAX {
            return Err(FsError::TooManyLinks);
        }
        let (ino, r) = self.claim_inode(&mut tx, parent, candidate)?;
        let t = now();
        let mut i = self.fresh_inode(ctx, &p, mode, rdev, t);
        match ftype {
            S_IFDIR => dir::init(&mut tx, &self.alloc, ino, &mut i, parent)?,
            S_IFLNK => self.store_symlink(&mut tx, ino, &mut i, target.unwrap_or_default())?,
            S_IFREG => i.set_extents(&[]),
            _ => {}
        }
        inode::write(&mut tx, &r, &i);
        dir::insert(&mut tx, &self.alloc, parent, &mut p, name, ino, dtype(mode))?;
        if ftype == S_IFDIR {
            p.nlink += 1;
        }
        p.mtime = t;
        p.ctime = t;
        inode::write(&mut tx, &pr, &p);
        tx.commit()?;
        self.note_change(ino);
        let inherits = inherited.is_some();
        if let Some(inh) = inherited {
            self.store_inherited(ino, inh)?;
        }
        self.durable_if(flags::is_sync(&p))?;
        if inherits {
            return self.getattr(ino);
        }
        Ok(self.attr(ino, &i))
    }

    /// Removes `name` from `parent`: a non-directory (`rmdir` false) or an empty directory.
    pub fn remove(&self, ctx: &Ctx, parent: u64, name: &[u8], rmdir: bool) -> R<()> {
        self.writable()?;
        check_name(name)?;
        if rmdir && name == b"." {
            return Err(FsError::Invalid("rmdir of .".into()));
        }
        for _ in 0..RETRIES_MAX {
            let child = self.peek(parent, name)?.ok_or(FsError::NotFound)?;
            let blocks = self.promise(TransKind::Remove, true)?;
            let mut tx = self.eng.begin(TransKind::Remove)?;
            lock_chunks(&mut tx, &[parent, child])?;
            let (pr, mut p) = inode::read(&mut tx, parent)?;
            if dir::lookup(&mut tx, parent, &p, name)?.map(|x| x.0) != Some(child) {
                tx.cancel()?;
                continue;
            }
            refuse_immutable(&p)?;
            self.may(ctx, parent, &p, 3)?;
            let (cr, mut c) = inode::read(&mut tx, child)?;
            sticky_ok(ctx, &p, &c)?;
            refuse_removal(&p, &c)?;
            match (rmdir, is_dir(&c)) {
                (false, true) => return Err(FsError::IsDir),
                (true, false) => return Err(FsError::NotDir),
                (true, true) if c.nextents != 0 => return Err(FsError::NotEmpty),
                _ => {}
            }
            dir::remove(&mut tx, &self.alloc, parent, &mut p, name)?;
            let t = now();
            if rmdir {
                c.nlink = 0;
                p.nlink = p.nlink.saturating_sub(1);
            } else {
                c.nlink -= 1;
            }
            c.ctime = t;
            p.mtime = t;
            p.ctime = t;
            inode::write(&mut tx, &pr, &p);
            inode::write(&mut tx, &cr, &c);
            if c.nlink == 0 {
                self.alloc.unlinked_add(&mut tx, child)?;
            }
            tx.commit()?;
            // Given back before the inode is freed, which promises its own: on a filesystem
            // down to the pool, both at once did not fit and the unlink failed with its name
            // gone.
            drop(blocks);
            self.note_change(child);
            if c.nlink == 0 {
                self.release_or_destroy(child)?;
            }
            self.durable_if(flags::is_sync(&p))?;
            return Ok(());
        }
        Err(FsError::Engine(EngineError::Invalid(format!(
            "{} kept changing under remove",
            String::from_utf8_lossy(name)
        ))))
    }

    /// Adds the name `newname` in `newparent` for `ino`.
    pub fn link(&self, ctx: &Ctx, ino: u64, newparent: u64, newname: &[u8]) -> R<Attr> {
        self.writable()?;
        check_new_name(newname)?;
        let _blocks = self.promise(TransKind::Link, false)?;
        let mut tx = self.eng.begin(TransKind::Link)?;
        lock_chunks(&mut tx, &[ino, newparent])?;
        let (pr, mut p) = inode::read(&mut tx, newparent)?;
        if !is_dir(&p) {
            return Err(FsError::NotDir);
        }
        refuse_immutable(&p)?;
        self.may(ctx, newparent, &p, 3)?;
        let (r, mut i) = inode::read(&mut tx, ino)?;
        refuse_fixed(&i)?;
        if is_dir(&i) {
            return Err(FsError::Perm);
        }
        // An inode with no link is linked in only while it is open and waiting for its last
        // close: an O_TMPFILE file (the kernel refuses the others, and ones opened O_EXCL).
        let adopted = i.nlink == 0 && self.orphans.lock().remove(&ino);
        if i.nlink == 0 && !adopted {
            return Err(FsError::NotFound);
        }
        let undo = |e: FsError| {
            if adopted {
                self.orphans.lock().insert(ino);
            }
            e
        };
        self.link_in(&mut tx, (newparent, &mut p, newname), ino, &i, adopted)
            .map_err(undo)?;
        let t = now();
        i.nlink += 1;
        i.ctime = t;
        p.mtime = t;
        p.ctime = t;
        inode::write(&mut tx, &r, &i);
        inode::write(&mut tx, &pr, &p);
        tx.commit()?;
        self.note_change(ino);
        self.durable_if(flags::is_sync(&p))?;
        Ok(self.attr(ino, &i))
    }

    /// The new entry of a link, and an adopted inode off the unlinked-inode tree.
    fn link_in(
        &self,
        tx: &mut Trans<'_>,
        (newparent, p, newname): (u64, &mut Inode, &[u8]),
        ino: u64,
        i: &Inode,
        adopted: bool,
    ) -> R<()> {
        if i.nlink >= LINK_MAX {
            return Err(FsError::TooManyLinks);
        }
        if dir::lookup(tx, newparent, p, newname)?.is_some() {
            return Err(FsError::Exists);
        }
        flags::refuse_other_project(p, i)?;
        dir::insert(tx, &self.alloc, newparent, p, newname, ino, dtype(i.mode))?;
        if adopted {
            self.alloc.unlinked_remove(tx, ino)?;
        }
        Ok(())
    }

    /// Is `dir` (a directory) `anc` or below it? Walks ".." up to the root.
    pub(super) fn is_within(&self, dir: u64, anc: u64) -> R<bool> {
        let mut cur = dir;
        for _ in 0..4096 {
            if cur == anc {
                return Ok(true);
            }
            if cur == self.root {
                return Ok(false);
            }
            cur = dir::parent(&self.read_inode(cur)?);
        }
        Err(FsError::Engine(EngineError::Invalid(
            "directory tree deeper than 4096 or looping".into(),
        )))
    }

    /// Takes the source name of a rename away: removed, or (`whiteout`) pointed at a new
    /// whiteout, the character device 0:0 overlayfs reads as "deleted here", made by `ctx`.
    fn leave_source(
        &self,
        tx: &mut Trans<'_>,
        ctx: &Ctx,
        (parent, p, name): (u64, &mut Inode, &[u8]),
        whiteout: bool,
        candidate: Option<u64>,
        t: Time,
    ) -> R<()> {
        if !whiteout {
            dir::remove(tx, &self.alloc, parent, p, name)?;
            return Ok(());
        }
        let (ino, r) = self.claim_inode(tx, parent, candidate)?;
        let mode = S_IFCHR | WHITEOUT_MODE;
        let w = self.fresh_inode(ctx, p, mode, WHITEOUT_DEV, t);
        inode::write(tx, &r, &w);
        dir::replace(tx, parent, p, name, ino, dtype(mode))?;
        self.note_change(ino);
        Ok(())
    }

    /// Renames `name` in `parent` to `newname` in `newparent`, as `how` says.
    pub fn rename(
        &self,
        ctx: &Ctx,
        (parent, name): (u64, &[u8]),
        (newparent, newname): (u64, &[u8]),
        how: RenameHow,
    ) -> R<()> {
        let RenameHow {
            noreplace,
            exchange,
            whiteout,
        } = how;
        self.writable()?;
        check_name(name)?;
        check_new_name(newname)?;
        if whiteout {
            perm::creator_named(ctx)?;
        }
        if whiteout && exchange {
            // Exchanging leaves no name behind to hide (the kernel refuses it first).
            return Err(FsError::Invalid(
                "RENAME_WHITEOUT with RENAME_EXCHANGE".into(),
            ));
        }
        let kind = if whiteout {
            TransKind::RenameWhiteout
        } else {
            TransKind::Rename
        };
        for _ in 0..RETRIES_MAX {
            let src = self.peek(parent, name)?.ok_or(FsError::NotFound)?;
            let dst = self.peek(newparent, newname)?;
            if exchange && dst.is_none() {
                return Err(FsError::NotFound);
            }
            if dst.is_some() && noreplace {
                return Err(FsError::Exists);
            }
            // Moving a directory below itself (the kernel serialises cross-directory renames).
            let src_is_dir = is_dir(&self.read_inode(src)?);
            if src_is_dir && parent != newparent && self.is_within(newparent, src)? {
                return Err(FsError::Invalid("moving a directory below itself".into()));
            }
            if let Some(d) = dst.filter(|_| exchange) {
                if is_dir(&self.read_inode(d)?)
                    && parent != newparent
                    && self.is_within(parent, d)?
                {
                    return Err(FsError::Invalid("moving a directory below itself".into()));
                }
            }
            let candidate = if whiteout {
                self.free_inode_candidate(parent)?
            } else {
                None
            };
            let blocks = self.promise(kind, false)?;
            let mut tx = self.eng.begin(kind)?;
            lock_chunks(
                &mut tx,
                &[
                    parent,
                    newparent,
                    src,
                    dst.unwrap_or(0),
                    candidate.unwrap_or(0),
                ],
            )?;
            let (pr, mut p) = inode::read(&mut tx, parent)?;
            let (npr, mut np) = inode::read(&mut tx, newparent)?;
            if !is_dir(&np) {
                return Err(FsError::NotDir);
            }
            if dir::lookup(&mut tx, parent, &p, name)?.map(|x| x.0) != Some(src)
                || dir::lookup(&mut tx, newparent, &np, newname)?.map(|x| x.0) != dst
            {
                tx.cancel()?;
                continue;
            }
            refuse_immutable(&p)?;
            self.may(ctx, parent, &p, 3)?;
            refuse_immutable(&np)?;
            self.may(ctx, newparent, &np, 3)?;
            let (sr, mut s) = inode::read(&mut tx, src)?;
            sticky_ok(ctx, &p, &s)?;
            refuse_removal(&p, &s)?;
            if Some(src) == dst {
                tx.cancel()?;
                return Ok(());
            }
            let t = now();
            let mut dst_inode = None;
            if let Some(d) = dst {
                let (dr, di) = inode::read(&mut tx, d)?;
                sticky_ok(ctx, &np, &di)?;
                refuse_removal(&np, &di)?;
                if !exchange {
                    match (is_dir(&s), is_dir(&di)) {
                        (true, false) => return Err(FsError::NotDir),
                        (false, true) => return Err(FsError::IsDir),
                        (true, true) if di.nextents != 0 => return Err(FsError::NotEmpty),
                        _ => {}
                    }
                }
                // A directory moving to another parent rewrites its "..": it needs write permission.
                if is_dir(&di) && exchange && parent != newparent {
                    self.may(ctx, d, &di, 2)?;
                }
                dst_inode = Some((d, dr, di));
            }
            if is_dir(&s) && parent != newparent {
                self.may(ctx, src, &s, 2)?;
            }
            flags::refuse_other_project(&np, &s)?;
            if let Some((_, _, di)) = dst_inode.as_ref().filter(|_| exchange) {
                flags::refuse_other_project(&p, di)?;
            }
            let same = parent == newparent;
            match dst_inode {
                Some((d, dr, mut di)) if exchange => {
                    // Swap the two entries.
                    let pp = if same { &mut np } else { &mut p };
                    dir::replace(&mut tx, parent, pp, name, d, dtype(di.mode))?;
                    dir::replace(&mut tx, newparent, &mut np, newname, src, dtype(s.mode))?;
                    if !same {
                        if is_dir(&s) {
                            dir::set_parent(&mut s, newparent);
                            p.nlink -= 1;
                            np.nlink += 1;
                        }
                        if is_dir(&di) {
                            dir::set_parent(&mut di, parent);
                            np.nlink -= 1;
                            p.nlink += 1;
                        }
                    }
                    di.ctime = t;
                    inode::write(&mut tx, &dr, &di);
                }
                Some((_, dr, mut di)) => {
                    dir::replace(&mut tx, newparent, &mut np, newname, src, dtype(s.mode))?;
                    if is_dir(&di) {
                        di.nlink = 0;
                        np.nlink -= 1;
                    } else {
                        di.nlink -= 1;
                    }
                    di.ctime = t;
                    inode::write(&mut tx, &dr, &di);
                    if di.nlink == 0 {
                        self.alloc.unlinked_add(&mut tx, dst.unwrap_or(0))?;
                    }
                    let pp = if same { &mut np } else { &mut p };
                    self.leave_source(&mut tx, ctx, (parent, pp, name), whiteout, candidate, t)?;
                }
                None => {
                    dir::insert(
                        &mut tx,
                        &self.alloc,
                        newparent,
                        &mut np,
                        newname,
                        src,
                        dtype(s.mode),
                    )?;
                    let pp = if same { &mut np } else { &mut p };
                    self.leave_source(&mut tx, ctx, (parent, pp, name), whiteout, candidate, t)?;
                }
            }
            if is_dir(&s) && !same && !exchange {
                dir::set_parent(&mut s, newparent);
                p.nlink -= 1;
                np.nlink += 1;
            }
            s.ctime = t;
            np.mtime = t;
            np.ctime = t;
            inode::write(&mut tx, &sr, &s);
            if !same {
                p.mtime = t;
                p.ctime = t;
                inode::write(&mut tx, &pr, &p);
            }
            inode::write(&mut tx, &npr, &np);
            tx.commit()?;
            // Given back before a replaced target is freed, which promises its own.
            drop(blocks);
            self.note_change(src);
            if let Some(d) = dst {
                self.note_change(d);
            }
            if let Some(d) = dst.filter(|_| !exchange) {
                if self.read_inode(d)?.nlink == 0 {
                    self.release_or_destroy(d)?;
                }
            }
            self.durable_if(flags::is_sync(&p) || flags::is_sync(&np))?;
            return Ok(());
        }
        Err(FsError::Engine(EngineError::Invalid(
            "rename target kept changing".into(),
        )))
    }
}
