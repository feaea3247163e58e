//! Sampling every `SAMPLE_INTERVAL` while a run goes on: the cgroup's usage, peak and OOM kills,
//! and the daemon's own account (`ticketfs stats`, JSON) — budget, reserved, pinned, clean cache,
//! waiters, overruns and completed operations (transactions of every kind). No completed
//! operation for `HANG_AFTER` while a workload runs is a hang: every thread's stack of the
//! daemon is dumped (gdb, else the kernel stacks in /proc) into the run's directory.

use crate::cgroup::Cgroup;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);
pub const HANG_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub t: f64,
    pub usage: u64,
    pub peak: u64,
    /// Usage less page cache: the daemon's anonymous and kernel memory, which the kernel
    /// cannot reclaim (the part that decides an OOM kill).
    pub no_cache: u64,
    pub oom_kills: u64,
    pub budget: u64,
    pub base: u64,
    pub reserved: u64,
    pub pinned: u64,
    pub clean_cache: u64,
    pub waiters: u64,
    pub overruns: u64,
    pub ops: u64,
    /// Reservation waits so far (transactions that queued at the gate).
    pub waits: u64,
    /// The daemon answered (false while it is down in a crash round).
    pub up: bool,
}

pub const CSV_HEADER: &str = "seconds,cgroup_usage_bytes,cgroup_peak_bytes,cgroup_usage_without_page_cache_bytes,oom_kills,budget_bytes,base_bytes,reserved_bytes,pinned_bytes,clean_cache_bytes,waiters,overruns,ops_completed,reservation_waits,daemon_up";

impl Sample {
    pub fn csv(&self) -> String {
        format!(
            "{:.1},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            self.t,
            self.usage,
            self.peak,
            self.no_cache,
            self.oom_kills,
            self.budget,
            self.base,
            self.reserved,
            self.pinned,
            self.clean_cache,
            self.waiters,
            self.overruns,
            self.ops,
            self.waits,
            u8::from(self.up)
        )
    }
}

/// Shared between the run and the sampling thread.
pub struct Shared {
    pub samples: Mutex<Vec<Sample>>,
    pub stop: AtomicBool,
    /// A workload is running (hangs are judged only then).
    pub busy: AtomicBool,
    pub hang: AtomicBool,
    /// The daemon's pid, for the stack dump (0 while it is down).
    pub pid: AtomicU32,
    /// Operations completed and reservation waits by earlier daemons of this run (each restart
    /// counts from zero).
    pub ops_before: Mutex<(u64, u64)>,
}

fn field(v: &serde_json::Value, k: &str) -> u64 {
    v.get(k).and_then(|x| x.as_u64()).unwrap_or(0)
}

/// Starts the sampling thread.
pub fn start(
    cg: Arc<Cgroup>,
    image: PathBuf,
    out: PathBuf,
    shared: Arc<Shared>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let mut last_ops = 0u64;
        let mut last_progress = Instant::now();
        let mut last_daemon_ops = 0u64;
        let mut last_daemon_waits = 0u64;
        while !shared.stop.load(Ordering::Relaxed) {
            let usage = cg.usage();
            let mut s = Sample {
                t: t0.elapsed().as_secs_f64(),
                usage,
                no_cache: usage.saturating_sub(cg.page_cache()),
                peak: cg.peak(),
                oom_kills: cg.oom_kills(),
                ..Default::default()
            };
            let before = *shared.ops_before.lock().unwrap_or_else(|e| e.into_inner());
            if let Ok(text) = ticketfs::stats::query(&image, "json") {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    s.up = true;
                    s.budget = field(&v, "budget_bytes");
                    s.base = field(&v, "base_bytes");
                    s.reserved = field(&v, "reserved_bytes");
                    s.pinned = field(&v, "pinned_log_bytes") + field(&v, "pinned_trans_bytes");
                    s.clean_cache = field(&v, "clean_cache_bytes");
                    s.waiters = field(&v, "waiters");
                    s.overruns = field(&v, "overruns");
                    let kinds = v.get("kinds").and_then(|k| k.as_array());
                    let sum =
                        |f: &str| kinds.map_or(0, |a| a.iter().map(|k| field(k, f)).sum::<u64>());
                    last_daemon_ops = sum("count");
                    last_daemon_waits = sum("waits");
                }
            }
            s.ops = before.0 + if s.up { last_daemon_ops } else { 0 };
            s.waits = before.1 + if s.up { last_daemon_waits } else { 0 };
            if s.ops != last_ops || !shared.busy.load(Ordering::Relaxed) {
                last_ops = s.ops;
                last_progress = Instant::now();
            } else if last_progress.elapsed() > HANG_AFTER && !shared.hang.load(Ordering::Relaxed) {
                shared.hang.store(true, Ordering::Relaxed);
                dump_stacks(shared.pid.load(Ordering::Relaxed), &out);
            }
            shared
                .samples
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(s);
            std::thread::sleep(SAMPLE_INTERVAL);
        }
    })
}

/// Every thread's stack of `pid`, into OUT/hang-stacks.txt.
fn dump_stacks(pid: u32, out: &Path) {
    if pid == 0 {
        return;
    }
    let file = out.join("hang-stacks.txt");
    let gdb = std::process::Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt",
        ])
        .output();
    let mut text = match gdb {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => format!("gdb: {e}\n"),
    };
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let stack = std::fs::read_to_string(t.path().join("stack")).unwrap_or_default();
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            text.push_str(&format!(
                "\n--- task {} {}{stack}",
                t.file_name().to_string_lossy(),
                comm
            ));
        }
    }
    let _ = std::fs::write(&file, text);
    eprintln!(
        "ticketfs-stress: no operation completed for {} s: stacks in {}",
        HANG_AFTER.as_secs(),
        file.display()
    );
}

/// Stops the sampling thread when the run ends, however it ends.
pub struct Stopper {
    handle: Option<std::thread::JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Stopper {
    pub fn new(handle: std::thread::JoinHandle<()>, shared: Arc<Shared>) -> Stopper {
        Stopper {
            handle: Some(handle),
            shared,
        }
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Stopper {
    fn drop(&mut self) {
        self.halt();
    }
}
