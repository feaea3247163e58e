//! The attribute hash tree's blocks: entry blocks (type TKXE) and remote value blocks (type TKXR),
//! with the limits on attributes, the rule for which values live in an entry block, and the one
//! decoder every reader uses (getxattr, listxattr, the checker, the repairer, `ticketfs db`).
//!
//! An inode whose attributes outgrow its one xattr block (`super::xattrblock`) keeps them as a
//! hash B+tree (node type TKBA, the generic node layout, owner = the inode) keyed (hash of the
//! name, collision index) with value (entry location = entry block << 16 | offset, 0), as a
//! directory keeps its names (`super::records::AttrRec`).
//!
//! **Entry block** (TKXE, owner = the inode). After the 48-byte block header, the same 16-byte
//! header as a directory name block: `live` (u32 at 48: records the tree points at), `free_off`
//! (u32 at 52: where the next record is appended), 8 zero bytes; then records from 64 up to
//! `free_off`:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | name length, 1..=255 |
//! | 1 | 1 | flags: bit 0 REMOTE (the value is in remote blocks), bit 1 INCOMPLETE (its remote blocks are being written or freed: not an attribute yet, or no longer); no other bit |
//! | 2 | 4 | value length, 0..=65536 |
//! | 6 | name length | name |
//! | 6 + name length | value length, or 8 | the value; REMOTE: its first remote block (u64) |
//!
//! A value is stored in the record when the whole record takes at most [`local_max`] bytes,
//! otherwise in remote blocks: which one is decided by the lengths alone, so a flag that
//! disagrees with them is damage. A record stays in place when its attribute is removed or
//! replaced (the block is freed when `live` reaches zero): dead records are never reused.
//! INCOMPLETE is set only with REMOTE: such a record is in the tree but no reader sees it (the
//! value of a set spanning several transactions, or of a removal freeing it run by run); its
//! blocks are the inode's, and the inode's next change of that name, or its freeing, frees them.
//!
//! **Remote value block** (TKXR, owner = the inode). A value too large for its record lives in
//! [`remote_blocks`] blocks, the value's bytes in order, in one or more runs of consecutive
//! blocks. After the block header: the offset in the value of this block's bytes (u32 at 48),
//! how many bytes it holds (u32 at 52), `next` (u64 at 56); the bytes from 64. `next` is 0 when
//! the value goes on in the following block or ends in this one (every value of version 2 is one
//! run, all zeros here), the block holding the value's next bytes when they start another run,
//! and [`NEXT_UNWRITTEN`] in the last block written so far of an INCOMPLETE record.

use super::entryblock::{self, Kind};
use super::name::name_hash;
use super::{Dec, FormatError, BLOCK_HEADER_BYTES};

/// Longest attribute name, as Linux XATTR_NAME_MAX (and the one-byte name length of a record).
pub const XATTR_NAME_MAX: usize = 255;
/// Largest attribute value, as Linux XATTR_SIZE_MAX: the kernel refuses larger ones before
/// asking, and the reservation of a setxattr is sized for a value of this many bytes.
pub const XATTR_SIZE_MAX: usize = 65536;
/// Largest list of names listxattr returns, as Linux XATTR_LIST_MAX: the kernel never asks for
/// more, so a longer list is answered E2BIG (as XFS's is through the VFS).
pub const XATTR_LIST_MAX: usize = 65536;
/// Most attributes one inode may hold: bounds the attribute tree's height in the reservation
/// table (the disk runs out first: each takes at least a record of 7 bytes and a tree record).
pub const XATTR_ENTRIES_MAX: u64 = 1 << 32;
/// Attributes of one name hash an inode may hold: bounds the collision index of a key.
pub const XATTR_COLLISIONS_MAX: u64 = 1 << 31;

pub(crate) const STRUCTURE: &str = "xattr entry block";
pub(crate) const REMOTE_STRUCTURE: &str = "xattr remote value block";
pub use super::entryblock::{FREE_OFF, LIVE_OFF, RECORDS_OFF};
const KIND: Kind = Kind {
    structure: STRUCTURE,
    record_field: "record",
    records: "records",
    owner: "the attribute tree",
};
/// A record's header: name length u8, flags u8, value length u32.
pub const RECORD_HDR: usize = 6;
/// The flag of a record whose value is in remote blocks.
pub const FLAG_REMOTE: u8 = 1;
/// The flag of a remote record whose blocks are being written or freed (no reader sees it).
pub const FLAG_INCOMPLETE: u8 = 2;
/// Offset of the flags in a record.
pub const RECORD_FLAGS_OFF: usize = 1;
/// `next` of the last block written so far of an INCOMPLETE record's value.
pub const NEXT_UNWRITTEN: u64 = u64::MAX;
/// A remote record's value field: its first remote block.
pub const REMOTE_REF_BYTES: usize = 8;

/// Offset of a remote block's `value_off`.
pub const REMOTE_VALUE_OFF: usize = BLOCK_HEADER_BYTES;
/// Offset of a remote block's `bytes`.
pub const REMOTE_BYTES_OFF: usize = BLOCK_HEADER_BYTES + 4;
/// Offset of a remote block's `next`.
pub const REMOTE_NEXT_OFF: usize = BLOCK_HEADER_BYTES + 8;
/// Where a remote block's bytes start.
pub const REMOTE_DATA_OFF: usize = BLOCK_HEADER_BYTES + 16;

/// Largest record holding its value, in a block of `bs` bytes: half the record area, so a
/// block holds at least two and a replaced large value leaves at most half a block dead; but
/// never less than the largest remote record, so a value shorter than its remote reference is
/// always kept in the record.
pub fn local_max(bs: usize) -> usize {
    ((bs - RECORDS_OFF) / 2).max(RECORD_HDR + XATTR_NAME_MAX + REMOTE_REF_BYTES)
}
const _: () = assert!(RECORDS_OFF + RECORD_HDR + XATTR_NAME_MAX + REMOTE_REF_BYTES <= 512);

/// Whether a value of `value_len` under a name of `name_len` is kept in its record.
pub fn is_local(bs: usize, name_len: usize, value_len: usize) -> bool {
    RECORD_HDR + name_len + value_len <= local_max(bs)
}

/// Bytes the record of such an attribute takes.
pub fn record_len(bs: usize, name_len: usize, value_len: usize) -> usize {
    if is_local(bs, name_len, value_len) {
        RECORD_HDR + name_len + value_len
    } else {
        RECORD_HDR + name_len + REMOTE_REF_BYTES
    }
}

/// Value bytes one remote block holds.
pub fn remote_payload(bs: usize) -> usize {
    bs - REMOTE_DATA_OFF
}

/// Remote blocks a value of `value_len` bytes takes (none when it is kept in its record), in
/// one run or several.
pub fn remote_blocks(bs: usize, name_len: usize, value_len: usize) -> u64 {
    if is_local(bs, name_len, value_len) {
        0
    } else {
        value_len.div_ceil(remote_payload(bs)) as u64
    }
}

/// Most remote blocks any value takes in blocks of `bs` bytes.
pub fn remote_blocks_max(bs: usize) -> u64 {
    XATTR_SIZE_MAX.div_ceil(remote_payload(bs)) as u64
}

/// Where a record's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored<'a> {
    /// In the record.
    Local(&'a [u8]),
    /// In remote blocks from this one on.
    Remote(u64),
}

/// One record of an entry block, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub name: &'a [u8],
    pub value_len: usize,
    pub value: Stored<'a>,
    /// False for an INCOMPLETE record: no reader sees it.
    pub complete: bool,
}

impl Record<'_> {
    /// Bytes the record takes in its block.
    pub fn bytes(&self) -> usize {
        RECORD_HDR
            + self.name.len()
            + match self.value {
                Stored::Local(v) => v.len(),
                Stored::Remote(_) => REMOTE_REF_BYTES,
            }
    }

    /// Its first remote block, None when local.
    pub fn remote_first(&self) -> Option<u64> {
        match self.value {
            Stored::Local(_) => None,
            Stored::Remote(b) => Some(b),
        }
    }
}

/// `free_off` of entry block `b`, checked to lie within the record area.
pub fn free_off(b: &[u8], blkno: u64) -> Result<usize, FormatError> {
    entryblock::free_off(b, blkno, STRUCTURE)
}

/// The record at `off` of entry block `b` (a whole block: its length is the block size), checked:
/// wholly between the first record and `free_off`, a stored attribute name (`xattrblock`'s rule),
/// no unknown flag, a value of at most [`XATTR_SIZE_MAX`] kept where [`is_local`] says.
pub fn record(b: &[u8], blkno: u64, off: usize) -> Result<Record<'_>, FormatError> {
    let end = free_off(b, blkno)?;
    record_within(b, blkno, off, end)
}

/// The record at `off` as far as the block itself bounds it, `free_off` aside: what a repair can
/// still read from a block whose header is damaged.
pub fn salvage_record(b: &[u8], blkno: u64, off: usize) -> Result<Record<'_>, FormatError> {
    record_within(b, blkno, off, b.len())
}

fn record_within(b: &[u8], blkno: u64, off: usize, end: usize) -> Result<Record<'_>, FormatError> {
    let d = Dec::new(b, blkno, STRUCTURE);
    entryblock::check_record_at(&d, KIND.record_field, off, RECORD_HDR, end)?;
    let nl = d.u8(off, "name length")? as usize;
    let flags = d.u8(off + 1, "flags")?;
    let vl = d.u32(off + 2, "value length")? as usize;
    if flags & !(FLAG_REMOTE | FLAG_INCOMPLETE) != 0 {
        return Err(d.err(
            "flags",
            format!("record at {off}: unknown flags {flags:#x}"),
        ));
    }
    if vl > XATTR_SIZE_MAX {
        return Err(d.err(
            "value length",
            format!("record at {off}: {vl} bytes, more than {XATTR_SIZE_MAX}"),
        ));
    }
    let local = is_local(b.len(), nl, vl);
    if local == (flags & FLAG_REMOTE != 0) {
        return Err(d.err(
            "flags",
            format!(
                "record at {off}: a value of {vl} bytes under a name of {nl} is {}, flagged {}",
                if local { "local" } else { "remote" },
                if local { "remote" } else { "local" }
            ),
        ));
    }
    if flags & FLAG_INCOMPLETE != 0 && local {
        return Err(d.err(
            "flags",
            format!("record at {off}: a local value flagged incomplete"),
        ));
    }
    let len = record_len(b.len(), nl, vl);
    if nl == 0 || off + len > end {
        return Err(d.err(
            "name length",
            format!("record at {off} of {len} bytes runs past {end} (or has no name)"),
        ));
    }
    let name = d.slice_at(off + RECORD_HDR, nl, "name")?;
    if let Some(why) = super::xattrblock::name_problem(name) {
        return Err(d.err("name", format!("{:?} {why}", String::from_utf8_lossy(name))));
    }
    let at = off + RECORD_HDR + nl;
    let value = if local {
        Stored::Local(d.slice_at(at, vl, "value")?)
    } else {
        let first = d.u64(at, "remote block")?;
        if first == 0 {
            return Err(d.err("remote block", format!("record at {off}: is 0")));
        }
        Stored::Remote(first)
    };
    Ok(Record {
        name,
        value_len: vl,
        value,
        complete: flags & FLAG_INCOMPLETE == 0,
    })
}

/// Checks entry block `b` against the offsets of the records the attribute tree points at in it
/// (`refs`, any order): `live` counts exactly them, each is a valid record, no two overlap, the
/// reserved bytes are zero (`entryblock::check_refs`, as for a directory's name block).
pub fn check_entry_block(b: &[u8], blkno: u64, refs: &mut [usize]) -> Result<(), FormatError> {
    entryblock::check_refs(b, blkno, &KIND, refs, |off| {
        Ok(record(b, blkno, off)?.bytes())
    })
}

/// Checks a record's key: its name hashes to the key's hash (else no lookup finds it).
pub fn key_problem(name: &[u8], hash: u64) -> Option<String> {
    let h = name_hash(name);
    (h != hash).then(|| {
        format!(
            "{:?} hashes to {h:#x}, filed under {hash:#x}",
            String::from_utf8_lossy(name)
        )
    })
}

/// Where a value goes on after one of its remote blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// This block holds the value's last bytes.
    End,
    /// In this block (the following one, or the first of another run).
    At(u64),
    /// Not written yet: the block is the last written of an INCOMPLETE record.
    Unwritten,
}

/// The bytes of remote block `b` (number `blkno`), the `k`-th of a value of `value_len` bytes,
/// checked: its offset and length are where the `k`-th block of such a value must be; and where
/// the value goes on. `next` is 0 in the block holding the value's last bytes and never names the
/// block itself; [`NEXT_UNWRITTEN`] is for the caller to accept (an INCOMPLETE record) or not.
pub fn remote_data(
    b: &[u8],
    blkno: u64,
    k: u64,
    value_len: usize,
) -> Result<(&[u8], Next), FormatError> {
    let d = Dec::new(b, blkno, REMOTE_STRUCTURE);
    let per = remote_payload(b.len());
    let want_off = (k as usize).saturating_mul(per);
    let want_bytes = value_len.saturating_sub(want_off).min(per);
    let off = d.u32(REMOTE_VALUE_OFF, "value_off")? as usize;
    let bytes = d.u32(REMOTE_BYTES_OFF, "bytes")? as usize;
    if off != want_off || bytes != want_bytes || want_bytes == 0 {
        return Err(d.err(
            "value_off",
            format!(
                "holds {bytes} bytes at {off} of the value, block {k} of a value of {value_len} \
                 bytes holds {want_bytes} at {want_off}"
            ),
        ));
    }
    let last = want_off + want_bytes == value_len;
    let next = match d.u64(REMOTE_NEXT_OFF, "next")? {
        0 if last => Next::End,
        0 => Next::At(
            blkno
                .checked_add(1)
                .ok_or_else(|| d.err("next", "no following block"))?,
        ),
        n if last => {
            return Err(d.err(
                "next",
                format!("is {n:#x} in the block holding the value's last bytes"),
            ))
        }
        NEXT_UNWRITTEN => Next::Unwritten,
        n if n == blkno => return Err(d.err("next", "names the block itself")),
        n => Next::At(n),
    };
    Ok((d.slice_at(REMOTE_DATA_OFF, bytes, "data")?, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_value_is_remote_and_fits_its_blocks() {
        for bs in [512usize, 1024, 4096, 65536] {
            assert!(!is_local(bs, 1, XATTR_SIZE_MAX));
            assert!(is_local(bs, XATTR_NAME_MAX, REMOTE_REF_BYTES));
            let n = remote_blocks(bs, 1, XATTR_SIZE_MAX);
            assert_eq!(n, remote_blocks_max(bs));
            assert!(n as usize * remote_payload(bs) >= XATTR_SIZE_MAX);
            assert!(RECORDS_OFF + local_max(bs) <= bs);
        }
    }
}
