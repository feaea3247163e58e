//! Allocation groups and free space.
//!
//! The device is divided into AGs of `ag_blocks` blocks. Each AG has a header (counters, tree
//! roots, free list), a free-space B+tree by block number (key (start, 0), value (length, 0)) and
//! one by length (key (length, start)), and an inode-chunk tree (used by the inode layer). A
//! transaction locks an AG by joining its header, so allocations in different AGs run in parallel
//! and allocations in one AG are serialised by the header's lock.
//!
//! The free-space trees cannot take their own node blocks from the free-space trees without
//! recursing, so, as in XFS, each AG keeps a small free list (AGFL) in its header: before every
//! operation it is topped up to twice what one operation may need (both trees splitting at every
//! level and growing a root), and trimmed when freed nodes fill it. Tree nodes come from it and go
//! back to it.
//!
//! Inode chunks (one block of inodes each) are recorded in the AG's inode-chunk tree, keyed
//! (full, block) with the free-slot mask as value, so a chunk with a free slot is found in one
//! descent. That tree's nodes come from ordinary allocation in the same AG.
//!
//! Allocation looks in the AG of the target block first, then in the others in ascending order,
//! judging each by an in-memory summary (free blocks, longest extent) before locking it; an AG that
//! turns out to be full is released unchanged before the next is tried, so no transaction holds
//! two AG headers taken out of order. Within an AG: the free extent containing the target, then
//! the next extent after it, then the smallest extent that holds the whole request, then the
//! largest. Frees merge with the neighbouring free extents.

mod extent;
mod freelist;
mod ialloc;
mod unlinked;

use extent::BlockRun;
use freelist::AgBlocks;
pub(crate) use ialloc::InodeBlocks;

use crate::btree::{Btree, NodeAlloc, Root};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::format::ag::{
    AgHeader, AGFL_SLOTS, AG_BNO_ROOT_OFFSET, AG_CNT_ROOT_OFFSET, AG_HEADER_OFFSET,
    AG_INO_ROOT_OFFSET, AG_RESERVED_BLOCKS, AG_UNLINKED_ROOT_OFFSET,
};
use crate::format::inode::{ino_of, ino_split, inodes_per_block};
use crate::format::records::{FreeByBlock, FreeByLen, InoChunk, Unlinked};
use crate::format::{BlockType, FormatError, Geometry};
use crate::progress::Progress;
use crate::trans::{BufId, Trans, TransKind};
use parking_lot::Mutex;

/// Every record of a tree read whole, decoded by its codec; the first that fails is an error
/// naming the tree (at its AG's header block) and the record.
fn decode_all<T>(
    recs: Vec<(crate::btree::Key, crate::btree::Val)>,
    hdr_blkno: u64,
    tree: &'static str,
    decode: impl Fn(crate::btree::Key, crate::btree::Val) -> Result<T, String>,
) -> Result<Vec<T>, EngineError> {
    recs.into_iter()
        .map(|(k, v)| {
            decode(k, v).map_err(|why| {
                EngineError::Corrupt(FormatError::new(
                    hdr_blkno,
                    tree,
                    "records",
                    format!("record {k:?} -> {v:?}: {why}"),
                ))
            })
        })
        .collect()
}

/// What is known of an AG without locking it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgSummary {
    pub free_blocks: u64,
    pub(crate) longest: u64,
    pub(crate) free_inodes: u64,
    pub(crate) inodes: u64,
    /// False until the header was read once: an unknown AG is worth a look.
    pub(crate) known: bool,
}

pub struct Allocator {
    geo: Geometry,
    summaries: Vec<Mutex<AgSummary>>,
    /// Blocks promised to operations in flight (`reserve`).
    reserved: Mutex<u64>,
    /// Held by a transaction step while it holds AG headers (`Trans::lock_allocation`).
    lock: std::sync::Arc<Mutex<()>>,
}

/// Most blocks held back from ordinary operations for those that free space (unlink, truncate,
/// hole punching, freeing orphans), so that a full filesystem can always be emptied: 1/64 of the
/// filesystem up to this many (XFS keeps a reserve pool in the same spirit).
pub(crate) const POOL_BLOCKS_MAX: u64 = 8192;

/// Blocks an operation may allocate, promised before it changes anything (XFS's block
/// reservation): an operation that cannot get them fails with ENOSPC at its start, never half
/// way. Given back when dropped.
#[must_use]
pub(crate) struct BlockResv<'a> {
    alloc: &'a Allocator,
    pub(crate) blocks: u64,
}

impl Drop for BlockResv<'_> {
    fn drop(&mut self) {
        let mut r = self.alloc.reserved.lock();
        debug_assert!(*r >= self.blocks);
        *r = r.saturating_sub(self.blocks);
    }
}

/// An AG's free space as joined to a transaction: header and the two free-space trees.
struct Space {
    agno: u32,
    start: u64,
    len: u64,
    hdr: AgHeader,
    bno: Btree,
    cnt: Btree,
}

/// An AG as joined to a transaction.
struct Ag {
    id: BufId,
    sp: Space,
    ino: Btree,
    /// Inodes with no links left, waiting to be freed: key (inode, 0).
    unl: Btree,
}

impl Ag {
    /// AG `agno` (blocks `start..start+len`) with header `hdr` joined as `id`, its four trees
    /// opened at the roots the header records. Reading an AG and formatting one build it alike,
    /// so the trees used are always the ones the header names.
    fn open(id: BufId, agno: u32, (start, len): (u64, u64), hdr: AgHeader) -> Ag {
        let tree = |btype, blkno, level| Btree::open(btype, agno as u64, Root { blkno, level });
        Ag {
            id,
            ino: tree(BlockType::BtreeIno, hdr.ino_root, hdr.ino_level),
            unl: tree(BlockType::BtreeIno, hdr.unlinked_root, hdr.unlinked_level),
            sp: Space {
                agno,
                start,
                len,
                bno: tree(BlockType::BtreeBno, hdr.bno_root, hdr.bno_level),
                cnt: tree(BlockType::BtreeCnt, hdr.cnt_root, hdr.cnt_level),
                hdr,
            },
        }
    }
}

/// Blocks of each AG that ordinary allocations (file data, directory and xattr blocks, inode
/// chunks) leave free, for what must come from that very AG in the middle of a transaction:
/// refilling its free list (at most 2 x 2 x 5 levels) and splitting its inode-chunk and
/// unlinked-inode trees to the root (2 x (2 x 8 - 1)), with room to spare. Without it a full AG
/// failed a create half-way (ENOSPC after changes: a shut-down filesystem) while other AGs had
/// space.
pub(crate) const AG_RESERVE_BLOCKS: u64 = 64;

impl Allocator {
    pub(crate) fn new(geo: Geometry) -> Allocator {
        Allocator {
            geo,
            summaries: (0..geo.ag_count)
                .map(|_| Mutex::new(AgSummary::default()))
                .collect(),
            reserved: Mutex::new(0),
            lock: std::sync::Arc::new(Mutex::new(())),
        }
    }

    /// The allocator of a mounted filesystem: every AG's summary read, so free space is known
    /// (block promises are checked against it).
    pub fn open(eng: &crate::engine::Engine) -> Result<Allocator, EngineError> {
        let a = Allocator::new(*eng.geometry());
        let mut tx = eng.begin(crate::trans::TransKind::Read)?;
        for agno in 0..eng.geometry().ag_count {
            a.free_space_summary(&mut tx, agno)?;
        }
        tx.cancel()?;
        Ok(a)
    }

    /// Blocks ordinary operations never take (see [`POOL_BLOCKS_MAX`]).
    pub(crate) fn pool_blocks(&self) -> u64 {
        (self.geo.block_count / 64).min(POOL_BLOCKS_MAX)
    }

    /// Free blocks allocations may use: every AG's free space less its reserve.
    pub(crate) fn usable_free_blocks(&self) -> u64 {
        (0..self.geo.ag_count)
            .map(|a| {
                self.summary(a)
                    .free_blocks
                    .saturating_sub(AG_RESERVE_BLOCKS)
            })
            .sum()
    }

    /// Free blocks not yet promised, as ordinary operations see them (statfs's "available").
    pub(crate) fn available_blocks(&self) -> u64 {
        let reserved = *self.reserved.lock();
        self.usable_free_blocks()
            .saturating_sub(reserved)
            .saturating_sub(self.pool_blocks())
    }

    /// Promises between `min` and `want` blocks (as many as there are); `privileged` operations
    /// (those that free space) may use the pool. ENOSPC when not even `min` are free. Blocks an
    /// operation allocates stay counted in both the free space and its promise until it ends,
    /// so the count errs on the safe side.
    pub(crate) fn reserve(
        &self,
        want: u64,
        min: u64,
        privileged: bool,
    ) -> Result<BlockResv<'_>, EngineError> {
        debug_assert!(min <= want);
        let mut reserved = self.reserved.lock();
        let keep = if privileged { 0 } else { self.pool_blocks() };
        let free = self
            .usable_free_blocks()
            .saturating_sub(*reserved)
            .saturating_sub(keep);
        if free < min {
            return Err(EngineError::NoSpace(format!(
                "{min} blocks needed, {free} free and not promised"
            )));
        }
        let blocks = want.min(free);
        *reserved += blocks;
        Ok(BlockResv {
            alloc: self,
            blocks,
        })
    }

    pub fn ag_start(&self, agno: u32) -> u64 {
        agno as u64 * self.geo.ag_blocks
    }

    /// Blocks in AG `agno` (the last may be short).
    pub(crate) fn ag_len(&self, agno: u32) -> u64 {
        self.geo
            .ag_blocks
            .min(self.geo.block_count - self.ag_start(agno))
    }

    pub fn agno_of(&self, blkno: u64) -> u32 {
        ((blkno / self.geo.ag_blocks) as u32).min(self.geo.ag_count - 1)
    }

    /// The range of AG `agno` that holds free space initially: after its reserved blocks (and in
    /// AG 0 after the log), before the backup superblock in the last AG.
    pub fn initial_free(&self, agno: u32) -> (u64, u64) {
        let r = self.geo.ag_data_range(agno);
        (r.start, r.end)
    }

    pub fn summary(&self, agno: u32) -> AgSummary {
        *self.summaries[agno as usize].lock()
    }

    fn note(&self, h: &AgHeader) {
        *self.summaries[h.agno as usize].lock() = AgSummary {
            free_blocks: h.free_blocks,
            longest: h.longest,
            free_inodes: h.free_inodes,
            inodes: h.inodes,
            known: true,
        };
    }

    fn read_ag(&self, tx: &mut Trans<'_>, agno: u32) -> Result<Ag, EngineError> {
        let start = self.ag_start(agno);
        let len = self.ag_len(agno);
        let blkno = start + AG_HEADER_OFFSET;
        tx.lock_allocation(&self.lock);
        let id = tx.read_buf(blkno, BlockType::AgHeader)?;
        let hdr = AgHeader::decode(tx.data(id), blkno, agno, start, len)?;
        Ok(Ag::open(id, agno, (start, len), hdr))
    }

    /// Writes the header back (roots, counters, free list) and refreshes the summary.
    #[track_caller]
    fn write_ag(&self, tx: &mut Trans<'_>, ag: &mut Ag) -> Result<(), EngineError> {
        let sp = &mut ag.sp;
        sp.hdr.longest = match sp.cnt.le(tx, &FreeByLen::LAST)? {
            Some((k, _)) => k[0],
            None => 0,
        };
        sp.hdr.bno_root = sp.bno.root.blkno;
        sp.hdr.bno_level = sp.bno.root.level;
        sp.hdr.cnt_root = sp.cnt.root.blkno;
        sp.hdr.cnt_level = sp.cnt.root.level;
        sp.hdr.ino_root = ag.ino.root.blkno;
        sp.hdr.ino_level = ag.ino.root.level;
        sp.hdr.unlinked_root = ag.unl.root.blkno;
        sp.hdr.unlinked_level = ag.unl.root.level;
        let range = sp.hdr.encode(tx.data_mut(ag.id));
        tx.log_range(ag.id, range);
        self.note(&sp.hdr);
        Ok(())
    }

    /// Writes AG `agno`'s header and empty trees, fills its free list and records the rest of
    /// its blocks as one free extent.
    pub(crate) fn format_ag(&self, tx: &mut Trans<'_>, agno: u32) -> Result<(), EngineError> {
        let start = self.ag_start(agno);
        let owner = agno as u64;
        tx.lock_allocation(&self.lock);
        let id = tx.get_buf(start + AG_HEADER_OFFSET, BlockType::AgHeader, owner)?;
        let bno = Btree::create(tx, BlockType::BtreeBno, owner, start + AG_BNO_ROOT_OFFSET)?;
        let cnt = Btree::create(tx, BlockType::BtreeCnt, owner, start + AG_CNT_ROOT_OFFSET)?;
        let ino = Btree::create(tx, BlockType::BtreeIno, owner, start + AG_INO_ROOT_OFFSET)?;
        let unl = Btree::create(
            tx,
            BlockType::BtreeIno,
            owner,
            start + AG_UNLINKED_ROOT_OFFSET,
        )?;
        let (first, end) = self.initial_free(agno);
        let fl = Self::freelist_target(0, 0).min((end - first) as usize / 2);
        let agfl: Vec<u32> = (0..fl as u64).map(|i| (first + i - start) as u32).collect();
        let hdr = AgHeader {
            agno,
            length: self.ag_len(agno),
            free_blocks: 0,
            longest: 0,
            bno_root: bno.root.blkno,
            bno_level: 0,
            cnt_root: cnt.root.blkno,
            cnt_level: 0,
            ino_root: ino.root.blkno,
            ino_level: 0,
            inodes: 0,
            free_inodes: 0,
            unlinked_root: unl.root.blkno,
            unlinked_level: 0,
            agfl,
        };
        let mut ag = Ag::open(id, agno, (start, self.ag_len(agno)), hdr);
        let free_start = first + fl as u64;
        ag.sp
            .insert_free(tx, BlockRun::new(free_start, end - free_start))?;
        ag.sp.hdr.free_blocks = end - free_start;
        self.write_ag(tx, &mut ag)
    }

    /// Reads AG `agno`'s header to refresh its summary, holding nothing afterwards.
    pub(crate) fn free_space_summary(
        &self,
        tx: &mut Trans<'_>,
        agno: u32,
    ) -> Result<AgSummary, EngineError> {
        let mark = tx.mark();
        let ag = self.read_ag(tx, agno)?;
        self.note(&ag.sp.hdr);
        tx.release_clean(mark, ag.sp.start..ag.sp.start + ag.sp.len);
        Ok(self.summary(agno))
    }

    /// AG `agno`'s free space as both trees record it, and its header (for checks: fsck, tests).
    pub fn free_space(&self, tx: &mut Trans<'_>, agno: u32) -> Result<AgSpace, EngineError> {
        let ag = self.read_ag(tx, agno)?;
        let hdr = ag.sp.start + AG_HEADER_OFFSET;
        let by_bno = decode_all(
            ag.sp.bno.collect(tx)?,
            hdr,
            "free-space tree by block",
            |k, v| FreeByBlock::decode(k, v).map(|r| (r.start, r.len)),
        )?;
        let by_cnt = decode_all(
            ag.sp.cnt.collect(tx)?,
            hdr,
            "free-space tree by length",
            |k, v| FreeByLen::decode(k, v).map(|r| (r.start, r.len)),
        )?;
        let chunks = self.chunk_records(ag.ino.collect(tx)?, ag.sp.start)?;
        let ino_nodes = ag.ino.blocks(tx)?;
        let unlinked = decode_all(ag.unl.collect(tx)?, hdr, "unlinked-inode tree", |k, v| {
            Unlinked::decode(k, v).map(|u| u.ino)
        })?;
        let mut free_nodes = ag.sp.bno.blocks(tx)?;
        free_nodes.extend(ag.sp.cnt.blocks(tx)?);
        let unl_nodes = ag.unl.blocks(tx)?;
        Ok(AgSpace {
            by_bno,
            by_cnt,
            chunks,
            ino_nodes,
            free_nodes,
            unlinked,
            unl_nodes,
            hdr: ag.sp.hdr,
        })
    }
}

/// An AG as read back, for checks: free extents (start, length) from the by-block tree in block
/// order and from the by-length tree in length order, inode chunks (block, free mask), the
/// inode-chunk tree's node blocks, and the header.
#[derive(Debug, Clone)]
pub struct AgSpace {
    pub by_bno: Vec<(u64, u64)>,
    pub by_cnt: Vec<(u64, u64)>,
    pub chunks: Vec<(u64, u64)>,
    pub ino_nodes: Vec<u64>,
    /// Node blocks of both free-space trees.
    pub(crate) free_nodes: Vec<u64>,
    /// Inodes on the AG's unlinked tree, and that tree's node blocks.
    pub(crate) unlinked: Vec<u64>,
    pub(crate) unl_nodes: Vec<u64>,
    pub hdr: AgHeader,
}

/// Formats every AG of a freshly formatted filesystem, one transaction each.
pub fn format_all(eng: &Engine) -> Result<(), EngineError> {
    format_all_with(eng, &mut |_, _, _| {})
}

/// `format_all`, reporting each AG done to `progress`.
pub(crate) fn format_all_with(eng: &Engine, progress: Progress<'_>) -> Result<(), EngineError> {
    let alloc = Allocator::new(*eng.geometry());
    let count = eng.geometry().ag_count;
    for agno in 0..count {
        progress("allocation groups", agno as u64, count as u64);
        let mut tx = eng.begin(TransKind::Write)?;
        alloc.format_ag(&mut tx, agno)?;
        tx.commit()?;
    }
    progress("allocation groups", count as u64, count as u64);
    eng.force_all()
}
