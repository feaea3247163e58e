//! Log formats: LSNs, the log record header, the commit record, and the logged-item stream.
//!
//! A checkpoint is written as one or more data records followed by one commit record. The data
//! records carry, back to back, the checkpoint's item stream (which may split anywhere between
//! records); the commit record names the checkpoint, how many data records and items it has, and
//! the CRC of the whole stream. Recovery replays a checkpoint only when all of it reads back valid.

use super::{crc_with_hole, BlockType, Dec, Enc, FormatError, Uuid};
use std::fmt;

/// A log sequence number: the cycle (how many times the log has wrapped, from 1) in the high 32
/// bits and the block offset within the log in the low 32 bits, so LSNs order as u64s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    pub fn new(cycle: u32, block: u32) -> Lsn {
        Lsn(((cycle as u64) << 32) | block as u64)
    }
    pub(crate) fn cycle(self) -> u32 {
        (self.0 >> 32) as u32
    }
    pub fn block(self) -> u32 {
        self.0 as u32
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.cycle(), self.block())
    }
}

/// "TKLR".
pub const LOG_RECORD_MAGIC: u32 = 0x544B_4C52;
pub(crate) const LOG_RECORD_VERSION: u16 = 1;
/// Bytes of the record header at the start of a record's first block; the payload follows.
pub const LOG_RECORD_HEADER_BYTES: usize = 80;
/// A record's payload is at most this many bytes; a larger checkpoint is split into records. It
/// bounds the buffer a reader needs for one record.
pub(crate) const LOG_RECORD_PAYLOAD_MAX: usize = 256 * 1024;
/// A checkpoint sequence number no record may carry: the next one would not exist. (At one
/// checkpoint a microsecond it is half a million years away.)
pub(crate) const SEQ_LIMIT: u64 = u64::MAX;
/// The record carries the last part of a checkpoint: its payload is a [`CommitRecord`].
pub const FLAG_COMMIT: u16 = 1;
/// The record was written at a clean unmount: nothing before it needs replay.
pub(crate) const FLAG_UNMOUNT: u16 = 2;
const FLAGS_KNOWN: u16 = FLAG_COMMIT | FLAG_UNMOUNT;

const OFF_MAGIC: usize = 0;
const OFF_CRC: usize = 4;
const OFF_VERSION: usize = 8;
const OFF_FLAGS: usize = 10;
const OFF_HDR_CRC: usize = 12;
const OFF_LSN: usize = 16;
const OFF_TAIL: usize = 24;
const OFF_SEQ: usize = 32;
const OFF_PAYLOAD_LEN: usize = 40;
const OFF_BLOCKS: usize = 44;
const OFF_UUID: usize = 48;
const OFF_INDEX: usize = 64;
const _: () = assert!(OFF_INDEX + 16 == LOG_RECORD_HEADER_BYTES);

/// The header of a log record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub flags: u16,
    /// LSN of this record: cycle and block offset where it starts.
    pub lsn: Lsn,
    /// The log tail when this record was written: recovery starts there.
    pub tail_lsn: Lsn,
    /// Checkpoint sequence number the record belongs to.
    pub seq: u64,
    pub payload_len: u32,
    /// Blocks the record occupies, header included.
    pub blocks: u32,
    pub uuid: Uuid,
    /// Index of this record within its checkpoint, from 0.
    pub index: u32,
}

/// Blocks a record with `payload_len` bytes of payload occupies.
pub fn record_blocks(payload_len: usize, block_size: u32) -> u32 {
    (LOG_RECORD_HEADER_BYTES + payload_len).div_ceil(block_size as usize) as u32
}

impl RecordHeader {
    /// Encodes the header and both CRCs into `rec`, which holds the header followed by the payload
    /// (`rec.len() >= LOG_RECORD_HEADER_BYTES + payload_len`).
    pub fn encode(&self, rec: &mut [u8]) {
        let end = LOG_RECORD_HEADER_BYTES + self.payload_len as usize;
        debug_assert!(rec.len() >= end);
        let mut e = Enc::new(rec);
        e.u32(OFF_MAGIC, LOG_RECORD_MAGIC);
        e.u32(OFF_CRC, 0);
        e.u16(OFF_VERSION, LOG_RECORD_VERSION);
        e.u16(OFF_FLAGS, self.flags);
        e.u32(OFF_HDR_CRC, 0);
        e.u64(OFF_LSN, self.lsn.0);
        e.u64(OFF_TAIL, self.tail_lsn.0);
        e.u64(OFF_SEQ, self.seq);
        e.u32(OFF_PAYLOAD_LEN, self.payload_len);
        e.u32(OFF_BLOCKS, self.blocks);
        e.bytes(OFF_UUID, &self.uuid);
        e.u32(OFF_INDEX, self.index);
        e.bytes(OFF_INDEX + 4, &[0u8; 12]);
        let hdr_crc = crc32fast::hash(&rec[..LOG_RECORD_HEADER_BYTES]);
        Enc::new(rec).u32(OFF_HDR_CRC, hdr_crc);
        let crc = crc_with_hole(&rec[..end], OFF_CRC);
        Enc::new(rec).u32(OFF_CRC, crc);
    }

    /// Recomputes both CRCs of the record starting in `rec` after an edit, over the payload
    /// length it states (cut at the end of `rec`), so only the meaning of what was edited is
    /// wrong (the field fuzzer).
    pub fn reseal(rec: &mut [u8]) {
        if rec.len() < LOG_RECORD_HEADER_BYTES {
            return;
        }
        Enc::new(rec).u32(OFF_CRC, 0);
        Enc::new(rec).u32(OFF_HDR_CRC, 0);
        let hdr_crc = crc32fast::hash(&rec[..LOG_RECORD_HEADER_BYTES]);
        Enc::new(rec).u32(OFF_HDR_CRC, hdr_crc);
        let len = u32::from_le_bytes([
            rec[OFF_PAYLOAD_LEN],
            rec[OFF_PAYLOAD_LEN + 1],
            rec[OFF_PAYLOAD_LEN + 2],
            rec[OFF_PAYLOAD_LEN + 3],
        ]) as usize;
        let end = LOG_RECORD_HEADER_BYTES.saturating_add(len).min(rec.len());
        let crc = crc_with_hole(&rec[..end], OFF_CRC);
        Enc::new(rec).u32(OFF_CRC, crc);
    }

    /// Decodes and checks a header found at log position `lsn` (device block `blkno`). Checks the
    /// header CRC only; [`RecordHeader::verify_payload`] checks the whole record.
    pub fn decode(
        hdr: &[u8],
        blkno: u64,
        at_block: u32,
        expect: Option<Lsn>,
        uuid: &Uuid,
        log_blocks: u64,
    ) -> Result<RecordHeader, FormatError> {
        let d = Dec::new(hdr, blkno, "log record header");
        d.expect_u32(d.u32(OFF_MAGIC, "magic")?, LOG_RECORD_MAGIC, "magic")?;
        let head = d.slice_at(0, LOG_RECORD_HEADER_BYTES, "header")?;
        let mut copy = [0u8; LOG_RECORD_HEADER_BYTES];
        copy.copy_from_slice(head);
        Enc::new(&mut copy).u32(OFF_CRC, 0);
        Enc::new(&mut copy).u32(OFF_HDR_CRC, 0);
        let stored = d.u32(OFF_HDR_CRC, "hdr_crc")?;
        let computed = crc32fast::hash(&copy);
        if stored != computed {
            return Err(d.err(
                "hdr_crc",
                format!("stored {stored:#010x}, computed {computed:#010x}"),
            ));
        }
        let version = d.u16(OFF_VERSION, "version")?;
        if version != LOG_RECORD_VERSION {
            return Err(d.err(
                "version",
                format!("{version}, expected {LOG_RECORD_VERSION}"),
            ));
        }
        let flags = d.u16(OFF_FLAGS, "flags")?;
        if flags & !FLAGS_KNOWN != 0 {
            return Err(d.err("flags", format!("unknown flags {flags:#x}")));
        }
        let lsn = Lsn(d.u64(OFF_LSN, "lsn")?);
        if lsn.block() != at_block || expect.is_some_and(|e| e != lsn) {
            return Err(d.err(
                "lsn",
                format!(
                    "record says {lsn}, found at log block {at_block} (expected {:?})",
                    expect
                ),
            ));
        }
        let got_uuid: Uuid = d.bytes(OFF_UUID, "uuid")?;
        if &got_uuid != uuid {
            return Err(d.err("uuid", "record of another filesystem"));
        }
        let payload_len = d.u32(OFF_PAYLOAD_LEN, "payload_len")?;
        if payload_len as usize > LOG_RECORD_PAYLOAD_MAX {
            return Err(d.err(
                "payload_len",
                format!("{payload_len} exceeds {LOG_RECORD_PAYLOAD_MAX}"),
            ));
        }
        let blocks = d.u32(OFF_BLOCKS, "blocks")?;
        let bs = (hdr.len() as u32).max(1);
        if blocks == 0
            || blocks as u64 > log_blocks
            || blocks != record_blocks(payload_len as usize, bs)
        {
            return Err(d.err(
                "blocks",
                format!(
                    "{blocks} blocks for a payload of {payload_len} bytes in a log of {log_blocks}"
                ),
            ));
        }
        let tail_lsn = Lsn(d.u64(OFF_TAIL, "tail_lsn")?);
        if tail_lsn > lsn {
            return Err(d.err(
                "tail_lsn",
                format!("tail {tail_lsn} is after the record's own LSN {lsn}"),
            ));
        }
        let seq = d.u64(OFF_SEQ, "seq")?;
        if seq == SEQ_LIMIT {
            // Recovery hands out the number after the last one found: there is none after this.
            return Err(d.err("seq", format!("{seq} is past the last sequence number")));
        }
        Ok(RecordHeader {
            flags,
            lsn,
            tail_lsn,
            seq,
            payload_len,
            blocks,
            uuid: got_uuid,
            index: d.u32(OFF_INDEX, "index")?,
        })
    }

    /// Checks the CRC over header and payload of a whole record read into `rec`.
    pub fn verify_payload(&self, rec: &[u8], blkno: u64) -> Result<(), FormatError> {
        let d = Dec::new(rec, blkno, "log record");
        let end = LOG_RECORD_HEADER_BYTES + self.payload_len as usize;
        let whole = d.slice_at(0, end, "payload")?;
        let stored = d.u32(OFF_CRC, "crc")?;
        let computed = crc_with_hole(whole, OFF_CRC);
        if stored != computed {
            return Err(d.err(
                "crc",
                format!(
                    "stored {stored:#010x}, computed {computed:#010x} (torn or corrupt record)"
                ),
            ));
        }
        Ok(())
    }
}

/// Payload of a commit record: closes a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitRecord {
    pub seq: u64,
    /// Data records of the checkpoint, which precede the commit record.
    pub records: u32,
    pub items: u32,
    pub stream_bytes: u64,
    /// CRC32 of the checkpoint's whole item stream.
    pub stream_crc: u32,
}

pub(crate) const COMMIT_RECORD_BYTES: usize = 32;

impl CommitRecord {
    pub fn encode(&self, buf: &mut [u8]) {
        let mut e = Enc::new(buf);
        e.u64(0, self.seq);
        e.u32(8, self.records);
        e.u32(12, self.items);
        e.u64(16, self.stream_bytes);
        e.u32(24, self.stream_crc);
        e.u32(28, 0);
    }
    pub fn decode(buf: &[u8], blkno: u64) -> Result<CommitRecord, FormatError> {
        let d = Dec::new(buf, blkno, "commit record");
        Ok(CommitRecord {
            seq: d.u64(0, "seq")?,
            records: d.u32(8, "records")?,
            items: d.u32(12, "items")?,
            stream_bytes: d.u64(16, "stream_bytes")?,
            stream_crc: d.u32(24, "stream_crc")?,
        })
    }
}

/// Bytes of an item header in the stream: which block, its type, how many regions follow.
pub(crate) const ITEM_HEADER_BYTES: usize = 16;
/// Bytes of a region header: offset and length within the block.
pub(crate) const REGION_HEADER_BYTES: usize = 8;

/// One logged block in a checkpoint: changed regions of block `blkno`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogItem {
    pub blkno: u64,
    pub btype: BlockType,
    /// (offset within the block, bytes).
    pub regions: Vec<(u32, Vec<u8>)>,
}

impl LogItem {
    /// Bytes this item takes in the stream.
    pub fn encoded_len(&self) -> usize {
        ITEM_HEADER_BYTES
            + self
                .regions
                .iter()
                .map(|(_, b)| REGION_HEADER_BYTES + b.len())
                .sum::<usize>()
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + ITEM_HEADER_BYTES, 0);
        let mut e = Enc::new(&mut out[start..]);
        e.u64(0, self.blkno);
        e.u32(8, self.btype.magic());
        e.u16(12, self.regions.len() as u16);
        e.u16(14, 0);
        for (off, bytes) in &self.regions {
            let at = out.len();
            out.resize(at + REGION_HEADER_BYTES, 0);
            let mut e = Enc::new(&mut out[at..]);
            e.u32(0, *off);
            e.u32(4, bytes.len() as u32);
            out.extend_from_slice(bytes);
        }
    }

    /// Parses the first item of `buf`: `Ok(None)` if `buf` holds only part of it, else the item and
    /// the bytes it took. `blkno` names the record's block in errors; `block_size` and
    /// `block_count` bound what an item may address.
    pub(crate) fn decode_one(
        buf: &[u8],
        blkno: u64,
        block_size: u32,
        block_count: u64,
    ) -> Result<Option<(LogItem, usize)>, FormatError> {
        if buf.len() < ITEM_HEADER_BYTES {
            return Ok(None);
        }
        let d = Dec::new(buf, blkno, "log item");
        let item_blkno = d.u64(0, "blkno")?;
        if item_blkno == 0 || item_blkno >= block_count {
            return Err(d.err("blkno", format!("{item_blkno} is outside 1..{block_count}")));
        }
        let magic = d.u32(8, "magic")?;
        let btype = BlockType::from_magic(magic)
            .ok_or_else(|| d.err("magic", format!("{magic:#010x} is no block type")))?;
        let nregions = d.u16(12, "regions")? as usize;
        // Zero regions: a cancel item (the block was freed; earlier items for it are stale).
        if nregions > block_size as usize / super::BLOCK_SIZE_MIN as usize * 4 + 1 {
            return Err(d.err(
                "regions",
                format!("{nregions} regions in a block of {block_size}"),
            ));
        }
        let mut at = ITEM_HEADER_BYTES;
        let mut regions = Vec::with_capacity(nregions);
        for _ in 0..nregions {
            if buf.len() < at + REGION_HEADER_BYTES {
                return Ok(None);
            }
            let off = d.u32(at, "region offset")?;
            let len = d.u32(at + 4, "region length")?;
            if len == 0 || off as u64 + len as u64 > block_size as u64 {
                return Err(d.err(
                    "region length",
                    format!("region {off}+{len} is outside a block of {block_size}"),
                ));
            }
            let end = at + REGION_HEADER_BYTES + len as usize;
            if buf.len() < end {
                return Ok(None);
            }
            regions.push((off, buf[at + REGION_HEADER_BYTES..end].to_vec()));
            at = end;
        }
        Ok(Some((
            LogItem {
                blkno: item_blkno,
                btype,
                regions,
            },
            at,
        )))
    }

    /// Parses a whole item stream; a stream that ends inside an item is an error.
    pub fn decode_stream(
        stream: &[u8],
        blkno: u64,
        block_size: u32,
        block_count: u64,
    ) -> Result<Vec<LogItem>, FormatError> {
        let mut items = Vec::new();
        let mut pos = 0usize;
        while pos < stream.len() {
            match LogItem::decode_one(&stream[pos..], blkno, block_size, block_count)? {
                Some((item, used)) => {
                    items.push(item);
                    pos += used;
                }
                None => {
                    return Err(FormatError::new(
                        blkno,
                        "log item",
                        "length",
                        format!("stream ends inside an item at byte {pos}"),
                    ))
                }
            }
        }
        Ok(items)
    }
}
