//! A FIFO, all-or-nothing admission gate over any resource state.
//!
//! A request is granted whole or not at all, and strictly in arrival order: a newcomer never
//! overtakes a waiter, so a large request is not starved by small ones (Morton's warning), and a
//! waiter holds nothing while it waits (the mempool stampede). Priority requests (a rolling
//! transaction's regrant) queue at the front, since their owner already holds locks.

use parking_lot::{Condvar, Mutex, MutexGuard};
use slab::Slab;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The state a gate protects: decides whether a need fits, and takes it.
pub trait GateState: Send {
    type Need: Copy + Send + std::fmt::Debug;
    fn fits(&self, need: &Self::Need) -> bool;
    fn take(&mut self, need: &Self::Need);
}

/// The gate was shut down (the engine hit an I/O error or is unmounting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shutdown;

/// How a grant went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitOutcome {
    pub waited: bool,
    pub(crate) wait_ns: u64,
}

/// How often a waiter calls its `on_wait` again (to push the AIL once more) while it waits.
const REPUSH_INTERVAL: Duration = Duration::from_millis(50);

struct Waiter<N> {
    need: N,
    granted: bool,
    cv: Arc<Condvar>,
}

struct Inner<S: GateState> {
    state: S,
    waiters: Slab<Waiter<S::Need>>,
    queue: VecDeque<usize>,
    shutdown: bool,
    /// Every arrival gets a ticket number; tests read the grant order from it.
    grants: u64,
}

pub struct Gate<S: GateState> {
    inner: Mutex<Inner<S>>,
}

impl<S: GateState> Gate<S> {
    pub fn new(state: S) -> Gate<S> {
        Gate {
            inner: Mutex::new(Inner {
                state,
                waiters: Slab::new(),
                queue: VecDeque::new(),
                shutdown: false,
                grants: 0,
            }),
        }
    }

    /// Takes `need`, waiting in FIFO order until it fits. While waiting, `on_wait` is called (without
    /// the gate's lock) at once and then every `REPUSH_INTERVAL`, to make room (push the AIL).
    pub fn acquire(
        &self,
        need: S::Need,
        priority: bool,
        on_wait: &dyn Fn(),
    ) -> Result<WaitOutcome, Shutdown> {
        let mut g = self.inner.lock();
        if g.shutdown {
            return Err(Shutdown);
        }
        if (g.queue.is_empty() || priority) && g.state.fits(&need) {
            g.state.take(&need);
            g.grants += 1;
            return Ok(WaitOutcome {
                waited: false,
                wait_ns: 0,
            });
        }
        let start = Instant::now();
        let cv = Arc::new(Condvar::new());
        let key = g.waiters.insert(Waiter {
            need,
            granted: false,
            cv: cv.clone(),
        });
        if priority {
            g.queue.push_front(key);
        } else {
            g.queue.push_back(key);
        }
        loop {
            MutexGuard::unlocked(&mut g, on_wait);
            Self::grant_waiters(&mut g);
            if g.waiters[key].granted {
                g.waiters.remove(key);
                return Ok(WaitOutcome {
                    waited: true,
                    wait_ns: start.elapsed().as_nanos() as u64,
                });
            }
            if g.shutdown {
                g.waiters.remove(key);
                g.queue.retain(|&k| k != key);
                return Err(Shutdown);
            }
            cv.wait_for(&mut g, REPUSH_INTERVAL);
            if g.waiters[key].granted {
                g.waiters.remove(key);
                return Ok(WaitOutcome {
                    waited: true,
                    wait_ns: start.elapsed().as_nanos() as u64,
                });
            }
        }
    }

    /// Changes the state (a release, the tail moving) and grants whoever now fits, in order.
    pub fn update<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        let mut g = self.inner.lock();
        let r = f(&mut g.state);
        Self::grant_waiters(&mut g);
        r
    }

    /// Reads the state.
    pub fn with<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(&self.inner.lock().state)
    }

    pub fn waiters(&self) -> usize {
        self.inner.lock().queue.len()
    }

    /// Refuses every current and future request.
    pub fn shut_down(&self) {
        let mut g = self.inner.lock();
        g.shutdown = true;
        for (_, w) in g.waiters.iter() {
            w.cv.notify_one();
        }
    }

    fn grant_waiters(g: &mut Inner<S>) {
        while let Some(&key) = g.queue.front() {
            let need = g.waiters[key].need;
            if !g.state.fits(&need) {
                break;
            }
            g.state.take(&need);
            g.grants += 1;
            g.queue.pop_front();
            let w = &mut g.waiters[key];
            w.granted = true;
            w.cv.notify_one();
        }
    }
}
