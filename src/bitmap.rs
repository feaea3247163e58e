//! One bit per block: what fsck has seen claimed, what the repair keeps.

pub(crate) struct Bitmap(Vec<u64>);

impl Bitmap {
    pub(crate) fn new(bits: u64) -> Bitmap {
        Bitmap(vec![0; bits.div_ceil(64) as usize])
    }
    pub(crate) fn get(&self, b: u64) -> bool {
        self.0
            .get((b / 64) as usize)
            .is_some_and(|w| w >> (b % 64) & 1 == 1)
    }
    /// Sets bit `b` (ignored beyond the end); returns whether it was set before.
    pub(crate) fn set(&mut self, b: u64) -> bool {
        match self.0.get_mut((b / 64) as usize) {
            Some(w) => {
                let was = *w >> (b % 64) & 1 == 1;
                *w |= 1 << (b % 64);
                was
            }
            None => false,
        }
    }
}
