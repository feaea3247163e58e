//! The journal: grant heads, the CIL (delayed logging), the checkpoint writer (group commit), the
//! AIL (write-back to home locations, moving the tail) and recovery.
//!
//! Flow of a change: a transaction commits its dirty buffers into the CIL, which keeps one
//! formatted copy per block (a block changed by many transactions between checkpoints is logged
//! once). The checkpoint writer writes the CIL as a checkpoint (data records then a commit
//! record) and flushes; its buffers then enter the AIL at the checkpoint's LSN. The AIL writes
//! them home and, as the oldest leave it, the tail advances and log space returns to the gate.

mod ail;
pub(crate) mod grant;
pub(crate) mod recovery;
mod writer;

pub use grant::LogPos;
pub(crate) use grant::{Space, SpaceNeed};
pub(crate) use recovery::format_log;
pub use recovery::{recover, Damage, Recovered};

use crate::cache::{BufHead, ChunkMap};
use crate::device::{AlignedBuf, DevError, Device};
use crate::error::EngineError;
use crate::format::log::{
    record_blocks, ITEM_HEADER_BYTES, LOG_RECORD_HEADER_BYTES, LOG_RECORD_PAYLOAD_MAX,
    REGION_HEADER_BYTES,
};
use crate::format::{BlockType, Enc, FormatError, Geometry, Lsn, Uuid, BLOCK_HEADER_BYTES};
use crate::mem::{Gate, MemAccount};
use parking_lot::{Condvar, Mutex};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Log blocks kept out of the grant heads' reach, for the records the log writes on its own:
/// the unmount record and tail-update (empty) checkpoints, one block each.
pub(crate) const LOG_RESERVE_BLOCKS: u64 = 4;

#[derive(Debug)]
pub enum LogError {
    Io(DevError),
    Corrupt(FormatError),
    /// The log was shut down after an earlier error; the message names it.
    Shutdown(String),
    /// A background thread (checkpoint writer, AIL pusher) could not be started.
    Spawn(std::io::Error),
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::Io(e) => write!(f, "log I/O error: {e}"),
            LogError::Corrupt(e) => write!(f, "corrupt log: {e}"),
            LogError::Shutdown(why) => write!(f, "filesystem shut down: {why}"),
            LogError::Spawn(e) => write!(f, "cannot start a log thread: {e}"),
        }
    }
}

impl std::error::Error for LogError {}

impl From<LogError> for EngineError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Io(e) => EngineError::Io(e),
            LogError::Corrupt(e) => EngineError::Corrupt(e),
            LogError::Shutdown(w) => EngineError::Shutdown(w),
            LogError::Spawn(e) => EngineError::Invalid(format!("cannot start a log thread: {e}")),
        }
    }
}

/// Tunables of the log's background work.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A CIL holding commits older than this is checkpointed (group commit window for non-fsync work).
    pub cil_timer: Duration,
    /// The AIL pusher looks at the log this often even when nobody asks.
    pub ail_interval: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            cil_timer: Duration::from_millis(100),
            ail_interval: Duration::from_millis(50),
        }
    }
}

/// One block's formatted copy in the CIL: the block's dirty regions as of its last commit.
struct CilItem {
    head: Arc<BufHead>,
    formatted: Vec<u8>,
}

struct Cil {
    seq: u64,
    items: HashMap<u64, CilItem>,
    items_bytes: u64,
    /// Log space handed over by committers; covers the checkpoint's on-disk size.
    held_bytes: u64,
    /// Memory of the formatted copies, charged to the log's account.
    copies_bytes: u64,
    first_commit: Option<Instant>,
}

struct WriterState {
    phys_head: LogPos,
    durable_seq: u64,
    durable_tail: LogPos,
    push_seq: u64,
    tail_update: bool,
    stop: bool,
}

struct AilState {
    items: BTreeMap<(Lsn, u64), Arc<BufHead>>,
    push: bool,
    stop: bool,
}

/// Counters of the log, for statistics and tests.
#[derive(Debug, Default)]
pub(crate) struct LogCounters {
    pub(crate) checkpoints: AtomicU64,
    pub(crate) tail_updates: AtomicU64,
    pub(crate) records: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) forces: AtomicU64,
    pub(crate) flushes: AtomicU64,
    pub(crate) home_writes: AtomicU64,
    pub(crate) items_logged: AtomicU64,
    /// Log forces made because an allocation wanted blocks whose freeing was not yet durable.
    pub(crate) busy_forces: AtomicU64,
}

/// What a commit handed to the CIL.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CilCommit {
    pub(crate) seq: u64,
    /// Log bytes the CIL took from the committing ticket.
    pub(crate) log_bytes: u64,
    /// Memory that moved from the ticket to the log (newly dirty buffers, new CIL copies).
    pub(crate) mem_bytes: u64,
}

/// A buffer a transaction commits: its head, its bytes, and the regions it changed.
pub(crate) struct CommitBuf<'a> {
    pub(crate) head: &'a Arc<BufHead>,
    pub(crate) data: &'a [u8],
    pub(crate) dirty: &'a ChunkMap,
    pub(crate) btype: BlockType,
    /// The block was freed: log a cancel item instead of its bytes.
    pub(crate) cancel: bool,
}

pub struct Log {
    dev: Arc<dyn Device>,
    uuid: Uuid,
    geo: Geometry,
    bs: u32,
    size_bytes: u64,
    /// Memory one cached buffer (or one CIL copy) is charged.
    buf_bytes: u64,
    /// The cache's count of memory outside it: the CIL's copies are added here while they live.
    pub(crate) copies_outside: Arc<AtomicU64>,
    pub(crate) space: Gate<Space>,
    cil: Mutex<Cil>,
    ws: Mutex<WriterState>,
    ws_cv: Condvar,
    done_cv: Condvar,
    ail: Mutex<AilState>,
    ail_cv: Condvar,
    failure: Mutex<Option<String>>,
    is_shut: AtomicBool,
    /// Set by the AIL before a buffer written home leaves the AIL (and so may move the tail);
    /// cleared by the checkpoint writer, which then flushes before writing a record whose tail
    /// could depend on that write.
    home_writes_unflushed: AtomicBool,
    /// The writer's private record buffer (its pool): writing the log never waits for memory.
    record_buf: Mutex<AlignedBuf>,
    cil_push_bytes: u64,
    /// Freed extents (start, length, freeing commit sequence) not yet durable.
    busy: Mutex<Vec<(u64, u64, u64)>>,
    config: LogConfig,
    threads: Mutex<Vec<JoinHandle<()>>>,
    start_cycle: u32,
    pub(crate) counters: LogCounters,
}

impl Log {
    /// Opens the log after recovery, with the memory account the gate admits against.
    pub(crate) fn open(
        dev: Arc<dyn Device>,
        geo: Geometry,
        uuid: Uuid,
        rec: &Recovered,
        mem: MemAccount,
        cache: &crate::cache::Cache,
        config: LogConfig,
    ) -> Result<Arc<Log>, LogError> {
        let (buf_bytes, outside) = (cache.buf_bytes(), cache.outside());
        let bs = geo.block_size;
        let size_bytes = geo.log_blocks * bs as u64;
        let space = Space::new(size_bytes, LOG_RESERVE_BLOCKS * bs as u64, rec.head, mem);
        let usable = space.usable_bytes;
        let log = Arc::new(Log {
            dev,
            uuid,
            geo,
            bs,
            size_bytes,
            buf_bytes,
            copies_outside: outside,
            space: Gate::new(space),
            cil: Mutex::new(Cil {
                seq: rec.next_seq,
                items: HashMap::new(),
                items_bytes: 0,
                held_bytes: 0,
                copies_bytes: 0,
                first_commit: None,
            }),
            ws: Mutex::new(WriterState {
                phys_head: rec.head,
                durable_seq: rec.next_seq - 1,
                durable_tail: rec.head,
                push_seq: 0,
                tail_update: false,
                stop: false,
            }),
            ws_cv: Condvar::new(),
            done_cv: Condvar::new(),
            ail: Mutex::new(AilState {
                items: BTreeMap::new(),
                push: false,
                stop: false,
            }),
            ail_cv: Condvar::new(),
            failure: Mutex::new(None),
            is_shut: AtomicBool::new(false),
            home_writes_unflushed: AtomicBool::new(false),
            record_buf: Mutex::new(AlignedBuf::new(writer_pool_bytes(bs) as usize)),
            cil_push_bytes: (usable / 8).max(bs as u64),
            busy: Mutex::new(Vec::new()),
            config,
            threads: Mutex::new(Vec::new()),
            start_cycle: rec.head.cycle,
            counters: LogCounters::default(),
        });
        let w = log.clone();
        let a = log.clone();
        let mut t = log.threads.lock();
        let spawned = std::thread::Builder::new()
            .name("tkfs-ckpt".into())
            .spawn(move || w.writer_main())
            .and_then(|h| {
                t.push(h);
                std::thread::Builder::new()
                    .name("tkfs-ail".into())
                    .spawn(move || a.ail_main())
            });
        match spawned {
            Ok(h) => t.push(h),
            Err(e) => {
                drop(t);
                log.stop_threads();
                return Err(LogError::Spawn(e));
            }
        }
        drop(t);
        Ok(log)
    }

    /// Log bytes a checkpoint whose item stream is `stream_bytes` long occupies on disk: its data
    /// records, each rounded up to whole blocks, and the commit record.
    pub(crate) fn checkpoint_bytes(stream_bytes: u64, bs: u32) -> u64 {
        let pmax = LOG_RECORD_PAYLOAD_MAX as u64;
        let full = stream_bytes / pmax;
        let rest = stream_bytes % pmax;
        let mut blocks = full * record_blocks(LOG_RECORD_PAYLOAD_MAX, bs) as u64 + 1;
        if rest > 0 {
            blocks += record_blocks(rest as usize, bs) as u64;
        }
        blocks * bs as u64
    }

    /// Worst-case stream bytes of one logged block: every other chunk dirty, header included.
    pub(crate) fn item_bytes_max(bs: u32) -> u64 {
        let chunks = (bs as u64).div_ceil(crate::cache::CHUNK_BYTES as u64);
        ITEM_HEADER_BYTES as u64 + chunks.div_ceil(2) * REGION_HEADER_BYTES as u64 + bs as u64
    }

    /// Log bytes a checkpoint may add beyond `item_bytes` of items, at most, for one
    /// transaction's share: a commit record block, and for every record the items may start or
    /// spill into, a record header and the rounding of the record up to whole blocks.
    pub(crate) fn checkpoint_overhead_bytes(bs: u32, item_bytes: u64) -> u64 {
        let records = item_bytes.div_ceil(LOG_RECORD_PAYLOAD_MAX as u64) + 1;
        bs as u64 + records * (LOG_RECORD_HEADER_BYTES as u64 + bs as u64)
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.is_shut.load(Ordering::Acquire)
    }

    pub(crate) fn failure(&self) -> Option<String> {
        self.failure.lock().clone()
    }

    fn shutdown_error(&self) -> LogError {
        LogError::Shutdown(self.failure().unwrap_or_else(|| "unmounted".into()))
    }

    /// Shuts the log down after an error: every later transaction, commit or force fails, and
    /// nothing more is written, so the image stays as the last durable checkpoint left it.
    pub(crate) fn fail(&self, why: String) {
        {
            let mut f = self.failure.lock();
            if f.is_none() {
                eprintln!("ticketfs: shutting down: {why}");
                *f = Some(why);
            }
        }
        self.is_shut.store(true, Ordering::Release);
        self.space.shut_down();
        self.ws.lock().stop = true;
        self.ws_cv.notify_all();
        self.done_cv.notify_all();
        self.ail.lock().stop = true;
        self.ail_cv.notify_all();
    }

    /// Closes the log after a clean unmount: every later transaction, commit or force fails as
    /// after a shutdown, with "unmounted", and nothing more is written.
    pub(crate) fn close(&self) {
        self.failure
            .lock()
            .get_or_insert_with(|| "unmounted".into());
        self.is_shut.store(true, Ordering::Release);
        self.space.shut_down();
        self.done_cv.notify_all();
    }

    /// Inserts a transaction's changed buffers into the CIL. `settle` runs under the CIL lock with
    /// the space state, the log bytes and the memory the CIL took, so the accounts never see a
    /// checkpoint release what was not yet charged.
    pub(crate) fn commit(
        &self,
        bufs: &[CommitBuf<'_>],
        settle: impl FnOnce(&mut Space, &CilCommit),
    ) -> Result<CilCommit, LogError> {
        if self.is_shut_down() {
            return Err(self.shutdown_error());
        }
        let bs = self.bs as usize;
        let mut cil = self.cil.lock();
        let mut mem_bytes = 0;
        let old_phys = Self::checkpoint_bytes(cil.items_bytes, self.bs);
        for b in bufs {
            let mut ls = b.head.log.lock();
            if b.cancel {
                ls.stale = true;
                ls.dirty.clear();
            } else {
                ls.stale = false;
                ls.dirty.union(b.dirty);
                // The header chunk changes at every write-back (LSN, CRC): always logged.
                ls.dirty.set_range(0, BLOCK_HEADER_BYTES);
            }
            ls.btype = Some(b.btype);
            if !ls.charged {
                ls.charged = true;
                mem_bytes += self.buf_bytes;
            }
            // A cancel item is an item with no regions.
            let formatted = format_item(b.head.blkno, b.btype, &ls.dirty, b.data, bs);
            let seq = cil.seq;
            match cil.items.get_mut(&b.head.blkno) {
                Some(item) => {
                    let old = item.formatted.len() as u64;
                    item.formatted = formatted;
                    let new = item.formatted.len() as u64;
                    // A block's dirty map only grows in the CIL; a cancel shrinks the item.
                    debug_assert!(new >= old || b.cancel, "block {} item shrank", b.head.blkno);
                    cil.items_bytes = cil.items_bytes - old + new;
                }
                None => {
                    cil.items_bytes += formatted.len() as u64;
                    cil.items.insert(
                        b.head.blkno,
                        CilItem {
                            head: b.head.clone(),
                            formatted,
                        },
                    );
                    ls.cil_seqs.push(seq);
                    cil.copies_bytes += self.buf_bytes;
                    self.copies_outside
                        .fetch_add(self.buf_bytes, Ordering::Relaxed);
                    mem_bytes += self.buf_bytes;
                }
            }
        }
        let new_phys = Self::checkpoint_bytes(cil.items_bytes, self.bs);
        // The first commit of a context also pays for the commit record (counted in old_phys).
        let log_bytes = if cil.held_bytes == 0 {
            new_phys
        } else {
            new_phys.saturating_sub(old_phys)
        };
        cil.held_bytes += log_bytes;
        cil.first_commit.get_or_insert_with(Instant::now);
        let out = CilCommit {
            seq: cil.seq,
            log_bytes,
            mem_bytes,
        };
        self.counters
            .items_logged
            .fetch_add(bufs.len() as u64, Ordering::Relaxed);
        self.space.update(|s| settle(s, &out));
        let big = cil.items_bytes >= self.cil_push_bytes;
        drop(cil);
        if big {
            self.ws_cv.notify_one();
        }
        Ok(out)
    }

    /// The busy list (start, length, freeing commit), without the entries whose checkpoint is
    /// durable now.
    fn busy_live(&self) -> parking_lot::MutexGuard<'_, Vec<(u64, u64, u64)>> {
        let durable = self.ws.lock().durable_seq;
        let mut b = self.busy.lock();
        b.retain(|&(_, _, s)| s > durable);
        b
    }

    /// Blocks freed by the commit `seq`: until that checkpoint is durable they still belong to
    /// their old owner on disk, so they must not be handed out again (XFS's busy extents).
    pub(crate) fn note_busy(&self, extents: &[(u64, u64)], seq: u64) {
        if extents.is_empty() {
            return;
        }
        self.busy_live()
            .extend(extents.iter().map(|&(start, len)| (start, len, seq)));
    }

    /// The busy ranges (freed by commits not yet durable) that overlap `start..start+len`,
    /// clipped to it and sorted by start.
    pub(crate) fn busy_in(&self, start: u64, len: u64) -> Vec<(u64, u64)> {
        let end = start + len;
        let mut out: Vec<(u64, u64)> = self
            .busy_live()
            .iter()
            .filter(|&&(s, l, _)| s < end && start < s + l)
            .map(|&(s, l, _)| {
                let (a, z) = (s.max(start), (s + l).min(end));
                (a, z - a)
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// Makes sure no block of `start..start+len` is busy: forces the log up to the latest commit
    /// that freed one of them. Called inside a transaction about to reuse the blocks; safe, since
    /// a checkpoint never waits for buffer locks.
    pub(crate) fn wait_not_busy(&self, start: u64, len: u64) -> Result<(), LogError> {
        let need = self
            .busy_live()
            .iter()
            .filter(|&&(s, l, _)| s < start + len && start < s + l)
            .map(|&(_, _, q)| q)
            .max();
        match need {
            Some(seq) => {
                self.counters.busy_forces.fetch_add(1, Ordering::Relaxed);
                self.force(seq)
            }
            None => Ok(()),
        }
    }

    /// The sequence of the CIL context now collecting commits.
    pub(crate) fn current_seq(&self) -> u64 {
        self.cil.lock().seq
    }

    /// Waits until the checkpoint holding commit sequence `seq` is on stable storage.
    pub(crate) fn force(&self, seq: u64) -> Result<(), LogError> {
        self.counters.forces.fetch_add(1, Ordering::Relaxed);
        let mut ws = self.ws.lock();
        loop {
            if ws.durable_seq >= seq {
                return Ok(());
            }
            if self.is_shut_down() {
                return Err(self.shutdown_error());
            }
            // Nothing committed into `seq` yet: done once every earlier checkpoint is durable.
            // The one before it may still be in the writer's hands (taken from the CIL, not
            // yet written), and a force must wait for it: returning here then let syncfs and
            // the unmount pass over a checkpoint in flight (issue 17's lost files).
            if self.cil.lock().seq == seq && self.idle_at(&ws, seq) {
                return Ok(());
            }
            if ws.push_seq < seq {
                ws.push_seq = seq;
                self.ws_cv.notify_one();
            }
            self.done_cv.wait_for(&mut ws, Duration::from_millis(100));
        }
    }

    /// Is the CIL context `seq` empty with no checkpoint in flight before it? Checkpoints are
    /// numbered without gaps and written one at a time, so `seq - 1` is either durable or being
    /// written (`take_context` moved the CIL on to `seq` when it took it).
    fn idle_at(&self, ws: &WriterState, seq: u64) -> bool {
        ws.durable_seq + 1 >= seq && {
            let cil = self.cil.lock();
            cil.seq == seq && cil.items.is_empty()
        }
    }

    /// Is everything committed so far durable and written home: the CIL empty, no checkpoint
    /// in flight, the AIL empty? Only then may an unmount record say the log is empty.
    /// (Called where nothing commits any more: the AIL, looked at second, can then only shrink.)
    pub(crate) fn quiescent(&self) -> bool {
        let idle = {
            let ws = self.ws.lock();
            let seq = self.current_seq();
            self.idle_at(&ws, seq)
        };
        idle && self.ail_len() == 0
    }

    /// Forces everything committed so far.
    pub(crate) fn force_all(&self) -> Result<(), LogError> {
        let seq = self.current_seq();
        self.force(seq)
    }

    /// Asks for room: the AIL pushes (writing buffers home to move the tail and free pinned
    /// memory) and, if buffers it needs are pinned in the CIL, the CIL is checkpointed.
    pub fn make_room(&self) {
        self.ail.lock().push = true;
        self.ail_cv.notify_one();
    }

    fn request_cil_push(&self) {
        let seq = self.current_seq();
        let mut ws = self.ws.lock();
        ws.push_seq = ws.push_seq.max(seq);
        drop(ws);
        self.ws_cv.notify_one();
    }

    /// File data was written to newly allocated blocks: the next checkpoint flushes the device
    /// before its records, so no record makes blocks reachable before their data is durable.
    pub(crate) fn note_data_write(&self) {
        self.home_writes_unflushed.store(true, Ordering::SeqCst);
    }

    /// Number of buffers waiting in the AIL to be written home.
    pub(crate) fn ail_len(&self) -> usize {
        self.ail.lock().items.len()
    }

    /// Times the log has wrapped since mount.
    pub(crate) fn wraps(&self) -> u32 {
        self.ws.lock().phys_head.cycle - self.start_cycle
    }

    /// Physical head, durable tail and durable checkpoint sequence.
    pub(crate) fn positions(&self) -> (LogPos, LogPos, u64) {
        let ws = self.ws.lock();
        (ws.phys_head, ws.durable_tail, ws.durable_seq)
    }

    /// Writes everything home and leaves an unmount record: the log is then empty and clean.
    pub(crate) fn unmount(&self) -> Result<(), LogError> {
        self.force_all()?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if self.is_shut_down() {
                return Err(self.shutdown_error());
            }
            if self.quiescent() {
                break;
            }
            if Instant::now() > deadline {
                let why = format!(
                    "unmount: {} buffers still in the AIL after 120 s",
                    self.ail_len()
                );
                self.fail(why);
                return Err(self.shutdown_error());
            }
            self.force_all()?;
            self.make_room();
            std::thread::sleep(Duration::from_millis(2));
        }
        self.stop_threads();
        // With the threads stopped nothing moves: a last look, since an unmount record over
        // a log that still holds work would make the next mount skip it.
        if !self.quiescent() {
            let why = format!(
                "unmount: the log is not empty after the last force ({} buffers in the AIL)",
                self.ail_len()
            );
            self.fail(why);
            return Err(self.shutdown_error());
        }
        self.write_unmount_record()
    }

    /// Stops the background threads without writing anything more (a crash, for tests).
    pub(crate) fn stop_threads(&self) {
        self.ws.lock().stop = true;
        self.ws_cv.notify_all();
        self.ail.lock().stop = true;
        self.ail_cv.notify_all();
        let threads: Vec<_> = self.threads.lock().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Formats one block's dirty regions as a log item.
/// The log writer's private pool: one record buffer of the largest record, allocated at mount so
/// the checkpoint writer (which frees memory) never allocates on its way.
pub(crate) fn writer_pool_bytes(block_size: u32) -> u64 {
    record_blocks(LOG_RECORD_PAYLOAD_MAX, block_size) as u64 * block_size as u64
}

fn format_item(blkno: u64, btype: BlockType, dirty: &ChunkMap, data: &[u8], bs: usize) -> Vec<u8> {
    let runs = dirty.runs(bs);
    let len = ITEM_HEADER_BYTES
        + runs
            .iter()
            .map(|(_, l)| REGION_HEADER_BYTES + l)
            .sum::<usize>();
    let mut out = vec![0u8; len];
    let mut e = Enc::new(&mut out);
    e.u64(0, blkno);
    e.u32(8, btype.magic());
    e.u16(12, runs.len() as u16);
    let mut at = ITEM_HEADER_BYTES;
    for (off, l) in runs {
        let mut e = Enc::new(&mut out[at..]);
        e.u32(0, off as u32);
        e.u32(4, l as u32);
        out[at + REGION_HEADER_BYTES..at + REGION_HEADER_BYTES + l]
            .copy_from_slice(&data[off..off + l]);
        at += REGION_HEADER_BYTES + l;
    }
    out
}
