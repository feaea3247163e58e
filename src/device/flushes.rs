//! A device wrapper that numbers its flushes, so fsync can tell whether a flush that began after
//! it was called has completed since: then every write that completed before the call is
//! durable already, and concurrent fsyncs (and the log's checkpoint flush) share one flush.

use super::{DevError, Device, Stacked};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub(crate) struct FlushTracked {
    inner: Arc<dyn Device>,
    /// Flushes begun so far; flush number n is the n-th to begin.
    started: AtomicU64,
    /// The highest number of a flush that has completed.
    completed: AtomicU64,
}

impl FlushTracked {
    pub(crate) fn new(inner: Arc<dyn Device>) -> FlushTracked {
        FlushTracked {
            inner,
            started: AtomicU64::new(0),
            completed: AtomicU64::new(0),
        }
    }

    /// A ticket for "now": pass it to `flush_since` after the work that must be durable.
    pub(crate) fn ticket(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }

    /// Makes every write that completed before `ticket` was taken durable: a flush of its own,
    /// unless one that began after the ticket has completed meanwhile.
    pub(crate) fn flush_since(&self, ticket: u64) -> Result<(), DevError> {
        if self.completed.load(Ordering::SeqCst) > ticket {
            return Ok(());
        }
        self.flush()
    }
}

impl Stacked for FlushTracked {
    fn below(&self) -> &dyn Device {
        &*self.inner
    }
    fn write_blocks(&self, blkno: u64, buf: &[u8], data: bool) -> Result<(), DevError> {
        if data {
            self.inner.write_data(blkno, buf)
        } else {
            self.inner.write(blkno, buf)
        }
    }
    fn flush_blocks(&self) -> Result<(), DevError> {
        let n = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        self.inner.flush()?;
        self.completed.fetch_max(n, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MemDevice;

    #[test]
    fn a_flush_begun_after_the_ticket_covers_it_and_an_earlier_one_does_not() {
        let d = FlushTracked::new(Arc::new(MemDevice::new(512, 8)));
        let t0 = d.ticket();
        d.flush().unwrap();
        assert_eq!(d.ticket(), 1);
        // Flush 1 began after t0: t0 is covered without another flush.
        d.flush_since(t0).unwrap();
        assert_eq!(d.ticket(), 1);
        // A ticket taken now is not covered by flush 1: it takes a flush of its own.
        let t1 = d.ticket();
        d.flush_since(t1).unwrap();
        assert_eq!(d.ticket(), 2);
    }
}
