//! A small reference-counted string interner.
//!
//! Event headers store types, streams, actors and correlation ids as `u32`s. Ids are released
//! when the last record using them is evicted, so a long run with ever-new stream ids keeps the
//! interner bounded by what the ring holds.
//!
//! Each string is held once (the table of ids finds them by hash through the list of strings),
//! so a string seen only once, such as a fresh correlation id per event, costs one insertion and,
//! at eviction, one removal. Strings of up to 30 bytes (OpenCode's ids are 30) are held in their
//! slot of the list, so they cost no allocation of their own: on short-string events, which each
//! bring a fresh correlation id, `malloc` took about 190 instructions an event (callgrind).

use std::hash::{BuildHasherDefault, Hasher};

use hashbrown::HashTable;

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

/// The hash the interner files a string under (a second mixing round spreads the bits the
/// table takes its positions and tags from).
#[inline]
pub(crate) fn hash_str(value: &str) -> u64 {
    let mut hasher = ShortStrHasher::default();
    hasher.write(value.as_bytes());
    hasher.write_u8(0xff);
    hasher.finish()
}

/// Longest string held inline in its slot.
const INLINE: usize = 30;

/// One id's string: none (a free id), inline, or on the heap if longer than `INLINE`.
pub(crate) enum Held {
    Free,
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl Held {
    pub(crate) fn new(value: &str) -> Self {
        if value.len() > INLINE {
            return Held::Heap(value.into());
        }
        let mut bytes = [0u8; INLINE];
        bytes[..value.len()].copy_from_slice(value.as_bytes());
        Held::Inline {
            len: value.len() as u8,
            bytes,
        }
    }

    #[inline]
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Held::Free => None,
            Held::Inline { len, bytes } => {
                let text = &bytes[..usize::from(*len)];
                // SAFETY: `text` is a whole `&str` copied by `new` (never cut), so it is valid
                // UTF-8.
                Some(unsafe { std::str::from_utf8_unchecked(text) })
            }
            Held::Heap(text) => Some(text),
        }
    }

    /// Bytes it holds outside the slot.
    pub(crate) fn heap_len(&self) -> usize {
        match self {
            Held::Heap(text) => text.len(),
            _ => 0,
        }
    }
}

/// The string held under `id` (empty for a free id, which the table never holds).
#[inline]
fn held(strings: &[Held], id: u32) -> &str {
    strings
        .get(id as usize)
        .and_then(Held::as_str)
        .unwrap_or("")
}

/// Interned strings with use counts. Id 0 is reserved for [`ABSENT`].
pub struct Interner {
    /// The held ids, found by the hash of their string.
    ids: HashTable<u32>,
    strings: Vec<Held>,
    /// Each id's string's hash: growing the table and releasing an id move entries by it
    /// without reading and hashing their strings again (while short-string events each
    /// brought a new id, the table's growth took about 155 instructions an event; 71 now).
    hashes: Vec<u64>,
    uses: Vec<u32>,
    free: Vec<u32>,
}

impl Default for Interner {
    fn default() -> Self {
        Self::new()
    }
}

impl Interner {
    pub fn new() -> Self {
        Self {
            ids: HashTable::new(),
            strings: vec![Held::Free],
            hashes: vec![0],
            uses: vec![0],
            free: Vec::new(),
        }
    }

    /// The id of `value`, adding one use (and the string, if new).
    pub fn acquire(&mut self, value: Option<&str>) -> u32 {
        let Some(value) = value else { return ABSENT };
        let hash = hash_str(value);
        match self.use_held(value, hash) {
            Some(id) => id,
            None => self.insert_new(value, hash),
        }
    }

    /// The id of `value` (whose `hash_str` is `hash`) with one use added, if it is held.
    #[inline(always)]
    pub fn use_held(&mut self, value: &str, hash: u64) -> Option<u32> {
        let strings = &self.strings;
        let &id = self.ids.find(hash, |&id| held(strings, id) == value)?;
        self.uses[id as usize] += 1;
        Some(id)
    }

    /// Holds `value`, which is not held yet (`use_held` said so), with one use; its id.
    pub fn insert_new(&mut self, value: &str, hash: u64) -> u32 {
        debug_assert!(self.lookup(value).is_none(), "{value:?} is already held");
        let id = match self.free.pop() {
            Some(id) => {
                let slot = id as usize;
                self.strings[slot] = Held::new(value);
                self.hashes[slot] = hash;
                self.uses[slot] = 1;
                id
            }
            None => {
                let id = self.strings.len() as u32;
                self.strings.push(Held::new(value));
                self.hashes.push(hash);
                self.uses.push(1);
                id
            }
        };
        let hashes = &self.hashes;
        self.ids.insert_unique(hash, id, |&id| hashes[id as usize]);
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
        // A used id is held: its string goes, and its entry is found by the kept hash.
        self.strings[slot] = Held::Free;
        if let Ok(entry) = self.ids.find_entry(self.hashes[slot], |&held| held == id) {
            entry.remove();
        }
        self.free.push(id);
        true
    }

    /// The id of `value` if some live record uses it (no use added).
    pub fn lookup(&self, value: &str) -> Option<u32> {
        self.lookup_hashed(value, hash_str(value))
    }

    /// `lookup` of a string whose `hash_str` is `hash`.
    pub fn lookup_hashed(&self, value: &str, hash: u64) -> Option<u32> {
        let strings = &self.strings;
        self.ids
            .find(hash, |&id| held(strings, id) == value)
            .copied()
    }

    pub fn resolve(&self, id: u32) -> Option<&str> {
        self.strings.get(id as usize).and_then(Held::as_str)
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
        let strings: usize = self.strings.iter().map(Held::heap_len).sum();
        strings
            + self.ids.capacity() * 5
            + self.strings.capacity() * std::mem::size_of::<Held>()
            + self.hashes.capacity() * 8
            + self.uses.capacity() * 4
            + self.free.capacity() * 4
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
    fn strings_inline_and_on_the_heap_round_trip() {
        // A slot is 32 bytes: 30 inline bytes, their length and the tag.
        assert_eq!(std::mem::size_of::<Held>(), 32);
        let mut interner = Interner::new();
        let texts = [
            String::new(),
            "a".repeat(INLINE - 1),
            "b".repeat(INLINE),
            "c".repeat(INLINE + 1),
            // Multi-byte characters across the boundary: 14 x 2 bytes + 3 = 31 bytes.
            format!("{}€", "é".repeat(14)),
            "ses_01JQ3M8Z5XW2Y7K9R4T6V0N1HB".to_string(),
        ];
        let ids: Vec<u32> = texts.iter().map(|t| interner.acquire(Some(t))).collect();
        for (text, &id) in texts.iter().zip(&ids) {
            assert_eq!(interner.resolve(id), Some(text.as_str()));
            assert_eq!(interner.lookup(text), Some(id));
        }
        // Only the strings longer than INLINE count outside their slots.
        let outside: usize = texts
            .iter()
            .filter(|t| t.len() > INLINE)
            .map(|t| t.len())
            .sum();
        let slots = interner.strings.capacity() * 32;
        assert!(interner.heap_bytes() >= outside + slots);
        for (text, &id) in texts.iter().zip(&ids) {
            assert!(interner.release(id));
            assert_eq!(interner.lookup(text), None);
            assert_eq!(interner.resolve(id), None);
        }
        assert!(interner.is_empty());
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
    fn agrees_with_a_model_through_interleaved_acquires_and_releases() {
        use std::collections::HashMap;
        let mut interner = Interner::new();
        let mut model: HashMap<String, (u32, u32)> = HashMap::new();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for step in 0..20_000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // A few strings repeat a lot, most are seen once or twice.
            let name = if state & 3 == 0 {
                format!("hot-{}", state % 7)
            } else {
                format!("once-{}", step / 2)
            };
            let id = interner.acquire(Some(&name));
            let entry = model.entry(name.clone()).or_insert((id, 0));
            assert_eq!(entry.0, id, "{name}");
            entry.1 += 1;
            if matches!(state % 3, 0) {
                let victim = model
                    .keys()
                    .nth((state >> 20) as usize % model.len())
                    .cloned();
                if let Some(victim) = victim {
                    let (id, uses) = model[&victim];
                    assert_eq!(interner.release(id), uses == 1);
                    if uses == 1 {
                        model.remove(&victim);
                    } else {
                        model.insert(victim, (id, uses - 1));
                    }
                }
            }
        }
        assert_eq!(interner.len(), model.len());
        for (name, (id, _)) in &model {
            assert_eq!(interner.lookup(name), Some(*id));
            assert_eq!(interner.resolve(*id), Some(name.as_str()));
        }
        assert_eq!(interner.lookup("once-never"), None);
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
