//! What an administrator does to a mounted image (issue 17): remount it read-only and
//! read-write (with mount(8) and with ticketfs's own remount), run mkfs on it (refused, -f or
//! not), and mount it again through another spelling of its path, a symlink or a hard link (the
//! live filesystem shared, or refused, exactly as for its own path).

mod common;

use common::mount::{image, Mount};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn tkfs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ticketfs"))
}

fn mkfs_bin() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_ticketfs")).with_file_name("mkfs-ticketfs")
}

fn erofs(r: std::io::Result<()>) -> bool {
    r.is_err_and(|e| e.raw_os_error() == Some(libc::EROFS))
}

/// `mount -o remount,HOW DIR`. For a plain `fuse` mount (blkdev=off) with `-i`: mount(8) would
/// hand a `fuse` mount's remount to mount.fuse3, which takes the source for a program to run.
fn mount_remount(dir: &Path, how: &str, plain_fuse: bool) {
    let mut cmd = Command::new("mount");
    if plain_fuse {
        cmd.arg("-i");
    }
    let st = cmd
        .args(["-o", &format!("remount,{how}")])
        .arg(dir)
        .status()
        .expect("mount -o remount");
    assert!(st.success(), "mount -o remount,{how} {}", dir.display());
}

/// A read-only mount made writable by a remount writes at once (the daemon follows the
/// superblock: before, /proc/mounts said rw and every write still failed with EROFS); made
/// read-only again, it refuses writes and no read moves an access time, even under
/// strictatime; ticketfs's own `-o remount,rw` does the same.
#[test]
fn remount_read_write_and_read_only_is_followed_by_the_daemon() {
    for opts in [
        "ro,strictatime",
        "ro,strictatime,uring=off",
        "ro,strictatime,blkdev=off",
    ] {
        let work = tempfile::tempdir().unwrap();
        let img = image(work.path(), 128 << 20);
        let m = Mount::new(&img, opts);
        let p = m.path().to_path_buf();
        assert!(
            erofs(fs::write(p.join("a"), b"x")),
            "{opts}: a read-only mount took a write"
        );
        let plain = opts.contains("blkdev=off");
        mount_remount(&p, "rw", plain);
        fs::write(p.join("a"), b"written after remount,rw")
            .unwrap_or_else(|e| panic!("{opts}: write right after mount -o remount,rw: {e}"));
        mount_remount(&p, "ro", plain);
        assert!(
            erofs(fs::write(p.join("b"), b"x")),
            "{opts}: write after remount,ro"
        );
        let before = fs::metadata(p.join("a")).unwrap().atime_nsec();
        let atime_before = fs::metadata(p.join("a")).unwrap().atime();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(fs::read(p.join("a")).unwrap(), b"written after remount,rw");
        // The read dropped the kernel's cached access time: this stat asks the daemon.
        let st = fs::metadata(p.join("a")).unwrap();
        assert_eq!(
            (st.atime(), st.atime_nsec()),
            (atime_before, before),
            "{opts}: a read on a read-only remount moved the access time"
        );
        let st = tkfs()
            .arg(&img)
            .arg(&p)
            .args(["-o", "remount,rw"])
            .status()
            .unwrap();
        assert!(st.success(), "{opts}: ticketfs -o remount,rw");
        fs::write(p.join("c"), b"via ticketfs -o remount,rw")
            .unwrap_or_else(|e| panic!("{opts}: write after ticketfs -o remount,rw: {e}"));
        m.unmount();
        let m = Mount::new(&img, "");
        assert_eq!(
            fs::read(m.path().join("a")).unwrap(),
            b"written after remount,rw"
        );
        assert_eq!(
            fs::read(m.path().join("c")).unwrap(),
            b"via ticketfs -o remount,rw"
        );
        assert!(!m.path().join("b").exists());
        m.unmount();
    }
}

/// mkfs refuses an image that is mounted, with or without -f (mkfs.xfs refuses a mounted
/// device even with -f); before, `mkfs.ticketfs -f` formatted it under the live mount. The
/// mount is untouched afterwards.
#[test]
fn mkfs_refuses_a_mounted_image_even_with_force() {
    for opts in ["", "blkdev=off"] {
        let work = tempfile::tempdir().unwrap();
        let img = image(work.path(), 128 << 20);
        let m = Mount::new(&img, opts);
        fs::write(m.path().join("keep"), b"data").unwrap();
        let link = work.path().join("hard");
        fs::hard_link(&img, &link).unwrap();
        for (target, force) in [(&img, false), (&img, true), (&link, true)] {
            let mut cmd = Command::new(mkfs_bin());
            if force {
                cmd.arg("-f");
            }
            let out = cmd.arg(target).output().unwrap();
            assert!(
                !out.status.success(),
                "{opts}: mkfs {} of a mounted image succeeded",
                if force { "-f" } else { "" }
            );
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("mounted") || err.contains("in use"),
                "{opts}: mkfs's refusal does not say why: {err}"
            );
        }
        assert_eq!(fs::read(m.path().join("keep")).unwrap(), b"data");
        m.unmount();
        let m = Mount::new(&img, "");
        assert_eq!(fs::read(m.path().join("keep")).unwrap(), b"data");
        m.unmount();
    }
}

/// Every name of a mounted image (its path spelled otherwise, a symlink, a hard link) shares
/// the live filesystem; mounted read-only, every name is refused a read-write mount alike.
/// Before, a hard link was refused "locked by another ticketfs" after a 10 s wait while the
/// other names shared the mount.
#[test]
fn every_name_of_a_mounted_image_shares_the_mount_alike() {
    for opts in ["", "blkdev=off"] {
        let work = tempfile::tempdir().unwrap();
        let img = image(work.path(), 128 << 20);
        let hard = work.path().join("hard-link");
        fs::hard_link(&img, &hard).unwrap();
        let sym = work.path().join("sym-link");
        std::os::unix::fs::symlink(&img, &sym).unwrap();
        let dotted = work.path().join(".").join("image");
        let m = Mount::new(&img, opts);
        fs::write(m.path().join("seen"), b"first").unwrap();
        for name in [&hard, &sym, &dotted] {
            let dir = tempfile::tempdir().unwrap();
            let started = std::time::Instant::now();
            let st = tkfs().arg(name).arg(dir.path()).status().unwrap();
            let second = common::mount::Unmounted(dir.path().to_path_buf());
            assert!(st.success(), "{opts}: mounting {} again", name.display());
            assert!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "{opts}: mounting {} again waited {:?}",
                name.display(),
                started.elapsed()
            );
            assert_eq!(
                fs::read(dir.path().join("seen")).unwrap(),
                b"first",
                "{opts}: {} does not share the mount",
                name.display()
            );
            if let Err(e) = common::mount::umount(dir.path()) {
                panic!("{opts}: umount of the second mount: {e}");
            }
            drop(second);
        }
        m.unmount();
        let ro = if opts.is_empty() {
            "ro".to_string()
        } else {
            format!("ro,{opts}")
        };
        let m = Mount::new(&img, &ro);
        for name in [&img, &hard, &sym, &dotted] {
            let dir = tempfile::tempdir().unwrap();
            let out = tkfs().arg(name).arg(dir.path()).output().unwrap();
            assert!(
                !out.status.success(),
                "{opts}: rw mount of {} over ro",
                name.display()
            );
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("already mounted read-only"),
                "{opts}: {} refused otherwise: {err}",
                name.display()
            );
        }
        m.unmount();
    }
}

/// A bad value of a known option is refused with the option named, in one line, exit 1 (the
/// mount helpers' usage error), and nothing is mounted: before, `overrun=foo` mounted with
/// `warn`, `memres=maybe` with `on`, `max_threads=0` with 2 threads and `max_threads=100000`
/// with 256 (issue 21). A near miss of an option's name mounts, with a warning.
#[test]
fn bad_mount_option_values_are_refused_naming_the_option() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 64 << 20);
    let dir = work.path().join("mnt");
    fs::create_dir(&dir).unwrap();
    for list in [
        "overrun=foo",
        "memres=maybe",
        "max_threads=0",
        "max_threads=100000",
        "mem=18446744073709551615",
        "uring=1",
        "rw,verbose=yes",
    ] {
        let out = tkfs()
            .arg(&img)
            .arg(&dir)
            .args(["-o", list])
            .output()
            .unwrap();
        // Mounted after all (the old behaviour): unmounted before anything is asserted, so a
        // failing run leaves no mount behind.
        let mounted = Command::new("mountpoint")
            .arg("-q")
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            let _ = common::mount::umount(&dir);
        }
        let err = String::from_utf8_lossy(&out.stderr);
        let bad = list.rsplit(',').next().unwrap();
        assert!(!mounted, "-o {list}: it mounted");
        assert_eq!(out.status.code(), Some(1), "-o {list}: {err}");
        assert_eq!(err.lines().count(), 1, "-o {list}: one line: {err}");
        assert!(
            err.starts_with(&format!("ticketfs: {bad}")),
            "-o {list}: {err}"
        );
    }
    let m = Mount::new(&img, "overun=panic");
    fs::write(m.path().join("f"), b"x").unwrap();
    m.unmount();
}
