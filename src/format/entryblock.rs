//! The header every block of appended records shares: a directory's name blocks
//! (`super::dirblock`) and an attribute tree's entry blocks (`super::attrtree`), and the rules on
//! it both follow.
//!
//! After the 48-byte block header: `live` (u32 at 48, how many records the owner's hash tree
//! points at), `free_off` (u32 at 52, where the next record is appended), 8 zero bytes; records
//! from 64 up to `free_off`. A record stays in place when its entry goes (the block is freed when
//! `live` reaches zero), so the records between those referenced are dead, never reused.

use super::{Dec, Enc, FormatError, BLOCK_HEADER_BYTES};

/// Offset of `live`.
pub const LIVE_OFF: usize = BLOCK_HEADER_BYTES;
/// Offset of `free_off`.
pub const FREE_OFF: usize = BLOCK_HEADER_BYTES + 4;
/// Offset of the 8 reserved bytes, zero.
const PAD_OFF: usize = BLOCK_HEADER_BYTES + 8;
/// Where the first record starts.
pub const RECORDS_OFF: usize = BLOCK_HEADER_BYTES + 16;

/// What tells one kind of entry block from the other in errors.
pub(crate) struct Kind {
    /// The structure named in errors.
    pub(crate) structure: &'static str,
    /// The field named for a record out of place.
    pub(crate) record_field: &'static str,
    /// What the records are, in a `live` mismatch ("names").
    pub(crate) records: &'static str,
    /// What points at them ("the directory's tree").
    pub(crate) owner: &'static str,
}

/// `free_off` of block `b`, checked to lie within the record area.
pub(crate) fn free_off(
    b: &[u8],
    blkno: u64,
    structure: &'static str,
) -> Result<usize, FormatError> {
    let d = Dec::new(b, blkno, structure);
    let end = d.u32(FREE_OFF, "free_off")? as usize;
    if end < RECORDS_OFF || end > b.len() {
        return Err(d.err(
            "free_off",
            format!(
                "is {end}, outside the record area {RECORDS_OFF}..={}",
                b.len()
            ),
        ));
    }
    Ok(end)
}

/// Checks that a record header of `hdr` bytes at `off` lies between the first record and `end`.
pub(crate) fn check_record_at(
    d: &Dec<'_>,
    field: &'static str,
    off: usize,
    hdr: usize,
    end: usize,
) -> Result<(), FormatError> {
    if off < RECORDS_OFF || off + hdr > end {
        return Err(d.err(
            field,
            format!("offset {off} is outside the records {RECORDS_OFF}..{end}"),
        ));
    }
    Ok(())
}

/// Checks block `b` against the offsets of the records its owner's tree points at in it (`refs`,
/// any order): `live` counts exactly them, each is a valid record (`record_len` decodes the one at
/// an offset and returns its length), no two overlap, the reserved bytes are zero. A `live` that
/// undercounts would free the block while entries still point into it; a `free_off` below a
/// record would let the next one overwrite it.
pub(crate) fn check_refs(
    b: &[u8],
    blkno: u64,
    kind: &Kind,
    refs: &mut [usize],
    record_len: impl Fn(usize) -> Result<usize, FormatError>,
) -> Result<(), FormatError> {
    let d = Dec::new(b, blkno, kind.structure);
    let live = d.u32(LIVE_OFF, "live")? as usize;
    let pad = d.u64(PAD_OFF, "reserved")?;
    if pad != 0 {
        return Err(d.err("reserved", format!("is {pad:#x}, expected 0")));
    }
    if live != refs.len() {
        return Err(d.err(
            "live",
            format!(
                "counts {live} {}, {} points at {}",
                kind.records,
                kind.owner,
                refs.len()
            ),
        ));
    }
    refs.sort_unstable();
    let mut prev_end = RECORDS_OFF;
    for &off in refs.iter() {
        let len = record_len(off)?;
        if off < prev_end {
            return Err(d.err(
                kind.record_field,
                format!("record at {off} overlaps the one before it (ending at {prev_end})"),
            ));
        }
        prev_end = off + len;
    }
    Ok(())
}

/// `live` of block `b`.
pub(crate) fn live(b: &[u8], blkno: u64, structure: &'static str) -> Result<u32, FormatError> {
    Dec::new(b, blkno, structure).u32(LIVE_OFF, "live")
}

/// Counts a record of `len` bytes just written at `off` (the old `free_off`): one more live, and
/// `free_off` past it. The caller logs `LIVE_OFF..FREE_OFF + 4`.
pub(crate) fn note_appended(b: &mut [u8], off: usize, len: usize) {
    let live = u32::from_le_bytes([
        b[LIVE_OFF],
        b[LIVE_OFF + 1],
        b[LIVE_OFF + 2],
        b[LIVE_OFF + 3],
    ]);
    let mut e = Enc::new(b);
    e.u32(LIVE_OFF, live + 1);
    e.u32(FREE_OFF, (off + len) as u32);
}
