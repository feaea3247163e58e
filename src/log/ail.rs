//! The AIL: buffers logged in durable checkpoints, ordered by LSN, waiting to be written home.
//! Writing the oldest home moves the tail, which returns log space; each buffer written home also
//! returns its memory to the budget.

use super::{Log, LogError};
use crate::cache::BufHead;
use crate::format::BlockHeader;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Buffers the pusher takes from the AIL per pass.
const AIL_BATCH: usize = 256;

enum Push {
    Written,
    /// Logged again since: must wait for the CIL to be checkpointed.
    Pinned,
    /// A transaction holds it.
    Locked,
    /// Left the AIL meanwhile.
    Gone,
}

impl Log {
    pub(super) fn ail_main(self: Arc<Self>) {
        loop {
            let asked = {
                let mut ail = self.ail.lock();
                if ail.stop {
                    return;
                }
                if !ail.push {
                    self.ail_cv.wait_for(&mut ail, self.config.ail_interval);
                }
                if ail.stop {
                    return;
                }
                std::mem::take(&mut ail.push)
            };
            if !(asked || self.ail_pressure()) {
                continue;
            }
            if let Err(e) = self.push_pass() {
                self.fail(format!("metadata write-back failed: {e}"));
                return;
            }
        }
    }

    /// Pushes on its own when the log is more than three quarters used, so log space is there
    /// before anyone asks. Memory is not pushed for ahead of need: dirty metadata stays in memory,
    /// where later changes to the same blocks coalesce, until a transaction finds the budget full
    /// at `begin`; it then waits (holding nothing) and asks for this push — pressure becomes
    /// throttling at the start of operations.
    fn ail_pressure(&self) -> bool {
        self.space.with(|s| {
            let used = s.write_head.since(s.tail, s.size_bytes);
            used > s.usable_bytes / 4 * 3
        })
    }

    /// One pass over the oldest AIL entries.
    fn push_pass(&self) -> Result<(), LogError> {
        let batch: Vec<Arc<BufHead>> = self
            .ail
            .lock()
            .items
            .values()
            .take(AIL_BATCH)
            .cloned()
            .collect();
        let (mut wrote, mut pinned) = (0u64, false);
        for head in batch {
            match self.write_home(&head)? {
                Push::Written => wrote += 1,
                Push::Pinned => pinned = true,
                Push::Locked | Push::Gone => {}
            }
        }
        if wrote > 0 {
            self.counters
                .home_writes
                .fetch_add(wrote, Ordering::Relaxed);
        }
        // Whoever waits for log space needs the tail on disk to move: ask for a tail update even
        // when this pass wrote nothing (earlier passes may have emptied the AIL before anyone
        // waited). The writer skips it if the tail would not move.
        if self.space.waiters() > 0 {
            self.ws.lock().tail_update = true;
            self.ws_cv.notify_one();
        }
        if pinned {
            self.request_cil_push();
        }
        // Keep pushing while somebody waits for room and the pass got somewhere.
        if self.space.waiters() > 0 && (wrote > 0 || pinned) {
            self.ail.lock().push = true;
        }
        Ok(())
    }

    /// Writes one buffer home: stamps its LSN and CRC (the write verifier) and writes it. The
    /// content lock is held across the write, so no transaction changes it meanwhile.
    fn write_home(&self, head: &Arc<BufHead>) -> Result<Push, LogError> {
        let Some(mut content) = head.content.try_lock() else {
            return Ok(Push::Locked);
        };
        let mut ls = head.log.lock();
        if ls.is_pinned() {
            return Ok(Push::Pinned);
        }
        let Some(lsn) = ls.ail_lsn else {
            return Ok(Push::Gone);
        };
        if ls.stale {
            // Freed, and its cancel is durable: the block may hold other data now. Drop it.
            ls.dirty.clear();
            ls.charged = false;
            ls.ail_lsn = None;
            self.ail.lock().items.remove(&(lsn, head.blkno));
            drop(ls);
            drop(content);
            self.space.update(|s| s.mem.unpin_log(self.buf_bytes));
            return Ok(Push::Written);
        }
        debug_assert!(content.valid);
        BlockHeader::stamp(&mut content.data, lsn.0);
        self.dev
            .write(head.blkno, &content.data)
            .map_err(LogError::Io)?;
        ls.dirty.clear();
        ls.charged = false;
        ls.ail_lsn = None;
        self.home_writes_unflushed.store(true, Ordering::SeqCst);
        self.ail.lock().items.remove(&(lsn, head.blkno));
        drop(ls);
        drop(content);
        self.space.update(|s| s.mem.unpin_log(self.buf_bytes));
        Ok(Push::Written)
    }
}
