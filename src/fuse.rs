//! The FUSE adapter over `/dev/fuse` (fuser 0.18): turns fuser's requests into [`Ops`] calls
//! and their results into fuser's replies. Nothing else happens here.

use crate::format::inode::Time;
use crate::fs::{self, Attr, Ctx, SetAttr, SetTime};
use crate::ops::{self, Found, Ops, Xattr, TTL};
use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

fn err(n: i32) -> Errno {
    Errno::from_i32(n)
}

pub struct TicketFuse {
    ops: Arc<Ops>,
    writeback: bool,
    uring: bool,
    /// Set by INIT when the kernel took FUSE_OVER_IO_URING.
    uring_granted: Arc<AtomicBool>,
    /// Set once the io_uring queues serve: `/dev/fuse` then carries only FORGET and INTERRUPT.
    queues_serving: Arc<AtomicBool>,
}

/// While the io_uring queues serve, a `/dev/fuse` thread pauses this long after each FORGET (or
/// batch of them), so the kernel gathers the inodes it evicts meanwhile into one BATCH_FORGET
/// instead of waking a thread for each: unlinking 20,000 files spent 15% of the daemon's
/// profile waking `/dev/fuse` readers for single FORGETs and 6% on their queue's lock. Nothing
/// waits for a FORGET (ticketfs keeps no per-lookup state), and unmounting ends the pause.
const FORGET_PAUSE: Duration = Duration::from_millis(10);
/// A FORGET within this of the thread's last pause belongs to the batch it read after that
/// pause (fuser hands a BATCH_FORGET over one inode at a time) and does not pause again.
const FORGET_SAME_BATCH: Duration = Duration::from_millis(1);

thread_local! {
    static LAST_FORGET_PAUSE: std::cell::Cell<Option<std::time::Instant>> =
        const { std::cell::Cell::new(None) };
}

fn forget_pause() {
    let now = std::time::Instant::now();
    let recent = LAST_FORGET_PAUSE
        .get()
        .is_some_and(|t| now.duration_since(t) < FORGET_SAME_BATCH);
    if !recent {
        std::thread::sleep(FORGET_PAUSE);
        LAST_FORGET_PAUSE.set(Some(std::time::Instant::now()));
    }
}

impl TicketFuse {
    /// Serves `ops`. With `writeback` (`-o writeback_cache`, which implies default_permissions)
    /// the kernel keeps written pages and sends them in large writes: small appends become page
    /// copies (fstests' generic/069, 3 million 4-byte appends, took 700 s without it). Off by
    /// default: measured with benches/compare.sh it changed neither sequential nor random-write
    /// throughput, while every stat after a close went to the daemon (49k/s instead of 620k/s)
    /// and unlink ran at half the rate. With `uring` the INIT reply offers the kernel
    /// FUSE_OVER_IO_URING ([`crate::ring`] then registers the queues).
    pub fn new(ops: Arc<Ops>, writeback: bool, uring: bool) -> TicketFuse {
        TicketFuse {
            ops,
            writeback,
            uring,
            uring_granted: Arc::new(AtomicBool::new(false)),
            queues_serving: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Set by the caller once the io_uring queues serve.
    pub fn queues_serving(&self) -> Arc<AtomicBool> {
        self.queues_serving.clone()
    }

    /// Whether INIT granted FUSE over io_uring (read after the session's INIT exchange).
    pub fn uring_granted(&self) -> Arc<AtomicBool> {
        self.uring_granted.clone()
    }

    fn ino(&self, i: INodeNo) -> u64 {
        i.0
    }

    fn fattr(&self, a: &Attr) -> FileAttr {
        FileAttr {
            ino: INodeNo(self.ops.node(a.ino)),
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

    fn entry(&self, r: ops::Res<Attr>, reply: ReplyEntry) {
        match r {
            Ok(a) => reply.entry(&TTL, &self.fattr(&a), Generation(a.generation as u64)),
            Err(e) => reply.error(err(e)),
        }
    }

    fn attr(&self, r: ops::Res<Attr>, reply: ReplyAttr) {
        match r {
            Ok(a) => reply.attr(&TTL, &self.fattr(&a)),
            Err(e) => reply.error(err(e)),
        }
    }

    fn empty(r: ops::Res<()>, reply: ReplyEmpty) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn opened(r: ops::Res<u32>, reply: ReplyOpen) {
        match r {
            Ok(f) => reply.opened(FileHandle(0), FopenFlags::from_bits_retain(f)),
            Err(e) => reply.error(err(e)),
        }
    }

    fn xattr(r: ops::Res<Xattr>, reply: ReplyXattr) {
        match r {
            Ok(Xattr::Size(n)) => reply.size(n),
            Ok(Xattr::Data(v)) => reply.data(&v),
            Err(e) => reply.error(err(e)),
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

impl Filesystem for TicketFuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(self.ops.max_write());
        if self.writeback {
            // The kernel owns the file's size and times while it holds dirty pages: sound, as
            // this daemon is the only writer of its image.
            let _ = config.add_capabilities(InitFlags::FUSE_WRITEBACK_CACHE);
        }
        if self.uring
            && config
                .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
                .is_ok()
        {
            self.uring_granted.store(true, Ordering::Release);
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

    fn forget(&self, _req: &Request, _ino: INodeNo, _nlookup: u64) {
        if self.queues_serving.load(Ordering::Relaxed) {
            forget_pause();
        }
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self
            .ops
            .lookup(&ctx(req), self.ino(parent), name.as_bytes())
        {
            Ok(Found::Entry(a)) => self.entry(Ok(a), reply),
            Ok(Found::Negative) => reply.entry(&TTL, &negative_entry(), Generation(0)),
            Err(e) => reply.error(err(e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.attr(self.ops.getattr(self.ino(ino)), reply)
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
        self.attr(self.ops.setattr(&ctx(req), self.ino(ino), &a), reply)
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.ops.readlink(self.ino(ino)) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(err(e)),
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
        let r = self.ops.mknod(
            &ctx(req),
            self.ino(parent),
            name.as_bytes(),
            mode,
            umask,
            rdev,
        );
        self.entry(r, reply)
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
        let r = self
            .ops
            .mkdir(&ctx(req), self.ino(parent), name.as_bytes(), mode, umask);
        self.entry(r, reply)
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self
            .ops
            .remove(&ctx(req), self.ino(parent), name.as_bytes(), false);
        Self::empty(r, reply)
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self
            .ops
            .remove(&ctx(req), self.ino(parent), name.as_bytes(), true);
        Self::empty(r, reply)
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = self.ops.symlink(
            &ctx(req),
            self.ino(parent),
            link_name.as_bytes(),
            target.as_os_str().as_bytes(),
        );
        self.entry(r, reply)
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
        let r = self.ops.rename(
            &ctx(req),
            (self.ino(parent), name.as_bytes()),
            (self.ino(newparent), newname.as_bytes()),
            flags.bits(),
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
        let r = self.ops.link(
            &ctx(req),
            self.ino(ino),
            self.ino(newparent),
            newname.as_bytes(),
        );
        self.entry(r, reply)
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        Self::opened(self.ops.open(&ctx(req), self.ino(ino), flags.0), reply)
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
        let r = self.ops.read(self.ino(ino), offset, size, |bytes| {
            if let Some(rp) = reply.take() {
                rp.data(bytes);
            }
        });
        // The reply goes last of all, so an error anywhere still has it to tell.
        if let (Err(e), Some(rp)) = (r, reply) {
            rp.error(err(e));
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
        let r = self
            .ops
            .write(&ctx(req), self.ino(ino), offset, data, write_flags.bits());
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(err(e)),
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
        let r = self.ops.copy_file_range(
            &ctx(req),
            (self.ino(ino_in), offset_in),
            (self.ino(ino_out), offset_out),
            len,
        );
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(err(e)),
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
        Self::empty(self.ops.release(self.ino(ino)), reply)
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        Self::empty(self.ops.fsync(self.ino(ino), datasync), reply)
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        Self::opened(self.ops.opendir(&ctx(req), self.ino(ino)), reply)
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.ops.readdir(self.ino(ino), offset) {
            Ok(entries) => {
                for e in entries {
                    let node = INodeNo(self.ops.node(e.ino));
                    let kind = kind(ops::dtype_mode(e.ftype));
                    if reply.add(node, e.cookie, kind, OsStr::from_bytes(&e.name)) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(err(e)),
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
        match self.ops.readdirplus(&ctx(req), self.ino(ino), offset) {
            Ok(entries) => {
                for p in entries {
                    let a = &p.attr;
                    if reply.add(
                        INodeNo(self.ops.node(a.ino)),
                        p.entry.cookie,
                        OsStr::from_bytes(&p.entry.name),
                        &TTL,
                        &self.fattr(a),
                        Generation(a.generation as u64),
                    ) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(err(e)),
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
        Self::empty(self.ops.release(self.ino(ino)), reply)
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        Self::empty(self.ops.fsyncdir(), reply)
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.ops.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
            ),
            Err(e) => reply.error(err(e)),
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
        let r = self
            .ops
            .setxattr(&ctx(req), self.ino(ino), name.as_bytes(), value, flags);
        Self::empty(r, reply)
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let r = self
            .ops
            .getxattr(&ctx(req), self.ino(ino), name.as_bytes(), size);
        Self::xattr(r, reply)
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        Self::xattr(self.ops.listxattr(&ctx(req), self.ino(ino), size), reply)
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self
            .ops
            .removexattr(&ctx(req), self.ino(ino), name.as_bytes());
        Self::empty(r, reply)
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let r = self
            .ops
            .access(&ctx(req), self.ino(ino), mask.bits() as u32);
        Self::empty(r, reply)
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let r = self
            .ops
            .create(&ctx(req), self.ino(parent), name.as_bytes(), mode, umask);
        match r {
            Ok(a) => reply.created(
                &TTL,
                &self.fattr(&a),
                Generation(a.generation as u64),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(err(e)),
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
        Self::empty(
            self.ops.fallocate(self.ino(ino), offset, length, mode),
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
        match self.ops.lseek(self.ino(ino), offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(err(e)),
        }
    }
}
