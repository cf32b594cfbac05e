//! Escaping long JSON strings 32 bytes at a time with AVX-512 byte compression (VBMI2).
//!
//! `shuffle_escape.rs` finishes a 16-byte chunk with escapes in two table shuffles, one per
//! 8-byte half: about 40 instructions per 16 bytes of source text, which needs an escape every
//! ten bytes or so (tool outputs: a tab after each line number, a newline after each line).
//! Here each of 32 bytes becomes a pair, a backslash or the byte itself, then the byte (its
//! escape letter for a control byte), and one `vpcompressb` keeps a pair's second byte only
//! where the byte needs escaping: about 25 instructions per 32 bytes, whatever the escapes.
//! A step with a control byte that has no short escape (it needs `\u00XX`) is written byte by
//! byte. The CPU must have AVX-512 F/BW/VL/VBMI2 and BMI2 (`available`), which
//! `json::write_string` checks at run time before calling here; valgrind hides AVX-512, so
//! under callgrind `shuffle_escape.rs` runs instead.

use std::arch::x86_64::*;

use crate::json::write_escaped_bytewise;

/// Output room a step needs past its start: one 64-byte store.
const STEP_ROOM: usize = 64;
/// How far ahead of the step the text is prefetched.
const PREFETCH_AHEAD: usize = 512;
/// Text per step: its pairs fill one 64-byte register.
const STEP: usize = 32;

/// The letter of each control byte's short escape, indexed by the byte's low four bits (0 for
/// the controls that need `\u00XX`), once per 128-bit lane; used only for bytes below 0x10.
const LETTERS: [u8; 32] = {
    let lane = [
        0, 0, 0, 0, 0, 0, 0, 0, b'b', b't', b'n', 0, b'f', b'r', 0, 0,
    ];
    let mut both = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        both[i] = lane[i % 16];
        i += 1;
    }
    both
};

/// Whether the CPU has what this module needs (std caches the answers).
#[inline(always)]
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vbmi2")
        && is_x86_feature_detected!("bmi2")
        && is_x86_feature_detected!("popcnt")
}

/// Writes one segment of a string escaped, without quotes (`json::write_quoted_in_segments`).
///
/// # Safety
/// The CPU must support what `available` checks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi2,bmi2,popcnt")]
pub(crate) unsafe fn write_segment(out: &mut Vec<u8>, text: &[u8]) {
    let len = text.len();
    // A step's output is at most 2 bytes per byte of text unless written byte by byte (which
    // reserves for itself), and its store reaches STEP_ROOM past its start.
    out.reserve(2 * len + STEP_ROOM);
    // The write position and the buffer stay in locals (registers), as in shuffle_escape.rs.
    let mut o = out.len();
    let mut base = out.as_mut_ptr();
    let source = text.as_ptr();
    let mut src = 0;
    // 64 bytes at a time, stored as they are when none needs escaping (prose, mostly).
    while len - src >= 2 * STEP {
        // Prefetching never faults, wherever it points.
        _mm_prefetch::<_MM_HINT_T0>(source.wrapping_add(src + PREFETCH_AHEAD).cast());
        // SAFETY: the 64 bytes at `src` are inside the text; the room reserved covers
        // 2 * (len - src) >= 128 bytes past `o`.
        let chunk = unsafe { _mm512_loadu_si512(source.add(src).cast()) };
        if escapes(chunk) == 0 {
            // SAFETY: as above.
            unsafe { _mm512_storeu_si512(base.add(o).cast(), chunk) };
            o += 2 * STEP;
            src += 2 * STEP;
            continue;
        }
        for half in [
            _mm512_castsi512_si256(chunk),
            _mm512_extracti64x4_epi64::<1>(chunk),
        ] {
            // SAFETY: `o` grew by at most 2 bytes per byte of text so far and 2 * (len - src)
            // remain reserved, more than the step's STEP_ROOM.
            (base, o) = unsafe { write_step(out, base, o, half, STEP, len - src - STEP) };
            src += STEP;
        }
    }
    while src < len {
        let valid = (len - src).min(STEP);
        // SAFETY: only the `valid` bytes inside the text are loaded (masked lanes are not
        // read, so they cannot fault); the rest are zeros, which `write_step` leaves out.
        let chunk = unsafe { _mm256_maskz_loadu_epi8(low_bits(valid), source.add(src).cast()) };
        // SAFETY: as above (`valid >= 1` bytes remain, so STEP_ROOM <= 2 * (len - src) + 64).
        (base, o) = unsafe { write_step(out, base, o, chunk, valid, len - src - valid) };
        src += valid;
    }
    // SAFETY: every byte below `o` was written (the existing contents and the escaped text).
    unsafe { out.set_len(o) };
}

/// The first `count` (1..=32) bits set.
#[inline(always)]
fn low_bits(count: usize) -> __mmask32 {
    (u64::MAX >> (64 - count)) as __mmask32
}

/// The bytes of `chunk` that need escaping: controls, quotes and backslashes.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn escapes(chunk: __m512i) -> __mmask64 {
    _mm512_cmple_epu8_mask(chunk, _mm512_set1_epi8(0x1f))
        | _mm512_cmpeq_epi8_mask(chunk, _mm512_set1_epi8(b'"' as i8))
        | _mm512_cmpeq_epi8_mask(chunk, _mm512_set1_epi8(b'\\' as i8))
}

/// Writes the first `valid` (1..=32) bytes of `chunk` escaped at `base + o`, byte by byte if
/// one needs `\u00XX` (keeping the room the `text_after` bytes that follow count on); returns
/// the buffer (it may have moved) and the end of what it wrote.
///
/// # Safety
/// The CPU must support what `available` checks, `base` must be `out`'s buffer, valid for
/// writing `o + STEP_ROOM` bytes, and every byte of `out` below `o` written.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi2,bmi2,popcnt")]
#[inline]
unsafe fn write_step(
    out: &mut Vec<u8>,
    base: *mut u8,
    o: usize,
    chunk: __m256i,
    valid: usize,
    text_after: usize,
) -> (*mut u8, usize) {
    let valid_bits = low_bits(valid);
    let controls = _mm256_cmple_epu8_mask(chunk, _mm256_set1_epi8(0x1f)) & valid_bits;
    let escaped = controls
        | (_mm256_cmpeq_epi8_mask(chunk, _mm256_set1_epi8(b'"' as i8))
            | _mm256_cmpeq_epi8_mask(chunk, _mm256_set1_epi8(b'\\' as i8)))
            & valid_bits;
    // SAFETY: LETTERS is 32 bytes.
    let letters = unsafe { _mm256_loadu_si256(LETTERS.as_ptr().cast()) };
    let letter = _mm256_shuffle_epi8(letters, chunk);
    let named = _mm256_cmple_epu8_mask(chunk, _mm256_set1_epi8(0x0f))
        & _mm256_test_epi8_mask(letter, letter);
    if controls & !named != 0 {
        // SAFETY: the caller's contract.
        return unsafe { write_step_bytewise(out, o, chunk, valid, text_after) };
    }
    // Control bytes become their letters; quotes and backslashes are their own.
    let second = _mm256_mask_blend_epi8(controls, chunk, letter);
    let first = _mm256_mask_blend_epi8(escaped, second, _mm256_set1_epi8(b'\\' as i8));
    // Pair i is bytes 2i (`first`) and 2i + 1 (`second`): the byte alone, or its escape.
    let pairs = _mm512_or_si512(
        _mm512_cvtepu8_epi16(first),
        _mm512_slli_epi16::<8>(_mm512_cvtepu8_epi16(second)),
    );
    let keep = _pdep_u64(valid_bits as u64, 0x5555_5555_5555_5555)
        | _pdep_u64(escaped as u64, 0xaaaa_aaaa_aaaa_aaaa);
    let packed = _mm512_maskz_compress_epi8(keep, pairs);
    // SAFETY: 64 bytes at `o` are inside the buffer (the caller's contract).
    unsafe { _mm512_storeu_si512(base.add(o).cast(), packed) };
    (base, o + valid + escaped.count_ones() as usize)
}

/// Writes the first `valid` bytes of `chunk` one at a time at `o` (a control byte needs
/// `\u00XX`), keeping the room the `text_after` bytes that follow count on; returns the buffer
/// (it may have moved) and the end of what it wrote.
///
/// # Safety
/// `valid` must be at most 32, and every byte of `out` below `o` written.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[cold]
unsafe fn write_step_bytewise(
    out: &mut Vec<u8>,
    o: usize,
    chunk: __m256i,
    valid: usize,
    text_after: usize,
) -> (*mut u8, usize) {
    let mut bytes = [0u8; STEP];
    // SAFETY: a 32-byte store into a 32-byte array.
    unsafe { _mm256_storeu_si256(bytes.as_mut_ptr().cast(), chunk) };
    // The steps after this one count on 2 bytes per byte of text and STEP_ROOM past them.
    // SAFETY: the caller's contract.
    unsafe { write_escaped_bytewise(out, o, &bytes[..valid], 2 * text_after + STEP_ROOM) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::escape_testing;
    use crate::json::SegmentEscaper;

    /// The escaper under test, if this CPU can run it (this project's machine and CI can; under
    /// valgrind, which hides AVX-512, it cannot).
    fn compressed() -> Option<SegmentEscaper> {
        available().then_some(write_segment as SegmentEscaper)
    }

    #[test]
    fn every_byte_at_every_position_and_length() {
        escape_testing::every_byte_at_every_position(compressed(), 140);
    }

    #[test]
    fn random_mixes_of_plain_short_escape_and_unicode_escape_bytes() {
        escape_testing::random_mixes(compressed());
    }

    #[test]
    fn all_escapes_grow_the_buffer_sixfold() {
        escape_testing::all_escapes(compressed());
    }
}
