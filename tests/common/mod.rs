//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

pub mod crash;
pub mod mount;
pub mod xattr;

use std::sync::Arc;
use ticketfs::device::{Device, MemDevice};
use ticketfs::format::{BlockType, Geometry, Uuid};
use ticketfs::trans::ResvTable;
use ticketfs::{Engine, EngineOptions};

/// A test (or a part of one) that cannot run on this machine: the reason on stderr, and a line
/// in the file `TICKETFS_SKIPS` names (scripts/test.sh sets it), so the suite's summary counts
/// and lists every skip instead of counting it as a pass.
pub fn skip(reason: &str) {
    eprintln!("SKIPPED: {reason}");
    if let Some(path) = std::env::var_os("TICKETFS_SKIPS") {
        use std::io::Write as _;
        let test = std::thread::current().name().unwrap_or("?").to_string();
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
        {
            let _ = writeln!(f, "{test}: {reason}");
        }
    }
}

pub const UUID: Uuid = [7, 1, 2, 3, 4, 5, 0x46, 7, 0x88, 9, 10, 11, 12, 13, 14, 15];

/// Geometry with the smallest log the table allows for it (plus `extra_log` blocks).
pub fn geometry(block_size: u32, block_count: u64, extra_log: u64) -> Geometry {
    let probe = Geometry::new(block_size, block_count, 16, 1).expect("probe geometry");
    let log = ResvTable::new(&probe).min_log_blocks() + extra_log;
    // As many AGs (up to 4) as leave AG 0 room for the log.
    let ags = (1..=4u32)
        .rev()
        .find(|&n| block_count / n as u64 > probe.log_start + log + 64)
        .unwrap_or(1);
    Geometry::new(block_size, block_count, log, ags).expect("geometry")
}

/// A formatted image in memory.
pub fn formatted_image(g: Geometry) -> Vec<u8> {
    let dev = MemDevice::new(g.block_size, g.block_count);
    ticketfs::engine::format(&dev, g, UUID, "test").expect("format");
    dev.snapshot()
}

/// First block the tests may use as metadata, and how many there are.
pub fn data_blocks(g: &Geometry) -> (u64, u64) {
    let first = g.first_free_block();
    (first, g.backup_sb_blkno() - first)
}

pub fn mount(dev: Arc<dyn Device>, opts: EngineOptions) -> Engine {
    Engine::mount(dev, opts).expect("mount")
}

/// A block type for test block `i`, so every type is exercised.
pub fn btype_for(i: u64) -> BlockType {
    BlockType::ALL[(i % BlockType::ALL.len() as u64) as usize]
}

/// A device whose writes to `slow` blocks take `delay` each: a checkpoint written to a log on
/// it stays in flight long enough for another thread to act meanwhile (a slow disk, a loaded
/// machine), deterministically.
pub struct SlowDevice {
    pub inner: Arc<MemDevice>,
    pub slow: std::ops::Range<u64>,
    pub delay: std::time::Duration,
    /// Writes to `slow` blocks begun so far.
    pub started: std::sync::atomic::AtomicU64,
}

impl SlowDevice {
    pub fn new(
        inner: Arc<MemDevice>,
        slow: std::ops::Range<u64>,
        delay: std::time::Duration,
    ) -> Self {
        SlowDevice {
            inner,
            slow,
            delay,
            started: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl Device for SlowDevice {
    fn block_size(&self) -> u32 {
        self.inner.block_size()
    }
    fn block_count(&self) -> u64 {
        self.inner.block_count()
    }
    fn read(&self, blkno: u64, buf: &mut [u8]) -> Result<(), ticketfs::device::DevError> {
        self.inner.read(blkno, buf)
    }
    fn write(&self, blkno: u64, buf: &[u8]) -> Result<(), ticketfs::device::DevError> {
        if self.slow.contains(&blkno) {
            self.started
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(self.delay);
        }
        self.inner.write(blkno, buf)
    }
    fn flush(&self) -> Result<(), ticketfs::device::DevError> {
        self.inner.flush()
    }
}

/// Bytes that differ from place to place and from seed to seed (xorshift).
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// In a child just forked from a test (no exec): closes every descriptor the other test threads
/// had open, which the child inherited, so it cannot keep their mounts busy (umount: EBUSY).
pub fn close_inherited_fds() {
    // SAFETY: close_range on descriptors 3 and up of this (child) process.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
}

/// The unprivileged user tests act as: nobody.
pub const NOBODY: u32 = 65534;

/// Why a user other than root cannot mount through fusermount3 here (None: they can): /dev/fuse
/// must be open to them, and the tests need fusermount3 and setpriv. The caller skips with it.
pub fn user_fuse_missing() -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let fuse_mode = std::fs::metadata("/dev/fuse")
        .ok()
        .map(|m| m.permissions().mode() & 0o777);
    if fuse_mode.is_none_or(|m| m & 0o006 != 0o006) {
        return Some(format!(
            "/dev/fuse is not open to other users here (mode {fuse_mode:?}; Debian's udev \
             makes it 0666, scripts/install-test-deps.sh does where udev does not run)"
        ));
    }
    [("fusermount3", "fuse3"), ("setpriv", "util-linux")]
        .into_iter()
        .find(|(tool, _)| std::process::Command::new(tool).arg("-V").output().is_err())
        .map(|(tool, package)| format!("{tool} is missing (Debian package {package})"))
}

/// Runs `f` in a child that has become uid and gid `uid` with no supplementary groups (and so
/// no capabilities); returns what `f` returned (0 or an errno; 250: the child could not become
/// `uid`). `f` must make only system calls (no allocation, no locks): the child of a
/// multithreaded test may not do more after fork.
pub fn as_user(uid: u32, f: &dyn Fn() -> i32) -> i32 {
    // SAFETY: the child calls only async-signal-safe functions (close_range, setgroups, setgid,
    // setuid, the system calls `f` makes, _exit).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        close_inherited_fds();
        unsafe {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(uid) != 0
                || libc::setuid(uid) != 0
            {
                libc::_exit(250);
            }
            libc::_exit(f());
        }
    }
    let mut st = 0;
    // SAFETY: our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    assert!(libc::WIFEXITED(st), "child died: {st:#x}");
    libc::WEXITSTATUS(st)
}
