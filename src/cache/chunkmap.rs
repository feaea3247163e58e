//! Which 128-byte chunks of a block changed: the unit in which regions are logged.

/// Granularity of logged regions: small enough that a one-field change logs little, large enough
/// that the map of a 64 KiB block is 512 bits.
pub(crate) const CHUNK_BYTES: usize = 128;
const WORDS: usize = (crate::format::BLOCK_SIZE_MAX as usize / CHUNK_BYTES) / 64;

#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkMap {
    bits: [u64; WORDS],
}

impl std::fmt::Debug for ChunkMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.runs(crate::format::BLOCK_SIZE_MAX as usize))
            .finish()
    }
}

impl ChunkMap {
    /// Marks the chunks covering bytes `off..off+len`.
    pub fn set_range(&mut self, off: usize, len: usize) {
        if len == 0 {
            return;
        }
        let first = off / CHUNK_BYTES;
        let last = (off + len - 1) / CHUNK_BYTES;
        for c in first..=last {
            self.bits[c / 64] |= 1 << (c % 64);
        }
    }
    /// Whether byte `off` lies in a marked chunk (for the debug builds' check that each changed
    /// byte was logged, its only user).
    #[cfg(debug_assertions)]
    pub(crate) fn covers(&self, off: usize) -> bool {
        self.get(off / CHUNK_BYTES)
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.bits.iter().all(|&w| w == 0)
    }
    pub(crate) fn clear(&mut self) {
        self.bits = [0; WORDS];
    }
    pub(crate) fn union(&mut self, other: &ChunkMap) {
        for (a, b) in self.bits.iter_mut().zip(other.bits.iter()) {
            *a |= b;
        }
    }
    fn get(&self, c: usize) -> bool {
        self.bits[c / 64] & (1 << (c % 64)) != 0
    }
    /// Runs of set chunks as (byte offset, byte length), within a block of `block_size`.
    pub fn runs(&self, block_size: usize) -> Vec<(usize, usize)> {
        let n = block_size.div_ceil(CHUNK_BYTES);
        let mut out = Vec::new();
        let mut c = 0;
        while c < n {
            if !self.get(c) {
                c += 1;
                continue;
            }
            let start = c;
            while c < n && self.get(c) {
                c += 1;
            }
            let off = start * CHUNK_BYTES;
            out.push((off, (c * CHUNK_BYTES).min(block_size) - off));
        }
        out
    }
}
