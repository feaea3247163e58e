//! Idmapped mounts (issue 22): a ticketfs mounted with `-o idmap` takes FUSE_ALLOW_IDMAP at
//! INIT, so mount_setattr(2) may give a bind mount of it an idmapping. Through it a caller's
//! ids are mapped into the filesystem's as it creates, owners are shown mapped back, chown
//! stores the filesystem's ids, and a caller with no id in the mapping may not create
//! (EOVERFLOW). The same script on loop-mounted XFS and ext4 gives the same answers.
//! util-linux here has no X-mount.idmap, so the idmapped mount is made with the system calls.

mod common;

use common::mount::{image, Mount, Unmounted};
use common::{as_user, NOBODY};
use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// `MOUNT_ATTR_IDMAP` (include/uapi/linux/mount.h).
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
/// `MOVE_MOUNT_F_EMPTY_PATH`: move the mount the descriptor is.
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;
/// The idmapping, for uids and gids alike: the filesystem's ids 0..100 are 1000..1100 through
/// the idmapped mount; every other id is shown as the overflow id and may not be stored.
const MAP: &str = "0 1000 100";
/// The overflow id an id without a mapping is shown as (/proc/sys/fs/overflowuid).
const OVERFLOW: u32 = 65534;

/// `struct mount_attr`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// 0 or the errno of a system call's result.
fn rc(r: i64) -> i32 {
    if r < 0 {
        errno()
    } else {
        0
    }
}

/// A user namespace whose uid and gid maps are `MAP`: made by a child that unshares one and
/// waits to be killed once its namespace is open here.
fn userns() -> OwnedFd {
    let mut p = [0i32; 2];
    // SAFETY: pipe fills the two descriptors.
    assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0, "pipe");
    // SAFETY: the child makes only system calls (unshare, write, pause, _exit).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        unsafe {
            let ok = libc::unshare(libc::CLONE_NEWUSER) == 0;
            libc::write(p[1], [ok as u8].as_ptr().cast(), 1);
            loop {
                libc::pause();
            }
        }
    }
    let mut ok = [0u8];
    // SAFETY: reads one byte into `ok`; the descriptors are ours.
    unsafe {
        libc::read(p[0], ok.as_mut_ptr().cast(), 1);
        libc::close(p[0]);
        libc::close(p[1]);
    }
    let proc = |f: &str| format!("/proc/{pid}/{f}");
    let made = (|| {
        if ok[0] != 1 {
            return Err("unshare(CLONE_NEWUSER) failed".to_string());
        }
        fs::write(proc("uid_map"), MAP).map_err(|e| format!("uid_map: {e}"))?;
        fs::write(proc("setgroups"), "deny").map_err(|e| format!("setgroups: {e}"))?;
        fs::write(proc("gid_map"), MAP).map_err(|e| format!("gid_map: {e}"))?;
        fs::File::open(proc("ns/user")).map_err(|e| format!("ns/user: {e}"))
    })();
    // SAFETY: our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    made.expect("a user namespace").into()
}

/// Mounts `src` again at `dst` with the idmapping `MAP` (open_tree, mount_setattr,
/// move_mount); the failing call and its errno otherwise.
fn idmapped_bind(src: &Path, dst: &Path) -> Result<(), (&'static str, i32)> {
    let ns = userns();
    let (s, d) = (cpath(src), cpath(dst));
    // SAFETY: a NUL-terminated path; the descriptor is checked, then owned.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            s.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC,
        )
    };
    if tree < 0 {
        return Err(("open_tree", errno()));
    }
    // SAFETY: a fresh descriptor of ours.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: ns.as_raw_fd() as u64,
    };
    // SAFETY: mount_setattr reads `attr`, of the size passed, for the detached tree.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(("mount_setattr", errno()));
    }
    // SAFETY: moves the detached tree onto a NUL-terminated path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            d.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(("move_mount", errno()));
    }
    Ok(())
}

fn owner(p: &Path) -> String {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    format!("{}:{}", m.uid(), m.gid())
}

fn chown(p: &Path, uid: u32, gid: u32) -> i32 {
    let c = cpath(p);
    // SAFETY: a NUL-terminated path.
    rc(unsafe { libc::lchown(c.as_ptr(), uid, gid) } as i64)
}

/// The script, on a filesystem mounted at `base` (as root, not idmapped) and idmapped at
/// `view`: each step and what it gave (0 or an errno, or the owner `uid:gid`).
fn script(base: &Path, view: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut note = |what: &str, v: String| out.push((what.to_string(), v));
    fs::set_permissions(base, fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir(base.join("open")).unwrap();
    fs::set_permissions(base.join("open"), fs::Permissions::from_mode(0o777)).unwrap();
    fs::write(base.join("far"), b"x").unwrap();
    assert_eq!(chown(&base.join("far"), 200, 200), 0);
    note("the root, through the view", owner(view));
    note(
        "an owner with no mapping, through the view",
        owner(&view.join("far")),
    );

    // The root directory is 1000's through the view: 1000 creates in it.
    let (a, d, s) = (view.join("a"), view.join("d"), view.join("s"));
    let (ca, cd, cs) = (cpath(&a), cpath(&d), cpath(&s));
    note(
        "1000 creates a file, a directory and a symlink",
        as_user(1000, &|| unsafe {
            let fd = libc::open(ca.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644);
            if fd < 0 {
                return errno();
            }
            libc::close(fd);
            if libc::mkdir(cd.as_ptr(), 0o755) != 0 {
                return errno();
            }
            rc(libc::symlink(c"a".as_ptr(), cs.as_ptr()) as i64)
        })
        .to_string(),
    );
    for n in ["a", "d", "s"] {
        note(&format!("{n}, underneath"), owner(&base.join(n)));
        note(&format!("{n}, through the view"), owner(&view.join(n)));
    }
    // Root's ids have no mapping: it may not create through the view (EOVERFLOW).
    let (b, bd) = (cpath(&view.join("b")), cpath(&view.join("bd")));
    // SAFETY: NUL-terminated paths; a descriptor opened is closed.
    let made = unsafe { libc::open(b.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644) };
    note(
        "root creates a file through the view",
        rc(made as i64).to_string(),
    );
    if made >= 0 {
        unsafe { libc::close(made) };
    }
    note(
        "root makes a directory through the view",
        rc(unsafe { libc::mkdir(bd.as_ptr(), 0o755) } as i64).to_string(),
    );
    // chown through the view stores the filesystem's ids.
    note(
        "root gives a to 1005:1007 through the view",
        chown(&a, 1005, 1007).to_string(),
    );
    note("a, underneath, after", owner(&base.join("a")));
    note("a, through the view, after", owner(&a));
    note(
        "root gives a to 2000, which has no mapping",
        chown(&a, 2000, 2000).to_string(),
    );
    note(
        "root gives a to 1000 underneath (no idmapping there)",
        chown(&base.join("a"), 1000, 1000).to_string(),
    );
    note("a, through the view, owned by 1000", owner(&a));
    assert_eq!(chown(&base.join("a"), 5, 7), 0);
    // Permissions go by the mapped owner: 1005 owns a, 1000 does not.
    note(
        "1005 chmods a 0600",
        as_user(1005, &|| unsafe {
            rc(libc::chmod(ca.as_ptr(), 0o600) as i64)
        })
        .to_string(),
    );
    note(
        "1000 chmods a",
        as_user(1000, &|| unsafe {
            rc(libc::chmod(ca.as_ptr(), 0o644) as i64)
        })
        .to_string(),
    );
    note(
        "1000 opens a to read",
        as_user(1000, &|| unsafe {
            let fd = libc::open(ca.as_ptr(), libc::O_RDONLY);
            if fd < 0 {
                return errno();
            }
            libc::close(fd);
            0
        })
        .to_string(),
    );
    // Underneath, nothing is mapped: nobody creates as nobody, and may not chmod root's.
    let n = cpath(&base.join("open/n"));
    let ua = cpath(&base.join("a"));
    note(
        "nobody creates underneath",
        as_user(NOBODY, &|| unsafe {
            let fd = libc::open(n.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644);
            if fd < 0 {
                return errno();
            }
            libc::close(fd);
            0
        })
        .to_string(),
    );
    note("nobody's file, underneath", owner(&base.join("open/n")));
    note(
        "nobody chmods a underneath",
        as_user(NOBODY, &|| unsafe {
            rc(libc::chmod(ua.as_ptr(), 0o777) as i64)
        })
        .to_string(),
    );
    out
}

/// What the script must give, on every filesystem.
fn expected() -> Vec<(String, String)> {
    let o = OVERFLOW;
    [
        ("the root, through the view", "1000:1000".to_string()),
        (
            "an owner with no mapping, through the view",
            format!("{o}:{o}"),
        ),
        ("1000 creates a file, a directory and a symlink", "0".into()),
        ("a, underneath", "0:0".into()),
        ("a, through the view", "1000:1000".into()),
        ("d, underneath", "0:0".into()),
        ("d, through the view", "1000:1000".into()),
        ("s, underneath", "0:0".into()),
        ("s, through the view", "1000:1000".into()),
        (
            "root creates a file through the view",
            libc::EOVERFLOW.to_string(),
        ),
        (
            "root makes a directory through the view",
            libc::EOVERFLOW.to_string(),
        ),
        ("root gives a to 1005:1007 through the view", "0".into()),
        ("a, underneath, after", "5:7".into()),
        ("a, through the view, after", "1005:1007".into()),
        (
            "root gives a to 2000, which has no mapping",
            libc::EOVERFLOW.to_string(),
        ),
        (
            "root gives a to 1000 underneath (no idmapping there)",
            "0".into(),
        ),
        ("a, through the view, owned by 1000", format!("{o}:{o}")),
        ("1005 chmods a 0600", "0".into()),
        ("1000 chmods a", libc::EPERM.to_string()),
        ("1000 opens a to read", libc::EACCES.to_string()),
        ("nobody creates underneath", "0".into()),
        ("nobody's file, underneath", format!("{NOBODY}:{NOBODY}")),
        ("nobody chmods a underneath", libc::EPERM.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Runs the script on a loop-mounted kernel filesystem (`mkfs.TYPE`); None when it cannot be
/// made or mounted here (reported as a skip).
fn kernel_fs(kind: &str, size: u64) -> Option<Vec<(String, String)>> {
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("img");
    fs::File::create(&img).unwrap().set_len(size).unwrap();
    let mk = Command::new(format!("mkfs.{kind}"))
        .arg(if kind == "xfs" { "-f" } else { "-F" })
        .arg("-q")
        .arg(&img)
        .status();
    if !mk.is_ok_and(|s| s.success()) {
        common::skip(&format!(
            "the {kind} comparison: mkfs.{kind} failed or is missing"
        ));
        return None;
    }
    let (base, view) = (work.path().join("base"), work.path().join("view"));
    fs::create_dir(&base).unwrap();
    fs::create_dir(&view).unwrap();
    let st = Command::new("mount")
        .args(["-o", "loop"])
        .arg(&img)
        .arg(&base)
        .status()
        .unwrap();
    if !st.success() {
        common::skip(&format!("the {kind} comparison: no loop mount here"));
        return None;
    }
    let _base = Unmounted(base.clone());
    let _ = fs::remove_dir(base.join("lost+found"));
    if let Err((call, e)) = idmapped_bind(&base, &view) {
        common::skip(&format!("the {kind} comparison: {call}: errno {e}"));
        return None;
    }
    let _view = Unmounted(view.clone());
    Some(script(&base, &view))
}

/// Is the kernel `release` (/proc/sys/kernel/osrelease) older than `version`?
fn kernel_before(release: &str, version: (u32, u32)) -> bool {
    let mut n = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|x| x.parse::<u32>().unwrap_or(0));
    (n.next().unwrap_or(0), n.next().unwrap_or(0)) < version
}

/// Without `-o idmap` the kernel refuses to idmap a ticketfs mount: its FUSE superblock keeps
/// SB_I_NOIDMAP unless the daemon takes FUSE_ALLOW_IDMAP, and mount_setattr is EINVAL.
#[test]
fn a_mount_without_idmap_cannot_be_idmapped() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 64 << 20);
    let m = Mount::new(&img, "allow_other");
    let view = tempfile::tempdir().unwrap();
    let r = idmapped_bind(m.path(), view.path());
    if r.is_ok() {
        drop(Unmounted(view.path().to_path_buf()));
    }
    assert_eq!(r, Err(("mount_setattr", libc::EINVAL)));
    m.unmount();
}

/// `-o idmap`: the script gives what `expected` says, as XFS and ext4 give it.
#[test]
fn an_idmapped_mount_maps_owners_as_xfs_and_ext4_do() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 64 << 20);
    let m = Mount::new(&img, "idmap,allow_other");
    let view = tempfile::tempdir().unwrap();
    if let Err((call, e)) = idmapped_bind(m.path(), view.path()) {
        m.unmount();
        let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        assert!(
            kernel_before(&release, (6, 12)),
            "Linux {} grants FUSE_ALLOW_IDMAP, yet {call} failed: errno {e}",
            release.trim()
        );
        common::skip(&format!(
            "Linux {} refuses to idmap a FUSE mount whose daemon asked FUSE_ALLOW_IDMAP \
             ({call}: errno {e}; the kernel grants it from 6.12)",
            release.trim()
        ));
        return;
    }
    let guard = Unmounted(view.path().to_path_buf());
    let ours = script(m.path(), view.path());
    drop(guard);
    m.unmount();
    common::mount::assert_fsck_clean(&img, "the idmapped script");
    for ((what, got), (_, want)) in ours.iter().zip(expected()) {
        assert_eq!(*got, want, "ticketfs: {what}");
    }
    assert_eq!(ours.len(), expected().len());
    for (kind, size) in [("xfs", 320u64 << 20), ("ext4", 64 << 20)] {
        if let Some(theirs) = kernel_fs(kind, size) {
            assert_eq!(ours, theirs, "ticketfs and {kind}");
        }
    }
}

/// The mode of `f` after each step of the set-group-ID script, run as root on a filesystem
/// mounted at `dir`: set-user-ID goes at every chown and truncate; set-group-ID without
/// group-execute stays for root's chown and for a truncate by a member of the file's group,
/// and goes for a truncate by someone outside it; with group-execute it goes. An ACL set by
/// the owner keeps set-group-ID when the owner is in the file's group, and drops it otherwise.
fn setgid_script(dir: &Path) -> Vec<(&'static str, u32)> {
    let f = dir.join("f");
    fs::write(&f, b"data").unwrap();
    let fc = cpath(&f);
    // Data first each time: a truncate that changes nothing may leave the bits on XFS.
    let mode = |m: u32| {
        fs::write(&f, b"data").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(m)).unwrap()
    };
    let now = || fs::metadata(&f).unwrap().mode() & 0o7777;
    // SAFETY: a NUL-terminated path; truncate makes one system call.
    let truncate = || {
        as_user(NOBODY, &|| {
            rc(unsafe { libc::truncate(fc.as_ptr(), 0) } as i64)
        })
    };
    let mut out = Vec::new();
    mode(0o6644);
    assert_eq!(chown(&f, NOBODY, NOBODY), 0);
    out.push(("root chowns 6644", now()));
    mode(0o6644);
    assert_eq!(truncate(), 0);
    out.push(("its owner in its group truncates 6644", now()));
    mode(0o6654);
    assert_eq!(truncate(), 0);
    out.push(("its owner in its group truncates 6654", now()));
    assert_eq!(chown(&f, NOBODY, 1), 0);
    mode(0o6644);
    assert_eq!(truncate(), 0);
    out.push(("its owner outside its group truncates 6644", now()));
    // The same, as root of a user namespace of its own: CAP_FSETID there is none over the file.
    mode(0o6644);
    let in_userns = as_user(NOBODY, &|| {
        // SAFETY: unshare and truncate, system calls only, in the single-threaded child.
        if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
            return errno();
        }
        rc(unsafe { libc::truncate(fc.as_ptr(), 0) } as i64)
    });
    assert_eq!(in_userns, 0, "truncate in a user namespace");
    out.push((
        "its owner outside its group truncates 6644 as root of its own user namespace",
        now(),
    ));
    // setfacl -m u::rwx,g::rwx,o::rwx: version 2, then the owner, owning group and others
    // entries (tag, permissions, no id), in the kernel's xattr encoding.
    let mut acl = 2u32.to_le_bytes().to_vec();
    for tag in [0x01u16, 0x04, 0x20] {
        acl.extend(tag.to_le_bytes());
        acl.extend(7u16.to_le_bytes());
        acl.extend(u32::MAX.to_le_bytes());
    }
    let name = CString::new("system.posix_acl_access").unwrap();
    let setfacl = || {
        as_user(NOBODY, &|| {
            // SAFETY: NUL-terminated path and name, a value of acl.len() bytes.
            rc(unsafe {
                libc::setxattr(
                    fc.as_ptr(),
                    name.as_ptr(),
                    acl.as_ptr().cast(),
                    acl.len(),
                    0,
                )
            } as i64)
        })
    };
    mode(0o2755);
    assert_eq!(setfacl(), 0);
    out.push(("its owner outside its group sets an ACL on 2755", now()));
    assert_eq!(chown(&f, NOBODY, NOBODY), 0);
    mode(0o2755);
    assert_eq!(setfacl(), 0);
    out.push(("its owner in its group sets an ACL on 2755", now()));
    out
}

/// On a `-o idmap` mount the kernel names no caller of a chown, truncate or setxattr
/// (FUSE_INVALID_UIDGID); the set-group-ID bit they leave is still XFS's: kept without
/// group-execute for a caller with CAP_FSETID or in the file's group, and through an ACL
/// change as the kernel's FUSE_SETXATTR_ACL_KILL_SGID says.
#[test]
fn set_group_id_survives_chown_truncate_and_acl_as_on_xfs() {
    let want = vec![
        ("root chowns 6644", 0o2644),
        ("its owner in its group truncates 6644", 0o2644),
        ("its owner in its group truncates 6654", 0o654),
        ("its owner outside its group truncates 6644", 0o644),
        (
            "its owner outside its group truncates 6644 as root of its own user namespace",
            0o644,
        ),
        ("its owner outside its group sets an ACL on 2755", 0o777),
        ("its owner in its group sets an ACL on 2755", 0o2777),
    ];
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 64 << 20);
    let m = Mount::new(&img, "idmap,allow_other");
    let ours = setgid_script(m.path());
    m.unmount();
    common::mount::assert_fsck_clean(&img, "the set-group-ID script");
    assert_eq!(ours, want, "ticketfs -o idmap");
    let xfs = work.path().join("xfs.img");
    fs::File::create(&xfs).unwrap().set_len(320 << 20).unwrap();
    let made = Command::new("mkfs.xfs")
        .args(["-f", "-q"])
        .arg(&xfs)
        .status();
    let dir = work.path().join("xfs");
    fs::create_dir(&dir).unwrap();
    if !made.is_ok_and(|s| s.success())
        || !Command::new("mount")
            .args(["-o", "loop"])
            .arg(&xfs)
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success())
    {
        common::skip("the XFS comparison: mkfs.xfs or a loop mount is missing here");
        return;
    }
    let _xfs = Unmounted(dir.clone());
    assert_eq!(setgid_script(&dir), want, "XFS");
}
