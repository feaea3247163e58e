//! Transactions: `Engine::begin(kind)` reserves the log bytes and the memory the kind may need in
//! the worst case, together and all or nothing, in FIFO order. After it returns, nothing in the
//! transaction waits for or fails for lack of memory or log space: pinning a buffer charges the
//! ticket, an overrun is served from the emergency reserve and reported with its call site, and
//! commit hands the changes to the CIL and gives back what was not used.

// The reservation table sits below the engine (`crate::resv`); transactions are begun by kind.
pub use crate::resv::TransKind;
pub use crate::resv::{Resv, ResvTable};

use crate::cache::{BufContent, BufHead, ChunkMap};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::format::{BlockHeader, BlockType};
use crate::log::{CilCommit, CommitBuf, Space, SpaceNeed};
use parking_lot::{ArcMutexGuard, RawMutex};
use std::ops::Range;
use std::panic::Location;
use std::sync::Arc;

/// How many buffers a transaction had joined at some point (`Trans::mark`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BufMark(usize);

impl BufMark {
    /// Before any buffer: `release_clean(BufMark::START, ..)` releases every clean buffer.
    pub(crate) const START: BufMark = BufMark(0);
}

/// A buffer joined to a transaction, by position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufId(usize);

impl BufId {
    /// Names no buffer (a position no transaction reaches).
    pub(crate) const NONE: BufId = BufId(usize::MAX);
}

struct TBuf {
    head: Arc<BufHead>,
    /// The buffer's lock, held until the transaction ends; None once released unchanged.
    guard: Option<ArcMutexGuard<RawMutex, BufContent>>,
    btype: BlockType,
    /// Regions changed in the current step.
    dirty: ChunkMap,
    /// Memory for this buffer was charged to the ticket in this step.
    charged: bool,
    /// Logged in an earlier step of this rolling transaction: relogged at each roll so it never
    /// pins the log tail.
    relog: bool,
    /// The block is being freed: commit logs a cancel item for it.
    cancel: bool,
    /// Kept locked across rolls (as xfs_trans_bhold); every other buffer is released at a roll.
    held: bool,
    /// The bytes when joined (or at the last roll): every byte that differs from them when the
    /// step commits must lie in a logged region, as xfs_buf_item_log_check checks (debug builds).
    #[cfg(debug_assertions)]
    at_join: Option<Box<[u8]>>,
}

impl TBuf {
    // A released buffer is never handed out again: `find` skips it, and its BufId is reused only
    // after `release_all_clean` (whose callers hold none), so reaching one is a bug in the
    // caller, not a condition of the disk.
    fn content(&self) -> &BufContent {
        self.guard
            .as_deref()
            .expect("buffer used after release_clean")
    }
    /// The first byte changed since the buffer was joined (or last rolled) outside every region
    /// logged since: a change recovery would never replay.
    #[cfg(debug_assertions)]
    fn unlogged_change(&self) -> Option<usize> {
        let (Some(old), Some(g)) = (&self.at_join, &self.guard) else {
            return None;
        };
        if self.cancel {
            return None;
        }
        old.iter()
            .zip(g.data.iter())
            .position(|(a, b)| a != b)
            .and_then(|first| {
                (first..old.len()).find(|&i| old[i] != g.data[i] && !self.dirty.covers(i))
            })
    }

    /// Panics (debug builds) when `unlogged_change` finds a byte.
    #[cfg(debug_assertions)]
    fn assert_logged(&self) {
        if let Some(at) = self.unlogged_change() {
            panic!(
                "block {} ({}): byte {at} changed but not logged (logged regions {:?})",
                self.head.blkno,
                self.btype.name(),
                self.dirty
            );
        }
    }

    fn content_mut(&mut self) -> &mut BufContent {
        self.guard
            .as_deref_mut()
            .expect("buffer used after release_clean")
    }
}

/// The log side of a ticket.
#[derive(Debug, Clone, Copy)]
struct LogTicket {
    unit_bytes: u64,
    /// Steps still reserved on the reserve head, the current one included.
    count: u32,
    /// Bytes left in the current step.
    left_bytes: u64,
}

/// The memory side of a ticket.
#[derive(Debug, Clone, Copy, Default)]
struct MemTicket {
    /// What the ticket may pin before it overruns.
    limit_bytes: u64,
    /// Of the limit, what is held in the account's reserved bytes.
    reserved_bytes: u64,
    used_bytes: u64,
    /// Held in the emergency reserve: overruns, and what a roll borrowed.
    emergency_bytes: u64,
}

pub struct Trans<'e> {
    eng: &'e Engine,
    kind: TransKind,
    resv: Resv,
    log: LogTicket,
    mem: MemTicket,
    bufs: Vec<TBuf>,
    overrun: bool,
    finished: bool,
    /// Extents freed in the current step: busy from its commit until that checkpoint is durable.
    freed: Vec<(u64, u64)>,
    /// The allocator's lock while this step holds AG headers (see [`Trans::lock_allocation`]).
    alloc_guard: Option<ArcMutexGuard<RawMutex, ()>>,
    /// Counted among the engine's live transactions until dropped.
    _live: Live<'e>,
}

/// A transaction begun and not yet ended, counted in `Engine::live_trans`: the unmount waits
/// for them to end before it writes the log home, so no commit lands after the last force.
struct Live<'e>(&'e std::sync::atomic::AtomicUsize);

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Engine {
    /// Starts a transaction of `kind`: waits (FIFO, holding nothing) until both its log and its
    /// memory reservation fit. The only error is a shut-down filesystem.
    pub fn begin(&self, kind: TransKind) -> Result<Trans<'_>, EngineError> {
        self.begin_with(kind, self.table().get(kind))
    }

    /// Starts a transaction of `kind` reserving for `buffers` buffers, as sized from its request
    /// (`ResvTable::xattr_change`) where the kind's entry is the worst case of every request:
    /// never more than that entry (an entry a test undersized stays undersized). Using more than
    /// `buffers` is an overrun, reported with its call site as any other.
    pub(crate) fn begin_sized(
        &self,
        kind: TransKind,
        buffers: u32,
    ) -> Result<Trans<'_>, EngineError> {
        let entry = self.table().get(kind);
        debug_assert!(kind != TransKind::Read && entry.log_count == 1);
        let sized = self.table().sized(buffers, entry.log_count);
        self.begin_with(
            kind,
            Resv {
                buffers: sized.buffers.min(entry.buffers),
                log_unit_bytes: sized.log_unit_bytes.min(entry.log_unit_bytes),
                log_count: entry.log_count,
                mem_bytes: sized.mem_bytes.min(entry.mem_bytes),
            },
        )
    }

    fn begin_with(&self, kind: TransKind, resv: Resv) -> Result<Trans<'_>, EngineError> {
        let need = SpaceNeed {
            reserve_bytes: resv.log_unit_bytes * resv.log_count as u64,
            write_bytes: resv.log_unit_bytes,
            mem_bytes: if self.memres_on() { resv.mem_bytes } else { 0 },
        };
        let log = self.log();
        // Counted before the unmount flag is looked at: an unmount that has set the flag either
        // sees this transaction counted (and waits for it) or this begin sees the flag.
        self.live_trans
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let live = Live(&self.live_trans);
        if self.is_unmounting() {
            return Err(self.shutdown_error());
        }
        if kind == TransKind::Read {
            // Nothing to reserve: a reader never queues behind writers at the gate.
            if log.is_shut_down() {
                return Err(self.shutdown_error());
            }
            let ticket = LogTicket {
                unit_bytes: 0,
                count: 1,
                left_bytes: 0,
            };
            let mem = MemTicket::default();
            return Ok(Trans::started(self, kind, resv, ticket, mem, live));
        }
        self.mark_dirty()?;
        let out = log
            .space
            .acquire(need, false, &|| log.make_room())
            .map_err(|_| self.shutdown_error())?;
        if out.waited {
            self.kind_stats().record_wait(kind.index(), out.wait_ns);
        }
        let ticket = LogTicket {
            unit_bytes: resv.log_unit_bytes,
            count: resv.log_count,
            left_bytes: resv.log_unit_bytes,
        };
        let mem = MemTicket {
            limit_bytes: need.mem_bytes,
            reserved_bytes: need.mem_bytes,
            ..Default::default()
        };
        Ok(Trans::started(self, kind, resv, ticket, mem, live))
    }
}

impl<'e> Trans<'e> {
    /// A transaction of `kind` holding the tickets `log` and `mem`, nothing joined yet: a
    /// reader's (no reservation) and a writer's (its grant) start alike but for the tickets.
    fn started(
        eng: &'e Engine,
        kind: TransKind,
        resv: Resv,
        log: LogTicket,
        mem: MemTicket,
        live: Live<'e>,
    ) -> Trans<'e> {
        Trans {
            eng,
            kind,
            resv,
            log,
            mem,
            bufs: Vec::new(),
            overrun: false,
            finished: false,
            freed: Vec::new(),
            alloc_guard: None,
            _live: live,
        }
    }

    /// Records that this transaction freed `len` blocks at `start` (the allocator calls it).
    pub(crate) fn note_freed(&mut self, start: u64, len: u64) {
        self.freed.push((start, len));
    }

    pub(crate) fn block_size(&self) -> u32 {
        self.eng.geometry().block_size
    }

    pub(crate) fn engine(&self) -> &'e Engine {
        self.eng
    }

    fn find(&self, blkno: u64) -> Option<BufId> {
        self.bufs
            .iter()
            .position(|b| b.head.blkno == blkno && b.guard.is_some())
            .map(BufId)
    }

    /// Entries in this transaction's list of joined buffers (released ones at its end are
    /// dropped from it): for tests of its bound.
    pub fn joined_len(&self) -> usize {
        self.bufs.len()
    }

    /// Drops the released buffers at the end of the list, whose ids nobody may use any more
    /// (their locks are gone), so lookups walk only what the transaction still holds and what
    /// it joined after that. Ids of the buffers still joined do not move. Called at a roll only:
    /// a `BufMark` taken within a step must keep pointing past the buffers joined before it.
    fn trim_released(&mut self) {
        let keep = self
            .bufs
            .iter()
            .rposition(|b| b.guard.is_some())
            .map_or(0, |i| i + 1);
        self.bufs.truncate(keep);
    }

    /// A mark of the buffers joined so far, for `release_clean`.
    pub(crate) fn mark(&self) -> BufMark {
        BufMark(self.bufs.len())
    }

    /// Releases every buffer in `blocks` joined since `mark` that this transaction has not changed
    /// (as xfs_trans_brelse): its lock is dropped, so another transaction may take it. Lets a
    /// search that found nothing in one allocation group leave it before trying another. Buffers
    /// joined before the mark stay: the caller may still hold them (a parent directory's inode in
    /// the same AG, read but not yet changed), and its lock order depends on it.
    pub(crate) fn release_clean(&mut self, mark: BufMark, blocks: Range<u64>) {
        let from = mark.0.min(self.bufs.len());
        for b in &mut self.bufs[from..] {
            if blocks.contains(&b.head.blkno)
                && b.dirty.is_empty()
                && !b.relog
                && !b.cancel
                && b.guard.is_some()
            {
                #[cfg(debug_assertions)]
                b.assert_logged();
                b.guard = None;
            }
        }
    }

    /// Releases every unchanged buffer and, if that leaves none held, forgets them all, so a long
    /// scan in one transaction (fsck) does not make the list `read_buf` searches grow without
    /// bound. Every `BufId` handed out before is invalid afterwards.
    pub(crate) fn release_all_clean(&mut self) {
        self.release_clean(BufMark::START, 0..u64::MAX);
        if self.bufs.iter().all(|b| b.guard.is_none()) {
            self.bufs.clear();
            self.alloc_guard = None;
        }
    }

    fn join(
        &mut self,
        blkno: u64,
    ) -> Result<(Arc<BufHead>, ArcMutexGuard<RawMutex, BufContent>), EngineError> {
        self.eng.check_metadata_blkno(blkno)?;
        if self.eng.log().is_shut_down() {
            return Err(self.eng.shutdown_error());
        }
        let head = self.eng.cache().get(blkno);
        let guard = head.content.lock_arc();
        Ok((head, guard))
    }

    /// Joins the metadata block `blkno`, reading and verifying it (type `expect`). The buffer stays
    /// locked to this transaction until it ends. Reading charges nothing: only `log_range` pins.
    pub fn read_buf(&mut self, blkno: u64, expect: BlockType) -> Result<BufId, EngineError> {
        if let Some(id) = self.find(blkno) {
            let b = &self.bufs[id.0];
            if b.btype != expect {
                return Err(EngineError::Invalid(format!(
                    "block {blkno} is a {}, read as a {}",
                    b.btype.name(),
                    expect.name()
                )));
            }
            return Ok(id);
        }
        let (head, mut guard) = self.join(blkno)?;
        let btype = self
            .eng
            .cache()
            .read_into(blkno, &mut guard, Some(expect))?;
        Ok(self.push(head, guard, btype, true))
    }

    /// Adds a joined buffer; `watch` keeps a copy of its bytes to catch unlogged changes (debug
    /// builds).
    fn push(
        &mut self,
        head: Arc<BufHead>,
        guard: ArcMutexGuard<RawMutex, BufContent>,
        btype: BlockType,
        watch: bool,
    ) -> BufId {
        #[cfg(debug_assertions)]
        let at_join = watch.then(|| guard.data.to_vec().into_boxed_slice());
        #[cfg(not(debug_assertions))]
        let _ = watch;
        self.bufs.push(TBuf {
            head,
            guard: Some(guard),
            btype,
            dirty: ChunkMap::default(),
            charged: false,
            relog: false,
            cancel: false,
            held: false,
            #[cfg(debug_assertions)]
            at_join,
        });
        BufId(self.bufs.len() - 1)
    }

    /// Joins `blkno` as a new block of `btype` owned by `owner`: zeroed, with a fresh header, and
    /// logged whole (so recovery never applies part of a block over stale bytes).
    #[track_caller]
    pub fn get_buf(
        &mut self,
        blkno: u64,
        btype: BlockType,
        owner: u64,
    ) -> Result<BufId, EngineError> {
        let id = match self.find(blkno) {
            Some(id) => id,
            None => {
                let (head, guard) = self.join(blkno)?;
                self.push(head, guard, btype, false)
            }
        };
        let uuid = self.eng.superblock().uuid;
        let b = &mut self.bufs[id.0];
        b.btype = btype;
        b.cancel = false;
        let c = b.content_mut();
        c.data.fill(0);
        BlockHeader::init(&mut c.data, btype, blkno, owner, &uuid);
        c.valid = true;
        let len = c.data.len();
        self.log_range(id, 0..len);
        Ok(id)
    }

    /// Marks joined buffer `id` as freed: commit logs a cancel item for its block, so neither
    /// recovery nor write-back ever puts its old bytes over what the block holds next.
    #[track_caller]
    pub(crate) fn invalidate(&mut self, id: BufId) {
        let site = Location::caller();
        let b = &mut self.bufs[id.0];
        b.cancel = true;
        b.dirty = ChunkMap::default();
        if !b.charged {
            b.charged = true;
            let bytes = 2 * self.eng.cache().buf_bytes();
            self.charge_mem(bytes, site);
        }
    }

    pub fn data(&self, id: BufId) -> &[u8] {
        &self.bufs[id.0].content().data
    }

    /// Whether the block's structure was checked since it came from disk (see
    /// `BufContent::structure_checked`).
    pub(crate) fn structure_checked(&self, id: BufId) -> bool {
        self.bufs[id.0].content().structure_checked
    }

    /// Records that the block's structure was checked (its changes keep it sound).
    pub(crate) fn set_structure_checked(&mut self, id: BufId) {
        self.bufs[id.0].content_mut().structure_checked = true;
    }

    /// The bytes to change. Every change must be followed by `log_range` over it before commit.
    pub fn data_mut(&mut self, id: BufId) -> &mut [u8] {
        &mut self.bufs[id.0].content_mut().data
    }

    pub(crate) fn blkno(&self, id: BufId) -> u64 {
        self.bufs[id.0].head.blkno
    }

    /// Records that `range` of the buffer changed. The first change of a buffer in a step pins it:
    /// its memory (buffer and CIL copy) is charged to the ticket here, at the caller's site.
    #[track_caller]
    pub fn log_range(&mut self, id: BufId, range: Range<usize>) {
        let site = Location::caller();
        let b = &mut self.bufs[id.0];
        assert!(
            range.start < range.end && range.end <= b.content().data.len(),
            "log_range {range:?} outside block {}",
            b.head.blkno
        );
        b.dirty.set_range(range.start, range.end - range.start);
        if b.charged {
            return;
        }
        b.charged = true;
        let bytes = 2 * self.eng.cache().buf_bytes();
        self.charge_mem(bytes, site);
    }

    /// Charges `bytes` of pinned memory; past the reservation, from the emergency reserve.
    fn charge_mem(&mut self, bytes: u64, site: &'static Location<'static>) {
        let before = self.mem.used_bytes;
        self.mem.used_bytes += bytes;
        self.eng
            .trans_pinned
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        if !self.eng.memres_on() || self.mem.used_bytes <= self.mem.limit_bytes {
            return;
        }
        let over = self.mem.used_bytes - before.max(self.mem.limit_bytes);
        self.mem.emergency_bytes += over;
        self.overrun = true;
        self.eng.log().space.update(|s| s.mem.take_emergency(over));
        self.eng.overruns().report(
            self.kind.name(),
            "memory",
            self.mem.reserved_bytes,
            self.mem.used_bytes,
            site,
        );
    }

    /// Hands this step's changes to the CIL and settles both tickets. With `keep`, the step
    /// rolls: buffers stay joined and the ticket keeps its remaining count.
    #[track_caller]
    fn commit_step(&mut self, keep: bool) -> Result<u64, EngineError> {
        let site = Location::caller();
        let eng = self.eng;
        #[cfg(debug_assertions)]
        for b in &self.bufs {
            b.assert_logged();
        }
        let commit: Vec<CommitBuf<'_>> = self
            .bufs
            .iter()
            .filter(|b| !b.dirty.is_empty() || b.cancel)
            .map(|b| CommitBuf {
                head: &b.head,
                data: &b.content().data,
                dirty: &b.dirty,
                btype: b.btype,
                cancel: b.cancel,
            })
            .collect();
        let log = self.log;
        let mem = self.mem;
        let mut log_overrun = None;
        let mut kept = (0, 0);
        let (seq, log_used) = if commit.is_empty() {
            kept = settle_unlogged(eng, &log, &mem, keep);
            (eng.log().current_seq(), 0)
        } else {
            let out = eng.log().commit(&commit, |s, c| {
                settle(s, &log, &mem, c, keep, &mut log_overrun, &mut kept)
            })?;
            (out.seq, out.log_bytes)
        };
        drop(commit);
        eng.trans_pinned
            .fetch_sub(mem.used_bytes, std::sync::atomic::Ordering::Relaxed);
        if keep {
            (self.mem.reserved_bytes, self.mem.emergency_bytes) = kept;
        }
        eng.log().note_busy(&std::mem::take(&mut self.freed), seq);
        if let Some(used) = log_overrun {
            self.overrun = true;
            eng.overruns()
                .report(self.kind.name(), "log", log.left_bytes, used, site);
        }
        eng.kind_stats().record_end(
            self.kind.index(),
            (mem.reserved_bytes, mem.used_bytes),
            (self.log.unit_bytes, log_used),
            self.overrun,
        );
        Ok(seq)
    }

    /// Commits: the changes become part of the next checkpoint. Returns the commit sequence, to
    /// pass to `Engine::force` for durability.
    #[track_caller]
    pub fn commit(mut self) -> Result<u64, EngineError> {
        self.finished = true;
        let r = self.commit_step(false);
        self.bufs.clear();
        self.alloc_guard = None;
        r
    }

    /// Takes the allocator's lock (`lock`) before this step joins its first AG header, and keeps
    /// it until the step ends. A transaction may need several AGs in no fixed order (an inode in
    /// one AG, a directory block near its parent in another, frees wherever the extents lie), and
    /// two transactions taking two AG headers in opposite orders deadlocked under stress-ng; so
    /// one step at a time holds AG headers. Lock order: inode chunks, then this lock, then AG
    /// headers, then tree nodes; nothing holding it waits for an inode chunk.
    pub(crate) fn lock_allocation(&mut self, lock: &Arc<parking_lot::Mutex<()>>) {
        if self.alloc_guard.is_none() {
            let [taken, waits, waited_ns] = &self.eng.alloc_lock;
            taken.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.alloc_guard = Some(lock.try_lock_arc().unwrap_or_else(|| {
                // Contended: counted, so `ticketfs stats` shows what the lock costs.
                let t = std::time::Instant::now();
                let g = lock.lock_arc();
                waits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                waited_ns.fetch_add(
                    t.elapsed().as_nanos() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                g
            }));
        }
    }

    /// Abandons a transaction that changed nothing. Cancelling one that logged changes cannot undo
    /// them in memory: the filesystem shuts down, as XFS does.
    pub fn cancel(mut self) -> Result<(), EngineError> {
        self.finished = true;
        self.release_unchanged()
    }

    fn release_unchanged(&mut self) -> Result<(), EngineError> {
        let dirty = self.bufs.iter().any(|b| !b.dirty.is_empty());
        // A transaction that logged nothing must have changed nothing: its buffers go back to
        // the cache as they are. (One that logged shuts the log down below.)
        #[cfg(debug_assertions)]
        if !dirty && !std::thread::panicking() {
            for b in &self.bufs {
                b.assert_logged();
            }
        }
        let (log, mem) = (self.log, self.mem);
        self.eng
            .trans_pinned
            .fetch_sub(mem.used_bytes, std::sync::atomic::Ordering::Relaxed);
        settle_unlogged(self.eng, &log, &mem, false);
        self.bufs.clear();
        self.alloc_guard = None;
        if dirty {
            let why = format!(
                "a {} transaction was cancelled after it changed metadata",
                self.kind.name()
            );
            self.eng.log().fail(why);
            return Err(self.eng.shutdown_error());
        }
        Ok(())
    }

    /// Keeps buffer `id` locked and joined across the rolls of this transaction (the inode of a
    /// truncate); it is relogged at every roll so it never pins the log tail.
    pub fn hold(&mut self, id: BufId) {
        self.bufs[id.0].held = true;
    }

    /// Commits this step of a rolling transaction and regrants the next. Held buffers stay locked
    /// and are relogged; every other buffer is released (its changes are in the CIL), so the
    /// checkpoint and write-back free what earlier steps pinned while the transaction goes on.
    ///
    /// The ticket keeps its memory reservation across the roll, as its log reservation: only what
    /// the step pinned in the log is taken again, from the free budget, else from the emergency
    /// reserve while it has room, else by waiting at the front of the gate. The wait holds only
    /// the held buffers; what it waits for — checkpoints and write-back of unlocked buffers —
    /// needs none of them.
    #[track_caller]
    pub fn roll(&mut self) -> Result<u64, EngineError> {
        let seq = self.commit_step(true)?;
        let need_reserve = if self.log.count > 1 {
            0
        } else {
            self.log.unit_bytes
        };
        self.log.count = if self.log.count > 1 {
            self.log.count - 1
        } else {
            1
        };
        self.log.left_bytes = self.log.unit_bytes;
        self.overrun = false;
        for b in &mut self.bufs {
            if b.guard.is_none() {
                continue;
            }
            if b.cancel || !b.held {
                // Committed (or freed) in the step just ended: unlocked, left to the log.
                b.cancel = false;
                b.dirty = ChunkMap::default();
                b.guard = None;
                continue;
            }
            b.relog |= !b.dirty.is_empty();
            b.dirty = ChunkMap::default();
            b.charged = false;
            #[cfg(debug_assertions)]
            {
                b.at_join = Some(b.content().data.to_vec().into_boxed_slice());
            }
        }
        self.trim_released();
        if !self
            .bufs
            .iter()
            .any(|b| b.guard.is_some() && b.btype == BlockType::AgHeader)
        {
            self.alloc_guard = None;
        }
        let limit = if self.eng.memres_on() {
            self.resv.mem_bytes
        } else {
            0
        };
        let log = self.eng.log();
        let (reserved, emergency, missing) = log.space.update(|s| {
            s.mem
                .top_up(self.mem.reserved_bytes, self.mem.emergency_bytes, limit)
        });
        let need = SpaceNeed {
            reserve_bytes: need_reserve,
            write_bytes: self.log.unit_bytes,
            mem_bytes: missing,
        };
        let out = log
            .space
            .acquire(need, true, &|| log.make_room())
            .map_err(|_| self.eng.shutdown_error())?;
        if out.waited {
            self.eng
                .kind_stats()
                .record_wait(self.kind.index(), out.wait_ns);
        }
        self.mem = MemTicket {
            limit_bytes: limit,
            reserved_bytes: reserved + missing,
            used_bytes: 0,
            emergency_bytes: emergency,
        };
        for i in 0..self.bufs.len() {
            if self.bufs[i].guard.is_some() && self.bufs[i].relog {
                self.log_range(BufId(i), 0..crate::format::BLOCK_HEADER_BYTES);
            }
        }
        Ok(seq)
    }
}

/// Settles a ticket with the space state under the gate's lock: the CIL's share of log bytes stays
/// on the heads, the rest of this step goes back (and, unless rolling, the future steps too); the
/// memory the CIL took moves to the log's account, the rest of the reservation is released.
fn settle(
    s: &mut Space,
    log: &LogTicket,
    mem: &MemTicket,
    c: &CilCommit,
    rolling: bool,
    overrun: &mut Option<u64>,
    kept: &mut (u64, u64),
) {
    let future = if rolling {
        0
    } else {
        (log.count as u64 - 1) * log.unit_bytes
    };
    if c.log_bytes > log.left_bytes {
        *overrun = Some(c.log_bytes);
        s.force_grant(c.log_bytes - log.left_bytes);
        s.ungrant(future, 0);
    } else {
        let left = log.left_bytes - c.log_bytes;
        s.ungrant(left + future, left);
    }
    if rolling {
        *kept = s
            .mem
            .settle_roll(mem.reserved_bytes, mem.emergency_bytes, c.mem_bytes);
    } else {
        s.mem
            .settle(mem.reserved_bytes, mem.emergency_bytes, c.mem_bytes);
    }
}

/// `settle` for a step that logged nothing (a commit or roll with no changed buffer, a
/// cancel): an empty CIL commit, which cannot overrun. Returns what a `rolling` step keeps.
fn settle_unlogged(eng: &Engine, log: &LogTicket, mem: &MemTicket, rolling: bool) -> (u64, u64) {
    let nothing = CilCommit {
        seq: 0,
        log_bytes: 0,
        mem_bytes: 0,
    };
    let mut kept = (0, 0);
    eng.log()
        .space
        .update(|s| settle(s, log, mem, &nothing, rolling, &mut None, &mut kept));
    kept
}

impl Drop for Trans<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.finished = true;
            let _ = self.release_unchanged();
        }
    }
}
