//! A minimal io_uring of 128-byte submission entries, used by one thread: what the FUSE queues
//! need (URING_CMD on /dev/fuse, a POLL_ADD to be woken) and nothing more. Raw system calls;
//! the rings are shared memory with the kernel, read and written with acquire/release.

use std::io;
use std::os::fd::RawFd;
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};

const IORING_SETUP_CQSIZE: u32 = 1 << 3;
/// Submission entries of 128 bytes: a URING_CMD's 80-byte command area needs them.
const IORING_SETUP_SQE128: u32 = 1 << 10;
const IORING_FEAT_SINGLE_MMAP: u32 = 1;
const IORING_ENTER_GETEVENTS: u32 = 1;
const IORING_OFF_SQ_RING: libc::off_t = 0;
const IORING_OFF_CQ_RING: libc::off_t = 0x800_0000;
const IORING_OFF_SQES: libc::off_t = 0x1000_0000;
pub(crate) const IORING_OP_POLL_ADD: u8 = 6;
pub(crate) const IORING_OP_URING_CMD: u8 = 46;
/// Bytes of one submission entry (SQE128).
pub(crate) const SQE_BYTES: usize = 128;
/// Where a URING_CMD's command area starts in its entry, and its length.
pub(crate) const SQE_CMD_OFFSET: usize = 48;
pub(crate) const SQE_CMD_BYTES: usize = 80;
const CQE_BYTES: usize = 16;

#[repr(C)]
#[derive(Default)]
struct SqringOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Default)]
struct CqringOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    cqes: u32,
    flags: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Default)]
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: SqringOffsets,
    cq_off: CqringOffsets,
}

/// One submission entry's fields, as the kernel reads them.
#[derive(Clone, Copy)]
pub(crate) struct Sqe {
    pub(crate) opcode: u8,
    pub(crate) fd: RawFd,
    /// `off`, or a URING_CMD's `cmd_op` in its low 32 bits.
    pub(crate) off: u64,
    pub(crate) addr: u64,
    pub(crate) len: u32,
    /// `rw_flags`, or a POLL_ADD's `poll32_events`.
    pub(crate) op_flags: u32,
    pub(crate) user_data: u64,
    /// A URING_CMD's command area.
    pub(crate) cmd: [u8; SQE_CMD_BYTES],
}

impl Default for Sqe {
    fn default() -> Sqe {
        Sqe {
            opcode: 0,
            fd: -1,
            off: 0,
            addr: 0,
            len: 0,
            op_flags: 0,
            user_data: 0,
            cmd: [0; SQE_CMD_BYTES],
        }
    }
}

/// A completion: the entry's `user_data` and its result (a negative errno on failure).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cqe {
    pub(crate) user_data: u64,
    pub(crate) res: i32,
}

struct Map {
    ptr: *mut u8,
    len: usize,
}

impl Map {
    fn new(fd: RawFd, len: usize, off: libc::off_t) -> io::Result<Map> {
        // SAFETY: a fresh shared mapping of the ring's memory; checked for failure below.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                off,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Map {
            ptr: p as *mut u8,
            len,
        })
    }

    /// The u32 at byte `off`, shared with the kernel.
    fn atomic(&self, off: u32) -> &AtomicU32 {
        debug_assert!(
            off as usize + 4 <= self.len,
            "ring offset {off} past the map"
        );
        // SAFETY: the kernel's offsets lie in the mapping and are 4-aligned; the mapping lives as
        // long as self.
        unsafe { &*(self.ptr.add(off as usize) as *const AtomicU32) }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: unmaps what new mapped.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

/// An io_uring owned by one thread.
pub(crate) struct Uring {
    fd: RawFd,
    sq: Map,
    /// Separate from `sq` only on kernels without a single mapping for both rings.
    cq: Option<Map>,
    sqes: Map,
    p: Params,
    /// Entries written but not yet submitted.
    pending: u32,
}

// SAFETY: the maps are owned; the ring is used by one thread at a time.
unsafe impl Send for Uring {}

impl Uring {
    /// A ring with room for `entries` submissions and twice as many completions.
    pub(crate) fn new(entries: u32) -> io::Result<Uring> {
        let mut p = Params {
            flags: IORING_SETUP_SQE128 | IORING_SETUP_CQSIZE,
            cq_entries: entries * 2,
            ..Params::default()
        };
        // SAFETY: io_uring_setup fills `p`, which outlives the call.
        let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, entries, &mut p as *mut Params) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = fd as RawFd;
        let close = |e: io::Error| {
            // SAFETY: fd is ours.
            unsafe { libc::close(fd) };
            e
        };
        let sq_len = p.sq_off.array as usize + p.sq_entries as usize * 4;
        let cq_len = p.cq_off.cqes as usize + p.cq_entries as usize * CQE_BYTES;
        let single = p.features & IORING_FEAT_SINGLE_MMAP != 0;
        let sq = Map::new(
            fd,
            if single { sq_len.max(cq_len) } else { sq_len },
            IORING_OFF_SQ_RING,
        )
        .map_err(close)?;
        let cq = if single {
            None
        } else {
            Some(Map::new(fd, cq_len, IORING_OFF_CQ_RING).map_err(close)?)
        };
        let sqes =
            Map::new(fd, p.sq_entries as usize * SQE_BYTES, IORING_OFF_SQES).map_err(close)?;
        // The array maps ring slots to entries one to one, once for all.
        for i in 0..p.sq_entries {
            sq.atomic(p.sq_off.array + 4 * i)
                .store(i, Ordering::Relaxed);
        }
        Ok(Uring {
            fd,
            sq,
            cq,
            sqes,
            p,
            pending: 0,
        })
    }

    fn cq_map(&self) -> &Map {
        self.cq.as_ref().unwrap_or(&self.sq)
    }

    /// Writes `e` into the next free submission slot; false when the ring is full.
    pub(crate) fn push(&mut self, e: &Sqe) -> bool {
        let head = self.sq.atomic(self.p.sq_off.head).load(Ordering::Acquire);
        let tail = self.sq.atomic(self.p.sq_off.tail).load(Ordering::Relaxed);
        if tail.wrapping_sub(head) >= self.p.sq_entries {
            return false;
        }
        let idx = (tail & self.mask_sq()) as usize;
        let mut b = [0u8; SQE_BYTES];
        b[0] = e.opcode;
        b[4..8].copy_from_slice(&e.fd.to_ne_bytes());
        b[8..16].copy_from_slice(&e.off.to_ne_bytes());
        b[16..24].copy_from_slice(&e.addr.to_ne_bytes());
        b[24..28].copy_from_slice(&e.len.to_ne_bytes());
        b[28..32].copy_from_slice(&e.op_flags.to_ne_bytes());
        b[32..40].copy_from_slice(&e.user_data.to_ne_bytes());
        b[SQE_CMD_OFFSET..SQE_CMD_OFFSET + SQE_CMD_BYTES].copy_from_slice(&e.cmd);
        // SAFETY: idx < sq_entries, so the slot lies in the entries' mapping.
        unsafe {
            ptr::copy_nonoverlapping(b.as_ptr(), self.sqes.ptr.add(idx * SQE_BYTES), SQE_BYTES)
        };
        self.sq
            .atomic(self.p.sq_off.tail)
            .store(tail.wrapping_add(1), Ordering::Release);
        self.pending += 1;
        true
    }

    fn mask_sq(&self) -> u32 {
        self.sq
            .atomic(self.p.sq_off.ring_mask)
            .load(Ordering::Relaxed)
    }

    /// io_uring_enter with what was pushed, waiting for `min_complete` completions.
    fn enter(&self, min_complete: u32, flags: u32) -> libc::c_long {
        // SAFETY: io_uring_enter on our ring, no signal mask.
        unsafe {
            libc::syscall(
                libc::SYS_io_uring_enter,
                self.fd,
                self.pending,
                min_complete,
                flags,
                ptr::null::<libc::c_void>(),
                0usize,
            )
        }
    }

    /// Submits what was pushed without waiting for completions.
    pub(crate) fn submit(&mut self) -> io::Result<()> {
        loop {
            let r = self.enter(0u32, 0u32);
            if r >= 0 {
                if (r as u32) < self.pending {
                    return Err(io::Error::other(format!(
                        "io_uring took {r} of {} submissions",
                        self.pending
                    )));
                }
                self.pending = 0;
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
    }

    /// Submits what was pushed and waits until at least one completion is there.
    pub(crate) fn submit_and_wait(&mut self) -> io::Result<()> {
        loop {
            let r = self.enter(1u32, IORING_ENTER_GETEVENTS);
            if r >= 0 {
                self.pending -= (r as u32).min(self.pending);
                return Ok(());
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                // Completions are waiting to be reaped first: the caller reaps and comes back.
                Some(libc::EBUSY) => return Ok(()),
                _ => return Err(e),
            }
        }
    }

    /// Takes the completions that are there.
    pub(crate) fn reap(&mut self, out: &mut Vec<Cqe>) {
        let cq = self.cq_map();
        let off = &self.p.cq_off;
        let mask = cq.atomic(off.ring_mask).load(Ordering::Relaxed);
        let mut head = cq.atomic(off.head).load(Ordering::Relaxed);
        let tail = cq.atomic(off.tail).load(Ordering::Acquire);
        while head != tail {
            let at = off.cqes as usize + (head & mask) as usize * CQE_BYTES;
            debug_assert!(at + CQE_BYTES <= cq.len, "completion slot past the map");
            let mut b = [0u8; CQE_BYTES];
            // SAFETY: the slot lies in the completion ring's mapping.
            unsafe { ptr::copy_nonoverlapping(cq.ptr.add(at), b.as_mut_ptr(), CQE_BYTES) };
            let mut ud = [0u8; 8];
            ud.copy_from_slice(&b[0..8]);
            let mut res = [0u8; 4];
            res.copy_from_slice(&b[8..12]);
            out.push(Cqe {
                user_data: u64::from_ne_bytes(ud),
                res: i32::from_ne_bytes(res),
            });
            head = head.wrapping_add(1);
        }
        cq.atomic(off.head).store(head, Ordering::Release);
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        // SAFETY: the ring's fd is ours; the maps unmap after.
        unsafe { libc::close(self.fd) };
    }
}
