//! The mount daemon: mounts an image through FUSE and serves it until it is unmounted, in the
//! order the unmount's durability rests on (docs/design.md "Mount, remount, unmount"): the
//! image opened and locked, the budget derived, the kernel mount made (fuseblk over a loop device
//! unless `blkdev=off`), INIT answered, the transport's threads started; at DESTROY or the end of
//! the connection, read-ahead and statistics stop, everything is written home and the image is
//! marked clean, then its lock is released. `main.rs` parses the command line into `Options` and
//! calls `serve`; the daemon's policy lives here, above the filesystem it serves.

mod options;

pub use options::{options_help, spelled, MountFlags, Options, MOUNT_OPTIONS, OTHER_OPTIONS};

use crate::budget::{self, Budget};
use crate::engine::Engine;
use crate::fs::Fs;
use crate::image::open_image;
use crate::mem::cgroup::CgroupMemory;
use crate::ops::Ops;
use crate::ring::{Queues, Serving};
use crate::stats::{self, Report};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// glibc's malloc: blocks from this size are mapped and unmapped on their own, so a freed write
/// buffer goes back to the system instead of staying in an arena (a fixed threshold also turns
/// off glibc's raising it after the first large free).
const MALLOC_MMAP_THRESHOLD: libc::c_int = 32 << 10;

/// Free memory at the top of an arena beyond this is given back.
const MALLOC_TRIM_THRESHOLD: libc::c_int = 128 << 10;

/// Arenas: a few, so per-thread arenas cannot each keep their own free memory.
const MALLOC_ARENAS: libc::c_int = 1;

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
    lock: parking_lot::Mutex<Option<crate::rundir::ImageLock>>,
    /// The image marked in use for every user (`image::claim_for_mount`), released with the lock.
    claim: parking_lot::Mutex<Option<crate::image::Claim>>,
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
                self.claim.lock().take();
                r
            })
            .clone()
    }
}

/// The block device a `fuseblk` mount of `o.image` stands on: the image itself when it is a
/// block device, else a loop device attached over it. None when the mount is to be `fuse`
/// (`-o blkdev=off`, or no loop device can be had: not root, no loop driver), with the reason.
pub(crate) fn block_source(
    o: &Options,
) -> Result<(PathBuf, Option<crate::kmount::LoopDevice>), String> {
    if !o.blkdev {
        return Err("-o blkdev=off".into());
    }
    if crate::kmount::is_block_device(&o.image) {
        return Ok((o.image.clone(), None));
    }
    crate::kmount::attach_loop(&o.image)
        .map(|l| (l.path.clone(), Some(l)))
        .map_err(|e| format!("no loop device over the image: {e}"))
}

/// Mounts and serves until unmounted; reports "ok" and the budget line, or the error, on `report`.
/// `lock` is the image's lock, released by the unmount.
pub fn serve(
    o: &Options,
    lock: Option<crate::rundir::ImageLock>,
    report: &mut dyn FnMut(Result<String, String>),
) -> Result<(), String> {
    let set = block_signals();
    tune_malloc();
    let start_rss = o.start_rss.unwrap_or_else(budget::resident_bytes);
    // Before anything is written: a block device a fuseblk mount stands on is the kernel's to
    // claim (block_source: root's mounts only; another user's goes through fusermount3 as plain
    // fuse); anything else is claimed here, a busy block device refused.
    // SAFETY: geteuid cannot fail.
    let fuseblk_of_device =
        o.blkdev && unsafe { libc::geteuid() } == 0 && crate::kmount::is_block_device(&o.image);
    let claim = if fuseblk_of_device {
        None
    } else {
        Some(
            crate::image::claim_for_mount(&o.image)
                .map_err(|e| format!("{}: {e}", o.image.display()))?,
        )
    };
    let dev = open_image(&o.image).map_err(|e| format!("{}: {e}", o.image.display()))?;
    let pools = crate::log::writer_pool_bytes(crate::device::Device::block_size(&dev));
    let mut uring = o.uring && crate::ring::available();
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
        crate::ring::queue_count().ok()
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
    engine_opts.read_only = o.read_only;
    let eng = Engine::mount(Arc::new(dev), engine_opts)
        .map_err(|e| format!("{}: {e}", o.image.display()))?;
    let mut fs = Fs::new(eng, o.read_only).map_err(|e| format!("{}: {e}", o.image.display()))?;
    fs.set_atime_policy(o.atime);
    fs.set_kernel_checks_permissions(o.default_permissions);
    fs.set_kernel_stamps_times(o.writeback_cache);
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
    let mut spec = crate::kmount::Spec {
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
        crate::kmount::open_dev_fuse()
            .and_then(|conn| crate::kmount::mount(&spec, &conn).map(|()| conn))
    } else {
        // Another user mounts through fusermount3 (plain fuse, nosuid, nodev).
        crate::kmount::mount_fusermount(&spec)
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
    let want = crate::devfuse::Want {
        max_write: budget.sizing.max_write,
        writeback: o.writeback_cache,
        uring,
        posix_acl: o.default_permissions,
        idmap: o.idmap,
    };
    let granted = match crate::devfuse::handshake(&conn, &want) {
        Ok(g) => g,
        Err(e) => {
            let _ = crate::kmount::umount(&point);
            return Err(unmount_fs(format!("FUSE INIT: {e}")));
        }
    };
    fs.set_kernel_checks_permissions(o.default_permissions || granted.posix_acl);

    let signal_point = point.clone();
    std::thread::Builder::new()
        .name("tkfs-signals".into())
        .spawn(move || {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` holds the blocked termination signals; sigwait writes one into sig.
            unsafe { libc::sigwait(&set, &mut sig) };
            if let Err(e) = crate::kmount::umount(&signal_point) {
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
    crate::file::set_scratch_keep_max(budget.sizing.max_write as usize);
    let ops = Ops::new(fs.clone(), budget.sizing.max_write).with_setxattr_ext(granted.setxattr_ext);
    let ops = Arc::new(if o.btime { ops } else { ops.without_btime() });
    let finish = Arc::new(Finish {
        fs: fs.clone(),
        source: source.clone(),
        readahead: parking_lot::Mutex::new(Vec::new()),
        lock: parking_lot::Mutex::new(lock),
        claim: parking_lot::Mutex::new(claim),
        done: std::sync::OnceLock::new(),
    });
    {
        let finish = finish.clone();
        ops.on_destroy(Box::new(move || finish.run()));
    }
    // A flag change moves the change time where the kernel does not look (its fileattr calls
    // keep the cached attributes): told through a descriptor of the connection.
    match conn.try_clone() {
        Ok(dev) => ops.on_attr_change(Box::new(move |node| {
            if let Err(e) = crate::devfuse::notify_attr_changed(&dev, node) {
                eprintln!("ticketfs: telling the kernel node {node} changed: {e}");
            }
        })),
        Err(e) => eprintln!("ticketfs: no descriptor to tell the kernel of flag changes: {e}"),
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
        crate::file::readahead::READAHEAD_WORKERS
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
        let how = Serving {
            per_queue: per_queue.unwrap_or(1),
            max_write: budget.sizing.max_write as usize,
            idle: o.uring_idle,
        };
        match Queues::start(&conn, ops.clone(), how) {
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
    let served = crate::devfuse::DevFuse::start(
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
    let Ok(mut table) = std::fs::File::open(crate::mountinfo::PATH) else {
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
