//! A file's extent map: file blocks to disk blocks. Up to five extents live in the inode's fork
//! area; past that the map becomes a B+tree (key (file block, 0), value (start, length | flags <<
//! 32)) whose nodes are allocated near the inode. Adjacent extents that continue each other on
//! disk (with the same flags) are merged when mapped.

use crate::alloc::{Allocator, InodeBlocks};
use crate::btree::{Btree, NodeAlloc, Root, Val};
use crate::error::EngineError;
use crate::format::inode::{ino_split, DataFormat, Extent, Inode, INLINE_EXTENTS};
use crate::format::records::ExtentRec;
use crate::format::{BlockType, FormatError, Geometry};
use crate::trans::Trans;

pub(crate) use crate::format::inode::UNWRITTEN;
/// Longest extent: bounds one allocation and keeps lengths well inside 32 bits.
pub(crate) const EXTENT_LEN_MAX: u64 = 1 << 21;

fn to_val(e: &Extent) -> Val {
    ExtentRec::val(e)
}

/// An extent-tree record of inode `ino`, decoded by the tree's codec.
fn from_kv(ino: u64, k: [u64; 2], v: Val) -> Result<Extent, EngineError> {
    ExtentRec::decode(k, v).map_err(|why| corrupt(ino, format!("extent record {k:?}: {why}")))
}

fn tree(ino: u64, inode: &Inode) -> Btree {
    Btree::open(
        BlockType::BtreeExtent,
        ino,
        Root {
            blkno: inode.root,
            level: inode.root_level,
        },
    )
}

fn corrupt(ino: u64, detail: String) -> EngineError {
    EngineError::Corrupt(FormatError::new(
        ino_split(ino).0,
        "extent map",
        "extents",
        format!("inode {ino}: {detail}"),
    ))
}

/// Checks an extent read from disk by the format's one rule (`Geometry::extent_problem`), the
/// same fsck applies: a map that points at a superblock, the log or an AG's header would have
/// a write land on metadata.
fn check(ino: u64, e: &Extent, g: &Geometry) -> Result<(), EngineError> {
    match g.extent_problem(e) {
        Some(why) => Err(corrupt(ino, why)),
        None => Ok(()),
    }
}

/// The extent containing file block `fb`, and the first extent after `fb`.
pub(crate) fn find(
    tx: &mut Trans<'_>,
    ino: u64,
    inode: &Inode,
    fb: u64,
) -> Result<(Option<Extent>, Option<Extent>), EngineError> {
    let g = *tx.engine().geometry();
    match inode.format {
        DataFormat::Local => Ok((None, None)),
        DataFormat::Extents => {
            let list = inode.extents();
            let mut hit = None;
            let mut next = None;
            for e in list {
                check(ino, &e, &g)?;
                if e.file_block <= fb && fb < e.file_block + e.len as u64 {
                    hit = Some(e);
                } else if e.file_block > fb && next.is_none() {
                    next = Some(e);
                }
            }
            Ok((hit, next))
        }
        DataFormat::Btree => {
            let t = tree(ino, inode);
            let hit = match t.le(tx, &[fb, u64::MAX])? {
                Some((k, v)) => {
                    let e = from_kv(ino, k, v)?;
                    check(ino, &e, &g)?;
                    (fb < e.file_block + e.len as u64).then_some(e)
                }
                None => None,
            };
            let next = match t.gt(tx, &[fb, u64::MAX])? {
                Some((k, v)) => {
                    let e = from_kv(ino, k, v)?;
                    check(ino, &e, &g)?;
                    Some(e)
                }
                None => None,
            };
            Ok((hit, next))
        }
    }
}

/// The blocks of the map's B+tree (none when the map is inline in the inode): for checks.
pub(crate) fn nodes(tx: &mut Trans<'_>, ino: u64, inode: &Inode) -> Result<Vec<u64>, EngineError> {
    if inode.format != DataFormat::Btree {
        return Ok(Vec::new());
    }
    tree(ino, inode).blocks(tx)
}

/// Every extent, in file order (for checks and tests).
pub fn all(tx: &mut Trans<'_>, ino: u64, inode: &Inode) -> Result<Vec<Extent>, EngineError> {
    match inode.format {
        DataFormat::Local => Ok(Vec::new()),
        DataFormat::Extents => Ok(inode.extents()),
        DataFormat::Btree => Ok(tree(ino, inode)
            .collect(tx)?
            .into_iter()
            .map(|(k, v)| from_kv(ino, k, v))
            .collect::<Result<_, _>>()?),
    }
}

/// Do `a` then `b` continue each other in the file and on disk?
fn joins(a: &Extent, b: &Extent) -> bool {
    a.file_block + a.len as u64 == b.file_block
        && a.start + a.len as u64 == b.start
        && a.flags == b.flags
        && a.len as u64 + b.len as u64 <= EXTENT_LEN_MAX
}

/// The part of `e` over file blocks `a..b` (within it): the same disk blocks and flags. A
/// removal cuts the range it takes out and the pieces either side it leaves alike.
fn clip(e: &Extent, a: u64, b: u64) -> Extent {
    Extent {
        file_block: a,
        start: e.start + (a - e.file_block),
        len: (b - a) as u32,
        flags: e.flags,
    }
}

/// A file's extent map as an operation changes it: the inode holding it (its fork or tree root
/// and its extent and block counts change with the map), that inode's number, and the allocator
/// the map's tree nodes, and the blocks a removal frees, come from and go back to.
pub(crate) struct FileMap<'m> {
    pub(crate) alloc: &'m Allocator,
    pub(crate) ino: u64,
    pub(crate) inode: &'m mut Inode,
}

impl FileMap<'_> {
    /// Maps `e` (a range that is a hole in the map), merging with neighbours.
    #[track_caller]
    pub(crate) fn insert(&mut self, tx: &mut Trans<'_>, e: Extent) -> Result<(), EngineError> {
        let (alloc, ino, inode) = (self.alloc, self.ino, &mut *self.inode);
        debug_assert!(e.len > 0);
        let near = ino_split(ino).0;
        if inode.format != DataFormat::Btree {
            let mut list = if inode.format == DataFormat::Extents {
                inode.extents()
            } else {
                Vec::new()
            };
            let pos = list
                .iter()
                .position(|x| x.file_block > e.file_block)
                .unwrap_or(list.len());
            list.insert(pos, e);
            if pos + 1 < list.len() && joins(&list[pos], &list[pos + 1]) {
                list[pos].len += list[pos + 1].len;
                list.remove(pos + 1);
            }
            if pos > 0 && joins(&list[pos - 1], &list[pos]) {
                list[pos - 1].len += list[pos].len;
                list.remove(pos);
            }
            if list.len() <= INLINE_EXTENTS {
                inode.set_extents(&list);
                return Ok(());
            }
            // Too many for the inode: move them into a new tree.
            let mut blocks = inode.blocks;
            let mut fbk = InodeBlocks {
                alloc,
                near,
                blocks: &mut blocks,
            };
            let root = fbk.alloc_node(tx)?;
            let mut t = Btree::create(tx, BlockType::BtreeExtent, ino, root)?;
            for x in &list {
                t.insert(tx, &mut fbk, ExtentRec::key(x), to_val(x))?;
            }
            inode.blocks = blocks;
            inode.format = DataFormat::Btree;
            inode.fork = [0; crate::format::inode::FORK_BYTES];
            inode.root = t.root.blkno;
            inode.root_level = t.root.level;
            inode.nextents = list.len() as u32;
            return Ok(());
        }
        let mut t = tree(ino, inode);
        let mut blocks = inode.blocks;
        let mut fbk = InodeBlocks {
            alloc,
            near,
            blocks: &mut blocks,
        };
        let mut cur = e;
        let mut count = inode.nextents as i64 + 1;
        if let Some((k, v)) = t.gt(tx, &[e.file_block, u64::MAX])? {
            let right = from_kv(ino, k, v)?;
            if joins(&cur, &right) {
                t.delete(tx, &mut fbk, &k)?;
                cur.len += right.len;
                count -= 1;
            }
        }
        if let Some((k, v)) = t.le(tx, &[e.file_block, u64::MAX])? {
            let left = from_kv(ino, k, v)?;
            if joins(&left, &cur) {
                let merged = Extent {
                    len: left.len + cur.len,
                    ..left
                };
                t.update(tx, &k, to_val(&merged))?;
                count -= 1;
                inode.blocks = blocks;
                inode.root = t.root.blkno;
                inode.root_level = t.root.level;
                inode.nextents = count as u32;
                return Ok(());
            }
        }
        t.insert(tx, &mut fbk, ExtentRec::key(&cur), to_val(&cur))?;
        inode.blocks = blocks;
        inode.root = t.root.blkno;
        inode.root_level = t.root.level;
        inode.nextents = count as u32;
        Ok(())
    }

    /// Maps `e`'s file blocks again, to the same disk blocks with `e.flags` (written or unwritten):
    /// the old mapping of that range is taken out without freeing its blocks, and `e` put in,
    /// merged with its neighbours.
    #[track_caller]
    pub(crate) fn remap(&mut self, tx: &mut Trans<'_>, e: Extent) -> Result<(), EngineError> {
        let end = e.file_block + e.len as u64;
        self.remove(tx, e.file_block, end, usize::MAX, false)?;
        self.insert(tx, e)
    }

    /// Unmaps file blocks `from..to`, at most `max` extents touched; with `free`, their disk blocks
    /// are freed (else the caller maps them again, e.g. as written). Returns the extents removed
    /// (clipped to the range) and whether the whole range is done.
    #[track_caller]
    pub(crate) fn remove(
        &mut self,
        tx: &mut Trans<'_>,
        from: u64,
        to: u64,
        max: usize,
        free: bool,
    ) -> Result<(Vec<Extent>, bool), EngineError> {
        let mut removed = Vec::new();
        let mut at = from;
        while at < to {
            if removed.len() >= max {
                return Ok((removed, false));
            }
            let (hit, next) = find(tx, self.ino, self.inode, at)?;
            let e = match hit {
                Some(e) => e,
                None => match next {
                    Some(n) if n.file_block < to => n,
                    _ => break,
                },
            };
            let e_end = e.file_block + e.len as u64;
            let a = e.file_block.max(from);
            let b = e_end.min(to);
            let cut = clip(&e, a, b);
            self.unmap(tx, &e)?;
            // What of `e` lies outside the range is mapped again, as it was.
            if a > e.file_block {
                self.insert(tx, clip(&e, e.file_block, a))?;
            }
            if b < e_end {
                self.insert(tx, clip(&e, b, e_end))?;
            }
            if free {
                self.alloc.free(tx, cut.start, cut.len as u64)?;
                self.inode.blocks = self.inode.blocks.saturating_sub(cut.len as u64);
            }
            removed.push(cut);
            at = b;
        }
        Ok((removed, true))
    }

    /// Removes the whole extent `e` from the map (its blocks stay allocated).
    fn unmap(&mut self, tx: &mut Trans<'_>, e: &Extent) -> Result<(), EngineError> {
        let (alloc, ino, inode) = (self.alloc, self.ino, &mut *self.inode);
        match inode.format {
            DataFormat::Local => Err(corrupt(
                ino,
                "unmapping from an inode without extents".into(),
            )),
            DataFormat::Extents => {
                let mut list = inode.extents();
                let before = list.len();
                list.retain(|x| x != e);
                if list.len() + 1 != before {
                    return Err(corrupt(ino, format!("extent {e:?} not in the inline list")));
                }
                inode.set_extents(&list);
                Ok(())
            }
            DataFormat::Btree => {
                let mut t = tree(ino, inode);
                let mut blocks = inode.blocks;
                let mut fbk = InodeBlocks {
                    alloc,
                    near: ino_split(ino).0,
                    blocks: &mut blocks,
                };
                if t.delete(tx, &mut fbk, &ExtentRec::key(e))?.is_none() {
                    return Err(corrupt(ino, format!("extent {e:?} not in the tree")));
                }
                inode.blocks = blocks;
                inode.root = t.root.blkno;
                inode.root_level = t.root.level;
                inode.nextents -= 1;
                Ok(())
            }
        }
    }
}

/// Where to allocate blocks for file block `fb`: right after the disk block mapping the file
/// block before it, else near the inode.
pub(crate) fn target(
    tx: &mut Trans<'_>,
    ino: u64,
    inode: &Inode,
    fb: u64,
) -> Result<u64, EngineError> {
    if fb > 0 {
        if let (Some(e), _) = find(tx, ino, inode, fb - 1)? {
            return Ok(e.start + (fb - e.file_block));
        }
    }
    Ok(ino_split(ino).0)
}
