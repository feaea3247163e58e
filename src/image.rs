//! Opening an image file or block device as a device of the right block size, and recognising
//! filesystem signatures already on it (shared by mkfs, fsck and the mount).

use crate::device::FileDevice;
use crate::format::superblock::SB_MAGIC;
use crate::format::{block_size_valid, Superblock};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::Path;

/// Reads the block size from the superblock at the start of `path` (checked in full, CRC too).
pub(crate) fn probe_block_size(path: &Path) -> io::Result<u32> {
    let mut f = File::open(path)?;
    let mut head = vec![0u8; crate::format::BLOCK_SIZE_MAX as usize];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let bs = u32::from_le_bytes([head[12], head[13], head[14], head[15]]);
    if u32::from_le_bytes([head[0], head[1], head[2], head[3]]) != SB_MAGIC
        || !block_size_valid(bs)
        || n < bs as usize
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            // The caller names the image (every caller puts its path before the error).
            "no ticketfs superblock in block 0".to_string(),
        ));
    }
    Superblock::decode(&head[..n], 0)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    Ok(bs)
}

/// The block size the backup superblock (the device's last block) names, when the primary is
/// unreadable: each valid block size is tried.
fn probe_backup_block_size(path: &Path) -> Option<u32> {
    use std::io::{Seek, SeekFrom};
    let mut f = File::open(path).ok()?;
    let len = f.seek(SeekFrom::End(0)).ok()?;
    let mut bs = crate::format::BLOCK_SIZE_MIN;
    while bs <= crate::format::BLOCK_SIZE_MAX {
        let blocks = len / bs as u64;
        if blocks > 0 {
            let mut buf = vec![0u8; bs as usize];
            if f.read_exact_at(&mut buf, (blocks - 1) * bs as u64).is_ok()
                && Superblock::decode(&buf, blocks - 1).is_ok_and(|s| s.geometry.block_size == bs)
            {
                return Some(bs);
            }
        }
        bs *= 2;
    }
    None
}

/// Opens `path` with the block size its superblock names (the backup's, when the primary is
/// bad: mounting and fsck then work from the backup), with O_DIRECT (the mount: the daemon's
/// cache is the only cache).
pub fn open_image(path: &Path) -> io::Result<FileDevice> {
    open_image_with(path, true)
}

/// Opens `path` through the page cache, whose read-ahead serves a tool that reads the whole
/// image once (fsck, ticketfs db).
pub fn open_image_buffered(path: &Path) -> io::Result<FileDevice> {
    open_image_with(path, false)
}

fn open_image_with(path: &Path, direct: bool) -> io::Result<FileDevice> {
    let bs = match probe_block_size(path) {
        Ok(bs) => bs,
        Err(e) => probe_backup_block_size(path).ok_or(e)?,
    };
    FileDevice::open(path, bs, direct)
}

/// The name of a filesystem whose signature is on `path`, if any.
pub(crate) fn existing_signature(path: &Path) -> io::Result<Option<&'static str>> {
    let f = File::open(path)?;
    let mut buf = [0u8; 8];
    let at = |off: u64, len: usize, buf: &mut [u8; 8]| -> bool {
        f.read_exact_at(&mut buf[..len], off).is_ok()
    };
    if at(0, 4, &mut buf) && u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) == SB_MAGIC {
        return Ok(Some("ticketfs"));
    }
    if at(0, 4, &mut buf) && &buf[..4] == b"XFSB" {
        return Ok(Some("xfs"));
    }
    if at(1080, 2, &mut buf) && buf[..2] == [0x53, 0xEF] {
        return Ok(Some("ext2/3/4"));
    }
    if at(65600, 8, &mut buf) && &buf[..8] == b"_BHRfS_M" {
        return Ok(Some("btrfs"));
    }
    Ok(None)
}

/// Parses a size with an optional K, M, G or T suffix (powers of 1024).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()?.to_ascii_uppercase() {
        'K' => (&s[..s.len() - 1], 1u64 << 10),
        'M' => (&s[..s.len() - 1], 1 << 20),
        'G' => (&s[..s.len() - 1], 1 << 30),
        'T' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// What an image is, whatever path names it: a block device by its device number, a file by its
/// filesystem and inode (so a hard link, a symlink and every spelling of the path agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ImageId {
    Block(u64),
    File { dev: u64, ino: u64 },
}

/// The identity of the image at `path` (following symlinks).
pub(crate) fn identity(path: &Path) -> io::Result<ImageId> {
    let m = std::fs::metadata(path)?;
    Ok(if m.file_type().is_block_device() {
        ImageId::Block(m.rdev())
    } else {
        ImageId::File {
            dev: m.dev(),
            ino: m.ino(),
        }
    })
}
