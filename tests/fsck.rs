//! fsck.ticketfs against damaged images: for every kind of metadata block in a populated image,
//! a copy with a bit flipped, one with the block zeroed and one with another block of the same
//! kind written over it (wrong address). fsck -n must report each (exit 4) and leave the image
//! untouched; the undamaged image is clean (exit 0); a mounted image is refused (exit 8).

mod common;

use common::mount::Mount;
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
fn populated(dir: &Path) -> PathBuf {
    let img = dir.join("image");
    make_filesystem(
        &img,
        &MkfsOptions {
            size: Some(64 << 20),
            ..Default::default()
        },
    )
    .expect("mkfs");
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
    let c = std::ffi::CString::new(r.join("big").as_os_str().as_encoded_bytes()).unwrap();
    let v = b"an attribute value";
    // SAFETY: NUL-terminated path and name; the value's pointer and length.
    let rc = unsafe {
        libc::setxattr(
            c.as_ptr(),
            c"user.test".as_ptr(),
            v.as_ptr().cast(),
            v.len(),
            0,
        )
    };
    assert_eq!(rc, 0, "setxattr");
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

#[test]
fn fsck_finds_every_kind_of_damage_and_never_writes_with_n() {
    let work = tempfile::tempdir().unwrap();
    let img = populated(work.path());
    let (code, out) = fsck(&img, &["-n"]);
    assert_eq!(code, 0, "the undamaged image is not clean:\n{out}");
    let pristine = fs::read(&img).unwrap();
    let kinds = blocks_by_type(&pristine);
    for t in [
        BlockType::AgHeader,
        BlockType::BtreeBno,
        BlockType::BtreeCnt,
        BlockType::BtreeIno,
        BlockType::BtreeExtent,
        BlockType::BtreeDir,
        BlockType::InodeChunk,
        BlockType::DirData,
        BlockType::Xattr,
        BlockType::Symlink,
    ] {
        let list = kinds.get(&t).cloned().unwrap_or_default();
        assert!(!list.is_empty(), "the image has no {} block", t.name());
        let victim = list[list.len() / 2];
        let other = list.iter().copied().find(|&b| b != victim);
        let mut damages: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut flipped = pristine.clone();
        flipped[victim * BS + BS / 2 + 3] ^= 0x10;
        damages.push(("a flipped bit", flipped));
        let mut zeroed = pristine.clone();
        zeroed[victim * BS..(victim + 1) * BS].fill(0);
        damages.push(("zeroes", zeroed));
        if let Some(o) = other {
            let mut moved = pristine.clone();
            let src = pristine[o * BS..(o + 1) * BS].to_vec();
            moved[victim * BS..(victim + 1) * BS].copy_from_slice(&src);
            damages.push(("a block written to the wrong address", moved));
        }
        for (what, bytes) in damages {
            let bad = work.path().join("bad");
            fs::write(&bad, &bytes).unwrap();
            let (code, out) = fsck(&bad, &["-n"]);
            assert_eq!(
                code,
                4,
                "{} block {victim} with {what}: fsck -n exit {code}:\n{out}",
                t.name()
            );
            assert!(
                fs::read(&bad).unwrap() == bytes,
                "fsck -n wrote to the image ({} block {victim}, {what})",
                t.name()
            );
        }
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
    /// checking and using the image never panics.
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
                let b = &mut bytes[blk * BS..(blk + 1) * BS];
                let lsn = BlockHeader::peek_lsn(b).unwrap_or(0);
                BlockHeader::stamp(b, lsn);
            }
        }
        mount_check_and_walk(bytes);
    }
}
