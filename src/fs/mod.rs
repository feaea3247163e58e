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

mod repair;

use crate::alloc::Allocator;
use crate::dir::{self, DirEntry, NAME_MAX};
use crate::engine::{Engine, EngineError};
use crate::file::readahead::ReadAheadStats;
use crate::file::{extmap, DataSeqs, FileIo, ReadAhead, FILE_SIZE_MAX};
use crate::format::inode::{ino_split, inodes_per_block, DataFormat, Inode, Time, FORK_BYTES};
use crate::format::{BlockType, BLOCK_HEADER_BYTES};
use crate::inode;
use crate::trans::{Trans, TransKind};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

pub const S_IFMT: u32 = 0o170000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFIFO: u32 = 0o010000;
pub const S_IFSOCK: u32 = 0o140000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFBLK: u32 = 0o060000;
pub const S_ISUID: u32 = 0o4000;
pub const S_ISGID: u32 = 0o2000;
pub const S_ISVTX: u32 = 0o1000;
/// Most hard links to one inode (as ext4's 65000).
pub const LINK_MAX: u32 = 65000;
/// Longest symlink target: POSIX PATH_MAX less its terminating NUL.
pub const SYMLINK_MAX: usize = 4095;
/// Stripes of the per-inode data lock: bounds memory, keeps collisions rare.
const DATA_LOCK_STRIPES: usize = 256;
/// Memory one open file handle is charged (its entry in the open table, with the map's overhead).
const HANDLE_BYTES: u64 = 64;
/// Drops the set-id bits as Linux does when a file is written, truncated or given away by
/// `ctx` (setattr_should_drop_suidgid): set-user-ID always; set-group-ID when the file is
/// group-executable, or when the caller is neither root nor in the file's group.
fn kill_setid(ctx: &Ctx, i: &mut Inode) {
    i.drop_setid();
    if !(ctx.uid == 0 || ctx.in_group(i.gid)) {
        i.mode &= !S_ISGID;
    }
}

/// Times a namespace operation retries when what it looked up changed before it locked.
const RETRIES_MAX: usize = 16;

/// When reads update the access time (mount options `relatime`, the default, `strictatime`,
/// `noatime`), as the kernel does for local filesystems.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtimePolicy {
    /// Only when the access time is not after the modification or change time, or is a day old.
    Relatime,
    /// At every read.
    Strict,
    Never,
}

/// relatime updates an access time at least this often (as Linux: a day).
const RELATIME_MAX_AGE_SECS: i64 = 24 * 3600;

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

impl Ctx {
    pub const ROOT: Ctx = Ctx {
        uid: 0,
        gid: 0,
        pid: 0,
    };

    /// Is `gid` the caller's group or one of its supplementary groups (from /proc)?
    fn in_group(&self, gid: u32) -> bool {
        if gid == self.gid {
            return true;
        }
        let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", self.pid)) else {
            return false;
        };
        status
            .lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .is_some_and(|g| g.split_whitespace().any(|x| x.parse::<u32>() == Ok(gid)))
    }
}

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
    /// A file handle names an inode that no longer exists, or never did (ESTALE).
    Stale,
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
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    pub crtime: Time,
    pub rdev: u64,
    pub blksize: u32,
    pub generation: u32,
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
}

/// Filesystem statistics.
#[derive(Debug, Clone, Copy)]
pub struct StatFs {
    pub blocks: u64,
    /// Free blocks allocations may use (each AG's reserve left out).
    pub bfree: u64,
    /// Of those, what ordinary operations may still take (promised blocks and the pool left out).
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
}

pub fn now() -> Time {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Time {
        sec: d.as_secs() as i64,
        nsec: d.subsec_nanos(),
    }
}

fn is_dir(i: &Inode) -> bool {
    i.mode & S_IFMT == S_IFDIR
}

/// The readdir type (DT_*) of a mode.
pub fn dtype(mode: u32) -> u8 {
    match mode & S_IFMT {
        S_IFDIR => 4,
        S_IFREG => 8,
        S_IFLNK => 10,
        S_IFIFO => 1,
        S_IFSOCK => 12,
        S_IFCHR => 2,
        S_IFBLK => 6,
        _ => 0,
    }
}

/// A name a request gives: the format's rule (`format::name`), except that "." and ".." pass
/// here, for the callers that answer them as the kernel expects (rmdir of "." is EINVAL, a
/// create of ".." EEXIST: the kernel resolves them before they reach us anyway).
fn check_name(name: &[u8]) -> R<()> {
    use crate::format::name::{name_problem, NameProblem};
    match name_problem(name) {
        None | Some(NameProblem::Dot) => Ok(()),
        Some(NameProblem::TooLong) => Err(FsError::NameTooLong),
        Some(p) => Err(FsError::Invalid(format!("a name that {}", p.describe()))),
    }
}

/// A name to be stored (create, link, the target of a rename): "." and ".." always exist, as
/// mkdir(".") finds in the kernel (EEXIST); never stored (`format::name`).
fn check_new_name(name: &[u8]) -> R<()> {
    check_name(name)?;
    if name == b"." || name == b".." {
        return Err(FsError::Exists);
    }
    Ok(())
}

/// May `ctx` do `want` (4 read, 2 write, 1 search/execute, or'ed) to `i`?
fn may(ctx: &Ctx, i: &Inode, want: u32) -> R<()> {
    if ctx.uid == 0 {
        // Root may do anything but execute a file with no execute bit at all.
        if want & 1 != 0 && !is_dir(i) && i.mode & 0o111 == 0 {
            return Err(FsError::Access);
        }
        return Ok(());
    }
    let bits = if ctx.uid == i.uid {
        (i.mode >> 6) & 7
    } else if ctx.in_group(i.gid) {
        (i.mode >> 3) & 7
    } else {
        i.mode & 7
    };
    if bits & want == want {
        Ok(())
    } else {
        Err(FsError::Access)
    }
}

/// The sticky-directory rule: in a sticky directory only the owner of the entry, the owner of
/// the directory or root may remove or rename the entry.
fn sticky_ok(ctx: &Ctx, dir: &Inode, victim: &Inode) -> R<()> {
    if dir.mode & S_ISVTX != 0 && ctx.uid != 0 && ctx.uid != dir.uid && ctx.uid != victim.uid {
        return Err(FsError::Perm);
    }
    Ok(())
}

/// Joins the chunks of `inos` in ascending block order: the lock order of every operation.
fn lock_chunks(tx: &mut Trans<'_>, inos: &[u64]) -> R<()> {
    let mut chunks: Vec<u64> = inos
        .iter()
        .filter(|&&i| i != 0)
        .map(|&i| ino_split(i).0)
        .collect();
    chunks.sort_unstable();
    chunks.dedup();
    for c in chunks {
        tx.read_buf(c, BlockType::InodeChunk)?;
    }
    Ok(())
}

/// What a shutdown makes durable first (XFS_FSOP_GOING_FLAGS_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownFlush {
    /// Everything: the log and file data (flags 0, DEFAULT).
    All,
    /// The log (flags 1, LOGFLUSH).
    Log,
    /// Nothing (flags 2, NOLOGFLUSH): what the log had not written is lost.
    Nothing,
}

/// Whether the superblock is read-only now, as the kernel says (None: unknown).
pub type RoProbe = Box<dyn Fn() -> Option<bool> + Send + Sync>;

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
    kernel_checks: bool,
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
            kernel_checks: false,
            stripes: (0..DATA_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            open: Mutex::new(HashMap::new()),
            orphans: Mutex::new(HashSet::new()),
            generation: Mutex::new(seed),
            data_seqs: DataSeqs::default(),
            orphans_freed_at_mount: std::sync::atomic::AtomicU64::new(0),
            ra: None,
        };
        fs.free_orphans()?;
        Ok(fs)
    }

    /// Frees the inodes a crash left on the unlinked trees (no links, and nobody has them open
    /// after a mount).
    fn free_orphans(&self) -> R<()> {
        let mut orphans = Vec::new();
        let mut tx = self.eng.begin(TransKind::Read)?;
        for agno in 0..self.eng.geometry().ag_count {
            orphans.extend(self.alloc.unlinked(&mut tx, agno)?);
        }
        tx.cancel()?;
        self.orphans_freed_at_mount
            .store(orphans.len() as u64, std::sync::atomic::Ordering::Relaxed);
        for ino in orphans {
            self.destroy(ino)?;
        }
        Ok(())
    }

    /// Inodes the mount freed from the unlinked trees (unlinked while open before a crash): the
    /// mount command reports them (a kernel filesystem would say so in its log).
    pub fn orphans_freed_at_mount(&self) -> u64 {
        self.orphans_freed_at_mount
            .load(std::sync::atomic::Ordering::Relaxed)
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
    pub fn unmount_now(&self) -> R<()> {
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

    /// Inodes waiting on the unlinked trees (for checks and tests).
    pub fn unlinked(&self) -> R<Vec<u64>> {
        let mut tx = self.eng.begin(TransKind::Read)?;
        let mut out = Vec::new();
        for agno in 0..self.eng.geometry().ag_count {
            out.extend(self.alloc.unlinked(&mut tx, agno)?);
        }
        tx.cancel()?;
        Ok(out)
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
    pub fn enable_readahead(&mut self, piece_max_bytes: usize) {
        self.ra = Some(ReadAhead::new(
            self.eng.geometry().block_size,
            piece_max_bytes,
        ));
    }

    /// A read-ahead worker's life: reads the pieces queued until `stop_readahead`.
    pub fn serve_readahead(&self) {
        if let Some(ra) = &self.ra {
            self.io().read_ahead(ra);
        }
    }

    /// Ends every `serve_readahead`.
    pub fn stop_readahead(&self) {
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
    pub fn is_read_only(&self) -> bool {
        self.read_only.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Follows a remount. Going read-only, everything so far is made durable first (the log
    /// forced, the device flushed), as a kernel filesystem quiesces at a remount to read-only.
    pub fn set_read_only(&self, ro: bool) -> R<()> {
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

    fn attr(&self, ino: u64, i: &Inode) -> Attr {
        let bs = self.eng.geometry().block_size as u64;
        Attr {
            ino,
            mode: i.mode,
            nlink: i.nlink,
            uid: i.uid,
            gid: i.gid,
            // A directory's size is the space its tree and names take, or for an inline one the
            // bytes of its entries (as XFS reports short-form directories).
            size: if is_dir(i) {
                if i.format == DataFormat::Local {
                    dir::inline_bytes(i)
                } else {
                    i.blocks.saturating_mul(bs)
                }
            } else {
                i.size
            },
            // Saturating: the count comes from the image (fsck reports one that is wrong).
            blocks: i.blocks.saturating_mul(bs / 512),
            atime: i.atime,
            mtime: i.mtime,
            ctime: i.ctime,
            crtime: i.crtime,
            rdev: i.rdev,
            blksize: bs as u32,
            generation: i.generation,
        }
    }

    fn read_inode(&self, ino: u64) -> R<Inode> {
        let mut tx = self.eng.begin(TransKind::Read)?;
        let (_, i) = inode::read(&mut tx, ino)?;
        tx.cancel()?;
        Ok(i)
    }

    pub fn getattr(&self, ino: u64) -> R<Attr> {
        let i = self.read_inode(ino)?;
        Ok(self.attr(ino, &i))
    }

    /// Looks `name` up in directory `parent`.
    pub fn lookup(&self, ctx: &Ctx, parent: u64, name: &[u8]) -> R<Attr> {
        if name == b"." {
            // Path walks never ask for "." (the VFS answers it): this is a file handle.
            return self.lookup_handle(parent);
        }
        let mut tx = self.eng.begin(TransKind::Read)?;
        let (_, p) = inode::read(&mut tx, parent)?;
        if !is_dir(&p) {
            return Err(FsError::NotDir);
        }
        may(ctx, &p, 1)?;
        let ino = match name {
            b".." => dir::parent(&p),
            _ => {
                check_name(name)?;
                dir::lookup(&mut tx, parent, &p, name)?
                    .ok_or(FsError::NotFound)?
                    .0
            }
        };
        // Let go of the parent first: its chunk may come after the child's in the lock order
        // (ascending block number), and a writer holding the child's chunk may be waiting for
        // it. Holding both here deadlocked readdirplus against link under stress-ng.
        tx.release_clean(crate::trans::BufMark::START, 0..u64::MAX);
        let (_, i) = inode::read(&mut tx, ino)?;
        tx.cancel()?;
        Ok(self.attr(ino, &i))
    }

    /// Inode `ino` itself, of any type, for a file handle: FUSE's export support asks for "."
    /// in an inode the kernel no longer caches (open_by_handle_at, NFS). The number comes from
    /// outside, so it is checked against the inode-chunk trees before its chunk is read; a free
    /// slot or a number that names no inode is ESTALE. The kernel compares the generation.
    pub fn lookup_handle(&self, ino: u64) -> R<Attr> {
        let (chunk, slot) = ino_split(ino);
        if slot >= inodes_per_block(self.eng.geometry().block_size) {
            return Err(FsError::Stale);
        }
        let mut tx = self.eng.begin(TransKind::Read)?;
        let known = self.alloc.is_inode_chunk(&mut tx, chunk)?;
        tx.cancel()?;
        if !known {
            return Err(FsError::Stale);
        }
        let mut tx = self.eng.begin(TransKind::Read)?;
        let i = match inode::read(&mut tx, ino) {
            Ok((_, i)) => i,
            Err(EngineError::Stale(_)) => return Err(FsError::Stale),
            Err(e) => return Err(e.into()),
        };
        tx.cancel()?;
        Ok(self.attr(ino, &i))
    }

    /// The inode `name` names in `parent` now, without keeping locks (to know what to lock).
    fn peek(&self, parent: u64, name: &[u8]) -> R<Option<u64>> {
        let mut tx = self.eng.begin(TransKind::Read)?;
        let (_, p) = inode::read(&mut tx, parent)?;
        if !is_dir(&p) {
            return Err(FsError::NotDir);
        }
        let r = dir::lookup(&mut tx, parent, &p, name)?.map(|x| x.0);
        tx.cancel()?;
        Ok(r)
    }

    fn next_generation(&self) -> u32 {
        let mut g = self.generation.lock();
        *g = g.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *g
    }

    /// Creates `name` in `parent`: a regular file, device, fifo or socket (`mode` has the type),
    /// a directory, or a symlink to `target`.
    pub fn make(
        &self,
        ctx: &Ctx,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u64,
        target: Option<&[u8]>,
    ) -> R<Attr> {
        self.writable()?;
        check_new_name(name)?;
        let ftype = mode & S_IFMT;
        if !matches!(
            ftype,
            S_IFREG | S_IFDIR | S_IFLNK | S_IFIFO | S_IFSOCK | S_IFCHR | S_IFBLK
        ) {
            return Err(FsError::Invalid(format!("file type {ftype:o}")));
        }
        if let Some(t) = target {
            if t.len() > SYMLINK_MAX || t.len() > self.symlink_block_max() {
                return Err(FsError::NameTooLong);
            }
            if t.is_empty() {
                return Err(FsError::NotFound);
            }
        }
        let kind = match ftype {
            S_IFDIR => TransKind::Mkdir,
            S_IFLNK => TransKind::Symlink,
            _ => TransKind::Create,
        };
        // A free inode to claim, found before locking anything (see alloc::peek_free_inode).
        let candidate = {
            let mut tx = self.eng.begin(TransKind::Read)?;
            let c = self.alloc.peek_free_inode(&mut tx, parent)?;
            tx.cancel()?;
            c
        };
        let _blocks = self.promise(kind, false)?;
        let mut tx = self.eng.begin(kind)?;
        lock_chunks(&mut tx, &[parent, candidate.unwrap_or(0)])?;
        let (pr, mut p) = inode::read(&mut tx, parent)?;
        if !is_dir(&p) {
            return Err(FsError::NotDir);
        }
        if p.nlink == 0 {
            return Err(FsError::NotFound);
        }
        may(ctx, &p, 3)?;
        if dir::lookup(&mut tx, parent, &p, name)?.is_some() {
            return Err(FsError::Exists);
        }
        if ftype == S_IFDIR && p.nlink >= LINK_MAX {
            return Err(FsError::TooManyLinks);
        }
        let claimed = match candidate {
            Some(c)
                if inode::join_new(&mut tx, c).is_ok() && self.alloc.claim_inode(&mut tx, c)? =>
            {
                Some(c)
            }
            _ => None,
        };
        let ino = match claimed {
            Some(c) => c,
            None => self
                .alloc
                .alloc_inode_new_chunk(&mut tx, parent)?
                .ok_or_else(|| EngineError::NoSpace("no free inode".into()))?,
        };
        let r = inode::join_new(&mut tx, ino)?;
        let t = now();
        let mut i = Inode {
            mode,
            uid: ctx.uid,
            gid: ctx.gid,
            nlink: if ftype == S_IFDIR { 2 } else { 1 },
            generation: self.next_generation(),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            rdev: if matches!(ftype, S_IFCHR | S_IFBLK) {
                rdev
            } else {
                0
            },
            ..Default::default()
        };
        // A setgid directory passes its group on, and its setgid bit to subdirectories.
        if p.mode & S_ISGID != 0 {
            i.gid = p.gid;
            if ftype == S_IFDIR {
                i.mode |= S_ISGID;
            }
        } else if ftype != S_IFDIR && mode & S_ISGID != 0 && ctx.uid != 0 && !ctx.in_group(i.gid) {
            i.mode &= !S_ISGID;
        }
        match ftype {
            S_IFDIR => dir::init(&mut tx, &self.alloc, ino, &mut i, parent)?,
            S_IFLNK => self.store_symlink(&mut tx, ino, &mut i, target.unwrap_or_default())?,
            S_IFREG => i.set_extents(&[]),
            _ => {}
        }
        inode::write(&mut tx, &r, &i);
        dir::insert(&mut tx, &self.alloc, parent, &mut p, name, ino, dtype(mode))?;
        if ftype == S_IFDIR {
            p.nlink += 1;
        }
        p.mtime = t;
        p.ctime = t;
        inode::write(&mut tx, &pr, &p);
        tx.commit()?;
        self.note_change(ino);
        Ok(self.attr(ino, &i))
    }

    fn symlink_block_max(&self) -> usize {
        self.eng.geometry().block_size as usize - BLOCK_HEADER_BYTES
    }

    /// Short targets live in the inode; longer ones in one symlink block.
    fn store_symlink(&self, tx: &mut Trans<'_>, ino: u64, i: &mut Inode, target: &[u8]) -> R<()> {
        i.size = target.len() as u64;
        i.nextents = target.len() as u32;
        if target.len() <= FORK_BYTES {
            i.format = DataFormat::Local;
            i.fork[..target.len()].copy_from_slice(target);
            return Ok(());
        }
        let (blk, _) = self
            .alloc
            .alloc(tx, ino_split(ino).0, 1, 1)?
            .ok_or_else(|| EngineError::NoSpace("no block for a symlink".into()))?;
        let id = tx.get_buf(blk, BlockType::Symlink, ino)?;
        tx.data_mut(id)[BLOCK_HEADER_BYTES..BLOCK_HEADER_BYTES + target.len()]
            .copy_from_slice(target);
        tx.log_range(id, BLOCK_HEADER_BYTES..BLOCK_HEADER_BYTES + target.len());
        i.format = DataFormat::Btree;
        i.root = blk;
        i.blocks = 1;
        Ok(())
    }

    pub fn readlink(&self, ino: u64) -> R<Vec<u8>> {
        let mut tx = self.eng.begin(TransKind::Read)?;
        let (_, i) = inode::read(&mut tx, ino)?;
        if i.mode & S_IFMT != S_IFLNK {
            return Err(FsError::Invalid("not a symlink".into()));
        }
        let out = crate::symlink::target(&mut tx, ino, &i)?;
        tx.cancel()?;
        Ok(out)
    }

    /// Removes `name` from `parent`: a non-directory (`rmdir` false) or an empty directory.
    pub fn remove(&self, ctx: &Ctx, parent: u64, name: &[u8], rmdir: bool) -> R<()> {
        self.writable()?;
        check_name(name)?;
        if rmdir && name == b"." {
            return Err(FsError::Invalid("rmdir of .".into()));
        }
        for _ in 0..RETRIES_MAX {
            let child = self.peek(parent, name)?.ok_or(FsError::NotFound)?;
            let _blocks = self.promise(TransKind::Remove, true)?;
            let mut tx = self.eng.begin(TransKind::Remove)?;
            lock_chunks(&mut tx, &[parent, child])?;
            let (pr, mut p) = inode::read(&mut tx, parent)?;
            if dir::lookup(&mut tx, parent, &p, name)?.map(|x| x.0) != Some(child) {
                tx.cancel()?;
                continue;
            }
            may(ctx, &p, 3)?;
            let (cr, mut c) = inode::read(&mut tx, child)?;
            sticky_ok(ctx, &p, &c)?;
            match (rmdir, is_dir(&c)) {
                (false, true) => return Err(FsError::IsDir),
                (true, false) => return Err(FsError::NotDir),
                (true, true) if c.nextents != 0 => return Err(FsError::NotEmpty),
                _ => {}
            }
            dir::remove(&mut tx, &self.alloc, parent, &mut p, name)?;
            let t = now();
            if rmdir {
                c.nlink = 0;
                p.nlink = p.nlink.saturating_sub(1);
            } else {
                c.nlink -= 1;
            }
            c.ctime = t;
            p.mtime = t;
            p.ctime = t;
            inode::write(&mut tx, &pr, &p);
            inode::write(&mut tx, &cr, &c);
            if c.nlink == 0 {
                self.alloc.unlinked_add(&mut tx, child)?;
            }
            tx.commit()?;
            self.note_change(child);
            if c.nlink == 0 {
                self.release_or_destroy(child)?;
            }
            return Ok(());
        }
        Err(FsError::Engine(EngineError::Invalid(format!(
            "{} kept changing under remove",
            String::from_utf8_lossy(name)
        ))))
    }

    /// An inode lost its last link: free it now, or at its last close.
    fn release_or_destroy(&self, ino: u64) -> R<()> {
        if self.open.lock().get(&ino).is_some_and(|&n| n > 0) {
            self.orphans.lock().insert(ino);
            return Ok(());
        }
        self.destroy(ino)
    }

    /// Frees an inode with no links: its data (rolling truncate), its map or directory root or
    /// symlink block, then the inode.
    fn destroy(&self, ino: u64) -> R<()> {
        let _g = self.data_lock(ino);
        let i = self.read_inode(ino)?;
        debug_assert_eq!(i.nlink, 0);
        // An empty file (no size, no block: most of those a create/unlink storm makes) has
        // nothing to truncate, and skips that transaction.
        if i.mode & S_IFMT == S_IFREG && (i.size > 0 || i.blocks > 0) {
            self.io().truncate(ino, 0, now())?;
        }
        let _blocks = self.promise(TransKind::Inactive, true)?;
        let mut tx = self.eng.begin(TransKind::Inactive)?;
        let (r, mut i) = inode::read(&mut tx, ino)?;
        match (i.mode & S_IFMT, i.format) {
            (S_IFDIR, DataFormat::Btree) => dir::destroy(&mut tx, &self.alloc, ino, &mut i)?,
            (S_IFLNK, DataFormat::Btree) => {
                let id = tx.read_buf(i.root, BlockType::Symlink)?;
                tx.invalidate(id);
                self.alloc.free(&mut tx, i.root, 1)?;
            }
            (S_IFREG, DataFormat::Btree) => {
                // The empty extent tree's root.
                let id = tx.read_buf(i.root, BlockType::BtreeExtent)?;
                tx.invalidate(id);
                self.alloc.free(&mut tx, i.root, 1)?;
            }
            _ => {}
        }
        if i.xattr_blk != 0 {
            crate::xattr::store(&mut tx, &self.alloc, ino, &mut i, &[])?;
        }
        inode::clear(&mut tx, &r);
        self.alloc.unlinked_remove(&mut tx, ino)?;
        self.alloc.free_inode(&mut tx, ino)?;
        tx.commit()?;
        Ok(())
    }

    /// Adds the name `newname` in `newparent` for `ino`.
    pub fn link(&self, ctx: &Ctx, ino: u64, newparent: u64, newname: &[u8]) -> R<Attr> {
        self.writable()?;
        check_new_name(newname)?;
        let _blocks = self.promise(TransKind::Link, false)?;
        let mut tx = self.eng.begin(TransKind::Link)?;
        lock_chunks(&mut tx, &[ino, newparent])?;
        let (pr, mut p) = inode::read(&mut tx, newparent)?;
        if !is_dir(&p) {
            return Err(FsError::NotDir);
        }
        may(ctx, &p, 3)?;
        let (r, mut i) = inode::read(&mut tx, ino)?;
        if is_dir(&i) {
            return Err(FsError::Perm);
        }
        if i.nlink == 0 {
            return Err(FsError::NotFound);
        }
        if i.nlink >= LINK_MAX {
            return Err(FsError::TooManyLinks);
        }
        if dir::lookup(&mut tx, newparent, &p, newname)?.is_some() {
            return Err(FsError::Exists);
        }
        dir::insert(
            &mut tx,
            &self.alloc,
            newparent,
            &mut p,
            newname,
            ino,
            dtype(i.mode),
        )?;
        let t = now();
        i.nlink += 1;
        i.ctime = t;
        p.mtime = t;
        p.ctime = t;
        inode::write(&mut tx, &r, &i);
        inode::write(&mut tx, &pr, &p);
        tx.commit()?;
        self.note_change(ino);
        Ok(self.attr(ino, &i))
    }

    /// Is `dir` (a directory) `anc` or below it? Walks ".." up to the root.
    fn is_within(&self, dir: u64, anc: u64) -> R<bool> {
        let mut cur = dir;
        for _ in 0..4096 {
            if cur == anc {
                return Ok(true);
            }
            if cur == self.root {
                return Ok(false);
            }
            cur = dir::parent(&self.read_inode(cur)?);
        }
        Err(FsError::Engine(EngineError::Invalid(
            "directory tree deeper than 4096 or looping".into(),
        )))
    }

    /// Renames `name` in `parent` to `newname` in `newparent`. `noreplace` fails if the target
    /// exists; `exchange` swaps two existing entries.
    #[allow(clippy::too_many_arguments)]
    pub fn rename(
        &self,
        ctx: &Ctx,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        noreplace: bool,
        exchange: bool,
    ) -> R<()> {
        self.writable()?;
        check_name(name)?;
        check_new_name(newname)?;
        for _ in 0..RETRIES_MAX {
            let src = self.peek(parent, name)?.ok_or(FsError::NotFound)?;
            let dst = self.peek(newparent, newname)?;
            if exchange && dst.is_none() {
                return Err(FsError::NotFound);
            }
            if dst.is_some() && noreplace {
                return Err(FsError::Exists);
            }
            // Moving a directory below itself (the kernel serialises cross-directory renames).
            let src_is_dir = is_dir(&self.read_inode(src)?);
            if src_is_dir && parent != newparent && self.is_within(newparent, src)? {
                return Err(FsError::Invalid("moving a directory below itself".into()));
            }
            if let Some(d) = dst.filter(|_| exchange) {
                if is_dir(&self.read_inode(d)?)
                    && parent != newparent
                    && self.is_within(parent, d)?
                {
                    return Err(FsError::Invalid("moving a directory below itself".into()));
                }
            }
            let _blocks = self.promise(TransKind::Rename, false)?;
            let mut tx = self.eng.begin(TransKind::Rename)?;
            lock_chunks(&mut tx, &[parent, newparent, src, dst.unwrap_or(0)])?;
            let (pr, mut p) = inode::read(&mut tx, parent)?;
            let (npr, mut np) = inode::read(&mut tx, newparent)?;
            if !is_dir(&np) {
                return Err(FsError::NotDir);
            }
            if dir::lookup(&mut tx, parent, &p, name)?.map(|x| x.0) != Some(src)
                || dir::lookup(&mut tx, newparent, &np, newname)?.map(|x| x.0) != dst
            {
                tx.cancel()?;
                continue;
            }
            may(ctx, &p, 3)?;
            may(ctx, &np, 3)?;
            let (sr, mut s) = inode::read(&mut tx, src)?;
            sticky_ok(ctx, &p, &s)?;
            if Some(src) == dst {
                tx.cancel()?;
                return Ok(());
            }
            let t = now();
            let mut dst_inode = None;
            if let Some(d) = dst {
                let (dr, di) = inode::read(&mut tx, d)?;
                sticky_ok(ctx, &np, &di)?;
                if !exchange {
                    match (is_dir(&s), is_dir(&di)) {
                        (true, false) => return Err(FsError::NotDir),
                        (false, true) => return Err(FsError::IsDir),
                        (true, true) if di.nextents != 0 => return Err(FsError::NotEmpty),
                        _ => {}
                    }
                }
                // A directory moving to another parent rewrites its "..": it needs write permission.
                if is_dir(&di) && exchange && parent != newparent {
                    may(ctx, &di, 2)?;
                }
                dst_inode = Some((d, dr, di));
            }
            if is_dir(&s) && parent != newparent {
                may(ctx, &s, 2)?;
            }
            let same = parent == newparent;
            match dst_inode {
                Some((d, dr, mut di)) if exchange => {
                    // Swap the two entries.
                    let pp = if same { &mut np } else { &mut p };
                    dir::replace(&mut tx, parent, pp, name, d, dtype(di.mode))?;
                    dir::replace(&mut tx, newparent, &mut np, newname, src, dtype(s.mode))?;
                    if !same {
                        if is_dir(&s) {
                            dir::set_parent(&mut s, newparent);
                            p.nlink -= 1;
                            np.nlink += 1;
                        }
                        if is_dir(&di) {
                            dir::set_parent(&mut di, parent);
                            np.nlink -= 1;
                            p.nlink += 1;
                        }
                    }
                    di.ctime = t;
                    inode::write(&mut tx, &dr, &di);
                }
                Some((_, dr, mut di)) => {
                    dir::replace(&mut tx, newparent, &mut np, newname, src, dtype(s.mode))?;
                    if is_dir(&di) {
                        di.nlink = 0;
                        np.nlink -= 1;
                    } else {
                        di.nlink -= 1;
                    }
                    di.ctime = t;
                    inode::write(&mut tx, &dr, &di);
                    if di.nlink == 0 {
                        self.alloc.unlinked_add(&mut tx, dst.unwrap_or(0))?;
                    }
                    if same {
                        dir::remove(&mut tx, &self.alloc, parent, &mut np, name)?;
                    } else {
                        dir::remove(&mut tx, &self.alloc, parent, &mut p, name)?;
                    }
                }
                None => {
                    dir::insert(
                        &mut tx,
                        &self.alloc,
                        newparent,
                        &mut np,
                        newname,
                        src,
                        dtype(s.mode),
                    )?;
                    if same {
                        dir::remove(&mut tx, &self.alloc, parent, &mut np, name)?;
                    } else {
                        dir::remove(&mut tx, &self.alloc, parent, &mut p, name)?;
                    }
                }
            }
            if is_dir(&s) && !same && !exchange {
                dir::set_parent(&mut s, newparent);
                p.nlink -= 1;
                np.nlink += 1;
            }
            s.ctime = t;
            np.mtime = t;
            np.ctime = t;
            inode::write(&mut tx, &sr, &s);
            if !same {
                p.mtime = t;
                p.ctime = t;
                inode::write(&mut tx, &pr, &p);
            }
            inode::write(&mut tx, &npr, &np);
            tx.commit()?;
            self.note_change(src);
            if let Some(d) = dst {
                self.note_change(d);
            }
            if let Some(d) = dst.filter(|_| !exchange) {
                if self.read_inode(d)?.nlink == 0 {
                    self.release_or_destroy(d)?;
                }
            }
            return Ok(());
        }
        Err(FsError::Engine(EngineError::Invalid(
            "rename target kept changing".into(),
        )))
    }

    /// Changes attributes; checks ownership and permissions as chmod, chown, truncate and
    /// utimensat do.
    pub fn setattr(&self, ctx: &Ctx, ino: u64, a: &SetAttr) -> R<Attr> {
        self.writable()?;
        let cur = self.read_inode(ino)?;
        let owner = ctx.uid == 0 || ctx.uid == cur.uid;
        // Nothing to set: the kernel's way (FUSE_HANDLE_KILLPRIV_V2) of passing on a chown to
        // the same owner (chown -1 -1) or the drop of privileges before someone's write,
        // fallocate or copy into the file: both clear the set-id bits (capabilities the kernel
        // removes itself, with a REMOVEXATTR), which a non-owner may do only if they may write
        // the file.
        let kill_only = a.mode.is_none()
            && a.uid.is_none()
            && a.gid.is_none()
            && a.size.is_none()
            && a.atime.is_none()
            && a.mtime.is_none()
            && !is_dir(&cur);
        if kill_only && !owner && cur.mode & (S_ISUID | S_ISGID) != 0 {
            may(ctx, &cur, 2)?;
        }
        if let Some(m) = a.mode.filter(|_| !owner) {
            // The kernel drops set-id bits itself before a write, truncate or fallocate by
            // someone else (file_remove_privs), and FUSE passes that on as a chmod by the
            // writer: allowed to whoever may write the file when it only clears those bits.
            let setid = S_ISUID | S_ISGID;
            let only_drops = m & 0o7777 & !setid == cur.mode & 0o7777 & !setid
                && m & setid & !cur.mode == 0
                && cur.mode & setid & !m != 0;
            if !only_drops {
                return Err(FsError::Perm);
            }
            may(ctx, &cur, 2)?;
        }
        if let Some(u) = a.uid {
            if u != cur.uid && ctx.uid != 0 {
                return Err(FsError::Perm);
            }
        }
        if let Some(g) = a.gid {
            if g != cur.gid && ctx.uid != 0 && !(ctx.uid == cur.uid && ctx.in_group(g)) {
                return Err(FsError::Perm);
            }
        }
        for t in [a.atime, a.mtime].into_iter().flatten() {
            match t {
                _ if self.kernel_checks => {}
                SetTime::At(_) if !owner => return Err(FsError::Perm),
                SetTime::Now if !owner => may(ctx, &cur, 2)?,
                _ => {}
            }
        }
        if let Some(size) = a.size {
            if is_dir(&cur) {
                return Err(FsError::IsDir);
            }
            if cur.mode & S_IFMT != S_IFREG {
                return Err(FsError::Invalid("truncate of a non-regular file".into()));
            }
            if !a.via_open_file {
                may(ctx, &cur, 2)?;
            }
            let _g = self.data_lock(ino);
            self.io().truncate(ino, size, now())?;
        }
        let mut tx = self.eng.begin(TransKind::Setattr)?;
        let (r, mut i) = inode::read(&mut tx, ino)?;
        let t = now();
        if let Some(m) = a.mode {
            let mut m = (i.mode & S_IFMT) | (m & 0o7777);
            // Setting setgid on a file of a group one is not in quietly drops it.
            if ctx.uid != 0 && !is_dir(&i) && m & S_ISGID != 0 && !ctx.in_group(i.gid) {
                m &= !S_ISGID;
            }
            i.mode = m;
        }
        let chown = a.uid.is_some_and(|u| u != i.uid) || a.gid.is_some_and(|g| g != i.gid);
        if let Some(u) = a.uid {
            i.uid = u;
        }
        if let Some(g) = a.gid {
            i.gid = g;
        }
        let given_away = (chown || a.uid.is_some() || a.gid.is_some()) && !is_dir(&i);
        // A truncate by anyone but root (the kernel's FATTR_KILL_SUIDGID, which FUSE passes for
        // a caller without CAP_FSETID) drops them as a write does.
        let truncated = a.size.is_some() && ctx.uid != 0;
        if (given_away || kill_only || truncated) && a.mode.is_none() {
            kill_setid(ctx, &mut i);
        }
        let pick = |s: SetTime| match s {
            SetTime::Now => t,
            SetTime::At(x) => x,
        };
        if let Some(x) = a.atime {
            i.atime = pick(x);
        }
        if let Some(x) = a.mtime {
            i.mtime = pick(x);
        }
        if a.size.is_some() && a.mtime.is_none() {
            i.mtime = t;
        }
        i.ctime = t;
        inode::write(&mut tx, &r, &i);
        tx.commit()?;
        // Mode, owner or set-id bits: more than times.
        if a.mode.is_some() || a.uid.is_some() || a.gid.is_some() || kill_only || truncated {
            self.note_change(ino);
        }
        Ok(self.attr(ino, &i))
    }

    /// May `ctx` open `ino` with this access (4 read, 2 write)? Counts the open.
    /// Returns whether the kernel may keep the file's cached pages from earlier opens: only when
    /// no access-time update is due (`atime_due`), since reads served from those pages never
    /// reach the daemon (under strictatime: never).
    pub fn open(&self, ctx: &Ctx, ino: u64, want: u32) -> R<bool> {
        let i = self.read_inode(ino)?;
        if want & 2 != 0 {
            if is_dir(&i) {
                return Err(FsError::IsDir);
            }
            self.writable()?;
        }
        may(ctx, &i, want)?;
        *self.open.lock().entry(ino).or_insert(0) += 1;
        // An open handle is memory that grows with load: charged beside the cache.
        self.eng.cache().charge_outside(HANDLE_BYTES);
        Ok(!self.atime_due(&i, now()))
    }

    /// The last close of an open: an inode unlinked meanwhile is freed now.
    pub fn release(&self, ino: u64) -> R<()> {
        self.eng.cache().release_outside(HANDLE_BYTES);
        let last = {
            let mut o = self.open.lock();
            let n = o.entry(ino).or_insert(1);
            *n -= 1;
            let last = *n == 0;
            if last {
                o.remove(&ino);
            }
            last
        };
        if last && self.orphans.lock().remove(&ino) {
            self.destroy(ino)?;
        }
        Ok(())
    }

    pub fn access(&self, ctx: &Ctx, ino: u64, mask: u32) -> R<()> {
        let i = self.read_inode(ino)?;
        if mask & 2 != 0 {
            self.writable()?;
        }
        may(ctx, &i, mask & 7)
    }

    /// Sets when reads update access times (the default is relatime).
    pub fn set_atime_policy(&mut self, p: AtimePolicy) {
        self.atime = p;
    }

    /// Sets how to ask whether the superblock is read-only now: a change that reaches a
    /// read-only filesystem asks, since the kernel lets changes through only to a writable
    /// superblock (a remount to read-write the daemon has not heard of yet).
    pub fn set_ro_probe(&mut self, probe: RoProbe) {
        self.ro_probe = Some(probe);
    }

    /// The kernel checks permissions before every request (the mount's default_permissions).
    pub fn set_kernel_checks_permissions(&mut self, on: bool) {
        self.kernel_checks = on;
    }

    pub fn read(&self, ino: u64, off: u64, len: usize) -> R<Vec<u8>> {
        self.read_with(ino, off, len, |b| b.to_vec())
    }

    /// `read`, handing the bytes to `f` where they were assembled (`FileIo::read_with`): a
    /// request thread replies from there.
    pub fn read_with<T>(&self, ino: u64, off: u64, len: usize, f: impl FnOnce(&[u8]) -> T) -> R<T> {
        self.io()
            .read_with(ino, off, len, |i| self.accessed_as(ino, Some(i)), f)
    }

    /// A read of `ino`'s data or entries: updates its access time as the policy says.
    fn accessed(&self, ino: u64) -> R<()> {
        self.accessed_as(ino, None)
    }

    /// Would a read of `i` at `t` update its access time (the mount's policy; never read-only)?
    fn atime_due(&self, i: &Inode, t: Time) -> bool {
        if self.is_read_only() {
            return false;
        }
        match self.atime {
            AtimePolicy::Never => false,
            AtimePolicy::Strict => true,
            AtimePolicy::Relatime => {
                i.atime <= i.mtime
                    || i.atime <= i.ctime
                    || t.sec - i.atime.sec >= RELATIME_MAX_AGE_SECS
            }
        }
    }

    /// `accessed`, with the inode as the read just found it when the caller has it (no second
    /// look to decide; the update itself rereads it).
    fn accessed_as(&self, ino: u64, seen: Option<&Inode>) -> R<()> {
        if self.is_read_only() || self.atime == AtimePolicy::Never {
            return Ok(());
        }
        let t = now();
        let due = |i: &Inode| self.atime_due(i, t);
        let is_due = match seen {
            Some(i) => due(i),
            None => due(&self.read_inode(ino)?),
        };
        if !is_due {
            return Ok(());
        }
        let mut tx = self.eng.begin(TransKind::Setattr)?;
        let (r, mut i) = inode::read(&mut tx, ino)?;
        if !due(&i) {
            tx.cancel()?;
            return Ok(());
        }
        i.atime = t;
        inode::write(&mut tx, &r, &i);
        tx.commit()?;
        Ok(())
    }

    /// Writes; a write by anyone but root clears set-user-ID and set-group-ID.
    pub fn write(&self, ctx: &Ctx, ino: u64, off: u64, data: &[u8]) -> R<usize> {
        self.write_killing(ctx, ino, off, data, ctx.uid != 0)
    }

    /// Writes; `kill_setid` (the kernel's FUSE_WRITE_KILL_SUIDGID: the writer lacks
    /// CAP_FSETID) clears set-user-ID, and set-group-ID when group-executable. (Capabilities
    /// the kernel removes itself before the write, with a REMOVEXATTR.)
    pub fn write_killing(
        &self,
        _ctx: &Ctx,
        ino: u64,
        off: u64,
        data: &[u8],
        kill_setid: bool,
    ) -> R<usize> {
        self.writable()?;
        let _g = self.data_lock(ino);
        Ok(self.io().write(ino, off, data, now(), kill_setid)?)
    }

    /// The kernel's write-back of cached pages (FUSE_WRITE_CACHE: mmap, writeback_cache): all
    /// of `data` or an error, since it takes no count (a short count would leave pages it
    /// believes written). The prefix written before the error stays, as a short write's does.
    pub fn write_back(&self, ino: u64, off: u64, data: &[u8], kill_setid: bool) -> R<usize> {
        self.writable()?;
        let _g = self.data_lock(ino);
        match self.io().write_prefix(ino, off, data, now(), kill_setid)? {
            (_, Some(e)) => Err(e.into()),
            (n, None) => Ok(n),
        }
    }

    /// copy_file_range: copies up to `len` bytes of `from` at `off_in` to `to` at `off_out`, in
    /// pieces of at most `piece` bytes (each a read and a write of its own, so the memory it
    /// needs is one request buffer's). Stops at the end of `from`; a destination past the
    /// largest file size is EFBIG, as the kernel's own filesystems answer. An error after some
    /// bytes were copied ends the copy short, as a short write does. The kernel has checked
    /// the descriptors' modes and that the ranges do not overlap within one file.
    pub fn copy_range(
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
    pub fn shut_down(&self, flush: ShutdownFlush) -> R<()> {
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
        let i = self.read_inode(ino)?;
        if i.mode & S_IFMT != S_IFREG {
            return Err(if is_dir(&i) {
                FsError::IsDir
            } else {
                FsError::NotSupported
            });
        }
        let _g = self.data_lock(ino);
        let t = now();
        if punch {
            self.io().punch_hole(ino, off, len, t)?;
        } else if zero {
            self.io().zero_range(ino, off, len, keep_size, t)?;
        } else {
            self.io().preallocate(ino, off, len, keep_size, t)?;
        }
        Ok(())
    }

    /// SEEK_DATA (`data`) or SEEK_HOLE.
    pub fn seek(&self, ino: u64, off: u64, data: bool) -> R<u64> {
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
    pub fn opendir(&self, ctx: &Ctx, ino: u64) -> R<bool> {
        let i = self.read_inode(ino)?;
        if !is_dir(&i) {
            return Err(FsError::NotDir);
        }
        may(ctx, &i, 4)?;
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

    /// May `ctx` read (`write` false) or set/remove the attribute `name` of `i`? Namespaces:
    /// user (regular files and directories, by their permission bits; in a sticky directory only
    /// its owner sets), trusted (root only), security (by write permission); others unsupported.
    fn xattr_access(ctx: &Ctx, i: &Inode, name: &[u8], write: bool) -> R<()> {
        if name.len() > crate::xattr::XATTR_NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        if name.contains(&0) {
            // The kernel never sends one (names are C strings); the library refuses it too, as
            // the stored rule (`format::xattrblock::name_problem`) does.
            return Err(FsError::Invalid("attribute name with a NUL byte".into()));
        }
        if crate::format::xattrblock::name_problem(name).is_some() {
            // A bare namespace ("user.") names nothing; any other name is outside the
            // namespaces stored.
            let bare = crate::format::xattrblock::NAMESPACES.contains(&name);
            return Err(if bare {
                FsError::Invalid("empty attribute name".into())
            } else {
                FsError::NotSupported
            });
        }
        if name.starts_with(b"user.") {
            let t = i.mode & S_IFMT;
            if t != S_IFREG && t != S_IFDIR {
                return Err(if write {
                    FsError::Perm
                } else {
                    FsError::NoAttr
                });
            }
            if write && t == S_IFDIR && i.mode & S_ISVTX != 0 && ctx.uid != 0 && ctx.uid != i.uid {
                return Err(FsError::Perm);
            }
            return may(ctx, i, if write { 2 } else { 4 });
        }
        if name.starts_with(b"trusted.") {
            return if ctx.uid == 0 {
                Ok(())
            } else if write {
                Err(FsError::Perm)
            } else {
                Err(FsError::NoAttr)
            };
        }
        if name.starts_with(b"security.") {
            return if write { may(ctx, i, 2) } else { Ok(()) };
        }
        Err(FsError::NotSupported)
    }

    /// Sets attribute `name`. `create`: fail if it exists; `replace`: fail if it does not.
    pub fn setxattr(
        &self,
        ctx: &Ctx,
        ino: u64,
        name: &[u8],
        value: &[u8],
        create: bool,
        replace: bool,
    ) -> R<()> {
        self.writable()?;
        let _blocks = self.promise(TransKind::Xattr, false)?;
        let mut tx = self.eng.begin(TransKind::Xattr)?;
        let (r, mut i) = inode::read(&mut tx, ino)?;
        Self::xattr_access(ctx, &i, name, true)?;
        let mut all = crate::xattr::load(&mut tx, ino, &i)?;
        match all.iter().position(|(n, _)| n == name) {
            Some(_) if create => return Err(FsError::Exists),
            Some(p) => all[p].1 = value.to_vec(),
            None if replace => return Err(FsError::NoAttr),
            None => all.push((name.to_vec(), value.to_vec())),
        }
        crate::xattr::store(&mut tx, &self.alloc, ino, &mut i, &all)?;
        i.ctime = now();
        inode::write(&mut tx, &r, &i);
        tx.commit()?;
        self.note_change(ino);
        Ok(())
    }

    pub fn getxattr(&self, ctx: &Ctx, ino: u64, name: &[u8]) -> R<Vec<u8>> {
        let mut tx = self.eng.begin(TransKind::Read)?;
        let (_, i) = inode::read(&mut tx, ino)?;
        Self::xattr_access(ctx, &i, name, false)?;
        let all = crate::xattr::load(&mut tx, ino, &i)?;
        tx.cancel()?;
        all.into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .ok_or(FsError::NoAttr)
    }

    /// Names of the attributes the caller may see, each followed by a NUL.
    pub fn listxattr(&self, ctx: &Ctx, ino: u64) -> R<Vec<u8>> {
        let mut tx = self.eng.begin(TransKind::Read)?;
        let (_, i) = inode::read(&mut tx, ino)?;
        let all = crate::xattr::load(&mut tx, ino, &i)?;
        tx.cancel()?;
        let mut out = Vec::new();
        for (n, _) in all {
            if n.starts_with(b"trusted.") && ctx.uid != 0 {
                continue;
            }
            out.extend_from_slice(&n);
            out.push(0);
        }
        Ok(out)
    }

    pub fn removexattr(&self, ctx: &Ctx, ino: u64, name: &[u8]) -> R<()> {
        self.writable()?;
        // Removing frees space: it may use the pool.
        let _blocks = self.promise(TransKind::Xattr, true)?;
        let mut tx = self.eng.begin(TransKind::Xattr)?;
        let (r, mut i) = inode::read(&mut tx, ino)?;
        Self::xattr_access(ctx, &i, name, true)?;
        let mut all = crate::xattr::load(&mut tx, ino, &i)?;
        let before = all.len();
        all.retain(|(n, _)| n != name);
        if all.len() == before {
            return Err(FsError::NoAttr);
        }
        crate::xattr::store(&mut tx, &self.alloc, ino, &mut i, &all)?;
        i.ctime = now();
        inode::write(&mut tx, &r, &i);
        tx.commit()?;
        self.note_change(ino);
        Ok(())
    }

    /// The extents of a file (for tests and tools).
    pub fn extents(&self, ino: u64) -> R<Vec<crate::format::inode::Extent>> {
        let mut tx = self.eng.begin(TransKind::Read)?;
        let (_, i) = inode::read(&mut tx, ino)?;
        let e = extmap::all(&mut tx, ino, &i)?;
        tx.cancel()?;
        Ok(e)
    }
}

/// A fresh, empty root directory (its own parent) for inode `ino`: mkfs, and fsck's repair when
/// the root is lost.
pub fn root_inode(tx: &mut Trans<'_>, alloc: &Allocator, ino: u64) -> Result<Inode, EngineError> {
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

/// Creates the root directory of a freshly formatted filesystem; returns its inode number.
pub fn make_root(eng: &Engine) -> Result<u64, EngineError> {
    let alloc = Allocator::new(*eng.geometry());
    let mut tx = eng.begin(TransKind::Mkdir)?;
    let ino = alloc
        .alloc_inode_new_chunk(&mut tx, 0)?
        .ok_or_else(|| EngineError::NoSpace("no inode for the root".into()))?;
    let r = inode::join_new(&mut tx, ino)?;
    let i = root_inode(&mut tx, &alloc, ino)?;
    inode::write(&mut tx, &r, &i);
    tx.commit()?;
    eng.force_all()?;
    Ok(ino)
}
