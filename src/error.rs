//! The error every layer from the engine up returns: what went wrong, named once, so that the
//! request layer maps it to one errno. It sits just above the device and the format, whose errors
//! it carries; the layers between (cache, log) convert theirs where they are defined.

use crate::device::DevError;
use crate::format::FormatError;
use std::fmt;

#[derive(Debug)]
pub enum EngineError {
    /// The filesystem shut down after an error (named) or was unmounted.
    Shutdown(String),
    Io(DevError),
    Corrupt(FormatError),
    /// A request or configuration that cannot be served, with the reason.
    Invalid(String),
    /// No free space (or no free inode) where it was needed.
    NoSpace(String),
    /// The inode no longer exists (its slot is free).
    Stale(u64),
    /// A size, write or allocation past the largest file size (EFBIG), with what asked.
    TooBig(String),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Shutdown(w) => write!(f, "filesystem shut down: {w}"),
            EngineError::Io(e) => write!(f, "{e}"),
            EngineError::Corrupt(e) => write!(f, "corrupt metadata: {e}"),
            EngineError::Invalid(w) => write!(f, "{w}"),
            EngineError::NoSpace(w) => write!(f, "no space: {w}"),
            EngineError::Stale(ino) => write!(f, "inode {ino} no longer exists"),
            EngineError::TooBig(w) => write!(f, "{w}"),
        }
    }
}

impl std::error::Error for EngineError {}

impl From<FormatError> for EngineError {
    fn from(e: FormatError) -> Self {
        EngineError::Corrupt(e)
    }
}
