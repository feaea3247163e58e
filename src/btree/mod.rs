//! One generic B+tree over metadata blocks, used by every tree in the filesystem (free space by
//! block and by length, inode chunks, file extents, directory hashes).
//!
//! Keys and values are fixed pairs of u64 ([`Key`], [`Val`]), compared lexicographically, so one
//! node format serves every tree. All work happens inside a transaction: nodes on the path are
//! joined to it (locked top-down, so two operations never lock in opposite orders), and every
//! change is logged. Node blocks come from a [`NodeAlloc`] the caller supplies: the free-space
//! trees draw theirs from the AG's free list, other trees from the allocator.
//!
//! Descent picks, in an interior node, the last entry whose key is <= the search key, the first
//! entry counting as minus infinity. So a deletion never has to rewrite parent keys: a separator
//! only has to be <= every key of its subtree and > every key of the subtrees before it, which a
//! deletion keeps true. A node left empty is freed and unlinked from its parent; a root left with
//! one child gives way to that child.

pub mod bulk;
mod node;

pub use node::Node;

use crate::error::EngineError;
use crate::format::{BlockType, FormatError};
use crate::trans::{BufId, Trans};

/// A key: two u64 compared in order (e.g. (start block, 0), or (length, start block)).
pub type Key = [u64; 2];
/// A value: two u64 (e.g. (length, 0), or (start block, length | flags)).
pub type Val = [u64; 2];

/// The tallest tree: the reservation table's heights are capped at the same value.
pub(crate) use crate::format::node::BTREE_HEIGHT_MAX;

/// Where a tree's root is and how tall the tree is. The owner (an AG header, an inode) stores it;
/// operations that change it return the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Root {
    pub blkno: u64,
    /// Levels below the root: 0 when the root is a leaf.
    pub level: u16,
}

/// Gives and takes the blocks a tree's nodes live in.
pub trait NodeAlloc {
    fn alloc_node(&mut self, tx: &mut Trans<'_>) -> Result<u64, EngineError>;
    fn free_node(&mut self, tx: &mut Trans<'_>, blkno: u64) -> Result<(), EngineError>;
}

/// A tree: its node type, owner and root.
#[derive(Debug, Clone, Copy)]
pub struct Btree {
    pub(crate) btype: BlockType,
    pub(crate) owner: u64,
    pub root: Root,
}

/// The path from the root to a leaf: (node, index of the entry taken / record found).
type Path = Vec<(BufId, usize)>;

/// The last step of a path. `descend` and `step` always push at least the root, so a path is
/// never empty; that is this module's invariant, not something read from disk.
fn at_leaf(path: &[(BufId, usize)]) -> (BufId, usize) {
    debug_assert!(!path.is_empty());
    path.last().copied().unwrap_or((BufId::NONE, 0))
}

impl Btree {
    /// Makes an empty tree: one empty leaf at `blkno`.
    pub fn create(
        tx: &mut Trans<'_>,
        btype: BlockType,
        owner: u64,
        blkno: u64,
    ) -> Result<Btree, EngineError> {
        let id = tx.get_buf(blkno, btype, owner)?;
        Node::init(tx, id, 0);
        Ok(Btree {
            btype,
            owner,
            root: Root { blkno, level: 0 },
        })
    }

    pub fn open(btype: BlockType, owner: u64, root: Root) -> Btree {
        Btree { btype, owner, root }
    }

    fn read(&self, tx: &mut Trans<'_>, blkno: u64, level: u16) -> Result<BufId, EngineError> {
        let id = tx.read_buf(blkno, self.btype)?;
        if !tx.structure_checked(id) {
            Node::check_structure(tx.data(id), blkno)?;
            tx.set_structure_checked(id);
        }
        let n = Node::new(tx.data(id), blkno)?;
        if n.level() != level || n.owner() != self.owner {
            return Err(EngineError::Corrupt(crate::format::FormatError::new(
                blkno,
                "B+tree node",
                if n.level() != level { "level" } else { "owner" },
                format!(
                    "level {} owner {}, expected level {level} owner {}",
                    n.level(),
                    n.owner(),
                    self.owner
                ),
            )));
        }
        Ok(id)
    }

    /// Descends to the leaf that would hold `key`.
    fn descend(&self, tx: &mut Trans<'_>, key: &Key) -> Result<Path, EngineError> {
        let mut path = Vec::with_capacity(self.root.level as usize + 1);
        let mut blkno = self.root.blkno;
        let mut level = self.root.level;
        loop {
            let id = self.read(tx, blkno, level)?;
            let n = Node::new(tx.data(id), blkno)?;
            if level == 0 {
                path.push((id, n.leaf_search(key)));
                return Ok(path);
            }
            let i = n.child_index(key);
            blkno = n.child(i);
            path.push((id, i));
            level -= 1;
        }
    }

    /// The record with exactly `key`.
    pub fn get(&self, tx: &mut Trans<'_>, key: &Key) -> Result<Option<Val>, EngineError> {
        let path = self.descend(tx, key)?;
        let (leaf, i) = at_leaf(&path);
        let n = Node::new(tx.data(leaf), tx.blkno(leaf))?;
        Ok((i < n.nrecs() && n.key(i) == *key).then(|| n.val(i)))
    }

    /// The record with the largest key <= `key`.
    pub fn le(&self, tx: &mut Trans<'_>, key: &Key) -> Result<Option<(Key, Val)>, EngineError> {
        let mut path = self.descend(tx, key)?;
        loop {
            let (leaf, i) = at_leaf(&path);
            let n = Node::new(tx.data(leaf), tx.blkno(leaf))?;
            // leaf_search gives the first record >= key.
            if i < n.nrecs() && n.key(i) == *key {
                return Ok(Some((n.key(i), n.val(i))));
            }
            if i > 0 {
                if n.key(i - 1) > *key {
                    return Err(self.out_of_order(tx.blkno(leaf), key, &n.key(i - 1)));
                }
                return Ok(Some((n.key(i - 1), n.val(i - 1))));
            }
            if !self.step(tx, &mut path, false)? {
                return Ok(None);
            }
            // Now at the end of the previous leaf.
            let (leaf, _) = at_leaf(&path);
            let nrecs = Node::new(tx.data(leaf), tx.blkno(leaf))?.nrecs();
            if let Some(last) = path.last_mut() {
                last.1 = nrecs;
            }
        }
    }

    /// The record with the smallest key >= `key`.
    pub fn ge(&self, tx: &mut Trans<'_>, key: &Key) -> Result<Option<(Key, Val)>, EngineError> {
        let mut path = self.descend(tx, key)?;
        loop {
            let (leaf, i) = at_leaf(&path);
            let n = Node::new(tx.data(leaf), tx.blkno(leaf))?;
            if i < n.nrecs() {
                if n.key(i) < *key {
                    return Err(self.out_of_order(tx.blkno(leaf), key, &n.key(i)));
                }
                return Ok(Some((n.key(i), n.val(i))));
            }
            if !self.step(tx, &mut path, true)? {
                return Ok(None);
            }
        }
    }

    /// A search for `key` landed on `found` on the wrong side of it: the tree's keys are out of
    /// order (a damaged node). Reported, so no walk goes round in circles.
    fn out_of_order(&self, blkno: u64, key: &Key, found: &Key) -> EngineError {
        EngineError::Corrupt(FormatError::new(
            blkno,
            self.btype.name(),
            "keys",
            format!("a search for {key:?} found {found:?}: keys out of order"),
        ))
    }

    /// The record with the smallest key > `key`.
    pub(crate) fn gt(
        &self,
        tx: &mut Trans<'_>,
        key: &Key,
    ) -> Result<Option<(Key, Val)>, EngineError> {
        match next_key(key) {
            Some(next) => self.ge(tx, &next),
            None => Ok(None),
        }
    }

    /// The first free collision index under `hash` in a tree keyed (hash, collision index): the
    /// smallest index no key (hash, index) holds, counting up from 0 over the keys in use.
    pub(crate) fn free_index(&self, tx: &mut Trans<'_>, hash: u64) -> Result<u64, EngineError> {
        let mut idx = 0;
        let mut at = self.ge(tx, &[hash, 0])?;
        while let Some((k, _)) = at {
            if k[0] != hash || k[1] != idx {
                break;
            }
            idx += 1;
            at = self.gt(tx, &k)?;
        }
        Ok(idx)
    }

    /// Calls `f` with every record from the first whose key is >= `from`, in key order, until `f`
    /// returns false: one descent, then leaf by leaf, so a walk over n records costs O(n) rather
    /// than a descent per record. Keys must strictly increase (a damaged tree is reported).
    pub(crate) fn scan_from(
        &self,
        tx: &mut Trans<'_>,
        from: &Key,
        mut f: impl FnMut(Key, Val) -> bool,
    ) -> Result<(), EngineError> {
        let mut path = self.descend(tx, from)?;
        let mut prev: Option<Key> = None;
        loop {
            let (leaf, i) = at_leaf(&path);
            let n = Node::new(tx.data(leaf), tx.blkno(leaf))?;
            for j in i..n.nrecs() {
                let k = n.key(j);
                if k < *from || prev.is_some_and(|p| p >= k) {
                    return Err(self.out_of_order(tx.blkno(leaf), &prev.unwrap_or(*from), &k));
                }
                prev = Some(k);
                if !f(k, n.val(j)) {
                    return Ok(());
                }
            }
            if !self.step(tx, &mut path, true)? {
                return Ok(());
            }
        }
    }

    /// Moves `path` to the first (forward) or last (backward) record of the next or previous leaf.
    /// Returns false at the end of the tree.
    fn step(
        &self,
        tx: &mut Trans<'_>,
        path: &mut Path,
        forward: bool,
    ) -> Result<bool, EngineError> {
        // Find the lowest interior level that can move.
        let mut depth = path.len() - 1;
        loop {
            if depth == 0 {
                return Ok(false);
            }
            depth -= 1;
            let (id, i) = path[depth];
            let n = Node::new(tx.data(id), tx.blkno(id))?;
            let can = if forward { i + 1 < n.nrecs() } else { i > 0 };
            if can {
                path[depth].1 = if forward { i + 1 } else { i - 1 };
                break;
            }
        }
        // Descend along the edge.
        path.truncate(depth + 1);
        let mut level = self.root.level - depth as u16;
        loop {
            let (id, i) = at_leaf(path);
            let child = Node::new(tx.data(id), tx.blkno(id))?.child(i);
            level -= 1;
            let cid = self.read(tx, child, level)?;
            let cn = Node::new(tx.data(cid), child)?;
            let idx = if forward || level == 0 {
                0
            } else {
                cn.nrecs() - 1
            };
            path.push((cid, idx));
            if level == 0 {
                return Ok(true);
            }
        }
    }

    /// Inserts a record; an existing `key` is an error (the caller checks first).
    #[track_caller]
    pub fn insert(
        &mut self,
        tx: &mut Trans<'_>,
        alloc: &mut dyn NodeAlloc,
        key: Key,
        val: Val,
    ) -> Result<(), EngineError> {
        let path = self.descend(tx, &key)?;
        let (leaf, i) = at_leaf(&path);
        {
            let n = Node::new(tx.data(leaf), tx.blkno(leaf))?;
            if i < n.nrecs() && n.key(i) == key {
                return Err(EngineError::Invalid(format!(
                    "B+tree insert: key {key:?} already present in block {}",
                    tx.blkno(leaf)
                )));
            }
        }
        // A key below an interior node's first key lowers that key (on every level where the
        // path took entry 0), so a later split of that child pushes up a separator above it.
        for &(id, i) in &path[..path.len() - 1] {
            if i == 0 && key < Node::new(tx.data(id), tx.blkno(id))?.key(0) {
                Node::set_key(tx, id, 0, key);
            }
        }
        // Insert at the leaf, splitting upwards while a node is full.
        let mut depth = path.len() - 1;
        let mut pending: Option<(Key, u64)> = None;
        let mut ins = Entry::Leaf(key, val);
        loop {
            let (id, pos) = path[depth];
            let pos = if depth == path.len() - 1 {
                pos
            } else {
                pos + 1
            };
            match Node::insert_at(tx, id, pos, &ins) {
                Ok(()) => break,
                Err(full) => {
                    debug_assert!(full);
                    let (sep, right) = self.split(tx, alloc, id, pos, &ins)?;
                    pending = Some((sep, right));
                    if depth == 0 {
                        break;
                    }
                    depth -= 1;
                    ins = Entry::Node(sep, right);
                    pending = None;
                    continue;
                }
            }
        }
        if let Some((sep, right)) = pending {
            // The root split: a new root above the old one and its new sibling.
            let old = self.root;
            if old.level + 1 >= BTREE_HEIGHT_MAX {
                return Err(EngineError::Invalid(format!(
                    "B+tree at block {} would pass {BTREE_HEIGHT_MAX} levels",
                    old.blkno
                )));
            }
            let blkno = alloc.alloc_node(tx)?;
            let id = tx.get_buf(blkno, self.btype, self.owner)?;
            Node::init(tx, id, old.level + 1);
            let first = Node::new(tx.data(path[0].0), old.blkno)?.key(0);
            Node::insert_at(tx, id, 0, &Entry::Node(first, old.blkno))
                .map_err(|_| full_err(blkno))?;
            Node::insert_at(tx, id, 1, &Entry::Node(sep, right)).map_err(|_| full_err(blkno))?;
            self.root = Root {
                blkno,
                level: old.level + 1,
            };
        }
        Ok(())
    }

    /// Splits full node `id` while inserting `ins` at `pos`: the upper half moves to a new node.
    /// Returns the new node's first key and block number.
    fn split(
        &self,
        tx: &mut Trans<'_>,
        alloc: &mut dyn NodeAlloc,
        id: BufId,
        pos: usize,
        ins: &Entry,
    ) -> Result<(Key, u64), EngineError> {
        let blkno = alloc.alloc_node(tx)?;
        let (level, mut entries) = {
            let n = Node::new(tx.data(id), tx.blkno(id))?;
            (n.level(), n.entries())
        };
        entries.insert(pos, *ins);
        let mid = entries.len() / 2;
        let right_entries = entries.split_off(mid);
        let rid = tx.get_buf(blkno, self.btype, self.owner)?;
        Node::init(tx, rid, level);
        Node::set_entries(tx, id, &entries);
        Node::set_entries(tx, rid, &right_entries);
        Ok((right_entries[0].key(), blkno))
    }

    /// Removes the record with `key`; returns its value, or None if absent.
    #[track_caller]
    pub fn delete(
        &mut self,
        tx: &mut Trans<'_>,
        alloc: &mut dyn NodeAlloc,
        key: &Key,
    ) -> Result<Option<Val>, EngineError> {
        let path = self.descend(tx, key)?;
        let (leaf, i) = at_leaf(&path);
        let val = {
            let n = Node::new(tx.data(leaf), tx.blkno(leaf))?;
            if i >= n.nrecs() || n.key(i) != *key {
                return Ok(None);
            }
            n.val(i)
        };
        // Remove upwards while a node becomes empty (never the root).
        let mut depth = path.len() - 1;
        loop {
            let (id, pos) = path[depth];
            Node::remove_at(tx, id, pos);
            let empty = Node::new(tx.data(id), tx.blkno(id))?.nrecs() == 0;
            if !empty || depth == 0 {
                break;
            }
            let blkno = tx.blkno(id);
            tx.invalidate(id);
            alloc.free_node(tx, blkno)?;
            depth -= 1;
        }
        // A root left with one child gives way to it.
        self.collapse_root(tx, alloc)?;
        Ok(Some(val))
    }

    fn collapse_root(
        &mut self,
        tx: &mut Trans<'_>,
        alloc: &mut dyn NodeAlloc,
    ) -> Result<(), EngineError> {
        while self.root.level > 0 {
            let id = self.read(tx, self.root.blkno, self.root.level)?;
            let n = Node::new(tx.data(id), self.root.blkno)?;
            if n.nrecs() != 1 {
                break;
            }
            let child = n.child(0);
            tx.invalidate(id);
            alloc.free_node(tx, self.root.blkno)?;
            self.root = Root {
                blkno: child,
                level: self.root.level - 1,
            };
        }
        Ok(())
    }

    /// Replaces the value of an existing `key`; false if absent.
    #[track_caller]
    pub fn update(&self, tx: &mut Trans<'_>, key: &Key, val: Val) -> Result<bool, EngineError> {
        let path = self.descend(tx, key)?;
        let (leaf, i) = at_leaf(&path);
        let n = Node::new(tx.data(leaf), tx.blkno(leaf))?;
        if i >= n.nrecs() || n.key(i) != *key {
            return Ok(false);
        }
        Node::set_val(tx, leaf, i, val);
        Ok(true)
    }

    /// Every record in key order (for checks and tests; walks the whole tree).
    pub fn collect(&self, tx: &mut Trans<'_>) -> Result<Vec<(Key, Val)>, EngineError> {
        let mut out: Vec<(Key, Val)> = Vec::new();
        self.scan_from(tx, &[0, 0], |k, v| {
            out.push((k, v));
            true
        })?;
        Ok(out)
    }

    /// Every block of the tree, nodes level by level (for checks: fsck, tests).
    pub fn blocks(&self, tx: &mut Trans<'_>) -> Result<Vec<u64>, EngineError> {
        let mut out = vec![self.root.blkno];
        let mut level_nodes = vec![self.root.blkno];
        let mut level = self.root.level;
        while level > 0 {
            let mut next = Vec::new();
            for &b in &level_nodes {
                let id = self.read(tx, b, level)?;
                let n = Node::new(tx.data(id), b)?;
                next.extend((0..n.nrecs()).map(|i| n.child(i)));
            }
            // A damaged tree may name a node twice: that is corruption, and must not multiply
            // the walk.
            let count = next.len();
            next.sort_unstable();
            next.dedup();
            if next.len() != count {
                return Err(EngineError::Corrupt(FormatError::new(
                    self.root.blkno,
                    self.btype.name(),
                    "children",
                    format!("a node at level {} is the child of two entries", level - 1),
                )));
            }
            out.extend_from_slice(&next);
            level_nodes = next;
            level -= 1;
        }
        Ok(out)
    }
}

/// The smallest key above `key` (None above the largest).
pub(crate) fn next_key(key: &Key) -> Option<Key> {
    if key[1] == u64::MAX {
        Some([key[0].checked_add(1)?, 0])
    } else {
        Some([key[0], key[1] + 1])
    }
}

fn full_err(blkno: u64) -> EngineError {
    EngineError::Invalid(format!("new B+tree root {blkno} cannot hold two entries"))
}

/// An entry of a node: a leaf record or an interior (key, child).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    Leaf(Key, Val),
    Node(Key, u64),
}

impl Entry {
    pub(crate) fn key(&self) -> Key {
        match self {
            Entry::Leaf(k, _) | Entry::Node(k, _) => *k,
        }
    }
}
