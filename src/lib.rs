//! ticketfs: a transactional, journaling filesystem whose transactions reserve, when they begin,
//! the log space and the memory they may need in the worst case.
//!
//! Layers, top to bottom (data flows down): `trans` (transactions and the reservation table),
//! `log` (grant heads, CIL, checkpoint writer, AIL, recovery), `cache` (metadata buffers), `mem`
//! (budget, gate, overrun reports, statistics), `format` (on-disk structures), `device`.

pub mod alloc;
pub mod bitmap;
pub mod btree;
pub mod cache;
pub mod check;
pub mod db;
pub mod devfuse;
pub mod device;
pub mod dir;
pub mod engine;
pub mod file;
pub mod format;
pub mod fs;
pub mod image;
pub mod inode;
pub mod kmount;
pub mod log;
pub mod mem;
pub mod mkfs;
pub mod ops;
pub mod proto;
pub mod repair;
pub mod ring;
pub mod rundir;
pub mod sbselect;
pub mod stats;
pub mod symlink;
pub mod trans;
pub mod verify;
pub mod xattr;

pub use engine::{Engine, EngineError, EngineOptions, EngineStats};
pub use trans::{BufId, Trans, TransKind};
