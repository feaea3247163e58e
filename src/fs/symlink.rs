//! Symlink targets: stored in the inode when short, in one symlink block otherwise; read by
//! the format's rule (`crate::symlink`).

use super::*;

impl Fs {
    pub(super) fn symlink_block_max(&self) -> usize {
        self.eng.geometry().block_size as usize - BLOCK_HEADER_BYTES
    }

    /// Short targets live in the inode; longer ones in one symlink block.
    pub(super) fn store_symlink(
        &self,
        tx: &mut Trans<'_>,
        ino: u64,
        i: &mut Inode,
        target: &[u8],
    ) -> R<()> {
        i.size = target.len() as u64;
        i.nextents = target.len() as u32;
        if target.len() <= FORK_BYTES {
            i.format = DataFormat::Local;
            i.fork[..target.len()].copy_from_slice(target);
            return Ok(());
        }
        let (blk, _) = self
            .alloc
            .alloc(tx, ino_split(ino).0, 1, 1)?
            .ok_or_else(|| EngineError::NoSpace("no block for a symlink".into()))?;
        let id = tx.get_buf(blk, BlockType::Symlink, ino)?;
        tx.data_mut(id)[BLOCK_HEADER_BYTES..BLOCK_HEADER_BYTES + target.len()]
            .copy_from_slice(target);
        tx.log_range(id, BLOCK_HEADER_BYTES..BLOCK_HEADER_BYTES + target.len());
        i.format = DataFormat::Btree;
        i.root = blk;
        i.blocks = 1;
        Ok(())
    }

    pub fn readlink(&self, ino: u64) -> R<Vec<u8>> {
        let mut tx = self.eng.begin(TransKind::Read)?;
        let (_, i) = inode::read(&mut tx, ino)?;
        if i.mode & S_IFMT != S_IFLNK {
            return Err(FsError::Invalid("not a symlink".into()));
        }
        let out = crate::symlink::target(&mut tx, ino, &i)?;
        tx.cancel()?;
        Ok(out)
    }
}
