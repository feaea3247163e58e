//! Building a whole tree at once from sorted records, outside any transaction: fsck's repair
//! rebuilds every AG's trees this way (as xfs_repair's phase 5 does), writing the nodes straight
//! to the device while nothing else has the filesystem.
//!
//! Leaves are filled to `BULK_FILL_PERCENT` of their capacity, so the first inserts after a
//! repair do not all split; each level above holds (first key, child) of the level below; the
//! single node at the top is the root, written at the block the caller names (an AG keeps its
//! first roots in its reserved blocks). Every other node takes the next block the caller gives.

use super::node::{capacity, Node};
use super::{Entry, Key, Root, Val, BTREE_HEIGHT_MAX};
use crate::device::AlignedBuf;
use crate::format::{BlockHeader, BlockType, Uuid};

/// How full a bulk-built node is made (the rest is room for later inserts).
pub(crate) const BULK_FILL_PERCENT: usize = 75;

/// Entries per node of `level` in a bulk build (at least 2, so every level shrinks).
fn per_node(bs: usize, level: u16) -> usize {
    (capacity(bs, level) * BULK_FILL_PERCENT / 100).max(2)
}

/// Nodes at each level, leaves first, for `n` records: the last level has one node, the root.
fn shape(bs: usize, n: usize) -> Vec<usize> {
    let mut levels = vec![n.div_ceil(per_node(bs, 0)).max(1)];
    while let Some(&top) = levels.last().filter(|&&t| t > 1) {
        let level = levels.len() as u16;
        levels.push(top.div_ceil(per_node(bs, level)));
    }
    levels
}

/// Blocks a tree of `n` records takes, its root included.
pub fn nodes_needed(bs: usize, n: usize) -> u64 {
    shape(bs, n).iter().sum::<usize>() as u64
}

/// The root's level for a tree of `n` records.
pub fn height(bs: usize, n: usize) -> u16 {
    (shape(bs, n).len() - 1) as u16
}

/// What every node's block header says: its type, owner, filesystem and LSN.
pub struct Stamp<'a> {
    pub btype: BlockType,
    pub owner: u64,
    pub uuid: &'a Uuid,
    pub lsn: u64,
}

/// The nodes of a tree holding `records` (strictly increasing keys), each block's header made
/// for `btype` and `owner` and stamped with `lsn`: the root at `root_blkno`, the others at the
/// blocks `more` yields (exactly `nodes_needed - 1` are taken). Returns the root and every
/// (block number, block).
pub fn build(
    bs: usize,
    stamp: &Stamp<'_>,
    records: &[(Key, Val)],
    root_blkno: u64,
    more: &mut dyn Iterator<Item = u64>,
) -> Result<(Root, Vec<(u64, AlignedBuf)>), String> {
    debug_assert!(records.windows(2).all(|w| w[0].0 < w[1].0));
    let levels = shape(bs, records.len());
    if levels.len() > BTREE_HEIGHT_MAX as usize {
        return Err(format!(
            "{} records need a tree of {} levels, above the limit {BTREE_HEIGHT_MAX}",
            records.len(),
            levels.len()
        ));
    }
    let mut out: Vec<(u64, AlignedBuf)> = Vec::new();
    let mut below: Vec<Entry> = records.iter().map(|&(k, v)| Entry::Leaf(k, v)).collect();
    for (level, &count) in levels.iter().enumerate() {
        let level = level as u16;
        let top = level as usize == levels.len() - 1;
        let mut above = Vec::with_capacity(count);
        // Spread the entries evenly over exactly `count` nodes (an empty tree is one empty leaf).
        let (base, extra) = (below.len() / count, below.len() % count);
        let mut at = 0;
        for i in 0..count {
            let n = base + usize::from(i < extra);
            let group = &below[at..at + n];
            at += n;
            let blkno = if top {
                root_blkno
            } else {
                more.next()
                    .ok_or_else(|| "ran out of blocks for tree nodes".to_string())?
            };
            let mut b = AlignedBuf::new(bs);
            BlockHeader::init(&mut b, stamp.btype, blkno, stamp.owner, stamp.uuid);
            Node::encode(&mut b, level, group);
            BlockHeader::stamp(&mut b, stamp.lsn);
            let first: Key = group.first().map_or([0, 0], Entry::key);
            above.push(Entry::Node(first, blkno));
            out.push((blkno, b));
        }
        below = above;
    }
    Ok((
        Root {
            blkno: root_blkno,
            level: (levels.len() - 1) as u16,
        },
        out,
    ))
}
