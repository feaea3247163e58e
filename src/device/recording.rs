//! A device that records every write and flush, in issue order, so tests can rebuild the image as
//! it could be after a crash at any point: everything before the last completed flush, plus any
//! subset, in any order, of the writes after it.

use super::{DevError, Device, MemDevice, Stacked};
use parking_lot::Mutex;

#[derive(Debug, Clone)]
pub enum DevEvent {
    /// One block written (a multi-block write is recorded block by block: blocks may tear apart).
    Write {
        blkno: u64,
        data: Vec<u8>,
    },
    Flush,
}

pub struct RecordingDevice {
    inner: MemDevice,
    events: Mutex<Vec<DevEvent>>,
}

impl RecordingDevice {
    /// Records writes on top of a copy of `base`.
    pub fn new(block_size: u32, base: Vec<u8>) -> RecordingDevice {
        RecordingDevice {
            inner: MemDevice::from_bytes(block_size, base),
            events: Mutex::new(Vec::new()),
        }
    }
    /// Number of events so far: a position in the history.
    pub fn event_count(&self) -> usize {
        self.events.lock().len()
    }
    pub fn events(&self) -> Vec<DevEvent> {
        self.events.lock().clone()
    }
}

impl Stacked for RecordingDevice {
    fn below(&self) -> &dyn Device {
        &self.inner
    }
    /// File data is recorded as any write is (`data` makes no difference).
    fn write_blocks(&self, blkno: u64, buf: &[u8], _data: bool) -> Result<(), DevError> {
        // The lock orders the events exactly as the writes reach the device.
        let mut ev = self.events.lock();
        self.inner.write(blkno, buf)?;
        let bs = self.block_size() as usize;
        for (i, chunk) in buf.chunks(bs).enumerate() {
            ev.push(DevEvent::Write {
                blkno: blkno + i as u64,
                data: chunk.to_vec(),
            });
        }
        Ok(())
    }
    fn flush_blocks(&self) -> Result<(), DevError> {
        let mut ev = self.events.lock();
        self.inner.flush()?;
        ev.push(DevEvent::Flush);
        Ok(())
    }
}
