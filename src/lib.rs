//! ticketfs: a transactional, journaling filesystem whose transactions reserve, when they begin,
//! the log space and the memory they may need in the worst case.
//!
//! The modules are layered (docs/design.md, "Layers"; checked by tests/layers.rs): a module uses
//! only the layers below it, from `format` and `device` at the bottom through the cache, log,
//! reservation table, engine and transactions, the B+tree and allocator, inodes, directories and
//! files, the POSIX layer and fsck, up to the request layer and the transports.

pub mod alloc;
pub mod bitmap;
pub mod btree;
pub mod budget;
pub mod cache;
pub mod check;
pub mod cli;
pub mod daemon;
pub mod db;
pub mod devfuse;
pub mod device;
pub mod dir;
pub mod engine;
pub mod error;
pub mod file;
pub mod format;
pub mod fs;
pub mod image;
pub mod inode;
pub mod kmount;
pub mod log;
pub mod mem;
pub mod mkfs;
pub mod mountinfo;
pub mod ops;
pub mod progress;
pub mod proto;
pub mod repair;
pub mod resv;
pub mod ring;
pub mod rundir;
pub mod sbselect;
pub mod stats;
pub mod symlink;
pub mod trans;
pub mod verify;
pub mod xattr;

pub use engine::{Engine, EngineOptions, EngineStats};
pub use error::EngineError;
pub use trans::{BufId, Trans, TransKind};
