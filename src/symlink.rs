//! A symlink's target, read and checked by the one rule (`format::inode::symlink_problem` and
//! `symlink_target_problem`) for every reader: readlink, the checker, the repairer.

use crate::error::EngineError;
use crate::format::inode::{
    ino_split, symlink_block_target, symlink_problem, symlink_target_problem, DataFormat, Inode,
};
use crate::format::{BlockType, FormatError};
use crate::trans::Trans;

/// The target of symlink `ino`; an error naming the inode (or its block) when it breaks the rule.
pub(crate) fn target(tx: &mut Trans<'_>, ino: u64, i: &Inode) -> Result<Vec<u8>, EngineError> {
    let bad = |blkno: u64, why: String| {
        EngineError::Corrupt(FormatError::new(
            blkno,
            "symlink",
            "target",
            format!("inode {ino}: {why}"),
        ))
    };
    if let Some(why) = symlink_problem(i, tx.block_size()) {
        return Err(bad(ino_split(ino).0, why));
    }
    let len = i.nextents as usize;
    let (out, blkno) = if i.format == DataFormat::Local {
        (i.fork[..len].to_vec(), ino_split(ino).0)
    } else {
        let id = tx.read_buf(i.root, BlockType::Symlink)?;
        (
            symlink_block_target(tx.data(id), i.root, len)?.to_vec(),
            i.root,
        )
    };
    match symlink_target_problem(&out) {
        Some(why) => Err(bad(blkno, why)),
        None => Ok(out),
    }
}
