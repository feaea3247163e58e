//! The records of every B+tree, typed: how each tree's (key, value) pairs of two u64s each are
//! laid out, and the one check of a record read from disk. The allocator, the file and directory
//! layers, the checker and the repairer's bulk builder all encode and decode through these, so a
//! tree's layout is written once.
//!
//! | tree | key | value |
//! |---|---|---|
//! | free space by block (TKBB) | (start, 0) | (length, 0) |
//! | free space by length (TKBC) | (length, start) | (0, 0) |
//! | inode chunks (TKBI) | (0, chunk block) with free slots, (1, chunk block) full | (free-slot mask, 0); full: (0, 0) |
//! | unlinked inodes (TKBI, own root) | (inode, 0) | (0, 0) |
//! | file extents (TKBE) | (file block, 0) | (start, length \| flags << 32) |
//! | directory entries (TKBD) | (name hash, collision index) | (inode, name block << 16 \| offset) |
//! | attributes (TKBA) | (name hash, collision index) | (entry block << 16 \| offset, 0) |

use super::inode::Extent;

/// A key or value as the B+tree stores it.
pub(crate) type Pair = [u64; 2];

/// What is wrong with a record, for the caller's error (which names the tree and its block).
pub(crate) type RecordProblem = String;

fn zero(what: &str, x: u64) -> Result<(), RecordProblem> {
    if x == 0 {
        Ok(())
    } else {
        Err(format!("{what} is {x:#x}, expected 0"))
    }
}

/// A free extent in the by-block tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FreeByBlock {
    pub(crate) start: u64,
    pub(crate) len: u64,
}

impl FreeByBlock {
    /// The key that searches for extents around block `start`.
    pub(crate) fn search(start: u64) -> Pair {
        [start, 0]
    }
    pub(crate) fn key(&self) -> Pair {
        [self.start, 0]
    }
    pub(crate) fn val(&self) -> Pair {
        [self.len, 0]
    }
    pub(crate) fn decode(k: Pair, v: Pair) -> Result<Self, RecordProblem> {
        zero("key[1]", k[1])?;
        zero("value[1]", v[1])?;
        if v[0] == 0 || k[0].checked_add(v[0]).is_none() {
            return Err(format!("free extent {}+{} is empty or wraps", k[0], v[0]));
        }
        Ok(FreeByBlock {
            start: k[0],
            len: v[0],
        })
    }
}

/// A free extent in the by-length tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FreeByLen {
    pub(crate) len: u64,
    pub(crate) start: u64,
}

impl FreeByLen {
    /// The key that searches for extents of at least `len` blocks.
    pub(crate) fn search(len: u64) -> Pair {
        [len, 0]
    }
    /// The key past every record: searching below it finds the longest extent.
    pub(crate) const LAST: Pair = [u64::MAX, u64::MAX];
    pub(crate) fn key(&self) -> Pair {
        [self.len, self.start]
    }
    pub(crate) fn val(&self) -> Pair {
        [0, 0]
    }
    /// Decodes the key alone (searches return the value too, which says nothing).
    pub(crate) fn from_key(k: Pair) -> Self {
        FreeByLen {
            len: k[0],
            start: k[1],
        }
    }
    pub(crate) fn decode(k: Pair, v: Pair) -> Result<Self, RecordProblem> {
        zero("value[0]", v[0])?;
        zero("value[1]", v[1])?;
        if k[0] == 0 || k[1].checked_add(k[0]).is_none() {
            return Err(format!("free extent {}+{} is empty or wraps", k[1], k[0]));
        }
        Ok(Self::from_key(k))
    }
}

/// An inode chunk: its block and the mask of its free slots (zero: full).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InoChunk {
    pub(crate) chunk: u64,
    pub(crate) free_mask: u64,
}

impl InoChunk {
    const HAS_FREE: u64 = 0;
    const FULL: u64 = 1;
    /// The first key of the chunks with a free slot.
    pub(crate) const FIRST_WITH_FREE: Pair = [Self::HAS_FREE, 0];
    /// The key chunk `chunk` has while it has a free slot, and while it is full.
    pub(crate) fn key_with_free(chunk: u64) -> Pair {
        [Self::HAS_FREE, chunk]
    }
    pub(crate) fn key_full(chunk: u64) -> Pair {
        [Self::FULL, chunk]
    }
    pub(crate) fn key(&self) -> Pair {
        if self.free_mask == 0 {
            Self::key_full(self.chunk)
        } else {
            Self::key_with_free(self.chunk)
        }
    }
    pub(crate) fn val(&self) -> Pair {
        [self.free_mask, 0]
    }
    /// Whether `k` is the key of a chunk with a free slot.
    pub(crate) fn has_free(k: Pair) -> bool {
        k[0] == Self::HAS_FREE
    }
    /// `slots`: inodes per chunk (the mask has no bit beyond them).
    pub(crate) fn decode(k: Pair, v: Pair, slots: usize) -> Result<Self, RecordProblem> {
        zero("value[1]", v[1])?;
        let all = if slots >= 64 {
            u64::MAX
        } else {
            (1u64 << slots) - 1
        };
        match k[0] {
            Self::HAS_FREE if v[0] == 0 => Err(format!(
                "chunk {} is filed as having a free slot, with none",
                k[1]
            )),
            Self::HAS_FREE if v[0] & !all != 0 => Err(format!(
                "chunk {} has free-slot mask {:#x}, beyond its {slots} slots",
                k[1], v[0]
            )),
            Self::HAS_FREE => Ok(InoChunk {
                chunk: k[1],
                free_mask: v[0],
            }),
            Self::FULL => {
                zero("value[0] of a full chunk", v[0])?;
                Ok(InoChunk {
                    chunk: k[1],
                    free_mask: 0,
                })
            }
            other => Err(format!(
                "chunk {} has key kind {other}, expected 0 or 1",
                k[1]
            )),
        }
    }
}

/// An inode on its AG's unlinked tree (no links, still open or not yet freed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unlinked {
    pub(crate) ino: u64,
}

impl Unlinked {
    pub(crate) fn key(&self) -> Pair {
        [self.ino, 0]
    }
    pub(crate) fn val(&self) -> Pair {
        [0, 0]
    }
    pub(crate) fn decode(k: Pair, v: Pair) -> Result<Self, RecordProblem> {
        zero("key[1]", k[1])?;
        zero("value[0]", v[0])?;
        zero("value[1]", v[1])?;
        Ok(Unlinked { ino: k[0] })
    }
}

/// A file extent in an extent tree (its placement is `Geometry::extent_problem`'s to judge).
pub(crate) struct ExtentRec;

impl ExtentRec {
    pub(crate) fn key(e: &Extent) -> Pair {
        [e.file_block, 0]
    }
    pub(crate) fn val(e: &Extent) -> Pair {
        [e.start, e.len as u64 | (e.flags as u64) << 32]
    }
    pub(crate) fn decode(k: Pair, v: Pair) -> Result<Extent, RecordProblem> {
        zero("key[1]", k[1])?;
        Ok(Extent {
            file_block: k[0],
            start: v[0],
            len: v[1] as u32,
            flags: (v[1] >> 32) as u32,
        })
    }
}

/// A directory entry in a directory's hash tree: the name's hash and collision index, the
/// inode, and where the name is (`super::dirblock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DirRec {
    pub(crate) hash: u64,
    pub(crate) index: u64,
    pub(crate) ino: u64,
    pub(crate) name_block: u64,
    pub(crate) name_off: usize,
}

impl DirRec {
    /// Name locations pack the block and the offset in it: offsets below 64 KiB (the largest
    /// block).
    const OFF_BITS: u32 = 16;
    pub(crate) fn name_ref(block: u64, off: usize) -> u64 {
        debug_assert!(off < 1 << Self::OFF_BITS && block < 1 << (64 - Self::OFF_BITS));
        block << Self::OFF_BITS | off as u64
    }
    /// (name block, offset) of a name location.
    pub(crate) fn split_ref(r: u64) -> (u64, usize) {
        (
            r >> Self::OFF_BITS,
            (r & ((1 << Self::OFF_BITS) - 1)) as usize,
        )
    }
    /// `collisions`: how many names of one hash a directory may hold.
    pub(crate) fn decode(k: Pair, v: Pair, collisions: u64) -> Result<Self, RecordProblem> {
        if k[0] > u32::MAX as u64 {
            return Err(format!("name hash {:#x} is wider than 32 bits", k[0]));
        }
        if k[1] >= collisions {
            return Err(format!("collision index {} is past {collisions}", k[1]));
        }
        let (name_block, name_off) = Self::split_ref(v[1]);
        Ok(DirRec {
            hash: k[0],
            index: k[1],
            ino: v[0],
            name_block,
            name_off,
        })
    }
}

/// An attribute in an inode's attribute hash tree: the name's hash and collision index, and where
/// its record is (`super::attrtree`), packed as a directory's name location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AttrRec {
    pub(crate) hash: u64,
    pub(crate) index: u64,
    pub(crate) block: u64,
    pub(crate) off: usize,
}

impl AttrRec {
    pub(crate) fn key(&self) -> Pair {
        [self.hash, self.index]
    }
    pub(crate) fn val(&self) -> Pair {
        [DirRec::name_ref(self.block, self.off), 0]
    }
    pub(crate) fn decode(k: Pair, v: Pair) -> Result<Self, RecordProblem> {
        if k[0] > u32::MAX as u64 {
            return Err(format!("name hash {:#x} is wider than 32 bits", k[0]));
        }
        let collisions = super::attrtree::XATTR_COLLISIONS_MAX;
        if k[1] >= collisions {
            return Err(format!("collision index {} is past {collisions}", k[1]));
        }
        zero("value[1]", v[1])?;
        let (block, off) = DirRec::split_ref(v[0]);
        if block == 0 {
            return Err("entry block is 0".into());
        }
        Ok(AttrRec {
            hash: k[0],
            index: k[1],
            block,
            off,
        })
    }
}
