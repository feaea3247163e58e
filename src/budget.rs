//! The daemon's memory budget and sizing (threads, request buffers, read-ahead), derived from
//! the environment at mount: the daemon's policy, above the engine and the file layer it sizes.
//!
//! The process's memory is a fixed base plus what grows with load. The base is measured or
//! computed from the sizing: the resident size at start (binary, libraries, the allocator), each
//! FUSE thread's request buffer (the kernel fills at most max_write plus a header of it) and
//! stack, each thread's data scratch buffer (one read or write in flight per thread), and slack
//! for the allocator. Everything that grows with load — metadata buffers, the CIL's copies, open
//! handles — is charged to the budget, which is the cgroup's limit less the base, capped by
//! `-o mem=SIZE`. Without a limit the budget is `-o mem=` or `MEM_BUDGET_DEFAULT_BYTES`.

use crate::file::readahead::{ReadAhead, READAHEAD_WORKERS};
use crate::mem::cgroup::CgroupMemory;
pub(crate) use crate::mem::MEM_BUDGET_DEFAULT_BYTES;
use std::fmt::Write as _;

/// Below this limit the daemon runs the small sizing (fewer threads, smaller writes).
pub(crate) const SMALL_LIMIT_BYTES: u64 = 64 << 20;
/// Largest FUSE write with no limit or a large one (the kernel's ceiling is 1 MiB by default).
pub(crate) const MAX_WRITE_LARGE: u32 = 1 << 20;
/// Largest FUSE write under a small limit: 128 KiB keeps the per-thread buffers small.
pub(crate) const MAX_WRITE_SMALL: u32 = 128 << 10;
/// FUSE threads with no limit or a large one, and under a small limit.
pub(crate) const FUSE_THREADS_LARGE: usize = 4;
/// Under a small limit two: each thread's buffers and stack (about 390 KiB at 128 KiB writes) are
/// base, and with four the budget under an 8 MiB limit came within 70 KiB of the reservations'
/// minimum, which the resident size at start (2.71-2.84 MiB between mounts) crossed one mount
/// in five.
pub(crate) const FUSE_THREADS_SMALL: usize = 2;
/// A request's header and arguments beside its data.
pub(crate) const REQUEST_HEADER_BYTES: u64 = 4096;
/// Resident stack of a serving thread (measured well under this: the deepest path is a B+tree
/// split inside a rename).
pub(crate) const THREAD_STACK_RESIDENT_BYTES: u64 = 128 << 10;
/// Threads beside the FUSE ones: the checkpoint writer, the AIL pusher, signals, statistics
/// (and the read-ahead workers where there is read-ahead: `Sizing::readahead`).
pub(crate) const HELPER_THREADS: u64 = 4;
/// Allocator bookkeeping and fragmentation (measured: about 0.8 MiB of glibc arenas beside the
/// cache under the 64-writer test at mem=8M).
pub(crate) const ALLOCATOR_SLACK_BYTES: u64 = 1 << 20;
/// Of what a cgroup limit leaves beyond the base, this fraction (1/N) is kept back from the
/// budget for costs that grow with what is charged but are not charged themselves: each cached
/// buffer's bookkeeping, the CIL's structures, the allocator's fragmentation at that size.
/// Measured: under a 32 MiB v1 limit with the whole remainder as budget, stress-ng drove the
/// charged bytes to the budget and the cgroup past its limit (one OOM kill); at 8 MiB the
/// charged bytes stayed below the budget and it held.
pub(crate) const CGROUP_HEADROOM_DIVISOR: u64 = 8;

/// Threads and request size, chosen from the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sizing {
    pub(crate) fuse_threads: usize,
    pub(crate) max_write: u32,
    /// The daemon reads ahead of sequential reads (`file::readahead`): asked for (the io_uring
    /// queues serve), and not under a small limit, where its buffers would take what the
    /// reservations need (under 8 MiB the budget would fall below their minimum).
    pub(crate) readahead: bool,
}

impl Sizing {
    pub(crate) fn for_limit(limit: Option<u64>) -> Sizing {
        match limit {
            Some(l) if l < SMALL_LIMIT_BYTES => Sizing {
                fuse_threads: FUSE_THREADS_SMALL,
                max_write: MAX_WRITE_SMALL,
                readahead: false,
            },
            _ => Sizing {
                fuse_threads: FUSE_THREADS_LARGE,
                max_write: MAX_WRITE_LARGE,
                readahead: true,
            },
        }
    }

    /// The base that grows with the sizing, not with load.
    pub(crate) fn threads_bytes(&self) -> u64 {
        let t = self.fuse_threads as u64;
        t * (self.max_write as u64 + REQUEST_HEADER_BYTES)
            + t * self.max_write as u64
            + (t + HELPER_THREADS) * THREAD_STACK_RESIDENT_BYTES
            + self.readahead_bytes()
    }

    /// Read-ahead's buffers and its workers' stacks (0 without read-ahead).
    pub(crate) fn readahead_bytes(&self) -> u64 {
        if self.readahead {
            ReadAhead::buffer_bytes(self.max_write as usize)
                + READAHEAD_WORKERS as u64 * THREAD_STACK_RESIDENT_BYTES
        } else {
            0
        }
    }
}

/// The budget and how it was derived.
#[derive(Debug, Clone)]
pub struct Budget {
    pub(crate) budget_bytes: u64,
    pub(crate) base_bytes: u64,
    pub(crate) sizing: Sizing,
    /// One line: where the figure comes from.
    pub derivation: String,
}

/// Dirty pages of the image's page cache (file data written with `hostcache=on`) are charged to
/// the daemon's cgroup beside its budget: at most 1/HOST_DIRTY_DIVISOR of the budget of them,
/// within the cgroup's headroom (1/CGROUP_HEADROOM_DIVISOR of it), so reclaim always finds the
/// rest clean or quickly cleaned.
pub(crate) const HOST_DIRTY_DIVISOR: u64 = 16;
/// Fewest dirty bytes allowed: one cached write (`CACHED_IO_MAX_BYTES`) and then some.
pub(crate) const HOST_DIRTY_MIN_BYTES: u64 = 128 << 10;
/// Most dirty bytes allowed whatever the budget: more would only lengthen the fsync that meets
/// them (it writes them all back).
pub(crate) const HOST_DIRTY_MAX_BYTES: u64 = 8 << 20;

impl Budget {
    /// Most bytes of dirty pages the image's page cache may hold at once.
    pub(crate) fn host_dirty_max(&self) -> u64 {
        (self.budget_bytes / HOST_DIRTY_DIVISOR).clamp(HOST_DIRTY_MIN_BYTES, HOST_DIRTY_MAX_BYTES)
    }
}

/// Most FUSE threads `-o max_threads=` may ask for.
pub(crate) const FUSE_THREADS_MAX: usize = 256;

/// Derives the budget from the cgroup (if any), the resident size measured at start, the bytes
/// of private pools allocated at mount, `-o mem=` and `-o max_threads=`; `readahead`: the
/// daemon would read ahead if the sizing allows (`Sizing::readahead`).
pub fn derive(
    cgroup: Option<CgroupMemory>,
    start_rss_bytes: u64,
    pools_bytes: u64,
    mem_option: Option<u64>,
    threads_option: Option<usize>,
    readahead: bool,
) -> Result<Budget, String> {
    let limit = cgroup.as_ref().and_then(|c| c.limit_bytes);
    // A small budget asked for with mem= sizes the daemon as a small limit would.
    let sizing = Sizing::for_limit(match (limit, mem_option) {
        (Some(l), Some(m)) => Some(l.min(m)),
        (l, m) => l.or(m),
    });
    let sizing = Sizing {
        fuse_threads: threads_option
            .unwrap_or(sizing.fuse_threads)
            .clamp(1, FUSE_THREADS_MAX),
        readahead: sizing.readahead && readahead,
        ..sizing
    };
    let base = start_rss_bytes + sizing.threads_bytes() + pools_bytes + ALLOCATOR_SLACK_BYTES;
    let mut d = String::new();
    let budget = match (limit, &cgroup) {
        (Some(l), Some(cg)) => {
            let from_limit = l
                .checked_sub(base)
                .map(|b| b - b / CGROUP_HEADROOM_DIVISOR)
                .filter(|&b| b > 0)
                .ok_or_else(|| {
                    format!(
                        "cgroup {} memory limit {} is below the daemon's fixed base {} ({})",
                        cg.version,
                        mib(l),
                        mib(base),
                        base_parts(start_rss_bytes, &sizing, pools_bytes)
                    )
                })?;
            let _ = write!(
                d,
                "cgroup {} limit {} at {} less base {} ({}) less 1/{CGROUP_HEADROOM_DIVISOR} headroom",
                cg.version,
                mib(l),
                cg.limit_dir
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                mib(base),
                base_parts(start_rss_bytes, &sizing, pools_bytes)
            );
            match mem_option {
                Some(m) if m < from_limit => {
                    let _ = write!(d, " = {}, capped by mem={}", mib(from_limit), mib(m));
                    m
                }
                _ => from_limit,
            }
        }
        _ => match mem_option {
            Some(m) => {
                let _ = write!(d, "mem={} (no cgroup memory limit)", mib(m));
                m
            }
            None => {
                let _ = write!(
                    d,
                    "default {} (no cgroup memory limit, no mem=)",
                    mib(MEM_BUDGET_DEFAULT_BYTES)
                );
                MEM_BUDGET_DEFAULT_BYTES
            }
        },
    };
    Ok(Budget {
        budget_bytes: budget,
        base_bytes: base,
        sizing,
        derivation: d,
    })
}

fn base_parts(rss: u64, s: &Sizing, pools: u64) -> String {
    format!(
        "resident at start {}, {} FUSE threads x {} KiB writes{} {}, pools {}, slack {}",
        mib(rss),
        s.fuse_threads,
        s.max_write >> 10,
        if s.readahead { " and read-ahead" } else { "" },
        mib(s.threads_bytes()),
        mib(pools),
        mib(ALLOCATOR_SLACK_BYTES)
    )
}

/// Bytes as MiB with two decimals.
pub(crate) fn mib(b: u64) -> String {
    format!("{:.2} MiB", b as f64 / (1u64 << 20) as f64)
}

/// The resident set size of this process, from /proc/self/status (0 if unreadable).
pub fn resident_bytes() -> u64 {
    status_kib("VmRSS:") * 1024
}

/// The peak resident set size of this process.
pub(crate) fn peak_resident_bytes() -> u64 {
    status_kib("VmHWM:") * 1024
}

fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::cgroup::CgroupVersion;
    use std::path::PathBuf;

    fn cg(limit: Option<u64>) -> Option<CgroupMemory> {
        Some(CgroupMemory {
            version: CgroupVersion::V1,
            dir: PathBuf::from("/sys/fs/cgroup/memory/t"),
            limit_bytes: limit,
            limit_dir: limit.map(|_| PathBuf::from("/sys/fs/cgroup/memory/t")),
        })
    }

    #[test]
    fn limit_less_base_capped_by_option() {
        let b = derive(cg(Some(8 << 20)), 3 << 20, 0, None, None, true).unwrap();
        assert_eq!(b.sizing, Sizing::for_limit(Some(8 << 20)));
        let left = (8 << 20) - b.base_bytes;
        assert_eq!(b.budget_bytes, left - left / CGROUP_HEADROOM_DIVISOR);
        assert_eq!(
            b.base_bytes,
            (3 << 20) + b.sizing.threads_bytes() + ALLOCATOR_SLACK_BYTES
        );
        let capped = derive(cg(Some(8 << 20)), 3 << 20, 0, Some(1 << 20), None, true).unwrap();
        assert_eq!(capped.budget_bytes, 1 << 20);
        assert!(capped.derivation.contains("capped by mem="));
    }

    #[test]
    fn no_limit_uses_option_or_default() {
        assert_eq!(
            derive(cg(None), 1 << 20, 0, None, None, true)
                .unwrap()
                .budget_bytes,
            MEM_BUDGET_DEFAULT_BYTES
        );
        assert_eq!(
            derive(None, 1 << 20, 0, Some(5 << 20), None, true)
                .unwrap()
                .budget_bytes,
            5 << 20
        );
        assert_eq!(
            derive(None, 1 << 20, 0, None, None, true)
                .unwrap()
                .sizing
                .max_write,
            MAX_WRITE_LARGE
        );
    }

    #[test]
    fn readahead_is_sized_in_only_when_asked_for_and_not_under_a_small_limit() {
        let small = derive(cg(Some(8 << 20)), 3 << 20, 0, None, None, true).unwrap();
        assert!(!small.sizing.readahead);
        let large = derive(cg(Some(1 << 30)), 3 << 20, 0, None, None, true).unwrap();
        let without = derive(cg(Some(1 << 30)), 3 << 20, 0, None, None, false).unwrap();
        assert!(large.sizing.readahead && !without.sizing.readahead);
        // Four pieces of 1 MiB and two workers' stacks.
        assert_eq!(
            large.base_bytes - without.base_bytes,
            (4 << 20) + 2 * THREAD_STACK_RESIDENT_BYTES
        );
    }

    #[test]
    fn limit_below_base_is_an_error() {
        let e = derive(cg(Some(2 << 20)), 3 << 20, 0, None, None, true).unwrap_err();
        assert!(e.contains("below the daemon's fixed base"), "{e}");
    }
}
