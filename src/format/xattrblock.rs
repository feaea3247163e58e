//! Extended-attribute blocks (type TKXA): the layout, the rule for names, and the one decoder
//! every reader uses (the mount's getxattr and setxattr, the checker, the repairer).
//!
//! After the 48-byte block header: `count` (u16), `used` (u16, bytes of entries after this
//! 16-byte block header), 12 zero bytes; then `count` entries of (name length u8, value length
//! u16, name, value), packed: `used` is exactly the sum of the entries' lengths, so a damaged
//! count or length cannot silently hide an attribute or invent one.

use super::{Dec, FormatError, BLOCK_HEADER_BYTES};

pub(crate) const STRUCTURE: &str = "xattr block";
pub const COUNT_OFF: usize = BLOCK_HEADER_BYTES;
pub(crate) const USED_OFF: usize = BLOCK_HEADER_BYTES + 2;
const PAD_OFF: usize = BLOCK_HEADER_BYTES + 4;
const PAD_BYTES: usize = 12;
/// Where the first entry starts.
pub(crate) const ENTRIES_OFF: usize = BLOCK_HEADER_BYTES + 16;
/// An entry's header: name length u8, value length u16.
pub(crate) const ENTRY_HDR: usize = 3;

/// One stored attribute: (name, value), borrowed from the block.
pub(crate) type Entry<'a> = (&'a [u8], &'a [u8]);

/// Bytes one entry takes.
pub(crate) fn entry_len(name: &[u8], value: &[u8]) -> usize {
    ENTRY_HDR + name.len() + value.len()
}

/// The attribute namespaces ticketfs stores (as the request layer accepts them): `user.`,
/// `trusted.`, `security.`. (`system.` names are the kernel's, POSIX ACLs among them: not
/// supported yet.)
pub(crate) const NAMESPACES: [&[u8]; 3] = [b"user.", b"trusted.", b"security."];

/// Why `name` cannot be a stored attribute's name: the one rule for setxattr and every reader.
pub fn name_problem(name: &[u8]) -> Option<&'static str> {
    if name.len() > u8::MAX as usize {
        Some("is longer than 255 bytes")
    } else if name.contains(&0) {
        Some("contains a NUL byte")
    } else if !NAMESPACES.iter().any(|ns| name.starts_with(ns))
        && name != super::acl::ACCESS
        && name != super::acl::DEFAULT
    {
        // A bare namespace ("trusted.") is allowed here: setxattr stored one before it refused
        // them, and an image holding it must stay readable (`Fs::setxattr` refuses new ones).
        Some("is in no supported namespace (user., trusted., security., the two POSIX ACLs)")
    } else {
        None
    }
}

/// The entries of block `b` that can still be read, for a repair (`decode` refused the block):
/// walked from the first up to the end of the block rather than `used`, stopping at an entry
/// with no name (the zeros past the last entry: a write clears the bytes past its entries) or
/// one running past the block, since the next entry is found only through this one's lengths.
/// An entry with an invalid name, or a name already seen, is left out with the reason; its
/// lengths still lead to the next. `count` and `used`, which may be what is damaged, are not
/// trusted.
pub fn salvage(b: &[u8], blkno: u64) -> (Vec<Entry<'_>>, Vec<String>) {
    let d = Dec::new(b, blkno, STRUCTURE);
    let (mut out, mut dropped): (Vec<Entry<'_>>, Vec<String>) = (Vec::new(), Vec::new());
    let mut at = ENTRIES_OFF;
    while at + ENTRY_HDR <= b.len() {
        let (Ok(nl), Ok(vl)) = (d.u8(at, "name length"), d.u16(at + 1, "value length")) else {
            break;
        };
        let (nl, vl) = (nl as usize, vl as usize);
        let next = at + ENTRY_HDR + nl + vl;
        if nl == 0 {
            break;
        }
        if next > b.len() {
            dropped.push(format!(
                "the entry at {at} (name {nl}, value {vl} bytes) runs past the block, and any after it"
            ));
            break;
        }
        let name = &b[at + ENTRY_HDR..at + ENTRY_HDR + nl];
        let shown = String::from_utf8_lossy(name);
        if let Some(why) = name_problem(name) {
            dropped.push(format!("the entry at {at}: {shown:?} {why}"));
        } else if out.iter().any(|(n, _)| *n == name) {
            dropped.push(format!("the entry at {at}: {shown:?} a second time"));
        } else {
            out.push((name, &b[at + ENTRY_HDR + nl..next]));
        }
        at = next;
    }
    (out, dropped)
}

/// The (name, value) entries of block `b`, in stored order, checked: each inside the used
/// bytes, names non-empty and distinct, the entries exactly filling `used`, the reserved bytes
/// zero.
pub fn decode(b: &[u8], blkno: u64) -> Result<Vec<Entry<'_>>, FormatError> {
    let d = Dec::new(b, blkno, STRUCTURE);
    let count = d.u16(COUNT_OFF, "count")? as usize;
    let used = d.u16(USED_OFF, "used")? as usize;
    if d.slice_at(PAD_OFF, PAD_BYTES, "reserved")?
        .iter()
        .any(|&x| x != 0)
    {
        return Err(d.err("reserved", "is not zero"));
    }
    let end = ENTRIES_OFF + used;
    if end > b.len() {
        return Err(d.err(
            "used",
            format!("{used} bytes do not fit a block of {}", b.len()),
        ));
    }
    // Each entry takes at least ENTRY_HDR + 1 bytes: a count beyond that is damage, and bounds
    // the allocation below.
    if count > used / (ENTRY_HDR + 1) {
        return Err(d.err(
            "count",
            format!("{count} entries cannot fit in {used} bytes"),
        ));
    }
    let mut out = Vec::with_capacity(count);
    let mut at = ENTRIES_OFF;
    for _ in 0..count {
        let nl = d.u8(at, "name length")? as usize;
        let vl = d.u16(at + 1, "value length")? as usize;
        let next = at + ENTRY_HDR + nl + vl;
        if nl == 0 || next > end {
            return Err(d.err(
                "name length",
                format!("entry at {at} (name {nl}, value {vl} bytes) runs past the used bytes"),
            ));
        }
        let name = d.slice_at(at + ENTRY_HDR, nl, "name")?;
        if let Some(why) = name_problem(name) {
            return Err(d.err("name", format!("{:?} {why}", String::from_utf8_lossy(name))));
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(d.err(
                "name",
                format!("{:?} is stored twice", String::from_utf8_lossy(name)),
            ));
        }
        out.push((name, d.slice_at(at + ENTRY_HDR + nl, vl, "value")?));
        at = next;
    }
    if at != end {
        return Err(d.err(
            "used",
            format!(
                "says {used} bytes, the {count} entries take {}",
                at - ENTRIES_OFF
            ),
        ));
    }
    Ok(out)
}
