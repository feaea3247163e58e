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

/// `img` mounted (with a file "keep" written in it) and the loop device the mount goes through;
/// None, with the skip reported, where the mount fell back to a plain fuse mount.
fn mounted_through_a_loop(img: &Path) -> Option<(Mount, String)> {
    let m = Mount::new(img, "");
    fs::write(m.path().join("keep"), b"data").unwrap();
    let out = Command::new("findmnt")
        .args(["-n", "-o", "SOURCE"])
        .arg(m.path())
        .output()
        .unwrap();
    let source = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !source.starts_with("/dev/loop") {
        m.unmount();
        common::skip("no loop device for the mount here (blkdev fell back to a plain fuse mount)");
        return None;
    }
    Some((m, source))
}

/// The loop device a mount goes through is the mounted image too: mkfs -f and fsck of
/// /dev/loopN are refused while it is mounted (before, mkfs -f formatted the live filesystem
/// under the mount and fsck -y repaired it), and mounting /dev/loopN again shares the mount.
#[test]
fn the_loop_device_of_a_mount_is_refused_as_the_image_is() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 128 << 20);
    let Some((m, source)) = mounted_through_a_loop(&img) else {
        return;
    };
    let fsck = mkfs_bin().with_file_name("fsck-ticketfs");
    for (bin, args, code) in [
        (mkfs_bin(), vec!["-f"], 1),
        (fsck.clone(), vec!["-y"], 8),
        (fsck, vec!["-n"], 8),
    ] {
        let out = Command::new(&bin)
            .args(&args)
            .arg(&source)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{bin:?} {args:?} {source}: {err}"
        );
        assert!(
            err.contains("mounted") || err.contains("in use"),
            "{bin:?} {args:?} {source}: the refusal does not say why: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let st = tkfs().arg(&source).arg(dir.path()).status().unwrap();
    let second = common::mount::Unmounted(dir.path().to_path_buf());
    assert!(st.success(), "mounting {source} again");
    assert_eq!(fs::read(dir.path().join("keep")).unwrap(), b"data");
    drop(second);
    m.unmount();
    let out = Command::new(mkfs_bin().with_file_name("fsck-ticketfs"))
        .arg("-n")
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// What cannot hold an image is refused at once in one line: a FIFO used to block mkfs, fsck,
/// db and the mount forever; a directory and a character device are typos.
#[test]
fn a_fifo_or_a_character_device_is_refused_at_once() {
    let work = tempfile::tempdir().unwrap();
    let fifo = work.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let mnt = tempfile::tempdir().unwrap();
    let fsck = mkfs_bin().with_file_name("fsck-ticketfs");
    let tk = PathBuf::from(env!("CARGO_BIN_EXE_ticketfs"));
    for target in [fifo.as_path(), Path::new("/dev/null"), work.path()] {
        let t = target.to_str().unwrap();
        let m = mnt.path().to_str().unwrap();
        for (bin, args, code) in [
            (mkfs_bin(), vec!["-s", "64M", t], 1),
            (mkfs_bin(), vec!["-f", t], 1),
            (fsck.clone(), vec!["-n", t], 8),
            (tk.clone(), vec!["db", t, "sb"], 1),
            (tk.clone(), vec![t, m], 32),
        ] {
            let mut child = Command::new(&bin)
                .args(&args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            let st = loop {
                if let Some(st) = child.try_wait().unwrap() {
                    break st;
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{bin:?} {args:?} still running after 20 s");
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            };
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            assert_eq!(st.code(), Some(code), "{bin:?} {args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{bin:?} {args:?}: {err}");
        }
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

/// The mount options of `dir` (the VFS's list: ro/rw, nosuid, nodev, ...).
fn vfs_options(dir: &Path) -> Vec<String> {
    let out = Command::new("findmnt")
        .args(["-n", "-o", "VFS-OPTIONS"])
        .arg(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or("").trim().to_string();
    last.split(',').map(str::to_string).collect()
}

/// ticketfs's remount changes only a ticketfs mount, and only the flags it names: before, it
/// remounted any mount point (a tmpfs, /) and took off every flag not named, so `-o remount,ro`
/// of an image mounted nosuid,nodev (as an image owned by another user must be) made its
/// set-user-ID files work again.
#[test]
fn remount_keeps_the_flags_it_does_not_name_and_only_touches_ticketfs() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 128 << 20);
    let odir = work.path().join("o");
    fs::create_dir(&odir).unwrap();
    let other = image(&odir, 64 << 20);
    let m = Mount::new(&img, "nosuid,nodev,noexec");
    let dir = m.path().to_path_buf();
    let remount = |opts: &str, image: &Path, at: &Path| {
        tkfs()
            .arg(image)
            .arg(at)
            .args(["-o", opts])
            .output()
            .unwrap()
    };
    let out = remount("remount,ro", &img, &dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let o = vfs_options(&dir);
    for f in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(o.contains(&f.to_string()), "after remount,ro: {o:?}");
    }
    let out = remount("remount,rw,suid", &img, &dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let o = vfs_options(&dir);
    assert!(
        o.contains(&"rw".to_string()) && !o.contains(&"nosuid".to_string()),
        "{o:?}"
    );
    assert!(
        o.contains(&"nodev".to_string()) && o.contains(&"noexec".to_string()),
        "{o:?}"
    );
    // Another image's name, a directory that is not a mount, a mount of another filesystem.
    let out = remount("remount,ro", &other, &dir);
    assert_eq!(out.status.code(), Some(32));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not of"));
    assert!(vfs_options(&dir).contains(&"rw".to_string()));
    let plain = tempfile::tempdir().unwrap();
    let out = remount("remount,ro", &img, plain.path());
    assert_eq!(out.status.code(), Some(32));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a ticketfs mount"));
    let tmp = tempfile::tempdir().unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "nosuid,nodev,size=1m", "tmpfs"])
        .arg(tmp.path())
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    let guard = common::mount::Unmounted(tmp.path().to_path_buf());
    let out = remount("remount,ro", &img, tmp.path());
    let o = vfs_options(tmp.path());
    drop(guard);
    assert_eq!(out.status.code(), Some(32), "a tmpfs was remounted");
    assert!(
        o.contains(&"rw".to_string()) && o.contains(&"nosuid".to_string()),
        "the tmpfs changed: {o:?}"
    );
    // A mount read-only by itself (a bind remount) stays read-only when ro is not named.
    let st = Command::new("mount")
        .args(["-o", "remount,bind,ro"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(st.success(), "mount -o remount,bind,ro");
    let out = remount("remount,nosuid", &img, &dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let o = vfs_options(&dir);
    assert!(
        o.contains(&"ro".to_string()) && o.contains(&"nosuid".to_string()),
        "{o:?}"
    );
    let out = remount("remount,rw", &img, &dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A tmpfs mounted over the ticketfs: the topmost mount there is not ticketfs's.
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs over the ticketfs");
    let over = common::mount::Unmounted(dir.clone());
    let out = remount("remount,ro", &img, &dir);
    let o = vfs_options(&dir);
    drop(over);
    assert_eq!(
        out.status.code(),
        Some(32),
        "the tmpfs on top was remounted"
    );
    assert!(
        o.contains(&"rw".to_string()),
        "the tmpfs on top changed: {o:?}"
    );
    m.unmount();
}

/// A mount whose daemon was killed is not shared by a second mount (before, the second mount
/// "succeeded" and every access to it failed with ENOTCONN), and mounting on the dead mount
/// point says what it is instead of "not a directory".
#[test]
fn a_mount_whose_daemon_is_gone_is_not_mounted_again() {
    for opts in ["overrun=panic", "blkdev=off,overrun=panic"] {
        let work = tempfile::tempdir().unwrap();
        let img = image(work.path(), 128 << 20);
        let first = tempfile::tempdir().unwrap();
        let mut daemon = tkfs()
            .arg(&img)
            .arg(first.path())
            .args(["-f", "-o", opts])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let dead = common::mount::Unmounted(first.path().to_path_buf());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while vfs_options(first.path()).len() < 2 {
            assert!(std::time::Instant::now() < deadline, "{opts}: not mounted");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        daemon.kill().unwrap();
        daemon.wait().unwrap();
        let second = tempfile::tempdir().unwrap();
        for at in [second.path(), first.path()] {
            let out = tkfs().arg(&img).arg(at).output().unwrap();
            let _stray = common::mount::Unmounted(at.to_path_buf());
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(32),
                "{opts} {}: {err}",
                at.display()
            );
            assert!(
                err.contains("daemon is gone"),
                "{opts} {}: {err}",
                at.display()
            );
            assert_eq!(err.lines().count(), 1, "{err}");
        }
        drop(dead);
    }
}

/// The loop device of a mount whose image file was deleted (or renamed) is still that mounted
/// image: its identity is the file the loop driver holds, not the path sysfs shows. Before,
/// the deleted file's path no longer led anywhere, /dev/loopN became a device of its own, and a
/// second daemon could take it beside the first.
#[test]
fn the_loop_device_of_a_mount_stays_the_image_when_its_file_is_deleted() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 128 << 20);
    let Some((m, source)) = mounted_through_a_loop(&img) else {
        return;
    };
    fs::remove_file(&img).unwrap();
    let out = Command::new(mkfs_bin())
        .arg("-f")
        .arg(&source)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let out = tkfs().arg(&source).arg(dir.path()).output().unwrap();
    let second = common::mount::Unmounted(dir.path().to_path_buf());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(dir.path().join("keep")).unwrap(), b"data");
    drop(second);
    m.unmount();
}

/// A loop device this test attached (`losetup -f --show FILE`), detached by its name when
/// dropped, so a test that fails leaves none behind.
struct Loop(String);

impl Loop {
    /// None, with the skip reported, where no loop device can be had.
    fn attach(file: &Path) -> Option<Loop> {
        let out = match Command::new("losetup")
            .args(["-f", "--show"])
            .arg(file)
            .output()
        {
            Ok(o) => o,
            Err(e) => {
                common::skip(&format!("losetup: {e} (Debian package mount)"));
                return None;
            }
        };
        if !out.status.success() {
            common::skip(&format!(
                "no loop device here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            return None;
        }
        Some(Loop(
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        ))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// Opens `dev` with O_EXCL, as mkfs.ext4 and the kernel's mount claim a block device: the
/// claim, or the errno.
fn claim(dev: &str) -> Result<fs::File, i32> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(dev)
        .map_err(|e| e.raw_os_error().unwrap_or(0))
}

/// mkfs -f and fsck -n/-y of `target`: each refused with its exit status, in one line saying
/// why (`why`).
fn assert_tools_refuse(target: &Path, why: &str, what: &str) {
    let fsck = mkfs_bin().with_file_name("fsck-ticketfs");
    for (bin, args, code) in [
        (mkfs_bin(), vec!["-f"], 1),
        (fsck.clone(), vec!["-y"], 8),
        (fsck, vec!["-n"], 8),
    ] {
        let out = Command::new(&bin).args(&args).arg(target).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{what}: {bin:?} {args:?}: {err}"
        );
        assert!(err.contains(why), "{what}: {bin:?} {args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{what}: {err}");
    }
}

/// A block device served through a plain fuse mount (`-o blkdev=off`) is claimed (O_EXCL) by
/// its daemon for the life of the mount, as the kernel claims a fuseblk mount's: before, the
/// kernel saw it free, and mkfs.ext4 -F formatted it and mount(8) mounted ext4 on it under the
/// live ticketfs.
#[test]
fn a_block_device_mounted_as_plain_fuse_is_claimed() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 64 << 20);
    let Some(lo) = Loop::attach(&img) else {
        return;
    };
    let m = Mount::new(Path::new(&lo.0), "blkdev=off");
    fs::write(m.path().join("keep"), b"data").unwrap();
    assert_eq!(
        claim(&lo.0).err(),
        Some(libc::EBUSY),
        "{} served as plain fuse is free to O_EXCL",
        lo.0
    );
    assert_tools_refuse(
        Path::new(&lo.0),
        "mounted",
        "blkdev=off mount of a loop device",
    );
    assert_eq!(fs::read(m.path().join("keep")).unwrap(), b"data");
    m.unmount();
    let c = claim(&lo.0);
    assert!(c.is_ok(), "{} still claimed after the unmount: {c:?}", lo.0);
    drop(c);
    common::mount::assert_fsck_clean(&img, "the blkdev=off mount");
}

/// Runs the shell `script` in `work` (made theirs) as user nobody, with `work` as home.
fn as_nobody(work: &Path, script: &str) -> std::process::Output {
    let user = common::NOBODY;
    std::os::unix::fs::chown(work, Some(user), Some(user)).unwrap();
    Command::new("setpriv")
        .args([
            &format!("--reuid={user}"),
            &format!("--regid={user}"),
            "--clear-groups",
            "env",
            "-u",
            "XDG_RUNTIME_DIR",
        ])
        .arg(format!("HOME={}", work.display()))
        .args([
            "sh",
            "-c",
            &format!("set -e; cd {}; {script}", work.display()),
        ])
        .output()
        .expect("setpriv")
}

/// User nobody's image `img` in `work`, its root directory theirs.
fn mkfs_as_nobody(work: &Path) -> PathBuf {
    let out = as_nobody(
        work,
        &format!(
            "{} -s 64M --root-owner img >/dev/null",
            mkfs_bin().display()
        ),
    );
    assert!(
        out.status.success(),
        "the user's mkfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    work.join("img")
}

/// User nobody mounts `work`/img through fusermount3 on `work`/m and writes `keep` there: the
/// run's output, and the mount point, unmounted when dropped.
fn mount_as_nobody(work: &Path) -> (std::process::Output, common::mount::Unmounted) {
    let script = format!(
        "mkdir m; {} img m; echo data > m/keep",
        env!("CARGO_BIN_EXE_ticketfs")
    );
    // The guard first: a mount the script made is unmounted whatever it answered.
    let point = common::mount::Unmounted(work.join("m"));
    (as_nobody(work, &script), point)
}

/// An image another user mounted (their own, through fusermount3) is in use to root too: mkfs
/// -f and fsck are refused (before, root's mount table view and lock left it out, fsck -n
/// called it clean and mkfs -f formatted it under the live mount).
#[test]
fn an_image_another_user_mounted_is_refused_to_root() {
    if let Some(why) = common::user_fuse_missing() {
        common::skip(&why);
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let img = mkfs_as_nobody(work.path());
    let (out, mounted) = mount_as_nobody(work.path());
    assert!(
        out.status.success(),
        "the user's mount: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_tools_refuse(&img, "in use", "another user's mount");
    let link = work.path().join("link");
    fs::hard_link(&img, &link).unwrap();
    assert_tools_refuse(&link, "in use", "another user's mount, by a hard link");
    // (Root may not look into another user's mount without allow_other: checked after.)
    drop(mounted);
    // A plain fuse mount's daemon writes home after umount returns: fsck waits for it.
    let fsck = mkfs_bin().with_file_name("fsck-ticketfs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !Command::new(&fsck)
        .arg("-n")
        .arg(&img)
        .output()
        .unwrap()
        .status
        .success()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    common::mount::assert_fsck_clean(&img, "the user's mount");
    let m = Mount::new(&img, "nosuid,nodev");
    assert_eq!(fs::read(m.path().join("keep")).unwrap(), b"data\n");
    m.unmount();
}

/// A mount that starts while the image is flocked exclusively must still be in use to root once
/// it is live. Held by root (its mkfs or fsck at work): the mount is refused. Held by a user who
/// may only read the image (anyone can flock a file they can open): the owner's mount goes on
/// and waits for its shared lock; root's mkfs -f and fsck still refuse the image, finding the
/// daemon by its open descriptor, and by its lock once the reader has let go. Before, the mount went on unclaimed in both cases and root's
/// mkfs -f formatted it under the live mount, root's mount table view leaving another user's
/// fuse mount out.
#[test]
fn a_mount_started_under_an_exclusive_flock_is_still_in_use() {
    if let Some(why) = common::user_fuse_missing() {
        common::skip(&why);
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let img = mkfs_as_nobody(work.path());
    let held = fs::File::open(&img).unwrap();
    // SAFETY: flock on a descriptor we own.
    assert_eq!(
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&held), libc::LOCK_EX) },
        0
    );
    let (out, mounted) = mount_as_nobody(work.path());
    drop(held);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("in use: locked by process"),
        "a mount while root holds LOCK_EX: {} {err}",
        out.status
    );
    drop(mounted);
    fs::remove_dir(work.path().join("m")).unwrap();

    // A reader's lock: another uid, the image made readable to it.
    fs::set_permissions(&img, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let script = format!(
        "import fcntl,time\n\
         f=open({img:?},'rb'); fcntl.flock(f,fcntl.LOCK_EX)\n\
         print('ready',flush=True); time.sleep(60)",
        img = img.display().to_string()
    );
    let mut squat = Command::new("setpriv")
        .args(["--reuid=12345", "--regid=12345", "--clear-groups"])
        .args(["/usr/bin/python3", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("setpriv python3");
    let mut ready = String::new();
    let _ = std::io::BufRead::read_line(
        &mut std::io::BufReader::new(squat.stdout.as_mut().unwrap()),
        &mut ready,
    );
    let (out, mounted) = mount_as_nobody(work.path());
    let status = out.status.success();
    let tools = std::panic::catch_unwind(|| {
        assert_tools_refuse(
            &img,
            "in use: a ticketfs mount has it open",
            "a reader's LOCK_EX",
        )
    });
    let _ = squat.kill();
    let _ = squat.wait();
    assert_eq!(ready.trim(), "ready", "the reader did not start");
    assert!(
        status,
        "the owner's mount with a reader's LOCK_EX: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if let Err(e) = tools {
        drop(mounted);
        std::panic::resume_unwind(e);
    }
    // The reader let go: the daemon, waiting for its shared lock, holds it now.
    let held_by_daemon = || {
        fs::read_to_string("/proc/locks")
            .unwrap()
            .lines()
            .any(|l| l.contains(&format!(":{} ", fs::metadata(&img).unwrap().ino())))
    };
    for _ in 0..100 {
        if held_by_daemon() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_tools_refuse(&img, "in use: locked by process", "after the reader let go");
    drop(mounted);
}

/// An image file a loop device maps, while that device is in use (a kernel filesystem mounted
/// on it, or held O_EXCL by a program), is refused by mkfs -f and fsck, as mkfs.ext4 -F refuses
/// the file behind a mounted loop device ("is mounted; will not make a filesystem here!");
/// before, mkfs.ticketfs -f formatted it. An idle loop device does not stop them (nor mke2fs).
#[test]
fn an_image_file_behind_a_busy_loop_device_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 64 << 20);
    let Some(lo) = Loop::attach(&img) else {
        return;
    };
    let held = claim(&lo.0).expect("O_EXCL of an idle loop device");
    assert_tools_refuse(&img, &lo.0, "a loop device held O_EXCL");
    drop(held);
    let out = Command::new(mkfs_bin())
        .arg("-f")
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mkfs -f behind an idle loop device: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(lo);
    // A kernel filesystem mounted from the loop device.
    if Command::new("mkfs.ext4").arg("-V").output().is_err() {
        common::skip("mkfs.ext4 is missing (Debian package e2fsprogs)");
        return;
    }
    let e4 = work.path().join("ext4");
    fs::File::create(&e4).unwrap().set_len(64 << 20).unwrap();
    let st = Command::new("mkfs.ext4")
        .arg("-q")
        .arg(&e4)
        .status()
        .unwrap();
    assert!(st.success(), "mkfs.ext4");
    let Some(lo) = Loop::attach(&e4) else {
        return;
    };
    let dir = work.path().join("k");
    fs::create_dir(&dir).unwrap();
    let st = Command::new("mount")
        .args(["-t", "ext4", &lo.0])
        .arg(&dir)
        .status()
        .unwrap();
    let mounted = common::mount::Unmounted(dir.clone());
    assert!(st.success(), "mount -t ext4 {}", lo.0);
    fs::write(dir.join("keep"), b"data").unwrap();
    assert_tools_refuse(&e4, &lo.0, "an ext4 mounted from the loop device");
    assert_eq!(fs::read(dir.join("keep")).unwrap(), b"data");
    drop(mounted);
    drop(lo);
}

/// A block device another user may write (their own disk, or a loop device given to them),
/// mounted by that user: the mount goes through fusermount3 as plain fuse, but `serve` left
/// the claim to the kernel whenever `blkdev` was on and the image a block device, and the
/// kernel claims only a fuseblk mount's device (root's). Nothing held the device: root's mkfs
/// -f and fsck -y wrote it under the live mount. The daemon now claims it itself.
#[test]
fn a_block_device_another_user_mounted_is_claimed() {
    if let Some(why) = common::user_fuse_missing() {
        common::skip(&why);
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let img = mkfs_as_nobody(work.path());
    let Some(lo) = Loop::attach(&img) else {
        return;
    };
    std::os::unix::fs::chown(&lo.0, Some(common::NOBODY), None).unwrap();
    let script = format!(
        "mkdir m; {} {} m; echo data > m/keep",
        env!("CARGO_BIN_EXE_ticketfs"),
        lo.0
    );
    let mounted = common::mount::Unmounted(work.path().join("m"));
    let out = as_nobody(work.path(), &script);
    assert!(
        out.status.success(),
        "the user's mount of {}: {}",
        lo.0,
        String::from_utf8_lossy(&out.stderr)
    );
    let c = claim(&lo.0);
    let is_busy = c.as_ref().err() == Some(&libc::EBUSY);
    drop(c);
    drop(mounted);
    assert!(
        is_busy,
        "{} mounted by another user is free to O_EXCL",
        lo.0
    );
}
