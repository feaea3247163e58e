//! The memory account: the budget and what is charged against it, in bytes.

/// Where the budget's bytes are. Invariant (checked in debug builds): with reservations on,
/// `reserved + log_pinned <= budget - emergency + emergency_used`, i.e. only overruns, served
/// from the emergency reserve, may push the charged total past the admitted part of the budget.
#[derive(Debug, Clone)]
pub struct MemAccount {
    pub(crate) enabled: bool,
    pub budget_bytes: u64,
    /// Set aside from the budget to serve overruns; never granted to a reservation.
    pub emergency_bytes: u64,
    /// Held by live tickets (used or not).
    pub reserved_bytes: u64,
    /// Pinned by the log: dirty buffers not yet written home, and the CIL's copies of them.
    pub log_pinned_bytes: u64,
    /// Of the emergency reserve, in use by overruns of live tickets.
    pub emergency_used_bytes: u64,
    /// Most ever charged at once (reserved + pinned by the log + emergency in use).
    pub peak_charged_bytes: u64,
    /// Rolls that borrowed from the emergency reserve, and how much in all.
    pub roll_borrows: u64,
    pub roll_borrowed_bytes: u64,
}

impl MemAccount {
    pub(crate) fn new(enabled: bool, budget_bytes: u64, emergency_bytes: u64) -> MemAccount {
        debug_assert!(emergency_bytes < budget_bytes || !enabled);
        MemAccount {
            enabled,
            budget_bytes,
            emergency_bytes,
            reserved_bytes: 0,
            log_pinned_bytes: 0,
            emergency_used_bytes: 0,
            peak_charged_bytes: 0,
            roll_borrows: 0,
            roll_borrowed_bytes: 0,
        }
    }

    /// Bytes a new reservation may still be granted.
    pub fn free_bytes(&self) -> u64 {
        self.budget_bytes
            .saturating_sub(self.emergency_bytes)
            .saturating_sub(self.reserved_bytes)
            .saturating_sub(self.log_pinned_bytes)
    }

    pub(crate) fn charged_bytes(&self) -> u64 {
        self.reserved_bytes + self.log_pinned_bytes + self.emergency_used_bytes
    }

    pub(crate) fn fits(&self, bytes: u64) -> bool {
        !self.enabled || bytes <= self.free_bytes()
    }

    pub(crate) fn reserve(&mut self, bytes: u64) {
        if !self.enabled {
            return;
        }
        debug_assert!(
            bytes <= self.free_bytes(),
            "reserve {bytes} with only {} free",
            self.free_bytes()
        );
        self.reserved_bytes += bytes;
        self.note_peak();
    }

    /// A ticket ends: `reserved` leaves the tickets' account, `to_log` of it (plus the emergency
    /// bytes `emergency` its overrun took) moves to the log's account.
    pub(crate) fn settle(&mut self, reserved: u64, emergency: u64, to_log: u64) {
        if !self.enabled {
            return;
        }
        debug_assert!(self.reserved_bytes >= reserved);
        debug_assert!(self.emergency_used_bytes >= emergency);
        self.reserved_bytes -= reserved;
        self.emergency_used_bytes -= emergency;
        self.log_pinned_bytes += to_log;
        self.note_peak();
    }

    /// An overrun takes `bytes` from the emergency reserve (past it, still served and counted).
    pub(crate) fn take_emergency(&mut self, bytes: u64) {
        if self.enabled {
            self.emergency_used_bytes += bytes;
            self.note_peak();
        }
    }

    /// A rolling transaction commits a step but keeps its reservation (as a permanent log
    /// reservation keeps its log space): of what it holds, `reserved` in the tickets' account and
    /// `emergency` borrowed, the `to_log` bytes the step pinned in the log move to the log's
    /// account, from the reservation first. Returns what the ticket still holds, (reserved,
    /// emergency).
    pub(crate) fn settle_roll(&mut self, reserved: u64, emergency: u64, to_log: u64) -> (u64, u64) {
        if !self.enabled {
            return (0, 0);
        }
        debug_assert!(self.reserved_bytes >= reserved);
        debug_assert!(self.emergency_used_bytes >= emergency);
        let from_res = to_log.min(reserved);
        let from_em = (to_log - from_res).min(emergency);
        self.reserved_bytes -= from_res;
        self.emergency_used_bytes -= from_em;
        self.log_pinned_bytes += to_log;
        self.note_peak();
        (reserved - from_res, emergency - from_em)
    }

    /// Tops a rolling ticket that holds (`reserved`, `emergency`) back up to `limit` without
    /// waiting: borrowed bytes are first paid back from the free budget, then what is missing comes
    /// from the free budget, then from the emergency reserve as far as it is not in use. Returns
    /// the ticket's new holdings and the bytes still missing (0 when topped up): for those the
    /// caller waits at the gate.
    pub(crate) fn top_up(&mut self, reserved: u64, emergency: u64, limit: u64) -> (u64, u64, u64) {
        if !self.enabled {
            return (0, 0, 0);
        }
        let (mut r, mut e) = (reserved, emergency);
        let repay = e.min(self.free_bytes());
        self.emergency_used_bytes -= repay;
        self.reserved_bytes += repay;
        r += repay;
        e -= repay;
        let mut missing = limit.saturating_sub(r + e);
        let from_free = missing.min(self.free_bytes());
        self.reserved_bytes += from_free;
        r += from_free;
        missing -= from_free;
        let room = self
            .emergency_bytes
            .saturating_sub(self.emergency_used_bytes);
        if missing > 0 && missing <= room {
            self.emergency_used_bytes += missing;
            self.roll_borrows += 1;
            self.roll_borrowed_bytes += missing;
            e += missing;
            missing = 0;
        }
        self.note_peak();
        (r, e, missing)
    }

    /// The log released pinned memory (a CIL copy freed, a buffer written home).
    pub(crate) fn unpin_log(&mut self, bytes: u64) {
        if self.enabled {
            debug_assert!(
                self.log_pinned_bytes >= bytes,
                "unpin {bytes} of {}",
                self.log_pinned_bytes
            );
            self.log_pinned_bytes = self.log_pinned_bytes.saturating_sub(bytes);
        }
    }

    fn note_peak(&mut self) {
        self.peak_charged_bytes = self.peak_charged_bytes.max(self.charged_bytes());
    }
}
