//! The on-disk format, version 2: the one definition shared by the mount, mkfs and fsck.
//!
//! Every structure is encoded and decoded explicitly in little-endian byte order, field by field,
//! at fixed offsets that `docs/design.md` lists. Every decode validates what it reads and returns a
//! [`FormatError`] naming the block, the structure and the field that is wrong.

pub mod acl;
pub mod ag;
pub mod attrtree;
mod codec;
pub mod dirblock;
pub(crate) mod entryblock;
pub(crate) mod header;
pub mod inode;
pub mod log;
pub mod name;
pub(crate) mod node;
pub(crate) mod records;
pub(crate) mod superblock;
pub mod xattrblock;

#[cfg(feature = "field-recording")]
pub use codec::record_fields;
pub use codec::FieldRead;
pub(crate) use codec::{plain_fields, Dec, Enc};
pub use header::{BlockHeader, BlockType, BLOCK_HEADER_BYTES};
pub use log::Lsn;
pub use superblock::{Geometry, Superblock};

use std::fmt;

/// Version of the on-disk format this code writes. Version 2 added the attribute hash tree
/// (inode bytes 130-131, block types TKBA, TKXE, TKXR). Version 3 lets a remote value span
/// several runs (a remote block's `next`, zero in version 2) and flags records INCOMPLETE while
/// a value is written or freed over several transactions: a version 2 image is a valid version
/// 3 image, and a version 2 ticketfs would take a version 3 value for damage.
pub const FORMAT_VERSION: u32 = 3;
/// Oldest version this code reads. A version 1 image is a version 2 image whose attributes are
/// all in the one-block form (its inodes' bytes 130-131 are zero, which says so): it is used as
/// it is, and a read-write mount records the current version before it writes anything, after
/// which an older ticketfs refuses it (it cannot read an attribute tree, or a value in runs).
pub const FORMAT_VERSION_OLDEST: u32 = 1;
/// Smallest block size: one disk sector, and room for every header with its payload.
pub(crate) const BLOCK_SIZE_MIN: u32 = 512;
/// Largest block size: region offsets and lengths inside a block are checked against it.
pub(crate) const BLOCK_SIZE_MAX: u32 = 65536;
/// Default block size: the page size, so a block is one page of memory.
pub const BLOCK_SIZE_DEFAULT: u32 = 4096;
/// Length of the filesystem label in the superblock, NUL-padded.
pub(crate) const LABEL_BYTES: usize = 32;
/// Length of the filesystem UUID.
pub(crate) const UUID_BYTES: usize = 16;

/// A filesystem UUID, stamped into every metadata block and log record.
pub type Uuid = [u8; UUID_BYTES];

/// Is `bs` a block size this format supports?
pub(crate) fn block_size_valid(bs: u32) -> bool {
    bs.is_power_of_two() && (BLOCK_SIZE_MIN..=BLOCK_SIZE_MAX).contains(&bs)
}

/// A decode or validation failure, naming where on disk and in which field it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    /// Block number where the bad bytes were read (for log records: the block within the device).
    pub blkno: u64,
    /// Structure being decoded, e.g. "superblock" or "log record header".
    pub(crate) structure: &'static str,
    /// Field that is wrong, e.g. "magic" or "crc".
    pub(crate) field: &'static str,
    /// What was found, and what was expected.
    pub(crate) detail: String,
}

impl FormatError {
    pub(crate) fn new(
        blkno: u64,
        structure: &'static str,
        field: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        FormatError {
            blkno,
            structure,
            field,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "block {}: {}.{}: {}",
            self.blkno, self.structure, self.field, self.detail
        )
    }
}

impl std::error::Error for FormatError {}

/// CRC32 (crc32fast) of `buf` with the four bytes at `crc_off` taken as zero.
pub(crate) fn crc_with_hole(buf: &[u8], crc_off: usize) -> u32 {
    debug_assert!(crc_off + 4 <= buf.len());
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[..crc_off]);
    h.update(&[0u8; 4]);
    h.update(&buf[crc_off + 4..]);
    h.finalize()
}
