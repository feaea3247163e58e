//! POSIX access control lists, stored as the values of the extended attributes
//! `system.posix_acl_access` and `system.posix_acl_default` in the kernel's own encoding
//! (include/uapi/linux/posix_acl_xattr.h), so the bytes a setfacl hands the kernel are the bytes
//! stored and given back:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | version: 2 |
//! | 4 + 8n | 2 | entry n's tag: 0x01 owner, 0x02 named user, 0x04 owning group, 0x08 named group, 0x10 mask, 0x20 others |
//! | 6 + 8n | 2 | its permissions: read 4, write 2, execute 1 |
//! | 8 + 8n | 4 | its user or group ID (named entries; 0xFFFFFFFF in the others) |
//!
//! A valid list, as the kernel's posix_acl_valid: one owner, one owning group and one others
//! entry; a mask whenever there is a named entry, at most one; entries sorted by tag, named ones
//! by ID, no ID twice; no permission bit beyond rwx. The checker, setxattr and the daemon's
//! inheritance all use [`decode`] for that one rule.

/// The attribute names.
pub const ACCESS: &[u8] = b"system.posix_acl_access";
pub const DEFAULT: &[u8] = b"system.posix_acl_default";
const VERSION: u32 = 2;
const HEADER_BYTES: usize = 4;
const ENTRY_BYTES: usize = 8;
/// The ID field of the entries that name nobody.
const UNDEFINED_ID: u32 = u32::MAX;
/// Most entries in one list: the kernel's limit for a list it passes to a filesystem
/// (posix_acl_from_xattr refuses more than fit a page at 8 bytes each; ext4 and XFS cap lower).
pub const ENTRIES_MAX: usize = 1024;

pub const USER_OBJ: u16 = 0x01;
pub const USER: u16 = 0x02;
pub const GROUP_OBJ: u16 = 0x04;
pub const GROUP: u16 = 0x08;
pub const MASK: u16 = 0x10;
pub const OTHER: u16 = 0x20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AclEntry {
    pub tag: u16,
    pub perm: u16,
    pub id: u32,
}

/// A decoded, valid list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl(pub Vec<AclEntry>);

/// Decodes and validates `v`; the error names what is wrong.
pub fn decode(v: &[u8]) -> Result<Acl, String> {
    if v.len() < HEADER_BYTES || !(v.len() - HEADER_BYTES).is_multiple_of(ENTRY_BYTES) {
        return Err(format!(
            "{} bytes: not a 4-byte header and 8-byte entries",
            v.len()
        ));
    }
    let version = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
    if version != VERSION {
        return Err(format!("version {version}, not {VERSION}"));
    }
    let n = (v.len() - HEADER_BYTES) / ENTRY_BYTES;
    if n > ENTRIES_MAX {
        return Err(format!("{n} entries, more than {ENTRIES_MAX}"));
    }
    let entries: Vec<AclEntry> = v[HEADER_BYTES..]
        .chunks_exact(ENTRY_BYTES)
        .map(|e| AclEntry {
            tag: u16::from_le_bytes([e[0], e[1]]),
            perm: u16::from_le_bytes([e[2], e[3]]),
            id: u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
        })
        .collect();
    let mut prev: Option<(u16, u32)> = None;
    let (mut named, mut count) = (false, [0usize; 6]);
    for (k, e) in entries.iter().enumerate() {
        if e.perm & !7 != 0 {
            return Err(format!("entry {k}: permissions {:#o} beyond rwx", e.perm));
        }
        let slot = match e.tag {
            USER_OBJ => 0,
            USER => 1,
            GROUP_OBJ => 2,
            GROUP => 3,
            MASK => 4,
            OTHER => 5,
            t => return Err(format!("entry {k}: tag {t:#x} is no ACL tag")),
        };
        count[slot] += 1;
        let is_named = matches!(e.tag, USER | GROUP);
        named |= is_named;
        if !is_named && e.id != UNDEFINED_ID {
            return Err(format!("entry {k}: an unnamed entry with ID {}", e.id));
        }
        let key = (e.tag, if is_named { e.id } else { 0 });
        if prev.is_some_and(|p| p >= key) {
            return Err(format!("entry {k}: out of order or repeated"));
        }
        prev = Some(key);
    }
    if count[0] != 1 || count[2] != 1 || count[5] != 1 {
        return Err("not exactly one owner, owning-group and others entry".into());
    }
    if named && count[4] != 1 {
        return Err("named entries without a mask".into());
    }
    Ok(Acl(entries))
}

/// The mode an inode keeps when fsck drops its access list (invalid, or its value unreadable:
/// `value` None): permission bits that give nobody more than the list did, so that losing it
/// never widens access.
///
/// With a list, the group bits of the mode are its mask, which limits the named entries and the
/// owning group's; without it they are the owning group's, and anyone no entry names falls to the
/// others bits. So the owning group may gain (a mask wider than the owning group's entry), and so
/// may a named user or group given less than the group or others bits (an entry that denies).
/// The group bits are therefore narrowed to what the owning group and every named user had (a
/// named user may belong to the owning group), and the others bits to what every named entry
/// had; a named entry's permissions are its own within the mask. The owner's bits are the list's
/// owner entry already. This only clears bits, so a list that merely looks like one (its version
/// or order wrong: what is read from it may be wrong) can narrow too much, never widen. A value
/// that cannot be read as entries at all (`value` None, a length not 4 + 8n, a tag no list has)
/// says nothing, and the group and others bits are cleared.
pub fn mode_after_loss(mode: u32, value: Option<&[u8]>) -> u32 {
    let entries = value.and_then(|v| {
        if v.len() < HEADER_BYTES || !(v.len() - HEADER_BYTES).is_multiple_of(ENTRY_BYTES) {
            return None;
        }
        let list: Vec<(u16, u32)> = v[HEADER_BYTES..]
            .chunks_exact(ENTRY_BYTES)
            .map(|e| {
                (
                    u16::from_le_bytes([e[0], e[1]]),
                    u16::from_le_bytes([e[2], e[3]]) as u32 & 7,
                )
            })
            .collect();
        let known = [USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER];
        list.iter().all(|(t, _)| known.contains(t)).then_some(list)
    });
    let Some(entries) = entries else {
        return mode & !0o077;
    };
    let mask = entries
        .iter()
        .filter(|e| e.0 == MASK)
        .fold(7, |m, e| m & e.1);
    let (mut group, mut other) = ((mode >> 3) & 7, mode & 7);
    let mut owning_group = false;
    for &(tag, perm) in &entries {
        match tag {
            GROUP_OBJ => {
                owning_group = true;
                group &= perm & mask;
            }
            USER => {
                group &= perm & mask;
                other &= perm & mask;
            }
            GROUP => other &= perm & mask,
            _ => {}
        }
    }
    if !owning_group {
        group = 0;
    }
    mode & !0o077 | group << 3 | other
}

impl Acl {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_BYTES + self.0.len() * ENTRY_BYTES);
        v.extend_from_slice(&VERSION.to_le_bytes());
        for e in &self.0 {
            v.extend_from_slice(&e.tag.to_le_bytes());
            v.extend_from_slice(&e.perm.to_le_bytes());
            v.extend_from_slice(&e.id.to_le_bytes());
        }
        v
    }

    fn get_mut(&mut self, tag: u16) -> Option<&mut AclEntry> {
        self.0.iter_mut().find(|e| e.tag == tag)
    }

    fn perm(&self, tag: u16) -> u32 {
        self.0
            .iter()
            .find(|e| e.tag == tag)
            .map_or(0, |e| e.perm as u32)
    }

    /// The permission bits of a mode this list implies: the owner's, the mask's (the owning
    /// group's without one) and the others' (the kernel's posix_acl_equiv_mode).
    pub fn mode_bits(&self) -> u32 {
        let group = if self.0.iter().any(|e| e.tag == MASK) {
            self.perm(MASK)
        } else {
            self.perm(GROUP_OBJ)
        };
        self.perm(USER_OBJ) << 6 | group << 3 | self.perm(OTHER)
    }

    /// Does the mode say all of it (only the three entries a mode has)?
    pub fn is_mode_only(&self) -> bool {
        self.0.len() == 3
    }

    /// A chmod to `mode`: the owner, mask (owning group without one) and others entries take
    /// its bits; named entries keep theirs, still limited by the mask (posix_acl_chmod).
    pub fn chmod(&mut self, mode: u32) {
        let bits = |shift: u32| ((mode >> shift) & 7) as u16;
        if let Some(e) = self.get_mut(USER_OBJ) {
            e.perm = bits(6);
        }
        let group_tag = if self.0.iter().any(|e| e.tag == MASK) {
            MASK
        } else {
            GROUP_OBJ
        };
        if let Some(e) = self.get_mut(group_tag) {
            e.perm = bits(3);
        }
        if let Some(e) = self.get_mut(OTHER) {
            e.perm = bits(0);
        }
    }

    /// A new inode's access list from its directory's default list and the mode asked for:
    /// each of the owner, mask (owning group without one) and others entries keeps only what
    /// the mode allows; returns the list and the mode's new permission bits (the kernel's
    /// posix_acl_create_masq). The caller's umask plays no part.
    pub fn create_masq(&self, mode: u32) -> (Acl, u32) {
        let mut masked = self.clone();
        let has_mask = masked.0.iter().any(|e| e.tag == MASK);
        for e in &mut masked.0 {
            let shift = match e.tag {
                USER_OBJ => 6,
                MASK => 3,
                GROUP_OBJ if !has_mask => 3,
                OTHER => 0,
                _ => continue,
            };
            e.perm &= ((mode >> shift) & 7) as u16;
        }
        let bits = masked.mode_bits();
        (masked, (mode & !0o777) | bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        Acl(entries
            .iter()
            .map(|&(tag, perm, id)| AclEntry { tag, perm, id })
            .collect())
        .encode()
    }
    const U: u32 = UNDEFINED_ID;

    #[test]
    fn valid_lists_round_trip_and_broken_ones_are_named() {
        let v = acl(&[
            (USER_OBJ, 6, U),
            (USER, 4, 1000),
            (GROUP_OBJ, 4, U),
            (MASK, 4, U),
            (OTHER, 0, U),
        ]);
        let a = decode(&v).unwrap();
        assert_eq!(a.encode(), v);
        assert_eq!(a.mode_bits(), 0o640);
        assert!(!a.is_mode_only());
        for (bad, why) in [
            (acl(&[(USER_OBJ, 6, U), (GROUP_OBJ, 4, U)]), "exactly one"),
            (
                acl(&[
                    (USER_OBJ, 6, U),
                    (USER, 4, 7),
                    (GROUP_OBJ, 4, U),
                    (OTHER, 0, U),
                ]),
                "without a mask",
            ),
            (
                acl(&[
                    (USER_OBJ, 6, U),
                    (GROUP_OBJ, 4, U),
                    (USER_OBJ, 4, U),
                    (OTHER, 0, U),
                ]),
                "out of order",
            ),
            (
                acl(&[(USER_OBJ, 8, U), (GROUP_OBJ, 4, U), (OTHER, 0, U)]),
                "beyond rwx",
            ),
            (
                acl(&[(USER_OBJ, 6, 3), (GROUP_OBJ, 4, U), (OTHER, 0, U)]),
                "unnamed",
            ),
            (
                acl(&[(USER_OBJ, 6, U), (0x40, 4, U), (OTHER, 0, U)]),
                "no ACL tag",
            ),
            (vec![2, 0, 0, 0, 1], "bytes"),
            (vec![1, 0, 0, 0], "version"),
        ] {
            let e = decode(&bad).unwrap_err();
            assert!(e.contains(why), "{e:?} should say {why:?}");
        }
    }

    #[test]
    fn losing_a_list_never_widens_the_mode() {
        // A mask wider than the owning group's entry (setfacl -m u:1000:rwx on a 640 file):
        // the group bits held rwx for the mask; the owning group had r.
        let wide_mask = acl(&[
            (USER_OBJ, 6, U),
            (USER, 7, 1000),
            (GROUP_OBJ, 4, U),
            (MASK, 7, U),
            (OTHER, 0, U),
        ]);
        assert_eq!(mode_after_loss(0o100_670, Some(&wide_mask)), 0o100_640);
        // A named user denied what the others have: the others bits go.
        let deny = acl(&[
            (USER_OBJ, 7, U),
            (USER, 0, 1000),
            (GROUP_OBJ, 5, U),
            (MASK, 5, U),
            (OTHER, 5, U),
        ]);
        assert_eq!(mode_after_loss(0o040_755, Some(&deny)), 0o040_700);
        // A named group limited by the mask: the others keep what the group had within it.
        let group = acl(&[
            (USER_OBJ, 7, U),
            (GROUP_OBJ, 5, U),
            (GROUP, 7, 50),
            (MASK, 5, U),
            (OTHER, 5, U),
        ]);
        assert_eq!(mode_after_loss(0o100_755, Some(&group)), 0o100_755);
        // Nothing readable: the group and others bits go, the rest stays.
        assert_eq!(mode_after_loss(0o102_775, None), 0o102_700);
        assert_eq!(
            mode_after_loss(0o100_775, Some(&[2, 0, 0, 0, 1])),
            0o100_700
        );
        let mut bad_tag = deny.clone();
        bad_tag[4] = 0x40;
        assert_eq!(mode_after_loss(0o100_775, Some(&bad_tag)), 0o100_700);
        // Whatever it says, only bits are cleared.
        for v in [&wide_mask, &deny, &group] {
            for m in [0o777, 0o750, 0o705, 0] {
                assert_eq!(mode_after_loss(m, Some(v)) & !m, 0);
            }
        }
    }

    #[test]
    fn chmod_and_inheritance_follow_the_kernel() {
        let mut a = decode(&acl(&[
            (USER_OBJ, 7, U),
            (GROUP_OBJ, 5, U),
            (GROUP, 7, 50),
            (MASK, 7, U),
            (OTHER, 5, U),
        ]))
        .unwrap();
        a.chmod(0o640);
        // The mask takes the group bits; the owning group and the named entry keep theirs.
        assert_eq!(a.perm(MASK), 4);
        assert_eq!(a.perm(GROUP_OBJ), 5);
        assert_eq!(a.mode_bits(), 0o640);
        let (child, mode) = a.create_masq(0o100_666);
        assert_eq!(mode, 0o100_640);
        assert_eq!(child.perm(USER_OBJ), 6);
        assert_eq!(
            child.perm(GROUP),
            7,
            "named entries are limited by the mask, not changed"
        );
    }
}
