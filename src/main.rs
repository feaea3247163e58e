//! `ticketfs IMAGE MOUNTPOINT [-f] [-o OPTIONS]`: mounts a ticketfs image through FUSE.
//! `ticketfs stats MOUNTPOINT [--json]`: prints the live statistics of a mount.
//!
//! The argument convention is mount.fuse3's, so `mount -t fuse.ticketfs IMAGE DIR` and an fstab
//! line work. The command returns once the mount is live (the daemon goes to the background
//! unless `-f`); `umount DIR` or SIGTERM flushes everything and marks the image clean.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::process::exit;
use std::sync::Arc;
use ticketfs::budget::{self, Budget};
use ticketfs::fs::{AtimePolicy, Fs};
use ticketfs::image::{open_image, parse_size};
use ticketfs::mem::cgroup::CgroupMemory;
use ticketfs::mem::{MemRes, OverrunPolicy};
use ticketfs::ops::Ops;
use ticketfs::ring::Queues;
use ticketfs::stats::{self, Report};
use ticketfs::trans::TransKind;
use ticketfs::{Engine, EngineOptions};

const USAGE: &str = "usage: ticketfs IMAGE MOUNTPOINT [-f] [-o ro|rw|allow_other|default_permissions|writeback_cache|blkdev=on|off|hostcache=on|off|uring=on|off|uring_idle=on|off|mem=SIZE|max_threads=N|memres=on|off|overrun=warn|panic|verbose|debug_resv=KIND:BYTES,...]
       ticketfs stats MOUNTPOINT [--json]";
/// glibc's malloc: blocks from this size are mapped and unmapped on their own, so a freed write
/// buffer goes back to the system instead of staying in an arena (a fixed threshold also turns
/// off glibc's raising it after the first large free).
const MALLOC_MMAP_THRESHOLD: libc::c_int = 32 << 10;
/// Free memory at the top of an arena beyond this is given back.
const MALLOC_TRIM_THRESHOLD: libc::c_int = 128 << 10;
/// Arenas: a few, so per-thread arenas cannot each keep their own free memory.
const MALLOC_ARENAS: libc::c_int = 1;

struct Options {
    image: PathBuf,
    mountpoint: PathBuf,
    foreground: bool,
    read_only: bool,
    /// `-o remount`: change the live mount (mount(8) and mount.fuse3 pass a remount here).
    remount: bool,
    allow_other: bool,
    default_permissions: bool,
    /// `-o writeback_cache`: the kernel's writeback cache (implies default_permissions).
    writeback_cache: bool,
    /// `-o uring=on|off`: FUSE over io_uring when the kernel offers it (on by default).
    uring: bool,
    /// `-o uring_idle=on|off`: the queue threads serve at SCHED_IDLE while CPUs are spare (on).
    uring_idle: bool,
    /// `-o hostcache=on|off`: file data read through the image's page cache (on by default).
    host_cache: bool,
    /// `-o blkdev=on|off`: mount as `fuseblk` (through a loop device for an image file), so
    /// umount waits for the daemon to write everything home (on by default).
    blkdev: bool,
    /// `blkdev=on` was given: say so when it cannot be had.
    blkdev_asked: bool,
    /// The mount's own flags (nosuid, nodev, noexec, sync, dirsync), kept by the kernel.
    flags: MountFlags,
    /// Print the budget's derivation even when stderr is not a terminal.
    verbose: bool,
    mem_option: Option<u64>,
    threads_option: Option<usize>,
    atime: AtimePolicy,
    engine: EngineOptions,
}

/// Mount flags the kernel enforces for the mount (as for any filesystem); the daemon only passes
/// them on, at mount and at remount. Unset, a mount by root allows devices, set-id and exec,
/// as mount(8) does for a kernel filesystem.
#[derive(Debug, Clone, Copy, Default)]
struct MountFlags {
    nosuid: bool,
    nodev: bool,
    noexec: bool,
    sync: bool,
    dirsync: bool,
}

impl MountFlags {
    fn ms_bits(self) -> libc::c_ulong {
        let mut f = 0;
        for (on, bit) in [
            (self.nosuid, libc::MS_NOSUID),
            (self.nodev, libc::MS_NODEV),
            (self.noexec, libc::MS_NOEXEC),
            (self.sync, libc::MS_SYNCHRONOUS),
            (self.dirsync, libc::MS_DIRSYNC),
        ] {
            if on {
                f |= bit;
            }
        }
        f
    }
}

fn die(msg: &str) -> ! {
    eprintln!("ticketfs: {msg}");
    exit(1)
}

fn parse() -> Options {
    let mut pos = Vec::new();
    let mut o = Options {
        image: PathBuf::new(),
        mountpoint: PathBuf::new(),
        foreground: false,
        read_only: false,
        remount: false,
        allow_other: false,
        default_permissions: false,
        writeback_cache: false,
        host_cache: true,
        blkdev: true,
        blkdev_asked: false,
        uring: true,
        uring_idle: true,
        flags: MountFlags::default(),
        verbose: false,
        mem_option: None,
        threads_option: None,
        atime: AtimePolicy::Relatime,
        engine: EngineOptions::default(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-f" => o.foreground = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                exit(0)
            }
            "-o" => {
                let list = args.next().unwrap_or_else(|| die(USAGE));
                for opt in list.split(',').filter(|s| !s.is_empty()) {
                    match opt {
                        "ro" => o.read_only = true,
                        "rw" => o.read_only = false,
                        "remount" => o.remount = true,
                        "allow_other" => o.allow_other = true,
                        "default_permissions" => o.default_permissions = true,
                        // The kernel's writeback cache stamps truncates and flushes with times
                        // of its own, which only its own permission check tells from a user's
                        // utimensat: so it comes with default_permissions.
                        "writeback_cache" => {
                            o.writeback_cache = true;
                            o.default_permissions = true;
                        }
                        "hostcache=on" => o.host_cache = true,
                        "blkdev=on" => {
                            o.blkdev = true;
                            o.blkdev_asked = true;
                        }
                        "blkdev=off" => o.blkdev = false,
                        "uring=on" => o.uring = true,
                        "uring=off" => o.uring = false,
                        "uring_idle=on" => o.uring_idle = true,
                        "uring_idle=off" => o.uring_idle = false,
                        "hostcache=off" => o.host_cache = false,
                        "memres=on" => o.engine.memres = MemRes::On,
                        "memres=off" => o.engine.memres = MemRes::Off,
                        "overrun=warn" => o.engine.overrun = OverrunPolicy::Warn,
                        "overrun=panic" => o.engine.overrun = OverrunPolicy::Panic,
                        "verbose" => o.verbose = true,
                        "relatime" => o.atime = AtimePolicy::Relatime,
                        "strictatime" => o.atime = AtimePolicy::Strict,
                        "noatime" => o.atime = AtimePolicy::Never,
                        "nosuid" => o.flags.nosuid = true,
                        "suid" => o.flags.nosuid = false,
                        "nodev" => o.flags.nodev = true,
                        "dev" => o.flags.nodev = false,
                        "noexec" => o.flags.noexec = true,
                        "exec" => o.flags.noexec = false,
                        "sync" => o.flags.sync = true,
                        "async" => o.flags.sync = false,
                        "dirsync" => o.flags.dirsync = true,
                        m if m.starts_with("mem=") => {
                            o.mem_option = Some(
                                parse_size(&m[4..])
                                    .unwrap_or_else(|| die(&format!("bad size in {m}"))),
                            )
                        }
                        m if m.starts_with("max_threads=") => {
                            o.threads_option = Some(
                                m[12..]
                                    .parse()
                                    .unwrap_or_else(|_| die(&format!("bad number in {m}"))),
                            )
                        }
                        m if m.starts_with("debug_resv=") => {
                            o.engine.mem_override.push(parse_debug_resv(&m[11..]))
                        }
                        // Other options mount(8) and mount.fuse3 pass along: accepted; they
                        // change nothing here.
                        _ => {}
                    }
                }
            }
            _ if a.starts_with('-') => die(&format!("unknown option {a}\n{USAGE}")),
            _ => pos.push(PathBuf::from(a)),
        }
    }
    if pos.len() != 2 {
        die(USAGE);
    }
    // Shared with every user, the mount lets the kernel check permissions on every path walk
    // and access, cached or not (docs/security.md): without it a name root looked up stays
    // cached for TTL and the kernel skips the daemon's search-permission check for anyone.
    if o.allow_other {
        o.default_permissions = true;
    }
    o.mountpoint = pos.pop().unwrap_or_default();
    o.image = pos.pop().unwrap_or_default();
    o
}

/// `KIND:BYTES`: a testing knob that replaces the memory of one reservation table entry, to see
/// an undersized entry reported (the operation still completes from the emergency reserve).
fn parse_debug_resv(s: &str) -> (TransKind, u64) {
    let parsed = s.split_once(':').and_then(|(kind, bytes)| {
        let kind = TransKind::ALL.iter().copied().find(|k| k.name() == kind)?;
        Some((kind, parse_size(bytes)?))
    });
    let Some((kind, bytes)) = parsed else {
        die(&format!("debug_resv={s}: expected KIND:BYTES"))
    };
    (kind, bytes)
}

/// `ticketfs stats MOUNTPOINT [--json]`.
fn stats_command(args: &[String]) -> ! {
    let json = args.iter().any(|a| a == "--json");
    let mnt: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if mnt.len() != 1 {
        die(USAGE);
    }
    let image = stats::image_of_mount(Path::new(mnt[0])).unwrap_or_else(|e| die(&e));
    match stats::query(&image, if json { "json" } else { "text" }) {
        Ok(out) => {
            print!("{out}");
            exit(0)
        }
        Err(e) => die(&format!("statistics of {}: {e}", image.display())),
    }
}

/// Tunes glibc's malloc so memory freed goes back to the system (see the constants).
fn tune_malloc() {
    // SAFETY: mallopt only sets allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
    }
}

/// Blocks the termination signals in this thread and every thread created after it; a signal
/// thread then takes them with sigwait.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; the calls only fill and install it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// The daemon's unmount, run once: when the kernel sends DESTROY (a `fuseblk` mount, whose
/// umount(2) waits for the answer) or else when the connection ends. Read-ahead stops, the
/// statistics channel closes, the filesystem writes everything home and marks the image clean,
/// and the image's lock is released: whoever unmounted finds the image free.
struct Finish {
    fs: Arc<Fs>,
    source: PathBuf,
    readahead: parking_lot::Mutex<Vec<std::thread::JoinHandle<()>>>,
    lock: parking_lot::Mutex<Option<ticketfs::rundir::ImageLock>>,
    done: std::sync::OnceLock<Result<(), String>>,
}

impl Finish {
    fn run(&self) -> Result<(), String> {
        self.done
            .get_or_init(|| {
                self.fs.stop_readahead();
                for t in self.readahead.lock().drain(..) {
                    let _ = t.join();
                }
                // No statistics request may hold the filesystem while it unmounts.
                stats::stop(&self.source);
                let r = self.fs.unmount_now().map_err(|e| format!("unmount: {e}"));
                // Closing the descriptor releases the one-daemon-per-image lock. Whether the
                // unmount finished or not (a filesystem shut down by an error or the shutdown
                // ioctl), the log's threads have stopped and nothing more is written: the image
                // is what the next mount replays, and fsck may look at it at once.
                self.lock.lock().take();
                r
            })
            .clone()
    }
}

/// The block device a `fuseblk` mount of `o.image` stands on: the image itself when it is a
/// block device, else a loop device attached over it. None when the mount is to be `fuse`
/// (`-o blkdev=off`, or no loop device can be had: not root, no loop driver), with the reason.
fn block_source(o: &Options) -> Result<(PathBuf, Option<ticketfs::kmount::LoopDevice>), String> {
    if !o.blkdev {
        return Err("-o blkdev=off".into());
    }
    if ticketfs::kmount::is_block_device(&o.image) {
        return Ok((o.image.clone(), None));
    }
    ticketfs::kmount::attach_loop(&o.image)
        .map(|l| (l.path.clone(), Some(l)))
        .map_err(|e| format!("no loop device over the image: {e}"))
}

/// Mounts and serves until unmounted; reports "ok" and the budget line, or the error, on `report`.
/// `lock` is the image's lock, released by the unmount.
fn serve(
    o: &Options,
    lock: Option<ticketfs::rundir::ImageLock>,
    report: &mut dyn FnMut(Result<String, String>),
) -> Result<(), String> {
    let set = block_signals();
    tune_malloc();
    let start_rss = budget::resident_bytes();
    let dev = open_image(&o.image).map_err(|e| format!("{}: {e}", o.image.display()))?;
    let pools = ticketfs::log::writer_pool_bytes(ticketfs::device::Device::block_size(&dev));
    let mut uring = o.uring && ticketfs::ring::available();
    let derive = |threads: Option<usize>, uring: bool| {
        budget::derive(
            CgroupMemory::of_self(),
            start_rss,
            pools,
            o.mem_option,
            threads,
            uring,
        )
        .map_err(|e| format!("{}: {e}", o.image.display()))
    };
    let mut budget = derive(o.threads_option, uring)?;
    // With io_uring, the serving threads are as many per CPU queue as it takes to have the
    // sized number in all: the base counts their buffers. The one /dev/fuse thread then carries
    // only FORGET and INTERRUPT (a page of its buffer), or everything should the queues fail to
    // start, when their buffers are never made. Under a small limit (unless max_threads= asks)
    // a thread for each CPU's queue beyond the sized ones would take memory the reservations
    // need: requests go through /dev/fuse with the sized threads instead.
    let mut queue_n = if uring {
        ticketfs::ring::queue_count().ok()
    } else {
        None
    };
    if let Some(n) = queue_n {
        let threads = n * budget.sizing.fuse_threads.div_ceil(n);
        if threads != budget.sizing.fuse_threads {
            if budget.sizing.max_write == budget::MAX_WRITE_SMALL && o.threads_option.is_none() {
                uring = false;
                queue_n = None;
                budget = derive(o.threads_option, false)?;
            } else {
                budget = derive(Some(threads), true)?;
            }
        }
    }
    let per_queue = queue_n.map(|n| budget.sizing.fuse_threads.div_ceil(n));
    let dev = dev.with_data_page_cache(o.host_cache, budget.host_dirty_max());
    let mut engine_opts = o.engine.clone();
    engine_opts.mem_budget_bytes = budget.budget_bytes;
    let eng = Engine::mount(Arc::new(dev), engine_opts)
        .map_err(|e| format!("{}: {e}", o.image.display()))?;
    let mut fs = Fs::new(eng, o.read_only).map_err(|e| format!("{}: {e}", o.image.display()))?;
    fs.set_atime_policy(o.atime);
    fs.set_kernel_checks_permissions(o.default_permissions);
    // Set once the mount stands and its device number is known (its superblock's state).
    let mount_dev: Arc<std::sync::OnceLock<String>> = Arc::new(std::sync::OnceLock::new());
    {
        let dev = mount_dev.clone();
        fs.set_ro_probe(Box::new(move || stats::super_ro_of(dev.get()?)));
    }
    // Through /dev/fuse the kernel's read-ahead requests are served by threads on every CPU
    // already; through the queues they wait on the reader's CPU (`file::readahead`). Not under
    // a small limit (`Sizing::readahead`).
    if budget.sizing.readahead {
        fs.enable_readahead(budget.sizing.max_write as usize);
    }
    let fs = Arc::new(fs);
    let source = std::fs::canonicalize(&o.image).unwrap_or_else(|_| o.image.clone());
    // Before the mount: afterwards resolving it would ask the daemon, which is not serving yet.
    let point = std::fs::canonicalize(&o.mountpoint).unwrap_or_else(|_| o.mountpoint.clone());
    let unmount_fs = |msg: String| {
        let _ = fs.unmount_now();
        msg
    };
    let mut spec = ticketfs::kmount::Spec {
        source: source.clone(),
        point: point.clone(),
        blkdev: false,
        read_only: o.read_only,
        allow_other: o.allow_other,
        default_permissions: o.default_permissions,
        ms_flags: o.flags.ms_bits(),
        max_read: budget.sizing.max_write,
    };
    // Held until the mount stands (the kernel then holds the loop device until unmounted).
    let mut attached = None;
    match block_source(o) {
        Ok((blk, lo)) => {
            spec.source = blk;
            spec.blkdev = true;
            attached = lo;
        }
        Err(why) => {
            if o.blkdev_asked || o.verbose {
                eprintln!(
                    "ticketfs: mounting as fuse, not fuseblk ({why}): umount returns before the \
                     image is written home and released"
                );
            }
        }
    }
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let conn = if root {
        ticketfs::kmount::open_dev_fuse()
            .and_then(|conn| ticketfs::kmount::mount(&spec, &conn).map(|()| conn))
    } else {
        // Another user mounts through fusermount3 (plain fuse, nosuid, nodev).
        ticketfs::kmount::mount_fusermount(&spec)
    }
    .map_err(|e| {
        unmount_fs(format!(
            "mounting {} on {}: {e}",
            spec.source.display(),
            o.mountpoint.display()
        ))
    })?;
    drop(attached);
    // This mount's device number, from the mount table (the mount is not served yet: nothing
    // may look into it).
    if let Some(dev) = stats::dev_of_mount(&point) {
        let _ = mount_dev.set(dev);
    }
    let want = ticketfs::devfuse::Want {
        max_write: budget.sizing.max_write,
        writeback: o.writeback_cache,
        uring,
    };
    let granted = match ticketfs::devfuse::handshake(&conn, &want) {
        Ok(g) => g,
        Err(e) => {
            let _ = ticketfs::kmount::umount(&point);
            return Err(unmount_fs(format!("FUSE INIT: {e}")));
        }
    };
    let signal_point = point.clone();
    std::thread::Builder::new()
        .name("tkfs-signals".into())
        .spawn(move || {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` holds the blocked termination signals; sigwait writes one into sig.
            unsafe { libc::sigwait(&set, &mut sig) };
            if let Err(e) = ticketfs::kmount::umount(&signal_point) {
                eprintln!("ticketfs: unmounting {}: {e}", signal_point.display());
            }
        })
        .map_err(|e| format!("signal thread: {e}"))?;
    // Statistics are for the operator: a channel that cannot be opened never stops a mount.
    if let Err(e) = start_stats(&source, &fs, &budget) {
        eprintln!("ticketfs: {e} (ticketfs stats will not answer for this mount)");
    }
    let window = budget.sizing.max_write as u64 * budget.sizing.fuse_threads as u64;
    if let Err(e) = set_readahead(&point, window) {
        if o.verbose {
            eprintln!("ticketfs: read-ahead left at the kernel's default: {e}");
        }
    }
    // Each request thread's data buffer is kept up to the largest request (counted in the base).
    ticketfs::file::set_scratch_keep_max(budget.sizing.max_write as usize);
    let ops = Arc::new(Ops::new(fs.clone(), budget.sizing.max_write));
    let finish = Arc::new(Finish {
        fs: fs.clone(),
        source: source.clone(),
        readahead: parking_lot::Mutex::new(Vec::new()),
        lock: parking_lot::Mutex::new(lock),
        done: std::sync::OnceLock::new(),
    });
    {
        let finish = finish.clone();
        ops.on_destroy(Box::new(move || finish.run()));
    }
    let freed = fs.orphans_freed_at_mount();
    report(Ok(format!(
        "memory budget {}: {}{}",
        budget::mib(budget.budget_bytes),
        budget.derivation,
        if freed > 0 {
            format!("\nticketfs: freed {freed} inode(s) unlinked before the last crash")
        } else {
            String::new()
        }
    )));
    // Started once the mount stands: every way out from here goes through `finish`.
    let workers = if budget.sizing.readahead {
        ticketfs::file::readahead::READAHEAD_WORKERS
    } else {
        0
    };
    for i in 0..workers {
        let fs = fs.clone();
        let t = std::thread::Builder::new()
            .name(format!("tkfs-readahead-{i}"))
            .spawn(move || fs.serve_readahead());
        match t {
            Ok(t) => finish.readahead.lock().push(t),
            // Read-ahead is an optimisation: fewer workers (or none) only read less ahead.
            Err(e) => eprintln!("ticketfs: read-ahead worker not started: {e}"),
        }
    }
    if let Some(dev) = mount_dev.get() {
        watch_remounts(dev, &fs);
    }
    drop(fs);
    // INIT granted io_uring: the queues take over every request but FORGET and INTERRUPT.
    let queues_serving = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let queues = if granted.uring {
        match Queues::start(
            &conn,
            ops.clone(),
            per_queue.unwrap_or(1),
            budget.sizing.max_write as usize,
            o.uring_idle,
        ) {
            Ok(q) => {
                queues_serving.store(true, std::sync::atomic::Ordering::Release);
                Some(q)
            }
            Err(e) => {
                eprintln!("ticketfs: io_uring queues not started, serving through /dev/fuse: {e}");
                None
            }
        }
    } else {
        None
    };
    // With the queues, /dev/fuse carries only FORGET and INTERRUPT (and every request, should
    // they fail): one thread, which the kernel then rarely has to wake.
    let threads = if queues.is_some() {
        1
    } else {
        budget.sizing.fuse_threads
    };
    let served = ticketfs::devfuse::DevFuse::start(
        &conn,
        ops.clone(),
        threads,
        budget.sizing.max_write as usize,
        queues_serving,
    )
    .and_then(|d| d.join());
    if let Some(q) = queues {
        q.stop();
    }
    drop(ops);
    // A `fuse` mount (no DESTROY), or a connection that ended otherwise: unmount now.
    finish.run()?;
    served.map_err(|e| format!("FUSE session: {e}"))
}

/// Follows remounts (`mount -o remount,ro|rw`, from any tool: the kernel tells the daemon
/// nothing): a thread waits for changes of the mount table (/proc/self/mountinfo signals them to
/// poll) and sets the filesystem read-only or writable as the superblock now is. A change that
/// reaches a read-only filesystem first also asks (`Fs::set_ro_probe`). Ends when the image is
/// mounted nowhere any more.
fn watch_remounts(dev: &str, fs: &Arc<Fs>) {
    let Ok(mut table) = std::fs::File::open("/proc/self/mountinfo") else {
        return;
    };
    let (dev, fs) = (dev.to_string(), Arc::downgrade(fs));
    let spawned = std::thread::Builder::new()
        .name("tkfs-remounts".into())
        .spawn(move || {
            let mut sink = Vec::new();
            loop {
                // Reading the table to its end is what re-arms the poll.
                sink.clear();
                use std::io::Seek;
                let _ = table.seek(std::io::SeekFrom::Start(0));
                let _ = table.read_to_end(&mut sink);
                // This mount, by its superblock's device number: gone when the last mount of it
                // is.
                let Some(ro) = stats::super_ro_of(&dev) else {
                    return;
                };
                let Some(fs) = fs.upgrade() else { return };
                if let Err(e) = fs.set_read_only(ro) {
                    eprintln!("ticketfs: remount: {e}");
                }
                drop(fs);
                let mut p = libc::pollfd {
                    fd: table.as_raw_fd(),
                    events: libc::POLLPRI,
                    revents: 0,
                };
                // SAFETY: one pollfd for a descriptor we own.
                unsafe { libc::poll(&mut p, 1, -1) };
            }
        });
    if let Err(e) = spawned {
        eprintln!("ticketfs: remounts will not be followed: {e}");
    }
}

/// Sets the kernel's read-ahead window for this mount to `bytes`: one largest request per
/// request thread, so a sequential reader keeps every thread (and the device) busy. FUSE mounts
/// get 128 KiB by default, one request in flight. fio's 1 MiB sequential read, by hand: 650-740
/// MiB/s with 128 KiB, 921-1099 with 1 MiB, 1149-1264 with 4 MiB (4 threads of 1 MiB). Needs
/// root (sysfs); without it the default stays.
fn set_readahead(point: &Path, bytes: u64) -> Result<(), String> {
    let m = stats::ticketfs_mounts()?
        .into_iter()
        .rev()
        .find(|m| m.point == point)
        .ok_or_else(|| format!("{} is not in the mount table", point.display()))?;
    // A fuseblk mount's bdi is named after its block device with a suffix.
    let bdi = if m.blkdev {
        format!("{}-fuseblk", m.dev)
    } else {
        m.dev.clone()
    };
    let knob = format!("/sys/class/bdi/{bdi}/read_ahead_kb");
    std::fs::write(&knob, format!("{}", bytes / 1024)).map_err(|e| format!("{knob}: {e}"))
}

/// Serves `ticketfs stats` for this mount.
fn start_stats(image: &Path, fs: &Arc<Fs>, budget: &Budget) -> Result<(), String> {
    let fs = Arc::downgrade(fs);
    let budget = budget.clone();
    let img = image.to_path_buf();
    stats::serve(image, move || {
        let fs = fs.upgrade()?;
        let eng = fs.engine();
        let sites = eng
            .overrun_reports()
            .iter()
            .map(|r| r.to_string())
            .collect();
        Some(Report::new(
            &img,
            &eng.stats(),
            &budget,
            eng.trans_pinned_bytes(),
            fs.readahead_stats(),
            sites,
        ))
    })
    .map(|_| ())
    .map_err(|e| format!("statistics socket: {e}"))
}

/// `ticketfs db IMAGE COMMAND [ARG]`: prints on-disk structures; never writes.
fn db_command(args: &[String]) -> ! {
    let (Some(image), Some(cmd)) = (args.first(), args.get(1)) else {
        die(ticketfs::db::USAGE)
    };
    let dev = ticketfs::image::open_image_buffered(Path::new(image))
        .unwrap_or_else(|e| die(&format!("{image}: {e}")));
    match ticketfs::db::run(Arc::new(dev), cmd, args.get(2).map(String::as_str)) {
        Ok(out) => {
            print!("{out}");
            exit(0)
        }
        Err(e) => die(&e),
    }
}

/// `-o remount[,ro|rw]`: the kernel's remount of the live mount (read-only or read-write at the
/// VFS); the daemon serving it goes on. Starting a second daemon for the image would be refused.
fn remount(o: &Options) -> ! {
    let Ok(dir) = std::ffi::CString::new(o.mountpoint.as_os_str().as_encoded_bytes()) else {
        die("bad mount point")
    };
    let flags =
        libc::MS_REMOUNT | o.flags.ms_bits() | if o.read_only { libc::MS_RDONLY } else { 0 };
    // SAFETY: a NUL-terminated path; source, type and data may be null for a remount.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            dir.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        die(&format!(
            "remount of {}: {}",
            o.mountpoint.display(),
            std::io::Error::last_os_error()
        ));
    }
    exit(0)
}

/// A mount point of `image` served by a daemon already (the whole filesystem rather than a
/// subtree) and whether its superblock is read-only. Found by the image's identity, so a hard
/// link, a symlink or another spelling of its path finds it too.
fn existing_mount(image: &Path) -> Option<(PathBuf, bool)> {
    stats::mounts_of(image)
        .into_iter()
        .find(|m| m.whole)
        .map(|m| (m.point, m.super_ro))
}

/// A second mount of an image already mounted shares the live filesystem, as the kernel shares
/// one superblock between two mounts of a block device: a bind mount of the first mount point
/// (its source stays the image), then the new mount's own flags. A read-write mount of an image
/// mounted read-only is refused, as the kernel refuses it (EBUSY).
fn mount_again(o: &Options, first: &Path, first_ro: bool) -> ! {
    if first_ro && !o.read_only {
        die(&format!(
            "{}: already mounted read-only on {}",
            o.image.display(),
            first.display()
        ));
    }
    let cpath = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
            .unwrap_or_else(|_| die(&format!("{}: bad path", p.display())))
    };
    let (src, dst) = (cpath(first), cpath(&o.mountpoint));
    let mount = |src: *const libc::c_char, flags: libc::c_ulong| {
        // SAFETY: NUL-terminated paths that outlive the call; type and data may be null for
        // a bind mount and for its remount.
        let rc =
            unsafe { libc::mount(src, dst.as_ptr(), std::ptr::null(), flags, std::ptr::null()) };
        if rc != 0 {
            die(&format!(
                "mounting {} again on {}: {}",
                o.image.display(),
                o.mountpoint.display(),
                std::io::Error::last_os_error()
            ));
        }
    };
    mount(src.as_ptr(), libc::MS_BIND);
    let flags = o.flags.ms_bits() | if o.read_only { libc::MS_RDONLY } else { 0 };
    if flags != 0 {
        mount(std::ptr::null(), libc::MS_BIND | libc::MS_REMOUNT | flags);
    }
    exit(0)
}

/// An image file anyone else may write is refused: they could change the filesystem under the
/// mount (and craft what the daemon reads). One anyone else may read is mounted with a
/// warning: they can read every file's contents out of it. (A block device's access is the
/// system's business, as for a kernel filesystem.)
fn check_image_access(image: &Path, flags: MountFlags) {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::metadata(image) else {
        return;
    };
    if !m.is_file() {
        return;
    }
    // An image another user owns is theirs to change at will: mounted by root with set-id
    // programs and devices honoured, it would be their way to root (a set-user-ID root shell
    // written into it). As the kernel's own mounts of user-owned images need nosuid and nodev
    // to be safe, so here.
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if me == 0 && m.uid() != 0 && !(flags.nosuid && flags.nodev) {
        die(&format!(
            "{}: owned by uid {}, not root: mount it with -o nosuid,nodev (its owner can change \
             everything in it), or chown it to root",
            image.display(),
            m.uid()
        ));
    }
    let mode = m.mode() & 0o777;
    if mode & 0o022 != 0 {
        die(&format!(
            "{}: writable by users other than its owner (mode {mode:o}): any of them could change the filesystem under the mount; chmod go-w it first",
            image.display()
        ));
    }
    if mode & 0o044 != 0 {
        eprintln!(
            "ticketfs: warning: {} is readable by users other than its owner (mode {mode:o}): any of them can read every file's contents out of it; chmod 600 it",
            image.display()
        );
    }
}

/// How long a mount waits for the image's previous daemon to finish unmounting.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("stats") {
        stats_command(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("db") {
        db_command(&args[1..]);
    }
    let o = parse();
    if o.remount {
        remount(&o);
    }
    if !o.mountpoint.is_dir() {
        die(&format!("{}: not a directory", o.mountpoint.display()));
    }
    if let Some((first, first_ro)) = existing_mount(&o.image) {
        let here = std::fs::canonicalize(&o.mountpoint).unwrap_or_else(|_| o.mountpoint.clone());
        if first == here {
            die(&format!(
                "{} is already mounted on {}",
                o.image.display(),
                first.display()
            ));
        }
        mount_again(&o, &first, first_ro);
    }
    // One daemon per image: an exclusive lock held for the life of the mount, in the runtime
    // directory only this user may enter (no other user can take it first).
    // A daemon that was just unmounted may still be writing everything home (a plain fuse
    // mount): wait for it a little (fstests unmounts and mounts again at once), then refuse.
    let waited = std::time::Instant::now();
    let lockf = loop {
        match ticketfs::rundir::try_lock(&o.image) {
            Ok(l) => break l,
            Err(Some(e)) => die(&format!("{}: image lock: {e}", o.image.display())),
            Err(None) if waited.elapsed() > LOCK_WAIT => die(&format!(
                "{}: already mounted (the image is locked by another ticketfs)",
                o.image.display()
            )),
            Err(None) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    };
    // The primary superblock, or the backup when the primary is bad.
    if let Err(e) = ticketfs::image::open_image(Path::new(&o.image)) {
        die(&e.to_string());
    }
    check_image_access(&o.image, o.flags);
    if o.foreground {
        let r = serve(&o, Some(lockf), &mut |_| {});
        if let Err(e) = r {
            die(&e);
        }
        return;
    }
    let mut fds = [0; 2];
    // SAFETY: pipe fills two descriptors we then own.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        die("pipe failed");
    }
    // SAFETY: no other thread exists yet, so fork is sound.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        die("fork failed");
    }
    if pid > 0 {
        // SAFETY: fds[0] is the read end we own; fds[1] belongs to the child.
        let mut rd = unsafe { std::fs::File::from_raw_fd(fds[0]) };
        unsafe { libc::close(fds[1]) };
        let mut msg = String::new();
        let _ = rd.read_to_string(&mut msg);
        if let Some(line) = msg.strip_prefix("ok ") {
            // SAFETY: isatty only looks at the descriptor number.
            if o.verbose || unsafe { libc::isatty(2) } == 1 {
                eprintln!("ticketfs: {line}");
            }
            exit(0);
        }
        die(msg.trim_start_matches("err ").trim());
    }
    // The daemon.
    // SAFETY: closing the read end we do not use; starting a new session.
    unsafe {
        libc::close(fds[0]);
        libc::setsid();
    }
    // SAFETY: fds[1] is the write end we own.
    let mut wr = Some(unsafe { std::fs::File::from_raw_fd(fds[1]) });
    let mut report = |r: Result<String, String>| {
        if let Some(mut w) = wr.take() {
            let _ = match r {
                Ok(line) => w.write_all(format!("ok {line}").as_bytes()),
                Err(e) => w.write_all(format!("err {e}").as_bytes()),
            };
            // Detach from the caller's terminal and pipes: a caller reading our stdout or stderr
            // (mount(8) run by a script) waits for them to close.
            if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
                // SAFETY: dup2 onto the standard descriptors.
                unsafe {
                    libc::dup2(null.as_raw_fd(), 0);
                    libc::dup2(null.as_raw_fd(), 1);
                    libc::dup2(null.as_raw_fd(), 2);
                }
            }
        }
    };
    let r = serve(&o, Some(lockf), &mut report);
    if let Err(e) = r {
        report(Err(e.clone()));
        eprintln!("ticketfs: {e}");
        exit(1);
    }
}
