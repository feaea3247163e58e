//! The namespace steps of fsck's repair, as filesystem operations (each one transaction, with
//! its block promise, like every other operation): entries dropped, retyped or added without
//! touching their targets' link counts, then every link count and ".." set from what the
//! directories hold. The repair plans what to do (crate::repair); these only do it.

use super::{dtype, is_dir, lock_chunks, Fs, R};
use crate::dir;
use crate::error::EngineError;
use crate::format::inode::Inode;
use crate::inode;
use crate::trans::{Trans, TransKind};
use std::collections::{HashMap, VecDeque};

impl Fs {
    /// One change to directory `d` in a transaction of `kind`; link counts are left alone
    /// ([`Fs::repair_links`] sets them).
    fn repair_dir(
        &self,
        d: u64,
        kind: TransKind,
        f: impl FnOnce(&mut crate::trans::Trans<'_>, &mut crate::format::inode::Inode) -> R<()>,
    ) -> R<()> {
        self.writable()?;
        let _blocks = self.promise(kind, true)?;
        let mut tx = self.eng.begin(kind)?;
        lock_chunks(&mut tx, &[d])?;
        let (r, mut di) = inode::read(&mut tx, d)?;
        if !is_dir(&di) {
            return Err(super::FsError::NotDir);
        }
        f(&mut tx, &mut di)?;
        inode::write(&mut tx, &r, &di);
        tx.commit()?;
        Ok(())
    }

    /// Removes the entry of directory `d` whose key is `key` (as readdir returned it).
    pub(crate) fn repair_drop(&self, d: u64, key: [u64; 2]) -> R<()> {
        self.repair_dir(d, TransKind::Remove, |tx, di| {
            match dir::remove_at(tx, &self.alloc, d, di, key)? {
                Some(_) => Ok(()),
                None => Err(super::FsError::NotFound),
            }
        })
    }

    /// Points the entry of directory `d` whose key is `key` at `ino`, `ftype`.
    pub(crate) fn repair_retype(&self, d: u64, key: [u64; 2], ino: u64, ftype: u8) -> R<()> {
        self.repair_dir(d, TransKind::Link, |tx, di| {
            match dir::retype_at(tx, d, di, key, ino, ftype)? {
                Some(_) => Ok(()),
                None => Err(super::FsError::NotFound),
            }
        })
    }

    /// Adds entry `name` -> `ino` (file type `ftype`) to directory `d`.
    pub(crate) fn repair_add(&self, d: u64, name: &[u8], ino: u64, ftype: u8) -> R<()> {
        super::check_name(name)?;
        self.repair_dir(d, TransKind::Link, |tx, di| {
            if dir::lookup(tx, d, di, name)?.is_some() {
                return Err(super::FsError::Exists);
            }
            dir::insert(tx, &self.alloc, d, di, name, ino, ftype)?;
            Ok(())
        })
    }

    /// Stores attribute `name` = `value` of `ino` anew: the repair's salvaged attributes put back
    /// into emptied attribute storage. No access rule, inode flag or time applies, and an ACL does
    /// not set the mode (the repair decided it). At most two transactions, as a setxattr: one
    /// moving the attributes into a tree when the block no longer holds them, then the set.
    pub(crate) fn repair_setxattr(&self, ino: u64, name: &[u8], value: &[u8]) -> R<()> {
        use crate::xattr::{Attr, SetOutcome, Target};
        self.writable()?;
        for _ in 0..2 {
            let _blocks = self.promise(TransKind::Xattr, true)?;
            let mut tx = self.eng.begin(TransKind::Xattr)?;
            let (r, mut i) = inode::read(&mut tx, ino)?;
            tx.hold(r.id);
            let mut roll = |tx: &mut Trans<'_>, i: &Inode| -> Result<(), EngineError> {
                inode::write(tx, &r, i);
                tx.roll().map(|_| ())
            };
            let mut t = Target {
                alloc: &self.alloc,
                ino,
                i: &mut i,
            };
            let done = match crate::xattr::set(&mut tx, &mut t, Attr { name, value }, &mut roll)? {
                SetOutcome::Done => Some(true),
                SetOutcome::NeedsTree => {
                    crate::xattr::to_tree(&mut tx, &mut t)?;
                    Some(false)
                }
                SetOutcome::NoSpace => None,
            };
            inode::write(&mut tx, &r, &i);
            tx.commit()?;
            match done {
                Some(true) => return Ok(()),
                Some(false) => {}
                None => {
                    return Err(super::FsError::Engine(EngineError::NoSpace(format!(
                        "inode {ino}: no free blocks for the value of {:?}",
                        String::from_utf8_lossy(name)
                    ))))
                }
            }
        }
        Err(super::FsError::Engine(crate::error::EngineError::Invalid(
            format!(
                "inode {ino}: attributes moved to a tree still do not take {:?}",
                String::from_utf8_lossy(name)
            ),
        )))
    }

    /// Walks the tree from the root and sets every reachable inode's link count (a directory: 2
    /// and one per subdirectory; anything else: its names) and every directory's "..". Returns
    /// what it changed, one line each.
    pub(crate) fn repair_links(&self) -> R<Vec<String>> {
        let root = self.root;
        let mut names: HashMap<u64, u32> = HashMap::new();
        let mut parent: HashMap<u64, u64> = HashMap::from([(root, root)]);
        let mut subdirs: HashMap<u64, u32> = HashMap::new();
        let mut queue = VecDeque::from([root]);
        while let Some(d) = queue.pop_front() {
            let mut cookie = 0;
            loop {
                let batch = self.readdir_raw(d, cookie)?;
                let Some(last) = batch.last() else { break };
                cookie = last.cookie;
                for e in batch.iter().filter(|e| e.name != b"." && e.name != b"..") {
                    *names.entry(e.ino).or_insert(0) += 1;
                    if e.ftype == dtype(super::S_IFDIR) && !parent.contains_key(&e.ino) {
                        parent.insert(e.ino, d);
                        *subdirs.entry(d).or_insert(0) += 1;
                        queue.push_back(e.ino);
                    }
                }
            }
        }
        let mut changed = Vec::new();
        let mut all: Vec<u64> = names.keys().copied().chain([root]).collect();
        all.sort_unstable();
        all.dedup();
        for ino in all {
            let _blocks = self.promise(TransKind::Setattr, true)?;
            let mut tx = self.eng.begin(TransKind::Setattr)?;
            lock_chunks(&mut tx, &[ino])?;
            let (r, mut i) = inode::read(&mut tx, ino)?;
            let (want, up) = if is_dir(&i) {
                (
                    2 + subdirs.get(&ino).copied().unwrap_or(0),
                    parent.get(&ino).copied(),
                )
            } else {
                (names.get(&ino).copied().unwrap_or(0), None)
            };
            let mut what = Vec::new();
            if i.nlink != want {
                what.push(format!("link count {} -> {want}", i.nlink));
                i.nlink = want;
            }
            if let Some(p) = up.filter(|&p| p != dir::parent(&i)) {
                what.push(format!("\"..\" {} -> {p}", dir::parent(&i)));
                dir::set_parent(&mut i, p);
            }
            if what.is_empty() {
                tx.cancel()?;
                continue;
            }
            inode::write(&mut tx, &r, &i);
            tx.commit()?;
            changed.push(format!("inode {ino}: {}", what.join(", ")));
        }
        Ok(changed)
    }

    /// A batch of directory entries, without the access-time update readdir makes.
    fn readdir_raw(&self, d: u64, cookie: u64) -> R<Vec<dir::DirEntry>> {
        let mut tx = self.eng.begin(TransKind::Read)?;
        let (_, i) = inode::read(&mut tx, d)?;
        let out = dir::read(&mut tx, d, &i, cookie, 1024)?;
        tx.cancel()?;
        if out.iter().any(|e| e.cookie <= cookie) {
            return Err(super::FsError::Invalid(format!(
                "directory {d}: readdir from cookie {cookie} does not advance"
            )));
        }
        Ok(out)
    }
}
