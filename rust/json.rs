//! Compact JSON: string escaping for the encoder and a validating line scanner for recovery.
//!
//! The scanner checks a whole line (UTF-8, JSON grammar, nesting depth) but builds nothing except
//! the few top-level fields headers index, so replaying a file never allocates per event beyond
//! copying the bytes that are kept.

use std::borrow::Cow;

use crate::event::{MAX_DEPTH, MAX_INT_DIGITS, MAX_SEQ};
use crate::keys::KeySpans;

/// Bytes that need escaping inside a JSON string: 0 none, 1 a short escape, 2 `\u00XX`.
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = 2;
        byte += 1;
    }
    table[b'"' as usize] = 1;
    table[b'\\' as usize] = 1;
    table[b'\n' as usize] = 1;
    table[b'\r' as usize] = 1;
    table[b'\t' as usize] = 1;
    table[0x08] = 1;
    table[0x0c] = 1;
    table
};

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Index of the first byte at or after `from` that needs escaping (or `text.len()`).
#[inline]
fn next_escape(text: &[u8], from: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: SSE2 is part of the x86_64 baseline, so every x86_64 CPU has it.
        unsafe { next_escape_sse2(text, from) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        next_escape_swar(text, from)
    }
}

/// Sixteen bytes at a time with SSE2.
///
/// # Safety
/// The CPU must support SSE2 (every x86_64 CPU does; `next_escape` relies on that).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
unsafe fn next_escape_sse2(text: &[u8], mut from: usize) -> usize {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is enabled for this function (the caller's contract). The only memory access
    // is the unaligned 16-byte load at `from`, made only while `from + 16 <= text.len()`, so it
    // stays inside `text`.
    unsafe {
        let quote = _mm_set1_epi8(b'"' as i8);
        let backslash = _mm_set1_epi8(b'\\' as i8);
        let below_space = _mm_set1_epi8(0x1f);
        while from + 16 <= text.len() {
            let chunk = _mm_loadu_si128(text.as_ptr().add(from).cast());
            // Unsigned `byte <= 0x1f` is `max(byte, 0x1f) == 0x1f`.
            let control = _mm_cmpeq_epi8(_mm_max_epu8(chunk, below_space), below_space);
            let special = _mm_or_si128(
                _mm_cmpeq_epi8(chunk, quote),
                _mm_cmpeq_epi8(chunk, backslash),
            );
            let mask = _mm_movemask_epi8(_mm_or_si128(control, special)) as u32;
            if mask != 0 {
                return from + mask.trailing_zeros() as usize;
            }
            from += 16;
        }
    }
    next_escape_swar(text, from)
}

#[inline]
fn next_escape_swar(text: &[u8], mut from: usize) -> usize {
    // Eight bytes at a time: most strings have nothing to escape, so skip them quickly.
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    while from + 8 <= text.len() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&text[from..from + 8]);
        let w = u64::from_le_bytes(word);
        let control = w.wrapping_sub(ONES * 0x20) & !w;
        let quote =
            (w ^ (ONES * u64::from(b'"'))).wrapping_sub(ONES) & !(w ^ (ONES * u64::from(b'"')));
        let slash =
            (w ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES) & !(w ^ (ONES * u64::from(b'\\')));
        if (control | quote | slash) & HIGHS != 0 {
            break;
        }
        from += 8;
    }
    while from < text.len() && ESCAPE[text[from] as usize] == 0 {
        from += 1;
    }
    from
}

/// Room kept past the write position: a 16-byte store and an 8-byte escape store always fit.
const SLACK: usize = 24;

/// A mask of the bytes of `word` (little-endian) that need escaping: the high bit of each such
/// byte is set. Bits above the lowest set one may be false positives (a borrow), but the lowest
/// set one is always a byte that needs escaping, and the mask is 0 exactly when none does.
#[inline(always)]
fn swar_escape_mask(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = word ^ (ONES * u64::from(b'"'));
    let slash = word ^ (ONES * u64::from(b'\\'));
    (control | (quote.wrapping_sub(ONES) & !quote) | (slash.wrapping_sub(ONES) & !slash)) & HIGHS
}

/// The escape sequence of every byte that needs one, padded to 8 bytes, and its length (0 for
/// bytes that need none).
static ESCAPED: [([u8; 8], u8); 256] = {
    let mut table = [([0u8; 8], 0u8); 256];
    let mut byte = 0;
    while byte < 256 {
        let short = match byte as u8 {
            b'"' => b'"',
            b'\\' => b'\\',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x08 => b'b',
            0x0c => b'f',
            _ => 0,
        };
        if short != 0 {
            table[byte] = ([b'\\', short, 0, 0, 0, 0, 0, 0], 2);
        } else if byte < 0x20 {
            let high = HEX_DIGITS[byte >> 4];
            let low = HEX_DIGITS[byte & 0xf];
            table[byte] = ([b'\\', b'u', b'0', b'0', high, low, 0, 0], 6);
        }
        byte += 1;
    }
    table
};

/// Writes the escape sequence of `byte` (one ESCAPE marks) at `dst`; returns its length.
///
/// # Safety
/// `dst` must be valid for writing 8 bytes (the sequence is stored padded; only its length
/// counts).
#[inline(always)]
pub(crate) unsafe fn put_escape(dst: *mut u8, byte: u8) -> usize {
    let (sequence, len) = ESCAPED[byte as usize];
    // SAFETY: the caller gives 8 writable bytes at `dst`.
    unsafe { dst.cast::<[u8; 8]>().write_unaligned(sequence) };
    len as usize
}

/// Text a SIMD escaper handles per reservation of output room: bounds what is reserved ahead of
/// need (each reserves twice its segment).
#[cfg(target_arch = "x86_64")]
pub(crate) const ESCAPE_SEGMENT: usize = 16 << 10;

/// Writes one segment of a string escaped, without quotes (`shuffle_escape.rs`,
/// `compress_escape.rs`).
///
/// # Safety
/// The CPU must have the features the escaper is built for.
#[cfg(target_arch = "x86_64")]
pub(crate) type SegmentEscaper = unsafe fn(&mut Vec<u8>, &[u8]);

/// Appends `text` as a quoted JSON string, escaped by `write_segment` a segment at a time.
///
/// # Safety
/// The CPU must have the features `write_segment` is built for.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn write_quoted_in_segments(
    out: &mut Vec<u8>,
    text: &[u8],
    write_segment: SegmentEscaper,
) {
    out.push(b'"');
    for segment in text.chunks(ESCAPE_SEGMENT) {
        // SAFETY: the CPU has the escaper's features (this function's contract).
        unsafe { write_segment(out, segment) };
    }
    out.push(b'"');
}

/// Writes `bytes` escaped one at a time at `o` of `out`, for the SIMD escapers' chunks with a
/// control byte that needs `\u00XX`; makes sure first that `room_after` bytes stay free past the
/// worst case (six bytes a byte), which is what the chunks after this one count on. Returns the
/// buffer (it may have moved) and the end of what it wrote.
///
/// # Safety
/// Every byte of `out` below `o` must be written.
#[cfg(target_arch = "x86_64")]
#[cold]
pub(crate) unsafe fn write_escaped_bytewise(
    out: &mut Vec<u8>,
    mut o: usize,
    bytes: &[u8],
    room_after: usize,
) -> (*mut u8, usize) {
    // Six bytes a byte, and the 8-byte store of the last `put_escape`.
    let room = 6 * bytes.len() + 8 + room_after;
    if out.capacity() - o < room {
        // SAFETY: every byte below `o` was written (the caller's contract).
        unsafe { out.set_len(o) };
        out.reserve(room);
    }
    let base = out.as_mut_ptr();
    for &byte in bytes {
        // SAFETY: the room reserved above holds six bytes per byte plus the 8-byte store of
        // `put_escape`.
        unsafe {
            let written = put_escape(base.add(o), byte);
            if written == 0 {
                base.add(o).write(byte);
                o += 1;
            } else {
                o += written;
            }
        }
    }
    (base, o)
}

/// Copies 16 bytes from `from` to `to`; returns the mask of those that need escaping (bit i for
/// byte i).
///
/// # Safety
/// `from` must be valid for reading 16 bytes and `to` for writing 16 bytes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn copy_chunk16(from: *const u8, to: *mut u8) -> u32 {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of the x86_64 baseline; the load and the store are the 16 bytes the
    // caller vouches for (unaligned accesses, which need no alignment).
    unsafe {
        let chunk = _mm_loadu_si128(from.cast());
        _mm_storeu_si128(to.cast(), chunk);
        // Unsigned `byte <= 0x1f` is `max(byte, 0x1f) == 0x1f`.
        let below_space = _mm_set1_epi8(0x1f);
        let control = _mm_cmpeq_epi8(_mm_max_epu8(chunk, below_space), below_space);
        let special = _mm_or_si128(
            _mm_cmpeq_epi8(chunk, _mm_set1_epi8(b'"' as i8)),
            _mm_cmpeq_epi8(chunk, _mm_set1_epi8(b'\\' as i8)),
        );
        _mm_movemask_epi8(_mm_or_si128(control, special)) as u32
    }
}

/// How much a 16-byte chunk can grow when escaped: each byte may become a 6-byte `\\u00XX`.
const DIRTY_CHUNK_GROWTH: usize = 16 * 5;

/// Writes the 16 bytes at `chunk`, whose escapes are the set bits of `mask` (not 0), escaped, at
/// `base + o`, where the chunk's bytes are already stored unescaped; returns the new `o` (the
/// end of the escaped chunk).
///
/// Each escape is written, then the 16 bytes following it in the text are stored after it: the
/// clean bytes up to the next escape land where they belong, and what lies past them is
/// overwritten by the next step.
///
/// # Safety
/// `chunk` must be valid for reading 32 bytes, and `base` for writing
/// `o + DIRTY_CHUNK_GROWTH + 32` bytes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn finish_dirty_chunk(
    chunk: *const u8,
    base: *mut u8,
    mut o: usize,
    mut mask: u32,
) -> usize {
    use std::arch::x86_64::*;
    let mut done = 0;
    while mask != 0 {
        let at = mask.trailing_zeros() as usize;
        o += at - done;
        // SAFETY: `at < 16`, so the byte is inside the chunk; by the caller's contract the
        // escape's 8-byte store and the 16-byte store after it fit (`o` has grown by at most
        // 5 bytes per escape before this one, and `done <= 16` keeps the load inside 32 bytes).
        unsafe {
            o += put_escape(base.add(o), *chunk.add(at));
            done = at + 1;
            let rest = _mm_loadu_si128(chunk.add(done).cast());
            _mm_storeu_si128(base.add(o).cast(), rest);
        }
        mask &= mask - 1;
    }
    o + (16 - done)
}

/// Appends `text` as a quoted JSON string (UTF-8 kept as is, control characters escaped): long
/// strings with AVX-512 byte compression where the CPU has it (`compress_escape.rs`), else
/// with byte shuffles (`shuffle_escape.rs`), others in `write_string_unshuffled`.
#[inline]
pub fn write_string(out: &mut Vec<u8>, text: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    if text.len() >= SHUFFLE_MIN_LEN {
        if crate::compress_escape::available() {
            // SAFETY: the CPU has what compress_escape needs (checked just above).
            unsafe { write_quoted_in_segments(out, text, crate::compress_escape::write_segment) };
            return;
        }
        if shuffles_available() {
            // SAFETY: the CPU has SSSE3 and POPCNT (checked just above).
            unsafe { write_quoted_in_segments(out, text, crate::shuffle_escape::write_segment) };
            return;
        }
    }
    write_string_unshuffled(out, text);
}

/// Strings at least this long are escaped with byte shuffles (`shuffle_escape.rs`) when the CPU
/// has them: shorter ones take one or two steps here, cheaper than the call.
#[cfg(target_arch = "x86_64")]
const SHUFFLE_MIN_LEN: usize = 512;

/// Whether the CPU has what `shuffle_escape.rs` needs (std caches the answer).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn shuffles_available() -> bool {
    std::arch::is_x86_feature_detected!("ssse3") && std::arch::is_x86_feature_detected!("popcnt")
}

/// `write_string` without byte shuffles: every string on CPUs without SSSE3, and short ones.
///
/// Chunks of the text are stored to the output whole and then checked: a clean chunk (the usual
/// case) costs one load, one store and one test. A chunk with escapes is finished by walking its
/// mask (`finish_dirty_chunk`) while 32 bytes are left; nearer the end, the output goes back to
/// the first byte that needs escaping, writes its escape and continues after it. Short strings
/// take one or two word-sized steps.
#[inline]
fn write_string_unshuffled(out: &mut Vec<u8>, text: &[u8]) {
    let len = text.len();
    out.reserve(len + 2 + SLACK + 32);
    let mut base = out.as_mut_ptr();
    let mut o = out.len();
    let mut src = 0;
    let source = text.as_ptr();
    // Invariant: `o + (len - src) + SLACK <= capacity`: the rest of the text, unescaped, and the
    // slack fit after the write position. Clean steps keep `o - src` as it is; each escape grows
    // it and re-checks it against `room` (`o - src` may grow up to `room`; `o > src` always,
    // as `o` starts past the opening quote).
    let mut room = out.capacity() - SLACK - len;
    macro_rules! escape_at {
        ($byte:expr) => {{
            // SAFETY: by the invariant (with `len - src >= 1` for the byte being escaped) at
            // least SLACK >= 8 bytes of capacity follow `o`.
            o += unsafe { put_escape(base.add(o), $byte) };
            src += 1;
            if o - src > room {
                // SAFETY: every byte below `o` was written (escapes, stores of text chunks and
                // the existing contents), so they are initialized.
                unsafe { out.set_len(o) };
                out.reserve((len - src) + SLACK + 32 + (len - src) / 4);
                room = out.capacity() - SLACK - len;
                base = out.as_mut_ptr();
            }
        }};
    }
    // SAFETY: `o < cap` holds by the reservation (`len + 2 + SLACK` bytes after `out.len()`).
    unsafe { base.add(o).write(b'"') };
    o += 1;
    #[cfg(target_arch = "x86_64")]
    while len - src >= 16 {
        // SAFETY: text[src..src + 16] is inside the text, and 16 bytes at `o` are inside the
        // capacity by the invariant (`len - src >= 16`).
        let mask = unsafe { copy_chunk16(source.add(src), base.add(o)) };
        if mask == 0 {
            src += 16;
            o += 16;
            continue;
        }
        if len - src < 32 {
            // Too near the end for `finish_dirty_chunk`'s reads: escape the first byte and go on
            // after it.
            let at = mask.trailing_zeros() as usize;
            src += at;
            o += at;
            escape_at!(text[src]);
            continue;
        }
        // A chunk with escapes is finished in one pass over its mask (escape-dense text, such as
        // code in tool outputs, has one every ten bytes or so). Its output grows by at most
        // DIRTY_CHUNK_GROWTH; make room for that first, so no check is needed per escape.
        if o - src + DIRTY_CHUNK_GROWTH + 16 > room {
            // SAFETY: every byte below `o` was written.
            unsafe { out.set_len(o) };
            out.reserve((len - src) + SLACK + DIRTY_CHUNK_GROWTH + 16 + (len - src) / 4);
            room = out.capacity() - SLACK - len;
            base = out.as_mut_ptr();
            // The chunk stored above is gone with the old buffer if it moved: store it again.
            // SAFETY: as for the first store (the new capacity only adds room).
            unsafe { copy_chunk16(source.add(src), base.add(o)) };
        }
        // SAFETY: with `o - src + DIRTY_CHUNK_GROWTH + 16 <= room` and `len - src >= 32`, the
        // capacity holds `o + DIRTY_CHUNK_GROWTH + 16 + 32 + SLACK`, above the highest byte
        // written here (`o` grows by at most DIRTY_CHUNK_GROWTH + 16, then one 16-byte store);
        // the reads stay below `src + 32 <= len`.
        o = unsafe { finish_dirty_chunk(source.add(src), base, o, mask) };
        src += 16;
    }
    while len - src >= 8 {
        // SAFETY: 8 bytes are read inside the text (`len - src >= 8`) and written at `o`, inside
        // the capacity by the invariant.
        let word = unsafe {
            let word = source.add(src).cast::<u64>().read_unaligned();
            base.add(o).cast::<u64>().write_unaligned(word);
            u64::from_le(word)
        };
        let mask = swar_escape_mask(word);
        if mask == 0 {
            src += 8;
            o += 8;
            continue;
        }
        let at = (mask.trailing_zeros() / 8) as usize;
        src += at;
        o += at;
        escape_at!(text[src]);
    }
    if len - src >= 4 {
        // The last 4..=7 bytes as two overlapping 4-byte words, checked as one.
        let rest = len - src;
        // SAFETY: both 4-byte reads are inside the text (`src + 4 <= len`, `len - 4 >= src`).
        let (low, high) = unsafe {
            (
                source.add(src).cast::<u32>().read_unaligned(),
                source.add(len - 4).cast::<u32>().read_unaligned(),
            )
        };
        let word = u64::from(u32::from_le(low)) | (u64::from(u32::from_le(high)) << 32);
        if swar_escape_mask(word) == 0 {
            // SAFETY: both stores end by `o + rest`, inside the capacity by the invariant; the
            // overlap is written twice with the same bytes.
            unsafe {
                base.add(o).cast::<u32>().write_unaligned(low);
                base.add(o + rest - 4).cast::<u32>().write_unaligned(high);
            }
            src = len;
            o += rest;
        }
    }
    while src < len {
        let byte = text[src];
        if ESCAPE[byte as usize] == 0 {
            // SAFETY: inside the capacity by the invariant (`len - src >= 1`).
            unsafe { base.add(o).write(byte) };
            o += 1;
            src += 1;
        } else {
            escape_at!(byte);
        }
    }
    // SAFETY: with `src == len` the invariant leaves SLACK bytes after `o`; every byte below `o`
    // has been written.
    unsafe {
        base.add(o).write(b'"');
        out.set_len(o + 1);
    }
}

/// Why a line is not a valid event.
pub type ScanError = &'static str;

/// A cursor over JSON bytes with grammar checks; shared by the scanner and the Python decoder.
pub struct Cursor<'a> {
    pub bytes: &'a [u8],
    pub pos: usize,
}

/// A JSON string's raw contents (between the quotes) and whether it has escapes.
#[derive(Debug, Clone, Copy)]
pub struct RawString<'a> {
    pub raw: &'a [u8],
    pub escaped: bool,
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    #[inline]
    pub fn skip_ws(&mut self) {
        while let Some(&b) = self.bytes.get(self.pos) {
            if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                break;
            }
            self.pos += 1;
        }
    }

    #[inline]
    pub fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    #[inline]
    pub fn expect(&mut self, byte: u8, what: ScanError) -> Result<(), ScanError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(what)
        }
    }

    /// Reads a string starting at its opening quote.
    pub fn string(&mut self) -> Result<RawString<'a>, ScanError> {
        self.expect(b'"', "expected a string")?;
        let start = self.pos;
        let mut escaped = false;
        loop {
            // Skip plain characters in bulk: only quotes, backslashes and controls matter.
            self.pos = next_escape(self.bytes, self.pos);
            let Some(&byte) = self.bytes.get(self.pos) else {
                return Err("unterminated string");
            };
            match byte {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.pos += 1;
                    self.escape_sequence()?;
                }
                _ => return Err("control character in string"),
            }
        }
        let raw = &self.bytes[start..self.pos];
        self.pos += 1;
        Ok(RawString { raw, escaped })
    }

    /// Checks the escape after a backslash.
    fn escape_sequence(&mut self) -> Result<(), ScanError> {
        match self.peek() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.pos += 1;
                Ok(())
            }
            Some(b'u') => {
                let digits = self
                    .bytes
                    .get(self.pos + 1..self.pos + 5)
                    .ok_or("bad \\u escape")?;
                if !digits.iter().all(u8::is_ascii_hexdigit) {
                    return Err("bad \\u escape");
                }
                self.pos += 5;
                Ok(())
            }
            _ => Err("bad escape in string"),
        }
    }

    /// Reads a number; returns its text and whether it is an integer.
    pub fn number(&mut self) -> Result<(&'a [u8], bool), ScanError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err("bad number"),
        }
        let integer_digits = self.pos - start;
        let mut integer = true;
        if self.peek() == Some(b'.') {
            integer = false;
            self.pos += 1;
            self.require_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            integer = false;
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            self.require_digits()?;
        }
        if integer && integer_digits > MAX_INT_DIGITS {
            return Err("integer too long");
        }
        Ok((&self.bytes[start..self.pos], integer))
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
    }

    fn require_digits(&mut self) -> Result<(), ScanError> {
        let before = self.pos;
        self.digits();
        if self.pos == before {
            Err("bad number")
        } else {
            Ok(())
        }
    }

    pub fn literal(&mut self, word: &'static [u8]) -> Result<(), ScanError> {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err("bad literal")
        }
    }

    /// Checks one value of any kind, at most `depth` containers deep.
    pub fn skip_value(&mut self, depth: usize) -> Result<(), ScanError> {
        self.skip_ws();
        match self.peek() {
            Some(b'{') => self.skip_container(depth, b'}', true),
            Some(b'[') => self.skip_container(depth, b']', false),
            Some(b'"') => self.string().map(|_| ()),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(_) => self.number().map(|_| ()),
            None => Err("unexpected end of line"),
        }
    }

    fn skip_container(&mut self, depth: usize, close: u8, keyed: bool) -> Result<(), ScanError> {
        if depth == 0 {
            return Err("nesting too deep");
        }
        self.pos += 1;
        self.skip_ws();
        if self.peek() == Some(close) {
            self.pos += 1;
            return Ok(());
        }
        loop {
            if keyed {
                self.skip_ws();
                self.string()?;
                self.skip_ws();
                self.expect(b':', "expected ':'")?;
            }
            self.skip_value(depth - 1)?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b) if b == close => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err("expected ',' or a closing bracket"),
            }
        }
    }
}

/// Decodes the escapes of a raw JSON string into `out`. Lone surrogates become U+FFFD.
pub fn unescape(raw: &[u8], out: &mut Vec<u8>) -> Result<(), ScanError> {
    let mut i = 0;
    while i < raw.len() {
        let byte = raw[i];
        if byte != b'\\' {
            let next = memchr_backslash(&raw[i..]).map_or(raw.len(), |n| i + n);
            out.extend_from_slice(&raw[i..next]);
            i = next;
            continue;
        }
        let code = *raw.get(i + 1).ok_or("bad escape")?;
        i += 2;
        let simple = match code {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                i = unescape_unicode(raw, i, out)?;
                continue;
            }
            _ => return Err("bad escape"),
        };
        out.push(simple);
    }
    Ok(())
}

fn memchr_backslash(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\\')
}

fn hex4(raw: &[u8], at: usize) -> Result<u32, ScanError> {
    let digits = raw.get(at..at + 4).ok_or("bad \\u escape")?;
    let text = std::str::from_utf8(digits).map_err(|_| "bad \\u escape")?;
    u32::from_str_radix(text, 16).map_err(|_| "bad \\u escape")
}

/// Decodes `XXXX` (after `\u`) at `at`, pairing surrogates; returns the index after it.
fn unescape_unicode(raw: &[u8], at: usize, out: &mut Vec<u8>) -> Result<usize, ScanError> {
    let first = hex4(raw, at)?;
    let mut next = at + 4;
    let code = if (0xd800..0xdc00).contains(&first) {
        let low = if raw.get(next..next + 2) == Some(b"\\u") {
            hex4(raw, next + 2).ok()
        } else {
            None
        };
        match low {
            Some(low) if (0xdc00..0xe000).contains(&low) => {
                next += 6;
                0x10000 + ((first - 0xd800) << 10) + (low - 0xdc00)
            }
            _ => 0xfffd,
        }
    } else if (0xdc00..0xe000).contains(&first) {
        0xfffd
    } else {
        first
    };
    let ch = char::from_u32(code).unwrap_or('\u{fffd}');
    let mut buffer = [0u8; 4];
    out.extend_from_slice(ch.encode_utf8(&mut buffer).as_bytes());
    Ok(next)
}

/// What the scanner found in one valid line.
#[derive(Debug, Clone, PartialEq)]
pub struct ScannedLine<'a> {
    pub event_type: Cow<'a, str>,
    pub stream_id: Option<Cow<'a, str>>,
    pub actor: Option<Cow<'a, str>>,
    pub correlation_id: Option<Cow<'a, str>>,
    /// `timestamp` in epoch ms (0 when missing or not a number).
    pub timestamp: f64,
    /// `seq`, when it is a non-negative integer.
    pub seq: Option<u64>,
    /// Where `,"seq":N` starts when it is the object's last member (the writer's own layout).
    pub trailing_seq_at: Option<usize>,
    /// Where the top-level keys that have a one-byte token are (for the in-memory copy).
    pub key_spans: KeySpans,
}

/// Validates `line` (no newline) as an event: a JSON object with a string `type`.
pub fn scan_event_line(line: &[u8]) -> Result<ScannedLine<'_>, ScanError> {
    let text = std::str::from_utf8(line).map_err(|_| "not valid UTF-8")?;
    let mut cursor = Cursor::new(text.as_bytes());
    cursor.skip_ws();
    if cursor.peek() != Some(b'{') {
        return Err("not a JSON object");
    }
    cursor.pos += 1;
    let mut found = Found::default();
    cursor.skip_ws();
    if cursor.peek() == Some(b'}') {
        cursor.pos += 1;
    } else {
        scan_members(&mut cursor, &mut found)?;
    }
    cursor.skip_ws();
    if cursor.pos != line.len() {
        return Err("text after the JSON object");
    }
    let event_type = found.event_type.ok_or("no string \"type\"")?;
    Ok(ScannedLine {
        event_type,
        stream_id: found.stream_id,
        actor: found.actor,
        correlation_id: found.correlation_id,
        timestamp: found.timestamp,
        seq: found.seq,
        trailing_seq_at: found.trailing_seq_at,
        key_spans: found.key_spans,
    })
}

#[derive(Default)]
struct Found<'a> {
    event_type: Option<Cow<'a, str>>,
    stream_id: Option<Cow<'a, str>>,
    actor: Option<Cow<'a, str>>,
    correlation_id: Option<Cow<'a, str>>,
    timestamp: f64,
    seq: Option<u64>,
    trailing_seq_at: Option<usize>,
    key_spans: KeySpans,
}

fn scan_members<'a>(cursor: &mut Cursor<'a>, found: &mut Found<'a>) -> Result<(), ScanError> {
    let mut member_start = cursor.pos;
    loop {
        cursor.skip_ws();
        let key_start = cursor.pos;
        let key = cursor.string()?;
        cursor.skip_ws();
        cursor.expect(b':', "expected ':'")?;
        if !key.escaped {
            found.key_spans.note(key.raw, key_start, cursor.pos);
        }
        cursor.skip_ws();
        let value_start = cursor.pos;
        cursor.skip_value(MAX_DEPTH - 1)?;
        let value = &cursor.bytes[value_start..cursor.pos];
        let is_seq = record_field(key, value, found)?;
        cursor.skip_ws();
        match cursor.peek() {
            Some(b',') => {
                member_start = cursor.pos;
                cursor.pos += 1;
            }
            Some(b'}') => {
                // `member_start` is the comma before the last member; the writer puts seq last.
                let after_comma = cursor.bytes.get(member_start) == Some(&b',');
                found.trailing_seq_at = (is_seq && after_comma).then_some(member_start);
                cursor.pos += 1;
                return Ok(());
            }
            _ => return Err("expected ',' or '}'"),
        }
    }
}

/// Keeps the value of a top-level key headers need; returns whether it was `seq`.
fn record_field<'a>(
    key: RawString<'a>,
    value: &'a [u8],
    found: &mut Found<'a>,
) -> Result<bool, ScanError> {
    let mut unescaped = Vec::new();
    let name: &[u8] = if key.escaped {
        // A key written with escapes (`"typ\\u0065"`) is the same key to any JSON reader.
        unescape(key.raw, &mut unescaped)?;
        &unescaped
    } else {
        key.raw
    };
    match name {
        b"type" => {
            found.event_type = Some(string_value(value).ok_or("\"type\" is not a string")?);
        }
        b"stream_id" => found.stream_id = string_value(value),
        b"actor" => found.actor = string_value(value),
        b"correlation_id" => found.correlation_id = string_value(value),
        b"timestamp" => found.timestamp = number_as_ms(value),
        b"seq" => {
            // A seq out of range is treated as absent: the store numbers the line itself.
            found.seq = std::str::from_utf8(value)
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
                .filter(|&seq| seq <= MAX_SEQ);
            return Ok(true);
        }
        _ => {}
    }
    Ok(false)
}

/// The members of a JSON object, in order: each name and the bytes of its value. Iteration
/// ends at the object's end, or at the first member that does not parse.
struct Members<'a> {
    cursor: Cursor<'a>,
    started: bool,
    done: bool,
}

impl<'a> Members<'a> {
    /// The members of `object`, or None when it does not start as an object.
    fn of(object: &'a [u8]) -> Option<Self> {
        let mut cursor = Cursor::new(object);
        cursor.skip_ws();
        cursor.expect(b'{', "expected an object").ok()?;
        Some(Self {
            cursor,
            started: false,
            done: false,
        })
    }

    fn read_member(&mut self) -> Option<(RawString<'a>, &'a [u8])> {
        let cursor = &mut self.cursor;
        if self.started {
            cursor.skip_ws();
            if cursor.peek() != Some(b',') {
                return None;
            }
            cursor.pos += 1;
        }
        self.started = true;
        cursor.skip_ws();
        if cursor.peek() != Some(b'"') {
            return None;
        }
        let name = cursor.string().ok()?;
        cursor.skip_ws();
        cursor.expect(b':', "expected ':'").ok()?;
        cursor.skip_ws();
        let start = cursor.pos;
        cursor.skip_value(MAX_DEPTH).ok()?;
        Some((name, &cursor.bytes[start..cursor.pos]))
    }
}

impl<'a> Iterator for Members<'a> {
    type Item = (RawString<'a>, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let member = self.read_member();
        self.done = member.is_none();
        member
    }
}

/// The value of member `key` of the JSON object `object` (valid JSON), if it has one.
pub fn member<'a>(object: &'a [u8], key: &str) -> Option<&'a [u8]> {
    Members::of(object)?
        .find(|(name, _)| !name.escaped && name.raw == key.as_bytes())
        .map(|(_, value)| value)
}

/// The string at `payload.<field>` of an event line, if there is one.
pub fn payload_string<'a>(line: &'a [u8], field: &str) -> Option<Cow<'a, str>> {
    first_payload_string(line, &[field])
}

/// The string at `payload.<field>` for the first of `fields` (in their order) whose value is a
/// string, each field read at its first occurrence. The payload is found once and read once,
/// however many fields are asked for (ids have several spellings, and every appended checkpoint
/// or intent event is looked at here); the answer is what asking field by field gives.
pub fn first_payload_string<'a, F: AsRef<str>>(
    line: &'a [u8],
    fields: &[F],
) -> Option<Cow<'a, str>> {
    // Per field: None until its first occurrence, then whether that value is a string.
    let mut found: Vec<Option<Option<&'a [u8]>>> = vec![None; fields.len()];
    for (name, value) in Members::of(member(line, "payload")?)? {
        if name.escaped {
            continue;
        }
        let index = fields
            .iter()
            .position(|f| f.as_ref().as_bytes() == name.raw);
        if let Some(slot) = index.and_then(|i| found.get_mut(i)) {
            if slot.is_none() {
                *slot = Some((value.first() == Some(&b'"')).then_some(value));
            }
        }
        // The first field's string decides alone.
        if let Some(Some(Some(first))) = found.first() {
            if let Some(text) = string_value(first) {
                return Some(text);
            }
        }
    }
    found
        .into_iter()
        .find_map(|slot| slot.flatten().and_then(string_value))
}

fn string_value(value: &[u8]) -> Option<Cow<'_, str>> {
    let mut cursor = Cursor::new(value);
    let raw = cursor.string().ok()?;
    if !raw.escaped {
        return std::str::from_utf8(raw.raw).ok().map(Cow::Borrowed);
    }
    let mut out = Vec::with_capacity(raw.raw.len());
    unescape(raw.raw, &mut out).ok()?;
    String::from_utf8(out).ok().map(Cow::Owned)
}

fn number_as_ms(value: &[u8]) -> f64 {
    match std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse::<f64>().ok())
    {
        Some(ms) if ms.is_finite() => ms,
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` escaped by `write_string`, checked against the path without byte shuffles (which
    /// this CPU may not take for long strings).
    fn escaped(text: &str) -> String {
        let mut out = Vec::new();
        write_string(&mut out, text.as_bytes());
        let mut unshuffled = Vec::new();
        write_string_unshuffled(&mut unshuffled, text.as_bytes());
        assert_eq!(out, unshuffled, "{text:?}");
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_quotes_backslashes_and_controls() {
        assert_eq!(escaped("plain"), "\"plain\"");
        assert_eq!(escaped("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(
            escaped("\n\r\t\u{8}\u{c}\u{1}\u{1f}"),
            "\"\\n\\r\\t\\b\\f\\u0001\\u001f\""
        );
        assert_eq!(escaped("é✓😀"), "\"é✓😀\"");
    }

    #[test]
    fn escapes_at_every_position_of_long_strings() {
        for special in ['"', '\\', '\n', '\u{1}', '\u{1f}'] {
            for at in 0..20 {
                let mut text: String = "abcdefghijklmnopqrst".into();
                text.replace_range(at..at + 1, &special.to_string());
                let expected = serde_like_escape(&text);
                assert_eq!(escaped(&text), expected, "{special:?} at {at}");
            }
        }
        for length in 0..70 {
            let mut text = "é".repeat(length / 2) + &"a".repeat(length - length / 2);
            assert_eq!(escaped(&text), serde_like_escape(&text));
            text.push('\u{7}');
            text.push_str("zzzzzzzzzzzzzzzzzzzzzzzz\"");
            assert_eq!(escaped(&text), serde_like_escape(&text));
        }
        // Bytes >= 0x80 (UTF-8) and 0x20..0x7f are never escaped.
        assert_eq!(escaped("ééééé ~~~~ é"), "\"ééééé ~~~~ é\"");
    }

    #[test]
    fn escapes_every_mix_of_plain_and_special_bytes() {
        // Every length up to 200 (the 32-, 16-, 8- and 4-byte steps and the byte tail), from mostly
        // plain to all-escape text (six output bytes per input byte: the buffer must grow
        // mid-string), appended after existing bytes.
        let alphabet: Vec<char> = "ab~ é✓\"\\\n\t\u{1}\u{1f}\u{7f}".chars().collect();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for length in 0..200 {
            for density in [0u64, 1, 4, 16] {
                let text: String = (0..length)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        if density == 16 || state % 16 < density {
                            alphabet[(state >> 8) as usize % alphabet.len()]
                        } else {
                            'x'
                        }
                    })
                    .collect();
                let expected = format!("prefix:{}", serde_like_escape(&text));
                for write in [write_string, write_string_unshuffled] {
                    let mut out = b"prefix:".to_vec();
                    out.shrink_to_fit();
                    write(&mut out, text.as_bytes());
                    assert_eq!(String::from_utf8(out).unwrap(), expected, "{text:?}");
                }
            }
        }
        let controls: String = (0..3000).map(|i| char::from(i as u8 % 0x20)).collect();
        assert_eq!(escaped(&controls), serde_like_escape(&controls));
    }

    /// A slow reference escaper for the tests.
    fn serde_like_escape(text: &str) -> String {
        let mut out = String::from("\"");
        for c in text.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    #[test]
    fn unescape_round_trips_and_pairs_surrogates() {
        let mut out = Vec::new();
        unescape(br#"a\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"#, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "a\"\\/\u{8}\u{c}\n\r\té😀");
        let mut out = Vec::new();
        unescape(br"\ud800x\udc00", &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "\u{fffd}x\u{fffd}");
    }

    #[test]
    fn scans_a_writer_line() {
        let line = br#"{"type":"a.b","stream_id":"s","actor":"system","correlation_id":"c","timestamp":1700000000123,"payload":{"x":[1,2.5e3,true,null]},"id":"x","seq":42}"#;
        let scanned = scan_event_line(line).unwrap();
        assert_eq!(scanned.event_type, "a.b");
        assert_eq!(scanned.stream_id.as_deref(), Some("s"));
        assert_eq!(scanned.actor.as_deref(), Some("system"));
        assert_eq!(scanned.correlation_id.as_deref(), Some("c"));
        assert_eq!(scanned.timestamp, 1_700_000_000_123.0);
        assert_eq!(scanned.seq, Some(42));
        let at = scanned.trailing_seq_at.unwrap();
        assert_eq!(&line[at..], b",\"seq\":42}");
    }

    #[test]
    fn scans_a_reference_line_in_any_key_order() {
        let line =
            br#" { "payload" : {} , "timestamp": 1.5e3, "type" : "x\u002ey", "stream_id": null } "#;
        let scanned = scan_event_line(line).unwrap();
        assert_eq!(scanned.event_type, "x.y");
        assert_eq!(scanned.stream_id, None);
        assert_eq!(scanned.timestamp, 1500.0);
        assert_eq!(scanned.seq, None);
        assert_eq!(scanned.trailing_seq_at, None);
    }

    #[test]
    fn seq_not_last_is_read_but_not_stripped() {
        let scanned = scan_event_line(br#"{"seq":3,"type":"t"}"#).unwrap();
        assert_eq!(scanned.seq, Some(3));
        assert_eq!(scanned.trailing_seq_at, None);
    }

    #[test]
    fn rejects_damaged_lines() {
        let cases: &[&[u8]] = &[
            b"",
            b"\0\0\0\0",
            b"[1,2]",
            b"\"type\"",
            b"{\"type\":\"a\"",
            b"{\"type\":\"a\"}x",
            b"{\"type\":1}",
            b"{\"kind\":\"a\"}",
            b"{\"type\":\"a\",}",
            b"{\"type\":\"a\",\"p\":01}",
            b"{\"type\":\"a\",\"p\":1.}",
            b"{\"type\":\"a\",\"p\":\"\x01\"}",
            b"{\"type\":\"a\",\"p\":\"\\x\"}",
            b"{\"type\":\"\xff\"}",
            b"{\"type\":\"a\",\"p\":tru}",
            b"{\"type\":\"a\"\0}",
        ];
        for case in cases {
            assert!(
                scan_event_line(case).is_err(),
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[test]
    fn out_of_range_seqs_are_treated_as_absent() {
        let line = br#"{"type":"a","seq":9223372036854775808}"#;
        assert_eq!(scan_event_line(line).unwrap().seq, None);
        let line = br#"{"type":"a","seq":9223372036854775807}"#;
        assert_eq!(scan_event_line(line).unwrap().seq, Some(MAX_SEQ));
    }

    #[test]
    fn integers_python_cannot_parse_make_the_line_corrupt() {
        let line = |digits: usize| format!("{{\"type\":\"a\",\"n\":-{}}}", "9".repeat(digits));
        assert!(scan_event_line(line(MAX_INT_DIGITS - 1).as_bytes()).is_ok());
        assert_eq!(
            scan_event_line(line(MAX_INT_DIGITS + 1).as_bytes()),
            Err("integer too long")
        );
        let float = format!(
            "{{\"type\":\"a\",\"n\":1.{}}}",
            "9".repeat(MAX_INT_DIGITS + 5)
        );
        assert!(scan_event_line(float.as_bytes()).is_ok());
    }

    #[test]
    fn escaped_keys_are_the_keys_they_spell() {
        let scanned = scan_event_line(br#"{"typ\u0065":"a","stream\u005fid":"s"}"#).unwrap();
        assert_eq!(scanned.event_type, "a");
        assert_eq!(scanned.stream_id.as_deref(), Some("s"));
        assert_eq!(
            scanned.key_spans,
            KeySpans::default(),
            "escaped keys are not compacted"
        );
    }

    #[test]
    fn payload_fields_are_found_at_the_right_level() {
        let line = br#"{"id":"top","payload":{"x":{"id":"deep"},"id":"p\u0031","n":1},"type":"t"}"#;
        assert_eq!(payload_string(line, "id").as_deref(), Some("p1"));
        assert_eq!(payload_string(line, "n"), None);
        assert_eq!(payload_string(line, "missing"), None);
        assert_eq!(payload_string(br#"{"type":"t","payload":[1]}"#, "id"), None);
        assert_eq!(payload_string(br#"{"type":"t"}"#, "id"), None);
    }

    /// What asking field by field gives: each field's first occurrence, the first field whose
    /// value there is a string.
    fn field_by_field(line: &[u8], fields: &[&str]) -> Option<String> {
        let payload = member(line, "payload")?;
        fields
            .iter()
            .find_map(|field| string_value(member(payload, field)?))
            .map(Cow::into_owned)
    }

    #[test]
    fn first_payload_string_reads_the_payload_once_with_field_by_field_answers() {
        let fields = ["checkpoint_id", "checkpointId", "id"];
        let lines: [&[u8]; 12] = [
            br#"{"type":"t","payload":{"id":"c","checkpoint_id":"a","checkpointId":"b"}}"#,
            br#"{"type":"t","payload":{"id":"c","checkpointId":"b"}}"#,
            br#"{"type":"t","payload":{"text":"x \" y","id":"c"}}"#,
            br#"{"type":"t","payload":{"checkpoint_id":7,"id":"c"}}"#,
            br#"{"type":"t","payload":{"checkpoint_id":"a","checkpoint_id":"z"}}"#,
            br#"{"type":"t","payload":{"id":5,"id":"late"}}"#,
            br#"{"type":"t","payload":{"id":"e\u00e9","n":{"id":"nested"}}}"#,
            br#"{"type":"t","payload":{"n":{"checkpoint_id":"nested"}}}"#,
            br#"{"type":"t","payload":{"id":"c","checkpoint_id":"a" "broken"}}"#,
            br#"{"type":"t","payload":{}}"#,
            br#"{"type":"t","payload":"id"}"#,
            br#"{"type":"t"}"#,
        ];
        for line in lines {
            let got = first_payload_string(line, &fields).map(Cow::into_owned);
            assert_eq!(
                got,
                field_by_field(line, &fields),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(
            first_payload_string(lines[0], &fields).as_deref(),
            Some("a")
        );
        assert_eq!(
            first_payload_string(lines[3], &fields).as_deref(),
            Some("c")
        );
        assert_eq!(
            first_payload_string(lines[6], &fields).as_deref(),
            Some("eé")
        );
        // A payload that does not parse is not found at all (the line does not scan).
        assert_eq!(first_payload_string(lines[8], &fields), None);
    }

    #[test]
    fn nesting_is_limited() {
        let deep = |n: usize| {
            format!(
                "{{\"type\":\"t\",\"p\":{}{}}}",
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        assert!(scan_event_line(deep(MAX_DEPTH - 1).as_bytes()).is_ok());
        assert_eq!(
            scan_event_line(deep(MAX_DEPTH).as_bytes()),
            Err("nesting too deep")
        );
    }
}
