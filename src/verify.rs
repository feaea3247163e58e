//! One verdict per inode for both drivers of fsck: the checker (`fsck -n`) reports each fault
//! the verdict lists, the repairer (`fsck -y`) does what the fault says (clear the inode, fix a
//! field, rebuild the directory, rebuild the attributes from the intact ones). What is wrong is decided here once, from
//! the rules the mount applies too (`format::inode::mode_problem`, `flags_problem`,
//! `Geometry::extent_problem`, `format::dirblock`, `format::xattrblock`, `symlink::target`), so
//! the two cannot disagree on whether an inode is damaged, only act differently on it, as
//! xfs_repair's `-n` and its repair share libxfs's verifiers.
//!
//! What the verdict cannot see, because it needs every inode, stays with the drivers: a block
//! claimed by two inodes, link counts, reachability.

use crate::dir;
use crate::error::EngineError;
use crate::file::{extmap, FILE_SIZE_MAX};
use crate::format::inode::{
    flags_problem, mode_problem, symlink_problem, DataFormat, Inode, FILE_TYPES, MODE_BITS,
    S_IFDIR, S_IFLNK, S_IFMT, S_IFREG,
};
use crate::format::{FormatError, Geometry};
use crate::trans::Trans;

/// What an owned block is to its inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Data,
    ExtentNode,
    Directory,
    Symlink,
    Xattr,
}

impl Role {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Role::Data => "file data",
            Role::ExtentNode => "an extent-map node",
            Role::Directory => "a directory block",
            Role::Symlink => "a symlink block",
            Role::Xattr => "an xattr block (block, tree node, entry or remote value)",
        }
    }

    /// Metadata: carries a block header (and an LSN the checker compares with the log).
    pub(crate) fn is_metadata(self) -> bool {
        self != Role::Data
    }

    /// The fault of an inode one of whose blocks of this role cannot be kept: the file without
    /// its map or its target is cleared; a directory is rebuilt from its names; attributes are
    /// rebuilt from those still intact.
    pub(crate) fn fault(self, why: String) -> Fault {
        match self {
            Role::Data | Role::ExtentNode | Role::Symlink => Fault::Clear(why),
            Role::Directory => Fault::Directory(why),
            Role::Xattr => Fault::Xattrs(why),
        }
    }
}

/// A run of blocks an inode owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) start: u64,
    pub(crate) len: u64,
    pub(crate) role: Role,
}

/// What is wrong with an inode, each with what the repair does about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The inode cannot be kept: no file type, an unreadable or impossible map or target.
    Clear(String),
    /// Bits beyond the type and permissions: the repair keeps `fixed`.
    Mode { why: String, fixed: u32 },
    /// Inode flags this version does not know, or a directory's on something else: the repair
    /// keeps `fixed`.
    Flags { why: String, fixed: u32 },
    /// A size no file of its kind may have: the repair sets `fixed`.
    Size { why: String, fixed: u64 },
    /// The directory's blocks are unreadable or inconsistent: rebuilt from the names read.
    Directory(String),
    /// The attribute fields, the xattr block or the attribute tree are invalid: the repair keeps
    /// the attributes still intact (`xattr::salvage`), drops the rest, and stores the kept ones
    /// anew.
    Xattrs(String),
    /// The block count differs from the blocks it owns (repair: set to what it keeps).
    Blocks { counted: u64, owns: u64 },
}

impl Fault {
    pub(crate) fn describe(&self) -> String {
        match self {
            Fault::Clear(why)
            | Fault::Mode { why, .. }
            | Fault::Flags { why, .. }
            | Fault::Size { why, .. } => why.clone(),
            Fault::Directory(why) => format!("directory: {why}"),
            Fault::Xattrs(why) => format!("xattrs: {why}"),
            Fault::Blocks { counted, owns } => {
                format!("counts {counted} blocks but owns {owns}")
            }
        }
    }
}

/// The verdict on one inode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) faults: Vec<Fault>,
    /// The blocks it owns that can be kept, as far as they could be read: neither outside the
    /// data area nor named twice, and none of a role a fault gives up (a directory to rebuild,
    /// attributes to drop).
    pub(crate) owns: Vec<Run>,
    /// Attribute changes a crash cut short whose blocks the inode holds (INCOMPLETE records:
    /// a valid state, freed by the next change of their name or the inode's freeing).
    pub(crate) interrupted_xattrs: u64,
}

impl Verdict {
    /// Why the inode is cleared, if it is.
    pub(crate) fn clear(&self) -> Option<&str> {
        self.faults.iter().find_map(|f| match f {
            Fault::Clear(why) => Some(why.as_str()),
            _ => None,
        })
    }

    pub(crate) fn has(&self, pred: impl Fn(&Fault) -> bool) -> bool {
        self.faults.iter().any(pred)
    }

    pub(crate) fn owned_blocks(&self) -> u64 {
        self.owns.iter().map(|r| r.len).sum()
    }
}

fn err_text(e: EngineError) -> String {
    e.to_string()
}

/// Reads in-use inode `ino` (`inode::read_salvaging_xattrs`) and judges it: attribute fields
/// the format refuses are a fault of its attributes alone, and the rest of it is judged as usual.
/// The drivers' one way in; an error is an inode that cannot be read at all.
pub(crate) fn read(
    tx: &mut Trans<'_>,
    g: &Geometry,
    ino: u64,
) -> Result<(Inode, Verdict), EngineError> {
    let (_, i, fields) = crate::inode::read_salvaging_xattrs(tx, ino)?;
    let v = inode(tx, g, ino, &i, fields.as_ref());
    Ok((i, v))
}

/// Judges in-use inode `ino` (already decoded from its slot as `i`; `fields`: why its attribute
/// fields were refused, `i` then having none).
pub(crate) fn inode(
    tx: &mut Trans<'_>,
    g: &Geometry,
    ino: u64,
    i: &Inode,
    fields: Option<&FormatError>,
) -> Verdict {
    let mut v = Verdict::default();
    if let Some(e) = fields {
        // The attribute fork's header: the rest of the inode stands (xfs_repair resets a bad
        // attribute fork and keeps the file); the blocks the old attributes held are nobody's.
        v.faults
            .push(Fault::Xattrs(format!("attribute fields: {e}")));
    }
    let ft = i.mode & S_IFMT;
    if let Some(why) = mode_problem(i.mode) {
        if !FILE_TYPES.contains(&ft) {
            v.faults.push(Fault::Clear(why));
            return v;
        }
        v.faults.push(Fault::Mode {
            why,
            fixed: i.mode & MODE_BITS,
        });
    }
    if let Some((why, fixed)) = flags_problem(i) {
        v.faults.push(Fault::Flags { why, fixed });
    }
    match ft {
        S_IFREG => file(tx, g, ino, i, &mut v),
        S_IFDIR => match dir::blocks(tx, ino, i) {
            Ok(bs) => v.owns.extend(bs.into_iter().map(|b| Run {
                start: b,
                len: 1,
                role: Role::Directory,
            })),
            Err(e) => v.faults.push(Fault::Directory(err_text(e))),
        },
        S_IFLNK => symlink(tx, g, ino, i, &mut v),
        _ => {}
    }
    // A POSIX ACL must decode as the kernel's rule says (`format::acl`): the kernel would refuse
    // to use it. The attributes go with it, as with an unreadable block.
    let bad_acl = |tx: &mut Trans<'_>| -> Result<Option<String>, EngineError> {
        for name in [crate::format::acl::ACCESS, crate::format::acl::DEFAULT] {
            if let Some(val) = crate::xattr::get(tx, ino, i, name)? {
                if let Err(why) = crate::format::acl::decode(&val) {
                    return Ok(Some(format!("{}: {why}", String::from_utf8_lossy(name))));
                }
            }
        }
        Ok(None)
    };
    match crate::xattr::blocks(tx, ino, i) {
        Ok((runs, interrupted)) => match bad_acl(tx) {
            Ok(Some(why)) => v.faults.push(Fault::Xattrs(why)),
            Ok(None) => {
                v.interrupted_xattrs = interrupted;
                v.owns.extend(runs.into_iter().map(|(start, len)| Run {
                    start,
                    len,
                    role: Role::Xattr,
                }))
            }
            Err(e) => v.faults.push(Fault::Xattrs(err_text(e))),
        },
        Err(e) => v.faults.push(Fault::Xattrs(err_text(e))),
    }
    placement(g, &mut v);
    if v.clear().is_none() {
        // Blocks of a directory being rebuilt or of dropped attributes are counted anew by the
        // repair; the count is judged against what it keeps, as the repair sets it.
        let owns = v.owned_blocks();
        if i.blocks != owns {
            v.faults.push(Fault::Blocks {
                counted: i.blocks,
                owns,
            });
        }
    }
    v
}

fn file(tx: &mut Trans<'_>, g: &Geometry, ino: u64, i: &Inode, v: &mut Verdict) {
    let list = match extmap::all(tx, ino, i) {
        Ok(l) => l,
        Err(e) => {
            v.faults.push(Fault::Clear(format!("extent map: {e}")));
            return;
        }
    };
    if i.size > FILE_SIZE_MAX {
        // Cut to the end of its last mapped block: what the map says it holds.
        let end = list
            .iter()
            .map(|e| e.file_block.saturating_add(e.len as u64))
            .max()
            .unwrap_or(0);
        v.faults.push(Fault::Size {
            why: format!(
                "size {} is past the largest file size {FILE_SIZE_MAX}",
                i.size
            ),
            fixed: end.saturating_mul(g.block_size as u64).min(FILE_SIZE_MAX),
        });
    }
    let mut prev_end = 0;
    for e in list {
        if let Some(why) = g.extent_problem(&e) {
            v.faults.push(Fault::Clear(why));
            continue;
        }
        if e.file_block < prev_end {
            v.faults.push(Fault::Clear(format!(
                "extents overlap at file block {}",
                e.file_block
            )));
        }
        prev_end = e.file_block + e.len as u64;
        v.owns.push(Run {
            start: e.start,
            len: e.len as u64,
            role: Role::Data,
        });
    }
    match extmap::nodes(tx, ino, i) {
        Ok(bs) => v.owns.extend(bs.into_iter().map(|b| Run {
            start: b,
            len: 1,
            role: Role::ExtentNode,
        })),
        Err(e) => v.faults.push(Fault::Clear(format!("extent map: {e}"))),
    }
}

fn symlink(tx: &mut Trans<'_>, g: &Geometry, ino: u64, i: &Inode, v: &mut Verdict) {
    // A size that is all that is wrong is set back to the target's length; anything else about
    // the target clears the inode, as xfs_repair clears a symlink it cannot trust.
    let mut j = i.clone();
    j.size = j.nextents as u64;
    if i.size != j.size && symlink_problem(&j, g.block_size).is_none() {
        v.faults.push(Fault::Size {
            why: format!(
                "symlink size {} differs from its target's length {}",
                i.size, j.size
            ),
            fixed: j.size,
        });
    }
    match crate::symlink::target(tx, ino, &j) {
        Ok(_) if j.format != DataFormat::Local => v.owns.push(Run {
            start: j.root,
            len: 1,
            role: Role::Symlink,
        }),
        Ok(_) => {}
        Err(e) => v.faults.push(Fault::Clear(format!("symlink: {e}"))),
    }
}

/// Blocks outside the data area (a superblock, the log, an AG's header or tree roots, past the
/// end) and blocks the inode names twice: the fault of their role, and they are not kept. Then
/// the runs a fault gives up are left out.
fn placement(g: &Geometry, v: &mut Verdict) {
    let mut faults = Vec::new();
    v.owns.retain(|r| {
        if r.role == Role::Data {
            return true; // `extent_problem` placed them already.
        }
        if g.in_data_area(r.start) {
            return true;
        }
        faults.push(r.role.fault(format!(
            "{} at block {}, {}",
            r.role.name(),
            r.start,
            g.reserved_role(r.start)
        )));
        false
    });
    // Twice within the inode: the later run (in block order) is the one at fault; attributes
    // go before anything else of the inode does.
    let (mut rest, xattr): (Vec<Run>, Vec<Run>) =
        v.owns.drain(..).partition(|r| r.role != Role::Xattr);
    rest.sort_by_key(|r| r.start);
    let mut end = 0u64;
    let mut kept: Vec<Run> = Vec::with_capacity(rest.len() + 1);
    for (k, r) in rest.into_iter().enumerate() {
        if k > 0 && r.start < end {
            faults.push(r.role.fault(format!(
                "{} at block {} overlaps another block of the same inode",
                r.role.name(),
                r.start
            )));
            continue;
        }
        end = r.start + r.len;
        kept.push(r);
    }
    // An attribute run (a remote value's extent is several blocks) may meet another in any
    // of its blocks, another attribute run's included.
    for x in xattr {
        if kept
            .iter()
            .any(|r| r.start < x.start + x.len && x.start < r.start + r.len)
        {
            faults.push(Fault::Xattrs(format!(
                "xattr block {} is also another block of the same inode",
                x.start
            )));
        } else {
            kept.push(x);
        }
    }
    v.faults.extend(faults);
    let dir_lost = v.has(|f| matches!(f, Fault::Directory(_)));
    let xattr_lost = v.has(|f| matches!(f, Fault::Xattrs(_)));
    kept.retain(|r| {
        !(dir_lost && r.role == Role::Directory || xattr_lost && r.role == Role::Xattr)
    });
    v.owns = kept;
}
