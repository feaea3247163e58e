//! A copy-on-write view of a device: reads come from the device unless the block was written
//! through the overlay; writes stay in memory. fsck -n replays the log and mounts through one, so
//! it checks the recovered state without writing a byte to the image.

use super::{check_range, DevError, Device};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

pub struct OverlayDevice {
    base: Arc<dyn Device>,
    written: Mutex<HashMap<u64, Vec<u8>>>,
}

impl OverlayDevice {
    pub fn new(base: Arc<dyn Device>) -> OverlayDevice {
        OverlayDevice {
            base,
            written: Mutex::new(HashMap::new()),
        }
    }
}

impl Device for OverlayDevice {
    fn block_size(&self) -> u32 {
        self.base.block_size()
    }
    fn block_count(&self) -> u64 {
        self.base.block_count()
    }
    fn read(&self, blkno: u64, buf: &mut [u8]) -> Result<(), DevError> {
        let bs = self.block_size() as usize;
        let n = check_range(
            "read",
            blkno,
            buf.len(),
            self.block_size(),
            self.block_count(),
        )?;
        self.base.read(blkno, buf)?;
        let w = self.written.lock();
        for i in 0..n {
            if let Some(b) = w.get(&(blkno + i)) {
                buf[i as usize * bs..(i as usize + 1) * bs].copy_from_slice(b);
            }
        }
        Ok(())
    }
    fn write(&self, blkno: u64, buf: &[u8]) -> Result<(), DevError> {
        let bs = self.block_size() as usize;
        let n = check_range(
            "write",
            blkno,
            buf.len(),
            self.block_size(),
            self.block_count(),
        )?;
        let mut w = self.written.lock();
        for i in 0..n {
            w.insert(
                blkno + i,
                buf[i as usize * bs..(i as usize + 1) * bs].to_vec(),
            );
        }
        Ok(())
    }
    fn flush(&self) -> Result<(), DevError> {
        Ok(())
    }
}
