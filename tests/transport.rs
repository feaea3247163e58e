//! The two ways requests reach the daemon — the kernel's io_uring queues (`src/ring`) and
//! `/dev/fuse` (`src/devfuse.rs`, `-o uring=off`) — must answer alike: the same workload of every
//! kind of request, run on a mount of each, gives the same outcomes, byte for byte and errno for
//! errno; `ticketfs stats` shows which transport served.

mod common;

use common::mount::{image, stats_json, Mount};
use serde_json::Value;
use std::ffi::CString;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

const KNOB: &str = "/sys/module/fuse/parameters/enable_uring";

/// The tests of this file take turns: each sets the knob and puts it back.
static KNOB_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Turns FUSE over io_uring on for the test and back to what it was after.
struct Knob {
    was: Option<String>,
    /// Held while the test runs.
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Knob {
    fn on() -> Knob {
        let turn = KNOB_TURN.lock().unwrap_or_else(|e| e.into_inner());
        let was = fs::read_to_string(KNOB).ok();
        if was.is_some() {
            fs::write(KNOB, "1").expect("enable FUSE over io_uring (needs root)");
        }
        Knob { was, _turn: turn }
    }
}

impl Drop for Knob {
    fn drop(&mut self) {
        if let Some(w) = &self.was {
            let _ = fs::write(KNOB, if w.trim() == "Y" { "1" } else { "0" });
        }
    }
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A system call's outcome as text: its value or its errno.
fn rc(r: i64) -> String {
    if r < 0 {
        format!("errno {}", errno())
    } else {
        format!("ok {r}")
    }
}

fn meta(p: &Path) -> String {
    match fs::symlink_metadata(p) {
        Ok(m) => format!(
            "mode {:o} nlink {} uid {} gid {} size {} blocks {} rdev {}",
            m.mode(),
            m.nlink(),
            m.uid(),
            m.gid(),
            m.size(),
            m.blocks(),
            m.rdev()
        ),
        Err(e) => format!("error {:?}", e.raw_os_error()),
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed as u32) as u8
        })
        .collect()
}

/// Every kind of request, each outcome written down.
fn workload(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut note = |what: &str, r: String| out.push(format!("{what}: {r}"));
    let d = root.join("d");
    fs::create_dir(&d).unwrap();
    fs::set_permissions(&d, fs::Permissions::from_mode(0o750)).unwrap();
    // create, write, read, append, sparse write
    let f = d.join("f");
    let mut h = fs::File::create(&f).unwrap();
    h.write_all(b"hello\n").unwrap();
    h.write_all(b"again\n").unwrap();
    h.seek(SeekFrom::Start(100_000)).unwrap();
    h.write_all(b"far").unwrap();
    h.sync_all().unwrap();
    h.sync_data().unwrap();
    drop(h);
    let bytes = fs::read(&f).unwrap();
    note(
        "read f",
        format!(
            "{} bytes, head {:?}, tail {:?}",
            bytes.len(),
            &bytes[..12],
            &bytes[bytes.len() - 3..]
        ),
    );
    // large writes and reads: several full-size requests
    let big = pattern(3 << 20, 7);
    fs::write(d.join("big"), &big).unwrap();
    note(
        "big equal",
        format!("{}", fs::read(d.join("big")).unwrap() == big),
    );
    let mut part = vec![0u8; 5000];
    let mut bh = fs::File::open(d.join("big")).unwrap();
    bh.seek(SeekFrom::Start(1_048_000)).unwrap();
    bh.read_exact(&mut part).unwrap();
    note("big part", format!("{}", part == big[1_048_000..1_053_000]));
    // lseek for data and holes
    let fd = fs::File::open(&f).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: lseek on an open descriptor.
    let hole = unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_HOLE) };
    note("seek hole", rc(hole));
    let data = unsafe { libc::lseek(fd.as_raw_fd(), 50_000, libc::SEEK_DATA) };
    note("seek data", rc(data));
    let past = unsafe { libc::lseek(fd.as_raw_fd(), 200_000, libc::SEEK_DATA) };
    note("seek data past end", rc(past));
    drop(fd);
    // fallocate, punch, truncate
    let fh = fs::OpenOptions::new().write(true).open(&f).unwrap();
    // SAFETY: fallocate on an open descriptor.
    let r = unsafe { libc::fallocate(fh.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 200_000, 65_536) };
    note("fallocate keep size", rc(r as i64));
    let r = unsafe {
        libc::fallocate(
            fh.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            4096,
        )
    };
    note("punch", rc(r as i64));
    let r = unsafe { libc::fallocate(fh.as_raw_fd(), libc::FALLOC_FL_PUNCH_HOLE, 0, 4096) };
    note("punch without keep size", rc(r as i64));
    fh.set_len(10).unwrap();
    drop(fh);
    note("f after truncate", meta(&f));
    // copy_file_range
    let src = fs::File::open(d.join("big")).unwrap();
    let dst = fs::File::create(d.join("copy")).unwrap();
    let (mut oi, mut oo): (i64, i64) = (4096, 0);
    // SAFETY: copy_file_range between open descriptors with offsets we own.
    let n = unsafe {
        libc::copy_file_range(
            src.as_raw_fd(),
            &mut oi,
            dst.as_raw_fd(),
            &mut oo,
            200_000,
            0,
        )
    };
    note("copy_file_range", rc(n as i64));
    drop((src, dst));
    note(
        "copy equal",
        format!(
            "{}",
            fs::read(d.join("copy")).unwrap() == big[4096..204_096]
        ),
    );
    // links, symlinks, renames
    fs::hard_link(&f, d.join("h")).unwrap();
    note(
        "f nlink",
        meta(&f).split(' ').nth(3).unwrap_or("").to_string(),
    );
    std::os::unix::fs::symlink("f", d.join("s")).unwrap();
    note(
        "readlink",
        format!("{:?}", fs::read_link(d.join("s")).unwrap()),
    );
    note(
        "read through symlink",
        format!("{:?}", fs::read(d.join("s")).unwrap()),
    );
    fs::rename(&f, d.join("g")).unwrap();
    note("old name", meta(&f));
    let (g, h) = (c(&d.join("g")), c(&d.join("copy")));
    // SAFETY: renameat2 with NUL-terminated paths.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            g.as_ptr(),
            libc::AT_FDCWD,
            h.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    note("rename noreplace onto a file", rc(r as i64));
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            g.as_ptr(),
            libc::AT_FDCWD,
            h.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    note("rename exchange", rc(r as i64));
    note(
        "g after exchange",
        format!("{}", fs::metadata(d.join("g")).unwrap().len()),
    );
    // extended attributes
    let x = c(&d.join("g"));
    let name = CString::new("user.k").unwrap();
    // SAFETY: xattr calls with NUL-terminated names and buffers we own.
    let r = unsafe { libc::setxattr(x.as_ptr(), name.as_ptr(), b"value".as_ptr().cast(), 5, 0) };
    note("setxattr", rc(r as i64));
    let r = unsafe {
        libc::setxattr(
            x.as_ptr(),
            name.as_ptr(),
            b"v".as_ptr().cast(),
            1,
            libc::XATTR_CREATE,
        )
    };
    note("setxattr create existing", rc(r as i64));
    let mut buf = [0u8; 64];
    let n = unsafe { libc::getxattr(x.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
    note("getxattr size", rc(n as i64));
    let n = unsafe { libc::getxattr(x.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), 2) };
    note("getxattr small buffer", rc(n as i64));
    let n = unsafe { libc::getxattr(x.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), 64) };
    note(
        "getxattr",
        format!("{} {:?}", rc(n as i64), &buf[..n.max(0) as usize]),
    );
    let n = unsafe { libc::listxattr(x.as_ptr(), buf.as_mut_ptr().cast(), 64) };
    note(
        "listxattr",
        format!("{} {:?}", rc(n as i64), &buf[..n.max(0) as usize]),
    );
    let r = unsafe { libc::removexattr(x.as_ptr(), name.as_ptr()) };
    note("removexattr", rc(r as i64));
    let n = unsafe { libc::getxattr(x.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), 64) };
    note("getxattr removed", rc(n as i64));
    // special files, modes, owners, times
    let fifo = c(&d.join("fifo"));
    // SAFETY: mknod/chown/utimensat with NUL-terminated paths.
    let r = unsafe { libc::mknod(fifo.as_ptr(), libc::S_IFIFO | 0o640, 0) };
    note("mknod fifo", rc(r as i64));
    note("fifo", meta(&d.join("fifo")));
    let r = unsafe { libc::chown(x.as_ptr(), 1234, 5678) };
    note("chown", rc(r as i64));
    fs::set_permissions(d.join("g"), fs::Permissions::from_mode(0o4711)).unwrap();
    let times = [
        libc::timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 123,
        },
        libc::timespec {
            tv_sec: 1_200_000_000,
            tv_nsec: 456_789,
        },
    ];
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, x.as_ptr(), times.as_ptr(), 0) };
    note("utimensat", rc(r as i64));
    note("g", meta(&d.join("g")));
    let gm = fs::metadata(d.join("g")).unwrap();
    note(
        "g times",
        format!(
            "{}.{} {}.{}",
            gm.atime(),
            gm.atime_nsec(),
            gm.mtime(),
            gm.mtime_nsec()
        ),
    );
    // open flags and missing names
    let r = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(d.join("g"));
    note(
        "create_new existing",
        format!("{:?}", r.err().and_then(|e| e.raw_os_error())),
    );
    note("missing", meta(&d.join("nothing")));
    let r = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(d.join("g"));
    note(
        "open file as directory",
        format!("{:?}", r.err().and_then(|e| e.raw_os_error())),
    );
    // a directory of many entries, listed in several replies, with and without attributes
    let many = root.join("many");
    fs::create_dir(&many).unwrap();
    for i in 0..300 {
        fs::write(
            many.join(format!("entry-with-a-longish-name-{i:04}")),
            [i as u8],
        )
        .unwrap();
    }
    let mut names: Vec<String> = fs::read_dir(&many)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    note(
        "listing",
        format!(
            "{} names, first {:?}, last {:?}",
            names.len(),
            names[0],
            names[299]
        ),
    );
    let sizes: u64 = fs::read_dir(&many)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    note("listing sizes", format!("{sizes}"));
    // removal
    let r = fs::remove_dir(&many);
    note(
        "rmdir non-empty",
        format!("{:?}", r.err().and_then(|e| e.raw_os_error())),
    );
    for n in &names {
        fs::remove_file(many.join(n)).unwrap();
    }
    fs::remove_dir(&many).unwrap();
    note("removed", meta(&many));
    fs::remove_file(d.join("h")).unwrap();
    note(
        "g nlink after unlinking its link",
        meta(&d.join("g"))
            .split(' ')
            .nth(3)
            .unwrap_or("")
            .to_string(),
    );
    // statfs
    let rt = c(root);
    // SAFETY: statvfs fills the zeroed struct for a NUL-terminated path.
    let mut sv: libc::statvfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statvfs(rt.as_ptr(), &mut sv) };
    note(
        "statvfs",
        format!(
            "{} namemax {} bsize {}",
            rc(r as i64),
            sv.f_namemax,
            sv.f_bsize
        ),
    );
    // access
    let r = unsafe { libc::access(x.as_ptr(), libc::X_OK) };
    note("access x", rc(r as i64));
    out
}

fn run(opts: &str) -> (Vec<String>, Value) {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 256 << 20);
    let m = Mount::new(&img, opts);
    let outcomes = workload(m.path());
    let st = stats_json(m.path());
    m.unmount();
    (outcomes, st)
}

#[test]
fn io_uring_queues_and_dev_fuse_answer_alike() {
    let knob = Knob::on();
    if knob.was.is_none() {
        // A kernel before 6.14 or without CONFIG_FUSE_IO_URING: nothing to compare.
        common::skip(&format!(
            "{KNOB} is missing: this kernel has no FUSE over io_uring"
        ));
        return;
    }
    let (ring, ring_st) = run("");
    let (dev, dev_st) = run("uring=off");
    assert_eq!(
        dev_st["uring_threads"].as_u64(),
        Some(0),
        "uring=off still used the queues"
    );
    let threads = ring_st["uring_threads"].as_u64().unwrap_or(0);
    assert!(threads >= 1, "no io_uring serving threads: {ring_st}");
    let served = ring_st["uring_requests"].as_u64().unwrap_or(0);
    assert!(served > 1000, "only {served} requests through the queues");
    assert_eq!(ring.len(), dev.len());
    for (a, b) in ring.iter().zip(&dev) {
        assert_eq!(a, b, "io_uring and /dev/fuse differ");
    }
    // Spot checks that the outcomes are the right ones, not only equal.
    let has = |s: &str| ring.iter().any(|o| o == s);
    assert!(has("big equal: true"), "{ring:#?}");
    assert!(has("copy equal: true"), "{ring:#?}");
    assert!(has("rename noreplace onto a file: errno 17"), "{ring:#?}");
    assert!(has("getxattr small buffer: errno 34"), "{ring:#?}");
    assert!(has("getxattr removed: errno 61"), "{ring:#?}");
    assert!(has("punch without keep size: errno 95"), "{ring:#?}");
    assert!(has("rmdir non-empty: Some(39)"), "{ring:#?}");
    assert!(has("seek data past end: errno 6"), "{ring:#?}");
    assert!(has("listing sizes: 300"), "{ring:#?}");
    assert!(
        has("g times: 1000000000.123 1200000000.456789"),
        "{ring:#?}"
    );
}

/// Drops the kernel's cached pages of `f`, so the next reads of it reach the daemon.
fn drop_cached(f: &fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain system call on an open descriptor.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0, "posix_fadvise");
}

/// Reads `f` from its start in 1 MiB reads and compares with `want`.
fn read_through(f: &mut fs::File, want: &[u8], what: &str) {
    drop_cached(f);
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut got = vec![0u8; 1 << 20];
    let mut at = 0;
    loop {
        let n = f.read(&mut got).unwrap();
        if n == 0 {
            break;
        }
        assert!(
            got[..n] == want[at..at + n],
            "{what}: bytes {at}..{} differ",
            at + n
        );
        at += n;
    }
    assert_eq!(at, want.len(), "{what}: length");
}

/// Through the queues a sequential read is read ahead by the daemon (`file::readahead`); every
/// byte read must still be the latest written, through overwrites, a truncate and regrowth
/// between the passes (each pass after the kernel dropped its cached pages).
#[test]
fn sequential_reads_through_the_queues_are_read_ahead_and_see_every_write() {
    let knob = Knob::on();
    if knob.was.is_none() {
        common::skip(&format!(
            "{KNOB} is missing: this kernel has no FUSE over io_uring"
        ));
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 256 << 20);
    let m = Mount::new(&img, "");
    let p = m.path().join("stream");
    let mut want = pattern(24 << 20, 1);
    fs::write(&p, &want).unwrap();
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    read_through(&mut f, &want, "first pass");
    let st = stats_json(m.path());
    let hits = st["readahead_hits"].as_u64().unwrap_or(0);
    assert!(hits > 0, "no request answered from read-ahead: {st}");
    for pass in 0..3u8 {
        // Overwrites scattered over the file, from another descriptor.
        let w = fs::OpenOptions::new().write(true).open(&p).unwrap();
        for k in 0..24u64 {
            let off = (k << 20) + 4096 * (k % 5) + pass as u64;
            let bytes = pattern(3000, 7 + pass + k as u8);
            w.write_all_at(&bytes, off).unwrap();
            want[off as usize..off as usize + bytes.len()].copy_from_slice(&bytes);
        }
        drop(w);
        read_through(&mut f, &want, &format!("after overwrites {pass}"));
        // A truncate into the middle and regrowth: the tail reads as zeros.
        let cut = (10 << 20) + 512 * pass as u64;
        f.set_len(cut).unwrap();
        f.set_len(want.len() as u64).unwrap();
        want[cut as usize..].fill(0);
        read_through(&mut f, &want, &format!("after truncate {pass}"));
        // New data over the hole the truncate left.
        let tail = pattern(want.len() - cut as usize - 100, 40 + pass);
        f.write_all_at(&tail, cut + 100).unwrap();
        want[cut as usize + 100..].copy_from_slice(&tail);
        read_through(&mut f, &want, &format!("after regrowth {pass}"));
    }
    drop(f);
    m.unmount();
}
