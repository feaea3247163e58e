//! The B+tree node layout, a format fact shared by the B+tree code (`btree/node.rs`), the
//! reservation table (tree heights bound the buffers a transaction may change), mkfs and fsck.
//! After the 48-byte metadata block header:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 48 | 2 | level (0: leaf) |
//! | 50 | 2 | nrecs |
//! | 52 | 4 | zero |
//! | 56 | 8 | left sibling (0: none; not maintained yet, written 0) |
//! | 64 | 8 | right sibling (likewise) |
//! | 72 | | leaf: nrecs × (key0 u64, key1 u64, val0 u64, val1 u64); interior: nrecs × (key0, key1, child u64) |

use super::BLOCK_HEADER_BYTES;

/// The tallest B+tree the format allows: with the smallest blocks (512 B: 13 records a leaf,
/// fan-out 18) eight levels index 18^7 x 13 > 8 x 10^9 records, more than any tree here holds.
pub(crate) const BTREE_HEIGHT_MAX: u16 = 8;
/// Offset of the level field.
pub(crate) const OFF_LEVEL: usize = BLOCK_HEADER_BYTES;
/// Offset of the record count.
pub(crate) const OFF_NRECS: usize = BLOCK_HEADER_BYTES + 2;
/// Bytes of a node's headers (block header, level, record count, reserved, both siblings): the
/// first entry starts here.
pub(crate) const BTREE_NODE_HEADER_BYTES: usize = BLOCK_HEADER_BYTES + 24;
/// A leaf record: a two-word key and a two-word value.
pub(crate) const RECORD_BYTES: usize = 32;
/// An interior entry: a two-word key and a child block number.
pub(crate) const ENTRY_BYTES: usize = 16 + 8;

/// Bytes of one entry of a node of `level`.
pub(crate) fn entry_width(level: u16) -> usize {
    if level == 0 {
        RECORD_BYTES
    } else {
        ENTRY_BYTES
    }
}

/// Entries a node of `level` holds in a block of `bs` bytes.
pub(crate) fn capacity(bs: usize, level: u16) -> usize {
    (bs - BTREE_NODE_HEADER_BYTES) / entry_width(level)
}
