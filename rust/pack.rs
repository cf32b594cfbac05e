//! Compressed ring blocks (`EventRing(compress=True)`): how a sealed block is packed, and how one
//! record is read back without decompressing the rest.
//!
//! A sealed block's records are regrouped by stream (records of one stream next to each other,
//! in append order) and cut at record boundaries into chunks of about `chunk_target` bytes, each
//! chunk one zstd frame. Grouping makes the newest records of one stream share a few chunks, so
//! a query for one stream decompresses those few instead of one chunk per record, and the
//! repeated ids of a session compress together. A table gives each record's place in the grouped
//! bytes; headers are untouched, so filters run on them without decompressing anything.
//!
//! Every chunk of a ring is compressed with one zstd dictionary made from the ring's first full
//! sealed block: a 16 KiB frame alone would not see the keys and ids that repeat across the whole
//! stream. The dictionary is a sample of that block's records (every n-th, across its streams,
//! up to 64 KiB) used as raw content, not a ZDICT-trained one: measured on the OpenCode-like mix
//! and the benchmark's events, the trained dictionary saved at most 1.5% more (and did worse on
//! one), took 280 ms of CPU per ring instead of 0.4 ms, and would add zstd's dictBuilder to the
//! build.
//! Decompressed chunks are kept in a small least-recently-used cache (`Unpacker`), bounded in
//! bytes and entries, so iterating over a block decompresses each chunk once.

use std::sync::OnceLock;

use zstd_safe::{CCtx, CDict, DCtx, DDict};

/// zstd level: 1 compresses about as well as 3 on event JSON (within 3% measured, with a
/// dictionary) at about twice the speed.
const LEVEL: i32 = 1;
/// Largest dictionary (it may end with most of one more record).
const MAX_DICTIONARY: usize = 64 * 1024;
/// Bounds of the decompressed-chunk cache.
const CACHE_BYTES: usize = 512 * 1024;
const CACHE_ENTRIES: usize = 64;

/// One record of a sealed block, as the packer sees it: where its bytes are and its stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Piece {
    pub offset: u32,
    pub len: u32,
    pub stream: u32,
}

struct Dictionary {
    cdict: CDict<'static>,
    ddict: DDict<'static>,
}

/// A ring's compression settings and its dictionary (made once, from the first sealed block).
pub(crate) struct Codec {
    chunk_target: usize,
    /// A block smaller than this (sealed early by a large record) is not used as the source of
    /// the dictionary: the dictionary waits for a fuller one.
    dictionary_source: usize,
    dictionary: OnceLock<Dictionary>,
}

impl Codec {
    /// A codec for blocks of `block_size` bytes: chunks of a sixteenth of a block, at most 16 KiB.
    pub(crate) fn new(block_size: usize) -> Self {
        Self {
            chunk_target: (block_size / 16).clamp(64, 16 * 1024),
            dictionary_source: (block_size / 4).max(64),
            dictionary: OnceLock::new(),
        }
    }

    /// Memory of the dictionary (both prepared forms), if made.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.dictionary
            .get()
            .map_or(0, |d| d.cdict.sizeof() + d.ddict.sizeof())
    }

    /// The ring's dictionary, made from this block's `records` (in grouped order, `total`
    /// bytes) if there is none yet and the block is full enough; `None` until then.
    fn dictionary_for<'a>(
        &self,
        records: impl Iterator<Item = Option<&'a [u8]>>,
        total: usize,
    ) -> Option<&Dictionary> {
        if let Some(made) = self.dictionary.get() {
            return Some(made);
        }
        if total < self.dictionary_source {
            return None;
        }
        // Two threads may learn at once (the background one and `compress_pending`): the first
        // to finish is kept.
        let learned = Dictionary::learn(records, total)?;
        Some(self.dictionary.get_or_init(|| learned))
    }

    /// Packs a sealed block; `None` if compressing would not save memory (or zstd failed), and
    /// the block stays as it is.
    pub(crate) fn pack(
        &self,
        work: &mut Work,
        raw: &[u8],
        pieces: &[Piece],
        first: u64,
    ) -> Option<Packed> {
        let Work {
            cctx,
            order,
            chunk,
            frame,
            data,
        } = work;
        let bytes_of = |k: u32| {
            let piece = pieces[k as usize];
            raw.get(piece.offset as usize..(piece.offset + piece.len) as usize)
        };
        // Regroup by stream, append order kept within a stream (the sort is stable).
        order.clear();
        order.extend(0..pieces.len() as u32);
        order.sort_by_key(|&k| pieces[k as usize].stream);
        let total: usize = pieces.iter().map(|p| p.len as usize).sum();
        let dictionary = self.dictionary_for(order.iter().map(|&k| bytes_of(k)), total);
        let mut positions = vec![0u32; pieces.len()].into_boxed_slice();
        let mut chunks = Vec::with_capacity(total / self.chunk_target + 2);
        let mut grouped_len = 0;
        data.clear();
        chunk.clear();
        for (n, &k) in order.iter().enumerate() {
            let bytes = bytes_of(k)?;
            positions[k as usize] = grouped_len as u32;
            grouped_len += bytes.len();
            chunk.extend_from_slice(bytes);
            // A chunk ends at `chunk_target` bytes, or earlier where the next record starts
            // another stream, once it holds an eighth of that: a query for a stream with a few
            // records per block then decompresses little besides them (with 100 streams of
            // 530-byte events, cutting at a quarter instead made such a query decompress twice
            // the bytes, 11 us instead of 5 per block; the blocks were 4% smaller).
            let next_stream = order.get(n + 1).map(|&next| pieces[next as usize].stream);
            let full = chunk.len() >= self.chunk_target
                || (chunk.len() >= self.chunk_target / 8
                    && next_stream != Some(pieces[k as usize].stream));
            if !full && next_stream.is_some() {
                continue;
            }
            frame.clear();
            frame.reserve(zstd_safe::compress_bound(chunk.len()));
            let written = match dictionary {
                Some(d) => cctx.compress_using_cdict(frame, chunk, &d.cdict),
                None => cctx.compress(frame, chunk, LEVEL),
            };
            written.ok()?;
            chunks.push(((grouped_len - chunk.len()) as u32, data.len() as u32));
            data.extend_from_slice(frame);
            chunk.clear();
            if data.len() + chunks.len() * 8 + positions.len() * 4 >= total {
                return None;
            }
        }
        chunks.push((grouped_len as u32, data.len() as u32));
        Some(Packed {
            // Exactly sized: these stay for as long as the block does.
            data: Box::from(&data[..]),
            chunks: chunks.into_boxed_slice(),
            positions,
            first,
            raw_end: raw.len(),
            with_dictionary: dictionary.is_some(),
        })
    }
}

/// What packing needs besides the block: a compression context and buffers, kept from one
/// block to the next so packing allocates only what the packed block keeps.
pub(crate) struct Work {
    cctx: CCtx<'static>,
    order: Vec<u32>,
    /// The records of the chunk being made.
    chunk: Vec<u8>,
    frame: Vec<u8>,
    data: Vec<u8>,
}

impl Work {
    /// `None` if zstd cannot allocate a context.
    pub(crate) fn new() -> Option<Self> {
        Some(Self {
            cctx: CCtx::try_create()?,
            order: Vec::new(),
            chunk: Vec::new(),
            frame: Vec::new(),
            data: Vec::new(),
        })
    }
}

impl Dictionary {
    /// A dictionary from the records of the first full enough sealed block, in grouped order
    /// (`total` bytes): every n-th record, so every stream of the block is sampled, up to 64 KiB.
    fn learn<'a>(records: impl Iterator<Item = Option<&'a [u8]>>, total: usize) -> Option<Self> {
        let step = (total / MAX_DICTIONARY).max(1);
        let mut content = Vec::with_capacity(total.min(MAX_DICTIONARY + 4096));
        for record in records.step_by(step) {
            if content.len() >= MAX_DICTIONARY {
                break;
            }
            content.extend_from_slice(record?);
        }
        Some(Self {
            cdict: CDict::try_create(&content, LEVEL)?,
            ddict: DDict::try_create(&content)?,
        })
    }
}

/// A packed block: its chunks back to back, and where each record went.
pub(crate) struct Packed {
    data: Box<[u8]>,
    /// Chunk `i` is grouped bytes `chunks[i].0..chunks[i + 1].0`, stored as packed bytes
    /// `chunks[i].1..chunks[i + 1].1`; the last entry only closes the previous chunk.
    chunks: Box<[(u32, u32)]>,
    /// By record (its absolute index minus `first`): its start in the grouped bytes.
    positions: Box<[u32]>,
    /// Absolute index of the block's first packed record (records evicted before the block was
    /// sealed are not packed).
    first: u64,
    /// Length of the block's bytes before packing (where its last record ends).
    raw_end: usize,
    with_dictionary: bool,
}

impl Packed {
    /// A placeholder holding nothing (while a block's body is being swapped).
    pub(crate) fn empty() -> Self {
        Self {
            data: Box::default(),
            chunks: Box::default(),
            positions: Box::default(),
            first: 0,
            raw_end: 0,
            with_dictionary: false,
        }
    }

    pub(crate) fn raw_end(&self) -> usize {
        self.raw_end
    }

    /// Bytes this block takes in memory.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.data.len() + self.chunks.len() * 8 + self.positions.len() * 4
    }
}

struct Entry {
    /// The block's serial number (never reused) and the chunk's index in it.
    block: u64,
    chunk: u32,
    last_used: u64,
    bytes: Vec<u8>,
}

/// Reads records of packed blocks: a decompression context and the chunk cache.
#[derive(Default)]
pub(crate) struct Unpacker {
    dctx: Option<DCtx<'static>>,
    entries: Vec<Entry>,
    cached_bytes: usize,
    clock: u64,
}

impl Unpacker {
    /// Appends the `len` bytes of the record with absolute index `absolute`, in block `block`
    /// (its serial number), to `out`.
    pub(crate) fn read(
        &mut self,
        codec: &Codec,
        packed: &Packed,
        block: u64,
        absolute: u64,
        len: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let position = absolute
            .checked_sub(packed.first)
            .and_then(|k| packed.positions.get(k as usize))
            .copied()
            .ok_or("record outside its packed block")? as usize;
        let chunk = packed
            .chunks
            .partition_point(|&(start, _)| start as usize <= position)
            .checked_sub(1)
            .ok_or("record before the first chunk")?;
        self.clock += 1;
        let at = match self
            .entries
            .iter()
            .position(|e| e.block == block && e.chunk == chunk as u32)
        {
            Some(at) => at,
            None => self.decompress(codec, packed, block, chunk)?,
        };
        let entry = &mut self.entries[at];
        entry.last_used = self.clock;
        let start = position - packed.chunks[chunk].0 as usize;
        let bytes = entry
            .bytes
            .get(start..start + len)
            .ok_or("record outside its chunk")?;
        out.extend_from_slice(bytes);
        Ok(())
    }

    /// Decompresses chunk `chunk` into the cache (evicting the least recently used entries to
    /// stay in bounds); returns its entry's index.
    fn decompress(
        &mut self,
        codec: &Codec,
        packed: &Packed,
        block: u64,
        chunk: usize,
    ) -> Result<usize, String> {
        let (raw_start, packed_start) = packed.chunks[chunk];
        let (raw_end, packed_end) = *packed.chunks.get(chunk + 1).ok_or("no such chunk")?;
        let size = (raw_end - raw_start) as usize;
        let source = packed
            .data
            .get(packed_start as usize..packed_end as usize)
            .ok_or("chunk outside its block")?;
        let mut bytes = self.make_room(size);
        bytes.clear();
        bytes.reserve(size);
        if self.dctx.is_none() {
            self.dctx = Some(DCtx::try_create().ok_or("zstd could not allocate a context")?);
        }
        let dctx = self.dctx.as_mut().ok_or("no decompression context")?;
        let dictionary = match (packed.with_dictionary, codec.dictionary.get()) {
            (false, _) => None,
            (true, Some(d)) => Some(d),
            (true, None) => return Err("the ring's dictionary is missing".into()),
        };
        let got = match dictionary {
            Some(d) => dctx.decompress_using_ddict(&mut bytes, source, &d.ddict),
            None => dctx.decompress(&mut bytes, source),
        }
        .map_err(zstd_safe::get_error_name)?;
        if got != size {
            return Err(format!("chunk holds {got} bytes, {size} expected"));
        }
        self.cached_bytes += bytes.capacity();
        self.entries.push(Entry {
            block,
            chunk: chunk as u32,
            last_used: self.clock,
            bytes,
        });
        Ok(self.entries.len() - 1)
    }

    /// Evicts least recently used entries until one of `size` bytes fits; returns a buffer to
    /// reuse (the last evicted one's).
    fn make_room(&mut self, size: usize) -> Vec<u8> {
        let mut reuse = Vec::new();
        while !self.entries.is_empty()
            && (self.entries.len() >= CACHE_ENTRIES || self.cached_bytes + size > CACHE_BYTES)
        {
            let oldest = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
                .map_or(0, |(at, _)| at);
            let entry = self.entries.swap_remove(oldest);
            self.cached_bytes -= entry.bytes.capacity();
            reuse = entry.bytes;
        }
        reuse
    }

    /// Drops every cached chunk.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.cached_bytes = 0;
    }

    /// Memory of the cache and the context.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.cached_bytes + self.dctx.as_ref().map_or(0, DCtx::sizeof)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(records: &[(&str, u32)]) -> (Vec<u8>, Vec<Piece>) {
        let mut raw = Vec::new();
        let mut pieces = Vec::new();
        for (text, stream) in records {
            pieces.push(Piece {
                offset: raw.len() as u32,
                len: text.len() as u32,
                stream: *stream,
            });
            raw.extend_from_slice(text.as_bytes());
        }
        (raw, pieces)
    }

    fn records(n: usize) -> Vec<(String, u32)> {
        (0..n)
            .map(|i| {
                let stream = (i * 7 % 5) as u32;
                let text = format!(
                    "{{\"type\":\"execution.text_delta\",\"stream_id\":\"ses_{stream}\",\"payload\":{{\"delta\":\"word {i} of the answer\",\"n\":{}}}}}",
                    i * i
                );
                (text, stream)
            })
            .collect()
    }

    fn read_all(codec: &Codec, packed: &Packed, records: &[(String, u32)], first: u64) {
        let mut unpacker = Unpacker::default();
        // Backwards and forwards, so chunks come from the cache and from zstd.
        for pass in 0..2 {
            let mut order: Vec<usize> = (0..records.len()).collect();
            if pass == 0 {
                order.reverse();
            }
            for k in order {
                let mut out = Vec::new();
                unpacker
                    .read(
                        codec,
                        packed,
                        9,
                        first + k as u64,
                        records[k].0.len(),
                        &mut out,
                    )
                    .unwrap();
                assert_eq!(out, records[k].0.as_bytes(), "record {k}");
            }
        }
        assert!(unpacker.entries.len() <= CACHE_ENTRIES);
        assert!(unpacker.cached_bytes <= CACHE_BYTES);
    }

    #[test]
    fn every_record_reads_back_with_and_without_a_dictionary() {
        let records = records(2000);
        let borrowed: Vec<(&str, u32)> = records.iter().map(|(t, s)| (t.as_str(), *s)).collect();
        let (raw, pieces) = block(&borrowed);
        let codec = Codec::new(64 * 1024);
        let mut work = Work::new().unwrap();
        let packed = codec.pack(&mut work, &raw, &pieces, 100).unwrap();
        assert!(packed.with_dictionary);
        assert!(packed.chunks.len() > 10, "{} chunks", packed.chunks.len());
        assert!(
            packed.heap_bytes() * 4 < raw.len(),
            "{} of {}",
            packed.heap_bytes(),
            raw.len()
        );
        assert_eq!(packed.raw_end(), raw.len());
        read_all(&codec, &packed, &records, 100);
        // A second block reuses the first one's dictionary.
        let packed = codec.pack(&mut work, &raw, &pieces, 5000).unwrap();
        read_all(&codec, &packed, &records, 5000);

        let tiny = Codec::new(64 * 1024);
        let (raw, pieces) = block(&[("{\"a\":1}", 0), ("{\"a\":1}", 0)]);
        assert!(
            tiny.pack(&mut work, &raw, &pieces, 0).is_none(),
            "too small to gain anything"
        );
        assert!(
            tiny.dictionary.get().is_none(),
            "a nearly empty block is no dictionary source"
        );
    }

    #[test]
    fn records_of_one_stream_are_grouped() {
        let records = records(500);
        let borrowed: Vec<(&str, u32)> = records.iter().map(|(t, s)| (t.as_str(), *s)).collect();
        let (raw, pieces) = block(&borrowed);
        let codec = Codec::new(4096);
        let packed = codec
            .pack(&mut Work::new().unwrap(), &raw, &pieces, 0)
            .unwrap();
        let mut previous: Option<(u32, u32)> = None;
        let mut by_position: Vec<(u32, u32)> = pieces
            .iter()
            .enumerate()
            .map(|(k, p)| (packed.positions[k], p.stream))
            .collect();
        by_position.sort();
        for (position, stream) in by_position {
            if let Some((before, last_stream)) = previous {
                assert!(position > before);
                assert!(stream >= last_stream, "streams grouped in order");
            }
            previous = Some((position, stream));
        }
        read_all(&codec, &packed, &records, 0);
    }

    #[test]
    fn incompressible_blocks_stay_raw() {
        let codec = Codec::new(64 * 1024);
        let mut work = Work::new().unwrap();
        let records = records(300);
        let borrowed: Vec<(&str, u32)> = records.iter().map(|(t, s)| (t.as_str(), *s)).collect();
        let (raw, pieces) = block(&borrowed);
        assert!(codec.pack(&mut work, &raw, &pieces, 0).is_some());
        // Random bytes, which neither zstd nor the dictionary (made from the block above) shrink.
        let mut x = 0x1234_5678_9abc_def0u64;
        let noise: Vec<u8> = (0..8000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let pieces = [
            Piece {
                offset: 0,
                len: 5000,
                stream: 1,
            },
            Piece {
                offset: 5000,
                len: 3000,
                stream: 2,
            },
        ];
        assert!(codec.pack(&mut work, &noise, &pieces, 0).is_none());
    }

    #[test]
    fn damaged_requests_are_errors_not_panics() {
        let records = records(300);
        let borrowed: Vec<(&str, u32)> = records.iter().map(|(t, s)| (t.as_str(), *s)).collect();
        let (raw, pieces) = block(&borrowed);
        let codec = Codec::new(4096);
        let packed = codec
            .pack(&mut Work::new().unwrap(), &raw, &pieces, 10)
            .unwrap();
        let mut unpacker = Unpacker::default();
        let mut out = Vec::new();
        assert!(unpacker.read(&codec, &packed, 1, 9, 5, &mut out).is_err());
        assert!(unpacker
            .read(&codec, &packed, 1, 10_000, 5, &mut out)
            .is_err());
        assert!(unpacker
            .read(&codec, &packed, 1, 10, 1 << 20, &mut out)
            .is_err());
        let other = Codec::new(4096);
        assert!(unpacker.read(&other, &packed, 2, 10, 5, &mut out).is_err());
        assert!(out.is_empty());
    }
}
