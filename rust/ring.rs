//! EventRing: the bounded in-memory event history.
//!
//! Records are compact JSON bytes packed into large blocks, with a fixed 40-byte header each in a
//! ring of headers. Appending past the count or byte limit evicts the oldest record in O(1): its
//! header is popped and, once every record of the oldest block is gone, the block is recycled.
//! There is no per-event allocation once warm and no shifting.

use std::collections::VecDeque;

use crate::event::{CoreError, EventFields};
use crate::interner::{Interner, ABSENT};

/// Size of the byte blocks records are packed into. Larger records get a block of their own.
pub const BLOCK_SIZE: usize = 256 * 1024;
/// Headers reserved up front at most; the header ring grows past this only when needed.
const MAX_PREALLOCATED_HEADERS: usize = 1 << 20;
/// Freed blocks kept for reuse, so a full ring never goes back to the allocator.
const SPARE_BLOCKS: usize = 2;
const NO_RECORD: u64 = u64::MAX;

/// A block's buffer, its pages faulted in with one call instead of one fault per page as
/// records are copied in (a first touch of fresh memory is costly, more so in a VM).
fn new_block(capacity: usize) -> Vec<u8> {
    const MADV_POPULATE_WRITE: libc::c_int = 23;
    const PAGE: usize = 4096;
    let block: Vec<u8> = Vec::with_capacity(capacity);
    let start = block.as_ptr() as usize;
    let first_page = start.div_ceil(PAGE) * PAGE;
    let end = (start + capacity) / PAGE * PAGE;
    if end > first_page {
        // SAFETY: advice on whole pages inside the allocation we own; it changes no contents,
        // and failure (an older kernel) only means the pages fault one by one.
        unsafe {
            libc::madvise(
                first_page as *mut libc::c_void,
                end - first_page,
                MADV_POPULATE_WRITE,
            )
        };
    }
    block
}

const RECENT_SLOTS: usize = 64;

#[derive(Clone, Copy, Default)]
struct RecentId {
    address: usize,
    len: usize,
    id: u32,
}

/// The fixed header of a stored record; the JSON lives in a block.
#[derive(Clone, Copy, Debug)]
struct Header {
    timestamp: f64,
    /// Sequence number minus the block's `base_seq`.
    seq_offset: u32,
    /// Absolute (wrapping) number of the block holding the bytes.
    block: u32,
    /// Byte offset in that block. The length is where the next record of the block starts.
    offset: u32,
    type_id: u32,
    stream_id: u32,
    actor_id: u32,
    correlation_id: u32,
    /// Distance back to the previous record of the same stream (0: none).
    prev_in_stream: u32,
}

struct Block {
    data: Vec<u8>,
    base_seq: u64,
    live: u32,
}

/// One stored record, borrowed from the ring.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Record<'a> {
    pub seq: u64,
    pub timestamp: f64,
    pub json: &'a [u8],
}

/// A bounded ring of events, limited by count and optionally by bytes.
pub struct Ring {
    capacity: usize,
    max_bytes: Option<usize>,
    headers: VecDeque<Header>,
    blocks: VecDeque<Block>,
    first_block: u32,
    spare: Vec<Vec<u8>>,
    /// Absolute index (number of records ever pushed before it) of `headers[0]`.
    base: u64,
    nbytes: usize,
    evicted: u64,
    pub(crate) interner: Interner,
    /// By interned id: absolute index of the newest record of that stream.
    stream_heads: Vec<u64>,
    /// Recently interned strings by the address of the caller's text: events built by the
    /// same program reuse the same string objects, and an address check plus a comparison is
    /// cheaper than hashing. Entries are always verified against the interned text.
    recent: Box<[RecentId; RECENT_SLOTS]>,
}

impl Ring {
    /// A ring holding at most `capacity` events and, if given, `max_bytes` bytes of JSON.
    pub fn new(capacity: usize, max_bytes: Option<usize>) -> Result<Self, CoreError> {
        if capacity == 0 {
            return Err(CoreError::Invalid("capacity must be at least 1".into()));
        }
        if capacity > u32::MAX as usize {
            return Err(CoreError::Invalid(format!(
                "capacity must be at most {} events, got {capacity}",
                u32::MAX
            )));
        }
        if max_bytes == Some(0) {
            return Err(CoreError::Invalid("max_bytes must be at least 1".into()));
        }
        Ok(Self {
            capacity,
            max_bytes,
            headers: VecDeque::with_capacity(capacity.min(MAX_PREALLOCATED_HEADERS)),
            blocks: VecDeque::new(),
            first_block: 0,
            spare: Vec::new(),
            base: 0,
            nbytes: 0,
            evicted: 0,
            interner: Interner::new(),
            stream_heads: Vec::new(),
            recent: Box::new([RecentId::default(); RECENT_SLOTS]),
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn max_bytes(&self) -> Option<usize> {
        self.max_bytes
    }

    pub fn len(&self) -> usize {
        self.headers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }

    /// Exact bytes of JSON held.
    pub fn nbytes(&self) -> usize {
        self.nbytes
    }

    /// Records evicted since the ring was made.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Memory the ring has reserved: blocks, headers, indexes and interned strings.
    pub fn heap_bytes(&self) -> usize {
        let blocks: usize = self.blocks.iter().map(|b| b.data.capacity()).sum();
        let spare: usize = self.spare.iter().map(Vec::capacity).sum();
        blocks
            + spare
            + self.headers.capacity() * std::mem::size_of::<Header>()
            + self.stream_heads.capacity() * 8
            + self.interner.heap_bytes()
    }

    /// Absolute index of the oldest held record (records ever pushed before it).
    pub fn first_absolute(&self) -> u64 {
        self.base
    }

    /// Appends a record made of `parts` (concatenated), evicting the oldest as needed.
    pub fn push(
        &mut self,
        seq: u64,
        fields: &EventFields<'_>,
        parts: &[&[u8]],
    ) -> Result<(), CoreError> {
        let size: usize = parts.iter().map(|p| p.len()).sum();
        self.check_fits(size)?;
        while self.headers.len() >= self.capacity
            || self
                .max_bytes
                .is_some_and(|limit| self.nbytes + size > limit)
        {
            self.evict_oldest();
        }
        let (block, offset) = self.place(seq, size);
        let index = self.block_index(block);
        let target = &mut self.blocks[index];
        for part in parts {
            target.data.extend_from_slice(part);
        }
        target.live += 1;
        let seq_offset = (seq - target.base_seq) as u32;
        let header = self.make_header(fields, seq_offset, block, offset);
        self.headers.push_back(header);
        self.nbytes += size;
        Ok(())
    }

    pub fn check_fits(&self, size: usize) -> Result<(), CoreError> {
        if let Some(limit) = self.max_bytes.filter(|&limit| size > limit) {
            return Err(CoreError::TooLarge {
                size,
                limit,
                what: "ring's max_bytes",
            });
        }
        if size >= u32::MAX as usize {
            return Err(CoreError::TooLarge {
                size,
                limit: u32::MAX as usize - 1,
                what: "record size limit",
            });
        }
        Ok(())
    }

    fn make_header(
        &mut self,
        fields: &EventFields<'_>,
        seq_offset: u32,
        block: u32,
        offset: u32,
    ) -> Header {
        let absolute = self.base + self.headers.len() as u64;
        let stream_id = self.acquire(fields.stream_id);
        Header {
            timestamp: fields.timestamp,
            seq_offset,
            block,
            offset,
            type_id: self.acquire(Some(fields.event_type)),
            stream_id,
            actor_id: self.acquire(fields.actor),
            correlation_id: self.acquire(fields.correlation_id),
            prev_in_stream: self.link_stream(stream_id, absolute),
        }
    }

    /// Interns `value`, trying the id last seen for the same text address first.
    #[inline]
    fn acquire(&mut self, value: Option<&str>) -> u32 {
        let Some(text) = value else { return ABSENT };
        let address = text.as_ptr() as usize;
        let slot = ((address >> 4) ^ (address >> 13)) % RECENT_SLOTS;
        let recent = self.recent[slot];
        if recent.address == address
            && recent.len == text.len()
            && self.interner.resolve(recent.id) == Some(text)
        {
            self.interner.add_use(recent.id);
            return recent.id;
        }
        let id = self.interner.acquire(Some(text));
        self.recent[slot] = RecentId {
            address,
            len: text.len(),
            id,
        };
        id
    }

    fn link_stream(&mut self, stream_id: u32, absolute: u64) -> u32 {
        if stream_id == ABSENT {
            return 0;
        }
        let slot = stream_id as usize;
        if self.stream_heads.len() <= slot {
            self.stream_heads
                .resize(self.interner.id_bound().max(slot + 1), NO_RECORD);
        }
        let previous = std::mem::replace(&mut self.stream_heads[slot], absolute);
        if previous == NO_RECORD || previous < self.base {
            return 0;
        }
        u32::try_from(absolute - previous).unwrap_or(0)
    }

    /// Chooses the block and offset for a record of `size` bytes, opening a block if needed.
    fn place(&mut self, seq: u64, size: usize) -> (u32, u32) {
        let tail_number = self
            .first_block
            .wrapping_add(self.blocks.len().max(1) as u32 - 1);
        if let Some(tail) = self.blocks.back_mut() {
            if tail.data.is_empty() {
                tail.base_seq = seq;
            }
            let fits = tail.data.len() + size <= tail.data.capacity();
            let seq_fits = seq >= tail.base_seq && seq - tail.base_seq <= u64::from(u32::MAX);
            if fits && seq_fits {
                return (tail_number, tail.data.len() as u32);
            }
        }
        let data = match self.spare.pop() {
            Some(buffer) if buffer.capacity() >= size => buffer,
            _ => new_block(size.max(BLOCK_SIZE)),
        };
        self.blocks.push_back(Block {
            data,
            base_seq: seq,
            live: 0,
        });
        (
            self.first_block.wrapping_add(self.blocks.len() as u32 - 1),
            0,
        )
    }

    #[inline]
    fn block_index(&self, block: u32) -> usize {
        block.wrapping_sub(self.first_block) as usize
    }

    #[inline]
    fn record_len(&self, index: usize) -> usize {
        let header = &self.headers[index];
        let end = match self.headers.get(index + 1) {
            Some(next) if next.block == header.block => next.offset as usize,
            _ => self.blocks[self.block_index(header.block)].data.len(),
        };
        end - header.offset as usize
    }

    fn evict_oldest(&mut self) {
        if self.headers.is_empty() {
            return;
        }
        let size = self.record_len(0);
        let Some(header) = self.headers.pop_front() else {
            return;
        };
        self.nbytes -= size;
        self.base += 1;
        self.evicted += 1;
        for id in [
            header.type_id,
            header.stream_id,
            header.actor_id,
            header.correlation_id,
        ] {
            self.release_id(id);
        }
        let index = self.block_index(header.block);
        self.blocks[index].live -= 1;
        self.drop_empty_blocks();
    }

    fn release_id(&mut self, id: u32) {
        if self.interner.release(id) {
            if let Some(head) = self.stream_heads.get_mut(id as usize) {
                *head = NO_RECORD;
            }
        }
    }

    fn drop_empty_blocks(&mut self) {
        while self.blocks.front().is_some_and(|b| b.live == 0) {
            if self.blocks.len() == 1 {
                // The ring is empty: keep the block and start it over.
                if let Some(only) = self.blocks.front_mut() {
                    only.data.clear();
                }
                return;
            }
            if let Some(mut block) = self.blocks.pop_front() {
                self.first_block = self.first_block.wrapping_add(1);
                if block.data.capacity() == BLOCK_SIZE && self.spare.len() < SPARE_BLOCKS {
                    block.data.clear();
                    self.spare.push(block.data);
                }
            }
        }
    }

    /// Removes every record (they count as evicted).
    pub fn clear(&mut self) {
        self.evicted += self.headers.len() as u64;
        self.base += self.headers.len() as u64;
        self.headers.clear();
        self.blocks.clear();
        self.first_block = 0;
        self.nbytes = 0;
        self.interner.clear();
        self.stream_heads.clear();
        self.recent.fill(RecentId::default());
    }

    fn seq_at(&self, index: usize) -> u64 {
        let header = &self.headers[index];
        self.blocks[self.block_index(header.block)].base_seq + u64::from(header.seq_offset)
    }

    /// The record at `index` (0 is the oldest held).
    pub fn get(&self, index: usize) -> Option<Record<'_>> {
        let header = self.headers.get(index)?;
        let block = &self.blocks[self.block_index(header.block)];
        let start = header.offset as usize;
        let json = &block.data[start..start + self.record_len(index)];
        Some(Record {
            seq: block.base_seq + u64::from(header.seq_offset),
            timestamp: header.timestamp,
            json,
        })
    }

    /// Index of the oldest held record with a sequence number greater than `seq`.
    pub fn position_after_seq(&self, seq: u64) -> usize {
        // Sequence numbers increase with position, so a binary search finds the boundary.
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let mid = (low + high) / 2;
            if self.seq_at(mid) <= seq {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        low
    }

    pub(crate) fn header_fields(&self, index: usize) -> HeaderView {
        let h = &self.headers[index];
        HeaderView {
            timestamp: h.timestamp,
            type_id: h.type_id,
            stream_id: h.stream_id,
            actor_id: h.actor_id,
            correlation_id: h.correlation_id,
        }
    }

    /// Index of the newest record of interned stream `stream_id`, if held.
    pub(crate) fn stream_head(&self, stream_id: u32) -> Option<usize> {
        let absolute = *self.stream_heads.get(stream_id as usize)?;
        (absolute != NO_RECORD && absolute >= self.base).then(|| (absolute - self.base) as usize)
    }

    /// Index of the previous record of the same stream as `index`, if held.
    pub(crate) fn previous_in_stream(&self, index: usize) -> Option<usize> {
        let distance = self.headers[index].prev_in_stream as usize;
        (distance != 0 && distance <= index).then(|| index - distance)
    }

    pub fn interned(&self, value: &str) -> Option<u32> {
        self.interner.lookup(value)
    }

    pub fn resolve(&self, id: u32) -> Option<&str> {
        self.interner.resolve(id)
    }

    /// How many distinct strings (types, streams, actors, correlation ids) live records use.
    pub fn distinct_strings(&self) -> usize {
        self.interner.len()
    }

    /// How many blocks hold records now (for tests of block recycling).
    pub fn block_count(&self) -> usize {
        self.blocks.len()
    }
}

/// The indexed fields of one header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeaderView {
    pub timestamp: f64,
    pub type_id: u32,
    pub stream_id: u32,
    pub actor_id: u32,
    pub correlation_id: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(event_type: &'a str, stream: &'a str) -> EventFields<'a> {
        EventFields {
            event_type,
            stream_id: Some(stream),
            actor: Some("system"),
            correlation_id: None,
            timestamp: 7.0,
        }
    }

    fn push(ring: &mut Ring, seq: u64, stream: &str, body: &str) {
        ring.push(seq, &fields("t", stream), &[body.as_bytes()])
            .unwrap();
    }

    #[test]
    fn header_is_forty_bytes() {
        assert_eq!(std::mem::size_of::<Header>(), 40);
    }

    #[test]
    fn evicts_oldest_by_count() {
        let mut ring = Ring::new(3, None).unwrap();
        for seq in 1..=5 {
            push(&mut ring, seq, "s", &format!("{{\"n\":{seq}}}"));
        }
        assert_eq!(ring.len(), 3);
        assert_eq!(ring.evicted(), 2);
        let seqs: Vec<u64> = (0..3).map(|i| ring.get(i).unwrap().seq).collect();
        assert_eq!(seqs, [3, 4, 5]);
        assert_eq!(ring.get(0).unwrap().json, b"{\"n\":3}");
        assert_eq!(ring.nbytes(), 3 * 7);
    }

    #[test]
    fn evicts_oldest_by_bytes() {
        let mut ring = Ring::new(100, Some(25)).unwrap();
        for seq in 1..=4 {
            push(&mut ring, seq, "s", "0123456789");
        }
        assert_eq!(ring.len(), 2);
        assert_eq!(ring.nbytes(), 20);
        assert_eq!(ring.get(0).unwrap().seq, 3);
        let err = ring.push(9, &fields("t", "s"), &[&[b'x'; 26]]).unwrap_err();
        assert!(matches!(
            err,
            CoreError::TooLarge {
                size: 26,
                limit: 25,
                ..
            }
        ));
        assert_eq!(ring.len(), 2, "a rejected record changes nothing");
    }

    #[test]
    fn records_concatenate_parts() {
        let mut ring = Ring::new(2, None).unwrap();
        ring.push(1, &fields("t", "s"), &[b"{\"a\":1", b"}"])
            .unwrap();
        assert_eq!(ring.get(0).unwrap().json, b"{\"a\":1}");
    }

    #[test]
    fn large_records_get_their_own_block_and_blocks_are_recycled() {
        let mut ring = Ring::new(4, None).unwrap();
        let big = "x".repeat(BLOCK_SIZE + 10);
        push(&mut ring, 1, "s", &big);
        push(&mut ring, 2, "s", "small");
        assert_eq!(ring.get(0).unwrap().json.len(), BLOCK_SIZE + 10);
        assert_eq!(ring.get(1).unwrap().json, b"small");
        let body = "y".repeat(1000);
        for seq in 3..2000 {
            push(&mut ring, seq, "s", &body);
        }
        assert_eq!(ring.len(), 4);
        assert!(
            ring.block_count() <= 2,
            "old blocks are released, got {}",
            ring.block_count()
        );
        assert_eq!(ring.nbytes(), 4000);
    }

    #[test]
    fn stream_chains_survive_eviction() {
        let mut ring = Ring::new(5, None).unwrap();
        for seq in 1..=20u64 {
            let stream = if seq % 3 == 0 { "a" } else { "b" };
            push(&mut ring, seq, stream, "{}");
        }
        let a = ring.interned("a").unwrap();
        let mut walk = Vec::new();
        let mut at = ring.stream_head(a);
        while let Some(index) = at {
            walk.push(ring.get(index).unwrap().seq);
            at = ring.previous_in_stream(index);
        }
        assert_eq!(walk, [18]);
        let b = ring.interned("b").unwrap();
        let mut walk = Vec::new();
        let mut at = ring.stream_head(b);
        while let Some(index) = at {
            walk.push(ring.get(index).unwrap().seq);
            at = ring.previous_in_stream(index);
        }
        assert_eq!(walk, [20, 19, 17, 16]);
    }

    #[test]
    fn interned_strings_are_released_with_their_records() {
        let mut ring = Ring::new(10, None).unwrap();
        for seq in 1..=10_000u64 {
            let stream = format!("session-{seq}");
            push(&mut ring, seq, &stream, "{}");
        }
        // 10 streams + type "t" + actor "system".
        assert_eq!(ring.distinct_strings(), 12);
        assert!(ring.interned("session-1").is_none());
        assert!(ring.interned("session-10000").is_some());
    }

    #[test]
    fn reused_stream_ids_do_not_link_to_other_streams() {
        let mut ring = Ring::new(2, None).unwrap();
        push(&mut ring, 1, "old", "{}");
        push(&mut ring, 2, "x", "{}");
        push(&mut ring, 3, "y", "{}"); // evicts "old": its id is free
        push(&mut ring, 4, "new", "{}"); // may reuse that id
        let new = ring.interned("new").unwrap();
        let head = ring.stream_head(new).unwrap();
        assert_eq!(ring.get(head).unwrap().seq, 4);
        assert_eq!(ring.previous_in_stream(head), None);
    }

    #[test]
    fn sequence_gaps_and_resets_are_kept_exactly() {
        let mut ring = Ring::new(10, None).unwrap();
        for seq in [5u64, 6, 10_000_000_000, 10_000_000_001, 3] {
            push(&mut ring, seq, "s", "{}");
        }
        let seqs: Vec<u64> = (0..ring.len()).map(|i| ring.get(i).unwrap().seq).collect();
        assert_eq!(seqs, [5, 6, 10_000_000_000, 10_000_000_001, 3]);
    }

    #[test]
    fn position_after_seq_finds_the_boundary() {
        let mut ring = Ring::new(10, None).unwrap();
        for seq in [2u64, 4, 6, 8] {
            push(&mut ring, seq, "s", "{}");
        }
        assert_eq!(ring.position_after_seq(0), 0);
        assert_eq!(ring.position_after_seq(4), 2);
        assert_eq!(ring.position_after_seq(5), 2);
        assert_eq!(ring.position_after_seq(8), 4);
    }

    #[test]
    fn clear_empties_and_counts_evictions() {
        let mut ring = Ring::new(10, None).unwrap();
        for seq in 1..=4 {
            push(&mut ring, seq, "s", "{}");
        }
        ring.clear();
        assert!(ring.is_empty());
        assert_eq!(ring.evicted(), 4);
        assert_eq!(ring.nbytes(), 0);
        assert_eq!(ring.distinct_strings(), 0);
        push(&mut ring, 5, "s", "{}");
        assert_eq!(ring.get(0).unwrap().seq, 5);
        assert_eq!(ring.stream_head(ring.interned("s").unwrap()), Some(0));
    }

    #[test]
    fn rejects_bad_limits() {
        assert!(Ring::new(0, None).is_err());
        assert!(Ring::new(1, Some(0)).is_err());
    }
}
