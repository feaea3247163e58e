//! fsck.ticketfs against damaged images: for every kind of metadata block in a populated image,
//! a copy with a bit flipped, one with the block zeroed and one with another block of the same
//! kind written over it (wrong address). fsck -n must report each (exit 4) and leave the image
//! untouched; the undamaged image is clean (exit 0); a mounted image is refused (exit 8).

mod common;

use common::mount::Mount;
use common::xattr::setx;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use ticketfs::format::{BlockHeader, BlockType};
use ticketfs::mkfs::{make_filesystem, MkfsOptions};

const BS: usize = 4096;

fn fsck_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_ticketfs")).with_file_name("fsck-ticketfs");
    assert!(
        bin.exists(),
        "{} missing: cargo build --workspace first",
        bin.display()
    );
    bin
}

fn fsck(img: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(fsck_bin())
        .args(args)
        .arg(img)
        .output()
        .expect("fsck");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A small image holding every kind of metadata block.
/// A fresh 64 MiB image, `dir`/image: where most tests here start.
fn fresh_image(dir: &Path) -> PathBuf {
    let img = dir.join("image");
    make_filesystem(
        &img,
        &MkfsOptions {
            size: Some(64 << 20),
            ..Default::default()
        },
    )
    .expect("mkfs");
    img
}

/// Makes block `n` of `bytes` valid again after a test changed it (its CRC recomputed, its LSN
/// kept): only the meaning of what changed is wrong.
fn reseal(bytes: &mut [u8], n: usize) {
    let b = &mut bytes[n * BS..(n + 1) * BS];
    let lsn = BlockHeader::peek_lsn(b).unwrap_or(0);
    BlockHeader::stamp(b, lsn);
}

fn populated(dir: &Path) -> PathBuf {
    let img = fresh_image(dir);
    let m = Mount::new(&img, "");
    let r = m.path();
    // A directory large enough for its hash tree and name blocks.
    fs::create_dir(r.join("big")).unwrap();
    for i in 0..300 {
        fs::write(r.join(format!("big/entry-with-a-long-name-{i:04}")), b"x").unwrap();
    }
    // A file with enough extents for an extent tree: every other block written.
    let mut f = fs::File::create(r.join("sparse")).unwrap();
    for i in 0..200u64 {
        std::os::unix::fs::FileExt::write_at(&f, &[1u8; 4096], i * 8192).unwrap();
    }
    f.flush().unwrap();
    drop(f);
    std::os::unix::fs::symlink("t".repeat(400), r.join("longlink")).unwrap();
    setx(&r.join("big"), "user.test", b"an attribute value", 0).unwrap();
    // A file with an attribute tree of several nodes, entry blocks and a remote value.
    let a = r.join("attrs");
    fs::write(&a, b"a").unwrap();
    for (n, v) in populated_attrs() {
        setx(&a, &n, &v, 0).unwrap();
    }
    m.unmount();
    img
}

/// Block numbers of each metadata type, found by scanning the image.
fn blocks_by_type(img: &[u8]) -> BTreeMap<BlockType, Vec<usize>> {
    let mut out: BTreeMap<BlockType, Vec<usize>> = BTreeMap::new();
    for (n, b) in img.chunks(BS).enumerate() {
        if let Some(t) = BlockHeader::peek_type(b) {
            out.entry(t).or_default().push(n);
        }
    }
    out
}

/// The damages for one block: a flipped bit, zeroes, another block of its kind written over it
/// (wrong address), and a stale LSN (one ahead of the log, CRC made valid).
fn damages_of(
    pristine: &[u8],
    t: &str,
    victim: usize,
    other: Option<usize>,
) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut flipped = pristine.to_vec();
    flipped[victim * BS + BS / 2 + 3] ^= 0x10;
    out.push((format!("{t} block {victim}: a flipped bit"), flipped));
    let mut zeroed = pristine.to_vec();
    zeroed[victim * BS..(victim + 1) * BS].fill(0);
    out.push((format!("{t} block {victim}: zeroes"), zeroed));
    if let Some(o) = other {
        let mut moved = pristine.to_vec();
        let src = pristine[o * BS..(o + 1) * BS].to_vec();
        moved[victim * BS..(victim + 1) * BS].copy_from_slice(&src);
        out.push((
            format!("{t} block {victim}: block {o} written over it"),
            moved,
        ));
    }
    let mut stale = pristine.to_vec();
    let b = &mut stale[victim * BS..(victim + 1) * BS];
    BlockHeader::stamp(b, 0x7fff_0000_0000_0000);
    out.push((format!("{t} block {victim}: a stale LSN"), stale));
    out
}

/// Mounts `bytes` in memory: it must mount or fail naming a block, never panic.
fn mount_names_the_block(bytes: &[u8], what: &str) {
    use std::sync::Arc;
    use ticketfs::device::{Device, MemDevice};
    use ticketfs::fs::Fs;
    use ticketfs::{Engine, EngineOptions};
    let dev: Arc<dyn Device> = Arc::new(MemDevice::from_bytes(BS as u32, bytes.to_vec()));
    let r = Engine::mount(dev, EngineOptions::default())
        .map_err(|e| e.to_string())
        .and_then(|eng| Fs::new(eng, false).map_err(|e| e.to_string()));
    match r {
        Ok(fs) => fs.crash(),
        Err(e) => assert!(
            e.contains("block "),
            "{what}: the mount failed without naming the block: {e}"
        ),
    }
}

/// fsck -n finds the damage and writes nothing; fsck -y repairs it (exit 1); then fsck -n is
/// clean and the image mounts and can be walked.
fn assert_found_and_repaired(work: &Path, what: &str, bytes: &[u8]) {
    let bad = work.join("bad");
    fs::write(&bad, bytes).unwrap();
    let (code, out) = fsck(&bad, &["-n"]);
    assert_eq!(code, 4, "{what}: fsck -n exit {code}:\n{out}");
    assert!(
        fs::read(&bad).unwrap() == bytes,
        "{what}: fsck -n wrote to the image"
    );
    mount_names_the_block(bytes, what);
    let (code, out) = fsck(&bad, &["-y"]);
    assert_eq!(code, 1, "{what}: fsck -y exit {code}:\n{out}");
    if std::env::var_os("FSCK_TEST_SHOW").is_some() {
        eprintln!("=== {what}\n{out}");
    }
    let (code, again) = fsck(&bad, &["-n"]);
    assert_eq!(
        code, 0,
        "{what}: fsck -n after the repair exit {code}:\n{again}\nrepair said:\n{out}"
    );
    mount_check_and_walk(fs::read(&bad).unwrap());
}

#[test]
fn fsck_finds_and_repairs_every_kind_of_damage() {
    let work = tempfile::tempdir().unwrap();
    let img = populated(work.path());
    let (code, out) = fsck(&img, &["-n"]);
    assert_eq!(code, 0, "the undamaged image is not clean:\n{out}");
    let (code, out) = fsck(&img, &["-y"]);
    assert_eq!(code, 0, "fsck -y on the undamaged image:\n{out}");
    let pristine = fs::read(&img).unwrap();
    let kinds = blocks_by_type(&pristine);
    let mut cases = 0;
    for t in BlockType::ALL {
        let list = kinds.get(&t).cloned().unwrap_or_default();
        assert!(!list.is_empty(), "the image has no {} block", t.name());
        let victim = list[list.len() / 2];
        let other = list.iter().copied().find(|&b| b != victim);
        for (what, bytes) in damages_of(&pristine, t.name(), victim, other) {
            assert_found_and_repaired(work.path(), &what, &bytes);
            cases += 1;
        }
    }
    // The superblock: either copy damaged; the other one serves.
    let last = pristine.len() / BS - 1;
    for (blk, what) in [(0, "primary"), (last, "backup")] {
        let mut flipped = pristine.clone();
        flipped[blk * BS + 40] ^= 0x01;
        assert_found_and_repaired(
            work.path(),
            &format!("{what} superblock: a flipped bit"),
            &flipped,
        );
        let mut zeroed = pristine.clone();
        zeroed[blk * BS..(blk + 1) * BS].fill(0);
        assert_found_and_repaired(work.path(), &format!("{what} superblock: zeroes"), &zeroed);
        // The AG header (block 1) written over it.
        let mut moved = pristine.clone();
        moved.copy_within(BS..2 * BS, blk * BS);
        assert_found_and_repaired(
            work.path(),
            &format!("{what} superblock: block 1 written over it"),
            &moved,
        );
        cases += 3;
    }
    eprintln!("{cases} damaged images found, repaired and clean afterwards");
}

/// An image whose log holds several checkpoints not yet written home (the daemon died), the
/// first of which is then damaged: the later ones cannot be replayed. fsck -n reports it, fsck
/// -y replays what comes before, discards the rest and leaves a clean filesystem; a mount
/// refuses the image meanwhile, naming the block.
#[test]
fn fsck_finds_and_repairs_a_damaged_log() {
    use std::sync::Arc;
    use ticketfs::device::{Device, FileDevice};
    use ticketfs::format::log::{RecordHeader, LOG_RECORD_MAGIC};
    use ticketfs::format::{Lsn, Superblock};
    use ticketfs::fs::{Ctx, Fs, S_IFREG};
    use ticketfs::{Engine, EngineOptions};
    let work = tempfile::tempdir().unwrap();
    let img = populated(work.path());
    let sb = Superblock::decode(&fs::read(&img).unwrap()[..BS], 0).unwrap();
    {
        let dev: Arc<dyn Device> = Arc::new(FileDevice::open(&img, BS as u32, true).unwrap());
        let fs = Fs::new(Engine::mount(dev, EngineOptions::default()).unwrap(), false).unwrap();
        for n in 0..6 {
            let name = format!("after-crash-{n}");
            fs.make(
                &Ctx::ROOT,
                fs.root(),
                name.as_bytes(),
                S_IFREG | 0o644,
                0,
                None,
            )
            .unwrap();
            fs.fsync().unwrap();
        }
        fs.crash();
    }
    let pristine = fs::read(&img).unwrap();
    if let Some(keep) = std::env::var_os("FSCK_TEST_KEEP") {
        fs::write(keep, &pristine).unwrap();
    }
    let g = sb.geometry;
    let decode = |b: usize| {
        RecordHeader::decode(
            &pristine[b * BS..(b + 1) * BS],
            b as u64,
            (b as u64 - g.log_start) as u32,
            None,
            &sb.uuid,
            g.log_blocks,
        )
    };
    let records: Vec<RecordHeader> = (g.log_start as usize..g.log_end() as usize)
        .filter(|&b| pristine[b * BS..b * BS + 4] == LOG_RECORD_MAGIC.to_le_bytes())
        .filter_map(|b| decode(b).ok())
        .collect();
    // The newest record's tail: the first record recovery must replay.
    let newest = records.iter().max_by_key(|h| h.lsn).unwrap();
    let victim = (g.log_start + newest.tail_lsn.block() as u64) as usize;
    assert!(
        newest.seq >= decode(victim).unwrap().seq + 3,
        "too few checkpoints after the tail"
    );
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    let mut flipped = pristine.clone();
    flipped[victim * BS + 200] ^= 0x04;
    cases.push(("log record: a flipped bit".into(), flipped));
    let mut zeroed = pristine.clone();
    zeroed[victim * BS..(victim + 1) * BS].fill(0);
    cases.push(("log record: zeroes".into(), zeroed));
    // The newest record's block written over it.
    let newest_blk = (g.log_start + newest.lsn.block() as u64) as usize;
    let mut moved = pristine.clone();
    moved.copy_within(newest_blk * BS..(newest_blk + 1) * BS, victim * BS);
    cases.push(("log record: another record written over it".into(), moved));
    let mut stale = pristine.clone();
    let h = decode(victim).unwrap();
    let len = h.blocks as usize * BS;
    let mut h2 = h;
    h2.lsn = Lsn(h.lsn.0 + (1 << 32));
    h2.encode(&mut stale[victim * BS..victim * BS + len]);
    cases.push(("log record: a stale LSN".into(), stale));
    for (what, bytes) in cases {
        let dev: Arc<dyn ticketfs::device::Device> = Arc::new(
            ticketfs::device::MemDevice::from_bytes(BS as u32, bytes.clone()),
        );
        match Engine::mount(dev, EngineOptions::default()) {
            Ok(_) => panic!("{what}: the damaged log mounted"),
            Err(e) => assert!(
                e.to_string().contains(&format!("block {victim}")),
                "{what}: the mount did not name block {victim}: {e}"
            ),
        }
        assert_found_and_repaired(work.path(), &what, &bytes);
    }
}

#[test]
fn fsck_refuses_a_mounted_image() {
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("image");
    make_filesystem(
        &img,
        &MkfsOptions {
            size: Some(32 << 20),
            ..Default::default()
        },
    )
    .unwrap();
    let m = Mount::new(&img, "");
    let (code, out) = fsck(&img, &["-n"]);
    assert_eq!(code, 8, "{out}");
    assert!(out.contains("mounted"), "{out}");
    m.unmount();
    let (code, out) = fsck(&img, &[]);
    assert_eq!(code, 0, "{out}");
    let (code, _) = fsck(&img, &["--bogus"]);
    assert_eq!(code, 16);
}

/// The populated image, made once for the fuzz cases.
fn fuzz_base() -> &'static Vec<u8> {
    static BASE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BASE.get_or_init(|| {
        let work = tempfile::tempdir().unwrap();
        let img = populated(work.path());
        fs::read(img).unwrap()
    })
}

/// Mounts `bytes` in memory, runs the checker, then mounts the filesystem and walks every
/// directory and reads every file. Errors are fine; a panic or a hang is not.
fn mount_check_and_walk(bytes: Vec<u8>) {
    use std::sync::Arc;
    use ticketfs::device::{Device, MemDevice};
    use ticketfs::fs::{Ctx, Fs, S_IFDIR, S_IFMT, S_IFREG};
    use ticketfs::{Engine, EngineOptions};
    let dev: Arc<dyn Device> = Arc::new(MemDevice::from_bytes(BS as u32, bytes.clone()));
    if let Ok(eng) = Engine::mount(dev, EngineOptions::default()) {
        let _ = ticketfs::check::check(&eng, &mut |_, _, _| {});
        eng.crash();
    }
    let dev: Arc<dyn Device> = Arc::new(MemDevice::from_bytes(BS as u32, bytes));
    let Ok(eng) = Engine::mount(dev, EngineOptions::default()) else {
        return;
    };
    let Ok(fs) = Fs::new(eng, false) else { return };
    let mut stack = vec![fs.root()];
    let mut seen = 0;
    while let Some(d) = stack.pop() {
        seen += 1;
        if seen > 10_000 {
            break;
        }
        let mut cookie = 0;
        while let Ok(batch) = fs.readdir(d, cookie, 256) {
            let Some(last) = batch.last() else { break };
            cookie = last.cookie;
            for e in batch.iter().filter(|e| e.name != b"." && e.name != b"..") {
                match fs.getattr(e.ino) {
                    Ok(a) if a.mode & S_IFMT == S_IFDIR => stack.push(e.ino),
                    Ok(a) if a.mode & S_IFMT == S_IFREG => {
                        let _ = fs.read(e.ino, 0, 1 << 20);
                    }
                    _ => {}
                }
            }
        }
    }
    let _ = fs.make(
        &Ctx::ROOT,
        fs.root(),
        b"new-after-fuzz",
        S_IFREG | 0o644,
        0,
        None,
    );
    fs.crash();
}

proptest::proptest! {
    // A fixed seed: CI runs the same 48 cases every time (longer runs with PROPTEST_CASES and
    // PROPTEST_RNG_SEED look further).
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        rng_seed: proptest::test_runner::RngSeed::Fixed(
            std::env::var("PROPTEST_RNG_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(20261122),
        ),
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Random damage to metadata blocks (bytes anywhere in them, header included), half the
    /// time with the block's CRC made valid again so the parsers see the damage: mounting,
    /// checking and using the image never panics, and a repair leaves it clean.
    #[test]
    fn damaged_metadata_never_panics(
        hits in proptest::collection::vec((0usize..1 << 20, 0usize..BS, 0u8..=255), 1..12),
        fix_crc in proptest::bool::ANY,
    ) {
        let base = fuzz_base();
        let meta: Vec<usize> = base
            .chunks(BS)
            .enumerate()
            .filter(|(_, b)| BlockHeader::peek_type(b).is_some())
            .map(|(n, _)| n)
            .collect();
        let mut bytes = base.clone();
        for (pick, off, val) in hits {
            let blk = meta[pick % meta.len()];
            bytes[blk * BS + off] = val;
            if fix_crc {
                reseal(&mut bytes, blk);
            }
        }
        mount_check_and_walk(bytes.clone());
        repair_leaves_it_clean(bytes.clone());
        clean_means_repair_changes_nothing(bytes);
    }
}

/// Everything a user sees of the filesystem on `dev` after replaying its log as fsck does:
/// every path with its type, mode, owner, link count, size, contents (or target) and xattrs,
/// and the free block and inode counts. None when it does not mount or the walk fails.
fn user_view(dev: std::sync::Arc<dyn ticketfs::device::Device>) -> Option<Vec<String>> {
    use ticketfs::fs::{Ctx, Fs, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};
    use ticketfs::{Engine, EngineOptions};
    let fs = Fs::new(Engine::mount(dev, EngineOptions::default()).ok()?, false).ok()?;
    let mut out = Vec::new();
    let mut stack = vec![(fs.root(), String::new())];
    let walked = (|| {
        while let Some((d, path)) = stack.pop() {
            let mut cookie = 0;
            loop {
                let batch = fs.readdir(d, cookie, 256).ok()?;
                let Some(last) = batch.last() else { break };
                cookie = last.cookie;
                for e in batch.iter().filter(|e| e.name != b"." && e.name != b"..") {
                    let p = format!("{path}/{}", String::from_utf8_lossy(&e.name));
                    let a = fs.getattr(e.ino).ok()?;
                    let body = match a.mode & S_IFMT {
                        S_IFDIR => {
                            stack.push((e.ino, p.clone()));
                            Vec::new()
                        }
                        S_IFREG => fs.read(e.ino, 0, a.size.min(1 << 22) as usize).ok()?,
                        S_IFLNK => fs.readlink(e.ino).ok()?,
                        _ => Vec::new(),
                    };
                    // Each name with a checksum of its value: a value is what users see too.
                    let mut xattrs = Vec::new();
                    for n in fs.listxattr(&Ctx::ROOT, e.ino).ok()?.split(|&c| c == 0) {
                        if !n.is_empty() {
                            let v = fs.getxattr(&Ctx::ROOT, e.ino, n).ok()?;
                            xattrs.push(format!(
                                "{}={:08x}",
                                String::from_utf8_lossy(n),
                                crc32fast::hash(&v)
                            ));
                        }
                    }
                    let f = fs.file_flags(e.ino).ok()?;
                    out.push(format!(
                        "{p} mode {:o} uid {} gid {} nlink {} size {} body {:08x} xattrs {:?} \
                         flags {:#x} project {}",
                        a.mode,
                        a.uid,
                        a.gid,
                        a.nlink,
                        a.size,
                        crc32fast::hash(&body),
                        xattrs,
                        f.flags,
                        f.projid
                    ));
                }
            }
        }
        Some(())
    })();
    let st = fs.statfs().ok();
    fs.crash();
    walked?;
    let st = st?;
    out.sort();
    out.push(format!("free blocks {} free inodes {}", st.bfree, st.ffree));
    Some(out)
}

/// The checker and the repairer agree: when fsck -n (the checker after the log is replayed)
/// finds nothing, fsck -y's repair run anyway changes nothing a user can see. (An inode the
/// checker passes and the repairer clears is the disagreement this catches; a problem the
/// checker reports and the repair leaves is caught by `repair_leaves_it_clean`.)
fn clean_means_repair_changes_nothing(bytes: Vec<u8>) {
    use std::sync::Arc;
    use ticketfs::device::{Device, MemDevice};
    use ticketfs::engine::read_superblock;
    use ticketfs::log::{recover, Damage};
    use ticketfs::{Engine, EngineOptions};
    let dev: Arc<dyn Device> = Arc::new(MemDevice::from_bytes(BS as u32, bytes));
    let Ok(sb) = read_superblock(&*dev) else {
        return;
    };
    if recover(&*dev, &sb, Damage::Accept).is_err() {
        return;
    }
    let Ok(eng) = Engine::mount(dev.clone(), EngineOptions::default()) else {
        return;
    };
    let clean =
        ticketfs::check::check(&eng, &mut |_, _, _| {}).is_ok_and(|r| r.problems.is_empty());
    eng.crash();
    if !clean {
        return;
    }
    let snapshot = |d: &Arc<dyn Device>| {
        let mut img = vec![0u8; d.block_count() as usize * BS];
        for (n, chunk) in img.chunks_mut(BS).enumerate() {
            let mut b = ticketfs::device::AlignedBuf::new(BS);
            d.read(n as u64, &mut b).unwrap();
            chunk.copy_from_slice(&b);
        }
        img
    };
    let replayed = snapshot(&dev);
    let before = user_view(Arc::new(MemDevice::from_bytes(BS as u32, replayed.clone())))
        .expect("the checker found it clean, so it mounts and walks");
    let rep = ticketfs::repair::repair(dev.clone(), &mut |_, _, _| {}).expect("repair");
    let after = user_view(dev).expect("mount after repair");
    let changed: Vec<String> = before
        .iter()
        .filter(|l| !after.contains(l))
        .map(|l| format!("before: {l}"))
        .chain(
            after
                .iter()
                .filter(|l| !before.contains(l))
                .map(|l| format!("after:  {l}")),
        )
        .collect();
    assert!(
        changed.is_empty(),
        "fsck -n found nothing, fsck -y changed what users see:\n{}\nthe repair did: {:#?}",
        changed.join("\n"),
        rep
    );
}

/// Repairs `bytes` in memory as fsck -y does; a repair that completes must leave an image the
/// checker finds clean.
fn repair_leaves_it_clean(bytes: Vec<u8>) {
    use std::sync::Arc;
    use ticketfs::device::{Device, MemDevice};
    use ticketfs::engine::read_superblock;
    use ticketfs::log::{recover, Damage};
    use ticketfs::{Engine, EngineOptions};
    let dev: Arc<dyn Device> = Arc::new(MemDevice::from_bytes(BS as u32, bytes));
    let Ok(sb) = read_superblock(&*dev) else {
        return;
    };
    if recover(&*dev, &sb, Damage::Accept).is_err() {
        return;
    }
    let rep = match ticketfs::repair::repair(dev.clone(), &mut |_, _, _| {}) {
        Ok(r) => r,
        Err(e) => panic!("the repair failed: {e}"),
    };
    let eng = Engine::mount(dev, EngineOptions::default()).expect("mount after repair");
    let report = ticketfs::check::check(&eng, &mut |_, _, _| {}).expect("check after repair");
    eng.crash();
    assert!(
        report.problems.is_empty(),
        "after the repair: {:#?}\nthe repair did: {:#?}",
        &report.problems[..report.problems.len().min(20)],
        rep
    );
}

/// Blocks preallocated past the end of a file (FALLOC_FL_KEEP_SIZE) are freed by a truncate and
/// by the unlink that destroys the file: they leaked before (fsstress at ENOSPC found it: the
/// check reported blocks neither free nor used).
#[test]
fn blocks_preallocated_past_the_end_go_with_the_file() {
    use std::sync::Arc;
    use ticketfs::device::{Device, FileDevice};
    use ticketfs::fs::{Ctx, Fs, S_IFREG};
    use ticketfs::{Engine, EngineOptions};
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("image");
    make_filesystem(
        &img,
        &MkfsOptions {
            size: Some(64 << 20),
            ..Default::default()
        },
    )
    .unwrap();
    let dev: Arc<dyn Device> = Arc::new(FileDevice::open(&img, BS as u32, true).unwrap());
    let fs = Fs::new(Engine::mount(dev, EngineOptions::default()).unwrap(), false).unwrap();
    let free0 = fs.statfs().unwrap().bfree;
    for (n, name) in [b"truncated".as_slice(), b"unlinked".as_slice()]
        .iter()
        .enumerate()
    {
        let a = fs
            .make(&Ctx::ROOT, fs.root(), name, S_IFREG | 0o644, 0, None)
            .unwrap();
        fs.write(&Ctx::ROOT, a.ino, 0, &[7u8; 5000]).unwrap();
        fs.fallocate(a.ino, 0, 1 << 20, true, false, false).unwrap();
        assert_eq!(fs.getattr(a.ino).unwrap().size, 5000);
        if n == 0 {
            let s = ticketfs::fs::SetAttr {
                size: Some(0),
                ..Default::default()
            };
            fs.setattr(&Ctx::ROOT, a.ino, &s).unwrap();
        }
        fs.remove(&Ctx::ROOT, fs.root(), name, false).unwrap();
    }
    assert_eq!(
        fs.statfs().unwrap().bfree,
        free0,
        "blocks were not given back"
    );
    fs.unmount().unwrap();
    let (code, out) = fsck(&img, &["-n"]);
    assert_eq!(code, 0, "{out}");
}

/// A list of every file under `root` with its contents, to compare an image before and after.
fn tree_of(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let t = fs::symlink_metadata(&p).unwrap().file_type();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if t.is_dir() {
                todo.push(p);
                out.insert(rel, Vec::new());
            } else if t.is_symlink() {
                out.insert(
                    rel,
                    fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                );
            } else {
                out.insert(rel, fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// A primary superblock whose CRC is right but whose UUID is another filesystem's (a memory
/// error before the checksum, a tool gone wrong): the backup, which the AG headers and the log
/// agree with, is the one used. fsck -n reports the bad copy, fsck -y rewrites it from the
/// backup with every file back, and the image mounts with all its files even before the repair.
/// (Before, the primary was trusted whenever it decoded: mount and repair failed with "no valid
/// log record anywhere in the log".)
#[test]
fn a_primary_superblock_of_another_filesystem_loses_to_the_backup() {
    use ticketfs::format::Superblock;
    let work = tempfile::tempdir().unwrap();
    let img = populated(work.path());
    let before = {
        let m = Mount::new(&img, "");
        let t = tree_of(m.path());
        m.unmount();
        t
    };
    assert!(
        before.len() > 300,
        "the populated tree: {} entries",
        before.len()
    );
    let mut bytes = fs::read(&img).unwrap();
    let mut sb = Superblock::decode(&bytes[..BS], 0).unwrap();
    let backup_at = sb.geometry.backup_sb_blkno();
    sb.uuid[0] ^= 0x5a;
    sb.uuid[9] ^= 0xa5;
    sb.encode(&mut bytes[..BS], 0);
    assert!(
        Superblock::decode(&bytes[..BS], 0).is_ok(),
        "the damaged copy's CRC is valid"
    );
    fs::write(&img, &bytes).unwrap();

    let (code, out) = fsck(&img, &["-n"]);
    assert_eq!(code, 4, "fsck -n:\n{out}");
    assert!(
        out.contains("copy at block 0: names another filesystem's UUID")
            && out.contains(&format!("using the copy at block {backup_at}")),
        "fsck -n:\n{out}"
    );
    assert_eq!(fs::read(&img).unwrap(), bytes, "fsck -n wrote to the image");

    // A mount uses the backup already, and sees every file.
    let m = Mount::new(&img, "ro");
    assert_eq!(
        tree_of(m.path()),
        before,
        "the tree through a mount of the damaged image"
    );
    m.unmount();
    // (The read-only mount may have rewritten nothing: the primary is still the bad one.)
    fs::write(&img, &bytes).unwrap();

    let (code, out) = fsck(&img, &["-y"]);
    assert_eq!(code, 1, "fsck -y:\n{out}");
    assert!(out.contains("rewritten"), "fsck -y:\n{out}");
    let (code, out) = fsck(&img, &["-n"]);
    assert_eq!(code, 0, "fsck -n after -y:\n{out}");
    let now = fs::read(&img).unwrap();
    let fixed = Superblock::decode(&now[..BS], 0).unwrap();
    assert_eq!(
        fixed.uuid,
        Superblock::decode(&now[backup_at as usize * BS..][..BS], backup_at)
            .unwrap()
            .uuid
    );
    let m = Mount::new(&img, "");
    assert_eq!(tree_of(m.path()), before, "the tree after fsck -y");
    m.unmount();
}

/// `fsck -b BLOCK` uses the copy named, and `-y` rewrites the other from it; a block where no
/// copy can be is refused with the reason.
#[test]
fn fsck_b_names_the_superblock_copy() {
    use ticketfs::format::Superblock;
    let work = tempfile::tempdir().unwrap();
    let img = populated(work.path());
    let mut bytes = fs::read(&img).unwrap();
    let sb = Superblock::decode(&bytes[..BS], 0).unwrap();
    let backup_at = sb.geometry.backup_sb_blkno();
    // A label changed in the primary only: both copies valid, the rest agrees with both.
    let mut other = sb.clone();
    other.label[..6].copy_from_slice(b"wrong!");
    other.encode(&mut bytes[..BS], 0);
    fs::write(&img, &bytes).unwrap();
    // Auto keeps the primary (a tie): the backup differs.
    let (code, out) = fsck(&img, &["-n"]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains(&format!("copy at block {backup_at}: differs")),
        "{out}"
    );
    // -b names the backup: the primary differs, and -y rewrites it from the backup.
    let b = backup_at.to_string();
    let (code, out) = fsck(&img, &["-n", "-b", &b]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("copy at block 0: differs"), "{out}");
    let (code, out) = fsck(&img, &["-y", "-b", &b]);
    assert_eq!(code, 1, "{out}");
    let now = fs::read(&img).unwrap();
    assert_eq!(Superblock::decode(&now[..BS], 0).unwrap().label, sb.label);
    let (code, out) = fsck(&img, &["-n"]);
    assert_eq!(code, 0, "{out}");
    for bad in ["7", "x", ""] {
        let (code, out) = fsck(&img, &["-n", "-b", bad]);
        assert_eq!(code, 16, "-b {bad:?}: a usage error\n{out}");
        // One line, usage error or not.
        assert_eq!(out.lines().count(), 1, "-b {bad:?}:\n{out}");
    }
}

/// An inode whose extent points at a superblock, the log, an AG's header or one of its reserved
/// blocks: the checker, the repairer and the mount judge it by one rule
/// (`Geometry::extent_problem`). Before, `fsck -n` passed an extent at an AG header or reserved
/// block (it knew only the superblocks and the log) that `fsck -y` cleared, and both passed one
/// at block 0 that the file layer refused.
#[test]
fn an_extent_in_a_reserved_block_is_found_by_check_and_repair_alike() {
    use std::os::unix::fs::MetadataExt;
    use ticketfs::format::inode::{ino_split, CHUNK_SLOTS_OFFSET, FORK_OFFSET, INODE_BYTES};
    use ticketfs::format::Superblock;
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("image");
    make_filesystem(
        &img,
        &MkfsOptions {
            size: Some(64 << 20),
            ag_count: Some(2),
            ..Default::default()
        },
    )
    .expect("mkfs");
    let m = Mount::new(&img, "");
    fs::write(m.path().join("victim"), vec![0xabu8; BS]).unwrap();
    fs::write(m.path().join("keeper"), b"kept").unwrap();
    let ino = fs::metadata(m.path().join("victim")).unwrap().ino();
    m.unmount();
    let pristine = fs::read(&img).unwrap();
    let g = Superblock::decode(&pristine[..BS], 0).unwrap().geometry;
    assert_eq!(g.ag_count, 2, "{g:?}");
    // The victim's one extent: its start field in the inode's fork.
    let (chunk, slot) = ino_split(ino);
    let chunk = chunk as usize;
    let at = chunk * BS + CHUNK_SLOTS_OFFSET + slot * INODE_BYTES + FORK_OFFSET + 8;
    let start = u64::from_le_bytes(pristine[at..at + 8].try_into().unwrap());
    assert_eq!(
        &pristine[start as usize * BS..][..BS],
        &[0xabu8; BS][..],
        "the fork's first extent (at byte {at}) maps the victim's data"
    );
    // A second extent (file block 1, one block at `target`) beside the real one, with the
    // inode's extent and block counts to match: the only thing wrong is where it points.
    let ino_at = chunk * BS + CHUNK_SLOTS_OFFSET + slot * INODE_BYTES;
    let second = at - 8 + 24;
    assert_eq!(
        pristine[ino_at + 92..ino_at + 96],
        1u32.to_le_bytes(),
        "nextents"
    );
    assert_eq!(
        pristine[ino_at + 32..ino_at + 40],
        1u64.to_le_bytes(),
        "blocks"
    );
    for (target, what) in [
        (0, "the primary superblock"),
        (1, "AG 0's header"),
        (g.log_start + 2, "a log block"),
        (g.ag_blocks + 1, "AG 1's header"),
        (g.ag_blocks + 6, "a reserved block of AG 1"),
        (g.backup_sb_blkno(), "the backup superblock"),
    ] {
        let mut bytes = pristine.clone();
        let put = |bytes: &mut Vec<u8>, off: usize, v: &[u8]| {
            bytes[off..off + v.len()].copy_from_slice(v)
        };
        put(&mut bytes, second, &1u64.to_le_bytes());
        put(&mut bytes, second + 8, &target.to_le_bytes());
        put(&mut bytes, second + 16, &1u32.to_le_bytes());
        put(&mut bytes, second + 20, &0u32.to_le_bytes());
        put(&mut bytes, ino_at + 92, &2u32.to_le_bytes()); // nextents
        put(&mut bytes, ino_at + 32, &2u64.to_le_bytes()); // blocks
        put(&mut bytes, ino_at + 24, &(2 * BS as u64).to_le_bytes()); // size
        reseal(&mut bytes, chunk);
        assert_found_and_repaired(
            work.path(),
            &format!("an extent at block {target}, {what}"),
            &bytes,
        );
    }
}

/// A stored directory entry named ".." (with its hash made right): the checker and the repairer
/// judge stored names by one rule (`format::name::name_problem`) and tell the entries `read`
/// makes up from stored ones by cookie, not by name. Before, both skipped every entry named "."
/// or "..", stored or not.
#[test]
fn a_stored_dot_dot_entry_is_named_by_check_and_dropped_by_repair() {
    use std::os::unix::fs::MetadataExt;
    use ticketfs::format::inode::{ino_split, CHUNK_SLOTS_OFFSET, FORK_OFFSET, INODE_BYTES};
    let work = tempfile::tempdir().unwrap();
    let img = fresh_image(work.path());
    let m = Mount::new(&img, "");
    fs::create_dir(m.path().join("d")).unwrap();
    fs::write(m.path().join("d/xy"), b"x").unwrap();
    let dino = fs::metadata(m.path().join("d")).unwrap().ino();
    m.unmount();
    let mut bytes = fs::read(&img).unwrap();
    let (chunk, slot) = ino_split(dino);
    let chunk = chunk as usize;
    // The inline directory's first entry: hash u32, index u16, inode u64, type u8, length u8.
    let e = chunk * BS + CHUNK_SLOTS_OFFSET + slot * INODE_BYTES + FORK_OFFSET + 16;
    assert_eq!((bytes[e + 15], &bytes[e + 16..e + 18]), (2, &b"xy"[..]));
    bytes[e..e + 4].copy_from_slice(&(ticketfs::dir::name_hash(b"..") as u32).to_le_bytes());
    bytes[e + 16..e + 18].copy_from_slice(b"..");
    reseal(&mut bytes, chunk);
    let bad = work.path().join("bad");
    fs::write(&bad, &bytes).unwrap();
    let (code, out) = fsck(&bad, &["-n"]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("entry \"..\" is . or .., which no directory stores"),
        "{out}"
    );
    assert_found_and_repaired(work.path(), "a stored \"..\" entry", &bytes);
}

/// Damage only the shared verifiers (`format::dirblock`, `format::xattrblock`,
/// `format::inode::symlink_problem`, through `verify::inode`) see, each with a valid CRC: the
/// checker found none of it before (a name block's `live` undercounting its names would free the
/// block under the entries still pointing into it; an xattr count that hides an attribute; a
/// symlink whose size disagrees with its target), and the repair acts on the same verdict: the
/// directory rebuilt with every name, the symlink's size set back, the attributes stored anew
/// from those that can be read.
#[test]
fn damage_the_shared_verifiers_see_is_found_and_repaired_alike() {
    use std::os::unix::fs::MetadataExt;
    use ticketfs::format::inode::{ino_split, slot_range, Inode};
    use ticketfs::format::{dirblock, record_fields, xattrblock};
    let work = tempfile::tempdir().unwrap();
    let img = fresh_image(work.path());
    let m = Mount::new(&img, "");
    let r = m.path();
    fs::create_dir(r.join("d")).unwrap();
    let names: Vec<String> = (0..200)
        .map(|i| format!("a-fairly-long-name-{i:04}"))
        .collect();
    for n in &names {
        fs::write(r.join("d").join(n), b"x").unwrap();
    }
    let target = "t".repeat(400);
    std::os::unix::fs::symlink(&target, r.join("link")).unwrap();
    let link_ino = fs::symlink_metadata(r.join("link")).unwrap().ino();
    let dir_ino = fs::metadata(r.join("d")).unwrap().ino();
    fs::write(r.join("f"), b"data").unwrap();
    let file_ino = fs::metadata(r.join("f")).unwrap().ino();
    for (n, v) in [("user.one", "1"), ("user.two", "22")] {
        setx(&r.join("f"), n, v.as_bytes(), 0).unwrap();
    }
    m.unmount();
    let pristine = fs::read(&img).unwrap();
    let kinds = blocks_by_type(&pristine);
    let set_u16 =
        |b: &mut Vec<u8>, at: usize, v: u16| b[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let set_u32 =
        |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());

    // A name block counting one name fewer than point into it.
    let nb = kinds[&BlockType::DirData][0];
    let mut live_low = pristine.clone();
    let at = nb * BS + dirblock::LIVE_OFF;
    let live = u32::from_le_bytes(live_low[at..at + 4].try_into().unwrap());
    set_u32(&mut live_low, at, live - 1);
    reseal(&mut live_low, nb);
    // Its free offset moved back over the last name (the next name would overwrite it).
    let mut free_low = pristine.clone();
    let at = nb * BS + dirblock::FREE_OFF;
    let free = u32::from_le_bytes(free_low[at..at + 4].try_into().unwrap());
    set_u32(&mut free_low, at, free - 3);
    reseal(&mut free_low, nb);
    // An xattr block whose count hides its second attribute.
    let xb = kinds[&BlockType::Xattr][0];
    let mut hidden = pristine.clone();
    set_u16(&mut hidden, xb * BS + xattrblock::COUNT_OFF, 1);
    reseal(&mut hidden, xb);
    // A symlink whose size is not its target's length.
    let (chunk, slot) = ino_split(link_ino);
    let (chunk, range) = (chunk as usize, slot_range(slot));
    let base = chunk * BS + range.start;
    let (_, reads) = record_fields(|| {
        Inode::decode(
            &pristine[chunk * BS..][range.clone()],
            chunk as u64,
            link_ino,
        )
        .unwrap()
    });
    let size = reads
        .iter()
        .find(|f| f.field == "size")
        .expect("the inode's size field");
    let mut long_size = pristine.clone();
    long_size[base + size.off..base + size.off + 8].copy_from_slice(&4000u64.to_le_bytes());
    reseal(&mut long_size, chunk);

    for (what, bytes) in [
        ("a name block's live count one low", &live_low),
        ("a name block's free offset over its last name", &free_low),
        ("an xattr count hiding an attribute", &hidden),
        ("a symlink's size past its target", &long_size),
    ] {
        // `ticketfs db` shows the verdict fsck acts on.
        let (ino, fault) = match what {
            w if w.starts_with("a name block") => (dir_ino, "directory: "),
            w if w.starts_with("an xattr") => (file_ino, "xattrs: "),
            _ => (link_ino, "symlink size 4000"),
        };
        fs::write(work.path().join("bad"), bytes).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_ticketfs"))
            .arg("db")
            .arg(work.path().join("bad"))
            .args(["inode", &ino.to_string()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains(&format!("verdict: {fault}")),
            "{what}: db inode {ino}:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_found_and_repaired(work.path(), what, bytes);
        // What the repair kept: every name, the link's target.
        let m = Mount::new(&work.path().join("bad"), "");
        let mut listed: Vec<String> = fs::read_dir(m.path().join("d"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        listed.sort();
        assert_eq!(listed, names, "{what}: the directory after the repair");
        assert_eq!(
            fs::read_link(m.path().join("link"))
                .unwrap()
                .to_str()
                .unwrap(),
            target,
            "{what}: the link after the repair"
        );
        assert_eq!(
            fs::symlink_metadata(m.path().join("link")).unwrap().len(),
            400,
            "{what}: the link's size after the repair"
        );
        m.unmount();
    }
}

/// An inode's flags field with a bit this version does not know, or with a directory's flag
/// (project inheritance) on a file, CRC valid: the checker names it (and `ticketfs db` shows the
/// verdict); the repair keeps the flags that are right (nodump here) and the project ID.
#[test]
fn a_damaged_flags_field_is_found_and_repaired() {
    use std::os::unix::fs::MetadataExt;
    use ticketfs::format::inode::{ino_split, slot_range, Inode};
    use ticketfs::format::record_fields;
    let work = tempfile::tempdir().unwrap();
    let img = fresh_image(work.path());
    let m = Mount::new(&img, "");
    let f = m.path().join("f");
    fs::write(&f, b"data").unwrap();
    let st = Command::new("chattr").arg("+d").arg(&f).status().unwrap();
    assert!(st.success(), "chattr +d");
    let st = Command::new("xfs_io")
        .args(["-c", "chproj 3"])
        .arg(&f)
        .status()
        .unwrap();
    assert!(st.success(), "xfs_io chproj");
    let ino = fs::metadata(&f).unwrap().ino();
    m.unmount();
    let pristine = fs::read(&img).unwrap();
    let (chunk, slot) = ino_split(ino);
    let (chunk, range) = (chunk as usize, slot_range(slot));
    let (i, reads) = record_fields(|| {
        Inode::decode(&pristine[chunk * BS..][range.clone()], chunk as u64, ino).unwrap()
    });
    assert_eq!((i.flags, i.projid), (0x10, 3), "nodump, project 3");
    let at = chunk * BS
        + range.start
        + reads
            .iter()
            .find(|r| r.field == "flags")
            .expect("the inode's flags field")
            .off;
    for (what, flags, verdict) in [
        (
            "an unknown flag bit",
            0x10 | 1 << 20,
            "verdict: flags 0x100010 have unknown bits 0x100000",
        ),
        (
            "a directory's flag on a file",
            0x10 | 0x20,
            "verdict: flags 0x30 have a directory's flag 0x20 on a non-directory",
        ),
    ] {
        let mut bytes = pristine.clone();
        bytes[at..at + 4].copy_from_slice(&(flags as u32).to_le_bytes());
        reseal(&mut bytes, chunk);
        let bad = work.path().join("bad");
        fs::write(&bad, &bytes).unwrap();
        let (code, out) = fsck(&bad, &["-n"]);
        assert_eq!(code, 4, "{what}: fsck -n exit {code}:\n{out}");
        assert!(
            out.contains(&format!("inode {ino}: flags {flags:#x}")),
            "{what}:\n{out}"
        );
        let db = Command::new(env!("CARGO_BIN_EXE_ticketfs"))
            .arg("db")
            .arg(&bad)
            .args(["inode", &ino.to_string()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&db.stdout);
        assert!(text.contains(verdict), "{what}: db inode {ino}:\n{text}");
        assert!(
            text.contains("project 3"),
            "{what}: db inode {ino}:\n{text}"
        );
        assert_found_and_repaired(work.path(), what, &bytes);
        let repaired = fs::read(&bad).unwrap();
        let i = Inode::decode(&repaired[chunk * BS..][range.clone()], chunk as u64, ino).unwrap();
        assert_eq!((i.flags, i.projid), (0x10, 3), "{what}: after the repair");
    }
}

/// A block two files map: the checker names both owners (the first found again by a second
/// walk, since it keeps no owner per inode block), and the repair clears the later file.
#[test]
fn a_block_two_files_map_names_both_owners() {
    use std::os::unix::fs::MetadataExt;
    use ticketfs::format::inode::{ino_split, slot_range, Inode, FORK_OFFSET};
    let work = tempfile::tempdir().unwrap();
    let img = fresh_image(work.path());
    let m = Mount::new(&img, "");
    fs::write(m.path().join("a"), vec![b'a'; 4096]).unwrap();
    fs::write(m.path().join("b"), vec![b'b'; 4096]).unwrap();
    let a = fs::metadata(m.path().join("a")).unwrap().ino();
    let b = fs::metadata(m.path().join("b")).unwrap().ino();
    m.unmount();
    let mut bytes = fs::read(&img).unwrap();
    let inode_at = |bytes: &[u8], ino: u64| {
        let (chunk, slot) = ino_split(ino);
        let base = chunk as usize * BS + slot_range(slot).start;
        let i = Inode::decode(&bytes[base..base + slot_range(slot).len()], chunk, ino).unwrap();
        (chunk as usize, base, i)
    };
    let (_, _, ia) = inode_at(&bytes, a);
    let (chunk_b, base_b, ib) = inode_at(&bytes, b);
    let (ea, eb) = (ia.extents()[0], ib.extents()[0]);
    // b's one extent: file block 0, start, len, flags: start moved onto a's block.
    let at = base_b + FORK_OFFSET + 8;
    assert_eq!(
        u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()),
        eb.start
    );
    bytes[at..at + 8].copy_from_slice(&ea.start.to_le_bytes());
    reseal(&mut bytes, chunk_b);
    let bad = work.path().join("bad");
    fs::write(&bad, &bytes).unwrap();
    let (code, out) = fsck(&bad, &["-n"]);
    assert_eq!(code, 4, "{out}");
    let want = format!(
        "block {} is both file data of inode {a} and file data of inode {b}",
        ea.start
    );
    assert!(out.contains(&want), "wanted {want:?} in:\n{out}");
    assert_found_and_repaired(work.path(), "a block two files map", &bytes);
    let m = Mount::new(&bad, "");
    assert_eq!(fs::read(m.path().join("a")).unwrap(), vec![b'a'; 4096]);
    m.unmount();
}

// ---- Field fuzzing (issue 19, item 3) ----
//
// Every field each decoder reads (recorded by `format::record_fields` while it decodes a real
// instance: the superblock, each block type's header, the AG header, a node of each B+tree, a
// directory, a file and a B+tree-mapped file's inode and inline extents, the log record recovery
// starts from) is set to zeroes, ones, +1, -1, a random value and its high bit, with the CRC made
// valid again so that only the field's meaning is wrong. Each damaged image is mounted and
// walked, checked as fsck -n does, and when the check finds something repaired as fsck -y does
// and checked again. Outcomes: detected (found, and the first repair leaves it clean), harmless
// (not found, and users see exactly what they saw), missed (not found, and something users see
// changed), and the failures: a panic, a hang, or a repair that does not converge.

/// How to make a damaged structure's checksum valid again.
#[derive(Clone, Copy, Debug)]
enum Seal {
    Superblock,
    Block(usize),
    LogRecord(usize),
}

#[derive(Clone, Debug)]
struct Site {
    structure: String,
    field: &'static str,
    /// Where in the image, and where in its structure.
    at: usize,
    rel: usize,
    len: usize,
    seal: Seal,
}

const FUZZ_VALUES: [&str; 6] = ["zeroes", "ones", "+1", "-1", "random", "high bit"];

/// The fields of every structure in `img`, as its decoder reads them; of a field read many
/// times (records of a node, free-list slots) the first and the last.
fn field_sites(img: &[u8]) -> Vec<Site> {
    use ticketfs::btree::Node;
    use ticketfs::format::ag::AgHeader;
    use ticketfs::format::inode::symlink_block_target;
    use ticketfs::format::inode::{
        ino_of, inodes_per_block, slot_range, DataFormat, Inode, CHUNK_SLOTS_OFFSET, FORK_OFFSET,
    };
    use ticketfs::format::log::{RecordHeader, LOG_RECORD_MAGIC};
    use ticketfs::format::{attrtree, dirblock, record_fields, xattrblock, FieldRead, Superblock};
    let sb = Superblock::decode(&img[..BS], 0).unwrap();
    let g = sb.geometry;
    let mut out: Vec<Site> = Vec::new();
    let mut add = |structure: String, base: usize, reads: Vec<FieldRead>, seal: Seal| {
        let mut seen: BTreeMap<&'static str, Vec<FieldRead>> = BTreeMap::new();
        for r in reads {
            if r.field.contains("crc") {
                continue;
            }
            let v = seen.entry(r.field).or_default();
            if !v.iter().any(|x| x.off == r.off) {
                v.push(r);
            }
        }
        for (_, v) in seen {
            // The first, the middle and the last of a field read many times.
            let mut pick = vec![v[0].clone()];
            if v.len() > 2 {
                pick.push(v[v.len() / 2].clone());
            }
            if v.len() > 1 {
                pick.push(v[v.len() - 1].clone());
            }
            for r in pick {
                out.push(Site {
                    structure: structure.clone(),
                    field: r.field,
                    at: base + r.off,
                    rel: r.off,
                    len: r.len,
                    seal,
                });
            }
        }
    };
    let (_, reads) = record_fields(|| Superblock::decode(&img[..BS], 0));
    add("superblock".into(), 0, reads, Seal::Superblock);
    for (t, blocks) in blocks_by_type(img) {
        let n = blocks[0];
        let b = &img[n * BS..(n + 1) * BS];
        let (_, reads) = record_fields(|| BlockHeader::verify(b, n as u64, Some(t), &sb.uuid));
        add(
            format!("block header ({})", t.name()),
            n * BS,
            reads,
            Seal::Block(n),
        );
        match t {
            BlockType::AgHeader => {
                let len = g.ag_blocks.min(g.block_count);
                let (_, reads) = record_fields(|| AgHeader::decode(b, n as u64, 0, 0, len));
                add("AG header".into(), n * BS, reads, Seal::Block(n));
            }
            BlockType::BtreeBno
            | BlockType::BtreeCnt
            | BlockType::BtreeIno
            | BlockType::BtreeExtent
            | BlockType::BtreeDir
            | BlockType::BtreeAttr => {
                let (_, reads) = record_fields(|| Node::check_structure(b, n as u64));
                add(
                    format!("B+tree node ({})", t.name()),
                    n * BS,
                    reads,
                    Seal::Block(n),
                );
            }
            BlockType::DirData => {
                // The records the tree points at: in this image (no name ever removed), every
                // record from the first to `free_off`.
                let end = dirblock::free_off(b, n as u64).unwrap();
                let mut offs = Vec::new();
                let mut at = dirblock::NAME_HDR;
                while at < end {
                    offs.push(at);
                    at += dirblock::RECORD_HDR + b[at] as usize;
                }
                let (r, reads) =
                    record_fields(|| dirblock::check_name_block(b, n as u64, &mut offs));
                r.expect("the pristine name block passes");
                add("directory name block".into(), n * BS, reads, Seal::Block(n));
            }
            BlockType::Xattr => {
                let (r, reads) = record_fields(|| xattrblock::decode(b, n as u64).map(|_| ()));
                r.expect("the pristine xattr block passes");
                add("xattr block".into(), n * BS, reads, Seal::Block(n));
            }
            BlockType::AttrEntries => {
                // As a name block: no attribute of `populated` was ever removed or replaced, so
                // every record up to `free_off` is live.
                let end = attrtree::free_off(b, n as u64).unwrap();
                let mut offs = Vec::new();
                let mut at = attrtree::RECORDS_OFF;
                while at < end {
                    offs.push(at);
                    at += attrtree::record(b, n as u64, at).unwrap().bytes();
                }
                let (r, reads) =
                    record_fields(|| attrtree::check_entry_block(b, n as u64, &mut offs));
                r.expect("the pristine entry block passes");
                add("xattr entry block".into(), n * BS, reads, Seal::Block(n));
            }
            BlockType::AttrRemote => {
                // The first block of `populated`'s one remote value, of 64 KiB.
                let (r, reads) =
                    record_fields(|| attrtree::remote_data(b, n as u64, 0, 65536).map(|_| ()));
                r.expect("the pristine remote block passes");
                add("xattr remote block".into(), n * BS, reads, Seal::Block(n));
            }
            BlockType::Symlink => {
                // Its inode says how long the target is: 400 bytes ("longlink" in `populated`).
                let (r, reads) =
                    record_fields(|| symlink_block_target(b, n as u64, 400).map(|_| ()));
                r.expect("the pristine symlink block reads");
                add("symlink block".into(), n * BS, reads, Seal::Block(n));
            }
            BlockType::InodeChunk => {
                // A directory, an extent-list file and a B+tree file, wherever they are.
                let mut want = vec![
                    "directory",
                    "file with an extent list",
                    "file with an extent tree",
                ];
                for &c in &blocks {
                    let cb = &img[c * BS..(c + 1) * BS];
                    for slot in 0..inodes_per_block(BS as u32) {
                        let r = slot_range(slot);
                        let Ok(i) = Inode::decode(&cb[r.clone()], c as u64, ino_of(c as u64, slot))
                        else {
                            continue;
                        };
                        let kind = match (i.mode & 0o170000, i.format) {
                            (0o040000, _) => "directory",
                            (0o100000, DataFormat::Extents) if i.nextents > 0 => {
                                "file with an extent list"
                            }
                            (0o100000, DataFormat::Btree) => "file with an extent tree",
                            _ => continue,
                        };
                        let Some(k) = want.iter().position(|w| *w == kind) else {
                            continue;
                        };
                        want.remove(k);
                        let base = c * BS + r.start;
                        let ((), reads) = record_fields(|| {
                            let _ = Inode::decode(&cb[r.clone()], c as u64, 0);
                        });
                        add(format!("inode ({kind})"), base, reads, Seal::Block(c));
                        if kind == "file with an extent list" {
                            let (_, reads) = record_fields(|| i.extents());
                            add(
                                "inline extents".into(),
                                base + FORK_OFFSET,
                                reads,
                                Seal::Block(c),
                            );
                        }
                    }
                }
                let _ = CHUNK_SLOTS_OFFSET;
            }
        }
    }
    // The log record recovery starts from: the one of the highest sequence number.
    let mut best: Option<(u64, usize)> = None;
    for i in 0..g.log_blocks as usize {
        let n = g.log_start as usize + i;
        let b = &img[n * BS..(n + 1) * BS];
        if b[..4] != LOG_RECORD_MAGIC.to_le_bytes() {
            continue;
        }
        if let Ok(h) = RecordHeader::decode(b, n as u64, i as u32, None, &sb.uuid, g.log_blocks) {
            if best.is_none_or(|(s, _)| h.seq > s) {
                best = Some((h.seq, n));
            }
        }
    }
    let (_, n) = best.expect("a log record");
    let i = n - g.log_start as usize;
    let b = &img[n * BS..(n + 1) * BS];
    let (_, reads) =
        record_fields(|| RecordHeader::decode(b, n as u64, i as u32, None, &sb.uuid, g.log_blocks));
    add(
        "log record header".into(),
        n * BS,
        reads,
        Seal::LogRecord(n),
    );
    out
}

/// `img` with the field at `site` set to value `kind` (None when that is its value already).
fn damaged(img: &[u8], site: &Site, kind: &str, seed: u64) -> Option<Vec<u8>> {
    use ticketfs::format::log::RecordHeader;
    use ticketfs::format::Superblock;
    let mut bytes = img.to_vec();
    let f = &mut bytes[site.at..site.at + site.len];
    let old = f.to_vec();
    let as_int = |f: &[u8]| f.iter().rev().fold(0u128, |a, &b| a << 8 | b as u128);
    let set_int = |f: &mut [u8], v: u128| {
        for (i, b) in f.iter_mut().enumerate() {
            *b = (v >> (8 * i)) as u8;
        }
    };
    let mut x = seed ^ (site.at as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    match kind {
        "zeroes" => f.fill(0),
        "ones" => f.fill(0xff),
        "+1" if site.len <= 8 => set_int(f, as_int(f).wrapping_add(1)),
        "-1" if site.len <= 8 => set_int(f, as_int(f).wrapping_sub(1)),
        "+1" => f[0] = f[0].wrapping_add(1),
        "-1" => f[0] = f[0].wrapping_sub(1),
        "random" => {
            for b in f.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
        }
        "high bit" => {
            let last = f.len() - 1;
            f[last] |= 0x80;
        }
        _ => unreachable!("{kind}"),
    }
    if *f == old[..] {
        return None;
    }
    match site.seal {
        Seal::Superblock => Superblock::reseal(&mut bytes[..BS]),
        Seal::Block(n) => {
            reseal(&mut bytes, n);
        }
        Seal::LogRecord(n) => RecordHeader::reseal(&mut bytes[n * BS..]),
    }
    Some(bytes)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Detected,
    Harmless,
    Missed(String),
    Panic(String),
    Hang,
    NotRepaired(String),
}

impl Outcome {
    fn letter(&self) -> &'static str {
        match self {
            Outcome::Detected => "D",
            Outcome::Harmless => "H",
            Outcome::Missed(_) => "M",
            Outcome::Panic(_) => "PANIC",
            Outcome::Hang => "HANG",
            Outcome::NotRepaired(_) => "NR",
        }
    }
}

/// What fsck -n would find in `dev` (the superblock copies, the log, the checker), replaying
/// the log into `dev` as its overlay does; None when nothing.
fn fsck_n_finds(dev: &std::sync::Arc<dyn ticketfs::device::Device>) -> Option<String> {
    use ticketfs::log::{recover, Damage};
    use ticketfs::sbselect::{choose, SbCopy};
    use ticketfs::{Engine, EngineOptions};
    let c = match choose(&**dev, SbCopy::Auto) {
        Ok(c) => c,
        Err(e) => return Some(format!("superblock: {e}")),
    };
    if let Some((b, why)) = c.others.first() {
        return Some(format!("superblock copy at {b}: {why}"));
    }
    match recover(&**dev, &c.sb, Damage::Accept) {
        Err(e) => return Some(format!("log: {e}")),
        Ok(r) if r.damaged.is_some() => return Some(format!("log: {:?}", r.damaged)),
        Ok(_) => {}
    }
    let eng = match Engine::mount(dev.clone(), EngineOptions::default()) {
        Ok(e) => e,
        Err(e) => return Some(format!("mount: {e}")),
    };
    let r = ticketfs::check::check(&eng, &mut |_, _, _| {});
    eng.crash();
    match r {
        Err(e) => Some(format!("check: {e}")),
        Ok(r) if r.problem_count() > 0 => Some(format!(
            "{} problems, first: {:?}",
            r.problem_count(),
            r.problems.first().map(|p| &p.what)
        )),
        Ok(_) => None,
    }
}

/// Judges one damaged image (see the comment above `Seal`).
fn judge(bytes: Vec<u8>, pristine_view: &[String]) -> Outcome {
    use std::sync::Arc;
    use ticketfs::device::{Device, MemDevice};
    use ticketfs::log::{recover, Damage};
    use ticketfs::sbselect::{choose, SbCopy};
    let mem =
        |b: &[u8]| -> Arc<dyn Device> { Arc::new(MemDevice::from_bytes(BS as u32, b.to_vec())) };
    mount_check_and_walk(bytes.clone());
    let found = fsck_n_finds(&mem(&bytes));
    let Some(_) = found else {
        let dev = mem(&bytes);
        if let Ok(sb) = ticketfs::engine::read_superblock(&*dev) {
            let _ = recover(&*dev, &sb, Damage::Accept);
        }
        return match user_view(dev) {
            Some(v) if v == pristine_view => Outcome::Harmless,
            Some(v) => Outcome::Missed(
                v.iter()
                    .chain(pristine_view)
                    .find(|l| !(v.contains(l) && pristine_view.contains(l)))
                    .cloned()
                    .unwrap_or_default(),
            ),
            None => Outcome::Missed("does not mount or walk".into()),
        };
    };
    // fsck -y: the superblock copies, the log, the repair; then fsck -n again.
    let dev = mem(&bytes);
    let c = match choose(&*dev, SbCopy::Auto) {
        Ok(c) => c,
        Err(e) => return Outcome::NotRepaired(format!("superblock: {e}")),
    };
    let mut buf = ticketfs::device::AlignedBuf::new(BS);
    for b in [0, c.sb.geometry.backup_sb_blkno()] {
        c.sb.encode(&mut buf, b);
        dev.write(b, &buf).unwrap();
    }
    if let Err(e) = recover(&*dev, &c.sb, Damage::Accept) {
        return Outcome::NotRepaired(format!("log: {e}"));
    }
    if let Err(e) = ticketfs::repair::repair(dev.clone(), &mut |_, _, _| {}) {
        return Outcome::NotRepaired(format!("repair: {e}"));
    }
    match fsck_n_finds(&dev) {
        None => Outcome::Detected,
        Some(left) => Outcome::NotRepaired(format!("after -y: {left}")),
    }
}

/// Runs `judge` on its own thread: a panic and a hang (120 s) are outcomes, not test crashes.
fn judge_guarded(bytes: Vec<u8>, view: Arc<Vec<String>>) -> Outcome {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| judge(bytes, &view)));
        let _ = tx.send(match r {
            Ok(o) => o,
            Err(p) => Outcome::Panic(
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default(),
            ),
        });
    });
    rx.recv_timeout(std::time::Duration::from_secs(120))
        .unwrap_or(Outcome::Hang)
}

use std::sync::Arc;

/// The field fuzz: with FIELD_FUZZ=all every value of every field (scripts/field-fuzz.sh prints
/// the table docs/design.md holds), else one value per field, rotating (the CI sample). No
/// panic, no hang, every repair converging; the table is printed either way.
#[test]
fn every_field_of_every_structure_fuzzed() {
    use std::sync::Arc;
    use ticketfs::device::MemDevice;
    let base = fuzz_base();
    let view = Arc::new(
        user_view(Arc::new(MemDevice::from_bytes(BS as u32, base.clone()))).expect("pristine view"),
    );
    let sites = field_sites(base);
    let all = std::env::var("FIELD_FUZZ").is_ok_and(|v| v == "all");
    let mut rows: Vec<(String, String, Vec<String>)> = Vec::new();
    let mut failures = Vec::new();
    let mut missed = Vec::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (si, site) in sites.iter().enumerate() {
        let mut cells = Vec::new();
        for (vi, kind) in FUZZ_VALUES.iter().enumerate() {
            if !all && vi != si % FUZZ_VALUES.len() {
                cells.push(String::new());
                continue;
            }
            let Some(bytes) = damaged(base, site, kind, 20261203) else {
                cells.push("=".into());
                continue;
            };
            let o = judge_guarded(bytes, view.clone());
            *counts.entry(o.letter()).or_default() += 1;
            let what = format!(
                "{} {} (byte {}) = {kind}",
                site.structure, site.field, site.at
            );
            match &o {
                Outcome::Missed(d) => missed.push(format!("{what}: {d}")),
                Outcome::Panic(_) | Outcome::Hang | Outcome::NotRepaired(_) => {
                    failures.push(format!("{what}: {o:?}"))
                }
                _ => {}
            }
            cells.push(o.letter().into());
        }
        rows.push((
            site.structure.clone(),
            format!("{} @{}", site.field, site.rel),
            cells,
        ));
    }
    println!(
        "| structure | field @offset | {} |",
        FUZZ_VALUES.join(" | ")
    );
    println!("|---|---|{}", "---|".repeat(FUZZ_VALUES.len()));
    for (s, f, cells) in &rows {
        println!("| {s} | {f} | {} |", cells.join(" | "));
    }
    println!("fields {} outcomes {counts:?}", sites.len());
    for m in &missed {
        println!("missed: {m}");
    }
    for f in &failures {
        println!("FAILED: {f}");
    }
    assert!(sites.len() > 100, "only {} fields found", sites.len());
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Damage to the attribute tree's blocks that only the shared verifiers (`format::attrtree`,
/// through `xattr::blocks` and `verify::inode`) see, each with a valid CRC: an entry block's live
/// count one low (the block would be freed under a record in use), a record's REMOTE flag
/// cleared (its value's length says remote), a remote block's value offset moved, a remote block
/// claiming another owner. fsck -n finds each, fsck -y stores anew the attributes still intact,
/// and the image is clean after.
#[test]
fn damage_to_the_attribute_tree_is_found_and_repaired() {
    use ticketfs::format::attrtree;
    let work = tempfile::tempdir().unwrap();
    let img = populated(work.path());
    let pristine = fs::read(&img).unwrap();
    let kinds = blocks_by_type(&pristine);
    let set_u32 =
        |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let eb = kinds[&BlockType::AttrEntries][0];
    let mut live_low = pristine.clone();
    let at = eb * BS + attrtree::LIVE_OFF;
    let live = u32::from_le_bytes(live_low[at..at + 4].try_into().unwrap());
    set_u32(&mut live_low, at, live - 1);
    reseal(&mut live_low, eb);
    // The entry block holding the 64 KiB value's record: its REMOTE flag cleared.
    let (rb, roff) = kinds[&BlockType::AttrEntries]
        .iter()
        .find_map(|&b| {
            let blk = &pristine[b * BS..(b + 1) * BS];
            let end = attrtree::free_off(blk, b as u64).ok()?;
            let mut off = attrtree::RECORDS_OFF;
            while off < end {
                let r = attrtree::record(blk, b as u64, off).ok()?;
                if r.value_len == 65536 {
                    return Some((b, off));
                }
                off += r.bytes();
            }
            None
        })
        .expect("the entry block of the 64 KiB value");
    let mut flag = pristine.clone();
    flag[rb * BS + roff + 1] = 0;
    reseal(&mut flag, rb);
    let xr = kinds[&BlockType::AttrRemote][1];
    let mut moved = pristine.clone();
    set_u32(&mut moved, xr * BS + attrtree::REMOTE_VALUE_OFF, 0);
    reseal(&mut moved, xr);
    let mut owner = pristine.clone();
    owner[xr * BS + 16..xr * BS + 24].copy_from_slice(&12345u64.to_le_bytes());
    reseal(&mut owner, xr);
    for (what, bytes) in [
        ("an entry block's live count one low", &live_low),
        ("a remote record's flag cleared", &flag),
        ("a remote block's value offset moved", &moved),
        ("a remote block of another owner", &owner),
    ] {
        fs::write(work.path().join("bad"), bytes).unwrap();
        let (code, out) = fsck(&work.path().join("bad"), &["-n"]);
        assert!(
            code == 4 && out.contains("xattrs: "),
            "{what}: exit {code}\n{out}"
        );
        assert_found_and_repaired(work.path(), what, bytes);
    }
}

/// A POSIX ACL the kernel would refuse (here version 3), in an xattr block whose CRC is valid:
/// the checker names the attribute and why, and the repair drops that attribute (the mode, whose
/// group bits held the mask, no wider than the list gave: see a_dropped_acl_does_not_widen_the_mode).
#[test]
fn an_invalid_posix_acl_is_named_by_check_and_dropped_by_repair() {
    let work = tempfile::tempdir().unwrap();
    let img = fresh_image(work.path());
    let m = Mount::new(&img, "");
    let f = m.path().join("f");
    fs::write(&f, b"x").unwrap();
    let st = Command::new("setfacl")
        .args(["-m", "u:nobody:r"])
        .arg(&f)
        .status()
        .expect("setfacl (Debian's acl)");
    assert!(st.success());
    m.unmount();
    let mut bytes = fs::read(&img).unwrap();
    let name = b"system.posix_acl_access";
    let xa = blocks_by_type(&bytes)[&BlockType::Xattr][0];
    let b = &bytes[xa * BS..(xa + 1) * BS];
    let at = b
        .windows(name.len())
        .position(|w| w == name)
        .expect("the ACL in the xattr block");
    let value = xa * BS + at + name.len();
    assert_eq!(bytes[value..value + 4], 2u32.to_le_bytes(), "ACL version 2");
    bytes[value..value + 4].copy_from_slice(&3u32.to_le_bytes());
    reseal(&mut bytes, xa);
    let bad = work.path().join("bad");
    fs::write(&bad, &bytes).unwrap();
    let (code, out) = fsck(&bad, &["-n"]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("system.posix_acl_access: version 3, not 2"),
        "{out}"
    );
    assert_found_and_repaired(work.path(), "an invalid POSIX ACL", &bytes);
}

/// What a user sees of file `name` in the root of image `img` (read through the library on a
/// copy in memory): its mode, contents and every attribute with its value.
fn file_seen(img: &Path, name: &str) -> (u32, Vec<u8>, BTreeMap<String, Vec<u8>>) {
    use ticketfs::device::{Device, MemDevice};
    use ticketfs::fs::{Ctx, Fs};
    use ticketfs::{Engine, EngineOptions};
    let dev: Arc<dyn Device> = Arc::new(MemDevice::from_bytes(BS as u32, fs::read(img).unwrap()));
    let fs = Fs::new(Engine::mount(dev, EngineOptions::default()).unwrap(), true).unwrap();
    let a = fs
        .lookup(&Ctx::ROOT, fs.root(), name.as_bytes())
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    let body = fs.read(a.ino, 0, a.size as usize).unwrap();
    let mut attrs = BTreeMap::new();
    for n in fs.listxattr(&Ctx::ROOT, a.ino).unwrap().split(|&c| c == 0) {
        if !n.is_empty() {
            let v = fs.getxattr(&Ctx::ROOT, a.ino, n).unwrap();
            attrs.insert(String::from_utf8_lossy(n).into_owned(), v);
        }
    }
    fs.crash();
    (a.mode, body, attrs)
}

/// Where inode `ino`'s slot is in the image: its chunk block and the slot's first byte.
fn inode_at(ino: u64) -> (usize, usize) {
    use ticketfs::format::inode::{ino_split, slot_range};
    let (chunk, slot) = ino_split(ino);
    (chunk as usize, chunk as usize * BS + slot_range(slot).start)
}

/// The attributes `populated` gives its file "attrs" (a tree with entry blocks and one 64 KiB
/// remote value, number 7).
fn populated_attrs() -> BTreeMap<String, Vec<u8>> {
    (0..400)
        .map(|i| {
            let v = if i == 7 {
                vec![7u8; 65536]
            } else {
                vec![i as u8; i % 40]
            };
            (format!("user.attribute-{i:04}"), v)
        })
        .collect()
}

/// An invalid attribute form (inode byte 130), or a form, level and root that do not go together
/// (the block form with a tree level), CRC made valid: the inode cannot be decoded as a whole,
/// and it used to be cleared with its data. Now the checker names the inode's attribute fields,
/// and the repair resets only them (no attributes): the file keeps its name, mode and contents,
/// and the blocks of the attribute tree it loses are counted free again (fsck -n is clean after:
/// nothing leaked).
#[test]
fn damaged_attribute_fields_cost_the_attributes_not_the_file() {
    use std::os::unix::fs::MetadataExt;
    let work = tempfile::tempdir().unwrap();
    let img = populated(work.path());
    let m = Mount::new(&img, "");
    let attrs_ino = fs::metadata(m.path().join("attrs")).unwrap().ino();
    let small = m.path().join("small");
    fs::write(&small, b"kept contents").unwrap();
    fs::set_permissions(&small, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    setx(&small, "user.one", b"1", 0).unwrap();
    let small_ino = fs::metadata(&small).unwrap().ino();
    m.unmount();
    let pristine = fs::read(&img).unwrap();
    for (what, ino, name, off, value, field) in [
        (
            "an attribute form of 7",
            attrs_ino,
            "attrs",
            130,
            7u8,
            "xattr_form",
        ),
        (
            "the block form with a tree level",
            small_ino,
            "small",
            131,
            1,
            "xattr_level",
        ),
    ] {
        let (before_mode, before_body, _) = file_seen(&img, name);
        let (chunk, at) = inode_at(ino);
        let mut bytes = pristine.clone();
        bytes[at + off] = value;
        reseal(&mut bytes, chunk);
        let bad = work.path().join("bad");
        fs::write(&bad, &bytes).unwrap();
        let (code, out) = fsck(&bad, &["-n"]);
        assert_eq!(code, 4, "{what}: fsck -n exit {code}:\n{out}");
        assert!(
            out.contains(&format!("inode {ino}: xattrs: attribute fields: "))
                && out.contains(&format!("inode.{field}: inode {ino}: ")),
            "{what}:\n{out}"
        );
        assert_found_and_repaired(work.path(), what, &bytes);
        let (mode, body, attrs) = file_seen(&bad, name);
        assert_eq!(
            (mode, body),
            (before_mode, before_body),
            "{what}: the file after the repair"
        );
        assert!(attrs.is_empty(), "{what}: attributes left: {attrs:?}");
    }
}

/// One damaged attribute among many, CRC valid: a record of the attribute tree with an unknown
/// flag, the 64 KiB value's remote block claiming another place in the value, going on in an
/// entry block or saying the rest of its (complete) value is unwritten, a local record flagged
/// INCOMPLETE, an entry of an xattr block with a name in no namespace. Each used to drop every attribute of the inode; the
/// repair now drops that one and stores the others anew, values intact.
#[test]
fn one_damaged_attribute_costs_only_itself() {
    use std::os::unix::fs::MetadataExt;
    use ticketfs::format::attrtree;
    let work = tempfile::tempdir().unwrap();
    let img = populated(work.path());
    let m = Mount::new(&img, "");
    let small = m.path().join("small");
    fs::write(&small, b"x").unwrap();
    for (n, v) in [
        ("user.a", "first"),
        ("user.b", "second"),
        ("user.c", "third"),
    ] {
        setx(&small, n, v.as_bytes(), 0).unwrap();
    }
    let small_ino = fs::metadata(&small).unwrap().ino();
    m.unmount();
    let pristine = fs::read(&img).unwrap();
    let kinds = blocks_by_type(&pristine);
    let all = populated_attrs();

    // A record of the tree (not the 64 KiB one) with an unknown flag.
    let (eb, roff, victim) = kinds[&BlockType::AttrEntries]
        .iter()
        .find_map(|&b| {
            let blk = &pristine[b * BS..(b + 1) * BS];
            let r = attrtree::record(blk, b as u64, attrtree::RECORDS_OFF).ok()?;
            (r.value_len != 65536).then(|| {
                (
                    b,
                    attrtree::RECORDS_OFF,
                    String::from_utf8_lossy(r.name).into_owned(),
                )
            })
        })
        .expect("an entry block");
    let mut flag = pristine.clone();
    flag[eb * BS + roff + 1] |= 0x80;
    reseal(&mut flag, eb);
    // The second remote block of the 64 KiB value says it holds the first part.
    let xr = kinds[&BlockType::AttrRemote][1];
    let mut moved = pristine.clone();
    moved[xr * BS + attrtree::REMOTE_VALUE_OFF..][..4].copy_from_slice(&0u32.to_le_bytes());
    reseal(&mut moved, xr);
    // A remote block of the 64 KiB value going on in an entry block; another saying the rest of
    // its complete value is unwritten (the mark of a set cut short).
    let next_at = xr * BS + attrtree::REMOTE_NEXT_OFF;
    let mut astray = pristine.clone();
    astray[next_at..next_at + 8].copy_from_slice(&(eb as u64).to_le_bytes());
    reseal(&mut astray, xr);
    let mut unwritten = pristine.clone();
    unwritten[next_at..next_at + 8].copy_from_slice(&attrtree::NEXT_UNWRITTEN.to_le_bytes());
    reseal(&mut unwritten, xr);
    // A record whose value is in the record flagged INCOMPLETE (only a remote one may be).
    let (lb, loff, local_victim) = kinds[&BlockType::AttrEntries]
        .iter()
        .find_map(|&b| {
            let blk = &pristine[b * BS..(b + 1) * BS];
            let r = attrtree::record(blk, b as u64, attrtree::RECORDS_OFF).ok()?;
            r.remote_first().is_none().then(|| {
                (
                    b,
                    attrtree::RECORDS_OFF,
                    String::from_utf8_lossy(r.name).into_owned(),
                )
            })
        })
        .expect("an entry block starting with a local record");
    let mut local_incomplete = pristine.clone();
    local_incomplete[lb * BS + loff + attrtree::RECORD_FLAGS_OFF] |= attrtree::FLAG_INCOMPLETE;
    reseal(&mut local_incomplete, lb);
    // "user.b" of the xattr block of "small" renamed into no namespace.
    let xa = kinds[&BlockType::Xattr]
        .iter()
        .copied()
        .find(|&b| {
            u64::from_le_bytes(pristine[b * BS + 16..b * BS + 24].try_into().unwrap()) == small_ino
        })
        .expect("the xattr block of small");
    let at = xa * BS
        + pristine[xa * BS..(xa + 1) * BS]
            .windows(6)
            .position(|w| w == b"user.b")
            .expect("user.b in its block");
    let mut renamed = pristine.clone();
    renamed[at..at + 4].copy_from_slice(b"xser");
    reseal(&mut renamed, xa);

    for (what, bytes, file, lost) in [
        (
            "a tree record with an unknown flag",
            &flag,
            "attrs",
            victim.as_str(),
        ),
        (
            "a remote block out of place",
            &moved,
            "attrs",
            "user.attribute-0007",
        ),
        (
            "a remote block going on in an entry block",
            &astray,
            "attrs",
            "user.attribute-0007",
        ),
        (
            "a complete value's block saying the rest is unwritten",
            &unwritten,
            "attrs",
            "user.attribute-0007",
        ),
        (
            "a local record flagged incomplete",
            &local_incomplete,
            "attrs",
            local_victim.as_str(),
        ),
        (
            "an xattr block entry in no namespace",
            &renamed,
            "small",
            "user.b",
        ),
    ] {
        let bad = work.path().join("bad");
        fs::write(&bad, bytes).unwrap();
        let (code, out) = fsck(&bad, &["-n"]);
        assert!(
            code == 4 && out.contains("xattrs: "),
            "{what}: exit {code}\n{out}"
        );
        assert_found_and_repaired(work.path(), what, bytes);
        let (_, _, attrs) = file_seen(&bad, file);
        let mut want = if file == "attrs" {
            all.clone()
        } else {
            [
                ("user.a", "first"),
                ("user.b", "second"),
                ("user.c", "third"),
            ]
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
        };
        assert!(
            want.remove(lost).is_some(),
            "{what}: {lost} is not one of them"
        );
        let names = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(&attrs), names(&want), "{what}: the attributes kept");
        assert!(attrs == want, "{what}: a value kept differs");
    }
}

/// A POSIX ACL whose mask is wider than the owning group's entry (setfacl -m u:nobody:rwx on a
/// 0640 file: the mode's group bits hold the mask, rwx), damaged so the kernel would refuse it
/// (version 3). The repair drops the ACL alone (the other attribute stays) and, since the mode's
/// group bits would then give the owning group the mask's rwx where it had r, narrows them to
/// what the owning group had: 0640. It used to drop every attribute and leave 0670.
#[test]
fn a_dropped_acl_does_not_widen_the_mode() {
    use std::os::unix::fs::PermissionsExt;
    let work = tempfile::tempdir().unwrap();
    let img = fresh_image(work.path());
    let m = Mount::new(&img, "");
    let f = m.path().join("f");
    fs::write(&f, b"x").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
    setx(&f, "user.keep", b"kept", 0).unwrap();
    let st = Command::new("setfacl")
        .args(["-m", "u:nobody:rwx"])
        .arg(&f)
        .status()
        .expect("setfacl (Debian's acl)");
    assert!(st.success());
    assert_eq!(
        fs::metadata(&f).unwrap().permissions().mode() & 0o777,
        0o670
    );
    m.unmount();
    let mut bytes = fs::read(&img).unwrap();
    let name = b"system.posix_acl_access";
    let xa = blocks_by_type(&bytes)[&BlockType::Xattr][0];
    let at = bytes[xa * BS..(xa + 1) * BS]
        .windows(name.len())
        .position(|w| w == name)
        .expect("the ACL in the xattr block");
    let value = xa * BS + at + name.len();
    bytes[value..value + 4].copy_from_slice(&3u32.to_le_bytes());
    reseal(&mut bytes, xa);
    let bad = work.path().join("bad");
    fs::write(&bad, &bytes).unwrap();
    let (code, out) = fsck(&bad, &["-n"]);
    assert!(
        code == 4 && out.contains("system.posix_acl_access: version 3, not 2"),
        "{out}"
    );
    assert_found_and_repaired(work.path(), "an ACL with a wide mask", &bytes);
    let (mode, _, attrs) = file_seen(&bad, "f");
    assert_eq!(mode & 0o7777, 0o640, "the mode after the ACL was dropped");
    assert_eq!(
        attrs,
        BTreeMap::from([("user.keep".to_string(), b"kept".to_vec())]),
        "the attributes after the repair"
    );
}

/// A version 1 superblock over an inode whose attributes are in a tree (which only version 2
/// has; an older ticketfs would misread it): the checker names the superblock and the inode, and
/// the repair records the current version in both copies, keeping the attributes. The check used to pass
/// it.
#[test]
fn a_version_1_superblock_over_an_attribute_tree_is_raised_to_2() {
    use ticketfs::format::Superblock;
    let work = tempfile::tempdir().unwrap();
    let img = populated(work.path());
    let mut bytes = fs::read(&img).unwrap();
    let last = bytes.len() / BS - 1;
    for blk in [0, last] {
        let b = &mut bytes[blk * BS..(blk + 1) * BS];
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        Superblock::reseal(b);
    }
    let bad = work.path().join("bad");
    fs::write(&bad, &bytes).unwrap();
    let (code, out) = fsck(&bad, &["-n"]);
    assert!(
        code == 4 && out.contains("superblock: version 1, but inode "),
        "exit {code}\n{out}"
    );
    assert_found_and_repaired(work.path(), "version 1 over an attribute tree", &bytes);
    let repaired = fs::read(&bad).unwrap();
    for blk in [0, last] {
        let v = u32::from_le_bytes(repaired[blk * BS + 8..blk * BS + 12].try_into().unwrap());
        assert_eq!(
            v,
            ticketfs::format::FORMAT_VERSION,
            "the superblock copy at {blk}"
        );
    }
    let (_, _, attrs) = file_seen(&bad, "attrs");
    assert!(
        attrs == populated_attrs(),
        "the attributes after the repair"
    );
}

/// fsck's exit status is the filesystem's, as e2fsck's is: a report that cannot be written (a
/// full disk, a pipe its reader closed) adds a line on stderr (none for the closed pipe, as a C
/// tool ends quietly on SIGPIPE) but does not hide that the image was repaired (1), still has
/// errors (4) or is clean (0). e2fsck -n/-y with stdout on /dev/full exits 0, 4 and 1 alike.
#[test]
fn a_report_that_cannot_be_written_keeps_the_check_s_exit_status() {
    use std::process::Stdio;
    let work = tempfile::tempdir().unwrap();
    let img = fresh_image(work.path());
    let pristine = fs::read(&img).unwrap();
    // The backup superblock zeroed: one problem, which -y repairs by rewriting the copy.
    let mut bytes = pristine.clone();
    let last = bytes.len() - BS;
    bytes[last..].fill(0);
    let full = || {
        fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    for (args, damaged, code) in [
        (&["-n"][..], true, 4),
        (&["-y"][..], true, 1),
        (&["-n"][..], false, 0),
        (&[][..], false, 0),
    ] {
        for closed_pipe in [false, true] {
            fs::write(&img, if damaged { &bytes } else { &pristine }).unwrap();
            let mut cmd = Command::new(fsck_bin());
            cmd.args(args).arg(&img).stderr(Stdio::piped());
            let out = if closed_pipe {
                let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
                drop(child.stdout.take()); // the reader closes its end before any output
                child.wait_with_output().unwrap()
            } else {
                cmd.stdout(full()).output().unwrap()
            };
            let err = String::from_utf8_lossy(&out.stderr);
            let what = format!("{args:?}, damaged {damaged}, closed pipe {closed_pipe}");
            assert_eq!(out.status.code(), Some(code), "{what}: {err}");
            if closed_pipe {
                assert_eq!(err, "", "{what}");
            } else {
                assert_eq!(
                    err.trim_end(),
                    "fsck.ticketfs: writing the output: No space left on device (os error 28)",
                    "{what}"
                );
            }
            if args == ["-y"] {
                let (code, again) = fsck(&img, &["-n"]);
                assert_eq!(code, 0, "{what}: not repaired:\n{again}");
            } else {
                let before = if damaged { &bytes } else { &pristine };
                assert!(
                    fs::read(&img).unwrap() == *before,
                    "{what}: wrote to the image"
                );
            }
        }
    }
}
