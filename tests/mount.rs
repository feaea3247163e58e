//! Real mounts through FUSE: the ticketfs binary in the foreground (so the test owns the daemon),
//! a guard that always unmounts. Persistence across a clean unmount, every byte and attribute;
//! every fsync'd byte after the daemon is SIGKILLed; a second mount of the same image refused.

mod common;

use common::mount::{image, Mount};
use common::pattern;
use common::xattr::{getx, listx, removex, setx};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};
use ticketfs::mkfs::{make_filesystem, MkfsOptions};

/// Everything observable of a tree: per path, kind, mode, size, nlink, uid, gid, mtime and
/// content (or link target).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("readdir") {
            let p = e.expect("entry").path();
            let m = fs::symlink_metadata(&p).expect("lstat");
            let rel = p.strip_prefix(root).expect("below root").to_path_buf();
            let body = if m.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&p).expect("readlink").display())
            } else if m.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else {
                let data = fs::read(&p).expect("read");
                format!(
                    "{} bytes, sum {}",
                    data.len(),
                    data.iter()
                        .fold(0u64, |a, &b| a.wrapping_mul(31).wrapping_add(b as u64))
                )
            };
            let mtime = if m.file_type().is_symlink() {
                0
            } else {
                m.mtime() * 1_000_000_000 + m.mtime_nsec()
            };
            out.insert(
                rel,
                format!(
                    "{:o} {} nlink {} uid {} gid {} mtime {} {}",
                    m.mode(),
                    if m.is_dir() { 0 } else { m.size() },
                    m.nlink(),
                    m.uid(),
                    m.gid(),
                    mtime,
                    body
                ),
            );
        }
    }
    out
}

#[test]
fn tree_survives_unmount_and_mount() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 256 << 20);
    let m = Mount::new(&img, "");
    let r = m.path();
    for d in 0..6 {
        let dir = r.join(format!("dir{d}")).join("sub");
        fs::create_dir_all(&dir).unwrap();
        for f in 0..12u64 {
            let len = ((f * 7919 + d * 104729) % 300_000) as usize;
            let p = dir.join(format!("file{f}"));
            fs::write(&p, pattern(f * 100 + d, len)).unwrap();
            fs::set_permissions(
                &p,
                fs::Permissions::from_mode(0o600 + (f as u32 % 8) * 0o11),
            )
            .unwrap();
            if f % 3 == 0 {
                let t =
                    SystemTime::UNIX_EPOCH + Duration::new(1_600_000_000 + f * 1000, 123_456_789);
                fs::File::options()
                    .write(true)
                    .open(&p)
                    .unwrap()
                    .set_modified(t)
                    .unwrap();
            }
        }
        std::os::unix::fs::symlink(format!("sub/file{d}"), r.join(format!("dir{d}/link"))).unwrap();
        fs::hard_link(dir.join("file1"), r.join(format!("dir{d}/hard"))).unwrap();
    }
    std::os::unix::fs::symlink("x".repeat(600), r.join("long-link")).unwrap();
    fs::rename(r.join("dir5"), r.join("dir0/moved")).unwrap();
    fs::remove_file(r.join("dir1/sub/file2")).unwrap();
    let before = snapshot(r);
    assert!(before.len() > 80);
    m.unmount();
    let out = Command::new(env!("CARGO_BIN_EXE_ticketfs"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let m = Mount::new(&img, "");
    let after = snapshot(m.path());
    for (k, v) in &before {
        assert_eq!(
            after.get(k),
            Some(v),
            "{} changed across unmount",
            k.display()
        );
    }
    assert_eq!(after.len(), before.len());
    m.unmount();
}

#[test]
fn fsynced_bytes_survive_sigkill() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 256 << 20);
    for round in 0..3u64 {
        let m = Mount::new(&img, "");
        let p = m.path().join(format!("synced{round}"));
        let data = pattern(round, 700_000);
        let mut f = fs::File::create(&p).unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
        // Unsynced work after the fsync: may be lost, must not break anything.
        fs::write(
            m.path().join(format!("unsynced{round}")),
            pattern(round + 50, 90_000),
        )
        .unwrap();
        fs::create_dir_all(m.path().join(format!("d{round}/e"))).unwrap();
        m.kill();
        let m = Mount::new(&img, "");
        for r in 0..=round {
            let got = fs::read(m.path().join(format!("synced{r}"))).unwrap();
            assert!(
                got == pattern(r, 700_000),
                "round {r}: fsync'd file differs after SIGKILL"
            );
        }
        let _ = snapshot(m.path());
        m.unmount();
    }
}

/// Not a ticketfs image: a one-line error, exit 32 (mount failure), no panic. (A second mount of a mounted image shares
/// it: tests/kernel_paths.rs.)
#[test]
fn a_file_that_is_not_an_image_is_refused_in_one_line() {
    let work = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let junk = work.path().join("junk");
    fs::write(&junk, vec![7u8; 1 << 20]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ticketfs"))
        .arg(&junk)
        .arg(other.path())
        .output()
        .unwrap();
    // mount(8)'s status for a mount that failed.
    assert_eq!(out.status.code(), Some(32));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"));
    // The error names the image once.
    assert_eq!(err.matches(junk.to_str().unwrap()).count(), 1, "{err}");
}

#[test]
fn extended_attributes() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 64 << 20);
    let m = Mount::new(&img, "");
    let f = m.path().join("f");
    fs::write(&f, b"data").unwrap();
    setx(&f, "user.a", b"1", 0).unwrap();
    let big = pattern(9, 3000);
    setx(&f, "user.b", &big, 0).unwrap();
    setx(&f, "trusted.t", b"root only", 0).unwrap();
    assert_eq!(getx(&f, "user.a").unwrap(), b"1");
    assert_eq!(getx(&f, "user.b").unwrap(), big);
    let mut names = listx(&f);
    names.sort();
    assert_eq!(names, ["trusted.t", "user.a", "user.b"]);
    assert_eq!(
        setx(&f, "user.a", b"2", libc::XATTR_CREATE),
        Err(libc::EEXIST)
    );
    assert_eq!(
        setx(&f, "user.zz", b"2", libc::XATTR_REPLACE),
        Err(libc::ENODATA)
    );
    setx(&f, "user.a", b"22", libc::XATTR_REPLACE).unwrap();
    assert_eq!(getx(&f, "user.a").unwrap(), b"22");
    // More than one block holds: the attributes move to a tree.
    setx(&f, "user.huge", &pattern(1, 5000), 0).unwrap();
    assert_eq!(getx(&f, "user.huge").unwrap(), pattern(1, 5000));
    assert_eq!(getx(&f, "user.b").unwrap(), big);
    assert_eq!(getx(&f, "user.none"), Err(libc::ENODATA));
    std::os::unix::fs::symlink("f", m.path().join("l")).unwrap();
    assert_eq!(
        setx(&m.path().join("l"), "user.x", b"1", 0),
        Err(libc::EPERM)
    );
    assert_eq!(removex(&f, "user.a"), Ok(()));
    assert_eq!(getx(&f, "user.a"), Err(libc::ENODATA));
    m.unmount();
    let m = Mount::new(&img, "");
    let f = m.path().join("f");
    assert_eq!(getx(&f, "user.b").unwrap(), big);
    assert_eq!(getx(&f, "trusted.t").unwrap(), b"root only");
    assert_eq!(fs::read(&f).unwrap(), b"data");
    fs::remove_file(&f).unwrap();
    m.unmount();
}

/// An error that must be ENOSPC (anything else, EIO above all, is a failed filesystem).
fn enospc_or_ok<T>(r: std::io::Result<T>, what: &str) -> bool {
    match r {
        Ok(_) => true,
        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => false,
        Err(e) => panic!("{what}: {e} (only ENOSPC is acceptable on a full filesystem)"),
    }
}

#[test]
fn a_full_filesystem_says_enospc_and_recovers_when_emptied() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 64 << 20);
    let m = Mount::new(&img, "");
    // Fill it with one big file.
    let mut big = fs::File::create(m.path().join("big")).unwrap();
    let chunk = vec![0x5au8; 1 << 20];
    let mut written = 0u64;
    while enospc_or_ok(big.write_all(&chunk), "filling write") {
        written += chunk.len() as u64;
        assert!(written < 64 << 20, "wrote past the image size");
    }
    drop(big);
    // Namespace operations and writes now fail with ENOSPC, or succeed; never anything else.
    let (mut ok, mut full) = (0, 0);
    for i in 0..200 {
        let p = m.path().join(format!("small{i}"));
        if enospc_or_ok(fs::write(&p, vec![1u8; 5000]), "small file") {
            ok += 1;
        } else {
            full += 1;
        }
    }
    for i in 0..20 {
        let _ = enospc_or_ok(fs::create_dir(m.path().join(format!("dir{i}"))), "mkdir");
        let _ = enospc_or_ok(
            std::os::unix::fs::symlink("x".repeat(300), m.path().join(format!("ln{i}"))),
            "symlink",
        );
    }
    assert!(full > 0, "no ENOSPC after filling ({ok} small files fit)");
    let st = nix_statvfs(m.path());
    // What is left is less than one operation's promise of map blocks (a few dozen).
    assert!(
        st.0 < 256,
        "statfs says {} blocks available on a full filesystem",
        st.0
    );
    // Emptying it works on a full filesystem, and then everything works again.
    fs::remove_file(m.path().join("big")).unwrap();
    for i in 0..200 {
        let _ = fs::remove_file(m.path().join(format!("small{i}")));
    }
    assert!(nix_statvfs(m.path()).0 > 0);
    fs::write(m.path().join("after"), b"room again").unwrap();
    fs::create_dir(m.path().join("after-dir")).unwrap();
    assert_eq!(fs::read(m.path().join("after")).unwrap(), b"room again");
    m.unmount();
    let m = Mount::new(&img, "");
    assert_eq!(fs::read(m.path().join("after")).unwrap(), b"room again");
    m.unmount();
}

/// (available blocks, free blocks) from statvfs.
fn nix_statvfs(p: &Path) -> (u64, u64) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statvfs fills the zeroed struct for a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    (st.f_bavail, st.f_bfree)
}

#[test]
fn creates_spill_to_other_allocation_groups_when_the_parents_is_full() {
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("image");
    make_filesystem(
        &img,
        &MkfsOptions {
            size: Some(512 << 20),
            ag_count: Some(4),
            ..Default::default()
        },
    )
    .expect("mkfs");
    let m = Mount::new(&img, "");
    // The root lives in AG 0: fill AG 0 (and some of AG 1) with data near it.
    let mut big = fs::File::create(m.path().join("big")).unwrap();
    let chunk = vec![7u8; 1 << 20];
    for _ in 0..200 {
        big.write_all(&chunk).unwrap();
    }
    big.sync_all().unwrap();
    drop(big);
    // New inodes, directories and their blocks must come from the other AGs.
    for i in 0..3000 {
        fs::write(m.path().join(format!("f{i}")), format!("file {i}")).unwrap();
        if i % 100 == 0 {
            fs::create_dir(m.path().join(format!("d{i}"))).unwrap();
        }
    }
    for i in (0..3000).step_by(7) {
        assert_eq!(
            fs::read_to_string(m.path().join(format!("f{i}"))).unwrap(),
            format!("file {i}")
        );
    }
    m.unmount();
}

fn set_times(p: &Path, atime: i64, mtime: i64) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let ts = [
        libc::timespec {
            tv_sec: atime,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: mtime,
            tv_nsec: 0,
        },
    ];
    // SAFETY: a NUL-terminated path and two timespecs.
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), 0) },
        0
    );
}

#[test]
fn reads_update_access_times_by_the_mount_policy() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 64 << 20);
    let now = || {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    // relatime (the default): a read updates an access time older than the modification time,
    // then not again until a day has passed.
    let m = Mount::new(&img, "");
    let f = m.path().join("f");
    fs::write(&f, b"data").unwrap();
    set_times(&f, 1_000_000, 2_000_000);
    fs::read(&f).unwrap();
    let a1 = fs::metadata(&f).unwrap().atime();
    assert!(a1 >= now() - 60, "relatime read left atime at {a1}");
    // Now the access time is after the change time: the next read leaves it.
    let before = fs::metadata(&f).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    fs::read(&f).unwrap();
    let after = fs::metadata(&f).unwrap();
    assert_eq!(
        (after.atime(), after.atime_nsec()),
        (before.atime(), before.atime_nsec()),
        "relatime updated an access time newer than the change time"
    );
    // Directories: listing is an access.
    let d = m.path().join("d");
    fs::create_dir(&d).unwrap();
    set_times(&d, 1_000_000, 2_000_000);
    let _ = fs::read_dir(&d).unwrap().count();
    assert!(fs::metadata(&d).unwrap().atime() >= now() - 60);
    m.unmount();
    // noatime: never.
    let m = Mount::new(&img, "noatime");
    let f = m.path().join("f");
    set_times(&f, 1_000_000, 2_000_000);
    fs::read(&f).unwrap();
    assert_eq!(fs::metadata(&f).unwrap().atime(), 1_000_000);
    m.unmount();
    // strictatime: every read.
    let m = Mount::new(&img, "strictatime");
    let f = m.path().join("f");
    set_times(&f, now() - 3600, 2_000_000);
    fs::read(&f).unwrap();
    assert!(fs::metadata(&f).unwrap().atime() >= now() - 60);
    // Read again in a new open a second later: the data is in the kernel's page cache, which
    // must not be kept across the open, or the read never reaches the daemon (generic/003).
    let at = |f: &Path| {
        let m = fs::metadata(f).unwrap();
        (m.atime(), m.atime_nsec())
    };
    let first = at(&f);
    std::thread::sleep(Duration::from_millis(1100));
    fs::read(&f).unwrap();
    assert!(
        at(&f) > first,
        "strictatime: a cached second read left the access time"
    );
    m.unmount();
    // relatime: read, write (modification time now after the access time), read in a new
    // open: that read is due an update even though the data is cached.
    let m = Mount::new(&img, "");
    let f = m.path().join("f");
    fs::read(&f).unwrap();
    let read_once = at(&f);
    std::thread::sleep(Duration::from_millis(1100));
    fs::write(&f, b"later").unwrap();
    fs::read(&f).unwrap();
    assert!(
        at(&f) > read_once,
        "relatime: a read after a write left the access time"
    );
    m.unmount();
}

/// `-o remount,ro` and `-o remount,rw` (what mount(8) passes through mount.fuse3 for
/// `mount -t fuse.ticketfs -o remount,ro IMAGE DIR`, as fstests does) change the live mount
/// instead of starting a second daemon.
#[test]
fn remount_read_only_and_back() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 64 << 20);
    let m = Mount::new(&img, "");
    let bin = env!("CARGO_BIN_EXE_ticketfs");
    let remount = |opt: &str| {
        let st = Command::new(bin)
            .arg(&img)
            .arg(m.path())
            .arg("-o")
            .arg(format!("remount,{opt}"))
            .status()
            .unwrap();
        assert!(st.success(), "remount,{opt}: {st}");
    };
    fs::write(m.path().join("before"), b"x").unwrap();
    remount("ro");
    let e = fs::write(m.path().join("during"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    assert_eq!(fs::read(m.path().join("before")).unwrap(), b"x");
    remount("rw");
    fs::write(m.path().join("after"), b"y").unwrap();
    m.unmount();
}

/// A read-only mount of a cleanly unmounted image writes nothing, as XFS and ext4 on a clean
/// log: reading, listing, stat, xattrs, statfs and the unmount leave every byte of the image as
/// it was, on either transport and as plain fuse. Remounted read-write it writes as any mount, and a read-only
/// mount after a crash replays the log (as both kernel filesystems do) and ends clean.
#[test]
fn a_read_only_mount_of_a_clean_image_writes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 64 << 20);
    let m = Mount::new(&img, "");
    fs::create_dir(m.path().join("d")).unwrap();
    fs::write(m.path().join("d/f"), pattern(3, 100_000)).unwrap();
    setx(&m.path().join("d/f"), "user.k", b"v", 0).unwrap();
    m.unmount();
    let clean = fs::read(&img).unwrap();
    let mtime = || {
        let st = fs::metadata(&img).unwrap();
        (st.mtime(), st.mtime_nsec())
    };
    let t0 = mtime();
    let look = |root: &Path| {
        assert_eq!(fs::read(root.join("d/f")).unwrap(), pattern(3, 100_000));
        assert_eq!(fs::read_dir(root.join("d")).unwrap().count(), 1);
        assert_eq!(getx(&root.join("d/f"), "user.k").unwrap(), b"v");
        let e = fs::write(root.join("new"), b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
        let st = nix_statfs(root);
        assert!(st > 0, "statfs");
    };
    for opts in ["ro", "ro,uring=off", "ro,blkdev=off"] {
        let m = Mount::new(&img, opts);
        look(m.path());
        m.unmount();
        assert!(
            fs::read(&img).unwrap() == clean,
            "-o {opts}: the image changed"
        );
        assert_eq!(mtime(), t0, "-o {opts}: the image was written");
    }

    // Remounted read-write: the first change marks the image in use, the unmount clean.
    let m = Mount::new(&img, "ro");
    let st = Command::new(env!("CARGO_BIN_EXE_ticketfs"))
        .arg(&img)
        .arg(m.path())
        .args(["-o", "remount,rw"])
        .status()
        .unwrap();
    assert!(st.success(), "remount,rw: {st}");
    fs::write(m.path().join("later"), b"rw").unwrap();
    m.unmount();
    assert!(fs::read(&img).unwrap() != clean, "the read-write change");
    common::mount::assert_fsck_clean(&img, "after a read-only mount remounted read-write");

    // A crash leaves the log to replay: the read-only mount replays it and ends clean.
    let m = Mount::new(&img, "");
    let f = fs::File::create(m.path().join("synced")).unwrap();
    std::io::Write::write_all(&mut &f, b"durable").unwrap();
    f.sync_all().unwrap();
    m.kill();
    let m = Mount::new(&img, "ro");
    assert_eq!(fs::read(m.path().join("synced")).unwrap(), b"durable");
    assert_eq!(fs::read(m.path().join("later")).unwrap(), b"rw");
    m.unmount();
    // The crashed mount, detached, lives on while `f` is open, and with it the loop device it
    // stands on over the image: fsck refuses an image a loop device in use maps.
    drop(f);
    common::mount::assert_fsck_clean(&img, "after a read-only mount replayed the log");
}

/// statfs(2)'s block count.
fn nix_statfs(p: &Path) -> u64 {
    // SAFETY: statfs fills the zeroed struct for a NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statfs(common::xattr::cpath(p).as_ptr(), &mut st) };
    assert_eq!(r, 0, "statfs: {}", std::io::Error::last_os_error());
    st.f_blocks
}

/// Drops the kernel's cached pages of the file behind `f`, so the next read reaches the daemon.
fn drop_file_cache(f: &fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: fadvise on an open descriptor; no memory is passed.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0, "posix_fadvise(DONTNEED)");
}

/// File data is read through the image's page cache (hostcache=on, the default) while every
/// write goes around it: each read after an overwrite, a partial-block overwrite, a truncate
/// that zeroes a block's tail and a punched hole must see the new bytes, never the cached ones;
/// with hostcache=off the same sequence gives the same bytes.
#[test]
fn data_read_through_the_image_cache_sees_every_overwrite() {
    use std::os::unix::fs::FileExt;
    for opts in ["", "hostcache=off"] {
        let work = tempfile::tempdir().unwrap();
        let img = image(work.path(), 64 << 20);
        let m = Mount::new(&img, opts);
        let p = m.path().join("f");
        let f = fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        let mut model = pattern(1, 256 << 10);
        let check = |model: &[u8], step: &str| {
            f.sync_all().unwrap();
            drop_file_cache(&f);
            let mut got = vec![0u8; model.len()];
            f.read_exact_at(&mut got, 0).unwrap();
            assert!(got == model, "{opts:?}: wrong bytes after {step}");
            assert_eq!(f.metadata().unwrap().len(), model.len() as u64, "{step}");
        };
        f.write_all_at(&model, 0).unwrap();
        check(&model, "the first write");
        // Whole blocks overwritten.
        let new = pattern(2, 64 << 10);
        f.write_all_at(&new, 32 << 10).unwrap();
        model[32 << 10..96 << 10].copy_from_slice(&new);
        check(&model, "an overwrite of whole blocks");
        // Parts of blocks: the daemon reads the rest of each block and writes it whole.
        let new = pattern(3, 10_000);
        f.write_all_at(&new, 5_000).unwrap();
        model[5_000..15_000].copy_from_slice(&new);
        check(&model, "a partial-block overwrite");
        // A truncate into the middle of a block zeroes its tail on disk; extending shows zeros.
        f.set_len(100_001).unwrap();
        model.truncate(100_001);
        check(&model, "a truncate");
        f.set_len(200_000).unwrap();
        model.resize(200_000, 0);
        check(&model, "an extension after a truncate");
        // A punched hole reads as zeros.
        // SAFETY: fallocate on an open descriptor; no memory is passed.
        let r = unsafe {
            use std::os::fd::AsRawFd;
            libc::fallocate(
                f.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                10_000,
                50_000,
            )
        };
        assert_eq!(r, 0, "punch a hole");
        model[10_000..60_000].fill(0);
        check(&model, "a punched hole");
        drop(f);
        drop(m);
        let m = Mount::new(&img, opts);
        assert!(
            fs::read(m.path().join("f")).unwrap() == model,
            "{opts:?}: wrong bytes after a remount"
        );
    }
}

/// The mount's read-ahead window is one largest request per request thread (4 MiB without a
/// tight memory limit), not FUSE's 128 KiB: a sequential reader then keeps every thread busy.
#[test]
fn read_ahead_window_is_a_largest_request_per_thread() {
    use std::os::unix::fs::MetadataExt;
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 64 << 20);
    let m = Mount::new(&img, "");
    let dev = fs::metadata(m.path()).unwrap().dev();
    // A fuseblk mount's bdi is its block device's number with a suffix.
    let name = format!("{}:{}", libc::major(dev), libc::minor(dev));
    let blk = format!("/sys/class/bdi/{name}-fuseblk/read_ahead_kb");
    let knob = if Path::new(&blk).exists() {
        blk
    } else {
        format!("/sys/class/bdi/{name}/read_ahead_kb")
    };
    let report: ticketfs::stats::Report = serde_json::from_str(
        &ticketfs::stats::query(&fs::canonicalize(&img).unwrap(), "json").unwrap(),
    )
    .unwrap();
    let kb = fs::read_to_string(&knob).unwrap();
    let want = report.max_write as usize / 1024 * report.fuse_threads;
    assert_eq!(kb.trim(), want.to_string(), "{knob}");
}

/// A lookup of a missing name is cached as a negative entry; every way a name can appear must
/// replace it at once: create, exclusive create (once: the second is EEXIST), mkdir, symlink,
/// hard link, rename onto it, mknod of a fifo, and a name made again after an unlink or after
/// being renamed away.
#[test]
fn names_appear_at_once_after_a_cached_lookup_found_nothing() {
    use std::os::unix::fs::OpenOptionsExt;
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 64 << 20);
    let m = Mount::new(&img, "");
    let d = m.path();
    let missing = |name: &str| {
        for _ in 0..3 {
            let e = fs::symlink_metadata(d.join(name)).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{name}");
        }
    };
    fs::write(d.join("src"), b"source").unwrap();
    let names = ["create", "excl", "dir", "sym", "link", "renamed", "fifo"];
    for n in names {
        missing(n);
    }
    fs::write(d.join("create"), b"x").unwrap();
    let excl = || {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(d.join("excl"))
    };
    excl().unwrap();
    assert_eq!(
        excl().unwrap_err().kind(),
        std::io::ErrorKind::AlreadyExists
    );
    fs::create_dir(d.join("dir")).unwrap();
    std::os::unix::fs::symlink("src", d.join("sym")).unwrap();
    fs::hard_link(d.join("src"), d.join("link")).unwrap();
    fs::write(d.join("tmp"), b"moved").unwrap();
    fs::rename(d.join("tmp"), d.join("renamed")).unwrap();
    let fifo = std::ffi::CString::new(d.join("fifo").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0, "mkfifo");
    for n in names {
        fs::symlink_metadata(d.join(n)).unwrap_or_else(|e| panic!("{n}: {e}"));
    }
    assert_eq!(fs::read(d.join("renamed")).unwrap(), b"moved");
    assert_eq!(fs::read(d.join("link")).unwrap(), b"source");
    // Gone again (the source of the rename, an unlinked name), then back.
    missing("tmp");
    fs::remove_file(d.join("create")).unwrap();
    missing("create");
    fs::write(d.join("create"), b"again").unwrap();
    assert_eq!(fs::read(d.join("create")).unwrap(), b"again");
    fs::rename(d.join("renamed"), d.join("tmp")).unwrap();
    missing("renamed");
    assert_eq!(fs::read(d.join("tmp")).unwrap(), b"moved");
    // And across a remount (nothing cached): the same names.
    drop(m);
    let m = Mount::new(&img, "");
    for n in ["create", "excl", "dir", "sym", "link", "tmp", "fifo"] {
        fs::symlink_metadata(m.path().join(n)).unwrap_or_else(|e| panic!("{n}: {e}"));
    }
    assert!(fs::symlink_metadata(m.path().join("renamed")).is_err());
}

/// Privileges dropped as the kernel's own filesystems drop them, now that the daemon told the
/// kernel it handles set-id bits (FUSE_HANDLE_KILLPRIV_V2, which spares a GETXATTR of
/// security.capability before each write): a file's capabilities go when anyone writes it,
/// truncates it or gives it away, other attributes stay; root's write keeps set-user-ID, root's
/// chown drops it.
#[test]
fn writes_truncates_and_chowns_drop_capabilities_and_set_id_bits() {
    use std::os::unix::fs::FileExt;
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 64 << 20);
    let m = Mount::new(&img, "");
    // struct vfs_cap_data, revision 2, effective, permitted = CAP_NET_RAW (13).
    let mut caps = Vec::new();
    caps.extend_from_slice(&(0x0200_0000u32 | 1).to_le_bytes());
    for w in [1u32 << 13, 0, 0, 0] {
        caps.extend_from_slice(&w.to_le_bytes());
    }
    let p = m.path().join("capable");
    let reset = || {
        fs::write(&p, b"0123456789").unwrap();
        setx(&p, "security.capability", &caps, 0).unwrap();
        setx(&p, "user.keep", b"kept", 0).unwrap();
        assert_eq!(getx(&p, "security.capability").unwrap(), caps);
    };
    let gone = |what: &str| {
        assert_eq!(
            getx(&p, "security.capability"),
            Err(libc::ENODATA),
            "capabilities after {what}"
        );
        assert_eq!(getx(&p, "user.keep").unwrap(), b"kept", "{what}");
    };
    reset();
    fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .write_all_at(b"x", 3)
        .unwrap();
    gone("a write");
    reset();
    fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(4)
        .unwrap();
    gone("a truncate");
    reset();
    std::os::unix::fs::chown(&p, Some(1), Some(1)).unwrap();
    gone("a chown");
    std::os::unix::fs::chown(&p, Some(0), Some(0)).unwrap();
    // Set-user-ID: kept by root's write, dropped by root's chown.
    fs::set_permissions(&p, fs::Permissions::from_mode(0o4755)).unwrap();
    fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .write_all_at(b"y", 0)
        .unwrap();
    let mode = || fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(), 0o4755, "root's write");
    std::os::unix::fs::chown(&p, Some(0), None).unwrap();
    assert_eq!(mode(), 0o755, "root's chown");
}

/// A fallocate larger than the free space fails at once and changes nothing (issue 17: it used
/// to fill the filesystem, leave the file about 1 GiB long and `stat` showing the old size for
/// the kernel's attribute lifetime). Also zero-range: it frees nothing, so it needs only the
/// holes' blocks, and a refused one leaves the data.
#[test]
fn a_fallocate_larger_than_the_free_space_changes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 256 << 20);
    let m = Mount::new(&img, "");
    let p = m.path().join("f");
    fs::write(&p, pattern(3, 100_000)).unwrap();
    let before = (fs::metadata(&p).unwrap(), nix_statvfs(m.path()));
    let f = fs::OpenOptions::new().write(true).open(&p).unwrap();
    for (mode, what) in [(0, "fallocate"), (0x10, "zero-range")] {
        // SAFETY: a descriptor we own; the kernel checks the range.
        let rc = unsafe { libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&f), mode, 0, 1 << 30) };
        let e = std::io::Error::last_os_error().raw_os_error();
        assert_eq!(
            (rc, e),
            (-1, Some(libc::ENOSPC)),
            "{what} of 1 GiB on 256 MiB"
        );
        let now = fs::metadata(&p).unwrap();
        assert_eq!(
            (now.len(), now.blocks()),
            (before.0.len(), before.0.blocks()),
            "{what}: the file changed"
        );
        assert_eq!(
            nix_statvfs(m.path()),
            before.1,
            "{what}: the free space changed"
        );
        assert_eq!(
            fs::read(&p).unwrap(),
            pattern(3, 100_000),
            "{what}: the data changed"
        );
    }
    drop(f);
    m.unmount();
    // And after a remount (nothing cached): the same.
    let m = Mount::new(&img, "");
    assert_eq!(fs::metadata(m.path().join("f")).unwrap().len(), 100_000);
    m.unmount();
}
