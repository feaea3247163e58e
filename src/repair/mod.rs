//! fsck.ticketfs's repair (`-y`), in xfs_repair's manner: find what can be kept, decide the
//! namespace, fix inodes, rebuild every AG's trees from what is in use, then mend the namespace
//! and the link counts through the filesystem's own operations.
//!
//! 1. scan (read-only, `scan`): inode chunks, inodes, what each owns; what must be cleared,
//!    emptied or dropped; metadata blocks whose LSN is ahead of the log;
//! 2. plan (in memory, `plan`): which entries stay, which go, what goes to /lost+found, which
//!    inodes are orphans;
//! 3. inodes, through transactions of a mounted engine: cleared, directories emptied, damaged
//!    attribute storage emptied, block counts set, a lost root made afresh, LSNs stamped anew;
//!    unmounted;
//! 4. AGs, written straight to the device (`ags`): headers, free-space trees (everything in
//!    the data area nothing kept uses is free), inode-chunk trees, unlinked trees (the orphans);
//! 5. namespace, through [`Fs`] on a fresh mount (which frees the orphans): entries dropped,
//!    retyped and put back, detached inodes attached in /lost+found, the intact attributes of
//!    emptied attribute storage stored anew, then every link count and ".." set from the tree.
//!
//! The superblocks are rewritten by the first mount (both copies, from the good one). A repair
//! interrupted by a crash leaves an image that the next run repairs again.

pub(crate) mod ags;
pub(crate) mod plan;
pub(crate) mod scan;

use crate::device::Device;
use crate::dir;
use crate::engine::{read_superblock, Engine, EngineOptions};
use crate::error::EngineError;
use crate::format::inode::ino_split;
use crate::format::inode::{S_IFDIR, S_IFMT};
use crate::format::{BlockType, BLOCK_HEADER_BYTES};
use crate::fs::{Ctx, Fs, FsError};
use crate::inode::{self, InodeRef};
use crate::mem::MemRes;
use crate::progress::Progress;
use crate::trans::TransKind;
use plan::Action;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Memory for the repair's metadata cache.
const REPAIR_CACHE_BYTES: u64 = 64 << 20;
/// Where detached inodes go, as in every Unix filesystem.
pub(crate) const LOST_AND_FOUND: &[u8] = b"lost+found";

pub(crate) use crate::bitmap::Bitmap;

/// What the plan needs of a kept inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kept {
    pub(crate) mode: u32,
    pub(crate) nlink: u32,
}

/// A directory entry as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Name {
    pub(crate) dir: u64,
    pub(crate) name: Vec<u8>,
    pub(crate) ino: u64,
    pub(crate) ftype: u8,
    /// Its key in the directory: where it is, whatever its name has become.
    pub(crate) key: [u64; 2],
}

/// What the repair found and what it did, one line each.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RepairReport {
    pub(crate) found: Vec<String>,
    pub fixed: Vec<String>,
    /// Changes that failed (the check that follows shows what is left).
    pub failed: Vec<String>,
}

fn engine_options() -> EngineOptions {
    EngineOptions {
        memres: MemRes::Off,
        mem_budget_bytes: REPAIR_CACHE_BYTES,
        ..Default::default()
    }
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// Repairs the filesystem on `dev` (its log already recovered).
pub fn repair(dev: Arc<dyn Device>, progress: Progress<'_>) -> Result<RepairReport, String> {
    let mut rep = RepairReport::default();
    // 1 and 2.
    let e1 = Engine::mount(dev.clone(), engine_options()).map_err(|e| err("mount", e))?;
    let root = e1.superblock().root_ino;
    let scan = scan::scan(&e1, progress).map_err(|e| err("scan", e))?;
    rep.found.extend(scan.found.iter().cloned());
    let rebuilt: BTreeSet<u64> = scan
        .fixes
        .iter()
        .filter(|(_, f)| f.reset_dir.is_some() && f.clear.is_none())
        .map(|(&i, _)| i)
        .collect();
    let plan = plan::plan(root, &scan.inodes, &rebuilt, &scan.names);

    // 3. The version first: the inodes found in the tree form are kept as they are, so the
    // superblock is what is raised to stand over them (their version, which a read-write mount
    // would have recorded before making the first tree).
    if scan.upgrade.is_some() {
        match e1.upgrade_format() {
            Ok(()) => rep.fixed.push(format!(
                "superblock: format version {} recorded",
                crate::format::FORMAT_VERSION
            )),
            Err(e) => rep.failed.push(err("superblock version", e)),
        }
    }
    progress("inodes", 0, 1);
    fix_inodes(&e1, &scan, &plan, &mut rep);
    for &(b, t) in &scan.ahead {
        match restamp(&e1, b, t) {
            Ok(()) => rep
                .fixed
                .push(format!("{} block {b}: LSN stamped anew", t.name())),
            Err(e) => rep.failed.push(err(&format!("block {b}"), e)),
        }
    }
    e1.unmount()
        .map_err(|e| err("unmount after fixing inodes", e))?;

    // 4.
    let sb = read_superblock(&*dev).map_err(|e| err("superblock", e))?;
    let alloc = crate::alloc::Allocator::new(sb.geometry);
    for agno in 0..sb.geometry.ag_count {
        progress(
            "allocation groups",
            agno as u64,
            sb.geometry.ag_count as u64,
        );
        let chunks: BTreeMap<u64, u64> = scan
            .chunks
            .iter()
            .filter(|(&c, _)| alloc.agno_of(c) == agno)
            .map(|(&c, &m)| (c, m))
            .collect();
        let orphans: Vec<u64> = plan
            .orphans
            .iter()
            .copied()
            .filter(|&i| alloc.agno_of(ino_split(i).0) == agno)
            .collect();
        match ags::rebuild_ag(&*dev, &sb, &scan.used, agno, &chunks, &orphans) {
            Ok(line) => rep.fixed.push(line),
            Err(e) => rep.failed.push(e),
        }
    }
    dev.flush().map_err(|e| err("flush", e))?;

    // 5.
    progress("directories", 0, 1);
    let failed = rep.failed.join("; ");
    let e2 = Engine::mount(dev, engine_options())
        .map_err(|e| err("mount after rebuild", format!("{e} (after: {failed})")))?;
    let fs = Fs::new(e2, false)
        .map_err(|e| err("mount after rebuild", format!("{e} (after: {failed})")))?;
    if !plan.orphans.is_empty() {
        rep.fixed.push(format!(
            "{} inodes with no links and no name freed",
            plan.orphans.len()
        ));
    }
    mend_names(&fs, &plan, &mut rep);
    store_xattrs(&fs, &scan, &plan, &mut rep);
    progress("links", 0, 1);
    match fs.repair_links() {
        Ok(lines) => rep.fixed.extend(lines),
        Err(e) => rep.failed.push(err("link counts", e)),
    }
    fs.unmount().map_err(|e| err("unmount", e))?;
    progress("done", 1, 1);
    Ok(rep)
}

/// Phase 3: each inode's change in a transaction of its own.
fn fix_inodes(eng: &Engine, scan: &scan::Scan, plan: &plan::Plan, rep: &mut RepairReport) {
    let mut todo: BTreeMap<u64, scan::InodeFix> = scan.fixes.clone();
    for &ino in &plan.relinked {
        todo.entry(ino).or_default();
    }
    let alloc = crate::alloc::Allocator::new(*eng.geometry());
    for (ino, f) in todo {
        let relink = plan.relinked.contains(&ino);
        match fix_inode(eng, &alloc, ino, &f, relink) {
            Ok(Some(line)) => rep.fixed.push(line),
            Ok(None) => {}
            Err(e) => rep.failed.push(err(&format!("inode {ino}"), e)),
        }
    }
}

fn fix_inode(
    eng: &Engine,
    alloc: &crate::alloc::Allocator,
    ino: u64,
    f: &scan::InodeFix,
    relink: bool,
) -> Result<Option<String>, EngineError> {
    let (chunk, slot) = ino_split(ino);
    let mut tx = eng.begin(TransKind::Setattr)?;
    let id = if f.fresh_chunk {
        tx.get_buf(chunk, BlockType::InodeChunk, alloc.agno_of(chunk) as u64)?
    } else {
        tx.read_buf(chunk, BlockType::InodeChunk)?
    };
    let r = InodeRef { ino, id, slot };
    if f.new_root {
        let i = crate::fs::root_inode(&mut tx, alloc, ino)?;
        inode::write(&mut tx, &r, &i);
        tx.commit()?;
        return Ok(Some(format!("root directory {ino} made afresh")));
    }
    if f.clear.is_some() {
        inode::clear(&mut tx, &r);
        tx.commit()?;
        return Ok(Some(format!("inode {ino} cleared")));
    }
    // Attribute fields the format refuses are reset below (the scan found them: `drop_xattr`).
    let (_, mut i, _) = inode::read_salvaging_xattrs(&mut tx, ino)?;
    let mut what = Vec::new();
    if f.reset_dir.is_some() {
        let up = dir::parent(&i);
        dir::init(&mut tx, alloc, ino, &mut i, up)?;
        i.root = 0;
        i.root_level = 0;
        what.push("directory emptied for rebuilding".to_string());
    }
    if f.drop_xattr.is_some() {
        // Emptied: the blocks the old storage held are nobody's now, and the AGs' rebuild
        // counts them free; the intact attributes are stored anew once the AGs are whole
        // (`store_xattrs`), so nothing is allocated from the trees being replaced.
        i.xattr_blk = 0;
        i.xattr_form = crate::format::inode::XattrForm::Block;
        i.xattr_level = 0;
        what.push("extended attribute storage emptied".to_string());
    }
    if let Some(b) = f.blocks {
        what.push(format!("block count {} -> {b}", i.blocks));
        i.blocks = b;
    }
    if let Some(m) = f.mode {
        what.push(format!("mode {:o} -> {m:o}", i.mode));
        i.mode = m;
    }
    if let Some(fl) = f.flags {
        what.push(format!("flags {:#x} -> {fl:#x}", i.flags));
        i.flags = fl;
    }
    if let Some(s) = f.size {
        what.push(format!("size {} -> {s}", i.size));
        i.size = s;
    }
    if relink && i.nlink == 0 {
        i.nlink = if i.mode & S_IFMT == S_IFDIR { 2 } else { 1 };
        what.push("named, so no longer unlinked".to_string());
    }
    if what.is_empty() {
        tx.cancel()?;
        return Ok(None);
    }
    inode::write(&mut tx, &r, &i);
    tx.commit()?;
    Ok(Some(format!("inode {ino}: {}", what.join(", "))))
}

/// Joins block `b` and logs its header, so it is written home with a current LSN.
fn restamp(eng: &Engine, b: u64, t: BlockType) -> Result<(), EngineError> {
    let mut tx = eng.begin(TransKind::Setattr)?;
    let id = tx.read_buf(b, t)?;
    tx.log_range(id, 0..BLOCK_HEADER_BYTES);
    tx.commit()?;
    Ok(())
}

/// Phase 5: the attributes salvaged from damaged storage, stored anew through the filesystem's
/// own code (block or tree form as they need) on the rebuilt filesystem, one transaction each.
/// Inodes freed as orphans have none to keep.
fn store_xattrs(fs: &Fs, scan: &scan::Scan, plan: &plan::Plan, rep: &mut RepairReport) {
    for (&ino, f) in &scan.fixes {
        if f.drop_xattr.is_none() || f.clear.is_some() || plan.orphans.contains(&ino) {
            continue;
        }
        let mut stored = 0;
        for (name, value) in &f.xattrs {
            match fs.repair_setxattr(ino, name, value) {
                Ok(()) => stored += 1,
                Err(e) => rep.failed.push(err(
                    &format!(
                        "inode {ino}: attribute {:?} stored anew",
                        String::from_utf8_lossy(name)
                    ),
                    e,
                )),
            }
        }
        rep.fixed.push(format!(
            "inode {ino}: {stored} intact extended attributes stored anew, {} dropped",
            f.xattrs_dropped.len()
        ));
    }
}

/// Phase 5: the plan's entry changes, then /lost+found.
fn mend_names(fs: &Fs, plan: &plan::Plan, rep: &mut RepairReport) {
    let shown = |n: &[u8]| String::from_utf8_lossy(n).into_owned();
    let mut lost_dir: Option<u64> = None;
    for a in &plan.actions {
        let (line, r) = match a {
            Action::Drop {
                dir,
                name,
                key,
                why,
            } => (
                format!("directory {dir}: entry \"{}\" removed ({why})", shown(name)),
                fs.repair_drop(*dir, *key),
            ),
            Action::Retype {
                dir,
                name,
                key,
                ino,
                ftype,
            } => (
                format!(
                    "directory {dir}: entry \"{}\" given file type {ftype}",
                    shown(name)
                ),
                fs.repair_retype(*dir, *key, *ino, *ftype),
            ),
            Action::Add {
                dir,
                name,
                ino,
                ftype,
            } => (
                format!(
                    "directory {dir}: entry \"{}\" -> {ino} put back",
                    shown(name)
                ),
                fs.repair_add(*dir, name, *ino, *ftype),
            ),
            Action::Lost { ino, ftype } => {
                let d = match lost_dir {
                    Some(d) => Ok(d),
                    None => lost_and_found(fs).inspect(|&d| lost_dir = Some(d)),
                };
                let r = d.and_then(|d| attach(fs, d, *ino, *ftype));
                (
                    format!("inode {ino} attached in /lost+found"),
                    r.map(|_| ()),
                )
            }
        };
        match r {
            Ok(()) => rep.fixed.push(line),
            Err(e) => rep.failed.push(err(&line, e)),
        }
    }
}

/// The /lost+found directory, made if missing.
fn lost_and_found(fs: &Fs) -> Result<u64, FsError> {
    match fs.lookup(&Ctx::ROOT, fs.root(), LOST_AND_FOUND) {
        Ok(a) if a.mode & S_IFMT == S_IFDIR => Ok(a.ino),
        Ok(_) => Err(FsError::NotDir),
        Err(FsError::NotFound) => Ok(fs
            .make(
                &Ctx::ROOT,
                fs.root(),
                LOST_AND_FOUND,
                S_IFDIR | 0o700,
                0,
                None,
            )?
            .ino),
        Err(e) => Err(e),
    }
}

/// Names inode `ino` "#INO" in directory `d` (or "#INO.N" if taken).
fn attach(fs: &Fs, d: u64, ino: u64, ftype: u8) -> Result<(), FsError> {
    const TRIES: u32 = 64;
    for n in 0..TRIES {
        let name = if n == 0 {
            format!("#{ino}")
        } else {
            format!("#{ino}.{n}")
        };
        match fs.lookup(&Ctx::ROOT, d, name.as_bytes()) {
            Err(FsError::NotFound) => {
                return fs.repair_add(d, name.as_bytes(), ino, ftype);
            }
            Ok(_) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(FsError::Exists)
}
