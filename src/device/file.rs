//! An image file or block device, read and written with pread/pwrite at block offsets.
//!
//! O_DIRECT by default so the engine's own cache is the only cache and a flush means the device;
//! where the filesystem holding the image refuses O_DIRECT (tmpfs, some FUSE mounts, or a block
//! size below the sector size) it falls back to buffered I/O, once and for good, so direct and
//! buffered I/O are never mixed on live data.
//!
//! One exception, asked for by the mount (`hostcache=on`, its default): file data is read through
//! the page cache of the image, as fuse2fs and a loop device read theirs, so a block the kernel
//! dropped from the file's own cache (eviction of the inode, `POSIX_FADV_DONTNEED`) comes back
//! at memory speed. This is coherent because nothing is ever written through the page cache:
//! every write is O_DIRECT, and the kernel writes back and drops the page cache's copy of the
//! range around each direct write. The cached pages are clean, so reclaim drops them at once
//! under memory pressure; metadata never enters that cache (the engine's cache is its only one).

use super::{check_range, AlignedBuf, DevError, Device};
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

pub struct FileDevice {
    direct: Option<File>,
    buffered: File,
    use_direct: AtomicBool,
    /// File data read through the page cache (see the module's comment).
    data_through_page_cache: bool,
    block_size: u32,
    block_count: u64,
}

impl FileDevice {
    /// Opens `path` for reading and writing in blocks of `block_size`. `direct` asks for O_DIRECT.
    pub fn open(path: &Path, block_size: u32, direct: bool) -> io::Result<FileDevice> {
        let mut buffered = OpenOptions::new().read(true).write(true).open(path)?;
        let bytes = buffered.seek(SeekFrom::End(0))?;
        let direct_file = if direct {
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
            block_size,
            block_count: bytes / block_size as u64,
        })
    }

    /// Reads file data through the image's page cache (`read_data`).
    pub fn with_data_page_cache(mut self, on: bool) -> FileDevice {
        self.data_through_page_cache = on;
        self
    }

    /// Is O_DIRECT in use (it may be dropped at the first refused request)?
    pub fn is_direct(&self) -> bool {
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
        if !self.data_through_page_cache || !self.is_direct() {
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
    fn flush(&self) -> Result<(), DevError> {
        // Both descriptors name the same file; fdatasync on either flushes the device cache.
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
    const BLOCKS: u64 = 16;

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
        ReadData { blkno: u64, n: u64 },
        Read { blkno: u64, n: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        (0..BLOCKS, 1..4u64, any::<u8>(), 0..3u8).prop_map(|(blkno, n, byte, k)| {
            let n = n.min(BLOCKS - blkno);
            match k {
                0 => Op::Write { blkno, n, byte },
                1 => Op::ReadData { blkno, n },
                _ => Op::Read { blkno, n },
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Data read through the page cache always sees the last O_DIRECT write, whatever the
        /// cache held before it; metadata reads (O_DIRECT) see the same bytes.
        #[test]
        fn data_reads_through_the_page_cache_see_every_direct_write(
            ops in proptest::collection::vec(op(), 1..40)
        ) {
            let img = image();
            let dev = FileDevice::open(img.path(), BS, true)
                .expect("open image")
                .with_data_page_cache(true);
            let mut model = vec![0u8; (BLOCKS * BS as u64) as usize];
            let at = |b: u64| (b * BS as u64) as usize;
            for op in ops {
                match op {
                    Op::Write { blkno, n, byte } => {
                        let mut buf = AlignedBuf::new((n * BS as u64) as usize);
                        buf.fill(byte);
                        dev.write(blkno, &buf).expect("write");
                        model[at(blkno)..at(blkno + n)].fill(byte);
                    }
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
        }
    }
}
