//! The filesystem checker behind fsck.ticketfs: read-only, on a mounted engine (fsck mounts it
//! through a copy-on-write overlay, after the log is replayed). Phases, as xfs_repair's:
//!
//! 1. allocation groups: each AG's header, both free-space trees (every node's header and CRC is
//!    verified as it is read), the two trees against each other and against the header's counts;
//!    the free list; the inode-chunk and unlinked-inode trees;
//! 2. inodes: every slot of every chunk; an allocated inode's fields, extent map, directory,
//!    symlink and xattr blocks, and its block count;
//! 3. space: every block of every AG claimed exactly once (free, free list, tree node, inode
//!    chunk, or owned by one inode): none both free and used, none used twice, none leaked;
//! 4. directories: entries point at allocated inodes of the type they say, ".." names the parent,
//!    every directory has exactly one name, every inode with links is reachable from the root;
//! 5. link counts against the entries found; the unlinked trees against the link counts.
//!
//! A problem names the phase, the block or inode, and what is wrong. A structure that cannot be
//! read is reported and skipped; the check goes on with the rest.

use crate::alloc::{AgSpace, Allocator};
use crate::bitmap::Bitmap;
use crate::dir;
use crate::engine::Engine;
use crate::error::EngineError;
use crate::format::ag::AG_RESERVED_BLOCKS;
use crate::format::inode::{dtype, S_IFDIR, S_IFMT};
use crate::format::inode::{ino_of, inodes_per_block, version_problem};
use crate::format::BlockType;
use crate::inode;
use crate::progress::Progress;
use crate::trans::{Trans, TransKind};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};

/// One thing found wrong.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    pub phase: &'static str,
    /// The block or inode concerned, when there is one.
    pub(crate) block: Option<u64>,
    pub(crate) inode: Option<u64>,
    pub what: String,
}

/// What the check found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    pub problems: Vec<Problem>,
    pub inodes: u64,
    pub directories: u64,
    pub files: u64,
    pub blocks_used: u64,
    pub blocks_free: u64,
    /// Inodes with no links waiting on an unlinked tree (freed at the next mount: not errors).
    pub pending_orphans: u64,
    /// Attribute changes a crash cut short (INCOMPLETE records; not errors: their blocks are
    /// their inode's, freed by the next change of the name or the inode's freeing).
    pub interrupted_xattrs: u64,
    /// Problems past `PROBLEMS_MAX`, counted only.
    pub(crate) problems_not_listed: u64,
}

impl CheckReport {
    /// Every problem found, listed or not.
    pub fn problem_count(&self) -> u64 {
        self.problems.len() as u64 + self.problems_not_listed
    }
}

/// Problems kept in the report; beyond, they are only counted (a badly damaged image must not
/// make the checker's memory grow without bound).
pub(crate) const PROBLEMS_MAX: usize = 100_000;

struct Checker<'e> {
    eng: &'e Engine,
    alloc: Allocator,
    report: CheckReport,
    /// Blocks claimed so far.
    claimed: Bitmap,
    /// Who claimed each block of AG metadata (tree nodes, free lists, inode chunks). Blocks of
    /// inodes are not listed: a large filesystem has millions, and the owner is needed only to
    /// name the first claimant of a block claimed twice, which `resolve_doubles` finds again.
    owner: HashMap<u64, Owner>,
    /// Blocks claimed as free space.
    free: Bitmap,
    /// Blocks claimed by something other than free space.
    used: u64,
    /// Blocks claimed a second time whose first claimant was an inode: (block, second claimant).
    doubles: Vec<(u64, String)>,
    /// Metadata blocks found in use (their headers' LSNs are checked against the log).
    meta: Vec<u64>,
}

impl Checker<'_> {
    fn problem(
        &mut self,
        phase: &'static str,
        block: Option<u64>,
        inode: Option<u64>,
        what: String,
    ) {
        if self.report.problems.len() >= PROBLEMS_MAX {
            self.report.problems_not_listed += 1;
            return;
        }
        self.report.problems.push(Problem {
            phase,
            block,
            inode,
            what,
        });
    }

    /// Claims block `b` for `who` (None: free space of AG `agno`).
    fn claim(&mut self, b: u64, who: Option<Owner>, agno: u32) {
        let g = self.eng.geometry();
        let name = |o: Option<Owner>| o.map_or(format!("free (AG {agno})"), |o| o.to_string());
        if b == 0 || b >= g.backup_sb_blkno() || (g.log_start..g.log_end()).contains(&b) {
            self.problem(
                "space",
                Some(b),
                None,
                format!("{} uses block {b}, a superblock or log block", name(who)),
            );
            return;
        }
        if self.claimed.set(b) {
            let first = match self.owner.get(&b) {
                Some(o) => o.to_string(),
                None if self.free.get(b) => "free space".to_string(),
                None => {
                    self.doubles.push((b, name(who)));
                    return;
                }
            };
            self.problem(
                "space",
                Some(b),
                None,
                format!("block {b} is both {first} and {}", name(who)),
            );
            return;
        }
        match who {
            None => {
                self.free.set(b);
            }
            Some(o) => {
                self.used += 1;
                if !matches!(o, Owner::Inode(..)) {
                    self.owner.insert(b, o);
                }
            }
        }
    }
}

/// Who claimed a block (kept small: a large filesystem has millions).
#[derive(Debug, Clone, Copy)]
enum Owner {
    FreeList(u32),
    Node(u32),
    Chunk(u32),
    Inode(u64, &'static str),
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::FreeList(a) => write!(f, "on AG {a}'s free list"),
            Owner::Node(a) => write!(f, "a tree node of AG {a}"),
            Owner::Chunk(a) => write!(f, "inode chunk of AG {a}"),
            Owner::Inode(ino, what) => write!(f, "{what} of inode {ino}"),
        }
    }
}

/// What the directory phase needs of an inode.
#[derive(Debug, Clone, Copy)]
struct Seen {
    mode: u32,
    nlink: u32,
    /// A directory's "..".
    parent: u64,
}

impl Seen {
    fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }
}

/// The inodes found, sorted by number; per-inode counters live in vectors beside it, indexed
/// the same way (a large filesystem has millions of inodes: no map entry per inode).
struct Table {
    /// Kept as the one vector it was collected in (sorted in place, its slack given back):
    /// splitting it into two would hold every entry twice at the peak.
    list: Vec<(u64, Seen)>,
}

impl Table {
    fn new(mut list: Vec<(u64, Seen)>) -> Table {
        list.sort_unstable_by_key(|e| e.0);
        list.dedup_by_key(|e| e.0);
        list.shrink_to_fit();
        Table { list }
    }
    fn idx(&self, ino: u64) -> Option<usize> {
        self.list.binary_search_by_key(&ino, |e| e.0).ok()
    }
    fn get(&self, ino: u64) -> Option<&Seen> {
        self.idx(ino).map(|i| &self.list[i].1)
    }
    fn ino_at(&self, k: usize) -> u64 {
        self.list[k].0
    }
    fn seen_at(&self, k: usize) -> &Seen {
        &self.list[k].1
    }
    fn len(&self) -> usize {
        self.list.len()
    }
}

/// Checks the filesystem `eng` has mounted. Fails only when it cannot even begin (a shut-down
/// engine); everything found is in the report.
pub fn check(eng: &Engine, progress: Progress<'_>) -> Result<CheckReport, EngineError> {
    let mut c = Checker {
        eng,
        alloc: Allocator::new(*eng.geometry()),
        report: CheckReport::default(),
        claimed: Bitmap::new(eng.geometry().block_count),
        owner: HashMap::new(),
        free: Bitmap::new(eng.geometry().block_count),
        used: 0,
        doubles: Vec::new(),
        meta: Vec::new(),
    };
    let mut tx = eng.begin(TransKind::Read)?;
    let (chunks, unlinked) = phase_ags(&mut c, &mut tx, progress);
    let inodes = phase_inodes(&mut c, &mut tx, &chunks, progress);
    phase_space(&mut c, &mut tx, &chunks, progress);
    let links = phase_directories(&mut c, &mut tx, &inodes, progress);
    progress("links", 0, 1);
    phase_links(&mut c, &inodes, &links, &unlinked);
    tx.cancel()?;
    progress("done", 1, 1);
    Ok(c.report)
}

/// Phase 1: each allocation group's header and trees; returns every inode chunk (block, free
/// mask) and every inode on an unlinked tree.
fn phase_ags(
    c: &mut Checker<'_>,
    tx: &mut Trans<'_>,
    progress: Progress<'_>,
) -> (Vec<(u64, u64)>, Vec<u64>) {
    let g = *c.eng.geometry();
    let mut chunks: Vec<(u64, u64)> = Vec::new();
    let mut unlinked: Vec<u64> = Vec::new();
    for agno in 0..g.ag_count {
        progress("allocation groups", agno as u64, g.ag_count as u64);
        match c.alloc.free_space(tx, agno) {
            Ok(sp) => {
                check_ag(c, agno, &sp);
                chunks.extend(sp.chunks.iter().copied());
                unlinked.extend(sp.unlinked.iter().copied());
            }
            Err(e) => c.problem("allocation groups", None, None, format!("AG {agno}: {e}")),
        }
        // Release what this AG joined: the check reads many blocks, and holds none.
        tx.release_all_clean();
    }
    (chunks, unlinked)
}

/// The mask of `ipb` inode slots.
fn slot_mask(ipb: usize) -> u64 {
    if ipb >= 64 {
        u64::MAX
    } else {
        (1u64 << ipb) - 1
    }
}

/// Phase 2: every inode slot of every chunk: in use exactly when its chunk says so, and each
/// in-use inode judged (`verify::inode`); returns the table of inodes in use.
fn phase_inodes(
    c: &mut Checker<'_>,
    tx: &mut Trans<'_>,
    chunks: &[(u64, u64)],
    progress: Progress<'_>,
) -> Table {
    let g = *c.eng.geometry();
    let ipb = inodes_per_block(g.block_size);
    // As many as the chunks say are in use (a damaged mask only makes the guess wrong): the
    // table is the checker's largest structure, and growing it by doubling would hold it
    // twice at the copy.
    let in_use: u64 = chunks
        .iter()
        .map(|&(_, mask)| ipb as u64 - (mask & slot_mask(ipb)).count_ones() as u64)
        .sum();
    let mut found_inodes: Vec<(u64, Seen)> = Vec::with_capacity(in_use as usize);
    let total = chunks.len() as u64;
    // The first inode the superblock's version cannot stand over, and how many there are.
    let (mut version_found, mut version_inodes) = (None, 0u64);
    for (n, &(chunk, free_mask)) in chunks.iter().enumerate() {
        if n % 256 == 0 {
            progress("inodes", n as u64, total);
        }
        if let Err(e) = tx.read_buf(chunk, BlockType::InodeChunk) {
            c.problem("inodes", Some(chunk), None, format!("inode chunk: {e}"));
            continue;
        }
        for slot in 0..ipb {
            let ino = ino_of(chunk, slot);
            let free = free_mask >> slot & 1 == 1;
            match crate::verify::read(tx, &g, ino) {
                Ok((i, _)) if free => c.problem(
                    "inodes",
                    Some(chunk),
                    Some(ino),
                    format!(
                        "inode {ino} is in use (mode {:o}) but its chunk marks it free",
                        i.mode
                    ),
                ),
                Ok((i, v)) => {
                    let version = c.eng.superblock().version;
                    if let Some(why) = version_problem(version, ino, &i) {
                        version_found.get_or_insert(why);
                        version_inodes += 1;
                    }
                    check_inode(c, ino, &v);
                    found_inodes.push((
                        ino,
                        Seen {
                            mode: i.mode,
                            nlink: i.nlink,
                            parent: dir::parent(&i),
                        },
                    ));
                }
                Err(EngineError::Stale(_)) if free => {}
                Err(EngineError::Stale(_)) => c.problem(
                    "inodes",
                    Some(chunk),
                    Some(ino),
                    format!("inode {ino} is marked in use in its chunk but is empty"),
                ),
                Err(e) => c.problem("inodes", Some(chunk), Some(ino), format!("{e}")),
            }
        }
        tx.release_all_clean();
    }
    if let Some(why) = version_found {
        c.problem(
            "superblock",
            Some(0),
            None,
            format!("superblock: {why} ({version_inodes} such inodes in all)"),
        );
    }
    let inodes = Table::new(found_inodes);
    c.report.inodes = inodes.len() as u64;
    inodes
}

/// Phase 3: space. Every block in every AG's free range claimed exactly once, each block
/// claimed twice named with both owners, and no metadata block ahead of the log.
fn phase_space(
    c: &mut Checker<'_>,
    tx: &mut Trans<'_>,
    chunks: &[(u64, u64)],
    progress: Progress<'_>,
) {
    let g = *c.eng.geometry();
    progress("space", 0, 1);
    for agno in 0..g.ag_count {
        let (first, end) = c.alloc.initial_free(agno);
        let mut leaked = (first..end).filter(|&b| !c.claimed.get(b));
        if let Some(b) = leaked.next() {
            let n = 1 + leaked.count();
            c.problem(
                "space",
                Some(b),
                None,
                format!("AG {agno}: {n} blocks neither free nor used (first {b})"),
            );
        }
    }
    resolve_doubles(c, tx, chunks);
    c.report.blocks_used = c.used;
    check_lsns(c, progress);
}

/// What phase 4 counts: by index in the inode table, the names pointing at each inode and the
/// inodes reached from the root; by position among the directories, each one's subdirectories
/// and names. Per-inode counts are two bytes (a link count above LINK_MAX is wrong anyway, and
/// saturating keeps it wrong); per-directory ones exist for directories only: at a million
/// files in a thousand directories that is 2 MiB, not 12.
struct Links {
    refs: Vec<u16>,
    /// The table indices of the directories, ascending.
    dir_at: Vec<u32>,
    subdirs: Vec<u32>,
    names_of_dir: Vec<u32>,
    reached: Bitmap,
}

impl Links {
    /// The position among the directories of the inode at table index `k`, if it is one.
    fn dir(&self, k: usize) -> Option<usize> {
        self.dir_at.binary_search(&(k as u32)).ok()
    }
}

/// Phase 4: every directory's entries (names, hashes, targets, types, "..") and reachability
/// from the root.
fn phase_directories(
    c: &mut Checker<'_>,
    tx: &mut Trans<'_>,
    inodes: &Table,
    progress: Progress<'_>,
) -> Links {
    let root = c.eng.superblock().root_ino;
    let n_inodes = inodes.len();
    let dir_at: Vec<u32> = (0..n_inodes)
        .filter(|&k| inodes.seen_at(k).is_dir())
        .map(|k| k as u32)
        .collect();
    let mut links = Links {
        refs: vec![0; n_inodes],
        subdirs: vec![0; dir_at.len()],
        names_of_dir: vec![0; dir_at.len()],
        dir_at,
        reached: Bitmap::new(n_inodes as u64),
    };
    match inodes.get(root) {
        Some(r) if r.is_dir() => {}
        _ => c.problem(
            "directories",
            None,
            Some(root),
            format!("the root inode {root} is missing or not a directory"),
        ),
    }
    let dirs: Vec<u64> = links
        .dir_at
        .iter()
        .map(|&k| inodes.ino_at(k as usize))
        .collect();
    c.report.directories = dirs.len() as u64;
    c.report.files = inodes.len() as u64 - dirs.len() as u64;
    // (directory, child) by table index.
    // About one name per inode in a healthy tree: reserved so it is not held twice growing.
    let mut children: Vec<(u32, u32)> = Vec::with_capacity(n_inodes);
    for (n, &d) in dirs.iter().enumerate() {
        if n % 256 == 0 {
            progress("directories", n as u64, dirs.len() as u64);
        }
        check_directory(c, tx, inodes, d, &mut links, &mut children);
    }
    children.sort_unstable();
    let mut queue: VecDeque<u32> = inodes.idx(root).map(|r| r as u32).into_iter().collect();
    for &r in &queue {
        links.reached.set(r as u64);
    }
    while let Some(d) = queue.pop_front() {
        let from = children.partition_point(|e| e.0 < d);
        for &(_, ch) in children[from..].iter().take_while(|e| e.0 == d) {
            if !links.reached.set(ch as u64) && inodes.seen_at(ch as usize).is_dir() {
                queue.push_back(ch);
            }
        }
    }
    links
}

/// One directory's entries, counted into `links` and `children`.
fn check_directory(
    c: &mut Checker<'_>,
    tx: &mut Trans<'_>,
    inodes: &Table,
    d: u64,
    links: &mut Links,
    children: &mut Vec<(u32, u32)>,
) {
    let Some(di_idx) = inodes.idx(d) else {
        return;
    };
    let parent = inodes.seen_at(di_idx).parent;
    let di = match inode::read(tx, d) {
        Ok((_, i)) => i,
        Err(e) => {
            c.problem("directories", None, Some(d), format!("directory {d}: {e}"));
            return;
        }
    };
    match inodes.get(parent) {
        Some(p) if p.is_dir() => {}
        _ => c.problem(
            "directories",
            None,
            Some(d),
            format!("directory {d}: \"..\" names {parent}, not a directory"),
        ),
    }
    let mut cookie = 0;
    loop {
        let batch = match dir::read(tx, d, &di, cookie, 1024) {
            Ok(b) => b,
            Err(e) => {
                c.problem("directories", None, Some(d), format!("directory {d}: {e}"));
                break;
            }
        };
        let Some(last) = batch.last() else { break };
        if last.cookie <= cookie {
            c.problem(
                "directories",
                None,
                Some(d),
                format!("directory {d}: readdir does not advance past cookie {cookie}"),
            );
            break;
        }
        cookie = last.cookie;
        for e in batch.iter().filter(|e| !dir::is_made_up(e)) {
            let problem = |c: &mut Checker<'_>, ino: u64, what: String| {
                c.problem("directories", None, Some(ino), what)
            };
            let shown = String::from_utf8_lossy(&e.name).into_owned();
            if let Some(p) = crate::format::name::name_problem(&e.name) {
                problem(
                    c,
                    d,
                    format!("directory {d}: entry {shown:?} {}", p.describe()),
                );
            }
            if e.key[0] != dir::name_hash(&e.name) {
                problem(c, d, format!("directory {d}: entry \"{shown}\" is filed under a key its name does not hash to (it cannot be looked up)"));
            }
            let Some(t_idx) = inodes.idx(e.ino) else {
                problem(
                    c,
                    d,
                    format!(
                        "directory {d}: entry \"{shown}\" points at inode {}, which is not in use",
                        e.ino
                    ),
                );
                continue;
            };
            let t = *inodes.seen_at(t_idx);
            if dtype(t.mode) != e.ftype {
                problem(
                    c,
                    d,
                    format!(
                        "directory {d}: entry \"{shown}\" says type {} but inode {} has mode {:o}",
                        e.ftype, e.ino, t.mode
                    ),
                );
            }
            links.refs[t_idx] = links.refs[t_idx].saturating_add(1);
            if let (Some(dd), Some(td)) = (links.dir(di_idx), links.dir(t_idx)) {
                links.subdirs[dd] += 1;
                links.names_of_dir[td] += 1;
                if t.parent != d {
                    problem(
                        c,
                        e.ino,
                        format!(
                            "directory {} is named \"{shown}\" in {d} but its \"..\" is {}",
                            e.ino, t.parent
                        ),
                    );
                }
            }
            children.push((di_idx as u32, t_idx as u32));
        }
        tx.release_all_clean();
    }
}

/// Phase 5: each inode's link count against the names found, reachability, and the unlinked
/// trees (every inode on them in use with no links).
fn phase_links(c: &mut Checker<'_>, inodes: &Table, links: &Links, unlinked: &[u64]) {
    let root = c.eng.superblock().root_ino;
    let on_unlinked: HashMap<u64, ()> = unlinked.iter().map(|&i| (i, ())).collect();
    for &u in unlinked {
        match inodes.get(u) {
            None => c.problem(
                "unlinked",
                None,
                Some(u),
                format!("inode {u} is on an unlinked tree but not in use"),
            ),
            Some(i) if i.nlink != 0 => c.problem(
                "unlinked",
                None,
                Some(u),
                format!("inode {u} is on an unlinked tree but has {} links", i.nlink),
            ),
            Some(_) => c.report.pending_orphans += 1,
        }
    }
    for k in 0..inodes.len() {
        let (ino, i) = (inodes.ino_at(k), *inodes.seen_at(k));
        let is_dir = i.is_dir();
        let at = links.dir(k);
        let names = at.map_or(0, |d| links.names_of_dir[d]);
        let found = match at {
            Some(d) if ino == root || names > 0 => 2 + links.subdirs[d],
            Some(_) => 0,
            None => links.refs[k] as u32,
        };
        if is_dir && ino != root && names > 1 {
            c.problem(
                "directories",
                None,
                Some(ino),
                format!("directory {ino} has {names} names"),
            );
        }
        if i.nlink == 0 {
            if !on_unlinked.contains_key(&ino) {
                c.problem(
                    "links",
                    None,
                    Some(ino),
                    format!("inode {ino} has no links and is not on an unlinked tree"),
                );
            }
            continue;
        }
        if i.nlink != found {
            c.problem(
                "links",
                None,
                Some(ino),
                format!(
                    "inode {ino} has link count {} but {found} links were found",
                    i.nlink
                ),
            );
        }
        if !links.reached.get(k as u64) {
            c.problem(
                "directories",
                None,
                Some(ino),
                format!("inode {ino} has links but cannot be reached from the root"),
            );
        }
    }
}

fn check_ag(c: &mut Checker<'_>, agno: u32, sp: &AgSpace) {
    let (first, end) = c.alloc.initial_free(agno);
    let start = c.alloc.ag_start(agno);
    let hdr_block = Some(start + crate::format::ag::AG_HEADER_OFFSET);
    let mut prev_end = 0;
    let mut total = 0;
    let mut longest = 0;
    for &(s, l) in &sp.by_bno {
        if l == 0 || s < first || s + l > end {
            c.problem(
                "allocation groups",
                hdr_block,
                None,
                format!(
                    "AG {agno}: free extent {s}+{l} outside the AG's free range {first}..{end}"
                ),
            );
            continue;
        }
        if s < prev_end {
            c.problem(
                "allocation groups",
                hdr_block,
                None,
                format!("AG {agno}: free extent {s}+{l} overlaps the one before"),
            );
        } else if s == prev_end && prev_end != 0 {
            c.problem(
                "allocation groups",
                hdr_block,
                None,
                format!("AG {agno}: free extent {s}+{l} should have merged with the one before"),
            );
        }
        prev_end = s + l;
        total += l;
        longest = longest.max(l);
        for b in s..s + l {
            c.claim(b, None, agno);
        }
    }
    c.report.blocks_free += total;
    let mut a = sp.by_bno.clone();
    let mut b = sp.by_cnt.clone();
    a.sort_unstable();
    b.sort_unstable();
    if a != b {
        c.problem("allocation groups", hdr_block, None, format!("AG {agno}: the by-block and by-length free-space trees differ ({} against {} extents)", a.len(), b.len()));
    }
    if sp.hdr.free_blocks != total {
        c.problem(
            "allocation groups",
            hdr_block,
            None,
            format!(
                "AG {agno}: header says {} free blocks, the trees hold {total}",
                sp.hdr.free_blocks
            ),
        );
    }
    if sp.hdr.longest != longest {
        c.problem(
            "allocation groups",
            hdr_block,
            None,
            format!(
                "AG {agno}: header says longest free extent {}, the trees say {longest}",
                sp.hdr.longest
            ),
        );
    }
    for &r in &sp.hdr.agfl {
        c.claim(start + r as u64, Some(Owner::FreeList(agno)), agno);
    }
    let nodes = sp
        .free_nodes
        .iter()
        .chain(&sp.ino_nodes)
        .chain(&sp.unl_nodes)
        .copied()
        .filter(|&n| n >= start + AG_RESERVED_BLOCKS)
        .collect::<Vec<_>>();
    for n in nodes {
        c.claim(n, Some(Owner::Node(agno)), agno);
    }
    c.meta.push(start + crate::format::ag::AG_HEADER_OFFSET);
    c.meta.extend(
        sp.free_nodes
            .iter()
            .chain(&sp.ino_nodes)
            .chain(&sp.unl_nodes)
            .chain(sp.chunks.iter().map(|(b, _)| b)),
    );
    let ipb = inodes_per_block(c.eng.geometry().block_size) as u64;
    let mut free_inodes = 0;
    for &(chunk, mask) in &sp.chunks {
        c.claim(chunk, Some(Owner::Chunk(agno)), agno);
        free_inodes +=
            (mask & if ipb >= 64 { u64::MAX } else { (1 << ipb) - 1 }).count_ones() as u64;
    }
    if sp.hdr.inodes != sp.chunks.len() as u64 * ipb {
        c.problem(
            "allocation groups",
            hdr_block,
            None,
            format!(
                "AG {agno}: header counts {} inodes, the chunks hold {}",
                sp.hdr.inodes,
                sp.chunks.len() as u64 * ipb
            ),
        );
    }
    if sp.hdr.free_inodes != free_inodes {
        c.problem(
            "allocation groups",
            hdr_block,
            None,
            format!(
                "AG {agno}: header counts {} free inodes, the chunks have {free_inodes}",
                sp.hdr.free_inodes
            ),
        );
    }
}

/// Reports what the verdict `v` on inode `ino` finds wrong and claims what it owns.
fn check_inode(c: &mut Checker<'_>, ino: u64, v: &crate::verify::Verdict) {
    c.report.interrupted_xattrs += v.interrupted_xattrs;
    for f in &v.faults {
        c.problem(
            "inodes",
            None,
            Some(ino),
            format!("inode {ino}: {}", f.describe()),
        );
    }
    for r in &v.owns {
        for b in r.start..r.start + r.len {
            if r.role.is_metadata() {
                c.meta.push(b);
            }
            let agno = c.alloc.agno_of(b);
            c.claim(b, Some(Owner::Inode(ino, r.role.name())), agno);
        }
    }
}

/// Names the first claimant of every block an inode claimed first and something claimed again
/// (`Checker::doubles`): a second walk of the inodes, only when there are such blocks (as
/// e2fsck's passes 1B-1D find the owners of its duplicate blocks).
fn resolve_doubles(c: &mut Checker<'_>, tx: &mut Trans<'_>, chunks: &[(u64, u64)]) {
    if c.doubles.is_empty() {
        return;
    }
    let mut first: HashMap<u64, Option<String>> = c.doubles.iter().map(|d| (d.0, None)).collect();
    let ipb = inodes_per_block(c.eng.geometry().block_size);
    for &(chunk, free_mask) in chunks {
        for slot in (0..ipb).filter(|s| free_mask >> s & 1 == 0) {
            let ino = ino_of(chunk, slot);
            let Ok((_, v)) = crate::verify::read(tx, c.eng.geometry(), ino) else {
                continue;
            };
            for r in &v.owns {
                for b in r.start..r.start + r.len {
                    if let Some(slot @ None) = first.get_mut(&b) {
                        *slot = Some(Owner::Inode(ino, r.role.name()).to_string());
                    }
                }
            }
        }
        tx.release_all_clean();
    }
    for (b, second) in std::mem::take(&mut c.doubles) {
        let who = first
            .get(&b)
            .cloned()
            .flatten()
            .unwrap_or_else(|| "an inode".to_string());
        c.problem(
            "space",
            Some(b),
            None,
            format!("block {b} is both {who} and {second}"),
        );
    }
}

/// Every metadata block in use carries the LSN of the last checkpoint that changed it, which is
/// behind the log's head. One ahead of it (a stale or foreign LSN) would make a later recovery
/// skip that block's changes as already applied.
fn check_lsns(c: &mut Checker<'_>, progress: Progress<'_>) {
    let blocks = std::mem::take(&mut c.meta);
    for a in blocks_ahead_of_log(c.eng, blocks, progress) {
        c.problem(
            "log",
            Some(a.blkno),
            None,
            format!(
                "{} block {} carries LSN {:#x}, at or ahead of the log's head {:#x}",
                a.btype.name(),
                a.blkno,
                a.lsn,
                a.head
            ),
        );
    }
}

/// A metadata block whose header LSN is at or ahead of the log's head.
pub(crate) struct Ahead {
    pub(crate) blkno: u64,
    pub(crate) btype: BlockType,
    pub(crate) lsn: u64,
    pub(crate) head: u64,
}

/// Of the metadata `blocks`, those whose verified header carries an LSN at or ahead of the log's
/// head (blocks that fail their header check are reported where they are read, not here). Shared
/// by the check and the repair's scan.
pub(crate) fn blocks_ahead_of_log(
    eng: &Engine,
    mut blocks: Vec<u64>,
    progress: Progress<'_>,
) -> Vec<Ahead> {
    let g = *eng.geometry();
    let head = eng.log().positions().0.lsn(g.block_size).0;
    let uuid = eng.superblock().uuid;
    blocks.sort_unstable();
    blocks.dedup();
    let mut buf = crate::device::AlignedBuf::new(g.block_size as usize);
    let mut out = Vec::new();
    for (n, &b) in blocks.iter().enumerate() {
        if n % 4096 == 0 {
            progress("log sequence numbers", n as u64, blocks.len() as u64);
        }
        if b >= g.block_count || eng.device().read(b, &mut buf).is_err() {
            continue;
        }
        if let Ok(h) = crate::format::BlockHeader::verify(&buf, b, None, &uuid) {
            if h.lsn >= head {
                out.push(Ahead {
                    blkno: b,
                    btype: h.btype,
                    lsn: h.lsn,
                    head,
                });
            }
        }
    }
    out
}
