//! Read-ahead in the daemon: when a file is read in sequence, the pieces after the furthest one
//! asked for are read from the device by worker threads while the kernel is still consuming the
//! ones before, and a request for such a piece is answered from memory.
//!
//! The kernel reads ahead too, but through the io_uring queues its requests wait on the reader's
//! CPU for threads that run only once the reader sleeps (`ring::policy`): without this, each
//! window's device reads began only when the reader had caught up with them. Workers are not
//! pinned, so the scheduler runs them on a CPU that is free.
//!
//! A piece read ahead is used only if nothing can have changed its bytes since: every write of
//! file data moves the epoch of the file's stripe before and after it (`bump`), and the piece
//! records the epoch its read began at; and the request's own walk of the extent map must find
//! the same runs (disk blocks, holes, unwritten extents) that the piece was read from, which
//! covers truncates, punched holes and blocks given to another file (a block that comes back to
//! the same place in this file is written first, which moves the epoch). A piece that fails
//! either check is dropped and the request reads the device itself.
//!
//! Memory: `READAHEAD_SLOTS` buffers of the largest request, allocated at mount and counted in
//! the base of the budget (`budget::Sizing::threads_bytes`); nothing is allocated per piece
//! but the short list of its runs.

use crate::device::{AlignedBuf, DIRECT_IO_ALIGN};
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

/// Pieces held (being read or ready) at once: the kernel's read-ahead window is this many of
/// the largest requests (main.rs sets it to max_write x request threads, 4 by default).
pub const READAHEAD_SLOTS: usize = 4;
/// Threads reading pieces ahead: two device reads in flight keep a virtio disk streaming.
pub const READAHEAD_WORKERS: usize = 2;
/// Files whose reads are followed at once to tell sequential reading.
pub(crate) const READAHEAD_STREAMS: usize = 8;
/// Reads shorter than this are not followed: small pieces come from the image's page cache
/// (`device::file::CACHED_IO_MAX_BYTES`), and a small read is rarely part of a stream.
pub const READAHEAD_MIN_BYTES: usize = 128 << 10;
/// Epoch stripes, by inode: a write to one file leaves the pieces of most others usable.
const EPOCH_STRIPES: usize = 64;

/// A run of a piece: file blocks `fb..end`, on disk from block `disk`, or zeros (`None`: a hole
/// or an unwritten extent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) fb: u64,
    pub(crate) end: u64,
    pub(crate) disk: Option<u64>,
}

/// A piece: `blocks` file blocks of inode `ino` from block `first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Piece {
    pub(crate) ino: u64,
    pub(crate) first: u64,
    pub(crate) blocks: u64,
}

#[derive(Debug)]
enum Slot {
    Empty,
    /// A worker reads it; `epoch` as the read began.
    Filling {
        piece: Piece,
        epoch: u64,
    },
    Ready {
        piece: Piece,
        epoch: u64,
        runs: Vec<Run>,
    },
    /// A request copies out of its buffer.
    Lent,
}

#[derive(Debug, Clone, Copy)]
struct Stream {
    ino: u64,
    /// The first byte no read has asked for yet.
    next: u64,
    used: u64,
}

#[derive(Debug)]
struct State {
    slots: Vec<Slot>,
    streams: Vec<Stream>,
    jobs: VecDeque<Piece>,
    tick: u64,
    stopped: bool,
}

/// The slot holding `piece` (being read or ready), if any.
fn slot_of(slots: &[Slot], piece: Piece) -> Option<usize> {
    slots.iter().position(|s| match s {
        Slot::Filling { piece: p, .. } | Slot::Ready { piece: p, .. } => *p == piece,
        _ => false,
    })
}

/// Has the reader of `p`'s file gone past it (or is the file no longer followed)?
fn behind(streams: &[Stream], p: &Piece, block_size: u64) -> bool {
    streams
        .iter()
        .find(|s| s.ino == p.ino)
        .is_none_or(|s| (p.first + p.blocks) * block_size <= s.next)
}

/// What read-ahead did, for `ticketfs stats`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadAheadStats {
    /// Pieces read ahead.
    pub read: u64,
    /// Requests answered from a piece read ahead.
    pub hits: u64,
    /// Pieces dropped because a write or a change of the map came after their read began.
    pub stale: u64,
    /// Pieces dropped unused to make room, or whose read failed.
    pub(crate) wasted: u64,
}

/// What `ReadAhead::lend` found.
pub(crate) enum Lend {
    Absent,
    /// A worker is reading the piece.
    Reading,
    Lent(Lease),
}

/// A piece lent to a request: its runs, and its buffer through `ReadAhead::bytes`.
pub(crate) struct Lease {
    slot: usize,
    pub(crate) runs: Vec<Run>,
}

pub struct ReadAhead {
    state: Mutex<State>,
    /// A slot changed (filled, emptied), a job was queued, or the workers are to stop.
    changed: Condvar,
    bufs: Vec<Mutex<AlignedBuf>>,
    epochs: Vec<AtomicU64>,
    block_size: u64,
    piece_max_bytes: usize,
    read: AtomicU64,
    hits: AtomicU64,
    stale: AtomicU64,
    wasted: AtomicU64,
}

impl ReadAhead {
    /// Buffers for `READAHEAD_SLOTS` pieces of up to `piece_max_bytes` (the largest request).
    pub fn new(block_size: u32, piece_max_bytes: usize) -> ReadAhead {
        let len = piece_max_bytes.div_ceil(DIRECT_IO_ALIGN) * DIRECT_IO_ALIGN;
        ReadAhead {
            state: Mutex::new(State {
                slots: (0..READAHEAD_SLOTS).map(|_| Slot::Empty).collect(),
                streams: Vec::with_capacity(READAHEAD_STREAMS),
                jobs: VecDeque::with_capacity(READAHEAD_SLOTS),
                tick: 0,
                stopped: false,
            }),
            changed: Condvar::new(),
            bufs: (0..READAHEAD_SLOTS)
                .map(|_| Mutex::new(AlignedBuf::new(len)))
                .collect(),
            epochs: (0..EPOCH_STRIPES).map(|_| AtomicU64::new(0)).collect(),
            block_size: block_size as u64,
            piece_max_bytes,
            read: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            wasted: AtomicU64::new(0),
        }
    }

    /// Bytes held for pieces (for the budget's base).
    pub(crate) fn buffer_bytes(piece_max_bytes: usize) -> u64 {
        (READAHEAD_SLOTS * piece_max_bytes.div_ceil(DIRECT_IO_ALIGN) * DIRECT_IO_ALIGN) as u64
    }

    pub fn stats(&self) -> ReadAheadStats {
        ReadAheadStats {
            read: self.read.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
            stale: self.stale.load(Ordering::Relaxed),
            wasted: self.wasted.load(Ordering::Relaxed),
        }
    }

    fn epoch_of(&self, ino: u64) -> &AtomicU64 {
        &self.epochs[(ino.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % EPOCH_STRIPES]
    }

    /// File data of `ino` is about to be written, or was just written: every piece of it whose
    /// read began before is stale.
    pub(crate) fn bump(&self, ino: u64) {
        self.epoch_of(ino).fetch_add(1, Ordering::SeqCst);
    }

    /// A request for `piece`: lends the piece if it is read ahead and no write to its file
    /// came since its read began. Never waits: a piece a worker is reading is `Reading`, and
    /// the request may `wait_read` for it (holding nothing the worker needs).
    pub(crate) fn lend(&self, piece: Piece) -> Lend {
        let mut st = self.state.lock();
        let Some(i) = slot_of(&st.slots, piece) else {
            return Lend::Absent;
        };
        match std::mem::replace(&mut st.slots[i], Slot::Lent) {
            Slot::Ready { epoch, runs, .. } => {
                if epoch == self.epoch_of(piece.ino).load(Ordering::SeqCst) {
                    return Lend::Lent(Lease { slot: i, runs });
                }
                st.slots[i] = Slot::Empty;
                self.stale.fetch_add(1, Ordering::Relaxed);
                self.changed.notify_all();
                Lend::Absent
            }
            other => {
                let reading = matches!(other, Slot::Filling { .. });
                st.slots[i] = other;
                if reading {
                    Lend::Reading
                } else {
                    Lend::Absent
                }
            }
        }
    }

    /// Waits until no worker is reading `piece` (or the workers stop).
    pub(crate) fn wait_read(&self, piece: Piece) {
        let mut st = self.state.lock();
        while !st.stopped
            && st
                .slots
                .iter()
                .any(|s| matches!(s, Slot::Filling { piece: p, .. } if *p == piece))
        {
            self.changed.wait(&mut st);
        }
    }

    /// The lent piece's bytes (`blocks` x block size of them).
    pub(crate) fn bytes(&self, lease: &Lease) -> MutexGuard<'_, AlignedBuf> {
        self.bufs[lease.slot].lock()
    }

    /// Ends a lease: `used` if the request answered from it, else it found other runs (stale).
    pub(crate) fn give_back(&self, lease: Lease, used: bool) {
        let mut st = self.state.lock();
        debug_assert!(matches!(st.slots[lease.slot], Slot::Lent));
        st.slots[lease.slot] = Slot::Empty;
        if used {
            self.hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stale.fetch_add(1, Ordering::Relaxed);
        }
        self.changed.notify_all();
    }

    /// A read of `ino` at `off..end` (the file is `size` bytes) was answered: if it continues
    /// a stream, queues the pieces after the furthest byte asked for, as many as there are
    /// slots, each as long as this read.
    pub(crate) fn note_read(&self, ino: u64, off: u64, end: u64, size: u64) {
        let len = end.saturating_sub(off);
        if (len as usize) < READAHEAD_MIN_BYTES || len as usize > self.piece_max_bytes {
            return;
        }
        let bs = self.block_size;
        let mut st = self.state.lock();
        st.tick += 1;
        let tick = st.tick;
        let Some(k) = st.streams.iter().position(|s| s.ino == ino) else {
            let s = Stream {
                ino,
                next: end,
                used: tick,
            };
            if st.streams.len() < READAHEAD_STREAMS {
                st.streams.push(s);
            } else if let Some(old) = st.streams.iter_mut().min_by_key(|s| s.used) {
                *old = s;
            }
            return;
        };
        let s = &mut st.streams[k];
        // In sequence: within one read of the furthest byte asked for (requests in flight
        // together may be answered out of order).
        let sequential = off.abs_diff(s.next) <= len;
        s.next = s.next.max(end);
        s.used = tick;
        let next = s.next;
        if !sequential || !next.is_multiple_of(bs) {
            return;
        }
        // Pieces of this file read before a write to it are of no use: their slots go to the
        // pieces read anew.
        let now = self.epoch_of(ino).load(Ordering::SeqCst);
        for slot in st.slots.iter_mut() {
            if matches!(slot, Slot::Ready { piece, epoch, .. } if piece.ino == ino && *epoch != now)
            {
                *slot = Slot::Empty;
                self.stale.fetch_add(1, Ordering::Relaxed);
            }
        }
        let blocks = len.div_ceil(bs);
        let mut queued = false;
        for n in 0..READAHEAD_SLOTS as u64 {
            let first = next / bs + n * blocks;
            if first * bs >= size {
                break;
            }
            // The last piece ends where the file does, as a request for it would.
            let blocks = blocks.min(size.div_ceil(bs) - first);
            let piece = Piece { ino, first, blocks };
            let known = st.jobs.contains(&piece) || slot_of(&st.slots, piece).is_some();
            if !known && st.jobs.len() < READAHEAD_SLOTS {
                st.jobs.push_back(piece);
                queued = true;
            }
        }
        if queued {
            self.changed.notify_all();
        }
    }

    /// For a worker: the next piece to read and the slot to read it into, its read's epoch
    /// taken now; waits for one. `None` once `stop` was called. A piece the reader has gone
    /// past is not read; a slot holding one is taken back (wasted), but never one still ahead
    /// of its reader: the job waits for a slot instead.
    pub(crate) fn next_job(&self) -> Option<(Piece, usize)> {
        let bs = self.block_size;
        let mut st = self.state.lock();
        loop {
            if st.stopped {
                return None;
            }
            while let Some(p) = st.jobs.front() {
                if !behind(&st.streams, p, bs) {
                    break;
                }
                st.jobs.pop_front();
            }
            if let Some(job) = st.jobs.front().copied() {
                let free = st.slots.iter().position(|s| matches!(s, Slot::Empty));
                // A piece its reader went past, or one of a file read less lately than the
                // job's (a reader that stopped must not keep the slots).
                let used = |ino: u64| st.streams.iter().find(|s| s.ino == ino).map(|s| s.used);
                let passed = || {
                    st.slots.iter().position(|s| match s {
                        Slot::Ready { piece, .. } => {
                            behind(&st.streams, piece, bs)
                                || (piece.ino != job.ino && used(piece.ino) < used(job.ino))
                        }
                        _ => false,
                    })
                };
                if let Some(i) = free.or_else(passed) {
                    if free.is_none() {
                        self.wasted.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(piece) = st.jobs.pop_front() {
                        let epoch = self.epoch_of(piece.ino).load(Ordering::SeqCst);
                        st.slots[i] = Slot::Filling { piece, epoch };
                        return Some((piece, i));
                    }
                }
            }
            self.changed.wait(&mut st);
        }
    }

    /// A worker's buffer for slot `slot`.
    pub(crate) fn buffer(&self, slot: usize) -> MutexGuard<'_, AlignedBuf> {
        self.bufs[slot].lock()
    }

    /// A worker finished reading `piece` into `slot`: its runs, or `None` if the read failed
    /// or found nothing to read (past the end of the file by now).
    pub(crate) fn filled(&self, piece: Piece, slot: usize, runs: Option<Vec<Run>>) {
        let mut st = self.state.lock();
        let epoch = match &st.slots[slot] {
            Slot::Filling { piece: p, epoch } if *p == piece => *epoch,
            other => {
                debug_assert!(false, "slot {slot} filled while {other:?}");
                return;
            }
        };
        st.slots[slot] = match runs {
            Some(runs) => {
                self.read.fetch_add(1, Ordering::Relaxed);
                Slot::Ready { piece, epoch, runs }
            }
            None => {
                self.wasted.fetch_add(1, Ordering::Relaxed);
                Slot::Empty
            }
        };
        self.changed.notify_all();
    }

    /// Workers return from `next_job` with `None`; queued pieces are forgotten.
    pub fn stop(&self) {
        let mut st = self.state.lock();
        st.stopped = true;
        st.jobs.clear();
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BS: u32 = 4096;
    const PIECE: usize = 256 << 10;

    fn runs(p: Piece) -> Vec<Run> {
        vec![Run {
            fb: p.first,
            end: p.first + p.blocks,
            disk: Some(1000 + p.first),
        }]
    }

    /// Reads 0..256K then 256K..512K of a 4 MiB file: the second is in sequence, so the pieces
    /// after it are queued, one per slot.
    fn stream(ra: &ReadAhead) {
        ra.note_read(7, 0, PIECE as u64, 4 << 20);
        ra.note_read(7, PIECE as u64, 2 * PIECE as u64, 4 << 20);
    }

    #[test]
    fn a_sequential_stream_queues_the_pieces_after_it() {
        let ra = ReadAhead::new(BS, PIECE);
        stream(&ra);
        let blocks = (PIECE / BS as usize) as u64;
        for n in 0..READAHEAD_SLOTS as u64 {
            let (p, slot) = ra.next_job().expect("a job");
            assert_eq!(
                p,
                Piece {
                    ino: 7,
                    first: (2 + n) * blocks,
                    blocks
                }
            );
            ra.filled(p, slot, Some(runs(p)));
        }
        let p = Piece {
            ino: 7,
            first: 2 * blocks,
            blocks,
        };
        let Lend::Lent(lease) = ra.lend(p) else {
            panic!("not read ahead")
        };
        assert_eq!(lease.runs, runs(p));
        ra.give_back(lease, true);
        assert_eq!(ra.stats().hits, 1);
        assert_eq!(ra.stats().read, READAHEAD_SLOTS as u64);
    }

    #[test]
    fn a_write_after_the_read_began_makes_the_piece_stale() {
        let ra = ReadAhead::new(BS, PIECE);
        stream(&ra);
        let (p, slot) = ra.next_job().expect("a job");
        // The write lands while the worker reads.
        ra.bump(7);
        ra.filled(p, slot, Some(runs(p)));
        assert!(matches!(ra.lend(p), Lend::Absent));
        assert_eq!(ra.stats().stale, 1);
        // Another file's write leaves this one's pieces alone (unless they share a stripe).
        let (q, slot) = ra.next_job().expect("a job");
        let other = (8..).find(|&i| !std::ptr::eq(ra.epoch_of(i), ra.epoch_of(7)));
        ra.bump(other.expect("another stripe"));
        ra.filled(q, slot, Some(runs(q)));
        let Lend::Lent(lease) = ra.lend(q) else {
            panic!("still good")
        };
        ra.give_back(lease, true);
    }

    #[test]
    fn random_reads_and_small_reads_queue_nothing() {
        let ra = ReadAhead::new(BS, PIECE);
        ra.note_read(7, 0, PIECE as u64, 4 << 20);
        ra.note_read(7, 3 << 20, (3 << 20) + PIECE as u64, 4 << 20);
        ra.note_read(9, 0, 4096, 4 << 20);
        ra.note_read(9, 4096, 8192, 4 << 20);
        assert!(ra.state.lock().jobs.is_empty());
    }

    #[test]
    fn nothing_is_queued_past_the_end_of_the_file() {
        let ra = ReadAhead::new(BS, PIECE);
        ra.note_read(7, 0, PIECE as u64, 3 * PIECE as u64);
        ra.note_read(7, PIECE as u64, 2 * PIECE as u64, 3 * PIECE as u64);
        assert_eq!(ra.state.lock().jobs.len(), 1);
    }

    #[test]
    fn a_request_waits_for_the_piece_being_read() {
        let ra = ReadAhead::new(BS, PIECE);
        stream(&ra);
        let (p, slot) = ra.next_job().expect("a job");
        assert!(matches!(ra.lend(p), Lend::Reading));
        std::thread::scope(|s| {
            let t = s.spawn(|| {
                ra.wait_read(p);
                match ra.lend(p) {
                    Lend::Lent(l) => {
                        ra.give_back(l, true);
                        true
                    }
                    _ => false,
                }
            });
            std::thread::sleep(std::time::Duration::from_millis(20));
            ra.filled(p, slot, Some(runs(p)));
            assert!(t.join().expect("request"));
        });
    }

    #[test]
    fn stop_ends_the_workers_wait() {
        let ra = ReadAhead::new(BS, PIECE);
        std::thread::scope(|s| {
            let t = s.spawn(|| ra.next_job());
            std::thread::sleep(std::time::Duration::from_millis(20));
            ra.stop();
            assert!(t.join().expect("worker").is_none());
        });
    }
}
