//! Directories: a hash B+tree of entries, with names kept in name blocks.
//!
//! The directory inode's data fork is a B+tree (node type TKBD) keyed (hash of the name, collision
//! index) whose value is (inode number, name location = name block << 16 | offset). Names live in
//! name blocks (type TKDD): after the 48-byte header, a 16-byte block header (live names u32, next
//! free offset u32, 8 zero), then records of (name length u8, file type u8, name). Names are
//! appended to the directory's current name block; a name block whose last name is removed is
//! freed. Lookup, insert and remove are one or two descents: O(log n) in the number of entries.
//!
//! The fork area of a directory inode holds: current name block (u64, 0 = none) and the parent
//! directory's inode number (u64).
//!
//! readdir cookies: 1 is ".", 2 is "..", and an entry's cookie is 3 + (hash << 31 | index), taken
//! from its key, so it stays valid while other entries come and go.

use crate::alloc::{Allocator, InodeBlocks};
use crate::btree::{Btree, NodeAlloc, Root};
use crate::error::EngineError;
use crate::format::dirblock::{self, NAME_HDR};
use crate::format::entryblock;
use crate::format::inode::{ino_split, DataFormat, Inode, FORK_BYTES};
use crate::format::records::DirRec;
use crate::format::{BlockType, Enc, FormatError};
use crate::trans::Trans;

pub(crate) use crate::format::name::NAME_MAX;
/// Collisions of one hash value a directory may hold: bounds the index in keys and cookies.
pub(crate) const HASH_COLLISIONS_MAX: u64 = 1 << 31;
const COOKIE_DOT: u64 = 1;
const COOKIE_DOTDOT: u64 = 2;
const COOKIE_BASE: u64 = 3;

/// The readdir cookie of the entry with hash-tree key `key`. Saturating: a key read from a
/// damaged block (salvage reads keys before any record check) must not overflow.
fn cookie_of(key: &[u64; 2]) -> u64 {
    (key[0] << 31 | key[1]).saturating_add(COOKIE_BASE)
}

pub use crate::format::name::name_hash;

/// A directory entry as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub ino: u64,
    /// File type (the DT_* values of readdir).
    pub(crate) ftype: u8,
    /// Cookie of the next entry after this one.
    pub cookie: u64,
    /// Its key in the directory (hash of the name, collision index); zero for "." and "..".
    pub(crate) key: [u64; 2],
}

fn tree(dir: u64, inode: &Inode) -> Btree {
    Btree::open(
        BlockType::BtreeDir,
        dir,
        Root {
            blkno: inode.root,
            level: inode.root_level,
        },
    )
}

fn fork_u64(inode: &Inode, off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&inode.fork[off..off + 8]);
    u64::from_le_bytes(a)
}

fn set_fork_u64(inode: &mut Inode, off: usize, v: u64) {
    inode.fork[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// The parent directory recorded in a directory inode.
pub(crate) fn parent(inode: &Inode) -> u64 {
    fork_u64(inode, 8)
}

pub(crate) fn set_parent(inode: &mut Inode, parent: u64) {
    set_fork_u64(inode, 8, parent);
}

fn corrupt(blkno: u64, field: &'static str, detail: String) -> EngineError {
    EngineError::Corrupt(FormatError::new(blkno, "directory", field, detail))
}

/// Makes `inode` an empty directory with parent `parent`: inline, no blocks.
pub fn init(
    _tx: &mut Trans<'_>,
    _alloc: &Allocator,
    _ino: u64,
    inode: &mut Inode,
    parent: u64,
) -> Result<(), EngineError> {
    inode.format = DataFormat::Local;
    inode.fork = [0; FORK_BYTES];
    inode.nextents = 0;
    set_parent(inode, parent);
    Ok(())
}

/// Where inline entries start in the fork area (after the name-block and parent words).
const INLINE_OFF: usize = 16;
/// Bytes of an inline entry before its name: hash u32, collision index u16, inode u64, type u8,
/// name length u8.
const INLINE_HDR: usize = 16;

/// An entry of an inline directory.
#[derive(Debug, Clone)]
struct Inline {
    key: [u64; 2],
    ino: u64,
    ftype: u8,
    name: Vec<u8>,
}

/// The entries of an inline directory, checked against the fork area's bounds.
fn inline_entries(dir: u64, inode: &Inode) -> Result<Vec<Inline>, EngineError> {
    let f = &inode.fork;
    // The count comes from the image: at most as many entries as the fork can hold are made
    // room for (the loop below stops at the fork's end anyway).
    let mut out = Vec::with_capacity((inode.nextents as usize).min(FORK_BYTES / INLINE_HDR));
    let mut at = INLINE_OFF;
    for _ in 0..inode.nextents {
        if at + INLINE_HDR > FORK_BYTES {
            return Err(corrupt(
                ino_split(dir).0,
                "inline entries",
                format!("directory {dir}: entry at {at} runs past the inode"),
            ));
        }
        let len = f[at + 15] as usize;
        if len == 0 || at + INLINE_HDR + len > FORK_BYTES {
            return Err(corrupt(
                ino_split(dir).0,
                "inline entries",
                format!("directory {dir}: name of {len} bytes at {at} runs past the inode"),
            ));
        }
        let hash = u32::from_le_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]]) as u64;
        let idx = u16::from_le_bytes([f[at + 4], f[at + 5]]) as u64;
        let mut ino = [0u8; 8];
        ino.copy_from_slice(&f[at + 6..at + 14]);
        out.push(Inline {
            key: [hash, idx],
            ino: u64::from_le_bytes(ino),
            ftype: f[at + 14],
            name: f[at + INLINE_HDR..at + INLINE_HDR + len].to_vec(),
        });
        at += INLINE_HDR + len;
    }
    Ok(out)
}

fn inline_fits(entries: &[Inline]) -> bool {
    INLINE_OFF
        + entries
            .iter()
            .map(|e| INLINE_HDR + e.name.len())
            .sum::<usize>()
        <= FORK_BYTES
}

fn set_inline(inode: &mut Inode, entries: &mut [Inline]) {
    entries.sort_by_key(|e| e.key);
    inode.fork[INLINE_OFF..].fill(0);
    let mut at = INLINE_OFF;
    for e in entries.iter() {
        let f = &mut inode.fork;
        f[at..at + 4].copy_from_slice(&(e.key[0] as u32).to_le_bytes());
        f[at + 4..at + 6].copy_from_slice(&(e.key[1] as u16).to_le_bytes());
        f[at + 6..at + 14].copy_from_slice(&e.ino.to_le_bytes());
        f[at + 14] = e.ftype;
        f[at + 15] = e.name.len() as u8;
        f[at + INLINE_HDR..at + INLINE_HDR + e.name.len()].copy_from_slice(&e.name);
        at += INLINE_HDR + e.name.len();
    }
    inode.nextents = entries.len() as u32;
}

/// Bytes an inline directory's entries take (its size, as XFS reports short-form directories).
pub(crate) fn inline_bytes(inode: &Inode) -> u64 {
    inline_entries(0, inode)
        .map(|e| (INLINE_OFF + e.iter().map(|x| INLINE_HDR + x.name.len()).sum::<usize>()) as u64)
        .unwrap_or(0)
}

/// A new block for directory `dir` (its tree root or a name block), near it and counted in its
/// blocks.
fn new_block(
    tx: &mut Trans<'_>,
    alloc: &Allocator,
    dir: u64,
    inode: &mut Inode,
) -> Result<u64, EngineError> {
    InodeBlocks {
        alloc,
        near: ino_split(dir).0,
        blocks: &mut inode.blocks,
    }
    .alloc_node(tx)
}

/// Moves an inline directory's entries into a new hash tree, keeping every key (so readdir
/// cookies stay valid).
fn to_tree(
    tx: &mut Trans<'_>,
    alloc: &Allocator,
    dir: u64,
    inode: &mut Inode,
    entries: &[Inline],
) -> Result<(), EngineError> {
    let root = new_block(tx, alloc, dir, inode)?;
    let mut t = Btree::create(tx, BlockType::BtreeDir, dir, root)?;
    inode.format = DataFormat::Btree;
    inode.fork[..8].fill(0);
    inode.fork[INLINE_OFF..].fill(0);
    for e in entries {
        insert_named(
            tx,
            alloc,
            &mut t,
            dir,
            inode,
            e.key,
            (&e.name, e.ftype, e.ino),
        )?;
    }
    inode.root = t.root.blkno;
    inode.root_level = t.root.level;
    inode.nextents = entries.len() as u32;
    Ok(())
}

/// Reads the name record at `nref` (`format::dirblock::name_record` checks where it lies).
fn read_name(tx: &mut Trans<'_>, dir: u64, nref: u64) -> Result<(Vec<u8>, u8), EngineError> {
    let (blk, off) = DirRec::split_ref(nref);
    let id = tx.read_buf(blk, BlockType::DirData)?;
    let (name, ftype) = dirblock::name_record(tx.data(id), blk, off).map_err(|mut e| {
        e.detail = format!("directory {dir}: {}", e.detail);
        EngineError::Corrupt(e)
    })?;
    Ok((name.to_vec(), ftype))
}

/// An entry found: its tree key, its value (inode, name location) and its file type.
type Found = ([u64; 2], [u64; 2], u8);

/// An entry's tree key and value (inode, name location).
type KeyVal = ([u64; 2], [u64; 2]);

/// Finds `name`: its key and value.
fn find(
    tx: &mut Trans<'_>,
    dir: u64,
    inode: &Inode,
    name: &[u8],
) -> Result<Option<Found>, EngineError> {
    let h = name_hash(name);
    let t = tree(dir, inode);
    let mut at = t.ge(tx, &[h, 0])?;
    while let Some((k, v)) = at {
        if k[0] != h {
            break;
        }
        let (n, ftype) = read_name(tx, dir, v[1])?;
        if n == name {
            return Ok(Some((k, v, ftype)));
        }
        at = t.gt(tx, &k)?;
    }
    Ok(None)
}

/// The inode `name` refers to in directory `dir`, and its file type.
pub fn lookup(
    tx: &mut Trans<'_>,
    dir: u64,
    inode: &Inode,
    name: &[u8],
) -> Result<Option<(u64, u8)>, EngineError> {
    if inode.format == DataFormat::Local {
        return Ok(inline_entries(dir, inode)?
            .into_iter()
            .find(|e| e.name == name)
            .map(|e| (e.ino, e.ftype)));
    }
    Ok(find(tx, dir, inode, name)?.map(|(_, v, t)| (v[0], t)))
}

/// Adds `name` → `ino`. The caller has checked that `name` is absent and valid.
#[track_caller]
pub fn insert(
    tx: &mut Trans<'_>,
    alloc: &Allocator,
    dir: u64,
    inode: &mut Inode,
    name: &[u8],
    ino: u64,
    ftype: u8,
) -> Result<(), EngineError> {
    debug_assert!(
        crate::format::name::name_problem(name).is_none(),
        "storing the name {name:?}"
    );
    let h = name_hash(name);
    if inode.format == DataFormat::Local {
        let mut entries = inline_entries(dir, inode)?;
        let mut idx = 0;
        while entries.iter().any(|e| e.key == [h, idx]) {
            idx += 1;
        }
        let new = Inline {
            key: [h, idx],
            ino,
            ftype,
            name: name.to_vec(),
        };
        entries.push(new);
        if inline_fits(&entries) {
            set_inline(inode, &mut entries);
            return Ok(());
        }
        entries.pop();
        to_tree(tx, alloc, dir, inode, &entries)?;
    }
    let mut t = tree(dir, inode);
    let idx = t.free_index(tx, h)?;
    if idx >= HASH_COLLISIONS_MAX {
        return Err(EngineError::NoSpace(format!(
            "directory {dir}: too many names with hash {h:#x}"
        )));
    }
    insert_named(tx, alloc, &mut t, dir, inode, [h, idx], (name, ftype, ino))?;
    inode.root = t.root.blkno;
    inode.root_level = t.root.level;
    inode.nextents += 1;
    Ok(())
}

/// Appends the record of `name` (file type `ftype`) and enters it in the hash tree `t` under
/// `key`, pointing at `ino`; the blocks either takes are counted in the directory's inode.
/// Adding a name and moving inline entries into a new tree store an entry alike.
#[track_caller]
fn insert_named(
    tx: &mut Trans<'_>,
    alloc: &Allocator,
    t: &mut Btree,
    dir: u64,
    inode: &mut Inode,
    key: [u64; 2],
    (name, ftype, ino): (&[u8], u8, u64),
) -> Result<(), EngineError> {
    let nref = append_name(tx, alloc, dir, inode, name, ftype)?;
    let mut blocks = inode.blocks;
    t.insert(
        tx,
        &mut InodeBlocks {
            alloc,
            near: ino_split(dir).0,
            blocks: &mut blocks,
        },
        key,
        [ino, nref],
    )?;
    inode.blocks = blocks;
    Ok(())
}

/// Appends a name record to the current name block (a new one when it is full).
fn append_name(
    tx: &mut Trans<'_>,
    alloc: &Allocator,
    dir: u64,
    inode: &mut Inode,
    name: &[u8],
    ftype: u8,
) -> Result<u64, EngineError> {
    let need = 2 + name.len();
    let cur = fork_u64(inode, 0);
    let mut target = None;
    if cur != 0 {
        let id = tx.read_buf(cur, BlockType::DirData)?;
        let free = dirblock::free_off(tx.data(id), cur)?;
        if free + need <= tx.data(id).len() {
            target = Some((id, free));
        }
    }
    let (id, off) = match target {
        Some(t) => t,
        None => {
            let blk = new_block(tx, alloc, dir, inode)?;
            let id = tx.get_buf(blk, BlockType::DirData, dir)?;
            set_fork_u64(inode, 0, blk);
            (id, NAME_HDR)
        }
    };
    let blk = tx.blkno(id);
    let b = tx.data_mut(id);
    b[off] = name.len() as u8;
    b[off + 1] = ftype;
    b[off + 2..off + need].copy_from_slice(name);
    entryblock::note_appended(b, off, need);
    tx.log_range(id, dirblock::LIVE_OFF..dirblock::FREE_OFF + 4);
    tx.log_range(id, off..off + need);
    Ok(DirRec::name_ref(blk, off))
}

/// Removes `name`; returns the inode it referred to, or None if absent.
#[track_caller]
pub fn remove(
    tx: &mut Trans<'_>,
    alloc: &Allocator,
    dir: u64,
    inode: &mut Inode,
    name: &[u8],
) -> Result<Option<u64>, EngineError> {
    remove_entry(tx, alloc, dir, inode, Which::Name(name))
}

/// Removes the entry with key `k` (as readdir returned it), found by its key rather than its
/// name (fsck's repair: a damaged name may no longer hash to its key). Returns the inode it
/// named.
#[track_caller]
pub(crate) fn remove_at(
    tx: &mut Trans<'_>,
    alloc: &Allocator,
    dir: u64,
    inode: &mut Inode,
    k: [u64; 2],
) -> Result<Option<u64>, EngineError> {
    remove_entry(tx, alloc, dir, inode, Which::Key(k))
}

/// Points the entry with key `k` at `ino` with file type `ftype`, found by its key (see
/// [`remove_at`]). Returns the inode it named before.
#[track_caller]
pub(crate) fn retype_at(
    tx: &mut Trans<'_>,
    dir: u64,
    inode: &mut Inode,
    k: [u64; 2],
    ino: u64,
    ftype: u8,
) -> Result<Option<u64>, EngineError> {
    repoint_entry(tx, dir, inode, Which::Key(k), (ino, ftype))
}

/// How the entry to remove or repoint is found: by its name, or by its key as readdir returned
/// it (fsck's repair: a damaged name may no longer hash to its key). Only the finding differs;
/// what is done to the entry found is the same either way.
#[derive(Clone, Copy)]
enum Which<'n> {
    Name(&'n [u8]),
    Key([u64; 2]),
}

impl Which<'_> {
    /// Is `e` the entry of an inline directory this names?
    fn is(self, e: &Inline) -> bool {
        match self {
            Which::Name(name) => e.name == name,
            Which::Key(k) => e.key == k,
        }
    }

    /// The key and value of the entry this names in a directory with a hash tree.
    fn find_in_tree(
        self,
        tx: &mut Trans<'_>,
        dir: u64,
        inode: &Inode,
    ) -> Result<Option<KeyVal>, EngineError> {
        Ok(match self {
            Which::Name(name) => find(tx, dir, inode, name)?.map(|(k, v, _)| (k, v)),
            Which::Key(k) => tree(dir, inode).get(tx, &k)?.map(|v| (k, v)),
        })
    }
}

/// Removes the entry `which` names; returns the inode it referred to, or None if absent.
#[track_caller]
fn remove_entry(
    tx: &mut Trans<'_>,
    alloc: &Allocator,
    dir: u64,
    inode: &mut Inode,
    which: Which<'_>,
) -> Result<Option<u64>, EngineError> {
    if inode.format == DataFormat::Local {
        let mut entries = inline_entries(dir, inode)?;
        let Some(p) = entries.iter().position(|e| which.is(e)) else {
            return Ok(None);
        };
        let gone = entries.remove(p);
        set_inline(inode, &mut entries);
        return Ok(Some(gone.ino));
    }
    let Some((k, v)) = which.find_in_tree(tx, dir, inode)? else {
        return Ok(None);
    };
    remove_found(tx, alloc, dir, inode, k, v)
}

/// Points the entry `which` names at `ino` with file type `ftype`; returns the inode it named
/// before, or None if absent.
#[track_caller]
fn repoint_entry(
    tx: &mut Trans<'_>,
    dir: u64,
    inode: &mut Inode,
    which: Which<'_>,
    (ino, ftype): (u64, u8),
) -> Result<Option<u64>, EngineError> {
    if inode.format == DataFormat::Local {
        let mut entries = inline_entries(dir, inode)?;
        let Some(e) = entries.iter_mut().find(|e| which.is(e)) else {
            return Ok(None);
        };
        let old = std::mem::replace(&mut e.ino, ino);
        e.ftype = ftype;
        set_inline(inode, &mut entries);
        return Ok(Some(old));
    }
    let Some((k, v)) = which.find_in_tree(tx, dir, inode)? else {
        return Ok(None);
    };
    set_found(tx, dir, inode, k, v, ino, ftype)
}

/// Removes the entry at key `k` (value `v`) of a directory with a hash tree.
fn remove_found(
    tx: &mut Trans<'_>,
    alloc: &Allocator,
    dir: u64,
    inode: &mut Inode,
    k: [u64; 2],
    v: [u64; 2],
) -> Result<Option<u64>, EngineError> {
    let mut t = tree(dir, inode);
    let mut blocks = inode.blocks;
    let mut db = InodeBlocks {
        alloc,
        near: ino_split(dir).0,
        blocks: &mut blocks,
    };
    t.delete(tx, &mut db, &k)?;
    // One name less in its block; the block goes when it holds none.
    let blk = DirRec::split_ref(v[1]).0;
    let id = tx.read_buf(blk, BlockType::DirData)?;
    let live = entryblock::live(tx.data(id), blk, dirblock::STRUCTURE)?;
    if live == 0 {
        return Err(corrupt(
            blk,
            "live",
            format!("directory {dir}: removing a name from a block with none"),
        ));
    }
    if live == 1 {
        tx.invalidate(id);
        db.free_node(tx, blk)?;
        if fork_u64(inode, 0) == blk {
            set_fork_u64(inode, 0, 0);
        }
    } else {
        Enc::new(tx.data_mut(id)).u32(dirblock::LIVE_OFF, live - 1);
        tx.log_range(id, dirblock::LIVE_OFF..dirblock::LIVE_OFF + 4);
    }
    inode.blocks = blocks;
    inode.root = t.root.blkno;
    inode.root_level = t.root.level;
    inode.nextents -= 1;
    Ok(Some(v[0]))
}

/// Points an existing entry at another inode (rename over an existing name).
#[track_caller]
pub fn replace(
    tx: &mut Trans<'_>,
    dir: u64,
    inode: &mut Inode,
    name: &[u8],
    ino: u64,
    ftype: u8,
) -> Result<Option<u64>, EngineError> {
    repoint_entry(tx, dir, inode, Which::Name(name), (ino, ftype))
}

/// Points the entry at key `k` (value `v`) of a directory with a hash tree at `ino`.
fn set_found(
    tx: &mut Trans<'_>,
    dir: u64,
    inode: &Inode,
    k: [u64; 2],
    v: [u64; 2],
    ino: u64,
    ftype: u8,
) -> Result<Option<u64>, EngineError> {
    tree(dir, inode).update(tx, &k, [ino, v[1]])?;
    let (blk, off) = DirRec::split_ref(v[1]);
    let id = tx.read_buf(blk, BlockType::DirData)?;
    tx.data_mut(id)[off + 1] = ftype;
    tx.log_range(id, off + 1..off + 2);
    Ok(Some(v[0]))
}

/// Every block a directory owns, its hash tree's nodes and its name blocks, each name block
/// verified against the entries pointing into it (`format::dirblock::check_name_block`), and the
/// current name block (where the next name goes) one of them: the one verdict the checker and
/// the repairer take on a directory's blocks.
pub(crate) fn blocks(tx: &mut Trans<'_>, dir: u64, inode: &Inode) -> Result<Vec<u64>, EngineError> {
    let current = fork_u64(inode, 0);
    if inode.format == DataFormat::Local {
        if current != 0 {
            return Err(corrupt(
                ino_split(dir).0,
                "current name block",
                format!("directory {dir}: inline, but names block {current} as its current"),
            ));
        }
        return Ok(Vec::new());
    }
    let t = tree(dir, inode);
    let mut out = t.blocks(tx)?;
    let mut refs: Vec<(u64, usize)> = Vec::new();
    for (k, v) in t.collect(tx)? {
        let r = DirRec::decode(k, v, HASH_COLLISIONS_MAX).map_err(|why| {
            corrupt(
                inode.root,
                "records",
                format!("directory {dir}: entry {k:?} -> {v:?}: {why}"),
            )
        })?;
        refs.push((r.name_block, r.name_off));
    }
    refs.sort_unstable();
    let mut found_current = current == 0;
    for group in refs.chunk_by(|a, b| a.0 == b.0) {
        let blk = group[0].0;
        let mut offs: Vec<usize> = group.iter().map(|r| r.1).collect();
        let mark = tx.mark();
        let id = tx.read_buf(blk, BlockType::DirData)?;
        dirblock::check_name_block(tx.data(id), blk, &mut offs).map_err(|mut e| {
            e.detail = format!("directory {dir}: {}", e.detail);
            EngineError::Corrupt(e)
        })?;
        tx.release_clean(mark, blk..blk + 1);
        found_current |= blk == current;
        out.push(blk);
    }
    if !found_current {
        return Err(corrupt(
            ino_split(dir).0,
            "current name block",
            format!("directory {dir}: its current name block {current} holds none of its names"),
        ));
    }
    Ok(out)
}

/// Every entry of a directory that can still be read, for a repair that rebuilds it: the hash
/// tree's records, each name read as far as its block bounds it (`dirblock::salvage_record`),
/// whatever the name block's counts say. An entry whose name cannot be read is left out; the
/// error that stopped the walk, if any, is returned beside what was read.
pub(crate) fn salvage(
    tx: &mut Trans<'_>,
    dir: u64,
    inode: &Inode,
) -> (Vec<DirEntry>, Option<String>) {
    let mut out = Vec::new();
    let mut first_err = None;
    let recs = if inode.format == DataFormat::Local {
        match inline_entries(dir, inode) {
            Ok(list) => {
                return (
                    list.into_iter()
                        .map(|e| DirEntry {
                            cookie: cookie_of(&e.key),
                            name: e.name,
                            ino: e.ino,
                            ftype: e.ftype,
                            key: e.key,
                        })
                        .collect(),
                    None,
                )
            }
            Err(e) => return (out, Some(e.to_string())),
        }
    } else {
        match tree(dir, inode).collect(tx) {
            Ok(r) => r,
            Err(e) => return (out, Some(e.to_string())),
        }
    };
    for (k, v) in recs {
        let (blk, off) = DirRec::split_ref(v[1]);
        let mark = tx.mark();
        let read = tx.read_buf(blk, BlockType::DirData).and_then(|id| {
            dirblock::salvage_record(tx.data(id), blk, off)
                .map(|(n, t)| (n.to_vec(), t))
                .map_err(EngineError::Corrupt)
        });
        tx.release_clean(mark, blk..blk + 1);
        match read {
            Ok((name, ftype)) => out.push(DirEntry {
                cookie: cookie_of(&k),
                name,
                ino: v[0],
                ftype,
                key: k,
            }),
            Err(e) => {
                first_err.get_or_insert(format!("directory {dir}: {e}"));
            }
        }
    }
    (out, first_err)
}

/// Frees an empty directory's tree root (at rmdir).
#[track_caller]
pub(crate) fn destroy(
    tx: &mut Trans<'_>,
    alloc: &Allocator,
    dir: u64,
    inode: &mut Inode,
) -> Result<(), EngineError> {
    if inode.nextents != 0 {
        return Err(EngineError::Invalid(format!(
            "directory {dir} is not empty"
        )));
    }
    if inode.format == DataFormat::Local {
        return Ok(());
    }
    let id = tx.read_buf(inode.root, BlockType::BtreeDir)?;
    tx.invalidate(id);
    let mut blocks = inode.blocks;
    InodeBlocks {
        alloc,
        near: 0,
        blocks: &mut blocks,
    }
    .free_node(tx, inode.root)?;
    inode.blocks = blocks;
    inode.root = 0;
    inode.format = DataFormat::Local;
    Ok(())
}

/// Whether `e` is one of the "." and ".." entries `read` makes up (none is stored).
pub fn is_made_up(e: &DirEntry) -> bool {
    e.cookie < COOKIE_BASE
}

/// Entries from `cookie` on, at most `max` (with "." and ".." first).
pub fn read(
    tx: &mut Trans<'_>,
    dir: u64,
    inode: &Inode,
    cookie: u64,
    max: usize,
) -> Result<Vec<DirEntry>, EngineError> {
    const DT_DIR: u8 = 4;
    let mut out = Vec::new();
    if cookie < COOKIE_DOT && out.len() < max {
        out.push(DirEntry {
            name: b".".to_vec(),
            ino: dir,
            ftype: DT_DIR,
            cookie: COOKIE_DOT,
            key: [0, 0],
        });
    }
    if cookie < COOKIE_DOTDOT && out.len() < max {
        out.push(DirEntry {
            name: b"..".to_vec(),
            ino: parent(inode),
            ftype: DT_DIR,
            cookie: COOKIE_DOTDOT,
            key: [0, 0],
        });
    }
    if inode.format == DataFormat::Local {
        let mut entries = inline_entries(dir, inode)?;
        entries.sort_by_key(|e| e.key);
        let from = cookie.saturating_sub(COOKIE_BASE);
        for e in entries {
            let c = cookie_of(&e.key);
            if out.len() >= max {
                break;
            }
            if cookie >= COOKIE_BASE && c - COOKIE_BASE <= from {
                continue;
            }
            out.push(DirEntry {
                name: e.name,
                ino: e.ino,
                ftype: e.ftype,
                cookie: c,
                key: e.key,
            });
        }
        return Ok(out);
    }
    let t = tree(dir, inode);
    let from = if cookie < COOKIE_BASE {
        Some([0, 0])
    } else {
        let c = cookie - COOKIE_BASE;
        crate::btree::next_key(&[c >> 31, c & (HASH_COLLISIONS_MAX - 1)])
    };
    let want = max.saturating_sub(out.len());
    let mut recs = Vec::with_capacity(want.min(1024));
    if let (Some(from), true) = (from, want > 0) {
        t.scan_from(tx, &from, |k, v| {
            recs.push((k, v));
            recs.len() < want
        })?;
    }
    for (k, v) in recs {
        let (name, ftype) = read_name(tx, dir, v[1])?;
        out.push(DirEntry {
            name,
            ino: v[0],
            ftype,
            cookie: cookie_of(&k),
            key: k,
        });
    }
    Ok(out)
}
