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

use crate::btree::{Btree, NodeAlloc, Root};
use crate::engine::{Engine, EngineError};
use crate::format::ag::{
    AgHeader, AGFL_SLOTS, AG_BNO_ROOT_OFFSET, AG_CNT_ROOT_OFFSET, AG_HEADER_OFFSET,
    AG_INO_ROOT_OFFSET, AG_RESERVED_BLOCKS, AG_UNLINKED_ROOT_OFFSET,
};
use crate::format::inode::{ino_of, ino_split, inodes_per_block};
use crate::format::records::{FreeByBlock, FreeByLen, InoChunk, Unlinked};
use crate::format::{BlockType, FormatError, Geometry};
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
    pub longest: u64,
    pub free_inodes: u64,
    pub inodes: u64,
    /// False until the header was read once: an unknown AG is worth a look.
    pub known: bool,
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
pub const POOL_BLOCKS_MAX: u64 = 8192;

/// Free extents `Allocator::avoid_busy` looks at past the first one for blocks that are not
/// busy: enough to step over the runs a burst of frees leaves, without walking a fragmented AG
/// (after these it takes the largest extent, or forces the log).
const BUSY_SEARCH_EXTENTS: usize = 16;

/// In the free extent `ext` (start, length), whose busy ranges are `busy` (sorted, within it),
/// the idle run of at least `min` blocks that gives the most blocks (up to `max`), the nearest
/// to `at` of equals, cut as near `at` as that length allows: (extent start, extent length, cut
/// start, blocks).
fn idle_piece(
    busy: &[(u64, u64)],
    ext: (u64, u64),
    at: u64,
    min: u64,
    max: u64,
) -> Option<(u64, u64, u64, u64)> {
    let (s, l) = ext;
    let mut best: Option<(u64, u64, u64)> = None; // (blocks short of max, distance, cut)
    let mut gap_start = s;
    let ends = busy
        .iter()
        .map(|&(b, bl)| (b, b + bl))
        .chain([(s + l, s + l)]);
    for (busy_start, busy_end) in ends {
        if busy_start >= gap_start + min {
            let want = (busy_start - gap_start).min(max);
            let cut = at.clamp(gap_start, busy_start - want);
            let key = (max - want, cut.abs_diff(at), cut);
            if best.is_none_or(|b| (key.0, key.1) < (b.0, b.1)) {
                best = Some(key);
            }
        }
        gap_start = gap_start.max(busy_end);
    }
    best.map(|(short, _, cut)| {
        let n = max - short;
        debug_assert!(cut >= s && cut + n <= s + l && n >= min);
        (s, l, cut, n)
    })
}

/// Blocks an operation may allocate, promised before it changes anything (XFS's block
/// reservation): an operation that cannot get them fails with ENOSPC at its start, never half
/// way. Given back when dropped.
#[must_use]
pub struct BlockResv<'a> {
    alloc: &'a Allocator,
    pub blocks: u64,
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

/// Node blocks for the free-space trees, from the AG's free list.
struct FreeList<'a> {
    start: u64,
    agfl: &'a mut Vec<u32>,
    blkno: u64,
}

impl NodeAlloc for FreeList<'_> {
    fn alloc_node(&mut self, _tx: &mut Trans<'_>) -> Result<u64, EngineError> {
        let r = self.agfl.pop().ok_or_else(|| {
            EngineError::Corrupt(FormatError::new(
                self.blkno,
                "AG header",
                "agfl",
                "free list ran empty during a free-space update",
            ))
        })?;
        Ok(self.start + r as u64)
    }
    fn free_node(&mut self, _tx: &mut Trans<'_>, blkno: u64) -> Result<(), EngineError> {
        // The first roots live in the AG's reserved blocks, which are never free space: a root
        // given up there simply stays reserved.
        if blkno < self.start + AG_RESERVED_BLOCKS {
            return Ok(());
        }
        if self.agfl.len() >= AGFL_SLOTS {
            return Err(EngineError::Corrupt(FormatError::new(
                self.blkno,
                "AG header",
                "agfl",
                "free list overflowed during a free-space update",
            )));
        }
        self.agfl.push((blkno - self.start) as u32);
        Ok(())
    }
}

/// Blocks of each AG that ordinary allocations (file data, directory and xattr blocks, inode
/// chunks) leave free, for what must come from that very AG in the middle of a transaction:
/// refilling its free list (at most 2 x 2 x 5 levels) and splitting its inode-chunk and
/// unlinked-inode trees to the root (2 x (2 x 8 - 1)), with room to spare. Without it a full AG
/// failed a create half-way (ENOSPC after changes: a shut-down filesystem) while other AGs had
/// space.
pub const AG_RESERVE_BLOCKS: u64 = 64;

/// Node blocks for other trees of an AG (the inode-chunk tree), by ordinary allocation in it.
struct AgBlocks<'a> {
    me: &'a Allocator,
    sp: &'a mut Space,
}

impl NodeAlloc for AgBlocks<'_> {
    fn alloc_node(&mut self, tx: &mut Trans<'_>) -> Result<u64, EngineError> {
        let near = self.sp.start;
        match self.me.alloc_in(tx, self.sp, near, 1, 1, 0)? {
            Some((b, _)) => Ok(b),
            None => Err(EngineError::NoSpace(format!(
                "AG {} has no block for a tree node",
                self.sp.agno
            ))),
        }
    }
    fn free_node(&mut self, tx: &mut Trans<'_>, blkno: u64) -> Result<(), EngineError> {
        if blkno < self.sp.start + AG_RESERVED_BLOCKS {
            return Ok(());
        }
        self.me.fix_freelist(tx, self.sp)?;
        self.me.free_in(tx, self.sp, blkno, 1)
    }
}

/// Blocks an inode owns beyond its data (extent-map nodes, directory nodes and name blocks),
/// allocated near it and counted in its block count.
pub struct InodeBlocks<'a> {
    pub alloc: &'a Allocator,
    /// Allocate near this block (the inode's chunk).
    pub near: u64,
    /// The inode's block count, kept in step.
    pub blocks: &'a mut u64,
}

impl NodeAlloc for InodeBlocks<'_> {
    fn alloc_node(&mut self, tx: &mut Trans<'_>) -> Result<u64, EngineError> {
        let (b, _) = self
            .alloc
            .alloc(tx, self.near, 1, 1)?
            .ok_or_else(|| EngineError::NoSpace(format!("no free block near {}", self.near)))?;
        *self.blocks += 1;
        Ok(b)
    }
    fn free_node(&mut self, tx: &mut Trans<'_>, blkno: u64) -> Result<(), EngineError> {
        self.alloc.free(tx, blkno, 1)?;
        *self.blocks -= 1;
        Ok(())
    }
}

impl Allocator {
    pub fn new(geo: Geometry) -> Allocator {
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
    pub fn pool_blocks(&self) -> u64 {
        (self.geo.block_count / 64).min(POOL_BLOCKS_MAX)
    }

    /// Free blocks allocations may use: every AG's free space less its reserve.
    pub fn usable_free_blocks(&self) -> u64 {
        (0..self.geo.ag_count)
            .map(|a| {
                self.summary(a)
                    .free_blocks
                    .saturating_sub(AG_RESERVE_BLOCKS)
            })
            .sum()
    }

    /// Free blocks not yet promised, as ordinary operations see them (statfs's "available").
    pub fn available_blocks(&self) -> u64 {
        let reserved = *self.reserved.lock();
        self.usable_free_blocks()
            .saturating_sub(reserved)
            .saturating_sub(self.pool_blocks())
    }

    /// Promises between `min` and `want` blocks (as many as there are); `privileged` operations
    /// (those that free space) may use the pool. ENOSPC when not even `min` are free. Blocks an
    /// operation allocates stay counted in both the free space and its promise until it ends,
    /// so the count errs on the safe side.
    pub fn reserve(
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

    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    pub fn ag_start(&self, agno: u32) -> u64 {
        agno as u64 * self.geo.ag_blocks
    }

    /// Blocks in AG `agno` (the last may be short).
    pub fn ag_len(&self, agno: u32) -> u64 {
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
        let owner = agno as u64;
        let bno = Btree::open(
            BlockType::BtreeBno,
            owner,
            Root {
                blkno: hdr.bno_root,
                level: hdr.bno_level,
            },
        );
        let cnt = Btree::open(
            BlockType::BtreeCnt,
            owner,
            Root {
                blkno: hdr.cnt_root,
                level: hdr.cnt_level,
            },
        );
        let ino = Btree::open(
            BlockType::BtreeIno,
            owner,
            Root {
                blkno: hdr.ino_root,
                level: hdr.ino_level,
            },
        );
        let unl = Btree::open(
            BlockType::BtreeIno,
            owner,
            Root {
                blkno: hdr.unlinked_root,
                level: hdr.unlinked_level,
            },
        );
        Ok(Ag {
            id,
            sp: Space {
                agno,
                start,
                len,
                hdr,
                bno,
                cnt,
            },
            ino,
            unl,
        })
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
    pub fn format_ag(&self, tx: &mut Trans<'_>, agno: u32) -> Result<(), EngineError> {
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
        let len = self.ag_len(agno);
        let mut ag = Ag {
            id,
            sp: Space {
                agno,
                start,
                len,
                hdr,
                bno,
                cnt,
            },
            ino,
            unl,
        };
        let free_start = first + fl as u64;
        self.insert_free(tx, &mut ag.sp, free_start, end - free_start)?;
        ag.sp.hdr.free_blocks = end - free_start;
        self.write_ag(tx, &mut ag)
    }

    /// Nodes one free-space operation may take: each tree splitting at every level and growing a
    /// new root.
    pub fn freelist_need(bno_level: u16, cnt_level: u16) -> usize {
        bno_level as usize + 2 + cnt_level as usize + 2
    }

    /// What the free list is topped up to before an operation: room for the top-up itself and
    /// for the operation.
    pub fn freelist_target(bno_level: u16, cnt_level: u16) -> usize {
        2 * Self::freelist_need(bno_level.max(1), cnt_level.max(1))
    }

    fn insert_free(
        &self,
        tx: &mut Trans<'_>,
        sp: &mut Space,
        start: u64,
        len: u64,
    ) -> Result<(), EngineError> {
        debug_assert!(len > 0);
        let blkno = sp.start + AG_HEADER_OFFSET;
        let mut fl = FreeList {
            start: sp.start,
            agfl: &mut sp.hdr.agfl,
            blkno,
        };
        let by_block = FreeByBlock { start, len };
        sp.bno.insert(tx, &mut fl, by_block.key(), by_block.val())?;
        let by_len = FreeByLen { len, start };
        sp.cnt.insert(tx, &mut fl, by_len.key(), by_len.val())
    }

    fn remove_free(
        &self,
        tx: &mut Trans<'_>,
        sp: &mut Space,
        start: u64,
        len: u64,
    ) -> Result<(), EngineError> {
        let blkno = sp.start + AG_HEADER_OFFSET;
        let mut fl = FreeList {
            start: sp.start,
            agfl: &mut sp.hdr.agfl,
            blkno,
        };
        let by_block = FreeByBlock { start, len };
        let a = sp.bno.delete(tx, &mut fl, &by_block.key())?;
        let b = sp
            .cnt
            .delete(tx, &mut fl, &FreeByLen { len, start }.key())?;
        if a != Some(by_block.val()) || b.is_none() {
            return Err(EngineError::Corrupt(FormatError::new(
                blkno,
                "free-space trees",
                "records",
                format!(
                    "extent {start}+{len} is not in both trees (by block: {a:?}, by length: {b:?})"
                ),
            )));
        }
        Ok(())
    }

    /// Tops the free list up to its target from the AG's free space, or trims it when it is so
    /// full that the nodes an operation frees might not fit.
    fn fix_freelist(&self, tx: &mut Trans<'_>, sp: &mut Space) -> Result<(), EngineError> {
        let target = Self::freelist_target(sp.bno.root.level, sp.cnt.root.level);
        while sp.hdr.agfl.len() < target {
            let want = (target - sp.hdr.agfl.len()) as u64;
            let ext = match sp.cnt.ge(tx, &FreeByLen::search(want))? {
                Some((k, _)) => (k[1], k[0]),
                None => match sp.cnt.le(tx, &FreeByLen::LAST)? {
                    Some((k, _)) => (k[1], k[0]),
                    None => break,
                },
            };
            let take = want.min(ext.1);
            self.remove_free(tx, sp, ext.0, ext.1)?;
            if ext.1 > take {
                self.insert_free(tx, sp, ext.0 + take, ext.1 - take)?;
            }
            sp.hdr.free_blocks -= take;
            for b in ext.0..ext.0 + take {
                sp.hdr.agfl.push((b - sp.start) as u32);
            }
        }
        let need = Self::freelist_need(sp.bno.root.level, sp.cnt.root.level);
        if sp.hdr.agfl.len() < need {
            return Err(EngineError::NoSpace(format!(
                "AG {} has no room left for its free-space trees",
                sp.agno
            )));
        }
        while sp.hdr.agfl.len() > AGFL_SLOTS - need {
            let Some(r) = sp.hdr.agfl.pop() else { break };
            self.free_in(tx, sp, sp.start + r as u64, 1)?;
        }
        Ok(())
    }

    /// Where in this AG an extent of min..=max blocks near `target` could come from, without
    /// changing anything: (free extent start, its length, where to cut, how many blocks).
    fn find(
        &self,
        tx: &mut Trans<'_>,
        sp: &Space,
        target: u64,
        min: u64,
        max: u64,
    ) -> Result<Option<(u64, u64, u64, u64)>, EngineError> {
        let t = target.clamp(sp.start, sp.start + sp.len - 1);
        if let Some((k, v)) = sp.bno.le(tx, &FreeByBlock::search(t))? {
            let (s, l) = (k[0], v[0]);
            if t < s + l && s + l - t >= min {
                return Ok(Some((s, l, t, (s + l - t).min(max))));
            }
        }
        if let Some((k, v)) = sp.bno.ge(tx, &FreeByBlock::search(t))? {
            if v[0] >= max {
                return Ok(Some((k[0], v[0], k[0], max)));
            }
        }
        if let Some((k, _)) = sp.cnt.ge(tx, &FreeByLen::search(max))? {
            return Ok(Some((k[1], k[0], k[1], max)));
        }
        if let Some((k, _)) = sp.cnt.le(tx, &FreeByLen::LAST)? {
            if k[0] >= min {
                return Ok(Some((k[1], k[0], k[1], k[0])));
            }
        }
        Ok(None)
    }

    /// Allocates in an AG already joined: tops up its free list, finds, carves.
    /// Allocates in one AG, leaving `keep` blocks free in it (the AG reserve for ordinary
    /// allocations, 0 for the AG's own tree nodes, which may use the reserve).
    fn alloc_in(
        &self,
        tx: &mut Trans<'_>,
        sp: &mut Space,
        target: u64,
        min: u64,
        max: u64,
        keep: u64,
    ) -> Result<Option<(u64, u64)>, EngineError> {
        if sp.hdr.free_blocks < min + keep {
            return Ok(None);
        }
        self.fix_freelist(tx, sp)?;
        if sp.hdr.free_blocks < min + keep {
            return Ok(None);
        }
        let max = max.min(sp.hdr.free_blocks - keep);
        let Some(found) = self.find(tx, sp, target, min, max)? else {
            return Ok(None);
        };
        // Blocks freed by a commit not yet durable still belong to their old owner on disk:
        // idle blocks elsewhere are taken instead where there are any, and the log is forced
        // (a checkpoint and a device flush) only when there are none. What `avoid_busy` returns
        // stays idle: only a free in this AG, whose header this step holds, could make it busy.
        let (s, l, at, n) = match self.avoid_busy(tx, sp, found, min, max)? {
            Some(idle) => idle,
            None => {
                tx.engine().log().wait_not_busy(found.2, found.3)?;
                found
            }
        };
        self.remove_free(tx, sp, s, l)?;
        if at > s {
            self.insert_free(tx, sp, s, at - s)?;
        }
        if at + n < s + l {
            self.insert_free(tx, sp, at + n, s + l - at - n)?;
        }
        sp.hdr.free_blocks -= n;
        Ok(Some((at, n)))
    }

    /// A place for min..=max blocks like `first` (a free extent and the cut `find` chose in it)
    /// but with no busy block (None when there is none): the idle piece of `first`'s extent nearest the cut, else of the
    /// next free extents by block number (wrapping to the AG's start), else of the largest.
    /// XFS likewise trims busy ranges off a candidate: a file created, written and removed
    /// over and over otherwise finds its blocks of the last round busy every time and forced
    /// the log once per round (10,000 rounds of fsbench mix: 9,997 forces).
    fn avoid_busy(
        &self,
        tx: &mut Trans<'_>,
        sp: &Space,
        first: (u64, u64, u64, u64),
        min: u64,
        max: u64,
    ) -> Result<Option<(u64, u64, u64, u64)>, EngineError> {
        let log = tx.engine().log();
        let (s, l, at, n) = first;
        if log.busy_in(at, n).is_empty() {
            return Ok(Some(first));
        }
        if let Some(c) = idle_piece(&log.busy_in(s, l), (s, l), at, min, max) {
            return Ok(Some(c));
        }
        let mut key = s + l;
        let mut wrapped = false;
        for _ in 0..BUSY_SEARCH_EXTENTS {
            let next = match sp.bno.ge(tx, &FreeByBlock::search(key))? {
                Some((k, v)) if !(wrapped && k[0] >= s) => (k[0], v[0]),
                Some(_) => break,
                None if !wrapped => {
                    wrapped = true;
                    key = sp.start;
                    continue;
                }
                None => break,
            };
            if next.1 >= min {
                if let Some(c) = idle_piece(&log.busy_in(next.0, next.1), next, next.0, min, max) {
                    return Ok(Some(c));
                }
            }
            key = next.0 + next.1;
        }
        if let Some((k, _)) = sp.cnt.le(tx, &FreeByLen::LAST)? {
            let big = (k[1], k[0]);
            if big.1 >= min {
                return Ok(idle_piece(&log.busy_in(big.0, big.1), big, big.0, min, max));
            }
        }
        Ok(None)
    }

    /// The AGs to try for something near block `target`: its own first, then the others in
    /// ascending order, skipping those the summary shows cannot serve (`fits`).
    fn candidates(&self, target: u64, fits: impl Fn(&AgSummary) -> bool) -> Vec<u32> {
        let first = self.agno_of(target);
        (first..self.geo.ag_count)
            .chain(0..first)
            .filter(|&a| {
                let s = self.summary(a);
                !s.known || fits(&s)
            })
            .collect()
    }

    /// Allocates between `min` and `max` contiguous blocks, as close to `target` as it can.
    /// Returns (start, length), or None when no AG has `min` contiguous free blocks.
    #[track_caller]
    pub fn alloc(
        &self,
        tx: &mut Trans<'_>,
        target: u64,
        min: u64,
        max: u64,
    ) -> Result<Option<(u64, u64)>, EngineError> {
        if min == 0 || min > max {
            return Err(EngineError::Invalid(format!(
                "allocation of {min}..={max} blocks"
            )));
        }
        for agno in self.candidates(target, |s| s.longest >= min) {
            let mark = tx.mark();
            let mut ag = self.read_ag(tx, agno)?;
            if ag.sp.hdr.longest < min
                || ag.sp.hdr.free_blocks < min + AG_RESERVE_BLOCKS
                || self.find(tx, &ag.sp, target, min, max)?.is_none()
            {
                self.note(&ag.sp.hdr);
                tx.release_clean(mark, ag.sp.start..ag.sp.start + ag.sp.len);
                continue;
            }
            let got = self.alloc_in(tx, &mut ag.sp, target, min, max, AG_RESERVE_BLOCKS)?;
            self.write_ag(tx, &mut ag)?;
            if got.is_some() {
                return Ok(got);
            }
        }
        Ok(None)
    }

    /// Frees `len` blocks at `start`, merging with the free extents on either side. Freeing
    /// blocks that are already free, or that cross an AG or its reserved blocks, is corruption.
    #[track_caller]
    pub fn free(&self, tx: &mut Trans<'_>, start: u64, len: u64) -> Result<(), EngineError> {
        let agno = self.agno_of(start);
        let (first, end) = self.initial_free(agno);
        if len == 0 || start < first || start.checked_add(len).is_none_or(|e| e > end) {
            return Err(EngineError::Corrupt(FormatError::new(
                start,
                "extent",
                "range",
                format!("{start}+{len} is outside AG {agno}'s space {first}..{end}"),
            )));
        }
        let mut ag = self.read_ag(tx, agno)?;
        // Refuse a double free before changing anything (the free-list top-up would).
        self.check_not_free(tx, &ag.sp, start, len)?;
        self.fix_freelist(tx, &mut ag.sp)?;
        self.free_in(tx, &mut ag.sp, start, len)?;
        self.write_ag(tx, &mut ag)
    }

    /// Fails, naming the free extent, if any of `start..start+len` is already free.
    fn check_not_free(
        &self,
        tx: &mut Trans<'_>,
        sp: &Space,
        start: u64,
        len: u64,
    ) -> Result<(), EngineError> {
        let left = sp
            .bno
            .le(tx, &FreeByBlock::search(start))?
            .filter(|(k, v)| k[0] + v[0] > start);
        let right = sp
            .bno
            .ge(tx, &FreeByBlock::search(start))?
            .filter(|(k, _)| start + len > k[0]);
        if let Some((k, v)) = left.or(right) {
            return Err(EngineError::Corrupt(FormatError::new(
                sp.start + AG_HEADER_OFFSET,
                "free-space trees",
                "records",
                format!(
                    "freeing {start}+{len}, which overlaps the free extent {}+{}",
                    k[0], v[0]
                ),
            )));
        }
        Ok(())
    }

    fn free_in(
        &self,
        tx: &mut Trans<'_>,
        sp: &mut Space,
        start: u64,
        len: u64,
    ) -> Result<(), EngineError> {
        let blkno = sp.start + AG_HEADER_OFFSET;
        let overlap = |s: u64, l: u64| {
            EngineError::Corrupt(FormatError::new(
                blkno,
                "free-space trees",
                "records",
                format!("freeing {start}+{len}, which overlaps the free extent {s}+{l}"),
            ))
        };
        let (mut s, mut l) = (start, len);
        if let Some((k, v)) = sp.bno.le(tx, &FreeByBlock::search(start))? {
            if k[0] + v[0] > start {
                return Err(overlap(k[0], v[0]));
            }
            if k[0] + v[0] == start {
                self.remove_free(tx, sp, k[0], v[0])?;
                s = k[0];
                l += v[0];
            }
        }
        if let Some((k, v)) = sp.bno.ge(tx, &FreeByBlock::search(start))? {
            if start + len > k[0] {
                return Err(overlap(k[0], v[0]));
            }
            if start + len == k[0] {
                self.remove_free(tx, sp, k[0], v[0])?;
                l += v[0];
            }
        }
        self.insert_free(tx, sp, s, l)?;
        sp.hdr.free_blocks += len;
        tx.note_freed(start, len);
        Ok(())
    }

    /// Allocates an inode near inode `near` (0: anywhere): a free slot of an existing chunk, or a
    /// new chunk block. Returns the inode number, or None when no AG can give one. The caller
    /// writes the inode into its slot (a slot is free while its mode is 0).
    ///
    /// Lock order: a transaction joins inode chunks before AG headers. This takes a free slot of
    /// an existing chunk only when `existing` (the caller must already hold that chunk, see
    /// [`Allocator::peek_free_inode`] and [`Allocator::claim_inode`]); otherwise it makes a new
    /// chunk, whose block nobody else can hold.
    #[track_caller]
    pub fn alloc_inode(&self, tx: &mut Trans<'_>, near: u64) -> Result<Option<u64>, EngineError> {
        self.alloc_inode_in(tx, near, true)
    }

    /// Allocates an inode in a new chunk (see [`Allocator::alloc_inode`]).
    #[track_caller]
    pub fn alloc_inode_new_chunk(
        &self,
        tx: &mut Trans<'_>,
        near: u64,
    ) -> Result<Option<u64>, EngineError> {
        self.alloc_inode_in(tx, near, false)
    }

    /// A free inode near `near` in an existing chunk, found without keeping anything locked (a
    /// read-only transaction): the caller then joins its chunk in lock order and claims it.
    pub fn peek_free_inode(
        &self,
        tx: &mut Trans<'_>,
        near: u64,
    ) -> Result<Option<u64>, EngineError> {
        let target = ino_split(near).0;
        for agno in self.candidates(target, |s| s.free_inodes > 0) {
            // One AG at a time: the candidates are not in ascending order, so holding one while
            // taking the next could wait on a writer that holds them the other way round.
            let mark = tx.mark();
            let ag = self.read_ag(tx, agno)?;
            let found = match ag.ino.ge(tx, &InoChunk::FIRST_WITH_FREE)? {
                Some((k, v)) if InoChunk::has_free(k) && v[0] != 0 => {
                    Some(ino_of(k[1], v[0].trailing_zeros() as usize))
                }
                _ => None,
            };
            self.note(&ag.sp.hdr);
            tx.release_clean(mark, ag.sp.start..ag.sp.start + ag.sp.len);
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// Takes inode `ino` if its slot is still free in its chunk's mask (the caller holds the
    /// chunk). Returns false if someone took it meanwhile.
    #[track_caller]
    pub fn claim_inode(&self, tx: &mut Trans<'_>, ino: u64) -> Result<bool, EngineError> {
        let (chunk, slot) = ino_split(ino);
        let mut ag = self.read_ag(tx, self.agno_of(chunk))?;
        let Some(v) = ag.ino.get(tx, &InoChunk::key_with_free(chunk))? else {
            return Ok(false);
        };
        if v[0] & (1 << slot) == 0 {
            return Ok(false);
        }
        self.set_chunk_mask(tx, &mut ag, chunk, v[0], v[0] & !(1 << slot))?;
        ag.sp.hdr.free_inodes -= 1;
        self.write_ag(tx, &mut ag)?;
        Ok(true)
    }

    fn alloc_inode_in(
        &self,
        tx: &mut Trans<'_>,
        near: u64,
        existing: bool,
    ) -> Result<Option<u64>, EngineError> {
        let ipb = inodes_per_block(self.geo.block_size);
        let target = ino_split(near).0;
        for agno in self.candidates(target, |s| s.free_inodes > 0 || s.longest >= 1) {
            let mark = tx.mark();
            let mut ag = self.read_ag(tx, agno)?;
            let found = if existing {
                ag.ino.ge(tx, &InoChunk::FIRST_WITH_FREE)?
            } else {
                None
            };
            let (chunk, mask) = match found {
                Some((k, v)) if InoChunk::has_free(k) => (k[1], v[0]),
                _ => {
                    let near = target.max(ag.sp.start);
                    let Some((chunk, _)) =
                        self.alloc_in(tx, &mut ag.sp, near, 1, 1, AG_RESERVE_BLOCKS)?
                    else {
                        // The free list may have been topped up on the way: keep the header true.
                        self.write_ag(tx, &mut ag)?;
                        self.note(&ag.sp.hdr);
                        tx.release_clean(mark, ag.sp.start..ag.sp.start + ag.sp.len);
                        continue;
                    };
                    tx.get_buf(chunk, BlockType::InodeChunk, agno as u64)?;
                    let mask = if ipb == 64 {
                        u64::MAX
                    } else {
                        (1u64 << ipb) - 1
                    };
                    let Ag { sp, ino, .. } = &mut ag;
                    ino.insert(
                        tx,
                        &mut AgBlocks { me: self, sp },
                        InoChunk::key_with_free(chunk),
                        InoChunk {
                            chunk,
                            free_mask: mask,
                        }
                        .val(),
                    )?;
                    ag.sp.hdr.inodes += ipb as u64;
                    ag.sp.hdr.free_inodes += ipb as u64;
                    (chunk, mask)
                }
            };
            let slot = mask.trailing_zeros() as usize;
            debug_assert!(slot < ipb);
            self.set_chunk_mask(tx, &mut ag, chunk, mask, mask & !(1 << slot))?;
            ag.sp.hdr.free_inodes -= 1;
            self.write_ag(tx, &mut ag)?;
            return Ok(Some(ino_of(chunk, slot)));
        }
        Ok(None)
    }

    /// Changes chunk `chunk`'s free-slot mask from `old` to `new` in its AG's inode-chunk tree:
    /// the record moves between the keys of chunks with a free slot and of full chunks as the
    /// mask becomes or stops being zero (`InoChunk::key`).
    fn set_chunk_mask(
        &self,
        tx: &mut Trans<'_>,
        ag: &mut Ag,
        chunk: u64,
        old: u64,
        new: u64,
    ) -> Result<(), EngineError> {
        let (was, now) = (
            InoChunk {
                chunk,
                free_mask: old,
            },
            InoChunk {
                chunk,
                free_mask: new,
            },
        );
        let Ag { sp, ino: tree, .. } = ag;
        if was.key() == now.key() {
            tree.update(tx, &now.key(), now.val())?;
            return Ok(());
        }
        tree.delete(tx, &mut AgBlocks { me: self, sp }, &was.key())?;
        tree.insert(tx, &mut AgBlocks { me: self, sp }, now.key(), now.val())
    }

    /// Returns inode `ino`'s slot to its chunk's free mask. The caller has cleared the slot.
    #[track_caller]
    pub fn free_inode(&self, tx: &mut Trans<'_>, ino: u64) -> Result<(), EngineError> {
        let (chunk, slot) = ino_split(ino);
        let agno = self.agno_of(chunk);
        let mut ag = self.read_ag(tx, agno)?;
        let bad = |what: String| {
            EngineError::Corrupt(FormatError::new(chunk, "inode-chunk tree", "records", what))
        };
        let old = if let Some(v) = ag.ino.get(tx, &InoChunk::key_with_free(chunk))? {
            v[0]
        } else if ag.ino.get(tx, &InoChunk::key_full(chunk))?.is_some() {
            0
        } else {
            return Err(bad(format!("inode {ino}: no chunk at block {chunk}")));
        };
        if old & (1 << slot) != 0 {
            return Err(bad(format!("inode {ino} is already free")));
        }
        self.set_chunk_mask(tx, &mut ag, chunk, old, old | 1 << slot)?;
        ag.sp.hdr.free_inodes += 1;
        self.write_ag(tx, &mut ag)
    }

    /// Puts inode `ino` (no links left) on its AG's unlinked tree, in the transaction that takes
    /// its last link: a crash before it is freed leaves it there for the next mount to free.
    #[track_caller]
    pub fn unlinked_add(&self, tx: &mut Trans<'_>, ino: u64) -> Result<(), EngineError> {
        let mut ag = self.read_ag(tx, self.agno_of(ino_split(ino).0))?;
        let Ag { sp, unl, .. } = &mut ag;
        let rec = Unlinked { ino };
        unl.insert(tx, &mut AgBlocks { me: self, sp }, rec.key(), rec.val())?;
        self.write_ag(tx, &mut ag)
    }

    /// Takes inode `ino` off its AG's unlinked tree (in the transaction that frees it).
    #[track_caller]
    pub fn unlinked_remove(&self, tx: &mut Trans<'_>, ino: u64) -> Result<(), EngineError> {
        let mut ag = self.read_ag(tx, self.agno_of(ino_split(ino).0))?;
        let Ag { sp, unl, .. } = &mut ag;
        if unl
            .delete(tx, &mut AgBlocks { me: self, sp }, &Unlinked { ino }.key())?
            .is_none()
        {
            return Err(EngineError::Corrupt(FormatError::new(
                ino_split(ino).0,
                "unlinked-inode tree",
                "records",
                format!("inode {ino} is not on its AG's unlinked tree"),
            )));
        }
        self.write_ag(tx, &mut ag)
    }

    /// The inodes on AG `agno`'s unlinked tree.
    pub fn unlinked(&self, tx: &mut Trans<'_>, agno: u32) -> Result<Vec<u64>, EngineError> {
        let mark = tx.mark();
        let ag = self.read_ag(tx, agno)?;
        let hdr = ag.sp.start + AG_HEADER_OFFSET;
        let out = decode_all(ag.unl.collect(tx)?, hdr, "unlinked-inode tree", |k, v| {
            Unlinked::decode(k, v).map(|u| u.ino)
        })?;
        tx.release_clean(mark, ag.sp.start..ag.sp.start + ag.sp.len);
        Ok(out)
    }

    /// AG `agno`'s inode chunks (block, free mask) from its header and inode-chunk tree alone
    /// (fsck's repair, which rebuilds the free-space trees, must not need them).
    pub fn inode_chunks(
        &self,
        tx: &mut Trans<'_>,
        agno: u32,
    ) -> Result<Vec<(u64, u64)>, EngineError> {
        let mark = tx.mark();
        let ag = self.read_ag(tx, agno)?;
        let out = self.chunk_records(ag.ino.collect(tx)?, ag.sp.start)?;
        tx.release_clean(mark, ag.sp.start..ag.sp.start + ag.sp.len);
        Ok(out)
    }

    /// Whether block `chunk` is an inode chunk by AG's inode-chunk tree (inode numbers that come
    /// from outside, such as a file handle, are checked here before their block is read, as
    /// XFS checks an untrusted inode number against its inode B+tree). Holds nothing afterwards;
    /// the caller must hold no inode chunk (lock order) and chunks are never freed, so the
    /// answer stays true.
    pub fn is_inode_chunk(&self, tx: &mut Trans<'_>, chunk: u64) -> Result<bool, EngineError> {
        if chunk >= self.geo.block_count {
            return Ok(false);
        }
        let mark = tx.mark();
        let ag = self.read_ag(tx, self.agno_of(chunk))?;
        let found = ag.ino.get(tx, &InoChunk::key_with_free(chunk))?.is_some()
            || ag.ino.get(tx, &InoChunk::key_full(chunk))?.is_some();
        tx.release_clean(mark, ag.sp.start..ag.sp.start + ag.sp.len);
        Ok(found)
    }

    /// Reads AG `agno`'s header to refresh its summary, holding nothing afterwards.
    pub fn free_space_summary(
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

    /// The (chunk, free mask) of AG records `recs` (of the AG starting at `ag_start`), each
    /// decoded and checked by the inode-chunk tree's codec.
    fn chunk_records(
        &self,
        recs: Vec<(crate::btree::Key, crate::btree::Val)>,
        ag_start: u64,
    ) -> Result<Vec<(u64, u64)>, EngineError> {
        let slots = inodes_per_block(self.geo.block_size);
        decode_all(
            recs,
            ag_start + AG_HEADER_OFFSET,
            "inode-chunk tree",
            |k, v| InoChunk::decode(k, v, slots).map(|c| (c.chunk, c.free_mask)),
        )
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
    pub free_nodes: Vec<u64>,
    /// Inodes on the AG's unlinked tree, and that tree's node blocks.
    pub unlinked: Vec<u64>,
    pub unl_nodes: Vec<u64>,
    pub hdr: AgHeader,
}

/// Formats every AG of a freshly formatted filesystem, one transaction each.
pub fn format_all(eng: &Engine) -> Result<(), EngineError> {
    let alloc = Allocator::new(*eng.geometry());
    for agno in 0..eng.geometry().ag_count {
        let mut tx = eng.begin(TransKind::Write)?;
        alloc.format_ag(&mut tx, agno)?;
        tx.commit()?;
    }
    eng.force_all()
}

#[cfg(test)]
mod tests {
    use super::idle_piece;
    use proptest::prelude::*;

    /// An extent (start, len), its busy ranges, a target in it, min and max.
    type Case = ((u64, u64), Vec<(u64, u64)>, u64, u64, u64);

    /// Busy ranges inside the extent: sorted, possibly touching or overlapping, as frees from
    /// several commits can be.
    fn case() -> impl Strategy<Value = Case> {
        (0u64..1000, 1u64..200).prop_flat_map(|(s, l)| {
            let busy = prop::collection::vec((0..l, 1u64..40), 0..8).prop_map(move |v| {
                let mut v: Vec<(u64, u64)> =
                    v.into_iter().map(|(o, n)| (s + o, n.min(l - o))).collect();
                v.sort_unstable();
                v
            });
            (Just((s, l)), busy, s..s + l, 1u64..30, 0u64..30)
                .prop_map(|(e, b, at, min, extra)| (e, b, at, min, min + extra))
        })
    }

    proptest! {
        #[test]
        fn idle_piece_avoids_every_busy_block((ext, busy, at, min, max) in case()) {
            let (s, l) = ext;
            let idle = |b: u64| !busy.iter().any(|&(x, n)| x <= b && b < x + n);
            let longest_idle = (s..s + l)
                .fold((0u64, 0u64), |(best, run), b| {
                    let run = if idle(b) { run + 1 } else { 0 };
                    (best.max(run), run)
                })
                .0;
            match idle_piece(&busy, ext, at, min, max) {
                Some((es, el, cut, n)) => {
                    prop_assert_eq!((es, el), ext);
                    prop_assert!(n >= min && n <= max, "{} blocks for {}..={}", n, min, max);
                    prop_assert!(cut >= s && cut + n <= s + l);
                    prop_assert!((cut..cut + n).all(idle), "{}+{} holds a busy block", cut, n);
                    prop_assert_eq!(n, longest_idle.min(max), "not the longest piece there is");
                }
                None => prop_assert!(longest_idle < min, "an idle run of {} was missed", longest_idle),
            }
        }
    }

    #[test]
    fn idle_piece_cuts_at_the_target_when_it_is_idle_and_next_to_it_otherwise() {
        assert_eq!(
            idle_piece(&[], (100, 50), 120, 4, 8),
            Some((100, 50, 120, 8))
        );
        // The target is busy: the nearest idle run, after the busy range here.
        assert_eq!(
            idle_piece(&[(110, 20)], (100, 50), 120, 4, 8),
            Some((100, 50, 130, 8))
        );
        // Only before it: the run's end, as close as the whole length allows.
        assert_eq!(
            idle_piece(&[(118, 30)], (100, 50), 120, 4, 8),
            Some((100, 50, 110, 8))
        );
        // A long run is preferred to a nearer short one.
        assert_eq!(
            idle_piece(&[(104, 40)], (100, 50), 120, 1, 8),
            Some((100, 50, 144, 6))
        );
        assert_eq!(
            idle_piece(&[(110, 2), (115, 1)], (100, 60), 113, 1, 8),
            Some((100, 60, 116, 8))
        );
        assert_eq!(idle_piece(&[(100, 50)], (100, 50), 120, 1, 1), None);
    }
}
