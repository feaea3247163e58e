//! Making a filesystem on an image file or block device: what mkfs.ticketfs does, as a library
//! function so tests and tools share it.

use crate::device::{Device, FileDevice};
use crate::engine::{self, Engine, EngineOptions};
use crate::format::{Geometry, Superblock, BLOCK_SIZE_DEFAULT};
use crate::image::existing_signature;
use crate::resv::ResvTable;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

/// Default log: 1/64 of the device, between the table's minimum and this many bytes.
pub const LOG_DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// Default allocation group size, so large devices get more AGs (at most 64 by default).
pub const AG_DEFAULT_BYTES: u64 = 1 << 30;

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
        }
    }
}

/// What was made.
#[derive(Debug, Clone)]
pub struct Made {
    pub sb: Superblock,
    pub min_log_blocks: u64,
}

/// Formats `target`: creates a sparse file of `size` if it does not exist, refuses an existing
/// filesystem without `force`, then writes superblocks, log, allocation groups and the root
/// directory (through the engine, as transactions) and leaves the image clean.
pub fn make_filesystem(target: &Path, o: &MkfsOptions) -> Result<Made, String> {
    let show = target.display();
    // Never a mounted image, whatever -f says (as mkfs.xfs refuses a mounted device): not one
    // a daemon holds (its lock), nor one still in the mount table (a daemon that died leaves
    // its mount). The lock is held while formatting, so no mount starts meanwhile.
    let _lock = if target.exists() {
        if let Some(m) = crate::stats::mounts_of(target).first() {
            return Err(format!("{show} is mounted on {}", m.point.display()));
        }
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
    if !target.exists() {
        let s = o
            .size
            .ok_or_else(|| format!("{show} does not exist: give a size to create it"))?;
        // Only its owner may read or write a new image: it holds every file's contents.
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(target)
            .map_err(|e| format!("{show}: {e}"))?;
        f.set_len(s).map_err(|e| format!("{show}: {e}"))?;
    } else {
        match existing_signature(target) {
            Ok(Some(fs)) if !o.force => {
                return Err(format!(
                    "{show} holds a {fs} filesystem; use -f to overwrite it"
                ))
            }
            Err(e) => return Err(format!("{show}: {e}")),
            _ => {}
        }
        if let Some(s) = o.size {
            let meta = std::fs::metadata(target).map_err(|e| format!("{show}: {e}"))?;
            if meta.is_file() && meta.len() < s {
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
    let ag_count = o
        .ag_count
        .unwrap_or_else(|| ((blocks * bs as u64) / AG_DEFAULT_BYTES).clamp(1, 64) as u32);
    let probe = Geometry::new(bs, blocks, 16, ag_count)?;
    let min_log = ResvTable::new(&probe).min_log_blocks();
    let log_blocks = match o.log_bytes {
        Some(l) => l.div_ceil(bs as u64),
        None => (blocks / 64).clamp(min_log, (LOG_DEFAULT_MAX_BYTES / bs as u64).max(min_log)),
    };
    let g = Geometry::new(bs, blocks, log_blocks, ag_count)?;
    let sb = engine::format(&dev, g, engine::new_uuid(), &o.label).map_err(|e| e.to_string())?;
    let mut eng =
        Engine::mount(Arc::new(dev), EngineOptions::default()).map_err(|e| e.to_string())?;
    crate::alloc::format_all(&eng).map_err(|e| format!("formatting allocation groups: {e}"))?;
    let root =
        crate::fs::make_root(&eng).map_err(|e| format!("creating the root directory: {e}"))?;
    eng.set_root_ino(root);
    let mut sb = sb;
    sb.root_ino = root;
    eng.unmount().map_err(|e| e.to_string())?;
    Ok(Made {
        sb,
        min_log_blocks: min_log,
    })
}
