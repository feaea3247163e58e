//! Crash states of every short workload, as CrashMonkey/ACE generate them (issue 17): every
//! sequence of one and of two operations from {create, mkdir, link, unlink, rmdir, rename
//! (plain, over an existing name, exchange, leaving a whiteout), symlink, write (append,
//! overwrite, past the end), fallocate (each mode), truncate (down, up), setxattr, removexattr,
//! an O_TMPFILE file written and linked in}, each followed by fsync,
//! fdatasync or sync, on a small starting tree. Each workload runs on a recording device; for
//! every flush point, the image with everything before it and then random subsets, in random
//! order, of the writes after it (what a crash can leave) is recovered and checked:
//! - fsck's checker finds nothing;
//! - the tree (names, kinds, sizes, link targets, xattrs) is the model after some prefix of the
//!   operations, no shorter than the last fsync or sync that returned before the crash — every
//!   operation all there or not at all — and each file's bytes are those of that prefix or of
//!   the operation after it (data overwritten in place is not logged);
//! - a file fdatasync'd holds the bytes it was synced with.
//!
//! The suite runs every one-operation workload and a fixed sample of the two-operation ones;
//! `ACE_FULL=1` runs all of them (`scripts/ace-crash.sh`), which docs/design.md reports.

mod common;

use common::crash::{flush_windows, landed};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use ticketfs::device::{DevError, DevEvent, Device, MemDevice, RecordingDevice};
use ticketfs::fs::{Ctx, Fs, RenameHow, SetAttr, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};

/// A character device's type bits (stat(2)).
const S_IFCHR: u32 = 0o020000;
use ticketfs::log::LogConfig;
use ticketfs::mem::OverrunPolicy;
use ticketfs::mkfs::{make_filesystem, MkfsOptions};
use ticketfs::{Engine, EngineOptions};

const BS: u32 = 512;
/// Crash states per flush window beyond the one with every write of the window landed
/// (`ACE_REORDERINGS` overrides it).
const REORDERINGS: usize = 3;

fn reorderings() -> usize {
    std::env::var("ACE_REORDERINGS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(REORDERINGS)
}
/// Of the two-operation workloads, the suite runs one in this many (all with ACE_FULL=1).
const SEQ2_SAMPLE_EVERY: usize = 23;

fn opts() -> EngineOptions {
    EngineOptions {
        overrun: OverrunPolicy::Panic,
        // Only the workload's own syncs write checkpoints (besides busy-block forces), so
        // the crash points fall where the test can name what must be durable.
        log: LogConfig {
            cil_timer: Duration::from_secs(3600),
            ail_interval: Duration::from_millis(1),
        },
        ..Default::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir,
    /// `id` tells the model's hard links apart (names of one file share it); 0 in what the
    /// filesystem shows, and never compared.
    File {
        id: u32,
        data: Vec<u8>,
        xattrs: BTreeMap<String, Vec<u8>>,
    },
    Link(Vec<u8>),
    /// A whiteout (RENAME_WHITEOUT's character device 0:0).
    Whiteout,
}

type Tree = BTreeMap<String, Entry>;

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed) | 1)
        .collect()
}

/// The starting tree.
fn start_tree() -> Tree {
    let mut t = Tree::new();
    t.insert("/A".into(), Entry::Dir);
    t.insert(
        "/A/foo".into(),
        Entry::File {
            id: 1,
            data: pattern(1, 6000),
            xattrs: BTreeMap::from([("user.a".to_string(), b"a1".to_vec())]),
        },
    );
    t.insert("/A/empty".into(), Entry::Dir);
    t.insert("/B".into(), Entry::Dir);
    t.insert(
        "/bar".into(),
        Entry::File {
            id: 2,
            data: pattern(2, 3000),
            xattrs: BTreeMap::new(),
        },
    );
    t
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Create,
    Mkdir,
    Link,
    UnlinkFoo,
    UnlinkBar,
    Rmdir,
    Rename,
    RenameOver,
    Exchange,
    Symlink,
    Append,
    Overwrite,
    PastEof,
    Falloc,
    FallocKeep,
    Punch,
    Zero,
    TruncDown,
    TruncUp,
    SetXattr,
    RemoveXattr,
    /// RENAME_WHITEOUT of /A/foo to /B/foo2.
    Whiteout,
    /// An O_TMPFILE file in /B, written, then linked in as /B/tmp.
    TmpfileLink,
}

const OPS: [Op; 23] = [
    Op::Create,
    Op::Mkdir,
    Op::Link,
    Op::UnlinkFoo,
    Op::UnlinkBar,
    Op::Rmdir,
    Op::Rename,
    Op::RenameOver,
    Op::Exchange,
    Op::Symlink,
    Op::Append,
    Op::Overwrite,
    Op::PastEof,
    Op::Falloc,
    Op::FallocKeep,
    Op::Punch,
    Op::Zero,
    Op::TruncDown,
    Op::TruncUp,
    Op::SetXattr,
    Op::RemoveXattr,
    Op::Whiteout,
    Op::TmpfileLink,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Persist {
    Fsync,
    Fdatasync,
    Sync,
}

const PERSISTS: [Persist; 3] = [Persist::Fsync, Persist::Fdatasync, Persist::Sync];

/// Changes the file at `p` and every other name of it (its hard links).
fn modify(
    t: &mut Tree,
    p: &str,
    f: impl Fn(&mut Vec<u8>, &mut BTreeMap<String, Vec<u8>>) -> Option<()>,
) -> Option<()> {
    let Some(Entry::File { id, .. }) = t.get(p) else {
        return None;
    };
    let id = *id;
    for e in t.values_mut() {
        if let Entry::File {
            id: i,
            data,
            xattrs,
        } = e
        {
            if *i == id {
                f(data, xattrs)?;
            }
        }
    }
    Some(())
}

fn new_id(t: &Tree) -> u32 {
    t.values()
        .filter_map(|e| match e {
            Entry::File { id, .. } => Some(*id),
            _ => None,
        })
        .max()
        .unwrap_or(0)
        + 1
}

/// The operation's effect on the model, and the path it persists (fsync/fdatasync target);
/// None when it does not apply to this tree (the workload is skipped, as ACE generates only
/// sequences that run).
fn model(op: Op, t: &Tree) -> Option<(Tree, String)> {
    let mut t = t.clone();
    let has_file = |t: &Tree, p: &str| matches!(t.get(p), Some(Entry::File { .. }));
    let target = match op {
        Op::Create => {
            if t.contains_key("/A/new") {
                return None;
            }
            let id = new_id(&t);
            t.insert(
                "/A/new".into(),
                Entry::File {
                    id,
                    data: Vec::new(),
                    xattrs: BTreeMap::new(),
                },
            );
            "/A/new"
        }
        Op::Mkdir => {
            if t.contains_key("/B/sub") {
                return None;
            }
            t.insert("/B/sub".into(), Entry::Dir);
            "/B/sub"
        }
        Op::Link => {
            if !has_file(&t, "/A/foo") || t.contains_key("/B/foolink") {
                return None;
            }
            let e = t["/A/foo"].clone();
            t.insert("/B/foolink".into(), e);
            "/B/foolink"
        }
        Op::UnlinkFoo | Op::UnlinkBar => {
            let p = if op == Op::UnlinkFoo {
                "/A/foo"
            } else {
                "/bar"
            };
            if !has_file(&t, p) {
                return None;
            }
            t.remove(p);
            if op == Op::UnlinkFoo {
                "/A"
            } else {
                "/"
            }
        }
        Op::Rmdir => {
            if t.get("/A/empty") != Some(&Entry::Dir) {
                return None;
            }
            t.remove("/A/empty");
            "/A"
        }
        Op::Rename => {
            if !has_file(&t, "/A/foo") || t.contains_key("/B/foo2") {
                return None;
            }
            let e = t.remove("/A/foo")?;
            t.insert("/B/foo2".into(), e);
            "/B/foo2"
        }
        Op::Whiteout => {
            if !has_file(&t, "/A/foo") || t.contains_key("/B/foo2") {
                return None;
            }
            let e = t.insert("/A/foo".into(), Entry::Whiteout)?;
            t.insert("/B/foo2".into(), e);
            "/B/foo2"
        }
        Op::TmpfileLink => {
            if t.contains_key("/B/tmp") {
                return None;
            }
            let id = new_id(&t);
            t.insert(
                "/B/tmp".into(),
                Entry::File {
                    id,
                    data: pattern(7, 5000),
                    xattrs: BTreeMap::new(),
                },
            );
            "/B/tmp"
        }
        Op::RenameOver => {
            if !has_file(&t, "/bar") || !has_file(&t, "/A/foo") {
                return None;
            }
            let e = t.remove("/bar")?;
            t.insert("/A/foo".into(), e);
            "/A/foo"
        }
        Op::Exchange => {
            if !has_file(&t, "/bar") || !has_file(&t, "/A/foo") {
                return None;
            }
            let a = t.remove("/A/foo")?;
            let b = t.remove("/bar")?;
            t.insert("/A/foo".into(), b);
            t.insert("/bar".into(), a);
            "/A/foo"
        }
        Op::Symlink => {
            if t.contains_key("/B/sym") {
                return None;
            }
            t.insert("/B/sym".into(), Entry::Link(b"../A/foo".to_vec()));
            "/B"
        }
        Op::Append
        | Op::Overwrite
        | Op::Falloc
        | Op::FallocKeep
        | Op::Punch
        | Op::Zero
        | Op::TruncDown
        | Op::SetXattr
        | Op::RemoveXattr => {
            modify(&mut t, "/A/foo", |data, xattrs| {
                match op {
                    Op::Append => data.extend(pattern(3, 2000)),
                    Op::Overwrite => {
                        if data.len() < 5000 {
                            data.resize(5000, 0);
                        }
                        data[1000..5000].copy_from_slice(&pattern(4, 4000));
                    }
                    Op::Falloc => {
                        if data.len() < 16384 {
                            data.resize(16384, 0);
                        }
                    }
                    Op::FallocKeep => {}
                    Op::Punch => {
                        let end = data.len().min(4096);
                        if end > 1024 {
                            data[1024..end].fill(0);
                        }
                    }
                    Op::Zero => {
                        if data.len() < 3000 {
                            data.resize(3000, 0);
                        }
                        data[512..3000].fill(0);
                    }
                    Op::TruncDown => data.truncate(2500),
                    Op::SetXattr => {
                        xattrs.insert("user.b".into(), pattern(5, 100));
                    }
                    Op::RemoveXattr => {
                        xattrs.remove("user.a")?;
                    }
                    _ => unreachable!(),
                }
                Some(())
            })?;
            "/A/foo"
        }
        Op::PastEof | Op::TruncUp => {
            modify(&mut t, "/bar", |data, _| {
                if op == Op::PastEof {
                    if data.len() < 21500 {
                        data.resize(21500, 0);
                    }
                    data[20000..21500].copy_from_slice(&pattern(6, 1500));
                } else {
                    if data.len() >= 9000 {
                        return None;
                    }
                    data.resize(9000, 0);
                }
                Some(())
            })?;
            "/bar"
        }
    };
    Some((t, target.to_string()))
}

fn resolve(fs: &Fs, path: &str) -> u64 {
    let mut ino = fs.root();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        ino = fs
            .lookup(&Ctx::ROOT, ino, part.as_bytes())
            .expect("lookup")
            .ino;
    }
    ino
}

fn parent_of(fs: &Fs, path: &str) -> (u64, String) {
    let (dir, name) = path.rsplit_once('/').expect("absolute path");
    (
        resolve(fs, if dir.is_empty() { "/" } else { dir }),
        name.to_string(),
    )
}

/// Runs `op` on the filesystem (the model says it applies).
fn run_op(fs: &Fs, op: Op) {
    let c = Ctx::ROOT;
    let set_size = |ino: u64, size: u64| {
        let a = SetAttr {
            mode: None,
            uid: None,
            gid: None,
            size: Some(size),
            atime: None,
            mtime: None,
            via_open_file: true,
            kill_suidgid: false,
        };
        fs.setattr(&c, ino, &a).expect("truncate");
    };
    match op {
        Op::Create => {
            let (p, n) = parent_of(fs, "/A/new");
            fs.make(&c, p, n.as_bytes(), S_IFREG | 0o644, 0, None)
                .expect("create");
        }
        Op::Mkdir => {
            let (p, n) = parent_of(fs, "/B/sub");
            fs.make(&c, p, n.as_bytes(), S_IFDIR | 0o755, 0, None)
                .expect("mkdir");
        }
        Op::Link => {
            let (p, n) = parent_of(fs, "/B/foolink");
            fs.link(&c, resolve(fs, "/A/foo"), p, n.as_bytes())
                .expect("link");
        }
        Op::UnlinkFoo | Op::UnlinkBar => {
            let path = if op == Op::UnlinkFoo {
                "/A/foo"
            } else {
                "/bar"
            };
            let (p, n) = parent_of(fs, path);
            fs.remove(&c, p, n.as_bytes(), false).expect("unlink");
        }
        Op::Rmdir => {
            let (p, n) = parent_of(fs, "/A/empty");
            fs.remove(&c, p, n.as_bytes(), true).expect("rmdir");
        }
        Op::Rename | Op::RenameOver | Op::Exchange => {
            let (from, to) = match op {
                Op::Rename => ("/A/foo", "/B/foo2"),
                Op::RenameOver => ("/bar", "/A/foo"),
                _ => ("/A/foo", "/bar"),
            };
            let (p1, n1) = parent_of(fs, from);
            let (p2, n2) = parent_of(fs, to);
            let how = RenameHow {
                exchange: op == Op::Exchange,
                ..RenameHow::default()
            };
            fs.rename(&c, (p1, n1.as_bytes()), (p2, n2.as_bytes()), how)
                .expect("rename");
        }
        Op::Whiteout => {
            let (p1, n1) = parent_of(fs, "/A/foo");
            let (p2, n2) = parent_of(fs, "/B/foo2");
            let how = RenameHow {
                whiteout: true,
                ..RenameHow::default()
            };
            fs.rename(&c, (p1, n1.as_bytes()), (p2, n2.as_bytes()), how)
                .expect("rename whiteout");
        }
        Op::TmpfileLink => {
            let (p, n) = parent_of(fs, "/B/tmp");
            let a = fs.tmpfile(&c, p, 0o644).expect("tmpfile");
            fs.write(&c, a.ino, 0, &pattern(7, 5000))
                .expect("write tmpfile");
            fs.link(&c, a.ino, p, n.as_bytes()).expect("link tmpfile");
            fs.release(a.ino).expect("release tmpfile");
        }
        Op::Symlink => {
            let (p, n) = parent_of(fs, "/B/sym");
            fs.make(&c, p, n.as_bytes(), S_IFLNK | 0o777, 0, Some(b"../A/foo"))
                .expect("symlink");
        }
        Op::Append => {
            let ino = resolve(fs, "/A/foo");
            let size = fs.getattr(ino).expect("getattr").size;
            fs.write(&c, ino, size, &pattern(3, 2000)).expect("append");
        }
        Op::Overwrite => {
            fs.write(&c, resolve(fs, "/A/foo"), 1000, &pattern(4, 4000))
                .expect("overwrite");
        }
        Op::PastEof => {
            fs.write(&c, resolve(fs, "/bar"), 20000, &pattern(6, 1500))
                .expect("write past eof");
        }
        Op::Falloc => fs
            .fallocate(resolve(fs, "/A/foo"), 0, 16384, false, false, false)
            .expect("fallocate"),
        Op::FallocKeep => fs
            .fallocate(resolve(fs, "/A/foo"), 6000, 14000, true, false, false)
            .expect("fallocate keep"),
        Op::Punch => fs
            .fallocate(resolve(fs, "/A/foo"), 1024, 3072, true, true, false)
            .expect("punch"),
        Op::Zero => fs
            .fallocate(resolve(fs, "/A/foo"), 512, 2488, false, false, true)
            .expect("zero"),
        Op::TruncDown => set_size(resolve(fs, "/A/foo"), 2500),
        Op::TruncUp => set_size(resolve(fs, "/bar"), 9000),
        Op::SetXattr => fs
            .setxattr(
                &c,
                resolve(fs, "/A/foo"),
                b"user.b",
                &pattern(5, 100),
                false,
                false,
            )
            .expect("setxattr"),
        Op::RemoveXattr => fs
            .removexattr(&c, resolve(fs, "/A/foo"), b"user.a")
            .expect("removexattr"),
    }
}

/// The tree the filesystem shows.
fn walk(fs: &Fs) -> Result<Tree, String> {
    let c = Ctx::ROOT;
    let mut out = Tree::new();
    let mut stack = vec![(fs.root(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let mut cookie = 0;
        loop {
            let batch = fs
                .readdir(dir, cookie, 64)
                .map_err(|e| format!("readdir: {e:?}"))?;
            if batch.is_empty() {
                break;
            }
            for e in batch {
                cookie = e.cookie;
                if e.name == b"." || e.name == b".." || e.name == b"lost+found" {
                    continue;
                }
                let name = format!("{prefix}/{}", String::from_utf8_lossy(&e.name));
                let a = fs.getattr(e.ino).map_err(|e| format!("getattr: {e:?}"))?;
                let entry = match a.mode & S_IFMT {
                    S_IFDIR => {
                        stack.push((e.ino, name.clone()));
                        Entry::Dir
                    }
                    S_IFLNK => {
                        Entry::Link(fs.readlink(e.ino).map_err(|e| format!("readlink: {e:?}"))?)
                    }
                    // The only devices the workloads make.
                    S_IFCHR => Entry::Whiteout,
                    _ => {
                        let data = fs
                            .read(e.ino, 0, a.size as usize + 1)
                            .map_err(|e| format!("read {name}: {e:?}"))?;
                        let list = fs
                            .listxattr(&c, e.ino)
                            .map_err(|e| format!("listxattr: {e:?}"))?;
                        let mut xattrs = BTreeMap::new();
                        for n in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
                            let v = fs
                                .getxattr(&c, e.ino, n)
                                .map_err(|e| format!("getxattr: {e:?}"))?;
                            xattrs.insert(String::from_utf8_lossy(n).into_owned(), v);
                        }
                        Entry::File {
                            id: 0,
                            data,
                            xattrs,
                        }
                    }
                };
                out.insert(name, entry);
            }
        }
    }
    Ok(out)
}

/// The base image: a fresh filesystem holding the starting tree, cleanly unmounted.
fn base_image() -> Arc<MemDevice> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("image");
    make_filesystem(
        &p,
        &MkfsOptions {
            size: Some(8 << 20),
            block_size: BS,
            ..Default::default()
        },
    )
    .unwrap();
    let dev = Arc::new(MemDevice::from_bytes(BS, std::fs::read(&p).unwrap()));
    let fs = Fs::new(Engine::mount(dev.clone(), opts()).unwrap(), false).unwrap();
    let c = Ctx::ROOT;
    let root = fs.root();
    let a = fs.make(&c, root, b"A", S_IFDIR | 0o755, 0, None).unwrap();
    let a_foo = fs
        .make(&c, a.ino, b"foo", S_IFREG | 0o644, 0, None)
        .unwrap();
    fs.write(&c, a_foo.ino, 0, &pattern(1, 6000)).unwrap();
    fs.setxattr(&c, a_foo.ino, b"user.a", b"a1", false, false)
        .unwrap();
    fs.make(&c, a.ino, b"empty", S_IFDIR | 0o755, 0, None)
        .unwrap();
    fs.make(&c, root, b"B", S_IFDIR | 0o755, 0, None).unwrap();
    let bar = fs.make(&c, root, b"bar", S_IFREG | 0o644, 0, None).unwrap();
    fs.write(&c, bar.ino, 0, &pattern(2, 3000)).unwrap();
    let strip = |t: Tree| -> Tree {
        t.into_iter()
            .map(|(k, v)| match v {
                Entry::File { data, xattrs, .. } => (
                    k,
                    Entry::File {
                        id: 0,
                        data,
                        xattrs,
                    },
                ),
                v => (k, v),
            })
            .collect()
    };
    assert_eq!(walk(&fs).unwrap(), strip(start_tree()), "the starting tree");
    fs.unmount().unwrap();
    Arc::new(MemDevice::from_bytes(BS, dev.snapshot()))
}

/// A device reading `base` under a patch of blocks (the crash state's writes): no copy of the
/// whole image per state.
struct Patched {
    base: Arc<MemDevice>,
    patch: parking_lot::Mutex<HashMap<u64, Vec<u8>>>,
}

impl Device for Patched {
    fn block_size(&self) -> u32 {
        BS
    }
    fn block_count(&self) -> u64 {
        self.base.block_count()
    }
    fn read(&self, blkno: u64, buf: &mut [u8]) -> Result<(), DevError> {
        self.base.read(blkno, buf)?;
        let p = self.patch.lock();
        for (i, chunk) in buf.chunks_mut(BS as usize).enumerate() {
            if let Some(b) = p.get(&(blkno + i as u64)) {
                chunk.copy_from_slice(b);
            }
        }
        Ok(())
    }
    fn write(&self, blkno: u64, buf: &[u8]) -> Result<(), DevError> {
        let mut p = self.patch.lock();
        for (i, chunk) in buf.chunks(BS as usize).enumerate() {
            p.insert(blkno + i as u64, chunk.to_vec());
        }
        Ok(())
    }
    fn flush(&self) -> Result<(), DevError> {
        Ok(())
    }
}

/// One workload's run: the device history, the model after each operation, and the syncs.
struct Run {
    events: Vec<DevEvent>,
    /// The model before any operation (index 0) and after each.
    states: Vec<Tree>,
    /// (event count when the sync returned, operation index, the kind, its path).
    syncs: Vec<(usize, usize, Persist, String)>,
}

fn run_workload(base: &Arc<MemDevice>, steps: &[(Op, Persist)]) -> Option<Run> {
    let mut states = vec![start_tree()];
    let mut targets = Vec::new();
    for &(op, _) in steps {
        let (next, target) = model(op, states.last()?)?;
        states.push(next);
        targets.push(target);
    }
    let rec = Arc::new(RecordingDevice::new(BS, base.snapshot()));
    let fs = Fs::new(Engine::mount(rec.clone(), opts()).unwrap(), false).unwrap();
    let mut syncs = Vec::new();
    for (i, &(op, persist)) in steps.iter().enumerate() {
        run_op(&fs, op);
        let target = &targets[i];
        match persist {
            Persist::Sync | Persist::Fsync => fs.fsync().expect("fsync"),
            Persist::Fdatasync => {
                let ino = resolve(&fs, target);
                if fs.getattr(ino).expect("getattr").mode & S_IFMT == S_IFDIR {
                    // FUSE sends a directory's fdatasync as FSYNCDIR, which is a full fsync.
                    fs.fsync().expect("fsyncdir");
                } else {
                    fs.fdatasync(ino).expect("fdatasync");
                }
            }
        }
        syncs.push((rec.event_count(), i + 1, persist, target.clone()));
    }
    fs.crash();
    Some(Run {
        events: rec.events(),
        states,
        syncs,
    })
}

/// An xattr list, briefly: names and value lengths and sums.
fn xattr_names(x: &BTreeMap<String, Vec<u8>>) -> String {
    x.iter()
        .map(|(k, v)| {
            format!(
                "{k}={}:{}",
                v.len(),
                v.iter().map(|&b| b as u32).sum::<u32>()
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Does `got` pass as the state of a crash after `crash_after` events?
fn check_state(run: &Run, got: &Tree, crash_after: usize) -> Result<(), String> {
    let done: Vec<&(usize, usize, Persist, String)> = run
        .syncs
        .iter()
        .filter(|(e, ..)| *e <= crash_after + 1)
        .collect();
    let is_dir = |i: usize, path: &str| matches!(run.states[i].get(path), Some(Entry::Dir) | None);
    let full = done
        .iter()
        .filter(|(_, i, p, path)| *p != Persist::Fdatasync || is_dir(*i, path))
        .map(|(_, i, ..)| *i)
        .max()
        .unwrap_or(0);
    let meta = |t: &Tree| -> Vec<(String, String)> {
        t.iter()
            .map(|(k, v)| {
                let m = match v {
                    Entry::Dir => "dir".to_string(),
                    Entry::Link(l) => format!("link {l:?}"),
                    Entry::Whiteout => "whiteout".to_string(),
                    Entry::File { data, xattrs, .. } => {
                        format!("file {} {}", data.len(), xattr_names(xattrs))
                    }
                };
                (k.clone(), m)
            })
            .collect()
    };
    let bytes_ok = |j: usize| -> bool {
        got.iter().all(|(k, v)| {
            let Entry::File { data, .. } = v else {
                return true;
            };
            let cands: Vec<&Vec<u8>> = [j, j + 1]
                .iter()
                .filter_map(|&s| run.states.get(s))
                .filter_map(|t| match t.get(k) {
                    Some(Entry::File { data, .. }) => Some(data),
                    _ => None,
                })
                .collect();
            data.iter()
                .enumerate()
                .all(|(i, b)| cands.iter().any(|c| c.get(i).copied().unwrap_or(0) == *b))
        })
    };
    // fdatasync: the synced file's size and bytes, unless a later operation in the state
    // changed them (bytes the next one overwrote in place may already show).
    let synced_ok = |j: usize| -> Result<(), String> {
        for (_, i, p, path) in &done {
            if *p != Persist::Fdatasync || j > *i {
                continue;
            }
            let want = match run.states[*i].get(path) {
                Some(Entry::File { data, .. }) => data,
                _ => continue,
            };
            let next = match run.states.get(*i + 1).and_then(|t| t.get(path)) {
                Some(Entry::File { data, .. }) => Some(data),
                _ => None,
            };
            let same = |data: &Vec<u8>| {
                data.len() == want.len()
                    && data.iter().enumerate().all(|(k, b)| {
                        want[k] == *b || next.is_some_and(|n| n.get(k).copied().unwrap_or(0) == *b)
                    })
            };
            match got.get(path) {
                Some(Entry::File { data, .. }) if same(data) => {}
                other => {
                    return Err(format!(
                        "{path} was fdatasync'd after operation {i}, holds {} bytes, not its {}",
                        match other {
                            Some(Entry::File { data, .. }) => data.len().to_string(),
                            _ => "nothing".into(),
                        },
                        want.len()
                    ))
                }
            }
        }
        Ok(())
    };
    // Two prefixes can show the same tree (an exchange done twice): any that passes will do.
    let mut why = None;
    for j in full..run.states.len() {
        if meta(&run.states[j]) != meta(got) || !bytes_ok(j) {
            continue;
        }
        match synced_ok(j) {
            Ok(()) => return Ok(()),
            Err(e) => why = Some(e),
        }
    }
    Err(why.unwrap_or_else(|| {
        let near = (0..run.states.len()).find(|&j| meta(&run.states[j]) == meta(got));
        format!(
            "matches no state from {full} on (metadata matches state {near:?}): {:?}",
            meta(got)
        )
    }))
}

fn recover(base: &Arc<MemDevice>, patch: HashMap<u64, Vec<u8>>) -> Result<Tree, String> {
    let dev: Arc<dyn Device> = Arc::new(Patched {
        base: base.clone(),
        patch: parking_lot::Mutex::new(patch),
    });
    let eng = Engine::mount(dev, opts()).map_err(|e| format!("recovery: {e}"))?;
    let report =
        ticketfs::check::check(&eng, &mut |_, _, _| {}).map_err(|e| format!("fsck: {e}"))?;
    if report.problem_count() != 0 {
        return Err(format!("fsck: {:?}", report.problems));
    }
    let fs = Fs::new(eng, false).map_err(|e| format!("mount: {e:?}"))?;
    let t = walk(&fs)?;
    fs.crash();
    Ok(t)
}

#[derive(Default)]
struct Tally {
    workloads: usize,
    states: usize,
    bad: usize,
    failures: Vec<String>,
}

/// Every crash state of one workload.
fn crash_states(base: &Arc<MemDevice>, steps: &[(Op, Persist)], seed: u64, tally: &mut Tally) {
    let Some(run) = run_workload(base, steps) else {
        return;
    };
    tally.workloads += 1;
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut durable: HashMap<u64, Vec<u8>> = HashMap::new();
    let reorder = reorderings();
    for (flush_at, writes) in flush_windows(&run.events) {
        for k in 0..=reorder {
            let (landed, _, crash_after) = landed(&mut rng, flush_at, &writes, k);
            let mut patch = durable.clone();
            for &e in &landed {
                if let DevEvent::Write { blkno, data } = &run.events[e] {
                    patch.insert(*blkno, data.clone());
                }
            }
            tally.states += 1;
            let r = recover(base, patch).and_then(|got| check_state(&run, &got, crash_after));
            if let Err(e) = r {
                tally.bad += 1;
                if tally.failures.len() < 8 {
                    tally
                        .failures
                        .push(format!("{steps:?}, crash after event {crash_after}: {e}"));
                }
            }
        }
        for &e in &writes {
            if let DevEvent::Write { blkno, data } = &run.events[e] {
                durable.insert(*blkno, data.clone());
            }
        }
    }
}

fn report(what: &str, t: &Tally) {
    println!(
        "{what}: {} workloads, {} crash states, {} inconsistent",
        t.workloads, t.states, t.bad
    );
    for f in &t.failures {
        println!("  {f}");
    }
}

fn all_steps() -> Vec<(Op, Persist)> {
    OPS.iter()
        .flat_map(|&o| PERSISTS.iter().map(move |&p| (o, p)))
        .collect()
}

#[test]
fn every_one_operation_workload_survives_every_crash_state() {
    let base = base_image();
    let mut t = Tally::default();
    for (i, s) in all_steps().into_iter().enumerate() {
        crash_states(&base, &[s], i as u64, &mut t);
    }
    report("ace seq-1", &t);
    assert!(t.workloads >= 60, "{} workloads", t.workloads);
    assert_eq!(t.bad, 0);
}

#[test]
fn two_operation_workloads_survive_every_crash_state() {
    let full = std::env::var("ACE_FULL").is_ok();
    let base = base_image();
    let steps = all_steps();
    let mut t = Tally::default();
    let mut n = 0usize;
    for &a in &steps {
        for &b in &steps {
            n += 1;
            if !full && !n.is_multiple_of(SEQ2_SAMPLE_EVERY) {
                continue;
            }
            crash_states(&base, &[a, b], n as u64, &mut t);
        }
    }
    report(
        if full {
            "ace seq-2 (all)"
        } else {
            "ace seq-2 (sample)"
        },
        &t,
    );
    assert!(t.workloads > 0);
    assert_eq!(t.bad, 0);
}
