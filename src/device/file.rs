//! An image file or block device, read and written with pread/pwrite at block offsets.
//!
//! O_DIRECT by default so the engine's own cache is the only cache and a flush means the device;
//! where the filesystem holding the image refuses O_DIRECT (tmpfs, some FUSE mounts, or a block
//! size below the sector size) it falls back to buffered I/O, once and for good, so direct and
//! buffered I/O are never mixed on live data.
//!
//! One exception, asked for by the mount (`hostcache=on`, its default): small pieces of file
//! data (under [`CACHED_IO_MAX_BYTES`]) go through the page cache of the image, as fuse2fs's and
//! a loop device's do. Small reads come from it, so a block the kernel dropped from the file's
//! own cache (eviction of the inode, `POSIX_FADV_DONTNEED`) comes back at memory speed; small
//! writes go into it and return without waiting for the device. Large pieces stay O_DIRECT: the
//! device moves them straight into or out of the request's buffer, one copy less. It stays
//! coherent because the kernel writes back and drops the cached copy of a range before every
//! direct read or write of it, and metadata never goes through the cache. `flush` (fdatasync)
//! writes the dirty pages back and then flushes the device, so the contract — a write is durable
//! once a flush that began after it completes — is unchanged, and so is the log's rule that new
//! data is flushed before the checkpoint that maps it. Dirty pages are charged to the daemon's
//! memory cgroup: at most `dirty_max` bytes of them exist at once (a writer that would pass it
//! writes them all back first, and waits), and clean ones are dropped at once by reclaim.

use super::{check_range, AlignedBuf, DevError, Device};
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Data reads and writes at least this long go straight to the device even with `hostcache=on`:
/// a small piece waits for a device round trip when direct (about 60 us on a virtio disk) but
/// only for a copy when cached; a large one is an extent the device moves whole, and a copy
/// through the cache only adds a second copy.
pub(crate) const CACHED_IO_MAX_BYTES: usize = 64 << 10;

pub struct FileDevice {
    direct: Option<File>,
    buffered: File,
    use_direct: AtomicBool,
    /// File data through the page cache (see the module's comment).
    data_through_page_cache: bool,
    /// Bytes written through the page cache since its dirty pages were last written back.
    dirty: AtomicU64,
    /// At most this many bytes of dirty pages at once.
    dirty_max: u64,
    block_size: u32,
    block_count: u64,
}

impl FileDevice {
    /// Opens `path` for reading and writing in blocks of `block_size`. `direct` asks for O_DIRECT.
    pub fn open(path: &Path, block_size: u32, direct: bool) -> io::Result<FileDevice> {
        Self::open_with(path, block_size, direct, true)
    }

    /// Opens `path` for reading only, through the page cache: for the tools that never write
    /// (`fsck -n`, `ticketfs db`), which a user who may read the image but not write it can then
    /// run, as e2fsck -n and debugfs let them. A write through it fails (EBADF).
    pub fn open_read_only(path: &Path, block_size: u32) -> io::Result<FileDevice> {
        Self::open_with(path, block_size, false, false)
    }

    fn open_with(
        path: &Path,
        block_size: u32,
        direct: bool,
        writable: bool,
    ) -> io::Result<FileDevice> {
        if !crate::format::block_size_valid(block_size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("block size {block_size} is not a power of two in 512..=65536"),
            ));
        }
        let mut buffered = OpenOptions::new().read(true).write(writable).open(path)?;
        // What was opened, not what the path named a moment before: a FIFO swapped in after
        // the caller's check would block the first read forever.
        let kind = buffered.metadata()?.file_type();
        if !(kind.is_file() || kind.is_block_device()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not an image file or a block device",
            ));
        }
        let bytes = buffered.seek(SeekFrom::End(0))?;
        let direct_file = if direct && writable {
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
                .ok()
        } else {
            None
        };
        let use_direct = AtomicBool::new(direct_file.is_some());
        Ok(FileDevice {
            direct: direct_file,
            buffered,
            use_direct,
            data_through_page_cache: false,
            dirty: AtomicU64::new(0),
            dirty_max: 0,
            block_size,
            block_count: bytes / block_size as u64,
        })
    }

    /// File data through the image's page cache (`read_data`, `write_data`), with at most
    /// `dirty_max` bytes of dirty pages at once.
    pub(crate) fn with_data_page_cache(mut self, on: bool, dirty_max: u64) -> FileDevice {
        self.data_through_page_cache = on;
        self.dirty_max = dirty_max;
        self
    }

    /// Does a piece of file data of `len` bytes go through the page cache (asked for, small
    /// enough, and O_DIRECT in use for the rest)?
    fn cached_piece(&self, len: usize) -> bool {
        self.data_through_page_cache && len < CACHED_IO_MAX_BYTES && self.is_direct()
    }

    /// Writes back every dirty page of the image and waits for it (not a device flush).
    fn write_back_dirty(&self) -> io::Result<()> {
        self.dirty.store(0, Ordering::SeqCst);
        let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        // SAFETY: a plain system call on a descriptor this device owns; no memory is passed.
        let r = unsafe { libc::sync_file_range(self.buffered.as_raw_fd(), 0, 0, flags) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Is O_DIRECT in use (it may be dropped at the first refused request)?
    pub(crate) fn is_direct(&self) -> bool {
        self.use_direct.load(Ordering::Relaxed)
    }

    fn file(&self) -> (&File, bool) {
        match (&self.direct, self.use_direct.load(Ordering::Relaxed)) {
            (Some(f), true) => (f, true),
            _ => (&self.buffered, false),
        }
    }

    fn refused(e: &io::Error) -> bool {
        e.raw_os_error() == Some(libc::EINVAL)
    }

    fn io<F>(&self, op: &'static str, blkno: u64, len: usize, mut f: F) -> Result<(), DevError>
    where
        F: FnMut(&File, bool, u64) -> io::Result<()>,
    {
        let blocks = check_range(op, blkno, len, self.block_size, self.block_count)?;
        let off = blkno * self.block_size as u64;
        let (file, direct) = self.file();
        match f(file, direct, off) {
            Ok(()) => Ok(()),
            Err(e) if direct && Self::refused(&e) => {
                self.use_direct.store(false, Ordering::Relaxed);
                f(&self.buffered, false, off).map_err(|e| DevError::new(op, blkno, blocks, e))
            }
            Err(e) => Err(DevError::new(op, blkno, blocks, e)),
        }
    }
}

impl Device for FileDevice {
    fn block_size(&self) -> u32 {
        self.block_size
    }
    fn block_count(&self) -> u64 {
        self.block_count
    }
    fn read(&self, blkno: u64, buf: &mut [u8]) -> Result<(), DevError> {
        let len = buf.len();
        if AlignedBuf::is_aligned(buf) {
            return self.io("read", blkno, len, |f, _, off| f.read_exact_at(buf, off));
        }
        let mut bounce = AlignedBuf::new(len);
        self.io("read", blkno, len, |f, _, off| {
            f.read_exact_at(&mut bounce, off)
        })?;
        buf.copy_from_slice(&bounce);
        Ok(())
    }
    fn read_data(&self, blkno: u64, buf: &mut [u8]) -> Result<(), DevError> {
        if !self.cached_piece(buf.len()) {
            return self.read(blkno, buf);
        }
        let blocks = check_range("read", blkno, buf.len(), self.block_size, self.block_count)?;
        self.buffered
            .read_exact_at(buf, blkno * self.block_size as u64)
            .map_err(|e| DevError::new("read", blkno, blocks, e))
    }
    fn write(&self, blkno: u64, buf: &[u8]) -> Result<(), DevError> {
        if AlignedBuf::is_aligned(buf) {
            return self.io("write", blkno, buf.len(), |f, _, off| {
                f.write_all_at(buf, off)
            });
        }
        let mut bounce = AlignedBuf::new(buf.len());
        bounce.copy_from_slice(buf);
        self.io("write", blkno, buf.len(), |f, _, off| {
            f.write_all_at(&bounce, off)
        })
    }
    fn write_data(&self, blkno: u64, buf: &[u8]) -> Result<(), DevError> {
        if !self.cached_piece(buf.len()) {
            return self.write(blkno, buf);
        }
        let blocks = check_range("write", blkno, buf.len(), self.block_size, self.block_count)?;
        let err = |e| DevError::new("write", blkno, blocks, e);
        let len = buf.len() as u64;
        if self.dirty.load(Ordering::SeqCst) + len > self.dirty_max {
            self.write_back_dirty().map_err(err)?;
        }
        self.buffered
            .write_all_at(buf, blkno * self.block_size as u64)
            .map_err(err)?;
        self.dirty.fetch_add(len, Ordering::SeqCst);
        Ok(())
    }
    fn flush(&self) -> Result<(), DevError> {
        // Both descriptors name the same file; fdatasync on either writes back the dirty pages
        // and flushes the device cache.
        self.dirty.store(0, Ordering::SeqCst);
        self.buffered
            .sync_data()
            .map_err(|e| DevError::new("flush", 0, 0, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BS: u32 = 4096;
    /// Enough for pieces on both sides of CACHED_IO_MAX_BYTES.
    const BLOCKS: u64 = 64;

    /// A file on a disk that takes O_DIRECT (tmpfs refuses it, and /tmp may be one).
    fn image() -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new_in("/var/tmp").expect("temporary image");
        f.as_file()
            .set_len(BLOCKS * BS as u64)
            .expect("size the image");
        f
    }

    #[derive(Debug, Clone)]
    enum Op {
        Write { blkno: u64, n: u64, byte: u8 },
        WriteData { blkno: u64, n: u64, byte: u8 },
        Flush,
        ReadData { blkno: u64, n: u64 },
        Read { blkno: u64, n: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        (
            0..BLOCKS,
            prop_oneof![1..4u64, 14..24u64],
            any::<u8>(),
            0..6u8,
        )
            .prop_map(|(blkno, n, byte, k)| {
                let n = n.min(BLOCKS - blkno);
                match k {
                    0 => Op::Write { blkno, n, byte },
                    1 | 2 => Op::WriteData { blkno, n, byte },
                    3 => Op::ReadData { blkno, n },
                    4 => Op::Flush,
                    _ => Op::Read { blkno, n },
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Data through the page cache and metadata through O_DIRECT, mixed on the same blocks
        /// with a small bound on dirty pages: every read, of either kind, sees the last write of
        /// either kind; and after the last flush the file itself holds the model's bytes.
        #[test]
        fn data_reads_through_the_page_cache_see_every_direct_write(
            ops in proptest::collection::vec(op(), 1..40)
        ) {
            let img = image();
            let dev = FileDevice::open(img.path(), BS, true)
                .expect("open image")
                .with_data_page_cache(true, 24 * BS as u64);
            let mut model = vec![0u8; (BLOCKS * BS as u64) as usize];
            let at = |b: u64| (b * BS as u64) as usize;
            for op in ops {
                match op {
                    Op::Write { blkno, n, byte } | Op::WriteData { blkno, n, byte } => {
                        let mut buf = AlignedBuf::new((n * BS as u64) as usize);
                        buf.fill(byte);
                        if matches!(op, Op::Write { .. }) {
                            dev.write(blkno, &buf).expect("write");
                        } else {
                            dev.write_data(blkno, &buf).expect("write_data");
                        }
                        model[at(blkno)..at(blkno + n)].fill(byte);
                    }
                    Op::Flush => dev.flush().expect("flush"),
                    Op::ReadData { blkno, n } | Op::Read { blkno, n } => {
                        let mut buf = AlignedBuf::new((n * BS as u64) as usize);
                        if matches!(op, Op::ReadData { .. }) {
                            dev.read_data(blkno, &mut buf).expect("read_data");
                        } else {
                            dev.read(blkno, &mut buf).expect("read");
                        }
                        prop_assert_eq!(&buf[..], &model[at(blkno)..at(blkno + n)]);
                    }
                }
            }
            prop_assert!(dev.is_direct(), "the test's disk must take O_DIRECT");
            dev.flush().expect("flush");
            let on_disk = std::fs::read(img.path()).expect("read the image back");
            prop_assert!(on_disk == model, "the image after a flush differs from the model");
        }
    }
}
