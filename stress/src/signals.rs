//! SIGINT, SIGTERM and SIGHUP end a run cleanly: the handler only records the signal; the run's
//! wait loops see it, stop the workload, kill the daemon, unmount and remove the cgroup (their
//! `Drop`s), and the process exits with 128 + the signal's number, as a shell would report it.

use std::sync::atomic::{AtomicI32, Ordering};

/// The signals that end a run early.
const HANDLED: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

static CAUGHT: AtomicI32 = AtomicI32::new(0);

extern "C" fn record(sig: libc::c_int) {
    // Async-signal-safe: one atomic store.
    CAUGHT.store(sig, Ordering::SeqCst);
}

/// Installs the handler for every signal in `HANDLED`.
pub fn install() -> Result<(), String> {
    for sig in HANDLED {
        // SAFETY: `record` only stores to an atomic, which is async-signal-safe; the sigaction
        // struct is zeroed (no flags, empty mask) before the handler is set.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = record as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(format!(
                "sigaction({sig}): {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// The signal that asked the run to end, if one came.
pub fn caught() -> Option<i32> {
    match CAUGHT.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}
