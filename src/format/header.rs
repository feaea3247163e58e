//! The self-describing metadata block header: every metadata block starts with it, so any block
//! can be judged on its own (by recovery, fsck, or a person with a hex dump).

use super::{crc_with_hole, Dec, Enc, FormatError, Uuid};

/// Bytes of the header at the start of every metadata block.
pub const BLOCK_HEADER_BYTES: usize = 48;
const OFF_MAGIC: usize = 0;
const OFF_CRC: usize = 4;
const OFF_BLKNO: usize = 8;
const OFF_OWNER: usize = 16;
const OFF_LSN: usize = 24;
const OFF_UUID: usize = 32;
const _: () = assert!(OFF_UUID + 16 == BLOCK_HEADER_BYTES);

/// The kinds of metadata block, each with its own magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlockType {
    /// Allocation group header: free-space and inode counters, tree roots.
    AgHeader,
    /// Free-space B+tree node keyed by block number.
    BtreeBno,
    /// Free-space B+tree node keyed by extent length.
    BtreeCnt,
    /// Inode-chunk B+tree node.
    BtreeIno,
    /// File extent-map B+tree node.
    BtreeExtent,
    /// Directory hash B+tree node.
    BtreeDir,
    /// A chunk of on-disk inodes.
    InodeChunk,
    /// A directory data block.
    DirData,
    /// An extended-attribute block.
    Xattr,
    /// A symlink target block.
    Symlink,
    /// Extended-attribute hash B+tree node (an inode's attribute tree).
    BtreeAttr,
    /// Extended-attribute entry block: names and small values of an attribute tree.
    AttrEntries,
    /// Extended-attribute remote value block: part of one value too large for an entry block.
    AttrRemote,
}

impl BlockType {
    pub const ALL: [BlockType; 13] = [
        BlockType::AgHeader,
        BlockType::BtreeBno,
        BlockType::BtreeCnt,
        BlockType::BtreeIno,
        BlockType::BtreeExtent,
        BlockType::BtreeDir,
        BlockType::InodeChunk,
        BlockType::DirData,
        BlockType::Xattr,
        BlockType::Symlink,
        BlockType::BtreeAttr,
        BlockType::AttrEntries,
        BlockType::AttrRemote,
    ];

    /// The magic number: four ASCII letters, "TK" and two naming the type.
    pub(crate) fn magic(self) -> u32 {
        let tag: &[u8; 4] = match self {
            BlockType::AgHeader => b"TKAG",
            BlockType::BtreeBno => b"TKBB",
            BlockType::BtreeCnt => b"TKBC",
            BlockType::BtreeIno => b"TKBI",
            BlockType::BtreeExtent => b"TKBX",
            BlockType::BtreeDir => b"TKBD",
            BlockType::InodeChunk => b"TKIN",
            BlockType::DirData => b"TKDD",
            BlockType::Xattr => b"TKXA",
            BlockType::Symlink => b"TKSL",
            BlockType::BtreeAttr => b"TKBA",
            BlockType::AttrEntries => b"TKXE",
            BlockType::AttrRemote => b"TKXR",
        };
        u32::from_be_bytes(*tag)
    }

    pub(crate) fn from_magic(magic: u32) -> Option<BlockType> {
        BlockType::ALL.into_iter().find(|t| t.magic() == magic)
    }

    pub fn name(self) -> &'static str {
        match self {
            BlockType::AgHeader => "AG header",
            BlockType::BtreeBno => "free-space by-block B+tree node",
            BlockType::BtreeCnt => "free-space by-length B+tree node",
            BlockType::BtreeIno => "inode-chunk B+tree node",
            BlockType::BtreeExtent => "extent-map B+tree node",
            BlockType::BtreeDir => "directory B+tree node",
            BlockType::InodeChunk => "inode chunk",
            BlockType::DirData => "directory data block",
            BlockType::Xattr => "xattr block",
            BlockType::Symlink => "symlink block",
            BlockType::BtreeAttr => "xattr B+tree node",
            BlockType::AttrEntries => "xattr entry block",
            BlockType::AttrRemote => "xattr remote value block",
        }
    }
}

/// The decoded header of a metadata block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeader {
    pub btype: BlockType,
    pub(crate) crc: u32,
    pub blkno: u64,
    pub owner: u64,
    pub lsn: u64,
    pub uuid: Uuid,
}

impl BlockHeader {
    /// Writes a fresh header (LSN 0, CRC not yet computed) at the start of `block`.
    pub fn init(block: &mut [u8], btype: BlockType, blkno: u64, owner: u64, uuid: &Uuid) {
        let mut e = Enc::new(block);
        e.u32(OFF_MAGIC, btype.magic());
        e.u32(OFF_CRC, 0);
        e.u64(OFF_BLKNO, blkno);
        e.u64(OFF_OWNER, owner);
        e.u64(OFF_LSN, 0);
        e.bytes(OFF_UUID, uuid);
    }

    /// The write verifier's last step: stamps the LSN of the last log write that changed the block,
    /// then the CRC over the whole block.
    pub fn stamp(block: &mut [u8], lsn: u64) {
        Enc::new(block).u64(OFF_LSN, lsn);
        let crc = crc_with_hole(block, OFF_CRC);
        Enc::new(block).u32(OFF_CRC, crc);
    }

    /// The LSN field, unverified (recovery reads it only after [`BlockHeader::verify`] passed).
    /// The type a block's magic names, unverified (tools that scan an image).
    pub fn peek_type(block: &[u8]) -> Option<BlockType> {
        let m = Dec::new(block, 0, "block header")
            .u32(OFF_MAGIC, "magic")
            .ok()?;
        BlockType::from_magic(m)
    }

    pub fn peek_lsn(block: &[u8]) -> Result<u64, FormatError> {
        Dec::new(block, 0, "block header").u64(OFF_LSN, "lsn")
    }

    /// The read verifier: CRC first, then the structure. `expect` names the block type the reader
    /// wants (None: any known type); `blkno` is where the block was read from.
    pub fn verify(
        block: &[u8],
        blkno: u64,
        expect: Option<BlockType>,
        uuid: &Uuid,
    ) -> Result<BlockHeader, FormatError> {
        let structure = expect.map_or("metadata block header", BlockType::name);
        let d = Dec::new(block, blkno, structure);
        if block.len() < BLOCK_HEADER_BYTES {
            return Err(d.err(
                "length",
                format!("{} bytes is shorter than the header", block.len()),
            ));
        }
        let magic = d.u32(OFF_MAGIC, "magic")?;
        let btype = BlockType::from_magic(magic)
            .ok_or_else(|| d.err("magic", format!("{magic:#010x} is no metadata block type")))?;
        if let Some(want) = expect {
            if btype != want {
                return Err(d.err(
                    "magic",
                    format!("{} found where {} was expected", btype.name(), want.name()),
                ));
            }
        }
        let crc = d.u32(OFF_CRC, "crc")?;
        let want = crc_with_hole(block, OFF_CRC);
        if crc != want {
            return Err(d.err("crc", format!("stored {crc:#010x}, computed {want:#010x}")));
        }
        let stored = d.u64(OFF_BLKNO, "blkno")?;
        if stored != blkno {
            return Err(d.err(
                "blkno",
                format!("block claims to be {stored} (misdirected write)"),
            ));
        }
        let got_uuid: Uuid = d.bytes(OFF_UUID, "uuid")?;
        if &got_uuid != uuid {
            return Err(d.err("uuid", "belongs to another filesystem"));
        }
        Ok(BlockHeader {
            btype,
            crc,
            blkno: stored,
            owner: d.u64(OFF_OWNER, "owner")?,
            lsn: d.u64(OFF_LSN, "lsn")?,
            uuid: got_uuid,
        })
    }
}
