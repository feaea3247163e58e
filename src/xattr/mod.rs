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
use crate::format::attrtree as at;
use crate::format::inode::{Inode, XattrForm};
use crate::resv::XattrChange;
use crate::trans::Trans;

pub(crate) use crate::format::attrtree::{XATTR_NAME_MAX, XATTR_SIZE_MAX};

/// One attribute to set: its name and value, as [`set`] and the tree's steps pass them on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attr<'a> {
    pub(crate) name: &'a [u8],
    pub(crate) value: &'a [u8],
}

/// The inode a change of attributes works on, with the allocator its blocks come from and go
/// back to: what each step of a change passes on to the next.
pub(crate) struct Target<'a> {
    pub(crate) alloc: &'a Allocator,
    pub(crate) ino: u64,
    pub(crate) i: &'a mut Inode,
}

/// Ends one step of a change spanning several transactions (a value written or freed in several
/// runs): the inode written and the transaction rolled (`Trans::roll`), its buffer held.
pub(crate) type Roll<'r> = &'r mut dyn FnMut(&mut Trans<'_>, &Inode) -> Result<(), EngineError>;

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
        XattrForm::Tree => tree::find(tx, ino, i, name)?
            .map(|(_, _, o)| tree::read_value(tx, ino, &o))
            .transpose(),
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
    /// The free space has not the value's blocks: whatever steps were taken are undone, and the
    /// last is left for the caller to commit.
    NoSpace,
}

/// Sets `name` = `value`, replacing a value it has. The caller has checked the name and the
/// value's length, and whether the attribute may exist. A value the free space holds only in
/// several runs is written over several transactions, `roll` ending each but the last.
#[track_caller]
pub(crate) fn set(
    tx: &mut Trans<'_>,
    o: &mut Target<'_>,
    a: Attr<'_>,
    roll: Roll<'_>,
) -> Result<SetOutcome, EngineError> {
    let Attr { name, value } = a;
    debug_assert!(value.len() <= XATTR_SIZE_MAX && name.len() <= XATTR_NAME_MAX);
    if o.i.xattr_form == XattrForm::Tree {
        if tree::rewrite_same_length(tx, o, a)? {
            return Ok(SetOutcome::Done);
        }
        // May free the tree's last record: the form is looked at after.
        tree::clear_leftovers(tx, o, name, roll)?;
    }
    match o.i.xattr_form {
        XattrForm::Block => {
            let now = block::load(tx, o.ino, o.i)?;
            // No attribute and no block (a block is freed with its last attribute).
            let empty = now.is_empty() && o.i.xattr_blk == 0;
            let all = with_set(now, a);
            if block::fits(tx.block_size(), &all) {
                block::store(tx, o.alloc, o.ino, o.i, &all)?;
            } else if empty {
                // Nothing to move: the tree is made in this transaction, with the value, so no
                // crash finds a tree with no attributes (a move of none used to commit one).
                tree::create(tx, o, &[])?;
                if !tree::set(tx, o, a, roll)? {
                    tree::drop_empty(tx, o)?;
                    return Ok(SetOutcome::NoSpace);
                }
            } else {
                return Ok(SetOutcome::NeedsTree);
            }
        }
        XattrForm::Tree => {
            if !tree::set(tx, o, a, roll)? {
                return Ok(SetOutcome::NoSpace);
            }
        }
    }
    Ok(SetOutcome::Done)
}

/// The block form's attributes `all` with `a` set in them.
fn with_set(mut all: Attrs, Attr { name, value }: Attr<'_>) -> Attrs {
    match all.iter_mut().find(|(n, _)| n == name) {
        Some(e) => e.1 = value.to_vec(),
        None => all.push((name.to_vec(), value.to_vec())),
    }
    all
}

/// What [`set`] of `a` would change in the inode as it stands (read in `tx`): the reservation
/// table's measure of the step (`ResvTable::xattr_change`). A removal of `a.name` in its place
/// (an ACL the mode says all of) changes no more.
pub(crate) fn plan(
    tx: &mut Trans<'_>,
    ino: u64,
    i: &Inode,
    a: Attr<'_>,
) -> Result<XattrChange, EngineError> {
    let bs = tx.block_size() as usize;
    match i.xattr_form {
        XattrForm::Block => {
            let now = block::load(tx, ino, i)?;
            let len = |(n, v): &(Vec<u8>, Vec<u8>)| (n.len(), v.len());
            let (entries, record_bytes, remote_blocks) =
                now.iter().map(len).fold((0, 0, 0), |(e, r, b), (n, v)| {
                    (
                        e + 1,
                        r + at::record_len(bs, n, v) as u64,
                        b + at::remote_blocks(bs, n, v),
                    )
                });
            let empty = now.is_empty() && i.xattr_blk == 0;
            if block::fits(bs as u32, &with_set(now, a)) {
                // An existing block is rewritten in place.
                Ok(XattrChange::Block {
                    allocates: i.xattr_blk == 0,
                })
            } else if empty {
                // A new tree, with the value (`set`): levels 0.
                Ok(XattrChange::Tree {
                    levels: 0,
                    new_remote: at::remote_blocks(bs, a.name.len(), a.value.len()),
                    old_remote: None,
                })
            } else {
                Ok(XattrChange::ToTree {
                    entries,
                    record_bytes,
                    remote_blocks,
                    new_remote: at::remote_blocks(bs, a.name.len(), a.value.len()),
                })
            }
        }
        XattrForm::Tree => Ok(XattrChange::Tree {
            levels: i.xattr_level as u32 + 1,
            new_remote: at::remote_blocks(bs, a.name.len(), a.value.len()),
            old_remote: tree::freed_remote(tx, ino, i, a.name)?,
        }),
    }
}

/// Moves the attributes of an inode in the block form into a new tree (one transaction of kind
/// Xattr: the reservation table's `xattr_convert`).
#[track_caller]
pub(crate) fn to_tree(tx: &mut Trans<'_>, o: &mut Target<'_>) -> Result<(), EngineError> {
    debug_assert_eq!(o.i.xattr_form, XattrForm::Block);
    let all = block::load(tx, o.ino, o.i)?;
    block::store(tx, o.alloc, o.ino, o.i, &[])?;
    tree::create(tx, o, &all)
}

/// Removes `name`; false when it is not set. A value in several runs is freed over several
/// transactions, `roll` ending each but the last.
#[track_caller]
pub(crate) fn remove(
    tx: &mut Trans<'_>,
    o: &mut Target<'_>,
    name: &[u8],
    roll: Roll<'_>,
) -> Result<bool, EngineError> {
    if o.i.xattr_form == XattrForm::Tree {
        // May free the tree's last record: the form is looked at after.
        tree::clear_leftovers(tx, o, name, roll)?;
    }
    match o.i.xattr_form {
        XattrForm::Block => {
            let mut all = block::load(tx, o.ino, o.i)?;
            let before = all.len();
            all.retain(|(n, _)| n != name);
            if all.len() == before {
                return Ok(false);
            }
            block::store(tx, o.alloc, o.ino, o.i, &all)?;
            Ok(true)
        }
        XattrForm::Tree => tree::remove(tx, o, name, roll),
    }
}

/// One step of freeing every attribute of an inode being freed: the block form's block all at
/// once, else one attribute of the tree (its record, remote blocks and emptied blocks), or the
/// last run of a value in several. Returns whether attributes remain.
#[track_caller]
pub(crate) fn free_step(tx: &mut Trans<'_>, o: &mut Target<'_>) -> Result<bool, EngineError> {
    match o.i.xattr_form {
        XattrForm::Block => block::store(tx, o.alloc, o.ino, o.i, &[])?,
        XattrForm::Tree => tree::remove_first(tx, o)?,
    }
    Ok(o.i.xattr_blk != 0)
}

/// One attribute a repair keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Salvaged {
    pub(crate) name: Vec<u8>,
    pub(crate) value: Vec<u8>,
    /// The blocks it was read from (its xattr block, or its entry block and remote extent), as
    /// runs (start, length).
    pub(crate) from: Vec<(u64, u64)>,
}

/// What a repair can keep of an inode's damaged attributes (`salvage`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Salvage {
    /// The attributes intact.
    pub(crate) kept: Vec<Salvaged>,
    /// What was dropped and why, one line each.
    pub(crate) dropped: Vec<String>,
    /// A `system.posix_acl_access` dropped: None if none was; Some(None) if one was (by its
    /// name, or in the tree form by its name's hash) and its value could not be read.
    pub(crate) acl_lost: Option<Option<Vec<u8>>>,
    /// Bytes of names and values `kept` may still take: past them an attribute is dropped.
    budget_bytes: usize,
}

impl Salvage {
    fn drop_one(&mut self, what: String) {
        self.dropped.push(what);
    }

    /// Keeps `name` = `value` read from `blocks` unless the rules of names or ACLs refuse it, or
    /// it is there already.
    fn offer(&mut self, name: Vec<u8>, value: Vec<u8>, blocks: Vec<(u64, u64)>) {
        use crate::format::acl;
        let shown = String::from_utf8_lossy(&name).into_owned();
        if let Some(why) = crate::format::xattrblock::name_problem(&name) {
            return self.drop_one(format!("{shown:?}: {why}"));
        }
        if self.kept.iter().any(|k| k.name == name) {
            return self.drop_one(format!("{shown:?}: a second time"));
        }
        let bytes = name.len() + value.len();
        if bytes > self.budget_bytes {
            if name == acl::ACCESS {
                self.acl_lost = Some(Some(value));
            }
            return self.drop_one(format!(
                "{shown:?}: more than the repair may hold of salvaged attributes"
            ));
        }
        self.budget_bytes -= bytes;
        if name == acl::ACCESS || name == acl::DEFAULT {
            if let Err(why) = acl::decode(&value) {
                if name == acl::ACCESS {
                    self.acl_lost = Some(Some(value));
                }
                return self.drop_one(format!("{shown}: {why}"));
            }
        }
        self.kept.push(Salvaged {
            name,
            value,
            from: blocks,
        });
    }
}

/// The attributes of an inode whose attributes are at fault (`verify::Fault::Xattrs`) that can
/// be kept, and what cannot: each attribute is judged on its own (its entry, its record and
/// remote blocks, its name, an ACL's value), as xfs_repair salvages the entries of a damaged
/// leaf. Storage that cannot be read at all (an xattr block failing its checksum, a tree whose
/// nodes cannot be walked) loses what it held. At most `budget_bytes` of names and values are
/// kept: the caller holds them in memory.
pub(crate) fn salvage(tx: &mut Trans<'_>, ino: u64, i: &Inode, budget_bytes: usize) -> Salvage {
    let mut s = Salvage {
        budget_bytes,
        ..Default::default()
    };
    match i.xattr_form {
        XattrForm::Block => block::salvage(tx, ino, i, &mut s),
        XattrForm::Tree => tree::salvage(tx, ino, i, &mut s),
    }
    s
}

/// Every block the inode's attributes own, as runs (start, length), each checked by the
/// format's verifiers, and how many INCOMPLETE records (changes a crash cut short) hold some of
/// them: the one verdict the checker and the repairer take.
pub(crate) fn blocks(
    tx: &mut Trans<'_>,
    ino: u64,
    i: &Inode,
) -> Result<(Vec<(u64, u64)>, u64), EngineError> {
    match i.xattr_form {
        XattrForm::Block if i.xattr_blk == 0 => Ok((Vec::new(), 0)),
        XattrForm::Block => {
            block::load(tx, ino, i)?;
            Ok((vec![(i.xattr_blk, 1)], 0))
        }
        XattrForm::Tree => tree::blocks(tx, ino, i),
    }
}
