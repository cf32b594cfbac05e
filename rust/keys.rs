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
static TOKEN_BYTES: [u8; 9] = [0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA, 0xFB, 0xFC, 0xFD];
/// Most tokenized keys one record keeps (an event has each key at most once).
const MAX_SPANS: usize = TOKEN_KEYS.len();

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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeySpans {
    spans: [(u32, u32, u8); MAX_SPANS],
    len: u8,
}

impl KeySpans {
    /// Notes a key at `start..end` (offsets in the record); ignored if it has no token or
    /// another span already took that token (a duplicated key keeps its plain form).
    #[inline]
    pub fn note(&mut self, key: &[u8], start: usize, end: usize) {
        let Some(token) = token_for(key) else { return };
        let count = self.len as usize;
        let fits = count < MAX_SPANS && end <= u32::MAX as usize;
        if fits && !self.spans[..count].iter().any(|&(_, _, t)| t == token) {
            self.spans[count] = (start as u32, end as u32, token);
            self.len += 1;
        }
    }

    /// The same spans moved by `-delta` (when the record starts `delta` bytes into a buffer).
    pub fn shifted_back(&self, delta: usize) -> Self {
        let mut moved = *self;
        for span in &mut moved.spans[..self.len as usize] {
            span.0 -= delta as u32;
            span.1 -= delta as u32;
        }
        moved
    }

    /// The size of `json` (its spans all inside) once compacted.
    pub fn compact_len(&self, len: usize) -> usize {
        let saved: usize = self.spans[..self.len as usize]
            .iter()
            .map(|&(start, end, _)| (end - start) as usize - 1)
            .sum();
        len - saved
    }

    /// The parts whose concatenation is `json[..limit]` with its spans replaced by tokens,
    /// followed by `tail`. `parts` must have room for `2 * MAX_SPANS + 2` slices.
    pub fn compact<'a>(
        &self,
        json: &'a [u8],
        limit: usize,
        tail: &'a [u8],
        parts: &mut [&'a [u8]],
    ) -> usize {
        let mut count = 0;
        let mut from = 0;
        for &(start, end, token) in &self.spans[..self.len as usize] {
            let (start, end) = (start as usize, end as usize);
            if end > limit || start < from {
                continue;
            }
            parts[count] = &json[from..start];
            parts[count + 1] = &TOKEN_BYTES[(token - FIRST_TOKEN) as usize..][..1];
            count += 2;
            from = end;
        }
        parts[count] = &json[from..limit];
        parts[count + 1] = tail;
        count + 2
    }
}

/// Room for the parts of one compacted record.
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
    fn duplicated_keys_keep_their_plain_form() {
        let mut spans = KeySpans::default();
        spans.note(b"type", 1, 8);
        spans.note(b"type", 20, 27);
        assert_eq!(spans.len, 1);
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
