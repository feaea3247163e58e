//! A device in memory, for tests and for fsck's in-memory replay.

use super::{check_range, DevError, Device};
use parking_lot::RwLock;

pub struct MemDevice {
    data: RwLock<Vec<u8>>,
    block_size: u32,
    block_count: u64,
}

impl MemDevice {
    pub fn new(block_size: u32, block_count: u64) -> MemDevice {
        MemDevice {
            data: RwLock::new(vec![0u8; (block_size as u64 * block_count) as usize]),
            block_size,
            block_count,
        }
    }
    /// A device holding a copy of `image`.
    pub fn from_bytes(block_size: u32, image: Vec<u8>) -> MemDevice {
        let block_count = image.len() as u64 / block_size as u64;
        MemDevice {
            data: RwLock::new(image),
            block_size,
            block_count,
        }
    }
    /// A copy of the whole device.
    pub fn snapshot(&self) -> Vec<u8> {
        self.data.read().clone()
    }
}

impl Device for MemDevice {
    fn block_size(&self) -> u32 {
        self.block_size
    }
    fn block_count(&self) -> u64 {
        self.block_count
    }
    fn read(&self, blkno: u64, buf: &mut [u8]) -> Result<(), DevError> {
        check_range("read", blkno, buf.len(), self.block_size, self.block_count)?;
        let off = (blkno * self.block_size as u64) as usize;
        buf.copy_from_slice(&self.data.read()[off..off + buf.len()]);
        Ok(())
    }
    fn write(&self, blkno: u64, buf: &[u8]) -> Result<(), DevError> {
        check_range("write", blkno, buf.len(), self.block_size, self.block_count)?;
        let off = (blkno * self.block_size as u64) as usize;
        self.data.write()[off..off + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&self) -> Result<(), DevError> {
        Ok(())
    }
}
