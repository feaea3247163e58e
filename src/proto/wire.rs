//! The FUSE protocol's messages (include/uapi/linux/fuse.h), for both transports: reading a
//! request's header, fixed argument and payload with every field checked against what arrived,
//! and writing replies into a buffer. The io_uring queues carry a request's fixed argument
//! apart from its payload; `/dev/fuse` carries them back to back, split with
//! [`crate::proto::dispatch::fixed_arg_bytes`].

use crate::fs::Attr;
use crate::ops::TTL;

/// Bytes of `struct fuse_in_header`.
pub(crate) const IN_HEADER_BYTES: usize = 40;
/// Bytes of `struct fuse_out_header`.
pub(crate) const OUT_HEADER_BYTES: usize = 16;
/// Bytes of `struct fuse_attr`.
const ATTR_BYTES: usize = 88;
/// Bytes of `struct fuse_entry_out`.
pub(crate) const ENTRY_OUT_BYTES: usize = 40 + ATTR_BYTES;
/// `struct fuse_statx_out`: 32 bytes of header, then a 256-byte `struct fuse_statx`.
pub(crate) const STATX_OUT_BYTES: usize = 32 + 256;
/// The statx fields a STATX reply fills: STATX_BASIC_STATS and STATX_BTIME (the inode's
/// creation time).
const STATX_ANSWERED: u32 = 0x7ff | 0x800;
/// Bytes of `struct fuse_dirent` before its name.
const DIRENT_BYTES: usize = 24;

/// `struct fuse_in_header`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct InHeader {
    pub(crate) len: u32,
    pub(crate) opcode: u32,
    pub(crate) unique: u64,
    pub(crate) nodeid: u64,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) pid: u32,
}

/// Reads little-endian fields (the kernel's, on the hosts FUSE runs on: native order) from a
/// slice; running past its end is EINVAL, a malformed request.
pub(crate) struct Rd<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Rd<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Rd<'a> {
        Rd { b, at: 0 }
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], i32> {
        let end = self.at.checked_add(n).ok_or(libc::EINVAL)?;
        let s = self.b.get(self.at..end).ok_or(libc::EINVAL)?;
        self.at = end;
        Ok(s)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, i32> {
        let s = self.bytes(4)?;
        Ok(u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, i32> {
        let s = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_ne_bytes(a))
    }

    pub(crate) fn skip(&mut self, n: usize) -> Result<(), i32> {
        self.bytes(n).map(|_| ())
    }

    /// A NUL-terminated name; without its NUL the request is malformed.
    pub(crate) fn name(&mut self) -> Result<&'a [u8], i32> {
        let rest = self.b.get(self.at..).ok_or(libc::EINVAL)?;
        let n = rest.iter().position(|&c| c == 0).ok_or(libc::EINVAL)?;
        self.at += n + 1;
        Ok(&rest[..n])
    }
}

impl InHeader {
    pub(crate) fn read(b: &[u8]) -> Result<InHeader, i32> {
        let mut r = Rd::new(b);
        let h = InHeader {
            len: r.u32()?,
            opcode: r.u32()?,
            unique: r.u64()?,
            nodeid: r.u64()?,
            uid: r.u32()?,
            gid: r.u32()?,
            pid: r.u32()?,
        };
        // total_extlen and padding: no extensions are asked for at INIT.
        r.skip(4)?;
        Ok(h)
    }
}

/// Writes a reply into the payload buffer; running past its end is ERANGE (the buffer holds the
/// largest reply the kernel can ask for, so this is a daemon bug, answered, not a crash).
pub(crate) struct Wr<'a> {
    b: &'a mut [u8],
    at: usize,
}

impl<'a> Wr<'a> {
    pub(crate) fn new(b: &'a mut [u8]) -> Wr<'a> {
        Wr { b, at: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.at
    }

    /// Room left.
    pub(crate) fn room(&self) -> usize {
        self.b.len() - self.at
    }

    pub(crate) fn bytes(&mut self, s: &[u8]) -> Result<(), i32> {
        let end = self.at + s.len();
        self.b
            .get_mut(self.at..end)
            .ok_or(libc::ERANGE)?
            .copy_from_slice(s);
        self.at = end;
        Ok(())
    }

    pub(crate) fn u32(&mut self, v: u32) -> Result<(), i32> {
        self.bytes(&v.to_ne_bytes())
    }

    pub(crate) fn u64(&mut self, v: u64) -> Result<(), i32> {
        self.bytes(&v.to_ne_bytes())
    }

    pub(crate) fn zeros(&mut self, n: usize) -> Result<(), i32> {
        let end = self.at + n;
        self.b.get_mut(self.at..end).ok_or(libc::ERANGE)?.fill(0);
        self.at = end;
        Ok(())
    }

    /// `struct fuse_attr` of `a`, whose inode number is FUSE's `node`.
    pub(crate) fn attr(&mut self, node: u64, a: &Attr) -> Result<(), i32> {
        self.u64(node)?;
        self.u64(a.size)?;
        self.u64(a.blocks)?;
        self.u64(a.atime.sec as u64)?;
        self.u64(a.mtime.sec as u64)?;
        self.u64(a.ctime.sec as u64)?;
        self.u32(a.atime.nsec)?;
        self.u32(a.mtime.nsec)?;
        self.u32(a.ctime.nsec)?;
        self.u32(a.mode & (crate::fs::S_IFMT | 0o7777))?;
        self.u32(a.nlink)?;
        self.u32(a.uid)?;
        self.u32(a.gid)?;
        self.u32(a.rdev as u32)?;
        self.u32(a.blksize)?;
        self.u32(0) // flags
    }

    /// `struct fuse_entry_out`; `None` is a negative entry (node 0, cached for TTL).
    pub(crate) fn entry(&mut self, node: u64, a: Option<&Attr>) -> Result<(), i32> {
        let Some(a) = a else {
            self.u64(0)?; // nodeid
            self.u64(0)?; // generation
            self.u64(TTL.as_secs())?; // entry_valid
            self.u64(0)?; // attr_valid
            self.u32(TTL.subsec_nanos())?;
            self.u32(0)?;
            return self.zeros(ATTR_BYTES);
        };
        self.u64(node)?;
        self.u64(a.generation as u64)?;
        self.u64(TTL.as_secs())?;
        self.u64(TTL.as_secs())?;
        self.u32(TTL.subsec_nanos())?;
        self.u32(TTL.subsec_nanos())?;
        self.attr(node, a)
    }

    /// `struct fuse_attr_out`.
    pub(crate) fn attr_out(&mut self, node: u64, a: &Attr) -> Result<(), i32> {
        self.u64(TTL.as_secs())?;
        self.u32(TTL.subsec_nanos())?;
        self.u32(0)?;
        self.attr(node, a)
    }

    /// `struct fuse_statx_out`: every basic field, the birth time, and the attributes the
    /// inode's flags show (immutable, append-only, no-dump).
    pub(crate) fn statx_out(&mut self, node: u64, a: &Attr) -> Result<(), i32> {
        let start = self.len();
        self.u64(TTL.as_secs())?;
        self.u32(TTL.subsec_nanos())?;
        self.u32(0)?; // flags
        self.zeros(16)?; // spare
        self.u32(STATX_ANSWERED)?; // mask
        self.u32(a.blksize)?;
        self.u64(crate::fs::statx_attributes(a.flags))?;
        self.u32(a.nlink)?;
        self.u32(a.uid)?;
        self.u32(a.gid)?;
        self.u16((a.mode & (crate::fs::S_IFMT | 0o7777)) as u16)?;
        self.zeros(2)?;
        self.u64(node)?;
        self.u64(a.size)?;
        self.u64(a.blocks)?;
        self.u64(crate::fs::STATX_ATTRIBUTES_MASK)?;
        for t in [a.atime, a.crtime, a.ctime, a.mtime] {
            self.u64(t.sec as u64)?;
            self.u32(t.nsec)?;
            self.u32(0)?;
        }
        // dev_t as the kernel and glibc encode it (the inode stores that encoding).
        let rdev = a.rdev as libc::dev_t;
        self.u32(libc::major(rdev))?;
        self.u32(libc::minor(rdev))?;
        self.zeros(8)?; // dev_major, dev_minor: the kernel fills in its own
        self.zeros(STATX_OUT_BYTES - (self.len() - start))
    }

    /// `struct fuse_open_out`.
    pub(crate) fn open_out(&mut self, open_flags: u32) -> Result<(), i32> {
        self.u64(0)?; // fh
        self.u32(open_flags)?;
        self.u32(0) // backing_id
    }

    /// `struct fuse_dirent` and its name, padded to 8 bytes; false (nothing written) when it
    /// does not fit in `limit` bytes of reply.
    pub(crate) fn dirent(
        &mut self,
        limit: usize,
        (node, cookie, dtype): (u64, u64, u32),
        name: &[u8],
    ) -> Result<bool, i32> {
        let len = dirent_len(name.len());
        if self.at + len > limit {
            return Ok(false);
        }
        self.u64(node)?;
        self.u64(cookie)?;
        self.u32(name.len() as u32)?;
        self.u32(dtype)?;
        self.bytes(name)?;
        self.zeros(len - DIRENT_BYTES - name.len())?;
        Ok(true)
    }
}

/// Bytes of a `fuse_dirent` with a name of `n` bytes, padded to 8.
/// The protocol version this daemon speaks (7.40: every layout used here is that version's;
/// the kernel adapts to it, as it did when fuser answered INIT with the same version).
pub(crate) const PROTO_MAJOR: u32 = 7;
pub(crate) const PROTO_MINOR: u32 = 40;
/// The oldest kernel protocol served: 7.33 brought FUSE_HANDLE_KILLPRIV_V2 and the 64-byte
/// INIT reply every kernel since 7.23 reads (Linux 5.11).
pub(crate) const PROTO_MINOR_MIN: u32 = 33;
/// Bytes of `struct fuse_init_out` (7.23 and later).
pub(crate) const INIT_OUT_BYTES: usize = 64;
/// FUSE_INIT_EXT: the flags continue in `flags2`.
pub(crate) const INIT_EXT: u64 = 1 << 30;

/// `struct fuse_init_in`: what the kernel offers.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct InitIn {
    pub(crate) major: u32,
    pub(crate) minor: u32,
    pub(crate) max_readahead: u32,
    /// `flags`, and `flags2` above bit 32 when the kernel set FUSE_INIT_EXT.
    pub(crate) flags: u64,
}

impl InitIn {
    pub(crate) fn read(arg: &[u8]) -> Result<InitIn, i32> {
        let mut r = Rd::new(arg);
        let (major, minor) = (r.u32()?, r.u32()?);
        // A kernel of another major version sends only these two (it then asks again).
        if major != PROTO_MAJOR {
            return Ok(InitIn {
                major,
                minor,
                ..InitIn::default()
            });
        }
        let max_readahead = r.u32()?;
        let mut flags = r.u32()? as u64;
        if flags & INIT_EXT != 0 {
            flags |= (r.u32()? as u64) << 32;
        }
        Ok(InitIn {
            major,
            minor,
            max_readahead,
            flags,
        })
    }
}

/// `struct fuse_init_out`: what the daemon takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct InitOut {
    pub(crate) max_readahead: u32,
    pub(crate) flags: u64,
    pub(crate) max_background: u16,
    pub(crate) congestion_threshold: u16,
    pub(crate) max_write: u32,
    /// Timestamp granularity in nanoseconds.
    pub(crate) time_gran: u32,
    pub(crate) max_pages: u16,
}

impl Wr<'_> {
    pub(crate) fn u16(&mut self, v: u16) -> Result<(), i32> {
        self.bytes(&v.to_ne_bytes())
    }

    /// The INIT reply: protocol 7.40's 64 bytes.
    pub(crate) fn init_out(&mut self, o: &InitOut) -> Result<(), i32> {
        let start = self.len();
        self.u32(PROTO_MAJOR)?;
        self.u32(PROTO_MINOR)?;
        self.u32(o.max_readahead)?;
        self.u32(o.flags as u32)?;
        self.u16(o.max_background)?;
        self.u16(o.congestion_threshold)?;
        self.u32(o.max_write)?;
        self.u32(o.time_gran)?;
        self.u16(o.max_pages)?;
        self.u16(0)?; // map_alignment
        self.u32((o.flags >> 32) as u32)?;
        self.u32(0)?; // max_stack_depth
        self.zeros(INIT_OUT_BYTES - (self.len() - start))
    }

    /// The reply to an INIT from a kernel of another major version: ours, so it asks again.
    pub(crate) fn init_version_only(&mut self) -> Result<(), i32> {
        self.u32(PROTO_MAJOR)?;
        self.u32(PROTO_MINOR)?;
        self.zeros(INIT_OUT_BYTES - 8)
    }
}

pub(crate) fn dirent_len(n: usize) -> usize {
    (DIRENT_BYTES + n).div_ceil(8) * 8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::inode::Time;

    fn attr() -> Attr {
        Attr {
            ino: 77,
            mode: crate::fs::S_IFREG | 0o4755,
            nlink: 2,
            uid: 10,
            gid: 20,
            size: 12345,
            blocks: 32,
            atime: Time { sec: -2, nsec: 5 },
            mtime: Time {
                sec: 1_700_000_000,
                nsec: 999_999_999,
            },
            ctime: Time { sec: 3, nsec: 0 },
            crtime: Time { sec: 4, nsec: 0 },
            rdev: 0,
            blksize: 4096,
            generation: 9,
            flags: 0,
        }
    }

    #[test]
    fn entry_out_has_the_kernels_layout() {
        let mut b = [0xAAu8; 256];
        let mut w = Wr::new(&mut b);
        w.entry(77, Some(&attr())).unwrap();
        assert_eq!(w.len(), ENTRY_OUT_BYTES);
        assert_eq!(ENTRY_OUT_BYTES, 128);
        let mut r = Rd::new(&b);
        assert_eq!(r.u64().unwrap(), 77); // nodeid
        assert_eq!(r.u64().unwrap(), 9); // generation
        assert_eq!(r.u64().unwrap(), TTL.as_secs()); // entry_valid
        assert_eq!(r.u64().unwrap(), TTL.as_secs()); // attr_valid
        r.skip(8).unwrap();
        assert_eq!(r.u64().unwrap(), 77); // attr.ino
        assert_eq!(r.u64().unwrap(), 12345);
        assert_eq!(r.u64().unwrap(), 32);
        assert_eq!(r.u64().unwrap() as i64, -2); // atime, before the epoch
        assert_eq!(r.u64().unwrap(), 1_700_000_000);
        assert_eq!(r.u64().unwrap(), 3);
        assert_eq!(r.u32().unwrap(), 5);
        assert_eq!(r.u32().unwrap(), 999_999_999);
        assert_eq!(r.u32().unwrap(), 0);
        assert_eq!(r.u32().unwrap(), crate::fs::S_IFREG | 0o4755);
        assert_eq!(r.u32().unwrap(), 2);
        assert_eq!((r.u32().unwrap(), r.u32().unwrap()), (10, 20));
        assert_eq!(
            (r.u32().unwrap(), r.u32().unwrap(), r.u32().unwrap()),
            (0, 4096, 0)
        );
        assert_eq!(b[128], 0xAA, "wrote past the entry");
    }

    /// struct fuse_statx_out at protocol 7.39 and later: the kernel reads the birth time at
    /// offset 32 + 80 and takes the mask as the fields it may use; the attributes (offset
    /// 32 + 8) and their mask (32 + 56) show the inode's flags.
    #[test]
    fn statx_out_has_the_kernels_layout() {
        let mut b = [0xAAu8; 320];
        let mut w = Wr::new(&mut b);
        let mut a = attr();
        a.rdev = libc::makedev(8, 300);
        a.flags = crate::format::inode::FLAG_IMMUTABLE
            | crate::format::inode::FLAG_NODUMP
            | crate::format::inode::FLAG_NOATIME;
        w.statx_out(77, &a).unwrap();
        assert_eq!(w.len(), STATX_OUT_BYTES);
        let mut r = Rd::new(&b[32..]);
        assert_eq!(r.u32().unwrap(), 0xfff); // mask: basic stats and btime
        assert_eq!(r.u32().unwrap(), 4096);
        // attributes: immutable and no-dump (no-atime has no statx attribute).
        assert_eq!(r.u64().unwrap(), 0x10 | 0x40);
        assert_eq!((r.u32().unwrap(), r.u32().unwrap()), (2, 10));
        assert_eq!(r.u32().unwrap(), 20);
        assert_eq!(
            b[32 + 28..32 + 30],
            ((crate::fs::S_IFREG | 0o4755) as u16).to_ne_bytes()
        );
        let mut r = Rd::new(&b[32 + 32..]);
        assert_eq!((r.u64().unwrap(), r.u64().unwrap()), (77, 12345));
        r.skip(8).unwrap(); // blocks
                            // attributes_mask: immutable, append-only, no-dump, as XFS.
        assert_eq!(r.u64().unwrap(), 0x10 | 0x20 | 0x40);
        let mut r = Rd::new(&b[32 + 64..]);
        assert_eq!(r.u64().unwrap() as i64, -2); // atime
        r.skip(8).unwrap();
        assert_eq!(r.u64().unwrap(), 4); // btime
        let mut r = Rd::new(&b[32 + 128..]);
        assert_eq!((r.u32().unwrap(), r.u32().unwrap()), (8, 300)); // rdev
        assert!(b[32 + 136..STATX_OUT_BYTES].iter().all(|&x| x == 0));
        assert_eq!(b[STATX_OUT_BYTES], 0xAA, "wrote past the reply");
    }

    #[test]
    fn a_negative_entry_is_node_zero_cached_for_the_ttl() {
        let mut b = [0xAAu8; 128];
        let mut w = Wr::new(&mut b);
        w.entry(0, None).unwrap();
        assert_eq!(w.len(), 128);
        let mut r = Rd::new(&b);
        assert_eq!((r.u64().unwrap(), r.u64().unwrap()), (0, 0));
        assert_eq!(r.u64().unwrap(), TTL.as_secs());
        assert!(b[40..].iter().all(|&x| x == 0));
    }

    #[test]
    fn dirents_are_padded_to_eight_and_stop_at_the_limit() {
        assert_eq!(dirent_len(1), 32);
        assert_eq!(dirent_len(8), 32);
        assert_eq!(dirent_len(9), 40);
        let mut b = [0xAAu8; 100];
        let mut w = Wr::new(&mut b);
        assert!(w.dirent(64, (5, 1, 8), b"abc").unwrap());
        assert_eq!(w.len(), 32);
        assert!(w.dirent(64, (6, 2, 4), b"defgh").unwrap());
        assert!(
            !w.dirent(64, (7, 3, 8), b"x").unwrap(),
            "a third entry past 64 bytes"
        );
        assert_eq!(w.len(), 64);
        assert_eq!(&b[24..27], b"abc");
        assert_eq!(&b[27..32], &[0; 5]);
    }

    #[test]
    fn malformed_requests_are_einval_not_panics() {
        let mut r = Rd::new(b"name-without-nul");
        assert_eq!(r.name(), Err(libc::EINVAL));
        let mut r = Rd::new(b"a\0b\0");
        assert_eq!(r.name(), Ok(&b"a"[..]));
        assert_eq!(r.name(), Ok(&b"b"[..]));
        assert_eq!(r.name(), Err(libc::EINVAL));
        let mut r = Rd::new(&[1, 2, 3]);
        assert_eq!(r.u32(), Err(libc::EINVAL));
        assert_eq!(
            InHeader::read(&[0; 39]).map(|h| h.opcode),
            Err(libc::EINVAL)
        );
        let mut r = Rd::new(&[0; 8]);
        assert_eq!(r.bytes(usize::MAX), Err(libc::EINVAL));
    }

    #[test]
    fn a_reply_larger_than_the_buffer_is_erange() {
        let mut b = [0u8; 100];
        let mut w = Wr::new(&mut b);
        assert_eq!(w.entry(1, Some(&attr())), Err(libc::ERANGE));
        let mut w = Wr::new(&mut b);
        assert_eq!(w.bytes(&[1; 101]), Err(libc::ERANGE));
    }
}
