//! Repair, phase 1: find what can be kept. Every inode chunk (from the AG's inode-chunk tree, or
//! by scanning the AG for chunk blocks when that tree is unreadable), every inode in it, and for
//! each inode what it owns. An inode whose map cannot be read, or that claims a block outside
//! the data area or already claimed, is cleared (xfs_repair's rule); a directory whose blocks
//! cannot be read or are claimed twice is emptied and rebuilt from the entries that could be
//! read; attributes at fault keep those still intact (`xattr::salvage`), stored anew by the
//! namespace phase. Nothing is written here.

use super::{Bitmap, Kept, Name};
use crate::alloc::Allocator;
use crate::dir;
use crate::engine::Engine;
use crate::error::EngineError;
use crate::format::ag::AG_RESERVED_BLOCKS;
use crate::format::inode::{ino_of, ino_split, inodes_per_block, version_problem, Inode};
use crate::format::inode::{S_IFDIR, S_IFMT};
use crate::format::{BlockHeader, BlockType};
use crate::progress::Progress;
use crate::trans::{Trans, TransKind};
use crate::verify::{self, Fault, Role, Run};
use std::collections::BTreeMap;

/// What the scan decided for one inode that needs a change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct InodeFix {
    /// Why the inode is cleared (None: it is kept).
    pub(crate) clear: Option<String>,
    /// The directory is emptied (its entries are re-added from `Scan::names`).
    pub(crate) reset_dir: Option<String>,
    /// Why the attributes are at fault: their storage is emptied (form, level and root reset to
    /// none) and `xattrs` stored anew once the filesystem is whole again.
    pub(crate) drop_xattr: Option<String>,
    /// The attributes intact (`xattr::salvage`), stored anew by the namespace phase.
    pub(crate) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// The attributes dropped, one line each.
    pub(crate) xattrs_dropped: Vec<String>,
    /// The block count it should have.
    pub(crate) blocks: Option<u64>,
    /// The size it should have (a file's past the largest file size).
    pub(crate) size: Option<u64>,
    /// The mode it should have (stray bits beyond the type and permissions dropped).
    pub(crate) mode: Option<u32>,
    /// The flags it should have (unknown bits and misplaced directory flags dropped).
    pub(crate) flags: Option<u32>,
    /// A root directory made afresh.
    pub(crate) new_root: bool,
    /// Whether the chunk block itself is unreadable and must be written fresh (new root only).
    pub(crate) fresh_chunk: bool,
}

/// What phase 1 found.
pub(crate) struct Scan {
    /// Blocks in use: inode chunks and everything the kept inodes own.
    pub(crate) used: Bitmap,
    /// Inode chunks kept: block → mask of slots in use.
    pub(crate) chunks: BTreeMap<u64, u64>,
    pub(crate) inodes: BTreeMap<u64, Kept>,
    /// Entries read from directories (all of them; the plan decides which stay).
    pub(crate) names: Vec<Name>,
    pub(crate) fixes: BTreeMap<u64, InodeFix>,
    /// Metadata blocks kept whose LSN is at or ahead of the log's head: (block, type).
    pub(crate) ahead: Vec<(u64, BlockType)>,
    /// What was found, one line each.
    pub(crate) found: Vec<String>,
    /// Why the superblock's format version must be raised (`format::inode::version_problem`).
    pub(crate) upgrade: Option<String>,
}

struct Scanner<'e> {
    eng: &'e Engine,
    alloc: Allocator,
    s: Scan,
    /// Metadata blocks kept, for the LSN pass.
    meta: Vec<u64>,
    /// Bytes of salvaged attributes held so far (`SALVAGE_BYTES_MAX`).
    salvaged_bytes: usize,
}

/// Most bytes of salvaged attributes (names and values) the repair holds in memory between the
/// scan and the namespace phase, which stores them anew: an inode may have billions of
/// attributes, and fsck's memory must stay bounded. Past it, the attributes of further damaged
/// inodes are dropped (and said so). 2,000 values of the largest size.
const SALVAGE_BYTES_MAX: usize = 128 << 20;

impl Scanner<'_> {
    fn fix(&mut self, ino: u64) -> &mut InodeFix {
        self.s.fixes.entry(ino).or_default()
    }
}

/// Reads everything phase 1 needs through `eng` (read-only transactions).
pub(crate) fn scan(eng: &Engine, progress: Progress<'_>) -> Result<Scan, EngineError> {
    let g = *eng.geometry();
    let mut sc = Scanner {
        eng,
        alloc: Allocator::new(g),
        s: Scan {
            used: Bitmap::new(g.block_count),
            chunks: BTreeMap::new(),
            inodes: BTreeMap::new(),
            names: Vec::new(),
            fixes: BTreeMap::new(),
            ahead: Vec::new(),
            found: Vec::new(),
            upgrade: None,
        },
        meta: Vec::new(),
        salvaged_bytes: 0,
    };
    let root = eng.superblock().root_ino;
    let mut tx = eng.begin(TransKind::Read)?;

    // Inode chunks: from each AG's tree, or by scanning the AG.
    let mut chunks: Vec<u64> = Vec::new();
    for agno in 0..g.ag_count {
        progress("inode chunks", agno as u64, g.ag_count as u64);
        match sc.alloc.inode_chunks(&mut tx, agno) {
            Ok(list) => chunks.extend(list.into_iter().map(|(c, _)| c)),
            Err(e) => {
                let found = scan_for_chunks(&sc, agno)?;
                sc.s.found.push(format!(
                    "AG {agno}: inode-chunk tree unreadable ({e}); {} chunks found by scanning the AG",
                    found.len()
                ));
                chunks.extend(found);
            }
        }
        tx.release_all_clean();
    }
    let root_chunk = ino_split(root).0;
    if !chunks.contains(&root_chunk) {
        chunks.push(root_chunk);
    }
    chunks.sort_unstable();
    chunks.dedup();
    let mut readable: Vec<u64> = Vec::new();
    for c in chunks {
        if !sc.eng.geometry().in_data_area(c) {
            sc.s.found
                .push(format!("inode chunk {c} is outside the data area: dropped"));
            continue;
        }
        match tx.read_buf(c, BlockType::InodeChunk) {
            Ok(_) => readable.push(c),
            Err(e) if c == root_chunk => {
                sc.s.found
                    .push(format!("inode chunk {c} (the root's): {e}; written afresh"));
                sc.fix(root).fresh_chunk = true;
            }
            Err(e) => {
                sc.s.found
                    .push(format!("inode chunk {c}: {e}; its inodes are lost"));
                continue;
            }
        }
        sc.s.used.set(c);
        sc.s.chunks.insert(c, 0);
        tx.release_all_clean();
    }
    sc.meta.extend(&readable);

    // Every inode of every readable chunk.
    let ipb = inodes_per_block(g.block_size);
    let total = readable.len() as u64;
    for (n, &chunk) in readable.iter().enumerate() {
        if n % 256 == 0 {
            progress("inodes", n as u64, total);
        }
        for slot in 0..ipb {
            let ino = ino_of(chunk, slot);
            match verify::read(&mut tx, &g, ino) {
                Ok((i, v)) => {
                    if let Some(why) = version_problem(eng.superblock().version, ino, &i) {
                        sc.s.upgrade.get_or_insert(why);
                    }
                    examine(&mut sc, &mut tx, ino, &i, v)
                }
                Err(EngineError::Stale(_)) => {}
                Err(e) => {
                    sc.fix(ino).clear = Some(e.to_string());
                }
            }
            tx.release_all_clean();
        }
    }
    tx.cancel()?;

    // The root must be a directory.
    if sc
        .s
        .inodes
        .get(&root)
        .is_none_or(|k| k.mode & S_IFMT != S_IFDIR)
    {
        if sc.s.inodes.remove(&root).is_some() {
            sc.fix(root).clear = Some("the root inode is not a directory".into());
        }
        sc.s.found.push(format!(
            "root directory {root} is missing or damaged: made afresh"
        ));
        let f = sc.fix(root);
        f.new_root = true;
        sc.s.inodes.insert(
            root,
            Kept {
                mode: S_IFDIR | 0o755,
                nlink: 2,
            },
        );
        let m = sc.s.chunks.entry(root_chunk).or_insert(0);
        *m |= 1 << ino_split(root).1;
    }
    for (&ino, f) in &sc.s.fixes {
        if let Some(why) = &f.clear {
            sc.s.found.push(format!("inode {ino}: {why}; cleared"));
        }
        if let Some(why) = &f.reset_dir {
            sc.s.found.push(format!(
                "directory {ino}: {why}; rebuilt from the entries that could be read"
            ));
        }
        if let Some(why) = &f.drop_xattr {
            sc.s.found.push(format!(
                "inode {ino}: extended attributes: {why}; {} intact kept and stored anew{}",
                f.xattrs.len(),
                if f.xattrs_dropped.is_empty() {
                    String::new()
                } else {
                    format!(", dropped: {}", f.xattrs_dropped.join("; "))
                }
            ));
        }
    }
    if let Some(why) = &sc.s.upgrade {
        sc.s.found.push(format!("superblock: {why}"));
    }
    lsn_pass(&mut sc, progress);
    Ok(sc.s)
}

/// Acts on what `verify::inode` finds wrong with one inode: keeps it (claiming what it owns,
/// with the fixes its faults name), or records why it is cleared. Blocks another inode claimed
/// first are the one thing the verdict cannot see: such a block clears a file, makes a
/// directory be rebuilt, and the attributes be stored anew from those intact.
fn examine(sc: &mut Scanner<'_>, tx: &mut Trans<'_>, ino: u64, i: &Inode, v: verify::Verdict) {
    if let Some(why) = v.clear() {
        sc.fix(ino).clear = Some(why.to_string());
        return;
    }
    let mut fix = InodeFix::default();
    for f in &v.faults {
        match f {
            Fault::Mode { fixed, .. } => fix.mode = Some(*fixed),
            Fault::Flags { fixed, .. } => fix.flags = Some(*fixed),
            Fault::Size { fixed, .. } => fix.size = Some(*fixed),
            Fault::Directory(why) => fix.reset_dir = Some(why.clone()),
            Fault::Xattrs(why) => fix.drop_xattr = Some(why.clone()),
            Fault::Blocks { .. } => {}
            Fault::Clear(_) => unreachable!("handled above"),
        }
    }
    if i.mode & S_IFMT == S_IFDIR {
        // Every entry that can be read: a rebuilt directory gets them back.
        let (names, read_err) = read_entries(tx, ino, i);
        if fix.reset_dir.is_none() {
            fix.reset_dir = read_err;
        }
        sc.s.names.extend(names);
    }
    let taken = |r: &Run, used: &Bitmap| (r.start..r.start + r.len).find(|&b| used.get(b));
    let mut keep: Vec<Run> = Vec::with_capacity(v.owns.len());
    for r in &v.owns {
        let lost = match r.role {
            Role::Directory => fix.reset_dir.is_some(),
            Role::Xattr => fix.drop_xattr.is_some(),
            _ => false,
        };
        if lost {
            continue;
        }
        if let Some(b) = taken(r, &sc.s.used) {
            let why = format!("uses block {b}, which something else uses");
            match r.role {
                Role::Directory => fix.reset_dir = Some(why),
                Role::Xattr => fix.drop_xattr = Some(why),
                _ => {
                    sc.fix(ino).clear = Some(why);
                    return;
                }
            }
            continue;
        }
        keep.push(*r);
    }
    // A directory or attributes given up after some of their blocks were kept give them all
    // up.
    if fix.reset_dir.is_some() {
        keep.retain(|r| r.role != Role::Directory);
    }
    if fix.drop_xattr.is_some() {
        keep.retain(|r| r.role != Role::Xattr);
    }
    for r in &keep {
        for b in r.start..r.start + r.len {
            let was = sc.s.used.set(b);
            debug_assert!(!was, "block {b} claimed twice");
            if r.role.is_metadata() {
                sc.meta.push(b);
            }
        }
    }
    if fix.drop_xattr.is_some() {
        salvage_xattrs(sc, tx, ino, i, &mut fix);
    }
    let blocks: u64 = keep.iter().map(|r| r.len).sum();
    let (chunk, slot) = ino_split(ino);
    *sc.s.chunks.entry(chunk).or_insert(0) |= 1 << slot;
    sc.s.inodes.insert(
        ino,
        Kept {
            mode: i.mode,
            nlink: i.nlink,
        },
    );
    if i.blocks != blocks {
        fix.blocks = Some(blocks);
    }
    if fix != InodeFix::default() {
        *sc.fix(ino) = fix;
    }
}

/// The attributes of inode `ino` (at fault: `fix.drop_xattr`) that can be kept: those
/// `xattr::salvage` reads intact (within what is left of `SALVAGE_BYTES_MAX`) whose blocks
/// nothing else (another inode, this inode's kept blocks) uses. An access ACL dropped leaves the
/// mode narrowed (`acl::mode_after_loss`): its group bits held the ACL's mask.
fn salvage_xattrs(
    sc: &mut Scanner<'_>,
    tx: &mut Trans<'_>,
    ino: u64,
    i: &Inode,
    fix: &mut InodeFix,
) {
    let s = crate::xattr::salvage(tx, ino, i, SALVAGE_BYTES_MAX - sc.salvaged_bytes);
    fix.xattrs_dropped = s.dropped;
    let mut acl_lost = s.acl_lost;
    for crate::xattr::Salvaged { name, value, from } in s.kept {
        // Counted whether kept or not: the budget is what `salvage` held.
        sc.salvaged_bytes += name.len() + value.len();
        let shared = from
            .iter()
            .find_map(|&(b, n)| (b..b + n).find(|&x| sc.s.used.get(x)));
        match shared {
            Some(b) => {
                fix.xattrs_dropped.push(format!(
                    "{:?}: its block {b} is used by something else",
                    String::from_utf8_lossy(&name)
                ));
                if name == crate::format::acl::ACCESS {
                    acl_lost = Some(Some(value));
                }
            }
            None => fix.xattrs.push((name, value)),
        }
    }
    // An access ACL kept intact is what the mode's group bits follow: nothing to narrow.
    let acl_kept = fix
        .xattrs
        .iter()
        .any(|(n, _)| n == crate::format::acl::ACCESS);
    if let (Some(value), false) = (acl_lost, acl_kept) {
        let before = fix.mode.unwrap_or(i.mode);
        fix.mode = Some(crate::format::acl::mode_after_loss(
            before,
            value.as_deref(),
        ));
    }
    if fix.mode == Some(i.mode) {
        fix.mode = None;
    }
}

/// A directory's entries, as many as can be read (`dir::salvage`), and the first error met.
fn read_entries(tx: &mut Trans<'_>, d: u64, i: &Inode) -> (Vec<Name>, Option<String>) {
    let (entries, err) = dir::salvage(tx, d, i);
    let names = entries
        .into_iter()
        .map(|e| Name {
            dir: d,
            name: e.name,
            ino: e.ino,
            ftype: e.ftype,
            key: e.key,
        })
        .collect();
    (names, err)
}

/// Chunk blocks of AG `agno` found by reading every block of its data area: blocks whose header
/// says inode chunk, this very block, this filesystem and this AG, with a valid CRC.
fn scan_for_chunks(sc: &Scanner<'_>, agno: u32) -> Result<Vec<u64>, EngineError> {
    const SCAN_BATCH_BLOCKS: u64 = 256;
    let g = sc.eng.geometry();
    let bs = g.block_size as usize;
    let uuid = sc.eng.superblock().uuid;
    let (first, end) = sc.alloc.initial_free(agno);
    let first = first.max(sc.alloc.ag_start(agno) + AG_RESERVED_BLOCKS);
    let mut buf = crate::device::AlignedBuf::new(SCAN_BATCH_BLOCKS as usize * bs);
    let mut out = Vec::new();
    let mut b = first;
    while b < end {
        let n = SCAN_BATCH_BLOCKS.min(end - b);
        sc.eng
            .device()
            .read(b, &mut buf[..n as usize * bs])
            .map_err(EngineError::Io)?;
        for k in 0..n {
            let blk = &buf[k as usize * bs..(k as usize + 1) * bs];
            if BlockHeader::verify(blk, b + k, Some(BlockType::InodeChunk), &uuid)
                .is_ok_and(|h| h.owner == agno as u64)
            {
                out.push(b + k);
            }
        }
        b += n;
    }
    Ok(out)
}

/// Kept metadata blocks whose LSN is at or ahead of the log's head.
fn lsn_pass(sc: &mut Scanner<'_>, progress: Progress<'_>) {
    let blocks = std::mem::take(&mut sc.meta);
    for a in crate::check::blocks_ahead_of_log(sc.eng, blocks, progress) {
        sc.s.found.push(format!(
            "{} block {} carries LSN {:#x}, ahead of the log's head {:#x}: stamped anew",
            a.btype.name(),
            a.blkno,
            a.lsn,
            a.head
        ));
        sc.s.ahead.push((a.blkno, a.btype));
    }
}
