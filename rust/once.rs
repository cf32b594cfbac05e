//! Correlation ids seen once: held beside their records, in record order, not interned.
//!
//! A correlation id is often fresh for every event (a request id). Interning such a string
//! costs an insertion into the interner's table and, when its record is evicted, a removal, and
//! both land on cache lines of a table as large as the ring: with a fresh correlation id per
//! event, `extend` of short-string events took 1.16x the time it took when the ids repeated
//! (paired rounds, 7 pairs; 1.04x in a later hour, when the machine's shared cache was less
//! busy). A ring therefore interns a correlation id only once it repeats:
//! the first time a string is seen it is kept here, one entry per record, and the header holds
//! [`TAGGED`] plus the entry's number; a string seen again soon after (its hash still in
//! [`OnceStrings::seen_before`]'s table) is interned from then on.
//!
//! Entries are added as records are pushed and dropped as the oldest records are evicted, so
//! the entries are always in the records' order and the front entry belongs to the oldest record
//! that has one: a queue, with no lookup structure to keep up.
//!
//! A query by correlation id first finds the entries that hold its text (`ids_holding`: a scan of
//! 32-bit tags of their hashes, kept apart from the strings) and then compares headers with
//! those ids, as it compares them with an interned id. Checking each tagged header against its
//! entry instead made a query over 100,000 records whose ids were all seen once take 313-341 us,
//! against 133 us when every id was interned.

use std::collections::VecDeque;

use crate::interner::Held;

/// The bit that marks a header's correlation id as the number of an entry here. Interned ids
/// stay far below it: an id exists per distinct string a live record uses, and 2^31 of them
/// would take more than 64 GiB.
pub const TAGGED: u32 = 1 << 31;
const NUMBER: u32 = TAGGED - 1;
/// Hashes of strings recently kept here, by a few bits of the hash: 32 KiB, so checking it
/// stays in cache while the interner's table does not.
const SEEN_SLOTS: usize = 4096;
/// Tags compared at a time by `ids_holding`.
const TAG_CHUNK: usize = 32;

/// The correlation ids of records that hold one seen once, oldest first.
pub struct OnceStrings {
    /// Each entry's tag (`tag_of` its hash), in step with `texts`.
    tags: VecDeque<u32>,
    texts: VecDeque<Held>,
    /// Number (modulo 2^31) of the front entry.
    first: u32,
    /// By `hash % SEEN_SLOTS`: the hash of a string last kept here (0: none yet).
    seen: Box<[u64]>,
}

impl Default for OnceStrings {
    fn default() -> Self {
        Self::new()
    }
}

impl OnceStrings {
    pub fn new() -> Self {
        Self {
            tags: VecDeque::new(),
            texts: VecDeque::new(),
            first: 0,
            seen: Box::default(),
        }
    }

    /// Whether a header's correlation id is an entry of this queue rather than an interned id.
    #[inline]
    pub fn is_tagged(id: u32) -> bool {
        id & TAGGED != 0
    }

    /// Whether a string with this `hash_str` was kept here recently (then it repeats, and the
    /// caller interns it); otherwise remembers the hash and says no.
    #[inline]
    pub fn seen_before(&mut self, hash: u64) -> bool {
        if self.seen.is_empty() {
            self.seen = vec![0; SEEN_SLOTS].into_boxed_slice();
        }
        let slot = &mut self.seen[(hash % SEEN_SLOTS as u64) as usize];
        if *slot == hash {
            return true;
        }
        *slot = hash;
        false
    }

    /// Keeps `text` (whose `hash_str` is `hash`) for the record being pushed; the id its header
    /// holds.
    #[inline]
    pub fn push(&mut self, text: &str, hash: u64) -> u32 {
        let number = self.first.wrapping_add(self.texts.len() as u32) & NUMBER;
        self.tags.push_back(tag_of(hash));
        self.texts.push_back(Held::new(text));
        TAGGED | number
    }

    /// Drops the entry of the oldest record that has one, as that record is evicted; `id` is
    /// the id its header held.
    pub fn pop_front(&mut self, id: u32) {
        debug_assert_eq!(
            id & NUMBER,
            self.first,
            "entries are dropped in record order"
        );
        if self.texts.pop_front().is_some() {
            self.tags.pop_front();
            self.first = self.first.wrapping_add(1) & NUMBER;
        }
    }

    /// The tagged ids of the entries that hold `text` (with `hash_str` `hash`), sorted.
    pub fn ids_holding(&self, text: &str, hash: u64) -> Vec<u32> {
        let tag = tag_of(hash);
        let mut ids = Vec::new();
        let (front, back) = self.tags.as_slices();
        for (start, tags) in [(0, front), (front.len(), back)] {
            // Whole chunks are compared without a branch per tag (the compiler vectorizes it);
            // only a chunk with a matching tag is looked at tag by tag.
            for (chunk_index, chunk) in tags.chunks(TAG_CHUNK).enumerate() {
                if !chunk
                    .iter()
                    .fold(false, |found, &held| found | (held == tag))
                {
                    continue;
                }
                for (offset, &held) in chunk.iter().enumerate() {
                    let at = start + chunk_index * TAG_CHUNK + offset;
                    if held == tag && self.text_at(at) == Some(text) {
                        ids.push(TAGGED | (self.first.wrapping_add(at as u32) & NUMBER));
                    }
                }
            }
        }
        ids.sort_unstable();
        ids
    }

    /// The string a header's tagged `id` names.
    pub fn resolve(&self, id: u32) -> Option<&str> {
        self.text_at(self.position(id)?)
    }

    /// Where the entry a tagged `id` names is.
    #[inline]
    fn position(&self, id: u32) -> Option<usize> {
        Self::is_tagged(id).then(|| ((id & NUMBER).wrapping_sub(self.first) & NUMBER) as usize)
    }

    fn text_at(&self, at: usize) -> Option<&str> {
        self.texts.get(at).and_then(Held::as_str)
    }

    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// Forgets every entry (the ring was cleared); the table of hashes seen stays.
    pub fn clear(&mut self) {
        self.tags.clear();
        self.texts.clear();
        self.first = 0;
    }

    /// Bytes held, approximately (for memory reports).
    pub fn heap_bytes(&self) -> usize {
        let outside: usize = self.texts.iter().map(Held::heap_len).sum();
        outside
            + self.tags.capacity() * 4
            + self.texts.capacity() * std::mem::size_of::<Held>()
            + self.seen.len() * 8
    }
}

/// The 32 bits of a hash a query compares first (the high ones: the seen table is indexed by the
/// low ones).
#[inline]
fn tag_of(hash: u64) -> u32 {
    (hash >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interner::hash_str;

    fn keep(once: &mut OnceStrings, text: &str) -> u32 {
        once.push(text, hash_str(text))
    }

    #[test]
    fn entries_are_found_by_their_ids_and_dropped_oldest_first() {
        let mut once = OnceStrings::new();
        let long = "r".repeat(45);
        let ids: Vec<u32> = ["a", "req_1", long.as_str()]
            .iter()
            .map(|t| keep(&mut once, t))
            .collect();
        assert!(ids.iter().all(|&id| OnceStrings::is_tagged(id)));
        assert_eq!(once.resolve(ids[1]), Some("req_1"));
        assert_eq!(once.resolve(ids[2]), Some(long.as_str()));
        assert_eq!(once.ids_holding(&long, hash_str(&long)), [ids[2]]);
        assert!(once.ids_holding("req_2", hash_str("req_2")).is_empty());
        // An interned id (untagged) is never an entry.
        assert_eq!(once.resolve(ids[0] & NUMBER), None);
        once.pop_front(ids[0]);
        assert_eq!(once.resolve(ids[0]), None);
        assert_eq!(once.resolve(ids[1]), Some("req_1"));
        assert!(once.heap_bytes() >= 45);
        once.pop_front(ids[1]);
        once.pop_front(ids[2]);
        assert!(once.is_empty());
        assert_eq!(once.resolve(ids[2]), None);
    }

    #[test]
    fn numbers_wrap_past_the_tag_bit() {
        let mut once = OnceStrings::new();
        once.first = NUMBER - 1;
        let ids: Vec<u32> = (0..4).map(|i| keep(&mut once, &format!("x{i}"))).collect();
        assert_eq!(
            ids,
            [TAGGED | (NUMBER - 1), TAGGED | NUMBER, TAGGED, TAGGED | 1]
        );
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(once.resolve(id), Some(format!("x{i}").as_str()));
        }
        once.pop_front(ids[0]);
        once.pop_front(ids[1]);
        assert_eq!(once.first, 0);
        assert_eq!(once.resolve(ids[3]), Some("x3"));
        assert_eq!(once.resolve(ids[1]), None);
    }

    #[test]
    fn a_hash_is_seen_before_only_after_it_was_remembered() {
        let mut once = OnceStrings::new();
        let (a, b) = (hash_str("req_a"), hash_str("req_b"));
        assert!(!once.seen_before(a));
        assert!(!once.seen_before(b));
        assert!(once.seen_before(a));
        // A hash in the same slot replaces it.
        let clash = a.wrapping_add(SEEN_SLOTS as u64);
        assert!(!once.seen_before(clash));
        assert!(!once.seen_before(a));
        once.clear();
        assert!(
            once.seen_before(a),
            "clearing the entries keeps the hashes seen"
        );
    }
}
