//! What XFS gives beyond the plain file calls, on a real mount (issue 22): RENAME_WHITEOUT and
//! whiteouts, O_TMPFILE with linkat, overlayfs with ticketfs as its upper layer, and the birth
//! time and the inode flags' attributes through statx(2).

mod common;

use common::mount::{assert_fsck_clean, image, Mount};
use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::io::{AsRawFd, FromRawFd};
use std::path::Path;
use std::process::Command;

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// renameat2(2) (no libc wrapper on every libc): Ok, or the errno.
fn renameat2(from: &Path, to: &Path, flags: u32) -> Result<(), i32> {
    let (f, t) = (cpath(from), cpath(to));
    // SAFETY: two NUL-terminated paths relative to the working directory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// Files in use on the filesystem at `p` (statvfs's inodes less the free ones).
fn inodes_used(p: &Path) -> u64 {
    let c = cpath(p);
    // SAFETY: statvfs fills the zeroed struct for a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0, "statvfs");
    st.f_files - st.f_ffree
}

fn assert_whiteout(p: &Path) {
    let md = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert!(
        md.file_type().is_char_device(),
        "{} is not a whiteout",
        p.display()
    );
    assert_eq!(md.rdev(), 0, "a whiteout is device 0:0");
    assert_eq!(md.mode() & 0o7777, 0, "a whiteout has no permission bits");
}

/// RENAME_WHITEOUT moves the file and leaves a 0:0 character device at the old name, over an
/// existing target and for a directory moving to another parent, for root and for a user; with
/// RENAME_EXCHANGE it is EINVAL. The image checks clean afterwards and the whiteouts survive a
/// remount.
#[test]
fn rename_whiteout_leaves_a_whiteout_device() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path(), 64 << 20);
    let m = Mount::new(&img, "allow_other");
    let d = m.path();
    fs::write(d.join("a"), b"alpha").unwrap();
    fs::write(d.join("b"), b"beta").unwrap();
    fs::write(d.join("over"), b"old").unwrap();
    fs::create_dir_all(d.join("p/sub")).unwrap();
    fs::create_dir(d.join("q")).unwrap();

    renameat2(&d.join("a"), &d.join("a2"), libc::RENAME_WHITEOUT).expect("whiteout rename");
    assert_whiteout(&d.join("a"));
    assert_eq!(fs::read(d.join("a2")).unwrap(), b"alpha");

    renameat2(&d.join("b"), &d.join("over"), libc::RENAME_WHITEOUT).expect("over a target");
    assert_whiteout(&d.join("b"));
    assert_eq!(fs::read(d.join("over")).unwrap(), b"beta");

    let nlink = |p: &Path| fs::metadata(p).unwrap().nlink();
    let (p_before, q_before) = (nlink(&d.join("p")), nlink(&d.join("q")));
    renameat2(&d.join("p/sub"), &d.join("q/sub"), libc::RENAME_WHITEOUT).expect("a directory");
    assert_whiteout(&d.join("p/sub"));
    assert!(d.join("q/sub").is_dir());
    assert_eq!(
        nlink(&d.join("p")),
        p_before - 1,
        "the moved directory's .. left p"
    );
    assert_eq!(nlink(&d.join("q")), q_before + 1);

    assert_eq!(
        renameat2(
            &d.join("a2"),
            &d.join("over"),
            libc::RENAME_WHITEOUT | libc::RENAME_EXCHANGE
        ),
        Err(libc::EINVAL)
    );
    // A user may leave whiteouts too (unprivileged since Linux 5.8, as on ext4 and XFS): the
    // whiteout is the user's.
    fs::create_dir(d.join("u")).unwrap();
    Command::new("chown")
        .arg("65534:65534")
        .arg(d.join("u"))
        .status()
        .unwrap();
    let st = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg("sh")
        .arg("-c")
        .arg(format!(
            "touch {0}/x && python3 -c 'import ctypes,sys; l=ctypes.CDLL(None,use_errno=True); \
             r=l.syscall(316,-100,b\"{0}/x\",-100,b\"{0}/y\",4); \
             sys.exit(ctypes.get_errno() if r else 0)'",
            d.join("u").display()
        ))
        .status()
        .expect("setpriv");
    assert_eq!(st.code(), Some(0), "RENAME_WHITEOUT as a user");
    assert_whiteout(&d.join("u/x"));
    assert_eq!(fs::symlink_metadata(d.join("u/x")).unwrap().uid(), 65534);
    drop(m);

    let m = Mount::new(&img, "");
    assert_whiteout(&m.path().join("a"));
    assert_whiteout(&m.path().join("p/sub"));
    m.unmount();
    assert_fsck_clean(&img, "whiteout renames");
}

fn open_tmpfile(dir: &Path, flags: i32) -> Result<fs::File, i32> {
    let c = cpath(dir);
    // SAFETY: open(2) of a NUL-terminated path; the descriptor is owned by the File.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_TMPFILE | flags, 0o640) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    Ok(unsafe { fs::File::from_raw_fd(fd) })
}

fn link_fd(f: &fs::File, to: &Path) -> Result<(), i32> {
    let (empty, t) = (CString::default(), cpath(to));
    // SAFETY: linkat(2) of an open descriptor (AT_EMPTY_PATH) to a NUL-terminated path.
    let r = unsafe {
        libc::linkat(
            f.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// generic/004 and generic/530-style: an O_TMPFILE file has no name and no link; written, then
/// linked with linkat it is a file like any other; one closed unlinked is freed at once; one
/// opened O_EXCL cannot be linked; one open when the daemon is killed is freed by the next
/// mount. fsck is clean after each.
#[test]
fn tmpfile_is_unnamed_until_linked_and_freed_when_not() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path(), 64 << 20);
    let m = Mount::new(&img, "");
    let d = m.path();
    fs::create_dir(d.join("dir")).unwrap();
    let base = inodes_used(d);

    let mut f = open_tmpfile(&d.join("dir"), libc::O_RDWR).expect("O_TMPFILE");
    f.write_all(b"unnamed contents").unwrap();
    let md = f.metadata().unwrap();
    assert_eq!(md.nlink(), 0);
    assert_eq!(md.mode() & 0o7777, 0o640 & !0o022 & 0o7777);
    assert_eq!(
        fs::read_dir(d.join("dir")).unwrap().count(),
        0,
        "no name yet"
    );
    assert_eq!(inodes_used(d), base + 1);
    link_fd(&f, &d.join("dir/named")).expect("linkat");
    drop(f);
    let mut s = String::new();
    fs::File::open(d.join("dir/named"))
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    assert_eq!(s, "unnamed contents");
    assert_eq!(fs::metadata(d.join("dir/named")).unwrap().nlink(), 1);

    let mut g = open_tmpfile(d, libc::O_RDWR).expect("second O_TMPFILE");
    g.write_all(&vec![7u8; 256 << 10]).unwrap();
    assert_eq!(inodes_used(d), base + 2);
    drop(g);
    // The kernel sends the release after close(2) returns.
    settles(
        || inodes_used(d) == base + 1,
        "closed without a link: freed",
    );

    let x = open_tmpfile(d, libc::O_RDWR | libc::O_EXCL).expect("O_TMPFILE|O_EXCL");
    assert_eq!(link_fd(&x, &d.join("never")), Err(libc::ENOENT));
    drop(x);

    // Open when the daemon dies: the next mount frees it.
    let mut k = open_tmpfile(d, libc::O_RDWR).expect("third O_TMPFILE");
    k.write_all(b"lost").unwrap();
    k.sync_all().unwrap();
    assert_eq!(inodes_used(d), base + 2);
    m.kill();
    drop(k);
    let m = Mount::new(&img, "");
    assert_eq!(inodes_used(m.path()), base + 1, "the orphan freed at mount");
    assert_eq!(
        fs::read(m.path().join("dir/named")).unwrap(),
        b"unnamed contents"
    );
    m.unmount();
    assert_fsck_clean(&img, "tmpfiles");
}

/// The usual container setup: overlayfs with its upper and work directories on ticketfs, its
/// lower on another filesystem. Deleting, renaming, appending to (copy-up), replacing a lower
/// directory and creating through the overlay give the merged view a local filesystem gives,
/// kept across a remount of both; whiteouts, trusted.overlay.* attributes and O_TMPFILE
/// copy-ups are what overlayfs asks of ticketfs for that.
#[test]
fn overlayfs_uses_ticketfs_as_its_upper_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path(), 64 << 20);
    let lower = tmp.path().join("lower");
    fs::create_dir_all(lower.join("dir/deep")).unwrap();
    fs::create_dir_all(lower.join("gone")).unwrap();
    fs::write(lower.join("keep"), b"lower keep\n").unwrap();
    fs::write(lower.join("del"), b"lower del\n").unwrap();
    fs::write(lower.join("mv"), b"lower mv\n").unwrap();
    fs::write(lower.join("dir/deep/f"), b"deep\n").unwrap();
    fs::write(lower.join("gone/old"), b"old\n").unwrap();
    let merged = tmp.path().join("merged");
    fs::create_dir(&merged).unwrap();

    let m = Mount::new(&img, "");
    fs::create_dir(m.path().join("upper")).unwrap();
    fs::create_dir(m.path().join("work")).unwrap();
    let mount_overlay = |on: &Path| {
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            on.join("upper").display(),
            on.join("work").display()
        );
        Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&merged)
            .output()
            .expect("mount(8)")
    };
    let out = mount_overlay(m.path());
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        m.unmount();
        if err.contains("unknown filesystem type") {
            common::skip("overlayfs is not in this kernel");
            return;
        }
        panic!("mount -t overlay: {err}");
    }
    let overlay = common::mount::Unmounted(merged.clone());
    fs::remove_file(merged.join("del")).unwrap();
    fs::rename(merged.join("mv"), merged.join("moved")).unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(merged.join("dir/deep/f"))
        .unwrap()
        .write_all(b"appended\n")
        .unwrap();
    fs::remove_dir_all(merged.join("gone")).unwrap();
    fs::create_dir(merged.join("gone")).unwrap();
    fs::write(merged.join("gone/new"), b"new\n").unwrap();
    fs::write(merged.join("fresh"), b"fresh\n").unwrap();

    let view = |root: &Path| {
        let mut names: Vec<String> = walk(root);
        names.sort();
        names
    };
    let expect = vec![
        "dir/".to_string(),
        "dir/deep/".to_string(),
        "dir/deep/f=deep\nappended\n".to_string(),
        "fresh=fresh\n".to_string(),
        "gone/".to_string(),
        "gone/new=new\n".to_string(),
        "keep=lower keep\n".to_string(),
        "moved=lower mv\n".to_string(),
    ];
    assert_eq!(view(&merged), expect);
    assert_eq!(
        fs::read(lower.join("dir/deep/f")).unwrap(),
        b"deep\n",
        "lower untouched"
    );
    assert_whiteout(&m.path().join("upper/del"));
    assert_whiteout(&m.path().join("upper/mv"));

    common::mount::umount(&merged).expect("umount overlay");
    drop(overlay);
    m.unmount();
    assert_fsck_clean(&img, "overlayfs use");

    let m = Mount::new(&img, "");
    let out = mount_overlay(m.path());
    assert!(
        out.status.success(),
        "second overlay mount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let overlay = common::mount::Unmounted(merged.clone());
    assert_eq!(view(&merged), expect, "after remounting both");
    common::mount::umount(&merged).expect("umount overlay");
    drop(overlay);
    m.unmount();
}

/// statx(2) of `p` with the birth time, asked of the filesystem (AT_STATX_FORCE_SYNC, so the
/// kernel sends FUSE_STATX), the symlink itself for a symlink.
fn statx(p: &Path) -> libc::statx {
    let c = cpath(p);
    // SAFETY: statx fills the zeroed struct for a NUL-terminated path.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW | libc::AT_STATX_FORCE_SYNC,
            libc::STATX_BASIC_STATS | libc::STATX_BTIME,
            &mut st,
        )
    };
    assert_eq!(r, 0, "statx {}: errno {}", p.display(), errno());
    st
}

/// statx(2) of `p`: (the mask answered, btime seconds, nanoseconds).
fn birth_time(p: &Path) -> (u32, i64, u32) {
    let st = statx(p);
    (st.stx_mask, st.stx_btime.tv_sec, st.stx_btime.tv_nsec)
}

/// `-o btime=off`: FUSE_STATX is refused, so the kernel answers statx(2) from GETATTR's fields
/// and its cache, without a birth time, on either transport; the basic fields stay right.
#[test]
fn btime_off_answers_statx_without_a_birth_time() {
    for opts in ["btime=off", "btime=off,uring=off"] {
        let tmp = tempfile::tempdir().unwrap();
        let img = image(tmp.path(), 64 << 20);
        let m = Mount::new(&img, opts);
        let f = m.path().join("f");
        fs::write(&f, b"12345").unwrap();
        fs::create_dir(m.path().join("dir")).unwrap();
        for p in [&f, &m.path().join("dir")] {
            let st = statx(p);
            assert_eq!(
                st.stx_mask & libc::STATX_BTIME,
                0,
                "{opts}: {p:?} has a birth time"
            );
            assert_eq!(
                st.stx_mask & libc::STATX_BASIC_STATS,
                libc::STATX_BASIC_STATS,
                "{opts}: {p:?} basic fields"
            );
        }
        assert_eq!(statx(&f).stx_size, 5, "{opts}: size");
        m.unmount();
    }
}

/// statx(2) reports the birth time the inode stores (generic/423): set at creation, to the
/// nanosecond between the times before and after it, never moved by later writes or utimes,
/// the same after a remount; for files, directories and symlinks.
#[test]
fn statx_reports_the_birth_time() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path(), 64 << 20);
    let m = Mount::new(&img, "");
    let d = m.path();
    let now = || {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        (t.as_secs() as i64, t.subsec_nanos())
    };
    let before = now();
    fs::write(d.join("f"), b"x").unwrap();
    fs::create_dir(d.join("dir")).unwrap();
    std::os::unix::fs::symlink("f", d.join("sym")).unwrap();
    let after = now();
    let mut born = Vec::new();
    for name in ["f", "dir", "sym"] {
        let (mask, sec, nsec) = birth_time(&d.join(name));
        assert_ne!(
            mask & libc::STATX_BTIME,
            0,
            "{name}: no birth time answered"
        );
        assert!(
            before <= (sec, nsec) && (sec, nsec) <= after,
            "{name}: born {sec}.{nsec}, created between {before:?} and {after:?}"
        );
        born.push((sec, nsec));
    }
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(d.join("f"), b"rewritten").unwrap();
    let st = Command::new("touch")
        .args(["-d", "2001-01-01"])
        .arg(d.join("f"))
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        birth_time(&d.join("f")).1,
        born[0].0,
        "writes and utimes leave it"
    );
    m.unmount();
    let m = Mount::new(&img, "");
    for (name, b) in ["f", "dir", "sym"].iter().zip(&born) {
        let (_, sec, nsec) = birth_time(&m.path().join(name));
        assert_eq!((sec, nsec), *b, "{name} after a remount");
    }
    m.unmount();
}

/// statx(2) of `p`: (stx_attributes, stx_attributes_mask).
fn statx_attributes(p: &Path) -> (u64, u64) {
    let st = statx(p);
    (st.stx_attributes, st.stx_attributes_mask)
}

/// The statx attributes ticketfs keeps, as XFS reports them: immutable, append-only, no-dump.
const STATX_ATTR_KEPT: u64 =
    (libc::STATX_ATTR_IMMUTABLE | libc::STATX_ATTR_APPEND | libc::STATX_ATTR_NODUMP) as u64;

/// statx's stx_attributes show chattr's +i, +a and +d, and stx_attributes_mask says they are
/// kept (generic/424), as on XFS: each flag alone and together, and none once cleared.
#[test]
fn statx_attributes_show_the_inode_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path(), 64 << 20);
    let m = Mount::new(&img, "");
    let f = m.path().join("f");
    fs::write(&f, b"").unwrap();
    let chattr = |arg: &str| {
        let st = Command::new("chattr").arg(arg).arg(&f).status().unwrap();
        assert!(st.success(), "chattr {arg}");
    };
    chattr("+iad");
    let (attrs, mask) = statx_attributes(&f);
    if mask & STATX_ATTR_KEPT == 0 {
        // The daemon's STATX reply carries them (the unit test of `Wr::statx_out`), but the
        // kernel's fuse_do_statx copies only the mask, the birth time and the fuse_attr
        // fields into the kstat: FUSE passes no stx_attributes through on this kernel.
        chattr("-ia");
        m.unmount();
        let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        common::skip(&format!(
            "Linux {}'s FUSE does not pass stx_attributes from the daemon's STATX reply \
             (stx_attributes_mask {mask:#x}, stx_attributes {attrs:#x})",
            release.trim()
        ));
        return;
    }
    let want = |flags: &[(&str, i32)]| {
        flags
            .iter()
            .filter(|(on, _)| *on == "+")
            .fold(0u64, |a, (_, bit)| a | *bit as u64)
    };
    for (i, a, d) in [
        ("+", "+", "+"),
        ("-", "+", "+"),
        ("+", "-", "+"),
        ("+", "+", "-"),
        ("-", "-", "+"),
        ("-", "+", "-"),
        ("+", "-", "-"),
        ("-", "-", "-"),
    ] {
        chattr(&format!("{i}i"));
        chattr(&format!("{a}a"));
        chattr(&format!("{d}d"));
        let (attrs, mask) = statx_attributes(&f);
        let expect = want(&[
            (i, libc::STATX_ATTR_IMMUTABLE),
            (a, libc::STATX_ATTR_APPEND),
            (d, libc::STATX_ATTR_NODUMP),
        ]);
        assert_eq!(
            attrs & STATX_ATTR_KEPT,
            expect,
            "{i}i {a}a {d}d: attributes"
        );
        assert_eq!(
            mask & STATX_ATTR_KEPT,
            STATX_ATTR_KEPT,
            "{i}i {a}a {d}d: mask"
        );
        assert_eq!(
            mask & libc::STATX_ATTR_COMPRESSED as u64,
            0,
            "compression is not kept"
        );
    }
    m.unmount();
}

/// Waits (up to 10 s) for `cond`: what the kernel does after a call returns.
fn settles(cond: impl Fn() -> bool, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "not after 10 s: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Every entry below `root`: "dir/" for a directory, "file=contents" for a file.
fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            if e.file_type().unwrap().is_dir() {
                out.push(format!("{rel}/"));
                stack.push(e.path());
            } else {
                let body = String::from_utf8_lossy(&fs::read(e.path()).unwrap()).to_string();
                out.push(format!("{rel}={body}"));
            }
        }
    }
    out
}

/// fallocate's collapse-range and insert-range: the kernel's FUSE answers EOPNOTSUPP for them
/// before any request reaches a daemon (fs/fuse/file.c), so ticketfs cannot offer them. The
/// answer must be that clean refusal (the file unchanged), and the suite reports the skip.
#[test]
fn collapse_and_insert_range_are_refused_by_the_kernel() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path(), 64 << 20);
    let m = Mount::new(&img, "");
    let f = fs::OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(m.path().join("f"))
        .unwrap();
    f.set_len(64 << 10).unwrap();
    for (name, mode) in [
        ("collapse-range", libc::FALLOC_FL_COLLAPSE_RANGE),
        ("insert-range", libc::FALLOC_FL_INSERT_RANGE),
    ] {
        // SAFETY: fallocate(2) on an open descriptor.
        let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, 4096, 4096) };
        assert_eq!((r, errno()), (-1, libc::EOPNOTSUPP), "{name}");
        assert_eq!(
            f.metadata().unwrap().len(),
            64 << 10,
            "{name} changed the size"
        );
    }
    drop(f);
    m.unmount();
    common::skip(
        "fallocate collapse-range and insert-range: the kernel's FUSE refuses them \
         (EOPNOTSUPP) before any daemon sees them",
    );
}

/// Runs `cmd` through sh as the user nobody (uid and gid 65534, no other groups) with umask
/// 022: its exit status, and its stdout and stderr together.
fn as_nobody(cmd: &str) -> (i32, String) {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["sh", "-c", &format!("umask 022; {cmd}")])
        .output()
        .expect("setpriv (util-linux)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// `tool args...` must succeed; its stdout.
fn run(tool: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(tool).args(args).output().expect(tool);
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// getfacl's entries of `p` (no header comments), one per line.
fn acl_of(p: &Path) -> String {
    run("getfacl", &["--omit-header".as_ref(), p.as_os_str()])
        .lines()
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(",")
}

/// POSIX ACLs on a multi-user mount: a named entry grants what the mode bits do not (the
/// kernel checks, with the ACL the daemon stores), the mask limits it, chmod rewrites the mask
/// and setting the ACL rewrites the mode, removal keeps the mode, only the owner or root may
/// set one, a default ACL only on a directory, a set-group-ID file loses the bit when a caller
/// outside its group sets an ACL; all of it kept across a remount and fsck clean.
#[test]
fn posix_acls_grant_limit_and_follow_the_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path(), 64 << 20);
    let m = Mount::new(&img, "allow_other");
    let d = m.path().join("d");
    fs::create_dir(&d).unwrap();
    let f = d.join("f");
    fs::write(&f, b"secret\n").unwrap();
    fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let cat = format!("cat {}", f.display());
    let append = format!("echo more >> {}", f.display());
    assert_ne!(as_nobody(&cat).0, 0, "mode 600 keeps nobody out");

    run(
        "setfacl",
        &["-m".as_ref(), "u:nobody:r".as_ref(), f.as_os_str()],
    );
    assert_eq!(
        acl_of(&f),
        "user::rw-,user:nobody:r--,group::---,mask::r--,other::---"
    );
    assert_eq!(
        fs::metadata(&f).unwrap().mode() & 0o777,
        0o640,
        "the mask is the group bits"
    );
    assert_eq!(
        as_nobody(&cat),
        (0, "secret\n".into()),
        "the named entry grants reading"
    );
    assert_ne!(as_nobody(&append).0, 0, "but not writing");

    // chmod sets the mask; a mask of nothing takes the named entry's read away.
    fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    assert_eq!(
        acl_of(&f),
        "user::rw-,user:nobody:r--\t#effective:---,group::---,mask::---,other::---"
    );
    assert_ne!(as_nobody(&cat).0, 0, "the mask limits the named entry");
    run("setfacl", &["-m".as_ref(), "m::rw".as_ref(), f.as_os_str()]);
    assert_eq!(fs::metadata(&f).unwrap().mode() & 0o777, 0o660);
    assert_eq!(as_nobody(&cat).0, 0);

    // setfacl -b sets the base entries alone: the mode takes the owning group's bits (as on
    // tmpfs and ext4: 660 -> 600) and no ACL is stored.
    run("setfacl", &["-b".as_ref(), f.as_os_str()]);
    assert_eq!(acl_of(&f), "user::rw-,group::---,other::---");
    assert_eq!(fs::metadata(&f).unwrap().mode() & 0o777, 0o600);
    assert_ne!(as_nobody(&cat).0, 0);

    // No ACL to remove is no error (the kernel's way of passing on an empty ACL), as on ext4.
    let st = Command::new("setfattr")
        .args(["-x", "system.posix_acl_access"])
        .arg(&f)
        .status()
        .unwrap();
    assert!(st.success(), "removing an absent ACL");
    // Only the owner or root sets an ACL; a default ACL only on a directory.
    let (code, out) = as_nobody(&format!("setfacl -m u:nobody:rw {}", f.display()));
    assert_ne!(code, 0, "nobody set root's ACL: {out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    let out = Command::new("setfacl")
        .args(["-d", "-m", "u:nobody:r"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a default ACL on a file");

    // set-group-ID dropped when a caller outside the group sets the ACL (posix_acl_update_mode).
    let g = d.join("g");
    fs::write(&g, b"").unwrap();
    std::os::unix::fs::chown(&g, Some(65534), Some(0)).unwrap();
    fs::set_permissions(&g, std::os::unix::fs::PermissionsExt::from_mode(0o2770)).unwrap();
    let (code, out) = as_nobody(&format!("setfacl -m u:nobody:rwx,u:root:r {}", g.display()));
    assert_eq!(code, 0, "the owner sets its ACL: {out}");
    assert_eq!(
        fs::metadata(&g).unwrap().mode() & 0o7777,
        0o770,
        "set-group-ID dropped"
    );

    run(
        "setfacl",
        &["-m".as_ref(), "u:nobody:r".as_ref(), f.as_os_str()],
    );
    // A mask of nothing leaves the ACL out of the check (the kernel's acl_permission_check):
    // others' bits decide, as on ext4 and XFS.
    let o = d.join("o");
    fs::write(&o, b"other\n").unwrap();
    fs::set_permissions(&o, std::os::unix::fs::PermissionsExt::from_mode(0o604)).unwrap();
    run(
        "setfacl",
        &["-m".as_ref(), "u:nobody:-".as_ref(), o.as_os_str()],
    );
    assert_eq!(fs::metadata(&o).unwrap().mode() & 0o777, 0o604);
    assert_eq!(
        as_nobody(&format!("cat {}", o.display())),
        (0, "other\n".into())
    );
    m.unmount();
    assert_fsck_clean(&img, "ACL changes");
    let m = Mount::new(&img, "allow_other");
    let f = m.path().join("d/f");
    assert_eq!(
        acl_of(&f),
        "user::rw-,user:nobody:r--,group::---,mask::r--,other::---"
    );
    assert_eq!(
        as_nobody(&format!("cat {}", f.display())),
        (0, "secret\n".into())
    );
    m.unmount();
}

/// A directory's default ACL is inherited as XFS and ext4 do: a file gets it as its access ACL
/// masked by the mode asked for, the umask ignored; a subdirectory gets both; a node and an
/// O_TMPFILE file inherit too, a symlink does not; outside such a directory the umask applies.
#[test]
fn default_acls_are_inherited_in_place_of_the_umask() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path(), 64 << 20);
    let m = Mount::new(&img, "allow_other");
    let d = m.path().join("shared");
    fs::create_dir(&d).unwrap();
    run(
        "setfacl",
        &[
            "-d".as_ref(),
            "-m".as_ref(),
            "u:nobody:rwx,g::rx,o::-".as_ref(),
            d.as_os_str(),
        ],
    );
    // The creating process's umask 077 plays no part under a default ACL.
    let sh = |cmd: &str| {
        let st = Command::new("sh")
            .args(["-c", &format!("umask 077; {cmd}")])
            .status()
            .unwrap();
        assert!(st.success(), "{cmd}");
    };
    let p = |n: &str| d.join(n).display().to_string();
    sh(&format!(
        "touch {0} && mkdir {1} && mkfifo {2} && ln -s f {3}",
        p("f"),
        p("sub"),
        p("fifo"),
        p("sym")
    ));
    assert_eq!(
        acl_of(&d.join("f")),
        "user::rw-,user:nobody:rwx\t#effective:rw-,group::r-x\t#effective:r--,mask::rw-,other::---"
    );
    assert_eq!(fs::metadata(d.join("f")).unwrap().mode() & 0o777, 0o660);
    assert_eq!(
        acl_of(&d.join("sub")),
        "user::rwx,user:nobody:rwx,group::r-x,mask::rwx,other::---,default:user::rwx,\
         default:user:nobody:rwx,default:group::r-x,default:mask::rwx,default:other::---"
    );
    assert!(acl_of(&d.join("fifo")).contains("user:nobody:rwx"));
    let sym = run(
        "getfattr",
        &[
            "-h".as_ref(),
            "-d".as_ref(),
            "-m-".as_ref(),
            d.join("sym").as_os_str(),
        ],
    );
    assert!(
        !sym.contains("posix_acl"),
        "a symlink inherits nothing: {sym}"
    );
    let t = open_tmpfile(&d, libc::O_RDWR).expect("O_TMPFILE");
    link_fd(&t, &d.join("tmp")).unwrap();
    drop(t);
    assert!(acl_of(&d.join("tmp")).contains("user:nobody:rwx"));
    // nobody may write the inherited file through its named entry.
    assert_eq!(as_nobody(&format!("echo hi > {}", p("f"))).0, 0);

    sh(&format!(
        "touch {0} && mkdir {1}",
        m.path().join("plain").display(),
        m.path().join("pdir").display()
    ));
    assert_eq!(
        acl_of(&m.path().join("plain")),
        "user::rw-,group::---,other::---"
    );
    assert_eq!(
        fs::metadata(m.path().join("pdir")).unwrap().mode() & 0o777,
        0o700
    );
    m.unmount();
    assert_fsck_clean(&img, "inherited ACLs");
}
