//! Per-transaction-kind statistics: how tight each reservation table entry is, from evidence.

use parking_lot::Mutex;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KindStats {
    pub(crate) name: &'static str,
    pub count: u64,
    pub(crate) reserved_bytes: u64,
    pub(crate) peak_used_bytes: u64,
    pub(crate) total_used_bytes: u64,
    pub(crate) log_reserved_bytes: u64,
    pub(crate) log_peak_used_bytes: u64,
    pub overruns: u64,
    pub waits: u64,
    pub(crate) wait_ns_total: u64,
}

pub(crate) struct KindStatsTable {
    kinds: Mutex<Vec<KindStats>>,
}

impl KindStatsTable {
    pub(crate) fn new(names: &[&'static str]) -> KindStatsTable {
        KindStatsTable {
            kinds: Mutex::new(
                names
                    .iter()
                    .map(|&name| KindStats {
                        name,
                        ..Default::default()
                    })
                    .collect(),
            ),
        }
    }

    pub(crate) fn record_wait(&self, kind: usize, wait_ns: u64) {
        let mut k = self.kinds.lock();
        k[kind].waits += 1;
        k[kind].wait_ns_total += wait_ns;
    }

    /// A transaction (or one step of a rolling one) of `kind` ended.
    pub(crate) fn record_end(&self, kind: usize, mem: (u64, u64), log: (u64, u64), overrun: bool) {
        let mut k = self.kinds.lock();
        let s = &mut k[kind];
        s.count += 1;
        s.reserved_bytes = mem.0;
        s.peak_used_bytes = s.peak_used_bytes.max(mem.1);
        s.total_used_bytes += mem.1;
        s.log_reserved_bytes = log.0;
        s.log_peak_used_bytes = s.log_peak_used_bytes.max(log.1);
        s.overruns += overrun as u64;
    }

    pub(crate) fn snapshot(&self) -> Vec<KindStats> {
        self.kinds.lock().clone()
    }
}
