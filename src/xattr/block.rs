//! The block form: all of an inode's attributes in one xattr block (type TKXA, owner = the
//! inode, layout in `format::xattrblock`), allocated near the inode with the first attribute and
//! freed with the last. What no longer fits moves to the tree form (`super::tree`).

use crate::alloc::Allocator;
use crate::error::EngineError;
use crate::format::inode::{ino_split, Inode};
use crate::format::{xattrblock, BlockType, Enc};
use crate::trans::Trans;

const HDR: usize = xattrblock::ENTRIES_OFF;

/// Room for entries in an xattr block of `bs` bytes.
pub(crate) fn capacity(bs: u32) -> usize {
    bs as usize - HDR
}

use xattrblock::entry_len;

use super::Attrs;

/// Whether `entries` fit one xattr block of `bs` bytes (each value's length is a u16 there).
pub(crate) fn fits(bs: u32, entries: &[(Vec<u8>, Vec<u8>)]) -> bool {
    entries.iter().all(|(_, v)| v.len() <= u16::MAX as usize)
        && entries.iter().map(|(n, v)| entry_len(n, v)).sum::<usize>() <= capacity(bs)
}

/// Reads every (name, value) of the inode's block (`format::xattrblock::decode` checks it).
pub(crate) fn load(tx: &mut Trans<'_>, ino: u64, inode: &Inode) -> Result<Attrs, EngineError> {
    if inode.xattr_blk == 0 {
        return Ok(Vec::new());
    }
    let blk = inode.xattr_blk;
    let id = tx.read_buf(blk, BlockType::Xattr)?;
    match xattrblock::decode(tx.data(id), blk) {
        Ok(list) => Ok(list
            .into_iter()
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect()),
        Err(mut e) => {
            e.detail = format!("inode {ino}: {}", e.detail);
            Err(EngineError::Corrupt(e))
        }
    }
}

/// Writes `entries` as the inode's attributes: a block is allocated, rewritten or freed as
/// needed; `inode.xattr_blk` and `inode.blocks` follow.
#[track_caller]
pub(crate) fn store(
    tx: &mut Trans<'_>,
    alloc: &Allocator,
    ino: u64,
    inode: &mut Inode,
    entries: &[(Vec<u8>, Vec<u8>)],
) -> Result<(), EngineError> {
    let bs = tx.block_size();
    debug_assert!(
        entries
            .iter()
            .all(|(n, _)| xattrblock::name_problem(n).is_none()),
        "the request layer lets only names of the stored rule through"
    );
    let need: usize = entries.iter().map(|(n, v)| entry_len(n, v)).sum();
    if !fits(bs, entries) {
        return Err(EngineError::NoSpace(format!(
            "inode {ino}: extended attributes need {need} bytes, a block holds {}",
            capacity(bs)
        )));
    }
    if entries.is_empty() {
        if inode.xattr_blk != 0 {
            let id = tx.read_buf(inode.xattr_blk, BlockType::Xattr)?;
            tx.invalidate(id);
            alloc.free(tx, inode.xattr_blk, 1)?;
            inode.xattr_blk = 0;
            inode.blocks -= 1;
        }
        return Ok(());
    }
    let id = if inode.xattr_blk == 0 {
        let (blk, _) = alloc
            .alloc(tx, ino_split(ino).0, 1, 1)?
            .ok_or_else(|| EngineError::NoSpace("no block for extended attributes".into()))?;
        inode.xattr_blk = blk;
        inode.blocks += 1;
        tx.get_buf(blk, BlockType::Xattr, ino)?
    } else {
        tx.read_buf(inode.xattr_blk, BlockType::Xattr)?
    };
    let b = tx.data_mut(id);
    // What the block held before (a fresh block: zero): cleared past the new entries. Bounded
    // by the block, whatever it says.
    let old_used =
        u16::from_le_bytes([b[xattrblock::USED_OFF], b[xattrblock::USED_OFF + 1]]) as usize;
    let old_used = old_used.min(b.len() - HDR);
    let mut at = HDR;
    for (n, v) in entries {
        b[at] = n.len() as u8;
        b[at + 1..at + 3].copy_from_slice(&(v.len() as u16).to_le_bytes());
        b[at + 3..at + 3 + n.len()].copy_from_slice(n);
        b[at + 3 + n.len()..at + 3 + n.len() + v.len()].copy_from_slice(v);
        at += entry_len(n, v);
    }
    let end = HDR + old_used.max(need);
    b[at..end].fill(0);
    let mut e = Enc::new(b);
    e.u16(xattrblock::COUNT_OFF, entries.len() as u16);
    e.u16(xattrblock::USED_OFF, need as u16);
    tx.log_range(id, xattrblock::COUNT_OFF..end.max(HDR + 1));
    Ok(())
}

/// The entries of the inode's block that can be read (`xattrblock::salvage`), into `s`.
pub(crate) fn salvage(tx: &mut Trans<'_>, ino: u64, inode: &Inode, s: &mut super::Salvage) {
    let blk = inode.xattr_blk;
    if blk == 0 {
        return;
    }
    let id = match tx.read_buf(blk, BlockType::Xattr) {
        Ok(id) => id,
        Err(e) => return s.drop_one(format!("every attribute: {e}")),
    };
    let b = tx.data(id);
    if let Err(e) = super::tree::check_owner(b, blk, ino, xattrblock::STRUCTURE) {
        return s.drop_one(format!("every attribute: {e}"));
    }
    let (entries, dropped) = xattrblock::salvage(b, blk);
    let entries: Vec<(Vec<u8>, Vec<u8>)> = entries
        .into_iter()
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect();
    s.dropped.extend(dropped);
    for (n, v) in entries {
        s.offer(n, v, vec![(blk, 1)]);
    }
}
