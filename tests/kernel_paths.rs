//! What the kernel asks of a FUSE filesystem beyond the plain file calls, on a real mount:
//! file handles (export support), copy_file_range, SEEK_DATA before zero, execve of a file one
//! may only execute, set-id bits dropped by someone else's write, mount flags, and a second
//! mount of a mounted image. Each found by an fstests case (named) that failed before.

mod common;

use common::mount::{image, Mount};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::process::Command;

fn cpath(p: &Path) -> std::ffi::CString {
    std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A file handle as name_to_handle_at(2) fills it (struct file_handle with room for 128 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
struct Handle {
    bytes: u32,
    kind: i32,
    f: [u8; 128],
}

fn handle_of(p: &Path) -> Handle {
    let mut h = Handle {
        bytes: 128,
        kind: 0,
        f: [0; 128],
    };
    let mut mount_id = 0;
    // SAFETY: a NUL-terminated path and a handle buffer with handle_bytes set to its room.
    let rc = unsafe {
        libc::name_to_handle_at(
            libc::AT_FDCWD,
            cpath(p).as_ptr(),
            &mut h as *mut Handle as *mut libc::file_handle,
            &mut mount_id,
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "name_to_handle_at {}: errno {}",
        p.display(),
        errno()
    );
    h
}

/// open_by_handle_at on the mount at `mnt`: the descriptor, or the errno.
fn open_by_handle(mnt: &Path, h: &Handle, flags: i32) -> Result<fs::File, i32> {
    let dir = fs::File::open(mnt).unwrap();
    let mut h = *h;
    // SAFETY: a handle as name_to_handle_at filled it (or altered in its node number only).
    let fd = unsafe {
        libc::open_by_handle_at(
            dir.as_raw_fd(),
            &mut h as *mut Handle as *mut libc::file_handle,
            flags,
        )
    };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: a descriptor open_by_handle_at just gave us.
    Ok(unsafe { std::os::unix::io::FromRawFd::from_raw_fd(fd) })
}

/// FUSE encodes a handle as the node number (two 32-bit words, high first) and the generation.
fn with_node(h: &Handle, node: u64) -> Handle {
    let mut h = *h;
    h.f[0..4].copy_from_slice(&((node >> 32) as u32).to_ne_bytes());
    h.f[4..8].copy_from_slice(&(node as u32).to_ne_bytes());
    h
}

/// generic/426, 467, 477, 756, 777: handles open files and directories after the kernel forgot
/// them (a new mount), a freed inode's handle is ESTALE, and a handle naming no inode at all is
/// ESTALE too, not a corruption report.
#[test]
fn file_handles_outlive_the_mount_and_go_stale_with_their_inode() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 256 << 20);
    let m = Mount::new(&img, "");
    fs::write(m.path().join("kept"), b"handle me").unwrap();
    fs::write(m.path().join("gone"), b"x").unwrap();
    fs::create_dir(m.path().join("dir")).unwrap();
    let kept = handle_of(&m.path().join("kept"));
    let gone = handle_of(&m.path().join("gone"));
    let dir = handle_of(&m.path().join("dir"));
    fs::remove_file(m.path().join("gone")).unwrap();
    m.unmount();

    let m = Mount::new(&img, "");
    let mut f = open_by_handle(m.path(), &kept, libc::O_RDONLY).expect("kept file");
    let mut s = String::new();
    std::io::Read::read_to_string(&mut f, &mut s).unwrap();
    assert_eq!(s, "handle me");
    drop(f);
    open_by_handle(m.path(), &dir, libc::O_RDONLY | libc::O_DIRECTORY).expect("directory");
    assert_eq!(
        open_by_handle(m.path(), &gone, libc::O_RDONLY).err(),
        Some(libc::ESTALE)
    );
    // Block 5 holds an AG's unlinked-inode tree root, not inodes; the other is past the device.
    for node in [5u64 << 6, 1u64 << 50] {
        assert_eq!(
            open_by_handle(m.path(), &with_node(&kept, node), libc::O_RDONLY).err(),
            Some(libc::ESTALE),
            "node {node}"
        );
    }
    assert_eq!(fs::read(m.path().join("kept")).unwrap(), b"handle me");
    m.unmount();
    let out = Command::new(env!("CARGO_BIN_EXE_ticketfs"))
        .arg("db")
        .arg(&img)
        .arg("sb")
        .output()
        .unwrap();
    assert!(out.status.success());
}

fn copy_range(
    from: &fs::File,
    off_in: i64,
    to: &fs::File,
    off_out: i64,
    len: usize,
) -> Result<usize, i32> {
    let (mut i, mut o) = (off_in, off_out);
    // SAFETY: two open descriptors and offsets we own.
    let n =
        unsafe { libc::copy_file_range(from.as_raw_fd(), &mut i, to.as_raw_fd(), &mut o, len, 0) };
    if n < 0 {
        Err(errno())
    } else {
        Ok(n as usize)
    }
}

/// generic/564: copy_file_range copies, stops at the source's end, and a destination past the
/// largest file size is EFBIG.
#[test]
fn copy_file_range_copies_and_knows_the_largest_file_size() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 256 << 20);
    let m = Mount::new(&img, "");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(m.path().join("src"), &data).unwrap();
    let src = fs::File::open(m.path().join("src")).unwrap();
    let dst = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(m.path().join("dst"))
        .unwrap();
    let mut done = 0;
    while done < 200_000 {
        let n = copy_range(&src, 4096 + done as i64, &dst, done as i64, 200_000 - done).unwrap();
        assert!(n > 0);
        done += n;
    }
    assert_eq!(
        fs::read(m.path().join("dst")).unwrap(),
        &data[4096..204_096]
    );
    assert_eq!(copy_range(&src, 400_000, &dst, 0, 4096), Ok(0));
    assert_eq!(copy_range(&src, 0, &dst, 1 << 52, 4096), Err(libc::EFBIG));
    // SEEK_DATA and SEEK_HOLE before offset 0 (generic/448): ENXIO, as the kernel's own.
    for whence in [libc::SEEK_DATA, libc::SEEK_HOLE] {
        // SAFETY: lseek on a descriptor we own.
        let r = unsafe { libc::lseek(src.as_raw_fd(), -1, whence) };
        assert_eq!((r, errno()), (-1, libc::ENXIO));
    }
    drop((src, dst));
    m.unmount();
}

/// Runs `args` as nobody (uid and gid 65534, no supplementary groups).
fn as_nobody(args: &[&std::ffi::OsStr]) -> std::process::ExitStatus {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(args)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("setpriv (util-linux)")
}

/// generic/126: a file one may execute but not read still runs (execve opens it to execute);
/// generic/683: someone else's fallocate and write drop the set-id bits; a chmod by someone
/// else that changes anything else is still refused.
#[test]
fn execute_only_files_run_and_writes_by_others_drop_set_id_bits() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 256 << 20);
    for opts in ["allow_other", "allow_other,default_permissions"] {
        let m = Mount::new(&img, opts);
        let exe = m.path().join("true");
        fs::copy("/bin/true", &exe).unwrap();
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o711)).unwrap();
        assert!(as_nobody(&[exe.as_os_str()]).success(), "{opts}: 0711 runs");
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(
            !as_nobody(&[exe.as_os_str()]).success(),
            "{opts}: 0700 does not"
        );

        let f = m.path().join("setid");
        fs::write(&f, b"x").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        fs::set_permissions(&f, fs::Permissions::from_mode(0o6666)).unwrap();
        let st = as_nobody(&[
            "fallocate".as_ref(),
            "-l".as_ref(),
            "65536".as_ref(),
            f.as_os_str(),
        ]);
        assert!(st.success(), "{opts}: fallocate by nobody");
        assert_eq!(mode(&f), 0o666, "{opts}: after fallocate");
        fs::set_permissions(&f, fs::Permissions::from_mode(0o6666)).unwrap();
        let script = format!("echo y >> '{}'", f.display());
        assert!(as_nobody(&["sh".as_ref(), "-c".as_ref(), script.as_ref()]).success());
        assert_eq!(mode(&f), 0o666, "{opts}: after a write");
        fs::set_permissions(&f, fs::Permissions::from_mode(0o6666)).unwrap();
        let st = as_nobody(&["chmod".as_ref(), "0660".as_ref(), f.as_os_str()]);
        assert!(!st.success(), "{opts}: chmod by someone else");
        assert_eq!(mode(&f), 0o6666, "{opts}: after a refused chmod");
        m.unmount();
    }
}

fn statvfs_flags(p: &Path) -> u64 {
    // SAFETY: statvfs fills the zeroed struct for a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(cpath(p).as_ptr(), &mut st) }, 0);
    st.f_flag
}

/// generic/128 and 732: nosuid, nodev and noexec reach the mount; a second mount of a mounted
/// image shares the live filesystem (as two mounts of one block device share a superblock),
/// with its own flags; a read-write mount of an image mounted read-only is refused.
#[test]
fn mount_flags_and_a_second_mount_of_the_same_image() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 256 << 20);
    let m = Mount::new(&img, "nosuid,nodev,noexec");
    let f = statvfs_flags(m.path());
    assert_eq!(
        f & (libc::ST_NOSUID | libc::ST_NODEV | libc::ST_NOEXEC),
        libc::ST_NOSUID | libc::ST_NODEV | libc::ST_NOEXEC
    );
    assert_eq!(f & libc::ST_RDONLY, 0);
    let other = tempfile::tempdir().unwrap();
    let st = Command::new(env!("CARGO_BIN_EXE_ticketfs"))
        .arg(&img)
        .arg(other.path())
        .args(["-o", "ro"])
        .status()
        .unwrap();
    assert!(st.success());
    let second = other.path().to_path_buf();
    let guard = common::mount::Unmounted(second.clone());
    fs::write(m.path().join("seen"), b"from the first").unwrap();
    assert_eq!(fs::read(second.join("seen")).unwrap(), b"from the first");
    assert_ne!(statvfs_flags(&second) & libc::ST_RDONLY, 0);
    let e = fs::write(second.join("no"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    // Both mounts are of the image: the same source (a loop device over it, for fuseblk).
    let canon = fs::canonicalize(&img).unwrap();
    let sources = ticketfs::stats::ticketfs_mounts()
        .unwrap()
        .into_iter()
        .filter(|t| t.image == canon)
        .count();
    assert_eq!(sources, 2, "both mounts name the image as their source");
    drop(guard);
    m.unmount();

    let m = Mount::new(&img, "ro");
    let out = Command::new(env!("CARGO_BIN_EXE_ticketfs"))
        .arg(&img)
        .arg(other.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already mounted read-only"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    m.unmount();
}
