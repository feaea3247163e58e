//! File data: reading and writing through the extent map, truncating, punching holes,
//! preallocating (unwritten extents), and finding data and holes.
//!
//! Data blocks bypass the metadata cache: they are read and written on the device directly.
//! Ordering (no stale data after a crash): blocks newly allocated for a write receive their data
//! (zero-filled around it) before the transaction that maps them commits, and the log is told, so
//! the checkpoint holding that mapping flushes the data first. Overwrites of mapped, written
//! blocks need no ordering. Unwritten extents (from fallocate) read as zeros and are converted to
//! written once their data is on the device, in the same way.
//!
//! The caller serialises operations on one inode (the filesystem layer holds the inode's lock).

pub mod extmap;
pub mod readahead;
mod syncseq;

pub use readahead::ReadAhead;
pub use syncseq::DataSeqs;

use crate::alloc::{Allocator, BlockResv};
use crate::device::{AlignedBuf, DIRECT_IO_ALIGN};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::format::inode::{Extent, Inode, Time};
use crate::inode::{self, InodeRef};
use crate::trans::{Trans, TransKind};
use extmap::{FileMap, EXTENT_LEN_MAX, UNWRITTEN};
use readahead::{Lend, Piece, Run};

/// Largest file size: file block numbers stay far from u64 overflow for every block size.
pub(crate) const FILE_SIZE_MAX: u64 = 1 << 52;

/// A write leaves the modification and change times alone when they are already within this
/// of now: the times advance in steps of at most this, as a kernel filesystem's advance with
/// its clock tick (1-10 ms), and a stream of small overwrites logs its inode once per step
/// instead of once per write.
pub(crate) const TIME_GRANULARITY_NS: i128 = 1_000_000;

/// `t` is at most `TIME_GRANULARITY_NS` before `now` (and not after it).
fn recent(t: Time, now: Time) -> bool {
    let ns = |t: Time| t.sec as i128 * 1_000_000_000 + t.nsec as i128;
    let d = ns(now) - ns(t);
    (0..=TIME_GRANULARITY_NS).contains(&d)
}
/// Extents one step of a truncate or punch removes before the transaction rolls: the truncate
/// table entry covers one extent-map change and one free per step.
const REMOVE_PER_STEP: usize = 1;

thread_local! {
    /// The aligned buffer a thread's device reads and writes of file data go through, kept:
    /// allocated per read, a 256 KiB read cost 64 page faults and the zeroing of fresh pages
    /// every time (the daemon's malloc maps large blocks afresh and gives them back). It grows
    /// to the largest run the thread has read, which the kernel's request size bounds for a
    /// request thread (`SCRATCH_KEEP_MAX` at most is kept).
    static READ_SCRATCH: std::cell::RefCell<Option<AlignedBuf>> =
        const { std::cell::RefCell::new(None) };
}

/// Largest scratch buffer a thread keeps between requests: the largest request the kernel sends
/// (max_write, which also bounds its reads), set at mount (`set_scratch_keep_max`) and counted
/// in the base of the memory budget (`Sizing::threads_bytes`). A longer run (a request not
/// aligned to blocks, a caller asking for more) gets a buffer of its own for that one.
static SCRATCH_KEEP_MAX: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(1 << 20);

/// Sets the most a thread's scratch buffer keeps (see `SCRATCH_KEEP_MAX`).
pub(crate) fn set_scratch_keep_max(bytes: usize) {
    SCRATCH_KEEP_MAX.store(bytes, std::sync::atomic::Ordering::Relaxed);
}

/// Runs `f` on an aligned buffer of exactly `len` bytes (a multiple of the block size).
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    let keep = SCRATCH_KEEP_MAX.load(std::sync::atomic::Ordering::Relaxed);
    if len > keep {
        return f(&mut AlignedBuf::new(len));
    }
    READ_SCRATCH.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|b| b.len() < len) {
            // Grown in steps (no regrowth per slightly longer request), never past `keep`.
            let step = len.next_power_of_two().min(keep).max(len);
            *slot = Some(AlignedBuf::new(
                step.div_ceil(DIRECT_IO_ALIGN) * DIRECT_IO_ALIGN,
            ));
        }
        match slot.as_mut() {
            Some(b) => f(&mut b[..len]),
            None => f(&mut AlignedBuf::new(len)),
        }
    })
}

/// Records, when dropped at the end of an operation, that the operation changed `ino`'s size or
/// map in commits up to now, for fdatasync (`DataSeqs`): sequences only grow, so the log's
/// current one covers every commit the operation made, whether it finished or failed half-way.
/// `changed` false (set by an operation that found it changed neither) records nothing.
struct LayoutNote<'a> {
    seqs: Option<&'a DataSeqs>,
    eng: &'a Engine,
    ino: u64,
    changed: bool,
}

impl Drop for LayoutNote<'_> {
    fn drop(&mut self) {
        if let (true, Some(s)) = (self.changed, self.seqs) {
            s.note(self.ino, self.eng.log().current_seq());
        }
    }
}

/// The extent map led a walk backwards or nowhere at `fb`: a damaged map, reported rather than
/// followed round in circles.
fn bad_map(ino: u64, fb: u64) -> EngineError {
    EngineError::Corrupt(crate::format::FormatError::new(
        0,
        "extent map",
        "file_block",
        format!("inode {ino}: the map does not cover or advance past file block {fb}"),
    ))
}

/// A write or fallocate found no free block for `ino` (the same words wherever it stops).
fn no_free_block(ino: u64) -> EngineError {
    EngineError::NoSpace(format!("no free block for inode {ino}"))
}

/// An fallocate that allocates (`FileIo::allocate`): preallocation, or zero-range.
#[derive(Debug, Clone, Copy)]
pub struct Allocate {
    /// The range's first byte.
    pub off: u64,
    /// The range's length in bytes.
    pub len: u64,
    /// The size stays as it is (FALLOC_FL_KEEP_SIZE); else it grows to the range's end.
    pub keep_size: bool,
    /// Zero-range (FALLOC_FL_ZERO_RANGE): the range reads as zeros afterwards.
    pub zero: bool,
}

/// The `admit` of a [`FileIo::write`] that refuses nothing.
pub fn admit_all(_: &Inode) -> Result<(), EngineError> {
    Ok(())
}

/// What a write carries from one step to the next.
struct WriteState<'a> {
    /// The size or the extent map changed (fdatasync must then force the log).
    layout: bool,
    /// The extent a hole step just mapped: the next step writes it without looking it up.
    mapped: Option<Extent>,
    /// What the write's first look at the map found at its first block (the extent there and
    /// the next one): the first step uses it rather than looking again.
    found: Option<(Option<Extent>, Option<Extent>)>,
    /// That extent, until a step has written and converted it: taken out again should the
    /// write stop first.
    pending: Option<Extent>,
    /// The hole step's promise, kept for that extent's conversion: a write that has mapped
    /// blocks never fails for want of a map block to finish them.
    held: Option<BlockResv<'a>>,
}

pub struct FileIo<'a> {
    pub eng: &'a Engine,
    pub alloc: &'a Allocator,
    /// Where an operation that changes a file's size or map records its last commit (for
    /// fdatasync); None: nobody asks.
    pub seqs: Option<&'a DataSeqs>,
    /// Read-ahead (`readahead`): sequential reads are followed and pieces read ahead are
    /// used; every write of file data moves its epoch. None: no read-ahead.
    pub ra: Option<&'a ReadAhead>,
}

impl<'a> FileIo<'a> {
    fn bs(&self) -> u64 {
        self.eng.geometry().block_size as u64
    }

    /// A note, taken at the start of an operation that may change `ino`'s size or map, that
    /// records the log's sequence for fdatasync when the operation ends (see `LayoutNote`).
    fn layout_note(&self, ino: u64) -> LayoutNote<'a> {
        LayoutNote {
            seqs: self.seqs,
            eng: self.eng,
            ino,
            changed: true,
        }
    }

    /// The extent map of `ino`, whose inode is `ino_d`, to change.
    fn map<'m>(&'m self, ino: u64, ino_d: &'m mut Inode) -> FileMap<'m> {
        FileMap {
            alloc: self.alloc,
            ino,
            inode: ino_d,
        }
    }

    /// Blocks a change of the extent map may allocate (its nodes and their free-space updates):
    /// the write entry's buffer count bounds them.
    fn map_blocks(&self) -> u64 {
        self.eng.table().get(TransKind::Write).buffers as u64
    }

    /// Promises the blocks one change of the extent map may take; `privileged` for operations
    /// that free space (they may use the pool).
    fn promise_map(&self, privileged: bool) -> Result<BlockResv<'a>, EngineError> {
        let m = self.map_blocks();
        self.alloc.reserve(m, m, privileged)
    }

    /// Promises up to `want` data blocks and the map blocks to record them. Returns the promise
    /// and how many data blocks it covers, or None when not even one data block is free.
    fn promise_data(&self, want: u64) -> Result<Option<(BlockResv<'a>, u64)>, EngineError> {
        let m = self.map_blocks();
        match self.alloc.reserve(m + want, m + 1, false) {
            Ok(r) => {
                let data = r.blocks - m;
                Ok(Some((r, data)))
            }
            Err(EngineError::NoSpace(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads up to `len` bytes at `off` (short at end of file; holes and unwritten extents read as
    /// zeros).
    pub fn read(&self, ino: u64, off: u64, len: usize) -> Result<Vec<u8>, EngineError> {
        self.read_with(ino, off, len, |_| Ok(()), |b| b.to_vec())
    }

    /// `read`, handing the bytes to `f` where they were assembled: the thread's aligned scratch
    /// buffer, which the device reads land in directly (no allocation, no copy in the daemon;
    /// a request thread replies from it). `before` runs first with the inode as the read found
    /// it (the access-time update, which must be done before the reply is seen); the
    /// transaction ends before either runs.
    pub(crate) fn read_with<R, E: From<EngineError>>(
        &self,
        ino: u64,
        off: u64,
        len: usize,
        before: impl FnOnce(&Inode) -> Result<(), E>,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, E> {
        let bs = self.bs();
        // At most twice: once more after waiting for a piece a worker was reading.
        let mut waited = false;
        loop {
            let mut tx = self.eng.begin(TransKind::Read)?;
            let (_, inode) = inode::read(&mut tx, ino)?;
            if off >= inode.size || len == 0 {
                tx.cancel()?;
                before(&inode)?;
                return Ok(f(&[]));
            }
            let end = (off + len as u64).min(inode.size);
            let first = off / bs;
            let last = (end - 1) / bs;
            let total = ((last - first + 1) * bs) as usize;
            let from = (off - first * bs) as usize;
            let bytes = from..from + (end - off) as usize;
            // The map is walked and the data read with the inode's block held, so no truncate
            // frees the blocks (for another file to take) while they are read.
            let runs = self.runs(&mut tx, ino, &inode, first, last)?;
            let piece = Piece {
                ino,
                first,
                blocks: last - first + 1,
            };
            let lent = match self.ra.map(|ra| (ra, ra.lend(piece))) {
                Some((ra, Lend::Reading)) if !waited => {
                    // The worker needs the inode's block to finish it: wait without it.
                    tx.cancel()?;
                    ra.wait_read(piece);
                    waited = true;
                    continue;
                }
                Some((ra, Lend::Lent(l))) if l.runs == runs => Some((ra, l)),
                Some((ra, Lend::Lent(l))) => {
                    // The map changed since the piece was read: not these bytes.
                    ra.give_back(l, false);
                    None
                }
                _ => None,
            };
            let out = match lent {
                Some((ra, l)) => {
                    // The lease goes back whatever fails.
                    let done = tx
                        .cancel()
                        .map_err(E::from)
                        .and_then(|()| before(&inode))
                        .map(|()| f(&ra.bytes(&l)[bytes]));
                    ra.give_back(l, true);
                    done
                }
                None => with_scratch(total, |buf| {
                    self.fill(&runs, first, buf)?;
                    tx.cancel()?;
                    before(&inode)?;
                    Ok(f(&buf[bytes]))
                }),
            };
            if let Some(ra) = self.ra {
                ra.note_read(ino, off, off + len as u64, inode.size);
            }
            return out;
        }
    }

    /// How file blocks `first..=last` of `ino` lie: runs on disk, and runs of zeros (holes and
    /// unwritten extents).
    fn runs(
        &self,
        tx: &mut crate::trans::Trans<'_>,
        ino: u64,
        inode: &Inode,
        first: u64,
        last: u64,
    ) -> Result<Vec<Run>, EngineError> {
        let mut runs = Vec::with_capacity(2);
        let mut fb = first;
        while fb <= last {
            let (hit, next) = extmap::find(tx, ino, inode, fb)?;
            let Some(e) = hit else {
                let to = next.map_or(last + 1, |n| n.file_block).min(last + 1);
                if to <= fb {
                    return Err(bad_map(ino, fb));
                }
                runs.push(Run {
                    fb,
                    end: to,
                    disk: None,
                });
                fb = to;
                continue;
            };
            let run_end = e.file_block.saturating_add(e.len as u64).min(last + 1);
            if e.file_block > fb || run_end <= fb {
                return Err(bad_map(ino, fb));
            }
            runs.push(Run {
                fb,
                end: run_end,
                disk: (e.flags & UNWRITTEN == 0).then(|| e.start + (fb - e.file_block)),
            });
            fb = run_end;
        }
        Ok(runs)
    }

    /// Reads `runs` (from file block `first` on) into `buf`: the device's bytes, or zeros.
    fn fill(&self, runs: &[Run], first: u64, buf: &mut [u8]) -> Result<(), EngineError> {
        let bs = self.bs();
        for r in runs {
            let span = ((r.fb - first) * bs) as usize..((r.end - first) * bs) as usize;
            match r.disk {
                Some(d) => self
                    .eng
                    .device()
                    .read_data(d, &mut buf[span])
                    .map_err(EngineError::Io)?,
                None => buf[span].fill(0),
            }
        }
        Ok(())
    }

    /// A read-ahead worker: reads the pieces `ra` queues until it is stopped.
    pub fn read_ahead(&self, ra: &ReadAhead) {
        while let Some((piece, slot)) = ra.next_job() {
            let runs = self.read_piece(piece, &mut ra.buffer(slot)).ok().flatten();
            ra.filled(piece, slot, runs);
        }
    }

    /// Reads `piece` into `buf` as a request for it would; None if it is no longer whole
    /// inside the file or does not fit.
    fn read_piece(&self, p: Piece, buf: &mut [u8]) -> Result<Option<Vec<Run>>, EngineError> {
        let bs = self.bs();
        let len = (p.blocks * bs) as usize;
        if p.blocks == 0 || len > buf.len() {
            return Ok(None);
        }
        let mut tx = self.eng.begin(TransKind::Read)?;
        let (_, inode) = inode::read(&mut tx, p.ino)?;
        let last = p.first + p.blocks - 1;
        // A request for these blocks ends at the last one only if the file reaches into it.
        if inode.size.div_ceil(bs) != last + 1 && inode.size < (last + 1) * bs {
            tx.cancel()?;
            return Ok(None);
        }
        let runs = self.runs(&mut tx, p.ino, &inode, p.first, last)?;
        // Unlike a request, the device is read without the inode's block held, so requests
        // and the other worker go on meanwhile: should a truncate free these blocks for
        // another file now, the bytes read stay in this private buffer, and the request that
        // asks for the piece finds other runs in the map and drops it.
        tx.cancel()?;
        self.fill(&runs, p.first, &mut buf[..len])?;
        Ok(Some(runs))
    }

    /// Writes file data of `ino` to the device, moving the read-ahead epoch of `ino` before
    /// and after, so no piece read meanwhile is used.
    fn write_data(&self, ino: u64, disk: u64, buf: &[u8]) -> Result<(), EngineError> {
        if let Some(ra) = self.ra {
            ra.bump(ino);
        }
        let r = self
            .eng
            .device()
            .write_data(disk, buf)
            .map_err(EngineError::Io);
        if let Some(ra) = self.ra {
            ra.bump(ino);
        }
        r
    }

    /// Writes `data` at `off`; returns how many bytes were written: all of them, or, when an
    /// error (ENOSPC, EIO) stops it after some, the prefix written so far with the error that
    /// stopped it (a short write, as the kernel's filesystems return: the size and times then
    /// cover that prefix, and the kernel's cached size follows the count it is told; its
    /// write-back of cached pages takes no count and must get the error). An error before any
    /// byte is returned as such, with the file as it was: blocks this call mapped but had not
    /// written are taken out again.
    ///
    /// `admit` sees the inode as the write first finds it, before any byte is written, and may
    /// refuse the write (the inode's flags); it costs no look of its own. [`admit_all`] refuses
    /// nothing.
    pub fn write<E: From<EngineError>>(
        &self,
        ino: u64,
        off: u64,
        data: &[u8],
        now: Time,
        drop_setid: bool,
        admit: impl FnOnce(&Inode) -> Result<(), E>,
    ) -> Result<(usize, Option<EngineError>), E> {
        if data.is_empty() {
            return Ok((0, None));
        }
        let mut stopped = None;
        // Cleared at a successful end that changed neither the size nor the map (only the
        // times, the set-id bits or the bytes of blocks already written).
        let mut note = self.layout_note(ino);
        let mut end = off
            .checked_add(data.len() as u64)
            .filter(|&e| e <= FILE_SIZE_MAX)
            .ok_or_else(|| {
                EngineError::TooBig(format!("write past the largest file size {FILE_SIZE_MAX}"))
            })?;
        let bs = self.bs();
        let last = (end - 1) / bs;
        let mut fb = off / bs;
        let found = {
            let mut tx = self.eng.begin(TransKind::Read)?;
            let (_, ino_d) = inode::read(&mut tx, ino)?;
            let found = extmap::find(&mut tx, ino, &ino_d, fb)?;
            tx.cancel()?;
            if let Err(e) = admit(&ino_d) {
                note.changed = false;
                return Err(e);
            }
            found
        };
        let mut st = WriteState {
            layout: false,
            mapped: None,
            found: Some(found),
            pending: None,
            held: None,
        };
        // The caller holds the inode's data lock, so its extent map stays as looked up here
        // between transactions. No lock is held while data goes to the device: new blocks are
        // mapped unwritten first (their own step, under the allocator lock), then written, then
        // converted, as XFS does for direct writes.
        while fb <= last {
            match self.write_step(ino, fb, (off, end, last), data, now, &mut st) {
                Ok(next) => fb = next,
                Err(e) => {
                    if let Some(p) = st.pending.take() {
                        if let Err(undo) = self.take_out(ino, &[(p.file_block, p.len as u64)]) {
                            eprintln!("ticketfs: inode {ino}: undoing a failed write: {undo}");
                        }
                    }
                    let done = (fb * bs).min(end).saturating_sub(off);
                    if done == 0 {
                        note.changed = st.layout;
                        return Err(e.into());
                    }
                    end = off + done;
                    stopped = Some(e);
                    break;
                }
            }
        }
        // Size and times (the allocating steps did it for what they covered). Nothing to log
        // when the size stands, no set-id bit is to drop and the times are already this recent
        // (`TIME_GRANULARITY_NS`): a stream of overwrites logs its times once per tick.
        let mut tx = self.eng.begin(TransKind::Setattr)?;
        let (r, mut ino_d) = inode::read(&mut tx, ino)?;
        let mut after = ino_d.clone();
        if drop_setid {
            after.drop_setid();
        }
        let unchanged = ino_d.size >= end
            && after.mode == ino_d.mode
            && recent(ino_d.mtime, now)
            && recent(ino_d.ctime, now);
        if unchanged {
            tx.cancel()?;
            note.changed = st.layout;
            return Ok(((end - off) as usize, stopped));
        }
        st.layout |= ino_d.size < end;
        ino_d = after;
        Self::grow(&mut ino_d, end, now);
        inode::write(&mut tx, &r, &ino_d);
        tx.commit()?;
        note.changed = st.layout;
        Ok(((end - off) as usize, stopped))
    }

    /// One step of a write at file block `fb` (`span`: the write's offset, end and last
    /// block): an overwrite of a written run, a write and conversion of an unwritten one, or the
    /// mapping of a hole (written by the next step). Returns the next block to do.
    fn write_step(
        &self,
        ino: u64,
        fb: u64,
        (off, end, last): (u64, u64, u64),
        data: &[u8],
        now: Time,
        st: &mut WriteState<'a>,
    ) -> Result<u64, EngineError> {
        let bs = self.bs();
        let (hit, next) = match (st.mapped.take(), st.found.take()) {
            (Some(e), _) => (Some(e), None),
            (None, Some(found)) => found,
            (None, None) => {
                let mut tx = self.eng.begin(TransKind::Read)?;
                let (_, ino_d) = inode::read(&mut tx, ino)?;
                let found = extmap::find(&mut tx, ino, &ino_d, fb)?;
                tx.cancel()?;
                found
            }
        };
        match hit {
            Some(e) if e.flags & UNWRITTEN == 0 => {
                // Mapped and written: overwrite in place, no transaction needed.
                let run_end = (e.file_block + e.len as u64).min(last + 1);
                self.put(
                    (ino, e.start + (fb - e.file_block)),
                    fb,
                    run_end - fb,
                    off,
                    data,
                    true,
                )?;
                Ok(run_end)
            }
            Some(e) => {
                // Unwritten: write the data, then map the part as written (splitting the
                // extent may need map blocks: promised first, or by the hole step that mapped
                // it).
                let _blocks = match st.held.take() {
                    Some(held) if st.pending == Some(e) => held,
                    _ => self.promise_map(false)?,
                };
                let run_end = (e.file_block + e.len as u64)
                    .min(last + 1)
                    .min(fb + EXTENT_LEN_MAX);
                let disk = e.start + (fb - e.file_block);
                self.put((ino, disk), fb, run_end - fb, off, data, false)?;
                self.eng.log().note_data_write();
                let mut tx = self.eng.begin(TransKind::Write)?;
                let (r, mut ino_d) = inode::read(&mut tx, ino)?;
                debug_assert!(
                    extmap::find(&mut tx, ino, &ino_d, fb)?.0.is_some_and(|f| {
                        f.flags & UNWRITTEN != 0 && f.start + (fb - f.file_block) == disk
                    }),
                    "inode {ino}: extent map changed under the data lock"
                );
                self.remap_run(&mut tx, ino, &mut ino_d, (fb, run_end), disk, 0)?;
                Self::grow(&mut ino_d, end.min(run_end * bs), now);
                inode::write(&mut tx, &r, &ino_d);
                st.layout = true;
                tx.commit()?;
                // A hole step's extent is written whole by this step (it ends at or before
                // the write's last block and is no longer than EXTENT_LEN_MAX).
                st.pending = None;
                Ok(run_end)
            }
            None => {
                // A hole: map new blocks unwritten; the next step writes and converts them.
                let hole_end = next.map_or(last + 1, |n| n.file_block.min(last + 1));
                let want = (hole_end - fb).min(EXTENT_LEN_MAX);
                let Some((blocks, want)) = self.promise_data(want)? else {
                    return Err(no_free_block(ino));
                };
                st.held = Some(blocks);
                let mut tx = self.eng.begin(TransKind::Write)?;
                let (r, mut ino_d) = inode::read(&mut tx, ino)?;
                let Some(e) = self.map_unwritten(&mut tx, ino, &r, &mut ino_d, fb, want)? else {
                    // The free list may have been topped up: keep that, report no space.
                    tx.commit()?;
                    return Err(no_free_block(ino));
                };
                st.layout = true;
                tx.commit()?;
                st.mapped = Some(e);
                st.pending = Some(e);
                Ok(fb)
            }
        }
    }

    /// Maps up to `want` new blocks, unwritten, at file block `fb` (a hole) of `ino` in `tx`:
    /// allocated near where the map wants them, inserted, counted in the inode, which is
    /// written. A write's hole step and fallocate map holes this way alike. Returns the extent,
    /// or None when no block could be had: the caller then commits all the same (the free list
    /// may have been topped up) and reports no space.
    #[track_caller]
    fn map_unwritten(
        &self,
        tx: &mut Trans<'_>,
        ino: u64,
        r: &InodeRef,
        ino_d: &mut Inode,
        fb: u64,
        want: u64,
    ) -> Result<Option<Extent>, EngineError> {
        let target = extmap::target(tx, ino, ino_d, fb)?;
        let Some((start, n)) = self.alloc.alloc(tx, target, 1, want)? else {
            return Ok(None);
        };
        let e = Extent {
            file_block: fb,
            start,
            len: n as u32,
            flags: UNWRITTEN,
        };
        self.map(ino, ino_d).insert(tx, e)?;
        ino_d.blocks += n;
        inode::write(tx, r, ino_d);
        Ok(Some(e))
    }

    /// Maps file blocks `fb..end` of `ino` (from disk block `disk` on, where they stand) again
    /// with `flags`: written (0) once a write's data is on the device, or `UNWRITTEN` when
    /// zero-range turns written blocks back into zeros. Their blocks are neither freed nor
    /// allocated.
    #[track_caller]
    fn remap_run(
        &self,
        tx: &mut Trans<'_>,
        ino: u64,
        ino_d: &mut Inode,
        (fb, end): (u64, u64),
        disk: u64,
        flags: u32,
    ) -> Result<(), EngineError> {
        let e = Extent {
            file_block: fb,
            start: disk,
            len: (end - fb) as u32,
            flags,
        };
        self.map(ino, ino_d).remap(tx, e)
    }

    /// Ends an operation on `ino_d` in `tx`: its change time, and with `data` its modification
    /// time, set to `now`, the inode written and `tx` committed.
    #[track_caller]
    fn stamp_and_commit(
        mut tx: Trans<'_>,
        r: &InodeRef,
        mut ino_d: Inode,
        now: Time,
        data: bool,
    ) -> Result<(), EngineError> {
        if data {
            ino_d.mtime = now;
        }
        ino_d.ctime = now;
        inode::write(&mut tx, r, &ino_d);
        tx.commit()?;
        Ok(())
    }

    fn grow(inode: &mut Inode, size: u64, now: Time) {
        debug_assert!(size <= FILE_SIZE_MAX, "size {size} past FILE_SIZE_MAX");
        inode.size = inode.size.max(size);
        inode.mtime = now;
        inode.ctime = now;
    }

    /// Writes the part of `data` (which starts at file offset `off`) that falls in file blocks
    /// `fb..fb+n` of `ino`, to disk blocks from `disk`. Blocks only partly covered keep their
    /// old bytes when `existing`, else are zero-filled.
    fn put(
        &self,
        (ino, disk): (u64, u64),
        fb: u64,
        n: u64,
        off: u64,
        data: &[u8],
        existing: bool,
    ) -> Result<(), EngineError> {
        let bs = self.bs();
        let dev = self.eng.device();
        let span_start = fb * bs;
        let span_end = (fb + n) * bs;
        let a = span_start.max(off);
        let b = span_end.min(off + data.len() as u64);
        let len = (n * bs) as usize;
        with_scratch(len, |buf| {
            if a >= b {
                if !existing {
                    // Nothing of the data falls here (a hole inside the write): zeros, never
                    // stale bytes.
                    buf.fill(0);
                    self.write_data(ino, disk, buf)?;
                }
                return Ok(());
            }
            let (ra, rb) = ((a - span_start) as usize, (b - span_start) as usize);
            if existing {
                if a > span_start {
                    dev.read_data(disk, &mut buf[..bs as usize])
                        .map_err(EngineError::Io)?;
                }
                if b < span_end {
                    let l = ((n - 1) * bs) as usize;
                    dev.read_data(disk + n - 1, &mut buf[l..])
                        .map_err(EngineError::Io)?;
                }
            } else {
                // The scratch holds an earlier request's bytes: zeros around the data.
                buf[..ra].fill(0);
                buf[rb..].fill(0);
            }
            buf[ra..rb].copy_from_slice(&data[(a - off) as usize..(b - off) as usize]);
            self.write_data(ino, disk, buf)
        })
    }

    /// Sets the size. Shrinking frees the blocks past the new end (in rolling steps) and zeroes
    /// the tail of the last block; growing leaves a hole.
    pub fn truncate(&self, ino: u64, size: u64, now: Time) -> Result<(), EngineError> {
        let _note = self.layout_note(ino);
        if size > FILE_SIZE_MAX {
            return Err(EngineError::TooBig(format!(
                "size {size} past the largest file size {FILE_SIZE_MAX}"
            )));
        }
        let bs = self.bs();
        // Cutting an extent in two may need a map block; freeing gives blocks back after that.
        let _blocks = self.promise_map(true)?;
        let (mut tx, r, mut ino_d) = self.begin_truncate(ino)?;
        if size < ino_d.size {
            // Zero the rest of the new last block, so growing later shows zeros, not old bytes.
            if !size.is_multiple_of(bs) {
                if let (Some(e), _) = extmap::find(&mut tx, ino, &ino_d, size / bs)? {
                    if e.flags & UNWRITTEN == 0 {
                        let disk = e.start + (size / bs - e.file_block);
                        let mut blk = AlignedBuf::new(bs as usize);
                        self.eng
                            .device()
                            .read_data(disk, &mut blk)
                            .map_err(EngineError::Io)?;
                        blk[(size % bs) as usize..].fill(0);
                        self.write_data(ino, disk, &blk)?;
                    }
                }
            }
            // The size goes down first, so a crash between steps never shows blocks past it.
            ino_d.size = size;
            inode::write(&mut tx, &r, &ino_d);
        }
        if size <= ino_d.size {
            // Every block past the new end goes, those preallocated past the old end with
            // FALLOC_FL_KEEP_SIZE too (an unlink truncates to 0: they leaked before).
            let from = size.div_ceil(bs);
            self.free_range(&mut tx, ino, &r, &mut ino_d, from, u64::MAX)?;
        }
        ino_d.size = size;
        Self::stamp_and_commit(tx, &r, ino_d, now, true)
    }

    /// Frees the whole blocks inside `off..off+len` and zeroes the partial blocks at its edges;
    /// the size does not change.
    pub fn punch_hole(&self, ino: u64, off: u64, len: u64, now: Time) -> Result<(), EngineError> {
        let _note = self.layout_note(ino);
        let bs = self.bs();
        let end = off.saturating_add(len);
        let first_full = off.div_ceil(bs);
        let last_full = end / bs;
        // Promised before the edges change: a refusal then leaves everything.
        let _blocks = self.promise_map(true)?;
        self.zero_edges(ino, off, end)?;
        if first_full < last_full {
            let (mut tx, r, mut ino_d) = self.begin_truncate(ino)?;
            self.free_range(&mut tx, ino, &r, &mut ino_d, first_full, last_full)?;
            Self::stamp_and_commit(tx, &r, ino_d, now, true)?;
        }
        Ok(())
    }

    /// Zeroes the partial blocks at the edges of `off..end` where they are mapped and written.
    fn zero_edges(&self, ino: u64, off: u64, end: u64) -> Result<(), EngineError> {
        let bs = self.bs();
        let (first_full, last_full) = (off.div_ceil(bs), end / bs);
        for (a, b) in [
            (off, end.min(first_full * bs)),
            ((last_full * bs).max(off), end),
        ] {
            if a < b {
                self.zero_mapped(ino, a, b)?;
            }
        }
        Ok(())
    }

    /// Zeroes `a..b` (within one block) where it is mapped and written.
    fn zero_mapped(&self, ino: u64, a: u64, b: u64) -> Result<(), EngineError> {
        let bs = self.bs();
        let mut tx = self.eng.begin(TransKind::Read)?;
        let (_, ino_d) = inode::read(&mut tx, ino)?;
        let fb = a / bs;
        let hit = extmap::find(&mut tx, ino, &ino_d, fb)?.0;
        tx.cancel()?;
        if let Some(e) = hit.filter(|e| e.flags & UNWRITTEN == 0) {
            let disk = e.start + (fb - e.file_block);
            let mut blk = AlignedBuf::new(bs as usize);
            self.eng
                .device()
                .read_data(disk, &mut blk)
                .map_err(EngineError::Io)?;
            blk[(a - fb * bs) as usize..(b - fb * bs) as usize].fill(0);
            self.write_data(ino, disk, &blk)?;
        }
        Ok(())
    }

    /// Begins a Truncate transaction on `ino`: the inode read, its block held across the rolls
    /// of `free_range` (relogged at each, so it never pins the log tail). Truncate, punch and
    /// the undo of a failed fallocate free blocks this way alike.
    #[track_caller]
    fn begin_truncate(&self, ino: u64) -> Result<(Trans<'a>, InodeRef, Inode), EngineError> {
        let mut tx = self.eng.begin(TransKind::Truncate)?;
        let (r, ino_d) = inode::read(&mut tx, ino)?;
        tx.hold(r.id);
        Ok((tx, r, ino_d))
    }

    /// Unmaps file blocks `from..to` of `ino` and frees their blocks, `REMOVE_PER_STEP` extents
    /// a step, rolling `tx` (from `begin_truncate`) between steps so each stays within the
    /// Truncate entry; the inode is written before each roll. The last step's change is left
    /// for the caller to write, with what else it changes, before it commits.
    #[track_caller]
    fn free_range(
        &self,
        tx: &mut Trans<'_>,
        ino: u64,
        r: &InodeRef,
        ino_d: &mut Inode,
        from: u64,
        to: u64,
    ) -> Result<(), EngineError> {
        loop {
            let (_, done) = self
                .map(ino, ino_d)
                .remove(tx, from, to, REMOVE_PER_STEP, true)?;
            if done {
                return Ok(());
            }
            inode::write(tx, r, ino_d);
            tx.roll()?;
        }
    }

    /// fallocate's allocation. Preallocation: every hole of the range gets unwritten blocks.
    /// Zero-range (`zero`): the range reads as zeros afterwards and is allocated (the written
    /// blocks inside it turn unwritten where they stand, the partial blocks at its edges are
    /// zeroed, the holes get unwritten blocks); nothing is freed and allocated again, so it
    /// needs only the blocks of the holes. Either way the size grows to the range's end unless
    /// `keep_size`. All or nothing: the blocks of every hole and an extent-map change per
    /// piece are promised before anything changes, so a request larger than the free space
    /// fails with ENOSPC at once and leaves the file as it was; should an allocation still fail
    /// half-way (free space more scattered than the promise allowed for), the extents this call
    /// added are taken out again, so the file is as it was (its size, map, block count and
    /// ctime).
    pub fn allocate(&self, ino: u64, req: Allocate, now: Time) -> Result<(), EngineError> {
        let Allocate {
            off,
            len,
            keep_size,
            zero,
        } = req;
        let _note = self.layout_note(ino);
        let bs = self.bs();
        let end = off
            .checked_add(len)
            .filter(|&e| e <= FILE_SIZE_MAX)
            .ok_or_else(|| EngineError::TooBig("fallocate past the largest file size".into()))?;
        if len == 0 {
            return Err(EngineError::Invalid("fallocate of zero bytes".into()));
        }
        let (first, last) = (off / bs, (end - 1) / bs);
        // Turning written blocks unwritten splits at most the two extents at the range's
        // edges: two more map changes.
        let _promise = self.promise_holes(ino, first, last, if zero { 2 } else { 0 })?;
        if zero {
            self.zero_edges(ino, off, end)?;
            self.unwrite(ino, off.div_ceil(bs), end / bs)?;
        }
        let mut added = Vec::new();
        if let Err(e) = self.fill_holes(ino, first, last, &mut added) {
            if let Err(undo) = self.take_out(ino, &added) {
                // The log is down (the undo's own failure): nothing more is written anyway.
                eprintln!("ticketfs: inode {ino}: undoing a failed fallocate: {undo}");
            }
            return Err(e);
        }
        let mut tx = self.eng.begin(TransKind::Setattr)?;
        let (r, mut ino_d) = inode::read(&mut tx, ino)?;
        if !keep_size {
            ino_d.size = ino_d.size.max(end);
        }
        // Zeroing changes the data: its modification time too.
        Self::stamp_and_commit(tx, &r, ino_d, now, zero)
    }

    /// Marks the written extents within file blocks `first..last` unwritten: their blocks stay,
    /// and read as zeros from then on.
    fn unwrite(&self, ino: u64, first: u64, last: u64) -> Result<(), EngineError> {
        let mut fb = first;
        while fb < last {
            let mut tx = self.eng.begin(TransKind::Write)?;
            let (r, mut ino_d) = inode::read(&mut tx, ino)?;
            let (hit, next) = extmap::find(&mut tx, ino, &ino_d, fb)?;
            let e = match (hit, next) {
                (Some(e), _) => e,
                (None, Some(n)) if n.file_block < last => {
                    tx.cancel()?;
                    fb = n.file_block;
                    continue;
                }
                _ => {
                    tx.cancel()?;
                    break;
                }
            };
            let run_end = (e.file_block + e.len as u64).min(last);
            if e.flags & UNWRITTEN != 0 {
                tx.cancel()?;
                fb = run_end;
                continue;
            }
            let disk = e.start + (fb - e.file_block);
            self.remap_run(&mut tx, ino, &mut ino_d, (fb, run_end), disk, UNWRITTEN)?;
            inode::write(&mut tx, &r, &ino_d);
            tx.commit()?;
            fb = run_end;
        }
        Ok(())
    }

    /// The holes of file blocks `first..=last`: how many blocks, in how many runs.
    fn holes(&self, ino: u64, first: u64, last: u64) -> Result<(u64, u64), EngineError> {
        let mut tx = self.eng.begin(TransKind::Read)?;
        let (_, ino_d) = inode::read(&mut tx, ino)?;
        let (mut blocks, mut runs, mut fb) = (0u64, 0u64, first);
        while fb <= last {
            let (hit, next) = extmap::find(&mut tx, ino, &ino_d, fb)?;
            if let Some(e) = hit {
                fb = e.file_block + e.len as u64;
                continue;
            }
            let hole_end = next.map_or(last + 1, |n| n.file_block.min(last + 1));
            blocks += hole_end - fb;
            runs += 1;
            fb = hole_end;
        }
        tx.cancel()?;
        Ok((blocks, runs))
    }

    /// Promises what filling the holes of `first..=last` may take: their blocks, and one
    /// extent-map change per piece (a run, cut at the longest extent) and `more_changes`. None
    /// when there is no hole. ENOSPC when the free space cannot cover it.
    fn promise_holes(
        &self,
        ino: u64,
        first: u64,
        last: u64,
        more_changes: u64,
    ) -> Result<Option<BlockResv<'a>>, EngineError> {
        let (blocks, runs) = self.holes(ino, first, last)?;
        if blocks == 0 && more_changes == 0 {
            return Ok(None);
        }
        let pieces = runs + blocks / EXTENT_LEN_MAX + more_changes;
        let want = blocks + pieces * self.map_blocks();
        self.alloc
            .reserve(want, want, false)
            .map(Some)
            .map_err(|_| {
                EngineError::NoSpace(format!(
                    "inode {ino}: fallocate needs {blocks} blocks and {pieces} extent-map changes"
                ))
            })
    }

    /// Fills the holes of `first..=last` with unwritten extents, noting each in `added`.
    fn fill_holes(
        &self,
        ino: u64,
        first: u64,
        last: u64,
        added: &mut Vec<(u64, u64)>,
    ) -> Result<(), EngineError> {
        let mut fb = first;
        while fb <= last {
            let mut tx = self.eng.begin(TransKind::Write)?;
            let (r, mut ino_d) = inode::read(&mut tx, ino)?;
            let (hit, next) = extmap::find(&mut tx, ino, &ino_d, fb)?;
            if let Some(e) = hit {
                tx.cancel()?;
                fb = e.file_block + e.len as u64;
                continue;
            }
            let hole_end = next.map_or(last + 1, |n| n.file_block.min(last + 1));
            let want = (hole_end - fb).min(EXTENT_LEN_MAX);
            let Some(e) = self.map_unwritten(&mut tx, ino, &r, &mut ino_d, fb, want)? else {
                // As in a write's hole step: keep a topped-up free list, report no space.
                tx.commit()?;
                return Err(no_free_block(ino));
            };
            tx.commit()?;
            let n = e.len as u64;
            added.push((fb, n));
            fb += n;
        }
        Ok(())
    }

    /// Takes the extents `added` (file block, length: unwritten, never written) out of the map
    /// again and frees their blocks.
    fn take_out(&self, ino: u64, added: &[(u64, u64)]) -> Result<(), EngineError> {
        for &(fb, n) in added {
            let _blocks = self.promise_map(true)?;
            let (mut tx, r, mut ino_d) = self.begin_truncate(ino)?;
            self.free_range(&mut tx, ino, &r, &mut ino_d, fb, fb + n)?;
            inode::write(&mut tx, &r, &ino_d);
            tx.commit()?;
        }
        Ok(())
    }

    /// SEEK_DATA (`data`) or SEEK_HOLE from `off`: the next offset in data (a written or
    /// unwritten extent) or in a hole (end of file counts as a hole). None past the end.
    pub fn seek(&self, ino: u64, off: u64, data: bool) -> Result<Option<u64>, EngineError> {
        let bs = self.bs();
        let mut tx = self.eng.begin(TransKind::Read)?;
        let (_, ino_d) = inode::read(&mut tx, ino)?;
        if off >= ino_d.size {
            return Ok(None);
        }
        let mut fb = off / bs;
        let mut pos = off;
        loop {
            if pos >= ino_d.size {
                return Ok(if data { None } else { Some(ino_d.size) });
            }
            let (hit, next) = extmap::find(&mut tx, ino, &ino_d, fb)?;
            match (hit, data) {
                (Some(_), true) | (None, false) => return Ok(Some(pos)),
                (Some(e), false) => fb = e.file_block + e.len as u64,
                (None, true) => match next {
                    Some(n) => fb = n.file_block,
                    None => return Ok(None),
                },
            }
            pos = (fb * bs).max(off);
        }
    }
}
