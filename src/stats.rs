//! Live statistics of a mounted ticketfs: `ticketfs stats MOUNTPOINT [--json]`.
//!
//! The daemon listens on a Unix socket in its runtime directory (`rundir`: `/run/ticketfs` for
//! root), named after the image's identity. The client finds the image from the mount table,
//! connects, checks that the other end is root's (or its own user's), sends one line — `json`
//! or `text` — and reads the report to the end. Only the daemon's user (root) can reach it: the
//! directory is closed to everyone else (docs/security.md).

use crate::budget::{mib, peak_resident_bytes, resident_bytes, Budget};
use crate::engine::EngineStats;
use crate::file::readahead::ReadAheadStats;
use crate::mem::PAGE_BYTES;
use crate::mountinfo;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A client's request line is at most this long.
const REQUEST_MAX_BYTES: u64 = 16;
/// A slow client is dropped after this long.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// One transaction kind's line of the calibration table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KindReport {
    pub kind: String,
    pub count: u64,
    pub reserved_pages: u64,
    pub peak_used_pages: u64,
    pub(crate) mean_used_pages: f64,
    /// peak used / reserved: how tight the table entry is (1.0 = exactly enough).
    pub(crate) tightness: f64,
    pub(crate) log_reserved_bytes: u64,
    pub(crate) log_peak_used_bytes: u64,
    pub overruns: u64,
    pub waits: u64,
    pub(crate) wait_ms_total: f64,
}

/// The whole report; `ticketfs stats --json` prints it as JSON.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub(crate) image: String,
    pub(crate) memres: bool,
    pub budget_bytes: u64,
    pub(crate) budget_derivation: String,
    pub(crate) base_bytes: u64,
    pub fuse_threads: usize,
    pub max_write: u32,
    /// Held by live tickets.
    pub reserved_bytes: u64,
    /// Pinned by the log: dirty buffers and the CIL's copies.
    pub pinned_log_bytes: u64,
    /// Pinned by live transactions (what their tickets have used of their reservations).
    pub(crate) pinned_trans_bytes: u64,
    pub free_bytes: u64,
    pub emergency_bytes: u64,
    pub emergency_used_bytes: u64,
    pub peak_charged_bytes: u64,
    pub(crate) roll_borrows: u64,
    pub cache_buffers: u64,
    pub(crate) cache_bytes: u64,
    pub(crate) clean_cache_bytes: u64,
    pub(crate) cache_limit_bytes: u64,
    pub(crate) outside_cache_bytes: u64,
    pub(crate) cache_evictions: u64,
    pub waiters: usize,
    pub overruns: u64,
    pub overrun_sites: Vec<String>,
    pub checkpoints: u64,
    pub log_wraps: u32,
    pub(crate) log_bytes_written: u64,
    pub home_writes: u64,
    pub(crate) forces: u64,
    /// Of `forces`, those an allocation made because the blocks it wanted were busy.
    pub(crate) busy_forces: u64,
    /// The allocator lock: steps that took it, steps that waited for it, milliseconds waited.
    pub(crate) alloc_lock_taken: u64,
    pub(crate) alloc_lock_waits: u64,
    pub(crate) alloc_lock_wait_ms: f64,
    pub(crate) resident_bytes: u64,
    pub(crate) peak_resident_bytes: u64,
    /// FUSE over io_uring: serving threads (0: requests go through /dev/fuse), queues,
    /// requests answered, times a thread left SCHED_IDLE for oversubscribed CPUs.
    #[serde(default)]
    pub(crate) uring_threads: usize,
    #[serde(default)]
    pub(crate) uring_queues: usize,
    #[serde(default)]
    pub(crate) uring_requests: u64,
    #[serde(default)]
    pub(crate) uring_left_idle: u64,
    /// Read-ahead (`file::readahead`): pieces read ahead, requests answered from them, pieces
    /// dropped as stale (a write or map change after their read began), pieces wasted.
    #[serde(default)]
    pub(crate) readahead_read: u64,
    #[serde(default)]
    pub(crate) readahead_hits: u64,
    #[serde(default)]
    pub(crate) readahead_stale: u64,
    #[serde(default)]
    pub(crate) readahead_wasted: u64,
    pub kinds: Vec<KindReport>,
}

impl Report {
    /// The report from the engine's counters, the budget's derivation and the overrun reports.
    pub fn new(
        image: &Path,
        st: &EngineStats,
        budget: &Budget,
        pinned_trans_bytes: u64,
        readahead: ReadAheadStats,
        overrun_sites: Vec<String>,
    ) -> Report {
        let m = &st.mem;
        let buf = st.cache.bytes.checked_div(st.cache.buffers).unwrap_or(0);
        let ring = crate::ring::stats();
        Report {
            image: image.display().to_string(),
            memres: m.enabled,
            budget_bytes: m.budget_bytes,
            budget_derivation: budget.derivation.clone(),
            base_bytes: budget.base_bytes,
            fuse_threads: budget.sizing.fuse_threads,
            max_write: budget.sizing.max_write,
            reserved_bytes: m.reserved_bytes,
            pinned_log_bytes: m.log_pinned_bytes,
            pinned_trans_bytes,
            free_bytes: m.free_bytes(),
            emergency_bytes: m.emergency_bytes,
            emergency_used_bytes: m.emergency_used_bytes,
            peak_charged_bytes: m.peak_charged_bytes,
            roll_borrows: m.roll_borrows,
            cache_buffers: st.cache.buffers,
            cache_bytes: st.cache.bytes,
            clean_cache_bytes: st.cache.clean_buffers * buf,
            cache_limit_bytes: st.cache.limit_bytes,
            outside_cache_bytes: st.cache.outside_bytes,
            cache_evictions: st.cache.evictions,
            waiters: st.waiters,
            overruns: st.overruns,
            overrun_sites,
            checkpoints: st.checkpoints,
            log_wraps: st.log_wraps,
            log_bytes_written: st.log_bytes_written,
            home_writes: st.home_writes,
            forces: st.forces,
            busy_forces: st.busy_forces,
            alloc_lock_taken: st.alloc_lock[0],
            alloc_lock_waits: st.alloc_lock[1],
            alloc_lock_wait_ms: st.alloc_lock[2] as f64 / 1e6,
            resident_bytes: resident_bytes(),
            peak_resident_bytes: peak_resident_bytes(),
            uring_threads: ring.threads,
            uring_queues: ring.queues,
            uring_requests: ring.requests,
            uring_left_idle: ring.left_idle,
            readahead_read: readahead.read,
            readahead_hits: readahead.hits,
            readahead_stale: readahead.stale,
            readahead_wasted: readahead.wasted,
            kinds: st
                .kinds
                .iter()
                .map(|k| KindReport {
                    kind: k.name.to_string(),
                    count: k.count,
                    reserved_pages: k.reserved_bytes.div_ceil(PAGE_BYTES),
                    peak_used_pages: k.peak_used_bytes.div_ceil(PAGE_BYTES),
                    mean_used_pages: if k.count > 0 {
                        k.total_used_bytes as f64 / k.count as f64 / PAGE_BYTES as f64
                    } else {
                        0.0
                    },
                    tightness: if k.reserved_bytes > 0 {
                        k.peak_used_bytes as f64 / k.reserved_bytes as f64
                    } else {
                        0.0
                    },
                    log_reserved_bytes: k.log_reserved_bytes,
                    log_peak_used_bytes: k.log_peak_used_bytes,
                    overruns: k.overruns,
                    waits: k.waits,
                    wait_ms_total: k.wait_ns_total as f64 / 1e6,
                })
                .collect(),
        }
    }

    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    pub(crate) fn to_text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "image            {}", self.image);
        let _ = writeln!(
            o,
            "budget           {} (memres={})",
            mib(self.budget_bytes),
            if self.memres { "on" } else { "off" }
        );
        let _ = writeln!(o, "  derived from   {}", self.budget_derivation);
        let _ = writeln!(
            o,
            "  base           {} ({} FUSE threads, max_write {} KiB)",
            mib(self.base_bytes),
            self.fuse_threads,
            self.max_write >> 10
        );
        if self.uring_threads > 0 {
            let _ = writeln!(
                o,
                "transport        io_uring: {} queues, {} serving threads, {} requests (left SCHED_IDLE {} times)",
                self.uring_queues, self.uring_threads, self.uring_requests, self.uring_left_idle
            );
        } else {
            let _ = writeln!(o, "transport        /dev/fuse");
        }
        let _ = writeln!(
            o,
            "read-ahead       {} pieces read, {} requests answered from them, {} stale, {} wasted",
            self.readahead_read, self.readahead_hits, self.readahead_stale, self.readahead_wasted
        );
        let _ = writeln!(o, "reserved         {}", mib(self.reserved_bytes));
        let _ = writeln!(o, "pinned by trans  {}", mib(self.pinned_trans_bytes));
        let _ = writeln!(o, "pinned by log    {}", mib(self.pinned_log_bytes));
        let _ = writeln!(o, "free             {}", mib(self.free_bytes));
        let _ = writeln!(
            o,
            "emergency        {} in use of {} ({} roll borrows)",
            mib(self.emergency_used_bytes),
            mib(self.emergency_bytes),
            self.roll_borrows
        );
        let _ = writeln!(o, "peak charged     {}", mib(self.peak_charged_bytes));
        let _ = writeln!(
            o,
            "cache            {} in {} buffers, {} clean, limit {}, {} outside, {} evictions",
            mib(self.cache_bytes),
            self.cache_buffers,
            mib(self.clean_cache_bytes),
            mib(self.cache_limit_bytes),
            mib(self.outside_cache_bytes),
            self.cache_evictions
        );
        let _ = writeln!(o, "waiters          {}", self.waiters);
        let _ = writeln!(o, "overruns         {}", self.overruns);
        for s in &self.overrun_sites {
            let _ = writeln!(o, "  {s}");
        }
        let _ = writeln!(
            o,
            "log              {} checkpoints, {} wraps, {} written, {} home writes, {} forces ({} for busy blocks)",
            self.checkpoints,
            self.log_wraps,
            mib(self.log_bytes_written),
            self.home_writes,
            self.forces,
            self.busy_forces
        );
        let _ = writeln!(
            o,
            "allocator lock   taken {} times, waited for {} times, {:.1} ms in all",
            self.alloc_lock_taken, self.alloc_lock_waits, self.alloc_lock_wait_ms
        );
        let _ = writeln!(
            o,
            "resident         {} (peak {})",
            mib(self.resident_bytes),
            mib(self.peak_resident_bytes)
        );
        let _ = writeln!(
            o,
            "\n{:<10} {:>9} {:>9} {:>9} {:>9} {:>6} {:>9} {:>9} {:>11}",
            "kind",
            "count",
            "resv pg",
            "peak pg",
            "mean pg",
            "tight",
            "overruns",
            "waits",
            "wait ms"
        );
        for k in &self.kinds {
            let _ = writeln!(
                o,
                "{:<10} {:>9} {:>9} {:>9} {:>9.2} {:>6.2} {:>9} {:>9} {:>11.1}",
                k.kind,
                k.count,
                k.reserved_pages,
                k.peak_used_pages,
                k.mean_used_pages,
                k.tightness,
                k.overruns,
                k.waits,
                k.wait_ms_total
            );
        }
        o
    }
}

/// Starts the statistics thread for `image`: every connection gets one report from `report`
/// (None once the filesystem is going away). The socket is a file in the runtime directory
/// (`rundir`), which only this user may enter; a connection from any other user is refused
/// all the same, and `stop` is taken only from this process. A socket file left by a daemon
/// that died is replaced (the caller holds the image's lock).
pub fn serve(
    image: &Path,
    report: impl Fn() -> Option<Report> + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let path = crate::rundir::socket_path(image)?;
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            std::fs::remove_file(&path)?;
            UnixListener::bind(&path)?
        }
        Err(e) => return Err(e),
    };
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let me = std::process::id() as i32;
    std::thread::Builder::new()
        .name("tkfs-stats".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut c) = conn else { continue };
                let Ok((pid, uid)) = crate::rundir::peer(&c) else {
                    continue;
                };
                if !crate::rundir::trusted_uid(uid) {
                    continue;
                }
                let _ = c.set_read_timeout(Some(CLIENT_TIMEOUT));
                let _ = c.set_write_timeout(Some(CLIENT_TIMEOUT));
                let mut line = String::new();
                let mut rd = BufReader::new((&c).take(REQUEST_MAX_BYTES));
                if rd.read_line(&mut line).is_err() {
                    continue;
                }
                let out = match (line.trim(), report()) {
                    ("stop", _) if pid == me => break,
                    ("stop", _) => "stop is the daemon's own\n".to_string(),
                    (_, None) => "unmounting\n".to_string(),
                    ("json", Some(r)) => r.to_json(),
                    ("text", Some(r)) => r.to_text(),
                    (other, _) => format!("unknown request {other:?}: json or text\n"),
                };
                let _ = c.write_all(out.as_bytes());
            }
            let _ = std::fs::remove_file(&path);
        })
}

/// Asks the daemon serving `image` for its report (`json` or `text`); refuses an answer from
/// a process of another user.
pub fn query(image: &Path, what: &str) -> std::io::Result<String> {
    let mut c = UnixStream::connect(crate::rundir::socket_path(image)?)?;
    let (_, uid) = crate::rundir::peer(&c)?;
    if !crate::rundir::trusted_uid(uid) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("the statistics socket is served by uid {uid}, not a ticketfs daemon of ours"),
        ));
    }
    c.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    c.write_all(format!("{what}\n").as_bytes())?;
    let mut out = String::new();
    c.read_to_string(&mut out)?;
    Ok(out)
}

/// Stops the statistics thread this process started with `serve`.
pub fn stop(image: &Path) {
    let _ = query(image, "stop");
}

/// A ticketfs mount as /proc/self/mountinfo lists it (type `fuse`, `fuse.ticketfs` or
/// `fuseblk.ticketfs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketfsMount {
    /// Where it is mounted.
    pub point: PathBuf,
    /// Its image's canonical path (a `fuseblk` mount's source is a block device: a loop
    /// device's backing file is the image).
    pub image: PathBuf,
    /// The whole filesystem is mounted (a bind mount of a subtree has another root).
    pub whole: bool,
    /// The superblock is read-only (not only this mount).
    pub super_ro: bool,
    /// This mount's options and the superblock's, as the mount table lists them (`rw,nosuid,
    /// relatime,rw,user_id=0,...`).
    pub options: String,
    /// Its device number, `major:minor`: also the name of its bdi in /sys/class/bdi (with
    /// `-fuseblk` after it for a `fuseblk` mount).
    pub dev: String,
    /// A `fuseblk` mount (its source is a block device: the image, or a loop device over it).
    pub(crate) blkdev: bool,
    /// The image's identity (None when it cannot be looked at, e.g. a deleted backing file).
    pub(crate) id: Option<crate::image::ImageId>,
}

/// The superblock of the mount with device number `dev` (`major:minor`) is read-only: Some
/// while it is mounted somewhere.
pub(crate) fn super_ro_of(dev: &str) -> Option<bool> {
    ticketfs_mounts()
        .ok()?
        .into_iter()
        .find(|m| m.dev == dev)
        .map(|m| m.super_ro)
}

/// The device number of the ticketfs mount on `point` (the newest one).
pub(crate) fn dev_of_mount(point: &Path) -> Option<String> {
    ticketfs_mounts()
        .ok()?
        .into_iter()
        .rev()
        .find(|m| m.point == point)
        .map(|m| m.dev)
}

/// The mounts of the image at `path`, found by identity: every spelling of its path, a symlink
/// or a hard link to it names the same image.
pub fn mounts_of(path: &Path) -> Vec<TicketfsMount> {
    let Ok(want) = crate::image::identity(path) else {
        return Vec::new();
    };
    ticketfs_mounts()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.id == Some(want))
        .collect()
}

/// Every ticketfs mount this process can see and this user made, most recent last.
pub fn ticketfs_mounts() -> Result<Vec<TicketfsMount>, String> {
    // SAFETY: geteuid cannot fail.
    let owner = format!("user_id={}", unsafe { libc::geteuid() });
    Ok(mountinfo::read()?
        .into_iter()
        .filter_map(|m| {
            // Only mounts this user made (root's, for root): anyone may make a FUSE mount with
            // any name as its source, and its path must not be taken for an image, nor
            // looked at (it may lead into a filesystem that never answers).
            if !m.has_super_option(&owner) {
                return None;
            }
            let image = match m.fstype.as_str() {
                "fuse" | "fuse.ticketfs" => m.source.clone(),
                // A block device: the image itself, or a loop device over the image file.
                "fuseblk.ticketfs" => std::fs::metadata(&m.source)
                    .ok()
                    .and_then(|md| {
                        crate::image::loop_backing_file(std::os::unix::fs::MetadataExt::rdev(&md))
                    })
                    .unwrap_or(m.source.clone()),
                _ => return None,
            };
            Some(TicketfsMount {
                // From the source itself: a loop device's identity is the file its driver
                // holds, whatever its path has become since.
                id: crate::image::identity(&m.source).ok(),
                image,
                whole: m.root == Path::new("/"),
                super_ro: m.has_super_option("ro"),
                options: format!("{},{}", m.options, m.super_options),
                blkdev: m.fstype.starts_with("fuseblk"),
                point: m.point,
                dev: m.dev,
            })
        })
        .collect())
}

/// The image of the ticketfs mounted at `mountpoint` (a mount's source is its image).
pub fn image_of_mount(mountpoint: &Path) -> Result<PathBuf, String> {
    let want =
        std::fs::canonicalize(mountpoint).map_err(|e| format!("{}: {e}", mountpoint.display()))?;
    ticketfs_mounts()?
        .into_iter()
        .rev()
        .find(|m| m.point == want)
        .map(|m| m.image)
        .ok_or_else(|| format!("{}: not a ticketfs mount", mountpoint.display()))
}
