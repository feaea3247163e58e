//! Names in directories: the one rule for what a stored name may be, shared by the request
//! layer (what a create may store), the checker and the repairer (what a stored entry may hold);
//! and the hash that keys both the directory and the attribute hash trees.

/// Longest name, as POSIX NAME_MAX (and the one-byte length of a stored entry's name).
pub(crate) const NAME_MAX: usize = 255;

/// What is wrong with a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameProblem {
    Empty,
    TooLong,
    /// A '/' would make it a path.
    Slash,
    /// A NUL would cut it short for every C caller.
    Nul,
    /// "." and ".." are answered from the inode (itself, its parent), never stored.
    Dot,
}

impl NameProblem {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            NameProblem::Empty => "is empty",
            NameProblem::TooLong => "is longer than 255 bytes",
            NameProblem::Slash => "contains '/'",
            NameProblem::Nul => "contains a NUL byte",
            NameProblem::Dot => "is . or .., which no directory stores",
        }
    }
}

/// Why `name` cannot be a stored directory entry, if it cannot.
pub fn name_problem(name: &[u8]) -> Option<NameProblem> {
    if name.is_empty() {
        Some(NameProblem::Empty)
    } else if name.len() > NAME_MAX {
        Some(NameProblem::TooLong)
    } else if name.contains(&b'/') {
        Some(NameProblem::Slash)
    } else if name.contains(&0) {
        Some(NameProblem::Nul)
    } else if name == b"." || name == b".." {
        Some(NameProblem::Dot)
    } else {
        None
    }
}

/// The 32-bit FNV-1a hash of a name: stable, documented, cheap. It keys directory entries
/// (TKBD) and attribute entries (TKBA) alike.
pub fn name_hash(name: &[u8]) -> u64 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in name {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h as u64
}
