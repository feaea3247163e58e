//! Little-endian field encoders and decoders at explicit offsets. No transmutes: each field is
//! written and read byte by byte, so the layout is exactly what docs/design.md says.

use super::FormatError;
#[cfg(feature = "field-recording")]
use std::cell::{Cell, RefCell};
#[cfg(feature = "field-recording")]
use std::sync::atomic::{AtomicUsize, Ordering};

/// One field a decoder read: which structure, which field, where in the slice it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRead {
    pub(crate) structure: &'static str,
    pub field: &'static str,
    pub off: usize,
    pub len: usize,
}

#[cfg(feature = "field-recording")]
thread_local! {
    static RECORDING: Cell<bool> = const { Cell::new(false) };
    static READS: RefCell<Vec<FieldRead>> = const { RefCell::new(Vec::new()) };
}

/// Threads recording now. Recording is for the field fuzzer only, so it is compiled in only
/// with the feature `field-recording` (the tests turn it on through the package's
/// dev-dependency on itself; a release build has none of it): even one check per field read,
/// inlined into every decoder, cost the daemon 5-12% more instructions per create/write/unlink
/// round (callgrind, benches/memres-cost.sh, docs/performance.md).
#[cfg(feature = "field-recording")]
static RECORDERS: AtomicUsize = AtomicUsize::new(0);

/// Runs `f` and returns, with its result, every field the decoders read on this thread while
/// it ran: the list of a structure's fields comes from its decoder, the one place that knows
/// them (the field fuzzer uses it; nothing else records).
#[cfg(feature = "field-recording")]
pub fn record_fields<T>(f: impl FnOnce() -> T) -> (T, Vec<FieldRead>) {
    READS.with(|r| r.borrow_mut().clear());
    RECORDING.with(|c| c.set(true));
    RECORDERS.fetch_add(1, Ordering::Relaxed);
    let out = f();
    RECORDERS.fetch_sub(1, Ordering::Relaxed);
    RECORDING.with(|c| c.set(false));
    (out, READS.with(|r| std::mem::take(&mut *r.borrow_mut())))
}

/// Notes a field read when this thread records (out of line: the decoders stay small).
#[cfg(feature = "field-recording")]
#[cold]
#[inline(never)]
fn note_read(structure: &'static str, field: &'static str, off: usize, len: usize) {
    if RECORDING.with(|c| c.get()) {
        READS.with(|r| {
            r.borrow_mut().push(FieldRead {
                structure,
                field,
                off,
                len,
            })
        });
    }
}

/// A structure's plain little-endian fields, each `name: type @ offset` (the type one of
/// [`Enc`]'s and [`Dec`]'s `u8`, `u16`, `u32`, `u64`), declared once inside the structure's
/// `impl`: generates `encode_fields`, which writes them, and `decode_fields`, which reads each
/// into the structure (a short buffer is an error naming the field). Both directions come from
/// the one list, so an offset cannot differ between them; fields that need checks or other
/// types are written out beside it.
macro_rules! plain_fields {
    ($($field:ident : $ty:ident @ $off:expr),+ $(,)?) => {
        fn encode_fields(&self, e: &mut $crate::format::Enc<'_>) {
            $(e.$ty($off, self.$field);)+
        }
        fn decode_fields(
            &mut self,
            d: &$crate::format::Dec<'_>,
        ) -> Result<(), $crate::format::FormatError> {
            $(self.$field = d.$ty($off, stringify!($field))?;)+
            Ok(())
        }
    };
}
pub(crate) use plain_fields;

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
    /// Some thread records (`RECORDERS`), looked at once per decoder, not per field.
    #[cfg(feature = "field-recording")]
    recording: bool,
}

impl<'a> Dec<'a> {
    pub(crate) fn new(buf: &'a [u8], blkno: u64, structure: &'static str) -> Self {
        Dec {
            buf,
            blkno,
            structure,
            #[cfg(feature = "field-recording")]
            recording: RECORDERS.load(Ordering::Relaxed) != 0,
        }
    }
    pub(crate) fn err(&self, field: &'static str, detail: impl Into<String>) -> FormatError {
        FormatError::new(self.blkno, self.structure, field, detail)
    }
    // The field readers are inlined into each decoder: a decoder reads a few dozen fields,
    // and out of line each read cost a call and a returned Result of FormatError's size.
    // Only the error, which is rare, is built out of line.
    #[inline]
    fn slice(&self, off: usize, len: usize, field: &'static str) -> Result<&'a [u8], FormatError> {
        #[cfg(feature = "field-recording")]
        if self.recording {
            note_read(self.structure, field, off, len);
        }
        match off.checked_add(len).and_then(|end| self.buf.get(off..end)) {
            Some(s) => Ok(s),
            None => Err(self.truncated(off, len, field)),
        }
    }
    #[cold]
    #[inline(never)]
    fn truncated(&self, off: usize, len: usize, field: &'static str) -> FormatError {
        self.err(
            field,
            format!(
                "truncated: needs bytes {}..{}, have {}",
                off,
                off.saturating_add(len),
                self.buf.len()
            ),
        )
    }
    #[inline]
    pub(crate) fn u8(&self, off: usize, field: &'static str) -> Result<u8, FormatError> {
        Ok(self.slice(off, 1, field)?[0])
    }
    #[inline]
    pub(crate) fn u16(&self, off: usize, field: &'static str) -> Result<u16, FormatError> {
        let s = self.slice(off, 2, field)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    #[inline]
    pub(crate) fn u32(&self, off: usize, field: &'static str) -> Result<u32, FormatError> {
        let s = self.slice(off, 4, field)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    #[inline]
    pub(crate) fn u64(&self, off: usize, field: &'static str) -> Result<u64, FormatError> {
        let s = self.slice(off, 8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
    #[inline]
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
