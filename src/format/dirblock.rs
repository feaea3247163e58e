//! Directory name blocks (type TKDD): the layout and the one rule for what a name block may hold,
//! shared by the directory code (every name read), the checker and the repairer.
//!
//! After the 48-byte block header: `live` (u32, how many entries of the directory's hash tree
//! point into this block), `free_off` (u32, where the next name is appended), 8 zero bytes, then
//! name records of (name length u8, file type u8, name) from `NAME_HDR` up to `free_off`. A
//! removed entry's record stays in place (the block is freed when `live` reaches zero), so the
//! records between those referenced are dead, never reused.

use super::entryblock::{self, Kind};
use super::{Dec, FormatError};

pub(crate) const STRUCTURE: &str = "directory name block";
pub use super::entryblock::{FREE_OFF, LIVE_OFF};
/// Where the first name record starts.
pub const NAME_HDR: usize = entryblock::RECORDS_OFF;
/// A name record's header: name length and file type.
pub const RECORD_HDR: usize = 2;
const KIND: Kind = Kind {
    structure: STRUCTURE,
    record_field: "name record",
    records: "names",
    owner: "the directory's tree",
};

/// `free_off` of block `b`, checked to lie within the record area.
pub fn free_off(b: &[u8], blkno: u64) -> Result<usize, FormatError> {
    entryblock::free_off(b, blkno, STRUCTURE)
}

/// The name record at `off` of block `b`: its name and file type, checked to lie wholly between
/// the block's first record and `free_off`.
pub(crate) fn name_record(b: &[u8], blkno: u64, off: usize) -> Result<(&[u8], u8), FormatError> {
    let end = free_off(b, blkno)?;
    let d = Dec::new(b, blkno, STRUCTURE);
    entryblock::check_record_at(&d, KIND.record_field, off, RECORD_HDR, end)?;
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
    entryblock::check_refs(b, blkno, &KIND, refs, |off| {
        name_record(b, blkno, off).map(|(name, _)| RECORD_HDR + name.len())
    })
}
