//! A shared machine (issue 18): what an unprivileged local user can do to a ticketfs mount of
//! root's, and to its image, lock and statistics channel.
//!
//! - The same matrix of operations by another user (uid 65534) — read, write, create, unlink,
//!   rename in plain and sticky directories, chmod, chown, utimes, set-id bits after a write,
//!   xattrs in each namespace, hard links, device nodes, traversal of 0700 and 0711 directories
//!   after root looked every path up — on ticketfs mounted `allow_other` (with and without
//!   `default_permissions` given) and on kernel ext4 in the same test: every answer the same.
//!   Before, a name root had looked up stayed cached and the other user read and wrote a file in
//!   root's 0700 directory.
//! - mkfs makes the image 0600; a mount refuses an image others may write; a user who may read
//!   an image checks it with `fsck -n` and inspects it with `ticketfs db` (as e2fsck -fn and
//!   debugfs), but a check that may write needs write permission.
//! - A user holding a lock on the image, or the old abstract socket name, does not stop a mount;
//!   a user cannot read or stop the statistics.

mod common;

use common::mount::{image, Mount};
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// The other user: nobody.
const OTHER: u32 = common::NOBODY;

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path")
}

fn errno() -> i32 {
    // SAFETY: reads this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Runs `f` as the other user (`common::as_user`): 0 or an errno.
fn as_other(f: &dyn Fn() -> i32) -> i32 {
    common::as_user(OTHER, f)
}

fn rc(r: libc::c_int) -> i32 {
    if r < 0 {
        errno()
    } else {
        0
    }
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).expect("chown");
}

fn mode(p: &Path, m: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(m)).expect("chmod");
}

/// Root's tree under `r`, the same on every filesystem.
fn make_tree(r: &Path) {
    mode(r, 0o755);
    for (d, m) in [
        ("pub", 0o777),
        ("sticky", 0o1777),
        ("priv", 0o700),
        ("xonly", 0o711),
    ] {
        fs::create_dir(r.join(d)).expect("mkdir");
        mode(&r.join(d), m);
    }
    let files: [(&str, u32, u32); 10] = [
        ("priv/notes", 0o666, 0),
        ("xonly/f", 0o644, 0),
        ("rootfile", 0o644, 0),
        ("rootfile_w", 0o666, 0),
        ("setid", 0o6777, 0),
        ("userown", 0o644, OTHER),
        ("sticky/rootfile", 0o666, 0),
        ("sticky/userfile", 0o644, OTHER),
        ("pub/rootfile", 0o644, 0),
        ("pub/moveme", 0o644, 0),
    ];
    for (f, m, owner) in files {
        let p = r.join(f);
        fs::write(&p, b"secret\n").expect("write");
        chown(&p, owner, owner);
        mode(&p, m);
    }
}

/// Root looks every path up and opens every file, so the kernel caches them all.
fn warm(r: &Path) {
    let mut stack = vec![r.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("readdir") {
            let p = e.expect("entry").path();
            let m = fs::symlink_metadata(&p).expect("lstat");
            if m.is_dir() {
                stack.push(p);
            } else {
                let _ = fs::read(&p);
            }
        }
    }
}

/// One operation as the other user: 0 or an errno.
type UserOp<'a> = Box<dyn Fn() -> i32 + 'a>;

/// The operations, by name, each as the other user; their errnos in order.
fn matrix(r: &Path) -> Vec<(String, i32)> {
    warm(r);
    let p = |s: &str| c(&r.join(s));
    let (notes, xf, xonly, priv_d) = (p("priv/notes"), p("xonly/f"), p("xonly"), p("priv"));
    let (rootfile, rootfile_w, setid, userown) =
        (p("rootfile"), p("rootfile_w"), p("setid"), p("userown"));
    let (s_root, s_user, pub_root, moveme) = (
        p("sticky/rootfile"),
        p("sticky/userfile"),
        p("pub/rootfile"),
        p("pub/moved"),
    );
    let (moveme_src, s_moved, newfile, topfile) = (
        p("pub/moveme"),
        p("sticky/moved"),
        p("pub/newfile"),
        p("newfile"),
    );
    let (hl1, hl2, dev, subdir) = (p("pub/hl1"), p("pub/hl2"), p("pub/dev"), p("priv/sub"));
    let (ux, tx, sx) = (
        c(Path::new("user.x")),
        c(Path::new("trusted.x")),
        c(Path::new("security.x")),
    );
    let open = |path: &CString, flags: i32| -> i32 {
        // SAFETY: a NUL-terminated path; the descriptor is closed at once.
        unsafe {
            let fd = libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, 0o644);
            if fd < 0 {
                return errno();
            }
            libc::close(fd);
            0
        }
    };
    let write_to = |path: &CString| -> i32 {
        // SAFETY: as above; writes 2 bytes from a static buffer.
        unsafe {
            let fd = libc::open(
                path.as_ptr(),
                libc::O_WRONLY | libc::O_APPEND | libc::O_CLOEXEC,
            );
            if fd < 0 {
                return errno();
            }
            let r = libc::write(fd, b"x\n".as_ptr().cast(), 2);
            let e = if r < 0 { errno() } else { 0 };
            libc::close(fd);
            e
        }
    };
    let stat = |path: &CString| -> i32 {
        // SAFETY: a zeroed stat buffer the call fills.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            rc(libc::stat(path.as_ptr(), &mut st))
        }
    };
    let ops: Vec<(&str, UserOp<'_>)> =
        vec![
            (
                "read a file in root's 0700 dir",
                Box::new(|| open(&notes, libc::O_RDONLY)),
            ),
            (
                "write a file in root's 0700 dir",
                Box::new(|| write_to(&notes)),
            ),
            ("stat a file in root's 0700 dir", Box::new(|| stat(&notes))),
            (
                "list root's 0700 dir",
                Box::new(|| open(&priv_d, libc::O_RDONLY | libc::O_DIRECTORY)),
            ),
            (
                "mkdir in root's 0700 dir",
                Box::new(|| rc(unsafe { libc::mkdir(subdir.as_ptr(), 0o755) })),
            ),
            (
                "read a file in a 0711 dir",
                Box::new(|| open(&xf, libc::O_RDONLY)),
            ),
            (
                "list a 0711 dir",
                Box::new(|| open(&xonly, libc::O_RDONLY | libc::O_DIRECTORY)),
            ),
            (
                "read root's 0644 file",
                Box::new(|| open(&rootfile, libc::O_RDONLY)),
            ),
            ("write root's 0644 file", Box::new(|| write_to(&rootfile))),
            ("write root's 0666 file", Box::new(|| write_to(&rootfile_w))),
            ("write root's 06777 file", Box::new(|| write_to(&setid))),
            (
                "create in a 0777 dir",
                Box::new(|| open(&newfile, libc::O_CREAT | libc::O_WRONLY)),
            ),
            (
                "create in root's 0755 dir",
                Box::new(|| open(&topfile, libc::O_CREAT | libc::O_WRONLY)),
            ),
            (
                "unlink root's file in a sticky dir",
                Box::new(|| rc(unsafe { libc::unlink(s_root.as_ptr()) })),
            ),
            (
                "rename root's file in a sticky dir",
                Box::new(|| rc(unsafe { libc::rename(s_root.as_ptr(), s_moved.as_ptr()) })),
            ),
            (
                "unlink own file in a sticky dir",
                Box::new(|| rc(unsafe { libc::unlink(s_user.as_ptr()) })),
            ),
            (
                "rename root's file in a 0777 dir",
                Box::new(|| rc(unsafe { libc::rename(moveme_src.as_ptr(), moveme.as_ptr()) })),
            ),
            (
                "unlink root's file in a 0777 dir",
                Box::new(|| rc(unsafe { libc::unlink(pub_root.as_ptr()) })),
            ),
            (
                "chmod root's file",
                Box::new(|| rc(unsafe { libc::chmod(rootfile.as_ptr(), 0o777) })),
            ),
            (
                "chmod own file",
                Box::new(|| rc(unsafe { libc::chmod(userown.as_ptr(), 0o600) })),
            ),
            (
                "chown own file to root",
                Box::new(|| rc(unsafe { libc::chown(userown.as_ptr(), 0, u32::MAX) })),
            ),
            (
                "chgrp own file to root's group",
                Box::new(|| rc(unsafe { libc::chown(userown.as_ptr(), u32::MAX, 0) })),
            ),
            (
                "utimes now on root's 0644 file",
                Box::new(|| rc(unsafe { libc::utimes(rootfile.as_ptr(), std::ptr::null()) })),
            ),
            (
                "utimes now on root's 0666 file",
                Box::new(|| rc(unsafe { libc::utimes(rootfile_w.as_ptr(), std::ptr::null()) })),
            ),
            (
                "utimes given on root's 0666 file",
                Box::new(|| {
                    let tv = [
                        libc::timeval {
                            tv_sec: 1,
                            tv_usec: 0,
                        },
                        libc::timeval {
                            tv_sec: 1,
                            tv_usec: 0,
                        },
                    ];
                    rc(unsafe { libc::utimes(rootfile_w.as_ptr(), tv.as_ptr()) })
                }),
            ),
            (
                "setxattr user. on root's 0644 file",
                Box::new(|| {
                    rc(unsafe {
                        libc::setxattr(rootfile.as_ptr(), ux.as_ptr(), b"v".as_ptr().cast(), 1, 0)
                    })
                }),
            ),
            (
                "setxattr user. on root's 0666 file",
                Box::new(|| {
                    rc(unsafe {
                        libc::setxattr(rootfile_w.as_ptr(), ux.as_ptr(), b"v".as_ptr().cast(), 1, 0)
                    })
                }),
            ),
            (
                "setxattr trusted. on root's 0666 file",
                Box::new(|| {
                    rc(unsafe {
                        libc::setxattr(rootfile_w.as_ptr(), tx.as_ptr(), b"v".as_ptr().cast(), 1, 0)
                    })
                }),
            ),
            (
                "setxattr security. on root's 0666 file",
                Box::new(|| {
                    rc(unsafe {
                        libc::setxattr(rootfile_w.as_ptr(), sx.as_ptr(), b"v".as_ptr().cast(), 1, 0)
                    })
                }),
            ),
            (
                "hard link root's 0644 file",
                Box::new(|| rc(unsafe { libc::link(rootfile.as_ptr(), hl1.as_ptr()) })),
            ),
            (
                "hard link root's 0666 file",
                Box::new(|| rc(unsafe { libc::link(rootfile_w.as_ptr(), hl2.as_ptr()) })),
            ),
            (
                "mknod a device",
                Box::new(|| {
                    rc(unsafe {
                        libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3))
                    })
                }),
            ),
        ];
    let mut out = Vec::new();
    for (name, f) in &ops {
        out.push((name.to_string(), as_other(f.as_ref())));
    }
    // What the write left of root's set-id bits.
    let m = fs::metadata(r.join("setid")).expect("stat setid").mode() & 0o7777;
    out.push(("mode of root's 06777 file after the write".into(), m as i32));
    out
}

fn ext4_matrix() -> Option<Vec<(String, i32)>> {
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("ext4.img");
    fs::File::create(&img).unwrap().set_len(64 << 20).unwrap();
    let mk = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&img)
        .status();
    if !mk.is_ok_and(|s| s.success()) {
        common::skip("the ext4 comparison: mkfs.ext4 failed");
        return None;
    }
    let mnt = work.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let st = Command::new("mount")
        .args(["-o", "loop"])
        .arg(&img)
        .arg(&mnt)
        .status()
        .unwrap();
    if !st.success() {
        common::skip("the ext4 comparison: no loop mount here");
        return None;
    }
    let _g = common::mount::Unmounted(mnt.clone());
    let _ = fs::remove_dir(mnt.join("lost+found"));
    make_tree(&mnt);
    Some(matrix(&mnt))
}

/// The kernel's protected_hardlinks rule is part of the matrix: it must be on, as Debian has it.
fn protected_hardlinks() -> bool {
    fs::read_to_string("/proc/sys/fs/protected_hardlinks").is_ok_and(|s| s.trim() == "1")
}

#[test]
fn another_user_gets_the_answers_kernel_ext4_gives() {
    if !protected_hardlinks() {
        common::skip("fs.protected_hardlinks is off on this machine");
        return;
    }
    let Some(ext4) = ext4_matrix() else { return };
    for opts in [
        "allow_other",
        "allow_other,default_permissions",
        "allow_other,uring=off",
        // Every request but creations from an unnamed caller, after the kernel's check.
        "allow_other,idmap",
    ] {
        let work = tempfile::tempdir().unwrap();
        let img = image(work.path(), 128 << 20);
        let m = Mount::new(&img, opts);
        make_tree(m.path());
        let got = matrix(m.path());
        m.unmount();
        let differ: Vec<String> = ext4
            .iter()
            .zip(&got)
            .filter(|(a, b)| a != b)
            .map(|((name, e), (_, t))| format!("{name}: ext4 {e}, ticketfs {t}"))
            .collect();
        assert!(
            differ.is_empty(),
            "{opts}: {} of {} differ: {differ:#?}",
            differ.len(),
            got.len()
        );
    }
}

#[test]
fn mkfs_makes_an_image_only_its_owner_may_read() {
    let work = tempfile::tempdir().unwrap();
    // SAFETY: umask only sets the process's file-creation mask.
    let old = unsafe { libc::umask(0o022) };
    let img = image(work.path(), 64 << 20);
    unsafe { libc::umask(old) };
    assert_eq!(fs::metadata(&img).unwrap().mode() & 0o777, 0o600);
}

/// A user who may read an image but not write it can check it (`fsck.ticketfs -n`) and look
/// into it (`ticketfs db`), as e2fsck -fn and debugfs let them with an ext4 image: both tools
/// only read. A check that may write (no -n) is refused for want of write permission. Both
/// tools used to open the image read-write and exit 8 "Permission denied".
#[test]
fn a_user_who_may_read_an_image_checks_and_inspects_it() {
    let work = tempfile::tempdir().unwrap();
    fs::set_permissions(work.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let img = image(work.path(), 64 << 20);
    fs::set_permissions(&img, fs::Permissions::from_mode(0o644)).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_ticketfs"));
    let fsck = bin.with_file_name("fsck-ticketfs");
    let as_other = |tool: &Path, args: &[&str], after: &[&str]| {
        let out = Command::new("setpriv")
            .args([
                &format!("--reuid={OTHER}"),
                &format!("--regid={OTHER}"),
                "--clear-groups",
            ])
            .arg(tool)
            .args(args)
            .arg(&img)
            .args(after)
            .env_remove("XDG_RUNTIME_DIR")
            .output()
            .expect("setpriv");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, out) = as_other(&fsck, &["-n"], &[]);
    assert!(
        code == Some(0) && out.contains("clean"),
        "fsck -n by a reader: exit {code:?}\n{out}"
    );
    let (code, out) = as_other(bin, &["db"], &["sb"]);
    assert!(
        code == Some(0) && out.contains("superblock copy at block 0: good"),
        "db by a reader: exit {code:?}\n{out}"
    );
    let (code, out) = as_other(&fsck, &[], &[]);
    assert!(
        code == Some(8) && out.contains("Permission denied"),
        "a check that may write, by a reader: exit {code:?}\n{out}"
    );
}

#[test]
fn a_mount_refuses_an_image_others_may_write() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 64 << 20);
    mode(&img, 0o666);
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ticketfs"))
        .arg(&img)
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "mounted an image anyone may write");
    assert!(String::from_utf8_lossy(&out.stderr).contains("writable by users other than its owner"));
}

/// A user who can read the image (an old 0644 one) takes a shared flock on it and binds the
/// statistics' old abstract socket name: root's mount goes ahead at once. The user can then
/// neither read the statistics nor stop them; root can.
#[test]
fn a_user_can_neither_block_a_mount_nor_reach_its_statistics() {
    let work = tempfile::tempdir().unwrap();
    mode(work.path(), 0o755);
    let img = image(work.path(), 64 << 20);
    mode(&img, 0o644);
    let canon = fs::canonicalize(&img).unwrap();
    // The user's squatter: holds the flock and the old socket name until killed.
    let script = format!(
        "import fcntl,socket,time\n\
         f=open({img:?},'rb'); fcntl.flock(f,fcntl.LOCK_SH)\n\
         s=socket.socket(socket.AF_UNIX); s.bind('\\0ticketfs-stats:{img}'); s.listen(1)\n\
         print('ready',flush=True); time.sleep(60)",
        img = canon.display().to_string()
    );
    let mut squat = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
        ])
        .arg(&script)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("setpriv python3");
    let mut ready = String::new();
    let _ = std::io::BufRead::read_line(
        &mut std::io::BufReader::new(squat.stdout.as_mut().unwrap()),
        &mut ready,
    );
    assert_eq!(ready.trim(), "ready", "the squatter did not start");
    let started = std::time::Instant::now();
    let m = Mount::new(&img, "allow_other");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "the mount waited"
    );
    // The user asks for the statistics and tries to stop them.
    let bin = c(Path::new(env!("CARGO_BIN_EXE_ticketfs")));
    let mnt = c(m.path());
    let (a0, a1) = (c(Path::new("ticketfs")), c(Path::new("stats")));
    let argv = [a0.as_ptr(), a1.as_ptr(), mnt.as_ptr(), std::ptr::null()];
    let user_rc = as_other(&|| unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
        libc::dup2(null, 1);
        libc::dup2(null, 2);
        libc::execv(bin.as_ptr(), argv.as_ptr());
        127
    });
    assert_ne!(user_rc, 0, "another user read the statistics");
    let sock = ticketfs::rundir::socket_path(&img).unwrap();
    assert_eq!(
        as_other(&{
            let s = c(&sock);
            move || unsafe {
                let mut st: libc::stat = std::mem::zeroed();
                rc(libc::stat(s.as_ptr(), &mut st))
            }
        }),
        libc::EACCES,
        "another user can reach the socket"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_ticketfs"))
        .arg("stats")
        .arg(m.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "root's ticketfs stats: {out:?}");
    let _ = squat.kill();
    let _ = squat.wait();
    m.unmount();
}

/// A user who can only read the image (an old 0644 one) flocks it and keeps the lock: root's
/// fsck.ticketfs -y and mkfs.ticketfs -f must still run, as e2fsck -fy, mke2fs -F, xfs_repair
/// and mkfs.xfs -f do on a file another user holds open or flocked. They refused it ("in use:
/// locked by another program") for as long as the user liked, with no option to go on; a lock's
/// holder now counts only when it is root or the image's owner (`holders::counts`).
#[test]
fn a_reader_cannot_keep_root_from_fsck_or_mkfs() {
    let work = tempfile::tempdir().unwrap();
    mode(work.path(), 0o755);
    let img = image(work.path(), 64 << 20);
    mode(&img, 0o644);
    for how in ["LOCK_SH", "LOCK_EX"] {
        let squat = reader_lock(&img, how, Taker::Itself);
        let runs = fsck_and_mkfs(&img, "-y");
        release(squat);
        for (tool, arg, out) in runs {
            assert!(
                out.status.success(),
                "{how} held by a reader: {} {arg}: {}{}",
                tool.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Runs fsck.ticketfs `fsck_arg` and mkfs.ticketfs -f on `img`: each tool, its argument and
/// what it gave.
fn fsck_and_mkfs(
    img: &Path,
    fsck_arg: &'static str,
) -> [(std::path::PathBuf, &'static str, std::process::Output); 2] {
    let bin = Path::new(env!("CARGO_BIN_EXE_ticketfs"));
    [
        (bin.with_file_name("fsck-ticketfs"), fsck_arg),
        (bin.with_file_name("mkfs-ticketfs"), "-f"),
    ]
    .map(|(tool, arg)| {
        let out = Command::new(&tool).arg(arg).arg(img).output().unwrap();
        (tool, arg, out)
    })
}

/// How the other user's lock is taken (`reader_lock`).
#[derive(Clone, Copy, Debug)]
enum Taker {
    /// By the process that keeps it.
    Itself,
    /// By a child on the shared open file, which then exits (reaped): /proc/locks names a
    /// process that is gone while the lock stays held.
    ChildThatExits,
    /// By the process that then execs set-user-ID `su` (waiting for a password on a pipe),
    /// a child keeping the open file: /proc/locks names a process whose effective uid is 0.
    ThenExecsSu,
}

/// The other user holds flock `how` on `img` from python3 until `release` is called: the
/// process started and the PID of the one that keeps the lock.
fn reader_lock(img: &Path, how: &str, taker: Taker) -> (std::process::Child, i32) {
    let body = match taker {
        Taker::Itself => format!(
            "fcntl.flock(f,fcntl.{how})\n\
             print('ready',os.getpid(),flush=True); time.sleep(60)"
        ),
        Taker::ChildThatExits => format!(
            "pid=os.fork()\n\
             if pid==0:\n    fcntl.flock(f,fcntl.{how}); os._exit(0)\n\
             os.waitpid(pid,0)\n\
             print('ready',os.getpid(),flush=True); time.sleep(60)"
        ),
        Taker::ThenExecsSu => format!(
            "fcntl.flock(f,fcntl.{how})\n\
             if os.fork()==0:\n    time.sleep(0.5); print('ready',os.getpid(),flush=True); time.sleep(60); os._exit(0)\n\
             os.execv('/usr/bin/su',['su','-c','true'])"
        ),
    };
    let script = format!(
        "import fcntl,os,time\n\
         f=open({img:?},'rb')\n\
         {body}",
        img = img.display().to_string()
    );
    let mut squat = Command::new("setpriv")
        .args([
            &format!("--reuid={OTHER}"),
            &format!("--regid={OTHER}"),
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
        ])
        .arg(&script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("setpriv python3");
    let mut ready = String::new();
    let _ = std::io::BufRead::read_line(
        &mut std::io::BufReader::new(squat.stdout.as_mut().unwrap()),
        &mut ready,
    );
    let keeper = ready
        .trim()
        .strip_prefix("ready ")
        .and_then(|p| p.parse().ok())
        .expect("the reader did not start");
    (squat, keeper)
}

/// Kills and reaps the reader's process, and kills the one keeping the lock.
fn release((mut squat, keeper): (std::process::Child, i32)) {
    // SAFETY: a signal to a process this test started (or its child).
    unsafe { libc::kill(keeper, libc::SIGKILL) };
    let _ = squat.kill();
    let _ = squat.wait();
}

/// As `a_reader_cannot_keep_root_from_fsck_or_mkfs`, with the lock taken so that /proc/locks
/// misnames its holder: by a child that exits (its /proc entry is gone, so
/// `holders::lock_holders` finds nobody and `flock_or_holders` refuses, "locked by another
/// program"; in a shell: `exec 9<img; flock 9`), or by a process that then execs a
/// set-user-ID program (`holders::holder` read its effective uid 0, and counted it). Any reader
/// could do either and keep root's fsck and mkfs out. Holders are now found from the
/// descriptors that hold the lock (`/proc/PID/fdinfo`) and counted by their real uid.
#[test]
fn a_reader_cannot_keep_root_out_by_a_lock_that_names_another_process() {
    let work = tempfile::tempdir().unwrap();
    mode(work.path(), 0o755);
    let img = image(work.path(), 64 << 20);
    mode(&img, 0o644);
    let mut failed = Vec::new();
    for taker in [Taker::ChildThatExits, Taker::ThenExecsSu] {
        let squat = reader_lock(&img, "LOCK_EX", taker);
        let runs = fsck_and_mkfs(&img, "-n");
        release(squat);
        for (tool, arg, out) in runs {
            if !out.status.success() {
                failed.push(format!(
                    "{taker:?}: {} {arg}: {} {}",
                    tool.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// While a reader holds a lock on root's image, fsck's and mkfs's claim goes on without the
/// image's exclusive lock (`claim_exclusive`: the reader is passed over), and nothing then
/// keeps a mount out: its shared lock is granted beside the reader's LOCK_SH, or, beside its
/// LOCK_EX, it goes on to wait for it (`claim_for_mount`). The same user's mount is still kept
/// out by their runtime directory's lock (`rundir`), which mkfs and fsck hold; another user's
/// (the image's owner mounting while root's fsck -y or mkfs -f writes it) is not. Known, not
/// yet fixed: any lock a reader cannot also take or block needs write access to something the
/// reader cannot reach, and the image file is the only object both users share.
#[test]
#[ignore = "fails (known): while a reader holds a flock on the image, the owner's mount claim is granted beside root's fsck claim"]
fn a_reader_lock_does_not_let_a_mount_in_beside_fsck() {
    let work = tempfile::tempdir().unwrap();
    mode(work.path(), 0o755);
    let img = image(work.path(), 64 << 20);
    mode(&img, 0o644);
    for how in ["LOCK_SH", "LOCK_EX"] {
        let squat = reader_lock(&img, how, Taker::Itself);
        let fsck = ticketfs::image::claim_exclusive(&img);
        let mount = fsck
            .as_ref()
            .ok()
            .map(|_| ticketfs::image::claim_for_mount(&img).map(|_| ()));
        release(squat);
        assert!(fsck.is_ok(), "{how}: fsck's claim: {:?}", fsck.err());
        assert!(
            mount.as_ref().is_some_and(|m| m.is_err()),
            "{how} held by a reader: a mount's claim was granted while fsck's was held"
        );
    }
}

/// A user without XDG_RUNTIME_DIR (and no /run/user/UID) keeps the lock and statistics of their
/// mounts in /tmp/ticketfs-UID (`rundir::dir`). Any other user may create that name first, in
/// the world-writable /tmp: the owner's mount (exit 32) and fsck (exit 8) were then refused, "not
/// a directory of uid UID closed to everyone else", until root removed it. The owner now makes
/// a ticketfs-UID.XXXXXX of their own, and their later commands find it (`ticketfs stats`
/// reaches the daemon's socket there).
#[test]
fn a_user_cannot_keep_another_from_mounting_by_taking_their_runtime_dir_name() {
    if let Some(why) = common::user_fuse_missing() {
        common::skip(&why);
        return;
    }
    // The victim: a user with a passwd entry (fusermount3 needs one) that no other test runs
    // as; Debian always has `games`.
    // SAFETY: getpwnam with a NUL-terminated name; the entry is read at once.
    let pw = unsafe { libc::getpwnam(c"games".as_ptr()) };
    if pw.is_null() {
        common::skip("no user games to mount as");
        return;
    }
    // SAFETY: a non-null entry getpwnam returned.
    let victim = unsafe { (*pw).pw_uid };
    struct Gone(std::path::PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    let taken = Gone(std::path::PathBuf::from(format!("/tmp/ticketfs-{victim}")));
    let _ = fs::remove_dir_all(&taken.0);
    let st = Command::new("setpriv")
        .args([
            &format!("--reuid={OTHER}"),
            &format!("--regid={OTHER}"),
            "--clear-groups",
            "mkdir",
            "-m",
            "700",
        ])
        .arg(&taken.0)
        .status()
        .expect("setpriv mkdir");
    assert!(st.success(), "nobody's mkdir of {}", taken.0.display());
    let work = tempfile::tempdir().unwrap();
    chown(work.path(), victim, victim);
    let bin = Path::new(env!("CARGO_BIN_EXE_ticketfs"));
    let theirs = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&format!("ticketfs-{victim}.")))
    };
    let before: Vec<std::path::PathBuf> = fs::read_dir("/tmp")
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| theirs(p))
        .collect();
    let script = format!(
        "set -e; cd {w}; {mkfs} -s 64M --root-owner img >/dev/null; mkdir m; \
         {tk} -f img m & d=$!; \
         for i in $(seq 100); do grep -q \" {w}/m \" /proc/mounts && break; sleep 0.05; done; \
         echo data > m/keep; {tk} stats m | grep -q '^image'; fusermount3 -u m; wait $d",
        w = work.path().display(),
        mkfs = bin.with_file_name("mkfs-ticketfs").display(),
        tk = bin.display(),
    );
    let mounted = common::mount::Unmounted(work.path().join("m"));
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={victim}"),
            &format!("--regid={victim}"),
            "--clear-groups",
            "env",
            "-u",
            "XDG_RUNTIME_DIR",
        ])
        .arg(format!("HOME={}", work.path().display()))
        .args(["sh", "-c", &script])
        .output()
        .expect("setpriv");
    drop(mounted);
    // The directories the owner made beside the taken name (its daemon has ended: waited for).
    for e in fs::read_dir("/tmp").unwrap().flatten() {
        if theirs(&e.path()) && !before.contains(&e.path()) {
            let _ = fs::remove_dir_all(e.path());
        }
    }
    assert!(
        out.status.success(),
        "the owner's mount with {} taken by another user: {}{}",
        taken.0.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A user other than root mounts an image of their own through fusermount3 (Debian's fuse3):
/// plain fuse, nosuid and nodev, their own runtime directory for the lock and the statistics,
/// SIGTERM unmounts it, and the image is clean afterwards. (The daemon is signalled by its PID:
/// other tests run commands as the same user at the same time.)
#[test]
fn a_user_mounts_an_image_of_their_own_through_fusermount3() {
    if let Some(why) = common::user_fuse_missing() {
        common::skip(&why);
        return;
    }
    let work = tempfile::tempdir().unwrap();
    chown(work.path(), OTHER, OTHER);
    let bin = Path::new(env!("CARGO_BIN_EXE_ticketfs"));
    let (mkfs, fsck) = (
        bin.with_file_name("mkfs-ticketfs"),
        bin.with_file_name("fsck-ticketfs"),
    );
    let script = format!(
        "set -e; cd {w}; {mkfs} -s 64M img >/dev/null; mkdir m; {tk} -f img m & d=$!; \
         for i in $(seq 100); do grep -q \" {w}/m \" /proc/mounts && break; sleep 0.05; done; \
         grep -q \" {w}/m fuse rw,nosuid,nodev,\" /proc/mounts; ls m >/dev/null; \
         {tk} stats m | grep -q '^image'; kill -TERM $d; \
         for i in $(seq 100); do grep -q \" {w}/m \" /proc/mounts || break; sleep 0.05; done; \
         ! grep -q \" {w}/m \" /proc/mounts; \
         for i in $(seq 100); do {fsck} -n img >/dev/null 2>&1 && exit 0; sleep 0.05; done; \
         {fsck} -n img",
        w = work.path().display(),
        mkfs = mkfs.display(),
        tk = bin.display(),
        fsck = fsck.display(),
    );
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "env",
            "-u",
            "XDG_RUNTIME_DIR",
        ])
        .arg(format!("HOME={}", work.path().display()))
        .args(["sh", "-c", &script])
        .output()
        .expect("setpriv");
    // Whatever happened, leave no mount behind.
    let _ = Command::new("umount")
        .arg("-l")
        .arg(work.path().join("m"))
        .status();
    assert!(
        out.status.success(),
        "a user's mount through fusermount3: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
