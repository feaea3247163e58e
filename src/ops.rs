//! What each FUSE request does, whichever transport brought it: `/dev/fuse`
//! ([`crate::devfuse`]) or the kernel's io_uring queues ([`crate::ring`]). Requests arrive here as
//! plain values (FUSE node ids, names as bytes, the kernel's flag words) and leave as results the
//! transports encode; errors leave as errnos, mapped in one place ([`errno`]).

use crate::dir::DirEntry;
use crate::error::EngineError;
use crate::fs::{self, Attr, Ctx, Fs, FsError, SetAttr, StatFs};
use std::sync::Arc;
use std::time::Duration;

/// How long the kernel may cache entries and attributes. ticketfs is the only writer of its
/// image and every change reaches it through the kernel, which updates or drops its copy on
/// each (create, link, unlink, rename and setattr replies carry the new attributes; reads drop
/// the cached access time), so the copy stays right and a long time keeps `stat` and path
/// walks in the kernel, as for a kernel filesystem.
pub(crate) const TTL: Duration = Duration::from_secs(60);
/// Largest write the kernel sends in one request.
pub(crate) const MAX_WRITE: u32 = 1 << 20;
/// Entries one readdir reply carries at most (the kernel's buffer bounds it anyway).
pub(crate) const READDIR_BATCH: usize = 128;
/// Most bytes one copy_file_range reply reports: its count is 32 bits; a multiple of every
/// block size, so a long copy continues block-aligned.
pub(crate) const COPY_RANGE_MAX: u64 = 1 << 30;

/// FOPEN_KEEP_CACHE. Opens keep the kernel's page cache of the file: every change to the data
/// reaches the image through the kernel (writes, truncate, fallocate; copy_file_range's
/// destination range the kernel drops itself), so what it caches stays right, and a file read
/// again after being opened again is served from memory. Not when an access-time update is due
/// (`Fs::open`): reads served from the cache never reach the daemon, which keeps the access
/// times (fstests' generic/003 under strictatime caught it).
pub(crate) const FOPEN_KEEP_CACHE: u32 = 1 << 1;
/// FOPEN_CACHE_DIR: directories likewise keep their cached listings; the kernel drops them
/// when it changes the directory.
pub(crate) const FOPEN_CACHE_DIR: u32 = 1 << 3;
/// The kernel's `__FMODE_EXEC` open flag: execve opens the file to run it, which needs execute
/// permission, not read.
const FMODE_EXEC: i32 = 0o40;
/// FUSE_WRITE_CACHE in a write's flags: the kernel writing back cached pages.
pub(crate) const WRITE_CACHE: u32 = 1 << 0;
/// FUSE_WRITE_KILL_SUIDGID in a write's flags: the writer lacks CAP_FSETID.
pub(crate) const WRITE_KILL_SUIDGID: u32 = 1 << 2;
/// RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT of renameat2(2).
const RENAME_NOREPLACE: u32 = 1;
const RENAME_EXCHANGE: u32 = 2;
const RENAME_WHITEOUT: u32 = 4;

/// FS_IOC_SHUTDOWN, which is XFS_IOC_GOINGDOWN: `_IOR('X', 125, __u32)`.
const FS_IOC_SHUTDOWN: u32 = 0x8004_587D;
/// FS_IOC_GETFLAGS and FS_IOC_SETFLAGS, `_IOR('f', 1, long)` and `_IOW('f', 2, long)`: what
/// lsattr and chattr reach. The kernel answers them through its fileattr calls, which FUSE
/// passes on (fs/fuse/ioctl.c, `fuse_priv_ioctl`) with these 64-bit numbers but a 4-byte flags
/// word (in_size or out_size 4), for files and directories (FUSE_IOCTL_DIR) alike; the 32-bit
/// numbers (`_IOR('f', 1, int)`) are taken too.
const FS_IOC_GETFLAGS: u32 = 0x8008_6601;
const FS_IOC_SETFLAGS: u32 = 0x4008_6602;
const FS_IOC32_GETFLAGS: u32 = 0x8004_6601;
const FS_IOC32_SETFLAGS: u32 = 0x4004_6602;
/// FS_IOC_FSGETXATTR and FS_IOC_FSSETXATTR, `_IOR('X', 31, struct fsxattr)` and `_IOW('X', 32,
/// struct fsxattr)`: xfs_io's lsattr, chattr, lsproj and chproj, passed on the same way.
const FS_IOC_FSGETXATTR: u32 = 0x801C_581F;
const FS_IOC_FSSETXATTR: u32 = 0x401C_5820;
/// Bytes of the flags word FS_IOC_GETFLAGS and FS_IOC_SETFLAGS carry through FUSE.
const FLAGS_WORD_BYTES: usize = 4;
/// struct fsxattr: fsx_xflags, fsx_extsize, fsx_nextents, fsx_projid, fsx_cowextsize (u32 each),
/// then 8 bytes of padding.
const FSXATTR_BYTES: usize = 28;
const FSX_XFLAGS_OFF: usize = 0;
const FSX_NEXTENTS_OFF: usize = 8;
const FSX_PROJID_OFF: usize = 12;

/// Reads a u32 from process `pid`'s memory at `addr` (the shutdown ioctl's flags word).
fn read_caller_u32(pid: u32, addr: u64) -> Option<u32> {
    let mut word = [0u8; 4];
    let local = libc::iovec {
        iov_base: word.as_mut_ptr().cast(),
        iov_len: 4,
    };
    let remote = libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: 4,
    };
    // SAFETY: one local iovec over `word`; the remote address is only read by the kernel,
    // which checks it against the caller's mappings.
    let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    (n == 4).then(|| u32::from_ne_bytes(word))
}

/// The one mapping from filesystem errors to errnos.
pub(crate) fn errno(e: &FsError) -> i32 {
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
        FsError::ValueTooBig => libc::E2BIG,
        FsError::Stale => libc::ESTALE,
        FsError::CrossProject => libc::EXDEV,
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
    n
}

/// A request's outcome: its value or an errno.
pub(crate) type Res<T> = Result<T, i32>;

fn res<T>(r: Result<T, FsError>) -> Res<T> {
    r.map_err(|e| errno(&e))
}

/// A lookup's answer: the entry, or that the name is not there.
pub(crate) enum Found {
    Entry(Attr),
    /// Cached as such for TTL (a negative entry: node 0), as a kernel filesystem keeps negative
    /// dentries: a shell's PATH search, a loader's library search or a compiler's include search
    /// asks again and again for names that do not exist. Safe for the reason TTL is: the name
    /// can only appear through this kernel (create, link, rename, symlink replace the cached
    /// entry; an exclusive create looks up afresh anyway).
    Negative,
}

/// An xattr request's answer: the size the caller asked for with size 0, or the bytes.
pub(crate) enum Xattr {
    Size(u32),
    Data(Vec<u8>),
}

/// A readdirplus entry: the directory entry and the attributes of what it names.
pub(crate) struct PlusEntry {
    pub(crate) entry: DirEntry,
    pub(crate) attr: Attr,
}

/// The filesystem as the kernel's requests see it.
pub(crate) struct Ops {
    fs: Arc<Fs>,
    max_write: u32,
    /// What DESTROY does (the daemon's unmount), run once; see [`Ops::on_destroy`].
    destroy: parking_lot::Mutex<Option<DestroyHook>>,
    /// Requests being served now (DESTROY waits for the others to finish).
    active: std::sync::atomic::AtomicUsize,
    /// Tells the kernel to drop its cached attributes of a node; see [`Ops::on_attr_change`].
    attr_changed: std::sync::OnceLock<AttrChangedHook>,
    /// FUSE_STATX is answered (statx(2) shows birth times); see [`Ops::without_btime`].
    btime: bool,
    /// See [`Ops::with_setxattr_ext`].
    setxattr_ext: bool,
}

/// Tells the kernel that a node's attributes changed behind its back (FUSE_NOTIFY_INVAL_INODE).
pub(crate) type AttrChangedHook = Box<dyn Fn(u64) + Send + Sync>;

/// How long DESTROY waits for the requests being served beside it to finish: one waiting for
/// log space or memory finishes once the log writes and the AIL pushes, so this is a bound for
/// a stuck device, not a wait that happens.
const DESTROY_WAIT: Duration = Duration::from_secs(30);

/// A request being served: counted in [`Ops::active`] until dropped.
pub(crate) struct Active<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The daemon's unmount, run when the kernel sends DESTROY: its error, if any, names what
/// failed.
pub(crate) type DestroyHook = Box<dyn FnOnce() -> Result<(), String> + Send>;

impl Ops {
    /// Serves `fs`; writes are at most `max_write` bytes (chosen with the budget).
    pub(crate) fn new(fs: Arc<Fs>, max_write: u32) -> Ops {
        Ops {
            fs,
            max_write: max_write.clamp(4096, MAX_WRITE),
            destroy: parking_lot::Mutex::new(None),
            active: std::sync::atomic::AtomicUsize::new(0),
            attr_changed: std::sync::OnceLock::new(),
            btime: true,
            setxattr_ext: false,
        }
    }

    /// Refuses FUSE_STATX (`-o btime=off`). The kernel learns a node's attributes from LOOKUP,
    /// CREATE and READDIRPLUS replies, which carry no birth time, so it sends FUSE_STATX the
    /// first time a caller asks statx(2) for the birth time of each node: a round trip per
    /// file for a tree walk whose stat asks for every field (Rust's `fs::metadata` does). After
    /// one ENOSYS the kernel stops asking for the connection's life and answers from its cache,
    /// without STATX_BTIME in the mask.
    pub(crate) fn without_btime(mut self) -> Ops {
        self.btime = false;
        self
    }

    /// Whether FUSE_STATX is answered.
    pub(crate) fn answers_statx(&self) -> bool {
        self.btime
    }

    /// The kernel granted FUSE_SETXATTR_EXT at INIT (`Granted::setxattr_ext`): its SETXATTR
    /// requests carry the 16-byte fuse_setxattr_in.
    pub(crate) fn with_setxattr_ext(mut self, granted: bool) -> Ops {
        self.setxattr_ext = granted;
        self
    }

    pub(crate) fn setxattr_ext(&self) -> bool {
        self.setxattr_ext
    }

    /// Sets how to tell the kernel a node's attributes changed where it does not look: a
    /// change of flags (its fileattr calls leave the cached attributes, and so the old change
    /// time, in place for `TTL`). Set once; later calls are ignored.
    pub(crate) fn on_attr_change(&self, hook: AttrChangedHook) {
        let _ = self.attr_changed.set(hook);
    }

    /// Counts a request as being served until the guard is dropped.
    pub(crate) fn enter(&self) -> Active<'_> {
        self.active
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Active(&self.active)
    }

    /// Sets what DESTROY does. The kernel sends DESTROY to a `fuseblk` mount while unmounting
    /// it and returns from umount(2) only once it is answered: the daemon writes everything
    /// home and releases the image first (`main.rs`), so whoever unmounted finds it free.
    pub(crate) fn on_destroy(&self, hook: DestroyHook) {
        *self.destroy.lock() = Some(hook);
    }

    /// DESTROY: once the other requests being served have finished, runs the hook once (a
    /// later DESTROY, or none set, does nothing). Requests the kernel queued before DESTROY
    /// (asynchronous RELEASEs) are read before it from the same queue; one on another CPU's
    /// io_uring queue that no thread has taken yet is dropped when the connection closes, and
    /// what it would have done (free a file unlinked while open) the next mount does from the
    /// unlinked trees.
    pub(crate) fn destroy(&self) -> Res<()> {
        let deadline = std::time::Instant::now() + DESTROY_WAIT;
        // This request is one of the active ones.
        while self.active.load(std::sync::atomic::Ordering::Acquire) > 1
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        let hook = self.destroy.lock().take();
        match hook.map(|h| h()) {
            Some(Err(e)) => {
                eprintln!("ticketfs: unmount: {e}");
                Err(libc::EIO)
            }
            _ => Ok(()),
        }
    }

    /// FUSE calls the root 1; every other inode number is ours unchanged (ours are never 1).
    pub(crate) fn ino(&self, node: u64) -> u64 {
        if node == 1 {
            self.fs.root()
        } else {
            node
        }
    }

    /// Ours to FUSE's: the root is 1.
    pub(crate) fn node(&self, ino: u64) -> u64 {
        if ino == self.fs.root() {
            1
        } else {
            ino
        }
    }

    pub(crate) fn lookup(&self, c: &Ctx, parent: u64, name: &[u8]) -> Res<Found> {
        match self.fs.lookup(c, self.ino(parent), name) {
            Ok(a) => Ok(Found::Entry(a)),
            Err(FsError::NotFound) => Ok(Found::Negative),
            Err(e) => Err(errno(&e)),
        }
    }

    pub(crate) fn getattr(&self, node: u64) -> Res<Attr> {
        res(self.fs.getattr(self.ino(node)))
    }

    pub(crate) fn setattr(&self, c: &Ctx, node: u64, a: &SetAttr) -> Res<Attr> {
        res(self.fs.setattr(c, self.ino(node), a))
    }

    pub(crate) fn readlink(&self, node: u64) -> Res<Vec<u8>> {
        res(self.fs.readlink(self.ino(node)))
    }

    /// mknod, mkdir and create: `c` carries the caller's umask, which the POSIX layer applies
    /// (or the directory's default ACL in its place).
    pub(crate) fn mknod(
        &self,
        c: &Ctx,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
    ) -> Res<Attr> {
        res(self
            .fs
            .make(c, self.ino(parent), name, mode, rdev as u64, None))
    }

    pub(crate) fn mkdir(&self, c: &Ctx, parent: u64, name: &[u8], mode: u32) -> Res<Attr> {
        let mode = fs::S_IFDIR | (mode & 0o7777);
        res(self.fs.make(c, self.ino(parent), name, mode, 0, None))
    }

    pub(crate) fn symlink(&self, c: &Ctx, parent: u64, name: &[u8], target: &[u8]) -> Res<Attr> {
        let mode = fs::S_IFLNK | 0o777;
        res(self
            .fs
            .make(c, self.ino(parent), name, mode, 0, Some(target)))
    }

    pub(crate) fn remove(&self, c: &Ctx, parent: u64, name: &[u8], rmdir: bool) -> Res<()> {
        res(self.fs.remove(c, self.ino(parent), name, rmdir))
    }

    /// `flags` as renameat2(2) takes them.
    pub(crate) fn rename(
        &self,
        c: &Ctx,
        (parent, name): (u64, &[u8]),
        (newparent, newname): (u64, &[u8]),
        flags: u32,
    ) -> Res<()> {
        if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT) != 0 {
            return Err(libc::EINVAL);
        }
        let how = fs::RenameHow {
            noreplace: flags & RENAME_NOREPLACE != 0,
            exchange: flags & RENAME_EXCHANGE != 0,
            whiteout: flags & RENAME_WHITEOUT != 0,
        };
        res(self.fs.rename(
            c,
            (self.ino(parent), name),
            (self.ino(newparent), newname),
            how,
        ))
    }

    pub(crate) fn link(&self, c: &Ctx, node: u64, newparent: u64, newname: &[u8]) -> Res<Attr> {
        res(self
            .fs
            .link(c, self.ino(node), self.ino(newparent), newname))
    }

    /// `flags` are open(2)'s; the answer is the FOPEN_* flags of the reply.
    pub(crate) fn open(&self, c: &Ctx, node: u64, flags: i32) -> Res<u32> {
        let append = flags & libc::O_APPEND != 0;
        let keep = res(self.fs.open_as(c, self.ino(node), want(flags), append))?;
        Ok(if keep { FOPEN_KEEP_CACHE } else { 0 })
    }

    /// Hands the bytes read to `f` (which sends them) and returns what it returned.
    pub(crate) fn read<T>(
        &self,
        node: u64,
        off: u64,
        size: u32,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Res<T> {
        res(self.fs.read_with(self.ino(node), off, size as usize, f))
    }

    pub(crate) fn write(
        &self,
        c: &Ctx,
        node: u64,
        off: u64,
        data: &[u8],
        write_flags: u32,
    ) -> Res<u32> {
        let kill = write_flags & WRITE_KILL_SUIDGID != 0;
        // The kernel's write-back of cached pages (mmap, writeback_cache) takes no count: a
        // short write there would leave pages it believes written. It gets the error instead,
        // which the next fsync reports.
        let n = if write_flags & WRITE_CACHE != 0 {
            res(self.fs.write_back(self.ino(node), off, data, kill))?
        } else {
            res(self.fs.write_killing(c, self.ino(node), off, data, kill))?
        };
        Ok(n as u32)
    }

    pub(crate) fn copy_file_range(
        &self,
        c: &Ctx,
        (from, off_in): (u64, u64),
        (to, off_out): (u64, u64),
        len: u64,
    ) -> Res<u32> {
        // The reply counts bytes in 32 bits: a longer copy is answered short, and the caller
        // asks again for the rest.
        let len = len.min(COPY_RANGE_MAX);
        res(self.fs.copy_range(
            c,
            (self.ino(from), off_in),
            (self.ino(to), off_out),
            len,
            self.max_write as usize,
        ))
        .map(|n| n as u32)
    }

    pub(crate) fn release(&self, node: u64) -> Res<()> {
        res(self.fs.release(self.ino(node)))
    }

    pub(crate) fn fsync(&self, node: u64, datasync: bool) -> Res<()> {
        if datasync {
            res(self.fs.fdatasync(self.ino(node)))
        } else {
            res(self.fs.fsync())
        }
    }

    pub(crate) fn fsyncdir(&self) -> Res<()> {
        res(self.fs.fsync())
    }

    /// An ioctl on `node`: the inode flags' (`ioctl_flags`), or the shutdown ioctl
    /// (`shutdown`); every other is ENOTTY. `input` is what the kernel copied from the caller
    /// (`_IOC_SIZE(cmd)` bytes of an ioctl encoded as writing, _IOW; none for _IOR); the
    /// answer's bytes are at most `out_size`, what the kernel copies back.
    pub(crate) fn ioctl(
        &self,
        c: &Ctx,
        node: u64,
        cmd: u32,
        arg: u64,
        (input, out_size): (&[u8], u32),
    ) -> Res<(i32, Vec<u8>)> {
        match cmd {
            FS_IOC_SHUTDOWN => self.shutdown(c, arg, out_size),
            FS_IOC_GETFLAGS | FS_IOC32_GETFLAGS | FS_IOC_SETFLAGS | FS_IOC32_SETFLAGS
            | FS_IOC_FSGETXATTR | FS_IOC_FSSETXATTR => {
                self.ioctl_flags(c, node, cmd, input, out_size)
            }
            _ => Err(libc::ENOTTY),
        }
    }

    /// The inode flags' ioctls: chattr and lsattr (FS_IOC_SETFLAGS, FS_IOC_GETFLAGS, a flags
    /// word of FS_*_FL bits), xfs_io's chattr, lsattr, chproj and lsproj (FS_IOC_FSSETXATTR,
    /// FS_IOC_FSGETXATTR, a `struct fsxattr`). A flag with no meaning here is EOPNOTSUPP, as
    /// XFS answers; the extent size hints a `struct fsxattr` carries are ignored, as ext4 does.
    /// After a change the kernel is told to drop the node's cached attributes (the change
    /// time moved).
    fn ioctl_flags(
        &self,
        c: &Ctx,
        node: u64,
        cmd: u32,
        input: &[u8],
        out_size: u32,
    ) -> Res<(i32, Vec<u8>)> {
        let ino = self.ino(node);
        let word = |b: &[u8], at: usize| -> Res<u32> {
            b.get(at..at + 4)
                .and_then(|w| w.try_into().ok())
                .map(u32::from_ne_bytes)
                .ok_or(libc::EINVAL)
        };
        let fits = |n: usize| {
            if (out_size as usize) < n {
                Err(libc::EINVAL)
            } else {
                Ok(())
            }
        };
        let (flags, projid) = match cmd {
            FS_IOC_GETFLAGS | FS_IOC32_GETFLAGS => {
                fits(FLAGS_WORD_BYTES)?;
                let f = res(self.fs.file_flags(ino))?;
                return Ok((0, fs::to_fs_flags(f.flags).to_ne_bytes().to_vec()));
            }
            FS_IOC_FSGETXATTR => {
                fits(FSXATTR_BYTES)?;
                let f = res(self.fs.file_flags(ino))?;
                let mut out = vec![0u8; FSXATTR_BYTES];
                for (at, v) in [
                    (FSX_XFLAGS_OFF, fs::to_xflags(f.flags)),
                    (FSX_NEXTENTS_OFF, res(self.fs.extent_count(ino))?),
                    (FSX_PROJID_OFF, f.projid),
                ] {
                    out[at..at + 4].copy_from_slice(&v.to_ne_bytes());
                }
                return Ok((0, out));
            }
            // The kernel checks FS_IOC_SETFLAGS and FS_IOC_FSSETXATTR itself (owner or
            // capable, CAP_LINUX_IMMUTABLE; `vfs_fileattr_set`) and sends them as these
            // requests; FS_IOC32_SETFLAGS from a 64-bit caller comes as issued, unchecked, so an
            // unnamed caller of it cannot be judged and is refused.
            FS_IOC32_SETFLAGS if c.unknown() => return Err(libc::EPERM),
            FS_IOC_SETFLAGS | FS_IOC32_SETFLAGS => (res(fs::from_fs_flags(word(input, 0)?))?, None),
            _ => {
                if input.len() < FSXATTR_BYTES {
                    return Err(libc::EINVAL);
                }
                let flags = res(fs::from_xflags(word(input, FSX_XFLAGS_OFF)?))?;
                (flags, Some(word(input, FSX_PROJID_OFF)?))
            }
        };
        res(self.fs.set_file_flags(c, ino, flags, projid))?;
        if let Some(tell) = self.attr_changed.get() {
            tell(node);
        }
        Ok((0, Vec::new()))
    }

    /// The shutdown ioctl (FS_IOC_SHUTDOWN, XFS_IOC_GOINGDOWN: what `xfs_io -x -c shutdown` and
    /// fstests' godown send), by root, as XFS allows it only with CAP_SYS_ADMIN. The kernel
    /// passes a FUSE daemon no input for an ioctl encoded as reading (_IOR), as this one is,
    /// so its flags word is read from the caller's memory at the address it passed; should
    /// that fail, the flags are taken as 0 (flush everything first), the safe side.
    fn shutdown(&self, c: &Ctx, arg: u64, out_size: u32) -> Res<(i32, Vec<u8>)> {
        if !c.is_root() {
            return Err(libc::EPERM);
        }
        let flags = read_caller_u32(c.pid, arg).unwrap_or(0);
        let flush = match flags {
            0 => fs::ShutdownFlush::All,
            1 => fs::ShutdownFlush::Log,
            2 => fs::ShutdownFlush::Nothing,
            _ => return Err(libc::EINVAL),
        };
        res(self.fs.shut_down(flush))?;
        // The kernel copies `out_size` bytes back to the caller's word: its own value.
        let back = flags.to_ne_bytes();
        Ok((0, back[..(out_size as usize).min(4)].to_vec()))
    }

    /// Everything acknowledged so far made durable: the log forced, the device flushed.
    pub(crate) fn syncfs(&self) -> Res<()> {
        res(self.fs.fsync())
    }

    /// The answer is the FOPEN_* flags of the reply.
    pub(crate) fn opendir(&self, c: &Ctx, node: u64) -> Res<u32> {
        let keep = res(self.fs.opendir(c, self.ino(node)))?;
        Ok(if keep { FOPEN_CACHE_DIR } else { 0 })
    }

    pub(crate) fn readdir(&self, node: u64, offset: u64) -> Res<Vec<DirEntry>> {
        res(self.fs.readdir(self.ino(node), offset, READDIR_BATCH))
    }

    /// Entries with their attributes; an entry that vanished between the listing and the
    /// lookup is left out.
    pub(crate) fn readdirplus(&self, c: &Ctx, node: u64, offset: u64) -> Res<Vec<PlusEntry>> {
        let dir = self.ino(node);
        let entries = res(self.fs.readdir(dir, offset, READDIR_BATCH))?;
        Ok(entries
            .into_iter()
            .filter_map(|e| {
                let attr = if e.name == b"." || e.name == b".." {
                    self.fs.getattr(e.ino)
                } else {
                    self.fs.lookup(c, dir, &e.name)
                };
                attr.ok().map(|attr| PlusEntry { entry: e, attr })
            })
            .collect())
    }

    pub(crate) fn statfs(&self) -> Res<StatFs> {
        res(self.fs.statfs())
    }

    /// `flags` are setxattr(2)'s.
    pub(crate) fn setxattr(
        &self,
        c: &Ctx,
        node: u64,
        name: &[u8],
        value: &[u8],
        flags: i32,
    ) -> Res<()> {
        let create = flags & libc::XATTR_CREATE != 0;
        let replace = flags & libc::XATTR_REPLACE != 0;
        res(self
            .fs
            .setxattr(c, self.ino(node), name, value, create, replace))
    }

    pub(crate) fn getxattr(&self, c: &Ctx, node: u64, name: &[u8], size: u32) -> Res<Xattr> {
        sized(res(self.fs.getxattr(c, self.ino(node), name))?, size)
    }

    pub(crate) fn listxattr(&self, c: &Ctx, node: u64, size: u32) -> Res<Xattr> {
        sized(res(self.fs.listxattr(c, self.ino(node)))?, size)
    }

    pub(crate) fn removexattr(&self, c: &Ctx, node: u64, name: &[u8]) -> Res<()> {
        res(self.fs.removexattr(c, self.ino(node), name))
    }

    pub(crate) fn access(&self, c: &Ctx, node: u64, mask: u32) -> Res<()> {
        res(self.fs.access(c, self.ino(node), mask))
    }

    /// Creates and opens; the answer's FOPEN_* flags are none.
    pub(crate) fn create(&self, c: &Ctx, parent: u64, name: &[u8], mode: u32) -> Res<Attr> {
        let mode = fs::S_IFREG | (mode & 0o7777);
        let a = res(self.fs.make(c, self.ino(parent), name, mode, 0, None))?;
        // The creator may write what it just made, whatever the mode says.
        res(self.fs.open(&Ctx::ROOT, a.ino, 4))?;
        Ok(a)
    }

    /// O_TMPFILE: an unnamed file in `dir`, created open; the answer is as create's.
    pub(crate) fn tmpfile(&self, c: &Ctx, dir: u64, mode: u32) -> Res<Attr> {
        res(self.fs.tmpfile(c, self.ino(dir), mode & 0o7777))
    }

    /// `mode` is fallocate(2)'s.
    pub(crate) fn fallocate(&self, node: u64, offset: u64, length: u64, mode: i32) -> Res<()> {
        let keep = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let punch = mode & libc::FALLOC_FL_PUNCH_HOLE != 0;
        let zero = mode & libc::FALLOC_FL_ZERO_RANGE != 0;
        let known =
            libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE;
        if mode & !known != 0 || (punch && !keep) || (punch && zero) {
            return Err(libc::EOPNOTSUPP);
        }
        res(self
            .fs
            .fallocate(self.ino(node), offset, length, keep, punch, zero))
    }

    pub(crate) fn lseek(&self, node: u64, offset: i64, whence: i32) -> Res<i64> {
        let r = match whence {
            // As the kernel's own filesystems: no data or hole before offset 0 either.
            libc::SEEK_DATA | libc::SEEK_HOLE if offset < 0 => return Err(libc::ENXIO),
            libc::SEEK_DATA => self.fs.seek(self.ino(node), offset as u64, true),
            libc::SEEK_HOLE => self.fs.seek(self.ino(node), offset as u64, false),
            _ => return Err(libc::EINVAL),
        };
        res(r).map(|o| o as i64)
    }
}

/// The permission an open asks for (rwx bits as access(2) takes them).
fn want(flags: i32) -> u32 {
    if flags & FMODE_EXEC != 0 {
        return 1;
    }
    match flags & libc::O_ACCMODE {
        libc::O_WRONLY => 2,
        libc::O_RDWR => 6,
        _ => 4,
    }
}

/// An xattr answer: its size when the caller asks with size 0, the bytes when they fit, ERANGE
/// when they do not.
fn sized(v: Vec<u8>, size: u32) -> Res<Xattr> {
    if size == 0 {
        Ok(Xattr::Size(v.len() as u32))
    } else if v.len() > size as usize {
        Err(libc::ERANGE)
    } else {
        Ok(Xattr::Data(v))
    }
}

/// A mode with the file type of a readdir type.
pub(crate) fn dtype_mode(t: u8) -> u32 {
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
