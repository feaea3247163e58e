//! Memory reservations: the budget, the account of what is reserved and pinned, the FIFO gate
//! every reservation passes through, per-kind statistics and overrun reports.
//!
//! Reservations are accounting, not preallocation: reserved memory may hold clean cache until a
//! transaction really pins a buffer. Only pinned memory is charged.

mod account;
pub mod cgroup;
mod gate;
mod overrun;
mod stats;

pub use account::MemAccount;
pub use gate::{Gate, GateState, Shutdown, WaitOutcome};
pub(crate) use overrun::OverrunReporter;
pub use overrun::{OverrunPolicy, OverrunReport};
pub use stats::KindStats;
pub(crate) use stats::KindStatsTable;

/// Memory budget when none is given and no cgroup limit is found.
pub(crate) const MEM_BUDGET_DEFAULT_BYTES: u64 = 64 << 20;

/// The unit the statistics report memory in.
pub(crate) const PAGE_BYTES: u64 = 4096;

/// Memory reservations on or off (`-o memres=off`): off bypasses the accounting entirely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemRes {
    On,
    Off,
}
