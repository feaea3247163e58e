//! Block devices: the trait the engine writes through, and its backends.
//!
//! All addresses are in filesystem blocks; a buffer's length is a whole number of blocks.

mod aligned;
mod fault;
mod file;
mod flushes;
mod mem;
mod overlay;
mod recording;

pub use aligned::AlignedBuf;
pub(crate) use aligned::DIRECT_IO_ALIGN;
pub use fault::{FaultDevice, FaultKind, FaultOp, FaultRule};
pub use file::FileDevice;
pub(crate) use flushes::FlushTracked;
pub use mem::MemDevice;
pub use overlay::OverlayDevice;
pub use recording::{DevEvent, RecordingDevice};

use std::fmt;
use std::io;

/// A device operation that failed.
#[derive(Debug)]
pub struct DevError {
    pub(crate) op: &'static str,
    pub(crate) blkno: u64,
    pub(crate) blocks: u64,
    pub(crate) source: io::Error,
}

impl DevError {
    pub(crate) fn new(op: &'static str, blkno: u64, blocks: u64, source: io::Error) -> DevError {
        DevError {
            op,
            blkno,
            blocks,
            source,
        }
    }
    pub(crate) fn errno(&self) -> i32 {
        self.source.raw_os_error().unwrap_or(libc::EIO)
    }
}

impl fmt::Display for DevError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "device {} of {} block(s) at block {}: {}",
            self.op, self.blocks, self.blkno, self.source
        )
    }
}

impl std::error::Error for DevError {}

/// A block device. Implementations are shared between threads.
pub trait Device: Send + Sync {
    fn block_size(&self) -> u32;
    fn block_count(&self) -> u64;
    /// Reads `buf.len() / block_size` blocks starting at `blkno`.
    fn read(&self, blkno: u64, buf: &mut [u8]) -> Result<(), DevError>;
    /// Reads file data: the same blocks as `read`, but a backend may serve them from a cache
    /// below it (the image's page cache), as they are never the engine's metadata. Writes
    /// through `write` must be seen by a later `read_data` of the same blocks.
    fn read_data(&self, blkno: u64, buf: &mut [u8]) -> Result<(), DevError> {
        self.read(blkno, buf)
    }
    /// Writes `buf.len() / block_size` blocks starting at `blkno`. Not durable until `flush`.
    fn write(&self, blkno: u64, buf: &[u8]) -> Result<(), DevError>;
    /// Writes file data: the same as `write`, but a backend may keep it in a cache below it
    /// (the image's page cache) until the next `flush`, which makes it durable all the same.
    fn write_data(&self, blkno: u64, buf: &[u8]) -> Result<(), DevError> {
        self.write(blkno, buf)
    }
    /// Makes every completed write durable.
    fn flush(&self) -> Result<(), DevError>;
}

/// A device stacked on another that leaves reads alone: its size and every read are those of
/// the device `below`; only what it does on a write or a flush is its own (`FlushTracked`
/// numbers its flushes, `RecordingDevice` records its writes and flushes).
pub(crate) trait Stacked: Send + Sync {
    fn below(&self) -> &dyn Device;
    /// `Device::write` of this device, or with `data` its `Device::write_data`.
    fn write_blocks(&self, blkno: u64, buf: &[u8], data: bool) -> Result<(), DevError>;
    /// `Device::flush` of this device.
    fn flush_blocks(&self) -> Result<(), DevError>;
}

impl<S: Stacked> Device for S {
    fn block_size(&self) -> u32 {
        self.below().block_size()
    }
    fn block_count(&self) -> u64 {
        self.below().block_count()
    }
    fn read(&self, blkno: u64, buf: &mut [u8]) -> Result<(), DevError> {
        self.below().read(blkno, buf)
    }
    fn read_data(&self, blkno: u64, buf: &mut [u8]) -> Result<(), DevError> {
        self.below().read_data(blkno, buf)
    }
    fn write(&self, blkno: u64, buf: &[u8]) -> Result<(), DevError> {
        self.write_blocks(blkno, buf, false)
    }
    fn write_data(&self, blkno: u64, buf: &[u8]) -> Result<(), DevError> {
        self.write_blocks(blkno, buf, true)
    }
    fn flush(&self) -> Result<(), DevError> {
        self.flush_blocks()
    }
}

/// Validates an I/O request against the device's size; shared by every backend.
pub(crate) fn check_range(
    op: &'static str,
    blkno: u64,
    len: usize,
    block_size: u32,
    block_count: u64,
) -> Result<u64, DevError> {
    let bs = block_size as usize;
    let blocks = (len / bs) as u64;
    // Either refusal is the same error of this request, but for why.
    let invalid = |why: String| {
        let source = io::Error::new(io::ErrorKind::InvalidInput, why);
        DevError::new(op, blkno, blocks, source)
    };
    if len == 0 || !len.is_multiple_of(bs) {
        return Err(invalid(format!(
            "length {len} is not a whole number of {bs}-byte blocks"
        )));
    }
    if blkno
        .checked_add(blocks)
        .is_none_or(|end| end > block_count)
    {
        return Err(invalid(format!(
            "beyond the end of the device ({block_count} blocks)"
        )));
    }
    Ok(blocks)
}
