//! The tree form: an inode's attributes in a hash B+tree (node type TKBA) keyed (hash of the
//! name, collision index), whose records point at entry blocks (TKXE) holding each name with its
//! value, or with the first of the remote blocks (TKXR) of a value too large for its record
//! (layouts in `format::attrtree`). It is a directory's hash tree and name blocks
//! (`crate::dir`) with values beside the names.
//!
//! A new record is appended to the entry block of its key's neighbour in the tree (so
//! attributes set in key order fill blocks in turn), or to a new block when that one is full. A
//! replaced or removed attribute's record stays dead in its block, and a block is freed when no
//! record in it is live; a value's remote blocks are one extent, allocated whole and freed whole.

use super::{Attr, Target};
use crate::alloc::InodeBlocks;
use crate::btree::{Btree, Key, NodeAlloc, Root};
use crate::error::EngineError;
use crate::format::attrtree::{self as at, Stored};
use crate::format::entryblock;
use crate::format::inode::{ino_split, Inode, XattrForm};
use crate::format::name::name_hash;
use crate::format::records::AttrRec;
use crate::format::{BlockType, Dec, Enc, FormatError};
use crate::trans::Trans;

/// Offset of the owner in every block header.
const OWNER_OFF: usize = 16;

fn tree(ino: u64, i: &Inode) -> Btree {
    debug_assert_eq!(i.xattr_form, XattrForm::Tree);
    Btree::open(
        BlockType::BtreeAttr,
        ino,
        Root {
            blkno: i.xattr_blk,
            level: i.xattr_level,
        },
    )
}

fn save_root(i: &mut Inode, t: &Btree) {
    i.xattr_blk = t.root.blkno;
    i.xattr_level = t.root.level;
}

fn corrupt(blkno: u64, field: &'static str, detail: String) -> EngineError {
    EngineError::Corrupt(FormatError::new(blkno, "xattr tree", field, detail))
}

fn in_inode(ino: u64) -> impl Fn(FormatError) -> EngineError {
    move |mut e| {
        e.detail = format!("inode {ino}: {}", e.detail);
        EngineError::Corrupt(e)
    }
}

/// A record as read: its name, value length and where its value is.
#[derive(Debug, Clone)]
pub(crate) struct Owned {
    pub(crate) name: Vec<u8>,
    pub(crate) value_len: usize,
    /// The value when local; its first remote block otherwise.
    local: Option<Vec<u8>>,
    remote: u64,
}

/// Checks that block `b` (read as joined buffer data) belongs to `ino`.
pub(super) fn check_owner(
    b: &[u8],
    blkno: u64,
    ino: u64,
    what: &'static str,
) -> Result<(), EngineError> {
    let owner = Dec::new(b, blkno, what).u64(OWNER_OFF, "owner")?;
    if owner != ino {
        return Err(corrupt(
            blkno,
            "owner",
            format!("{what} of inode {ino} says owner {owner}"),
        ));
    }
    Ok(())
}

/// The tree record `(k, v)` decoded.
fn rec_of(ino: u64, i: &Inode, k: Key, v: Key) -> Result<AttrRec, EngineError> {
    AttrRec::decode(k, v).map_err(|why| {
        corrupt(
            i.xattr_blk,
            "records",
            format!("inode {ino}: attribute {k:?} -> {v:?}: {why}"),
        )
    })
}

/// Reads the record `r` points at.
fn read_record(tx: &mut Trans<'_>, ino: u64, r: &AttrRec) -> Result<Owned, EngineError> {
    let id = tx.read_buf(r.block, BlockType::AttrEntries)?;
    let b = tx.data(id);
    check_owner(b, r.block, ino, at::STRUCTURE)?;
    let rec = at::record(b, r.block, r.off).map_err(in_inode(ino))?;
    Ok(owned(&rec))
}

fn owned(rec: &at::Record<'_>) -> Owned {
    Owned {
        name: rec.name.to_vec(),
        value_len: rec.value_len,
        local: match rec.value {
            Stored::Local(v) => Some(v.to_vec()),
            Stored::Remote(_) => None,
        },
        remote: match rec.value {
            Stored::Local(_) => 0,
            Stored::Remote(b) => b,
        },
    }
}

/// The value of record `o`, read from its remote blocks when it is not local.
pub(crate) fn read_value(tx: &mut Trans<'_>, ino: u64, o: &Owned) -> Result<Vec<u8>, EngineError> {
    if let Some(v) = &o.local {
        return Ok(v.clone());
    }
    let bs = tx.block_size() as usize;
    let n = at::remote_blocks(bs, o.name.len(), o.value_len);
    let mut out = Vec::with_capacity(o.value_len);
    for k in 0..n {
        let blk = o.remote + k;
        let mark = tx.mark();
        let id = tx.read_buf(blk, BlockType::AttrRemote)?;
        let b = tx.data(id);
        check_owner(b, blk, ino, at::REMOTE_STRUCTURE)?;
        out.extend_from_slice(at::remote_data(b, blk, k, o.value_len).map_err(in_inode(ino))?);
        tx.release_clean(mark, blk..blk + 1);
    }
    Ok(out)
}

/// Finds `name`: its key, record location and record.
pub(crate) fn find(
    tx: &mut Trans<'_>,
    ino: u64,
    i: &Inode,
    name: &[u8],
) -> Result<Option<(Key, AttrRec, Owned)>, EngineError> {
    let h = name_hash(name);
    let t = tree(ino, i);
    let mut at = t.ge(tx, &[h, 0])?;
    while let Some((k, v)) = at {
        if k[0] != h {
            break;
        }
        let r = rec_of(ino, i, k, v)?;
        let o = read_record(tx, ino, &r)?;
        if o.name == name {
            return Ok(Some((k, r, o)));
        }
        at = t.gt(tx, &k)?;
    }
    Ok(None)
}

/// Every attribute's record, in key order.
pub(crate) fn records(
    tx: &mut Trans<'_>,
    ino: u64,
    i: &Inode,
) -> Result<Vec<(Key, AttrRec, Owned)>, EngineError> {
    let mut out = Vec::new();
    for (k, v) in tree(ino, i).collect(tx)? {
        let r = rec_of(ino, i, k, v)?;
        let mark = tx.mark();
        let o = read_record(tx, ino, &r)?;
        tx.release_clean(mark, r.block..r.block + 1);
        out.push((k, r, o));
    }
    Ok(out)
}

/// Every (name, value), in key order.
pub(crate) fn load(tx: &mut Trans<'_>, ino: u64, i: &Inode) -> Result<super::Attrs, EngineError> {
    let mut out = Vec::new();
    for (_, _, o) in records(tx, ino, i)? {
        let v = read_value(tx, ino, &o)?;
        out.push((o.name, v));
    }
    Ok(out)
}

/// The blocks of the inode's attributes for its block count and its allocations.
fn blocks_of<'a>(o: &'a mut Target<'_>) -> InodeBlocks<'a> {
    InodeBlocks {
        alloc: o.alloc,
        near: ino_split(o.ino).0,
        blocks: &mut o.i.blocks,
    }
}

/// Appends the record of `name` = `value` under `key` to its neighbour's entry block or a new
/// one, its value in a new remote extent when it is not local; returns where it is. The tree
/// itself is not changed.
#[track_caller]
fn append(
    tx: &mut Trans<'_>,
    o: &mut Target<'_>,
    key: Key,
    Attr { name, value }: Attr<'_>,
) -> Result<AttrRec, EngineError> {
    let bs = tx.block_size() as usize;
    let need = at::record_len(bs, name.len(), value.len());
    let t = tree(o.ino, o.i);
    let near = match t.le(tx, &key)? {
        Some(kv) => Some(kv),
        None => t.ge(tx, &key)?,
    };
    let mut target = None;
    if let Some((k, v)) = near {
        let r = rec_of(o.ino, o.i, k, v)?;
        let id = tx.read_buf(r.block, BlockType::AttrEntries)?;
        let free = at::free_off(tx.data(id), r.block).map_err(in_inode(o.ino))?;
        if free + need <= bs {
            target = Some((id, free));
        }
    }
    let remote = match at::remote_blocks(bs, name.len(), value.len()) {
        0 => 0,
        n => write_remote(tx, o, n, value)?,
    };
    let (id, off) = match target {
        Some(t) => t,
        None => {
            let blk = blocks_of(o).alloc_node(tx)?;
            let id = tx.get_buf(blk, BlockType::AttrEntries, o.ino)?;
            (id, at::RECORDS_OFF)
        }
    };
    let blk = tx.blkno(id);
    let b = tx.data_mut(id);
    let mut e = Enc::new(b);
    e.u8(off, name.len() as u8);
    e.u8(off + 1, if remote == 0 { 0 } else { at::FLAG_REMOTE });
    e.u32(off + 2, value.len() as u32);
    e.bytes(off + at::RECORD_HDR, name);
    let vat = off + at::RECORD_HDR + name.len();
    if remote == 0 {
        e.bytes(vat, value);
    } else {
        e.u64(vat, remote);
    }
    entryblock::note_appended(b, off, need);
    tx.log_range(id, at::LIVE_OFF..at::FREE_OFF + 4);
    tx.log_range(id, off..off + need);
    debug_assert!(at::record(tx.data(id), blk, off).is_ok_and(|r| r.name == name));
    Ok(AttrRec {
        hash: key[0],
        index: key[1],
        block: blk,
        off,
    })
}

/// Writes `value` into a new extent of `n` remote blocks; returns its first block.
#[track_caller]
fn write_remote(
    tx: &mut Trans<'_>,
    o: &mut Target<'_>,
    n: u64,
    value: &[u8],
) -> Result<u64, EngineError> {
    let ino = o.ino;
    // One extent: a value's blocks are found from its first, and the reservation counts one
    // allocation for them.
    let (first, got) = o.alloc.alloc(tx, ino_split(ino).0, n, n)?.ok_or_else(|| {
        EngineError::NoSpace(format!(
            "inode {ino}: no run of {n} free blocks for an attribute value"
        ))
    })?;
    debug_assert_eq!(got, n);
    o.i.blocks += n;
    let per = at::remote_payload(tx.block_size() as usize);
    for (k, part) in value.chunks(per).enumerate() {
        let blk = first + k as u64;
        let id = tx.get_buf(blk, BlockType::AttrRemote, ino)?;
        let mut e = Enc::new(tx.data_mut(id));
        e.u32(at::REMOTE_VALUE_OFF, (k * per) as u32);
        e.u32(at::REMOTE_BYTES_OFF, part.len() as u32);
        e.bytes(at::REMOTE_DATA_OFF, part);
        // get_buf logged the whole block.
    }
    Ok(first)
}

/// Drops the record at `r` (no longer in the tree): one live record less in its block, which is
/// freed at none; its remote extent freed.
#[track_caller]
fn drop_record(tx: &mut Trans<'_>, o: &mut Target<'_>, r: &AttrRec) -> Result<(), EngineError> {
    let ino = o.ino;
    let bs = tx.block_size() as usize;
    let id = tx.read_buf(r.block, BlockType::AttrEntries)?;
    let rec = at::record(tx.data(id), r.block, r.off).map_err(in_inode(ino))?;
    let remote = rec.remote(bs);
    let value_len = rec.value_len;
    let live = entryblock::live(tx.data(id), r.block, at::STRUCTURE)?;
    if live == 0 {
        return Err(corrupt(
            r.block,
            "live",
            format!("inode {ino}: dropping a record from an entry block with none live"),
        ));
    }
    if live == 1 {
        tx.invalidate(id);
        blocks_of(o).free_node(tx, r.block)?;
    } else {
        Enc::new(tx.data_mut(id)).u32(at::LIVE_OFF, live - 1);
        tx.log_range(id, at::LIVE_OFF..at::LIVE_OFF + 4);
    }
    if let Some((first, n)) = remote {
        for (k, blk) in (first..first + n).enumerate() {
            // Read and checked before it is freed: a damaged record pointing at another
            // inode's blocks (or at free space) must stop here, not free them.
            let id = tx.read_buf(blk, BlockType::AttrRemote)?;
            let b = tx.data(id);
            check_owner(b, blk, ino, at::REMOTE_STRUCTURE)?;
            at::remote_data(b, blk, k as u64, value_len).map_err(in_inode(ino))?;
            tx.invalidate(id);
        }
        o.alloc.free(tx, first, n)?;
        o.i.blocks -= n;
    }
    Ok(())
}

/// Sets `a` in an inode of the tree form (replacing its value if it exists).
#[track_caller]
pub(crate) fn set(tx: &mut Trans<'_>, o: &mut Target<'_>, a: Attr<'_>) -> Result<(), EngineError> {
    debug_assert!(a.value.len() <= at::XATTR_SIZE_MAX);
    if let Some((key, old, _)) = find(tx, o.ino, o.i, a.name)? {
        let new = append(tx, o, key, a)?;
        tree(o.ino, o.i).update(tx, &key, new.val())?;
        return drop_record(tx, o, &old);
    }
    insert_new(tx, o, a)
}

/// Adds `a` (absent) under the first free collision index of its name's hash.
#[track_caller]
fn insert_new(tx: &mut Trans<'_>, o: &mut Target<'_>, a: Attr<'_>) -> Result<(), EngineError> {
    let h = name_hash(a.name);
    let mut t = tree(o.ino, o.i);
    let idx = t.free_index(tx, h)?;
    if idx >= at::XATTR_COLLISIONS_MAX {
        return Err(EngineError::NoSpace(format!(
            "inode {}: too many attribute names with hash {h:#x}",
            o.ino
        )));
    }
    let key = [h, idx];
    let new = append(tx, o, key, a)?;
    debug_assert_eq!(new.key(), key);
    t.insert(tx, &mut blocks_of(o), key, new.val())?;
    save_root(o.i, &t);
    Ok(())
}

/// Removes the attribute with key `key` (record `r`); frees the tree's root when it was the
/// last, which puts the inode back in the block form with no attributes.
#[track_caller]
pub(crate) fn remove_at(
    tx: &mut Trans<'_>,
    o: &mut Target<'_>,
    key: Key,
    r: &AttrRec,
) -> Result<(), EngineError> {
    let mut t = tree(o.ino, o.i);
    t.delete(tx, &mut blocks_of(o), &key)?;
    save_root(o.i, &t);
    drop_record(tx, o, r)?;
    if t.ge(tx, &[0, 0])?.is_none() {
        if t.root.level != 0 {
            return Err(corrupt(
                t.root.blkno,
                "level",
                format!(
                    "inode {}: an empty attribute tree of level {}",
                    o.ino, t.root.level
                ),
            ));
        }
        let id = tx.read_buf(t.root.blkno, BlockType::BtreeAttr)?;
        tx.invalidate(id);
        blocks_of(o).free_node(tx, t.root.blkno)?;
        o.i.xattr_blk = 0;
        o.i.xattr_level = 0;
        o.i.xattr_form = XattrForm::Block;
    }
    Ok(())
}

/// Removes the first attribute in key order (freeing an inode's attributes one per transaction).
#[track_caller]
pub(crate) fn remove_first(tx: &mut Trans<'_>, o: &mut Target<'_>) -> Result<(), EngineError> {
    let Some((k, v)) = tree(o.ino, o.i).ge(tx, &[0, 0])? else {
        return Err(corrupt(
            o.i.xattr_blk,
            "records",
            format!("inode {}: an attribute tree with no attributes", o.ino),
        ));
    };
    let r = rec_of(o.ino, o.i, k, v)?;
    remove_at(tx, o, k, &r)
}

/// Moves the attributes `entries` (just taken out of the block form, which holds none now) into
/// a new tree.
#[track_caller]
pub(crate) fn create(
    tx: &mut Trans<'_>,
    o: &mut Target<'_>,
    entries: &[(Vec<u8>, Vec<u8>)],
) -> Result<(), EngineError> {
    debug_assert!(o.i.xattr_blk == 0 && o.i.xattr_form == XattrForm::Block);
    let root = blocks_of(o).alloc_node(tx)?;
    let t = Btree::create(tx, BlockType::BtreeAttr, o.ino, root)?;
    o.i.xattr_form = XattrForm::Tree;
    save_root(o.i, &t);
    // In key order, so that each record is appended after the one before it.
    let mut sorted: Vec<&(Vec<u8>, Vec<u8>)> = entries.iter().collect();
    sorted.sort_by(|a, b| (name_hash(&a.0), &a.0).cmp(&(name_hash(&b.0), &b.0)));
    for (n, v) in sorted {
        insert_new(tx, o, Attr { name: n, value: v })?;
    }
    Ok(())
}

/// Every block the attribute tree owns as runs (start, length): its nodes, its entry blocks (each
/// checked against the records pointing into it), its remote extents (each block checked); every
/// name filed under its own hash. The one verdict the checker and the repairer take.
pub(crate) fn blocks(
    tx: &mut Trans<'_>,
    ino: u64,
    i: &Inode,
) -> Result<Vec<(u64, u64)>, EngineError> {
    let bs = tx.block_size() as usize;
    let t = tree(ino, i);
    let mut out: Vec<(u64, u64)> = t.blocks(tx)?.into_iter().map(|b| (b, 1)).collect();
    let mut refs: Vec<(u64, usize, u64)> = Vec::new();
    for (k, v) in t.collect(tx)? {
        let r = rec_of(ino, i, k, v)?;
        refs.push((r.block, r.off, r.hash));
    }
    if refs.is_empty() {
        return Err(corrupt(
            i.xattr_blk,
            "records",
            format!("inode {ino}: an attribute tree with no attributes"),
        ));
    }
    refs.sort_unstable();
    for group in refs.chunk_by(|a, b| a.0 == b.0) {
        let blk = group[0].0;
        let mut offs: Vec<usize> = group.iter().map(|r| r.1).collect();
        let mark = tx.mark();
        let id = tx.read_buf(blk, BlockType::AttrEntries)?;
        let b = tx.data(id);
        check_owner(b, blk, ino, at::STRUCTURE)?;
        at::check_entry_block(b, blk, &mut offs).map_err(in_inode(ino))?;
        let mut remotes = Vec::new();
        for &(_, off, hash) in group {
            let rec = at::record(b, blk, off).map_err(in_inode(ino))?;
            if let Some(why) = at::key_problem(rec.name, hash) {
                return Err(corrupt(blk, "name", format!("inode {ino}: {why}")));
            }
            if let Some((first, n)) = rec.remote(bs) {
                remotes.push((first, n, rec.value_len));
            }
        }
        tx.release_clean(mark, blk..blk + 1);
        out.push((blk, 1));
        for (first, n, len) in remotes {
            for k in 0..n {
                let rb = first + k;
                let mark = tx.mark();
                let id = tx.read_buf(rb, BlockType::AttrRemote)?;
                let b = tx.data(id);
                check_owner(b, rb, ino, at::REMOTE_STRUCTURE)?;
                at::remote_data(b, rb, k, len).map_err(in_inode(ino))?;
                tx.release_clean(mark, rb..rb + 1);
            }
            out.push((first, n));
        }
    }
    Ok(out)
}

/// Every attribute of the tree that can be read, into `s`: the tree walked as it is (nodes that
/// cannot be read lose all it holds), then each record on its own: its entry block (type,
/// checksum, owner), the record at its offset (bounded by `free_off`, else by the block when
/// that header field is what is damaged), its remote blocks. A name filed under another hash is
/// kept: it is stored anew under its own. `live` and dead records do not matter here.
pub(crate) fn salvage(tx: &mut Trans<'_>, ino: u64, i: &Inode, s: &mut super::Salvage) {
    let acl_hash = name_hash(crate::format::acl::ACCESS);
    let recs = match tree(ino, i).collect(tx) {
        Ok(r) => r,
        Err(e) => return s.drop_one(format!("every attribute: the tree: {e}")),
    };
    for (k, v) in recs {
        let lost = |s: &mut super::Salvage, why: String| {
            if k[0] == acl_hash && s.acl_lost.is_none() {
                s.acl_lost = Some(None);
            }
            s.drop_one(format!("the attribute under key {k:?}: {why}"));
        };
        let r = match AttrRec::decode(k, v) {
            Ok(r) => r,
            Err(why) => {
                lost(s, why.to_string());
                continue;
            }
        };
        let mark = tx.mark();
        let read = salvage_record(tx, ino, &r);
        tx.release_clean(mark, r.block..r.block + 1);
        let o = match read {
            Ok(o) => o,
            Err(e) => {
                lost(s, e.to_string());
                continue;
            }
        };
        match read_value(tx, ino, &o) {
            Ok(value) => {
                let mut from = vec![(r.block, 1)];
                if o.local.is_none() {
                    let bs = tx.block_size() as usize;
                    from.push((o.remote, at::remote_blocks(bs, o.name.len(), o.value_len)));
                }
                s.offer(o.name, value, from);
            }
            Err(e) => {
                if o.name == crate::format::acl::ACCESS {
                    s.acl_lost = Some(None);
                }
                s.drop_one(format!("{:?}: {e}", String::from_utf8_lossy(&o.name)));
            }
        }
    }
}

/// The record `r` points at, as [`read_record`] reads it, but bounded by its block alone when
/// the block's `free_off` is what cannot be trusted.
fn salvage_record(tx: &mut Trans<'_>, ino: u64, r: &AttrRec) -> Result<Owned, EngineError> {
    match read_record(tx, ino, r) {
        Ok(o) => Ok(o),
        Err(first) => {
            let id = tx.read_buf(r.block, BlockType::AttrEntries)?;
            let b = tx.data(id);
            check_owner(b, r.block, ino, at::STRUCTURE)?;
            let rec = at::salvage_record(b, r.block, r.off).map_err(|_| first)?;
            Ok(owned(&rec))
        }
    }
}
