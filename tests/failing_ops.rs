//! Operations that fail change nothing (issue 17): random operations of every kind that
//! allocates or changes metadata — write, fallocate in each mode, truncate, setxattr, create,
//! mkdir, link, rename, unlink — on a small filesystem kept close to full, with device errors
//! (EIO) injected now and then.
//!
//! - An operation that fails while the filesystem is up (ENOSPC, or EIO on a data write) leaves
//!   everything as it was: every name, size, byte, block count, link count, time and xattr,
//!   and the free-block and free-inode counts.
//! - A write that fails after some of its bytes is a short write: it reports the bytes it wrote
//!   and the file shows exactly those (the kernel's cached size follows that count).
//! - An error that shuts the filesystem down (EIO on the log or a metadata block): after a crash
//!   and recovery the image is consistent (fsck finds nothing) and every name holds what it held
//!   before that operation (each successful operation was made durable with fsync).

use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use ticketfs::device::{Device, MemDevice};
use ticketfs::device::{FaultDevice, FaultKind, FaultOp, FaultRule};
use ticketfs::fs::{Ctx, Fs, RenameHow, SetAttr, S_IFDIR, S_IFMT, S_IFREG};
use ticketfs::log::LogConfig;
use ticketfs::mem::OverrunPolicy;
use ticketfs::mkfs::{make_filesystem, MkfsOptions};
use ticketfs::{Engine, EngineOptions};

const BS: u32 = 1024;
const IMAGE_BYTES: u64 = 8 << 20;
const FALLOC_KEEP_SIZE: i32 = 0x01;
const FALLOC_PUNCH_HOLE: i32 = 0x02;
const FALLOC_ZERO_RANGE: i32 = 0x10;

fn base_image() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("image");
    make_filesystem(
        &p,
        &MkfsOptions {
            size: Some(IMAGE_BYTES),
            block_size: BS,
            ..Default::default()
        },
    )
    .unwrap();
    std::fs::read(&p).unwrap()
}

fn opts() -> EngineOptions {
    EngineOptions {
        overrun: OverrunPolicy::Panic,
        // Checkpoints only when forced (fsync, busy blocks): what is durable is then what the
        // test made durable.
        log: LogConfig {
            cil_timer: Duration::from_secs(3600),
            ail_interval: Duration::from_millis(5),
        },
        ..Default::default()
    }
}

#[derive(Debug, Clone)]
enum Op {
    Write {
        file: usize,
        off: u64,
        len: usize,
        seed: u8,
    },
    Fallocate {
        file: usize,
        off: u64,
        len: u64,
        mode: i32,
    },
    Truncate {
        file: usize,
        size: u64,
    },
    SetXattr {
        file: usize,
        name: u8,
        len: usize,
    },
    Create {
        name: u8,
    },
    Mkdir {
        name: u8,
    },
    Link {
        file: usize,
        name: u8,
    },
    Rename {
        file: usize,
        name: u8,
    },
    Unlink {
        file: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let off = 0u64..(3 << 20);
    prop_oneof![
        4 => (any::<usize>(), off.clone(), 1usize..(1 << 20), any::<u8>())
            .prop_map(|(file, off, len, seed)| Op::Write { file, off, len, seed }),
        3 => (any::<usize>(), off.clone(), 1u64..(8 << 20), prop::sample::select(vec![
                0, FALLOC_KEEP_SIZE, FALLOC_PUNCH_HOLE | FALLOC_KEEP_SIZE,
                FALLOC_ZERO_RANGE, FALLOC_ZERO_RANGE | FALLOC_KEEP_SIZE]))
            .prop_map(|(file, off, len, mode)| Op::Fallocate { file, off, len, mode }),
        1 => (any::<usize>(), 0u64..(4 << 20)).prop_map(|(file, size)| Op::Truncate { file, size }),
        2 => (any::<usize>(), 0u8..6, 1usize..3000)
            .prop_map(|(file, name, len)| Op::SetXattr { file, name, len }),
        2 => any::<u8>().prop_map(|name| Op::Create { name }),
        1 => any::<u8>().prop_map(|name| Op::Mkdir { name }),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(file, name)| Op::Link { file, name }),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(file, name)| Op::Rename { file, name }),
        1 => any::<usize>().prop_map(|file| Op::Unlink { file }),
    ]
}

/// Everything observable of one name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    ino: u64,
    mode: u32,
    size: u64,
    blocks: u64,
    nlink: u32,
    mtime: (i64, u32),
    ctime: (i64, u32),
    data: Vec<u8>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    names: BTreeMap<String, Seen>,
    bfree: u64,
    bavail: u64,
    ffree: u64,
}

/// The filesystem as a user sees it, `root`'s one level of names plus the subdirectories'.
fn observe(fs: &Fs) -> Result<State, String> {
    let c = Ctx::ROOT;
    let mut names = BTreeMap::new();
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
                let is_dir = a.mode & S_IFMT == S_IFDIR;
                let data = if is_dir {
                    stack.push((e.ino, name.clone()));
                    Vec::new()
                } else {
                    fs.read(e.ino, 0, a.size as usize + 1)
                        .map_err(|e| format!("read {name}: {e:?}"))?
                };
                let list = fs
                    .listxattr(&c, e.ino)
                    .map_err(|e| format!("listxattr: {e:?}"))?;
                let mut xattrs = Vec::new();
                for n in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
                    let v = fs
                        .getxattr(&c, e.ino, n)
                        .map_err(|e| format!("getxattr: {e:?}"))?;
                    xattrs.push((n.to_vec(), v));
                }
                names.insert(
                    name,
                    Seen {
                        ino: e.ino,
                        mode: a.mode,
                        size: a.size,
                        blocks: a.blocks,
                        nlink: a.nlink,
                        mtime: (a.mtime.sec, a.mtime.nsec),
                        ctime: (a.ctime.sec, a.ctime.nsec),
                        data,
                        xattrs,
                    },
                );
            }
        }
    }
    let st = fs.statfs().map_err(|e| format!("statfs: {e:?}"))?;
    Ok(State {
        names,
        bfree: st.bfree,
        bavail: st.bavail,
        ffree: st.ffree,
    })
}

/// Data written in place is not logged: after a crash that followed an operation whose fsync
/// failed, a file may show each byte as before it or as after it (its names, size and xattrs as
/// one of them), and nothing else.
fn mixed(allowed: &[&State], got: &State) -> bool {
    let names = |s: &State| s.names.keys().cloned().collect::<Vec<_>>();
    if !allowed.iter().any(|s| names(s) == names(got)) {
        return false;
    }
    got.names.iter().all(|(k, g)| {
        let cands: Vec<&Seen> = allowed.iter().filter_map(|s| s.names.get(k)).collect();
        cands
            .iter()
            .any(|c| c.size == g.size && c.xattrs == g.xattrs)
            && g.data.iter().enumerate().all(|(i, b)| {
                cands
                    .iter()
                    .any(|c| c.data.get(i).copied().unwrap_or(0) == *b)
            })
    })
}

/// What differs between two states, briefly (names, fields; not the bytes).
fn diff(a: &State, b: &State) -> String {
    let mut out = Vec::new();
    for (k, x) in &a.names {
        match b.names.get(k) {
            None => out.push(format!("{k} gone")),
            Some(y) if x != y => {
                let mut f = Vec::new();
                if x.size != y.size {
                    f.push(format!("size {} -> {}", x.size, y.size));
                }
                if x.blocks != y.blocks {
                    f.push(format!("blocks {} -> {}", x.blocks, y.blocks));
                }
                if x.nlink != y.nlink {
                    f.push(format!("nlink {} -> {}", x.nlink, y.nlink));
                }
                if x.mtime != y.mtime || x.ctime != y.ctime {
                    f.push("times".into());
                }
                if x.data != y.data {
                    let at = x.data.iter().zip(&y.data).position(|(p, q)| p != q);
                    f.push(format!("data differs (first at {at:?})"));
                }
                if x.xattrs != y.xattrs {
                    f.push("xattrs".into());
                }
                out.push(format!("{k}: {}", f.join(", ")));
            }
            _ => {}
        }
    }
    for k in b.names.keys().filter(|k| !a.names.contains_key(*k)) {
        out.push(format!("{k} appeared"));
    }
    for (what, x, y) in [
        ("bfree", a.bfree, b.bfree),
        ("bavail", a.bavail, b.bavail),
        ("ffree", a.ffree, b.ffree),
    ] {
        if x != y {
            out.push(format!("{what} {x} -> {y}"));
        }
    }
    out.join("; ")
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// The regular files and the directories, by name.
fn files(s: &State) -> Vec<(String, u64)> {
    s.names
        .iter()
        .filter(|(_, v)| v.mode & S_IFMT == S_IFREG)
        .map(|(k, v)| (k.clone(), v.ino))
        .collect()
}

fn dir_of(fs: &Fs, s: &State, name: u8) -> u64 {
    let dirs: Vec<u64> = s
        .names
        .values()
        .filter(|v| v.mode & S_IFMT == S_IFDIR)
        .map(|v| v.ino)
        .collect();
    if dirs.is_empty() || name.is_multiple_of(3) {
        fs.root()
    } else {
        dirs[name as usize % dirs.len()]
    }
}

/// Applies `op`; Ok(Some(n)) for a write's count.
fn apply(fs: &Fs, s: &State, op: &Op) -> Result<Option<usize>, String> {
    let c = Ctx::ROOT;
    let fl = files(s);
    let pick = |i: usize| fl.get(i % fl.len().max(1)).cloned();
    let err = |e: ticketfs::fs::FsError| format!("{e:?}");
    match op {
        Op::Write {
            file,
            off,
            len,
            seed,
        } => {
            let Some((_, ino)) = pick(*file) else {
                return Ok(None);
            };
            fs.write(&c, ino, *off, &pattern(*seed, *len))
                .map(Some)
                .map_err(err)
        }
        Op::Fallocate {
            file,
            off,
            len,
            mode,
        } => {
            let Some((_, ino)) = pick(*file) else {
                return Ok(None);
            };
            let keep = mode & FALLOC_KEEP_SIZE != 0;
            let punch = mode & FALLOC_PUNCH_HOLE != 0;
            let zero = mode & FALLOC_ZERO_RANGE != 0;
            fs.fallocate(ino, *off, *len, keep, punch, zero)
                .map(|_| None)
                .map_err(err)
        }
        Op::Truncate { file, size } => {
            let Some((_, ino)) = pick(*file) else {
                return Ok(None);
            };
            let a = SetAttr {
                mode: None,
                uid: None,
                gid: None,
                size: Some(*size),
                atime: None,
                mtime: None,
                via_open_file: true,
                kill_suidgid: false,
            };
            fs.setattr(&c, ino, &a).map(|_| None).map_err(err)
        }
        Op::SetXattr { file, name, len } => {
            let Some((_, ino)) = pick(*file) else {
                return Ok(None);
            };
            let n = format!("user.x{name}");
            fs.setxattr(&c, ino, n.as_bytes(), &pattern(*name, *len), false, false)
                .map(|_| None)
                .map_err(err)
        }
        Op::Create { name } => {
            let dir = dir_of(fs, s, *name);
            let n = format!("f{name}");
            fs.make(&c, dir, n.as_bytes(), S_IFREG | 0o644, 0, None)
                .map(|_| None)
                .map_err(err)
        }
        Op::Mkdir { name } => {
            let n = format!("d{name}");
            fs.make(&c, fs.root(), n.as_bytes(), S_IFDIR | 0o755, 0, None)
                .map(|_| None)
                .map_err(err)
        }
        Op::Link { file, name } => {
            let Some((_, ino)) = pick(*file) else {
                return Ok(None);
            };
            let dir = dir_of(fs, s, *name);
            let n = format!("l{name}");
            fs.link(&c, ino, dir, n.as_bytes())
                .map(|_| None)
                .map_err(err)
        }
        Op::Rename { file, name } => {
            let Some((path, _)) = pick(*file) else {
                return Ok(None);
            };
            let (parent, old) = parent_and_name(fs, s, &path);
            let dir = dir_of(fs, s, *name);
            let n = format!("r{name}");
            fs.rename(
                &c,
                (parent, old.as_bytes()),
                (dir, n.as_bytes()),
                RenameHow::default(),
            )
            .map(|_| None)
            .map_err(err)
        }
        Op::Unlink { file } => {
            let Some((path, _)) = pick(*file) else {
                return Ok(None);
            };
            let (parent, old) = parent_and_name(fs, s, &path);
            fs.remove(&c, parent, old.as_bytes(), false)
                .map(|_| None)
                .map_err(err)
        }
    }
}

fn parent_and_name(fs: &Fs, s: &State, path: &str) -> (u64, String) {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    let parent = if dir.is_empty() {
        fs.root()
    } else {
        s.names[dir].ino
    };
    (parent, name.to_string())
}

fn mount(dev: Arc<dyn Device>) -> Result<Fs, String> {
    let eng = Engine::mount(dev, opts()).map_err(|e| format!("mount: {e}"))?;
    Fs::new(eng, false).map_err(|e| format!("fs: {e:?}"))
}

/// What a user sees of a name: mode, size, bytes, xattrs.
type Visible = (u32, u64, Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

/// After a shutdown: crash, recover the image as the device holds it, check it, and compare
/// every name's contents with the states it may hold (`allowed`).
fn recover_and_compare(mem: &MemDevice, allowed: &[&State]) -> Result<(), String> {
    let dev: Arc<dyn Device> = Arc::new(MemDevice::from_bytes(BS, mem.snapshot()));
    let eng = Engine::mount(dev.clone(), opts()).map_err(|e| format!("recovery: {e}"))?;
    let report =
        ticketfs::check::check(&eng, &mut |_, _, _| {}).map_err(|e| format!("fsck: {e}"))?;
    if report.problem_count() != 0 {
        return Err(format!("fsck after recovery: {:?}", report.problems));
    }
    let fs = Fs::new(eng, false).map_err(|e| format!("fs: {e:?}"))?;
    let after = observe(&fs)?;
    let view = |s: &State| -> BTreeMap<String, Visible> {
        s.names
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    (v.mode, v.size, v.data.clone(), v.xattrs.clone()),
                )
            })
            .collect()
    };
    if !allowed.iter().any(|s| view(&after) == view(s)) && !mixed(allowed, &after) {
        return Err(format!(
            "after the crash the names hold other contents: {}",
            diff(allowed[0], &after)
        ));
    }
    fs.unmount()
        .map_err(|e| format!("unmount after recovery: {e:?}"))
}

fn run(ops: Vec<(Op, Option<u8>)>) -> Result<(), TestCaseError> {
    let mem = Arc::new(MemDevice::from_bytes(BS, base_image()));
    let fault = Arc::new(FaultDevice::new(mem.clone()));
    let fs = mount(fault.clone()).map_err(TestCaseError::fail)?;
    // A few files to start with.
    for i in 0..3u8 {
        fs.make(
            &Ctx::ROOT,
            fs.root(),
            format!("f{i}").as_bytes(),
            S_IFREG | 0o644,
            0,
            None,
        )
        .unwrap();
    }
    fs.fsync().unwrap();
    let mut failures = 0usize;
    for (op, eio_after) in ops {
        let before = observe(&fs).map_err(TestCaseError::fail)?;
        if let Some(k) = eio_after {
            // Through the operation and the fsync after it: data writes, checkpoints and
            // metadata written home may each be the one that fails.
            fault.add_rule(FaultRule {
                op: FaultOp::Write,
                blocks: 0..u64::MAX,
                skip: k as u64,
                kind: FaultKind::Eio,
                sticky: false,
            });
        }
        let r = apply(&fs, &before, &op);
        if std::env::var("FAILING_OPS_TRACE").is_ok() {
            eprintln!(
                "trace {} {:?} shut={}",
                match &r {
                    Ok(_) => "ok",
                    Err(_) => "err",
                },
                r.as_ref().err(),
                fs.engine().is_shut_down()
            );
        }
        if fs.engine().is_shut_down() {
            if std::env::var("FAILING_OPS_TRACE").is_ok() {
                eprintln!("trace op-shut");
            }
            // The log is down: what is on the device must recover to the state before.
            drop(fs);
            recover_and_compare(&mem, &[&before]).map_err(|e| {
                TestCaseError::fail(format!("{op:?} shut the filesystem down: {e}"))
            })?;
            return Ok(());
        }
        let after = observe(&fs).map_err(TestCaseError::fail)?;
        match r {
            Err(e) => {
                failures += 1;
                if after != before {
                    return Err(TestCaseError::fail(format!(
                        "{op:?} failed with {e} and changed things: {}",
                        diff(&before, &after)
                    )));
                }
            }
            Ok(Some(n)) => {
                // A write: all of it, or a prefix that the file shows exactly.
                let Op::Write {
                    file,
                    off,
                    len,
                    seed,
                } = op
                else {
                    unreachable!()
                };
                prop_assert!(n <= len);
                let (name, _) = files(&before)[file % files(&before).len()].clone();
                let got = &after.names[&name];
                let mut want = before.names[&name].data.clone();
                let end = off as usize + n;
                if want.len() < end {
                    want.resize(end, 0);
                }
                want[off as usize..end].copy_from_slice(&pattern(seed, len)[..n]);
                prop_assert_eq!(
                    got.size as usize,
                    want.len(),
                    "size after a write of {} of {} bytes",
                    n,
                    len
                );
                if got.data != want {
                    let at = got.data.iter().zip(&want).position(|(p, q)| p != q);
                    return Err(TestCaseError::fail(format!(
                        "bytes after a write of {n} of {len} bytes at {off}: first difference at {at:?}"
                    )));
                }
            }
            Ok(None) => {}
        }
        let synced = fs.fsync();
        fault.clear();
        if synced.is_err() || fs.engine().is_shut_down() {
            if std::env::var("FAILING_OPS_TRACE").is_ok() {
                eprintln!("trace fsync-failed");
            }
            // The fsync failed: the image holds the state before the operation or after it.
            drop(fs);
            recover_and_compare(&mem, &[&before, &after])
                .map_err(|e| TestCaseError::fail(format!("fsync after {op:?} failed: {e}")))?;
            return Ok(());
        }
    }
    let _ = failures;
    fs.unmount()
        .map_err(|e| TestCaseError::fail(format!("unmount: {e:?}")))?;
    let eng = Engine::mount(
        Arc::new(MemDevice::from_bytes(BS, mem.snapshot())) as Arc<dyn Device>,
        opts(),
    )
    .unwrap();
    let report = ticketfs::check::check(&eng, &mut |_, _, _| {}).unwrap();
    prop_assert_eq!(
        report.problem_count(),
        0,
        "fsck at the end: {:?}",
        report.problems
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn failed_operations_change_nothing(
        ops in prop::collection::vec((op(), prop::option::weighted(0.1, 0u8..12)), 1..60)
    ) {
        run(ops)?;
    }
}

/// "." and ".." are never stored (format::name): a create, mkdir, link or rename onto either
/// fails with EEXIST, as mkdir(".") does in the kernel, and the directory is left as it was.
/// (The kernel resolves them before a request reaches the daemon; the library refuses too.)
#[test]
fn dot_and_dot_dot_are_never_created() {
    use ticketfs::fs::FsError;
    let fs = mount(Arc::new(MemDevice::from_bytes(BS, base_image()))).unwrap();
    let root = fs.root();
    let f = fs
        .make(&Ctx::ROOT, root, b"f", S_IFREG | 0o644, 0, None)
        .unwrap();
    let before = observe(&fs).unwrap();
    for name in [&b"."[..], b".."] {
        for mode in [S_IFREG | 0o644, S_IFDIR | 0o755] {
            let r = fs.make(&Ctx::ROOT, root, name, mode, 0, None);
            assert!(matches!(r, Err(FsError::Exists)), "make {name:?}: {r:?}");
        }
        let r = fs.link(&Ctx::ROOT, f.ino, root, name);
        assert!(matches!(r, Err(FsError::Exists)), "link {name:?}: {r:?}");
        let r = fs.rename(&Ctx::ROOT, (root, b"f"), (root, name), RenameHow::default());
        assert!(
            matches!(r, Err(FsError::Exists)),
            "rename onto {name:?}: {r:?}"
        );
    }
    let after = observe(&fs).unwrap();
    assert!(
        diff(&before, &after).is_empty(),
        "{}",
        diff(&before, &after)
    );
    fs.crash();
}

/// A bare namespace ("user.", "trusted.") names no attribute: setxattr fails with EINVAL and
/// stores nothing. One stored by an earlier version (which let it through) stays readable and
/// removable: the block holding it is not corrupt (`format::xattrblock::name_problem`).
#[test]
fn a_bare_namespace_is_refused_on_set_and_accepted_by_the_readers_rule() {
    use ticketfs::format::xattrblock::name_problem;
    use ticketfs::fs::FsError;
    let fs = mount(Arc::new(MemDevice::from_bytes(BS, base_image()))).unwrap();
    let f = fs
        .make(&Ctx::ROOT, fs.root(), b"f", S_IFREG | 0o644, 0, None)
        .unwrap();
    for name in [&b"user."[..], b"trusted.", b"security."] {
        let r = fs.setxattr(&Ctx::ROOT, f.ino, name, b"v", false, false);
        assert!(matches!(r, Err(FsError::Invalid(_))), "{name:?}: {r:?}");
        assert_eq!(
            name_problem(name),
            None,
            "{name:?}: an older image may hold it"
        );
    }
    assert_eq!(fs.listxattr(&Ctx::ROOT, f.ino).unwrap(), b"");
    assert!(name_problem(b"other.x").is_some());
    assert!(name_problem(b"user.a\0b").is_some());
    fs.crash();
}
