//! Everything a mount acknowledged survives a clean unmount (issue 17): cycles of mount, a
//! workload of writes, zero-range, creates, mkdir, renames, truncates, unlinks and xattrs,
//! umount, then a new mount that must find exactly what the model says, through both transports.
//! And umount returns only once the image is home and released: at that moment its lock is
//! free and fsck finds it clean.
//!
//! The loss this guards against came from an unmount (or a syncfs) that began while the
//! group-commit timer's checkpoint was in flight: it wrote the unmount record over that
//! checkpoint. To meet it, each cycle ends with a commit whose checkpoint flushes cached data,
//! then waits a different time around the timer before the unmount. On the code before the fix
//! both tests failed within their first 10 cycles (cycle 3 and cycle 8 when first run).

mod common;

use common::mount::{image, Mount};
use common::pattern;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// Cycles per transport: the waits sweep the timer's range more than once.
const CYCLES: usize = 40;
/// The waits before each unmount sweep this range (ms), around the 100 ms group-commit timer.
const TIMER_SWEEP_START_MS: u64 = 40;
const TIMER_SWEEP_MS: u64 = 80;
const FALLOC_FL_KEEP_SIZE: i32 = 0x01;
const FALLOC_FL_PUNCH_HOLE: i32 = 0x02;
const FALLOC_FL_ZERO_RANGE: i32 = 0x10;
const KNOB: &str = "/sys/module/fuse/parameters/enable_uring";

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

/// What the tree must hold: per path, the file's bytes (None for a directory) and its xattrs.
#[derive(Default, Clone, PartialEq, Debug)]
struct Node {
    data: Option<Vec<u8>>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

type Model = BTreeMap<String, Node>;

fn fallocate(f: &fs::File, mode: i32, off: u64, len: u64) {
    // SAFETY: a descriptor we own; the kernel checks the range.
    let rc = unsafe { libc::fallocate(f.as_raw_fd(), mode, off as i64, len as i64) };
    assert_eq!(
        rc,
        0,
        "fallocate mode {mode:#x} {off}+{len}: {}",
        std::io::Error::last_os_error()
    );
}

fn setxattr(p: &Path, name: &str, value: &[u8]) {
    let (p, n) = (cpath(p), CString::new(name).expect("name"));
    // SAFETY: NUL-terminated strings and a value buffer that outlive the call.
    let rc = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr {name}: {}",
        std::io::Error::last_os_error()
    );
}

fn xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let c = cpath(p);
    let mut names = vec![0u8; 65536];
    // SAFETY: the buffer is as long as we say.
    let n = unsafe { libc::listxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(
        n >= 0,
        "listxattr {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
    let mut out = BTreeMap::new();
    for name in names[..n as usize]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
    {
        let s = String::from_utf8_lossy(name).into_owned();
        if !s.starts_with("user.") {
            continue;
        }
        let cn = CString::new(name).expect("name");
        let mut v = vec![0u8; 65536];
        // SAFETY: as above.
        let len =
            unsafe { libc::getxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        assert!(
            len >= 0,
            "getxattr {s}: {}",
            std::io::Error::last_os_error()
        );
        v.truncate(len as usize);
        out.insert(s, v);
    }
    out
}

/// The tree under `root` as the model describes it.
fn observe(root: &Path) -> Model {
    let mut out = Model::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("readdir") {
            let p = e.expect("entry").path();
            let rel = p
                .strip_prefix(root)
                .expect("below root")
                .to_string_lossy()
                .into_owned();
            if rel == "lost+found" {
                continue;
            }
            let m = fs::symlink_metadata(&p).expect("lstat");
            let data = if m.is_dir() {
                stack.push(p.clone());
                None
            } else {
                Some(fs::read(&p).expect("read"))
            };
            out.insert(
                rel,
                Node {
                    data,
                    xattrs: xattrs(&p),
                },
            );
        }
    }
    out
}

/// One cycle's work on a mounted tree, mirrored in the model.
fn workload(root: &Path, i: usize, model: &mut Model) {
    let seed = i as u64;
    // A file written in small (cached) pieces, then zeroed in 4 KiB ranges, as generic/033.
    let name = format!("f{i}");
    let mut data = pattern(seed, 256 << 10);
    {
        let f = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(root.join(&name))
            .expect("create");
        for (k, piece) in data.chunks(16 << 10).enumerate() {
            f.write_all_at(piece, (k * (16 << 10)) as u64)
                .expect("write");
        }
        for k in 0..16u64 {
            let off = (k * 3 + seed % 5) * 4096;
            fallocate(&f, FALLOC_FL_ZERO_RANGE, off, 4096);
            data[off as usize..off as usize + 4096].fill(0);
        }
        // A hole punched and preallocation past the end.
        fallocate(
            &f,
            FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
            100 << 10,
            8192,
        );
        data[(100 << 10)..(100 << 10) + 8192].fill(0);
        fallocate(&f, FALLOC_FL_KEEP_SIZE, 256 << 10, 64 << 10);
    }
    // mkdir, and the file renamed into it; an xattr on each.
    let dir = format!("d{i}");
    fs::create_dir(root.join(&dir)).expect("mkdir");
    let moved = format!("{dir}/f");
    fs::rename(root.join(&name), root.join(&moved)).expect("rename");
    let value = pattern(seed + 1, 40 + i % 200);
    setxattr(&root.join(&moved), "user.tag", &value);
    setxattr(
        &root.join(&dir),
        "user.dir",
        format!("cycle {i}").as_bytes(),
    );
    model.insert(
        dir.clone(),
        Node {
            data: None,
            xattrs: BTreeMap::from([("user.dir".to_string(), format!("cycle {i}").into_bytes())]),
        },
    );
    model.insert(
        moved,
        Node {
            data: Some(data),
            xattrs: BTreeMap::from([("user.tag".to_string(), value)]),
        },
    );
    // A file written, then truncated down.
    let t = format!("t{i}");
    let mut body = pattern(seed + 2, 96 << 10);
    fs::write(root.join(&t), &body).expect("write t");
    let keep = 5000 + i * 7;
    fs::OpenOptions::new()
        .write(true)
        .open(root.join(&t))
        .and_then(|f| f.set_len(keep as u64))
        .expect("truncate");
    body.truncate(keep);
    model.insert(
        t,
        Node {
            data: Some(body),
            xattrs: BTreeMap::new(),
        },
    );
    // The previous cycle's truncated file goes; a rename over an existing name.
    if i > 0 {
        let old = format!("t{}", i - 1);
        fs::remove_file(root.join(&old)).expect("unlink");
        model.remove(&old);
        let over = format!("d{}/f", i - 1);
        let small = pattern(seed + 3, 3000);
        fs::write(root.join("over.tmp"), &small).expect("write over.tmp");
        fs::rename(root.join("over.tmp"), root.join(&over)).expect("rename over");
        model.insert(
            over,
            Node {
                data: Some(small),
                xattrs: BTreeMap::new(),
            },
        );
    }
}

/// Makes what came before durable (syncfs), then commits once more, writing cached data to new
/// blocks (so the next checkpoint starts with a flush that takes a while), and waits a
/// different time each cycle around the group-commit timer (100 ms) before the unmount: the
/// timer's checkpoint then starts close to the moment the unmount forces the log.
fn last_commit_then_wait(root: &Path, i: usize, model: &mut Model) {
    let f = fs::File::open(root).expect("open root");
    // SAFETY: a descriptor we own.
    assert_eq!(unsafe { libc::syncfs(f.as_raw_fd()) }, 0, "syncfs");
    let name = format!("last{i}");
    let body = pattern(i as u64 + 7, 4 << 20);
    let mut w = fs::File::create(root.join(&name)).expect("create last");
    for piece in body.chunks(32 << 10) {
        w.write_all(piece).expect("write last");
    }
    drop(w);
    model.insert(
        name,
        Node {
            data: Some(body),
            xattrs: BTreeMap::new(),
        },
    );
    let wait = TIMER_SWEEP_START_MS + (i as u64 * 7) % TIMER_SWEEP_MS;
    std::thread::sleep(std::time::Duration::from_millis(wait));
}

fn fsck_clean(img: &Path) {
    let bin = Path::new(env!("CARGO_BIN_EXE_ticketfs")).with_file_name("fsck-ticketfs");
    let out = std::process::Command::new(&bin)
        .arg("-n")
        .arg(img)
        .output()
        .expect("fsck-ticketfs");
    assert!(
        out.status.success(),
        "fsck -n after the cycles: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn cycles(opts: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = image(dir.path(), 512 << 20);
    let mut model = Model::new();
    for i in 0..CYCLES {
        let m = Mount::new(&img, opts);
        workload(m.path(), i, &mut model);
        last_commit_then_wait(m.path(), i, &mut model);
        m.unmount();
        let m = Mount::new(&img, opts);
        let seen = observe(m.path());
        if seen != model {
            let missing: Vec<_> = model.keys().filter(|k| !seen.contains_key(*k)).collect();
            let differ: Vec<_> = model
                .iter()
                .filter(|(k, v)| seen.get(*k).is_some_and(|s| s != *v))
                .map(|(k, _)| k)
                .collect();
            let extra: Vec<_> = seen.keys().filter(|k| !model.contains_key(*k)).collect();
            panic!(
                "cycle {i} ({opts}): after a clean unmount and a new mount, missing {missing:?}, \
                 different {differ:?}, unexpected {extra:?}"
            );
        }
        m.unmount();
    }
    fsck_clean(&img);
}

#[test]
fn clean_unmount_keeps_everything_through_dev_fuse() {
    cycles("uring=off");
}

#[test]
fn clean_unmount_keeps_everything_through_io_uring() {
    match fs::read_to_string(KNOB) {
        Ok(v) if v.trim() == "Y" => {}
        Ok(_) => {
            common::skip(&format!(
                "{KNOB} is off (scripts/install-test-deps.sh turns it on)"
            ));
            return;
        }
        Err(_) => {
            common::skip(&format!(
                "{KNOB} is missing: this kernel has no FUSE over io_uring"
            ));
            return;
        }
    }
    cycles("uring=on");
}

/// What someone who has just unmounted finds: the image unlocked, its superblock clean, fsck -n
/// clean. `fuseblk` mounts (the default) answer DESTROY only after all of that.
fn released_and_clean(img: &Path) {
    match ticketfs::rundir::try_lock(img) {
        Ok(lock) => drop(lock),
        Err(None) => panic!("the image is still locked by its daemon when umount returns"),
        Err(Some(e)) => panic!("the image's lock: {e}"),
    }
    let db = std::process::Command::new(env!("CARGO_BIN_EXE_ticketfs"))
        .args(["db"])
        .arg(img)
        .arg("sb")
        .output()
        .expect("ticketfs db");
    let text = String::from_utf8_lossy(&db.stdout);
    assert!(
        text.contains("state clean"),
        "superblock when umount returns: {text}"
    );
    fsck_clean(img);
}

fn umount_cycles(opts: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = image(dir.path(), 256 << 20);
    let mut model = Model::new();
    for i in 0..UMOUNT_CYCLES {
        let m = Mount::new(&img, opts);
        workload(m.path(), i, &mut model);
        m.unmount_then(|| released_and_clean(&img));
    }
    let m = Mount::new(&img, opts);
    assert_eq!(
        observe(m.path()),
        model,
        "after {UMOUNT_CYCLES} cycles ({opts})"
    );
    m.unmount();
}

/// Cycles of umount followed at once by the checks: on the code before fuseblk, the lock was
/// still held in every one (issue 17: 60 of 60).
const UMOUNT_CYCLES: usize = 15;

#[test]
fn umount_returns_with_the_image_released_through_dev_fuse() {
    umount_cycles("uring=off");
}

#[test]
fn umount_returns_with_the_image_released_through_io_uring() {
    if !fs::read_to_string(KNOB).is_ok_and(|v| v.trim() == "Y") {
        common::skip(&format!("FUSE over io_uring is not on here ({KNOB})"));
        return;
    }
    umount_cycles("uring=on");
}

/// `-o blkdev=off` mounts the plain `fuse` type with the image's path as the source (what
/// fstests looks for); umount then returns before the daemon is done, which finishes and
/// releases the image on its own.
#[test]
fn blkdev_off_mounts_plain_fuse_named_after_the_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = image(dir.path(), 64 << 20);
    let canon = fs::canonicalize(&img).expect("canonical image path");
    let m = Mount::new(&img, "blkdev=off");
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let point = m.path().to_string_lossy().into_owned();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(point.as_str()))
        .expect("the mount in mountinfo");
    let (_, right) = line.split_once(" - ").expect("mountinfo separator");
    let mut r = right.split(' ');
    assert_eq!(r.next(), Some("fuse"), "{line}");
    assert_eq!(
        r.next(),
        Some(canon.to_str().expect("utf-8 path")),
        "{line}"
    );
    fs::write(m.path().join("x"), b"y").expect("write");
    m.unmount();
    fsck_clean(&img);
    let m = Mount::new(&img, "");
    assert_eq!(fs::read(m.path().join("x")).expect("read"), b"y");
    m.unmount();
}

/// sync(2) and syncfs(2) reach the daemon on a fuseblk mount (FUSE_SYNCFS, which the kernel
/// sends to fuseblk mounts only; the daemon answered ENOSYS before, so they did nothing): what
/// was written before a syncfs survives the daemon being killed right after it.
#[test]
fn syncfs_makes_everything_durable_on_fuseblk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = image(dir.path(), 128 << 20);
    let m = Mount::new(&img, "");
    let mut model = Model::new();
    workload(m.path(), 0, &mut model);
    let f = fs::File::open(m.path()).expect("open root");
    // SAFETY: a descriptor we own.
    assert_eq!(unsafe { libc::syncfs(f.as_raw_fd()) }, 0, "syncfs");
    drop(f);
    m.kill();
    let m = Mount::new(&img, "");
    assert_eq!(observe(m.path()), model, "after syncfs and a killed daemon");
    m.unmount();
}

/// FS_IOC_SHUTDOWN (XFS_IOC_GOINGDOWN) on `dir` with `flags`, as godown and `xfs_io -x -c
/// shutdown` send it; the errno on failure.
fn shutdown_ioctl(dir: &Path, flags: u32) -> Result<(), i32> {
    const FS_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587D;
    let f = fs::File::open(dir).expect("open the mount point");
    let mut word = flags;
    // SAFETY: the ioctl reads (or writes back) one u32 at the address we pass.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_SHUTDOWN, &mut word) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

/// The shutdown ioctl (fstests' godown, `xfs_io -x -c shutdown`), through both transports:
/// with LOGFLUSH, everything done before it is there after the next mount (which replays the
/// log); with NOLOGFLUSH, everything fsync'd before it is. Either way every later operation
/// fails with EIO and the image is fsck-clean after the replay. Before, the ioctl was ENOTTY
/// and fstests' 16 shutdown tests of -g quick did not run.
#[test]
fn shutdown_ioctl_stops_the_filesystem_and_the_next_mount_recovers() {
    for opts in ["", "uring=off"] {
        for (flags, name) in [(1u32, "logflush"), (2, "nologflush")] {
            let dir = tempfile::tempdir().expect("tempdir");
            let img = image(dir.path(), 128 << 20);
            let m = Mount::new(&img, opts);
            let mut model = Model::new();
            workload(m.path(), 0, &mut model);
            let f = fs::File::open(m.path()).expect("open root");
            // SAFETY: a descriptor we own.
            assert_eq!(unsafe { libc::syncfs(f.as_raw_fd()) }, 0);
            drop(f);
            // Done after the last sync: kept by a log flush, maybe lost without one.
            fs::write(m.path().join("late"), b"after the sync").expect("write late");
            if flags == 1 {
                model.insert(
                    "late".into(),
                    Node {
                        data: Some(b"after the sync".to_vec()),
                        xattrs: BTreeMap::new(),
                    },
                );
            }
            assert_eq!(
                shutdown_ioctl(m.path(), flags),
                Ok(()),
                "{opts} {name}: ioctl"
            );
            let e = fs::write(m.path().join("after"), b"x").expect_err("write after shutdown");
            assert_eq!(
                e.raw_os_error(),
                Some(libc::EIO),
                "{opts} {name}: write after shutdown"
            );
            // The daemon reports that it could not finish the unmount (exit 1): the image
            // stays for the next mount to replay.
            m.unmount_any_exit();
            let m = Mount::new(&img, opts);
            let mut seen = observe(m.path());
            if flags == 2 {
                seen.remove("late");
            }
            assert_eq!(
                seen, model,
                "{opts} {name}: after the shutdown and a new mount"
            );
            assert!(!m.path().join("after").exists());
            m.unmount();
            fsck_clean(&img);
        }
    }
}

/// Only root may shut the filesystem down (XFS asks for CAP_SYS_ADMIN); anyone else gets
/// EPERM and the filesystem goes on.
#[test]
fn shutdown_ioctl_is_for_root_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = image(dir.path(), 64 << 20);
    let m = Mount::new(&img, "allow_other");
    // SAFETY: chmod of our own mount point so another user may open it.
    let cdir = cpath(m.path());
    unsafe { libc::chmod(cdir.as_ptr(), 0o755) };
    // A child that becomes nobody and asks; its exit status is the errno (0: allowed).
    let path = cpath(m.path());
    // SAFETY: the child only makes async-signal-safe calls (setgid, setuid, open, ioctl,
    // _exit) before it exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        common::close_inherited_fds();
        unsafe {
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                libc::_exit(100);
            }
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY);
            if fd < 0 {
                libc::_exit(101);
            }
            let mut flags: u32 = 1;
            let rc = libc::ioctl(fd, 0x8004_587D as libc::c_ulong, &mut flags);
            let e = *libc::__errno_location();
            libc::_exit(if rc == 0 { 0 } else { e });
        }
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status), "child: {status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), libc::EPERM, "shutdown by nobody");
    fs::write(m.path().join("still"), b"up").expect("the filesystem goes on");
    m.unmount();
}
