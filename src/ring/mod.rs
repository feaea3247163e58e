//! FUSE over io_uring (Linux 6.14+, `CONFIG_FUSE_IO_URING`, enabled by the administrator with
//! `echo 1 > /sys/module/fuse/parameters/enable_uring`): one queue per CPU, served by a thread
//! pinned to that CPU. The kernel puts a request on the queue of the CPU its caller runs on, so
//! the caller and the thread that serves it share a CPU: a synchronous request costs a switch on
//! one CPU instead of a wake-up of another. On this project's 2-CPU VM a cross-CPU wake-up costs
//! 56-89 us (`fsbench pingpong`) against 10-14 us on one CPU, and create, unlink and small-file
//! trees are nothing but such round trips (docs/performance.md).
//!
//! The INIT exchange still goes through `/dev/fuse` ([`crate::devfuse`]), as do FORGET and
//! INTERRUPT; every other request comes through the queues once each has an entry registered.
//! Each entry is a header buffer (`struct fuse_uring_req_header`) and a payload buffer of the largest request;
//! a thread answers a request and fetches the next in one submission (COMMIT_AND_FETCH).

mod policy;
mod uring;

use crate::ops::Ops;
use crate::proto::dispatch;
use crate::proto::wire::{self, InHeader};
use policy::Policy;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use uring::{Cqe, Sqe, Uring};

/// Serving threads and queues started, requests answered through the queues, and times a
/// thread left SCHED_IDLE for oversubscribed CPUs ([`policy`]); for `ticketfs stats`.
static THREADS: AtomicUsize = AtomicUsize::new(0);
static QUEUES: AtomicUsize = AtomicUsize::new(0);
static REQUESTS: AtomicU64 = AtomicU64::new(0);
pub(crate) static LEFT_IDLE: AtomicU64 = AtomicU64::new(0);

/// What the queues have done, for `ticketfs stats`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RingStats {
    /// 0 when requests go through `/dev/fuse`.
    pub(crate) threads: usize,
    pub(crate) queues: usize,
    pub(crate) requests: u64,
    pub(crate) left_idle: u64,
}

pub(crate) fn stats() -> RingStats {
    RingStats {
        threads: THREADS.load(Ordering::Relaxed),
        queues: QUEUES.load(Ordering::Relaxed),
        requests: REQUESTS.load(Ordering::Relaxed),
        left_idle: LEFT_IDLE.load(Ordering::Relaxed),
    }
}

/// Where the administrator turns FUSE over io_uring on.
pub(crate) const ENABLE_KNOB: &str = "/sys/module/fuse/parameters/enable_uring";
/// FUSE_IO_URING_CMD_REGISTER and FUSE_IO_URING_CMD_COMMIT_AND_FETCH.
const CMD_REGISTER: u64 = 1;
const CMD_COMMIT_AND_FETCH: u64 = 2;
/// Bytes of an entry's header buffer: `struct fuse_uring_req_header` is 288; a page, as the
/// kernel pins it.
const HEADER_BUF_BYTES: usize = 4096;
/// Offsets in the header buffer: the in/out header, the fixed argument, the entry's in/out.
const OP_IN_OFFSET: usize = 128;
const OP_IN_BYTES: usize = 128;
const ENT_IN_OUT_OFFSET: usize = 256;
/// The smallest payload buffer the kernel takes (FUSE_MIN_READ_BUFFER).
const MIN_PAYLOAD_BYTES: usize = 8192;
/// How long the start waits for every entry's REGISTER to be submitted before turning the
/// connection back to /dev/fuse.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// `user_data` of the completion that tells a queue thread to stop.
const STOP_TAG: u64 = u64::MAX;

/// Whether the kernel offers FUSE over io_uring and this process may use io_uring.
pub(crate) fn available() -> bool {
    let on = std::fs::read_to_string(ENABLE_KNOB)
        .map(|s| s.trim() == "Y" || s.trim() == "1")
        .unwrap_or(false);
    on && Uring::new(2).is_ok()
}

/// Queues the kernel makes: one per possible CPU (a caller's requests go to its CPU's).
pub(crate) fn queue_count() -> io::Result<usize> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let mut n = 0;
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("cpu list {s:?}"));
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: usize = a.parse().map_err(|_| bad())?;
        let b: usize = b.parse().map_err(|_| bad())?;
        n += b.checked_sub(a).ok_or_else(bad)? + 1;
    }
    Ok(n.max(1))
}

/// Anonymous memory for a buffer the kernel reads and writes, page-aligned.
struct Mem {
    ptr: *mut u8,
    len: usize,
}

impl Mem {
    fn new(len: usize) -> io::Result<Mem> {
        // SAFETY: a fresh private anonymous mapping; checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mem {
            ptr: p as *mut u8,
            len,
        })
    }

    /// The first `n` bytes (at most the buffer).
    ///
    /// # Safety
    /// No mutable view of the buffer may be alive while the slice is.
    unsafe fn slice(&self, n: usize) -> &[u8] {
        // SAFETY: within the mapping; the caller rules out aliasing.
        unsafe { std::slice::from_raw_parts(self.ptr, n.min(self.len)) }
    }

    /// # Safety
    /// No other view of the buffer may be alive while the slice is.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice_mut(&self) -> &mut [u8] {
        // SAFETY: within the mapping; the caller rules out aliasing.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Mem {
    fn drop(&mut self) {
        // SAFETY: unmaps what new mapped.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

// SAFETY: the buffers are owned by one queue thread.
unsafe impl Send for Mem {}

/// One ring entry: its two buffers and the iovec the REGISTER names them with.
struct Entry {
    header: Mem,
    payload: Mem,
    iov: Box<[libc::iovec; 2]>,
}

// SAFETY: the iovec points into the entry's own buffers.
unsafe impl Send for Entry {}

/// The queues' threads; stopped with [`Queues::stop`] once the session has ended.
pub(crate) struct Queues {
    threads: Vec<JoinHandle<()>>,
    stop: OwnedFd,
}

/// One serving thread: one entry of one queue, on its own ring. A queue has several, so a
/// request that waits (an fsync for the log, a reservation for memory, a read for the device)
/// holds up only its own thread; the kernel hands a request to the entry freed last, so the
/// thread that just answered takes the next one while the others sleep.
struct Server {
    qid: u16,
    dev: OwnedFd,
    stop: OwnedFd,
    ring: Uring,
    entry: Entry,
    ops: Arc<Ops>,
}

/// Makes the stop eventfd readable: every serving thread's poll of it completes.
fn signal_stop(stop: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from `one` to our eventfd.
    unsafe {
        libc::write(
            stop.as_raw_fd(),
            &one as *const u64 as *const libc::c_void,
            8,
        )
    };
}

fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: creates a descriptor we own.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is fresh and ours.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

fn cmd(qid: u16, commit_id: u64) -> [u8; uring::SQE_CMD_BYTES] {
    let mut c = [0u8; uring::SQE_CMD_BYTES];
    // struct fuse_uring_cmd_req: flags, commit_id, qid.
    c[8..16].copy_from_slice(&commit_id.to_ne_bytes());
    c[16..18].copy_from_slice(&qid.to_ne_bytes());
    c
}

/// `user_data` of the entry's commands.
const ENTRY_TAG: u64 = 0;

impl Server {
    fn new(
        qid: u16,
        dev: &OwnedFd,
        stop: &OwnedFd,
        payload: usize,
        ops: Arc<Ops>,
    ) -> io::Result<Server> {
        // The entry's command and the stop poll.
        let ring = Uring::new(2)?;
        let header = Mem::new(HEADER_BUF_BYTES)?;
        let payload = Mem::new(payload)?;
        let iov = Box::new([
            libc::iovec {
                iov_base: header.ptr as *mut libc::c_void,
                iov_len: header.len,
            },
            libc::iovec {
                iov_base: payload.ptr as *mut libc::c_void,
                iov_len: payload.len,
            },
        ]);
        Ok(Server {
            qid,
            dev: dev.try_clone()?,
            stop: stop.try_clone()?,
            ring,
            entry: Entry {
                header,
                payload,
                iov,
            },
            ops,
        })
    }

    fn push(&mut self, e: Sqe) -> io::Result<()> {
        if self.ring.push(&e) {
            Ok(())
        } else {
            // One slot for the entry and one for the stop poll: a full ring is a bug here.
            Err(io::Error::other("io_uring submission ring full"))
        }
    }

    /// Registers the entry and the stop poll, tells `ready` how that went, then serves until the
    /// connection ends or a stop is asked for.
    fn run(mut self, mut policy: Policy, ready: mpsc::Sender<io::Result<()>>) -> io::Result<()> {
        let registered = self.register();
        let failed = registered
            .as_ref()
            .err()
            .map(|e| io::Error::new(e.kind(), e.to_string()));
        let _ = ready.send(registered);
        if let Some(e) = failed {
            return Err(e);
        }
        self.serve_loop(&mut policy)
    }

    fn register(&mut self) -> io::Result<()> {
        let dev = self.dev.as_raw_fd();
        self.push(Sqe {
            opcode: uring::IORING_OP_URING_CMD,
            fd: dev,
            off: CMD_REGISTER,
            addr: self.entry.iov.as_ptr() as u64,
            len: 2,
            user_data: ENTRY_TAG,
            cmd: cmd(self.qid, 0),
            ..Sqe::default()
        })?;
        self.push(Sqe {
            opcode: uring::IORING_OP_POLL_ADD,
            fd: self.stop.as_raw_fd(),
            op_flags: libc::POLLIN as u32,
            user_data: STOP_TAG,
            ..Sqe::default()
        })?;
        self.ring.submit()
    }

    fn serve_loop(&mut self, policy: &mut Policy) -> io::Result<()> {
        let dev = self.dev.as_raw_fd();
        let mut done: Vec<Cqe> = Vec::with_capacity(2);
        loop {
            policy.tick();
            self.ring.submit_and_wait()?;
            done.clear();
            self.ring.reap(&mut done);
            for c in &done {
                if c.user_data == STOP_TAG {
                    return Ok(());
                }
                if c.user_data != ENTRY_TAG {
                    return Err(io::Error::other(format!(
                        "completion tagged {}",
                        c.user_data
                    )));
                }
                if c.res < 0 {
                    return match -c.res {
                        // The connection is going away (unmount, abort).
                        libc::ENOTCONN | libc::ECANCELED | libc::ENODEV | libc::ECONNABORTED => {
                            Ok(())
                        }
                        n => Err(io::Error::from_raw_os_error(n)),
                    };
                }
                let commit_id = self.serve();
                REQUESTS.fetch_add(1, Ordering::Relaxed);
                let e = Sqe {
                    opcode: uring::IORING_OP_URING_CMD,
                    fd: dev,
                    off: CMD_COMMIT_AND_FETCH,
                    user_data: ENTRY_TAG,
                    cmd: cmd(self.qid, commit_id),
                    ..Sqe::default()
                };
                self.push(e)?;
            }
        }
    }

    /// Answers the request in the entry; returns its commit id.
    fn serve(&mut self) -> u64 {
        let e = &self.entry;
        // SAFETY: the kernel has handed the entry over (its completion arrived) and takes it
        // back only with the commit that follows; no other view of its buffers exists meanwhile.
        let hdr = unsafe { e.header.slice_mut() };
        let mut ent = wire::Rd::new(&hdr[ENT_IN_OUT_OFFSET..]);
        let (commit_id, payload_sz) = match (ent.u64(), ent.u64(), ent.u32()) {
            (Ok(_flags), Ok(c), Ok(p)) => (c, p as usize),
            _ => (0, 0),
        };
        let h = InHeader::read(&hdr[..wire::IN_HEADER_BYTES]).unwrap_or_default();
        let arg = &hdr[OP_IN_OFFSET..OP_IN_OFFSET + OP_IN_BYTES];
        let result = if payload_sz > e.payload.len {
            Err(libc::EINVAL)
        } else if h.opcode == dispatch::FUSE_READ {
            // SAFETY: as above; a READ's request payload is empty.
            dispatch::read(&self.ops, &h, arg, unsafe { e.payload.slice_mut() })
        } else {
            // SAFETY: as above; the request's view ends before the reply's begins.
            let out = dispatch::handle(&self.ops, &h, arg, unsafe { e.payload.slice(payload_sz) });
            out.and_then(|o| dispatch::encode(&self.ops, o, unsafe { e.payload.slice_mut() }))
        };
        let (error, len) = match result {
            Ok(n) => (0i32, n),
            Err(n) => (-n, 0),
        };
        // struct fuse_out_header: len, error, unique; then the entry's payload size.
        let total = (wire::OUT_HEADER_BYTES + len) as u32;
        hdr[0..4].copy_from_slice(&total.to_ne_bytes());
        hdr[4..8].copy_from_slice(&error.to_ne_bytes());
        hdr[8..16].copy_from_slice(&h.unique.to_ne_bytes());
        let sz = ENT_IN_OUT_OFFSET + 16;
        hdr[sz..sz + 4].copy_from_slice(&(len as u32).to_ne_bytes());
        commit_id
    }
}

/// Pins the calling thread to `cpu` (a possible CPU that is offline refuses; the queue is
/// served unpinned then).
fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET stays within it for cpu < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu < libc::CPU_SETSIZE as usize {
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
}

/// Makes the kernel give up on io_uring for this connection, so requests keep flowing through
/// `/dev/fuse`: a REGISTER it refuses does that (and wakes callers waiting for the queues).
fn give_up(dev: &OwnedFd) {
    if let Ok(mut r) = Uring::new(2) {
        let e = Sqe {
            opcode: uring::IORING_OP_URING_CMD,
            fd: dev.as_raw_fd(),
            off: CMD_REGISTER,
            len: 0,
            user_data: 0,
            cmd: cmd(u16::MAX, 0),
            ..Sqe::default()
        };
        if r.push(&e) {
            let _ = r.submit_and_wait();
        }
    }
}

/// How the queues are served.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Serving {
    /// Serving threads for each CPU's queue.
    pub(crate) per_queue: usize,
    /// The largest write: each thread's payload buffer holds it.
    pub(crate) max_write: usize,
    /// The threads serve at SCHED_IDLE while the machine has CPUs to spare ([`policy`]).
    pub(crate) idle: bool,
}

impl Queues {
    /// Starts the serving threads (`how`) for each possible CPU's queue on the FUSE connection
    /// `dev` whose INIT reply asked for io_uring. On failure the connection is turned back to
    /// `/dev/fuse`.
    pub(crate) fn start(dev: &OwnedFd, ops: Arc<Ops>, how: Serving) -> io::Result<Queues> {
        let r = Self::start_inner(dev, ops, how);
        if r.is_err() {
            give_up(dev);
        }
        r
    }

    fn start_inner(dev: &OwnedFd, ops: Arc<Ops>, how: Serving) -> io::Result<Queues> {
        let Serving {
            per_queue,
            max_write,
            idle,
        } = how;
        let n = queue_count()?;
        let qids = u16::try_from(n).map_err(|_| io::Error::other(format!("{n} CPUs")))?;
        let payload = max_write.max(MIN_PAYLOAD_BYTES).next_multiple_of(4096);
        let stop = eventfd()?;
        // Every server is built before any registers: a half-registered ring would hold the
        // connection's requests forever.
        let mut servers = Vec::with_capacity(n * per_queue);
        for qid in 0..qids {
            for _ in 0..per_queue.max(1) {
                servers.push(Server::new(qid, dev, &stop, payload, ops.clone())?);
            }
        }
        let (tx, rx) = mpsc::channel::<(u16, io::Error)>();
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
        let mut threads = Vec::with_capacity(servers.len());
        let count = servers.len();
        for (i, srv) in servers.into_iter().enumerate() {
            let (tx, ready) = (tx.clone(), ready_tx.clone());
            let qid = srv.qid;
            let spawned = std::thread::Builder::new()
                .name(format!("tkfs-ring-{qid}.{}", i % per_queue.max(1)))
                .spawn(move || {
                    pin(qid as usize);
                    let policy = Policy::new(idle);
                    if let Err(e) = srv.run(policy, ready) {
                        let _ = tx.send((qid, e));
                    }
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    Self::abandon(threads, &stop);
                    return Err(e);
                }
            }
        }
        drop((tx, ready_tx));
        // Every entry registered, or none of this: until all are, the kernel holds requests.
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        for _ in 0..count {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let r = ready_rx
                .recv_timeout(left)
                .map_err(|_| {
                    io::Error::other(format!("entries not registered in {READY_TIMEOUT:?}"))
                })
                .and_then(|r| r);
            if let Err(e) = r {
                Self::abandon(threads, &stop);
                return Err(e);
            }
        }
        std::thread::spawn(move || {
            for (qid, e) in rx {
                eprintln!("ticketfs: io_uring queue {qid}: a serving thread stopped: {e}");
            }
        });
        THREADS.store(threads.len(), Ordering::Relaxed);
        QUEUES.store(n, Ordering::Relaxed);
        Ok(Queues { threads, stop })
    }

    /// Stops the threads started so far without waiting for them (the connection is about to
    /// be turned back to /dev/fuse, and a thread whose entry is registered waits for the end of
    /// the connection or the stop, whichever comes first).
    fn abandon(threads: Vec<JoinHandle<()>>, stop: &OwnedFd) {
        signal_stop(stop);
        drop(threads);
    }

    /// Tells every serving thread to stop and waits for them (after the session has ended).
    pub(crate) fn stop(self) {
        signal_stop(&self.stop);
        for t in self.threads {
            let _ = t.join();
        }
        THREADS.store(0, Ordering::Relaxed);
    }
}
