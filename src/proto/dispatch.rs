//! One request, from either transport: decode it ([`wire`]), do it ([`Ops`]), encode the reply.
//! A request's payload and its reply share a buffer (the io_uring entry's payload buffer, the
//! `/dev/fuse` thread's one buffer), so a request is done in two steps: [`handle`] reads the
//! request and returns an owned [`Out`]; [`encode`] writes it once nothing of the request is
//! needed any more. READ writes its data straight into the buffer ([`read`]).

use super::wire::{self, InHeader, Rd, Wr};
use crate::dir::DirEntry;
use crate::format::inode::Time;
use crate::fs::{Attr, Ctx, SetAttr, SetTime, StatFs};
use crate::ops::{self, Found, Ops, PlusEntry, Xattr};

pub(crate) const FUSE_LOOKUP: u32 = 1;
pub(crate) const FUSE_FORGET: u32 = 2;
pub(crate) const FUSE_GETATTR: u32 = 3;
pub(crate) const FUSE_SETATTR: u32 = 4;
pub(crate) const FUSE_READLINK: u32 = 5;
pub(crate) const FUSE_SYMLINK: u32 = 6;
pub(crate) const FUSE_MKNOD: u32 = 8;
pub(crate) const FUSE_MKDIR: u32 = 9;
pub(crate) const FUSE_UNLINK: u32 = 10;
pub(crate) const FUSE_RMDIR: u32 = 11;
pub(crate) const FUSE_RENAME: u32 = 12;
pub(crate) const FUSE_LINK: u32 = 13;
pub(crate) const FUSE_OPEN: u32 = 14;
pub(crate) const FUSE_READ: u32 = 15;
pub(crate) const FUSE_WRITE: u32 = 16;
pub(crate) const FUSE_STATFS: u32 = 17;
pub(crate) const FUSE_RELEASE: u32 = 18;
pub(crate) const FUSE_FSYNC: u32 = 20;
pub(crate) const FUSE_SETXATTR: u32 = 21;
pub(crate) const FUSE_GETXATTR: u32 = 22;
pub(crate) const FUSE_LISTXATTR: u32 = 23;
pub(crate) const FUSE_REMOVEXATTR: u32 = 24;
pub(crate) const FUSE_FLUSH: u32 = 25;
pub(crate) const FUSE_INIT: u32 = 26;
pub(crate) const FUSE_OPENDIR: u32 = 27;
pub(crate) const FUSE_READDIR: u32 = 28;
pub(crate) const FUSE_RELEASEDIR: u32 = 29;
pub(crate) const FUSE_FSYNCDIR: u32 = 30;
pub(crate) const FUSE_ACCESS: u32 = 34;
pub(crate) const FUSE_INTERRUPT: u32 = 36;
pub(crate) const FUSE_CREATE: u32 = 35;
pub(crate) const FUSE_DESTROY: u32 = 38;
pub(crate) const FUSE_IOCTL: u32 = 39;
pub(crate) const FUSE_BATCH_FORGET: u32 = 42;
pub(crate) const FUSE_FALLOCATE: u32 = 43;
pub(crate) const FUSE_READDIRPLUS: u32 = 44;
pub(crate) const FUSE_RENAME2: u32 = 45;
pub(crate) const FUSE_LSEEK: u32 = 46;
pub(crate) const FUSE_COPY_FILE_RANGE: u32 = 47;
pub(crate) const FUSE_SYNCFS: u32 = 50;
pub(crate) const FUSE_TMPFILE: u32 = 51;
pub(crate) const FUSE_STATX: u32 = 52;

/// Bytes of a request's fixed argument (the kernel's `in_args[0]` where it is an op's own
/// structure, at protocol 7.40): through `/dev/fuse` the payload (names, data) follows it; the
/// io_uring queues carry it apart. 0 for requests whose arguments are all payload, and for
/// opcodes not served (their whole body is ignored).
/// `fixed_arg_bytes` on the connection `ops` serves: a SETXATTR's is 16 bytes once the kernel
/// granted FUSE_SETXATTR_EXT.
pub(crate) fn fixed_arg_bytes_of(ops: &Ops, opcode: u32) -> usize {
    if opcode == FUSE_SETXATTR && ops.setxattr_ext() {
        16
    } else {
        fixed_arg_bytes(opcode)
    }
}

pub(crate) fn fixed_arg_bytes(opcode: u32) -> usize {
    match opcode {
        FUSE_GETATTR => 16,                                // fuse_getattr_in
        FUSE_SETATTR => 88,                                // fuse_setattr_in
        FUSE_MKNOD => 16,                                  // fuse_mknod_in
        FUSE_MKDIR => 8,                                   // fuse_mkdir_in
        FUSE_RENAME => 8,                                  // fuse_rename_in
        FUSE_RENAME2 => 16,                                // fuse_rename2_in
        FUSE_LINK => 8,                                    // fuse_link_in
        FUSE_OPEN | FUSE_OPENDIR => 8,                     // fuse_open_in
        FUSE_READ | FUSE_READDIR | FUSE_READDIRPLUS => 40, // fuse_read_in
        FUSE_WRITE => 40,                                  // fuse_write_in
        FUSE_RELEASE | FUSE_RELEASEDIR => 24,              // fuse_release_in
        FUSE_FSYNC | FUSE_FSYNCDIR => 16,                  // fuse_fsync_in
        // fuse_setxattr_in without FUSE_SETXATTR_EXT (`fixed_arg_bytes_of` with it).
        FUSE_SETXATTR => 8,
        FUSE_GETXATTR | FUSE_LISTXATTR => 8, // fuse_getxattr_in
        FUSE_FLUSH => 24,                    // fuse_flush_in
        FUSE_INIT => 64,                     // fuse_init_in
        FUSE_ACCESS => 8,                    // fuse_access_in
        FUSE_CREATE | FUSE_TMPFILE => 16,    // fuse_create_in
        FUSE_INTERRUPT => 8,                 // fuse_interrupt_in
        FUSE_FORGET => 8,                    // fuse_forget_in
        FUSE_BATCH_FORGET => 8,              // fuse_batch_forget_in, then the entries
        FUSE_FALLOCATE => 32,                // fuse_fallocate_in
        FUSE_LSEEK => 24,                    // fuse_lseek_in
        FUSE_COPY_FILE_RANGE => 56,          // fuse_copy_file_range_in
        FUSE_SYNCFS => 8,                    // fuse_syncfs_in
        FUSE_IOCTL => 32,                    // fuse_ioctl_in
        FUSE_STATX => 24,                    // fuse_statx_in
        _ => 0,
    }
}

/// setattr's `valid` bits.
const FATTR_MODE: u32 = 1 << 0;
const FATTR_UID: u32 = 1 << 1;
const FATTR_GID: u32 = 1 << 2;
const FATTR_SIZE: u32 = 1 << 3;
const FATTR_ATIME: u32 = 1 << 4;
const FATTR_MTIME: u32 = 1 << 5;
const FATTR_FH: u32 = 1 << 6;
const FATTR_ATIME_NOW: u32 = 1 << 7;
const FATTR_MTIME_NOW: u32 = 1 << 8;
/// fuse_setxattr_in.setxattr_flags: the kernel found the caller setting an ACL neither in the
/// file's group nor holding CAP_FSETID (through the mount's idmapping), so the new mode loses
/// set-group-ID.
const FUSE_SETXATTR_ACL_KILL_SGID: u32 = 1 << 0;
/// A truncate by a caller without CAP_FSETID, on a connection with FUSE_HANDLE_KILLPRIV_V2.
const FATTR_KILL_SUIDGID: u32 = 1 << 11;
/// fsync's flag for fdatasync.
pub(crate) const FUSE_FSYNC_FDATASYNC: u32 = 1;

/// A reply, owned, to be encoded once the request's buffer is free.
pub(crate) enum Out {
    Empty,
    Entry(Option<Attr>),
    Attr(Attr),
    Statx(Attr),
    Open(u32),
    Create(Attr),
    Written(u32),
    Statfs(StatFs),
    Xattr(Xattr),
    Data(Vec<u8>),
    Lseek(i64),
    /// An ioctl's result and the bytes it gives back.
    Ioctl(i32, Vec<u8>),
    Dir(Vec<DirEntry>, usize),
    DirPlus(Vec<PlusEntry>, usize),
}

fn ctx(h: &InHeader) -> Ctx {
    Ctx {
        uid: h.uid,
        gid: h.gid,
        pid: h.pid,
        umask: 0,
        acl_kill_sgid: None,
    }
}

fn time(sec: u64, nsec: u32) -> Time {
    Time {
        sec: sec as i64,
        nsec,
    }
}

/// Does every request but READ. `arg` is the fixed argument (the entry's op_in area), `payload`
/// what followed it (names, data). An opcode not served here is ENOSYS, as fuser answers.
pub(crate) fn handle(ops: &Ops, h: &InHeader, arg: &[u8], payload: &[u8]) -> Result<Out, i32> {
    let _active = ops.enter();
    let c = ctx(h);
    let node = h.nodeid;
    let mut a = Rd::new(arg);
    let mut p = Rd::new(payload);
    match h.opcode {
        FUSE_LOOKUP => match ops.lookup(&c, node, p.name()?)? {
            Found::Entry(at) => Ok(Out::Entry(Some(at))),
            Found::Negative => Ok(Out::Entry(None)),
        },
        FUSE_GETATTR => ops.getattr(node).map(Out::Attr),
        // statx(2) asking for more than the basic fields (the birth time): answered in full,
        // or refused for the connection's life with `-o btime=off`.
        FUSE_STATX if !ops.answers_statx() => Err(libc::ENOSYS),
        FUSE_STATX => ops.getattr(node).map(Out::Statx),
        FUSE_SETATTR => {
            let valid = a.u32()?;
            a.skip(4)?;
            let _fh = a.u64()?;
            let size = a.u64()?;
            let _lock_owner = a.u64()?;
            let (atime, mtime, _ctime) = (a.u64()?, a.u64()?, a.u64()?);
            let (atimensec, mtimensec, _ctimensec) = (a.u32()?, a.u32()?, a.u32()?);
            let mode = a.u32()?;
            a.skip(4)?;
            let (uid, gid) = (a.u32()?, a.u32()?);
            let when = |bit: u32, now: u32, s: u64, ns: u32| {
                (valid & bit != 0).then(|| {
                    if valid & now != 0 {
                        SetTime::Now
                    } else {
                        SetTime::At(time(s, ns))
                    }
                })
            };
            let s = SetAttr {
                mode: (valid & FATTR_MODE != 0).then_some(mode),
                uid: (valid & FATTR_UID != 0).then_some(uid),
                gid: (valid & FATTR_GID != 0).then_some(gid),
                size: (valid & FATTR_SIZE != 0).then_some(size),
                atime: when(FATTR_ATIME, FATTR_ATIME_NOW, atime, atimensec),
                mtime: when(FATTR_MTIME, FATTR_MTIME_NOW, mtime, mtimensec),
                via_open_file: valid & FATTR_FH != 0,
                kill_suidgid: valid & FATTR_KILL_SUIDGID != 0,
            };
            ops.setattr(&c, node, &s).map(Out::Attr)
        }
        FUSE_READLINK => ops.readlink(node).map(Out::Data),
        FUSE_SYMLINK => {
            let name = p.name()?;
            let target = p.name()?;
            ops.symlink(&c, node, name, target)
                .map(|at| Out::Entry(Some(at)))
        }
        FUSE_MKNOD => {
            let (mode, rdev, umask) = (a.u32()?, a.u32()?, a.u32()?);
            let c = Ctx { umask, ..c };
            ops.mknod(&c, node, p.name()?, mode, rdev)
                .map(|at| Out::Entry(Some(at)))
        }
        FUSE_MKDIR => {
            let (mode, umask) = (a.u32()?, a.u32()?);
            let c = Ctx { umask, ..c };
            ops.mkdir(&c, node, p.name()?, mode)
                .map(|at| Out::Entry(Some(at)))
        }
        FUSE_UNLINK => ops.remove(&c, node, p.name()?, false).map(|()| Out::Empty),
        FUSE_RMDIR => ops.remove(&c, node, p.name()?, true).map(|()| Out::Empty),
        FUSE_RENAME | FUSE_RENAME2 => {
            let newdir = a.u64()?;
            let flags = if h.opcode == FUSE_RENAME2 {
                a.u32()?
            } else {
                0
            };
            let (old, new) = (p.name()?, p.name()?);
            ops.rename(&c, (node, old), (newdir, new), flags)
                .map(|()| Out::Empty)
        }
        FUSE_LINK => {
            let old = a.u64()?;
            ops.link(&c, old, node, p.name()?)
                .map(|at| Out::Entry(Some(at)))
        }
        FUSE_OPEN => ops.open(&c, node, a.u32()? as i32).map(Out::Open),
        FUSE_WRITE => {
            let _fh = a.u64()?;
            let off = a.u64()?;
            let size = a.u32()? as usize;
            let write_flags = a.u32()?;
            let data = p.bytes(size)?;
            ops.write(&c, node, off, data, write_flags)
                .map(Out::Written)
        }
        FUSE_STATFS => ops.statfs().map(Out::Statfs),
        FUSE_RELEASE | FUSE_RELEASEDIR => ops.release(node).map(|()| Out::Empty),
        FUSE_FSYNC => {
            a.skip(8)?;
            let datasync = a.u32()? & FUSE_FSYNC_FDATASYNC != 0;
            ops.fsync(node, datasync).map(|()| Out::Empty)
        }
        FUSE_FSYNCDIR => ops.fsyncdir().map(|()| Out::Empty),
        // sync(2), syncfs(2), and the kernel's sync before a remount to read-only: the kernel
        // sends it to fuseblk mounts only.
        FUSE_SYNCFS => ops.syncfs().map(|()| Out::Empty),
        FUSE_SETXATTR => {
            let size = a.u32()? as usize;
            let flags = a.u32()? as i32;
            let c = if ops.setxattr_ext() {
                let setxattr_flags = a.u32()?;
                Ctx {
                    acl_kill_sgid: Some(setxattr_flags & FUSE_SETXATTR_ACL_KILL_SGID != 0),
                    ..c
                }
            } else {
                c
            };
            let name = p.name()?;
            let value = p.bytes(size)?;
            ops.setxattr(&c, node, name, value, flags)
                .map(|()| Out::Empty)
        }
        FUSE_GETXATTR => {
            let size = a.u32()?;
            ops.getxattr(&c, node, p.name()?, size).map(Out::Xattr)
        }
        FUSE_LISTXATTR => ops.listxattr(&c, node, a.u32()?).map(Out::Xattr),
        FUSE_REMOVEXATTR => ops.removexattr(&c, node, p.name()?).map(|()| Out::Empty),
        // Nothing to do at close (writes are done when they return, no POSIX locks here), and
        // ENOSYS tells the kernel so: it stops sending FLUSH.
        FUSE_FLUSH => Err(libc::ENOSYS),
        FUSE_OPENDIR => ops.opendir(&c, node).map(Out::Open),
        FUSE_READDIR | FUSE_READDIRPLUS => {
            let _fh = a.u64()?;
            let off = a.u64()?;
            let size = a.u32()? as usize;
            if h.opcode == FUSE_READDIR {
                ops.readdir(node, off).map(|e| Out::Dir(e, size))
            } else {
                ops.readdirplus(&c, node, off)
                    .map(|e| Out::DirPlus(e, size))
            }
        }
        FUSE_ACCESS => ops.access(&c, node, a.u32()?).map(|()| Out::Empty),
        FUSE_CREATE => {
            let _flags = a.u32()?;
            let mode = a.u32()?;
            let umask = a.u32()?;
            let c = Ctx { umask, ..c };
            ops.create(&c, node, p.name()?, mode).map(Out::Create)
        }
        FUSE_TMPFILE => {
            let _flags = a.u32()?;
            let mode = a.u32()?;
            let umask = a.u32()?;
            let c = Ctx { umask, ..c };
            ops.tmpfile(&c, node, mode).map(Out::Create)
        }
        // The unmount (fuseblk): everything is written home and the image released before
        // this is answered, since the kernel's umount waits for the answer.
        FUSE_DESTROY => ops.destroy().map(|()| Out::Empty),
        FUSE_FALLOCATE => {
            let _fh = a.u64()?;
            let (off, len) = (a.u64()?, a.u64()?);
            let mode = a.u32()? as i32;
            ops.fallocate(node, off, len, mode).map(|()| Out::Empty)
        }
        FUSE_IOCTL => {
            let _fh = a.u64()?;
            let _flags = a.u32()?;
            let cmd = a.u32()?;
            let arg = a.u64()?;
            let in_size = a.u32()?;
            let out_size = a.u32()?;
            // What the kernel copied in from the caller (an ioctl encoded as writing).
            let input = p.bytes(in_size as usize)?;
            ops.ioctl(&c, node, cmd, arg, (input, out_size))
                .map(|(r, data)| Out::Ioctl(r, data))
        }
        FUSE_LSEEK => {
            let _fh = a.u64()?;
            let off = a.u64()? as i64;
            let whence = a.u32()? as i32;
            ops.lseek(node, off, whence).map(Out::Lseek)
        }
        FUSE_COPY_FILE_RANGE => {
            let _fh_in = a.u64()?;
            let off_in = a.u64()?;
            let node_out = a.u64()?;
            let _fh_out = a.u64()?;
            let off_out = a.u64()?;
            let len = a.u64()?;
            ops.copy_file_range(&c, (node, off_in), (node_out, off_out), len)
                .map(Out::Written)
        }
        _ => Err(libc::ENOSYS),
    }
}

/// READ: the data goes straight into `buf`; returns its length.
pub(crate) fn read(ops: &Ops, h: &InHeader, arg: &[u8], buf: &mut [u8]) -> Result<usize, i32> {
    let _active = ops.enter();
    let mut a = Rd::new(arg);
    let _fh = a.u64()?;
    let off = a.u64()?;
    let size = a.u32()?;
    if size as usize > buf.len() {
        return Err(libc::EINVAL);
    }
    ops.read(h.nodeid, off, size, |bytes| {
        let n = bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        n
    })
}

/// Writes `out` into `buf`; returns the reply's length.
pub(crate) fn encode(ops: &Ops, out: Out, buf: &mut [u8]) -> Result<usize, i32> {
    let mut w = Wr::new(buf);
    match out {
        Out::Empty => {}
        Out::Entry(a) => w.entry(a.map_or(0, |a| ops.node(a.ino)), a.as_ref())?,
        Out::Attr(a) => w.attr_out(ops.node(a.ino), &a)?,
        Out::Statx(a) => w.statx_out(ops.node(a.ino), &a)?,
        Out::Open(flags) => w.open_out(flags)?,
        Out::Create(a) => {
            w.entry(ops.node(a.ino), Some(&a))?;
            w.open_out(0)?;
        }
        Out::Written(n) => {
            w.u32(n)?;
            w.u32(0)?;
        }
        Out::Statfs(s) => {
            for v in [s.blocks, s.bfree, s.bavail, s.files, s.ffree] {
                w.u64(v)?;
            }
            w.u32(s.bsize)?;
            w.u32(s.namelen)?;
            w.u32(s.bsize)?; // frsize
            w.zeros(4 + 6 * 4)?; // padding, spare
        }
        Out::Xattr(Xattr::Size(n)) => {
            w.u32(n)?;
            w.u32(0)?;
        }
        Out::Xattr(Xattr::Data(v)) | Out::Data(v) => w.bytes(&v)?,
        Out::Lseek(o) => w.u64(o as u64)?,
        Out::Ioctl(r, data) => {
            // struct fuse_ioctl_out: result, flags, in_iovs, out_iovs; then the out data.
            w.u32(r as u32)?;
            w.zeros(12)?;
            w.bytes(&data)?;
        }
        Out::Dir(entries, size) => {
            let limit = size.min(w.room());
            for e in entries {
                let dtype = ops::dtype_mode(e.ftype) >> 12;
                if !w.dirent(limit, (ops.node(e.ino), e.cookie, dtype), &e.name)? {
                    break;
                }
            }
        }
        Out::DirPlus(entries, size) => {
            let limit = size.min(w.room());
            for p in entries {
                let need = wire::ENTRY_OUT_BYTES + wire::dirent_len(p.entry.name.len());
                if w.len() + need > limit {
                    break;
                }
                let node = ops.node(p.attr.ino);
                w.entry(node, Some(&p.attr))?;
                let dtype = p.attr.mode >> 12;
                w.dirent(limit, (node, p.entry.cookie, dtype), &p.entry.name)?;
            }
        }
    }
    Ok(w.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every request that carries an argument structure has its size here (at protocol 7.40,
    /// include/uapi/linux/fuse.h): `/dev/fuse` splits the payload after it, and a size missing
    /// here left the structure to the payload (the ioctl was EINVAL through /dev/fuse only).
    #[test]
    fn fixed_argument_sizes_are_the_kernels() {
        let sizes = [
            (FUSE_LOOKUP, 0),
            (FUSE_FORGET, 8),
            (FUSE_GETATTR, 16),
            (FUSE_SETATTR, 88),
            (FUSE_READLINK, 0),
            (FUSE_SYMLINK, 0),
            (FUSE_MKNOD, 16),
            (FUSE_MKDIR, 8),
            (FUSE_UNLINK, 0),
            (FUSE_RMDIR, 0),
            (FUSE_RENAME, 8),
            (FUSE_LINK, 8),
            (FUSE_OPEN, 8),
            (FUSE_READ, 40),
            (FUSE_WRITE, 40),
            (FUSE_STATFS, 0),
            (FUSE_RELEASE, 24),
            (FUSE_FSYNC, 16),
            (FUSE_SETXATTR, 8),
            (FUSE_GETXATTR, 8),
            (FUSE_LISTXATTR, 8),
            (FUSE_REMOVEXATTR, 0),
            (FUSE_FLUSH, 24),
            (FUSE_INIT, 64),
            (FUSE_OPENDIR, 8),
            (FUSE_READDIR, 40),
            (FUSE_RELEASEDIR, 24),
            (FUSE_FSYNCDIR, 16),
            (FUSE_ACCESS, 8),
            (FUSE_CREATE, 16),
            (FUSE_INTERRUPT, 8),
            (FUSE_DESTROY, 0),
            (FUSE_IOCTL, 32),
            (FUSE_BATCH_FORGET, 8),
            (FUSE_FALLOCATE, 32),
            (FUSE_READDIRPLUS, 40),
            (FUSE_RENAME2, 16),
            (FUSE_LSEEK, 24),
            (FUSE_COPY_FILE_RANGE, 56),
            (FUSE_SYNCFS, 8),
            (FUSE_TMPFILE, 16),
            (FUSE_STATX, 24),
        ];
        for (op, bytes) in sizes {
            assert_eq!(fixed_arg_bytes(op), bytes, "opcode {op}");
        }
    }
}
