//! Extended attributes, in the two forms XFS's attribute fork has beyond the inode: all of an
//! inode's attributes in one xattr block (`block`, type TKXA: the small case, and every version 1
//! image), and a hash B+tree with entry blocks and remote value blocks (`tree`: as many
//! attributes as space allows, values up to `XATTR_SIZE_MAX`). An inode moves to the tree form
//! when a change no longer fits its block, in a transaction of its own before the change
//! ([`to_tree`]); it goes back to the block form, with no block, when its last attribute goes.
//!
//! The inode says which form it is in (`Inode::xattr_form`); every call here dispatches on it.

mod block;
mod tree;

use crate::alloc::Allocator;
use crate::error::EngineError;
use crate::format::inode::{Inode, XattrForm};
use crate::trans::Trans;

pub(crate) use crate::format::attrtree::{XATTR_NAME_MAX, XATTR_SIZE_MAX};

/// An inode's attributes: (name, value) pairs.
pub(crate) type Attrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Every (name, value) of the inode: in stored order (block form) or key order (tree form).
pub(crate) fn load(tx: &mut Trans<'_>, ino: u64, i: &Inode) -> Result<Attrs, EngineError> {
    match i.xattr_form {
        XattrForm::Block => block::load(tx, ino, i),
        XattrForm::Tree => tree::load(tx, ino, i),
    }
}

/// The value of `name`, if it is set.
pub(crate) fn get(
    tx: &mut Trans<'_>,
    ino: u64,
    i: &Inode,
    name: &[u8],
) -> Result<Option<Vec<u8>>, EngineError> {
    match i.xattr_form {
        XattrForm::Block => Ok(block::load(tx, ino, i)?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)),
        XattrForm::Tree => tree::get(tx, ino, i, name),
    }
}

/// The names of every attribute (values are not read).
pub(crate) fn names(tx: &mut Trans<'_>, ino: u64, i: &Inode) -> Result<Vec<Vec<u8>>, EngineError> {
    match i.xattr_form {
        XattrForm::Block => Ok(block::load(tx, ino, i)?
            .into_iter()
            .map(|(n, _)| n)
            .collect()),
        XattrForm::Tree => Ok(tree::records(tx, ino, i)?
            .into_iter()
            .map(|(_, _, o)| o.name)
            .collect()),
    }
}

/// What a [`set`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SetOutcome {
    Done,
    /// Nothing changed: the attributes no longer fit the inode's block; [`to_tree`] first.
    NeedsTree,
}

/// Sets `name` = `value`, replacing a value it has. The caller has checked the name and the
/// value's length, and whether the attribute may exist.
#[track_caller]
pub(crate) fn set(
    tx: &mut Trans<'_>,
    alloc: &Allocator,
    ino: u64,
    i: &mut Inode,
    name: &[u8],
    value: &[u8],
) -> Result<SetOutcome, EngineError> {
    debug_assert!(value.len() <= XATTR_SIZE_MAX && name.len() <= XATTR_NAME_MAX);
    match i.xattr_form {
        XattrForm::Block => {
            let mut all = block::load(tx, ino, i)?;
            match all.iter_mut().find(|(n, _)| n == name) {
                Some(e) => e.1 = value.to_vec(),
                None => all.push((name.to_vec(), value.to_vec())),
            }
            if !block::fits(tx.block_size(), &all) {
                return Ok(SetOutcome::NeedsTree);
            }
            block::store(tx, alloc, ino, i, &all)?;
        }
        XattrForm::Tree => tree::set(tx, alloc, ino, i, name, value)?,
    }
    Ok(SetOutcome::Done)
}

/// Moves the attributes of an inode in the block form into a new tree (one transaction of kind
/// Xattr: the reservation table's `xattr_convert`).
#[track_caller]
pub(crate) fn to_tree(
    tx: &mut Trans<'_>,
    alloc: &Allocator,
    ino: u64,
    i: &mut Inode,
) -> Result<(), EngineError> {
    debug_assert_eq!(i.xattr_form, XattrForm::Block);
    let all = block::load(tx, ino, i)?;
    block::store(tx, alloc, ino, i, &[])?;
    tree::create(tx, alloc, ino, i, &all)
}

/// Removes `name`; false when it is not set.
#[track_caller]
pub(crate) fn remove(
    tx: &mut Trans<'_>,
    alloc: &Allocator,
    ino: u64,
    i: &mut Inode,
    name: &[u8],
) -> Result<bool, EngineError> {
    match i.xattr_form {
        XattrForm::Block => {
            let mut all = block::load(tx, ino, i)?;
            let before = all.len();
            all.retain(|(n, _)| n != name);
            if all.len() == before {
                return Ok(false);
            }
            block::store(tx, alloc, ino, i, &all)?;
            Ok(true)
        }
        XattrForm::Tree => tree::remove(tx, alloc, ino, i, name),
    }
}

/// One step of freeing every attribute of an inode being freed: the block form's block all at
/// once, else one attribute of the tree (its record, remote extent and emptied blocks). Returns
/// whether attributes remain.
#[track_caller]
pub(crate) fn free_step(
    tx: &mut Trans<'_>,
    alloc: &Allocator,
    ino: u64,
    i: &mut Inode,
) -> Result<bool, EngineError> {
    match i.xattr_form {
        XattrForm::Block => block::store(tx, alloc, ino, i, &[])?,
        XattrForm::Tree => tree::remove_first(tx, alloc, ino, i)?,
    }
    Ok(i.xattr_blk != 0)
}

/// Every block the inode's attributes own, as runs (start, length), each checked by the
/// format's verifiers: the one verdict the checker and the repairer take.
pub(crate) fn blocks(
    tx: &mut Trans<'_>,
    ino: u64,
    i: &Inode,
) -> Result<Vec<(u64, u64)>, EngineError> {
    match i.xattr_form {
        XattrForm::Block if i.xattr_blk == 0 => Ok(Vec::new()),
        XattrForm::Block => {
            block::load(tx, ino, i)?;
            Ok(vec![(i.xattr_blk, 1)])
        }
        XattrForm::Tree => tree::blocks(tx, ino, i),
    }
}
