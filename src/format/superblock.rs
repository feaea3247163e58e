//! The superblock: geometry and identity of a filesystem. The primary copy is in block 0, the
//! backup in the last block of the device, so damage to the start of the device leaves one copy.

use super::{
    block_size_valid, crc_with_hole, Dec, Enc, FormatError, Uuid, FORMAT_VERSION,
    FORMAT_VERSION_OLDEST, LABEL_BYTES,
};

/// "TKSB".
pub(crate) const SB_MAGIC: u32 = 0x544B_5342;
/// Bytes of the superblock that carry fields; the rest of the block is zero and covered by the CRC.
pub(crate) const SB_BYTES: usize = 144;
/// Fewest blocks a filesystem may have: superblock, AG header area, a log and room for metadata.
pub(crate) const BLOCK_COUNT_MIN: u64 = 64;
/// First block of the internal log: blocks 1..LOG_START are reserved for allocation group 0's
/// headers (filled in by the allocator's format).
pub(crate) const LOG_START_BLOCK: u64 = 8;
/// Smallest log in blocks the format accepts at all; the mount also requires the log to be at
/// least [`crate::resv::ResvTable::min_log_blocks`] for its geometry.
pub(crate) const LOG_BLOCKS_MIN: u64 = 16;
/// Fewest free blocks an AG must start with (after its headers, and in AG 0 the log).
pub(crate) const AG_MIN_FREE_BLOCKS: u64 = 16;
/// Most allocation groups: bounds per-AG state held in memory.
pub(crate) const AG_COUNT_MAX: u32 = 1024;

/// Value of `state` when the filesystem was unmounted cleanly (log empty).
pub(crate) const SB_STATE_CLEAN: u32 = 1;
/// Value of `state` while mounted or after a crash (the log may need replay).
pub(crate) const SB_STATE_DIRTY: u32 = 0;

// Field offsets (docs/design.md, "Superblock").
const OFF_MAGIC: usize = 0;
const OFF_CRC: usize = 4;
const OFF_VERSION: usize = 8;
const OFF_BLOCK_SIZE: usize = 12;
const OFF_FEAT_COMPAT: usize = 16;
const OFF_FEAT_INCOMPAT: usize = 24;
const OFF_UUID: usize = 32;
const OFF_LABEL: usize = 48;
const OFF_BLOCK_COUNT: usize = 80;
const OFF_AG_COUNT: usize = 88;
const OFF_AG_BLOCKS: usize = 96;
const OFF_LOG_START: usize = 104;
const OFF_LOG_BLOCKS: usize = 112;
const OFF_ROOT_INO: usize = 120;
const OFF_STATE: usize = 128;
const OFF_SB_BLKNO: usize = 136;
const _: () = assert!(OFF_SB_BLKNO + 8 == SB_BYTES);
const _: () = assert!(SB_BYTES <= super::BLOCK_SIZE_MIN as usize);

/// Incompatible features this code understands (none yet in version 1).
pub(crate) const FEATURES_INCOMPAT_KNOWN: u64 = 0;

/// The layout of a filesystem: everything needed to find the log and the allocation groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub block_size: u32,
    pub block_count: u64,
    pub ag_count: u32,
    pub ag_blocks: u64,
    pub log_start: u64,
    pub log_blocks: u64,
}

impl Geometry {
    /// Lays out a filesystem of `block_count` blocks with a log of `log_blocks` and `ag_count` AGs.
    pub fn new(
        block_size: u32,
        block_count: u64,
        log_blocks: u64,
        ag_count: u32,
    ) -> Result<Geometry, String> {
        if !block_size_valid(block_size) {
            return Err(format!(
                "block size {block_size} is not a power of two in 512..=65536"
            ));
        }
        if block_count < BLOCK_COUNT_MIN {
            return Err(format!(
                "{block_count} blocks is fewer than the minimum {BLOCK_COUNT_MIN}"
            ));
        }
        if ag_count == 0 || ag_count > AG_COUNT_MAX {
            return Err(format!("AG count {ag_count} is outside 1..={AG_COUNT_MAX}"));
        }
        let ag_blocks = block_count.div_ceil(ag_count as u64);
        let g = Geometry {
            block_size,
            block_count,
            ag_count,
            ag_blocks,
            log_start: LOG_START_BLOCK,
            log_blocks,
        };
        g.check().map_err(|(_, d)| d)?;
        Ok(g)
    }

    /// Block number of the backup superblock.
    pub fn backup_sb_blkno(&self) -> u64 {
        self.block_count - 1
    }

    /// One past the last block of the log.
    pub fn log_end(&self) -> u64 {
        // Saturating: a decoded geometry is checked to keep it inside AG 0; this keeps the
        // arithmetic on an unchecked one (a damaged copy being judged) from overflowing.
        self.log_start.saturating_add(self.log_blocks)
    }

    /// First block after the log: where metadata outside the AG headers may live.
    pub fn first_free_block(&self) -> u64 {
        self.log_end()
    }

    /// The AG that block `b` lies in (the last AG for blocks past the others).
    pub(crate) fn agno_of(&self, b: u64) -> u32 {
        ((b / self.ag_blocks) as u32).min(self.ag_count.saturating_sub(1))
    }

    /// The blocks AG `agno` hands out: after its reserved blocks (header and tree roots, see
    /// `ag::AG_RESERVED_BLOCKS`) and in AG 0 after the log, before the backup superblock in the
    /// last AG. File data, extent-map, directory, xattr and symlink blocks and inode chunks
    /// live only here; fsck, repair and the file layer all judge an address by this.
    pub(crate) fn ag_data_range(&self, agno: u32) -> std::ops::Range<u64> {
        let start = agno as u64 * self.ag_blocks;
        let len = self.ag_blocks.min(self.block_count.saturating_sub(start));
        let mut first = start + super::ag::AG_RESERVED_BLOCKS;
        if agno == 0 {
            first = first.max(self.log_end());
        }
        let mut end = start + len;
        if agno + 1 == self.ag_count {
            end = end.saturating_sub(1);
        }
        first..end.max(first)
    }

    /// Whether block `b` is one an allocation could have handed out.
    pub(crate) fn in_data_area(&self, b: u64) -> bool {
        b < self.block_count && self.ag_data_range(self.agno_of(b)).contains(&b)
    }

    /// What block `b` is when it is outside every data area, for messages.
    pub(crate) fn reserved_role(&self, b: u64) -> String {
        if b >= self.block_count {
            format!(
                "past the end of the filesystem ({} blocks)",
                self.block_count
            )
        } else if b == 0 || b == self.backup_sb_blkno() {
            "a superblock".to_string()
        } else if (self.log_start..self.log_end()).contains(&b) {
            "a log block".to_string()
        } else if self.in_data_area(b) {
            "in the data area".to_string()
        } else {
            format!(
                "a reserved block of AG {} (header or tree root)",
                self.agno_of(b)
            )
        }
    }

    /// Why extent `e` cannot be a file's: empty, wrapping, or not wholly inside one AG's data
    /// area. The one rule for the mount, fsck -n and fsck -y.
    pub(crate) fn extent_problem(&self, e: &super::inode::Extent) -> Option<String> {
        if e.len == 0 {
            return Some(format!("extent at file block {} is empty", e.file_block));
        }
        if e.file_block.checked_add(e.len as u64).is_none() {
            return Some(format!(
                "extent at file block {} ({} blocks) runs past the largest file block",
                e.file_block, e.len
            ));
        }
        if e.flags & !super::inode::EXTENT_FLAGS_KNOWN != 0 {
            return Some(format!(
                "extent at file block {} has unknown flags {:#x}",
                e.file_block, e.flags
            ));
        }
        let last = e.start.checked_add(e.len as u64 - 1);
        let Some(last) = last else {
            return Some(format!(
                "extent at file block {} ({}+{}) wraps past the largest block number",
                e.file_block, e.start, e.len
            ));
        };
        if !self.in_data_area(e.start) {
            return Some(format!(
                "extent at file block {} ({}+{}) starts at {}",
                e.file_block,
                e.start,
                e.len,
                self.reserved_role(e.start)
            ));
        }
        if !self.ag_data_range(self.agno_of(e.start)).contains(&last) {
            return Some(format!(
                "extent at file block {} ({}+{}) runs out of its AG's data area",
                e.file_block, e.start, e.len
            ));
        }
        None
    }

    /// Checks the relations between fields; returns the offending field and a description.
    fn check(&self) -> Result<(), (&'static str, String)> {
        if !block_size_valid(self.block_size) {
            return Err((
                "block_size",
                format!("{} is not a power of two in 512..=65536", self.block_size),
            ));
        }
        if self.block_count < BLOCK_COUNT_MIN {
            return Err((
                "block_count",
                format!(
                    "{} is below the minimum {}",
                    self.block_count, BLOCK_COUNT_MIN
                ),
            ));
        }
        if self.ag_count == 0 || self.ag_count > AG_COUNT_MAX {
            return Err((
                "ag_count",
                format!("{} is outside 1..={}", self.ag_count, AG_COUNT_MAX),
            ));
        }
        let covered = (self.ag_count as u64).checked_mul(self.ag_blocks);
        if self.ag_blocks == 0
            || covered
                .is_none_or(|c| c < self.block_count || c - self.block_count >= self.ag_blocks)
        {
            return Err((
                "ag_blocks",
                format!(
                    "{} x {} does not cover {} blocks",
                    self.ag_count, self.ag_blocks, self.block_count
                ),
            ));
        }
        if self.log_start != LOG_START_BLOCK {
            return Err((
                "log_start",
                format!("{} is not {}", self.log_start, LOG_START_BLOCK),
            ));
        }
        if self.log_blocks < LOG_BLOCKS_MIN {
            return Err((
                "log_blocks",
                format!(
                    "{} is below the minimum {}",
                    self.log_blocks, LOG_BLOCKS_MIN
                ),
            ));
        }
        if self.ag_blocks > u32::MAX as u64 {
            return Err((
                "ag_blocks",
                format!(
                    "{} exceeds {} (AG-relative block numbers are 32-bit)",
                    self.ag_blocks,
                    u32::MAX
                ),
            ));
        }
        if self
            .log_start
            .checked_add(self.log_blocks)
            .and_then(|e| e.checked_add(AG_MIN_FREE_BLOCKS))
            .is_none_or(|need| need > self.ag_blocks)
        {
            return Err((
                "log_blocks",
                format!(
                    "log end {} leaves AG 0 ({} blocks) without room",
                    self.log_end(),
                    self.ag_blocks
                ),
            ));
        }
        let last_ag = self.block_count - (self.ag_count as u64 - 1) * self.ag_blocks;
        if last_ag < super::ag::AG_RESERVED_BLOCKS + AG_MIN_FREE_BLOCKS + 1 {
            return Err((
                "ag_count",
                format!("the last AG would have only {last_ag} blocks"),
            ));
        }
        if self.log_end() > self.block_count / 2 + LOG_START_BLOCK {
            return Err((
                "log_blocks",
                format!(
                    "log end {} leaves less than half of {} blocks",
                    self.log_end(),
                    self.block_count
                ),
            ));
        }
        Ok(())
    }
}

/// The superblock as decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub geometry: Geometry,
    pub(crate) features_compat: u64,
    pub(crate) features_incompat: u64,
    pub uuid: Uuid,
    pub label: [u8; LABEL_BYTES],
    pub(crate) root_ino: u64,
    pub(crate) state: u32,
    /// The format version on disk (`FORMAT_VERSION_OLDEST..=FORMAT_VERSION`): written back as
    /// read, so only a read-write mount's explicit upgrade (`Engine::upgrade_format`) moves it.
    pub(crate) version: u32,
}

impl Superblock {
    pub fn new(geometry: Geometry, uuid: Uuid, label: &str) -> Superblock {
        let mut l = [0u8; LABEL_BYTES];
        let n = label.len().min(LABEL_BYTES);
        l[..n].copy_from_slice(&label.as_bytes()[..n]);
        Superblock {
            geometry,
            features_compat: 0,
            features_incompat: 0,
            uuid,
            label: l,
            root_ino: 0,
            state: SB_STATE_CLEAN,
            version: FORMAT_VERSION,
        }
    }

    /// The label as text, up to its first NUL.
    pub fn label_str(&self) -> String {
        let end = self
            .label
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(LABEL_BYTES);
        String::from_utf8_lossy(&self.label[..end]).into_owned()
    }

    /// Encodes into a whole block (`buf.len()` = block size) stored at `blkno`, CRC last.
    /// Recomputes the CRC of the superblock copy in `buf` after an edit, so only the meaning of
    /// what was edited is wrong (damage tests and the field fuzzer).
    pub fn reseal(buf: &mut [u8]) {
        let crc = crc_with_hole(buf, OFF_CRC);
        Enc::new(buf).u32(OFF_CRC, crc);
    }

    pub fn encode(&self, buf: &mut [u8], blkno: u64) {
        let g = &self.geometry;
        debug_assert_eq!(buf.len(), g.block_size as usize);
        debug_assert!(blkno == 0 || blkno == g.backup_sb_blkno());
        buf.fill(0);
        let mut e = Enc::new(buf);
        e.u32(OFF_MAGIC, SB_MAGIC);
        e.u32(OFF_VERSION, self.version);
        e.u32(OFF_BLOCK_SIZE, g.block_size);
        e.u64(OFF_FEAT_COMPAT, self.features_compat);
        e.u64(OFF_FEAT_INCOMPAT, self.features_incompat);
        e.bytes(OFF_UUID, &self.uuid);
        e.bytes(OFF_LABEL, &self.label);
        e.u64(OFF_BLOCK_COUNT, g.block_count);
        e.u32(OFF_AG_COUNT, g.ag_count);
        e.u64(OFF_AG_BLOCKS, g.ag_blocks);
        e.u64(OFF_LOG_START, g.log_start);
        e.u64(OFF_LOG_BLOCKS, g.log_blocks);
        e.u64(OFF_ROOT_INO, self.root_ino);
        e.u32(OFF_STATE, self.state);
        e.u64(OFF_SB_BLKNO, blkno);
        let crc = crc_with_hole(buf, OFF_CRC);
        Enc::new(buf).u32(OFF_CRC, crc);
    }

    /// Decodes and validates a superblock read from `blkno`. `buf` must hold at least one block of
    /// the size the superblock claims; a shorter buffer is an error naming `block_size`.
    pub fn decode(buf: &[u8], blkno: u64) -> Result<Superblock, FormatError> {
        const S: &str = "superblock";
        let d = Dec::new(buf, blkno, S);
        d.expect_u32(d.u32(OFF_MAGIC, "magic")?, SB_MAGIC, "magic")?;
        let block_size = d.u32(OFF_BLOCK_SIZE, "block_size")?;
        if !block_size_valid(block_size) {
            return Err(d.err(
                "block_size",
                format!("{block_size} is not a power of two in 512..=65536"),
            ));
        }
        if buf.len() < block_size as usize {
            return Err(d.err(
                "block_size",
                format!("{} bytes read, block size claims {}", buf.len(), block_size),
            ));
        }
        let block = &buf[..block_size as usize];
        let crc = d.u32(OFF_CRC, "crc")?;
        let want = crc_with_hole(block, OFF_CRC);
        if crc != want {
            return Err(d.err("crc", format!("stored {crc:#010x}, computed {want:#010x}")));
        }
        let version = d.u32(OFF_VERSION, "version")?;
        if !(FORMAT_VERSION_OLDEST..=FORMAT_VERSION).contains(&version) {
            return Err(d.err(
                "version",
                format!(
                    "{version}, this code reads versions {FORMAT_VERSION_OLDEST} to \
                     {FORMAT_VERSION}: use a ticketfs that knows version {version}"
                ),
            ));
        }
        let features_incompat = d.u64(OFF_FEAT_INCOMPAT, "features_incompat")?;
        if features_incompat & !FEATURES_INCOMPAT_KNOWN != 0 {
            return Err(d.err(
                "features_incompat",
                format!("unknown features {features_incompat:#x}"),
            ));
        }
        let geometry = Geometry {
            block_size,
            block_count: d.u64(OFF_BLOCK_COUNT, "block_count")?,
            ag_count: d.u32(OFF_AG_COUNT, "ag_count")?,
            ag_blocks: d.u64(OFF_AG_BLOCKS, "ag_blocks")?,
            log_start: d.u64(OFF_LOG_START, "log_start")?,
            log_blocks: d.u64(OFF_LOG_BLOCKS, "log_blocks")?,
        };
        geometry
            .check()
            .map_err(|(field, detail)| d.err(field, detail))?;
        let stored_blkno = d.u64(OFF_SB_BLKNO, "sb_blkno")?;
        if stored_blkno != blkno {
            return Err(d.err(
                "sb_blkno",
                format!("says {stored_blkno}, read from {blkno}"),
            ));
        }
        if blkno != 0 && blkno != geometry.backup_sb_blkno() {
            return Err(d.err(
                "sb_blkno",
                format!(
                    "{blkno} is neither 0 nor the backup {}",
                    geometry.backup_sb_blkno()
                ),
            ));
        }
        let state = d.u32(OFF_STATE, "state")?;
        if state != SB_STATE_CLEAN && state != SB_STATE_DIRTY {
            return Err(d.err(
                "state",
                format!("{state} is neither clean (1) nor dirty (0)"),
            ));
        }
        let uuid: Uuid = d.bytes(OFF_UUID, "uuid")?;
        if uuid == [0u8; 16] {
            return Err(d.err("uuid", "is all zero"));
        }
        Ok(Superblock {
            geometry,
            features_compat: d.u64(OFF_FEAT_COMPAT, "features_compat")?,
            features_incompat,
            uuid,
            label: d.bytes(OFF_LABEL, "label")?,
            root_ino: d.u64(OFF_ROOT_INO, "root_ino")?,
            state,
            version,
        })
    }
}
