//! The queue threads' scheduling policy: SCHED_IDLE while the machine has CPUs to spare,
//! SCHED_OTHER when it has not.
//!
//! Why: a queue thread answers a request by waking the caller, and the scheduler puts a woken
//! task on an idle CPU rather than on the busy one it last ran on. While the queue thread runs,
//! its CPU is busy, so the caller moves to the other CPU, and waking a halted CPU is the
//! expensive part of a FUSE round trip on a VM (56-89 us here against 10-14 us on one CPU;
//! docs/performance.md). A CPU whose only runnable task is SCHED_IDLE counts as idle, so with
//! the queue thread SCHED_IDLE the caller stays on its CPU and preempts the thread, which is
//! done anyway. By hand on this VM (`fsbench meta`, `tree`, `mix`): 12.7-19k creates/s against
//! 6.0k, a 2,000-file tree made in 0.26-0.30 s against 0.59-0.72, 4.2-4.4k mix rounds/s against
//! 2.6-2.8k.
//!
//! The cost: a SCHED_IDLE thread gets little CPU beside busy ordinary tasks. So when more tasks
//! are runnable than there are CPUs (`/proc/loadavg`'s running count, read at most every
//! [`CHECK_EVERY`]) in most of the recent looks ([`OVER_SHARE`]), the thread serves as an
//! ordinary one for [`HOLD_NORMAL`] and looks again. Most, not one: the count includes the
//! looking thread, and the daemon's own checkpoint writer, AIL pusher and other serving threads
//! run in short bursts (with "more than CPUs in three looks in a row", a lone create loop made
//! its threads leave SCHED_IDLE 83 times in 10 s, and creates ran at 9.0-11.5k/s instead of
//! 12.6k), while tasks that would starve the thread are there look after look. A thread that could not return to SCHED_OTHER by itself (no CAP_SYS_NICE
//! and a low RLIMIT_NICE) never enters SCHED_IDLE.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// How often a busy queue thread looks at the machine's load.
pub(crate) const CHECK_EVERY: Duration = Duration::from_millis(1);
/// How long a queue thread stays ordinary once it found the CPUs oversubscribed.
pub(crate) const HOLD_NORMAL: Duration = Duration::from_millis(100);
/// Weight of the latest look in the running share of looks that saw more runnable tasks than
/// CPUs (an exponential average over about the last 1/OVER_WEIGHT looks).
pub(crate) const OVER_WEIGHT: f64 = 0.1;
/// The share of recent looks above which the CPUs count as oversubscribed (about 12 looks in a
/// row from none), and below which a thread that served ordinary for [`HOLD_NORMAL`] goes back.
pub(crate) const OVER_SHARE: f64 = 0.7;
pub(crate) const BACK_SHARE: f64 = 0.3;

pub(crate) struct Policy {
    loadavg: Option<File>,
    cpus: usize,
    idle: bool,
    /// Running share of recent looks that saw more runnable tasks than CPUs.
    over: f64,
    next_check: Instant,
    normal_until: Instant,
}

fn set(policy: libc::c_int) -> bool {
    // SAFETY: a zeroed sched_param (priority 0) is what SCHED_IDLE and SCHED_OTHER take; pid 0
    // is the calling thread.
    unsafe {
        let p: libc::sched_param = std::mem::zeroed();
        libc::sched_setscheduler(0, policy, &p) == 0
    }
}

/// Whether this thread could go back from SCHED_IDLE to SCHED_OTHER at nice 0 on its own.
fn may_leave_idle() -> bool {
    // SAFETY: geteuid has no preconditions; getrlimit writes into `r`.
    unsafe {
        if libc::geteuid() == 0 {
            return true;
        }
        let mut r: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NICE, &mut r) == 0 && r.rlim_cur >= 20
    }
}

impl Policy {
    /// For the calling queue thread; `enabled` false keeps it ordinary.
    pub(crate) fn new(enabled: bool) -> Policy {
        // SAFETY: sysconf has no preconditions.
        let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
        let loadavg = if enabled && may_leave_idle() {
            File::open("/proc/loadavg").ok()
        } else {
            None
        };
        let now = Instant::now();
        let mut p = Policy {
            loadavg,
            cpus,
            idle: false,
            over: 0.0,
            next_check: now,
            normal_until: now,
        };
        p.check(now);
        p
    }

    /// Runnable tasks now, from `/proc/loadavg` ("0.83 1.35 2.99 1/79 2843").
    fn running(&self) -> Option<usize> {
        let f = self.loadavg.as_ref()?;
        let mut b = [0u8; 128];
        let n = f.read_at(&mut b, 0).ok()?;
        let s = std::str::from_utf8(&b[..n]).ok()?;
        s.split_whitespace().nth(3)?.split('/').next()?.parse().ok()
    }

    fn check(&mut self, now: Instant) {
        self.next_check = now + CHECK_EVERY;
        let Some(running) = self.running() else {
            if self.idle && set(libc::SCHED_OTHER) {
                self.idle = false;
            }
            return;
        };
        let seen = if running > self.cpus { 1.0 } else { 0.0 };
        self.over += OVER_WEIGHT * (seen - self.over);
        if self.over > OVER_SHARE {
            self.normal_until = now + HOLD_NORMAL;
            if self.idle && set(libc::SCHED_OTHER) {
                self.idle = false;
                super::LEFT_IDLE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        } else if !self.idle
            && now >= self.normal_until
            && self.over < BACK_SHARE
            && set(libc::SCHED_IDLE)
        {
            self.idle = true;
        }
    }

    /// Called before each answer: looks at the load when it is time to.
    pub(crate) fn tick(&mut self) {
        if self.loadavg.is_none() {
            return;
        }
        let now = Instant::now();
        if now >= self.next_check {
            self.check(now);
        }
    }
}
