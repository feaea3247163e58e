//! Overrun reports: a transaction used more than it reserved. The overrun is served (from the
//! emergency reserve), never failed, and reported with the call site that pinned past the end.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::panic::Location;
use std::time::{Duration, Instant};

/// What to do on an overrun (`-o overrun=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverrunPolicy {
    /// Report once per call site, rate-limited, and carry on.
    Warn,
    /// Panic with the report: for tests, so an undersized table entry cannot go unnoticed.
    Panic,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrunReport {
    pub kind: &'static str,
    /// "memory" or "log".
    pub resource: &'static str,
    pub reserved_bytes: u64,
    pub used_bytes: u64,
    pub site: &'static Location<'static>,
    /// How many overruns this call site has had, this one included.
    pub count: u64,
}

impl std::fmt::Display for OverrunReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ticketfs: reservation overrun: transaction kind {} reserved {} {} bytes but used {} at {}:{}:{} (overrun #{} at this site)",
            self.kind,
            self.resource,
            self.reserved_bytes,
            self.used_bytes,
            self.site.file(),
            self.site.line(),
            self.site.column(),
            self.count
        )
    }
}

/// At most one printed report per this interval, across all sites.
const REPORT_INTERVAL: Duration = Duration::from_secs(5);

pub(crate) struct OverrunReporter {
    policy: OverrunPolicy,
    inner: Mutex<ReporterInner>,
}

struct ReporterInner {
    per_site: HashMap<(&'static str, u32, u32, &'static str), u64>,
    reports: Vec<OverrunReport>,
    total: u64,
    last_print: Option<Instant>,
}

impl OverrunReporter {
    pub(crate) fn new(policy: OverrunPolicy) -> OverrunReporter {
        OverrunReporter {
            policy,
            inner: Mutex::new(ReporterInner {
                per_site: HashMap::new(),
                reports: Vec::new(),
                total: 0,
                last_print: None,
            }),
        }
    }

    /// Records an overrun. The first at each call site is kept as a report and printed (unless
    /// another report was printed within [`REPORT_INTERVAL`]); later ones are counted.
    pub(crate) fn report(
        &self,
        kind: &'static str,
        resource: &'static str,
        reserved_bytes: u64,
        used_bytes: u64,
        site: &'static Location<'static>,
    ) {
        let report = {
            let mut g = self.inner.lock();
            g.total += 1;
            let n = g
                .per_site
                .entry((site.file(), site.line(), site.column(), resource))
                .or_insert(0);
            *n += 1;
            let count = *n;
            let r = OverrunReport {
                kind,
                resource,
                reserved_bytes,
                used_bytes,
                site,
                count,
            };
            if count == 1 {
                g.reports.push(r.clone());
                let quiet = g.last_print.is_some_and(|t| t.elapsed() < REPORT_INTERVAL);
                if !quiet {
                    g.last_print = Some(Instant::now());
                    eprintln!("{r}");
                }
            } else if let Some(first) = g.reports.iter_mut().find(|x| {
                (x.site.file(), x.site.line(), x.site.column())
                    == (site.file(), site.line(), site.column())
                    && x.resource == resource
            }) {
                first.count = count;
            }
            r
        };
        if self.policy == OverrunPolicy::Panic {
            panic!("{report}");
        }
    }

    /// One report per call site, with the count of overruns there.
    pub(crate) fn reports(&self) -> Vec<OverrunReport> {
        self.inner.lock().reports.clone()
    }

    pub(crate) fn total(&self) -> u64 {
        self.inner.lock().total
    }
}
