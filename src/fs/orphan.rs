//! Inodes with no links: freed when the last name goes, at the last close when still open,
//! or at the next mount after a crash (the unlinked trees).

use super::*;

impl Fs {
    /// Frees the inodes a crash left on the unlinked trees (no links, and nobody has them open
    /// after a mount).
    pub(super) fn free_orphans(&self) -> R<()> {
        let mut orphans = Vec::new();
        let mut tx = self.eng.begin(TransKind::Read)?;
        for agno in 0..self.eng.geometry().ag_count {
            orphans.extend(self.alloc.unlinked(&mut tx, agno)?);
        }
        tx.cancel()?;
        self.orphans_freed_at_mount
            .store(orphans.len() as u64, std::sync::atomic::Ordering::Relaxed);
        for ino in orphans {
            self.destroy(ino)?;
        }
        Ok(())
    }

    /// Inodes the mount freed from the unlinked trees (unlinked while open before a crash): the
    /// mount command reports them (a kernel filesystem would say so in its log).
    pub(crate) fn orphans_freed_at_mount(&self) -> u64 {
        self.orphans_freed_at_mount
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Inodes waiting on the unlinked trees (for checks and tests).
    pub fn unlinked(&self) -> R<Vec<u64>> {
        let mut tx = self.eng.begin(TransKind::Read)?;
        let mut out = Vec::new();
        for agno in 0..self.eng.geometry().ag_count {
            out.extend(self.alloc.unlinked(&mut tx, agno)?);
        }
        tx.cancel()?;
        Ok(out)
    }

    /// An unnamed regular file in directory `dir` (open(2)'s O_TMPFILE), opened for the caller:
    /// it waits on the unlinked-inode tree, so its last close or the next mount after a crash
    /// frees it, unless a link gives it a name first.
    pub fn tmpfile(&self, ctx: &Ctx, dir: u64, mode: u32) -> R<Attr> {
        self.writable()?;
        let super::names::NewInode {
            mode,
            inherited,
            candidate,
        } = self.plan_new_inode(ctx, dir, S_IFREG | (mode & 0o7777))?;
        let _blocks = self.promise(TransKind::Tmpfile, false)?;
        let mut tx = self.eng.begin(TransKind::Tmpfile)?;
        lock_chunks(&mut tx, &[dir, candidate.unwrap_or(0)])?;
        let (_, p) = inode::read(&mut tx, dir)?;
        if !is_dir(&p) {
            return Err(FsError::NotDir);
        }
        if p.nlink == 0 {
            return Err(FsError::NotFound);
        }
        refuse_immutable(&p)?;
        // As the kernel's vfs_tmpfile: the directory must be writable and searchable.
        self.may(ctx, dir, &p, 3)?;
        let (ino, r) = self.claim_inode(&mut tx, dir, candidate)?;
        let mut i = self.fresh_inode(ctx, &p, mode, 0, now());
        i.nlink = 0;
        i.set_extents(&[]);
        inode::write(&mut tx, &r, &i);
        self.alloc.unlinked_add(&mut tx, ino)?;
        tx.commit()?;
        // Open before anyone can know it: its last close finds it among the orphans.
        *self.open.lock().entry(ino).or_insert(0) += 1;
        self.eng.cache().charge_outside(HANDLE_BYTES);
        self.orphans.lock().insert(ino);
        self.note_change(ino);
        if let Some(inh) = inherited {
            self.store_inherited(ino, inh)?;
            return self.getattr(ino);
        }
        Ok(self.attr(ino, &i))
    }

    /// An inode lost its last link: free it now, or at its last close.
    pub(super) fn release_or_destroy(&self, ino: u64) -> R<()> {
        if self.open.lock().get(&ino).is_some_and(|&n| n > 0) {
            self.orphans.lock().insert(ino);
            return Ok(());
        }
        self.destroy(ino)
    }

    /// Frees an inode with no links: its data (rolling truncate), its attributes (a
    /// transaction per attribute of a tree), its map or directory root or symlink block, then
    /// the inode.
    pub(super) fn destroy(&self, ino: u64) -> R<()> {
        let _g = self.data_lock(ino);
        let i = self.read_inode(ino)?;
        debug_assert_eq!(i.nlink, 0);
        // An empty file (no size, no block: most of those a create/unlink storm makes) has
        // nothing to truncate, and skips that transaction.
        if i.mode & S_IFMT == S_IFREG && (i.size > 0 || i.blocks > 0) {
            self.io().truncate(ino, 0, now())?;
        }
        if i.xattr_blk != 0 {
            self.free_xattrs(ino)?;
        }
        let _blocks = self.promise(TransKind::Inactive, true)?;
        let mut tx = self.eng.begin(TransKind::Inactive)?;
        let (r, mut i) = inode::read(&mut tx, ino)?;
        match (i.mode & S_IFMT, i.format) {
            (S_IFDIR, DataFormat::Btree) => dir::destroy(&mut tx, &self.alloc, ino, &mut i)?,
            (S_IFLNK, DataFormat::Btree) => {
                let id = tx.read_buf(i.root, BlockType::Symlink)?;
                tx.invalidate(id);
                self.alloc.free(&mut tx, i.root, 1)?;
            }
            (S_IFREG, DataFormat::Btree) => {
                // The empty extent tree's root.
                let id = tx.read_buf(i.root, BlockType::BtreeExtent)?;
                tx.invalidate(id);
                self.alloc.free(&mut tx, i.root, 1)?;
            }
            _ => {}
        }
        if i.xattr_blk != 0 {
            return Err(FsError::Engine(EngineError::Invalid(format!(
                "inode {ino}: attributes left after they were freed"
            ))));
        }
        inode::clear(&mut tx, &r);
        self.alloc.unlinked_remove(&mut tx, ino)?;
        self.alloc.free_inode(&mut tx, ino)?;
        tx.commit()?;
        Ok(())
    }

    /// The last close of an open: an inode unlinked meanwhile is freed now.
    pub fn release(&self, ino: u64) -> R<()> {
        self.eng.cache().release_outside(HANDLE_BYTES);
        let last = {
            let mut o = self.open.lock();
            let n = o.entry(ino).or_insert(1);
            *n -= 1;
            let last = *n == 0;
            if last {
                o.remove(&ino);
            }
            last
        };
        if last && self.orphans.lock().remove(&ino) {
            self.destroy(ino)?;
        }
        Ok(())
    }
}
