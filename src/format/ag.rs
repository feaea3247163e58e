//! The allocation group header: one block at the AG's second block (AG 0's first block is the
//! superblock), holding the AG's counters, the roots of its trees and its free list (AGFL).
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 48 | metadata block header (type TKAG, owner = AG number) |
//! | 48 | 4 | agno |
//! | 52 | 4 | flcount: blocks in the free list |
//! | 56 | 8 | length: blocks in this AG |
//! | 64 | 8 | free_blocks: in the free-space trees (the free list not counted) |
//! | 72 | 8 | longest: longest free extent |
//! | 80 | 8 | bno_root | 88 | 8 | cnt_root | 96 | 8 | ino_root (absolute block numbers) |
//! | 104 | 2 | bno_level | 106 | 2 | cnt_level | 108 | 2 | ino_level | 110 | 2 | zero |
//! | 112 | 8 | inodes | 120 | 8 | free_inodes |
//! | 128 | 4 × 64 | free list: AG-relative block numbers, flcount of them in use |
//! | 384 | 8 | unlinked_root: root of the unlinked-inode tree | 392 | 2 | its level |

use super::{plain_fields, Dec, Enc, FormatError, BLOCK_HEADER_BYTES};

/// Blocks at the start of every AG kept for its headers and first tree roots: +0 superblock
/// (AG 0) or spare, +1 AG header, +2 by-block root, +3 by-length root, +4 inode-chunk root.
pub const AG_RESERVED_BLOCKS: u64 = 8;
pub(crate) const AG_HEADER_OFFSET: u64 = 1;
pub(crate) const AG_BNO_ROOT_OFFSET: u64 = 2;
pub(crate) const AG_CNT_ROOT_OFFSET: u64 = 3;
pub(crate) const AG_INO_ROOT_OFFSET: u64 = 4;
/// First root of the unlinked-inode tree: inodes with no links left, freed at last close or,
/// after a crash, at the next mount.
pub(crate) const AG_UNLINKED_ROOT_OFFSET: u64 = 5;
const OFF_UNLINKED: usize = OFF_AGFL + 4 * AGFL_SLOTS;
/// Free-list slots: enough for the worst single free-space operation twice over (each tree
/// splitting at every level up to the height limit and growing a root: 2 × (8 + 1)), plus room
/// for the blocks freed tree nodes return, and it fits a 512-byte block.
pub(crate) const AGFL_SLOTS: usize = 64;
const OFF_AGFL: usize = 128;
const _: () = assert!(OFF_AGFL + 4 * AGFL_SLOTS + 10 <= super::BLOCK_SIZE_MIN as usize);
const _: () = assert!(BLOCK_HEADER_BYTES == 48);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgHeader {
    pub(crate) agno: u32,
    pub(crate) length: u64,
    pub free_blocks: u64,
    pub longest: u64,
    pub bno_root: u64,
    pub bno_level: u16,
    pub cnt_root: u64,
    pub cnt_level: u16,
    pub(crate) ino_root: u64,
    pub(crate) ino_level: u16,
    pub inodes: u64,
    pub free_inodes: u64,
    pub(crate) unlinked_root: u64,
    pub(crate) unlinked_level: u16,
    /// AG-relative block numbers on the free list.
    pub agfl: Vec<u32>,
}

impl AgHeader {
    plain_fields! {
        length: u64 @ 56,
        free_blocks: u64 @ 64,
        longest: u64 @ 72,
        bno_root: u64 @ 80,
        cnt_root: u64 @ 88,
        ino_root: u64 @ 96,
        bno_level: u16 @ 104,
        cnt_level: u16 @ 106,
        ino_level: u16 @ 108,
        inodes: u64 @ 112,
        free_inodes: u64 @ 120,
        unlinked_root: u64 @ OFF_UNLINKED,
        unlinked_level: u16 @ OFF_UNLINKED + 8,
    }

    /// Encodes the fields after the block header into `block`; returns the byte range written.
    pub(crate) fn encode(&self, block: &mut [u8]) -> std::ops::Range<usize> {
        debug_assert!(self.agfl.len() <= AGFL_SLOTS);
        let mut e = Enc::new(block);
        e.u32(48, self.agno);
        e.u32(52, self.agfl.len() as u32);
        e.u16(110, 0);
        self.encode_fields(&mut e);
        for i in 0..AGFL_SLOTS {
            e.u32(OFF_AGFL + 4 * i, self.agfl.get(i).copied().unwrap_or(0));
        }
        BLOCK_HEADER_BYTES..OFF_UNLINKED + 10
    }

    /// Decodes and checks the header of AG `agno` (starting at `ag_start`, `length` blocks) read
    /// from `blkno`.
    pub fn decode(
        block: &[u8],
        blkno: u64,
        agno: u32,
        ag_start: u64,
        length: u64,
    ) -> Result<AgHeader, FormatError> {
        let d = Dec::new(block, blkno, "AG header");
        let got = d.u32(48, "agno")?;
        if got != agno {
            return Err(d.err("agno", format!("{got}, expected {agno}")));
        }
        let flcount = d.u32(52, "flcount")? as usize;
        if flcount > AGFL_SLOTS {
            return Err(d.err("flcount", format!("{flcount} exceeds {AGFL_SLOTS} slots")));
        }
        let agfl = d.slice_at(OFF_AGFL, 4 * flcount, "agfl")?;
        let mut h = AgHeader {
            agno,
            agfl: agfl
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            ..AgHeader::default()
        };
        h.decode_fields(&d)?;
        if h.length != length {
            return Err(d.err(
                "length",
                format!("{}, the geometry says {length}", h.length),
            ));
        }
        if h.free_blocks > length || h.longest > h.free_blocks {
            return Err(d.err(
                "free_blocks",
                format!(
                    "free {} longest {} in an AG of {length}",
                    h.free_blocks, h.longest
                ),
            ));
        }
        let inside = |b: u64| b > ag_start + AG_HEADER_OFFSET && b < ag_start + length;
        for (field, b) in [
            ("bno_root", h.bno_root),
            ("cnt_root", h.cnt_root),
            ("ino_root", h.ino_root),
            ("unlinked_root", h.unlinked_root),
        ] {
            if !inside(b) {
                return Err(d.err(
                    field,
                    format!(
                        "block {b} is outside the AG's {ag_start}..{}",
                        ag_start + length
                    ),
                ));
            }
        }
        for &r in &h.agfl {
            if (r as u64) < AG_RESERVED_BLOCKS || r as u64 >= length {
                return Err(d.err("agfl", format!("free-list block {r} is outside the AG")));
            }
        }
        Ok(h)
    }
}
