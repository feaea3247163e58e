//! Little-endian field encoders and decoders at explicit offsets. No transmutes: each field is
//! written and read byte by byte, so the layout is exactly what docs/design.md says.

use super::FormatError;
use std::cell::{Cell, RefCell};

/// One field a decoder read: which structure, which field, where in the slice it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRead {
    pub(crate) structure: &'static str,
    pub field: &'static str,
    pub off: usize,
    pub len: usize,
}

thread_local! {
    static RECORDING: Cell<bool> = const { Cell::new(false) };
    static READS: RefCell<Vec<FieldRead>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` and returns, with its result, every field the decoders read on this thread while
/// it ran: the list of a structure's fields comes from its decoder, the one place that knows
/// them (the field fuzzer uses it; nothing else records).
pub fn record_fields<T>(f: impl FnOnce() -> T) -> (T, Vec<FieldRead>) {
    READS.with(|r| r.borrow_mut().clear());
    RECORDING.with(|c| c.set(true));
    let out = f();
    RECORDING.with(|c| c.set(false));
    (out, READS.with(|r| std::mem::take(&mut *r.borrow_mut())))
}

/// Writes fields into a byte slice at fixed offsets.
pub(crate) struct Enc<'a> {
    buf: &'a mut [u8],
}

impl<'a> Enc<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Enc { buf }
    }
    pub(crate) fn u8(&mut self, off: usize, v: u8) {
        self.buf[off] = v;
    }
    pub(crate) fn u16(&mut self, off: usize, v: u16) {
        self.buf[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u32(&mut self, off: usize, v: u32) {
        self.buf[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, off: usize, v: u64) {
        self.buf[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn bytes(&mut self, off: usize, v: &[u8]) {
        self.buf[off..off + v.len()].copy_from_slice(v);
    }
}

/// Reads fields from a byte slice at fixed offsets; a read past the end is a [`FormatError`]
/// naming the structure and field, never a panic.
pub(crate) struct Dec<'a> {
    buf: &'a [u8],
    blkno: u64,
    structure: &'static str,
}

impl<'a> Dec<'a> {
    pub(crate) fn new(buf: &'a [u8], blkno: u64, structure: &'static str) -> Self {
        Dec {
            buf,
            blkno,
            structure,
        }
    }
    pub(crate) fn err(&self, field: &'static str, detail: impl Into<String>) -> FormatError {
        FormatError::new(self.blkno, self.structure, field, detail)
    }
    fn slice(&self, off: usize, len: usize, field: &'static str) -> Result<&'a [u8], FormatError> {
        if RECORDING.with(|c| c.get()) {
            READS.with(|r| {
                r.borrow_mut().push(FieldRead {
                    structure: self.structure,
                    field,
                    off,
                    len,
                })
            });
        }
        off.checked_add(len)
            .and_then(|end| self.buf.get(off..end))
            .ok_or_else(|| {
                self.err(
                    field,
                    format!(
                        "truncated: needs bytes {}..{}, have {}",
                        off,
                        off + len,
                        self.buf.len()
                    ),
                )
            })
    }
    pub(crate) fn u8(&self, off: usize, field: &'static str) -> Result<u8, FormatError> {
        Ok(self.slice(off, 1, field)?[0])
    }
    pub(crate) fn u16(&self, off: usize, field: &'static str) -> Result<u16, FormatError> {
        let s = self.slice(off, 2, field)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    pub(crate) fn u32(&self, off: usize, field: &'static str) -> Result<u32, FormatError> {
        let s = self.slice(off, 4, field)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    pub(crate) fn u64(&self, off: usize, field: &'static str) -> Result<u64, FormatError> {
        let s = self.slice(off, 8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
    pub(crate) fn bytes<const N: usize>(
        &self,
        off: usize,
        field: &'static str,
    ) -> Result<[u8; N], FormatError> {
        let s = self.slice(off, N, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    pub(crate) fn slice_at(
        &self,
        off: usize,
        len: usize,
        field: &'static str,
    ) -> Result<&'a [u8], FormatError> {
        self.slice(off, len, field)
    }
    /// Fails with a named error unless `got == want`.
    pub(crate) fn expect_u32(
        &self,
        got: u32,
        want: u32,
        field: &'static str,
    ) -> Result<(), FormatError> {
        if got == want {
            Ok(())
        } else {
            Err(self.err(field, format!("is {got:#x}, expected {want:#x}")))
        }
    }
}
