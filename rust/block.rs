//! `BlockBuf`: the byte buffer of a ring block, mapped straight from the kernel.
//!
//! Blocks are large (256 KiB) and, in a compressing ring, short-lived: each is freed once its
//! packed form replaces it. Through malloc, freed blocks would stay in the process as free heap
//! (glibc moves its mmap threshold above a freed mapping's size, so later blocks come from the
//! heap, whose holes it does not give back), and the memory a compressing ring saves would not
//! show in RSS. A mapping of our own goes back to the kernel the moment it is dropped. Its pages
//! are also faulted in with one call (`MAP_POPULATE`) rather than one fault per page as records
//! are copied in (a first touch of fresh memory is costly, more so in a VM).

use std::ops::Deref;
use std::ptr::NonNull;

/// A fixed-capacity, append-only byte buffer in its own anonymous mapping.
pub(crate) struct BlockBuf {
    start: NonNull<u8>,
    len: usize,
    /// What was asked for: appends stop there.
    capacity: usize,
    /// The mapping's size (`capacity` rounded up to whole pages).
    mapped: usize,
}

// SAFETY: a BlockBuf owns its mapping exclusively (like a Vec<u8> owns its allocation) and has
// no interior mutability: moving it to another thread or sharing `&BlockBuf` (read-only bytes)
// across threads is as safe as for Vec<u8>.
unsafe impl Send for BlockBuf {}
// SAFETY: see `Send`: `&BlockBuf` only reads initialized bytes.
unsafe impl Sync for BlockBuf {}

impl BlockBuf {
    /// A buffer of `capacity` bytes (its mapping rounded up to whole pages); `None` if the
    /// kernel refuses the mapping.
    pub(crate) fn with_capacity(capacity: usize) -> Option<Self> {
        let mapped = Self::mapped_size(capacity)?;
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing; no file,
        // no existing memory is touched. The result is checked before use.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return None;
        }
        Some(Self {
            start: NonNull::new(address.cast::<u8>())?,
            len: 0,
            capacity,
            mapped,
        })
    }

    /// Memory a buffer of `capacity` bytes maps: whole pages, at least one (None on overflow).
    pub(crate) fn mapped_size(capacity: usize) -> Option<usize> {
        const PAGE: usize = 4096;
        capacity.max(1).checked_next_multiple_of(PAGE)
    }

    /// Memory the mapping takes.
    pub(crate) fn mapped(&self) -> usize {
        self.mapped
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes left.
    pub(crate) fn room(&self) -> usize {
        self.capacity - self.len
    }

    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends `bytes`; false (and nothing appended) if they do not fit.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> bool {
        // SAFETY: one part, whose length is `size`.
        unsafe { self.push_parts(&[bytes], bytes.len()) }
    }

    /// Appends `size` bytes that `write` stores at the pointer it is given (and returns the
    /// count of); false (and nothing appended) if they do not fit.
    ///
    /// # Safety
    /// `write` must store exactly `size` bytes from the pointer on, and return `size`.
    #[inline]
    pub(crate) unsafe fn push_with(
        &mut self,
        size: usize,
        write: impl FnOnce(*mut u8) -> usize,
    ) -> bool {
        if size > self.room() {
            return false;
        }
        // SAFETY: `len + size <= capacity` (checked above), so the `size` bytes `write` stores
        // (the caller's contract) lie inside the mapping, which we own exclusively.
        let written = write(unsafe { self.start.as_ptr().add(self.len) });
        debug_assert_eq!(written, size);
        self.len += size;
        true
    }

    /// Appends the concatenation of `parts`; false (and nothing appended) if they do not fit.
    /// A record comes in up to 18 parts, half of them one-byte key tokens: those are stored
    /// directly rather than through a call to `memcpy` each (callgrind: 18 calls an event, 261
    /// instructions, on short-string events). The caller passes the parts' total, which it has
    /// computed already: summing them again here cost about 75 instructions an event.
    ///
    /// # Safety
    /// `size` must be the sum of the parts' lengths.
    pub(crate) unsafe fn push_parts(&mut self, parts: &[&[u8]], size: usize) -> bool {
        debug_assert_eq!(size, parts.iter().map(|p| p.len()).sum::<usize>());
        if size > self.room() {
            return false;
        }
        let mut at = self.len;
        for part in parts {
            // SAFETY: the parts' lengths add up to `size` (the caller's contract) and
            // `len + size <= capacity` (checked above), so every byte written lies inside the
            // mapping, which we own exclusively (`&mut self`); the parts are shared borrows that
            // cannot point into memory we hold mutably, so they do not overlap it.
            unsafe {
                match part.len() {
                    0 => {}
                    1 => self.start.as_ptr().add(at).write(part[0]),
                    n => {
                        std::ptr::copy_nonoverlapping(part.as_ptr(), self.start.as_ptr().add(at), n)
                    }
                }
            }
            at += part.len();
        }
        self.len = at;
        true
    }
}

impl Deref for BlockBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the first `len` bytes of the mapping are initialized (written by `push`, or
        // zero-filled by the kernel) and live as long as `self`; shared access only reads.
        unsafe { std::slice::from_raw_parts(self.start.as_ptr(), self.len) }
    }
}

impl Drop for BlockBuf {
    fn drop(&mut self) {
        // SAFETY: `start..start + mapped` is exactly the mapping `with_capacity` made, and no
        // borrow of it outlives `self`. A failure could only leak the mapping.
        unsafe { libc::munmap(self.start.as_ptr().cast(), self.mapped) };
    }
}

impl std::fmt::Debug for BlockBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlockBuf({} of {} bytes)", self.len, self.capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_until_full_and_maps_whole_pages() {
        let mut block = BlockBuf::with_capacity(5000).unwrap();
        assert_eq!(block.capacity(), 5000);
        assert_eq!(block.mapped(), 8192);
        assert!(block.is_empty());
        assert!(block.push(b"hello "));
        assert!(block.push(b"world"));
        assert_eq!(&*block, b"hello world");
        assert!(!block.push(&vec![b'x'; 5000]), "does not fit");
        assert_eq!(block.len(), 11);
        assert!(block.push(&vec![b'y'; 5000 - 11]));
        assert_eq!(block.room(), 0);
        assert!(block.push(b""));
        assert!(!block.push(b"z"));
        block.clear();
        assert!(block.is_empty());
        assert_eq!(block.room(), 5000);
    }

    #[test]
    fn pushes_parts_of_every_length_or_none_of_them() {
        let mut block = BlockBuf::with_capacity(64).unwrap();
        let parts: [&[u8]; 5] = [b"{", b"", b"\x81", b"\"type\":\"t\"", b"}"];
        // SAFETY: 13 is the parts' total.
        assert!(unsafe { block.push_parts(&parts, 13) });
        assert_eq!(&*block, b"{\x81\"type\":\"t\"}");
        let big = [0u8; 40];
        let too_many: [&[u8]; 3] = [&big, b"x", &big[..11]];
        // SAFETY: 52 is the parts' total.
        let pushed = unsafe { block.push_parts(&too_many, 52) };
        assert!(!pushed, "does not fit: nothing appended");
        assert_eq!(block.len(), 13);
        let exact: [&[u8]; 3] = [&big, b"x", &big[..10]];
        // SAFETY: 51 is the parts' total.
        assert!(unsafe { block.push_parts(&exact, 51) });
        assert_eq!(block.room(), 0);
        assert_eq!(block[13..53], big);
        assert_eq!(block[53], b'x');
    }

    #[test]
    fn shared_across_threads() {
        let mut block = BlockBuf::with_capacity(100).unwrap();
        block.push(b"abc");
        let shared = std::sync::Arc::new(block);
        let other = std::sync::Arc::clone(&shared);
        let read = std::thread::spawn(move || other.to_vec()).join().unwrap();
        assert_eq!(read, b"abc");
    }
}
