//! The AG free list (XFS's AGFL): node blocks for the free-space trees, which cannot take
//! their nodes from themselves; topped up before every operation, trimmed when freed nodes fill
//! it. And node blocks for an AG's other trees by ordinary allocation in it.

use super::*;

/// Node blocks for the free-space trees, from the AG's free list.
pub(super) struct FreeList<'a> {
    start: u64,
    agfl: &'a mut Vec<u32>,
    blkno: u64,
}

impl Space {
    /// Both free-space trees with the free list their nodes come from, borrowed apart.
    pub(super) fn free_trees(&mut self) -> (FreeList<'_>, &mut Btree, &mut Btree) {
        let fl = FreeList {
            start: self.start,
            agfl: &mut self.hdr.agfl,
            blkno: self.start + AG_HEADER_OFFSET,
        };
        (fl, &mut self.bno, &mut self.cnt)
    }
}

impl NodeAlloc for FreeList<'_> {
    fn alloc_node(&mut self, _tx: &mut Trans<'_>) -> Result<u64, EngineError> {
        let r = self.agfl.pop().ok_or_else(|| {
            EngineError::Corrupt(FormatError::new(
                self.blkno,
                "AG header",
                "agfl",
                "free list ran empty during a free-space update",
            ))
        })?;
        Ok(self.start + r as u64)
    }
    fn free_node(&mut self, _tx: &mut Trans<'_>, blkno: u64) -> Result<(), EngineError> {
        // The first roots live in the AG's reserved blocks, which are never free space: a root
        // given up there simply stays reserved.
        if blkno < self.start + AG_RESERVED_BLOCKS {
            return Ok(());
        }
        if self.agfl.len() >= AGFL_SLOTS {
            return Err(EngineError::Corrupt(FormatError::new(
                self.blkno,
                "AG header",
                "agfl",
                "free list overflowed during a free-space update",
            )));
        }
        self.agfl.push((blkno - self.start) as u32);
        Ok(())
    }
}

/// Node blocks for other trees of an AG (the inode-chunk tree), by ordinary allocation in it.
pub(super) struct AgBlocks<'a> {
    pub(super) me: &'a Allocator,
    pub(super) sp: &'a mut Space,
}

impl NodeAlloc for AgBlocks<'_> {
    fn alloc_node(&mut self, tx: &mut Trans<'_>) -> Result<u64, EngineError> {
        let near = self.sp.start;
        match self.me.alloc_in(tx, self.sp, near, 1, 1, 0)? {
            Some((b, _)) => Ok(b),
            None => Err(EngineError::NoSpace(format!(
                "AG {} has no block for a tree node",
                self.sp.agno
            ))),
        }
    }
    fn free_node(&mut self, tx: &mut Trans<'_>, blkno: u64) -> Result<(), EngineError> {
        if blkno < self.sp.start + AG_RESERVED_BLOCKS {
            return Ok(());
        }
        self.me.fix_freelist(tx, self.sp)?;
        self.sp.free_in(tx, BlockRun::new(blkno, 1))
    }
}

impl Allocator {
    /// Nodes one free-space operation may take: each tree splitting at every level and growing a
    /// new root.
    pub(crate) fn freelist_need(bno_level: u16, cnt_level: u16) -> usize {
        bno_level as usize + 2 + cnt_level as usize + 2
    }

    /// What the free list is topped up to before an operation: room for the top-up itself and
    /// for the operation.
    pub(crate) fn freelist_target(bno_level: u16, cnt_level: u16) -> usize {
        2 * Self::freelist_need(bno_level.max(1), cnt_level.max(1))
    }

    /// Tops the free list up to its target from the AG's free space, or trims it when it is so
    /// full that the nodes an operation frees might not fit.
    pub(super) fn fix_freelist(
        &self,
        tx: &mut Trans<'_>,
        sp: &mut Space,
    ) -> Result<(), EngineError> {
        let target = Self::freelist_target(sp.bno.root.level, sp.cnt.root.level);
        while sp.hdr.agfl.len() < target {
            let want = (target - sp.hdr.agfl.len()) as u64;
            let ext = match sp.cnt.ge(tx, &FreeByLen::search(want))? {
                Some((k, _)) => (k[1], k[0]),
                None => match sp.cnt.le(tx, &FreeByLen::LAST)? {
                    Some((k, _)) => (k[1], k[0]),
                    None => break,
                },
            };
            let take = want.min(ext.1);
            sp.remove_free(tx, BlockRun::new(ext.0, ext.1))?;
            if ext.1 > take {
                sp.insert_free(tx, BlockRun::new(ext.0 + take, ext.1 - take))?;
            }
            sp.hdr.free_blocks -= take;
            for b in ext.0..ext.0 + take {
                sp.hdr.agfl.push((b - sp.start) as u32);
            }
        }
        let need = Self::freelist_need(sp.bno.root.level, sp.cnt.root.level);
        if sp.hdr.agfl.len() < need {
            return Err(EngineError::NoSpace(format!(
                "AG {} has no room left for its free-space trees",
                sp.agno
            )));
        }
        while sp.hdr.agfl.len() > AGFL_SLOTS - need {
            let Some(r) = sp.hdr.agfl.pop() else { break };
            sp.free_in(tx, BlockRun::new(sp.start + r as u64, 1))?;
        }
        Ok(())
    }
}
