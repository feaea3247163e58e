//! On-disk inodes: fixed 256-byte slots in inode chunk blocks.
//!
//! An inode chunk is one metadata block (type TKIN, owner = AG number): the 48-byte block header,
//! 16 zero bytes, then [`inodes_per_block`] slots. An inode number is the chunk's block number
//! shifted left by `INO_SLOT_BITS`, plus the slot, so it locates its inode with no lookup.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | magic 0x494E ("IN") |
//! | 2 | 1 | version 1 |
//! | 3 | 1 | data format: 0 local (bytes in the fork area), 1 extent list (in the fork area), 2 B+tree |
//! | 4 | 4 | mode (0: slot free) |
//! | 8 | 4 | uid | 12 | 4 | gid | 16 | 4 | nlink | 20 | 4 | generation |
//! | 24 | 8 | size |
//! | 32 | 8 | blocks: data and tree blocks allocated to the inode |
//! | 40 | 8+4 | atime seconds (i64), nanoseconds (u32) |
//! | 52 | 8+4 | mtime | 64 | 8+4 | ctime | 76 | 8+4 | crtime |
//! | 88 | 4 | flags: `FLAG_*` below (chattr's i, a, S, A, d, P); 0 in every image made before they were defined |
//! | 92 | 4 | nextents: records in the extent list or tree; bytes of local data |
//! | 96 | 8 | rdev |
//! | 104 | 8 | unlinked_next: next inode on the AG's unlinked list (0: end) |
//! | 112 | 8 | xattr block, or the attribute tree's root (0: no attributes) |
//! | 120 | 8 | data B+tree root block | 128 | 2 | its level |
//! | 130 | 1 | attribute form: 0 one xattr block (TKXA) or none, 1 attribute hash tree (TKBA) |
//! | 131 | 1 | attribute tree's root level (0 in the block form) |
//! | 132 | 4 | projid: project ID (FS_IOC_FSSETXATTR's fsx_projid); zero, project 0, in earlier images |
//! | 136 | 120 | fork area: local bytes, or up to 5 extents of 24 bytes (file block u64, start u64, length u32, flags u32) |

use super::{plain_fields, Dec, Enc, FormatError, BLOCK_HEADER_BYTES};

pub const INODE_BYTES: usize = 256;
pub(crate) const INODE_MAGIC: u16 = 0x494E;
/// Slots start after the block header and 16 bytes kept for the chunk's own use.
pub const CHUNK_SLOTS_OFFSET: usize = BLOCK_HEADER_BYTES + 16;
/// Bits of an inode number that name the slot; also bounds slots per chunk (a u64 free mask).
pub(crate) const INO_SLOT_BITS: u32 = 6;
/// Where the project ID lives: the last four of the six bytes that were zero before it.
pub(crate) const PROJID_OFFSET: usize = 132;
pub const FORK_OFFSET: usize = 136;
const _: () = assert!(PROJID_OFFSET + 4 == FORK_OFFSET);
pub(crate) const FORK_BYTES: usize = INODE_BYTES - FORK_OFFSET;
pub(crate) const EXTENT_BYTES: usize = 24;
/// Extents that fit in the fork area before the map becomes a B+tree.
pub(crate) const INLINE_EXTENTS: usize = FORK_BYTES / EXTENT_BYTES;
const _: () = assert!(INLINE_EXTENTS == 5);

/// Inodes in a chunk block of `bs` bytes: as many slots as fit, at most 64 (the free mask).
pub fn inodes_per_block(bs: u32) -> usize {
    ((bs as usize - CHUNK_SLOTS_OFFSET) / INODE_BYTES).min(1 << INO_SLOT_BITS)
}

pub fn ino_of(chunk_blkno: u64, slot: usize) -> u64 {
    chunk_blkno << INO_SLOT_BITS | slot as u64
}

/// (chunk block, slot) of an inode number.
pub fn ino_split(ino: u64) -> (u64, usize) {
    (
        ino >> INO_SLOT_BITS,
        (ino & ((1 << INO_SLOT_BITS) - 1)) as usize,
    )
}

/// Byte range of `slot` in its chunk block.
pub fn slot_range(slot: usize) -> std::ops::Range<usize> {
    CHUNK_SLOTS_OFFSET + slot * INODE_BYTES..CHUNK_SLOTS_OFFSET + (slot + 1) * INODE_BYTES
}

/// The first format version whose inodes may keep their attributes in the tree form: under a
/// superblock of an earlier version such an inode is damage to the superblock (an older
/// ticketfs would take the tree for an xattr block), which fsck's repair mends by recording this
/// version, as a read-write mount does before it makes the first tree.
pub(crate) const XATTR_TREE_VERSION: u32 = 2;
const _: () = assert!(XATTR_TREE_VERSION <= super::FORMAT_VERSION);

/// Why a superblock of format `version` cannot stand over inode `ino` (`i`): its attributes are
/// in a form that version does not have. The one rule for the checker and the repairer.
pub(crate) fn version_problem(version: u32, ino: u64, i: &Inode) -> Option<String> {
    (i.xattr_form == XattrForm::Tree && version < XATTR_TREE_VERSION).then(|| {
        format!(
            "version {version}, but inode {ino} keeps its attributes in a tree, which only \
             version {XATTR_TREE_VERSION} has"
        )
    })
}

/// An inode's attribute fields: root (`xattr_blk`), form, level.
type XattrFields = (u64, XattrForm, u16);

/// How an inode keeps its extended attributes (XFS's attribute fork forms, two of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XattrForm {
    /// All in one xattr block (`xattr_blk`, 0: none): the small case, and every version 1 inode.
    #[default]
    Block,
    /// A hash B+tree rooted at `xattr_blk`, entry blocks and remote value blocks.
    Tree,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataFormat {
    #[default]
    Local,
    Extents,
    Btree,
}

/// A timestamp: seconds and nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Time {
    pub sec: i64,
    pub nsec: u32,
}

/// The file type bits of a mode and each type (as in stat(2)): stored in the inode's mode.
pub const S_IFMT: u32 = 0o170000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub(crate) const S_IFIFO: u32 = 0o010000;
pub(crate) const S_IFSOCK: u32 = 0o140000;
pub(crate) const S_IFCHR: u32 = 0o020000;
pub(crate) const S_IFBLK: u32 = 0o060000;
pub(crate) const S_ISUID: u32 = 0o4000;
pub(crate) const S_ISGID: u32 = 0o2000;
pub(crate) const S_ISVTX: u32 = 0o1000;

/// The readdir type (DT_*) of a mode.
pub(crate) fn dtype(mode: u32) -> u8 {
    match mode & S_IFMT {
        S_IFDIR => 4,
        S_IFREG => 8,
        S_IFLNK => 10,
        S_IFIFO => 1,
        S_IFSOCK => 12,
        S_IFCHR => 2,
        S_IFBLK => 6,
        _ => 0,
    }
}

/// Every bit a mode may have: the file type (S_IFMT) and the permission, set-id and sticky bits.
pub(crate) const MODE_BITS: u32 = 0o177777;
/// The file types an inode may have (S_IFREG, S_IFDIR, S_IFLNK, S_IFIFO, S_IFSOCK, S_IFCHR,
/// S_IFBLK).
pub(crate) const FILE_TYPES: [u32; 7] = [
    S_IFREG, S_IFDIR, S_IFLNK, S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK,
];

/// Why an in-use inode's mode is invalid: the one rule for the checker and the repairer.
pub(crate) fn mode_problem(mode: u32) -> Option<String> {
    if !FILE_TYPES.contains(&(mode & S_IFMT)) {
        Some(format!("mode {mode:o} is of no file type"))
    } else if mode & !MODE_BITS != 0 {
        Some(format!(
            "mode {mode:o} has bits beyond the type and permissions"
        ))
    } else {
        None
    }
}

/// Why a symlink inode's target length is invalid: the target's length is kept in `nextents` and
/// `size`; a target of up to `FORK_BYTES` lives in the inode (Local), a longer one in one symlink
/// block after its header. The one rule for readlink, the checker and the repairer.
pub(crate) fn symlink_problem(i: &Inode, block_size: u32) -> Option<String> {
    let len = i.nextents as usize;
    let block_max = block_size as usize - BLOCK_HEADER_BYTES;
    if len == 0 {
        return Some("symlink target is empty".into());
    }
    if i.size != len as u64 {
        return Some(format!(
            "symlink size {} differs from its target's length {len}",
            i.size
        ));
    }
    match i.format {
        DataFormat::Local if len > FORK_BYTES => Some(format!(
            "inline symlink target of {len} bytes, more than the inode holds ({FORK_BYTES})"
        )),
        DataFormat::Local => None,
        DataFormat::Extents => {
            Some("symlink with an extent list (its target is inline or in one block)".into())
        }
        DataFormat::Btree if len <= FORK_BYTES || len > block_max => Some(format!(
            "symlink target of {len} bytes in a block (a block holds {FORK_BYTES}+1..={block_max})"
        )),
        DataFormat::Btree => None,
    }
}

/// The target stored in symlink block `b` (read at `blkno`), of the length its inode says
/// (checked by `symlink_problem` first).
pub fn symlink_block_target(b: &[u8], blkno: u64, len: usize) -> Result<&[u8], FormatError> {
    Dec::new(b, blkno, "symlink block").slice_at(BLOCK_HEADER_BYTES, len, "target")
}

/// Why a symlink's target bytes are invalid: a NUL would cut the path short for every caller.
pub(crate) fn symlink_target_problem(target: &[u8]) -> Option<String> {
    target
        .iter()
        .position(|&b| b == 0)
        .map(|at| format!("symlink target has a NUL byte at {at}"))
}

/// Inode flags (the inode's `flags` field), in this format's own bits: the ioctls' values
/// (FS_*_FL, FS_XFLAG_*) are translated where the requests are (`fs::flags`), as XFS keeps its
/// own `di_flags`. Nobody may change an immutable inode: its data, attributes, names or links.
pub const FLAG_IMMUTABLE: u32 = 1 << 0;
/// Append-only: data may only be added at the end; the inode may not be removed, renamed,
/// truncated or have its attributes set; a directory may gain entries but not lose them.
pub const FLAG_APPEND: u32 = 1 << 1;
/// Synchronous: every change to the inode is durable when it returns (as O_SYNC and, for a
/// directory, as dirsync).
pub const FLAG_SYNC: u32 = 1 << 2;
/// Reads do not update the access time.
pub const FLAG_NOATIME: u32 = 1 << 3;
/// Not to be dumped (dump(8)); the filesystem only keeps it.
pub const FLAG_NODUMP: u32 = 1 << 4;
/// A directory whose new entries take its project ID, and new directories this flag too.
pub const FLAG_PROJINHERIT: u32 = 1 << 5;
/// Every inode flag this format version knows; any other bit is damage.
pub const FLAGS_KNOWN: u32 =
    FLAG_IMMUTABLE | FLAG_APPEND | FLAG_SYNC | FLAG_NOATIME | FLAG_NODUMP | FLAG_PROJINHERIT;
/// Each flag's name, as `ticketfs db` shows it.
const FLAG_NAMES: [(u32, &str); 6] = [
    (FLAG_IMMUTABLE, "immutable"),
    (FLAG_APPEND, "append"),
    (FLAG_SYNC, "sync"),
    (FLAG_NOATIME, "noatime"),
    (FLAG_NODUMP, "nodump"),
    (FLAG_PROJINHERIT, "projinherit"),
];

/// `flags` by name ("immutable,nodump"; "none"; unknown bits as a number).
pub fn flag_names(flags: u32) -> String {
    let mut names: Vec<String> = FLAG_NAMES
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, n)| n.to_string())
        .collect();
    if flags & !FLAGS_KNOWN != 0 {
        names.push(format!("unknown {:#x}", flags & !FLAGS_KNOWN));
    }
    if names.is_empty() {
        names.push("none".into());
    }
    names.join(",")
}

/// The flags only a directory carries (XFS keeps PROJINHERIT on directories only).
pub(crate) const FLAGS_DIR_ONLY: u32 = FLAG_PROJINHERIT;

/// Why an in-use inode's flags are invalid (bits this version does not know, a directory's flag
/// on something else) and the flags the repair keeps (neither): the one rule for the checker and
/// the repairer.
pub(crate) fn flags_problem(i: &Inode) -> Option<(String, u32)> {
    let unknown = i.flags & !FLAGS_KNOWN;
    let misplaced = if i.mode & S_IFMT == S_IFDIR {
        0
    } else {
        i.flags & FLAGS_DIR_ONLY
    };
    let mut why = Vec::new();
    if unknown != 0 {
        why.push(format!("unknown bits {unknown:#x}"));
    }
    if misplaced != 0 {
        why.push(format!(
            "a directory's flag {misplaced:#x} on a non-directory"
        ));
    }
    if why.is_empty() {
        return None;
    }
    Some((
        format!("flags {:#x} have {}", i.flags, why.join(" and ")),
        i.flags & FLAGS_KNOWN & !misplaced,
    ))
}

/// Extent flag: allocated, reads as zeros until written (fallocate, zero-range).
pub(crate) const UNWRITTEN: u32 = 1;
/// Every extent flag this format version knows; any other bit is damage.
pub(crate) const EXTENT_FLAGS_KNOWN: u32 = UNWRITTEN;

/// A mapping of file blocks to disk blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub(crate) file_block: u64,
    pub start: u64,
    pub len: u32,
    /// 1: unwritten (allocated, reads as zeros).
    pub(crate) flags: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    pub format: DataFormat,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub generation: u32,
    pub size: u64,
    pub blocks: u64,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    pub crtime: Time,
    /// `FLAG_*` bits.
    pub flags: u32,
    pub nextents: u32,
    pub rdev: u64,
    pub unlinked_next: u64,
    pub xattr_blk: u64,
    /// What `xattr_blk` is: the one xattr block, or the root of the attribute tree.
    pub xattr_form: XattrForm,
    /// The attribute tree's root level (0 in the block form).
    pub xattr_level: u16,
    pub root: u64,
    pub root_level: u16,
    /// Project ID (quota project), 0 unless set or inherited.
    pub projid: u32,
    pub fork: [u8; FORK_BYTES],
}

impl Default for Inode {
    fn default() -> Self {
        Inode {
            format: DataFormat::Local,
            mode: 0,
            uid: 0,
            gid: 0,
            nlink: 0,
            generation: 0,
            size: 0,
            blocks: 0,
            atime: Time::default(),
            mtime: Time::default(),
            ctime: Time::default(),
            crtime: Time::default(),
            flags: 0,
            nextents: 0,
            rdev: 0,
            unlinked_next: 0,
            xattr_blk: 0,
            xattr_form: XattrForm::Block,
            xattr_level: 0,
            root: 0,
            root_level: 0,
            projid: 0,
            fork: [0; FORK_BYTES],
        }
    }
}

impl Inode {
    plain_fields! {
        mode: u32 @ 4,
        uid: u32 @ 8,
        gid: u32 @ 12,
        nlink: u32 @ 16,
        generation: u32 @ 20,
        size: u64 @ 24,
        blocks: u64 @ 32,
        flags: u32 @ 88,
        rdev: u64 @ 96,
        unlinked_next: u64 @ 104,
        root: u64 @ 120,
        root_level: u16 @ 128,
        projid: u32 @ PROJID_OFFSET,
    }

    pub(crate) fn encode(&self, out: &mut [u8]) {
        debug_assert_eq!(out.len(), INODE_BYTES);
        out.fill(0);
        let mut e = Enc::new(out);
        e.u16(0, INODE_MAGIC);
        e.u8(2, 1);
        e.u8(3, self.format as u8);
        self.encode_fields(&mut e);
        for (off, t) in [
            (40, self.atime),
            (52, self.mtime),
            (64, self.ctime),
            (76, self.crtime),
        ] {
            e.u64(off, t.sec as u64);
            e.u32(off + 8, t.nsec);
        }
        e.u32(92, self.nextents);
        e.u64(112, self.xattr_blk);
        e.u8(130, self.xattr_form as u8);
        e.u8(131, self.xattr_level as u8);
        e.bytes(FORK_OFFSET, &self.fork);
    }

    /// Decodes the inode in `slot` bytes of chunk `blkno` (for error messages: `ino`).
    pub fn decode(b: &[u8], blkno: u64, ino: u64) -> Result<Inode, FormatError> {
        match Self::decode_salvaging_xattrs(b, blkno, ino)? {
            (i, None) => Ok(i),
            (_, Some(e)) => Err(e),
        }
    }

    /// Decodes the inode as [`Inode::decode`] does, except that attribute fields it refuses
    /// (form, level, root: the attribute fork's header, as XFS's `di_aformat` and `di_forkoff`)
    /// leave the rest readable: the inode comes back with no attributes, and the error says what
    /// was wrong with them. fsck's reading: damage there costs the attributes (nothing says where
    /// they are), not the file, as xfs_repair resets a bad attribute fork and keeps the inode.
    pub fn decode_salvaging_xattrs(
        b: &[u8],
        blkno: u64,
        ino: u64,
    ) -> Result<(Inode, Option<FormatError>), FormatError> {
        let d = Dec::new(b, blkno, "inode");
        let magic = d.u16(0, "magic")?;
        if magic != INODE_MAGIC {
            return Err(d.err(
                "magic",
                format!("inode {ino}: {magic:#06x}, expected {INODE_MAGIC:#06x}"),
            ));
        }
        let version = d.u8(2, "version")?;
        if version != 1 {
            return Err(d.err("version", format!("inode {ino}: version {version}")));
        }
        let format = match d.u8(3, "format")? {
            0 => DataFormat::Local,
            1 => DataFormat::Extents,
            2 => DataFormat::Btree,
            f => return Err(d.err("format", format!("inode {ino}: data format {f}"))),
        };
        let t = |off: usize, f: &'static str| -> Result<Time, FormatError> {
            let nsec = d.u32(off + 8, f)?;
            if nsec >= 1_000_000_000 {
                return Err(d.err(f, format!("inode {ino}: {nsec} nanoseconds")));
            }
            Ok(Time {
                sec: d.u64(off, f)? as i64,
                nsec,
            })
        };
        let nextents = d.u32(92, "nextents")?;
        let limit = match format {
            DataFormat::Local => FORK_BYTES as u32,
            DataFormat::Extents => INLINE_EXTENTS as u32,
            DataFormat::Btree => u32::MAX,
        };
        if nextents > limit {
            return Err(d.err(
                "nextents",
                format!("inode {ino}: {nextents} for format {format:?} (at most {limit})"),
            ));
        }
        let (xattr_blk, xattr_form, xattr_level, xattr_bad) =
            match Self::decode_xattr_fields(&d, ino)? {
                Ok((blk, form, level)) => (blk, form, level, None),
                Err(e) => (0, XattrForm::Block, 0, Some(e)),
            };
        let mut i = Inode {
            format,
            atime: t(40, "atime")?,
            mtime: t(52, "mtime")?,
            ctime: t(64, "ctime")?,
            crtime: t(76, "crtime")?,
            nextents,
            xattr_blk,
            xattr_form,
            xattr_level,
            fork: d.bytes(FORK_OFFSET, "fork")?,
            ..Inode::default()
        };
        i.decode_fields(&d)?;
        Ok((i, xattr_bad))
    }

    /// The attribute fields, or why they are invalid (inner error); the outer error is bytes
    /// missing altogether.
    fn decode_xattr_fields(
        d: &Dec<'_>,
        ino: u64,
    ) -> Result<Result<XattrFields, FormatError>, FormatError> {
        let xattr_blk = d.u64(112, "xattr_blk")?;
        let form = d.u8(130, "xattr_form")?;
        let xattr_level = d.u8(131, "xattr_level")? as u16;
        let xattr_form = match form {
            0 => XattrForm::Block,
            1 => XattrForm::Tree,
            f => {
                return Ok(Err(
                    d.err("xattr_form", format!("inode {ino}: attribute form {f}"))
                ))
            }
        };
        if xattr_form == XattrForm::Block && xattr_level != 0
            || xattr_form == XattrForm::Tree && xattr_blk == 0
            || xattr_level >= super::node::BTREE_HEIGHT_MAX
        {
            return Ok(Err(d.err(
                "xattr_level",
                format!(
                    "inode {ino}: attribute form {xattr_form:?}, level {xattr_level}, root \
                     {xattr_blk}"
                ),
            )));
        }
        Ok(Ok((xattr_blk, xattr_form, xattr_level)))
    }

    /// Clears set-user-ID, and set-group-ID when the group may execute (otherwise it marks
    /// mandatory locking), as Linux does on a write by a non-root caller and on chown.
    pub(crate) fn drop_setid(&mut self) {
        self.mode &= !0o4000;
        if self.mode & 0o010 != 0 {
            self.mode &= !0o2000;
        }
    }

    /// The inline extent list (format Extents).
    pub fn extents(&self) -> Vec<Extent> {
        let d = Dec::new(&self.fork, 0, "inode fork");
        (0..(self.nextents as usize).min(INLINE_EXTENTS))
            .map(|i| {
                let o = i * EXTENT_BYTES;
                Extent {
                    file_block: d.u64(o, "file_block").unwrap_or(0),
                    start: d.u64(o + 8, "start").unwrap_or(0),
                    len: d.u32(o + 16, "len").unwrap_or(0),
                    flags: d.u32(o + 20, "flags").unwrap_or(0),
                }
            })
            .collect()
    }

    pub(crate) fn set_extents(&mut self, list: &[Extent]) {
        debug_assert!(list.len() <= INLINE_EXTENTS);
        self.fork = [0; FORK_BYTES];
        let mut e = Enc::new(&mut self.fork);
        for (i, x) in list.iter().enumerate() {
            let o = i * EXTENT_BYTES;
            e.u64(o, x.file_block);
            e.u64(o + 8, x.start);
            e.u32(o + 16, x.len);
            e.u32(o + 20, x.flags);
        }
        self.nextents = list.len() as u32;
        self.format = DataFormat::Extents;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Inode {
        Inode {
            mode: S_IFREG | 0o644,
            nlink: 1,
            ..Default::default()
        }
    }

    #[test]
    fn flags_and_project_id_round_trip_at_their_offsets() {
        let i = Inode {
            flags: FLAG_IMMUTABLE | FLAG_NODUMP,
            projid: 0xdead_beef,
            ..file()
        };
        let mut b = [0u8; INODE_BYTES];
        i.encode(&mut b);
        assert_eq!(b[88..92], (FLAG_IMMUTABLE | FLAG_NODUMP).to_le_bytes());
        assert_eq!(b[130..132], [0, 0], "the block form of attributes, level 0");
        assert_eq!(
            b[PROJID_OFFSET..PROJID_OFFSET + 4],
            0xdead_beef_u32.to_le_bytes()
        );
        assert_eq!(Inode::decode(&b, 9, 1).unwrap(), i);
    }

    /// Earlier versions wrote 0 at 88 and zeros at 130..136: such an inode reads as no flags,
    /// project 0.
    #[test]
    fn an_inode_of_an_earlier_image_has_no_flags_and_project_zero() {
        let mut b = [0u8; INODE_BYTES];
        file().encode(&mut b);
        assert!(b[88..92].iter().chain(&b[130..136]).all(|&x| x == 0));
        let i = Inode::decode(&b, 9, 1).unwrap();
        assert_eq!((i.flags, i.projid), (0, 0));
        assert_eq!(flags_problem(&i), None);
    }

    #[test]
    fn unknown_flag_bits_and_a_directory_flag_on_a_file_are_problems() {
        let bad = Inode {
            flags: FLAG_APPEND | 1 << 17,
            ..file()
        };
        let (why, fixed) = flags_problem(&bad).unwrap();
        assert!(why.contains("unknown bits 0x20000"), "{why}");
        assert_eq!(fixed, FLAG_APPEND);
        let inherit_on_file = Inode {
            flags: FLAG_PROJINHERIT | FLAG_SYNC,
            ..file()
        };
        assert_eq!(flags_problem(&inherit_on_file).unwrap().1, FLAG_SYNC);
        // Both at once: what the repair keeps is clean (the field fuzz's all-ones flags).
        let both = Inode {
            flags: u32::MAX,
            ..file()
        };
        let (why, fixed) = flags_problem(&both).unwrap();
        assert!(
            why.contains("unknown bits") && why.contains("directory's flag"),
            "{why}"
        );
        let kept = Inode {
            flags: fixed,
            ..file()
        };
        assert_eq!(flags_problem(&kept), None);
        let dir = Inode {
            mode: S_IFDIR | 0o755,
            flags: FLAGS_KNOWN,
            ..Default::default()
        };
        assert_eq!(flags_problem(&dir), None);
    }
}
