//! The FUSE adapter (fuser 0.18): translates kernel requests into `Fs` calls and results into
//! replies. Nothing else happens here; [`errno`] is the one place errors become errnos.

use crate::engine::EngineError;
use crate::format::inode::Time;
use crate::fs::{self, Attr, Ctx, Fs, FsError, SetAttr, SetTime};
use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the kernel may cache entries and attributes. ticketfs is the only writer of its
/// image and every change reaches it through the kernel, which updates or drops its copy on
/// each (create, link, unlink, rename and setattr replies carry the new attributes; reads drop
/// the cached access time), so the copy stays right and a long time keeps `stat` and path
/// walks in the kernel, as for a kernel filesystem.
const TTL: Duration = Duration::from_secs(60);
/// Largest write the kernel sends in one request.
const MAX_WRITE: u32 = 1 << 20;
/// Entries one readdir reply carries at most (the kernel's buffer bounds it anyway).
const READDIR_BATCH: usize = 128;
/// Most bytes one copy_file_range reply reports: its count is 32 bits; a multiple of every
/// block size, so a long copy continues block-aligned.
const COPY_RANGE_MAX: u64 = 1 << 30;

/// Opens keep the kernel's page cache of the file: every change to the data reaches the image
/// through the kernel (writes, truncate, fallocate; copy_file_range's destination range the
/// kernel drops itself), so what it caches stays right, and a file read again after being
/// opened again is served from memory. (Directories likewise keep their cached listings,
/// FOPEN_CACHE_DIR: the kernel drops them when it changes the directory.) Not when an
/// access-time update is due (`Fs::open`): reads served from the cache never reach the daemon,
/// which keeps the access times (fstests' generic/003 under strictatime caught it).
const KEEP_CACHE: FopenFlags = FopenFlags::FOPEN_KEEP_CACHE;

fn cache_flags(keep: bool, flag: FopenFlags) -> FopenFlags {
    if keep {
        flag
    } else {
        FopenFlags::empty()
    }
}

/// The one mapping from filesystem errors to errnos.
pub fn errno(e: &FsError) -> Errno {
    let n = match e {
        FsError::NotFound => libc::ENOENT,
        FsError::Exists => libc::EEXIST,
        FsError::NotDir => libc::ENOTDIR,
        FsError::IsDir => libc::EISDIR,
        FsError::NotEmpty => libc::ENOTEMPTY,
        FsError::Access => libc::EACCES,
        FsError::Perm => libc::EPERM,
        FsError::NameTooLong => libc::ENAMETOOLONG,
        FsError::Invalid(_) => libc::EINVAL,
        FsError::TooManyLinks => libc::EMLINK,
        FsError::ReadOnly => libc::EROFS,
        FsError::NotSupported => libc::EOPNOTSUPP,
        FsError::NoData => libc::ENXIO,
        FsError::NoAttr => libc::ENODATA,
        FsError::Stale => libc::ESTALE,
        FsError::Engine(EngineError::NoSpace(_)) => libc::ENOSPC,
        FsError::Engine(EngineError::Stale(_)) => libc::ENOENT,
        FsError::Engine(EngineError::Invalid(_)) => libc::EINVAL,
        FsError::Engine(EngineError::TooBig(_)) => libc::EFBIG,
        FsError::Engine(EngineError::Shutdown(_)) => libc::EIO,
        FsError::Engine(EngineError::Io(d)) => d.errno(),
        FsError::Engine(EngineError::Corrupt(_)) => libc::EUCLEAN,
    };
    if let FsError::Engine(EngineError::Corrupt(c)) = e {
        eprintln!("ticketfs: {c}");
    }
    Errno::from_i32(n)
}

fn systime(t: Time) -> SystemTime {
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::new(t.sec as u64, t.nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs()) + Duration::from_nanos(t.nsec as u64)
    }
}

fn from_systime(t: SystemTime) -> Time {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Time {
            sec: d.as_secs() as i64,
            nsec: d.subsec_nanos(),
        },
        Err(e) => {
            let d = e.duration();
            let (s, n) = (d.as_secs() as i64, d.subsec_nanos());
            if n == 0 {
                Time { sec: -s, nsec: 0 }
            } else {
                Time {
                    sec: -s - 1,
                    nsec: 1_000_000_000 - n,
                }
            }
        }
    }
}

fn kind(mode: u32) -> FileType {
    match mode & fs::S_IFMT {
        fs::S_IFDIR => FileType::Directory,
        fs::S_IFLNK => FileType::Symlink,
        fs::S_IFIFO => FileType::NamedPipe,
        fs::S_IFSOCK => FileType::Socket,
        fs::S_IFCHR => FileType::CharDevice,
        fs::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn ctx(req: &Request) -> Ctx {
    Ctx {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

pub struct TicketFuse {
    fs: Arc<Fs>,
    max_write: u32,
    writeback: bool,
}

impl TicketFuse {
    /// Serves `fs`; writes are at most `max_write` bytes (chosen with the budget). With
    /// `writeback` (`-o writeback_cache`, which implies default_permissions) the kernel keeps
    /// written pages and sends them in large writes: small appends become page copies (fstests'
    /// generic/069, 3 million 4-byte appends, took 700 s without it). Off by default: measured
    /// with benches/compare.sh it changed neither sequential nor random-write throughput, while
    /// every stat after a close went to the daemon (49k/s instead of 620k/s) and unlink ran at
    /// half the rate.
    pub fn new(fs: Arc<Fs>, max_write: u32, writeback: bool) -> TicketFuse {
        TicketFuse {
            fs,
            max_write: max_write.clamp(4096, MAX_WRITE),
            writeback,
        }
    }

    /// FUSE calls the root 1; every other inode number is ours unchanged (ours are never 1).
    fn ino(&self, i: INodeNo) -> u64 {
        if i.0 == 1 {
            self.fs.root()
        } else {
            i.0
        }
    }

    /// Ours to FUSE's: the root is 1.
    fn out(&self, ino: u64) -> INodeNo {
        INodeNo(if ino == self.fs.root() { 1 } else { ino })
    }

    fn fattr(&self, a: &Attr) -> FileAttr {
        FileAttr {
            ino: self.out(a.ino),
            size: a.size,
            blocks: a.blocks,
            atime: systime(a.atime),
            mtime: systime(a.mtime),
            ctime: systime(a.ctime),
            crtime: systime(a.crtime),
            kind: kind(a.mode),
            perm: (a.mode & 0o7777) as u16,
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            rdev: a.rdev as u32,
            blksize: a.blksize,
            flags: 0,
        }
    }

    fn entry(&self, r: Result<Attr, FsError>, reply: ReplyEntry) {
        match r {
            Ok(a) => reply.entry(&TTL, &self.fattr(&a), Generation(a.generation as u64)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn empty(r: Result<(), FsError>, reply: ReplyEmpty) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

/// The attributes of a negative entry: node 0 tells the kernel the name does not exist; the
/// rest is not read.
fn negative_entry() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: fuser::FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    t.map(|t| match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(s) => SetTime::At(from_systime(s)),
    })
}

/// The kernel's `__FMODE_EXEC` open flag: execve opens the file to run it, which needs execute
/// permission, not read.
const FMODE_EXEC: i32 = 0o40;

fn want(flags: OpenFlags) -> u32 {
    if flags.0 & FMODE_EXEC != 0 {
        return 1;
    }
    match flags.acc_mode() {
        OpenAccMode::O_RDONLY => 4,
        OpenAccMode::O_WRONLY => 2,
        OpenAccMode::O_RDWR => 6,
    }
}

impl Filesystem for TicketFuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(self.max_write);
        if self.writeback {
            // The kernel owns the file's size and times while it holds dirty pages: sound, as
            // this daemon is the only writer of its image.
            let _ = config.add_capabilities(InitFlags::FUSE_WRITEBACK_CACHE);
        }
        let _ = config.add_capabilities(
            InitFlags::FUSE_BIG_WRITES
                | InitFlags::FUSE_ASYNC_READ
                | InitFlags::FUSE_PARALLEL_DIROPS
                | InitFlags::FUSE_DO_READDIRPLUS
                | InitFlags::FUSE_READDIRPLUS_AUTO
                | InitFlags::FUSE_CACHE_SYMLINKS
                // Lookups of "." and ".." answered for any inode: file handles
                // (name_to_handle_at / open_by_handle_at, NFS export) outlive the kernel's cache.
                | InitFlags::FUSE_EXPORT_SUPPORT
                // The daemon drops set-id bits on write, truncate and chown
                // (FUSE_WRITE_KILL_SUIDGID, `Fs::setattr`), so the kernel marks files without
                // them or capabilities as such (SB_NOSEC) instead of asking for
                // security.capability before every write: one round trip per write, not two.
                | InitFlags::FUSE_HANDLE_KILLPRIV_V2,
        );
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(&ctx(req), self.ino(parent), name.as_bytes()) {
            // A name that is not there is cached as such for TTL (a negative entry: node 0), as
            // a kernel filesystem keeps negative dentries: a shell's PATH search, a loader's
            // library search or a compiler's include search asks again and again for names
            // that do not exist. Safe for the reason TTL is: the name can only appear through
            // this kernel (create, link, rename, symlink replace the cached entry; an exclusive
            // create looks up afresh anyway).
            Err(FsError::NotFound) => reply.entry(&TTL, &negative_entry(), Generation(0)),
            r => self.entry(r, reply),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(self.ino(ino)) {
            Ok(a) => reply.attr(&TTL, &self.fattr(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let a = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: set_time(atime),
            mtime: set_time(mtime),
            via_open_file: fh.is_some(),
        };
        match self.fs.setattr(&ctx(req), self.ino(ino), &a) {
            Ok(a) => reply.attr(&TTL, &self.fattr(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(self.ino(ino)) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let mode = mode & !(umask & 0o777);
        self.entry(
            self.fs.make(
                &ctx(req),
                self.ino(parent),
                name.as_bytes(),
                mode,
                rdev as u64,
                None,
            ),
            reply,
        )
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mode = fs::S_IFDIR | (mode & 0o7777 & !umask);
        self.entry(
            self.fs
                .make(&ctx(req), self.ino(parent), name.as_bytes(), mode, 0, None),
            reply,
        )
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        Self::empty(
            self.fs
                .remove(&ctx(req), self.ino(parent), name.as_bytes(), false),
            reply,
        )
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        Self::empty(
            self.fs
                .remove(&ctx(req), self.ino(parent), name.as_bytes(), true),
            reply,
        )
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let mode = fs::S_IFLNK | 0o777;
        self.entry(
            self.fs.make(
                &ctx(req),
                self.ino(parent),
                link_name.as_bytes(),
                mode,
                0,
                Some(target.as_os_str().as_bytes()),
            ),
            reply,
        )
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::from_i32(libc::EINVAL));
        }
        let r = self.fs.rename(
            &ctx(req),
            self.ino(parent),
            name.as_bytes(),
            self.ino(newparent),
            newname.as_bytes(),
            flags.contains(RenameFlags::RENAME_NOREPLACE),
            flags.contains(RenameFlags::RENAME_EXCHANGE),
        );
        Self::empty(r, reply)
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.entry(
            self.fs.link(
                &ctx(req),
                self.ino(ino),
                self.ino(newparent),
                newname.as_bytes(),
            ),
            reply,
        )
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.open(&ctx(req), self.ino(ino), want(flags)) {
            Ok(keep) => reply.opened(FileHandle(0), cache_flags(keep, KEEP_CACHE)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut reply = Some(reply);
        let r = self
            .fs
            .read_with(self.ino(ino), offset, size as usize, |bytes| {
                if let Some(rp) = reply.take() {
                    rp.data(bytes);
                }
            });
        // The reply goes last of all, so an error anywhere still has it to tell.
        if let (Err(e), Some(rp)) = (r, reply) {
            rp.error(errno(&e));
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let kill = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        match self
            .fs
            .write_killing(&ctx(req), self.ino(ino), offset, data, kill)
        {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn copy_file_range(
        &self,
        req: &Request,
        ino_in: INodeNo,
        _fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        _fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        // The reply counts bytes in 32 bits: a longer copy is answered short, and the caller
        // asks again for the rest.
        let len = len.min(COPY_RANGE_MAX);
        match self.fs.copy_range(
            &ctx(req),
            (self.ino(ino_in), offset_in),
            (self.ino(ino_out), offset_out),
            len,
            self.max_write as usize,
        ) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing to do at close (writes are done when they return, no POSIX locks here), and
        // ENOSYS tells the kernel so: it stops sending FLUSH, which saves a round trip per
        // close(2).
        reply.error(Errno::ENOSYS)
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        Self::empty(self.fs.release(self.ino(ino)), reply)
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = if datasync {
            self.fs.fdatasync(self.ino(ino))
        } else {
            self.fs.fsync()
        };
        Self::empty(r, reply)
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(&ctx(req), self.ino(ino)) {
            Ok(keep) => reply.opened(
                FileHandle(0),
                cache_flags(keep, FopenFlags::FOPEN_CACHE_DIR),
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.fs.readdir(self.ino(ino), offset, READDIR_BATCH) {
            Ok(entries) => {
                for e in entries {
                    let ino = self.out(e.ino);
                    if reply.add(
                        ino,
                        e.cookie,
                        kind(dtype_mode(e.ftype)),
                        OsStr::from_bytes(&e.name),
                    ) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let c = ctx(req);
        let dir = self.ino(ino);
        match self.fs.readdir(dir, offset, READDIR_BATCH) {
            Ok(entries) => {
                for e in entries {
                    let attr = if e.name == b"." || e.name == b".." {
                        self.fs.getattr(e.ino)
                    } else {
                        self.fs.lookup(&c, dir, &e.name)
                    };
                    let Ok(a) = attr else { continue };
                    if reply.add(
                        self.out(a.ino),
                        e.cookie,
                        OsStr::from_bytes(&e.name),
                        &TTL,
                        &self.fattr(&a),
                        Generation(a.generation as u64),
                    ) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        match self.fs.release(self.ino(ino)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        Self::empty(self.fs.fsync(), reply)
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let create = flags & libc::XATTR_CREATE != 0;
        let replace = flags & libc::XATTR_REPLACE != 0;
        Self::empty(
            self.fs.setxattr(
                &ctx(req),
                self.ino(ino),
                name.as_bytes(),
                value,
                create,
                replace,
            ),
            reply,
        )
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.fs.getxattr(&ctx(req), self.ino(ino), name.as_bytes()) {
            Ok(v) => sized(v, size, reply),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fs.listxattr(&ctx(req), self.ino(ino)) {
            Ok(v) => sized(v, size, reply),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        Self::empty(
            self.fs
                .removexattr(&ctx(req), self.ino(ino), name.as_bytes()),
            reply,
        )
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        Self::empty(
            self.fs.access(&ctx(req), self.ino(ino), mask.bits() as u32),
            reply,
        )
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let c = ctx(req);
        let mode = fs::S_IFREG | (mode & 0o7777 & !umask);
        match self
            .fs
            .make(&c, self.ino(parent), name.as_bytes(), mode, 0, None)
        {
            Ok(a) => {
                // The creator may write what it just made, whatever the mode says.
                let _ = flags;
                match self.fs.open(&Ctx::ROOT, a.ino, 4) {
                    Ok(_) => reply.created(
                        &TTL,
                        &self.fattr(&a),
                        Generation(a.generation as u64),
                        FileHandle(0),
                        FopenFlags::empty(),
                    ),
                    Err(e) => reply.error(errno(&e)),
                }
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let keep = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let punch = mode & libc::FALLOC_FL_PUNCH_HOLE != 0;
        let zero = mode & libc::FALLOC_FL_ZERO_RANGE != 0;
        let known =
            libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE;
        if mode & !known != 0 || (punch && !keep) || (punch && zero) {
            return reply.error(Errno::from_i32(libc::EOPNOTSUPP));
        }
        Self::empty(
            self.fs
                .fallocate(self.ino(ino), offset, length, keep, punch, zero),
            reply,
        )
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let r = match whence {
            // As the kernel's own filesystems: no data or hole before offset 0 either.
            libc::SEEK_DATA | libc::SEEK_HOLE if offset < 0 => {
                return reply.error(Errno::from_i32(libc::ENXIO))
            }
            libc::SEEK_DATA => self.fs.seek(self.ino(ino), offset as u64, true),
            libc::SEEK_HOLE => self.fs.seek(self.ino(ino), offset as u64, false),
            _ => return reply.error(Errno::from_i32(libc::EINVAL)),
        };
        match r {
            Ok(o) => reply.offset(o as i64),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

/// Replies to an xattr request: its size when the caller asks with size 0, the bytes when they
/// fit, ERANGE when they do not.
fn sized(v: Vec<u8>, size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(v.len() as u32)
    } else if v.len() > size as usize {
        reply.error(Errno::from_i32(libc::ERANGE))
    } else {
        reply.data(&v)
    }
}

/// A mode with the file type of a readdir type, for `kind`.
fn dtype_mode(t: u8) -> u32 {
    match t {
        4 => fs::S_IFDIR,
        10 => fs::S_IFLNK,
        1 => fs::S_IFIFO,
        12 => fs::S_IFSOCK,
        2 => fs::S_IFCHR,
        6 => fs::S_IFBLK,
        _ => fs::S_IFREG,
    }
}
