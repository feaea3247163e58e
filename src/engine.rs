//! The storage engine as a whole: mounts a formatted device (superblock, log recovery), owns the
//! cache, the log and the reservation table, and unmounts cleanly.

use crate::cache::{Cache, CacheStats};
use crate::device::{AlignedBuf, Device};
pub(crate) use crate::error::EngineError;
use crate::format::{Geometry, Superblock, Uuid};
use crate::log::{format_log, recover, Log, LogConfig, Recovered};
use crate::mem::{
    KindStats, KindStatsTable, MemAccount, MemRes, OverrunPolicy, OverrunReport, OverrunReporter,
};
use crate::resv::{Resv, ResvTable, TransKind};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

pub(crate) use crate::mem::MEM_BUDGET_DEFAULT_BYTES;
/// The emergency reserve that serves overruns: this fraction of the budget (1/16).
pub(crate) const EMERGENCY_DIVISOR: u64 = 16;
/// Mount options of the engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub memres: MemRes,
    pub mem_budget_bytes: u64,
    pub overrun: OverrunPolicy,
    pub log: LogConfig,
    /// Replaces table entries: a testing knob, to check that an undersized entry is reported.
    pub resv_override: Vec<(TransKind, Resv)>,
    /// Replaces the memory of table entries (`-o debug_resv=KIND:BYTES`), the same knob for a
    /// mounted daemon.
    pub mem_override: Vec<(TransKind, u64)>,
    /// A read-only mount (`-o ro`): an image unmounted cleanly is not written at all, as XFS
    /// and ext4 leave a clean one, until something is to change (a remount to read-write, a
    /// transaction that may write: `Engine::mark_dirty`). A dirty one is recovered and marked
    /// as any mount does.
    pub read_only: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            memres: MemRes::On,
            mem_budget_bytes: MEM_BUDGET_DEFAULT_BYTES,
            overrun: OverrunPolicy::Warn,
            log: LogConfig::default(),
            resv_override: Vec::new(),
            mem_override: Vec::new(),
            read_only: false,
        }
    }
}

/// How long the unmount waits for the transactions already begun to end (each needs only the
/// log to write and the AIL to push, so this bounds a stuck device, not a wait that happens).
const UNMOUNT_TRANS_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// A snapshot of the engine's accounts and counters.
#[derive(Debug, Clone)]
pub struct EngineStats {
    pub mem: MemAccount,
    /// Log tail and grant heads (positions), and the log's size.
    // Read only by the derived Debug (tests/concurrency.rs prints these stats on a deadlock).
    #[allow(dead_code)]
    pub(crate) space: crate::log::Space,
    pub waiters: usize,
    pub kinds: Vec<KindStats>,
    pub cache: CacheStats,
    pub overruns: u64,
    pub checkpoints: u64,
    // Read only by the derived Debug (tests/concurrency.rs prints these stats on a deadlock).
    #[allow(dead_code)]
    pub(crate) tail_updates: u64,
    pub log_bytes_written: u64,
    pub log_wraps: u32,
    pub home_writes: u64,
    // Read only by the derived Debug (tests/concurrency.rs prints these stats on a deadlock).
    #[allow(dead_code)]
    pub(crate) flushes: u64,
    pub forces: u64,
    /// Of `forces`, those an allocation made for blocks freed by a commit not yet durable.
    pub busy_forces: u64,
    // Read only by the derived Debug (tests/concurrency.rs prints these stats on a deadlock).
    #[allow(dead_code)]
    pub(crate) ail_len: usize,
    /// The allocator lock: times taken, times a step waited for it, nanoseconds waited.
    pub(crate) alloc_lock: [u64; 3],
}

pub struct Engine {
    dev: Arc<dyn Device>,
    /// The same device, numbering its flushes (fsync shares them).
    flushes: Arc<crate::device::FlushTracked>,
    /// The superblock's format version: as read, until `upgrade_format`.
    version: AtomicU32,
    sb: Superblock,
    cache: Arc<Cache>,
    log: Arc<Log>,
    table: ResvTable,
    kind_stats: KindStatsTable,
    overruns: OverrunReporter,
    memres: MemRes,
    recovered: Recovered,
    unmounted: AtomicBool,
    /// The superblocks say dirty (mounted): written at mount, or for a read-only mount of a
    /// clean image at its first change (`mark_dirty`); an engine that never marked them writes
    /// nothing at unmount either.
    marked: AtomicBool,
    /// Serializes `mark_dirty`'s write.
    mark_lock: std::sync::Mutex<()>,
    /// Transactions begun and not yet ended (`trans::Live`).
    pub(crate) live_trans: std::sync::atomic::AtomicUsize,
    /// Memory live transactions have pinned so far (used of their reservations).
    pub(crate) trans_pinned: AtomicU64,
    /// The allocator lock (`Trans::lock_allocation`): taken, taken after waiting, time waited.
    pub(crate) alloc_lock: [AtomicU64; 3],
}

/// Reads the superblock: the copy the rest of the filesystem agrees with (`sbselect`).
pub use crate::sbselect::read_superblock;

fn write_superblocks(dev: &dyn Device, sb: &Superblock) -> Result<(), EngineError> {
    let bs = sb.geometry.block_size as usize;
    let mut buf = AlignedBuf::new(bs);
    for blkno in [0, sb.geometry.backup_sb_blkno()] {
        sb.encode(&mut buf, blkno);
        dev.write(blkno, &buf).map_err(EngineError::Io)?;
    }
    dev.flush().map_err(EngineError::Io)
}

/// Writes a new, empty filesystem of geometry `g` on `dev`: the superblocks and an empty log. The
/// allocation groups' structures are written by the filesystem layer's own format step.
pub fn format(
    dev: &dyn Device,
    g: Geometry,
    uuid: Uuid,
    label: &str,
) -> Result<Superblock, EngineError> {
    if dev.block_size() != g.block_size || dev.block_count() < g.block_count {
        return Err(EngineError::Invalid(format!(
            "device of {} x {} bytes cannot hold {} x {}",
            dev.block_count(),
            dev.block_size(),
            g.block_count,
            g.block_size
        )));
    }
    let table = ResvTable::new(&g);
    if g.log_blocks < table.min_log_blocks() {
        return Err(EngineError::Invalid(format!(
            "log of {} blocks is below the minimum {} for this geometry",
            g.log_blocks,
            table.min_log_blocks()
        )));
    }
    let sb = Superblock::new(g, uuid, label);
    format_log(dev, &sb)?;
    write_superblocks(dev, &sb)?;
    Ok(sb)
}

/// A new random filesystem UUID.
pub(crate) fn new_uuid() -> Uuid {
    let mut u = [0u8; 16];
    // SAFETY: getrandom writes at most u.len() bytes into u.
    let n = unsafe { libc::getrandom(u.as_mut_ptr().cast(), u.len(), 0) };
    if n != u.len() as isize {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(1);
        u.copy_from_slice(&(t ^ (std::process::id() as u128) << 64).to_le_bytes());
    }
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

impl Engine {
    /// Mounts: reads the superblock, recovers the log, marks the filesystem dirty, starts the
    /// checkpoint writer and the AIL pusher.
    pub fn mount(dev: Arc<dyn Device>, opts: EngineOptions) -> Result<Engine, EngineError> {
        let mut sb = read_superblock(&*dev)?;
        let g = sb.geometry;
        let mut table = ResvTable::new(&g);
        if g.log_blocks < table.min_log_blocks() {
            return Err(EngineError::Invalid(format!(
                "log of {} blocks is below the minimum {} for this geometry",
                g.log_blocks,
                table.min_log_blocks()
            )));
        }
        for (k, r) in &opts.resv_override {
            table.set(*k, *r);
        }
        for &(k, bytes) in &opts.mem_override {
            let r = table.get(k);
            table.set(
                k,
                Resv {
                    mem_bytes: bytes,
                    ..r
                },
            );
        }
        let memres_on = opts.memres == MemRes::On;
        if memres_on && opts.mem_budget_bytes < table.min_budget_bytes() {
            return Err(EngineError::Invalid(format!(
                "memory budget of {} bytes is below the minimum {} for this geometry (two of the largest reservations and the emergency reserve)",
                opts.mem_budget_bytes,
                table.min_budget_bytes()
            )));
        }
        let flushes = Arc::new(crate::device::FlushTracked::new(dev));
        let dev: Arc<dyn Device> = flushes.clone();
        let recovered = recover(&*dev, &sb, crate::log::Damage::Refuse)?;
        // Recovery of a clean log replays (writes) nothing: a read-only mount then leaves the
        // image as it is until something is to change.
        let defer = opts.read_only
            && recovered.clean
            && sb.state == crate::format::superblock::SB_STATE_CLEAN;
        if !defer {
            sb.state = crate::format::superblock::SB_STATE_DIRTY;
            write_superblocks(&*dev, &sb)?;
        }
        let emergency = opts.mem_budget_bytes / EMERGENCY_DIVISOR;
        let mem = MemAccount::new(memres_on, opts.mem_budget_bytes, emergency);
        let cache = Arc::new(Cache::new(dev.clone(), sb.uuid, opts.mem_budget_bytes));
        let log = Log::open(
            dev.clone(),
            g,
            sb.uuid,
            &recovered,
            mem,
            &cache,
            opts.log.clone(),
        )?;
        let names: Vec<&'static str> = TransKind::ALL.iter().map(|k| k.name()).collect();
        Ok(Engine {
            dev,
            flushes,
            version: AtomicU32::new(sb.version),
            sb,
            cache,
            log,
            table,
            kind_stats: KindStatsTable::new(&names),
            overruns: OverrunReporter::new(opts.overrun),
            memres: opts.memres,
            recovered,
            unmounted: AtomicBool::new(false),
            marked: AtomicBool::new(!defer),
            mark_lock: std::sync::Mutex::new(()),
            live_trans: std::sync::atomic::AtomicUsize::new(0),
            trans_pinned: AtomicU64::new(0),
            alloc_lock: Default::default(),
        })
    }

    /// Moves an image of an older format version to this one (a read-write mount, before it
    /// writes anything of the new version's): every older image is a valid image of this
    /// version, so only the superblock's version changes. A read-only mount leaves it.
    pub(crate) fn upgrade_format(&self) -> Result<(), EngineError> {
        use crate::format::FORMAT_VERSION;
        // Called before anything can be written (a read-write mount, a remount to read-write).
        self.mark_dirty()?;
        if self.version.swap(FORMAT_VERSION, Ordering::SeqCst) == FORMAT_VERSION {
            return Ok(());
        }
        let mut sb = self.sb.clone();
        sb.state = crate::format::superblock::SB_STATE_DIRTY;
        sb.version = FORMAT_VERSION;
        write_superblocks(&*self.dev, &sb)
    }

    /// Marks the superblocks dirty (mounted) if they are not yet: before the first change of a
    /// read-only mount of a clean image (`EngineOptions::read_only`).
    pub(crate) fn mark_dirty(&self) -> Result<(), EngineError> {
        if self.marked.load(Ordering::Acquire) {
            return Ok(());
        }
        let _one = self
            .mark_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.marked.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut sb = self.sb.clone();
        sb.state = crate::format::superblock::SB_STATE_DIRTY;
        sb.version = self.version.load(Ordering::SeqCst);
        write_superblocks(&*self.dev, &sb)?;
        self.marked.store(true, Ordering::Release);
        Ok(())
    }

    /// Writes everything home, leaves an unmount record and marks the superblock clean.
    pub fn unmount(self) -> Result<(), EngineError> {
        self.unmount_now()
    }

    /// [`Engine::unmount`] through a shared reference, for a daemon whose request threads still
    /// hold the engine when the kernel asks it to unmount (DESTROY): afterwards every
    /// transaction fails (the log is closed). A second call does nothing.
    pub(crate) fn unmount_now(&self) -> Result<(), EngineError> {
        if self.unmounted.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        // No transaction begins from here on (`begin` sees the flag); those already begun end
        // before the log is forced for the last time, so none commits after it.
        let deadline = std::time::Instant::now() + UNMOUNT_TRANS_WAIT;
        while self.live_trans.load(Ordering::SeqCst) > 0 {
            if std::time::Instant::now() > deadline {
                self.log.fail(format!(
                    "unmount: {} transactions still running after {UNMOUNT_TRANS_WAIT:?}",
                    self.live_trans.load(Ordering::SeqCst)
                ));
                self.log.stop_threads();
                return Err(self.shutdown_error());
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if !self.marked.load(Ordering::Acquire) {
            // Nothing was changed (every transaction that may write marks first): the log and
            // the superblocks are as the mount found them, clean.
            self.log.stop_threads();
            self.log.close();
            return Ok(());
        }
        let r = self.log.unmount();
        if let Err(e) = r {
            self.log.stop_threads();
            return Err(e.into());
        }
        let mut sb = self.sb.clone();
        sb.state = crate::format::superblock::SB_STATE_CLEAN;
        sb.version = self.version.load(Ordering::SeqCst);
        let r = write_superblocks(&*self.dev, &sb);
        self.log.close();
        r
    }

    /// Stops the background threads and drops everything unwritten, as a crash would (tests).
    pub fn crash(self) {
        self.unmounted.store(true, Ordering::Release);
        self.log.stop_threads();
    }

    /// Waits until the commit `seq` is durable.
    pub fn force(&self, seq: u64) -> Result<(), EngineError> {
        Ok(self.log.force(seq)?)
    }

    /// A ticket for `flush_since`: taken before the work an fsync must make durable.
    pub(crate) fn flush_ticket(&self) -> u64 {
        self.flushes.ticket()
    }

    /// Makes every device write that completed before `ticket` durable, sharing a flush that
    /// began after it (the log's, or another fsync's) when one has completed.
    pub(crate) fn flush_since(&self, ticket: u64) -> Result<(), EngineError> {
        self.flushes.flush_since(ticket).map_err(EngineError::Io)
    }

    /// Makes every commit so far durable (syncfs).
    pub fn force_all(&self) -> Result<(), EngineError> {
        Ok(self.log.force_all()?)
    }

    /// Records the root directory (mkfs); written with the superblock at unmount.
    pub(crate) fn set_root_ino(&mut self, ino: u64) {
        self.sb.root_ino = ino;
    }

    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }
    pub fn geometry(&self) -> &Geometry {
        &self.sb.geometry
    }
    pub fn table(&self) -> &ResvTable {
        &self.table
    }
    pub fn recovered(&self) -> &Recovered {
        &self.recovered
    }
    pub(crate) fn device(&self) -> &Arc<dyn Device> {
        &self.dev
    }
    pub(crate) fn cache(&self) -> &Cache {
        &self.cache
    }
    pub fn log(&self) -> &Log {
        &self.log
    }
    pub(crate) fn kind_stats(&self) -> &KindStatsTable {
        &self.kind_stats
    }
    pub(crate) fn overruns(&self) -> &OverrunReporter {
        &self.overruns
    }
    pub(crate) fn memres_on(&self) -> bool {
        self.memres == MemRes::On
    }
    pub fn overrun_reports(&self) -> Vec<OverrunReport> {
        self.overruns.reports()
    }
    pub fn is_shut_down(&self) -> bool {
        self.log.is_shut_down()
    }

    /// Has the unmount begun (no transaction may begin any more)?
    pub(crate) fn is_unmounting(&self) -> bool {
        self.unmounted.load(Ordering::SeqCst)
    }

    /// Shuts the filesystem down on request (the shutdown ioctl): nothing more is written and
    /// every later transaction fails, as after an I/O error; what the log holds on disk is
    /// what the next mount replays.
    pub(crate) fn shut_down(&self, why: &str) {
        self.log.fail(why.to_string());
    }

    pub(crate) fn shutdown_error(&self) -> EngineError {
        EngineError::Shutdown(self.log.failure().unwrap_or_else(|| "unmounted".into()))
    }

    /// Metadata lives outside the superblocks and the log.
    pub(crate) fn check_metadata_blkno(&self, blkno: u64) -> Result<(), EngineError> {
        let g = &self.sb.geometry;
        if blkno == 0 || blkno >= g.backup_sb_blkno() || (g.log_start..g.log_end()).contains(&blkno)
        {
            return Err(EngineError::Invalid(format!(
                "block {blkno} is not a metadata block (superblock or log)"
            )));
        }
        Ok(())
    }

    /// Memory live transactions have pinned so far.
    pub fn trans_pinned_bytes(&self) -> u64 {
        self.trans_pinned.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> EngineStats {
        let space = self.log.space.with(|s| s.clone());
        let (mem, waiters) = (space.mem.clone(), self.log.space.waiters());
        let c = &self.log.counters;
        EngineStats {
            mem,
            space,
            waiters,
            kinds: self.kind_stats.snapshot(),
            cache: self.cache.stats(),
            overruns: self.overruns.total(),
            checkpoints: c.checkpoints.load(Ordering::Relaxed),
            tail_updates: c.tail_updates.load(Ordering::Relaxed),
            log_bytes_written: c.bytes_written.load(Ordering::Relaxed),
            log_wraps: self.log.wraps(),
            home_writes: c.home_writes.load(Ordering::Relaxed),
            flushes: c.flushes.load(Ordering::Relaxed),
            forces: c.forces.load(Ordering::Relaxed),
            busy_forces: c.busy_forces.load(Ordering::Relaxed),
            ail_len: self.log.ail_len(),
            alloc_lock: self
                .alloc_lock
                .each_ref()
                .map(|c| c.load(Ordering::Relaxed)),
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if !self.unmounted.load(Ordering::Acquire) {
            self.log.stop_threads();
        }
    }
}
