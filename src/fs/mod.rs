//! POSIX operations on the engine: inodes, directories, files, permissions. No FUSE types here;
//! the transports (`devfuse.rs`, `ring/`, through `proto/` and `ops.rs`) only translate.
//!
//! Locking: a namespace operation is one transaction that joins the inode chunks of every inode
//! involved in ascending block order before anything else (then AG headers, then tree nodes), and
//! re-checks what it looked up before joining. File data operations (write, truncate, fallocate)
//! span several transactions and are serialised per inode by a striped lock.
//!
//! Freeing: an inode whose last link goes is freed after the unlinking transaction commits (its
//! data in rolling truncate steps, then the inode), or at its last close if it is open.
//!
//! Rooms: `perm` (who may do what), `names` (lookup, create, link, remove, rename), `attr`
//! (stat, setattr, access times), `flags` (inode flags and project IDs, and what immutable and
//! append-only forbid), `symlink`, `xattr`, `orphan` (freeing inodes with no links),
//! `repair` (what fsck's repair asks of the POSIX layer); this file holds the `Fs` value, file
//! data calls, directories' reads and the filesystem-wide calls (statfs, sync, shutdown).

mod acl;
mod attr;
mod flags;
mod names;
mod orphan;
mod perm;
mod repair;
mod symlink;
mod xattr;

use crate::alloc::Allocator;
use crate::dir::{self, DirEntry, NAME_MAX};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::file::readahead::ReadAheadStats;
use crate::file::{Allocate, DataSeqs, FileIo, ReadAhead, FILE_SIZE_MAX};
use crate::format::inode::{ino_split, DataFormat, Inode, Time, FORK_BYTES};
use crate::format::{BlockType, BLOCK_HEADER_BYTES};
use crate::inode;
use crate::trans::{Trans, TransKind};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::fmt;

pub(crate) use attr::{now, AtimePolicy};
pub use flags::FileFlags;
pub(crate) use flags::{
    from_fs_flags, from_xflags, statx_attributes, to_fs_flags, to_xflags, STATX_ATTRIBUTES_MASK,
};
use flags::{refuse_fixed, refuse_immutable, refuse_removal};
pub use names::RenameHow;
use names::{check_name, lock_chunks};
pub use perm::Ctx;
use perm::{kill_setid, sticky_ok};
use std::time::{SystemTime, UNIX_EPOCH};
use xattr::XattrBegun;

// The mode bits and entry types are format facts (`format::inode`); the POSIX layer's users
// name them here too.
pub(crate) use crate::format::inode::{
    dtype, S_IFBLK, S_IFCHR, S_IFIFO, S_IFSOCK, S_ISGID, S_ISUID, S_ISVTX,
};
pub use crate::format::inode::{S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};
/// Most hard links to one inode (as ext4's 65000).
pub(crate) const LINK_MAX: u32 = 65000;
/// Longest symlink target: POSIX PATH_MAX less its terminating NUL.
pub(crate) const SYMLINK_MAX: usize = 4095;
/// Stripes of the per-inode data lock: bounds memory, keeps collisions rare.
const DATA_LOCK_STRIPES: usize = 256;
/// Memory one open file handle is charged (its entry in the open table, with the map's overhead).
const HANDLE_BYTES: u64 = 64;
/// What went wrong, in POSIX terms; the adapter maps each to one errno.
#[derive(Debug)]
pub enum FsError {
    NotFound,
    Exists,
    NotDir,
    IsDir,
    NotEmpty,
    /// Permission bits refuse it (EACCES).
    Access,
    /// Only the owner or root may (EPERM).
    Perm,
    NameTooLong,
    Invalid(String),
    TooManyLinks,
    ReadOnly,
    NotSupported,
    /// No data at or after the offset (SEEK_DATA past the last extent).
    NoData,
    /// No such extended attribute (ENODATA).
    NoAttr,
    /// An attribute value longer than the largest (E2BIG, as the kernel answers).
    ValueTooBig,
    /// A file handle names an inode that no longer exists, or never did (ESTALE).
    Stale,
    /// A link or rename into a directory that passes on another project ID (EXDEV: the caller
    /// copies instead).
    CrossProject,
    Engine(EngineError),
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsError::Engine(e) => write!(f, "{e}"),
            FsError::Invalid(w) => write!(f, "invalid: {w}"),
            other => write!(f, "{other:?}"),
        }
    }
}

impl From<EngineError> for FsError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Stale(_) => FsError::NotFound,
            e => FsError::Engine(e),
        }
    }
}

type R<T> = Result<T, FsError>;

/// Attributes as stat(2) shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// In 512-byte units, as st_blocks.
    pub blocks: u64,
    pub(crate) atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    pub(crate) crtime: Time,
    pub(crate) rdev: u64,
    pub(crate) blksize: u32,
    pub(crate) generation: u32,
    /// The inode's flags (`format::inode::FLAG_*`), for statx's attributes.
    pub(crate) flags: u32,
}

/// A time to set: now, or a given time.
#[derive(Debug, Clone, Copy)]
pub enum SetTime {
    Now,
    At(Time),
}

/// What setattr changes.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
    /// The change comes through an open file (ftruncate): access was checked at open.
    pub via_open_file: bool,
    /// The kernel asks that a truncate drop the set-id bits (FATTR_KILL_SUIDGID: the caller
    /// lacks CAP_FSETID); what decides for a caller it did not name.
    pub kill_suidgid: bool,
}

/// Filesystem statistics.
#[derive(Debug, Clone, Copy)]
pub struct StatFs {
    pub(crate) blocks: u64,
    /// Free blocks allocations may use (each AG's reserve left out).
    pub bfree: u64,
    /// Of those, what ordinary operations may still take (promised blocks and the pool left out).
    pub bavail: u64,
    pub(crate) files: u64,
    pub ffree: u64,
    pub(crate) bsize: u32,
    pub(crate) namelen: u32,
}

fn is_dir(i: &Inode) -> bool {
    i.mode & S_IFMT == S_IFDIR
}

/// What a shutdown makes durable first (XFS_FSOP_GOING_FLAGS_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShutdownFlush {
    /// Everything: the log and file data (flags 0, DEFAULT).
    All,
    /// The log (flags 1, LOGFLUSH).
    Log,
    /// Nothing (flags 2, NOLOGFLUSH): what the log had not written is lost.
    Nothing,
}

/// Whether the superblock is read-only now, as the kernel says (None: unknown).
pub(crate) type RoProbe = Box<dyn Fn() -> Option<bool> + Send + Sync>;

pub struct Fs {
    eng: Engine,
    alloc: Allocator,
    root: u64,
    /// The superblock is read-only: follows the kernel's (mount and remount, `set_read_only`).
    read_only: std::sync::atomic::AtomicBool,
    atime: AtimePolicy,
    /// Asks the kernel whether the superblock is read-only now (the daemon sets it: the mount
    /// table). None: no answer.
    ro_probe: Option<RoProbe>,
    /// The kernel checks permissions before it asks (default_permissions): the times a
    /// setattr carries were checked there (and a kernel writeback cache would stamp truncates
    /// and flushes with times of its own, which are no user's setting).
    kernel_checks: std::sync::atomic::AtomicBool,
    /// The kernel stamps the times of cached writes itself (its writeback cache) and sends them
    /// later as given times.
    kernel_times: bool,
    stripes: Vec<Mutex<()>>,
    open: Mutex<HashMap<u64, u32>>,
    orphans: Mutex<HashSet<u64>>,
    generation: Mutex<u32>,
    /// Per inode, the commit fdatasync must force (`file::DataSeqs`).
    data_seqs: DataSeqs,
    /// Inodes the mount freed from the unlinked trees.
    orphans_freed_at_mount: std::sync::atomic::AtomicU64,
    /// Read-ahead of sequential reads (`file::readahead`), once `enable_readahead` is called.
    ra: Option<ReadAhead>,
}

impl Fs {
    /// Wraps a mounted engine; reads every AG header once so allocation starts informed.
    pub fn new(eng: Engine, read_only: bool) -> R<Fs> {
        let root = eng.superblock().root_ino;
        if root == 0 {
            return Err(FsError::Invalid(
                "the superblock names no root directory (not formatted by mkfs.ticketfs?)".into(),
            ));
        }
        let alloc = Allocator::open(&eng)?;
        {
            let mut tx = eng.begin(TransKind::Read)?;
            let (_, r) = inode::read(&mut tx, root)?;
            if !is_dir(&r) {
                return Err(FsError::Invalid(format!(
                    "root inode {root} is not a directory"
                )));
            }
            tx.cancel()?;
        }
        let seed = now().nsec ^ std::process::id();
        let fs = Fs {
            eng,
            alloc,
            root,
            read_only: std::sync::atomic::AtomicBool::new(read_only),
            atime: AtimePolicy::Relatime,
            ro_probe: None,
            kernel_checks: std::sync::atomic::AtomicBool::new(false),
            kernel_times: false,
            stripes: (0..DATA_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            open: Mutex::new(HashMap::new()),
            orphans: Mutex::new(HashSet::new()),
            generation: Mutex::new(seed),
            data_seqs: DataSeqs::default(),
            orphans_freed_at_mount: std::sync::atomic::AtomicU64::new(0),
            ra: None,
        };
        if !read_only {
            fs.eng.upgrade_format()?;
        }
        fs.free_orphans()?;
        Ok(fs)
    }

    /// Promises the blocks an operation of `kind` may allocate (its table entry's buffer count
    /// bounds the new blocks), before it changes anything: a full filesystem fails the operation
    /// at its start with ENOSPC. `privileged`: the operation frees space and may use the pool.
    fn promise(&self, kind: TransKind, privileged: bool) -> R<crate::alloc::BlockResv<'_>> {
        let n = self.eng.table().get(kind).buffers as u64;
        Ok(self.alloc.reserve(n, n, privileged)?)
    }

    pub fn root(&self) -> u64 {
        self.root
    }
    pub fn engine(&self) -> &Engine {
        &self.eng
    }

    /// Flushes everything and unmounts the engine (the superblock is marked clean).
    pub fn unmount(self) -> R<()> {
        self.unmount_now()
    }

    /// [`Fs::unmount`] through a shared reference (the daemon's answer to DESTROY, while its
    /// request threads still hold the filesystem); every later operation fails.
    pub(crate) fn unmount_now(&self) -> R<()> {
        let orphans: Vec<u64> = self.orphans.lock().drain().collect();
        // The engine is unmounted (its threads stopped) whatever happens to the orphans: one
        // left is freed by the next mount from the unlinked trees. The first error is reported.
        let mut first = Ok(());
        for ino in orphans {
            if let Err(e) = self.destroy(ino) {
                first = first.and(Err(e));
            }
        }
        let r = self.eng.unmount_now();
        first.and(r.map_err(FsError::from))
    }

    /// Drops everything unwritten, as a crash would (tests).
    pub fn crash(self) {
        self.eng.crash();
    }

    fn io(&self) -> FileIo<'_> {
        FileIo {
            eng: &self.eng,
            alloc: &self.alloc,
            seqs: Some(&self.data_seqs),
            ra: self.ra.as_ref(),
        }
    }

    /// Reads ahead of sequential reads in pieces of up to `piece_max_bytes` (the largest
    /// request), once threads run `serve_readahead`.
    pub(crate) fn enable_readahead(&mut self, piece_max_bytes: usize) {
        self.ra = Some(ReadAhead::new(
            self.eng.geometry().block_size,
            piece_max_bytes,
        ));
    }

    /// A read-ahead worker's life: reads the pieces queued until `stop_readahead`.
    pub(crate) fn serve_readahead(&self) {
        if let Some(ra) = &self.ra {
            self.io().read_ahead(ra);
        }
    }

    /// Ends every `serve_readahead`.
    pub(crate) fn stop_readahead(&self) {
        if let Some(ra) = &self.ra {
            ra.stop();
        }
    }

    /// What read-ahead did (zeros without it).
    pub fn readahead_stats(&self) -> ReadAheadStats {
        self.ra.as_ref().map(|r| r.stats()).unwrap_or_default()
    }

    fn data_lock(&self, ino: u64) -> parking_lot::MutexGuard<'_, ()> {
        self.stripes[(ino.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize % DATA_LOCK_STRIPES]
            .lock()
    }

    /// Is the filesystem read-only (nothing is written: no change, no access time)?
    pub(crate) fn is_read_only(&self) -> bool {
        self.read_only.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Follows a remount. Going read-only, everything so far is made durable first (the log
    /// forced, the device flushed), as a kernel filesystem quiesces at a remount to read-only.
    pub(crate) fn set_read_only(&self, ro: bool) -> R<()> {
        if !ro {
            // Before anything of this version can be written.
            self.eng.upgrade_format()?;
        }
        let was = self.read_only.swap(ro, std::sync::atomic::Ordering::AcqRel);
        if ro && !was {
            self.fsync()?;
        }
        Ok(())
    }

    fn writable(&self) -> R<()> {
        if !self.is_read_only() {
            return Ok(());
        }
        if self.ro_probe.as_ref().and_then(|p| p()) == Some(false) {
            self.set_read_only(false)?;
            return Ok(());
        }
        Err(FsError::ReadOnly)
    }

    fn read_inode(&self, ino: u64) -> R<Inode> {
        let mut tx = self.eng.begin(TransKind::Read)?;
        let (_, i) = inode::read(&mut tx, ino)?;
        tx.cancel()?;
        Ok(i)
    }

    /// Sets how to ask whether the superblock is read-only now: a change that reaches a
    /// read-only filesystem asks, since the kernel lets changes through only to a writable
    /// superblock (a remount to read-write the daemon has not heard of yet).
    pub(crate) fn set_ro_probe(&mut self, probe: RoProbe) {
        self.ro_probe = Some(probe);
    }

    /// The kernel checks permissions before every request (the mount's default_permissions).
    pub(crate) fn set_kernel_checks_permissions(&self, on: bool) {
        self.kernel_checks
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn kernel_checks(&self) -> bool {
        self.kernel_checks
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The kernel stamps cached writes' times itself (the mount's writeback_cache).
    pub(crate) fn set_kernel_stamps_times(&mut self, on: bool) {
        self.kernel_times = on;
    }

    pub fn read(&self, ino: u64, off: u64, len: usize) -> R<Vec<u8>> {
        self.read_with(ino, off, len, |b| b.to_vec())
    }

    /// `read`, handing the bytes to `f` where they were assembled (`FileIo::read_with`): a
    /// request thread replies from there.
    pub(crate) fn read_with<T>(
        &self,
        ino: u64,
        off: u64,
        len: usize,
        f: impl FnOnce(&[u8]) -> T,
    ) -> R<T> {
        self.io()
            .read_with(ino, off, len, |i| self.accessed_as(ino, Some(i)), f)
    }

    /// Writes; a write by anyone but root clears set-user-ID and set-group-ID.
    pub fn write(&self, ctx: &Ctx, ino: u64, off: u64, data: &[u8]) -> R<usize> {
        self.write_killing(ctx, ino, off, data, ctx.uid != 0)
    }

    /// Writes; `kill_setid` (the kernel's FUSE_WRITE_KILL_SUIDGID: the writer lacks
    /// CAP_FSETID) clears set-user-ID, and set-group-ID when group-executable. (Capabilities
    /// the kernel removes itself before the write, with a REMOVEXATTR.) The inode's flags may
    /// refuse it (`Fs::admit_write`); with the sync flag it is durable when it returns.
    pub(crate) fn write_killing(
        &self,
        _ctx: &Ctx,
        ino: u64,
        off: u64,
        data: &[u8],
        kill_setid: bool,
    ) -> R<usize> {
        Ok(self.write_flagged(ino, off, data, kill_setid)?.0)
    }

    /// The kernel's write-back of cached pages (FUSE_WRITE_CACHE: mmap, writeback_cache): all
    /// of `data` or an error, since it takes no count (a short count would leave pages it
    /// believes written). The prefix written before the error stays, as a short write's does.
    pub(crate) fn write_back(&self, ino: u64, off: u64, data: &[u8], kill_setid: bool) -> R<usize> {
        match self.write_flagged(ino, off, data, kill_setid)? {
            (_, Some(e)) => Err(e.into()),
            (n, None) => Ok(n),
        }
    }

    /// A write as the inode's flags allow it (checked with the inode the write reads first,
    /// under the data lock that flag changes take too), made durable when it has the sync flag.
    fn write_flagged(
        &self,
        ino: u64,
        off: u64,
        data: &[u8],
        kill_setid: bool,
    ) -> R<(usize, Option<EngineError>)> {
        self.writable()?;
        let sync = std::cell::Cell::new(false);
        let done = {
            let _g = self.data_lock(ino);
            self.io().write(ino, off, data, now(), kill_setid, |i| {
                sync.set(flags::is_sync(i));
                self.admit_write(ino, i, off, data)
            })?
        };
        self.durable_if(sync.get())?;
        Ok(done)
    }

    /// copy_file_range: copies up to `len` bytes of `from` at `off_in` to `to` at `off_out`, in
    /// pieces of at most `piece` bytes (each a read and a write of its own, so the memory it
    /// needs is one request buffer's). Stops at the end of `from`; a destination past the
    /// largest file size is EFBIG, as the kernel's own filesystems answer. An error after some
    /// bytes were copied ends the copy short, as a short write does. The kernel has checked
    /// the descriptors' modes and that the ranges do not overlap within one file.
    pub(crate) fn copy_range(
        &self,
        ctx: &Ctx,
        (from, off_in): (u64, u64),
        (to, off_out): (u64, u64),
        len: u64,
        piece: usize,
    ) -> R<u64> {
        debug_assert!(piece > 0, "copy_range with pieces of zero bytes");
        if off_out >= FILE_SIZE_MAX {
            return Err(FsError::Engine(EngineError::TooBig(format!(
                "copy to offset {off_out}, past the largest file size {FILE_SIZE_MAX}"
            ))));
        }
        let len = len.min(FILE_SIZE_MAX - off_out);
        let mut done = 0u64;
        while done < len {
            let want = (len - done).min(piece as u64) as usize;
            let step = self
                .read(from, off_in.saturating_add(done), want)
                .and_then(|data| {
                    if data.is_empty() {
                        return Ok(0);
                    }
                    self.write(ctx, to, off_out + done, &data)
                });
            match step {
                Ok(0) => break,
                Ok(n) => done += n as u64,
                Err(e) if done == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(done)
    }

    /// Inode `ino` changed in the commits made so far in something other than its times (a
    /// name, its link count, its mode or owner, an xattr): fdatasync of it must force them, as
    /// XFS forces an inode's log items for any change but a timestamp update.
    fn note_change(&self, ino: u64) {
        self.data_seqs.note(ino, self.eng.log().current_seq());
    }

    /// Shuts the filesystem down (the shutdown ioctl, as XFS_IOC_GOINGDOWN): after `flush`
    /// made what it names durable, nothing more is written and every later operation fails
    /// with EIO. The next mount replays the log.
    pub(crate) fn shut_down(&self, flush: ShutdownFlush) -> R<()> {
        let r = match flush {
            ShutdownFlush::All => self.fsync(),
            ShutdownFlush::Log => self.eng.force_all().map_err(FsError::from),
            ShutdownFlush::Nothing => Ok(()),
        };
        self.eng.shut_down("shut down by request (shutdown ioctl)");
        r
    }

    /// Makes everything written so far durable: the log, and file data (device flush).
    pub fn fsync(&self) -> R<()> {
        let ticket = self.eng.flush_ticket();
        self.eng.force_all()?;
        // The data written before this call is on the device or in the image's page cache; a
        // flush that began after the ticket (the force's checkpoint's, or a concurrent fsync's)
        // wrote back the one and flushed the other, else this one does.
        self.eng.flush_since(ticket)?;
        Ok(())
    }

    /// Makes `ino`'s data durable, with what reading it back needs (its size and map), as
    /// fdatasync must: the log only up to the last commit that changed those (nothing when only
    /// its times changed since, or nothing since the mount), then the device's cache.
    pub fn fdatasync(&self, ino: u64) -> R<()> {
        let ticket = self.eng.flush_ticket();
        let seq = self.data_seqs.get(ino);
        if seq != 0 {
            self.eng.force(seq)?;
        }
        self.eng.flush_since(ticket)?;
        Ok(())
    }

    /// fallocate: `keep_size`, `punch` (with keep_size), `zero` (punch then preallocate).
    pub fn fallocate(
        &self,
        ino: u64,
        off: u64,
        len: u64,
        keep_size: bool,
        punch: bool,
        zero: bool,
    ) -> R<()> {
        self.writable()?;
        let g = self.data_lock(ino);
        let i = self.read_inode(ino)?;
        // Before the file's type, as `vfs_fallocate` asks: an append-only file may only grow.
        if (punch || zero) && i.flags & crate::format::inode::FLAG_APPEND != 0 {
            return Err(FsError::Perm);
        }
        refuse_immutable(&i)?;
        if i.mode & S_IFMT != S_IFREG {
            return Err(if is_dir(&i) {
                FsError::IsDir
            } else {
                FsError::NotSupported
            });
        }
        let t = now();
        if punch {
            self.io().punch_hole(ino, off, len, t)?;
        } else {
            let req = Allocate {
                off,
                len,
                keep_size,
                zero,
            };
            self.io().allocate(ino, req, t)?;
        }
        drop(g);
        self.durable_if(flags::is_sync(&i))
    }

    /// SEEK_DATA (`data`) or SEEK_HOLE.
    pub(crate) fn seek(&self, ino: u64, off: u64, data: bool) -> R<u64> {
        self.io().seek(ino, off, data)?.ok_or(FsError::NoData)
    }

    /// Directory entries from `cookie`, at most `max`; checks read permission.
    pub fn readdir(&self, ino: u64, cookie: u64, max: usize) -> R<Vec<DirEntry>> {
        let mut tx = self.eng.begin(TransKind::Read)?;
        let (_, i) = inode::read(&mut tx, ino)?;
        if !is_dir(&i) {
            return Err(FsError::NotDir);
        }
        let out = dir::read(&mut tx, ino, &i, cookie, max)?;
        tx.cancel()?;
        // Cookies only grow: a damaged directory that would send readdir round in circles is
        // reported instead.
        if out.iter().any(|e| e.cookie <= cookie) {
            return Err(FsError::Engine(EngineError::Corrupt(
                crate::format::FormatError::new(
                    ino,
                    "directory",
                    "cookie",
                    format!("directory {ino}: readdir from cookie {cookie} does not advance"),
                ),
            )));
        }
        if cookie == 0 {
            self.accessed(ino)?;
        }
        Ok(out)
    }

    /// Opens a directory: counted as an open, so a directory removed (rmdir, or renamed over)
    /// while open lives on until its last close (`release`), as a file does.
    /// Returns whether the kernel may keep the directory's cached listing (as `open`).
    pub(crate) fn opendir(&self, ctx: &Ctx, ino: u64) -> R<bool> {
        let i = self.read_inode(ino)?;
        if !is_dir(&i) {
            return Err(FsError::NotDir);
        }
        self.may(ctx, ino, &i, 4)?;
        *self.open.lock().entry(ino).or_insert(0) += 1;
        self.eng.cache().charge_outside(HANDLE_BYTES);
        Ok(!self.atime_due(&i, now()))
    }

    pub fn statfs(&self) -> R<StatFs> {
        let g = self.eng.geometry();
        let (mut free, mut ifree, mut inodes) = (0, 0, 0);
        for agno in 0..g.ag_count {
            let s = self.alloc.summary(agno);
            free += s.free_blocks;
            ifree += s.free_inodes;
            inodes += s.inodes;
        }
        let ipb = crate::format::inode::inodes_per_block(g.block_size) as u64;
        let bfree = self.alloc.usable_free_blocks();
        Ok(StatFs {
            blocks: g.block_count,
            bfree,
            bavail: self.alloc.available_blocks(),
            files: inodes + free * ipb,
            ffree: ifree + free * ipb,
            bsize: g.block_size,
            namelen: NAME_MAX as u32,
        })
    }
}

/// A fresh, empty root directory (its own parent) for inode `ino`: mkfs, and fsck's repair when
/// the root is lost.
pub(crate) fn root_inode(
    tx: &mut Trans<'_>,
    alloc: &Allocator,
    ino: u64,
) -> Result<Inode, EngineError> {
    let t = now();
    let mut i = Inode {
        mode: S_IFDIR | 0o755,
        nlink: 2,
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        generation: 1,
        ..Default::default()
    };
    dir::init(tx, alloc, ino, &mut i, ino)?;
    Ok(i)
}

/// Creates the root directory of a freshly formatted filesystem, owned by `owner` (uid, gid);
/// returns its inode number.
pub(crate) fn make_root(eng: &Engine, owner: (u32, u32)) -> Result<u64, EngineError> {
    let alloc = Allocator::new(*eng.geometry());
    let mut tx = eng.begin(TransKind::Mkdir)?;
    let ino = alloc
        .alloc_inode_new_chunk(&mut tx, 0)?
        .ok_or_else(|| EngineError::NoSpace("no inode for the root".into()))?;
    let r = inode::join_new(&mut tx, ino)?;
    let mut i = root_inode(&mut tx, &alloc, ino)?;
    (i.uid, i.gid) = owner;
    inode::write(&mut tx, &r, &i);
    tx.commit()?;
    eng.force_all()?;
    Ok(ino)
}
