//! A small reference-counted string interner.
//!
//! Event headers store types, streams, actors and correlation ids as `u32`s. Ids are released
//! when the last record using them is evicted, so a long run with ever-new stream ids keeps the
//! interner bounded by what the ring holds.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The id of "no value" (a missing or null field).
pub const ABSENT: u32 = 0;

/// A fast, non-cryptographic hasher for short strings (ids are not attacker-chosen keys of a
/// server-facing table; the map only ever holds strings of live records).
#[derive(Default)]
pub struct ShortStrHasher {
    state: u64,
}

const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for ShortStrHasher {
    fn write(&mut self, bytes: &[u8]) {
        let len = bytes.len();
        // Whole words, then the last (overlapping) word: fixed-size loads, no byte copying.
        if len >= 8 {
            let mut at = 0;
            while at + 8 <= len {
                self.mix(word_at(bytes, at));
                at += 8;
            }
            if at < len {
                self.mix(word_at(bytes, len - 8) ^ len as u64);
            }
        } else if len >= 4 {
            let low = u64::from(half_word_at(bytes, 0));
            let high = u64::from(half_word_at(bytes, len - 4));
            self.mix((high << 32 | low) ^ ((len as u64) << 59));
        } else if len > 0 {
            let packed = u64::from(bytes[0])
                | u64::from(bytes[len / 2]) << 8
                | u64::from(bytes[len - 1]) << 16;
            self.mix(packed | (len as u64) << 24);
        }
    }

    fn write_u8(&mut self, byte: u8) {
        self.mix(u64::from(byte));
    }

    fn finish(&self) -> u64 {
        // Fold the high bits down: hashbrown takes its control bits from the top.
        self.state ^ (self.state >> 29)
    }
}

impl ShortStrHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.state = (self.state ^ word).wrapping_mul(MIX).rotate_left(23);
    }
}

pub type FastHash = BuildHasherDefault<ShortStrHasher>;

#[inline]
fn word_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

#[inline]
fn half_word_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

/// Interned strings with use counts. Id 0 is reserved for [`ABSENT`].
#[derive(Default)]
pub struct Interner {
    ids: HashMap<Box<str>, u32, FastHash>,
    strings: Vec<Option<Box<str>>>,
    uses: Vec<u32>,
    free: Vec<u32>,
}

impl Interner {
    pub fn new() -> Self {
        Self {
            ids: HashMap::default(),
            strings: vec![None],
            uses: vec![0],
            free: Vec::new(),
        }
    }

    /// The id of `value`, adding one use (and the string, if new).
    pub fn acquire(&mut self, value: Option<&str>) -> u32 {
        let Some(value) = value else { return ABSENT };
        if let Some(&id) = self.ids.get(value) {
            self.uses[id as usize] += 1;
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.strings[id as usize] = Some(value.into());
                self.uses[id as usize] = 1;
                id
            }
            None => {
                let id = self.strings.len() as u32;
                self.strings.push(Some(value.into()));
                self.uses.push(1);
                id
            }
        };
        self.ids.insert(value.into(), id);
        id
    }

    /// Adds one use of an id that is held (`resolve(id)` is Some).
    #[inline]
    pub fn add_use(&mut self, id: u32) {
        self.uses[id as usize] += 1;
    }

    /// Drops one use of `id`; the string is forgotten when no record uses it any more.
    /// Returns true when the id was freed.
    pub fn release(&mut self, id: u32) -> bool {
        if id == ABSENT {
            return false;
        }
        let slot = id as usize;
        if slot >= self.uses.len() || self.uses[slot] == 0 {
            debug_assert!(false, "released an id that is not held");
            return false;
        }
        self.uses[slot] -= 1;
        if self.uses[slot] > 0 {
            return false;
        }
        if let Some(value) = self.strings[slot].take() {
            self.ids.remove(&value);
        }
        self.free.push(id);
        true
    }

    /// The id of `value` if some live record uses it (no use added).
    pub fn lookup(&self, value: &str) -> Option<u32> {
        self.ids.get(value).copied()
    }

    pub fn resolve(&self, id: u32) -> Option<&str> {
        self.strings.get(id as usize).and_then(|s| s.as_deref())
    }

    /// How many distinct strings are held.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// One past the largest id ever handed out (for side tables indexed by id).
    pub fn id_bound(&self) -> usize {
        self.strings.len()
    }

    pub fn clear(&mut self) {
        *self = Self::new();
    }

    /// Bytes held by the interner's tables, approximately (for memory reports).
    pub fn heap_bytes(&self) -> usize {
        let strings: usize = self.ids.keys().map(|k| 2 * k.len()).sum();
        strings + self.ids.capacity() * 24 + self.strings.capacity() * 16 + self.uses.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_is_zero_and_never_counted() {
        let mut interner = Interner::new();
        assert_eq!(interner.acquire(None), ABSENT);
        assert!(!interner.release(ABSENT));
        assert!(interner.is_empty());
    }

    #[test]
    fn same_string_same_id_until_last_release() {
        let mut interner = Interner::new();
        let a = interner.acquire(Some("stream-1"));
        let b = interner.acquire(Some("stream-1"));
        assert_eq!(a, b);
        assert_eq!(interner.lookup("stream-1"), Some(a));
        assert!(!interner.release(a));
        assert_eq!(interner.resolve(a), Some("stream-1"));
        assert!(interner.release(a));
        assert_eq!(interner.lookup("stream-1"), None);
        assert_eq!(interner.resolve(a), None);
    }

    #[test]
    fn freed_ids_are_reused_so_the_table_stays_bounded() {
        let mut interner = Interner::new();
        for round in 0..10_000 {
            let name = format!("session-{round}");
            let id = interner.acquire(Some(&name));
            interner.release(id);
        }
        assert!(interner.is_empty());
        assert!(interner.id_bound() <= 2);
    }

    #[test]
    fn hasher_separates_lengths_and_content() {
        use std::hash::BuildHasher;
        let build = FastHash::default();
        let hashes: Vec<u64> = [
            "",
            "a",
            "a\0",
            "ab",
            "abc",
            "abcd",
            "abcde",
            "abcdefg",
            "abcdefgh",
            "abcdefghi",
            "abcdefgi",
            "ses_001",
            "ses_002",
            "ses_010",
            "execution.text_delta",
            "execution.text_delte",
        ]
        .iter()
        .map(|s| build.hash_one(s))
        .collect();
        for (i, x) in hashes.iter().enumerate() {
            for y in &hashes[i + 1..] {
                assert_ne!(x, y);
            }
        }
    }
}
