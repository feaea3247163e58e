//! A real ticketfs mount for tests: the binary in the foreground, so the test owns the daemon;
//! the guard unmounts (lazily if need be) and reaps the daemon even when the test fails.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use ticketfs::mkfs::{make_filesystem, MkfsOptions};

/// A fresh ticketfs image of `size` bytes at DIR/image.
pub fn image(dir: &Path, size: u64) -> PathBuf {
    let p = dir.join("image");
    make_filesystem(
        &p,
        &MkfsOptions {
            size: Some(size),
            ..Default::default()
        },
    )
    .expect("mkfs");
    p
}

/// A mounted ticketfs; unmounts (lazily if need be) and reaps the daemon when dropped.
pub struct Mount {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// FUSE's statfs magic ("FUSE" read as little-endian bytes).
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Is a FUSE filesystem mounted on `dir` and answering? (mountinfo lists it, and statfs of the
/// directory reaches the daemon, not the directory underneath.)
fn mounted(dir: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let d = dir.to_string_lossy();
    if !info.lines().any(|l| l.split(' ').nth(4) == Some(&d)) {
        return false;
    }
    let Ok(c) = std::ffi::CString::new(d.as_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills the zeroed struct for a NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == FUSE_SUPER_MAGIC }
}

impl Mount {
    pub fn new(image: &Path, opts: &str) -> Mount {
        assert!(
            Path::new("/dev/fuse").exists(),
            "/dev/fuse is missing: these tests need FUSE"
        );
        let dir = tempfile::tempdir().expect("mount point");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ticketfs"));
        cmd.arg(image)
            .arg(dir.path())
            .arg("-f")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Tests run with overrun=panic: an overrun is a bug in the reservation table, and the
        // daemon's crash makes the test fail. A test that wants overruns says so.
        let opts = if opts.contains("overrun=") || opts.contains("debug_resv=") {
            opts.to_string()
        } else if opts.is_empty() {
            "overrun=panic".to_string()
        } else {
            format!("{opts},overrun=panic")
        };
        cmd.arg("-o").arg(&opts);
        let mut child = cmd.spawn().expect("start ticketfs");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !mounted(dir.path()) {
            if let Some(st) = child.try_wait().expect("wait") {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                panic!("ticketfs exited with {st} before mounting: {err}");
            }
            assert!(Instant::now() < deadline, "not mounted after 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        Mount {
            dir,
            child: Some(child),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// umount, then the daemon must exit 0 (it flushed and marked the image clean).
    pub fn unmount(self) {
        self.unmount_then(|| {});
    }

    /// umount, then `check` at once (before waiting for anything), then the daemon must exit
    /// 0: what someone who unmounts finds when umount returns.
    pub fn unmount_then(self, check: impl FnOnce()) {
        let st = self.umount_and_wait(check);
        assert!(st.success(), "daemon exited with {st}");
    }

    /// umount, then wait for the daemon whatever it exits with (one whose filesystem was shut
    /// down reports that it could not finish the unmount); returns its status.
    pub fn unmount_any_exit(self) -> std::process::ExitStatus {
        self.umount_and_wait(|| {})
    }

    fn umount_and_wait(mut self, check: impl FnOnce()) -> std::process::ExitStatus {
        if let Err(e) = umount(self.dir.path()) {
            panic!("umount failed: {e}");
        }
        check();
        let mut child = self.child.take().expect("daemon");
        wait_timeout(&mut child, Duration::from_secs(60))
    }

    /// SIGKILL the daemon, as a crash; then detach the dead mount.
    pub fn kill(mut self) {
        let mut child = self.child.take().expect("daemon");
        child.kill().expect("kill");
        let _ = child.wait();
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// What `ticketfs stats MNT` prints (with `--json` if `json`); fails the test if it fails.
fn stats_output(mnt: &Path, json: bool) -> Vec<u8> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ticketfs"));
    cmd.arg("stats").arg(mnt);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("ticketfs stats");
    assert!(out.status.success(), "ticketfs stats: {out:?}");
    out.stdout
}

/// The live daemon's statistics, as `ticketfs stats --json` reports them.
pub fn stats_json(mnt: &Path) -> serde_json::Value {
    serde_json::from_slice(&stats_output(mnt, true)).expect("stats JSON")
}

/// The live daemon's statistics as text, as an operator reads them.
pub fn stats_text(mnt: &Path) -> String {
    String::from_utf8(stats_output(mnt, false)).expect("stats text is UTF-8")
}

fn wait_timeout(child: &mut Child, t: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + t;
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("daemon still running {t:?} after umount");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("umount").arg(self.dir.path()).status();
            if wait_for(&mut child, Duration::from_secs(30)).is_none() {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(self.dir.path())
                    .status();
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn wait_for(child: &mut Child, t: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + t;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// `umount DIR`. Another test thread's fork may hold a descriptor of the mount for the moment
/// its child takes to exec (EBUSY): tried again for a little while before failing.
pub fn umount(dir: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = Command::new("umount")
            .arg(dir)
            .output()
            .map_err(|e| format!("umount: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if !err.contains("busy") || Instant::now() >= deadline {
            return Err(err);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A mount made outside `Mount` (a second mount of an image, a loop-mounted ext4): unmounted
/// when dropped, so a test that fails leaves no mount behind (busy: retried, then detached).
pub struct Unmounted(pub PathBuf);

impl Drop for Unmounted {
    fn drop(&mut self) {
        // The mount table, not mountpoint(1): a mount whose daemon is gone fails every stat,
        // and mountpoint(1) then calls it no mount (such mounts were left behind).
        let mounted =
            ticketfs::mountinfo::read().is_ok_and(|t| t.iter().any(|m| m.point == self.0));
        if mounted && umount(&self.0).is_err() {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// fsck.ticketfs -n of `img` (unmounted) must find nothing: exit 0; `what` says after what.
pub fn assert_fsck_clean(img: &Path, what: &str) {
    let bin = Path::new(env!("CARGO_BIN_EXE_ticketfs")).with_file_name("fsck-ticketfs");
    let out = Command::new(&bin)
        .arg("-n")
        .arg(img)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (cargo build --workspace first)", bin.display()));
    assert!(
        out.status.success(),
        "fsck after {what}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
