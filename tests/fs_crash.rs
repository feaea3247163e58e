//! Filesystem-level crash states: namespace operations and small writes through `Fs` on the
//! recording device (file data goes through it too). For every flush point and random subsets of
//! the writes after it, the image is recovered and mounted (orphans freed) and its tree must equal
//! the model after some prefix of the steps no shorter than the last fsync; the recovered
//! filesystem must then unmount and mount again. Each model step is one transaction's visible
//! effect (a create, a write of at most one block to an empty file, mkdir, unlink, rename, rmdir,
//! a change of an inode's flags and project ID). The model holds each inode's flags and project
//! ID beside its contents; new inodes take their directory's inherited flags; a step on an inode
//! with the sync flag, or in a directory with it, counts as an fsync (durable when it returns).

mod common;

use common::crash::{
    apply_write, confirmed, crash_opts, flush_windows, image_bytes, landed, same_after_remount,
};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use ticketfs::device::{DevEvent, Device, MemDevice, RecordingDevice};
use ticketfs::format::inode::{FLAG_NOATIME, FLAG_NODUMP, FLAG_SYNC};
use ticketfs::fs::{Ctx, FileFlags, Fs, RenameHow, S_IFDIR, S_IFREG};
use ticketfs::Engine;

const BS: u32 = 512;
/// Operations of the workload: enough for at least 1,000 crash states (2,824 at seed 0xf5,
/// where steps under the sync flag each force the log: a flush window each).
/// 400 were enough while every allocation of a block freed in the same checkpoint window forced
/// the log (a flush window each); since the allocator passes busy blocks over, 700.
const STEPS: usize = 700;
const STATES_PER_WINDOW: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir(FileFlags),
    File(Vec<u8>, FileFlags),
}

impl Node {
    fn flags(&self) -> FileFlags {
        match self {
            Node::Dir(f) | Node::File(_, f) => *f,
        }
    }

    fn describe(&self) -> String {
        match self {
            Node::Dir(f) => format!("dir {f:?}"),
            Node::File(b, f) => format!("{} bytes {f:?}", b.len()),
        }
    }
}

/// The flags a directory's new inodes take from it (the sync, nodump and noatime flags).
const INHERITED: u32 = FLAG_SYNC | FLAG_NODUMP | FLAG_NOATIME;

type Tree = BTreeMap<String, Node>;

fn base_image() -> Vec<u8> {
    image_bytes(8 << 20, BS)
}

/// The tree as the filesystem shows it.
fn walk(fs: &Fs) -> Tree {
    let mut out = Tree::new();
    let mut stack = vec![(fs.root(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let mut cookie = 0;
        loop {
            let batch = fs.readdir(dir, cookie, 64).unwrap();
            if batch.is_empty() {
                break;
            }
            for e in batch {
                cookie = e.cookie;
                if e.name == b"." || e.name == b".." {
                    continue;
                }
                let name = format!("{prefix}/{}", String::from_utf8_lossy(&e.name));
                let a = fs.getattr(e.ino).unwrap();
                let f = fs.file_flags(e.ino).unwrap();
                if a.mode & S_IFDIR == S_IFDIR && a.mode & S_IFREG != S_IFREG {
                    out.insert(name.clone(), Node::Dir(f));
                    stack.push((e.ino, name));
                } else {
                    out.insert(
                        name,
                        Node::File(fs.read(e.ino, 0, a.size as usize + 1).unwrap(), f),
                    );
                }
            }
        }
    }
    out
}

struct Run {
    base: Vec<u8>,
    events: Vec<DevEvent>,
    /// The model after each step (index 0: empty).
    states: Vec<Tree>,
    /// (event count when an fsync returned, steps done by then).
    syncs: Vec<(usize, usize)>,
}

fn run_workload(seed: u64) -> Run {
    let base = base_image();
    let rec = Arc::new(RecordingDevice::new(BS, base.clone()));
    let fs = Fs::new(Engine::mount(rec.clone(), crash_opts()).unwrap(), false).unwrap();
    let c = Ctx::ROOT;
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut model = Tree::new();
    let mut states = vec![model.clone()];
    let mut syncs = Vec::new();
    // Paths to inode numbers, for the operations.
    let mut dirs: Vec<(String, u64)> = vec![(String::new(), fs.root())];
    let mut n = 0;
    while states.len() <= STEPS {
        n += 1;
        let (dpath, dino) = dirs.choose(&mut rng).unwrap().clone();
        let files: Vec<String> = model
            .iter()
            .filter(|(k, v)| matches!(v, Node::File(..)) && k.rsplit_once('/').unwrap().0 == dpath)
            .map(|(k, _)| k.clone())
            .collect();
        // The directory's flags (the root's are never set); its sync flag makes each change of
        // its entries durable when it returns, as an fsync.
        let dflags = model.get(&dpath).map_or(FileFlags::default(), Node::flags);
        let born = FileFlags {
            flags: dflags.flags & INHERITED,
            projid: 0,
        };
        let dsync = dflags.flags & FLAG_SYNC != 0;
        let mut synced = |states: &Vec<Tree>, sync: bool| {
            if sync {
                syncs.push((rec.event_count(), states.len() - 1));
            }
        };
        match rng.gen_range(0..11) {
            0..=3 => {
                let name = format!("f{n}");
                let a = fs
                    .make(&c, dino, name.as_bytes(), S_IFREG | 0o644, 0, None)
                    .unwrap();
                model.insert(format!("{dpath}/{name}"), Node::File(Vec::new(), born));
                states.push(model.clone());
                synced(&states, dsync);
                let len = rng.gen_range(0..=BS as usize);
                if len > 0 {
                    let data: Vec<u8> = (0..len).map(|i| (i as u64 * 7 + n) as u8).collect();
                    fs.write(&c, a.ino, 0, &data).unwrap();
                    model.insert(format!("{dpath}/{name}"), Node::File(data, born));
                    states.push(model.clone());
                    synced(&states, born.flags & FLAG_SYNC != 0);
                }
            }
            4 => {
                let name = format!("d{n}");
                let a = fs
                    .make(&c, dino, name.as_bytes(), S_IFDIR | 0o755, 0, None)
                    .unwrap();
                model.insert(format!("{dpath}/{name}"), Node::Dir(born));
                dirs.push((format!("{dpath}/{name}"), a.ino));
                states.push(model.clone());
                synced(&states, dsync);
            }
            5 | 6 if !files.is_empty() => {
                let victim = files.choose(&mut rng).unwrap().clone();
                let name = victim.rsplit_once('/').unwrap().1.to_string();
                fs.remove(&c, dino, name.as_bytes(), false).unwrap();
                model.remove(&victim);
                states.push(model.clone());
                synced(&states, dsync);
            }
            7 | 8 if !files.is_empty() => {
                let src = files.choose(&mut rng).unwrap().clone();
                let (tpath, tino) = dirs.choose(&mut rng).unwrap().clone();
                let tname = if rng.gen_bool(0.3) {
                    // Over an existing file of the target directory, when there is one.
                    model
                        .keys()
                        .find(|k| {
                            k.rsplit_once('/').unwrap().0 == tpath
                                && matches!(model[*k], Node::File(..))
                                && **k != src
                        })
                        .map(|k| k.rsplit_once('/').unwrap().1.to_string())
                        .unwrap_or(format!("r{n}"))
                } else {
                    format!("r{n}")
                };
                let sname = src.rsplit_once('/').unwrap().1.to_string();
                fs.rename(
                    &c,
                    (dino, sname.as_bytes()),
                    (tino, tname.as_bytes()),
                    RenameHow::default(),
                )
                .unwrap();
                let node = model.remove(&src).unwrap();
                model.insert(format!("{tpath}/{tname}"), node);
                states.push(model.clone());
                let tsync = model
                    .get(&tpath)
                    .is_some_and(|t| t.flags().flags & FLAG_SYNC != 0);
                synced(&states, dsync || tsync);
            }
            10 => {
                // Flags and a project ID on a file of the directory, or on the directory.
                let (path, ino) = match files.choose(&mut rng) {
                    Some(f) => {
                        let name = f.rsplit_once('/').unwrap().1;
                        (f.clone(), fs.lookup(&c, dino, name.as_bytes()).unwrap().ino)
                    }
                    None if !dpath.is_empty() => (dpath.clone(), dino),
                    None => continue,
                };
                let flags = [
                    0,
                    FLAG_NODUMP,
                    FLAG_NOATIME,
                    FLAG_SYNC,
                    FLAG_NODUMP | FLAG_SYNC,
                ][rng.gen_range(0..5)];
                let want = FileFlags {
                    flags,
                    projid: rng.gen_range(0..4),
                };
                fs.set_file_flags(&c, ino, want.flags, Some(want.projid))
                    .unwrap();
                let node = model.get_mut(&path).unwrap();
                let was_sync = node.flags().flags & FLAG_SYNC != 0;
                match node {
                    Node::Dir(f) | Node::File(_, f) => *f = want,
                }
                states.push(model.clone());
                synced(&states, was_sync || flags & FLAG_SYNC != 0);
            }
            _ => {
                // rmdir of an empty directory, else an fsync.
                let empty = dirs
                    .iter()
                    .skip(1)
                    .find(|(p, _)| !model.keys().any(|k| k.starts_with(&format!("{p}/"))))
                    .cloned();
                match empty {
                    Some((p, _)) if rng.gen_bool(0.5) => {
                        let (parent, name) = p.rsplit_once('/').unwrap();
                        let pino = dirs.iter().find(|(q, _)| q == parent).unwrap().1;
                        fs.remove(&c, pino, name.as_bytes(), true).unwrap();
                        model.remove(&p);
                        dirs.retain(|(q, _)| *q != p);
                        states.push(model.clone());
                        let psync = model
                            .get(parent)
                            .is_some_and(|t| t.flags().flags & FLAG_SYNC != 0);
                        synced(&states, psync);
                    }
                    _ => {
                        fs.fsync().unwrap();
                        synced(&states, true);
                    }
                }
            }
        }
        if n % 16 == 0 {
            std::thread::sleep(Duration::from_millis(3));
        }
    }
    fs.crash();
    Run {
        base,
        events: rec.events(),
        states,
        syncs,
    }
}

fn check(run: &Run, image: Vec<u8>, crash_after: usize) -> Result<(), String> {
    // fsck's checker on the recovered image, before the mount frees pending orphans: clean.
    {
        let dev: Arc<dyn Device> = Arc::new(MemDevice::from_bytes(BS, image.clone()));
        let eng = Engine::mount(dev, crash_opts()).map_err(|e| format!("mount for fsck: {e}"))?;
        let r =
            ticketfs::check::check(&eng, &mut |_, _, _| {}).map_err(|e| format!("fsck: {e}"))?;
        if !r.problems.is_empty() {
            return Err(format!(
                "fsck finds {} problems: {:#?}",
                r.problems.len(),
                r.problems
            ));
        }
        eng.crash();
    }
    let dev: Arc<dyn Device> = Arc::new(MemDevice::from_bytes(BS, image));
    let eng = Engine::mount(dev.clone(), crash_opts()).map_err(|e| format!("mount: {e}"))?;
    let fs = Fs::new(eng, false).map_err(|e| format!("fs: {e}"))?;
    let got = walk(&fs);
    let confirmed = confirmed(&run.syncs, crash_after);
    match run.states.iter().rposition(|s| *s == got) {
        None => {
            // Name the closest state and how the tree differs from it.
            let diff = |s: &Tree| -> Vec<String> {
                let mut d: Vec<String> = s
                    .iter()
                    .filter(|(k, v)| got.get(*k) != Some(v))
                    .map(|(k, v)| format!("model {k}={}", v.describe()))
                    .collect();
                d.extend(
                    got.iter()
                        .filter(|(k, _)| !s.contains_key(*k))
                        .map(|(k, v)| format!("disk {k}={}", v.describe())),
                );
                d
            };
            let (k, mut d) = run
                .states
                .iter()
                .enumerate()
                .map(|(i, s)| (i, diff(s)))
                .min_by_key(|(_, d)| d.len())
                .unwrap();
            for (path, v) in &run.states[k] {
                if let (Node::File(m, _), Some(Node::File(g, _))) = (v, got.get(path)) {
                    if m != g {
                        let first = m.iter().zip(g.iter()).position(|(a, b)| a != b);
                        d.push(format!("{path}: model {} bytes {:?}.., disk {} bytes {:?}.., first difference at {first:?}", m.len(), &m[..m.len().min(6)], g.len(), &g[..g.len().min(6)]));
                    }
                }
            }
            return Err(format!(
                "tree matches no prefix; closest is step {k} (confirmed {confirmed}): {d:?}"
            ));
        }
        Some(k) if k < confirmed => {
            return Err(format!(
                "tree is step {k}, but step {confirmed} was fsync'd"
            ))
        }
        Some(_) => {}
    }
    same_after_remount(fs, dev, walk, &got, "tree")
}

#[test]
fn fs_crash_states() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xf5);
    let run = run_workload(seed);
    let mut rng = SmallRng::seed_from_u64(seed ^ 0xc0de);
    let windows = flush_windows(&run.events);
    let mut durable = run.base.clone();
    let apply = |img: &mut Vec<u8>, e: usize| apply_write(&run.events, img, e, BS);
    let (mut checked, mut bad) = (0, 0);
    let mut failures = Vec::new();
    for (flush_at, writes) in &windows {
        for k in 0..STATES_PER_WINDOW {
            let (landed, p, crash_after) = landed(&mut rng, *flush_at, writes, k);
            let mut img = durable.clone();
            for &e in &landed {
                apply(&mut img, e);
            }
            checked += 1;
            if let Err(e) = check(&run, img, crash_after) {
                bad += 1;
                if failures.len() < 5 {
                    failures.push(format!(
                        "flush at {flush_at:?}, {p} of {} writes, {} landed: {e}",
                        writes.len(),
                        landed.len()
                    ));
                }
            }
        }
        for &e in writes {
            apply(&mut durable, e);
        }
    }
    println!(
        "fs crash states: {checked} checked, {bad} inconsistent ({} steps, {} fsyncs)",
        run.states.len() - 1,
        run.syncs.len()
    );
    for f in &failures {
        println!("  {f}");
    }
    assert!(checked >= 1000, "only {checked} states");
    assert_eq!(bad, 0);
}

/// fdatasync: once it returns, the file's bytes and size survive every crash state, whether it
/// forced the log (the file grew or got new blocks) or only flushed (an overwrite in place after
/// a full fsync, where only the times changed). Around it other files are created and written
/// with no sync, so the log always holds unforced work. Each file is synced once and then left
/// alone, so its synced content is the only right answer afterwards.
#[test]
fn fdatasync_survives_every_crash_state() {
    let base = base_image();
    let rec = Arc::new(RecordingDevice::new(BS, base.clone()));
    let fs = Fs::new(Engine::mount(rec.clone(), crash_opts()).unwrap(), false).unwrap();
    let c = Ctx::ROOT;
    let root = fs.root();
    let mut rng = SmallRng::seed_from_u64(0xda7a);
    // (event count when fdatasync returned, name, content)
    let mut synced: Vec<(usize, String, Vec<u8>)> = Vec::new();
    let bytes = |seed: u64, len: usize| -> Vec<u8> {
        (0..len).map(|i| (i as u64 * 31 + seed * 7) as u8).collect()
    };
    for n in 0..60u64 {
        let name = format!("s{n}");
        let a = fs
            .make(&c, root, name.as_bytes(), S_IFREG | 0o644, 0, None)
            .unwrap();
        let mut content = Vec::new();
        let overwrite = n % 3 == 2;
        // One to three writes: appends and writes past the end (a hole).
        for _ in 0..rng.gen_range(1..=3) {
            let off = content.len() + rng.gen_range(0..2 * BS as usize);
            let data = bytes(
                n * 10 + content.len() as u64,
                rng.gen_range(1..3 * BS as usize),
            );
            fs.write(&c, a.ino, off as u64, &data).unwrap();
            content.resize(off, 0);
            content.extend_from_slice(&data);
        }
        if overwrite {
            // Everything durable, then an overwrite inside the file: no size or map change.
            fs.fsync().unwrap();
            std::thread::sleep(Duration::from_millis(2));
            let off = rng.gen_range(0..content.len());
            let len = rng.gen_range(1..=content.len() - off);
            let data = bytes(n * 10 + 999, len);
            fs.write(&c, a.ino, off as u64, &data).unwrap();
            content[off..off + len].copy_from_slice(&data);
        }
        fs.fdatasync(a.ino).unwrap();
        synced.push((rec.event_count(), name, content));
        // Unsynced work beside it: another file created and written.
        let other = fs
            .make(
                &c,
                root,
                format!("u{n}").as_bytes(),
                S_IFREG | 0o644,
                0,
                None,
            )
            .unwrap();
        fs.write(&c, other.ino, 0, &bytes(n, BS as usize / 2))
            .unwrap();
    }
    fs.crash();
    let events = rec.events();
    let windows = flush_windows(&events);
    let apply = |img: &mut Vec<u8>, e: usize| apply_write(&events, img, e, BS);
    let mut durable = base.clone();
    let (mut checked, mut failures) = (0usize, Vec::new());
    for (flush_at, writes) in &windows {
        for k in 0..4 {
            let p = if k == 0 {
                writes.len()
            } else {
                rng.gen_range(0..=writes.len())
            };
            let mut img = durable.clone();
            let mut landed: Vec<usize> = writes[..p]
                .iter()
                .copied()
                .filter(|_| k == 0 || rng.gen_bool(0.5))
                .collect();
            landed.shuffle(&mut rng);
            for &e in &landed {
                apply(&mut img, e);
            }
            let crash_after = if p == 0 {
                flush_at.unwrap_or(0)
            } else {
                writes[p - 1]
            };
            checked += 1;
            let dev: Arc<dyn Device> = Arc::new(MemDevice::from_bytes(BS, img));
            let fs = Fs::new(Engine::mount(dev, crash_opts()).unwrap(), false).unwrap();
            for (ev, name, content) in &synced {
                if *ev > crash_after + 1 {
                    continue;
                }
                let got = fs
                    .lookup(&c, fs.root(), name.as_bytes())
                    .map(|a| fs.read(a.ino, 0, content.len() + 1).unwrap());
                if got.as_ref().ok() != Some(content) && failures.len() < 5 {
                    failures.push(format!(
                        "flush at {flush_at:?}, {p} of {} writes: {name} synced at event {ev} \
                         with {} bytes, after the crash {:?}",
                        writes.len(),
                        content.len(),
                        got.map(|g| g.len())
                    ));
                }
            }
            fs.crash();
        }
        for &e in writes {
            apply(&mut durable, e);
        }
    }
    println!(
        "fdatasync crash states: {checked} checked, {} files synced",
        synced.len()
    );
    assert!(checked >= 100, "only {checked} states");
    assert!(failures.is_empty(), "{failures:#?}");
}
