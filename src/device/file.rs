//! An image file or block device, read and written with pread/pwrite at block offsets.
//!
//! O_DIRECT by default so the engine's own cache is the only cache and a flush means the device;
//! where the filesystem holding the image refuses O_DIRECT (tmpfs, some FUSE mounts, or a block
//! size below the sector size) it falls back to buffered I/O, once and for good, so direct and
//! buffered I/O are never mixed on live data.

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
            block_size,
            block_count: bytes / block_size as u64,
        })
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
