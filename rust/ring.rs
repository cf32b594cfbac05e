//! EventRing: the bounded in-memory event history.
//!
//! Records are compact JSON bytes packed into large blocks, with a fixed 40-byte header each in a
//! ring of headers. Appending past the count or byte limit evicts the oldest record in O(1): its
//! header is popped and, once every record of the oldest block is gone, the block is recycled.
//! There is no per-event allocation once warm and no shifting.
//!
//! A compressing ring (`RingOptions::compress`) also packs every sealed block (every block but
//! the newest) with zstd, on a background thread (`ring_worker.rs`, `pack.rs`). Headers stay as
//! they are, so queries still decide on headers alone; only the records a read returns are
//! decompressed. Until its packed form comes back a sealed block is read as it is, so every read
//! sees the same records either way. Byte accounting (`nbytes`, `max_bytes`) counts the records'
//! uncompressed bytes in both kinds of ring, so both hold exactly the same events; `stored_bytes`
//! and `heap_bytes` say what the blocks take in memory.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;

use crate::block::BlockBuf;
use crate::block_preparer::BlockPreparer;
use crate::event::{CoreError, EventFields};
use crate::external::{ExternalLines, LineInFile, REFERENCE_LEN};
use crate::fork;
use crate::interner::{hash_str, Interner, ABSENT};
use crate::keys::KeySpans;
use crate::once::OnceStrings;
use crate::pack::{Codec, Packed, Piece, Unpacker, Work};
use crate::ring_worker::{self, Done, Inbox, Job, Sealed};

/// Size of the byte blocks records are packed into. Larger records get a block of their own.
pub const BLOCK_SIZE: usize = 256 * 1024;
/// Smallest block size accepted (tests use small blocks to seal many).
pub const MIN_BLOCK_SIZE: usize = 64;
/// Headers reserved up front at most; the header ring grows past this only when needed.
const MAX_PREALLOCATED_HEADERS: usize = 1 << 20;
/// Freed blocks kept for reuse, so a full ring never goes back to the allocator.
const SPARE_BLOCKS: usize = 2;
/// Most blocks made ahead for a batch (`Ring::expect_batch`): 64 MiB of standard blocks.
const MAX_BLOCKS_AHEAD: usize = 256;
const NO_RECORD: u64 = u64::MAX;

const RECENT_SLOTS: usize = 64;

#[inline]
fn recent_slot(text: &str) -> usize {
    let address = text.as_ptr() as usize;
    ((address >> 4) ^ (address >> 13)) % RECENT_SLOTS
}

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
    /// Interned, or (a correlation id not seen to repeat) `once::TAGGED` plus the number of
    /// the entry holding it.
    correlation_id: u32,
    /// Distance back to the previous record of the same stream (0: none).
    prev_in_stream: u32,
}

struct Block {
    body: Body,
    base_seq: u64,
    live: u32,
    /// Number of the block among all blocks the ring ever made (never reused, unlike `Header::
    /// block`, which restarts after `clear`): finished packing jobs find their block by it.
    serial: u64,
}

/// A block's bytes.
enum Body {
    /// Plain bytes: the open (newest) block, every block of a ring that does not compress, and
    /// sealed blocks that compressing would not shrink.
    Raw(BlockBuf),
    /// Sealed and handed to the compressor, which shares the bytes; read as they are meanwhile.
    Queued(Arc<Sealed>),
    Packed(Packed),
}

impl Body {
    /// Where the block's last record ends.
    fn raw_end(&self) -> usize {
        match self {
            Body::Raw(data) => data.len(),
            Body::Queued(sealed) => sealed.bytes.len(),
            Body::Packed(packed) => packed.raw_end(),
        }
    }

    /// The bytes, unless packed.
    fn plain(&self) -> Option<&[u8]> {
        match self {
            Body::Raw(data) => Some(data),
            Body::Queued(sealed) => Some(&sealed.bytes),
            Body::Packed(_) => None,
        }
    }

    /// Memory reserved for the bytes.
    fn heap_bytes(&self) -> usize {
        match self {
            Body::Raw(data) => data.mapped(),
            Body::Queued(sealed) => sealed.bytes.mapped(),
            Body::Packed(packed) => packed.heap_bytes(),
        }
    }

    /// Memory the records' bytes take (the open block's unused room not counted).
    fn stored_bytes(&self) -> usize {
        match self {
            Body::Raw(data) => data.len(),
            Body::Queued(sealed) => sealed.bytes.len(),
            Body::Packed(packed) => packed.heap_bytes(),
        }
    }
}

/// How a ring stores its blocks.
#[derive(Debug, Clone, Copy)]
pub struct RingOptions {
    /// Pack sealed blocks with zstd (see the module documentation).
    pub compress: bool,
    /// Bytes per block (records larger than this get a block of their own).
    pub block_size: usize,
}

impl Default for RingOptions {
    fn default() -> Self {
        Self {
            compress: false,
            block_size: BLOCK_SIZE,
        }
    }
}

/// What a compressing ring adds.
struct Compression {
    codec: Arc<Codec>,
    inbox: Arc<Inbox>,
    unpacker: RefCell<Unpacker>,
    /// The fork generation jobs were handed to the background thread in; in a later one (a
    /// fork child) the thread and its results do not exist.
    generation: u64,
}

/// One stored record: borrowed from the ring, or decompressed.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<'a> {
    pub seq: u64,
    pub timestamp: f64,
    pub json: RecordJson<'a>,
}

/// A record's JSON: borrowed from a plain block, or decompressed from a packed one. Derefs to
/// the bytes and compares with byte strings.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordJson<'a>(Cow<'a, [u8]>);

impl std::ops::Deref for RecordJson<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for RecordJson<'_> {
    fn eq(&self, other: &&[u8; N]) -> bool {
        *self.0 == other[..]
    }
}

impl PartialEq<&[u8]> for RecordJson<'_> {
    fn eq(&self, other: &&[u8]) -> bool {
        *self.0 == **other
    }
}

/// A bounded ring of events, limited by count and optionally by bytes.
pub struct Ring {
    capacity: usize,
    max_bytes: Option<usize>,
    headers: VecDeque<Header>,
    blocks: VecDeque<Block>,
    first_block: u32,
    spare: Vec<BlockBuf>,
    /// Makes the next block ahead while the ring grows (None: blocks are made in place).
    preparer: Option<BlockPreparer>,
    /// Absolute index (number of records ever pushed before it) of `headers[0]`.
    base: u64,
    nbytes: usize,
    evicted: u64,
    pub(crate) interner: Interner,
    /// Correlation ids not (yet) seen to repeat, one per record that has one (`once.rs`).
    once: OnceStrings,
    /// By interned id: absolute index of the newest record of that stream.
    stream_heads: Vec<u64>,
    block_size: usize,
    next_serial: u64,
    compression: Option<Box<Compression>>,
    /// Recently interned strings by the address of the caller's text: events built by the
    /// same program reuse the same string objects, and an address check plus a comparison is
    /// cheaper than hashing. Entries are always verified against the interned text.
    recent: Box<[RecentId; RECENT_SLOTS]>,
    /// What the references among the records stand for (`external.rs`): large events a store
    /// left in its log.
    external: ExternalLines,
}

impl Ring {
    /// A ring holding at most `capacity` events and, if given, `max_bytes` bytes of JSON.
    pub fn new(capacity: usize, max_bytes: Option<usize>) -> Result<Self, CoreError> {
        Self::with_options(capacity, max_bytes, RingOptions::default())
    }

    /// `new` with storage options.
    pub fn with_options(
        capacity: usize,
        max_bytes: Option<usize>,
        options: RingOptions,
    ) -> Result<Self, CoreError> {
        if !(MIN_BLOCK_SIZE..=u32::MAX as usize / 2).contains(&options.block_size) {
            return Err(CoreError::Invalid(format!(
                "block size must be between {MIN_BLOCK_SIZE} and {} bytes, got {}",
                u32::MAX / 2,
                options.block_size
            )));
        }
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
            preparer: None,
            base: 0,
            nbytes: 0,
            evicted: 0,
            interner: Interner::new(),
            once: OnceStrings::new(),
            stream_heads: Vec::new(),
            recent: Box::new([RecentId::default(); RECENT_SLOTS]),
            external: ExternalLines::default(),
            block_size: options.block_size,
            next_serial: 0,
            compression: options.compress.then(|| {
                Box::new(Compression {
                    codec: Arc::new(Codec::new(options.block_size)),
                    inbox: Arc::default(),
                    unpacker: RefCell::default(),
                    generation: fork::generation(),
                })
            }),
        })
    }

    /// Whether sealed blocks are compressed.
    pub fn compresses(&self) -> bool {
        self.compression.is_some()
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

    /// From now on, have the next block made ahead on a helper thread while the ring grows
    /// (`block_preparer.rs`), if that thread can be started.
    pub fn prepare_blocks_ahead(&mut self) {
        if self.preparer.is_none() {
            self.preparer = BlockPreparer::start();
        }
    }

    /// A batch of `count` records of about `bytes` in all is coming: while the ring grows
    /// (it will evict none of its records for them and has no spare block), have the blocks
    /// the batch will fill made ahead, at most `MAX_BLOCKS_AHEAD`. Blocks made for a batch
    /// that then fails wait for the ring's next records: they are memory the growing ring
    /// would take anyway.
    pub fn expect_batch(&mut self, count: usize, bytes: usize) {
        let Some(preparer) = &mut self.preparer else {
            return;
        };
        let grows = self.headers.len() + count <= self.capacity
            && self
                .max_bytes
                .is_none_or(|limit| self.nbytes + bytes <= limit);
        if !grows || !self.spare.is_empty() {
            return;
        }
        let room = match self.blocks.back().map(|b| &b.body) {
            Some(Body::Raw(data)) => data.room(),
            _ => 0,
        };
        // Every block the batch opens, its part-filled last one too.
        let blocks = bytes.saturating_sub(room).div_ceil(self.block_size);
        preparer.request_many(self.block_size, blocks.min(MAX_BLOCKS_AHEAD));
    }

    /// Blocks asked of the preparer and not taken yet.
    #[cfg(test)]
    pub fn blocks_asked_for(&self) -> usize {
        self.preparer
            .as_ref()
            .map_or(0, BlockPreparer::pending_count)
    }

    /// Memory the ring has reserved: blocks, headers, indexes and interned strings, and for a
    /// compressing ring its dictionary, decompression context and cache.
    pub fn heap_bytes(&self) -> usize {
        let blocks: usize = self.blocks.iter().map(|b| b.body.heap_bytes()).sum();
        let spare: usize = self.spare.iter().map(BlockBuf::mapped).sum::<usize>()
            + self
                .preparer
                .as_ref()
                .map_or(0, BlockPreparer::pending_bytes);
        let compression = self.compression.as_ref().map_or(0, |c| {
            c.codec.heap_bytes() + c.unpacker.try_borrow().map_or(0, |u| u.heap_bytes())
        });
        blocks
            + spare
            + compression
            + self.headers.capacity() * std::mem::size_of::<Header>()
            + self.stream_heads.capacity() * 8
            + self.interner.heap_bytes()
            + self.once.heap_bytes()
            + self.external.heap_bytes()
    }

    /// Bytes the blocks hold: the records' bytes (packed blocks at their compressed size, with
    /// their tables; a referenced record's `REFERENCE_LEN`), and those of records evicted from
    /// a block that is not yet freed; so about `nbytes` for a ring that does not compress and
    /// holds no references.
    pub fn stored_bytes(&self) -> usize {
        self.blocks.iter().map(|b| b.body.stored_bytes()).sum()
    }

    /// Sealed blocks handed to the background compressor and not yet taken back packed.
    pub fn queued_blocks(&self) -> usize {
        self.blocks
            .iter()
            .filter(|b| matches!(b.body, Body::Queued(_)))
            .count()
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
        // SAFETY: `size` is the sum of the parts' lengths (computed just above).
        self.push_sized(seq, fields, size, size, |data| unsafe {
            data.push_parts(parts, size)
        })
    }

    /// Appends `json[..limit]` with the keys `spans` covers replaced by their tokens, then
    /// `tail`, in one pass (the record `push` would make of the same pieces as parts).
    #[inline]
    pub fn push_compacted(
        &mut self,
        seq: u64,
        fields: &EventFields<'_>,
        json: &[u8],
        limit: usize,
        tail: &[u8],
        spans: &KeySpans,
    ) -> Result<(), CoreError> {
        let limit = limit.min(json.len());
        let size = spans.compacted_len(limit, tail.len());
        self.push_sized(seq, fields, size, size, |data| {
            // SAFETY: `push_with` hands `write_compacted` room for `size` bytes, which is
            // `compacted_len` of the same input, in a block that cannot overlap `json` or
            // `tail` (borrowed from elsewhere while the ring is borrowed mutably); `limit` is
            // within `json`.
            unsafe { data.push_with(size, |out| spans.write_compacted(json, limit, tail, out)) }
        })
    }

    /// Appends a record that refers to a line of a store's log (`external.rs`) instead of
    /// holding it: the record is the line's body and a closing brace, as `push_compacted` would
    /// hold it with no keys replaced, and counts as that many bytes.
    pub fn push_external(
        &mut self,
        seq: u64,
        fields: &EventFields<'_>,
        line: LineInFile,
    ) -> Result<(), CoreError> {
        let reference = self.external.next_reference();
        self.push_sized(seq, fields, REFERENCE_LEN, line.body_len + 1, |data| {
            data.push(&reference)
        })?;
        let record = self.base + self.headers.len() as u64 - 1;
        self.external.push(record, line);
        Ok(())
    }

    /// Copies into memory the records whose log file retention or compression has removed,
    /// so that the file's disk space is freed (`external.rs`); returns how many.
    pub fn hold_unlinked_lines(&mut self) -> usize {
        self.external.hold_unlinked()
    }

    /// Appends a record of `size` bytes that `store` puts in the open block (it is given room),
    /// counted as `accounted` bytes (`size`, or a referenced line's length), evicting the oldest
    /// as needed.
    #[inline(always)]
    fn push_sized(
        &mut self,
        seq: u64,
        fields: &EventFields<'_>,
        size: usize,
        accounted: usize,
        store: impl FnOnce(&mut BlockBuf) -> bool,
    ) -> Result<(), CoreError> {
        self.check_fits(accounted)?;
        if self.compression.is_some() {
            self.absorb();
        }
        while self.headers.len() >= self.capacity
            || self
                .max_bytes
                .is_some_and(|limit| self.nbytes + accounted > limit)
        {
            self.evict_oldest();
        }
        // Fails only if the kernel refuses memory for a new block (the evictions above stay).
        let (block, offset) = self.place(seq, size)?;
        let index = self.block_index(block);
        let target = &mut self.blocks[index];
        let Body::Raw(data) = &mut target.body else {
            // `place` only returns the open block, which is raw.
            return Err(CoreError::Invalid(
                "internal error: the open block is sealed".into(),
            ));
        };
        // Cannot fail: `place` made room for `size` bytes.
        store(data);
        target.live += 1;
        let seq_offset = (seq - target.base_seq) as u32;
        let header = self.make_header(fields, seq_offset, block, offset);
        self.headers.push_back(header);
        self.nbytes += accounted;
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
            correlation_id: self.acquire_correlation(fields.correlation_id),
            prev_in_stream: self.link_stream(stream_id, absolute),
        }
    }

    /// Interns `value`, trying the id last seen for the same text address first.
    #[inline]
    fn acquire(&mut self, value: Option<&str>) -> u32 {
        let Some(text) = value else { return ABSENT };
        if let Some(id) = self.use_recent(text) {
            return id;
        }
        let id = self.interner.acquire(Some(text));
        self.remember(text, id);
        id
    }

    /// A correlation id's header value: its interned id if the string repeats, else the number
    /// of an entry that holds it for this record alone (`once.rs`).
    #[inline]
    fn acquire_correlation(&mut self, value: Option<&str>) -> u32 {
        let Some(text) = value else { return ABSENT };
        if let Some(id) = self.use_recent(text) {
            return id;
        }
        let hash = hash_str(text);
        let id = match self.interner.use_held(text, hash) {
            Some(id) => id,
            None if self.once.seen_before(hash) => self.interner.insert_new(text, hash),
            None => return self.once.push(text, hash),
        };
        debug_assert!(
            !OnceStrings::is_tagged(id),
            "interned ids stay below the tag bit"
        );
        self.remember(text, id);
        id
    }

    /// The id last interned for the same text address, with a use added, if it still holds
    /// this text.
    #[inline]
    fn use_recent(&mut self, text: &str) -> Option<u32> {
        let recent = self.recent[recent_slot(text)];
        if recent.address == text.as_ptr() as usize
            && recent.len == text.len()
            && self.interner.resolve(recent.id) == Some(text)
        {
            self.interner.add_use(recent.id);
            return Some(recent.id);
        }
        None
    }

    #[inline]
    fn remember(&mut self, text: &str, id: u32) {
        self.recent[recent_slot(text)] = RecentId {
            address: text.as_ptr() as usize,
            len: text.len(),
            id,
        };
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
    fn place(&mut self, seq: u64, size: usize) -> Result<(u32, u32), CoreError> {
        let tail_number = self
            .first_block
            .wrapping_add(self.blocks.len().max(1) as u32 - 1);
        if let Some(tail) = self.blocks.back_mut() {
            if let Body::Raw(data) = &tail.body {
                if data.is_empty() {
                    tail.base_seq = seq;
                }
                let fits = size <= data.room();
                let seq_fits = seq >= tail.base_seq && seq - tail.base_seq <= u64::from(u32::MAX);
                if fits && seq_fits {
                    return Ok((tail_number, data.len() as u32));
                }
            }
        }
        if self.compression.is_some() {
            self.seal_tail();
        }
        let data = match self.spare.pop() {
            Some(buffer) if buffer.capacity() >= size => buffer,
            _ => match self.preparer.as_mut().and_then(|p| p.take(size)) {
                Some(buffer) => buffer,
                None => BlockBuf::with_capacity(size.max(self.block_size)).ok_or_else(|| {
                    CoreError::io(
                        "cannot map memory for a ring block",
                        std::io::Error::last_os_error(),
                    )
                })?,
            },
        };
        if self.spare.is_empty() {
            // Growing: have the block after this one made while this one fills.
            if let Some(preparer) = &mut self.preparer {
                preparer.request(self.block_size);
            }
        }
        self.blocks.push_back(Block {
            body: Body::Raw(data),
            base_seq: seq,
            live: 0,
            serial: self.next_serial,
        });
        self.next_serial += 1;
        Ok((
            self.first_block.wrapping_add(self.blocks.len() as u32 - 1),
            0,
        ))
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
            _ => self.blocks[self.block_index(header.block)].body.raw_end(),
        };
        end - header.offset as usize
    }

    /// The held records of block `index` (position in `blocks`), for packing; and the absolute
    /// index of the first.
    fn pieces_of(&self, index: usize) -> (Vec<Piece>, u64) {
        let before: usize = self
            .blocks
            .iter()
            .take(index)
            .map(|b| b.live as usize)
            .sum();
        let live = self.blocks[index].live as usize;
        let pieces = (before..before + live)
            .map(|at| Piece {
                offset: self.headers[at].offset,
                len: self.record_len(at) as u32,
                stream: self.headers[at].stream_id,
            })
            .collect();
        (pieces, self.base + before as u64)
    }

    /// Hands the open block, now full, to the compressor (packing it here if there is none).
    fn seal_tail(&mut self) {
        let Some(last) = self.blocks.len().checked_sub(1) else {
            return;
        };
        if !matches!(&self.blocks[last].body, Body::Raw(data) if !data.is_empty()) {
            return;
        }
        let forked = self
            .compression
            .as_ref()
            .is_some_and(|c| fork::forked_since(c.generation));
        if forked {
            // A fork child: the jobs in flight went to the parent's thread and will never come
            // back. Pack those blocks here, once, and collect future results in a new inbox.
            if let Some(c) = self.compression.as_mut() {
                c.inbox = Arc::default();
                c.generation = fork::generation();
            }
            self.pack_queued_here(true);
        }
        let (pieces, first) = self.pieces_of(last);
        let Some(c) = self.compression.as_ref() else {
            return;
        };
        let (codec, inbox) = (Arc::clone(&c.codec), Arc::clone(&c.inbox));
        let tail = &mut self.blocks[last];
        let Body::Raw(data) = std::mem::replace(&mut tail.body, Body::Packed(Packed::empty()))
        else {
            return;
        };
        let sealed = Arc::new(Sealed::new(data));
        tail.body = Body::Queued(Arc::clone(&sealed));
        let job = Job {
            serial: tail.serial,
            sealed,
            pieces,
            first,
            codec,
            inbox,
        };
        if let Err(job) = ring_worker::submit(job) {
            let packed = pack_here(&job);
            let serial = job.serial;
            drop(job);
            self.take_in(Done { serial, packed });
        }
    }

    /// Takes in the blocks the background compressor has packed since last asked.
    pub fn absorb(&mut self) {
        let Some(c) = self.compression.as_ref() else {
            return;
        };
        for done in c.inbox.take() {
            self.take_in(done);
        }
    }

    /// Puts a packing result in place of its block's queued bytes, if the block is still held
    /// and still queued.
    fn take_in(&mut self, done: Done) {
        let Some(first) = self.blocks.front().map(|b| b.serial) else {
            return;
        };
        let Some(index) = done.serial.checked_sub(first).map(|i| i as usize) else {
            return;
        };
        let Some(block) = self.blocks.get_mut(index) else {
            return;
        };
        if block.serial != done.serial || !matches!(block.body, Body::Queued(_)) {
            return;
        }
        let Body::Queued(sealed) =
            std::mem::replace(&mut block.body, Body::Packed(Packed::empty()))
        else {
            return;
        };
        match done.packed {
            Some(packed) => {
                block.body = Body::Packed(packed);
                // Reusable unless a job still holds it (one overtaken in a fork child), in
                // which case it goes when the job does.
                if let Ok(sealed) = Arc::try_unwrap(sealed) {
                    self.recycle(sealed.bytes);
                }
            }
            None => match Arc::try_unwrap(sealed) {
                Ok(sealed) => block.body = Body::Raw(sealed.bytes),
                // Still shared with an overtaken job (rare: a block that does not compress,
                // in a fork child): a copy of its own, or queued until the job lets go.
                Err(shared) => {
                    let copy = BlockBuf::with_capacity(shared.bytes.capacity())
                        .map(|mut copy| (copy.push(&shared.bytes), copy));
                    block.body = match copy {
                        Some((true, copy)) => Body::Raw(copy),
                        _ => Body::Queued(shared),
                    }
                }
            },
        }
    }

    /// Keeps a freed block buffer for reuse, if it is a standard one and room is left.
    fn recycle(&mut self, mut buffer: BlockBuf) {
        // A compressing ring frees a block per block appended (once packed): one spare is
        // enough to reuse it; a plain ring frees its oldest blocks in bursts (large records).
        let keep = if self.compression.is_some() {
            1
        } else {
            SPARE_BLOCKS
        };
        if buffer.capacity() == self.block_size && self.spare.len() < keep {
            buffer.clear();
            self.spare.push(buffer);
        }
    }

    /// Packs, in this thread, every sealed block the compressor has not started on, waits for
    /// those it is packing and takes in what it finished; returns how many blocks this call
    /// packed itself.
    pub fn compress_pending(&mut self) -> usize {
        self.absorb();
        let mut packed = self.pack_queued_here(false);
        // The rest are being packed by the background thread, which is running (they were
        // claimed in this fork generation, or `seal_tail` would have packed them): give it time,
        // then pack whatever is still queued here.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.queued_blocks() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
            self.absorb();
        }
        if self.queued_blocks() > 0 {
            packed += self.pack_queued_here(true);
        }
        packed
    }

    /// Packs the queued blocks in this thread: those no one claimed, or all (`force`, where
    /// the claims were made by a thread that does not exist here).
    fn pack_queued_here(&mut self, force: bool) -> usize {
        let Some(c) = self.compression.as_ref() else {
            return 0;
        };
        let codec = Arc::clone(&c.codec);
        let Some(mut work) = Work::new() else {
            return 0;
        };
        let mut packed_count = 0;
        for index in 0..self.blocks.len() {
            let Body::Queued(sealed) = &self.blocks[index].body else {
                continue;
            };
            if !sealed.claim() && !force {
                continue;
            }
            let sealed = Arc::clone(sealed);
            let (pieces, first) = self.pieces_of(index);
            let packed = codec.pack(&mut work, &sealed.bytes, &pieces, first);
            drop(sealed);
            packed_count += usize::from(packed.is_some());
            let serial = self.blocks[index].serial;
            self.take_in(Done { serial, packed });
        }
        packed_count
    }

    fn evict_oldest(&mut self) {
        if self.headers.is_empty() {
            return;
        }
        let size = match self.external.pop_for(self.base) {
            Some(referenced) => referenced,
            None => self.record_len(0),
        };
        let Some(header) = self.headers.pop_front() else {
            return;
        };
        self.nbytes -= size;
        self.base += 1;
        self.evicted += 1;
        for id in [header.type_id, header.stream_id, header.actor_id] {
            self.release_id(id);
        }
        if OnceStrings::is_tagged(header.correlation_id) {
            self.once.pop_front(header.correlation_id);
        } else {
            self.release_id(header.correlation_id);
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
                // The ring is empty: keep the (open, raw) block and start it over.
                if let Some(Body::Raw(data)) = self.blocks.front_mut().map(|b| &mut b.body) {
                    data.clear();
                    return;
                }
            }
            if let Some(block) = self.blocks.pop_front() {
                self.first_block = self.first_block.wrapping_add(1);
                match block.body {
                    Body::Raw(data) => self.recycle(data),
                    // Reusable once the compressor has let go of it (it has, if it finished).
                    Body::Queued(sealed) => {
                        if let Ok(sealed) = Arc::try_unwrap(sealed) {
                            self.recycle(sealed.bytes);
                        }
                    }
                    Body::Packed(_) => {}
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
        self.once.clear();
        self.stream_heads.clear();
        self.recent.fill(RecentId::default());
        self.external.clear();
        if let Some(c) = self.compression.as_ref() {
            if let Ok(mut unpacker) = c.unpacker.try_borrow_mut() {
                unpacker.clear();
            }
        }
    }

    fn seq_at(&self, index: usize) -> u64 {
        let header = &self.headers[index];
        self.blocks[self.block_index(header.block)].base_seq + u64::from(header.seq_offset)
    }

    /// The record at `index` (0 is the oldest held); `None` past the end (or if a packed record
    /// cannot be decompressed, or a referenced line cannot be read: `copy_to` says why).
    pub fn get(&self, index: usize) -> Option<Record<'_>> {
        let header = self.headers.get(index)?;
        let block = &self.blocks[self.block_index(header.block)];
        let start = header.offset as usize;
        let len = self.record_len(index);
        let mut json = match block.body.plain() {
            Some(bytes) => Cow::Borrowed(&bytes[start..start + len]),
            None => {
                let mut out = Vec::with_capacity(len);
                self.read_packed(block, index, len, &mut out).ok()?;
                Cow::Owned(out)
            }
        };
        if ExternalLines::is_reference(&json) {
            let mut out = Vec::new();
            self.external.read(&json, &mut out).ok()?;
            json = Cow::Owned(out);
        }
        Some(Record {
            seq: block.base_seq + u64::from(header.seq_offset),
            timestamp: header.timestamp,
            json: RecordJson(json),
        })
    }

    /// Appends the JSON of the record at `index` to `out`; its sequence number, or `None` past
    /// the end. An error means a packed record could not be decompressed (a bug, or memory
    /// corruption: the ring only holds what it compressed itself).
    pub fn copy_to(&self, index: usize, out: &mut Vec<u8>) -> Result<Option<u64>, CoreError> {
        let Some(header) = self.headers.get(index) else {
            return Ok(None);
        };
        let block = &self.blocks[self.block_index(header.block)];
        let start = header.offset as usize;
        let len = self.record_len(index);
        let from = out.len();
        match block.body.plain() {
            Some(bytes) => out.extend_from_slice(&bytes[start..start + len]),
            None => self.read_packed(block, index, len, out)?,
        }
        if ExternalLines::is_reference(&out[from..]) {
            let reference: [u8; REFERENCE_LEN] = out[from..].try_into().unwrap_or_default();
            out.truncate(from);
            self.external.read(&reference, out)?;
        }
        Ok(Some(block.base_seq + u64::from(header.seq_offset)))
    }

    fn read_packed(
        &self,
        block: &Block,
        index: usize,
        len: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), CoreError> {
        let (Body::Packed(packed), Some(c)) = (&block.body, self.compression.as_ref()) else {
            return Err(CoreError::Invalid("internal error: no packed block".into()));
        };
        let mut unpacker = c
            .unpacker
            .try_borrow_mut()
            .map_err(|_| CoreError::Invalid("internal error: reentrant ring read".into()))?;
        let absolute = self.base + index as u64;
        unpacker
            .read(&c.codec, packed, block.serial, absolute, len, out)
            .map_err(|why| {
                CoreError::Invalid(format!(
                    "stored event is damaged: compressed record {absolute} unreadable: {why}"
                ))
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

    /// The string a header's id stands for.
    pub fn resolve(&self, id: u32) -> Option<&str> {
        if OnceStrings::is_tagged(id) {
            return self.once.resolve(id);
        }
        self.interner.resolve(id)
    }

    /// How many distinct strings live records use that are interned: types, streams, actors
    /// and the correlation ids seen to repeat (one seen once is held with its record instead).
    pub fn distinct_strings(&self) -> usize {
        self.interner.len()
    }

    /// What a header's correlation field holds for `text`: its interned id, if it has one, and
    /// the ids (sorted) of the records holding it as a correlation id seen once.
    pub(crate) fn correlation_ids(&self, text: &str) -> (Option<u32>, Vec<u32>) {
        let hash = hash_str(text);
        (
            self.interner.lookup_hashed(text, hash),
            self.once.ids_holding(text, hash),
        )
    }

    /// How many blocks hold records now (for tests of block recycling).
    pub fn block_count(&self) -> usize {
        self.blocks.len()
    }
}

/// Packs a job in this thread (no background thread to take it).
fn pack_here(job: &Job) -> Option<Packed> {
    job.codec
        .pack(&mut Work::new()?, &job.sealed.bytes, &job.pieces, job.first)
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
    fn correlation_ids_seen_once_leave_with_their_records() {
        let mut ring = Ring::new(100, None).unwrap();
        let push_fresh = |ring: &mut Ring, seq: u64| {
            let correlation = format!("req_{seq:08}");
            let mut fields = fields("t", "s");
            fields.correlation_id = Some(&correlation);
            ring.push(seq, &fields, &[b"{}"]).unwrap();
        };
        for seq in 1..=1_000u64 {
            push_fresh(&mut ring, seq);
        }
        // One entry per held record, none for the 900 evicted.
        assert_eq!(ring.once.len(), 100);
        let memory = ring.heap_bytes();
        for seq in 1_001..=20_000u64 {
            push_fresh(&mut ring, seq);
        }
        assert_eq!(ring.once.len(), 100);
        assert_eq!(
            ring.heap_bytes(),
            memory,
            "a full ring's memory does not grow"
        );
        assert_eq!(
            ring.resolve(ring.header_fields(0).correlation_id),
            Some("req_00019901")
        );
        ring.clear();
        assert!(ring.once.is_empty());
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

    fn compressing(capacity: usize, block_size: usize) -> Ring {
        let options = RingOptions {
            compress: true,
            block_size,
        };
        Ring::with_options(capacity, None, options).unwrap()
    }

    /// Deterministic pseudo-random numbers for the workload tests.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    fn body(rng: &mut Rng, seq: u64) -> String {
        let words = [
            "tool", "read", "the", "file", "session", "answer", "delta", "grep",
        ];
        let text: Vec<&str> = (0..rng.below(40))
            .map(|_| words[rng.below(8) as usize])
            .collect();
        let big = if rng.below(50) == 0 {
            "x".repeat(rng.below(3000) as usize)
        } else {
            String::new()
        };
        format!(
            "{{\"n\":{seq},\"text\":\"{}\",\"big\":\"{big}\"}}",
            text.join(" ")
        )
    }

    fn same_records(plain: &Ring, packed: &Ring) {
        assert_eq!(plain.len(), packed.len());
        assert_eq!(plain.nbytes(), packed.nbytes());
        assert_eq!(plain.evicted(), packed.evicted());
        let mut out = Vec::new();
        for index in 0..plain.len() {
            let want = plain.get(index).unwrap();
            assert_eq!(packed.get(index).unwrap(), want, "record {index}");
            out.clear();
            assert_eq!(packed.copy_to(index, &mut out).unwrap(), Some(want.seq));
            assert_eq!(out, &*want.json);
        }
        assert!(packed.get(plain.len()).is_none());
        assert_eq!(packed.copy_to(plain.len(), &mut out).unwrap(), None);
        for stream in ["s0", "s1", "s2", "s3", "s4", "nope"] {
            for newest_first in [false, true] {
                let q = crate::query::Query {
                    stream_id: Some(stream.into()),
                    limit: Some(7),
                    newest_first,
                    ..Default::default()
                };
                assert_eq!(plain.select(&q, usize::MAX), packed.select(&q, usize::MAX));
            }
        }
    }

    #[test]
    fn a_compressing_ring_holds_the_same_records() {
        for (capacity, block_size) in [(300, 1024), (5, 512), (2000, 4096), (50, 64)] {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ capacity as u64);
            let mut plain = Ring::with_options(
                capacity,
                None,
                RingOptions {
                    compress: false,
                    block_size,
                },
            )
            .unwrap();
            // The plain ring makes its blocks ahead (as a store's does): the same records.
            plain.prepare_blocks_ahead();
            let mut packed = compressing(capacity, block_size);
            for seq in 1..=3000u64 {
                let stream = format!("s{}", rng.below(5));
                let text = body(&mut rng, seq);
                let fields = fields("t", &stream);
                plain.push(seq, &fields, &[text.as_bytes()]).unwrap();
                packed.push(seq, &fields, &[text.as_bytes()]).unwrap();
                match rng.below(400) {
                    0 => {
                        packed.compress_pending();
                        assert_eq!(packed.queued_blocks(), 0);
                    }
                    1 => same_records(&plain, &packed),
                    2 => {
                        plain.clear();
                        packed.clear();
                    }
                    _ => {}
                }
            }
            same_records(&plain, &packed);
            packed.compress_pending();
            same_records(&plain, &packed);
        }
    }

    /// A file of `bodies` (each a record without its closing brace) with a line end after
    /// each, and where each starts.
    fn log_of(bodies: &[String], name: &str) -> (std::path::PathBuf, Arc<std::fs::File>, Vec<u64>) {
        let path = std::env::temp_dir().join(format!("oa-ring-{name}-{}", std::process::id()));
        let mut text = Vec::new();
        let mut offsets = Vec::new();
        for (seq, body) in bodies.iter().enumerate() {
            offsets.push(text.len() as u64);
            text.extend_from_slice(body.as_bytes());
            text.extend_from_slice(format!(",\"seq\":{seq}}}\n").as_bytes());
        }
        std::fs::write(&path, &text).unwrap();
        let file = Arc::new(std::fs::File::open(&path).unwrap());
        (path, file, offsets)
    }

    #[test]
    fn referenced_records_read_back_and_count_alike_in_every_kind_of_ring() {
        let mut rng = Rng(0x5eed);
        let bodies: Vec<String> = (0..1500u64)
            .map(|seq| {
                let text = body(&mut rng, seq);
                text[..text.len() - 1].to_string()
            })
            .collect();
        let (path, file, offsets) = log_of(&bodies, "referenced");
        for (capacity, max_bytes, block_size) in [(400, None, 1024), (2000, Some(60_000), 512)] {
            let options = |compress| RingOptions {
                compress,
                block_size,
            };
            let mut held = Ring::with_options(capacity, max_bytes, options(false)).unwrap();
            let mut plain = Ring::with_options(capacity, max_bytes, options(false)).unwrap();
            let mut packed = Ring::with_options(capacity, max_bytes, options(true)).unwrap();
            for (seq, body) in bodies.iter().enumerate() {
                let seq = seq as u64;
                let fields = fields("t", ["s0", "s1", "s2"][seq as usize % 3]);
                held.push(seq, &fields, &[body.as_bytes(), b"}"]).unwrap();
                if rng.below(3) == 0 {
                    plain.push(seq, &fields, &[body.as_bytes(), b"}"]).unwrap();
                    packed.push(seq, &fields, &[body.as_bytes(), b"}"]).unwrap();
                } else {
                    let line = LineInFile {
                        file: Arc::clone(&file),
                        offset: offsets[seq as usize],
                        body_len: body.len(),
                    };
                    plain.push_external(seq, &fields, line.clone()).unwrap();
                    packed.push_external(seq, &fields, line).unwrap();
                }
                if rng.below(300) == 0 {
                    same_records(&held, &plain);
                    same_records(&held, &packed);
                    packed.compress_pending();
                }
            }
            same_records(&held, &plain);
            packed.compress_pending();
            same_records(&held, &packed);
            assert!(plain.stored_bytes() < held.stored_bytes() / 2);
            plain.clear();
            assert_eq!((plain.len(), plain.nbytes()), (0, 0));
        }
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn compressed_blocks_take_less_memory_and_are_recycled() {
        let mut ring = compressing(20_000, BLOCK_SIZE);
        let mut rng = Rng(7);
        for seq in 1..=20_000u64 {
            let stream = format!("s{}", rng.below(5));
            let text = body(&mut rng, seq);
            ring.push(seq, &fields("t", &stream), &[text.as_bytes()])
                .unwrap();
        }
        ring.compress_pending();
        assert!(ring.block_count() > 4);
        assert_eq!(ring.queued_blocks(), 0);
        let stored = ring.stored_bytes();
        assert!(
            stored * 3 < ring.nbytes(),
            "{stored} stored of {}",
            ring.nbytes()
        );
        assert!(ring.heap_bytes() < ring.nbytes());
        // Keep appending: blocks are evicted, packed and their buffers reused.
        for seq in 20_001..=60_000u64 {
            let text = body(&mut rng, seq);
            ring.push(seq, &fields("t", "s1"), &[text.as_bytes()])
                .unwrap();
        }
        ring.compress_pending();
        assert!(ring.stored_bytes() * 3 < ring.nbytes());
        assert!(ring.spare.len() <= SPARE_BLOCKS);
        let last = ring.get(ring.len() - 1).unwrap();
        assert_eq!(last.seq, 60_000);
    }

    #[test]
    fn the_background_compressor_catches_up() {
        let mut ring = compressing(10_000, 4096);
        for seq in 1..=10_000u64 {
            let text = format!("{{\"n\":{seq},\"text\":\"the same words again and again\"}}");
            ring.push(seq, &fields("t", "s"), &[text.as_bytes()])
                .unwrap();
        }
        let sealed = ring.block_count() - 1;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while ring.queued_blocks() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
            ring.absorb();
        }
        assert_eq!(ring.queued_blocks(), 0, "the compressor finished");
        let packed = ring
            .blocks
            .iter()
            .filter(|b| matches!(b.body, Body::Packed(_)))
            .count();
        assert_eq!(packed, sealed);
        assert_eq!(
            &*ring.get(0).unwrap().json,
            b"{\"n\":1,\"text\":\"the same words again and again\"}"
        );
    }

    #[test]
    fn rejects_bad_block_sizes() {
        for block_size in [0, MIN_BLOCK_SIZE - 1, u32::MAX as usize] {
            let options = RingOptions {
                compress: true,
                block_size,
            };
            assert!(Ring::with_options(10, None, options).is_err());
        }
    }

    /// A ring of `capacity` records in 4 KiB blocks, with its blocks made ahead.
    fn preparing_ring(capacity: usize) -> Ring {
        let options = RingOptions {
            block_size: 4096,
            ..RingOptions::default()
        };
        let mut ring = Ring::with_options(capacity, None, options).unwrap();
        ring.prepare_blocks_ahead();
        ring
    }

    #[test]
    fn a_growing_ring_takes_blocks_made_ahead_and_counts_the_one_asked_for() {
        let mut ring = preparing_ring(10_000);
        let record = format!("{{\"text\":\"{}\"}}", "x".repeat(1000));
        for seq in 1..=40u64 {
            push(&mut ring, seq, "s", &record);
            // Time for the helper to make the next block before this one is full.
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(ring.len(), 40);
        assert!((0..40).all(|i| *ring.get(i).unwrap().json == *record.as_bytes()));
        let blocks: usize = ring.blocks.iter().map(|b| b.body.heap_bytes()).sum();
        let asked = ring
            .preparer
            .as_ref()
            .map_or(0, BlockPreparer::pending_bytes);
        assert_eq!(
            asked, 4096,
            "the next block is asked for while the ring grows"
        );
        assert!(ring.heap_bytes() >= blocks + asked);
        let taken = ring.preparer.as_ref().map_or(0, BlockPreparer::taken);
        // 10 blocks, each filled over 8 ms: the helper had time to make most of them.
        assert!(taken >= 1, "no block made ahead was used");
    }

    #[test]
    fn a_batch_expected_has_its_blocks_made_ahead_only_while_the_ring_grows() {
        let asked = |ring: &Ring| {
            ring.preparer
                .as_ref()
                .map_or(0, BlockPreparer::pending_bytes)
        };
        let mut ring = preparing_ring(30);
        let record = format!("{{\"text\":\"{}\"}}", "x".repeat(1000));
        push(&mut ring, 1, "s", &record);
        // 20 records of 1,011 bytes, less the room left in the open block: 4.2 blocks of 4,096,
        // so five are opened (the last part-filled) and asked for.
        ring.expect_batch(20, 20 * record.len());
        assert_eq!(asked(&ring), 5 * 4096);
        // Pushed once the blocks are made, every one of them is taken.
        std::thread::sleep(std::time::Duration::from_millis(50));
        for seq in 2..=21u64 {
            push(&mut ring, seq, "s", &record);
        }
        let taken = ring.preparer.as_ref().map_or(0, BlockPreparer::taken);
        assert!(taken >= 5, "{taken} of the blocks made ahead were taken");
        assert!((0..21).all(|i| *ring.get(i).unwrap().json == *record.as_bytes()));
        // A batch the ring will evict for (21 held + 20 > 30) has nothing made ahead.
        let before = asked(&ring);
        ring.expect_batch(20, 20 * record.len());
        assert_eq!(asked(&ring), before);
    }

    #[test]
    fn blocks_made_ahead_for_a_batch_stop_at_the_cap() {
        let mut ring = preparing_ring(1_000_000);
        ring.expect_batch(100_000, 4096 * (MAX_BLOCKS_AHEAD + 100));
        let asked = ring
            .preparer
            .as_ref()
            .map_or(0, BlockPreparer::pending_bytes);
        assert_eq!(asked, MAX_BLOCKS_AHEAD * 4096);
        assert!(ring.heap_bytes() >= asked, "counted in the ring's memory");
    }

    #[test]
    fn rejects_bad_limits() {
        assert!(Ring::new(0, None).is_err());
        assert!(Ring::new(1, Some(0)).is_err());
    }
}
