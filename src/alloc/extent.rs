//! Free space by extent: finding, taking and giving back runs of blocks in an AG's two
//! free-space B+trees, stepping over busy extents, merging frees with their neighbours.

use super::*;

/// Free extents `Allocator::avoid_busy` looks at past the first one for blocks that are not
/// busy: enough to step over the runs a burst of frees leaves, without walking a fragmented AG
/// (after these it takes the largest extent, or forces the log).
pub(super) const BUSY_SEARCH_EXTENTS: usize = 16;

/// In the free extent `ext` (start, length), whose busy ranges are `busy` (sorted, within it),
/// the idle run of at least `min` blocks that gives the most blocks (up to `max`), the nearest
/// to `at` of equals, cut as near `at` as that length allows: (extent start, extent length, cut
/// start, blocks).
pub(super) fn idle_piece(
    busy: &[(u64, u64)],
    ext: (u64, u64),
    at: u64,
    min: u64,
    max: u64,
) -> Option<(u64, u64, u64, u64)> {
    let (s, l) = ext;
    let mut best: Option<(u64, u64, u64)> = None; // (blocks short of max, distance, cut)
    let mut gap_start = s;
    let ends = busy
        .iter()
        .map(|&(b, bl)| (b, b + bl))
        .chain([(s + l, s + l)]);
    for (busy_start, busy_end) in ends {
        if busy_start >= gap_start + min {
            let want = (busy_start - gap_start).min(max);
            let cut = at.clamp(gap_start, busy_start - want);
            let key = (max - want, cut.abs_diff(at), cut);
            if best.is_none_or(|b| (key.0, key.1) < (b.0, b.1)) {
                best = Some(key);
            }
        }
        gap_start = gap_start.max(busy_end);
    }
    best.map(|(short, _, cut)| {
        let n = max - short;
        debug_assert!(cut >= s && cut + n <= s + l && n >= min);
        (s, l, cut, n)
    })
}

/// A run of `len` blocks from block `start`: a free extent, or one being taken from the
/// free-space trees or given back to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BlockRun {
    pub(super) start: u64,
    pub(super) len: u64,
}

impl BlockRun {
    pub(super) fn new(start: u64, len: u64) -> BlockRun {
        BlockRun { start, len }
    }

    /// The block after the run.
    pub(super) fn end(self) -> u64 {
        self.start + self.len
    }
}

/// Freeing `freeing` in the AG starting at `ag_start`, part of which is the free extent `free`
/// already.
fn double_free(ag_start: u64, freeing: BlockRun, free: BlockRun) -> EngineError {
    EngineError::Corrupt(FormatError::new(
        ag_start + AG_HEADER_OFFSET,
        "free-space trees",
        "records",
        format!(
            "freeing {}+{}, which overlaps the free extent {}+{}",
            freeing.start, freeing.len, free.start, free.len
        ),
    ))
}

/// An AG's free space by extent: records put in and taken out of both free-space trees alike.
impl Space {
    /// Records the free extent `run` in both trees.
    pub(super) fn insert_free(
        &mut self,
        tx: &mut Trans<'_>,
        run: BlockRun,
    ) -> Result<(), EngineError> {
        debug_assert!(run.len > 0);
        let BlockRun { start, len } = run;
        let (mut fl, bno, cnt) = self.free_trees();
        let by_block = FreeByBlock { start, len };
        bno.insert(tx, &mut fl, by_block.key(), by_block.val())?;
        let by_len = FreeByLen { len, start };
        cnt.insert(tx, &mut fl, by_len.key(), by_len.val())
    }

    /// Takes the free extent `run` out of both trees; corruption if either lacks it.
    pub(super) fn remove_free(
        &mut self,
        tx: &mut Trans<'_>,
        run: BlockRun,
    ) -> Result<(), EngineError> {
        let BlockRun { start, len } = run;
        let blkno = self.start + AG_HEADER_OFFSET;
        let (mut fl, bno, cnt) = self.free_trees();
        let by_block = FreeByBlock { start, len };
        let a = bno.delete(tx, &mut fl, &by_block.key())?;
        let b = cnt.delete(tx, &mut fl, &FreeByLen { len, start }.key())?;
        if a != Some(by_block.val()) || b.is_none() {
            return Err(EngineError::Corrupt(FormatError::new(
                blkno,
                "free-space trees",
                "records",
                format!(
                    "extent {start}+{len} is not in both trees (by block: {a:?}, by length: {b:?})"
                ),
            )));
        }
        Ok(())
    }

    /// Fails, naming the free extent, if any of `run` is already free.
    pub(super) fn check_not_free(
        &self,
        tx: &mut Trans<'_>,
        run: BlockRun,
    ) -> Result<(), EngineError> {
        let left = self
            .bno
            .le(tx, &FreeByBlock::search(run.start))?
            .filter(|(k, v)| k[0] + v[0] > run.start);
        let right = self
            .bno
            .ge(tx, &FreeByBlock::search(run.start))?
            .filter(|(k, _)| run.end() > k[0]);
        match left.or(right) {
            Some((k, v)) => Err(double_free(self.start, run, BlockRun::new(k[0], v[0]))),
            None => Ok(()),
        }
    }

    /// Gives `run` back to the free space, merged with the free extents on either side.
    pub(super) fn free_in(&mut self, tx: &mut Trans<'_>, run: BlockRun) -> Result<(), EngineError> {
        let ag_start = self.start;
        let overlap = |s: u64, l: u64| double_free(ag_start, run, BlockRun::new(s, l));
        let mut merged = run;
        if let Some((k, v)) = self.bno.le(tx, &FreeByBlock::search(run.start))? {
            if k[0] + v[0] > run.start {
                return Err(overlap(k[0], v[0]));
            }
            if k[0] + v[0] == run.start {
                self.remove_free(tx, BlockRun::new(k[0], v[0]))?;
                merged.start = k[0];
                merged.len += v[0];
            }
        }
        if let Some((k, v)) = self.bno.ge(tx, &FreeByBlock::search(run.start))? {
            if run.end() > k[0] {
                return Err(overlap(k[0], v[0]));
            }
            if run.end() == k[0] {
                self.remove_free(tx, BlockRun::new(k[0], v[0]))?;
                merged.len += v[0];
            }
        }
        self.insert_free(tx, merged)?;
        self.hdr.free_blocks += run.len;
        tx.note_freed(run.start, run.len);
        Ok(())
    }
}

impl Allocator {
    /// Where in this AG an extent of min..=max blocks near `target` could come from, without
    /// changing anything: (free extent start, its length, where to cut, how many blocks).
    pub(super) fn find(
        &self,
        tx: &mut Trans<'_>,
        sp: &Space,
        target: u64,
        min: u64,
        max: u64,
    ) -> Result<Option<(u64, u64, u64, u64)>, EngineError> {
        let t = target.clamp(sp.start, sp.start + sp.len - 1);
        if let Some((k, v)) = sp.bno.le(tx, &FreeByBlock::search(t))? {
            let (s, l) = (k[0], v[0]);
            if t < s + l && s + l - t >= min {
                return Ok(Some((s, l, t, (s + l - t).min(max))));
            }
        }
        if let Some((k, v)) = sp.bno.ge(tx, &FreeByBlock::search(t))? {
            if v[0] >= max {
                return Ok(Some((k[0], v[0], k[0], max)));
            }
        }
        if let Some((k, _)) = sp.cnt.ge(tx, &FreeByLen::search(max))? {
            return Ok(Some((k[1], k[0], k[1], max)));
        }
        if let Some((k, _)) = sp.cnt.le(tx, &FreeByLen::LAST)? {
            if k[0] >= min {
                return Ok(Some((k[1], k[0], k[1], k[0])));
            }
        }
        Ok(None)
    }

    /// Allocates in an AG already joined: tops up its free list, finds, carves.
    /// Allocates in one AG, leaving `keep` blocks free in it (the AG reserve for ordinary
    /// allocations, 0 for the AG's own tree nodes, which may use the reserve).
    pub(super) fn alloc_in(
        &self,
        tx: &mut Trans<'_>,
        sp: &mut Space,
        target: u64,
        min: u64,
        max: u64,
        keep: u64,
    ) -> Result<Option<(u64, u64)>, EngineError> {
        if sp.hdr.free_blocks < min + keep {
            return Ok(None);
        }
        self.fix_freelist(tx, sp)?;
        if sp.hdr.free_blocks < min + keep {
            return Ok(None);
        }
        let max = max.min(sp.hdr.free_blocks - keep);
        let Some(found) = self.find(tx, sp, target, min, max)? else {
            return Ok(None);
        };
        // Blocks freed by a commit not yet durable still belong to their old owner on disk:
        // idle blocks elsewhere are taken instead where there are any, and the log is forced
        // (a checkpoint and a device flush) only when there are none. What `avoid_busy` returns
        // stays idle: only a free in this AG, whose header this step holds, could make it busy.
        let (s, l, at, n) = match self.avoid_busy(tx, sp, found, min, max)? {
            Some(idle) => idle,
            None => {
                tx.engine().log().wait_not_busy(found.2, found.3)?;
                found
            }
        };
        sp.remove_free(tx, BlockRun::new(s, l))?;
        if at > s {
            sp.insert_free(tx, BlockRun::new(s, at - s))?;
        }
        if at + n < s + l {
            sp.insert_free(tx, BlockRun::new(at + n, s + l - at - n))?;
        }
        sp.hdr.free_blocks -= n;
        Ok(Some((at, n)))
    }

    /// A place for min..=max blocks like `first` (a free extent and the cut `find` chose in it)
    /// but with no busy block (None when there is none): the idle piece of `first`'s extent nearest the cut, else of the
    /// next free extents by block number (wrapping to the AG's start), else of the largest.
    /// XFS likewise trims busy ranges off a candidate: a file created, written and removed
    /// over and over otherwise finds its blocks of the last round busy every time and forced
    /// the log once per round (10,000 rounds of fsbench mix: 9,997 forces).
    pub(super) fn avoid_busy(
        &self,
        tx: &mut Trans<'_>,
        sp: &Space,
        first: (u64, u64, u64, u64),
        min: u64,
        max: u64,
    ) -> Result<Option<(u64, u64, u64, u64)>, EngineError> {
        let log = tx.engine().log();
        let (s, l, at, n) = first;
        if log.busy_in(at, n).is_empty() {
            return Ok(Some(first));
        }
        if let Some(c) = idle_piece(&log.busy_in(s, l), (s, l), at, min, max) {
            return Ok(Some(c));
        }
        let mut key = s + l;
        let mut wrapped = false;
        for _ in 0..BUSY_SEARCH_EXTENTS {
            let next = match sp.bno.ge(tx, &FreeByBlock::search(key))? {
                Some((k, v)) if !(wrapped && k[0] >= s) => (k[0], v[0]),
                Some(_) => break,
                None if !wrapped => {
                    wrapped = true;
                    key = sp.start;
                    continue;
                }
                None => break,
            };
            if next.1 >= min {
                if let Some(c) = idle_piece(&log.busy_in(next.0, next.1), next, next.0, min, max) {
                    return Ok(Some(c));
                }
            }
            key = next.0 + next.1;
        }
        if let Some((k, _)) = sp.cnt.le(tx, &FreeByLen::LAST)? {
            let big = (k[1], k[0]);
            if big.1 >= min {
                return Ok(idle_piece(&log.busy_in(big.0, big.1), big, big.0, min, max));
            }
        }
        Ok(None)
    }

    /// The AGs to try for something near block `target`: its own first, then the others in
    /// ascending order, skipping those the summary shows cannot serve (`fits`).
    pub(super) fn candidates(&self, target: u64, fits: impl Fn(&AgSummary) -> bool) -> Vec<u32> {
        let first = self.agno_of(target);
        (first..self.geo.ag_count)
            .chain(0..first)
            .filter(|&a| {
                let s = self.summary(a);
                !s.known || fits(&s)
            })
            .collect()
    }

    /// Allocates between `min` and `max` contiguous blocks, as close to `target` as it can.
    /// Returns (start, length), or None when no AG has `min` contiguous free blocks.
    #[track_caller]
    pub fn alloc(
        &self,
        tx: &mut Trans<'_>,
        target: u64,
        min: u64,
        max: u64,
    ) -> Result<Option<(u64, u64)>, EngineError> {
        if min == 0 || min > max {
            return Err(EngineError::Invalid(format!(
                "allocation of {min}..={max} blocks"
            )));
        }
        for agno in self.candidates(target, |s| s.longest >= min) {
            let mark = tx.mark();
            let mut ag = self.read_ag(tx, agno)?;
            if ag.sp.hdr.longest < min
                || ag.sp.hdr.free_blocks < min + AG_RESERVE_BLOCKS
                || self.find(tx, &ag.sp, target, min, max)?.is_none()
            {
                self.note(&ag.sp.hdr);
                tx.release_clean(mark, ag.sp.start..ag.sp.start + ag.sp.len);
                continue;
            }
            let got = self.alloc_in(tx, &mut ag.sp, target, min, max, AG_RESERVE_BLOCKS)?;
            self.write_ag(tx, &mut ag)?;
            if got.is_some() {
                return Ok(got);
            }
        }
        Ok(None)
    }

    /// Frees `len` blocks at `start`, merging with the free extents on either side. Freeing
    /// blocks that are already free, or that cross an AG or its reserved blocks, is corruption.
    #[track_caller]
    pub fn free(&self, tx: &mut Trans<'_>, start: u64, len: u64) -> Result<(), EngineError> {
        let agno = self.agno_of(start);
        let (first, end) = self.initial_free(agno);
        if len == 0 || start < first || start.checked_add(len).is_none_or(|e| e > end) {
            return Err(EngineError::Corrupt(FormatError::new(
                start,
                "extent",
                "range",
                format!("{start}+{len} is outside AG {agno}'s space {first}..{end}"),
            )));
        }
        let mut ag = self.read_ag(tx, agno)?;
        // Refuse a double free before changing anything (the free-list top-up would).
        let run = BlockRun::new(start, len);
        ag.sp.check_not_free(tx, run)?;
        self.fix_freelist(tx, &mut ag.sp)?;
        ag.sp.free_in(tx, run)?;
        self.write_ag(tx, &mut ag)
    }
}

#[cfg(test)]
mod tests {
    use super::idle_piece;
    use proptest::prelude::*;

    /// An extent (start, len), its busy ranges, a target in it, min and max.
    type Case = ((u64, u64), Vec<(u64, u64)>, u64, u64, u64);

    /// Busy ranges inside the extent: sorted, possibly touching or overlapping, as frees from
    /// several commits can be.
    fn case() -> impl Strategy<Value = Case> {
        (0u64..1000, 1u64..200).prop_flat_map(|(s, l)| {
            let busy = prop::collection::vec((0..l, 1u64..40), 0..8).prop_map(move |v| {
                let mut v: Vec<(u64, u64)> =
                    v.into_iter().map(|(o, n)| (s + o, n.min(l - o))).collect();
                v.sort_unstable();
                v
            });
            (Just((s, l)), busy, s..s + l, 1u64..30, 0u64..30)
                .prop_map(|(e, b, at, min, extra)| (e, b, at, min, min + extra))
        })
    }

    proptest! {
        #[test]
        fn idle_piece_avoids_every_busy_block((ext, busy, at, min, max) in case()) {
            let (s, l) = ext;
            let idle = |b: u64| !busy.iter().any(|&(x, n)| x <= b && b < x + n);
            let longest_idle = (s..s + l)
                .fold((0u64, 0u64), |(best, run), b| {
                    let run = if idle(b) { run + 1 } else { 0 };
                    (best.max(run), run)
                })
                .0;
            match idle_piece(&busy, ext, at, min, max) {
                Some((es, el, cut, n)) => {
                    prop_assert_eq!((es, el), ext);
                    prop_assert!(n >= min && n <= max, "{} blocks for {}..={}", n, min, max);
                    prop_assert!(cut >= s && cut + n <= s + l);
                    prop_assert!((cut..cut + n).all(idle), "{}+{} holds a busy block", cut, n);
                    prop_assert_eq!(n, longest_idle.min(max), "not the longest piece there is");
                }
                None => prop_assert!(longest_idle < min, "an idle run of {} was missed", longest_idle),
            }
        }
    }

    #[test]
    fn idle_piece_cuts_at_the_target_when_it_is_idle_and_next_to_it_otherwise() {
        assert_eq!(
            idle_piece(&[], (100, 50), 120, 4, 8),
            Some((100, 50, 120, 8))
        );
        // The target is busy: the nearest idle run, after the busy range here.
        assert_eq!(
            idle_piece(&[(110, 20)], (100, 50), 120, 4, 8),
            Some((100, 50, 130, 8))
        );
        // Only before it: the run's end, as close as the whole length allows.
        assert_eq!(
            idle_piece(&[(118, 30)], (100, 50), 120, 4, 8),
            Some((100, 50, 110, 8))
        );
        // A long run is preferred to a nearer short one.
        assert_eq!(
            idle_piece(&[(104, 40)], (100, 50), 120, 1, 8),
            Some((100, 50, 144, 6))
        );
        assert_eq!(
            idle_piece(&[(110, 2), (115, 1)], (100, 60), 113, 1, 8),
            Some((100, 60, 116, 8))
        );
        assert_eq!(idle_piece(&[(100, 50)], (100, 50), 120, 1, 1), None);
    }
}
