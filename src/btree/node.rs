//! B+tree nodes: a view that reads entries and a writer that logs what it changes. The layout
//! is `format::node`'s.

use super::{Entry, Key, Val};
pub(crate) use crate::format::node::{
    capacity, BTREE_HEIGHT_MAX, BTREE_NODE_HEADER_BYTES, RECORD_BYTES,
};
use crate::format::node::{entry_width as width, OFF_LEVEL, OFF_NRECS};
use crate::format::{Dec, Enc, FormatError, BLOCK_HEADER_BYTES};
use crate::trans::{BufId, Trans};

/// A read-only view of a node's bytes: level and entry count checked when made; the order of
/// the keys and the children's numbers by `check_structure`, once per read from disk
/// (`Btree::read`), and at every view in debug builds.
pub struct Node<'a> {
    b: &'a [u8],
    level: u16,
    nrecs: usize,
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

impl<'a> Node<'a> {
    pub(crate) fn new(b: &'a [u8], blkno: u64) -> Result<Node<'a>, FormatError> {
        let d = Dec::new(b, blkno, "B+tree node");
        let level = d.u16(OFF_LEVEL, "level")?;
        if level >= BTREE_HEIGHT_MAX {
            return Err(d.err(
                "level",
                format!("{level} is not below the height limit {BTREE_HEIGHT_MAX}"),
            ));
        }
        let nrecs = d.u16(OFF_NRECS, "nrecs")? as usize;
        let cap = capacity(b.len(), level);
        if nrecs > cap {
            return Err(d.err(
                "nrecs",
                format!("{nrecs} entries, a node of level {level} holds {cap}"),
            ));
        }
        let n = Node { b, level, nrecs };
        if cfg!(debug_assertions) {
            n.check_entries(&d, blkno)?;
        }
        Ok(n)
    }

    /// The whole structure of the node in `b` (read from block `blkno`): level, count, keys in
    /// strictly ascending order, children neither 0 nor the node itself.
    pub fn check_structure(b: &[u8], blkno: u64) -> Result<(), FormatError> {
        let n = Node::new(b, blkno)?;
        n.check_entries(&Dec::new(b, blkno, "B+tree node"), blkno)
    }

    fn check_entries(&self, d: &Dec<'_>, blkno: u64) -> Result<(), FormatError> {
        let (n, nrecs, level) = (self, self.nrecs, self.level);
        for i in 1..nrecs {
            if n.key(i - 1) >= n.key(i) {
                return Err(d.err(
                    "keys",
                    format!(
                        "entry {i} key {:?} is not above {:?}",
                        n.key(i),
                        n.key(i - 1)
                    ),
                ));
            }
        }
        if level > 0 {
            for i in 0..nrecs {
                if n.child(i) == 0 || n.child(i) == blkno {
                    return Err(d.err("child", format!("entry {i} points at block {}", n.child(i))));
                }
            }
        }
        Ok(())
    }
    pub(crate) fn level(&self) -> u16 {
        self.level
    }
    pub(crate) fn nrecs(&self) -> usize {
        self.nrecs
    }
    pub(crate) fn owner(&self) -> u64 {
        u64_at(self.b, 16)
    }
    fn off(&self, i: usize) -> usize {
        BTREE_NODE_HEADER_BYTES + i * width(self.level)
    }
    pub(crate) fn key(&self, i: usize) -> Key {
        let o = self.off(i);
        [u64_at(self.b, o), u64_at(self.b, o + 8)]
    }
    pub(crate) fn val(&self, i: usize) -> Val {
        debug_assert_eq!(self.level, 0);
        let o = self.off(i);
        [u64_at(self.b, o + 16), u64_at(self.b, o + 24)]
    }
    pub(crate) fn child(&self, i: usize) -> u64 {
        debug_assert!(self.level > 0);
        u64_at(self.b, self.off(i) + 16)
    }
    /// First index whose key is >= `key` (nrecs if none).
    pub(crate) fn leaf_search(&self, key: &Key) -> usize {
        let (mut lo, mut hi) = (0, self.nrecs);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.key(mid) < *key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
    /// The child to descend into for `key`: the last entry whose key is <= `key`, the first
    /// entry standing for everything below its key too.
    pub(crate) fn child_index(&self, key: &Key) -> usize {
        let i = self.leaf_search(key);
        if i < self.nrecs && self.key(i) == *key {
            i
        } else {
            i.saturating_sub(1)
        }
    }
    pub(crate) fn entry(&self, i: usize) -> Entry {
        if self.level == 0 {
            Entry::Leaf(self.key(i), self.val(i))
        } else {
            Entry::Node(self.key(i), self.child(i))
        }
    }
    pub(crate) fn entries(&self) -> Vec<Entry> {
        (0..self.nrecs).map(|i| self.entry(i)).collect()
    }

    // Changes, made and logged inside a transaction.

    fn write_header(tx: &mut Trans<'_>, id: BufId, level: u16, nrecs: usize) {
        let b = tx.data_mut(id);
        let mut e = Enc::new(b);
        e.u16(OFF_LEVEL, level);
        e.u16(OFF_NRECS, nrecs as u16);
        e.u32(OFF_NRECS + 2, 0);
        e.u64(56, 0);
        e.u64(64, 0);
        tx.log_range(id, BLOCK_HEADER_BYTES..BTREE_NODE_HEADER_BYTES);
    }

    fn write_entry(b: &mut [u8], off: usize, e: &Entry) {
        let mut enc = Enc::new(b);
        let k = e.key();
        enc.u64(off, k[0]);
        enc.u64(off + 8, k[1]);
        match e {
            Entry::Leaf(_, v) => {
                enc.u64(off + 16, v[0]);
                enc.u64(off + 24, v[1]);
            }
            Entry::Node(_, c) => enc.u64(off + 16, *c),
        }
    }

    /// Encodes a whole node of `level` holding `entries` into `b` (after its block header), outside
    /// any transaction: the bulk builder's writer.
    pub(crate) fn encode(b: &mut [u8], level: u16, entries: &[Entry]) {
        debug_assert!(entries.len() <= capacity(b.len(), level));
        let mut e = Enc::new(b);
        e.u16(OFF_LEVEL, level);
        e.u16(OFF_NRECS, entries.len() as u16);
        e.u32(OFF_NRECS + 2, 0);
        e.u64(56, 0);
        e.u64(64, 0);
        b[BTREE_NODE_HEADER_BYTES..].fill(0);
        for (i, en) in entries.iter().enumerate() {
            debug_assert_eq!(matches!(en, Entry::Leaf(..)), level == 0);
            Self::write_entry(b, BTREE_NODE_HEADER_BYTES + i * width(level), en);
        }
    }

    /// A fresh empty node of `level` (the block was joined with `get_buf`).
    pub(crate) fn init(tx: &mut Trans<'_>, id: BufId, level: u16) {
        Self::write_header(tx, id, level, 0);
    }

    fn level_nrecs(tx: &Trans<'_>, id: BufId) -> (u16, usize) {
        let b = tx.data(id);
        (
            u16::from_le_bytes([b[OFF_LEVEL], b[OFF_LEVEL + 1]]),
            u16::from_le_bytes([b[OFF_NRECS], b[OFF_NRECS + 1]]) as usize,
        )
    }

    /// Inserts `e` at `pos`; Err(true) when the node is full (nothing changed).
    pub(crate) fn insert_at(
        tx: &mut Trans<'_>,
        id: BufId,
        pos: usize,
        e: &Entry,
    ) -> Result<(), bool> {
        let (level, n) = Self::level_nrecs(tx, id);
        let w = width(level);
        if n >= capacity(tx.data(id).len(), level) {
            return Err(true);
        }
        debug_assert!(pos <= n);
        debug_assert_eq!(matches!(e, Entry::Leaf(..)), level == 0);
        let start = BTREE_NODE_HEADER_BYTES + pos * w;
        let end = BTREE_NODE_HEADER_BYTES + n * w;
        let b = tx.data_mut(id);
        b.copy_within(start..end, start + w);
        Self::write_entry(b, start, e);
        tx.log_range(id, start..end + w);
        Self::write_header(tx, id, level, n + 1);
        Ok(())
    }

    pub(crate) fn remove_at(tx: &mut Trans<'_>, id: BufId, pos: usize) {
        let (level, n) = Self::level_nrecs(tx, id);
        let w = width(level);
        debug_assert!(pos < n);
        let start = BTREE_NODE_HEADER_BYTES + pos * w;
        let end = BTREE_NODE_HEADER_BYTES + n * w;
        let b = tx.data_mut(id);
        b.copy_within(start + w..end, start);
        b[end - w..end].fill(0);
        tx.log_range(id, start..end);
        Self::write_header(tx, id, level, n - 1);
    }

    /// Replaces all entries (after a split).
    pub(crate) fn set_entries(tx: &mut Trans<'_>, id: BufId, entries: &[Entry]) {
        let (level, n) = Self::level_nrecs(tx, id);
        let w = width(level);
        let b = tx.data_mut(id);
        let end = BTREE_NODE_HEADER_BYTES + n.max(entries.len()) * w;
        b[BTREE_NODE_HEADER_BYTES..end].fill(0);
        for (i, e) in entries.iter().enumerate() {
            Self::write_entry(b, BTREE_NODE_HEADER_BYTES + i * w, e);
        }
        if end > BTREE_NODE_HEADER_BYTES {
            tx.log_range(id, BTREE_NODE_HEADER_BYTES..end);
        }
        Self::write_header(tx, id, level, entries.len());
    }

    pub(crate) fn set_key(tx: &mut Trans<'_>, id: BufId, i: usize, k: Key) {
        let (level, _) = Self::level_nrecs(tx, id);
        let off = BTREE_NODE_HEADER_BYTES + i * width(level);
        let mut e = Enc::new(tx.data_mut(id));
        e.u64(off, k[0]);
        e.u64(off + 8, k[1]);
        tx.log_range(id, off..off + 16);
    }

    pub(crate) fn set_val(tx: &mut Trans<'_>, id: BufId, i: usize, v: Val) {
        let off = BTREE_NODE_HEADER_BYTES + i * RECORD_BYTES + 16;
        let mut e = Enc::new(tx.data_mut(id));
        e.u64(off, v[0]);
        e.u64(off + 8, v[1]);
        tx.log_range(id, off..off + 16);
    }
}
