//! Repair, phase 4: every AG's header and trees written anew from what is in use, straight to
//! the device while nothing has the filesystem mounted (xfs_repair's phase 5). Free space is every
//! block of the AG's data area that nothing kept uses; the nodes of the rebuilt trees and the
//! free list come from the top of that free space; the roots go to the AG's reserved blocks.

use super::Bitmap;
use crate::alloc::Allocator;
use crate::btree::bulk;
use crate::btree::{Key, Val};
use crate::device::{AlignedBuf, Device};
use crate::format::ag::{
    AgHeader, AGFL_SLOTS, AG_BNO_ROOT_OFFSET, AG_CNT_ROOT_OFFSET, AG_HEADER_OFFSET,
    AG_INO_ROOT_OFFSET, AG_UNLINKED_ROOT_OFFSET,
};
use crate::format::inode::inodes_per_block;
use crate::format::records::{FreeByBlock, FreeByLen, InoChunk, Unlinked};
use crate::format::{BlockHeader, BlockType, Superblock};
use std::collections::BTreeMap;

/// LSN stamped on rebuilt blocks: the log is empty and clean when they are written, so no
/// checkpoint can be older than them.
const REPAIR_LSN: u64 = 0;

/// Free extents (start, length) of `first..end` not in `used`, leaving out `skip_top` free blocks
/// at the top; and those top blocks.
fn free_extents(used: &Bitmap, first: u64, end: u64, skip_top: u64) -> (Vec<(u64, u64)>, Vec<u64>) {
    let mut top = Vec::new();
    let mut b = end;
    while (top.len() as u64) < skip_top && b > first {
        b -= 1;
        if !used.get(b) {
            top.push(b);
        }
    }
    let limit = b;
    let mut out = Vec::new();
    let mut s = first;
    while s < limit {
        if used.get(s) {
            s += 1;
            continue;
        }
        let mut e = s;
        while e < limit && !used.get(e) {
            e += 1;
        }
        out.push((s, e - s));
        s = e;
    }
    (out, top)
}

/// Rebuilds AG `agno`: `chunks` are its inode chunks (block → mask of slots in use), `unlinked`
/// its orphans. Returns a line on what it wrote.
pub(crate) fn rebuild_ag(
    dev: &dyn Device,
    sb: &Superblock,
    used: &Bitmap,
    agno: u32,
    chunks: &BTreeMap<u64, u64>,
    unlinked: &[u64],
) -> Result<String, String> {
    let g = sb.geometry;
    let bs = g.block_size as usize;
    let alloc = Allocator::new(g);
    let start = alloc.ag_start(agno);
    let (first, end) = alloc.initial_free(agno);
    let ipb = inodes_per_block(g.block_size);
    let all_slots = if ipb >= 64 {
        u64::MAX
    } else {
        (1u64 << ipb) - 1
    };
    let ino_recs: Vec<(Key, Val)> = {
        let mut v: Vec<(Key, Val)> = chunks
            .iter()
            .map(|(&c, &inuse)| {
                let r = InoChunk {
                    chunk: c,
                    free_mask: all_slots & !inuse,
                };
                (r.key(), r.val())
            })
            .collect();
        v.sort_unstable();
        v
    };
    let unl_recs: Vec<(Key, Val)> = unlinked
        .iter()
        .map(|&ino| (Unlinked { ino }.key(), Unlinked { ino }.val()))
        .collect();

    // How many blocks the trees and the free list take: taking them can only lower the number
    // of free extents, so this settles in a few rounds.
    let mut take = 0;
    let mut rounds = 0;
    let (extents, top) = loop {
        let (ext, top) = free_extents(used, first, end, take);
        let n = ext.len();
        let h = bulk::height(bs, n);
        let nodes = 2 * (bulk::nodes_needed(bs, n) - 1)
            + (bulk::nodes_needed(bs, ino_recs.len()) - 1)
            + (bulk::nodes_needed(bs, unl_recs.len()) - 1);
        let need = nodes + Allocator::freelist_target(h, h) as u64;
        let fl_max = (AGFL_SLOTS - Allocator::freelist_need(h, h)) as u64;
        let got = top.len() as u64;
        if got < take {
            return Err(format!(
                "AG {agno}: {got} free blocks cannot hold {nodes} tree nodes and a free list"
            ));
        }
        if take >= need && take - nodes <= fl_max {
            break (ext, top);
        }
        rounds += 1;
        if rounds > 16 {
            return Err(format!("AG {agno}: the tree sizes do not settle"));
        }
        take = need;
    };
    let mut node_blocks = top.iter().copied();
    let bno_recs: Vec<(Key, Val)> = extents
        .iter()
        .map(|&(start, len)| FreeByBlock { start, len })
        .map(|r| (r.key(), r.val()))
        .collect();
    let mut cnt_recs: Vec<(Key, Val)> = extents
        .iter()
        .map(|&(start, len)| FreeByLen { len, start })
        .map(|r| (r.key(), r.val()))
        .collect();
    cnt_recs.sort_unstable();
    let owner = agno as u64;
    let mut writes = Vec::new();
    let mut tree = |btype, recs: &[(Key, Val)], root_off: u64| {
        let stamp = bulk::Stamp {
            btype,
            owner,
            uuid: &sb.uuid,
            lsn: REPAIR_LSN,
        };
        let (root, blocks) = bulk::build(bs, &stamp, recs, start + root_off, &mut node_blocks)?;
        writes.extend(blocks);
        Ok::<_, String>(root)
    };
    let bno = tree(BlockType::BtreeBno, &bno_recs, AG_BNO_ROOT_OFFSET)?;
    let cnt = tree(BlockType::BtreeCnt, &cnt_recs, AG_CNT_ROOT_OFFSET)?;
    let ino = tree(BlockType::BtreeIno, &ino_recs, AG_INO_ROOT_OFFSET)?;
    let unl = tree(BlockType::BtreeIno, &unl_recs, AG_UNLINKED_ROOT_OFFSET)?;
    let agfl: Vec<u32> = node_blocks.map(|b| (b - start) as u32).collect();
    let free_blocks: u64 = extents.iter().map(|e| e.1).sum();
    let hdr = AgHeader {
        agno,
        length: alloc.ag_len(agno),
        free_blocks,
        longest: extents.iter().map(|e| e.1).max().unwrap_or(0),
        bno_root: bno.blkno,
        bno_level: bno.level,
        cnt_root: cnt.blkno,
        cnt_level: cnt.level,
        ino_root: ino.blkno,
        ino_level: ino.level,
        inodes: chunks.len() as u64 * ipb as u64,
        free_inodes: ino_recs.iter().map(|(_, v)| v[0].count_ones() as u64).sum(),
        unlinked_root: unl.blkno,
        unlinked_level: unl.level,
        agfl,
    };
    let hblk = start + AG_HEADER_OFFSET;
    let mut b = AlignedBuf::new(bs);
    BlockHeader::init(&mut b, BlockType::AgHeader, hblk, owner, &sb.uuid);
    hdr.encode(&mut b);
    BlockHeader::stamp(&mut b, REPAIR_LSN);
    writes.push((hblk, b));
    for (blkno, buf) in &writes {
        dev.write(*blkno, buf)
            .map_err(|e| format!("AG {agno}: writing block {blkno}: {e}"))?;
    }
    Ok(format!(
        "AG {agno}: free-space, inode-chunk and unlinked trees rebuilt ({} free extents, {free_blocks} free blocks, {} chunks, {} orphans)",
        extents.len(),
        chunks.len(),
        unlinked.len()
    ))
}
