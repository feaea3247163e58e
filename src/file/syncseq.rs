//! What fdatasync must force: per inode, the newest commit sequence that changed it in anything
//! but its times: what reading its data depends on (its size and extent map), and, as XFS
//! forces an inode's log items for any change but a timestamp update, its names and link count,
//! mode, owner and xattrs (`Fs::note_change`). The inodes are hashed
//! into a fixed number of stripes, each keeping the newest sequence of its inodes, so two inodes
//! sharing a stripe only make each other's fdatasync force a little more than it needs.
//! Nothing recorded (0) means nothing of that kind changed since the mount (whose recovery made
//! everything before it durable).

use std::sync::atomic::{AtomicU64, Ordering};

/// Stripes of the table: 8 KiB, and collisions rare for the files being written at once.
pub(crate) const DATA_SEQ_STRIPES: usize = 1024;

pub struct DataSeqs {
    stripes: Box<[AtomicU64]>,
}

impl Default for DataSeqs {
    fn default() -> Self {
        DataSeqs {
            stripes: (0..DATA_SEQ_STRIPES).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl DataSeqs {
    fn stripe(&self, ino: u64) -> &AtomicU64 {
        // Fibonacci hashing: consecutive inode numbers land far apart.
        let h = ino.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 54;
        &self.stripes[h as usize % DATA_SEQ_STRIPES]
    }

    /// Inode `ino`'s size or map changed in a commit at or before sequence `seq`.
    pub(crate) fn note(&self, ino: u64, seq: u64) {
        self.stripe(ino).fetch_max(seq, Ordering::SeqCst);
    }

    /// The sequence fdatasync of `ino` must force (0: none).
    pub(crate) fn get(&self, ino: u64) -> u64 {
        self.stripe(ino).load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stripe_keeps_the_newest_sequence_of_its_inodes() {
        let s = DataSeqs::default();
        assert_eq!(s.get(7), 0);
        s.note(7, 5);
        s.note(7, 3);
        assert_eq!(s.get(7), 5);
        // Some other inode shares 7's stripe: it sees at least 7's sequence.
        let other = (8..100_000u64)
            .find(|&i| std::ptr::eq(s.stripe(i), s.stripe(7)))
            .expect("a colliding inode");
        assert_eq!(s.get(other), 5);
        s.note(other, 9);
        assert_eq!(s.get(7), 9);
    }
}
