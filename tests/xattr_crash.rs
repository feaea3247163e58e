//! Crash states of extended attributes: random sets (small, remote, 64 KiB; new and replacing),
//! removals and unlinks of files holding attribute trees, through `Fs` on the recording device.
//! For every flush point and random subsets of the writes after it, the image is checked by
//! fsck's checker (clean), recovered and mounted (orphans freed), and every file's attributes
//! must equal the model after some prefix of the steps no shorter than the last fsync; the
//! filesystem then unmounts and mounts again with the same attributes. The second workload
//! runs on an image whose free space is single blocks between used ones: every remote value is
//! written in runs over several transactions (an INCOMPLETE record until its last run), and
//! removed or replaced run by run, so crashes land between those steps.

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
use ticketfs::fs::{Ctx, Fs, S_IFREG};
use ticketfs::Engine;

/// Small blocks: trees several levels deep and values of up to 147 remote blocks.
const BS: u32 = 512;
/// Operations of the workload.
const STEPS: usize = 500;
const STATES_PER_WINDOW: usize = 8;
const FILES: usize = 3;

/// Each file's attributes, by file name.
type Model = BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>;

fn base_image() -> Vec<u8> {
    image_bytes(24 << 20, BS)
}

/// The file of the fragmented image holding every other block.
const FILLER: &str = "filler";
/// Single free blocks the fragmented image has: all its free space (a 64 KiB value takes 147).
const SINGLE_HOLES: u64 = 12_000;

/// The base image with its free space broken into single blocks: a file takes every block,
/// then one in two of them is punched out, for `SINGLE_HOLES` holes. Made before the recording.
fn fragmented_image() -> Vec<u8> {
    let dev = Arc::new(MemDevice::from_bytes(BS, base_image()));
    let fs = Fs::new(Engine::mount(dev.clone(), crash_opts()).unwrap(), false).unwrap();
    let c = Ctx::ROOT;
    let a = fs
        .make(&c, fs.root(), FILLER.as_bytes(), S_IFREG | 0o644, 0, None)
        .unwrap();
    let bs = BS as u64;
    // As much as it takes: halved when a request is refused.
    let (mut end, mut step) = (0u64, 1u64 << 30);
    while step >= bs {
        match fs.fallocate(a.ino, end, step, false, false, false) {
            Ok(()) => end += step,
            Err(_) => step /= 2,
        }
    }
    assert!(
        end / bs > 2 * SINGLE_HOLES,
        "the filler took {} blocks",
        end / bs
    );
    for k in 0..SINGLE_HOLES {
        fs.fallocate(a.ino, 2 * k * bs, bs, true, true, false)
            .unwrap();
    }
    fs.unmount().unwrap();
    dev.snapshot()
}

/// Every file of the root with its attributes, as the filesystem shows them.
fn walk(fs: &Fs) -> Model {
    let c = Ctx::ROOT;
    let mut out = Model::new();
    for e in fs.readdir(fs.root(), 0, 1000).unwrap() {
        if e.name == b"." || e.name == b".." {
            continue;
        }
        let mut attrs = BTreeMap::new();
        for n in fs.listxattr(&c, e.ino).unwrap().split(|&b| b == 0) {
            if !n.is_empty() {
                attrs.insert(n.to_vec(), fs.getxattr(&c, e.ino, n).unwrap());
            }
        }
        out.insert(String::from_utf8_lossy(&e.name).into_owned(), attrs);
    }
    out
}

fn value(rng: &mut SmallRng, seed: u64) -> Vec<u8> {
    let len = match rng.gen_range(0..20) {
        0..=10 => rng.gen_range(0..60),
        11..=15 => rng.gen_range(100..600),
        16..=18 => rng.gen_range(1000..9000),
        _ => 65536,
    };
    (0..len)
        .map(|i| (i as u64 * 131 + seed * 7) as u8)
        .collect()
}

struct Run {
    base: Vec<u8>,
    events: Vec<DevEvent>,
    states: Vec<Model>,
    /// (event count when an fsync returned, steps done by then).
    syncs: Vec<(usize, usize)>,
    /// Files with more than 20 attributes unlinked.
    unlinks: usize,
}

fn run_workload(seed: u64, base: Vec<u8>) -> Run {
    let rec = Arc::new(RecordingDevice::new(BS, base.clone()));
    let fs = Fs::new(Engine::mount(rec.clone(), crash_opts()).unwrap(), false).unwrap();
    let c = Ctx::ROOT;
    let root = fs.root();
    let mut rng = SmallRng::seed_from_u64(seed);
    // Files already there (the fragmented image's filler) are in the model, untouched.
    let mut model = walk(&fs);
    let mut inos: BTreeMap<String, u64> = BTreeMap::new();
    let mut states = vec![model.clone()];
    let mut syncs = Vec::new();
    let mut unlinks = 0;
    let mut n = 0u64;
    while states.len() <= STEPS {
        n += 1;
        if inos.len() < FILES {
            let name = format!("f{n}");
            let a = fs
                .make(&c, root, name.as_bytes(), S_IFREG | 0o644, 0, None)
                .unwrap();
            inos.insert(name.clone(), a.ino);
            model.insert(name, BTreeMap::new());
            states.push(model.clone());
            continue;
        }
        let files: Vec<String> = inos.keys().cloned().collect();
        let f = files.choose(&mut rng).unwrap().clone();
        let ino = inos[&f];
        let held: Vec<Vec<u8>> = model[&f].keys().cloned().collect();
        match rng.gen_range(0..20) {
            0..=10 => {
                // A new name, or a held one replaced.
                let name = if !held.is_empty() && rng.gen_bool(0.3) {
                    held.choose(&mut rng).unwrap().clone()
                } else {
                    format!("user.a{n}-{}", "n".repeat(rng.gen_range(0..40))).into_bytes()
                };
                let v = value(&mut rng, n);
                fs.setxattr(&c, ino, &name, &v, false, false).unwrap();
                model.get_mut(&f).unwrap().insert(name, v);
                states.push(model.clone());
            }
            11..=15 if !held.is_empty() => {
                let name = held.choose(&mut rng).unwrap().clone();
                fs.removexattr(&c, ino, &name).unwrap();
                model.get_mut(&f).unwrap().remove(&name);
                states.push(model.clone());
            }
            16 if held.len() > 20 => {
                // A file with a tree of attributes unlinked: freed after the unlink, in steps.
                fs.remove(&c, root, f.as_bytes(), false).unwrap();
                inos.remove(&f);
                model.remove(&f);
                unlinks += 1;
                states.push(model.clone());
            }
            _ => {
                fs.fsync().unwrap();
                syncs.push((rec.event_count(), states.len() - 1));
            }
        }
        if n.is_multiple_of(16) {
            std::thread::sleep(Duration::from_millis(3));
        }
    }
    assert_eq!(
        walk(&fs),
        model,
        "the live filesystem differs from the model"
    );
    fs.crash();
    Run {
        base,
        events: rec.events(),
        states,
        syncs,
        unlinks,
    }
}

/// Checks one crash state; returns how many attribute changes the crash cut short (INCOMPLETE
/// records, which fsck counts and no reader sees).
fn check(run: &Run, image: Vec<u8>, crash_after: usize) -> Result<u64, String> {
    let interrupted;
    {
        let dev: Arc<dyn Device> = Arc::new(MemDevice::from_bytes(BS, image.clone()));
        let eng = Engine::mount(dev, crash_opts()).map_err(|e| format!("mount for fsck: {e}"))?;
        let r =
            ticketfs::check::check(&eng, &mut |_, _, _| {}).map_err(|e| format!("fsck: {e}"))?;
        if !r.problems.is_empty() {
            return Err(format!("fsck finds {:#?}", r.problems));
        }
        interrupted = r.interrupted_xattrs;
        eng.crash();
    }
    let dev: Arc<dyn Device> = Arc::new(MemDevice::from_bytes(BS, image));
    let eng = Engine::mount(dev.clone(), crash_opts()).map_err(|e| format!("mount: {e}"))?;
    let fs = Fs::new(eng, false).map_err(|e| format!("fs: {e}"))?;
    let got = walk(&fs);
    let confirmed = confirmed(&run.syncs, crash_after);
    match run.states.iter().rposition(|s| *s == got) {
        None => {
            let summary = |m: &Model| -> Vec<(String, usize)> {
                m.iter().map(|(k, v)| (k.clone(), v.len())).collect()
            };
            return Err(format!(
                "attributes match no prefix (confirmed {confirmed}): disk {:?}",
                summary(&got)
            ));
        }
        Some(k) if k < confirmed => {
            return Err(format!(
                "state is step {k}, but step {confirmed} was fsync'd"
            ))
        }
        Some(_) => {}
    }
    same_after_remount(fs, dev, walk, &got, "attributes")?;
    Ok(interrupted)
}

#[test]
fn xattr_crash_states() {
    crash_states(base_image(), "", false)
}

#[test]
fn xattr_crash_states_with_values_in_single_block_runs() {
    crash_states(fragmented_image(), " (free space in single blocks)", true)
}

/// `cut_short`: some states must hold a change cut short between its steps.
fn crash_states(base: Vec<u8>, what: &str, cut_short: bool) {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x2a);
    let run = run_workload(seed, base);
    let mut rng = SmallRng::seed_from_u64(seed ^ 0xc0de);
    let windows = flush_windows(&run.events);
    let mut durable = run.base.clone();
    let (mut checked, mut bad, mut interrupted) = (0, 0, 0);
    let mut failures = Vec::new();
    for (flush_at, writes) in &windows {
        for k in 0..STATES_PER_WINDOW {
            let (landed, p, crash_after) = landed(&mut rng, *flush_at, writes, k);
            let mut img = durable.clone();
            for &e in &landed {
                apply_write(&run.events, &mut img, e, BS);
            }
            checked += 1;
            match check(&run, img.clone(), crash_after) {
                Ok(n) if n > 0 && cut_short && interrupted < FOLLOWED_UP => {
                    interrupted += 1;
                    freed_after(&run, &img);
                }
                Ok(n) => interrupted += (n > 0) as usize,
                Err(e) => {
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
        }
        for &e in writes {
            apply_write(&run.events, &mut durable, e, BS);
        }
    }
    println!(
        "xattr crash states{what}: {checked} checked, {bad} inconsistent, {interrupted} with a \
         change cut short between its steps ({} steps, {} fsyncs, {} unlinks of files with \
         attribute trees)",
        run.states.len() - 1,
        run.syncs.len(),
        run.unlinks
    );
    for f in &failures {
        println!("  {f}");
    }
    assert!(checked >= 1000, "only {checked} states");
    assert!(
        run.unlinks > 0,
        "no file with an attribute tree was unlinked"
    );
    assert_eq!(bad, 0);
    assert!(
        !cut_short || interrupted > 0,
        "no state has a change cut short between its steps"
    );
}

/// States with a change cut short that are followed up (`freed_after`): each sets hundreds of
/// attributes.
const FOLLOWED_UP: usize = 3;

/// On a crash state holding changes cut short: setting again every name the workload used on
/// each file frees them (a set frees the INCOMPLETE records of its name first), and so does
/// removing every file; fsck then counts none and finds the image clean (every block accounted).
fn freed_after(run: &Run, image: &[u8]) {
    let c = Ctx::ROOT;
    let mut used: BTreeMap<String, std::collections::BTreeSet<Vec<u8>>> = BTreeMap::new();
    for s in &run.states {
        for (f, attrs) in s {
            used.entry(f.clone())
                .or_default()
                .extend(attrs.keys().cloned());
        }
    }
    // The workload's files (not the filler): (name, inode).
    let files = |fs: &Fs| -> Vec<(String, u64)> {
        let all = fs.readdir(fs.root(), 0, 1000).unwrap();
        all.into_iter()
            .map(|e| (String::from_utf8_lossy(&e.name).into_owned(), e.ino))
            .filter(|(n, _)| n != "." && n != ".." && n != FILLER)
            .collect()
    };
    let img = after(image, |fs| {
        for (f, ino) in files(fs) {
            for n in used.get(&f).into_iter().flatten() {
                fs.setxattr(&c, ino, n, b"again", false, false).unwrap();
            }
        }
    });
    assert_eq!(interrupted_in(&img), 0, "after every name was set again");
    let img = after(image, |fs| {
        for (f, _) in files(fs) {
            fs.remove(&c, fs.root(), f.as_bytes(), false).unwrap();
        }
    });
    assert_eq!(interrupted_in(&img), 0, "after every file was removed");
}

/// Checks `image` with fsck's checker: clean, and how many changes it holds cut short.
fn interrupted_in(image: &[u8]) -> u64 {
    let dev: Arc<dyn Device> = Arc::new(MemDevice::from_bytes(BS, image.to_vec()));
    let eng = Engine::mount(dev, crash_opts()).unwrap();
    let r = ticketfs::check::check(&eng, &mut |_, _, _| {}).unwrap();
    assert!(r.problems.is_empty(), "fsck finds {:#?}", r.problems);
    eng.crash();
    r.interrupted_xattrs
}

/// Mounts `image` (recovering it), runs `f`, unmounts (orphans freed), and returns the image.
fn after(image: &[u8], f: impl FnOnce(&Fs)) -> Vec<u8> {
    let dev = Arc::new(MemDevice::from_bytes(BS, image.to_vec()));
    let fs = Fs::new(Engine::mount(dev.clone(), crash_opts()).unwrap(), false).unwrap();
    f(&fs);
    fs.unmount().unwrap();
    dev.snapshot()
}

/// In-order crash states of `work` run on `base` while another thread forces the log (every
/// write up to a flush landed), among the events `work` returns (from its argument, the event
/// count), from their middle outwards: the first `want` that fsck finds clean, holding a change
/// cut short, that `pick` keeps (given the filesystem mounted on it).
fn cut_short_states(
    base: Vec<u8>,
    work: impl FnOnce(&Fs, &dyn Fn() -> usize) -> std::ops::Range<usize>,
    want: usize,
    pick: impl Fn(&Fs) -> bool,
) -> Vec<Vec<u8>> {
    let rec = Arc::new(RecordingDevice::new(BS, base.clone()));
    let fs = Fs::new(Engine::mount(rec.clone(), crash_opts()).unwrap(), false).unwrap();
    // The log forced all along, so that the steps of a change land in checkpoints of their own.
    let done = std::sync::atomic::AtomicBool::new(false);
    let range = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                fs.fsync().unwrap();
            }
        });
        let r = work(&fs, &|| rec.event_count());
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        r
    });
    fs.crash();
    let events = rec.events();
    let flushes: Vec<usize> = range
        .filter(|&e| matches!(events[e], DevEvent::Flush))
        .collect();
    // At most `STATES_TRIED` of them, evenly spaced: each is checked whole.
    let every = flushes.len().div_ceil(STATES_TRIED).max(1);
    let mut flushes: Vec<usize> = flushes.into_iter().step_by(every).collect();
    let mid = flushes.get(flushes.len() / 2).copied().unwrap_or(0);
    flushes.sort_by_key(|&e| e.abs_diff(mid));
    let mut out = Vec::new();
    for f in flushes {
        let mut img = base.clone();
        for e in 0..f {
            apply_write(&events, &mut img, e, BS);
        }
        let dev: Arc<dyn Device> = Arc::new(MemDevice::from_bytes(BS, img.clone()));
        let eng = Engine::mount(dev.clone(), crash_opts()).unwrap();
        let r = ticketfs::check::check(&eng, &mut |_, _, _| {}).unwrap();
        assert!(r.problems.is_empty(), "fsck finds {:#?}", r.problems);
        eng.crash();
        if r.interrupted_xattrs == 0 {
            continue;
        }
        let fs = Fs::new(Engine::mount(dev, crash_opts()).unwrap(), false).unwrap();
        let keep = pick(&fs);
        fs.crash();
        if keep {
            out.push(img);
            if out.len() == want {
                break;
            }
        }
    }
    out
}

/// Crash states `cut_short_states` tries at most.
const STATES_TRIED: usize = 40;
/// Runs of a set, each with its crash states, until one state has it cut short.
const CUT_SHORT_ATTEMPTS: usize = 20;

/// The inode of `name` in the root.
fn ino_of(fs: &Fs, name: &str) -> u64 {
    fs.readdir(fs.root(), 0, 1000)
        .unwrap()
        .into_iter()
        .find(|e| e.name == name.as_bytes())
        .unwrap()
        .ino
}

/// A first value of a file, too large for an xattr block, set over several steps and cut short:
/// its tree holds the INCOMPLETE record alone. Setting the name again, or removing it, must
/// work (the set frees the leftover first, which empties the tree).
#[test]

fn a_set_cut_short_as_a_trees_only_record_is_set_again_and_removed() {
    let c = Ctx::ROOT;
    let big: Vec<u8> = (0..65536u32).map(|i| (i * 7) as u8).collect();
    // Whether a forced checkpoint lands between the set's steps depends on the scheduler (the
    // other tests of this file run beside it): the set is run again until one does.
    let base = fragmented_image();
    let states = (0..CUT_SHORT_ATTEMPTS)
        .map(|_| {
            cut_short_states(
                base.clone(),
                |fs, events| {
                    let a = fs
                        .make(&c, fs.root(), b"f", S_IFREG | 0o644, 0, None)
                        .unwrap();
                    let from = events();
                    fs.setxattr(&c, a.ino, b"user.big", &big, false, false)
                        .unwrap();
                    from..events()
                },
                1,
                |fs| fs.listxattr(&c, ino_of(fs, "f")).unwrap().is_empty(),
            )
        })
        .find(|s| !s.is_empty())
        .unwrap_or_default();
    assert_eq!(
        states.len(),
        1,
        "no state with the set cut short in {CUT_SHORT_ATTEMPTS} runs"
    );
    let img = after(&states[0], |fs| {
        let ino = ino_of(fs, "f");
        fs.setxattr(&c, ino, b"user.big", b"again", false, false)
            .unwrap();
        assert_eq!(fs.getxattr(&c, ino, b"user.big").unwrap(), b"again");
    });
    assert_eq!(interrupted_in(&img), 0, "after the name was set again");
    let img = after(&states[0], |fs| {
        let ino = ino_of(fs, "f");
        assert!(matches!(
            fs.removexattr(&c, ino, b"user.big"),
            Err(ticketfs::fs::FsError::NoAttr)
        ));
    });
    assert_eq!(interrupted_in(&img), 0, "after the name was removed");
}
