//! Large extended attributes on a mounted ticketfs, through the xattr system calls: a thousand and
//! more on one file (as fstests generic/020), values of 64 KiB, listxattr complete and sized,
//! everything freed by removal and by unlink, across unmount and mount, fsck clean after.

mod common;

use common::mount::{assert_fsck_clean, image, Mount};
use common::xattr::{cpath, errno, getx, listx_sized, removex, setx};
use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Attributes on the one file: more than generic/020's thousand.
const ATTRS: usize = 1100;
/// The kernel's XATTR_SIZE_MAX.
const SIZE_MAX: usize = 65536;

fn names(list: &[u8]) -> Vec<String> {
    let mut v: Vec<String> = list
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    v.sort();
    v
}

fn statvfs(p: &Path) -> libc::statvfs {
    // SAFETY: statvfs fills the zeroed struct for a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(cpath(p).as_ptr(), &mut st) }, 0);
    st
}

fn free_blocks(p: &Path) -> u64 {
    statvfs(p).f_bfree
}

/// Blocks an ordinary operation may still be promised (statfs's available: free, less the AG
/// reserves, the promises outstanding and the pool kept for operations that free space).
fn available_blocks(p: &Path) -> u64 {
    statvfs(p).f_bavail
}

/// The attributes the test sets: names of several lengths (one of 255 bytes), values from empty
/// to a few hundred bytes, a few remote ones of several blocks and two of 64 KiB.
fn model() -> Vec<(String, Vec<u8>)> {
    (0..ATTRS)
        .map(|i| {
            let name = if i == 3 {
                format!("user.{}", "n".repeat(250))
            } else {
                format!("user.attr-{i:05}{}", "x".repeat(i % 17))
            };
            let len = match i {
                10 | 500 => SIZE_MAX,
                _ if i % 97 == 0 => 3000 + i * 7,
                _ => (i * 13) % 300,
            };
            (name, pattern(i as u64, len))
        })
        .collect()
}

fn assert_all(f: &Path, m: &[(String, Vec<u8>)]) {
    for (n, v) in m {
        assert_eq!(getx(f, n).as_deref(), Ok(&v[..]), "value of {n}");
    }
    let want: usize = m.iter().map(|(n, _)| n.len() + 1).sum();
    let (size, _) = listx_sized(f, 0).unwrap();
    assert_eq!(size, want, "listxattr's size probe");
    assert_eq!(listx_sized(f, want - 1), Err(libc::ERANGE));
    let (got, list) = listx_sized(f, want).unwrap();
    assert_eq!(got, want);
    let mut expect: Vec<String> = m.iter().map(|(n, _)| n.clone()).collect();
    expect.sort();
    assert_eq!(names(&list), expect);
}

fn image_in(dir: &Path) -> PathBuf {
    image(dir, 128 << 20)
}

#[test]
fn a_thousand_attributes_and_64k_values_are_kept_and_freed() {
    let work = tempfile::tempdir().unwrap();
    let img = image_in(work.path());
    let m = Mount::new(&img, "");
    let f = m.path().join("f");
    fs::write(&f, b"data").unwrap();
    let before = free_blocks(m.path());
    let mut attrs = model();
    for (n, v) in &attrs {
        setx(&f, n, v, libc::XATTR_CREATE).unwrap_or_else(|e| panic!("setxattr {n}: errno {e}"));
    }
    assert_all(&f, &attrs);
    // A 64 KiB value replacing a 64 KiB value, a small one replacing a large one and back.
    attrs[10].1 = pattern(0xabc, SIZE_MAX);
    setx(&f, &attrs[10].0, &attrs[10].1, libc::XATTR_REPLACE).unwrap();
    attrs[500].1 = b"small now".to_vec();
    setx(&f, &attrs[500].0, &attrs[500].1, 0).unwrap();
    attrs[1].1 = pattern(0xdef, SIZE_MAX);
    setx(&f, &attrs[1].0, &attrs[1].1, 0).unwrap();
    assert_eq!(
        setx(&f, &attrs[2].0, b"x", libc::XATTR_CREATE),
        Err(libc::EEXIST)
    );
    assert_eq!(
        setx(&f, "user.absent", b"x", libc::XATTR_REPLACE),
        Err(libc::ENODATA)
    );
    assert_eq!(
        setx(&f, "user.too-big", &vec![1u8; SIZE_MAX + 1], 0),
        Err(libc::E2BIG)
    );
    assert_eq!(getx(&f, "user.absent"), Err(libc::ENODATA));
    assert_all(&f, &attrs);
    assert!(free_blocks(m.path()) < before);
    m.unmount();
    assert_fsck_clean(&img, "the attribute changes");

    let m = Mount::new(&img, "");
    let f = m.path().join("f");
    assert_all(&f, &attrs);
    assert_eq!(fs::read(&f).unwrap(), b"data");
    // Half removed, checked, then the rest: every block comes back.
    let rest = attrs.split_off(attrs.len() / 2);
    for (n, _) in &attrs {
        removex(&f, n).unwrap();
    }
    assert_eq!(removex(&f, &attrs[0].0), Err(libc::ENODATA));
    assert_all(&f, &rest);
    for (n, _) in &rest {
        removex(&f, n).unwrap();
    }
    assert_eq!(listx_sized(&f, 0).unwrap().0, 0);
    assert_eq!(
        free_blocks(m.path()),
        before,
        "free blocks after removing every attribute"
    );

    // Unlinking a file with a tree of attributes frees them all.
    let g = m.path().join("g");
    fs::write(&g, b"").unwrap();
    let with_g = free_blocks(m.path());
    for (n, v) in model().iter().take(300) {
        setx(&g, n, v, 0).unwrap();
    }
    fs::remove_file(&g).unwrap();
    // The kernel sends the release of the last write's descriptor after close(2) returns: an
    // unlink that overtakes it leaves the freeing to that release.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while free_blocks(m.path()) != with_g && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(free_blocks(m.path()), with_g, "free blocks after unlinking");
    m.unmount();
    assert_fsck_clean(&img, "the attribute changes");
}

/// An image of the version before the attribute tree (version 1: its superblock says so, its
/// attributes are in one block) mounts, keeps its attributes, grows a tree, and is of the
/// current version after a read-write mount.
#[test]
fn a_version_1_image_is_upgraded_by_a_read_write_mount() {
    use ticketfs::format::Superblock;
    let work = tempfile::tempdir().unwrap();
    let img = image_in(work.path());
    let m = Mount::new(&img, "");
    let f = m.path().join("f");
    fs::write(&f, b"data").unwrap();
    setx(&f, "user.small", b"one block", 0).unwrap();
    m.unmount();
    let mut bytes = fs::read(&img).unwrap();
    let bs = 4096;
    let last = bytes.len() / bs - 1;
    for blk in [0, last] {
        let b = &mut bytes[blk * bs..(blk + 1) * bs];
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        Superblock::reseal(b);
    }
    fs::write(&img, &bytes).unwrap();
    assert_fsck_clean(&img, "the attribute changes");
    let version = |img: &Path| {
        let b = fs::read(img).unwrap();
        let last = b.len() / bs - 1;
        [0, last].map(|blk| u32::from_le_bytes(b[blk * bs + 8..blk * bs + 12].try_into().unwrap()))
    };
    // A read-only mount reads a version 1 image and leaves it version 1 (found by an
    // adversarial pass: every superblock write used to stamp the current version).
    let m = Mount::new(&img, "ro");
    assert_eq!(
        getx(&m.path().join("f"), "user.small").unwrap(),
        b"one block"
    );
    m.unmount();
    assert_eq!(version(&img), [1, 1], "after a read-only mount");
    let m = Mount::new(&img, "");
    let f = m.path().join("f");
    assert_eq!(getx(&f, "user.small").unwrap(), b"one block");
    setx(&f, "user.large", &pattern(5, SIZE_MAX), 0).unwrap();
    m.unmount();
    let now = ticketfs::format::FORMAT_VERSION;
    assert_eq!(version(&img), [now, now], "after a read-write mount");
    assert_fsck_clean(&img, "the attribute changes");
    let m = Mount::new(&img, "");
    let f = m.path().join("f");
    assert_eq!(getx(&f, "user.large").unwrap(), pattern(5, SIZE_MAX));
    assert_eq!(getx(&f, "user.small").unwrap(), b"one block");
    m.unmount();
}

/// A version the code does not know is refused with a message naming both versions.
#[test]
fn an_unknown_version_is_refused_naming_both() {
    use ticketfs::format::Superblock;
    let work = tempfile::tempdir().unwrap();
    let img = image_in(work.path());
    let mut bytes = fs::read(&img).unwrap();
    let b = &mut bytes[..4096];
    let next = ticketfs::format::FORMAT_VERSION + 1;
    b[8..12].copy_from_slice(&next.to_le_bytes());
    Superblock::reseal(b);
    let e = Superblock::decode(b, 0).unwrap_err().to_string();
    let known = format!("1 to {}", ticketfs::format::FORMAT_VERSION);
    assert!(
        e.contains("version") && e.contains(&next.to_string()) && e.contains(&known),
        "{e}"
    );
}

/// A damaged record whose remote value points at another inode's attribute tree (CRC made
/// valid): removing that attribute must stop at the block that is not its own, not free the
/// other inode's blocks (which the next allocation would overwrite). Found by an adversarial
/// pass: the removal freed 17 blocks of the other file's tree.
#[test]
fn removing_a_value_whose_blocks_are_not_its_own_frees_nothing() {
    use ticketfs::format::BlockHeader;
    const BS: usize = 4096;
    let work = tempfile::tempdir().unwrap();
    let img = image_in(work.path());
    let m = Mount::new(&img, "");
    let (f, g) = (m.path().join("f"), m.path().join("g"));
    fs::write(&f, b"").unwrap();
    fs::write(&g, b"").unwrap();
    let many: Vec<(String, Vec<u8>)> = (0..1500)
        .map(|k| (format!("user.a{k:05}"), vec![k as u8; k % 300]))
        .collect();
    for (n, v) in &many {
        setx(&f, n, v, 0).unwrap();
    }
    setx(&g, "user.big", &vec![b'Q'; SIZE_MAX], 0).unwrap();
    for k in 0..50 {
        setx(&g, &format!("user.s{k}"), &[b'y'; 1000], 0).unwrap();
    }
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).unwrap());
    let (fi, gi) = (ino(&f), ino(&g));
    m.unmount();

    let mut b = fs::read(&img).unwrap();
    let slot = |ino: u64| (ino >> 6) as usize * BS + 64 + (ino & 63) as usize * 256;
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let froot = u64_at(&b, slot(fi) + 112);
    let groot = u64_at(&b, slot(gi) + 112) as usize;
    // g's root is a leaf: (key 16 bytes, value 16 bytes) records from byte 72; a value's first
    // word is the entry block << 16 | the record's offset; a record: name length, flags (1:
    // remote), 4 bytes, the name, then the remote extent's first block.
    let count = u16::from_le_bytes([b[groot * BS + 50], b[groot * BS + 51]]) as usize;
    let mut damaged = None;
    for k in 0..count {
        let v = u64_at(&b, groot * BS + 72 + k * 32 + 16);
        let (eb, off) = ((v >> 16) as usize, (v & 0xffff) as usize);
        let rec = eb * BS + off;
        if b[rec + 1] & 1 != 0 {
            let nl = b[rec] as usize;
            b[rec + 6 + nl..rec + 14 + nl].copy_from_slice(&froot.to_le_bytes());
            let lsn = BlockHeader::peek_lsn(&b[eb * BS..(eb + 1) * BS]).unwrap_or(0);
            BlockHeader::stamp(&mut b[eb * BS..(eb + 1) * BS], lsn);
            damaged = Some(eb);
            break;
        }
    }
    assert!(damaged.is_some(), "g's remote record not found");
    fs::write(&img, &b).unwrap();

    let m = Mount::new(&img, "");
    let g = m.path().join("g");
    assert!(removex(&g, "user.big").is_err(), "the removal went ahead");
    // The mount may have shut down on the damage (as XFS does in a dirty transaction); if it
    // goes on, new attributes elsewhere must not land in f's blocks either.
    let h = m.path().join("h");
    let _ = fs::write(&h, b"");
    for k in 0..300 {
        if setx(&h, &format!("user.h{k:04}"), &[b'H'; 1500], 0).is_err() {
            break;
        }
    }
    drop(m);
    let m = Mount::new(&img, "");
    assert_all(&m.path().join("f"), &many);
    m.unmount();
}

/// Blocks left available on the nearly full filesystem: more than a small attribute set takes
/// (its xattr block; in a tree an entry block and the nodes of a split to the root), fewer than
/// a 64 KiB value (its 17 remote blocks with 4 KiB blocks) and than the worst case of any
/// attribute change that every set used to promise (98).
const NEARLY_FULL_BLOCKS: u64 = 12;

/// Allocates `file`'s blocks past `*end` until the filesystem has at most `left` blocks
/// available, or a one-block request gets ENOSPC (it promises an extent-map change besides its
/// block: data cannot take the last few dozen blocks).
fn fill_until(mnt: &Path, file: &fs::File, end: &mut u64, left: u64) {
    use std::os::fd::AsRawFd;
    const BS: u64 = 4096;
    // A request for more than what is left (with its map changes) is halved.
    let mut most = u64::MAX;
    while available_blocks(mnt) > left {
        let want = (available_blocks(mnt) - left).min(most) * BS;
        // SAFETY: fallocate on an open descriptor; no memory passed.
        let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, *end as i64, want as i64) };
        match r {
            0 => *end += want,
            _ if errno() == libc::ENOSPC && want > BS => most = want / BS / 2,
            _ if errno() == libc::ENOSPC => return,
            _ => panic!("fallocate {want} at {end}: errno {}", errno()),
        }
    }
}

/// Small attributes (a 20-byte label, as an ACL or a security label is) on a nearly full
/// filesystem need a block or a few and get them, down to the last; a 64 KiB value still gets
/// ENOSPC, before anything changes. The promise of a set is measured from its name, its value and
/// the inode's attribute form and tree height: it used to be the worst case of any attribute
/// change (98 blocks here), which refused every set below that.
#[test]
fn a_small_attribute_is_set_on_a_nearly_full_filesystem() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 64 << 20);
    let m = Mount::new(&img, "");
    let (f, g) = (m.path().join("f"), m.path().join("g"));
    fs::write(&f, b"").unwrap();
    fs::write(&g, b"").unwrap();
    // g's attributes in a tree (more than one xattr block holds).
    let tree: Vec<(String, Vec<u8>)> = (0..60)
        .map(|k| (format!("user.t{k:03}"), pattern(k, 200)))
        .collect();
    for (n, v) in &tree {
        setx(&g, n, v, 0).unwrap();
    }
    // Files whose first attribute takes a block each: what brings the space down past data.
    let spare: Vec<PathBuf> = (0..64).map(|k| m.path().join(format!("s{k}"))).collect();
    for p in &spare {
        fs::write(p, b"").unwrap();
    }
    let filler = fs::File::create(m.path().join("filler")).unwrap();
    let mut end = 0;
    fill_until(m.path(), &filler, &mut end, NEARLY_FULL_BLOCKS);
    let label = pattern(7, 20);
    let mut labelled = 0;
    while available_blocks(m.path()) > NEARLY_FULL_BLOCKS {
        setx(&spare[labelled], "security.label", &label, 0).unwrap_or_else(|e| {
            panic!(
                "a label with {} blocks available: errno {e}",
                available_blocks(m.path())
            )
        });
        labelled += 1;
    }
    assert_eq!(available_blocks(m.path()), NEARLY_FULL_BLOCKS);

    setx(&f, "user.label", &label, 0).expect("a 20-byte value on an inode without attributes");
    setx(&f, "security.label", &label, 0).expect("a second one in its block");
    setx(&g, "user.label", &label, 0).expect("a 20-byte value in an attribute tree");
    setx(&g, "user.t001", &label, libc::XATTR_REPLACE).expect("a small value replacing one");

    // A 64 KiB value: ENOSPC before anything changes, in either form.
    for p in [&f, &g] {
        let avail = available_blocks(m.path());
        let before = listx_sized(p, SIZE_MAX).unwrap();
        assert_eq!(
            setx(p, "user.big", &pattern(9, SIZE_MAX), 0),
            Err(libc::ENOSPC),
            "64 KiB on {}",
            p.display()
        );
        assert_eq!(getx(p, "user.big"), Err(libc::ENODATA));
        assert_eq!(listx_sized(p, SIZE_MAX).unwrap(), before);
        assert_eq!(
            available_blocks(m.path()),
            avail,
            "blocks after the refused set"
        );
    }
    assert_eq!(getx(&f, "user.label").unwrap(), label);
    assert_eq!(getx(&f, "security.label").unwrap(), label);
    assert_eq!(getx(&g, "user.label").unwrap(), label);
    assert_eq!(getx(&g, "user.t001").unwrap(), label);
    assert_eq!(getx(&g, "user.t002").unwrap(), tree[2].1);

    // Labels go on until no block is left: each promises the one block it takes.
    let last = loop {
        let Some(p) = spare.get(labelled) else {
            panic!("{labelled} labels set and space still left");
        };
        match setx(p, "security.label", &label, 0) {
            Ok(()) => labelled += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(last, libc::ENOSPC);
    assert_eq!(
        available_blocks(m.path()),
        0,
        "blocks left when a label is refused"
    );
    for p in &spare[..labelled] {
        assert_eq!(getx(p, "security.label").unwrap(), label);
    }
    assert_eq!(getx(&spare[labelled], "security.label"), Err(libc::ENODATA));
    // With no block available, unlinking still works (the pool is kept for it) and gives blocks
    // back.
    fs::remove_file(&spare[0]).expect("unlink with no block available");
    fs::remove_file(&f).expect("a second unlink");
    assert!(!spare[0].exists() && !f.exists());
    assert!(available_blocks(m.path()) > 0);
    drop(filler);
    m.unmount();
    assert_fsck_clean(&img, "the attribute changes");
}

/// Blocks punched out of the filler, one in two: the free space of the fragmented test.
const SINGLE_HOLES: u64 = 1500;
/// Blocks the free-space trees and the AG free list may hold more after that churn: a split of
/// each free-space tree to its root (two levels, here) and the free list's top-up.
const FREE_SPACE_RESHAPE_BLOCKS: u64 = 8;

/// 64 KiB values on a filesystem whose free space is single blocks between used ones, as XFS
/// takes them (a remote value in several extents): each in 17 runs of one block, written over
/// several transactions, read back, replaced, removed, kept across unmount, fsck clean. They
/// used to need one run of 17 blocks: the first set got ENOSPC with 1,500 blocks free (the
/// session 16 measure: nine 64 KiB values, then ENOSPC, with 6,694 blocks free).
#[test]
fn values_of_64k_are_set_in_free_space_broken_into_single_blocks() {
    use std::os::fd::AsRawFd;
    const BS: u64 = 4096;
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 64 << 20);
    let m = Mount::new(&img, "");
    let f = m.path().join("f");
    fs::write(&f, b"").unwrap();
    // In the tree form before the space is broken up (a 64 KiB value moves it there anyway).
    for k in 0..40 {
        setx(&f, &format!("user.s{k:02}"), &pattern(k, 200), 0).unwrap();
    }
    let filler = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.path().join("filler"))
        .unwrap();
    let mut end = 0;
    fill_until(m.path(), &filler, &mut end, 0);
    assert!(end / BS > 2 * SINGLE_HOLES, "filled only {end} bytes");
    for k in 0..SINGLE_HOLES {
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        let at = (2 * k * BS) as i64;
        // SAFETY: fallocate on an open descriptor; no memory passed.
        let r = unsafe { libc::fallocate(filler.as_raw_fd(), mode, at, BS as i64) };
        assert_eq!(r, 0, "punch at {at}: errno {}", errno());
    }
    let free_before = free_blocks(m.path());
    assert!(free_before >= SINGLE_HOLES, "{free_before} blocks free");
    // The file's blocks are its attributes' (st_blocks counts them, as on XFS): what they hold
    // and what is free add up to the same before and after, but for the nodes of the free-space
    // trees and the AG free list (not free, not the file's), which taking and giving back 1,500
    // single-block extents reshapes. fsck's block map (clean, below) is the exact account.
    let held = |f: &Path| fs::metadata(f).unwrap().blocks() / (BS / 512);
    let held_before = held(&f);

    let value = |k: u64| pattern(1000 + k, SIZE_MAX);
    let mut set = 0u64;
    let refused = loop {
        match setx(&f, &format!("user.big{set:03}"), &value(set), 0) {
            Ok(()) => set += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(refused, libc::ENOSPC);
    println!("{set} values of 64 KiB in {free_before} free blocks, one in two of a range");
    // 17 blocks a value; the rest of the free space goes to entry blocks, tree nodes and what
    // promises keep back.
    assert!(
        set >= SINGLE_HOLES / 17 * 3 / 4,
        "{set} values of 64 KiB in {free_before} free single blocks"
    );
    assert_eq!(getx(&f, &format!("user.big{set:03}")), Err(libc::ENODATA));
    for k in 0..set {
        assert_eq!(
            getx(&f, &format!("user.big{k:03}")).unwrap(),
            value(k),
            "value {k}"
        );
    }
    // A value in runs removed (freed run by run), another replaced by a new 64 KiB value in
    // the blocks that gave, a third by a short one.
    removex(&f, "user.big000").unwrap();
    setx(&f, "user.big001", &value(5000), libc::XATTR_REPLACE).unwrap();
    setx(&f, "user.big002", b"short now", libc::XATTR_REPLACE).unwrap();
    let expect = |k: u64| match k {
        1 => Some(value(5000)),
        2 => Some(b"short now".to_vec()),
        0 => None,
        k => Some(value(k)),
    };
    let check = |f: &Path| {
        for k in 0..set {
            let got = getx(f, &format!("user.big{k:03}"));
            match expect(k) {
                Some(v) => assert_eq!(got.unwrap(), v, "value {k}"),
                None => assert_eq!(got, Err(libc::ENODATA), "value {k}"),
            }
        }
        for k in 0..40 {
            assert_eq!(getx(f, &format!("user.s{k:02}")).unwrap(), pattern(k, 200));
        }
    };
    check(&f);
    drop(filler);
    m.unmount();
    assert_fsck_clean(&img, "values in single-block runs");

    let m = Mount::new(&img, "");
    let f = m.path().join("f");
    check(&f);
    for k in 1..set {
        removex(&f, &format!("user.big{k:03}")).unwrap();
    }
    let (now, then) = (free_blocks(m.path()) + held(&f), free_before + held_before);
    assert!(
        now <= then && then - now <= FREE_SPACE_RESHAPE_BLOCKS,
        "blocks free and held once the values are gone: {now}, before them {then}"
    );
    m.unmount();
    assert_fsck_clean(&img, "values in single-block runs removed");
}

/// A chmod of a file with attributes on a full filesystem works, as on ext4 or XFS: its access
/// ACL (same size, its mask or group entry rewritten in place) and a security label need no
/// block, nor does a set that fits the inode's attribute block. The chmod used to promise the
/// worst case of any attribute change and a set one block, and both got ENOSPC.
#[test]
fn a_chmod_of_a_file_with_attributes_works_with_no_block_available() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 64 << 20);
    let m = Mount::new(&img, "");
    let (acl, labelled) = (m.path().join("acl"), m.path().join("labelled"));
    fs::write(&acl, b"a").unwrap();
    fs::write(&labelled, b"l").unwrap();
    let st = Command::new("setfacl")
        .args(["-m", "u:nobody:rw-"])
        .arg(&acl)
        .status()
        .expect("setfacl (Debian's acl)");
    assert!(st.success(), "setfacl");
    let label = pattern(7, 20);
    setx(&labelled, "security.label", &label, 0).unwrap();
    // Files whose first attribute takes a block each: what brings the space past data to 0.
    let spare: Vec<PathBuf> = (0..80).map(|k| m.path().join(format!("s{k}"))).collect();
    for p in &spare {
        fs::write(p, b"").unwrap();
    }
    let filler = fs::File::create(m.path().join("filler")).unwrap();
    let mut end = 0;
    fill_until(m.path(), &filler, &mut end, 0);
    let mut next = spare.iter();
    while available_blocks(m.path()) > 0 {
        let p = next.next().expect("spare files left");
        if let Err(e) = setx(p, "security.label", &label, 0) {
            assert_eq!(e, libc::ENOSPC, "label on {}", p.display());
            break;
        }
    }
    assert_eq!(available_blocks(m.path()), 0);

    fs::set_permissions(&acl, fs::Permissions::from_mode(0o640)).expect("chmod of the ACL'd file");
    fs::set_permissions(&labelled, fs::Permissions::from_mode(0o600))
        .expect("chmod of the labelled file");
    let out = Command::new("getfacl")
        .args(["-c", "-p"])
        .arg(&acl)
        .output()
        .expect("getfacl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("mask::r--") && text.contains("user:nobody:rw-"),
        "ACL after chmod 640:\n{text}"
    );
    assert_eq!(fs::metadata(&acl).unwrap().mode() & 0o7777, 0o640);
    assert_eq!(fs::metadata(&labelled).unwrap().mode() & 0o7777, 0o600);
    assert_eq!(getx(&labelled, "security.label").unwrap(), label);
    // A value that stays in the inode's attribute block takes no block either.
    let relabel = pattern(8, 20);
    setx(&labelled, "security.label", &relabel, libc::XATTR_REPLACE)
        .expect("a label replaced in its block");
    setx(&labelled, "user.note", b"n", 0).expect("a small attribute added to the block");
    assert_eq!(getx(&labelled, "security.label").unwrap(), relabel);
    assert_eq!(available_blocks(m.path()), 0);
    drop(filler);
    m.unmount();
    assert_fsck_clean(&img, "chmods on a full filesystem");
}

/// Labels take a filesystem down to the pool kept for operations that free space; an unlink
/// that frees its inode at once (the library's, with no kernel reference left) then promises the
/// unlink and the freeing in turn: held together they did not fit in the pool, and the unlink
/// failed with ENOSPC after its name was gone.
#[test]
fn an_unlink_frees_its_inode_with_no_block_available() {
    use std::sync::Arc;
    use ticketfs::fs::{Ctx, Fs, S_IFREG};
    use ticketfs::{Engine, EngineOptions};
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 16 << 20);
    let dev = Arc::new(ticketfs::device::FileDevice::open(&img, 4096, false).unwrap());
    let fs = Fs::new(Engine::mount(dev, EngineOptions::default()).unwrap(), false).unwrap();
    let c = Ctx::ROOT;
    let mut inos = Vec::new();
    while let Ok(a) = fs.make(
        &c,
        fs.root(),
        format!("f{}", inos.len()).as_bytes(),
        S_IFREG | 0o644,
        0,
        None,
    ) {
        inos.push(a.ino);
    }
    let labelled = inos
        .iter()
        .take_while(|&&ino| fs.setxattr(&c, ino, b"user.l", b"l", false, false).is_ok())
        .count();
    assert!(labelled < inos.len(), "labels ran out of files");
    assert_eq!(fs.statfs().unwrap().bavail, 0);
    fs.remove(&c, fs.root(), b"f0", false)
        .expect("unlink of a labelled file");
    fs.remove(
        &c,
        fs.root(),
        format!("f{}", inos.len() - 1).as_bytes(),
        false,
    )
    .expect("unlink of a file without attributes");
    assert!(fs.statfs().unwrap().bavail > 0);
    fs.unmount().unwrap();
    assert_fsck_clean(&img, "the attribute changes");
}
