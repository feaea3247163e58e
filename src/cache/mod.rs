//! The metadata buffer cache, keyed by block number.
//!
//! A buffer is clean (evictable), locked by a transaction, pinned by the log (referenced from the
//! CIL or the AIL, so not evictable), or under write-back. Only the cache's own reference makes a
//! buffer evictable: whoever else holds an `Arc<BufHead>` keeps it. Eviction is CLOCK.

mod chunkmap;

pub use chunkmap::ChunkMap;
pub(crate) use chunkmap::CHUNK_BYTES;

use crate::device::{AlignedBuf, DevError, Device};
use crate::error::EngineError;
use crate::format::{BlockHeader, BlockType, FormatError, Lsn, Uuid};
use parking_lot::Mutex;
use slab::Slab;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes of bookkeeping per cached buffer (head, locks, maps), charged with the block itself.
pub(crate) const BUF_OVERHEAD_BYTES: u64 = 256;

/// Why a buffer could not be read.
#[derive(Debug)]
pub(crate) enum CacheError {
    Io(DevError),
    Corrupt(FormatError),
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheError::Io(e) => write!(f, "{e}"),
            CacheError::Corrupt(e) => write!(f, "corrupt metadata: {e}"),
        }
    }
}

impl std::error::Error for CacheError {}

impl From<CacheError> for EngineError {
    fn from(e: CacheError) -> Self {
        match e {
            CacheError::Io(e) => EngineError::Io(e),
            CacheError::Corrupt(e) => EngineError::Corrupt(e),
        }
    }
}

/// The bytes of a cached block. Locked by the transaction that uses it, for its whole life.
pub(crate) struct BufContent {
    pub(crate) data: AlignedBuf,
    /// The bytes were read from disk and verified, or initialised by `get_buf`.
    pub(crate) valid: bool,
    /// The type's structure (a B+tree node's key order) was checked since the bytes came from
    /// disk: done once per read, not at every use, as XFS's read verifiers do.
    pub(crate) structure_checked: bool,
}

/// The log's view of a buffer; changed by committers, the checkpoint writer and the AIL under its
/// own lock (taken after the content lock when both are held, never before).
#[derive(Default, Debug)]
pub(crate) struct LogState {
    /// Regions changed since the buffer was last clean on disk.
    pub(crate) dirty: ChunkMap,
    pub(crate) btype: Option<BlockType>,
    /// The buffer's memory is charged to the log's account (it is dirty).
    pub(crate) charged: bool,
    /// Checkpoint sequence numbers whose CIL holds a formatted copy of this buffer, oldest first:
    /// while any is not yet on disk, the buffer is pinned and must not be written home.
    pub(crate) cil_seqs: Vec<u64>,
    /// In the AIL at this LSN: logged in a durable checkpoint, not yet written home.
    pub(crate) ail_lsn: Option<Lsn>,
    /// The block was freed (a cancel item was logged): never write it home.
    pub(crate) stale: bool,
}

impl LogState {
    pub(crate) fn is_pinned(&self) -> bool {
        !self.cil_seqs.is_empty()
    }
}

pub(crate) struct BufHead {
    pub(crate) blkno: u64,
    pub(crate) content: Arc<Mutex<BufContent>>,
    pub(crate) log: Mutex<LogState>,
    referenced: AtomicBool,
}

struct Inner {
    map: HashMap<u64, usize>,
    slab: Slab<Arc<BufHead>>,
    /// Slab keys in CLOCK order.
    clock: Vec<usize>,
    hand: usize,
}

/// Counters of the cache, for statistics.
#[derive(Debug, Clone, Default)]
pub struct CacheStats {
    pub buffers: u64,
    /// Buffers neither locked by a transaction nor dirty: what eviction may take.
    pub(crate) clean_buffers: u64,
    /// Memory outside the cache sharing its limit (CIL copies, open handles).
    pub(crate) outside_bytes: u64,
    pub(crate) bytes: u64,
    pub(crate) limit_bytes: u64,
    pub(crate) evictions: u64,
    // Read only by the derived Debug (tests/concurrency.rs prints these stats on a deadlock).
    #[allow(dead_code)]
    pub(crate) reads: u64,
    /// Times a buffer was added while nothing could be evicted (the cache went past its limit).
    // Read only by the derived Debug (tests/concurrency.rs prints these stats on a deadlock).
    #[allow(dead_code)]
    pub(crate) over_limit: u64,
}

pub(crate) struct Cache {
    dev: Arc<dyn Device>,
    block_size: u32,
    uuid: Uuid,
    inner: Mutex<Inner>,
    limit_bytes: AtomicU64,
    /// Memory charged to the same budget outside the cache (the CIL's copies of buffers, open
    /// handles): the cache shrinks by as much, so the two together stay within the budget.
    outside: Arc<AtomicU64>,
    evictions: AtomicU64,
    reads: AtomicU64,
    over_limit: AtomicU64,
}

impl Cache {
    pub(crate) fn new(dev: Arc<dyn Device>, uuid: Uuid, limit_bytes: u64) -> Cache {
        let block_size = dev.block_size();
        Cache {
            dev,
            block_size,
            uuid,
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                slab: Slab::new(),
                clock: Vec::new(),
                hand: 0,
            }),
            limit_bytes: AtomicU64::new(limit_bytes),
            outside: Arc::new(AtomicU64::new(0)),
            evictions: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            over_limit: AtomicU64::new(0),
        }
    }

    /// Memory one cached buffer costs.
    pub(crate) fn buf_bytes(&self) -> u64 {
        self.block_size as u64 + BUF_OVERHEAD_BYTES
    }

    /// The buffer for `blkno`, added (not yet read) if absent.
    pub(crate) fn get(&self, blkno: u64) -> Arc<BufHead> {
        let mut g = self.inner.lock();
        if let Some(&key) = g.map.get(&blkno) {
            let h = &g.slab[key];
            h.referenced.store(true, Ordering::Relaxed);
            return h.clone();
        }
        let limit = self.limit_bytes.load(Ordering::Relaxed);
        while (g.slab.len() as u64 + 1) * self.buf_bytes() + self.outside.load(Ordering::Relaxed)
            > limit
        {
            if !self.evict_one(&mut g) {
                self.over_limit.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
        let head = Arc::new(BufHead {
            blkno,
            content: Arc::new(Mutex::new(BufContent {
                data: AlignedBuf::new(self.block_size as usize),
                valid: false,
                structure_checked: false,
            })),
            log: Mutex::new(LogState::default()),
            referenced: AtomicBool::new(true),
        });
        let key = g.slab.insert(head.clone());
        g.map.insert(blkno, key);
        g.clock.push(key);
        head
    }

    /// One CLOCK sweep step until a buffer nobody else references is found and dropped.
    fn evict_one(&self, g: &mut Inner) -> bool {
        let n = g.clock.len();
        for _ in 0..2 * n {
            if g.clock.is_empty() {
                return false;
            }
            if g.hand >= g.clock.len() {
                g.hand = 0;
            }
            let key = g.clock[g.hand];
            let head = &g.slab[key];
            if Arc::strong_count(head) > 1 || Arc::strong_count(&head.content) > 1 {
                g.hand += 1;
                continue;
            }
            if head.referenced.swap(false, Ordering::Relaxed) {
                g.hand += 1;
                continue;
            }
            let blkno = head.blkno;
            g.slab.remove(key);
            g.map.remove(&blkno);
            let hand = g.hand;
            g.clock.swap_remove(hand);
            self.evictions.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Charges `bytes` of memory outside the cache to its limit.
    pub(crate) fn charge_outside(&self, bytes: u64) {
        self.outside.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Gives back what `charge_outside` charged (never below zero).
    pub(crate) fn release_outside(&self, bytes: u64) {
        let _ = self
            .outside
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(bytes))
            });
    }

    /// The counter of memory outside the cache that shares its limit.
    pub(crate) fn outside(&self) -> Arc<AtomicU64> {
        self.outside.clone()
    }

    /// Makes `content` hold the verified block: reads it if it is not valid yet. A cached buffer is
    /// only checked for its type (its CRC is stamped at write-back).
    pub(crate) fn read_into(
        &self,
        blkno: u64,
        content: &mut BufContent,
        expect: Option<BlockType>,
    ) -> Result<BlockType, CacheError> {
        if content.valid {
            let h = crate::format::Dec::new(&content.data, blkno, "cached block");
            let magic = h.u32(0, "magic").map_err(CacheError::Corrupt)?;
            let found = BlockType::from_magic(magic).ok_or_else(|| {
                CacheError::Corrupt(h.err("magic", format!("{magic:#x} is no block type")))
            })?;
            if let Some(want) = expect {
                if found != want {
                    return Err(CacheError::Corrupt(h.err(
                        "magic",
                        format!("{} found where {} was expected", found.name(), want.name()),
                    )));
                }
            }
            return Ok(found);
        }
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.dev
            .read(blkno, &mut content.data)
            .map_err(CacheError::Io)?;
        let hdr = BlockHeader::verify(&content.data, blkno, expect, &self.uuid)
            .map_err(CacheError::Corrupt)?;
        content.valid = true;
        content.structure_checked = false;
        Ok(hdr.btype)
    }

    pub(crate) fn stats(&self) -> CacheStats {
        let (n, clean) = {
            let g = self.inner.lock();
            let clean = g
                .slab
                .iter()
                .filter(|(_, h)| !h.content.is_locked() && !h.log.lock().charged)
                .count() as u64;
            (g.slab.len() as u64, clean)
        };
        CacheStats {
            buffers: n,
            clean_buffers: clean,
            outside_bytes: self.outside.load(Ordering::Relaxed),
            bytes: n * self.buf_bytes(),
            limit_bytes: self.limit_bytes.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            reads: self.reads.load(Ordering::Relaxed),
            over_limit: self.over_limit.load(Ordering::Relaxed),
        }
    }
}
