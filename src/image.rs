//! Opening an image file or block device as a device of the right block size, and recognising
//! filesystem signatures already on it (shared by mkfs, fsck and the mount).

use crate::device::FileDevice;
use crate::format::superblock::SB_MAGIC;
use crate::format::{block_size_valid, Superblock};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Reads the block size from the superblock at the start of `path` (checked in full, CRC too).
pub(crate) fn probe_block_size(path: &Path) -> io::Result<u32> {
    let mut f = open_checked(path)?;
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
    let mut f = open_checked(path).ok()?;
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

/// Opens `path` for reading only, through the page cache: `fsck -n` and `ticketfs db`, which
/// never write, so a user who may only read the image can run them.
pub fn open_image_read_only(path: &Path) -> io::Result<FileDevice> {
    FileDevice::open_read_only(path, image_block_size(path)?)
}

fn open_image_with(path: &Path, direct: bool) -> io::Result<FileDevice> {
    FileDevice::open(path, image_block_size(path)?, direct)
}

/// The block size the superblock of the image at `path` names (the backup's when the primary is
/// bad), after checking that it is an image file or a block device.
fn image_block_size(path: &Path) -> io::Result<u32> {
    check_kind(path)?;
    match probe_block_size(path) {
        Ok(bs) => Ok(bs),
        Err(e) => probe_backup_block_size(path).ok_or(e),
    }
}

/// The name of a filesystem whose signature is on `path`, if any.
pub(crate) fn existing_signature(path: &Path) -> io::Result<Option<&'static str>> {
    let f = open_checked(path)?;
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

/// The identity of the image at `path` (following symlinks). A loop device that maps a whole
/// file is that file: the daemon mounts an image file through a loop device of its own, and
/// whatever names either (the file, `/dev/loopN`) is the same image to the lock, the mount
/// table and mkfs's and fsck's refusals. The file is the one the kernel's loop driver holds
/// (LOOP_GET_STATUS64: its device and inode), not the path sysfs shows, which a deleted,
/// renamed or re-pointed file no longer names; a loop over part of a file (an offset or a size
/// limit) is a device of its own.
pub(crate) fn identity(path: &Path) -> io::Result<ImageId> {
    let m = std::fs::metadata(path)?;
    if !m.file_type().is_block_device() {
        return Ok(ImageId::File {
            dev: m.dev(),
            ino: m.ino(),
        });
    }
    Ok(match whole_file_loop(path, m.rdev()) {
        Some((dev, ino)) => ImageId::File { dev, ino },
        None => ImageId::Block(m.rdev()),
    })
}

/// The loop driver's block major (linux/major.h): only such a device is asked for its file.
const LOOP_MAJOR: u32 = 7;
/// LOOP_GET_STATUS64 (linux/loop.h): fills a struct loop_info64.
const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;
/// sizeof(struct loop_info64): five u64, four u32, two names of 64 bytes, a 32-byte key, two
/// u64.
const LOOP_INFO64_BYTES: usize = 232;
/// Offsets in struct loop_info64 of lo_device, lo_inode, lo_offset and lo_sizelimit.
const LO_DEVICE_AT: usize = 0;
const LO_INODE_AT: usize = 8;
const LO_OFFSET_AT: usize = 24;
const LO_SIZELIMIT_AT: usize = 32;

/// What the loop driver says of an attached loop device (LOOP_GET_STATUS64).
struct LoopStatus {
    /// The (device, inode) of the file it maps.
    file: (u64, u64),
    /// It maps the whole file: no offset, no size limit.
    whole: bool,
}

/// The status of the loop device open as `f`; None when it is not an attached loop device.
fn loop_status(f: &File) -> Option<LoopStatus> {
    let mut info = [0u8; LOOP_INFO64_BYTES];
    // SAFETY: LOOP_GET_STATUS64 writes a struct loop_info64, which `info` holds.
    if unsafe { libc::ioctl(f.as_raw_fd(), LOOP_GET_STATUS64, info.as_mut_ptr()) } != 0 {
        return None; // not attached, or not a loop device after all
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&info[at..at + 8]);
        u64::from_ne_bytes(b)
    };
    Some(LoopStatus {
        file: (u64_at(LO_DEVICE_AT), u64_at(LO_INODE_AT)),
        whole: u64_at(LO_OFFSET_AT) == 0 && u64_at(LO_SIZELIMIT_AT) == 0,
    })
}

/// Opens a block device for an ioctl, without blocking and without claiming it.
fn open_for_ioctl(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
}

/// The (device, inode) of the file the loop device `path` (device number `rdev`) maps whole,
/// if it is an attached loop device without an offset or a size limit.
fn whole_file_loop(path: &Path, rdev: u64) -> Option<(u64, u64)> {
    if libc::major(rdev) != LOOP_MAJOR {
        return None;
    }
    let f = open_for_ioctl(path).ok()?;
    loop_status(&f).filter(|s| s.whole).map(|s| s.file)
}

/// The path sysfs shows for the file the loop device `rdev` is attached to (for messages: the
/// identity comes from the driver, `identity`).
pub(crate) fn loop_backing_file(rdev: u64) -> Option<std::path::PathBuf> {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let s = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/loop/backing_file"))
        .ok()?;
    let s = s.trim_end_matches('\n');
    Some(s.strip_suffix(" (deleted)").unwrap_or(s).into())
}

/// Opens `path` for reading without blocking (a FIFO would block the open) and refuses what
/// was opened unless it can hold an image (`kind_problem`); the descriptor then blocks as
/// usual.
fn open_checked(path: &Path) -> io::Result<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    kind_problem(f.metadata()?.file_type())?;
    // SAFETY: fcntl on a descriptor we own; F_SETFL with the access flags only.
    if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(f)
}

/// Refuses what cannot hold an image: anything but a regular file or a block device (a FIFO
/// would block the open or the first read forever; a character device or a directory is a
/// typo).
pub fn check_kind(path: &Path) -> io::Result<()> {
    kind_problem(std::fs::metadata(path)?.file_type())
}

/// `check_kind` of a file type already known.
fn kind_problem(t: std::fs::FileType) -> io::Result<()> {
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

/// An image marked in use for every user while it is held (dropped: released).
pub struct Claim {
    _held: Vec<File>,
    /// A shared lock still being waited for (`claim_for_mount`), given up when dropped.
    _waiting: Option<LateLock>,
}

/// A shared flock a daemon waits for in a thread of its own while someone else holds the image
/// exclusively, so that it holds its claim again as soon as they let go. Dropped: the lock is
/// released, or given up if not yet taken.
struct LateLock {
    slot: std::sync::Arc<parking_lot::Mutex<LateState>>,
}

enum LateState {
    Waiting,
    /// Held for its lock: dropping the descriptor releases it.
    Held {
        _file: File,
    },
    Dropped,
}

impl Drop for LateLock {
    fn drop(&mut self) {
        // Dropping a held File releases the lock.
        *self.slot.lock() = LateState::Dropped;
    }
}

/// Waits in a thread for a shared flock on the image at `path`, on a descriptor of its own (a
/// lock belongs to the open file, so the refused one cannot be reused).
fn late_shared_lock(path: &Path) -> io::Result<LateLock> {
    let f = open_checked(path)?;
    let slot = std::sync::Arc::new(parking_lot::Mutex::new(LateState::Waiting));
    let theirs = slot.clone();
    std::thread::Builder::new()
        .name("tkfs-claim".into())
        .spawn(move || {
            // SAFETY: flock on a descriptor this thread owns; it blocks until granted.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH) } != 0 {
                return;
            }
            let mut s = theirs.lock();
            if matches!(*s, LateState::Waiting) {
                *s = LateState::Held { _file: f };
            }
        })?;
    Ok(LateLock { slot })
}

/// Why a claim was refused: the image is in use.
fn in_use(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::ResourceBusy, what)
}

/// Claims the image at `path` for mkfs or fsck, which must have it to themselves, whoever else
/// is using it (the image's lock and the mount table cover only this user's mounts):
/// - a block device: opened O_EXCL, which the kernel refuses (EBUSY) while it is mounted (a
///   ticketfs mount's loop device, any kernel filesystem) or claimed by another program, a
///   ticketfs daemon serving it as a plain fuse mount too (`claim_for_mount`), as mke2fs and
///   mkfs.xfs find out;
/// - an image file: an exclusive flock, which fails while a ticketfs daemon of any user holds
///   its shared one (`claim_for_mount`) or another mkfs or fsck its exclusive one (a lock held
///   by someone who may only read the file is passed over: `flock_or_holders`); no ticketfs
///   daemon of root or the owner with it open (one that went on without its lock); and an
///   O_EXCL claim on every loop device that maps the file (some or all of it), which fails
///   while one is in use: mke2fs refuses the file behind a mounted loop device.
///
/// Held until the tool is done, so nobody mounts the image meanwhile.
pub fn claim_exclusive(path: &Path) -> io::Result<Claim> {
    let (f, m) = match device_claim_or_file(path)? {
        Ok(device) => return Ok(device),
        Err(file) => file,
    };
    let locked = flock_or_holders(f, libc::LOCK_EX, &m)?;
    // Someone who may only read the image holds a lock on it: a mount may then be waiting for
    // its shared lock (`claim_for_mount`), and is seen by the descriptor its daemon keeps open.
    // (Not looked for when the lock was taken: a daemon that has just answered an unmount
    // still has the image open until it exits, its lock already released.)
    if let Some(h) = locked
        .is_none()
        .then(|| crate::holders::daemons_with_open(m.dev(), m.ino(), m.uid()))
        .into_iter()
        .flatten()
        .next()
    {
        return Err(in_use(format!(
            "in use: a ticketfs mount has it open ({h})"
        )));
    }
    let mut held: Vec<File> = locked.into_iter().collect();
    for dev in loops_over(m.dev(), m.ino()) {
        match claim_device(&dev) {
            Ok(c) => held.push(c),
            Err(e) if e.kind() == io::ErrorKind::ResourceBusy => {
                return Err(in_use(format!(
                    "in use: {} maps it and is in use (mounted, or held by another program)",
                    dev.display()
                )))
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", dev.display()))),
        }
    }
    Ok(Claim {
        _held: held,
        _waiting: None,
    })
}

/// Claims the image at `path` for a daemon serving it through a plain fuse mount, for the life
/// of the mount, so that mkfs and fsck of every user (`claim_exclusive`) and the kernel see it
/// in use: a block device O_EXCL, as the kernel claims a fuseblk mount's (refused when in use);
/// an image file by a shared flock, refused while root or the image's owner holds it
/// exclusively (their mkfs or fsck at work). Someone else holding it (anyone who may read the
/// file can) does not keep the owner from mounting: the mount goes on, waits for the lock in a
/// thread and holds it once they let go; meanwhile mkfs and fsck, refused the lock by that
/// same holder, find the mount by its open descriptor.
pub fn claim_for_mount(path: &Path) -> io::Result<Claim> {
    let (f, m) = match device_claim_or_file(path)? {
        Ok(device) => return Ok(device),
        Err(file) => file,
    };
    Ok(match flock_or_holders(f, libc::LOCK_SH, &m)? {
        Some(f) => Claim {
            _held: vec![f],
            _waiting: None,
        },
        None => Claim {
            _held: Vec::new(),
            _waiting: Some(late_shared_lock(path)?),
        },
    })
}

/// Takes flock `how` on `f` (the image, `m` its metadata): Some(f) when taken. When another
/// holds a conflicting lock: refused (in use) if a holder is root or the image's owner, or if
/// no holder can be found (`holders::lock_holders`: a user other than root sees only their own
/// processes' descriptors); None (go on without it) when every holder is someone else, who may
/// only read the file (`holders::counts`).
fn flock_or_holders(f: File, how: libc::c_int, m: &std::fs::Metadata) -> io::Result<Option<File>> {
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), how | libc::LOCK_NB) } == 0 {
        return Ok(Some(f));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
        return Err(e);
    }
    let holders = crate::holders::lock_holders(m.dev(), m.ino());
    match holders.iter().find(|h| crate::holders::counts(h, m.uid())) {
        Some(h) => Err(in_use(format!(
            "in use: locked by {h} (a ticketfs mount, or its mkfs or fsck)"
        ))),
        None if holders.is_empty() => Err(in_use(
            "in use: locked by another program (a ticketfs mount, or its mkfs or fsck)".into(),
        )),
        None => Ok(None),
    }
}

/// A block device at `path` claimed O_EXCL (Ok), or the image file opened, with the metadata
/// of the file opened whatever the path names by now (Err).
fn device_claim_or_file(path: &Path) -> io::Result<Result<Claim, (File, std::fs::Metadata)>> {
    if std::fs::metadata(path)?.file_type().is_block_device() {
        return Ok(Ok(Claim {
            _held: vec![claim_device(path)?],
            _waiting: None,
        }));
    }
    let f = open_checked(path)?;
    let m = f.metadata()?;
    Ok(Err((f, m)))
}

/// Opens the block device `path` O_EXCL: the kernel's claim, refused (EBUSY) while it is
/// mounted or claimed by another program.
fn claim_device(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::EBUSY) {
                in_use("in use: mounted, or held by another program".to_string())
            } else {
                e
            }
        })
}

/// Where sysfs lists block devices: the loop devices attached to a file have `loop/` there.
const SYS_BLOCK: &str = "/sys/block";

/// The attached loop devices that map (some of) the file with device `dev` and inode `ino`, as
/// the loop driver holds it (its path may have changed since), by their /dev names.
fn loops_over(dev: u64, ino: u64) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(SYS_BLOCK) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let name = e.ok()?.file_name();
            let name = name.to_str()?;
            // Only attached loop devices have a backing file.
            if !name.starts_with("loop")
                || !Path::new(SYS_BLOCK)
                    .join(name)
                    .join("loop/backing_file")
                    .exists()
            {
                return None;
            }
            let node = Path::new("/dev").join(name);
            let f = open_for_ioctl(&node).ok()?;
            let md = f.metadata().ok()?;
            let is_loop = md.file_type().is_block_device() && libc::major(md.rdev()) == LOOP_MAJOR;
            (is_loop && loop_status(&f)?.file == (dev, ino)).then_some(node)
        })
        .collect()
}
