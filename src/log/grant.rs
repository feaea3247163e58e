//! Log positions and the grant heads.
//!
//! A position is a cycle number (how many times the log has wrapped, from 1) and a byte offset
//! within the log. The tail, the physical head and the two grant heads are positions; the space
//! between tail and a head is what that head has handed out or written.

use crate::format::Lsn;
use crate::mem::{GateState, MemAccount};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogPos {
    pub cycle: u32,
    pub bytes: u64,
}

impl LogPos {
    pub fn new(cycle: u32, bytes: u64) -> LogPos {
        LogPos { cycle, bytes }
    }

    /// `n` bytes further on, in a log of `size` bytes.
    pub fn add(self, n: u64, size: u64) -> LogPos {
        debug_assert!(self.bytes < size);
        let total = self.bytes + n;
        LogPos {
            cycle: self.cycle + (total / size) as u32,
            bytes: total % size,
        }
    }

    /// `n` bytes back (never before cycle 0).
    pub fn sub(self, n: u64, size: u64) -> LogPos {
        debug_assert!(self.bytes < size);
        let wraps = if n > self.bytes {
            (n - self.bytes).div_ceil(size)
        } else {
            0
        };
        let bytes = self.bytes + wraps * size - n;
        debug_assert!(self.cycle as u64 >= wraps, "log position underflow");
        LogPos {
            cycle: self.cycle - wraps as u32,
            bytes,
        }
    }

    /// Bytes from `older` to `self`; `older` must not be after `self`.
    pub fn since(self, older: LogPos, size: u64) -> u64 {
        debug_assert!(older <= self, "log position {older:?} is after {self:?}");
        let cycles = self.cycle.saturating_sub(older.cycle) as u64;
        (cycles * size + self.bytes).saturating_sub(older.bytes)
    }

    /// The LSN of a block-aligned position.
    pub fn lsn(self, block_size: u32) -> Lsn {
        debug_assert!(self.bytes.is_multiple_of(block_size as u64));
        Lsn::new(self.cycle, (self.bytes / block_size as u64) as u32)
    }

    pub(crate) fn from_lsn(lsn: Lsn, block_size: u32) -> LogPos {
        LogPos {
            cycle: lsn.cycle(),
            bytes: lsn.block() as u64 * block_size as u64,
        }
    }
}

/// What a reservation asks of the gate: bytes on each grant head and bytes of memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SpaceNeed {
    pub(crate) reserve_bytes: u64,
    pub(crate) write_bytes: u64,
    pub(crate) mem_bytes: u64,
}

/// The log's grant heads and the memory account, admitted together by one gate so a transaction
/// gets both or waits holding neither.
#[derive(Debug, Clone)]
pub(crate) struct Space {
    pub(crate) size_bytes: u64,
    /// The log less the blocks kept back for unmount and tail-update records.
    pub(crate) usable_bytes: u64,
    /// The tail as recorded in the last durable log record: space before it may be overwritten.
    pub(crate) tail: LogPos,
    /// Every byte handed out, including the future steps of rolling tickets.
    pub(crate) reserve_head: LogPos,
    /// Bytes handed out for current steps only.
    pub(crate) write_head: LogPos,
    pub(crate) mem: MemAccount,
}

impl Space {
    pub(crate) fn new(
        size_bytes: u64,
        reserve_bytes: u64,
        start: LogPos,
        mem: MemAccount,
    ) -> Space {
        Space {
            size_bytes,
            usable_bytes: size_bytes - reserve_bytes,
            tail: start,
            reserve_head: start,
            write_head: start,
            mem,
        }
    }
    pub(crate) fn reserve_free(&self) -> u64 {
        self.usable_bytes
            .saturating_sub(self.reserve_head.since(self.tail, self.size_bytes))
    }
    pub(crate) fn write_free(&self) -> u64 {
        self.usable_bytes
            .saturating_sub(self.write_head.since(self.tail, self.size_bytes))
    }
    /// Gives back bytes from both heads.
    pub(crate) fn ungrant(&mut self, reserve: u64, write: u64) {
        self.reserve_head = self.reserve_head.sub(reserve, self.size_bytes);
        self.write_head = self.write_head.sub(write, self.size_bytes);
        debug_assert!(self.write_head <= self.reserve_head);
        debug_assert!(self.tail <= self.write_head);
    }
    /// Adds bytes to both heads without admission (records written from the kept-back blocks).
    pub(crate) fn force_grant(&mut self, bytes: u64) {
        self.reserve_head = self.reserve_head.add(bytes, self.size_bytes);
        self.write_head = self.write_head.add(bytes, self.size_bytes);
    }
    pub(crate) fn move_tail(&mut self, tail: LogPos) {
        debug_assert!(
            tail >= self.tail,
            "tail moves back from {:?} to {tail:?}",
            self.tail
        );
        debug_assert!(
            tail <= self.write_head,
            "tail {tail:?} passes the write head {:?}",
            self.write_head
        );
        self.tail = tail;
    }
}

impl GateState for Space {
    type Need = SpaceNeed;
    fn fits(&self, n: &SpaceNeed) -> bool {
        n.reserve_bytes <= self.reserve_free()
            && n.write_bytes <= self.write_free()
            && self.mem.fits(n.mem_bytes)
    }
    fn take(&mut self, n: &SpaceNeed) {
        self.reserve_head = self.reserve_head.add(n.reserve_bytes, self.size_bytes);
        self.write_head = self.write_head.add(n.write_bytes, self.size_bytes);
        self.mem.reserve(n.mem_bytes);
        debug_assert!(self.write_head <= self.reserve_head);
    }
}
