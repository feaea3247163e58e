//! A device that fails chosen requests: EIO on the n-th matching read, write or flush, or a short
//! write that lands only its first half before failing.

use super::{DevError, Device};
use parking_lot::Mutex;
use std::io;
use std::ops::Range;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    Read,
    Write,
    Flush,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The request fails with EIO and changes nothing.
    Eio,
    /// The first half of the blocks are written, then EIO (a write only).
    Short,
}

/// Fail requests of `op` touching `blocks`, after `skip` matching requests have passed. With
/// `sticky` every later matching request fails too (a dead disk); else only one.
#[derive(Debug, Clone)]
pub struct FaultRule {
    pub op: FaultOp,
    pub blocks: Range<u64>,
    pub skip: u64,
    pub kind: FaultKind,
    pub sticky: bool,
}

struct RuleState {
    rule: FaultRule,
    seen: u64,
    fired: bool,
}

pub struct FaultDevice {
    inner: Arc<dyn Device>,
    rules: Mutex<Vec<RuleState>>,
    injected: Mutex<u64>,
}

impl FaultDevice {
    pub fn new(inner: Arc<dyn Device>) -> FaultDevice {
        FaultDevice {
            inner,
            rules: Mutex::new(Vec::new()),
            injected: Mutex::new(0),
        }
    }
    pub fn add_rule(&self, rule: FaultRule) {
        self.rules.lock().push(RuleState {
            rule,
            seen: 0,
            fired: false,
        });
    }
    pub fn clear(&self) {
        self.rules.lock().clear();
    }
    /// How many requests were failed so far.
    pub fn injected(&self) -> u64 {
        *self.injected.lock()
    }

    fn check(&self, op: FaultOp, blkno: u64, blocks: u64) -> Option<FaultKind> {
        let mut rules = self.rules.lock();
        for st in rules.iter_mut() {
            let r = &st.rule;
            let overlaps =
                op == FaultOp::Flush || (blkno < r.blocks.end && blkno + blocks > r.blocks.start);
            if r.op != op || !overlaps || (st.fired && !r.sticky) {
                continue;
            }
            st.seen += 1;
            if st.seen > r.skip {
                st.fired = true;
                *self.injected.lock() += 1;
                return Some(r.kind);
            }
        }
        None
    }

    fn eio(op: &'static str, blkno: u64, blocks: u64) -> DevError {
        DevError::new(op, blkno, blocks, io::Error::from_raw_os_error(libc::EIO))
    }
}

impl Device for FaultDevice {
    fn block_size(&self) -> u32 {
        self.inner.block_size()
    }
    fn block_count(&self) -> u64 {
        self.inner.block_count()
    }
    fn read(&self, blkno: u64, buf: &mut [u8]) -> Result<(), DevError> {
        let blocks = (buf.len() / self.block_size() as usize) as u64;
        match self.check(FaultOp::Read, blkno, blocks) {
            Some(_) => Err(Self::eio("read", blkno, blocks)),
            None => self.inner.read(blkno, buf),
        }
    }
    fn write(&self, blkno: u64, buf: &[u8]) -> Result<(), DevError> {
        let bs = self.block_size() as usize;
        let blocks = (buf.len() / bs) as u64;
        match self.check(FaultOp::Write, blkno, blocks) {
            Some(FaultKind::Eio) => Err(Self::eio("write", blkno, blocks)),
            Some(FaultKind::Short) => {
                let half = (blocks / 2) as usize * bs;
                if half > 0 {
                    self.inner.write(blkno, &buf[..half])?;
                }
                Err(Self::eio("write", blkno, blocks))
            }
            None => self.inner.write(blkno, buf),
        }
    }
    fn flush(&self) -> Result<(), DevError> {
        match self.check(FaultOp::Flush, 0, 0) {
            Some(_) => Err(Self::eio("flush", 0, 0)),
            None => self.inner.flush(),
        }
    }
}
