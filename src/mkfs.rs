//! Making a filesystem on an image file or block device: what mkfs.ticketfs does, as a library
//! function so tests and tools share it.

use crate::device::{Device, FileDevice};
use crate::engine::{self, Engine, EngineOptions};
use crate::format::{Geometry, Superblock, BLOCK_SIZE_DEFAULT};
use crate::image::existing_signature;
use crate::progress::Progress;
use crate::resv::ResvTable;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

/// Default log: 1/64 of the device, between the table's minimum and this many bytes.
pub(crate) const LOG_DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// Default allocation group size, so large devices get more AGs (at most 64 by default).
pub(crate) const AG_DEFAULT_BYTES: u64 = 1 << 30;

#[derive(Debug, Clone)]
pub struct MkfsOptions {
    /// Size to create (or grow) an image file to; None: the target's size.
    pub size: Option<u64>,
    pub block_size: u32,
    pub log_bytes: Option<u64>,
    pub ag_count: Option<u32>,
    pub label: String,
    /// Overwrite an existing filesystem.
    pub force: bool,
    /// The root directory's owner and group (mke2fs -E root_owner): 0:0 unless a user is to
    /// create files in a filesystem of their own.
    pub root_owner: (u32, u32),
}

impl Default for MkfsOptions {
    fn default() -> Self {
        MkfsOptions {
            size: None,
            block_size: BLOCK_SIZE_DEFAULT,
            log_bytes: None,
            ag_count: None,
            label: String::new(),
            force: false,
            root_owner: (0, 0),
        }
    }
}

/// What was made.
#[derive(Debug, Clone)]
pub struct Made {
    pub sb: Superblock,
    pub min_log_blocks: u64,
}

/// The largest image file mkfs creates or grows: what a file's length (an `off_t`) can be.
pub(crate) const SIZE_MAX_BYTES: u64 = i64::MAX as u64;

/// The geometry mkfs chooses for `blocks` blocks of `bs` bytes: the AG count and log size given,
/// or the defaults (an AG per GiB up to 64; a log of 1/64 of the device between the
/// reservation table's minimum and `LOG_DEFAULT_MAX_BYTES`). Returns it with the table's
/// minimum log.
fn plan(o: &MkfsOptions, blocks: u64) -> Result<(Geometry, u64), String> {
    let bs = o.block_size;
    let ag_count = o.ag_count.unwrap_or_else(|| {
        (blocks.saturating_mul(bs as u64) / AG_DEFAULT_BYTES).clamp(1, 64) as u32
    });
    let probe = Geometry::new(bs, blocks, 16, ag_count)?;
    let min_log = ResvTable::new(&probe).min_log_blocks();
    let log_blocks = match o.log_bytes {
        Some(l) => l.div_ceil(bs as u64),
        None => (blocks / 64).clamp(min_log, (LOG_DEFAULT_MAX_BYTES / bs as u64).max(min_log)),
    };
    if log_blocks < min_log {
        return Err(format!(
            "a log of {log_blocks} blocks is below the {min_log} these blocks need (-l {})",
            min_log * bs as u64
        ));
    }
    Ok((Geometry::new(bs, blocks, log_blocks, ag_count)?, min_log))
}

/// The fewest blocks `plan` accepts with these options, if any up to `SIZE_MAX_BYTES`: found by
/// doubling, then halving the interval (more blocks never make a geometry impossible below
/// the AG count's own limits).
fn smallest_blocks(o: &MkfsOptions) -> Option<u64> {
    let max = SIZE_MAX_BYTES / o.block_size as u64;
    let mut hi = 64u64;
    while plan(o, hi).is_err() {
        hi = hi.checked_mul(2).filter(|&h| h <= max)?;
    }
    let mut lo = hi / 2;
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if plan(o, mid).is_ok() {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// The geometry for `blocks`, or why not: for a device too small, the smallest size that works
/// with these options.
fn fits(o: &MkfsOptions, blocks: u64) -> Result<(Geometry, u64), String> {
    // The size as the user gave it (it is rounded down to whole blocks before this).
    let shown = o
        .size
        .filter(|&s| s / o.block_size as u64 == blocks)
        .unwrap_or(blocks * o.block_size as u64);
    plan(o, blocks).map_err(|why| match smallest_blocks(o) {
        // With the default AG count more blocks never hurt, so the search finds the smallest;
        // with -a the last AG's size goes up and down with the device's, so the size found
        // works but a smaller one might too.
        Some(min) if min > blocks && o.ag_count.is_none() => format!(
            "{} bytes is too small: the smallest filesystem with {}-byte blocks{} is {} bytes \
             ({} KiB) ({why})",
            shown,
            o.block_size,
            if o.log_bytes.is_some() {
                " and this -l"
            } else {
                ""
            },
            min * o.block_size as u64,
            (min * o.block_size as u64).div_ceil(1024)
        ),
        Some(min) if min > blocks => format!(
            "{} bytes is too small for {} AGs: {} bytes ({} KiB) works ({why})",
            shown,
            o.ag_count.unwrap_or(0),
            min * o.block_size as u64,
            (min * o.block_size as u64).div_ceil(1024)
        ),
        _ => why,
    })
}

/// The options' own faults, found before the target is touched.
fn check_options(o: &MkfsOptions) -> Result<(), String> {
    if !crate::format::block_size_valid(o.block_size) {
        return Err(format!(
            "block size {} is not a power of two from 512 to 65536",
            o.block_size
        ));
    }
    if o.label.len() > crate::format::LABEL_BYTES || o.label.contains('\0') {
        return Err(format!(
            "label of {} bytes: at most {} bytes, without NUL",
            o.label.len(),
            crate::format::LABEL_BYTES
        ));
    }
    if o.size.is_some_and(|s| s > SIZE_MAX_BYTES) {
        return Err(format!(
            "size {} is larger than a file can be ({SIZE_MAX_BYTES} bytes)",
            o.size.unwrap_or(0)
        ));
    }
    Ok(())
}

/// Removes the image file mkfs created when it fails before the end: a failed mkfs leaves
/// nothing behind (a file that existed before is left, formatted or not).
struct CreatedFile<'a> {
    path: &'a Path,
    keep: bool,
}

impl Drop for CreatedFile<'_> {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(self.path);
        }
    }
}

/// Formats `target`: creates a sparse file of `size` if it does not exist, refuses an existing
/// filesystem without `force`, then writes superblocks, log, allocation groups and the root
/// directory (through the engine, as transactions) and leaves the image clean.
pub fn make_filesystem(target: &Path, o: &MkfsOptions) -> Result<Made, String> {
    make_filesystem_with(target, o, &mut |_, _, _| {})
}

/// `make_filesystem`, reporting its phases to `progress`: the log (written whole, up to 64 MiB
/// of zeros: what takes time on a slow device), each allocation group, and the final write
/// home.
pub fn make_filesystem_with(
    target: &Path,
    o: &MkfsOptions,
    progress: Progress<'_>,
) -> Result<Made, String> {
    let show = target.display();
    check_options(o)?;
    // Never a mounted image, whatever -f says (as mkfs.xfs refuses a mounted device): not one
    // a daemon holds (its lock), nor one still in the mount table (a daemon that died leaves
    // its mount). The lock is held while formatting, so no mount starts meanwhile.
    if !target.exists() {
        if let Ok(dest) = std::fs::read_link(target) {
            return Err(format!(
                "{show} is a symbolic link to {}, which does not exist",
                dest.display()
            ));
        }
    }
    if target.exists() {
        crate::image::check_kind(target).map_err(|e| format!("{show}: {e}"))?;
        if let Some(m) = crate::stats::mounts_of(target).first() {
            return Err(format!("{show} is mounted on {}", m.point.display()));
        }
    }
    // In use by anyone (`image::claim_exclusive`: a block device the kernel holds, an image
    // file another user's ticketfs serves or that a busy loop device maps) is refused
    // whatever names it; held until the filesystem is written.
    let _claim = if target.exists() {
        Some(crate::image::claim_exclusive(target).map_err(|e| format!("{show}: {e}"))?)
    } else {
        None
    };
    let _lock = if target.exists() {
        match crate::rundir::try_lock(target) {
            Ok(l) => Some(l),
            Err(None) => {
                return Err(format!(
                    "{show} is in use (locked by a ticketfs daemon, mkfs or fsck): unmount it first"
                ))
            }
            Err(Some(e)) => return Err(format!("{show}: {e}")),
        }
    } else {
        None
    };
    let mut created = None;
    if !target.exists() {
        let s = o
            .size
            .ok_or_else(|| format!("{show} does not exist: give a size to create it"))?;
        // Too small for any filesystem: said before the file is made.
        fits(o, s / o.block_size as u64)?;
        // Only its owner may read or write a new image: it holds every file's contents.
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(target)
            .map_err(|e| format!("{show}: {e}"))?;
        created = Some(CreatedFile {
            path: target,
            keep: false,
        });
        f.set_len(s).map_err(|e| format!("{show}: {e}"))?;
    } else {
        match existing_signature(target) {
            Ok(Some(fs)) if !o.force => {
                return Err(format!(
                    "{show} holds {} {fs} filesystem; use -f to overwrite it",
                    if fs.starts_with(['a', 'e', 'i', 'o', 'u']) {
                        "an"
                    } else {
                        "a"
                    }
                ))
            }
            Err(e) => return Err(format!("{show}: {e}")),
            _ => {}
        }
        if let Some(s) = o.size {
            let meta = std::fs::metadata(target).map_err(|e| format!("{show}: {e}"))?;
            if meta.is_file() && meta.len() < s {
                // Too small for any filesystem: said before the file is grown.
                fits(o, s / o.block_size as u64)?;
                OpenOptions::new()
                    .write(true)
                    .open(target)
                    .and_then(|f| f.set_len(s))
                    .map_err(|e| format!("{show}: {e}"))?;
            }
        }
    }
    let bs = o.block_size;
    let dev = FileDevice::open(target, bs, true).map_err(|e| format!("{show}: {e}"))?;
    let mut blocks = dev.block_count();
    if let Some(s) = o.size {
        blocks = blocks.min(s / bs as u64);
    }
    let (g, min_log) = fits(o, blocks)?;
    progress("log", 0, g.log_blocks);
    let sb = engine::format(&dev, g, engine::new_uuid(), &o.label).map_err(|e| e.to_string())?;
    progress("log", g.log_blocks, g.log_blocks);
    let mut eng =
        Engine::mount(Arc::new(dev), EngineOptions::default()).map_err(|e| e.to_string())?;
    crate::alloc::format_all_with(&eng, progress)
        .map_err(|e| format!("formatting allocation groups: {e}"))?;
    let root = crate::fs::make_root(&eng, o.root_owner)
        .map_err(|e| format!("creating the root directory: {e}"))?;
    eng.set_root_ino(root);
    let mut sb = sb;
    sb.root_ino = root;
    progress("writing home", 0, 1);
    eng.unmount().map_err(|e| e.to_string())?;
    progress("writing home", 1, 1);
    if let Some(c) = created.as_mut() {
        c.keep = true;
    }
    Ok(Made {
        sb,
        min_log_blocks: min_log,
    })
}
