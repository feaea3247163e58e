//! Heap buffers aligned for O_DIRECT.

use std::alloc::{alloc_zeroed, dealloc, handle_alloc_error, Layout};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::Mutex;

/// Alignment of every block buffer: the largest logical sector size O_DIRECT may demand.
pub(crate) const DIRECT_IO_ALIGN: usize = 4096;

/// Buffers of exactly one page (the usual block) come from a free list of pages carved out of
/// mappings of this many pages. glibc's aligned allocation wastes up to a page beside each
/// page-aligned block (measured: a daemon's resident size twice its cache), and page buffers
/// come and go with the cache all the time. Pages freed go back on the list, never to the system:
/// what the list holds is bounded by the most page buffers ever live, which the budget bounds.
const PAGE_CHUNK_PAGES: usize = 64;
const PAGE_BYTES: usize = DIRECT_IO_ALIGN;

/// Free pages (addresses), shared by every thread.
static FREE_PAGES: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// A zeroed page from the free list, mapping a new chunk when it is empty.
fn page_alloc() -> NonNull<u8> {
    let mut free = FREE_PAGES.lock().unwrap_or_else(|e| e.into_inner());
    if free.is_empty() {
        let bytes = PAGE_CHUNK_PAGES * PAGE_BYTES;
        // SAFETY: an anonymous private mapping; the result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            drop(free);
            handle_alloc_error(AlignedBuf::layout(PAGE_BYTES));
        }
        // Fresh anonymous pages are zero: hand out the first, keep the rest.
        let base = p as usize;
        free.extend((1..PAGE_CHUNK_PAGES).map(|i| base + i * PAGE_BYTES));
        // SAFETY: mmap succeeded, so base is non-null.
        return unsafe { NonNull::new_unchecked(base as *mut u8) };
    }
    let addr = free.pop().unwrap_or_default();
    drop(free);
    let p = addr as *mut u8;
    // SAFETY: the page came back from a dropped AlignedBuf; nobody else refers to it.
    unsafe { std::ptr::write_bytes(p, 0, PAGE_BYTES) };
    // SAFETY: addresses on the list are never null.
    unsafe { NonNull::new_unchecked(p) }
}

fn page_free(p: NonNull<u8>) {
    FREE_PAGES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(p.as_ptr() as usize);
}

/// A zero-initialised byte buffer aligned to `DIRECT_IO_ALIGN`.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only allow reads of the owned bytes.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    pub fn new(len: usize) -> AlignedBuf {
        assert!(len > 0, "AlignedBuf of zero length");
        if len == PAGE_BYTES {
            return AlignedBuf {
                ptr: page_alloc(),
                len,
            };
        }
        let layout = Self::layout(len);
        // SAFETY: layout has a non-zero size.
        let p = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(p).unwrap_or_else(|| handle_alloc_error(layout));
        AlignedBuf { ptr, len }
    }
    fn layout(len: usize) -> Layout {
        // Proven invariant: Layout fails only past isize::MAX bytes, and every buffer here is a
        // block, a log record, a recovery chunk (1 MiB) or one FUSE write (1 MiB).
        Layout::from_size_align(len, DIRECT_IO_ALIGN).expect("aligned buffer layout")
    }
    pub(crate) fn is_aligned(buf: &[u8]) -> bool {
        (buf.as_ptr() as usize).is_multiple_of(DIRECT_IO_ALIGN)
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.len == PAGE_BYTES {
            page_free(self.ptr);
            return;
        }
        // SAFETY: allocated in `new` with this very layout.
        unsafe { dealloc(self.ptr.as_ptr(), Self::layout(self.len)) }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr points at len initialised bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref, and &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Clone for AlignedBuf {
    fn clone(&self) -> AlignedBuf {
        let mut b = AlignedBuf::new(self.len);
        b.copy_from_slice(self);
        b
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}
