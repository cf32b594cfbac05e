//! The checks both SIMD string escapers pass (`shuffle_escape.rs`, `compress_escape.rs`): what
//! an escaper writes after existing bytes, in a buffer with no spare room (so that every
//! reservation is exercised), against the escaping JSON asks for, a byte at a time.

use crate::json::{write_quoted_in_segments, SegmentEscaper as Escaper, ESCAPE_SEGMENT};

/// The escaping JSON asks for, a byte at a time.
fn reference(text: &[u8]) -> Vec<u8> {
    let mut out = vec![b'"'];
    for &byte in text {
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0..=0x1f => out.extend_from_slice(format!("\\u{byte:04x}").as_bytes()),
            _ => out.push(byte),
        }
    }
    out.push(b'"');
    out
}

/// Checks `write` on `text`.
fn check(write: Escaper, text: &[u8]) {
    let mut out = b"prefix:".to_vec();
    out.shrink_to_fit();
    // SAFETY: callers pass an escaper only if this CPU has its features (`escaper_or_skip`).
    unsafe { write_quoted_in_segments(&mut out, text, write) };
    let mut expected = b"prefix:".to_vec();
    expected.extend(reference(text));
    assert_eq!(
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&expected),
        "{text:?}"
    );
}

/// The escaper, or None with a line on stderr when this CPU lacks its features: the test then
/// checks nothing, and says so.
fn escaper_or_skip(write: Option<Escaper>) -> Option<Escaper> {
    if write.is_none() {
        eprintln!("this CPU lacks the escaper's features: nothing checked");
    }
    write
}

struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Every byte value at every position of texts of 1..=`max_len` bytes.
pub(crate) fn every_byte_at_every_position(write: Option<Escaper>, max_len: usize) {
    let Some(write) = escaper_or_skip(write) else {
        return;
    };
    for length in 1..=max_len {
        for at in 0..length {
            for byte in 0..=255u8 {
                let mut text = vec![b'a'; length];
                text[at] = byte;
                check(write, &text);
            }
        }
    }
}

/// Random texts from plain to all-escape, up to 300 bytes and around `ESCAPE_SEGMENT` (the text
/// an escaper handles per reservation).
pub(crate) fn random_mixes(write: Option<Escaper>) {
    let segment = ESCAPE_SEGMENT;
    let Some(write) = escaper_or_skip(write) else {
        return;
    };
    let alphabet = b"ab~ \xc3\xa9\"\\\n\t\r\x08\x0c\x01\x1f\x7f\x10";
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    for length in (0..300).chain([segment - 1, segment, segment + 17, 3 * segment + 5]) {
        for density in [0u64, 1, 4, 16] {
            let text: Vec<u8> = (0..length)
                .map(|_| {
                    let draw = rng.next();
                    if density == 16 || draw % 16 < density {
                        alphabet[(draw >> 8) as usize % alphabet.len()]
                    } else {
                        b'x'
                    }
                })
                .collect();
            check(write, &text);
        }
    }
}

/// Texts where every byte needs an escape (up to six bytes each: the buffer must grow).
pub(crate) fn all_escapes(write: Option<Escaper>) {
    let segment = ESCAPE_SEGMENT;
    let Some(write) = escaper_or_skip(write) else {
        return;
    };
    let controls: Vec<u8> = (0..3 * segment).map(|i| (i % 0x20) as u8).collect();
    check(write, &controls);
    let unicode_only: Vec<u8> = (0..5000).map(|i| [0x01, 0x1f, 0x10][i % 3]).collect();
    check(write, &unicode_only);
    check(write, &vec![b'"'; 2 * segment + 3]);
    check(write, &vec![b'\n'; segment + 63]);
}
