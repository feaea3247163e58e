//! The unlinked-inode trees: inodes with no links not yet freed (open, or a crash came first),
//! one tree per AG, read at mount to free them.

use super::*;

impl Allocator {
    /// Puts inode `ino` (no links left) on its AG's unlinked tree, in the transaction that takes
    /// its last link: a crash before it is freed leaves it there for the next mount to free.
    #[track_caller]
    pub(crate) fn unlinked_add(&self, tx: &mut Trans<'_>, ino: u64) -> Result<(), EngineError> {
        let mut ag = self.read_ag(tx, self.agno_of(ino_split(ino).0))?;
        let Ag { sp, unl, .. } = &mut ag;
        let rec = Unlinked { ino };
        unl.insert(tx, &mut AgBlocks { me: self, sp }, rec.key(), rec.val())?;
        self.write_ag(tx, &mut ag)
    }

    /// Takes inode `ino` off its AG's unlinked tree (in the transaction that frees it).
    #[track_caller]
    pub(crate) fn unlinked_remove(&self, tx: &mut Trans<'_>, ino: u64) -> Result<(), EngineError> {
        let mut ag = self.read_ag(tx, self.agno_of(ino_split(ino).0))?;
        let Ag { sp, unl, .. } = &mut ag;
        if unl
            .delete(tx, &mut AgBlocks { me: self, sp }, &Unlinked { ino }.key())?
            .is_none()
        {
            return Err(EngineError::Corrupt(FormatError::new(
                ino_split(ino).0,
                "unlinked-inode tree",
                "records",
                format!("inode {ino} is not on its AG's unlinked tree"),
            )));
        }
        self.write_ag(tx, &mut ag)
    }

    /// The inodes on AG `agno`'s unlinked tree.
    pub(crate) fn unlinked(&self, tx: &mut Trans<'_>, agno: u32) -> Result<Vec<u64>, EngineError> {
        let mark = tx.mark();
        let ag = self.read_ag(tx, agno)?;
        let hdr = ag.sp.start + AG_HEADER_OFFSET;
        let out = decode_all(ag.unl.collect(tx)?, hdr, "unlinked-inode tree", |k, v| {
            Unlinked::decode(k, v).map(|u| u.ino)
        })?;
        tx.release_clean(mark, ag.sp.start..ag.sp.start + ag.sp.len);
        Ok(out)
    }
}
