//! Log recovery, and formatting an empty log.
//!
//! 1. Scan: every log block that starts a record with a valid header CRC is a candidate; the
//!    candidate with the highest LSN whose whole record checks out is the last record written.
//! 2. If it is an unmount record whose tail is itself, the log is clean.
//! 3. Walk from its tail, record by record, each at exactly the LSN expected, stopping at the first
//!    record that is missing, torn (CRC), out of sequence, or from an older cycle. A checkpoint is
//!    complete when its commit record matches its records (count, length, stream CRC).
//! 4. Replay the complete checkpoints in order: each logged region over the home block, skipping
//!    blocks whose own header (valid CRC) carries an LSN at least the checkpoint's; stamp the
//!    checkpoint's LSN and CRC; write; flush.
//! 5. Zero the log outside tail..head: records a torn checkpoint left beyond the head (written
//!    out of order) must never be taken for the newest record later.

use super::{LogError, LogPos};
use crate::device::{AlignedBuf, Device};
use crate::format::log::{
    record_blocks, CommitRecord, LogItem, RecordHeader, COMMIT_RECORD_BYTES, FLAG_COMMIT,
    FLAG_UNMOUNT, LOG_RECORD_HEADER_BYTES, LOG_RECORD_MAGIC, LOG_RECORD_PAYLOAD_MAX,
};
use crate::format::{BlockHeader, FormatError, Lsn, Superblock};
use std::collections::HashMap;

/// What recovery found and did.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    /// Where the next record goes.
    pub head: LogPos,
    /// The next checkpoint sequence number.
    pub(crate) next_seq: u64,
    /// The log ended with an unmount record: nothing was replayed.
    pub clean: bool,
    pub checkpoints_replayed: u64,
    pub(crate) items_replayed: u64,
    /// Items skipped because the home block was already as new.
    pub(crate) items_skipped: u64,
    /// Items skipped because a later checkpoint freed their block.
    pub(crate) items_cancelled: u64,
    /// Valid records after the last complete checkpoint (a torn or unconfirmed checkpoint).
    pub(crate) records_discarded: u64,
    /// The walk stopped at a damaged record although later checkpoints were written after it
    /// was durable (not a torn write): what was found there. Only with [`Damage::Accept`].
    pub damaged: Option<FormatError>,
}

/// What recovery does with a damaged record in the middle of the log (one followed by records
/// of a later checkpoint, which the writer starts only after the earlier one is durable, so it
/// cannot be a write torn by a crash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// Fail, naming the block, and change nothing (mount: the operator runs fsck).
    Refuse,
    /// Replay the checkpoints before it, discard the rest, and report it (fsck).
    Accept,
}

impl Default for LogPos {
    fn default() -> Self {
        LogPos::new(1, 0)
    }
}

/// A checkpoint found complete by the walk.
struct Found {
    start: LogPos,
    /// (position, blocks) of its data records.
    records: Vec<(LogPos, u32)>,
}

struct Reader<'a> {
    dev: &'a dyn Device,
    sb: &'a Superblock,
    bs: u32,
    log_blocks: u64,
}

impl Reader<'_> {
    /// Reads `buf.len()` bytes of log starting at log block `first`, wrapping at the end.
    fn read(&self, first: u64, buf: &mut [u8]) -> Result<(), LogError> {
        let bs = self.bs as usize;
        let blocks = (buf.len() / bs) as u64;
        let first = first % self.log_blocks;
        let head = blocks.min(self.log_blocks - first);
        let start = self.sb.geometry.log_start;
        self.dev
            .read(start + first, &mut buf[..head as usize * bs])
            .map_err(LogError::Io)?;
        if head < blocks {
            self.dev
                .read(start, &mut buf[head as usize * bs..])
                .map_err(LogError::Io)?;
        }
        Ok(())
    }

    /// Reads and fully checks the record at `pos` (expected LSN if given) into `buf`.
    fn record(
        &self,
        pos: LogPos,
        expect: Option<Lsn>,
        buf: &mut AlignedBuf,
    ) -> Result<RecordHeader, LogError> {
        let bs = self.bs as usize;
        let idx = pos.bytes / bs as u64;
        let blkno = self.sb.geometry.log_start + idx;
        self.read(idx, &mut buf[..bs])?;
        let h = RecordHeader::decode(
            &buf[..bs],
            blkno,
            idx as u32,
            expect,
            &self.sb.uuid,
            self.log_blocks,
        )
        .map_err(LogError::Corrupt)?;
        let len = h.blocks as usize * bs;
        if len > buf.len() {
            return Err(LogError::Corrupt(FormatError::new(
                blkno,
                "log record header",
                "blocks",
                format!("{} blocks exceed the largest record", h.blocks),
            )));
        }
        if h.blocks > 1 {
            self.read(idx + 1, &mut buf[bs..len])?;
        }
        h.verify_payload(&buf[..len], blkno)
            .map_err(LogError::Corrupt)?;
        Ok(h)
    }
}

/// Recovers the log of the filesystem described by `sb` on `dev`.
pub fn recover(dev: &dyn Device, sb: &Superblock, damage: Damage) -> Result<Recovered, LogError> {
    let g = &sb.geometry;
    let bs = g.block_size;
    let size = g.log_blocks * bs as u64;
    let r = Reader {
        dev,
        sb,
        bs,
        log_blocks: g.log_blocks,
    };
    let mut buf = AlignedBuf::new(record_blocks(LOG_RECORD_PAYLOAD_MAX, bs) as usize * bs as usize);

    // 1. Scan for candidates, newest first.
    let mut candidates = scan(&r)?;
    candidates.sort_unstable_by(|a, b| b.cmp(a));
    let max_seq = candidates.iter().map(|c| c.1).max().unwrap_or(0);
    let mut last = None;
    for &(lsn, _) in &candidates {
        if let Ok(h) = r.record(LogPos::from_lsn(lsn, bs), Some(lsn), &mut buf) {
            last = Some(h);
            break;
        }
    }
    let Some(last) = last else {
        return Err(LogError::Corrupt(FormatError::new(
            g.log_start,
            "log",
            "records",
            "no valid log record anywhere in the log",
        )));
    };
    let last_pos = LogPos::from_lsn(last.lsn, bs);

    // 2. Clean?
    if last.flags & FLAG_UNMOUNT != 0 && last.tail_lsn == last.lsn {
        let head = last_pos.add(last.blocks as u64 * bs as u64, size);
        return Ok(Recovered {
            head,
            next_seq: last.seq + 1,
            clean: true,
            ..Default::default()
        });
    }

    // 3. Walk from the tail.
    let tail = LogPos::from_lsn(last.tail_lsn, bs);
    let mut out = Recovered {
        next_seq: last.seq + 1,
        ..Default::default()
    };
    let mut done: Vec<Found> = Vec::new();
    let mut head = tail;
    let mut pos = tail;
    let mut walked = 0u64;
    let mut prev_seq: Option<u64> = None;
    let mut open: Option<(u64, Found, crc32fast::Hasher, u64)> = None;
    while walked < g.log_blocks {
        let Ok(h) = r.record(pos, Some(pos.lsn(bs)), &mut buf) else {
            break;
        };
        out.next_seq = out.next_seq.max(h.seq + 1);
        let payload =
            &buf[LOG_RECORD_HEADER_BYTES..LOG_RECORD_HEADER_BYTES + h.payload_len as usize];
        let next = pos.add(h.blocks as u64 * bs as u64, size);
        match open.as_mut() {
            None => {
                if h.index != 0 || prev_seq.is_some_and(|p| h.seq <= p) {
                    break;
                }
                open = Some((
                    h.seq,
                    Found {
                        start: pos,
                        records: Vec::new(),
                    },
                    crc32fast::Hasher::new(),
                    0,
                ));
            }
            Some((seq, found, _, _)) => {
                if h.seq != *seq || h.index as usize != found.records.len() {
                    break;
                }
            }
        }
        let Some((seq, found, crc, bytes)) = open.as_mut() else {
            break;
        };
        if h.flags & FLAG_COMMIT != 0 {
            let ok = h.payload_len as usize == COMMIT_RECORD_BYTES
                && CommitRecord::decode(payload, g.log_start + pos.bytes / bs as u64).is_ok_and(
                    |c| {
                        c.seq == *seq
                            && c.records as usize == found.records.len()
                            && c.stream_bytes == *bytes
                            && c.stream_crc == crc.clone().finalize()
                    },
                );
            if !ok {
                break;
            }
            prev_seq = Some(*seq);
            let Some((_, found, _, _)) = open.take() else {
                break;
            };
            done.push(found);
            head = next;
        } else {
            crc.update(payload);
            *bytes += h.payload_len as u64;
            found.records.push((pos, h.blocks));
        }
        walked += h.blocks as u64;
        pos = next;
    }
    if let Some((_, found, _, _)) = &open {
        out.records_discarded = found.records.len() as u64;
    }
    // Damage, not a torn write: a record of a checkpoint newer than the one the walk stopped in
    // (the writer starts a checkpoint only once the one before is durable). Stopped at the tail
    // itself, that checkpoint is unknown: damage if a record between the tail and the newest one
    // belongs to an older checkpoint than the newest (the newest's own records may be torn).
    let stopped_in = match &open {
        Some((seq, ..)) => Some(*seq),
        None => prev_seq.map(|p| p + 1),
    };
    let damaged = walked < g.log_blocks
        && match stopped_in {
            Some(seq) => max_seq > seq,
            None => candidates
                .iter()
                .any(|&(lsn, seq)| seq < max_seq && lsn > tail.lsn(bs) && lsn <= last.lsn),
        };
    if damaged {
        let blkno = g.log_start + pos.bytes / bs as u64;
        let why = match r.record(pos, Some(pos.lsn(bs)), &mut buf) {
            Err(LogError::Corrupt(e)) => format!("{}.{}: {}", e.structure, e.field, e.detail),
            Err(e) => e.to_string(),
            Ok(h) => format!("record of checkpoint {} out of sequence", h.seq),
        };
        let e = FormatError::new(
            blkno,
            "log record",
            "record",
            format!(
                "damaged ({why}) although checkpoint {} was written after it; checkpoints from here on cannot be replayed (run fsck.ticketfs)",
                max_seq.max(last.seq)
            ),
        );
        if damage == Damage::Refuse {
            return Err(LogError::Corrupt(e));
        }
        out.damaged = Some(e);
    }

    // 4. Replay.
    // A block freed in checkpoint j (a cancel item) ignores its items of checkpoints before j:
    // the block may hold file data or another structure since.
    let mut cancels: HashMap<u64, usize> = HashMap::new();
    for (i, found) in done.iter().enumerate() {
        for_each_item(&r, found, &mut buf, |item, _| {
            if item.regions.is_empty() {
                cancels.insert(item.blkno, i);
            }
            Ok(())
        })?;
    }
    let mut block = AlignedBuf::new(bs as usize);
    for (i, found) in done.iter().enumerate() {
        let ckpt_lsn = found.start.lsn(bs);
        for_each_item(&r, found, &mut buf, |item, rec_blkno| {
            if item.regions.is_empty() {
                return Ok(());
            }
            if cancels.get(&item.blkno).is_some_and(|&j| j > i) {
                out.items_cancelled += 1;
                return Ok(());
            }
            apply(&r, &item, ckpt_lsn, &mut block, &mut out, rec_blkno)
        })?;
    }
    out.checkpoints_replayed = done.len() as u64;
    dev.flush().map_err(LogError::Io)?;

    // 5. Everything replayed is home and durable: mark that with an unmount record at the head,
    //    then zero the rest of the log outside tail..head. In this order a crash in between still
    //    finds a valid newest record, and any record left beyond the head has an older sequence
    //    number, so the walk stops before it.
    write_unmount(dev, sb, head, out.next_seq)?;
    dev.flush().map_err(LogError::Io)?;
    let used = head.since(tail, size) + bs as u64;
    let after = head.add(bs as u64, size);
    zero_log(
        dev,
        sb,
        after.bytes / bs as u64,
        (size - used.min(size)) / bs as u64,
    )?;
    dev.flush().map_err(LogError::Io)?;
    out.head = after;
    out.next_seq += 1;
    Ok(out)
}

/// LSN and checkpoint sequence of every block that starts a record with a valid header.
fn scan(r: &Reader<'_>) -> Result<Vec<(Lsn, u64)>, LogError> {
    let bs = r.bs as usize;
    let chunk_blocks = ((1 << 20) / bs).max(1) as u64;
    let mut buf = AlignedBuf::new(chunk_blocks as usize * bs);
    let mut found = Vec::new();
    let mut first = 0u64;
    while first < r.log_blocks {
        let n = chunk_blocks.min(r.log_blocks - first);
        r.read(first, &mut buf[..n as usize * bs])?;
        for i in 0..n {
            let b = &buf[i as usize * bs..(i as usize + 1) * bs];
            if u32::from_le_bytes([b[0], b[1], b[2], b[3]]) != LOG_RECORD_MAGIC {
                continue;
            }
            let idx = first + i;
            if let Ok(h) = RecordHeader::decode(
                b,
                r.sb.geometry.log_start + idx,
                idx as u32,
                None,
                &r.sb.uuid,
                r.log_blocks,
            ) {
                found.push((h.lsn, h.seq));
            }
        }
        first += n;
    }
    Ok(found)
}

/// Calls `f` with every item of a complete checkpoint and the log block of its record, parsing
/// the stream record by record (memory: one record and one item).
fn for_each_item(
    r: &Reader<'_>,
    found: &Found,
    buf: &mut AlignedBuf,
    mut f: impl FnMut(LogItem, u64) -> Result<(), LogError>,
) -> Result<(), LogError> {
    let g = &r.sb.geometry;
    let bs = r.bs;
    let mut carry: Vec<u8> = Vec::new();
    for &(pos, _) in &found.records {
        let h = r.record(pos, Some(pos.lsn(bs)), buf)?;
        let blkno = g.log_start + pos.bytes / bs as u64;
        carry.extend_from_slice(
            &buf[LOG_RECORD_HEADER_BYTES..LOG_RECORD_HEADER_BYTES + h.payload_len as usize],
        );
        let mut at = 0;
        while let Some((item, used)) = LogItem::decode_one(&carry[at..], blkno, bs, g.block_count)
            .map_err(LogError::Corrupt)?
        {
            f(item, blkno)?;
            at += used;
        }
        carry.drain(..at);
    }
    if !carry.is_empty() {
        let blkno = g.log_start + found.start.bytes / bs as u64;
        return Err(LogError::Corrupt(FormatError::new(
            blkno,
            "log item",
            "length",
            format!(
                "checkpoint ends inside an item ({} bytes left)",
                carry.len()
            ),
        )));
    }
    Ok(())
}

/// Applies one logged block unless the home block is already as new.
fn apply(
    r: &Reader<'_>,
    item: &LogItem,
    ckpt_lsn: Lsn,
    block: &mut AlignedBuf,
    out: &mut Recovered,
    rec_blkno: u64,
) -> Result<(), LogError> {
    let g = &r.sb.geometry;
    let b = item.blkno;
    if b == 0 || b == g.backup_sb_blkno() || (g.log_start..g.log_end()).contains(&b) {
        return Err(LogError::Corrupt(FormatError::new(
            rec_blkno,
            "log item",
            "blkno",
            format!("item for block {b}, which is a superblock or inside the log"),
        )));
    }
    r.dev.read(b, block).map_err(LogError::Io)?;
    if let Ok(h) = BlockHeader::verify(block, b, None, &r.sb.uuid) {
        if h.lsn >= ckpt_lsn.0 {
            out.items_skipped += 1;
            return Ok(());
        }
    }
    for (off, bytes) in &item.regions {
        block[*off as usize..*off as usize + bytes.len()].copy_from_slice(bytes);
    }
    BlockHeader::stamp(block, ckpt_lsn.0);
    r.dev.write(b, block).map_err(LogError::Io)?;
    out.items_replayed += 1;
    Ok(())
}

/// Writes zeros over `blocks` log blocks from log block `first`, wrapping.
fn zero_log(dev: &dyn Device, sb: &Superblock, first: u64, blocks: u64) -> Result<(), LogError> {
    let g = &sb.geometry;
    let bs = g.block_size as usize;
    let chunk = ((1 << 20) / bs).max(1) as u64;
    let zeros = AlignedBuf::new(chunk as usize * bs);
    let mut done = 0;
    while done < blocks {
        let idx = (first + done) % g.log_blocks;
        let n = chunk.min(blocks - done).min(g.log_blocks - idx);
        dev.write(g.log_start + idx, &zeros[..n as usize * bs])
            .map_err(LogError::Io)?;
        done += n;
    }
    Ok(())
}

/// Formats an empty log: zeros, then an unmount record at the start (cycle 1, sequence 1).
pub(crate) fn format_log(dev: &dyn Device, sb: &Superblock) -> Result<(), LogError> {
    zero_log(dev, sb, 0, sb.geometry.log_blocks)?;
    write_unmount(dev, sb, LogPos::new(1, 0), 1)?;
    dev.flush().map_err(LogError::Io)
}

/// Writes an unmount record (an empty checkpoint whose tail is itself) at `pos`.
fn write_unmount(dev: &dyn Device, sb: &Superblock, pos: LogPos, seq: u64) -> Result<(), LogError> {
    let g = &sb.geometry;
    let bs = g.block_size as usize;
    let mut rec = AlignedBuf::new(bs);
    let commit = CommitRecord {
        seq,
        records: 0,
        items: 0,
        stream_bytes: 0,
        stream_crc: crc32fast::Hasher::new().finalize(),
    };
    commit.encode(&mut rec[LOG_RECORD_HEADER_BYTES..LOG_RECORD_HEADER_BYTES + COMMIT_RECORD_BYTES]);
    let lsn = pos.lsn(g.block_size);
    let hdr = RecordHeader {
        flags: FLAG_COMMIT | FLAG_UNMOUNT,
        lsn,
        tail_lsn: lsn,
        seq,
        payload_len: COMMIT_RECORD_BYTES as u32,
        blocks: record_blocks(COMMIT_RECORD_BYTES, g.block_size),
        uuid: sb.uuid,
        index: 0,
    };
    hdr.encode(&mut rec);
    dev.write(g.log_start + pos.bytes / bs as u64, &rec)
        .map_err(LogError::Io)
}
