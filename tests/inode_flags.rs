//! Inode flags (issue 22): chattr and lsattr (FS_IOC_SETFLAGS / FS_IOC_GETFLAGS) and xfs_io's
//! chattr, lsattr, chproj and lsproj (FS_IOC_FSSETXATTR / FS_IOC_FSGETXATTR) on real mounts, on
//! files and directories; and what an immutable or append-only inode refuses, as exact errnos,
//! for root and for another user. Each rule's expected answer is the kernel's: where kernel ext4
//! and XFS can be loop-mounted here, the same operations run on them in the same test and must
//! give the same answers (a test that cannot reach them says it skipped that comparison).
//!
//! The kernel keeps no flags of a FUSE inode, so the daemon enforces every rule; the rules are
//! run under the mount options the suite uses: the default, `writeback_cache` (the kernel caches
//! writes and times) and `uring=off` (requests through /dev/fuse).

mod common;

use common::mount::{image, Mount, Unmounted};
use common::{as_user, NOBODY};
use std::ffi::{CStr, CString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The ioctls (include/uapi/linux/fs.h) and the flag bits they carry.
const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
const FS_IOC_SETFLAGS: libc::c_ulong = 0x4008_6602;
const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401c_5820;
const FS_COMPR_FL: u32 = 0x04;
const FS_IMMUTABLE_FL: u32 = 0x10;
const FS_NODUMP_FL: u32 = 0x40;
const FS_XFLAG_NODUMP: u32 = 0x80;
const FS_XFLAG_DAX: u32 = 0x8000;

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path")
}

fn errno() -> i32 {
    // SAFETY: reads this thread's errno.
    unsafe { *libc::__errno_location() }
}

fn rc(r: libc::c_long) -> i32 {
    if r < 0 {
        errno()
    } else {
        0
    }
}

/// Opens `p` with `flags` (mode 0644 if created), runs `f` on the descriptor, closes it: `f`'s
/// errno, or the open's. System calls only (usable in `as_user`'s child).
fn with_fd(p: &CStr, flags: i32, f: impl FnOnce(i32) -> i32) -> i32 {
    // SAFETY: a NUL-terminated path; the descriptor is closed before returning.
    unsafe {
        let fd = libc::open(p.as_ptr(), flags | libc::O_CLOEXEC, 0o644);
        if fd < 0 {
            return errno();
        }
        let r = f(fd);
        libc::close(fd);
        r
    }
}

/// FS_IOC_GETFLAGS on `p` (opened read-only, as lsattr does).
fn get_flags(p: &CStr) -> Result<u32, i32> {
    let mut v: u32 = 0;
    // SAFETY: the kernel writes one unsigned int into `v`.
    let e = with_fd(p, libc::O_RDONLY, |fd| unsafe {
        rc(libc::ioctl(fd, FS_IOC_GETFLAGS, &mut v as *mut u32) as libc::c_long)
    });
    if e == 0 {
        Ok(v)
    } else {
        Err(e)
    }
}

/// FS_IOC_SETFLAGS on `p`: 0 or the errno.
fn set_flags(p: &CStr, flags: u32) -> i32 {
    // SAFETY: the kernel reads one unsigned int from `flags`.
    with_fd(p, libc::O_RDONLY, |fd| unsafe {
        rc(libc::ioctl(fd, FS_IOC_SETFLAGS, &flags as *const u32) as libc::c_long)
    })
}

/// struct fsxattr as words: xflags, extsize, nextents, projid, cowextsize, 8 bytes of padding.
type Fsxattr = [u32; 7];

fn get_fsxattr(p: &CStr) -> Result<Fsxattr, i32> {
    let mut x: Fsxattr = [0; 7];
    // SAFETY: the kernel writes 28 bytes into `x`.
    let e = with_fd(p, libc::O_RDONLY, |fd| unsafe {
        rc(libc::ioctl(fd, FS_IOC_FSGETXATTR, x.as_mut_ptr()) as libc::c_long)
    });
    if e == 0 {
        Ok(x)
    } else {
        Err(e)
    }
}

fn set_fsxattr(p: &CStr, x: &Fsxattr) -> i32 {
    // SAFETY: the kernel reads 28 bytes from `x`.
    with_fd(p, libc::O_RDONLY, |fd| unsafe {
        rc(libc::ioctl(fd, FS_IOC_FSSETXATTR, x.as_ptr()) as libc::c_long)
    })
}

/// A tool's exit and its output (stdout then stderr).
fn tool(cmd: &str, args: &[&str], path: &Path) -> (bool, String) {
    let out = Command::new(cmd)
        .args(args)
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `chattr ARGS P`, which must succeed.
fn chattr(args: &str, p: &Path) {
    let (ok, out) = tool("chattr", &[args], p);
    assert!(ok, "chattr {args} {}: {out}", p.display());
}

/// Clears immutable and append-only on everything under `p` (symlinks, which have no flags,
/// make chattr complain: ignored).
fn unflag_tree(p: &Path) {
    let _ = Command::new("chattr")
        .args(["-R", "-f", "-ia"])
        .arg(p)
        .status();
}

/// The letters lsattr shows for `p` (the flags field without its dashes), sorted.
fn lsattr(p: &Path) -> String {
    let (ok, out) = tool("lsattr", &["-d"], p);
    assert!(ok, "lsattr {}: {out}", p.display());
    sorted(out.split_whitespace().next().unwrap_or_default())
}

/// The flag letters of `s` (dashes left out), sorted.
fn sorted(s: &str) -> String {
    let mut v: Vec<char> = s.chars().filter(|&ch| ch != '-').collect();
    v.sort_unstable();
    v.into_iter().collect()
}

/// xfs_io's commands on `p`, opened read-only (`-r`: an immutable file opens no other way).
fn xfs_io(cmds: &[&str], p: &Path) -> String {
    let mut args = vec!["-r"];
    for cmd in cmds {
        args.push("-c");
        args.push(cmd);
    }
    let (ok, out) = tool("xfs_io", &args, p);
    assert!(ok, "xfs_io {cmds:?} {}: {out}", p.display());
    out
}

/// A kernel filesystem (`ext4` or `xfs`) loop-mounted in a temp dir, for comparing answers;
/// None (reported as a skip) where it cannot be made or mounted here.
struct KernelFs {
    mnt: PathBuf,
    _unmount: Unmounted,
    _dir: tempfile::TempDir,
}

fn kernel_fs(kind: &str) -> Option<KernelFs> {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    // XFS asks for 300 MiB at least; the file is sparse.
    fs::File::create(&img).unwrap().set_len(320 << 20).unwrap();
    let made = Command::new(format!("mkfs.{kind}"))
        .args(if kind == "xfs" {
            ["-q", "-f"]
        } else {
            ["-q", "-F"]
        })
        .arg(&img)
        .status();
    if !made.is_ok_and(|s| s.success()) {
        common::skip(&format!(
            "the {kind} comparison: mkfs.{kind} failed or is missing"
        ));
        return None;
    }
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let st = Command::new("mount")
        .args(["-o", "loop"])
        .arg(&img)
        .arg(&mnt)
        .status()
        .unwrap();
    if !st.success() {
        common::skip(&format!("the {kind} comparison: no loop mount here"));
        return None;
    }
    let _unmount = Unmounted(mnt.clone());
    let _ = fs::remove_dir(mnt.join("lost+found"));
    Some(KernelFs {
        mnt,
        _unmount,
        _dir: dir,
    })
}

// ---- The operations of the rules, each returning 0 or its errno (system calls only). ----

fn open_close(p: &Path, flags: i32) -> i32 {
    with_fd(&c(p), flags, |_| 0)
}

fn write_at(p: &Path, flags: i32, off: i64, data: &[u8]) -> i32 {
    // SAFETY: writes `data` from its own slice.
    with_fd(&c(p), flags, |fd| unsafe {
        rc(libc::pwrite(fd, data.as_ptr().cast(), data.len(), off) as libc::c_long)
    })
}

fn fallocate(p: &Path, mode: i32, off: i64, len: i64) -> i32 {
    // SAFETY: fallocate on our own descriptor.
    with_fd(&c(p), libc::O_WRONLY | libc::O_APPEND, |fd| unsafe {
        rc(libc::fallocate(fd, mode, off, len) as libc::c_long)
    })
}

fn path_call(p: &Path, f: impl FnOnce(*const libc::c_char) -> libc::c_int) -> i32 {
    let s = c(p);
    rc(f(s.as_ptr()) as libc::c_long)
}

fn two_paths(
    a: &Path,
    b: &Path,
    f: impl FnOnce(*const libc::c_char, *const libc::c_char) -> libc::c_int,
) -> i32 {
    let (a, b) = (c(a), c(b));
    rc(f(a.as_ptr(), b.as_ptr()) as libc::c_long)
}

fn truncate(p: &Path, len: i64) -> i32 {
    // SAFETY: NUL-terminated path.
    path_call(p, |s| unsafe { libc::truncate(s, len) })
}

fn chmod(p: &Path) -> i32 {
    // SAFETY: NUL-terminated path.
    path_call(p, |s| unsafe { libc::chmod(s, 0o600) })
}

fn chown(p: &Path) -> i32 {
    // SAFETY: NUL-terminated path.
    path_call(p, |s| unsafe { libc::chown(s, 1, 1) })
}

fn utimes_given(p: &Path) -> i32 {
    let tv = [libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    }; 2];
    // SAFETY: NUL-terminated path; two timevals.
    path_call(p, |s| unsafe { libc::utimes(s, tv.as_ptr()) })
}

fn utimes_now(p: &Path) -> i32 {
    // SAFETY: NUL-terminated path; NULL means now.
    path_call(p, |s| unsafe { libc::utimes(s, std::ptr::null()) })
}

fn link(a: &Path, b: &Path) -> i32 {
    // SAFETY: NUL-terminated paths.
    two_paths(a, b, |a, b| unsafe { libc::link(a, b) })
}

fn rename(a: &Path, b: &Path) -> i32 {
    // SAFETY: NUL-terminated paths.
    two_paths(a, b, |a, b| unsafe { libc::rename(a, b) })
}

/// renameat2 with RENAME_EXCHANGE: both entries stay, swapped.
fn exchange(a: &Path, b: &Path) -> i32 {
    // SAFETY: NUL-terminated absolute paths.
    two_paths(a, b, |a, b| unsafe {
        libc::renameat2(libc::AT_FDCWD, a, libc::AT_FDCWD, b, libc::RENAME_EXCHANGE)
    })
}

fn unlink(p: &Path) -> i32 {
    // SAFETY: NUL-terminated path.
    path_call(p, |s| unsafe { libc::unlink(s) })
}

fn rmdir(p: &Path) -> i32 {
    // SAFETY: NUL-terminated path.
    path_call(p, |s| unsafe { libc::rmdir(s) })
}

fn mkdir(p: &Path) -> i32 {
    // SAFETY: NUL-terminated path.
    path_call(p, |s| unsafe { libc::mkdir(s, 0o755) })
}

fn mkfifo(p: &Path) -> i32 {
    // SAFETY: NUL-terminated path.
    path_call(p, |s| unsafe { libc::mkfifo(s, 0o644) })
}

fn symlink(p: &Path) -> i32 {
    // SAFETY: NUL-terminated strings.
    path_call(p, |s| unsafe { libc::symlink(c"x".as_ptr(), s) })
}

fn setxattr(p: &Path) -> i32 {
    // SAFETY: NUL-terminated path and name; a one-byte value.
    path_call(p, |s| unsafe {
        libc::setxattr(s, c"user.x".as_ptr(), b"v".as_ptr().cast(), 1, 0)
    })
}

fn removexattr(p: &Path) -> i32 {
    // SAFETY: NUL-terminated path and name.
    path_call(p, |s| unsafe { libc::removexattr(s, c"user.a".as_ptr()) })
}

fn access_w(p: &Path) -> i32 {
    // SAFETY: NUL-terminated path.
    path_call(p, |s| unsafe { libc::access(s, libc::W_OK) })
}

// ---- The rules. ----

/// One rule: `flag` (chattr's argument) is set on `on` ("f", a file holding "hello", or "d", a
/// directory holding the file "e"), then `op` runs in the case's directory (which also holds
/// the directory "other"; "f" and "d" carry the xattr user.a) and must answer `want`.
struct Rule {
    name: &'static str,
    flag: &'static str,
    on: &'static str,
    op: Op,
    want: i32,
}

/// An operation in a case's directory: 0 or its errno.
type Op = fn(&Path) -> i32;

const EPERM: i32 = libc::EPERM;
const WR: i32 = libc::O_WRONLY;
const APPEND: i32 = libc::O_WRONLY | libc::O_APPEND;
const APPEND_TRUNC: i32 = APPEND | libc::O_TRUNC;
const CREATE: i32 = libc::O_WRONLY | libc::O_CREAT;
const KEEP: i32 = libc::FALLOC_FL_KEEP_SIZE;
const PUNCH: i32 = libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE;
const ZERO: i32 = libc::FALLOC_FL_ZERO_RANGE;

/// Rules of `flag` on `on`: (name, operation, answer).
fn rules(flag: &'static str, on: &'static str, list: &[(&'static str, Op, i32)]) -> Vec<Rule> {
    list.iter()
        .map(|&(name, op, want)| Rule {
            name,
            flag,
            on,
            op,
            want,
        })
        .collect()
}

fn immutable_file_rules() -> Vec<Rule> {
    rules(
        "+i",
        "f",
        &[
            ("open for writing", |w| open_close(&w.join("f"), WR), EPERM),
            (
                "open for reading and writing",
                |w| open_close(&w.join("f"), libc::O_RDWR),
                EPERM,
            ),
            (
                "open for appending",
                |w| open_close(&w.join("f"), APPEND),
                EPERM,
            ),
            (
                "open for reading",
                |w| open_close(&w.join("f"), libc::O_RDONLY),
                0,
            ),
            (
                "open for reading, O_TRUNC",
                |w| open_close(&w.join("f"), libc::O_TRUNC),
                EPERM,
            ),
            ("truncate", |w| truncate(&w.join("f"), 1), EPERM),
            ("chmod", |w| chmod(&w.join("f")), EPERM),
            ("chown", |w| chown(&w.join("f")), EPERM),
            ("utimes given", |w| utimes_given(&w.join("f")), EPERM),
            ("utimes now", |w| utimes_now(&w.join("f")), EPERM),
            ("link", |w| link(&w.join("f"), &w.join("g")), EPERM),
            ("unlink", |w| unlink(&w.join("f")), EPERM),
            ("rename it", |w| rename(&w.join("f"), &w.join("g")), EPERM),
            (
                "rename over it",
                |w| rename(&w.join("d/e"), &w.join("f")),
                EPERM,
            ),
            (
                "exchange it",
                |w| exchange(&w.join("d/e"), &w.join("f")),
                EPERM,
            ),
            ("setxattr", |w| setxattr(&w.join("f")), EPERM),
            ("removexattr", |w| removexattr(&w.join("f")), EPERM),
            ("read it", read_some, 0),
        ],
    )
}

fn read_some(w: &Path) -> i32 {
    with_fd(&c(&w.join("f")), libc::O_RDONLY, |fd| {
        let mut b = [0u8; 8];
        // SAFETY: reads into our own buffer.
        rc(unsafe { libc::read(fd, b.as_mut_ptr().cast(), 8) } as libc::c_long)
    })
}

fn immutable_dir_rules() -> Vec<Rule> {
    rules(
        "+i",
        "d",
        &[
            (
                "create in it",
                |w| open_close(&w.join("d/n"), CREATE),
                EPERM,
            ),
            ("mkdir in it", |w| mkdir(&w.join("d/n")), EPERM),
            ("mknod a fifo in it", |w| mkfifo(&w.join("d/n")), EPERM),
            ("symlink in it", |w| symlink(&w.join("d/n")), EPERM),
            (
                "link into it",
                |w| link(&w.join("f"), &w.join("d/n")),
                EPERM,
            ),
            ("unlink from it", |w| unlink(&w.join("d/e")), EPERM),
            (
                "rename out of it",
                |w| rename(&w.join("d/e"), &w.join("n")),
                EPERM,
            ),
            (
                "rename into it",
                |w| rename(&w.join("f"), &w.join("d/n")),
                EPERM,
            ),
            (
                "rename within it",
                |w| rename(&w.join("d/e"), &w.join("d/n")),
                EPERM,
            ),
            (
                "exchange an entry in it",
                |w| exchange(&w.join("f"), &w.join("d/e")),
                EPERM,
            ),
            ("rename it", |w| rename(&w.join("d"), &w.join("n")), EPERM),
            (
                "move it elsewhere",
                |w| rename(&w.join("d"), &w.join("other/d")),
                EPERM,
            ),
            ("rmdir it", |w| rmdir(&w.join("d")), EPERM),
            ("chmod it", |w| chmod(&w.join("d")), EPERM),
            ("setxattr on it", |w| setxattr(&w.join("d")), EPERM),
            (
                "write a file in it",
                |w| write_at(&w.join("d/e"), WR, 0, b"X"),
                0,
            ),
            (
                "list it",
                |w| open_close(&w.join("d"), libc::O_DIRECTORY),
                0,
            ),
        ],
    )
}

fn append_file_rules() -> Vec<Rule> {
    rules(
        "+a",
        "f",
        &[
            ("open for writing", |w| open_close(&w.join("f"), WR), EPERM),
            (
                "open for reading and writing",
                |w| open_close(&w.join("f"), libc::O_RDWR),
                EPERM,
            ),
            (
                "open for appending",
                |w| open_close(&w.join("f"), APPEND),
                0,
            ),
            (
                "open for appending, O_TRUNC",
                |w| open_close(&w.join("f"), APPEND_TRUNC),
                EPERM,
            ),
            (
                "write at 0 through O_APPEND",
                |w| write_at(&w.join("f"), APPEND, 0, b"X"),
                0,
            ),
            ("truncate shorter", |w| truncate(&w.join("f"), 1), EPERM),
            ("truncate longer", |w| truncate(&w.join("f"), 100), EPERM),
            (
                "fallocate past the end",
                |w| fallocate(&w.join("f"), 0, 0, 8192),
                0,
            ),
            (
                "fallocate keeping the size",
                |w| fallocate(&w.join("f"), KEEP, 0, 8192),
                0,
            ),
            (
                "fallocate punching a hole",
                |w| fallocate(&w.join("f"), PUNCH, 0, 4096),
                EPERM,
            ),
            (
                "fallocate zeroing a range",
                |w| fallocate(&w.join("f"), ZERO, 0, 4096),
                EPERM,
            ),
            ("chmod", |w| chmod(&w.join("f")), EPERM),
            ("chown", |w| chown(&w.join("f")), EPERM),
            ("utimes given", |w| utimes_given(&w.join("f")), EPERM),
            ("utimes now", |w| utimes_now(&w.join("f")), 0),
            ("link", |w| link(&w.join("f"), &w.join("g")), EPERM),
            ("unlink", |w| unlink(&w.join("f")), EPERM),
            ("rename it", |w| rename(&w.join("f"), &w.join("g")), EPERM),
            (
                "rename over it",
                |w| rename(&w.join("d/e"), &w.join("f")),
                EPERM,
            ),
            (
                "exchange it",
                |w| exchange(&w.join("d/e"), &w.join("f")),
                EPERM,
            ),
            ("setxattr", |w| setxattr(&w.join("f")), EPERM),
            ("removexattr", |w| removexattr(&w.join("f")), EPERM),
        ],
    )
}

fn append_dir_rules() -> Vec<Rule> {
    rules(
        "+a",
        "d",
        &[
            ("create in it", |w| open_close(&w.join("d/n"), CREATE), 0),
            ("mkdir in it", |w| mkdir(&w.join("d/n")), 0),
            ("symlink in it", |w| symlink(&w.join("d/n")), 0),
            ("link into it", |w| link(&w.join("f"), &w.join("d/n")), 0),
            (
                "rename into it",
                |w| rename(&w.join("f"), &w.join("d/n")),
                0,
            ),
            ("unlink from it", |w| unlink(&w.join("d/e")), EPERM),
            (
                "rename out of it",
                |w| rename(&w.join("d/e"), &w.join("n")),
                EPERM,
            ),
            (
                "rename within it",
                |w| rename(&w.join("d/e"), &w.join("d/n")),
                EPERM,
            ),
            (
                "rename over an entry in it",
                |w| rename(&w.join("f"), &w.join("d/e")),
                EPERM,
            ),
            (
                "exchange an entry in it",
                |w| exchange(&w.join("f"), &w.join("d/e")),
                EPERM,
            ),
            ("rename it", |w| rename(&w.join("d"), &w.join("n")), EPERM),
            ("rmdir it", |w| rmdir(&w.join("d")), EPERM),
            ("chmod it", |w| chmod(&w.join("d")), EPERM),
            ("utimes now on it", |w| utimes_now(&w.join("d")), 0),
            ("setxattr on it", |w| setxattr(&w.join("d")), EPERM),
            (
                "write a file in it",
                |w| write_at(&w.join("d/e"), WR, 0, b"X"),
                0,
            ),
        ],
    )
}

/// Runs each rule in a fresh directory of its own under `root`; the answers by name.
fn run_rules(root: &Path, rules: &[Rule]) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for (n, r) in rules.iter().enumerate() {
        let w = root.join(format!("case{n}"));
        fs::create_dir(&w).unwrap();
        fs::create_dir(w.join("d")).unwrap();
        fs::create_dir(w.join("other")).unwrap();
        fs::write(w.join("f"), b"hello").unwrap();
        fs::write(w.join("d/e"), b"hello").unwrap();
        for x in ["f", "d"] {
            assert_eq!(setxattr_a(&w.join(x)), 0, "user.a on {x}");
        }
        chattr(r.flag, &w.join(r.on));
        out.push((format!("{} {}: {}", r.flag, r.on, r.name), (r.op)(&w)));
        unflag_tree(&w);
    }
    out
}

fn setxattr_a(p: &Path) -> i32 {
    // SAFETY: NUL-terminated path and name; a one-byte value.
    path_call(p, |s| unsafe {
        libc::setxattr(s, c"user.a".as_ptr(), b"1".as_ptr().cast(), 1, 0)
    })
}

/// The answers against what each rule wants; one line per difference.
fn wrong(what: &str, rules: &[Rule], got: &[(String, i32)]) -> Vec<String> {
    rules
        .iter()
        .zip(got)
        .filter(|(r, (_, e))| r.want != *e)
        .map(|(r, (name, e))| {
            format!(
                "{what}: {name}: {} ({}), want {} ({})",
                e,
                std::io::Error::from_raw_os_error(*e),
                r.want,
                std::io::Error::from_raw_os_error(r.want)
            )
        })
        .collect()
}

/// The mount options the rules run under (see the module comment).
const OPTIONS: [&str; 3] = ["", "writeback_cache", "uring=off"];

/// `rules` on kernel ext4 and XFS (where they mount) and on ticketfs under each of `OPTIONS`:
/// every answer the one the rule wants.
fn rules_hold(rules: Vec<Rule>) {
    let mut bad = Vec::new();
    for kind in ["ext4", "xfs"] {
        if let Some(k) = kernel_fs(kind) {
            bad.extend(wrong(kind, &rules, &run_rules(&k.mnt, &rules)));
        }
    }
    for opts in OPTIONS {
        let work = tempfile::tempdir().unwrap();
        let img = image(work.path(), 128 << 20);
        let m = Mount::new(&img, opts);
        let got = run_rules(m.path(), &rules);
        bad.extend(wrong(&format!("ticketfs -o '{opts}'"), &rules, &got));
        m.unmount();
    }
    assert!(
        bad.is_empty(),
        "{} wrong answers:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn an_immutable_file_refuses_every_change() {
    rules_hold(immutable_file_rules());
}

#[test]
fn an_immutable_directory_refuses_entries_in_and_out() {
    rules_hold(immutable_dir_rules());
}

#[test]
fn an_append_only_file_only_grows() {
    rules_hold(append_file_rules());
}

#[test]
fn an_append_only_directory_keeps_its_entries() {
    rules_hold(append_dir_rules());
}

/// access(W_OK) on an immutable file: ext4 answers EPERM (`inode_permission`), and so does the
/// daemon when access(2) reaches it. On a mount with default_permissions the kernel answers
/// access(2) from the mode bits without asking, and says yes: it does not know the flag. The
/// open for writing that follows is what the daemon refuses, on every mount.
#[test]
fn access_for_writing_an_immutable_file_is_the_kernels_answer_and_the_open_refuses() {
    for (opts, immutable_answer) in [
        ("", EPERM),
        ("uring=off", EPERM),
        ("default_permissions", 0),
    ] {
        let work = tempfile::tempdir().unwrap();
        let img = image(work.path(), 64 << 20);
        let m = Mount::new(&img, opts);
        let f = m.path().join("f");
        fs::write(&f, b"x").unwrap();
        chattr("+i", &f);
        assert_eq!(access_w(&f), immutable_answer, "-o '{opts}'");
        let e = fs::OpenOptions::new().write(true).open(&f).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(EPERM), "-o '{opts}'");
        chattr("-i", &f);
        assert_eq!(access_w(&f), 0, "-o '{opts}'");
        m.unmount();
    }
}

/// A write through a descriptor opened before the file became immutable: EPERM, as ext4 answers
/// (XFS lets it through). Under writeback_cache the kernel keeps the write in its cache and
/// write(2) returns; the daemon refuses it when the kernel writes it back, which fsync reports.
#[test]
fn a_descriptor_opened_before_immutable_cannot_write() {
    for opts in OPTIONS {
        let work = tempfile::tempdir().unwrap();
        let img = image(work.path(), 64 << 20);
        let m = Mount::new(&img, opts);
        let f = m.path().join("f");
        fs::write(&f, b"hello").unwrap();
        let file = fs::OpenOptions::new().write(true).open(&f).unwrap();
        chattr("+i", &f);
        let w = std::os::unix::fs::FileExt::write_at(&file, b"X", 0).and_then(|_| file.sync_all());
        assert_eq!(
            w.map_err(|e| e.raw_os_error()),
            Err(Some(EPERM)),
            "-o '{opts}': write, then fsync"
        );
        drop(file);
        chattr("-i", &f);
        m.unmount();
        // What the image holds: the bytes before.
        let m = Mount::new(&img, opts);
        assert_eq!(
            fs::read(m.path().join("f")).unwrap(),
            b"hello",
            "-o '{opts}'"
        );
        m.unmount();
    }
}

/// chattr sets and clears each flag on a file and a directory, and lsattr shows exactly what
/// is set; the same through the ioctls' words.
#[test]
fn chattr_and_lsattr_round_trip_on_a_file_and_a_directory() {
    for opts in ["", "uring=off"] {
        let work = tempfile::tempdir().unwrap();
        let img = image(work.path(), 64 << 20);
        let m = Mount::new(&img, opts);
        let f = m.path().join("f");
        let d = m.path().join("d");
        fs::write(&f, b"x").unwrap();
        fs::create_dir(&d).unwrap();
        for (p, letters) in [(&f, "iadAS"), (&d, "iadASP")] {
            assert_eq!(lsattr(p), "", "-o '{opts}': {} at first", p.display());
            for l in letters.chars() {
                chattr(&format!("+{l}"), p);
                assert_eq!(
                    lsattr(p),
                    l.to_string(),
                    "-o '{opts}': {} +{l}",
                    p.display()
                );
                chattr(&format!("-{l}"), p);
                assert_eq!(lsattr(p), "", "-o '{opts}': {} -{l}", p.display());
            }
            chattr(&format!("+{letters}"), p);
            assert_eq!(
                lsattr(p),
                sorted(letters),
                "-o '{opts}': {} +{letters}",
                p.display()
            );
            chattr(&format!("-{letters}"), p);
            assert_eq!(lsattr(p), "", "-o '{opts}'");
        }
        // A directory's flag on a file is dropped, as XFS drops it.
        chattr("+P", &f);
        assert_eq!(lsattr(&f), "", "-o '{opts}': +P on a file");
        // The words themselves.
        let fc = c(&f);
        assert_eq!(set_flags(&fc, FS_IMMUTABLE_FL | FS_NODUMP_FL), 0);
        assert_eq!(get_flags(&fc), Ok(FS_IMMUTABLE_FL | FS_NODUMP_FL));
        assert_eq!(set_flags(&fc, 0), 0);
        assert_eq!(get_flags(&fc), Ok(0));
        m.unmount();
    }
}

/// A flag this filesystem does not have is EOPNOTSUPP, as XFS answers chattr +c; through
/// FS_IOC_FSSETXATTR too (the DAX flag). Nothing changes.
#[test]
fn flags_the_filesystem_lacks_are_not_supported() {
    let check = |root: &Path, what: &str| {
        let f = root.join("f");
        fs::write(&f, b"x").unwrap();
        let fc = c(&f);
        assert_eq!(set_flags(&fc, FS_COMPR_FL), libc::EOPNOTSUPP, "{what}: +c");
        assert_eq!(
            set_flags(&fc, FS_COMPR_FL | FS_NODUMP_FL),
            libc::EOPNOTSUPP,
            "{what}: +c with +d"
        );
        assert_eq!(get_flags(&fc), Ok(0), "{what}: nothing set");
        let (ok, out) = tool("chattr", &["+c"], &f);
        assert!(
            !ok && out.contains("Operation not supported"),
            "{what}: {out}"
        );
        let mut x = get_fsxattr(&fc).unwrap();
        x[0] |= FS_XFLAG_DAX;
        assert_eq!(
            set_fsxattr(&fc, &x),
            libc::EOPNOTSUPP,
            "{what}: FS_XFLAG_DAX"
        );
    };
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 64 << 20);
    let m = Mount::new(&img, "");
    check(m.path(), "ticketfs");
    m.unmount();
    // XFS answers the same for +c (it has DAX, which ticketfs has not).
    if let Some(k) = kernel_fs("xfs") {
        let f = k.mnt.join("f");
        fs::write(&f, b"x").unwrap();
        assert_eq!(set_flags(&c(&f), FS_COMPR_FL), libc::EOPNOTSUPP, "xfs: +c");
    }
}

/// xfs_io's chattr, lsattr, chproj and lsproj (FS_IOC_FSSETXATTR / FS_IOC_FSGETXATTR) on a file
/// and a directory; flags and project IDs survive an unmount and a mount, and `ticketfs db`
/// shows them.
#[test]
fn xfs_io_flags_and_project_ids_survive_a_remount() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 64 << 20);
    let m = Mount::new(&img, "");
    let f = m.path().join("f");
    let d = m.path().join("d");
    fs::write(&f, b"x").unwrap();
    fs::create_dir(&d).unwrap();
    let ino = fs::metadata(&f).unwrap().ino();
    xfs_io(&["chattr +i", "chattr +d", "chproj 42"], &f);
    xfs_io(&["chattr +a", "chattr +P", "chproj 7"], &d);
    let check = |r: &Path, when: &str| {
        let (f, d) = (r.join("f"), r.join("d"));
        let out = xfs_io(&["lsattr", "lsproj"], &f);
        assert!(
            out.contains("projid = 42") && out.starts_with("--i---d"),
            "{when}: {out}"
        );
        let out = xfs_io(&["lsattr", "lsproj"], &d);
        assert!(out.contains("projid = 7"), "{when}: {out}");
        assert_eq!(lsattr(&f), sorted("id"), "{when}");
        assert_eq!(lsattr(&d), sorted("aP"), "{when}");
        let x = get_fsxattr(&c(&f)).unwrap();
        assert_eq!(
            (x[0], x[3]),
            (0x08 | FS_XFLAG_NODUMP, 42),
            "{when}: fsxattr"
        );
    };
    check(m.path(), "mounted");
    m.unmount();
    let out = Command::new(env!("CARGO_BIN_EXE_ticketfs"))
        .arg("db")
        .arg(&img)
        .args(["inode", &ino.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("flags 0x11 (immutable,nodump) project 42"),
        "db inode {ino}:\n{text}"
    );
    let m = Mount::new(&img, "");
    check(m.path(), "after a remount");
    let (f, d) = (m.path().join("f"), m.path().join("d"));
    chattr("-i", &f);
    chattr("-a", &d);
    m.unmount();
}

/// Flags and a project ID set and made durable (fsync) survive the daemon's death: the log
/// replays them; the image is clean for fsck.
#[test]
fn flags_survive_a_crash() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 64 << 20);
    let m = Mount::new(&img, "");
    let f = m.path().join("f");
    let d = m.path().join("d");
    fs::write(&f, b"x").unwrap();
    fs::create_dir(&d).unwrap();
    chattr("+iA", &f);
    chattr("+aS", &d);
    xfs_io(&["chproj 9"], &f);
    fs::File::open(&f).unwrap().sync_all().unwrap();
    m.kill();
    let fsck = Path::new(env!("CARGO_BIN_EXE_ticketfs")).with_file_name("fsck-ticketfs");
    let out = Command::new(&fsck).arg("-n").arg(&img).output().unwrap();
    assert!(
        out.status.success(),
        "fsck -n after the crash: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let m = Mount::new(&img, "");
    let (f, d) = (m.path().join("f"), m.path().join("d"));
    assert_eq!(lsattr(&f), sorted("iA"));
    assert_eq!(lsattr(&d), sorted("aS"));
    assert!(xfs_io(&["lsproj"], &f).contains("projid = 9"));
    chattr("-i", &f);
    chattr("-a", &d);
    m.unmount();
}

/// Setting flags moves the change time, and stat shows it at once (the daemon tells the kernel
/// to drop the attributes it caches, which the kernel's fileattr calls leave in place).
#[test]
fn setting_flags_changes_the_change_time() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 64 << 20);
    let m = Mount::new(&img, "");
    for name in ["f", "d"] {
        let p = m.path().join(name);
        if name == "f" {
            fs::write(&p, b"x").unwrap();
        } else {
            fs::create_dir(&p).unwrap();
        }
        let ctime = |p: &Path| {
            let md = fs::metadata(p).unwrap();
            (md.ctime(), md.ctime_nsec())
        };
        let before = ctime(&p);
        std::thread::sleep(std::time::Duration::from_millis(20));
        chattr("+d", &p);
        let after = ctime(&p);
        assert!(after > before, "{name}: ctime {before:?} -> {after:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
        xfs_io(&["chproj 3"], &p);
        assert!(ctime(&p) > after, "{name}: chproj");
    }
    m.unmount();
}

/// noatime (chattr +A): reads leave the access time; a file without it gets its access time
/// moved (relatime: the old one is before the modification time).
#[test]
fn the_noatime_flag_keeps_the_access_time() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 64 << 20);
    let m = Mount::new(&img, "");
    let (a, b) = (m.path().join("a"), m.path().join("b"));
    for p in [&a, &b] {
        fs::write(p, b"some bytes").unwrap();
        assert_eq!(utimes_given(p), 0);
    }
    chattr("+A", &a);
    for p in [&a, &b] {
        assert_eq!(fs::read(p).unwrap(), b"some bytes");
    }
    assert_eq!(fs::metadata(&a).unwrap().atime(), 1, "+A: atime kept");
    assert!(
        fs::metadata(&b).unwrap().atime() > 1,
        "no flag: atime moved"
    );
    m.unmount();
}

/// The sync flag (chattr +S): a write to such a file, and a new entry in such a directory, are
/// durable when they return: the daemon killed right after (no fsync) loses neither.
#[test]
fn the_sync_flag_makes_changes_durable_when_they_return() {
    for opts in ["", "uring=off"] {
        let work = tempfile::tempdir().unwrap();
        let img = image(work.path(), 64 << 20);
        let m = Mount::new(&img, opts);
        let (f, d) = (m.path().join("f"), m.path().join("d"));
        fs::write(&f, b"").unwrap();
        fs::create_dir(&d).unwrap();
        chattr("+S", &f);
        chattr("+S", &d);
        fs::File::open(&f).unwrap().sync_all().unwrap();
        let data = common::pattern(7, 10_000);
        fs::OpenOptions::new()
            .write(true)
            .open(&f)
            .unwrap()
            .write_all_at_start(&data);
        fs::write(d.join("new"), b"entry").unwrap();
        m.kill();
        let m = Mount::new(&img, opts);
        assert_eq!(
            fs::read(m.path().join("f")).unwrap(),
            data,
            "-o '{opts}': the write"
        );
        assert!(m.path().join("d/new").exists(), "-o '{opts}': the entry");
        m.unmount();
    }
}

/// `write_all` at offset 0 without anything after it (no flush, no fsync).
trait WriteAllAtStart {
    fn write_all_at_start(self, data: &[u8]);
}

impl WriteAllAtStart for fs::File {
    fn write_all_at_start(self, data: &[u8]) {
        std::os::unix::fs::FileExt::write_all_at(&self, data, 0).unwrap();
    }
}

/// An append-only file takes writes only at its end: through O_APPEND whatever the offset; a
/// write that would change a byte before the end is EPERM (the kernel lets a FUSE file's
/// descriptor drop O_APPEND, which ext4 refuses with EPERM, so the daemon refuses such writes
/// instead); under writeback_cache the kernel's page-sized write-back of appended bytes passes,
/// and so does fsync.
#[test]
fn an_append_only_file_takes_writes_only_at_its_end() {
    use std::os::unix::fs::FileExt;
    for opts in OPTIONS {
        let work = tempfile::tempdir().unwrap();
        let img = image(work.path(), 64 << 20);
        let m = Mount::new(&img, opts);
        let f = m.path().join("f");
        fs::write(&f, b"hello").unwrap();
        chattr("+a", &f);
        let file = fs::OpenOptions::new().append(true).open(&f).unwrap();
        assert_eq!(file.write_at(b"X", 0).unwrap(), 1, "-o '{opts}'");
        for _ in 0..100 {
            std::io::Write::write_all(&mut &file, b"abc").unwrap();
        }
        file.sync_all().unwrap();
        let mut want = b"helloX".to_vec();
        want.extend(b"abc".repeat(100));
        if opts != "writeback_cache" {
            // Dropping O_APPEND: the kernel allows it for FUSE; the bytes before the end stay.
            // (Under writeback_cache such writes are cached and refused only at write-back.)
            // SAFETY: F_SETFL on our own descriptor.
            let r =
                unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&file), libc::F_SETFL, 0) };
            assert_eq!(r, 0, "-o '{opts}': F_SETFL");
            let e = file.write_at(b"Z", 0).map_err(|e| e.raw_os_error());
            assert_eq!(
                e,
                Err(Some(EPERM)),
                "-o '{opts}': a write over the first byte"
            );
            assert_eq!(
                file.write_at(b"h", 0).unwrap(),
                1,
                "-o '{opts}': the same byte"
            );
            assert_eq!(
                file.write_at(b"Y", want.len() as u64).unwrap(),
                1,
                "-o '{opts}'"
            );
            want.push(b'Y');
        }
        drop(file);
        assert_eq!(fs::read(&f).unwrap(), want, "-o '{opts}'");
        chattr("-a", &f);
        m.unmount();
        let m = Mount::new(&img, opts);
        assert_eq!(
            fs::read(m.path().join("f")).unwrap(),
            want,
            "-o '{opts}': remounted"
        );
        m.unmount();
    }
}

/// Who may change flags, asked by another user (nobody) on a mount open to others: the owner
/// may set nodump and the project ID, not immutable or append-only (the kernel asks
/// CAP_LINUX_IMMUTABLE), and may not clear what root set; others may change nothing; anyone who
/// may open the file reads its flags. What the flags forbid holds for that user too. XFS,
/// where it mounts here, answers the same.
#[test]
fn only_the_owner_or_root_changes_flags_and_only_root_immutable() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 64 << 20);
    let m = Mount::new(&img, "allow_other");
    let mut bad = Vec::new();
    let want = other_user_answers_wanted();
    let got = other_user_answers(m.path());
    bad.extend(compare("ticketfs", &want, &got));
    m.unmount();
    if let Some(k) = kernel_fs("xfs") {
        bad.extend(compare("xfs", &want, &other_user_answers(&k.mnt)));
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

fn compare(what: &str, want: &[(&str, i32)], got: &[(String, i32)]) -> Vec<String> {
    want.iter()
        .zip(got)
        .filter(|((_, w), (_, g))| w != g)
        .map(|((name, w), (_, g))| format!("{what}: {name}: {g}, want {w}"))
        .collect()
}

fn other_user_answers_wanted() -> Vec<(&'static str, i32)> {
    vec![
        ("owner sets nodump", 0),
        ("owner reads its flags back", 0),
        ("owner sets immutable", EPERM),
        ("owner sets append-only", EPERM),
        ("owner sets the project ID", 0),
        ("owner clears immutable root set", EPERM),
        ("owner adds nodump to its immutable file", 0),
        ("another user sets nodump", EPERM),
        ("another user reads the flags", 0),
        ("write a 0666 immutable file", EPERM),
        ("create in a 0777 append-only directory", 0),
        ("unlink own file from a 0777 append-only directory", EPERM),
    ]
}

/// A question asked as another user: its name and the call (0 or an errno).
type Question<'a> = (&'static str, Box<dyn Fn() -> i32 + 'a>);

/// The answers of `other_user_answers_wanted`'s questions under `r`, asked as nobody.
fn other_user_answers(r: &Path) -> Vec<(String, i32)> {
    let own = r.join("own");
    let rootf = r.join("rootfile");
    let imm = r.join("imm");
    let pub_imm = r.join("pub_imm");
    let ad = r.join("ad");
    for p in [&own, &rootf, &imm, &pub_imm] {
        fs::write(p, b"x").unwrap();
    }
    fs::create_dir(&ad).unwrap();
    fs::write(ad.join("mine"), b"x").unwrap();
    for p in [&own, &imm, &ad.join("mine")] {
        std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    for (p, mode) in [(&rootf, 0o644), (&pub_imm, 0o666), (&ad, 0o777)] {
        fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    }
    chattr("+i", &imm);
    chattr("+i", &pub_imm);
    chattr("+a", &ad);
    let (own_c, root_c, imm_c, pub_c) = (c(&own), c(&rootf), c(&imm), c(&pub_imm));
    let (new_c, mine_c) = (c(&ad.join("new")), c(&ad.join("mine")));
    let flags_are = |p: &CStr, v: u32| match get_flags(p) {
        Ok(f) if f == v => 0,
        Ok(_) => libc::EINVAL,
        Err(e) => e,
    };
    let questions: Vec<Question<'_>> = vec![
        (
            "owner sets nodump",
            Box::new(|| set_flags(&own_c, FS_NODUMP_FL)),
        ),
        (
            "owner reads its flags back",
            Box::new(|| flags_are(&own_c, FS_NODUMP_FL)),
        ),
        (
            "owner sets immutable",
            Box::new(|| set_flags(&own_c, FS_IMMUTABLE_FL)),
        ),
        (
            "owner sets append-only",
            Box::new(|| set_flags(&own_c, 0x20)),
        ),
        (
            "owner sets the project ID",
            Box::new(|| match get_fsxattr(&own_c) {
                Ok(mut x) => {
                    x[3] = 9;
                    set_fsxattr(&own_c, &x)
                }
                Err(e) => e,
            }),
        ),
        (
            "owner clears immutable root set",
            Box::new(|| set_flags(&imm_c, 0)),
        ),
        (
            "owner adds nodump to its immutable file",
            Box::new(|| set_flags(&imm_c, FS_IMMUTABLE_FL | FS_NODUMP_FL)),
        ),
        (
            "another user sets nodump",
            Box::new(|| set_flags(&root_c, FS_NODUMP_FL)),
        ),
        (
            "another user reads the flags",
            Box::new(|| flags_are(&root_c, 0)),
        ),
        (
            "write a 0666 immutable file",
            Box::new(|| with_fd(&pub_c, libc::O_WRONLY, |_| 0)),
        ),
        (
            "create in a 0777 append-only directory",
            Box::new(|| with_fd(&new_c, libc::O_WRONLY | libc::O_CREAT, |_| 0)),
        ),
        (
            "unlink own file from a 0777 append-only directory",
            // SAFETY: a NUL-terminated path.
            Box::new(|| rc(unsafe { libc::unlink(mine_c.as_ptr()) } as libc::c_long)),
        ),
    ];
    let out = questions
        .iter()
        .map(|(name, q)| (name.to_string(), as_user(NOBODY, q.as_ref())))
        .collect();
    for p in [&imm, &pub_imm, &ad] {
        unflag_tree(p);
    }
    out
}

/// A project-inheriting directory (chattr +P, a project ID set with xfs_io chproj) gives new
/// files its project ID, and new directories the flag too; a link or a rename of an inode of
/// another project into it is EXDEV (the caller copies instead), as XFS answers.
#[test]
fn a_project_inheriting_directory_passes_its_project_on() {
    let run = |r: &Path| -> Vec<(String, i32)> {
        let p = r.join("p");
        fs::create_dir(&p).unwrap();
        xfs_io(&["chattr +P", "chproj 5"], &p);
        fs::write(p.join("f"), b"x").unwrap();
        fs::create_dir(p.join("s")).unwrap();
        fs::write(r.join("o"), b"x").unwrap();
        let proj = |q: &Path| get_fsxattr(&c(q)).map(|x| x[3] as i32).unwrap_or(-1);
        vec![
            ("new file's project".into(), proj(&p.join("f"))),
            ("new directory's project".into(), proj(&p.join("s"))),
            (
                "new directory inherits the flag".into(),
                get_fsxattr(&c(&p.join("s")))
                    .map(|x| (x[0] & 0x200) as i32)
                    .unwrap_or(-1),
            ),
            (
                "link of another project's file into it".into(),
                link(&r.join("o"), &p.join("l")),
            ),
            (
                "rename of it into it".into(),
                rename(&r.join("o"), &p.join("r")),
            ),
            (
                "rename within it".into(),
                rename(&p.join("f"), &p.join("g")),
            ),
        ]
    };
    let want = [5, 5, 0x200, libc::EXDEV, libc::EXDEV, 0];
    let check = |what: &str, got: Vec<(String, i32)>| {
        for ((name, g), w) in got.iter().zip(want) {
            assert_eq!(*g, w, "{what}: {name}");
        }
    };
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 64 << 20);
    let m = Mount::new(&img, "");
    check("ticketfs", run(m.path()));
    m.unmount();
    if let Some(k) = kernel_fs("xfs") {
        check("xfs", run(&k.mnt));
    }
}

/// The daemon's own check of who changes flags (the kernel asks the same before it passes the
/// ioctl on, so a mount never reaches it): through the filesystem's calls directly.
#[test]
fn the_daemon_checks_who_changes_flags() {
    use std::sync::Arc;
    use ticketfs::device::MemDevice;
    use ticketfs::format::inode::{FLAG_IMMUTABLE, FLAG_NODUMP, FLAG_PROJINHERIT};
    use ticketfs::fs::{Ctx, FileFlags, Fs, FsError, SetAttr, S_IFREG};
    use ticketfs::{Engine, EngineOptions};
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 16 << 20);
    let bytes = fs::read(&img).unwrap();
    let dev = Arc::new(MemDevice::from_bytes(4096, bytes));
    let fs = Fs::new(Engine::mount(dev, EngineOptions::default()).unwrap(), false).unwrap();
    let root = Ctx::ROOT;
    let (owner, other) = (Ctx::new(1000, 1000, 0), Ctx::new(2000, 2000, 0));
    let a = fs
        .make(&root, fs.root(), b"f", S_IFREG | 0o666, 0, None)
        .unwrap();
    let give = SetAttr {
        uid: Some(1000),
        gid: Some(1000),
        ..Default::default()
    };
    fs.setattr(&root, a.ino, &give).unwrap();
    let perm = |r: Result<ticketfs::fs::Attr, FsError>| matches!(r, Err(FsError::Perm));
    assert!(fs
        .set_file_flags(&owner, a.ino, FLAG_NODUMP, Some(4))
        .is_ok());
    assert!(perm(fs.set_file_flags(&owner, a.ino, FLAG_IMMUTABLE, None)));
    assert!(perm(fs.set_file_flags(&other, a.ino, 0, None)));
    assert!(perm(fs.set_file_flags(&other, a.ino, FLAG_NODUMP, Some(5))));
    let both = FLAG_IMMUTABLE | FLAG_NODUMP;
    assert!(fs.set_file_flags(&root, a.ino, both, None).is_ok());
    assert!(perm(fs.set_file_flags(&owner, a.ino, FLAG_NODUMP, None)));
    // Other flags and the project ID change under immutable, as on XFS.
    assert!(fs
        .set_file_flags(&owner, a.ino, FLAG_IMMUTABLE, Some(6))
        .is_ok());
    let flags = |f: u32, projid: u32| FileFlags { flags: f, projid };
    assert_eq!(fs.file_flags(a.ino).unwrap(), flags(FLAG_IMMUTABLE, 6));
    // An immutable file refuses a write through the filesystem's own call too, root's.
    assert!(matches!(
        fs.write(&root, a.ino, 0, b"x"),
        Err(FsError::Perm)
    ));
    // The project ID the kernel calls invalid; a directory's flag on a file is dropped.
    assert!(matches!(
        fs.set_file_flags(&root, a.ino, 0, Some(u32::MAX)),
        Err(FsError::Invalid(_))
    ));
    assert!(fs
        .set_file_flags(&root, a.ino, FLAG_PROJINHERIT, None)
        .is_ok());
    assert_eq!(fs.file_flags(a.ino).unwrap(), flags(0, 6));
    fs.unmount().unwrap();
}
