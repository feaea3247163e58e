//! Inodes inside transactions: find an inode's slot from its number, read it, write it back.
//!
//! An inode is locked by locking its chunk block (the transaction joins the block); operations
//! on several inodes join their chunk blocks in ascending block order (the POSIX layer's
//! `lock_chunks`), as XFS sorts inodes before locking them, so two operations never wait on each
//! other's inodes.

use crate::error::EngineError;
use crate::format::inode::{ino_split, inodes_per_block, slot_range, Inode, INODE_BYTES};
use crate::format::{BlockType, FormatError};
use crate::trans::{BufId, Trans};

/// Where an inode lives in a transaction: its chunk buffer and slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InodeRef {
    pub(crate) ino: u64,
    pub(crate) id: BufId,
    pub(crate) slot: usize,
}

fn bad(ino: u64, detail: String) -> EngineError {
    EngineError::Corrupt(FormatError::new(
        ino_split(ino).0,
        "inode",
        "number",
        detail,
    ))
}

/// Joins the chunk of `ino`, checking the number names a slot of a real chunk.
fn join(tx: &mut Trans<'_>, ino: u64) -> Result<(BufId, usize), EngineError> {
    let (chunk, slot) = ino_split(ino);
    let ipb = inodes_per_block(tx.block_size());
    if slot >= ipb {
        return Err(bad(
            ino,
            format!("inode {ino}: slot {slot} beyond the {ipb} of a chunk"),
        ));
    }
    let id = tx.read_buf(chunk, BlockType::InodeChunk)?;
    Ok((id, slot))
}

/// Reads inode `ino`; a free slot is `EngineError::Stale` (the inode no longer exists).
pub fn read(tx: &mut Trans<'_>, ino: u64) -> Result<(InodeRef, Inode), EngineError> {
    let (id, slot) = join(tx, ino)?;
    let r = InodeRef { ino, id, slot };
    let bytes = &tx.data(id)[slot_range(slot)];
    if bytes[4..8] == [0, 0, 0, 0] {
        return Err(EngineError::Stale(ino));
    }
    let inode = Inode::decode(bytes, tx.blkno(id), ino)?;
    Ok((r, inode))
}

/// Reads inode `ino` as fsck does: as [`read`], except that attribute fields the format refuses
/// leave the rest of the inode readable (`Inode::decode_salvaging_xattrs`): it comes back with
/// no attributes, and the error says what was wrong with them.
pub(crate) fn read_salvaging_xattrs(
    tx: &mut Trans<'_>,
    ino: u64,
) -> Result<(InodeRef, Inode, Option<FormatError>), EngineError> {
    let (id, slot) = join(tx, ino)?;
    let r = InodeRef { ino, id, slot };
    let bytes = &tx.data(id)[slot_range(slot)];
    if bytes[4..8] == [0, 0, 0, 0] {
        return Err(EngineError::Stale(ino));
    }
    let (inode, bad) = Inode::decode_salvaging_xattrs(bytes, tx.blkno(id), ino)?;
    Ok((r, inode, bad))
}

/// Joins the slot of a freshly allocated inode (which must be free) without decoding it.
pub fn join_new(tx: &mut Trans<'_>, ino: u64) -> Result<InodeRef, EngineError> {
    let (id, slot) = join(tx, ino)?;
    let bytes = &tx.data(id)[slot_range(slot)];
    if bytes[4..8] != [0, 0, 0, 0] {
        return Err(bad(
            ino,
            format!("inode {ino} was handed out but its slot is in use"),
        ));
    }
    Ok(InodeRef { ino, id, slot })
}

/// Writes `inode` into its slot and logs it.
#[track_caller]
pub fn write(tx: &mut Trans<'_>, r: &InodeRef, inode: &Inode) {
    debug_assert!(
        inode.mode != 0,
        "writing inode {} with mode 0 (use clear)",
        r.ino
    );
    let range = slot_range(r.slot);
    let mut buf = [0u8; INODE_BYTES];
    inode.encode(&mut buf);
    tx.data_mut(r.id)[range.clone()].copy_from_slice(&buf);
    tx.log_range(r.id, range);
}

/// Empties the slot (mode 0): the inode is gone.
#[track_caller]
pub(crate) fn clear(tx: &mut Trans<'_>, r: &InodeRef) {
    let range = slot_range(r.slot);
    tx.data_mut(r.id)[range.clone()].fill(0);
    tx.log_range(r.id, range);
}
