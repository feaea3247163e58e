//! FUSE requests through `/dev/fuse`: the INIT exchange, then threads that each read a request,
//! do it ([`crate::proto::dispatch`], as the io_uring queues do) and write the reply.
//!
//! The daemon speaks the protocol itself rather than through a library so that every request,
//! DESTROY included, reaches [`Ops`]: the kernel waits for DESTROY's answer before umount(2)
//! returns on a `fuseblk` mount, which is what makes the unmount synchronous (the daemon writes
//! everything home and releases the image before answering). fuser answered DESTROY itself.
//!
//! Each thread reads from its own clone of the connection's descriptor (FUSE_DEV_IOC_CLONE), so
//! a reply never waits behind another thread's read, and keeps one buffer of the largest
//! request: the reply is written over the request once it is decoded, as in the io_uring
//! entries.

use crate::ops::Ops;
use crate::proto::dispatch::{
    self, FUSE_BATCH_FORGET, FUSE_FORGET, FUSE_INIT, FUSE_INTERRUPT, FUSE_READ,
};
use crate::proto::wire::{self, InHeader, InitIn, InitOut, Wr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The kernel refuses a read of `/dev/fuse` into a smaller buffer (FUSE_MIN_READ_BUFFER).
const MIN_READ_BUFFER: usize = 8192;
/// Room in a request buffer beyond the largest write's data: the in-header, the fixed argument.
const REQUEST_HEADROOM: usize = 4096;
/// FUSE_DEV_IOC_CLONE: `_IOR(229, 0, uint32_t)`.
const FUSE_DEV_IOC_CLONE: libc::c_ulong = 0x8004_e500;
/// Largest fixed argument copied out of a request before its buffer takes the reply.
const ARG_COPY_BYTES: usize = 128;

/// Requests the kernel may queue for the daemon in the background (reads ahead, releases), and
/// the count at which it starts to throttle them: fuser's values, which the daemon used before.
const MAX_BACKGROUND: u16 = 16;
const CONGESTION_THRESHOLD: u16 = 12;

/// INIT capability bits (include/uapi/linux/fuse.h).
mod cap {
    pub(crate) const ASYNC_READ: u64 = 1 << 0;
    pub(crate) const EXPORT_SUPPORT: u64 = 1 << 4;
    pub(crate) const BIG_WRITES: u64 = 1 << 5;
    pub(crate) const DONT_MASK: u64 = 1 << 6;
    pub(crate) const DO_READDIRPLUS: u64 = 1 << 13;
    pub(crate) const READDIRPLUS_AUTO: u64 = 1 << 14;
    pub(crate) const WRITEBACK_CACHE: u64 = 1 << 16;
    pub(crate) const PARALLEL_DIROPS: u64 = 1 << 18;
    pub(crate) const POSIX_ACL: u64 = 1 << 20;
    pub(crate) const MAX_PAGES: u64 = 1 << 22;
    pub(crate) const CACHE_SYMLINKS: u64 = 1 << 23;
    pub(crate) const HANDLE_KILLPRIV_V2: u64 = 1 << 28;
    pub(crate) const SETXATTR_EXT: u64 = 1 << 29;
    pub(crate) const ALLOW_IDMAP: u64 = 1 << 40;
    pub(crate) const OVER_IO_URING: u64 = 1 << 41;
}

/// What the daemon asks for at INIT.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Want {
    pub(crate) max_write: u32,
    /// `-o writeback_cache`: the kernel keeps written pages and sends them in large writes.
    pub(crate) writeback: bool,
    /// FUSE over io_uring ([`crate::ring`] then registers the queues).
    pub(crate) uring: bool,
    /// FUSE_POSIX_ACL: only on a mount with default_permissions (see `wanted_flags`).
    pub(crate) posix_acl: bool,
    /// `-o idmap`: FUSE_ALLOW_IDMAP, so the mount may be idmapped.
    pub(crate) idmap: bool,
}

/// What the kernel granted at INIT.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Granted {
    pub(crate) uring: bool,
    /// FUSE_POSIX_ACL, with which the kernel checks permissions itself before every request
    /// (it turns default_permissions on) and answers access(2) without asking.
    pub(crate) posix_acl: bool,
    /// FUSE_SETXATTR_EXT (protocol 7.34, Linux 5.16): a SETXATTR's fixed part is the 16-byte
    /// fuse_setxattr_in, with the kernel's FUSE_SETXATTR_ACL_KILL_SGID; 8 bytes without it.
    pub(crate) setxattr_ext: bool,
}

/// The capabilities asked for: each one's reason beside it.
fn wanted_flags(w: &Want) -> u64 {
    let mut f = cap::ASYNC_READ
        | cap::BIG_WRITES
        // Writes up to max_write rather than 128 KiB.
        | cap::MAX_PAGES
        | cap::PARALLEL_DIROPS
        | cap::DO_READDIRPLUS
        | cap::READDIRPLUS_AUTO
        | cap::CACHE_SYMLINKS
        // Lookups of "." and ".." answered for any inode: file handles (name_to_handle_at,
        // open_by_handle_at, NFS export) outlive the kernel's cache.
        | cap::EXPORT_SUPPORT
        // The daemon drops set-id bits on write, truncate and chown itself, so the kernel
        // marks files without them or capabilities (SB_NOSEC) and stops asking for
        // security.capability before every write: one round trip per write, not two.
        | cap::HANDLE_KILLPRIV_V2
        // A setxattr of an ACL carries the kernel's verdict on the file's set-group-ID
        // (FUSE_SETXATTR_ACL_KILL_SGID), made through the mount's idmapping: for a caller it
        // does not name (`-o idmap`) the daemon has no other (`Fs::acl_to_set`).
        | cap::SETXATTR_EXT
        // The umask is left to the daemon (`Fs::creation_mode`), since a directory's default
        // ACL replaces it.
        | cap::DONT_MASK
        | wire::INIT_EXT;
    if w.writeback {
        // The kernel owns the file's size and times while it holds dirty pages: sound, as this
        // daemon is the only writer of its image.
        f |= cap::WRITEBACK_CACHE;
    }
    if w.uring {
        f |= cap::OVER_IO_URING;
    }
    // POSIX ACLs are the daemon's either way: it stores them, inherits them and checks them
    // (`Fs::may`). With FUSE_POSIX_ACL the kernel caches and checks them too, but the flag
    // turns default_permissions on, and then every change to a directory costs a GETATTR
    // round trip before the next permission check in it (the kernel invalidates the
    // directory's mode with its times): so only where the mount asked for default_permissions
    // anyway. Without it the kernel passes system.posix_acl_* through as extended attributes.
    if w.posix_acl {
        f |= cap::POSIX_ACL;
    }
    if w.idmap {
        // Idmapped mounts (Linux 6.12): the kernel, which has default_permissions, checks
        // every permission with the mount's idmapping and then sends FUSE_INVALID_UIDGID as
        // the caller of every request but those that create, which carry the caller's ids
        // mapped into the filesystem's (`Ctx::unknown`, `Fs::vouched`).
        f |= cap::ALLOW_IDMAP;
    }
    f
}

fn read_dev(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: reads at most buf.len() bytes into buf from a descriptor we own.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Writes the reply in `buf[..OUT_HEADER_BYTES + len]`, its header filled in here.
fn reply(fd: &OwnedFd, buf: &mut [u8], unique: u64, result: Result<usize, i32>) -> io::Result<()> {
    let (error, len) = match result {
        Ok(n) => (0i32, n),
        Err(e) => (-e, 0),
    };
    let total = wire::OUT_HEADER_BYTES + len;
    buf[0..4].copy_from_slice(&(total as u32).to_ne_bytes());
    buf[4..8].copy_from_slice(&error.to_ne_bytes());
    buf[8..16].copy_from_slice(&unique.to_ne_bytes());
    // SAFETY: writes `total` bytes of buf, which holds at least that many.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), total) };
    if n < 0 {
        let e = io::Error::last_os_error();
        // ENOENT: the request was interrupted or the connection aborted meanwhile.
        if e.raw_os_error() != Some(libc::ENOENT) {
            return Err(e);
        }
    }
    Ok(())
}

/// FUSE_NOTIFY_INVAL_INODE: an unsolicited message (unique 0) whose error field names it.
const FUSE_NOTIFY_INVAL_INODE: i32 = 2;
/// struct fuse_notify_inval_inode_out: the node, the offset and length of page cache to drop.
const NOTIFY_INVAL_INODE_BYTES: usize = 24;

/// Tells the kernel that `node`'s attributes changed where it did not look: it drops its cached
/// attributes, so the next stat asks. Offset -1: its page cache of the node stays (the kernel's
/// `fuse_reverse_inval_inode` drops pages only from an offset of 0 or more). A node the kernel
/// does not hold is ENOENT, nothing to drop.
pub(crate) fn notify_attr_changed(dev: &OwnedFd, node: u64) -> io::Result<()> {
    const TOTAL: usize = wire::OUT_HEADER_BYTES + NOTIFY_INVAL_INODE_BYTES;
    let mut msg = [0u8; TOTAL];
    msg[0..4].copy_from_slice(&(TOTAL as u32).to_ne_bytes());
    msg[4..8].copy_from_slice(&FUSE_NOTIFY_INVAL_INODE.to_ne_bytes());
    // unique (8..16) stays 0: a notification, not a reply.
    msg[16..24].copy_from_slice(&node.to_ne_bytes());
    msg[24..32].copy_from_slice(&(-1i64).to_ne_bytes());
    // len (32..40) 0.
    // SAFETY: writes the TOTAL bytes of `msg` to a descriptor we own.
    let n = unsafe { libc::write(dev.as_raw_fd(), msg.as_ptr().cast(), TOTAL) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOENT) {
            return Err(e);
        }
    }
    Ok(())
}

/// Reads the kernel's INIT (asking again in our version if it speaks another major version) and
/// answers it with what `want` asks of what the kernel offers.
pub(crate) fn handshake(dev: &OwnedFd, want: &Want) -> io::Result<Granted> {
    let mut buf = vec![0u8; MIN_READ_BUFFER];
    loop {
        let n = match read_dev(dev, &mut buf) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        };
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("INIT: {what}"));
        let h = InHeader::read(&buf[..n]).map_err(|_| bad("short header"))?;
        if h.opcode != FUSE_INIT {
            let _ = reply(dev, &mut buf, h.unique, Err(libc::EIO));
            return Err(bad(&format!("opcode {} before INIT", h.opcode)));
        }
        let init = InitIn::read(&buf[wire::IN_HEADER_BYTES..n]).map_err(|_| bad("short"))?;
        let mut w = Wr::new(&mut buf[wire::OUT_HEADER_BYTES..]);
        if init.major > wire::PROTO_MAJOR {
            // It asks again in ours.
            let r = w.init_version_only().map(|()| w.len());
            reply(dev, &mut buf, h.unique, r)?;
            continue;
        }
        if init.major < wire::PROTO_MAJOR || init.minor < wire::PROTO_MINOR_MIN {
            let _ = reply(dev, &mut buf, h.unique, Err(libc::EPROTO));
            return Err(bad(&format!(
                "kernel protocol {}.{} is older than 7.{}",
                init.major,
                init.minor,
                wire::PROTO_MINOR_MIN
            )));
        }
        let flags = wanted_flags(want) & init.flags;
        // SAFETY: sysconf only reads a system constant.
        let page = (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).clamp(4096, 1 << 16) as u32;
        let out = InitOut {
            max_readahead: init.max_readahead,
            flags: flags | wire::INIT_EXT,
            max_background: MAX_BACKGROUND,
            congestion_threshold: CONGESTION_THRESHOLD,
            max_write: want.max_write,
            time_gran: 1,
            max_pages: (want.max_write.max(init.max_readahead).div_ceil(page)).max(1) as u16,
        };
        let r = w.init_out(&out).map(|()| w.len());
        reply(dev, &mut buf, h.unique, r)?;
        return Ok(Granted {
            uring: flags & cap::OVER_IO_URING != 0,
            posix_acl: flags & cap::POSIX_ACL != 0,
            setxattr_ext: flags & cap::SETXATTR_EXT != 0,
        });
    }
}

/// While the io_uring queues serve, a `/dev/fuse` thread pauses this long after each FORGET (or
/// batch of them), so the kernel gathers the inodes it evicts meanwhile into one BATCH_FORGET
/// instead of waking a thread for each: unlinking 20,000 files spent 15% of the daemon's
/// profile waking `/dev/fuse` readers for single FORGETs and 6% on their queue's lock. Nothing
/// waits for a FORGET (ticketfs keeps no per-lookup state), and unmounting ends the pause.
const FORGET_PAUSE: Duration = Duration::from_millis(10);

/// The threads serving `/dev/fuse`.
pub(crate) struct DevFuse {
    threads: Vec<JoinHandle<io::Result<()>>>,
}

/// A descriptor of the same connection as `dev`, read independently.
fn clone_dev(dev: &OwnedFd) -> io::Result<OwnedFd> {
    let path = c"/dev/fuse";
    // SAFETY: a NUL-terminated path; the descriptor is checked and then owned.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is fresh and ours.
    let clone = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut session = dev.as_raw_fd() as u32;
    // SAFETY: FUSE_DEV_IOC_CLONE reads the u32 session descriptor number.
    if unsafe { libc::ioctl(clone.as_raw_fd(), FUSE_DEV_IOC_CLONE, &mut session) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(clone)
}

impl DevFuse {
    /// Starts `threads` threads serving the connection `dev` (INIT done), each with a buffer of
    /// the largest request (`max_write` of data). `queues_serving` tells them the io_uring
    /// queues carry every request but FORGET and INTERRUPT (they then pause after FORGETs).
    pub(crate) fn start(
        dev: &OwnedFd,
        ops: Arc<Ops>,
        threads: usize,
        max_write: usize,
        queues_serving: Arc<AtomicBool>,
    ) -> io::Result<DevFuse> {
        let len = (max_write + REQUEST_HEADROOM).max(MIN_READ_BUFFER);
        let mut out = Vec::with_capacity(threads.max(1));
        for i in 0..threads.max(1) {
            let fd = if i == 0 {
                dev.try_clone()
            } else {
                clone_dev(dev)
            };
            let (ops, serving) = (ops.clone(), queues_serving.clone());
            let t = fd.and_then(|fd| {
                std::thread::Builder::new()
                    .name(format!("tkfs-fuse-{i}"))
                    .spawn(move || serve(fd, &ops, len, &serving))
            });
            match t {
                Ok(t) => out.push(t),
                // The first thread is the session: without it nothing is served.
                Err(e) if out.is_empty() => return Err(e),
                // Fewer threads only serve fewer requests at once; those started go on.
                Err(e) => {
                    eprintln!("ticketfs: /dev/fuse thread {i} not started: {e}");
                    break;
                }
            }
        }
        Ok(DevFuse { threads: out })
    }

    /// Waits until the connection ends (unmounted or aborted); the first thread's error, if any.
    pub(crate) fn join(self) -> io::Result<()> {
        let mut first = Ok(());
        for t in self.threads {
            let r = t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a /dev/fuse thread panicked")));
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

/// One thread: read, do, reply, until the connection ends.
fn serve(fd: OwnedFd, ops: &Ops, len: usize, queues_serving: &AtomicBool) -> io::Result<()> {
    let mut buf = vec![0u8; len];
    loop {
        let n = match read_dev(&fd, &mut buf) {
            Ok(n) => n,
            Err(e) => match e.raw_os_error() {
                // Interrupted, or a request the kernel withdrew before we read it.
                Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::ENOENT) => continue,
                // The connection is gone: unmounted or aborted.
                Some(libc::ENODEV) => return Ok(()),
                _ => return Err(e),
            },
        };
        let Ok(h) = InHeader::read(&buf[..n]) else {
            // Too short to name the request: nothing to answer.
            continue;
        };
        match h.opcode {
            FUSE_FORGET | FUSE_BATCH_FORGET => {
                // No answer is expected; ticketfs keeps no per-lookup state.
                if queues_serving.load(Ordering::Relaxed) {
                    std::thread::sleep(FORGET_PAUSE);
                }
                continue;
            }
            // ENOSYS tells the kernel not to send interrupts again.
            FUSE_INTERRUPT => {
                if let Err(e) = reply(&fd, &mut buf, h.unique, Err(libc::ENOSYS)) {
                    if e.raw_os_error() == Some(libc::ENODEV) {
                        return Ok(());
                    }
                }
                continue;
            }
            _ => {}
        }
        let result = if h.len as usize != n {
            Err(libc::EINVAL)
        } else {
            let body = &buf[wire::IN_HEADER_BYTES..n];
            let fixed = dispatch::fixed_arg_bytes_of(ops, h.opcode).min(body.len());
            let mut arg = [0u8; ARG_COPY_BYTES];
            let fixed = fixed.min(ARG_COPY_BYTES);
            arg[..fixed].copy_from_slice(&body[..fixed]);
            let arg = &arg[..fixed];
            if h.opcode == FUSE_READ {
                dispatch::read(ops, &h, arg, &mut buf[wire::OUT_HEADER_BYTES..])
            } else {
                let out = dispatch::handle(ops, &h, arg, &body[fixed..]);
                out.and_then(|o| dispatch::encode(ops, o, &mut buf[wire::OUT_HEADER_BYTES..]))
            }
        };
        if let Err(e) = reply(&fd, &mut buf, h.unique, result) {
            if e.raw_os_error() == Some(libc::ENODEV) {
                return Ok(());
            }
            // A reply the kernel refused (a daemon bug): that request fails, the thread goes on.
            eprintln!(
                "ticketfs: reply to request {} (opcode {}): {e}",
                h.unique, h.opcode
            );
        }
    }
}
