//! Choosing the superblock: the primary (block 0) and the backup (the last block) are two copies
//! of the same facts, and when they differ the one the rest of the filesystem agrees with wins.
//!
//! A copy can be wrong while its CRC is right (a memory error before the checksum was computed,
//! a tool that wrote a foreign superblock): trusting the primary whenever it decodes would then
//! make an intact filesystem unmountable and unrepairable. Every metadata block and every log
//! record names the filesystem's UUID and its own place, so each copy is scored by how many of
//! the blocks it describes carry its UUID where it says they are (the AG headers, the log's
//! records), whether its root inode is a directory, and above all whether its log recovers
//! (replayed into memory, writing nothing); the highest score wins, the primary on a tie. Copies
//! that agree (the usual case) are not scored at all. `e2fsck -b` and xfs_repair's search for
//! secondary superblocks answer the same need; `fsck.ticketfs -b` names a copy outright.

use crate::device::{AlignedBuf, DevError, Device};
use crate::error::EngineError;
use crate::format::ag::AgHeader;
use crate::format::ag::AG_HEADER_OFFSET;
use crate::format::header::{BlockHeader, BlockType};
use crate::format::inode::{ino_split, slot_range, Inode, S_IFDIR, S_IFMT};
use crate::format::log::{
    record_blocks, RecordHeader, LOG_RECORD_HEADER_BYTES, LOG_RECORD_PAYLOAD_MAX,
};
use crate::format::Superblock;
use parking_lot::Mutex;
use std::collections::HashMap;

/// AG headers read to score a copy: enough that a foreign UUID cannot win by chance, few enough
/// that choosing costs a handful of reads on any image.
const AG_PROBE_MAX: u32 = 8;

/// Which copy to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SbCopy {
    /// The one the rest of the filesystem agrees with.
    Auto,
    /// The copy at this block (0 or the backup's block), whatever the rest says.
    Block(u64),
}

/// The copy chosen and what was found about the others.
#[derive(Debug, Clone)]
pub struct Chosen {
    pub sb: Superblock,
    /// Where the chosen copy was read.
    pub blkno: u64,
    /// Every copy that is unreadable or differs from the chosen one, with the reason.
    pub others: Vec<(u64, String)>,
}

/// Where copies may be: block 0, the device's last block, and the backup block the primary
/// names (the filesystem may be smaller than its device).
/// The blocks a superblock copy may be at on `dev`: 0, the device's last block, and the backup's
/// place by the primary's geometry (fsck's -b must name one of them).
pub fn candidate_blocks(dev: &dyn Device) -> Vec<u64> {
    let mut out = vec![0];
    if let Some(last) = dev.block_count().checked_sub(1) {
        if last != 0 {
            out.push(last);
        }
    }
    let mut buf = AlignedBuf::new(dev.block_size() as usize);
    if dev.read(0, &mut buf).is_ok() {
        if let Ok(sb) = Superblock::decode(&buf, 0) {
            let b = sb.geometry.backup_sb_blkno();
            if b < dev.block_count() && !out.contains(&b) {
                out.push(b);
            }
        }
    }
    out
}

fn read_copy(dev: &dyn Device, blkno: u64) -> Result<Superblock, EngineError> {
    let mut buf = AlignedBuf::new(dev.block_size() as usize);
    dev.read(blkno, &mut buf).map_err(EngineError::Io)?;
    let sb = Superblock::decode(&buf, blkno).map_err(EngineError::Corrupt)?;
    if sb.geometry.block_size != dev.block_size() {
        return Err(EngineError::Invalid(format!(
            "{}-byte blocks on a device read in {}-byte blocks",
            sb.geometry.block_size,
            dev.block_size()
        )));
    }
    if sb.geometry.block_count > dev.block_count() {
        return Err(EngineError::Invalid(format!(
            "the filesystem has {} blocks but the device only {} (truncated?)",
            sb.geometry.block_count,
            dev.block_count()
        )));
    }
    // What a mount would refuse (resv::ResvTable): a copy no mount could use is no choice.
    let min_log = crate::resv::ResvTable::new(&sb.geometry).min_log_blocks();
    if sb.geometry.log_blocks < min_log {
        return Err(EngineError::Invalid(format!(
            "a log of {} blocks, below the minimum {min_log} for this geometry",
            sb.geometry.log_blocks
        )));
    }
    if blkno != 0 && blkno != sb.geometry.backup_sb_blkno() {
        return Err(EngineError::Invalid(format!(
            "a backup copy at block {blkno} of a filesystem whose backup is block {}",
            sb.geometry.backup_sb_blkno()
        )));
    }
    Ok(sb)
}

/// A scratch copy-on-write view of a borrowed device: recovery replays into it to see whether a
/// copy's log recovers, and nothing reaches the device.
struct Scratch<'a> {
    base: &'a dyn Device,
    written: Mutex<HashMap<u64, Vec<u8>>>,
}

impl Device for Scratch<'_> {
    fn block_size(&self) -> u32 {
        self.base.block_size()
    }
    fn block_count(&self) -> u64 {
        self.base.block_count()
    }
    fn read(&self, blkno: u64, buf: &mut [u8]) -> Result<(), DevError> {
        self.base.read(blkno, buf)?;
        let bs = self.block_size() as usize;
        let w = self.written.lock();
        for (i, chunk) in buf.chunks_mut(bs).enumerate() {
            if let Some(b) = w.get(&(blkno + i as u64)) {
                chunk.copy_from_slice(b);
            }
        }
        Ok(())
    }
    fn write(&self, blkno: u64, buf: &[u8]) -> Result<(), DevError> {
        let bs = self.block_size() as usize;
        if blkno
            .checked_add((buf.len() / bs) as u64)
            .is_none_or(|end| end > self.block_count())
        {
            // The same refusal the device would give.
            return self.base.read(blkno, &mut vec![0u8; buf.len()]);
        }
        let mut w = self.written.lock();
        for (i, chunk) in buf.chunks(bs).enumerate() {
            w.insert(blkno + i as u64, chunk.to_vec());
        }
        Ok(())
    }
    fn flush(&self) -> Result<(), DevError> {
        Ok(())
    }
}

/// Points for a copy whose log recovers: more than every other probe together, since a copy
/// whose log cannot be replayed cannot be used at all.
const RECOVERS_POINTS: u32 = AG_PROBE_MAX + 2;

/// How much of what `sb` describes agrees with it: (points, points possible).
fn agreement(dev: &dyn Device, sb: &Superblock) -> (u32, u32) {
    let g = &sb.geometry;
    let mut buf = AlignedBuf::new(g.block_size as usize);
    let (mut agree, mut probed) = (0u32, 0u32);
    // Each AG header where it says, with its UUID, its number and the length it gives the AG.
    for agno in 0..g.ag_count.min(AG_PROBE_MAX) {
        let start = agno as u64 * g.ag_blocks;
        let blkno = start + AG_HEADER_OFFSET;
        let len = g.ag_blocks.min(g.block_count.saturating_sub(start));
        probed += 1;
        if dev.read(blkno, &mut buf).is_ok()
            && BlockHeader::verify(&buf, blkno, Some(BlockType::AgHeader), &sb.uuid).is_ok()
            && AgHeader::decode(&buf, blkno, agno, start, len).is_ok()
        {
            agree += 1;
        }
    }
    // The root inode: a directory in an inode chunk of this filesystem.
    probed += 1;
    let (chunk, slot) = ino_split(sb.root_ino);
    if chunk < g.block_count
        && dev.read(chunk, &mut buf).is_ok()
        && BlockHeader::verify(&buf, chunk, Some(BlockType::InodeChunk), &sb.uuid).is_ok()
        && buf
            .get(slot_range(slot))
            .and_then(|b| Inode::decode(b, chunk, sb.root_ino).ok())
            .is_some_and(|i| i.mode & S_IFMT == S_IFDIR)
    {
        agree += 1;
    }
    // The log counts once, as one AG header does: one record naming the UUID is enough. Every
    // record starts with a header, so the blocks one largest record spans hold at least one.
    probed += 1;
    let span = record_blocks(LOG_RECORD_PAYLOAD_MAX, g.block_size) as u64 + 1;
    let log_agrees = (0..g.log_blocks.min(span)).any(|i| {
        let blkno = g.log_start + i;
        dev.read(blkno, &mut buf).is_ok()
            && RecordHeader::decode(
                &buf[..LOG_RECORD_HEADER_BYTES.min(buf.len())],
                blkno,
                i as u32,
                None,
                &sb.uuid,
                g.log_blocks,
            )
            .is_ok()
    });
    agree += log_agrees as u32;
    (agree, probed)
}

/// Chooses the superblock to use (see the module's comment).
/// A copy chosen so far: its block, its contents, and (points, possible) when it was scored.
type Choice = (u64, Superblock, Option<(u32, u32)>);

pub fn choose(dev: &dyn Device, which: SbCopy) -> Result<Chosen, EngineError> {
    let blocks = candidate_blocks(dev);
    let copies: Vec<(u64, Result<Superblock, EngineError>)> =
        blocks.iter().map(|&b| (b, read_copy(dev, b))).collect();
    let (blkno, sb, _) = match which {
        SbCopy::Block(b) => {
            let sb = read_copy(dev, b)?;
            (b, sb, None)
        }
        SbCopy::Auto => {
            let valid: Vec<(u64, &Superblock)> = copies
                .iter()
                .filter_map(|(b, c)| c.as_ref().ok().map(|s| (*b, s)))
                .collect();
            let all_agree = valid.windows(2).all(|w| same_facts(w[0].1, w[1].1));
            let mut best: Option<Choice> = None;
            if all_agree {
                best = valid.first().map(|(b, s)| (*b, (*s).clone(), None));
            }
            for &(b, sb) in valid.iter().filter(|_| !all_agree) {
                // A copy with the same facts as one already scored scores the same.
                if best.as_ref().is_some_and(|(_, s, _)| same_facts(s, sb)) {
                    continue;
                }
                let (mut points, mut possible) = agreement(dev, sb);
                possible += RECOVERS_POINTS;
                let scratch = Scratch {
                    base: dev,
                    written: Mutex::new(HashMap::new()),
                };
                if crate::log::recover(&scratch, sb, crate::log::Damage::Refuse).is_ok() {
                    points += RECOVERS_POINTS;
                }
                if best
                    .as_ref()
                    .is_none_or(|(_, _, ba)| ba.is_none_or(|ba| points > ba.0))
                {
                    best = Some((b, sb.clone(), Some((points, possible))));
                }
            }
            // None valid: the primary's error, as before there was a choice.
            match best {
                Some(b) => b,
                None => {
                    let mut copies = copies;
                    return Err(copies.swap_remove(0).1.err().unwrap_or_else(|| {
                        EngineError::Invalid("no superblock copy is valid".into())
                    }));
                }
            }
        }
    };
    // The copies that are not the chosen one's equal, at the chosen geometry's two places.
    let mut others = Vec::new();
    for b in [0, sb.geometry.backup_sb_blkno()] {
        match read_copy(dev, b) {
            Ok(s) if same_facts(&s, &sb) => {}
            Ok(s) if s.uuid != sb.uuid => {
                others.push((b, "names another filesystem's UUID".to_string()))
            }
            Ok(_) => others.push((b, "differs from the copy in use".to_string())),
            Err(e) => others.push((b, e.to_string())),
        }
    }
    Ok(Chosen { sb, blkno, others })
}

/// Whether two copies describe the same filesystem alike. The clean/dirty state may differ
/// between them for a moment (a crash between the two writes of a mount) without harm: the
/// log, not that flag, decides what recovery does.
fn same_facts(a: &Superblock, b: &Superblock) -> bool {
    a.geometry == b.geometry
        && a.uuid == b.uuid
        && a.root_ino == b.root_ino
        && a.label == b.label
        && a.features_compat == b.features_compat
        && a.features_incompat == b.features_incompat
}

/// The superblock the rest of the filesystem agrees with, for a mount, fsck or db.
pub fn read_superblock(dev: &dyn Device) -> Result<Superblock, EngineError> {
    choose(dev, SbCopy::Auto).map(|c| c.sb)
}
