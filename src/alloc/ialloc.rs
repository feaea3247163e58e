//! Inode chunks: one block of inodes each, recorded in the AG's inode-chunk tree keyed
//! (full, block) with the free-slot mask as value, so a chunk with a free slot is found in one
//! descent. And the blocks an inode owns beyond its data (`InodeBlocks`).

use super::*;

/// Blocks an inode owns beyond its data (extent-map nodes, directory nodes and name blocks),
/// allocated near it and counted in its block count.
pub(crate) struct InodeBlocks<'a> {
    pub(crate) alloc: &'a Allocator,
    /// Allocate near this block (the inode's chunk).
    pub(crate) near: u64,
    /// The inode's block count, kept in step.
    pub(crate) blocks: &'a mut u64,
}

impl NodeAlloc for InodeBlocks<'_> {
    fn alloc_node(&mut self, tx: &mut Trans<'_>) -> Result<u64, EngineError> {
        let (b, _) = self
            .alloc
            .alloc(tx, self.near, 1, 1)?
            .ok_or_else(|| EngineError::NoSpace(format!("no free block near {}", self.near)))?;
        *self.blocks += 1;
        Ok(b)
    }
    fn free_node(&mut self, tx: &mut Trans<'_>, blkno: u64) -> Result<(), EngineError> {
        self.alloc.free(tx, blkno, 1)?;
        *self.blocks -= 1;
        Ok(())
    }
}

impl Allocator {
    /// Allocates an inode near inode `near` (0: anywhere): a free slot of an existing chunk, or a
    /// new chunk block. Returns the inode number, or None when no AG can give one. The caller
    /// writes the inode into its slot (a slot is free while its mode is 0).
    ///
    /// Lock order: a transaction joins inode chunks before AG headers. This takes a free slot of
    /// an existing chunk only when `existing` (the caller must already hold that chunk, see
    /// `Allocator::peek_free_inode` and `Allocator::claim_inode`); otherwise it makes a new
    /// chunk, whose block nobody else can hold.
    #[track_caller]
    pub fn alloc_inode(&self, tx: &mut Trans<'_>, near: u64) -> Result<Option<u64>, EngineError> {
        self.alloc_inode_in(tx, near, true)
    }

    /// Allocates an inode in a new chunk (see [`Allocator::alloc_inode`]).
    #[track_caller]
    pub(crate) fn alloc_inode_new_chunk(
        &self,
        tx: &mut Trans<'_>,
        near: u64,
    ) -> Result<Option<u64>, EngineError> {
        self.alloc_inode_in(tx, near, false)
    }

    /// A free inode near `near` in an existing chunk, found without keeping anything locked (a
    /// read-only transaction): the caller then joins its chunk in lock order and claims it.
    pub(crate) fn peek_free_inode(
        &self,
        tx: &mut Trans<'_>,
        near: u64,
    ) -> Result<Option<u64>, EngineError> {
        let target = ino_split(near).0;
        for agno in self.candidates(target, |s| s.free_inodes > 0) {
            // One AG at a time: the candidates are not in ascending order, so holding one while
            // taking the next could wait on a writer that holds them the other way round.
            let mark = tx.mark();
            let ag = self.read_ag(tx, agno)?;
            let found = match ag.ino.ge(tx, &InoChunk::FIRST_WITH_FREE)? {
                Some((k, v)) if InoChunk::has_free(k) && v[0] != 0 => {
                    Some(ino_of(k[1], v[0].trailing_zeros() as usize))
                }
                _ => None,
            };
            self.note(&ag.sp.hdr);
            tx.release_clean(mark, ag.sp.start..ag.sp.start + ag.sp.len);
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// Takes inode `ino` if its slot is still free in its chunk's mask (the caller holds the
    /// chunk). Returns false if someone took it meanwhile.
    #[track_caller]
    pub(crate) fn claim_inode(&self, tx: &mut Trans<'_>, ino: u64) -> Result<bool, EngineError> {
        let (chunk, slot) = ino_split(ino);
        let mut ag = self.read_ag(tx, self.agno_of(chunk))?;
        let Some(v) = ag.ino.get(tx, &InoChunk::key_with_free(chunk))? else {
            return Ok(false);
        };
        if v[0] & (1 << slot) == 0 {
            return Ok(false);
        }
        self.set_chunk_mask(tx, &mut ag, chunk, v[0], v[0] & !(1 << slot))?;
        ag.sp.hdr.free_inodes -= 1;
        self.write_ag(tx, &mut ag)?;
        Ok(true)
    }

    pub(super) fn alloc_inode_in(
        &self,
        tx: &mut Trans<'_>,
        near: u64,
        existing: bool,
    ) -> Result<Option<u64>, EngineError> {
        let ipb = inodes_per_block(self.geo.block_size);
        let target = ino_split(near).0;
        for agno in self.candidates(target, |s| s.free_inodes > 0 || s.longest >= 1) {
            let mark = tx.mark();
            let mut ag = self.read_ag(tx, agno)?;
            let found = if existing {
                ag.ino.ge(tx, &InoChunk::FIRST_WITH_FREE)?
            } else {
                None
            };
            let (chunk, mask) = match found {
                Some((k, v)) if InoChunk::has_free(k) => (k[1], v[0]),
                _ => {
                    let near = target.max(ag.sp.start);
                    let Some((chunk, _)) =
                        self.alloc_in(tx, &mut ag.sp, near, 1, 1, AG_RESERVE_BLOCKS)?
                    else {
                        // The free list may have been topped up on the way: keep the header true.
                        self.write_ag(tx, &mut ag)?;
                        self.note(&ag.sp.hdr);
                        tx.release_clean(mark, ag.sp.start..ag.sp.start + ag.sp.len);
                        continue;
                    };
                    tx.get_buf(chunk, BlockType::InodeChunk, agno as u64)?;
                    let mask = if ipb == 64 {
                        u64::MAX
                    } else {
                        (1u64 << ipb) - 1
                    };
                    let Ag { sp, ino, .. } = &mut ag;
                    ino.insert(
                        tx,
                        &mut AgBlocks { me: self, sp },
                        InoChunk::key_with_free(chunk),
                        InoChunk {
                            chunk,
                            free_mask: mask,
                        }
                        .val(),
                    )?;
                    ag.sp.hdr.inodes += ipb as u64;
                    ag.sp.hdr.free_inodes += ipb as u64;
                    (chunk, mask)
                }
            };
            let slot = mask.trailing_zeros() as usize;
            debug_assert!(slot < ipb);
            self.set_chunk_mask(tx, &mut ag, chunk, mask, mask & !(1 << slot))?;
            ag.sp.hdr.free_inodes -= 1;
            self.write_ag(tx, &mut ag)?;
            return Ok(Some(ino_of(chunk, slot)));
        }
        Ok(None)
    }

    /// Changes chunk `chunk`'s free-slot mask from `old` to `new` in its AG's inode-chunk tree:
    /// the record moves between the keys of chunks with a free slot and of full chunks as the
    /// mask becomes or stops being zero (`InoChunk::key`).
    pub(super) fn set_chunk_mask(
        &self,
        tx: &mut Trans<'_>,
        ag: &mut Ag,
        chunk: u64,
        old: u64,
        new: u64,
    ) -> Result<(), EngineError> {
        let (was, now) = (
            InoChunk {
                chunk,
                free_mask: old,
            },
            InoChunk {
                chunk,
                free_mask: new,
            },
        );
        let Ag { sp, ino: tree, .. } = ag;
        if was.key() == now.key() {
            tree.update(tx, &now.key(), now.val())?;
            return Ok(());
        }
        tree.delete(tx, &mut AgBlocks { me: self, sp }, &was.key())?;
        tree.insert(tx, &mut AgBlocks { me: self, sp }, now.key(), now.val())
    }

    /// Returns inode `ino`'s slot to its chunk's free mask. The caller has cleared the slot.
    #[track_caller]
    pub fn free_inode(&self, tx: &mut Trans<'_>, ino: u64) -> Result<(), EngineError> {
        let (chunk, slot) = ino_split(ino);
        let agno = self.agno_of(chunk);
        let mut ag = self.read_ag(tx, agno)?;
        let bad = |what: String| {
            EngineError::Corrupt(FormatError::new(chunk, "inode-chunk tree", "records", what))
        };
        let old = if let Some(v) = ag.ino.get(tx, &InoChunk::key_with_free(chunk))? {
            v[0]
        } else if ag.ino.get(tx, &InoChunk::key_full(chunk))?.is_some() {
            0
        } else {
            return Err(bad(format!("inode {ino}: no chunk at block {chunk}")));
        };
        if old & (1 << slot) != 0 {
            return Err(bad(format!("inode {ino} is already free")));
        }
        self.set_chunk_mask(tx, &mut ag, chunk, old, old | 1 << slot)?;
        ag.sp.hdr.free_inodes += 1;
        self.write_ag(tx, &mut ag)
    }

    /// AG `agno`'s inode chunks (block, free mask) from its header and inode-chunk tree alone
    /// (fsck's repair, which rebuilds the free-space trees, must not need them).
    pub(crate) fn inode_chunks(
        &self,
        tx: &mut Trans<'_>,
        agno: u32,
    ) -> Result<Vec<(u64, u64)>, EngineError> {
        let mark = tx.mark();
        let ag = self.read_ag(tx, agno)?;
        let out = self.chunk_records(ag.ino.collect(tx)?, ag.sp.start)?;
        tx.release_clean(mark, ag.sp.start..ag.sp.start + ag.sp.len);
        Ok(out)
    }

    /// Whether `ino` names an inode slot of this filesystem: a slot of a block the inode-chunk
    /// trees record (XFS's untrusted iget). A number from outside (a file handle, `ticketfs db`)
    /// is checked so before its block is read as inodes.
    pub(crate) fn is_inode_number(
        &self,
        tx: &mut Trans<'_>,
        ino: u64,
    ) -> Result<bool, EngineError> {
        let (chunk, slot) = ino_split(ino);
        if slot >= inodes_per_block(self.geo.block_size) {
            return Ok(false);
        }
        self.is_inode_chunk(tx, chunk)
    }

    /// Whether block `chunk` is an inode chunk by AG's inode-chunk tree (inode numbers that come
    /// from outside, such as a file handle, are checked here before their block is read, as
    /// XFS checks an untrusted inode number against its inode B+tree). Holds nothing afterwards;
    /// the caller must hold no inode chunk (lock order) and chunks are never freed, so the
    /// answer stays true.
    pub(crate) fn is_inode_chunk(
        &self,
        tx: &mut Trans<'_>,
        chunk: u64,
    ) -> Result<bool, EngineError> {
        if chunk >= self.geo.block_count {
            return Ok(false);
        }
        let mark = tx.mark();
        let ag = self.read_ag(tx, self.agno_of(chunk))?;
        let found = ag.ino.get(tx, &InoChunk::key_with_free(chunk))?.is_some()
            || ag.ino.get(tx, &InoChunk::key_full(chunk))?.is_some();
        tx.release_clean(mark, ag.sp.start..ag.sp.start + ag.sp.len);
        Ok(found)
    }

    /// The (chunk, free mask) of AG records `recs` (of the AG starting at `ag_start`), each
    /// decoded and checked by the inode-chunk tree's codec.
    pub(super) fn chunk_records(
        &self,
        recs: Vec<(crate::btree::Key, crate::btree::Val)>,
        ag_start: u64,
    ) -> Result<Vec<(u64, u64)>, EngineError> {
        let slots = inodes_per_block(self.geo.block_size);
        decode_all(
            recs,
            ag_start + AG_HEADER_OFFSET,
            "inode-chunk tree",
            |k, v| InoChunk::decode(k, v, slots).map(|c| (c.chunk, c.free_mask)),
        )
    }
}
