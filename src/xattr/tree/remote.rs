//! A remote value's blocks (type TKXR, layout in `format::attrtree`): one run of consecutive
//! blocks, or several linked by the `next` of each run's last block. Walking them (each checked),
//! allocating a run, writing one, linking it on, and freeing one: the steps `super` builds a set
//! or a removal from, one run per transaction when there are several.

use super::{check_owner, corrupt, in_inode, Owned};
use crate::error::EngineError;
use crate::format::attrtree::{self as at, Next};
use crate::format::inode::ino_split;
use crate::format::{BlockType, Enc};
use crate::trans::Trans;
use crate::xattr::Target;

/// A remote value's blocks as walked: its runs (start, length) in the value's order (all of the
/// value's, or those written so far of an INCOMPLETE one).
#[derive(Debug, Clone, Default)]
pub(super) struct Chain {
    pub(super) runs: Vec<(u64, u64)>,
}

impl Chain {
    fn push(&mut self, blk: u64) {
        match self.runs.last_mut() {
            Some((s, l)) if *s + *l == blk => *l += 1,
            _ => self.runs.push((blk, 1)),
        }
    }
}

/// Walks the remote blocks of record `o` from its first, each read and checked (its owner, its
/// place in the value, where the value goes on), handing each block's bytes to `each`. A
/// complete record's walk holds every block of its value; an INCOMPLETE one's may end early at a
/// block whose `next` says the rest is unwritten. The walk is bounded by the value's block count,
/// and a block met twice is at two places of the value, which its offset refuses.
pub(super) fn walk(
    tx: &mut Trans<'_>,
    ino: u64,
    o: &Owned,
    mut each: impl FnMut(&[u8]),
) -> Result<Chain, EngineError> {
    let mut chain = Chain::default();
    if o.local.is_some() {
        return Ok(chain);
    }
    let bs = tx.block_size() as usize;
    let n = at::remote_blocks(bs, o.name.len(), o.value_len);
    let mut blk = o.remote;
    for k in 0..n {
        let mark = tx.mark();
        let id = tx.read_buf(blk, BlockType::AttrRemote)?;
        let b = tx.data(id);
        check_owner(b, blk, ino, at::REMOTE_STRUCTURE)?;
        let (data, next) = at::remote_data(b, blk, k, o.value_len).map_err(in_inode(ino))?;
        each(data);
        tx.release_clean(mark, blk..blk + 1);
        chain.push(blk);
        match next {
            // remote_data says End exactly at the block holding the value's last bytes.
            Next::End => {
                debug_assert_eq!(k + 1, n);
                return Ok(chain);
            }
            Next::At(b) => blk = b,
            Next::Unwritten if !o.complete => return Ok(chain),
            Next::Unwritten => {
                return Err(corrupt(
                    blk,
                    "next",
                    format!(
                        "inode {ino}: block {k} of the complete value of {:?} says the rest is \
                         unwritten",
                        String::from_utf8_lossy(&o.name)
                    ),
                ))
            }
        }
    }
    Err(corrupt(
        o.remote,
        "next",
        format!(
            "inode {ino}: the value of {:?} goes on past its {n} blocks",
            String::from_utf8_lossy(&o.name)
        ),
    ))
}

/// Allocates the longest run it finds of at most `want` blocks for a value: all of them when a
/// run that long is free, else the longest of half as many or more, halving what it asks for
/// down to one block. None when not one block is free.
#[track_caller]
pub(super) fn alloc_run(
    tx: &mut Trans<'_>,
    o: &mut Target<'_>,
    want: u64,
) -> Result<Option<(u64, u64)>, EngineError> {
    debug_assert!(want > 0);
    let mut min = want;
    loop {
        if let Some((s, l)) = o.alloc.alloc(tx, ino_split(o.ino).0, min, want)? {
            o.i.blocks += l;
            return Ok(Some((s, l)));
        }
        if min == 1 {
            return Ok(None);
        }
        min = min.div_ceil(2);
    }
}

/// Writes blocks `k0..k0 + len` of `value` into the run at `start`, in order, each going on in
/// the following one; the last one's `next` is `last_next`: 0 when it ends the value, the next
/// run's first block, or `NEXT_UNWRITTEN` while that run is not written.
#[track_caller]
pub(super) fn write_run(
    tx: &mut Trans<'_>,
    ino: u64,
    value: &[u8],
    k0: u64,
    (start, len): (u64, u64),
    last_next: u64,
) -> Result<(), EngineError> {
    let per = at::remote_payload(tx.block_size() as usize);
    for j in 0..len {
        let k = (k0 + j) as usize;
        let part = &value[k * per..((k + 1) * per).min(value.len())];
        let id = tx.get_buf(start + j, BlockType::AttrRemote, ino)?;
        let mut e = Enc::new(tx.data_mut(id));
        e.u32(at::REMOTE_VALUE_OFF, (k * per) as u32);
        e.u32(at::REMOTE_BYTES_OFF, part.len() as u32);
        e.u64(
            at::REMOTE_NEXT_OFF,
            if j + 1 == len { last_next } else { 0 },
        );
        e.bytes(at::REMOTE_DATA_OFF, part);
        // get_buf logged the whole block.
    }
    Ok(())
}

/// Points remote block `tail`, written in an earlier step, on to `next` (the following block is
/// said with 0).
#[track_caller]
pub(super) fn link(tx: &mut Trans<'_>, ino: u64, tail: u64, next: u64) -> Result<(), EngineError> {
    let id = tx.read_buf(tail, BlockType::AttrRemote)?;
    check_owner(tx.data(id), tail, ino, at::REMOTE_STRUCTURE)?;
    let v = if next == tail + 1 { 0 } else { next };
    Enc::new(tx.data_mut(id)).u64(at::REMOTE_NEXT_OFF, v);
    tx.log_range(id, at::REMOTE_NEXT_OFF..at::REMOTE_NEXT_OFF + 8);
    Ok(())
}

/// Cancels and frees a run of remote blocks.
#[track_caller]
pub(super) fn free_run(
    tx: &mut Trans<'_>,
    o: &mut Target<'_>,
    (s, l): (u64, u64),
) -> Result<(), EngineError> {
    for blk in s..s + l {
        let id = tx.read_buf(blk, BlockType::AttrRemote)?;
        tx.invalidate(id);
    }
    o.alloc.free(tx, s, l)?;
    o.i.blocks -= l;
    Ok(())
}
