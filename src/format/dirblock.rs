//! Directory name blocks (type TKDD): the layout and the one rule for what a name block may hold,
//! shared by the directory code (every name read), the checker and the repairer.
//!
//! After the 48-byte block header: `live` (u32, how many entries of the directory's hash tree
//! point into this block), `free_off` (u32, where the next name is appended), 8 zero bytes, then
//! name records of (name length u8, file type u8, name) from `NAME_HDR` up to `free_off`. A
//! removed entry's record stays in place (the block is freed when `live` reaches zero), so the
//! records between those referenced are dead, never reused.

use super::{Dec, FormatError, BLOCK_HEADER_BYTES};

pub(crate) const STRUCTURE: &str = "directory name block";
/// Offset of `live`.
pub const LIVE_OFF: usize = BLOCK_HEADER_BYTES;
/// Offset of `free_off`.
pub const FREE_OFF: usize = BLOCK_HEADER_BYTES + 4;
/// Offset of the 8 reserved bytes, zero.
const PAD_OFF: usize = BLOCK_HEADER_BYTES + 8;
/// Where the first name record starts.
pub const NAME_HDR: usize = BLOCK_HEADER_BYTES + 16;
/// A name record's header: name length and file type.
pub const RECORD_HDR: usize = 2;

/// `free_off` of block `b`, checked to lie within the record area.
pub fn free_off(b: &[u8], blkno: u64) -> Result<usize, FormatError> {
    let d = Dec::new(b, blkno, STRUCTURE);
    let end = d.u32(FREE_OFF, "free_off")? as usize;
    if end < NAME_HDR || end > b.len() {
        return Err(d.err(
            "free_off",
            format!("is {end}, outside the record area {NAME_HDR}..={}", b.len()),
        ));
    }
    Ok(end)
}

/// The name record at `off` of block `b`: its name and file type, checked to lie wholly between
/// the block's first record and `free_off`.
pub(crate) fn name_record(b: &[u8], blkno: u64, off: usize) -> Result<(&[u8], u8), FormatError> {
    let end = free_off(b, blkno)?;
    let d = Dec::new(b, blkno, STRUCTURE);
    if off < NAME_HDR || off + RECORD_HDR > end {
        return Err(d.err(
            "name record",
            format!("offset {off} is outside the records {NAME_HDR}..{end}"),
        ));
    }
    let len = d.u8(off, "name length")? as usize;
    let ftype = d.u8(off + 1, "file type")?;
    if len == 0 || off + RECORD_HDR + len > end {
        return Err(d.err(
            "name length",
            format!("record at {off} of {len} bytes runs past {end} (or is empty)"),
        ));
    }
    Ok((d.slice_at(off + RECORD_HDR, len, "name")?, ftype))
}

/// The name record at `off` as far as the block itself bounds it, `free_off` aside: what a
/// repair can still salvage from a block whose header is damaged (xfs_repair likewise salvages
/// the entries of a directory block it rebuilds).
pub(crate) fn salvage_record(b: &[u8], blkno: u64, off: usize) -> Result<(&[u8], u8), FormatError> {
    let d = Dec::new(b, blkno, STRUCTURE);
    if off < NAME_HDR {
        return Err(d.err(
            "name record",
            format!("offset {off} is inside the block header"),
        ));
    }
    let len = d.u8(off, "name length")? as usize;
    let ftype = d.u8(off + 1, "file type")?;
    if len == 0 {
        return Err(d.err("name length", format!("record at {off} is empty")));
    }
    Ok((d.slice_at(off + RECORD_HDR, len, "name")?, ftype))
}

/// Checks name block `b` against the offsets of the records the directory's tree points at in
/// it (`refs`, any order): `live` counts exactly them, each lies inside the records, no two
/// overlap, the reserved bytes are zero. A `live` that undercounts would free the block while
/// entries still point into it; a `free_off` below a record would let the next name overwrite it.
pub fn check_name_block(b: &[u8], blkno: u64, refs: &mut [usize]) -> Result<(), FormatError> {
    let d = Dec::new(b, blkno, STRUCTURE);
    let live = d.u32(LIVE_OFF, "live")? as usize;
    let pad = d.u64(PAD_OFF, "reserved")?;
    if pad != 0 {
        return Err(d.err("reserved", format!("is {pad:#x}, expected 0")));
    }
    if live != refs.len() {
        return Err(d.err(
            "live",
            format!(
                "counts {live} names, the directory's tree points at {}",
                refs.len()
            ),
        ));
    }
    refs.sort_unstable();
    let mut prev_end = NAME_HDR;
    for &off in refs.iter() {
        let (name, _) = name_record(b, blkno, off)?;
        if off < prev_end {
            return Err(d.err(
                "name record",
                format!("record at {off} overlaps the one before it (ending at {prev_end})"),
            ));
        }
        prev_end = off + RECORD_HDR + name.len();
    }
    Ok(())
}
