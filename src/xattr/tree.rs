//! The tree form: an inode's attributes in a hash B+tree (node type TKBA) keyed (hash of the
//! name, collision index), whose records point at entry blocks (TKXE) holding each name with its
//! value, or with the first of the remote blocks (TKXR) of a value too large for its record
//! (layouts in `format::attrtree`). It is a directory's hash tree and name blocks
//! (`crate::dir`) with values beside the names.
//!
//! A new record is appended to the entry block of its key's neighbour in the tree (so
//! attributes set in key order fill blocks in turn), or to a new block when that one is full. A
//! replaced or removed attribute's record stays dead in its block, and a block is freed when no
//! record in it is live.
//!
//! A value's remote blocks are one extent when the free space has a run that long, and then a
//! set or a removal is one transaction. Otherwise they are several runs, and the change spans
//! several transactions rolled from the first, one run each, through a record flagged INCOMPLETE
//! that no reader sees: a set writes its new record so, run by run, then in one step clears the
//! flag and sets it on the record it replaces; a removal flags its record and frees the runs from
//! the last, then the record. A crash between steps leaves an INCOMPLETE record, a state as valid
//! as any: the next set or removal of its name, or the inode's freeing, frees it first.

mod remote;

use super::{Attr, Roll, Target};
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
use remote::{alloc_run, free_run, link, walk, write_run};

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
    /// False for an INCOMPLETE record, which no reader sees.
    complete: bool,
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
        complete: rec.complete,
    }
}

/// The value of record `o`, read from its remote blocks when it is not local.
pub(crate) fn read_value(tx: &mut Trans<'_>, ino: u64, o: &Owned) -> Result<Vec<u8>, EngineError> {
    if let Some(v) = &o.local {
        return Ok(v.clone());
    }
    let mut out = Vec::with_capacity(o.value_len);
    walk(tx, ino, o, |d| out.extend_from_slice(d))?;
    Ok(out)
}

/// Every record filed under `name`'s hash whose name is `name`: (key, location, record),
/// complete or not, in key order.
fn named(
    tx: &mut Trans<'_>,
    ino: u64,
    i: &Inode,
    name: &[u8],
) -> Result<Vec<(Key, AttrRec, Owned)>, EngineError> {
    let h = name_hash(name);
    let t = tree(ino, i);
    let mut out = Vec::new();
    let mut at = t.ge(tx, &[h, 0])?;
    while let Some((k, v)) = at {
        if k[0] != h {
            break;
        }
        let r = rec_of(ino, i, k, v)?;
        let mark = tx.mark();
        let o = read_record(tx, ino, &r)?;
        tx.release_clean(mark, r.block..r.block + 1);
        if o.name == name {
            out.push((k, r, o));
        }
        at = t.gt(tx, &k)?;
    }
    Ok(out)
}

/// Finds `name` (its complete record: an INCOMPLETE one is no attribute): its key, record
/// location and record.
pub(crate) fn find(
    tx: &mut Trans<'_>,
    ino: u64,
    i: &Inode,
    name: &[u8],
) -> Result<Option<(Key, AttrRec, Owned)>, EngineError> {
    Ok(named(tx, ino, i, name)?
        .into_iter()
        .find(|(_, _, o)| o.complete))
}

/// The most remote blocks a change of `name` frees: those of its value and of INCOMPLETE
/// records of the name a crash left (the change frees them first). None when there are none.
pub(crate) fn freed_remote(
    tx: &mut Trans<'_>,
    ino: u64,
    i: &Inode,
    name: &[u8],
) -> Result<Option<u64>, EngineError> {
    let bs = tx.block_size() as usize;
    Ok(named(tx, ino, i, name)?
        .iter()
        .map(|(_, _, o)| at::remote_blocks(bs, o.name.len(), o.value_len))
        .max())
}

/// Every attribute's record, in key order (INCOMPLETE records are no attributes).
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
        if o.complete {
            out.push((k, r, o));
        }
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

/// Where a new record's value goes: in the record, or in remote blocks from `first` (complete,
/// or INCOMPLETE while the rest is written in later steps).
#[derive(Debug, Clone, Copy)]
enum Value {
    Local,
    Remote { first: u64, complete: bool },
}

/// Appends the record of `name` = `value` under `key` to its neighbour's entry block or a new
/// one; returns where it is. Its remote blocks, if any, are written by the caller. The tree
/// itself is not changed.
#[track_caller]
fn append(
    tx: &mut Trans<'_>,
    o: &mut Target<'_>,
    key: Key,
    Attr { name, value }: Attr<'_>,
    stored: Value,
) -> Result<AttrRec, EngineError> {
    let bs = tx.block_size() as usize;
    let need = at::record_len(bs, name.len(), value.len());
    debug_assert_eq!(
        at::is_local(bs, name.len(), value.len()),
        matches!(stored, Value::Local)
    );
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
    e.u8(
        off + at::RECORD_FLAGS_OFF,
        match stored {
            Value::Local => 0,
            Value::Remote { complete: true, .. } => at::FLAG_REMOTE,
            Value::Remote { .. } => at::FLAG_REMOTE | at::FLAG_INCOMPLETE,
        },
    );
    e.u32(off + 2, value.len() as u32);
    e.bytes(off + at::RECORD_HDR, name);
    let vat = off + at::RECORD_HDR + name.len();
    match stored {
        Value::Local => e.bytes(vat, value),
        Value::Remote { first, .. } => e.u64(vat, first),
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

/// Sets or clears the INCOMPLETE flag of the remote record at `r`.
#[track_caller]
fn set_complete(tx: &mut Trans<'_>, r: &AttrRec, complete: bool) -> Result<(), EngineError> {
    let id = tx.read_buf(r.block, BlockType::AttrEntries)?;
    debug_assert!(at::record(tx.data(id), r.block, r.off).is_ok_and(|x| x.remote_first().is_some()));
    let at_flags = r.off + at::RECORD_FLAGS_OFF;
    let flags = at::FLAG_REMOTE | if complete { 0 } else { at::FLAG_INCOMPLETE };
    Enc::new(tx.data_mut(id)).u8(at_flags, flags);
    tx.log_range(id, at_flags..at_flags + 1);
    debug_assert!(at::record(tx.data(id), r.block, r.off).is_ok_and(|x| x.complete == complete));
    Ok(())
}

/// Drops the record at `r` (no longer in the tree): one live record less in its block, which is
/// freed at none; its remote blocks freed, which must be one run (a value in several is freed
/// run by run first: [`teardown_step`]).
#[track_caller]
fn drop_record(tx: &mut Trans<'_>, o: &mut Target<'_>, r: &AttrRec) -> Result<(), EngineError> {
    let ino = o.ino;
    let rec = read_record(tx, ino, r)?;
    // Read and checked before it is freed: a damaged record pointing at another inode's blocks
    // (or at free space) must stop here, not free them.
    let chain = walk(tx, ino, &rec, |_| {})?;
    debug_assert!(chain.runs.len() <= 1, "{:?}", chain.runs);
    let id = tx.read_buf(r.block, BlockType::AttrEntries)?;
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
    for &run in &chain.runs {
        free_run(tx, o, run)?;
    }
    Ok(())
}

/// Rewrites the value of the complete record `r` (`old`) with `value` of the same length where
/// it is: its record's bytes or its remote blocks' (a chmod's ACL, a label of the same size).
#[track_caller]
fn rewrite(
    tx: &mut Trans<'_>,
    ino: u64,
    r: &AttrRec,
    old: &Owned,
    value: &[u8],
) -> Result<(), EngineError> {
    debug_assert!(old.complete && old.value_len == value.len());
    if old.local.is_some() {
        let id = tx.read_buf(r.block, BlockType::AttrEntries)?;
        let at_v = r.off + at::RECORD_HDR + old.name.len();
        Enc::new(tx.data_mut(id)).bytes(at_v, value);
        tx.log_range(id, at_v..at_v + value.len());
        return Ok(());
    }
    let chain = walk(tx, ino, old, |_| {})?;
    let per = at::remote_payload(tx.block_size() as usize);
    let blocks = chain.runs.iter().flat_map(|&(s, l)| s..s + l);
    for (blk, part) in blocks.zip(value.chunks(per)) {
        let id = tx.read_buf(blk, BlockType::AttrRemote)?;
        Enc::new(tx.data_mut(id)).bytes(at::REMOTE_DATA_OFF, part);
        tx.log_range(id, at::REMOTE_DATA_OFF..at::REMOTE_DATA_OFF + part.len());
    }
    Ok(())
}

/// Rewrites the value of `a.name` where it is when the new value has its length (a chmod's ACL,
/// a label of the same size): in this one transaction, which a setattr that cannot roll may
/// hold. Returns false, changing nothing, when there is no such value.
#[track_caller]
pub(crate) fn rewrite_same_length(
    tx: &mut Trans<'_>,
    o: &mut Target<'_>,
    a: Attr<'_>,
) -> Result<bool, EngineError> {
    match find(tx, o.ino, o.i, a.name)? {
        Some((_, r, old)) if old.value_len == a.value.len() => {
            rewrite(tx, o.ino, &r, &old, a.value)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Sets `a` in an inode of the tree form (replacing its value if it exists), rolling `tx`
/// through `roll` between the steps of a value written or freed in several runs. The caller has
/// freed the name's leftovers (`clear_leftovers`, which may leave the inode in the block form,
/// so it is called before the form is chosen). Returns false,
/// with every step undone and committed, when the free space has not the value's blocks.
#[track_caller]
pub(crate) fn set(
    tx: &mut Trans<'_>,
    o: &mut Target<'_>,
    a: Attr<'_>,
    roll: Roll<'_>,
) -> Result<bool, EngineError> {
    debug_assert!(a.value.len() <= at::XATTR_SIZE_MAX);
    let bs = tx.block_size() as usize;
    let old = find(tx, o.ino, o.i, a.name)?;
    let old_runs = match &old {
        Some((_, _, old)) => walk(tx, o.ino, old, |_| {})?.runs.len(),
        None => 0,
    };
    let n = at::remote_blocks(bs, a.name.len(), a.value.len());
    // The value's first run: all of it when the free space has a run that long.
    let first = match n {
        0 => None,
        n => match alloc_run(tx, o, n)? {
            Some(run) => Some(run),
            None => return Ok(false),
        },
    };
    let whole = first.filter(|&(_, l)| l == n);
    if n == 0 || whole.is_some() {
        let stored = match whole {
            None => Value::Local,
            Some((first, _)) => Value::Remote {
                first,
                complete: true,
            },
        };
        let (key, old_r) = match &old {
            // One transaction: the key repointed at the new record, the old dropped.
            Some((key, r, _)) if old_runs <= 1 => {
                let new = append(tx, o, *key, a, stored)?;
                if let Some(run) = whole {
                    write_run(tx, o.ino, a.value, 0, run, 0)?;
                }
                tree(o.ino, o.i).update(tx, key, new.val())?;
                drop_record(tx, o, r)?;
                return Ok(true);
            }
            Some((key, r, _)) => (*key, Some(*r)),
            None => ([0, 0], None),
        };
        let new = insert_new(tx, o, a, stored)?;
        if let Some(run) = whole {
            write_run(tx, o.ino, a.value, 0, run, 0)?;
        }
        if let Some(old_r) = old_r {
            // The old value is in several runs: flagged here, as the new one shows, then freed
            // run by run in steps of their own.
            set_complete(tx, &old_r, false)?;
            debug_assert_ne!(new.key(), key);
            roll(tx, o.i)?;
            teardown(tx, o, key, &old_r, roll)?;
        }
        return Ok(true);
    }
    // No free run holds the value: it is written run by run under a key of its own, INCOMPLETE
    // until its last run is written.
    let Some(run) = first else {
        return Ok(false);
    };
    let stored = Value::Remote {
        first: run.0,
        complete: false,
    };
    let r = insert_new(tx, o, a, stored)?;
    let key = r.key();
    write_run(tx, o.ino, a.value, 0, run, at::NEXT_UNWRITTEN)?;
    let (mut done, mut tail) = (run.1, run.0 + run.1 - 1);
    while done < n {
        roll(tx, o.i)?;
        let Some(run) = alloc_run(tx, o, n - done)? else {
            // The promise should have kept the blocks: what was written goes again.
            roll(tx, o.i)?;
            teardown(tx, o, key, &r, roll)?;
            return Ok(false);
        };
        let last = done + run.1 == n;
        write_run(
            tx,
            o.ino,
            a.value,
            done,
            run,
            if last { 0 } else { at::NEXT_UNWRITTEN },
        )?;
        link(tx, o.ino, tail, run.0)?;
        done += run.1;
        tail = run.0 + run.1 - 1;
    }
    // Published: the new record shows, and in the same step the old one goes (a local value,
    // whose removal this step holds) or is flagged, then freed in steps of its own.
    set_complete(tx, &r, true)?;
    match old {
        Some((old_key, old_r, old)) if old.local.is_some() => {
            remove_whole(tx, o, old_key, &old_r)?;
        }
        Some((old_key, old_r, _)) => {
            set_complete(tx, &old_r, false)?;
            roll(tx, o.i)?;
            teardown(tx, o, old_key, &old_r, roll)?;
        }
        None => {}
    }
    Ok(true)
}

/// Frees the INCOMPLETE records of `name` a crash left (their steps undone), each to its end and
/// rolled after, so the change goes on in a step of its own. The last record of the tree going,
/// the inode is back in the block form: the caller looks at its form again.
#[track_caller]
pub(crate) fn clear_leftovers(
    tx: &mut Trans<'_>,
    o: &mut Target<'_>,
    name: &[u8],
    roll: Roll<'_>,
) -> Result<(), EngineError> {
    for (key, r, rec) in named(tx, o.ino, o.i, name)? {
        if !rec.complete {
            teardown(tx, o, key, &r, roll)?;
            roll(tx, o.i)?;
        }
    }
    Ok(())
}

/// Frees the INCOMPLETE record at `r` (key `key`) to its end, rolling between its steps; its last
/// step is left for the caller to commit.
#[track_caller]
fn teardown(
    tx: &mut Trans<'_>,
    o: &mut Target<'_>,
    key: Key,
    r: &AttrRec,
    roll: Roll<'_>,
) -> Result<(), EngineError> {
    while !teardown_step(tx, o, key, r)? {
        roll(tx, o.i)?;
    }
    Ok(())
}

/// One step of freeing the remote record at `r` (key `key`), flagged INCOMPLETE or so flagged
/// here: its last run freed, the block before it then the last written; or, when one run is
/// left, the record itself with it. Returns whether the record is gone.
#[track_caller]
fn teardown_step(
    tx: &mut Trans<'_>,
    o: &mut Target<'_>,
    key: Key,
    r: &AttrRec,
) -> Result<bool, EngineError> {
    let rec = read_record(tx, o.ino, r)?;
    let chain = walk(tx, o.ino, &rec, |_| {})?;
    if chain.runs.len() <= 1 {
        remove_whole(tx, o, key, r)?;
        return Ok(true);
    }
    if rec.complete {
        set_complete(tx, r, false)?;
    }
    let (before, last) = chain.runs.split_at(chain.runs.len() - 1);
    free_run(tx, o, last[0])?;
    let (s, l) = before[before.len() - 1];
    link(tx, o.ino, s + l - 1, at::NEXT_UNWRITTEN)?;
    Ok(false)
}

/// Adds `a` (absent, or present under another key) under the first free collision index of its
/// name's hash; returns where its record is.
#[track_caller]
fn insert_new(
    tx: &mut Trans<'_>,
    o: &mut Target<'_>,
    a: Attr<'_>,
    stored: Value,
) -> Result<AttrRec, EngineError> {
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
    let new = append(tx, o, key, a, stored)?;
    debug_assert_eq!(new.key(), key);
    t.insert(tx, &mut blocks_of(o), key, new.val())?;
    save_root(o.i, &t);
    Ok(new)
}

/// Removes `name`'s attribute: at once when its value is local or one run, else flagged
/// INCOMPLETE and freed run by run, rolling between steps. The caller has freed the name's
/// leftovers (`clear_leftovers`).
#[track_caller]
pub(crate) fn remove(
    tx: &mut Trans<'_>,
    o: &mut Target<'_>,
    name: &[u8],
    roll: Roll<'_>,
) -> Result<bool, EngineError> {
    let Some((key, r, _)) = find(tx, o.ino, o.i, name)? else {
        return Ok(false);
    };
    teardown(tx, o, key, &r, roll)?;
    Ok(true)
}

/// Removes the attribute with key `key` (record `r`, local or one run); frees the tree's root
/// when it was the last, which puts the inode back in the block form with no attributes.
#[track_caller]
fn remove_whole(
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

/// Frees the root of a tree [`create`]d in this transaction that holds nothing (the set into it
/// found no space), which puts the inode back in the block form with no attributes.
#[track_caller]
pub(crate) fn drop_empty(tx: &mut Trans<'_>, o: &mut Target<'_>) -> Result<(), EngineError> {
    // A set that failed after steps took its record out again, root and all (`remove_whole`).
    if o.i.xattr_form == XattrForm::Block {
        return Ok(());
    }
    let t = tree(o.ino, o.i);
    if t.ge(tx, &[0, 0])?.is_some() {
        return Ok(());
    }
    debug_assert_eq!(t.root.level, 0);
    let id = tx.read_buf(t.root.blkno, BlockType::BtreeAttr)?;
    tx.invalidate(id);
    blocks_of(o).free_node(tx, t.root.blkno)?;
    o.i.xattr_blk = 0;
    o.i.xattr_level = 0;
    o.i.xattr_form = XattrForm::Block;
    Ok(())
}

/// One step of freeing an inode's attributes (one transaction): the first record in key order,
/// complete or not, removed, or its last run freed when its value is in several.
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
    teardown_step(tx, o, k, &r)?;
    Ok(())
}

/// Moves the attributes `entries` (just taken out of the block form, which holds none now) into
/// a new tree. A value from the block is at most two remote blocks; with no run of two free, it
/// takes two runs of one (`ResvTable::xattr_convert_of` counts the two allocations).
#[track_caller]
pub(crate) fn create(
    tx: &mut Trans<'_>,
    o: &mut Target<'_>,
    entries: &[(Vec<u8>, Vec<u8>)],
) -> Result<(), EngineError> {
    debug_assert!(o.i.xattr_blk == 0 && o.i.xattr_form == XattrForm::Block);
    let bs = tx.block_size() as usize;
    let root = blocks_of(o).alloc_node(tx)?;
    let t = Btree::create(tx, BlockType::BtreeAttr, o.ino, root)?;
    o.i.xattr_form = XattrForm::Tree;
    save_root(o.i, &t);
    // In key order, so that each record is appended after the one before it.
    let mut sorted: Vec<&(Vec<u8>, Vec<u8>)> = entries.iter().collect();
    sorted.sort_by(|a, b| (name_hash(&a.0), &a.0).cmp(&(name_hash(&b.0), &b.0)));
    for (name, value) in sorted {
        let a = Attr { name, value };
        let n = at::remote_blocks(bs, name.len(), value.len());
        if n == 0 {
            insert_new(tx, o, a, Value::Local)?;
            continue;
        }
        debug_assert!(n <= 2, "a value from an xattr block in {n} remote blocks");
        let ino = o.ino;
        let no_space =
            || EngineError::NoSpace(format!("inode {ino}: no free block for an attribute value"));
        let first = alloc_run(tx, o, n)?.ok_or_else(no_space)?;
        let second = match n - first.1 {
            0 => None,
            rest => Some(alloc_run(tx, o, rest)?.ok_or_else(no_space)?),
        };
        let stored = Value::Remote {
            first: first.0,
            complete: true,
        };
        insert_new(tx, o, a, stored)?;
        let next = match second {
            Some((s, _)) if s != first.0 + first.1 => s,
            _ => 0,
        };
        write_run(tx, o.ino, value, 0, first, next)?;
        if let Some(second) = second {
            write_run(tx, o.ino, value, first.1, second, 0)?;
        }
    }
    Ok(())
}

/// Every block the attribute tree owns as runs (start, length): its nodes, its entry blocks (each
/// checked against the records pointing into it), its remote values' runs (each block checked,
/// an INCOMPLETE record's as far as written); every name filed under its own hash; and how many
/// INCOMPLETE records a crash left. The one verdict the checker and the repairer take.
pub(crate) fn blocks(
    tx: &mut Trans<'_>,
    ino: u64,
    i: &Inode,
) -> Result<(Vec<(u64, u64)>, u64), EngineError> {
    let t = tree(ino, i);
    let mut interrupted = 0;
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
            if rec.remote_first().is_some() {
                interrupted += !rec.complete as u64;
                remotes.push(owned(&rec));
            }
        }
        tx.release_clean(mark, blk..blk + 1);
        out.push((blk, 1));
        for rec in remotes {
            // An INCOMPLETE record's blocks written so far are the inode's as much as a value's.
            out.extend(walk(tx, ino, &rec, |_| {})?.runs);
        }
    }
    Ok((out, interrupted))
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
        if !o.complete {
            // A set or removal a crash cut short: no attribute, and its blocks go with the rest.
            continue;
        }
        let mut value = o.local.clone().unwrap_or_default();
        match walk(tx, ino, &o, |d| value.extend_from_slice(d)) {
            Ok(chain) => {
                let mut from = vec![(r.block, 1)];
                from.extend(chain.runs);
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
