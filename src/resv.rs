//! The reservation table: for each transaction kind, the worst-case number of metadata buffers it
//! may change, and from that the log bytes and memory it reserves at `Trans::begin`.
//!
//! Each entry reads like `xfs_trans_resv.c`: what the operation may modify, and what each part
//! costs, in buffers. From the buffer count:
//!   log bytes  = buffers x (the largest logged item of one block) + checkpoint overhead
//!   memory     = buffers x 2 x (block + per-buffer bookkeeping): the buffer itself, pinned dirty
//!                until written home, and its formatted copy in the CIL until checkpointed.
//! Tree heights come from the geometry: the most records a tree can hold, over the fan-out of its
//! nodes (`format::node`), capped at [`BTREE_HEIGHT_MAX`].

use crate::cache::BUF_OVERHEAD_BYTES;
use crate::format::attrtree::{self as at, XATTR_ENTRIES_MAX};
use crate::format::node::{capacity, BTREE_HEIGHT_MAX};
use crate::format::xattrblock::{ENTRIES_OFF as XA_ENTRIES_OFF, ENTRY_HDR as XA_ENTRY_HDR};
use crate::format::Geometry;
use crate::log::{Log, LOG_RESERVE_BLOCKS};

/// Most entries a directory may hold: bounds the directory hash tree's height.
pub(crate) const DIR_ENTRIES_MAX: u64 = 1 << 32;
/// A rolling truncate frees this many extents per step before it rolls.
pub(crate) const TRUNCATE_LOG_COUNT: u32 = 8;
/// Freeing an inode at last close: remove it from the unlinked list, then free its chunk.
pub(crate) const INACTIVE_LOG_COUNT: u32 = 2;

/// The kinds of transaction, one per metadata operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TransKind {
    Create,
    Mkdir,
    Link,
    Remove,
    Rename,
    /// A rename that leaves a whiteout at the source name (RENAME_WHITEOUT).
    RenameWhiteout,
    /// An unnamed file (O_TMPFILE), made straight onto the unlinked-inode tree.
    Tmpfile,
    Symlink,
    Setattr,
    Write,
    Truncate,
    Xattr,
    Inactive,
    /// Reads metadata only: reserves nothing and never waits; pinning anything is an overrun.
    Read,
}

pub(crate) const KIND_COUNT: usize = 14;

impl TransKind {
    pub(crate) const ALL: [TransKind; KIND_COUNT] = [
        TransKind::Create,
        TransKind::Mkdir,
        TransKind::Link,
        TransKind::Remove,
        TransKind::Rename,
        TransKind::RenameWhiteout,
        TransKind::Tmpfile,
        TransKind::Symlink,
        TransKind::Setattr,
        TransKind::Write,
        TransKind::Truncate,
        TransKind::Xattr,
        TransKind::Inactive,
        TransKind::Read,
    ];
    pub(crate) fn index(self) -> usize {
        self as usize
    }
    pub(crate) fn name(self) -> &'static str {
        match self {
            TransKind::Create => "create",
            TransKind::Mkdir => "mkdir",
            TransKind::Link => "link",
            TransKind::Remove => "remove",
            TransKind::Rename => "rename",
            TransKind::RenameWhiteout => "rename-whiteout",
            TransKind::Tmpfile => "tmpfile",
            TransKind::Symlink => "symlink",
            TransKind::Setattr => "setattr",
            TransKind::Write => "write",
            TransKind::Truncate => "truncate",
            TransKind::Xattr => "xattr",
            TransKind::Inactive => "inactive",
            TransKind::Read => "read",
        }
    }
}

/// One attribute change as the inode stands, what [`ResvTable::xattr_change`] sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum XattrChange {
    /// The inode is in the block form and the result fits its block: the block rewritten in
    /// place, or freed; `allocates` when the inode has no block yet.
    Block { allocates: bool },
    /// The inode is in the block form and the result does not fit: this step moves its
    /// `entries` attributes (records of `record_bytes` in the tree, values of `remote_blocks`
    /// remote blocks) into a new tree; the change is a step of its own after it.
    /// `new_remote` is that of the set after it, as in `Tree`.
    ToTree {
        entries: u64,
        record_bytes: u64,
        remote_blocks: u64,
        new_remote: u64,
    },
    /// The inode's tree has `levels` levels (0: it has no attributes, and the set makes a tree
    /// for a value too large for an xattr block); the new value takes `new_remote` remote blocks
    /// and replaces a value of `old_remote` remote blocks (None: nothing replaced).
    Tree {
        levels: u32,
        new_remote: u64,
        old_remote: Option<u64>,
    },
}

/// One entry of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resv {
    /// Most buffers one step may log.
    pub buffers: u32,
    /// Log bytes of one step.
    pub log_unit_bytes: u64,
    /// Steps reserved up front (1 for a plain transaction; more for a rolling one).
    pub log_count: u32,
    /// Memory one step may pin.
    pub mem_bytes: u64,
}

/// Tree heights derived from the geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Heights {
    pub(crate) free_space: u32,
    pub(crate) inode: u32,
    pub(crate) extent: u32,
    pub(crate) dir: u32,
    pub(crate) xattr: u32,
}

/// Levels a B+tree of `records` needs with blocks of `bs`.
pub(crate) fn btree_height(records: u64, bs: u32) -> u32 {
    let leaf = capacity(bs as usize, 0) as u64;
    let node = capacity(bs as usize, 1) as u64;
    let mut h = 1;
    let mut cap = leaf;
    while cap < records && h < BTREE_HEIGHT_MAX as u32 {
        cap = cap.saturating_mul(node);
        h += 1;
    }
    h
}

#[derive(Debug, Clone)]
pub struct ResvTable {
    pub(crate) block_size: u32,
    pub(crate) heights: Heights,
    entries: [Resv; KIND_COUNT],
}

impl ResvTable {
    pub fn new(g: &Geometry) -> ResvTable {
        let bs = g.block_size;
        let heights = Heights {
            // Free extents alternate with used ones at worst: half the AG's blocks.
            free_space: btree_height(g.ag_blocks / 2 + 1, bs),
            // One record per inode chunk; a chunk is at least one block.
            inode: btree_height(g.ag_blocks, bs),
            // A file fragmented to single blocks over the whole device.
            extent: btree_height(g.block_count, bs),
            dir: btree_height(DIR_ENTRIES_MAX, bs),
            xattr: btree_height(XATTR_ENTRIES_MAX, bs),
        };
        let mut t = ResvTable {
            block_size: bs,
            heights,
            entries: [Resv {
                buffers: 0,
                log_unit_bytes: 0,
                log_count: 1,
                mem_bytes: 0,
            }; KIND_COUNT],
        };
        for k in TransKind::ALL {
            let (buffers, count) = t.buffers_for(k);
            t.entries[k.index()] = t.resv_for(buffers, count);
        }
        t.entries[TransKind::Read.index()] = Resv {
            buffers: 0,
            log_unit_bytes: 0,
            log_count: 1,
            mem_bytes: 0,
        };
        t
    }

    /// A tree update that may split every level up to the root: the path, and a new sibling per
    /// level but the root's (XFS: 2 x levels - 1).
    fn split(h: u32) -> u32 {
        2 * h - 1
    }

    /// Allocating or freeing one extent: the AG header, and both free-space trees split or
    /// joined up to the root, twice: once to top up the AG free list, once for the extent.
    fn alloc(&self) -> u32 {
        1 + 4 * Self::split(self.heights.free_space)
    }

    /// Allocating an inode: the AG header, the inode-chunk tree, the new chunk's first block, and
    /// the allocation of a new chunk's extent.
    fn inode_alloc(&self) -> u32 {
        1 + Self::split(self.heights.inode) + 1 + self.alloc()
    }

    /// Adding a directory entry: the data block holding it, the hash tree split to the root, and
    /// the allocation of a new data block and of the new tree nodes (one extent).
    fn dir_insert(&self) -> u32 {
        1 + Self::split(self.heights.dir) + self.alloc()
    }

    /// Removing a directory entry: the data block, the tree path with merges, and freeing a block.
    fn dir_remove(&self) -> u32 {
        1 + Self::split(self.heights.dir) + self.alloc()
    }

    /// Adding an inode to or removing it from the AG's unlinked-inode tree: the AG header, the
    /// tree split (or joined) to the root, and allocating or freeing its nodes.
    fn unlinked(&self) -> u32 {
        1 + Self::split(self.heights.inode) + self.alloc()
    }

    /// Changing a file's extent map: the extent tree split to the root plus its new blocks.
    fn extent_map(&self) -> u32 {
        Self::split(self.heights.extent) + self.alloc()
    }

    /// Setting an attribute in the tree form, at worst a value of XATTR_SIZE_MAX replacing
    /// another in a tree of the greatest height.
    fn xattr_set(&self) -> u32 {
        let remote = at::remote_blocks_max(self.block_size as usize);
        self.xattr_tree_set(self.heights.xattr, remote, Some(remote))
    }

    /// Setting an attribute in a tree of `levels` levels (0: none yet, its root made here, with
    /// its allocation, for a first value too large for an xattr block): the inode; the tree split to the root
    /// by an insert, which may add a level (a replace updates one path; a removal joins along
    /// one); the entry block the record is appended to, or a new one, with its allocation and the
    /// new tree nodes' (one extent); the new value's `new_remote` remote blocks, new and logged
    /// whole, with their allocation (one extent); and when it replaces a record (`old_remote`:
    /// that value's remote blocks), its entry block, freed when it was its last, and the
    /// freeing, and the old value's remote blocks cancelled and their extent freed. A value the
    /// free space holds only in several runs is written, or freed, one run per step of a rolled
    /// transaction (`xattr::tree`): each step is a part of this one (a run, its allocation and
    /// the block linking it; a record's flag), so this is the unit of every step.
    fn xattr_tree_set(&self, levels: u32, new_remote: u64, old_remote: Option<u64>) -> u32 {
        let root = if levels == 0 { 1 + self.alloc() } else { 0 };
        let grown = (levels + 1).clamp(1, self.heights.xattr);
        let remote = |r: u64| match r {
            0 => 0,
            r => r as u32 + self.alloc(),
        };
        let old = match old_remote {
            None => 0,
            Some(r) => 1 + self.alloc() + remote(r),
        };
        root + 1 + Self::split(grown) + 1 + self.alloc() + remote(new_remote) + old
    }

    /// Moving an inode's attributes from its one xattr block into a new tree, at worst a block
    /// full of the shortest entries: as many as the block holds (each at least a 5-byte name,
    /// "user.", and its 3-byte header), their records (each its xattr-block entry and 3 bytes
    /// more, or less when its value goes remote), and two remote blocks (a value too large for
    /// a record takes more than half the xattr block, and fits one).
    fn xattr_convert(&self) -> u32 {
        let room = self.block_size as usize - XA_ENTRIES_OFF;
        let entries = room / (XA_ENTRY_HDR + 5);
        let records = room + entries * (at::RECORD_HDR - XA_ENTRY_HDR);
        self.xattr_convert_of(entries as u64, records as u64, 2)
    }

    /// Moving `entries` attributes whose records take `record_bytes` and whose values take
    /// `remote_blocks` remote blocks into a new tree: the inode; the xattr block cancelled and
    /// freed; every node of a tree of that many records, inserted in key order so that leaves
    /// split half full; the entry blocks the records fill in turn (a record is at most
    /// `local_max` bytes, so each block but the last holds all but that much); the remote
    /// blocks; and the allocations of nodes, entry blocks and remote blocks, one extent each but
    /// the remote blocks: a value from the block takes at most two, which free space broken into
    /// single blocks gives as two runs.
    fn xattr_convert_of(&self, entries: u64, record_bytes: u64, remote_blocks: u64) -> u32 {
        let (nodes, _) = Self::convert_tree(self.block_size as usize, entries);
        let entry_blocks = self.convert_entry_blocks(record_bytes);
        let remote_allocs = remote_blocks.clamp(1, 2) as u32;
        (1 + 1 + self.alloc())
            + (nodes + entry_blocks + remote_blocks) as u32
            + (2 + remote_allocs) * self.alloc()
    }

    /// The nodes and levels of a tree of `entries` records inserted in key order: leaves split
    /// half full, and so do the nodes above them.
    fn convert_tree(bs: usize, entries: u64) -> (u64, u32) {
        let leaf_half = (capacity(bs, 0) / 2).max(1) as u64;
        let node_half = (capacity(bs, 1) / 2).max(2) as u64;
        let mut nodes = entries.div_ceil(leaf_half).max(1);
        let (mut level, mut levels) = (nodes, 1);
        while level > 1 {
            level = level.div_ceil(node_half);
            nodes += level;
            levels += 1;
        }
        (nodes, levels)
    }

    /// Blocks one attribute change may add to the inode's attributes, promised before it
    /// begins (as XFS's `xfs_attr_calc_size` counts a set's blocks from its lengths): the xattr
    /// block; or a new entry block, a new node per level of the tree and a new root (an insert
    /// split to the root), and the new value's remote blocks; for a move into a tree, every node,
    /// entry block and remote block of the tree it makes, and those of the set after it in that
    /// tree, so that a set the space cannot take fails before the move, with the inode as it
    /// was. The free-space trees' new nodes come from the AG's free list, refilled from the
    /// blocks each AG keeps back (`AG_RESERVE_BLOCKS`), which no promise counts.
    pub(crate) fn xattr_blocks(&self, c: XattrChange) -> u64 {
        let tree_set = |levels: u32, new_remote: u64| 1 + (levels as u64 + 1) + new_remote;
        match c {
            XattrChange::Block { allocates } => allocates as u64,
            XattrChange::Tree {
                levels, new_remote, ..
            } => tree_set(levels, new_remote),
            XattrChange::ToTree {
                entries,
                record_bytes,
                remote_blocks,
                new_remote,
                ..
            } => {
                let (nodes, levels) = Self::convert_tree(self.block_size as usize, entries);
                nodes
                    + self.convert_entry_blocks(record_bytes)
                    + remote_blocks
                    + tree_set(levels, new_remote)
            }
        }
    }

    /// Entry blocks records of `record_bytes` fill in turn: a record is at most `local_max`
    /// bytes, so each block but the last holds all but that much.
    fn convert_entry_blocks(&self, record_bytes: u64) -> u64 {
        let bs = self.block_size as usize;
        let per_block = (bs - at::RECORDS_OFF - at::local_max(bs)).max(1) as u64;
        record_bytes.div_ceil(per_block) + 1
    }

    /// Buffers one attribute change may log, from the request and the inode as it stands (as
    /// XFS's `xfs_attr_calc_size` sizes a set from its lengths): at most the xattr entry's worst
    /// case, which a change the inode's state does not bound falls back to.
    pub(crate) fn xattr_change(&self, c: XattrChange) -> u32 {
        let n = match c {
            XattrChange::Block { .. } => self.xattr_block_store(),
            XattrChange::ToTree {
                entries,
                record_bytes,
                remote_blocks,
                ..
            } => self.xattr_convert_of(entries, record_bytes, remote_blocks),
            XattrChange::Tree {
                levels,
                new_remote,
                old_remote,
            } => self.xattr_tree_set(levels, new_remote, old_remote),
        };
        debug_assert!(
            n <= self.buffers_for(TransKind::Xattr).0,
            "{c:?} needs {n} buffers, more than the xattr worst case {}",
            self.buffers_for(TransKind::Xattr).0
        );
        n
    }

    /// A set in the block form: the inode, the block and its allocation.
    fn xattr_block_store(&self) -> u32 {
        1 + 1 + self.alloc()
    }

    /// Buffers per step and steps, per kind.
    fn buffers_for(&self, k: TransKind) -> (u32, u32) {
        match k {
            // parent inode + new inode + allocating it + the new entry
            TransKind::Create => (2 + self.inode_alloc() + self.dir_insert(), 1),
            // as create, and the new directory's first data block with its allocation
            TransKind::Mkdir => (
                2 + self.inode_alloc() + self.dir_insert() + 1 + self.alloc(),
                1,
            ),
            // parent inode + target inode + the new entry; an unnamed file (O_TMPFILE) linked
            // in leaves the unlinked-inode tree
            TransKind::Link => (2 + self.dir_insert() + self.unlinked(), 1),
            // parent + inode + the entry removal + the AG's unlinked-inode tree (header, path
            // split to the root, its node allocations)
            TransKind::Remove => (2 + self.dir_remove() + self.unlinked(), 1),
            // two parents, the moved inode and the replaced target; an entry removed and one
            // inserted; the replaced target onto the unlinked-inode tree
            TransKind::Rename => (
                4 + self.dir_remove() + self.dir_insert() + self.unlinked(),
                1,
            ),
            // as rename, and the whiteout: its inode, allocated (the source entry is
            // rewritten in place of its removal, which the rename's removal covers)
            TransKind::RenameWhiteout => (
                5 + self.dir_remove() + self.dir_insert() + self.unlinked() + self.inode_alloc(),
                1,
            ),
            // the new inode, allocated, and put on the unlinked-inode tree
            TransKind::Tmpfile => (1 + self.inode_alloc() + self.unlinked(), 1),
            // as create, and the target's block with its allocation
            TransKind::Symlink => (
                2 + self.inode_alloc() + self.dir_insert() + 1 + self.alloc(),
                1,
            ),
            // the inode
            TransKind::Setattr => (1, 1),
            // the inode, the extent map (converting an unwritten extent splits it and maps the
            // written part: several updates of one path) and the allocation of the data extent
            TransKind::Write => (1 + self.extent_map() + 2 * self.alloc(), 1),
            // per step: the inode, one extent removed from the map (which may free map nodes,
            // each a free-space update), and the freeing of its blocks
            TransKind::Truncate => (1 + self.extent_map() + 2 * self.alloc(), TRUNCATE_LOG_COUNT),
            // the larger of a set in the tree form (which covers a removal: the same blocks
            // without the new record's), a move from the xattr block into a tree, and a set in
            // the block form (the inode, the block and its allocation)
            TransKind::Xattr => (
                self.xattr_set()
                    .max(self.xattr_convert())
                    .max(self.xattr_block_store()),
                1,
            ),
            // per step: the inode, its map, directory root or symlink block freed (an allocator
            // operation), the unlinked-inode tree and the inode-chunk tree (attributes are freed
            // before, in transactions of kind Xattr)
            TransKind::Inactive => (
                1 + self.alloc() + self.unlinked() + Self::split(self.heights.inode),
                INACTIVE_LOG_COUNT,
            ),
            // nothing: reads pin nothing
            TransKind::Read => (0, 1),
        }
    }

    fn resv_for(&self, buffers: u32, log_count: u32) -> Resv {
        let bs = self.block_size;
        let items = buffers as u64 * Log::item_bytes_max(bs);
        Resv {
            buffers,
            log_unit_bytes: items + Log::checkpoint_overhead_bytes(bs, items),
            log_count,
            mem_bytes: buffers as u64 * 2 * (bs as u64 + BUF_OVERHEAD_BYTES),
        }
    }

    pub fn get(&self, k: TransKind) -> Resv {
        self.entries[k.index()]
    }

    /// Replaces an entry (a test knob: an undersized entry must produce overrun reports).
    pub(crate) fn set(&mut self, k: TransKind, r: Resv) {
        self.entries[k.index()] = r;
    }

    /// An entry sized for `buffers` buffers per step.
    pub fn sized(&self, buffers: u32, log_count: u32) -> Resv {
        self.resv_for(buffers, log_count)
    }

    /// Most memory one transaction may reserve.
    pub(crate) fn max_mem_bytes(&self) -> u64 {
        self.entries.iter().map(|r| r.mem_bytes).max().unwrap_or(0)
    }

    /// Smallest log for this table: three times the largest reservation (unit x count), so no
    /// transaction needs more than a third of the log and two more always fit while the AIL
    /// moves the tail, plus the blocks kept back for unmount and tail-update records.
    pub fn min_log_blocks(&self) -> u64 {
        let largest = self
            .entries
            .iter()
            .map(|r| r.log_unit_bytes * r.log_count as u64)
            .max()
            .unwrap_or(0);
        (3 * largest).div_ceil(self.block_size as u64) + LOG_RESERVE_BLOCKS
    }

    /// Smallest memory budget: two of the largest reservations (so a rolling transaction
    /// re-reserving while it holds its buffers always fits once others finish) and the
    /// emergency reserve, a sixteenth of the budget.
    pub(crate) fn min_budget_bytes(&self) -> u64 {
        (2 * self.max_mem_bytes()) * 16 / 15 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An attribute set of the largest value fits under the log minimum the other kinds set
    /// already, so images made before the attribute tree keep mounting with their logs.
    #[test]
    fn xattr_reservation_keeps_the_log_minimum() {
        for bs in [512u32, 1024, 4096, 65536] {
            for blocks in [4096u64, 1 << 16, 1 << 20, 1 << 24] {
                let Ok(g) = Geometry::new(bs, blocks, 16, 4) else {
                    continue;
                };
                let t = ResvTable::new(&g);
                let x = t.get(TransKind::Xattr);
                assert!(x.buffers >= t.xattr_set().max(t.xattr_convert()));
                let others = TransKind::ALL
                    .iter()
                    .filter(|&&k| k != TransKind::Xattr)
                    .map(|&k| t.get(k).log_unit_bytes * t.get(k).log_count as u64)
                    .max()
                    .unwrap();
                assert!(x.log_unit_bytes <= others, "bs {bs} blocks {blocks}");
            }
        }
    }

    /// A set measured from itself needs no more than the xattr entry, the worst case of the same
    /// formulas (the bound `xattr_change` debug-asserts), and a small one needs a handful of
    /// blocks where the entry promised a hundred.
    #[test]
    fn a_measured_set_is_within_the_worst_case() {
        for bs in [512u32, 1024, 4096, 65536] {
            let Ok(g) = Geometry::new(bs, 1 << 20, 16, 4) else {
                continue;
            };
            let t = ResvTable::new(&g);
            let worst = t.get(TransKind::Xattr).buffers;
            let r = at::remote_blocks_max(bs as usize);
            let mut changes = vec![
                XattrChange::Block { allocates: true },
                XattrChange::Block { allocates: false },
            ];
            for levels in 0..=t.heights.xattr + 1 {
                for (new_remote, old_remote) in [(0, None), (0, Some(0)), (r, Some(r)), (r, None)] {
                    if levels == 0 && old_remote.is_some() {
                        // A new tree replaces nothing.
                        continue;
                    }
                    changes.push(XattrChange::Tree {
                        levels,
                        new_remote,
                        old_remote,
                    });
                }
            }
            let room = (bs as usize - XA_ENTRIES_OFF) as u64;
            for entries in [0, 1, room / (XA_ENTRY_HDR as u64 + 5)] {
                changes.push(XattrChange::ToTree {
                    entries,
                    record_bytes: room + 3 * entries,
                    remote_blocks: 2,
                    new_remote: r,
                });
            }
            for c in changes {
                assert!(t.xattr_change(c) <= worst, "bs {bs}: {c:?}");
            }
            assert_eq!(t.xattr_blocks(XattrChange::Block { allocates: true }), 1);
            assert_eq!(t.xattr_blocks(XattrChange::Block { allocates: false }), 0);
            let small = XattrChange::Tree {
                levels: 2,
                new_remote: 0,
                old_remote: Some(0),
            };
            assert_eq!(
                t.xattr_blocks(small),
                4,
                "an entry block and a split of two levels"
            );
            assert!(t.xattr_change(small) < worst, "bs {bs}");
        }
    }
}
