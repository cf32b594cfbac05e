//! Escaping long JSON strings 16 bytes at a time with byte shuffles (SSSE3).
//!
//! Source text in tool outputs (`read`, `grep`, `bash`) needs an escape every ten bytes or so:
//! a tab after each line number, a newline after each line, quotes. `json::write_string` stores a
//! chunk whole and then walks its escapes one by one, with a branch per escape; on such text that
//! walk is most of an append's time (58% of `EventRing.append` on 4-64 KiB tool outputs, perf).
//! Here a chunk with escapes is finished without a branch per escape: its control bytes are
//! turned into their escape letters (`\n` -> `n`) with one shuffle, and each 8-byte half is spread
//! out with a second shuffle whose pattern comes from a table indexed by the half's escape mask,
//! with a backslash in every gap. A chunk with a control byte that has no short escape (it needs
//! `\u00XX`) is written byte by byte. The CPU must have SSSE3 (`pshufb`) and POPCNT, which
//! `json::write_string` checks at run time before calling here.

use std::arch::x86_64::*;

use crate::json::write_escaped_bytewise;

/// Output room kept past a chunk's start: two 16-byte stores, each at most 16 bytes on.
const CHUNK_ROOM: usize = 32;
/// A shuffle index that yields a zero byte (its high bit is set).
const ZERO: u8 = 0x80;

/// For each 8-bit escape mask, the shuffle that spreads an 8-byte half out: output byte `j` is
/// input byte `SPREAD[mask][j]`, or a gap (`ZERO`) where a backslash goes before an escaped byte.
/// Positions past the half's output are gaps too (what lands there is overwritten).
static SPREAD: [[u8; 16]; 256] = {
    let mut table = [[ZERO; 16]; 256];
    let mut mask = 0;
    while mask < 256 {
        let mut from = 0;
        let mut to = 0;
        while from < 8 {
            if (mask >> from) & 1 == 1 {
                to += 1; // the backslash's gap
            }
            table[mask][to] = from as u8;
            to += 1;
            from += 1;
        }
        mask += 1;
    }
    table
};

/// The letter of each control byte's short escape, indexed by the byte's low four bits (0 for
/// the controls that need `\u00XX`); used only for bytes below 0x10.
const LETTERS: [u8; 16] = [
    0, 0, 0, 0, 0, 0, 0, 0, b'b', b't', b'n', 0, b'f', b'r', 0, 0,
];

/// Bytes 0..16 of the text window, then zeros: loading 16 bytes from `SHIFT[skip..]` gives the
/// shuffle that moves a chunk down by `skip` bytes.
static SHIFT: [u8; 32] = {
    let mut table = [ZERO; 32];
    let mut i = 0;
    while i < 16 {
        table[i] = i as u8;
        i += 1;
    }
    table
};

/// Writes one segment of a string escaped, without quotes (`json::write_quoted_in_segments`).
///
/// # Safety
/// The CPU must support SSSE3 and POPCNT.
#[target_feature(enable = "ssse3,popcnt")]
pub(crate) unsafe fn write_segment(out: &mut Vec<u8>, text: &[u8]) {
    let len = text.len();
    // Each 16-byte chunk takes at most 32 bytes unless written byte by byte (which reserves
    // for itself), and the last chunk's stores reach CHUNK_ROOM past its start.
    out.reserve(2 * len + CHUNK_ROOM);
    // The write position and the buffer stay in locals (registers): kept in a struct behind a
    // reference, `o` was reloaded after every store (the stores might have changed it).
    let mut o = out.len();
    let mut base = out.as_mut_ptr();
    let source = text.as_ptr();
    let mut src = 0;
    // 64 bytes at a time, stored as they are when none needs escaping (prose, mostly), each
    // chunk spread out otherwise: a branch per 64 bytes, predictable on text that is either
    // dense with escapes (code) or sparse, where one per chunk was not.
    while len - src >= 64 {
        // SAFETY: the 64 bytes at `src` are inside the text.
        let chunks: [__m128i; 4] =
            std::array::from_fn(|k| unsafe { _mm_loadu_si128(source.add(src + 16 * k).cast()) });
        let any = _mm_or_si128(
            _mm_or_si128(escapes(chunks[0]), escapes(chunks[1])),
            _mm_or_si128(escapes(chunks[2]), escapes(chunks[3])),
        );
        if _mm_movemask_epi8(any) == 0 {
            for (k, chunk) in chunks.into_iter().enumerate() {
                // SAFETY: the room reserved covers 2 * (len - src) >= 128 bytes past `o`.
                unsafe { _mm_storeu_si128(base.add(o + 16 * k).cast(), chunk) };
            }
            o += 64;
            src += 64;
            continue;
        }
        for chunk in chunks {
            // SAFETY: as for the 16-byte chunks below.
            match unsafe { write_chunk(base, o, chunk, 16) } {
                Some(end) => o = end,
                None => {
                    // SAFETY: as below.
                    (base, o) = unsafe { write_chunk_bytewise(out, o, chunk, 16, len - src - 16) }
                }
            }
            src += 16;
        }
    }
    while len - src >= 16 {
        // SAFETY: the 16 bytes at `src` are inside the text.
        let chunk = unsafe { _mm_loadu_si128(source.add(src).cast()) };
        // SAFETY: the CPU has SSSE3 and POPCNT; the room reserved above covers this chunk
        // (`o` grew by at most 2 bytes per byte of text so far, and 2 * (len - src) remain).
        match unsafe { write_chunk(base, o, chunk, 16) } {
            Some(end) => o = end,
            None => {
                // SAFETY: as above.
                (base, o) = unsafe { write_chunk_bytewise(out, o, chunk, 16, len - src - 16) }
            }
        }
        src += 16;
    }
    if src < len {
        // The last 1..=15 bytes: the 16 bytes ending at the text's end when there are that
        // many, moved down to start at `src`; else a copy padded to 16 bytes.
        let rest = len - src;
        let chunk = if len >= 16 {
            // SAFETY: `len - 16 ..len` is inside the text, and `SHIFT[skip..skip + 16]` inside
            // the 32-byte table (`skip < 16`).
            unsafe {
                let skip = 16 - rest;
                let last = _mm_loadu_si128(source.add(len - 16).cast());
                _mm_shuffle_epi8(last, _mm_loadu_si128(SHIFT.as_ptr().add(skip).cast()))
            }
        } else {
            let mut padded = [0u8; 16];
            padded[..rest].copy_from_slice(&text[src..]);
            // SAFETY: a 16-byte load from a 16-byte array.
            unsafe { _mm_loadu_si128(padded.as_ptr().cast()) }
        };
        // SAFETY: as for the whole chunks (`rest` bytes of text remain).
        match unsafe { write_chunk(base, o, chunk, rest) } {
            Some(end) => o = end,
            // SAFETY: as above.
            None => (_, o) = unsafe { write_chunk_bytewise(out, o, chunk, rest, 0) },
        }
    }
    // SAFETY: every byte below `o` was written (the existing contents and the escaped text).
    unsafe { out.set_len(o) };
}

/// The bytes of `chunk` that need escaping (all bits set), and only those.
#[target_feature(enable = "ssse3")]
#[inline]
fn escapes(chunk: __m128i) -> __m128i {
    let below_space = _mm_set1_epi8(0x1f);
    // Unsigned `byte <= 0x1f` is `max(byte, 0x1f) == 0x1f`.
    let control = _mm_cmpeq_epi8(_mm_max_epu8(chunk, below_space), below_space);
    let special = _mm_or_si128(
        _mm_cmpeq_epi8(chunk, _mm_set1_epi8(b'"' as i8)),
        _mm_cmpeq_epi8(chunk, _mm_set1_epi8(b'\\' as i8)),
    );
    _mm_or_si128(control, special)
}

/// Writes the first `valid` (1..=16) bytes of `chunk` escaped at `base + o`; returns the end of
/// what it wrote, or None if a byte needs `\u00XX` (then nothing counts as written).
///
/// # Safety
/// The CPU must support SSSE3 and POPCNT, and `base` must be valid for writing `o + CHUNK_ROOM`
/// bytes.
#[target_feature(enable = "ssse3,popcnt")]
#[inline]
unsafe fn write_chunk(base: *mut u8, o: usize, chunk: __m128i, valid: usize) -> Option<usize> {
    let valid_bits = (1u32 << valid) - 1;
    let below_space = _mm_set1_epi8(0x1f);
    // Unsigned `byte <= 0x1f` is `max(byte, 0x1f) == 0x1f`.
    let control = _mm_cmpeq_epi8(_mm_max_epu8(chunk, below_space), below_space);
    let mask = _mm_movemask_epi8(escapes(chunk)) as u32 & valid_bits;
    // SAFETY: LETTERS is 16 bytes.
    let letters = unsafe { _mm_loadu_si128(LETTERS.as_ptr().cast()) };
    let letter = _mm_shuffle_epi8(letters, chunk);
    let below_16 = _mm_cmpeq_epi8(
        _mm_and_si128(chunk, _mm_set1_epi8(0xf0_u8 as i8)),
        _mm_setzero_si128(),
    );
    let named = _mm_andnot_si128(_mm_cmpeq_epi8(letter, _mm_setzero_si128()), below_16);
    if _mm_movemask_epi8(_mm_andnot_si128(named, control)) as u32 & valid_bits != 0 {
        return None;
    }
    // Control bytes become their letters; quotes and backslashes are their own.
    let translated = _mm_or_si128(
        _mm_and_si128(control, letter),
        _mm_andnot_si128(control, chunk),
    );
    // SAFETY: the first half's store is at `o` and the second's at most 16 bytes on (8 bytes
    // and 8 backslashes), both inside the CHUNK_ROOM bytes of the caller's contract.
    unsafe {
        let o = spread_half(base, o, translated, mask & 0xff, valid.min(8));
        if valid > 8 {
            Some(spread_half(
                base,
                o,
                _mm_srli_si128(translated, 8),
                mask >> 8,
                valid - 8,
            ))
        } else {
            Some(o)
        }
    }
}

/// Stores the low 8 bytes of `half` at `base + o` with a backslash before each byte set in
/// `mask`; returns the end of the first `valid` of them and their backslashes.
///
/// # Safety
/// The CPU must support SSSE3 and POPCNT, and `base` must be valid for writing `o + 16` bytes.
#[target_feature(enable = "ssse3,popcnt")]
#[inline]
unsafe fn spread_half(base: *mut u8, o: usize, half: __m128i, mask: u32, valid: usize) -> usize {
    // SAFETY: `mask < 256`, so the row is inside SPREAD; its 16 bytes are loaded.
    let pattern = unsafe { _mm_loadu_si128(SPREAD[mask as usize].as_ptr().cast()) };
    let gaps = _mm_cmpeq_epi8(pattern, _mm_set1_epi8(ZERO as i8));
    let spread = _mm_or_si128(
        _mm_shuffle_epi8(half, pattern),
        _mm_and_si128(gaps, _mm_set1_epi8(b'\\' as i8)),
    );
    // SAFETY: 16 bytes at `o` are inside the buffer (the caller's contract).
    unsafe { _mm_storeu_si128(base.add(o).cast(), spread) };
    o + valid + mask.count_ones() as usize
}

/// Writes the first `valid` bytes of `chunk` one at a time at `o` (a control byte needs
/// `\u00XX`), keeping the room the `text_after` bytes that follow count on; returns the buffer
/// (it may have moved) and the end of what it wrote.
///
/// # Safety
/// `valid` must be at most 16, and every byte of `out` below `o` written.
#[target_feature(enable = "ssse3,popcnt")]
#[cold]
unsafe fn write_chunk_bytewise(
    out: &mut Vec<u8>,
    o: usize,
    chunk: __m128i,
    valid: usize,
    text_after: usize,
) -> (*mut u8, usize) {
    let mut bytes = [0u8; 16];
    // SAFETY: a 16-byte store into a 16-byte array.
    unsafe { _mm_storeu_si128(bytes.as_mut_ptr().cast(), chunk) };
    // The chunks after this one count on 2 bytes per byte of text and CHUNK_ROOM past them.
    // SAFETY: the caller's contract.
    unsafe { write_escaped_bytewise(out, o, &bytes[..valid], 2 * text_after + CHUNK_ROOM) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::escape_testing;
    use crate::json::SegmentEscaper;

    /// The escaper under test, if this CPU can run it.
    fn shuffled() -> Option<SegmentEscaper> {
        (is_x86_feature_detected!("ssse3") && is_x86_feature_detected!("popcnt"))
            .then_some(write_segment as SegmentEscaper)
    }

    #[test]
    fn the_spread_table_puts_a_gap_before_each_escaped_byte() {
        // 0b0000_0101: bytes 0 and 2 escaped.
        assert_eq!(
            SPREAD[0b101],
            [ZERO, 0, 1, ZERO, 2, 3, 4, 5, 6, 7, ZERO, ZERO, ZERO, ZERO, ZERO, ZERO]
        );
        assert_eq!(SPREAD[0][..8], [0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(SPREAD[0xff][14..], [ZERO, 7]);
    }

    #[test]
    fn every_byte_at_every_position_and_length() {
        escape_testing::every_byte_at_every_position(shuffled(), 40);
    }

    #[test]
    fn random_mixes_of_plain_short_escape_and_unicode_escape_bytes() {
        escape_testing::random_mixes(shuffled());
    }

    #[test]
    fn all_escapes_grow_the_buffer_sixfold() {
        escape_testing::all_escapes(shuffled());
    }
}
