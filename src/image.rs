//! Opening an image file or block device as a device of the right block size, and recognising
//! filesystem signatures already on it (shared by mkfs, fsck and the mount).

use crate::device::FileDevice;
use crate::format::superblock::SB_MAGIC;
use crate::format::{block_size_valid, Superblock};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Reads the block size from the superblock at the start of `path` (checked in full, CRC too).
pub(crate) fn probe_block_size(path: &Path) -> io::Result<u32> {
    check_kind(path)?;
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
    check_kind(path)?;
    let bs = match probe_block_size(path) {
        Ok(bs) => bs,
        Err(e) => probe_backup_block_size(path).ok_or(e)?,
    };
    FileDevice::open(path, bs, direct)
}

/// The name of a filesystem whose signature is on `path`, if any.
pub(crate) fn existing_signature(path: &Path) -> io::Result<Option<&'static str>> {
    check_kind(path)?;
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

/// Loop devices followed to their backing file: a loop over a loop is legal, a chain longer than
/// this is not one ticketfs made or would follow.
const LOOP_DEPTH_MAX: usize = 8;

/// The identity of the image at `path` (following symlinks). A loop device is its backing
/// file: the daemon mounts an image file through a loop device of its own, and whatever names
/// either (the file, `/dev/loopN`, another loop over the same file) is the same image to the
/// lock, the mount table and mkfs's and fsck's refusals.
pub(crate) fn identity(path: &Path) -> io::Result<ImageId> {
    let mut m = std::fs::metadata(path)?;
    for _ in 0..LOOP_DEPTH_MAX {
        if !m.file_type().is_block_device() {
            return Ok(ImageId::File {
                dev: m.dev(),
                ino: m.ino(),
            });
        }
        match loop_backing_file(m.rdev()).and_then(|f| std::fs::metadata(f).ok()) {
            Some(backing) => m = backing,
            None => return Ok(ImageId::Block(m.rdev())),
        }
    }
    Ok(ImageId::Block(m.rdev()))
}

/// The file the loop device `rdev` is attached to, if it is an attached loop device.
pub(crate) fn loop_backing_file(rdev: u64) -> Option<std::path::PathBuf> {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let s = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/loop/backing_file"))
        .ok()?;
    let s = s.trim_end_matches('\n');
    Some(s.strip_suffix(" (deleted)").unwrap_or(s).into())
}

/// Refuses what cannot hold an image: anything but a regular file or a block device (a FIFO
/// would block the open or the first read forever; a character device or a directory is a
/// typo).
pub fn check_kind(path: &Path) -> io::Result<()> {
    let t = std::fs::metadata(path)?.file_type();
    if t.is_file() || t.is_block_device() {
        return Ok(());
    }
    let what = if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what}, not an image file or a block device"),
    ))
}

/// An exclusive claim on a block device (O_EXCL), held while mkfs or fsck writes it: the
/// kernel refuses it (EBUSY) while the device is mounted (a ticketfs mount's loop device, any
/// kernel filesystem) or claimed by another program, as mke2fs and mkfs.xfs find out. None for
/// an image file (its lock and the mount table cover it).
pub fn claim_block_device(path: &Path) -> io::Result<Option<File>> {
    if !std::fs::metadata(path)?.file_type().is_block_device() {
        return Ok(None);
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(io::Error::new(
            io::ErrorKind::ResourceBusy,
            "in use: mounted, or held by another program",
        )),
        Err(e) => Err(e),
    }
}
