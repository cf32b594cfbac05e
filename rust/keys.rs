//! Key tokens: in memory, the top-level `"key":` of the reference's fields is held as one byte.
//!
//! Every event repeats `"type":`, `"stream_id":`, `"correlation_id":`, `"actor":`,
//! `"timestamp":`, `"payload":` and `"id":` — about 70 bytes of a 530-byte event. Bytes
//! 0xF5..=0xFD never occur in UTF-8, so they can stand for those keys without ambiguity; the
//! decoder expands them. Files always hold plain JSON; only the in-memory copy is compacted.

/// The keys that have a token, in token order.
pub const TOKEN_KEYS: [&str; 9] = [
    "type",
    "stream_id",
    "correlation_id",
    "actor",
    "timestamp",
    "payload",
    "id",
    "causation_id",
    "metadata",
];
const FIRST_TOKEN: u8 = 0xF5;
/// Each token as a one-byte slice, to use as a part of a record.
#[cfg(test)]
static TOKEN_BYTES: [u8; 9] = [0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA, 0xFB, 0xFC, 0xFD];
/// Most tokenized keys one record keeps (an event has each key at most once).
const MAX_SPANS: usize = TOKEN_KEYS.len();
// Each token has a bit in `KeySpans::taken`.
const _: () = assert!(TOKEN_KEYS.len() <= 16);

/// The token standing for `"key":`, if `key` has one.
#[inline]
pub fn token_for(key: &[u8]) -> Option<u8> {
    let index = match key {
        b"type" => 0,
        b"stream_id" => 1,
        b"correlation_id" => 2,
        b"actor" => 3,
        b"timestamp" => 4,
        b"payload" => 5,
        b"id" => 6,
        b"causation_id" => 7,
        b"metadata" => 8,
        _ => return None,
    };
    Some(FIRST_TOKEN + index)
}

/// The key a token byte stands for.
#[inline]
pub fn key_for_token(byte: u8) -> Option<&'static str> {
    TOKEN_KEYS
        .get(byte.checked_sub(FIRST_TOKEN)? as usize)
        .copied()
}

/// Where the tokenizable keys of one record are: `start..end` covers `"key"` through `:`.
/// Spans are kept in order and never overlap (a key noted inside or before the last one keeps
/// its plain form), so a record's compacted size is known without walking them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeySpans {
    spans: [(u32, u32, u8); MAX_SPANS],
    len: u8,
    /// Bytes the spans save once replaced (each span's length less its one-byte token).
    saved: u32,
    /// Where the last span ends (0: none). The last span holds it too, but reading it from
    /// there (an index and a branch, at every key noted) cost 30-60 instructions an event.
    end: u32,
    /// The tokens the spans took, a bit each (bit `token - FIRST_TOKEN`): one test instead of a
    /// look through the spans at every key noted.
    taken: u16,
}

impl KeySpans {
    /// Notes a key at `start..end` (offsets in the record); ignored if it has no token or
    /// another span already took that token (a duplicated key keeps its plain form).
    #[inline]
    pub fn note(&mut self, key: &[u8], start: usize, end: usize) {
        self.note_token(token_for(key).unwrap_or(0), start, end);
    }

    /// Notes the key whose token is `token` (0: none, ignored) at `start..end`, as `note` does.
    #[inline]
    pub fn note_token(&mut self, token: u8, start: usize, end: usize) {
        let count = self.len as usize;
        // Token 0 (none), and any byte that is not a token, wraps past the last token's index.
        let index = token.wrapping_sub(FIRST_TOKEN) as usize;
        let fits = index < TOKEN_KEYS.len()
            && count < MAX_SPANS
            && start >= self.end as usize
            && start < end
            && end <= u32::MAX as usize;
        let bit = 1u16 << (index % 16);
        if fits && self.taken & bit == 0 {
            self.spans[count] = (start as u32, end as u32, token);
            self.len += 1;
            self.saved += (end - start - 1) as u32;
            self.end = end as u32;
            self.taken |= bit;
        }
    }

    /// The spans replaced with their tokens, in order: those inside `..limit` (all of them for
    /// a whole record).
    #[inline(always)]
    fn replaced(&self, limit: usize) -> &[(u32, u32, u8)] {
        let spans = &self.spans[..self.len as usize];
        if self.end as usize <= limit {
            return spans;
        }
        let inside = spans
            .iter()
            .take_while(|&&(_, end, _)| end as usize <= limit)
            .count();
        &spans[..inside]
    }

    /// The parts whose concatenation is `json[..limit]` with its spans replaced by tokens,
    /// followed by `tail`. `parts` must have room for `2 * MAX_SPANS + 2` slices. The model
    /// `write_compacted` is tested against (records are stored with that, in one pass).
    #[cfg(test)]
    pub fn compact<'a>(
        &self,
        json: &'a [u8],
        limit: usize,
        tail: &'a [u8],
        parts: &mut [&'a [u8]],
    ) -> usize {
        let mut count = 0;
        let mut from = 0;
        for &(start, end, token) in self.replaced(limit) {
            let (start, end) = (start as usize, end as usize);
            parts[count] = &json[from..start];
            parts[count + 1] = &TOKEN_BYTES[(token - FIRST_TOKEN) as usize..][..1];
            count += 2;
            from = end;
        }
        parts[count] = &json[from..limit];
        parts[count + 1] = tail;
        count + 2
    }

    /// The length of `json[..limit]` with its spans replaced by tokens, and a tail of `tail`
    /// bytes (what `write_compacted` writes).
    #[inline]
    pub fn compacted_len(&self, limit: usize, tail: usize) -> usize {
        if self.end as usize <= limit {
            return limit - self.saved as usize + tail;
        }
        let saved: usize = self
            .replaced(limit)
            .iter()
            .map(|&(start, end, _)| (end - start - 1) as usize)
            .sum();
        limit - saved + tail
    }

    /// Writes `json[..limit]` with its spans replaced by tokens, then `tail`, at `out`; returns
    /// the bytes written (`compacted_len`). Storing the record in one pass, without the list of
    /// parts, saved about 250 instructions an event (callgrind) over building the parts and
    /// copying each.
    ///
    /// # Safety
    /// `out` must be valid for writes of `compacted_len(limit, tail.len())` bytes that do not
    /// overlap `json` or `tail`, and `limit <= json.len()`.
    #[inline]
    pub unsafe fn write_compacted(
        &self,
        json: &[u8],
        limit: usize,
        tail: &[u8],
        out: *mut u8,
    ) -> usize {
        let mut at = 0;
        let mut from = 0;
        for &(start, end, token) in self.replaced(limit) {
            let (start, end) = (start as usize, end as usize);
            // SAFETY: `from <= start <= end <= limit <= json.len()` (spans are in order and do
            // not overlap, and `replaced` keeps those inside `..limit`), and `out` has room for
            // the compacted record (the caller's contract), of which these bytes are a prefix.
            unsafe {
                crate::copy::copy_short(json.as_ptr().add(from), out.add(at), start - from);
                out.add(at + start - from).write(token);
            }
            at += start - from + 1;
            from = end;
        }
        // SAFETY: as above, for the rest of `json[..limit]` and the tail, which end the record.
        unsafe {
            crate::copy::copy_short(json.as_ptr().add(from), out.add(at), limit - from);
            at += limit - from;
            crate::copy::copy_short(tail.as_ptr(), out.add(at), tail.len());
        }
        at + tail.len()
    }
}

/// Writes a record as held in memory back as the JSON it stands for: tokens expanded and
/// `"seq":N` added as the last member (the line as the file has it, without the newline).
pub fn expand_record(held: &[u8], seq: u64, out: &mut Vec<u8>) {
    out.reserve(held.len() + 96);
    let close = held.iter().rposition(|&b| b == b'}').unwrap_or(held.len());
    let body = &held[..close];
    let mut from = 0;
    while let Some(at) = next_token(body, from) {
        out.extend_from_slice(&body[from..at]);
        match key_for_token(body[at]) {
            Some(key) => {
                out.push(b'"');
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(b"\":");
            }
            // Not a token (0xFE, 0xFF): not in any record we write; keep it as it is.
            None => out.push(body[at]),
        }
        from = at + 1;
    }
    out.extend_from_slice(&body[from..]);
    out.extend_from_slice(b",\"seq\":");
    out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    out.push(b'}');
}

/// Index of the first byte at or after `from` that may be a token (>= 0xF5).
#[inline]
fn next_token(bytes: &[u8], mut from: usize) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of the x86_64 baseline. Each unaligned 16-byte load is at `from`
        // with `from + 16 <= bytes.len()`, so it stays inside `bytes`.
        unsafe {
            let floor = _mm_set1_epi8(FIRST_TOKEN as i8);
            while from + 16 <= bytes.len() {
                let chunk = _mm_loadu_si128(bytes.as_ptr().add(from).cast());
                // Unsigned `byte >= 0xF5` is `max(byte, 0xF5) == byte`.
                let mask = _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_max_epu8(chunk, floor), chunk));
                if mask != 0 {
                    return Some(from + mask.trailing_zeros() as usize);
                }
                from += 16;
            }
        }
    }
    bytes[from..]
        .iter()
        .position(|&b| b >= FIRST_TOKEN)
        .map(|offset| from + offset)
}

/// Room for the parts of one compacted record.
#[cfg(test)]
pub const MAX_PARTS: usize = 2 * MAX_SPANS + 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_are_never_utf8() {
        for (index, key) in TOKEN_KEYS.iter().enumerate() {
            let token = token_for(key.as_bytes()).unwrap();
            assert_eq!(token, FIRST_TOKEN + index as u8);
            assert_eq!(key_for_token(token), Some(*key));
            assert!(std::str::from_utf8(&[token]).is_err());
        }
        assert_eq!(token_for(b"seq"), None);
        assert_eq!(key_for_token(b'{'), None);
        assert_eq!(key_for_token(0xFE), None);
    }

    #[test]
    fn compact_replaces_spans_and_keeps_the_rest() {
        let json = br#"{"type":"a","x":1,"payload":{"type":2}"#;
        let mut spans = KeySpans::default();
        spans.note(b"type", 1, 8);
        spans.note(b"x", 12, 16);
        spans.note(b"payload", 18, 28);
        let mut parts = [&b""[..]; MAX_PARTS];
        let count = spans.compact(json, json.len(), b"}", &mut parts);
        let held: Vec<u8> = parts[..count].concat();
        assert_eq!(held, b"{\xf5\"a\",\"x\":1,\xfa{\"type\":2}}");
    }

    #[test]
    fn expand_restores_the_line_the_file_holds() {
        let held = b"{\xf5\"a\",\"x\":1,\xfa{\"type\":2}}";
        let mut out = Vec::new();
        expand_record(held, 42, &mut out);
        assert_eq!(out, br#"{"type":"a","x":1,"payload":{"type":2},"seq":42}"#);
        let mut plain = Vec::new();
        expand_record(br#"{"type":"b"}  "#, 7, &mut plain);
        assert_eq!(plain, br#"{"type":"b","seq":7}"#);
    }

    #[test]
    fn token_search_finds_every_position() {
        for len in [0usize, 1, 15, 16, 17, 40] {
            for at in 0..len {
                let mut bytes = vec![b'a'; len];
                bytes[at] = 0xF9;
                assert_eq!(next_token(&bytes, 0), Some(at));
                assert_eq!(next_token(&bytes, at + 1), None);
            }
            assert_eq!(next_token(&vec![0xF4; len], 0), None);
        }
    }

    #[test]
    fn duplicated_keys_keep_their_plain_form() {
        let mut spans = KeySpans::default();
        spans.note(b"type", 1, 8);
        spans.note(b"type", 20, 27);
        assert_eq!(spans.len, 1);
        // Every token once, then each again: only the first of each is a span.
        let mut spans = KeySpans::default();
        for (round, at) in [(0, 0), (1, 200)] {
            for (index, key) in TOKEN_KEYS.iter().enumerate() {
                let start = at + index * 20 + 1;
                spans.note(key.as_bytes(), start, start + key.len() + 3);
            }
            assert_eq!(spans.len as usize, TOKEN_KEYS.len(), "round {round}");
        }
    }

    #[test]
    fn bytes_that_are_not_tokens_make_no_span() {
        let mut spans = KeySpans::default();
        for byte in [
            0,
            1,
            b'{',
            FIRST_TOKEN - 1,
            FIRST_TOKEN + TOKEN_KEYS.len() as u8,
            0xFF,
        ] {
            spans.note_token(byte, 1, 8);
        }
        assert_eq!(spans.len, 0);
        spans.note_token(FIRST_TOKEN, 1, 8);
        assert_eq!(spans.len, 1);
    }

    #[test]
    fn writing_compacted_gives_the_parts_concatenated() {
        // Every piece length from 0 to 40 around the spans, spans past the limit and
        // overlapping ones, and tails of every short length.
        for gap in 0..41usize {
            let filler = "x".repeat(gap);
            let json = format!(r#"{{"type":"a{filler}","id":"{filler}","payload":{{"k":1}}"#);
            let text = json.as_bytes();
            let mut spans = KeySpans::default();
            spans.note(b"type", 1, 8);
            let id = text.windows(5).position(|w| w == b"\"id\":").unwrap();
            spans.note(b"id", id, id + 5);
            spans.note(b"metadata", id + 2, id + 9); // overlaps the one before: kept plain
            let payload = text.windows(10).position(|w| w == b"\"payload\":").unwrap();
            spans.note(b"payload", payload, payload + 10);
            for limit in [text.len(), payload + 5, id + 3, 0] {
                for tail in [
                    &b""[..],
                    b"}",
                    b"}}}",
                    &b"0123456789abcdef0123"[..gap.min(20)],
                ] {
                    let mut parts = [&b""[..]; MAX_PARTS];
                    let count = spans.compact(text, limit, tail, &mut parts);
                    let expected = parts[..count].concat();
                    assert_eq!(spans.compacted_len(limit, tail.len()), expected.len());
                    let mut out = vec![0u8; expected.len() + 8];
                    // SAFETY: `out` holds the compacted record and does not overlap the input.
                    let written =
                        unsafe { spans.write_compacted(text, limit, tail, out.as_mut_ptr()) };
                    assert_eq!(written, expected.len());
                    assert_eq!(&out[..written], &expected[..], "gap {gap}, limit {limit}");
                    assert!(
                        out[written..].iter().all(|&b| b == 0),
                        "wrote past the record"
                    );
                }
            }
        }
    }

    #[test]
    fn spans_out_of_order_or_overlapping_keep_their_plain_form() {
        let mut spans = KeySpans::default();
        spans.note(b"id", 20, 25);
        spans.note(b"type", 1, 8); // before the last one
        spans.note(b"actor", 22, 30); // inside it
        spans.note(b"payload", 25, 35);
        assert_eq!((spans.len, spans.saved, spans.end), (2, 4 + 9, 35));
        // Whole, the size comes from `saved`; cut inside a span, from the spans before it.
        assert_eq!(spans.compacted_len(40, 1), 40 - 13 + 1);
        assert_eq!(spans.compacted_len(30, 0), 30 - 4);
    }

    #[test]
    fn spans_past_the_limit_are_left_out() {
        let json = br#"{"id":"x","seq":3}"#;
        let mut spans = KeySpans::default();
        spans.note(b"id", 1, 6);
        let mut parts = [&b""[..]; MAX_PARTS];
        let count = spans.compact(json, 4, b"}", &mut parts);
        assert_eq!(parts[..count].concat(), b"{\"id}");
    }
}
