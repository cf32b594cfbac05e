//! Short copies, inlined.

/// Copies `count` bytes: up to 32 with a pair of overlapping loads and stores rather than a
/// call to `memcpy` (the call and its dispatch on the size cost more than the copy for the
/// short pieces between a record's keys and a line's `,"seq":N}` ending).
///
/// # Safety
/// As `std::ptr::copy_nonoverlapping`.
#[inline(always)]
pub(crate) unsafe fn copy_short(from: *const u8, to: *mut u8, count: usize) {
    // SAFETY: each branch reads `from..from + count` and writes `to..to + count` only (the
    // pairs overlap in the middle when `count` is under twice their width), which the
    // caller's contract covers.
    unsafe {
        match count {
            0 => {}
            1..=3 => {
                to.write(from.read());
                to.add(count / 2).write(from.add(count / 2).read());
                to.add(count - 1).write(from.add(count - 1).read());
            }
            4..=7 => {
                let head = from.cast::<u32>().read_unaligned();
                let last = from.add(count - 4).cast::<u32>().read_unaligned();
                to.cast::<u32>().write_unaligned(head);
                to.add(count - 4).cast::<u32>().write_unaligned(last);
            }
            8..=16 => {
                let head = from.cast::<u64>().read_unaligned();
                let last = from.add(count - 8).cast::<u64>().read_unaligned();
                to.cast::<u64>().write_unaligned(head);
                to.add(count - 8).cast::<u64>().write_unaligned(last);
            }
            17..=32 => {
                let head = from.cast::<u128>().read_unaligned();
                let last = from.add(count - 16).cast::<u128>().read_unaligned();
                to.cast::<u128>().write_unaligned(head);
                to.add(count - 16).cast::<u128>().write_unaligned(last);
            }
            _ => std::ptr::copy_nonoverlapping(from, to, count),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_every_length_exactly() {
        let source: Vec<u8> = (0..80u8).collect();
        for count in 0..=70 {
            let mut out = vec![0xEEu8; 80];
            // SAFETY: both buffers hold at least `count + 1` bytes and do not overlap.
            unsafe { copy_short(source.as_ptr().add(1), out.as_mut_ptr().add(1), count) };
            assert_eq!(out[0], 0xEE);
            assert_eq!(&out[1..=count], &source[1..=count], "count {count}");
            assert!(out[count + 1..].iter().all(|&b| b == 0xEE), "count {count}");
        }
    }
}
