//! ticketfs: a transactional, journaling filesystem whose transactions reserve, when they begin,
//! the log space and the memory they may need in the worst case.
//!
//! The modules are layered (docs/design.md, "Layers"; checked by tests/layers.rs): a module uses
//! only the layers below it, from `format` and `device` at the bottom through the cache, log,
//! reservation table, engine and transactions, the B+tree and allocator, inodes, directories and
//! files, the POSIX layer and fsck, up to the request layer and the transports.

// The public face. What is `pub` here and in the modules is what something outside this library
// crate uses: the mount binary (src/main.rs), the mkfs, fsck and stress crates, the integration
// tests (tests/) and the benchmarks (benches/), with the types that appear in those items'
// signatures. Everything else is crate-private by default (`pub(crate)`): an item becomes `pub`
// when one of those users needs it, not before.

// Used from outside the crate.
pub mod alloc;
pub mod btree;
pub mod budget;
pub mod cache;
pub mod check;
pub mod cli;
pub mod daemon;
pub mod db;
pub mod device;
pub mod dir;
pub mod engine;
pub mod file;
pub mod format;
pub mod fs;
pub mod holders;
pub mod image;
pub mod inode;
pub mod log;
pub mod mem;
pub mod mkfs;
pub mod mountinfo;
pub mod progress;
pub mod repair;
pub mod rundir;
pub mod sbselect;
pub mod stats;
pub mod trans;

// Used only inside the crate.
pub(crate) mod bitmap;
pub(crate) mod devfuse;
pub(crate) mod error;
pub(crate) mod kmount;
pub(crate) mod ops;
pub(crate) mod proto;
pub(crate) mod resv;
pub(crate) mod ring;
pub(crate) mod symlink;
pub(crate) mod verify;
pub(crate) mod xattr;

pub use engine::{Engine, EngineOptions, EngineStats};
pub use error::EngineError;
pub use trans::{Trans, TransKind};
