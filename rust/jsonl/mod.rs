//! JsonlStore: the append-only JSONL event file with a bounded cache of the newest events.
//!
//! One compact JSON object per line, `\n`-terminated, each with a `seq` that keeps increasing
//! across restarts. The cache is a [`Ring`]; in memory a record is the event without its `seq`
//! member (the header has it), on disk the line ends with `,"seq":N}`.

mod collect;
mod compress;
pub mod crash;
#[cfg(test)]
mod damage_tests;
mod group;
mod keeper;
mod log;
pub mod recovery;
pub mod seek;
#[cfg(test)]
mod segment_tests;
pub mod segments;
pub mod snapshot;

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use collect::Collector;
pub use collect::{CollectSpec, OpenClose};
pub use group::GroupSync;
use group::GroupThread;
pub use keeper::KeeperStats;
use keeper::{Keeper, KeeperConfig, Newest, SealedSegment};
use log::{lock_exclusive, MappedLog};
pub use recovery::{scan, scan_segment, LineEvent, RecoveryReport, ScanOutcome};
use segments::{Layout, SegmentFile};
use snapshot::Meta;

use crate::event::{now_ms, CoreError, EventFields, DEFAULT_MAX_EVENT_BYTES, MAX_SEQ};
use crate::external::{LineInFile, REFERENCE_LEN};
use crate::fork;
use crate::json::ScannedLine;
use crate::keys::KeySpans;
use crate::ring::{Ring, RingOptions};

/// Default size at which the active segment is sealed.
pub const DEFAULT_MAX_SEGMENT_BYTES: u64 = 64 << 20;
/// Default budget of the store's files.
pub const DEFAULT_MAX_DISK_BYTES: u64 = 1 << 30;
/// Bytes a line adds to its event's JSON at most: `,"seq":N}` and the newline.
const LINE_OVERHEAD: u64 = 32;
/// Events whose JSON body is this long or longer are left in the log, the ring holding a
/// reference to them (`external.rs`). A page: a smaller event shares its pages in the ring
/// with others, and is read back with a copy rather than a system call. The value is a choice,
/// not tuned by measurement; the large tool outputs measured (4-64 KiB) are all above it.
pub(crate) const REFERENCED_FROM: usize = 4 << 10;

/// When an append is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// No waiting at all; data reaches the disk when the OS writes it back or on close.
    None,
    /// The line is in the OS page cache when append returns: a killed process loses nothing.
    Flush,
    /// The line is on disk when append returns.
    Fsync,
    /// A background thread fsyncs every few milliseconds; `sync` waits for it.
    Group,
}

impl Durability {
    pub fn parse(text: &str) -> Result<Self, CoreError> {
        match text {
            "none" => Ok(Self::None),
            "flush" => Ok(Self::Flush),
            "fsync" => Ok(Self::Fsync),
            "group" => Ok(Self::Group),
            other => Err(CoreError::Invalid(format!(
                "durability must be one of 'none', 'flush', 'fsync', 'group', got {other:?}"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Flush => "flush",
            Self::Fsync => "fsync",
            Self::Group => "group",
        }
    }
}

/// How a store is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Events the cache (`len`, queries) covers: the newest N.
    pub max_cache_size: usize,
    /// Events kept in memory in all (at least `max_cache_size`), for a history view that shares
    /// the cache's records instead of copying them.
    pub retain: usize,
    pub durability: Durability,
    pub max_event_bytes: usize,
    pub group_interval: Duration,
    /// Events to keep aside while opening (from the whole store, not only the newest), so a
    /// caller can rebuild projections such as pending checkpoints without reading it again.
    /// Openings still open are also carried forward into every new segment.
    pub collect: CollectSpec,
    /// The active segment is sealed before an append would take it past this size.
    pub max_segment_bytes: u64,
    /// Sealed segments are deleted, oldest first, to keep the store's files within this budget
    /// (None: unbounded).
    pub max_disk_bytes: Option<u64>,
    /// Sealed segments whose newest (last) event's `timestamp` is older than this many seconds
    /// are deleted (reference-rotated files: by their modification time).
    pub max_age: Option<f64>,
    /// Sealed segments are compressed to zstd (`.jsonl.zst`).
    pub compress_sealed: bool,
    /// Compress the cache's sealed blocks in memory (see `ring.rs`).
    pub compress_history: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_cache_size: 50_000,
            retain: 50_000,
            durability: Durability::Flush,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            group_interval: Duration::from_millis(5),
            collect: CollectSpec::default(),
            max_segment_bytes: DEFAULT_MAX_SEGMENT_BYTES,
            max_disk_bytes: Some(DEFAULT_MAX_DISK_BYTES),
            max_age: None,
            compress_sealed: false,
            compress_history: false,
        }
    }
}

/// The segments of a store and what retention did, for `stats()`.
#[derive(Debug, Clone, Default)]
pub struct SegmentStats {
    /// Files of the store: the sealed segments and the active one.
    pub segments: usize,
    pub sealed_bytes: u64,
    pub active_bytes: u64,
    /// Segments sealed since the store was opened.
    pub sealed: u64,
    /// Events carried forward into new segments' snapshots since the store was opened.
    pub carried_forward: u64,
    /// What the keeper did (retention, compression) since the store was opened.
    pub keeper: KeeperStats,
}

/// What a caller must still do after an append for its durability mode.
pub enum SyncNeed {
    Nothing,
    /// fsync this file (outside any lock, so other appenders are not held up).
    Fsync(Arc<File>),
}

pub struct Store {
    path: PathBuf,
    layout: Layout,
    log: MappedLog,
    ring: Ring,
    next_seq: u64,
    options: StoreOptions,
    recovery: RecoveryReport,
    group: Option<GroupThread>,
    sync_file: Arc<File>,
    /// What is still open (live: every append is offered to it); carried into new segments.
    collector: Collector,
    collected: Vec<(u64, Vec<u8>)>,
    /// The store's lock, held while it is open (see `Layout::lock_path`).
    _lock: File,
    keeper: Keeper,
    /// The seq of the active segment's first event (None while it has none).
    active_first_seq: Option<u64>,
    /// The `timestamp` (epoch ms) of the active segment's newest event (0 while unknown).
    active_newest: f64,
    sealed: u64,
    carried_forward: u64,
    /// The fork generation the store was opened in (see `fork.rs`).
    opened_in: u64,
    /// The keeper's count of removed files when the ring's references were last looked at.
    files_removed_seen: u64,
}

/// Which files opening reads, decided from names and heads before reading any of them.
struct OpenPlan {
    /// Sealed segments from this index on go into the cache.
    ring_from: usize,
    /// Where to start reading the segment at `ring_from` when only its newest events are needed
    /// (and the collector does not need it): a byte offset, 0 for all of it.
    ring_skip: u64,
    /// The collector starts at this segment (its snapshot, or the oldest file, is complete).
    collect_from: usize,
    /// What the active segment's first lines hold.
    active_head: snapshot::Head,
}

/// A snapshot being read: its header was seen, and these carried events so far.
#[derive(Default)]
struct PendingSnapshot {
    expected: Option<u64>,
    items: Vec<(u64, String, Vec<u8>, Vec<u8>)>,
}

/// The collector while a file is read, with the snapshot it may be starting with.
struct Collecting<'c> {
    collector: &'c mut Collector,
    pending: PendingSnapshot,
    /// Lines (events or snapshot lines) of the current file seen so far.
    lines_in_file: u64,
}

impl Collecting<'_> {
    fn start_file(&mut self) {
        self.pending = PendingSnapshot::default();
        self.lines_in_file = 0;
    }

    fn meta(&mut self, meta: Meta<'_>) {
        let first_line = self.lines_in_file == 0;
        self.lines_in_file += 1;
        match meta {
            Meta::Header { carried, .. } if first_line => {
                self.pending = PendingSnapshot {
                    expected: Some(carried),
                    items: Vec::new(),
                };
                self.complete_if_whole();
            }
            Meta::Carried { line, scanned } if self.pending.expected.is_some() => {
                let Some(seq) = scanned.seq else { return };
                let json = match scanned.trailing_seq_at {
                    Some(at) => [&line[..at], b"}"].concat(),
                    None => line.to_vec(),
                };
                self.pending
                    .items
                    .push((seq, scanned.event_type.to_string(), line.to_vec(), json));
                self.complete_if_whole();
            }
            // A header not at the start of its file, or carried lines without one: not a
            // snapshot this store wrote, so not trusted.
            _ => self.pending = PendingSnapshot::default(),
        }
    }

    fn complete_if_whole(&mut self) {
        if self.pending.expected != Some(self.pending.items.len() as u64) {
            return;
        }
        // Everything open before this point is in the snapshot: start over from it.
        let pending = std::mem::take(&mut self.pending);
        self.collector.reset();
        for (seq, event_type, line, json) in &pending.items {
            self.collector.offer(*seq, event_type, line, [json, b""]);
        }
    }

    fn event(&mut self, event: &LineEvent<'_, '_>) {
        self.lines_in_file += 1;
        // An event before the snapshot was whole: it was cut short, and is not trusted.
        self.pending = PendingSnapshot::default();
        self.collector
            .offer(event.seq, &event.line.event_type, event.text, event.json);
    }
}

impl Store {
    /// Opens (creating if needed) and locks the store whose active segment is `path`, recovers
    /// it and loads the newest events, reading only the segments the cache and the collector need.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Self, CoreError> {
        validate(&options)?;
        segments::check_regular(path).map_err(CoreError::Invalid)?;
        let layout = Layout::of(path);
        std::fs::create_dir_all(&layout.dir).map_err(|e| {
            CoreError::io(
                format!("cannot create directory {}", layout.dir.display()),
                e,
            )
        })?;
        let lock = lock_store(&layout)?;
        let listing = segments::list(&layout).map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidInput {
                // Something named like a segment that is not a file: a bad setup, not an I/O
                // failure.
                return CoreError::Invalid(e.to_string());
            }
            CoreError::io(format!("cannot list the segments of {}", path.display()), e)
        })?;
        for leftover in &listing.leftovers {
            let _ = std::fs::remove_file(leftover);
        }
        let sealed = listing.segments;
        let mut file = open_active(path)?;
        let mut ring = Ring::with_options(
            options.retain.max(options.max_cache_size),
            None,
            RingOptions {
                compress: options.compress_history,
                ..RingOptions::default()
            },
        )?;
        let mut collector = Collector::new(&options.collect);
        let plan = plan_open(&sealed, &mut file, &options)
            .map_err(|e| CoreError::io(format!("cannot read {}", path.display()), e))?;
        let start = plan.ring_from.min(plan.collect_from);
        let mut report = RecoveryReport::default();
        let mut after: Option<u64> = None;
        let mut active_first_seq = None;
        let mut active_newest = 0.0;
        let outcome = {
            let collecting = RefCell::new(Collecting {
                collector: &mut collector,
                pending: PendingSnapshot::default(),
                lines_in_file: 0,
            });
            for (index, segment) in sealed.iter().enumerate().skip(start) {
                if index == start {
                    after = segment.first_seq().map(|first| first.saturating_sub(1));
                }
                let collect = index >= plan.collect_from && !options.collect.is_empty();
                let cache = index >= plan.ring_from;
                let skip = if index == plan.ring_from {
                    plan.ring_skip
                } else {
                    0
                };
                let Some(reader) = open_segment_from(segment, skip)? else {
                    continue;
                };
                collecting.borrow_mut().start_file();
                let outcome = scan_segment(
                    reader,
                    after,
                    |event| {
                        if collect {
                            collecting.borrow_mut().event(&event);
                        }
                        !cache || push_loaded(&mut ring, &event)
                    },
                    |meta| {
                        if collect {
                            collecting.borrow_mut().meta(meta);
                        }
                    },
                )
                .map_err(|e| CoreError::io(format!("cannot read {}", segment.path.display()), e))?;
                if after.is_some() || outcome.report.events > 0 {
                    after = Some(outcome.report.last_seq);
                }
                report.add(&outcome.report);
            }
            file.seek(SeekFrom::Start(0))
                .map_err(|e| CoreError::io(format!("cannot read {}", path.display()), e))?;
            collecting.borrow_mut().start_file();
            let collect = !options.collect.is_empty();
            let outcome = scan_segment(
                &file,
                after,
                |event| {
                    active_first_seq.get_or_insert(event.seq);
                    active_newest = event.line.timestamp;
                    if collect {
                        collecting.borrow_mut().event(&event);
                    }
                    push_loaded(&mut ring, &event)
                },
                |meta| {
                    if collect {
                        collecting.borrow_mut().meta(meta);
                    }
                },
            )
            .map_err(|e| CoreError::io(format!("cannot read {}", path.display()), e))?;
            report.add(&outcome.report);
            outcome
        };
        let collected = collector.take_collected();
        // A store's appends are the hot path: from here on its ring's next block is made ahead.
        // Not while loading, which pushes records faster than a helper can make blocks (it
        // would only contend with the loader for the process's memory map).
        ring.prepare_blocks_ahead();
        let sync_file = Arc::new(
            file.try_clone()
                .map_err(|e| CoreError::io("cannot duplicate the log handle", e))?,
        );
        let mut log = MappedLog::new(file, outcome.data_end)?;
        log.limit_allocation(options.max_segment_bytes);
        if outcome.needs_newline {
            log.append(&[b"\n"])?;
        }
        // Seqs continue after everything known: lines read, the active segment's header, and
        // the names of the sealed segments (even ones not read, or damaged).
        let last_seq = report
            .last_seq
            .max(
                plan.active_head
                    .first_seq
                    .map_or(0, |s| s.saturating_sub(1)),
            )
            .max(
                sealed
                    .iter()
                    .filter_map(SegmentFile::first_seq)
                    .max()
                    .unwrap_or(0),
            );
        report.last_seq = last_seq;
        let group = match options.durability {
            Durability::Group => Some(start_group(&sync_file, options.group_interval, last_seq)?),
            _ => None,
        };
        let protected = if options.collect.is_empty() {
            0
        } else {
            sealed.len() - plan.collect_from.min(sealed.len())
        };
        let keeper = Keeper::start(
            keeper_config(&layout, &options),
            sealed.iter().map(sealed_segment).collect(),
            active_first_seq.unwrap_or(last_seq + 1),
            protected,
        )
        .map_err(|e| CoreError::io("cannot start the segment keeper thread", e))?;
        keeper.set_active_bytes(log.data_len());
        Ok(Self {
            path: path.to_path_buf(),
            layout,
            log,
            ring,
            next_seq: last_seq + 1,
            options,
            recovery: report,
            group,
            sync_file,
            collector,
            collected,
            _lock: lock,
            keeper,
            active_first_seq,
            active_newest,
            sealed: 0,
            carried_forward: 0,
            opened_in: fork::generation(),
            files_removed_seen: 0,
        })
    }

    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// The events of `collect_types` found while opening, in file order (taken once).
    pub fn take_collected(&mut self) -> Vec<(u64, Vec<u8>)> {
        std::mem::take(&mut self.collected)
    }

    /// Stops carrying forward the opening `id` of `open_type` (of a collect pair): the caller
    /// closed it without a closing event (for instance, dropped with its session).
    pub fn forget_open(&mut self, open_type: &str, id: &str) -> bool {
        self.collector.forget(open_type, id)
    }

    /// Openings still open (what the next segment's snapshot carries).
    pub fn open_count(&self) -> usize {
        self.collector.open_count()
    }

    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    pub fn ring_mut(&mut self) -> &mut Ring {
        &mut self.ring
    }

    /// Bytes of data in the active segment.
    pub fn file_len(&self) -> u64 {
        self.log.data_len()
    }

    /// The segments, their sizes and what retention did.
    pub fn segment_stats(&self) -> SegmentStats {
        let (sealed_count, sealed_bytes, keeper) = self.keeper.stats();
        SegmentStats {
            segments: sealed_count + 1,
            sealed_bytes,
            active_bytes: self.log.data_len(),
            sealed: self.sealed,
            carried_forward: self.carried_forward,
            keeper,
        }
    }

    /// The sequence number the next append gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Appends one event. `body` is its compact JSON without the closing brace (and without
    /// `seq`). Returns the sequence number; the event is in the file and the cache, or in neither.
    pub fn append(
        &mut self,
        body: &[u8],
        fields: &EventFields<'_>,
        spans: &KeySpans,
    ) -> Result<u64, CoreError> {
        // The one-event path of `append_many`, without its per-batch allocations.
        self.check_process()?;
        self.check_size(body.len() + 1)?;
        self.check_seqs_left(1)?;
        self.seal_if_full(body.len() as u64 + LINE_OVERHEAD)?;
        let seq = self.next_seq;
        let offset = self.log.data_len();
        // Large lines too go through the log's mapping: the ring refers to them, so its block
        // preparer leaves the other core to the log's warmer (log.rs).
        self.append_to_log(&[body, SeqSuffix::new(seq).as_bytes()], false)?;
        self.keep(seq, fields, spans, (body, body.len()), offset)?;
        self.note_appended(seq, fields, body);
        self.finish_append(seq);
        Ok(seq)
    }

    /// Puts an appended event into the ring. A body of `REFERENCED_FROM` bytes or more stays
    /// in the log, whose active segment has it at `offset`, and the ring refers to it
    /// (`external.rs`; `body` is not looked at, and may be empty if it was not read back); a
    /// shorter one (`body`, of `body_len` bytes) is copied in, its known keys compacted.
    fn keep(
        &mut self,
        seq: u64,
        fields: &EventFields<'_>,
        spans: &KeySpans,
        (body, body_len): (&[u8], usize),
        offset: u64,
    ) -> Result<(), CoreError> {
        // Cannot fail: the size was checked and the cache has no byte limit.
        if body_len >= REFERENCED_FROM {
            let file = Arc::clone(&self.sync_file);
            let line = LineInFile {
                file,
                offset,
                body_len,
            };
            return self.ring.push_external(seq, fields, line);
        }
        self.ring
            .push_compacted(seq, fields, body, body_len, b"}", spans)
    }

    /// Keeps the collector and the active segment's bookkeeping current after an append.
    fn note_appended(&mut self, seq: u64, fields: &EventFields<'_>, body: &[u8]) {
        let event_type = fields.event_type;
        self.active_first_seq.get_or_insert(seq);
        self.active_newest = fields.timestamp;
        if self.collector.wants(event_type) {
            let mut line = Vec::with_capacity(body.len() + 1);
            line.extend_from_slice(body);
            line.push(b'}');
            self.collector.offer(seq, event_type, &line, [&line, b""]);
        }
    }

    fn finish_append(&mut self, last_seq: u64) {
        self.next_seq = last_seq + 1;
        self.keeper.set_active_bytes(self.log.data_len());
        self.release_removed_segments();
        if let Some(group) = &self.group {
            group.shared().mark_written(last_seq);
        }
    }

    /// If retention or compression removed a segment since last asked, has the ring copy in
    /// the lines it refers to there (`external.rs`): its references would keep the removed
    /// file's disk space taken. The keeper removes files on its own thread, so a removal after
    /// an append is seen by the next one.
    fn release_removed_segments(&mut self) {
        let removed = self.keeper.files_removed();
        if removed != self.files_removed_seen {
            self.files_removed_seen = removed;
            self.ring.hold_unlinked_lines();
        }
    }

    /// Appends a batch atomically (all lines reach the file, or none); returns the first seq.
    /// Each event comes with the spans of its tokenizable keys (offsets in its body).
    pub fn append_many(
        &mut self,
        events: &[(&[u8], EventFields<'_>, &KeySpans)],
    ) -> Result<u64, CoreError> {
        self.check_process()?;
        self.check_seqs_left(events.len() as u64)?;
        let (mut total, mut held) = (0u64, 0usize);
        for (body, _, _) in events {
            self.check_size(body.len() + 1)?;
            total += body.len() as u64 + LINE_OVERHEAD;
            held += held_len(body.len());
        }
        if !events.is_empty() {
            // A batch is never split across segments; one larger than a segment gets a new
            // segment of its own.
            self.seal_if_full(total)?;
        }
        self.ring.expect_batch(events.len(), held);
        let first = self.next_seq;
        let mut offset = self.log.data_len();
        let suffixes = self.write_lines(
            first,
            events.iter().map(|(body, _, _)| std::slice::from_ref(body)),
        )?;
        for (index, ((body, fields, spans), suffix)) in events.iter().zip(&suffixes).enumerate() {
            let seq = first + index as u64;
            self.keep(seq, fields, spans, (body, body.len()), offset)?;
            self.note_appended(seq, fields, body);
            offset += (body.len() + suffix.as_bytes().len()) as u64;
        }
        if !events.is_empty() {
            self.finish_append(first + events.len() as u64 - 1);
            // The next batch is encoded before it reaches the ring, and is likely of this size:
            // asked for now, its blocks are made while it is encoded, not while it is pushed.
            let next = held.min(NEXT_BATCH_AHEAD_BYTES);
            self.ring.expect_batch(events.len(), next);
        }
        Ok(first)
    }

    /// Starts a batch of `count` events that is written chunk by chunk (`write_chunk`) and
    /// taken into the cache by `finish_batch`, for batches too large to encode whole before
    /// writing. `expected_bytes` is the batch's estimated size in the file: the batch is never
    /// split across segments, so a segment it would overfill is sealed first. The caller holds
    /// the store (`&mut`) from here to `finish_batch` or `abort_batch`, so the seqs are
    /// consecutive.
    pub fn begin_batch(
        &mut self,
        count: u64,
        expected_bytes: u64,
    ) -> Result<ChunkedBatch, CoreError> {
        self.check_process()?;
        self.check_seqs_left(count)?;
        if count > 0 {
            self.seal_if_full(expected_bytes)?;
        }
        // Lines of about the average size the estimate gives are referenced, not held.
        let average = expected_bytes.checked_div(count).unwrap_or(0) as usize;
        let held = count as usize * held_len(average.saturating_sub(LINE_OVERHEAD as usize));
        self.ring.expect_batch(count as usize, held);
        Ok(ChunkedBatch {
            first: self.next_seq,
            start: self.log.data_len(),
            lines: Vec::with_capacity(count.min(1 << 20) as usize),
        })
    }

    /// Writes the next chunk of a batch to the file (not to the cache yet). On error every line
    /// the batch wrote is blanked and the batch is over: nothing of it is stored.
    pub fn write_chunk(
        &mut self,
        batch: &mut ChunkedBatch,
        bodies: &[&[u8]],
    ) -> Result<(), CoreError> {
        let pieces: Vec<&[&[u8]]> = bodies.iter().map(std::slice::from_ref).collect();
        self.write_chunk_in_pieces(batch, &pieces)
    }

    /// `write_chunk` with each body given as pieces to be written one after another (a body
    /// whose long strings were escaped apart from the rest, `side_escape.rs`).
    pub fn write_chunk_in_pieces(
        &mut self,
        batch: &mut ChunkedBatch,
        bodies: &[&[&[u8]]],
    ) -> Result<(), CoreError> {
        let written = self.write_chunk_lines(batch, bodies);
        if written.is_err() {
            self.abort_batch(batch);
        }
        written
    }

    fn write_chunk_lines(
        &mut self,
        batch: &mut ChunkedBatch,
        bodies: &[&[&[u8]]],
    ) -> Result<(), CoreError> {
        let lengths: Vec<usize> = bodies
            .iter()
            .map(|pieces| pieces.iter().map(|p| p.len()).sum())
            .collect();
        for length in &lengths {
            self.check_size(length + 1)?;
        }
        let first = batch.first + batch.lines.len() as u64;
        let suffixes = self.write_lines(first, bodies.iter().copied())?;
        for (length, suffix) in lengths.iter().zip(&suffixes) {
            batch
                .lines
                .push((*length, length + suffix.as_bytes().len()));
        }
        Ok(())
    }

    /// Writes `bodies` (each as its pieces, one after another) to the log as consecutive
    /// lines, each ended with its `,"seq":N}` (seqs from `first`) and a newline: all of them or
    /// none. Returns the lines' endings.
    fn write_lines<'b>(
        &mut self,
        first: u64,
        bodies: impl ExactSizeIterator<Item = &'b [&'b [u8]]>,
    ) -> Result<Vec<SeqSuffix>, CoreError> {
        let suffixes: Vec<SeqSuffix> = (0..bodies.len() as u64)
            .map(|i| SeqSuffix::new(first + i))
            .collect();
        let mut parts: Vec<&[u8]> = Vec::with_capacity(bodies.len() * 2);
        for (pieces, suffix) in bodies.zip(&suffixes) {
            parts.extend_from_slice(pieces);
            parts.push(suffix.as_bytes());
        }
        // Large lines of a batch always go through `pwritev`: a batch fills the log's windows
        // faster than its warmer prepares them, even when the other core is free (extend of
        // 40 KiB events in 512 KiB chunks ran 0.96x as fast through the mapping, 9 pairs).
        self.append_to_log(&parts, true)?;
        Ok(suffixes)
    }

    /// Appends `parts` to the log file, large lines through `pwritev` if `large_through`.
    #[inline]
    fn append_to_log(&mut self, parts: &[&[u8]], large_through: bool) -> Result<(), CoreError> {
        self.log.write_large_lines_through(large_through);
        self.log.append(parts).map_err(|e| e.in_file(&self.path))
    }

    /// Blanks every line a batch wrote: nothing of it is stored.
    pub fn abort_batch(&mut self, batch: &mut ChunkedBatch) {
        self.log.cut_back(batch.start);
        batch.lines.clear();
    }

    /// Takes a batch whose chunks are all written into the cache, reading its lines back from
    /// the file (page cache) a piece at a time into `buffer`: a large batch is never held
    /// whole in memory twice. A large line is referenced instead (`external.rs`), and read
    /// back only if the collector takes it. `events` gives each line's header fields and key
    /// spans, in order. Returns the first seq.
    ///
    /// Reading back a file just written can only fail on an I/O error; if it does before any
    /// line is taken, the batch is blanked as on any failure; after, the lines are in the file
    /// (and a reopened store has them) but the cache lacks the rest, and the error says so.
    pub fn finish_batch<'e>(
        &mut self,
        batch: ChunkedBatch,
        events: impl IntoIterator<Item = (EventFields<'e>, &'e KeySpans)>,
        buffer: &mut Vec<u8>,
    ) -> Result<u64, CoreError> {
        let mut events = events.into_iter().peekable();
        let mut offset = batch.start;
        let mut index = 0;
        while index < batch.lines.len() {
            let end = piece_end(&batch.lines, index);
            let referenced = batch.lines[index].0 >= REFERENCED_FROM;
            let read = !referenced
                || events
                    .peek()
                    .is_some_and(|(fields, _)| self.collector.wants(fields.event_type));
            let bytes: usize = batch.lines[index..end].iter().map(|line| line.1).sum();
            if read && buffer.len() < bytes {
                buffer.resize(bytes, 0);
            }
            let read_back = match read {
                true => self.log.read_at(offset, &mut buffer[..bytes]),
                false => Ok(()),
            };
            if let Err(err) = read_back {
                if index == 0 {
                    let mut batch = batch;
                    self.abort_batch(&mut batch);
                    let err = CoreError::io("cannot read a batch back from the log", err);
                    return Err(err.in_file(&self.path));
                }
                let last = batch.first + batch.lines.len() as u64 - 1;
                self.finish_append(last);
                let context = format!(
                    "the batch was written (seqs {}..={last}), but only its first {index} events \
                     are in the cache: cannot read the rest back from the log",
                    batch.first
                );
                return Err(CoreError::io(context, err).in_file(&self.path));
            }
            let mut at = 0;
            for &(body_len, line_len) in &batch.lines[index..end] {
                let Some((fields, spans)) = events.next() else {
                    return Err(CoreError::Invalid(format!(
                        "finish_batch got the header fields of {index} events for {} lines",
                        batch.lines.len()
                    )));
                };
                let seq = batch.first + index as u64;
                let body: &[u8] = if read {
                    &buffer[at..at + body_len]
                } else {
                    &[]
                };
                self.keep(seq, &fields, spans, (body, body_len), offset + at as u64)?;
                self.note_appended(seq, &fields, body);
                at += line_len;
                index += 1;
            }
            offset += bytes as u64;
        }
        if !batch.lines.is_empty() {
            self.finish_append(batch.first + batch.lines.len() as u64 - 1);
        }
        Ok(batch.first)
    }

    /// Seals the active segment if `incoming` more bytes would take it past the segment size
    /// (and it holds at least one event, so no segment is ever empty of events).
    fn seal_if_full(&mut self, incoming: u64) -> Result<(), CoreError> {
        if self.active_first_seq.is_none()
            || self.log.data_len() + incoming <= self.options.max_segment_bytes
        {
            return Ok(());
        }
        self.seal().map_err(|e| e.in_file(&self.path))
    }

    /// Seals the active segment: trims it, renames it to its sealed name, and starts a new
    /// active segment with a snapshot of what is still open. On failure (a full disk) nothing
    /// has changed: the old active segment is back under its name and still in use.
    fn seal(&mut self) -> Result<(), CoreError> {
        let Some(first_seq) = self.active_first_seq else {
            return Ok(());
        };
        // At most one sealed segment waits for the keeper (bounded disk use, see keeper.rs).
        self.keeper.wait_idle();
        let durable = matches!(
            self.options.durability,
            Durability::Fsync | Durability::Group
        );
        // In fsync and group modes the segment is on disk before it is renamed; in the others
        // the keeper fsyncs it (a `sync()` in between covers it too).
        self.log.trim(durable)?;
        crash::point("seal.trimmed");
        let sealed_path = self.free_sealed_path(first_seq);
        std::fs::rename(&self.path, &sealed_path)
            .map_err(|e| CoreError::io("cannot rename the full segment", e))?;
        crash::point("seal.renamed");
        let (new_log, new_sync, carried) = match self.start_segment(durable) {
            Ok(started) => started,
            Err(error) => {
                // Put the segment back: the store goes on as if nothing happened.
                let _ = std::fs::remove_file(&self.path);
                let _ = std::fs::rename(&sealed_path, &self.path);
                return Err(error);
            }
        };
        crash::point("seal.started");
        let old_log = std::mem::replace(&mut self.log, new_log);
        let old_sync = std::mem::replace(&mut self.sync_file, Arc::clone(&new_sync));
        if let Some(group) = &self.group {
            group.shared().set_file(Arc::clone(&new_sync));
        }
        let bytes = old_log.data_len();
        drop(old_log);
        let modified = std::fs::metadata(&sealed_path)
            .ok()
            .and_then(|m| m.modified().ok());
        self.keeper.sealed(
            SealedSegment {
                path: sealed_path,
                first_seq: Some(first_seq),
                bytes,
                newest: Newest::of_event(self.active_newest).unwrap_or(Newest::Modified(modified)),
                modified,
                compressed: false,
            },
            old_sync,
            new_sync,
            durable,
            self.next_seq,
        );
        self.keeper.set_active_bytes(self.log.data_len());
        self.active_first_seq = None;
        self.active_newest = 0.0;
        self.sealed += 1;
        self.carried_forward += carried as u64;
        Ok(())
    }

    /// A sealed name for a segment starting at `first_seq` that no file has yet (a damaged store
    /// could have reused seqs; a sealed segment is never overwritten).
    fn free_sealed_path(&self, first_seq: u64) -> PathBuf {
        let mut seq = first_seq;
        loop {
            let plain = self.layout.sealed_path(seq, false);
            if !plain.exists() && !self.layout.sealed_path(seq, true).exists() {
                return plain;
            }
            seq += 1;
        }
    }

    /// Creates the new active segment and writes its snapshot: the header, then every opening
    /// still open. Returns the log, a handle to sync it, and how many events were carried.
    fn start_segment(&self, durable: bool) -> Result<(MappedLog, Arc<File>, usize), CoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&self.path)
            .map_err(|e| CoreError::io("cannot create a new segment", e))?;
        let sync = Arc::new(
            file.try_clone()
                .map_err(|e| CoreError::io("cannot duplicate the log handle", e))?,
        );
        let mut log = MappedLog::new(file, 0)?;
        log.limit_allocation(self.options.max_segment_bytes);
        let open = self.collector.open_items();
        log.append(&[&snapshot::header_line(self.next_seq, open.len(), now_ms())])?;
        // A kill here leaves a header without its carried lines: opening sees the snapshot is
        // incomplete and reads the previous segment instead.
        crash::point("seal.header");
        let lines: Vec<Vec<u8>> = open
            .iter()
            .map(|(seq, json)| snapshot::carried_line(*seq, json))
            .collect();
        let parts: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        log.append(&parts)?;
        crash::point("seal.snapshot");
        if durable {
            log.sync_data()?;
            segments::sync_dir(&self.layout.dir)
                .map_err(|e| CoreError::io("cannot sync the store's directory", e))?;
        }
        Ok((log, sync, open.len()))
    }

    /// Refuses to act from a child process forked after the store was opened.
    fn check_process(&self) -> Result<(), CoreError> {
        if fork::forked_since(self.opened_in) {
            return Err(CoreError::Invalid(format!(
                "{} was opened before this process forked; open the store again in this process",
                self.path.display()
            )));
        }
        Ok(())
    }

    fn check_seqs_left(&self, count: u64) -> Result<(), CoreError> {
        // Seqs next_seq..=MAX_SEQ are left (none once next_seq has passed MAX_SEQ).
        if count > (MAX_SEQ + 1).saturating_sub(self.next_seq) {
            return Err(CoreError::Invalid(format!(
                "{} has used up its sequence numbers (the last possible is {MAX_SEQ})",
                self.path.display()
            )));
        }
        Ok(())
    }

    fn check_size(&self, size: usize) -> Result<(), CoreError> {
        let limit = self.options.max_event_bytes;
        if size > limit {
            return Err(CoreError::TooLarge {
                size,
                limit,
                what: "max_event_bytes limit",
            });
        }
        Ok(())
    }

    /// What the caller must do after an append to honour the durability mode.
    pub fn sync_need(&self) -> SyncNeed {
        match self.options.durability {
            Durability::Fsync => SyncNeed::Fsync(Arc::clone(&self.sync_file)),
            _ => SyncNeed::Nothing,
        }
    }

    /// The files a full `sync` fsyncs (sealed segments not yet synced, and the active one unless
    /// a group thread covers it), and in group mode the group to wait on.
    pub fn sync_handles(&self) -> Result<SyncHandles, CoreError> {
        self.check_process()?;
        let mut files = self.keeper.unsynced();
        let group = self
            .group
            .as_ref()
            .map(|g| (Arc::clone(g.shared()), self.next_seq - 1));
        if group.is_none() {
            files.push(Arc::clone(&self.sync_file));
        }
        Ok((files, group))
    }

    /// Everything appended so far is on disk when this returns.
    pub fn sync(&self) -> Result<(), CoreError> {
        let (files, group) = self.sync_handles()?;
        sync_now(&files, group)
    }

    /// Trims the file to its data, syncs (except in "none" and "flush" modes) and stops the
    /// group and keeper threads. The store must not be used afterwards.
    ///
    /// In a child forked after the store was opened, closing only lets go of this process's
    /// handles: the file belongs to the parent.
    pub fn close(&mut self) -> Result<(), CoreError> {
        if fork::forked_since(self.opened_in) {
            return Ok(());
        }
        let mut group_failure = None;
        if let Some(mut group) = self.group.take() {
            group.stop();
            group_failure = group.shared().error();
        }
        self.keeper.stop();
        let sync = matches!(
            self.options.durability,
            Durability::Fsync | Durability::Group
        );
        self.log.trim(sync)?;
        match group_failure {
            Some(message) => {
                Err(CoreError::io(message, std::io::Error::other("fsync")).in_file(&self.path))
            }
            None => Ok(()),
        }
    }
}

/// Decides which files opening reads: enough of the newest sealed segments to fill the cache
/// (their seq ranges come from their names), and the segments from the newest complete snapshot
/// on for the collector. Leaves `active` at an unspecified position.
fn plan_open(
    sealed: &[SegmentFile],
    active: &mut File,
    options: &StoreOptions,
) -> std::io::Result<OpenPlan> {
    let active_head = snapshot::read_head(&*active)?;
    let count = sealed.len();
    if count == 0 {
        return Ok(OpenPlan {
            ring_from: 0,
            ring_skip: 0,
            collect_from: 0,
            active_head,
        });
    }
    let held = options.retain.max(options.max_cache_size) as u64;
    let active_events = match (active_head.first_seq, last_seq_of(active)?) {
        (Some(first), Some(last)) if last >= first => last - first + 1,
        _ => 0,
    };
    let mut needed = held.saturating_sub(active_events);
    let mut ring_from = count;
    let mut next_first = active_head.first_seq;
    // (events the oldest segment read holds, how many of them the cache needs)
    let mut partial: Option<(u64, u64)> = None;
    while ring_from > 0 && needed > 0 {
        let Some(first) = sealed[ring_from - 1].first_seq() else {
            // Reference-rotated files carry no seqs: all of them are read.
            ring_from = 0;
            partial = None;
            break;
        };
        partial = None;
        if let Some(next) = next_first {
            let events = next.saturating_sub(first);
            if events > needed {
                partial = Some((events, needed));
            }
            needed = needed.saturating_sub(events);
        }
        next_first = Some(first);
        ring_from -= 1;
    }
    let collect_from = if options.collect.is_empty() || active_head.complete {
        count
    } else {
        let mut from = 0;
        for index in (0..count).rev() {
            let complete = match open_segment(&sealed[index]) {
                Ok(Some(reader)) => snapshot::read_head(reader)?.complete,
                _ => false,
            };
            if complete {
                from = index;
                break;
            }
        }
        from
    };
    // Only the newest events of the oldest segment read are needed: start reading it near where
    // they begin (with a generous margin; lines before them only fall out of the cache again).
    let ring_skip = match partial {
        Some((events, wanted)) if ring_from < collect_from && ring_from < count => {
            let segment = &sealed[ring_from];
            if segment.compressed() {
                0
            } else {
                let share = 1.0 - (wanted as f64 / events as f64);
                let estimate = (segment.bytes as f64 * share * 0.8) as u64;
                estimate.saturating_sub(256 << 10)
            }
        }
        _ => 0,
    };
    Ok(OpenPlan {
        ring_from,
        ring_skip,
        collect_from,
        active_head,
    })
}

/// The seq of the last complete line of a file, read from its end (None if it cannot tell).
fn last_seq_of(file: &File) -> std::io::Result<Option<u64>> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    let window = len.min(256 << 10);
    let mut tail = vec![0u8; window as usize];
    file.read_exact_at(&mut tail, len - window)?;
    let end = tail.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let mut lines = tail[..end].split(|&b| b == b'\n').rev();
    // The part after the last newline may be torn: only whole lines count.
    if tail[..end].last() != Some(&b'\n') {
        lines.next();
    }
    for line in lines {
        if let Ok(scanned) = crate::json::scan_event_line(line) {
            return Ok(scanned.seq);
        }
    }
    Ok(None)
}

/// A reader of a sealed (plain) segment from the first whole line at or after `offset`; None if
/// it is gone.
fn open_segment_from(
    segment: &SegmentFile,
    offset: u64,
) -> Result<Option<Box<dyn std::io::Read + Send>>, CoreError> {
    if offset == 0 {
        return open_segment(segment);
    }
    let read_error = |e| CoreError::io(format!("cannot read {}", segment.path.display()), e);
    let mut file = match segments::open_for_reading(&segment.path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_error(e)),
    };
    file.seek(SeekFrom::Start(offset)).map_err(read_error)?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    // The line the offset falls in is partial: skip to the next one.
    let mut partial = Vec::new();
    std::io::BufRead::read_until(&mut reader, b'\n', &mut partial).map_err(read_error)?;
    Ok(Some(Box::new(reader)))
}

/// A reader of a sealed segment; None if it is gone.
fn open_segment(segment: &SegmentFile) -> Result<Option<Box<dyn std::io::Read + Send>>, CoreError> {
    let file = match segments::open_for_reading(&segment.path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CoreError::io(
                format!("cannot open {}", segment.path.display()),
                e,
            ))
        }
    };
    segments::reader_of(file, segment.compressed())
        .map(Some)
        .map_err(|e| CoreError::io(format!("cannot read {}", segment.path.display()), e))
}

fn sealed_segment(file: &SegmentFile) -> SealedSegment {
    SealedSegment {
        path: file.path.clone(),
        first_seq: file.first_seq(),
        bytes: file.bytes,
        // A sealed segment's age is its last event's timestamp, read when retention needs it;
        // the reference plugin's files go by their modification time.
        newest: match file.kind {
            segments::Kind::Sealed { .. } => Newest::Unknown,
            segments::Kind::Reference { .. } => Newest::Modified(file.modified),
        },
        modified: file.modified,
        compressed: file.compressed(),
    }
}

fn keeper_config(layout: &Layout, options: &StoreOptions) -> KeeperConfig {
    KeeperConfig {
        layout: layout.clone(),
        max_disk_bytes: options.max_disk_bytes,
        max_segment_bytes: options.max_segment_bytes,
        max_age: options.max_age.map(Duration::from_secs_f64),
        compress: options.compress_sealed,
    }
}

/// What `sync` needs, taken out of the store so the wait can happen outside its lock: the
/// files to fsync, and in group mode the group thread to wait on with the seq to reach.
pub type SyncHandles = (Vec<Arc<File>>, Option<(Arc<GroupSync>, u64)>);

/// fsyncs `files`, then waits for the group thread (if any) to cover `seq`.
pub fn sync_now(
    files: &[Arc<File>],
    group: Option<(Arc<GroupSync>, u64)>,
) -> Result<(), CoreError> {
    for file in files {
        file.sync_data()
            .map_err(|e| CoreError::io("cannot fsync the log", e))?;
    }
    match group {
        Some((group, seq)) => group
            .wait(seq)
            .map_err(|message| CoreError::io(message, std::io::Error::other("fsync"))),
        None => Ok(()),
    }
}

fn validate(options: &StoreOptions) -> Result<(), CoreError> {
    if options.max_cache_size == 0 {
        return Err(CoreError::Invalid(
            "max_cache_size must be at least 1".into(),
        ));
    }
    if options.max_event_bytes < 2 || options.max_event_bytes >= u32::MAX as usize {
        return Err(CoreError::Invalid(format!(
            "max_event_bytes must be between 2 and {}, got {}",
            u32::MAX - 1,
            options.max_event_bytes
        )));
    }
    let smallest_segment = options.max_event_bytes as u64 + LINE_OVERHEAD;
    if options.max_segment_bytes < smallest_segment {
        return Err(CoreError::Invalid(format!(
            "max_segment_bytes must hold at least one maximal event (max_event_bytes + {LINE_OVERHEAD} = {smallest_segment} bytes), got {}",
            options.max_segment_bytes
        )));
    }
    if let Some(budget) = options.max_disk_bytes {
        let two = options.max_segment_bytes.saturating_mul(2);
        if budget < two {
            return Err(CoreError::Invalid(format!(
                "max_disk_bytes must be at least two segments (2 x max_segment_bytes = {two} bytes) or None for unbounded, got {budget}"
            )));
        }
    }
    if let Some(age) = options.max_age {
        if !(age.is_finite() && age > 0.0) {
            return Err(CoreError::Invalid(format!(
                "max_age must be a number of seconds > 0 (or None), got {age}"
            )));
        }
    }
    Ok(())
}

/// Takes the store's lock (a file beside the active one), or says who has it.
fn lock_store(layout: &Layout) -> Result<File, CoreError> {
    let path = layout.lock_path();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| CoreError::io(format!("cannot open {}", path.display()), e))?;
    match lock_exclusive(&file) {
        Ok(true) => Ok(file),
        Ok(false) => Err(CoreError::Locked(layout.active.clone())),
        Err(e) => Err(CoreError::io(format!("cannot lock {}", path.display()), e)),
    }
}

/// Opens (creating if needed) the active segment for reading and writing.
fn open_active(path: &Path) -> Result<File, CoreError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| CoreError::io(format!("cannot open {}", path.display()), e))?;
    let is_file = file
        .metadata()
        .map_err(|e| CoreError::io(format!("cannot open {}", path.display()), e))?
        .is_file();
    if !is_file {
        return Err(CoreError::Invalid(format!(
            "{} is not a regular file; a store is a regular file",
            path.display()
        )));
    }
    Ok(file)
}

fn start_group(file: &File, interval: Duration, synced: u64) -> Result<GroupThread, CoreError> {
    let handle = file
        .try_clone()
        .map_err(|e| CoreError::io("cannot duplicate the log handle", e))?;
    GroupThread::start(handle, interval, synced)
        .map_err(|e| CoreError::io("cannot start the group-commit thread", e))
}

/// Pushes a recovered line into a ring, its keys compacted; false if it cannot be held
/// (counted as corrupt).
pub fn push_loaded(ring: &mut Ring, event: &LineEvent<'_, '_>) -> bool {
    let fields = fields_of(event.line);
    ring.push_compacted(
        event.seq,
        &fields,
        event.text,
        event.json[0].len(),
        event.json[1],
        &event.line.key_spans,
    )
    .is_ok()
}

pub fn fields_of<'a>(line: &'a ScannedLine<'_>) -> EventFields<'a> {
    EventFields {
        event_type: &line.event_type,
        stream_id: line.stream_id.as_deref(),
        actor: line.actor.as_deref(),
        correlation_id: line.correlation_id.as_deref(),
        timestamp: line.timestamp,
    }
}

/// A batch being written chunk by chunk (`Store::begin_batch`).
#[derive(Debug)]
pub struct ChunkedBatch {
    first: u64,
    /// The log's data length before the batch.
    start: u64,
    /// Each line written so far: its body's length and its whole length.
    lines: Vec<(usize, usize)>,
}

/// Most bytes of ring blocks asked for after a batch, for the next one (`append_many`): a guess
/// that no batch may come stays small (blocks made ahead are mapped memory, though only what the
/// growing ring would take anyway). Batches of 1,000 of the benchmark's events fill two 256 KiB
/// blocks.
const NEXT_BATCH_AHEAD_BYTES: usize = 2 << 20;

/// Bytes of a batch read back from the log at once.
const READ_BACK_PIECE: usize = 1 << 20;

/// Where the piece of `lines` (body and line lengths) that starts at `index` ends: at most
/// `READ_BACK_PIECE` bytes, but at least one line; a referenced line is a piece of its own.
fn piece_end(lines: &[(usize, usize)], index: usize) -> usize {
    if lines[index].0 >= REFERENCED_FROM {
        return index + 1;
    }
    let mut bytes = 0;
    let mut end = index;
    while end < lines.len()
        && lines[end].0 < REFERENCED_FROM
        && (end == index || bytes + lines[end].1 <= READ_BACK_PIECE)
    {
        bytes += lines[end].1;
        end += 1;
    }
    end
}

/// What the ring takes for an event whose body is `body_len` bytes: its record, or a reference.
fn held_len(body_len: usize) -> usize {
    if body_len >= REFERENCED_FROM {
        REFERENCE_LEN
    } else {
        body_len + 1
    }
}

/// The end of a line, `,"seq":N}\n`, built without allocating.
struct SeqSuffix {
    bytes: [u8; 32],
    len: usize,
}

impl SeqSuffix {
    fn new(seq: u64) -> Self {
        let mut suffix = Self {
            bytes: [0; 32],
            len: 0,
        };
        let mut digits = itoa::Buffer::new();
        for part in [&b",\"seq\":"[..], digits.format(seq).as_bytes(), b"}\n"] {
            suffix.bytes[suffix.len..suffix.len + part.len()].copy_from_slice(part);
            suffix.len += part.len();
        }
        suffix
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("oca-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("nested").join("events.jsonl")
    }

    fn fields(event_type: &str) -> EventFields<'_> {
        EventFields {
            event_type,
            stream_id: Some("s"),
            actor: Some("system"),
            correlation_id: None,
            timestamp: 5.0,
        }
    }

    fn options(cache: usize) -> StoreOptions {
        StoreOptions {
            max_cache_size: cache,
            retain: cache,
            ..StoreOptions::default()
        }
    }

    #[test]
    fn appends_lines_with_seq_and_reopens_with_increasing_seq() {
        let path = temp_path("reopen");
        {
            let mut store = Store::open(&path, options(10)).unwrap();
            assert_eq!(
                store
                    .append(br#"{"type":"a""#, &fields("a"), &KeySpans::default())
                    .unwrap(),
                1
            );
            assert_eq!(
                store
                    .append(br#"{"type":"b""#, &fields("b"), &KeySpans::default())
                    .unwrap(),
                2
            );
            assert_eq!(store.ring().get(0).unwrap().json, br#"{"type":"a"}"#);
            store.close().unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "{\"type\":\"a\",\"seq\":1}\n{\"type\":\"b\",\"seq\":2}\n"
        );
        let mut store = Store::open(&path, options(10)).unwrap();
        assert_eq!(store.recovery().events, 2);
        assert_eq!(
            store
                .append(br#"{"type":"c""#, &fields("c"), &KeySpans::default())
                .unwrap(),
            3
        );
    }

    #[test]
    fn reloaded_records_hold_their_known_keys_as_tokens() {
        let path = temp_path("tokens");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            "{\"type\":\"a\",\"payload\":{\"type\":1},\"x\":2,\"seq\":1}\n",
        )
        .unwrap();
        let store = Store::open(&path, options(5)).unwrap();
        assert_eq!(
            store.ring().get(0).unwrap().json,
            b"{\xf5\"a\",\xfa{\"type\":1},\"x\":2}"
        );
    }

    #[test]
    fn cache_keeps_the_newest() {
        let path = temp_path("cache");
        let mut store = Store::open(&path, options(3)).unwrap();
        for _ in 0..10 {
            store
                .append(br#"{"type":"a""#, &fields("a"), &KeySpans::default())
                .unwrap();
        }
        drop(store);
        let store = Store::open(&path, options(3)).unwrap();
        let seqs: Vec<u64> = (0..3).map(|i| store.ring().get(i).unwrap().seq).collect();
        assert_eq!(seqs, [8, 9, 10]);
        assert_eq!(store.recovery().events, 10);
    }

    #[test]
    fn second_writer_is_refused() {
        let path = temp_path("locked");
        let first = Store::open(&path, options(3)).unwrap();
        let err = Store::open(&path, options(3)).err().unwrap();
        assert!(matches!(err, CoreError::Locked(_)), "{err}");
        drop(first);
        assert!(Store::open(&path, options(3)).is_ok());
    }

    #[test]
    fn too_large_event_changes_nothing() {
        let path = temp_path("large");
        let opts = StoreOptions {
            max_event_bytes: 16,
            ..options(3)
        };
        let mut store = Store::open(&path, opts).unwrap();
        let err = store
            .append(
                br#"{"type":"aaaaaaaaaaaaaaaa""#,
                &fields("a"),
                &KeySpans::default(),
            )
            .unwrap_err();
        assert!(matches!(err, CoreError::TooLarge { .. }));
        assert_eq!(store.file_len(), 0);
        assert!(store.ring().is_empty());
        assert_eq!(store.next_seq(), 1);
    }

    #[test]
    fn torn_tail_is_cut_before_the_next_append() {
        let path = temp_path("torn");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "{\"type\":\"a\",\"seq\":1}\n{\"type\":\"b\",\"se").unwrap();
        let mut store = Store::open(&path, options(5)).unwrap();
        assert_eq!(
            store.recovery().torn_tail_bytes,
            "{\"type\":\"b\",\"se".len() as u64
        );
        store
            .append(br#"{"type":"c""#, &fields("c"), &KeySpans::default())
            .unwrap();
        drop(store);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "{\"type\":\"a\",\"seq\":1}\n{\"type\":\"c\",\"seq\":2}\n"
        );
    }

    #[test]
    fn valid_unterminated_tail_is_kept_and_terminated() {
        let path = temp_path("unterminated");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "{\"type\":\"a\"}").unwrap();
        let mut store = Store::open(&path, options(5)).unwrap();
        assert!(store.recovery().unterminated_last_line);
        store
            .append(br#"{"type":"c""#, &fields("c"), &KeySpans::default())
            .unwrap();
        drop(store);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"type\":\"a\"}\n{\"type\":\"c\",\"seq\":2}\n");
    }

    #[test]
    fn batches_get_consecutive_seqs() {
        let path = temp_path("batch");
        let mut store = Store::open(&path, options(5)).unwrap();

        let spans = KeySpans::default();
        let bodies: Vec<(&[u8], EventFields, &KeySpans)> = vec![
            (br#"{"type":"a""#, fields("a"), &spans),
            (br#"{"type":"b""#, fields("b"), &spans),
        ];
        assert_eq!(store.append_many(&bodies).unwrap(), 1);
        assert_eq!(store.append_many(&bodies).unwrap(), 3);
        assert_eq!(store.ring().len(), 4);
        store.close().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 4);
        assert!(text.ends_with("{\"type\":\"b\",\"seq\":4}\n"));
    }

    #[test]
    fn a_batch_has_the_blocks_of_the_next_one_made_while_that_one_is_encoded() {
        let path = temp_path("next-blocks");
        let mut store = Store::open(&path, options(100_000)).unwrap();
        let body = format!("{{\"type\":\"a\",\"text\":\"{}\"", "x".repeat(500));
        let spans = KeySpans::default();
        let batch: Vec<(&[u8], EventFields, &KeySpans)> = (0..1_000)
            .map(|_| (body.as_bytes(), fields("a"), &spans))
            .collect();
        store.append_many(&batch).unwrap();
        // 1,000 records of about 520 bytes fill two 256 KiB blocks, less the open one's room:
        // the push that opens a block asks for one more, the batch for all it would open.
        assert!(
            store.ring().blocks_asked_for() >= 2,
            "{} blocks asked for the next batch",
            store.ring().blocks_asked_for()
        );
        // After a batch of 5 MB, no more than NEXT_BATCH_AHEAD_BYTES (eight blocks) are asked
        // for on the guess that another comes.
        let large: Vec<(&[u8], EventFields, &KeySpans)> = (0..10_000)
            .map(|_| (body.as_bytes(), fields("a"), &spans))
            .collect();
        store.append_many(&large).unwrap();
        let asked = store.ring().blocks_asked_for();
        assert!((2..=8).contains(&asked), "{asked} blocks asked for");
        store.close().unwrap();
    }

    /// A store at `path` (cache 100) holding one event, seq 1.
    fn store_holding_one(path: &Path) -> Store {
        store_of_one(path, 100)
    }

    /// A store at `path` with a cache of `cache` events holding one event, seq 1.
    fn store_of_one(path: &Path, cache: usize) -> Store {
        let mut store = Store::open(path, options(cache)).unwrap();
        store
            .append(br#"{"type":"a""#, &fields("a"), &KeySpans::default())
            .unwrap();
        store
    }

    /// A chunked batch of two small lines, written and not finished.
    fn two_lines_written(store: &mut Store) -> ChunkedBatch {
        let mut batch = store.begin_batch(2, 100).unwrap();
        let body: &[u8] = br#"{"type":"b""#;
        store.write_chunk(&mut batch, &[body, body]).unwrap();
        batch
    }

    /// The ring's records, as JSON text.
    fn held(store: &Store) -> Vec<String> {
        let ring = store.ring();
        (0..ring.len())
            .map(|i| String::from_utf8(ring.get(i).unwrap().json.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn a_batch_written_in_chunks_is_held_once_every_chunk_is_written() {
        let path = temp_path("chunked");
        let mut store = store_holding_one(&path);
        // Bodies longer than a read-back piece, so the lines are read back in several.
        let long = format!(
            r#"{{"type":"b","text":"{}""#,
            "x".repeat(READ_BACK_PIECE / 3)
        );
        let bodies: Vec<&[u8]> = vec![br#"{"type":"b","n":1"#, long.as_bytes(), long.as_bytes()];
        let mut batch = store.begin_batch(5, 4 * long.len() as u64).unwrap();
        store.write_chunk(&mut batch, &bodies[..1]).unwrap();
        store.write_chunk(&mut batch, &bodies[1..]).unwrap();
        store.write_chunk(&mut batch, &bodies[..2]).unwrap();
        assert_eq!(batch.lines.len(), 5);
        assert_eq!(
            store.ring().len(),
            1,
            "nothing is held before the batch is finished"
        );
        let spans = KeySpans::default();
        let events = (0..5).map(|_| (fields("b"), &spans));
        let mut buffer = Vec::new();
        assert_eq!(store.finish_batch(batch, events, &mut buffer).unwrap(), 2);
        assert_eq!(store.next_seq(), 7);
        let expected: Vec<String> = [bodies[0], bodies[1], bodies[2], bodies[0], bodies[1]]
            .iter()
            .map(|body| format!("{}}}", std::str::from_utf8(body).unwrap()))
            .collect();
        assert_eq!(held(&store)[1..], expected[..]);
        assert!(
            buffer.len() <= READ_BACK_PIECE,
            "read back a piece at a time"
        );
        store.close().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6);
        assert_eq!(lines[1], r#"{"type":"b","n":1,"seq":2}"#);
        assert!(lines[5].ends_with(r#"xxx","seq":6}"#));
    }

    #[test]
    fn a_body_in_pieces_is_one_line_and_its_pieces_count_together_against_the_limit() {
        let path = temp_path("chunked-pieces");
        let mut store = store_holding_one(&path);
        let long = "y".repeat(REFERENCED_FROM);
        let text = format!(r#""{long}""#);
        let pieces: [&[u8]; 3] = [br#"{"type":"b","text":"#, text.as_bytes(), br#","n":2"#];
        let mut batch = store.begin_batch(1, 10_000).unwrap();
        store.write_chunk_in_pieces(&mut batch, &[&pieces]).unwrap();
        let spans = KeySpans::default();
        let events = std::iter::once((fields("b"), &spans));
        assert_eq!(
            store.finish_batch(batch, events, &mut Vec::new()).unwrap(),
            2
        );
        let whole = format!(r#"{{"type":"b","text":"{long}","n":2}}"#);
        assert_eq!(held(&store)[1..], [whole]);
        // Pieces each under the limit, together over it: refused, the batch blanked.
        let half = vec![b'x'; store.options.max_event_bytes / 2 + 1];
        let mut batch = store.begin_batch(1, 100).unwrap();
        let over: [&[u8]; 2] = [&half, &half];
        assert!(store.write_chunk_in_pieces(&mut batch, &[&over]).is_err());
        assert!(batch.lines.is_empty());
        store.close().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1],
            format!(r#"{{"type":"b","text":"{long}","n":2,"seq":2}}"#)
        );
        assert_eq!(lines.len(), 2);
    }

    #[test]
    fn an_aborted_batch_leaves_nothing_behind() {
        let path = temp_path("chunked-abort");
        let mut store = store_holding_one(&path);
        let mut batch = two_lines_written(&mut store);
        store.abort_batch(&mut batch);
        // A chunk that fails (an event over the size limit) aborts the batch itself.
        let mut batch = store.begin_batch(2, 100).unwrap();
        store.write_chunk(&mut batch, &[br#"{"type":"b""#]).unwrap();
        let huge = vec![b'x'; store.options.max_event_bytes + 1];
        assert!(store.write_chunk(&mut batch, &[&huge]).is_err());
        assert!(batch.lines.is_empty());
        assert_eq!((store.ring().len(), store.next_seq()), (1, 2));
        store
            .append(br#"{"type":"c""#, &fields("c"), &KeySpans::default())
            .unwrap();
        store.close().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "{\"type\":\"a\",\"seq\":1}\n{\"type\":\"c\",\"seq\":2}\n"
        );
    }

    #[test]
    fn a_batch_that_cannot_be_read_back_says_how_much_the_cache_took() {
        // Lines just under the referenced size (they are read back; referenced ones are not),
        // a batch of them written with pwritev (no mapping touches the range cut off below):
        // about 340 lines a read-back piece, three pieces.
        let long = format!(
            r#"{{"type":"b","text":"{}""#,
            "x".repeat(REFERENCED_FROM - 40)
        );
        let count = 2 * READ_BACK_PIECE / long.len() + 20;
        let bodies: Vec<&[u8]> = vec![long.as_bytes(); count];
        let spans = KeySpans::default();
        let events = || (0..count).map(|_| (fields("b"), &spans));
        let expected = (count * (long.len() + 32)) as u64;
        let cut = |path: &Path, at: u64| {
            let file = OpenOptions::new().write(true).open(path).unwrap();
            file.set_len(at).unwrap();
        };
        let mut buffer = Vec::new();

        // Nothing readable: the batch is blanked, as on any failure before the cache took it.
        let path = temp_path("read-back-none");
        let mut store = store_of_one(&path, 1_000);
        let mut batch = store.begin_batch(count as u64, expected).unwrap();
        store.write_chunk(&mut batch, &bodies).unwrap();
        let start = batch.start;
        cut(&path, start);
        let error = store
            .finish_batch(batch, events(), &mut buffer)
            .unwrap_err();
        assert!(matches!(error, CoreError::Io { .. }), "{error}");
        assert!(
            error.to_string().contains("cannot read a batch back"),
            "{error}"
        );
        assert_eq!((store.ring().len(), store.next_seq()), (1, 2));
        drop(store);

        // The first piece read, the second not: the lines are the file's, the cache has two.
        let path = temp_path("read-back-part");
        let mut store = store_of_one(&path, 1_000);
        let mut batch = store.begin_batch(count as u64, expected).unwrap();
        store.write_chunk(&mut batch, &bodies).unwrap();
        let first_piece = piece_end(&batch.lines, 0);
        assert!(first_piece > 1 && first_piece < count / 2, "{first_piece}");
        let second_piece = batch.start
            + batch.lines[..first_piece]
                .iter()
                .map(|l| l.1 as u64)
                .sum::<u64>();
        cut(&path, second_piece + 10);
        let error = store
            .finish_batch(batch, events(), &mut buffer)
            .unwrap_err();
        assert!(matches!(error, CoreError::Io { .. }), "{error}");
        let message = error.to_string();
        assert!(
            message.contains(&format!("seqs 2..={}", count + 1)),
            "{message}"
        );
        assert!(
            message.contains(&format!(
                "only its first {first_piece} events are in the cache"
            )),
            "{message}"
        );
        assert_eq!(
            (store.ring().len(), store.next_seq()),
            (first_piece + 1, count as u64 + 2)
        );
    }

    /// A body of `len` bytes (at least 20) of event type `t`, with text that tells it apart.
    fn body_of(t: &str, len: usize, mark: usize) -> String {
        let head = format!(r#"{{"type":"{t}","n":{mark},"text":""#);
        let fill: String = (0..len - head.len() - 1)
            .map(|i| char::from(b'a' + ((i + mark) % 26) as u8))
            .collect();
        format!("{head}{fill}\"")
    }

    #[test]
    fn large_events_are_referenced_in_the_log_and_read_back_alike() {
        let path = temp_path("referenced");
        let mut store = Store::open(&path, options(100)).unwrap();
        let sizes = [REFERENCED_FROM - 1, REFERENCED_FROM, 40_000, 30, 9_000];
        let bodies: Vec<String> = (0..sizes.len())
            .map(|i| body_of("t", sizes[i], i))
            .collect();
        // One at a time, as a batch written whole, and as a batch written in chunks.
        for body in &bodies {
            store
                .append(body.as_bytes(), &fields("t"), &KeySpans::default())
                .unwrap();
        }
        let spans = KeySpans::default();
        let whole: Vec<(&[u8], EventFields<'_>, &KeySpans)> = bodies
            .iter()
            .map(|b| (b.as_bytes(), fields("t"), &spans))
            .collect();
        store.append_many(&whole).unwrap();
        let mut batch = store.begin_batch(5, 60_000).unwrap();
        let parts: Vec<&[u8]> = bodies.iter().map(|b| b.as_bytes()).collect();
        store.write_chunk(&mut batch, &parts[..2]).unwrap();
        store.write_chunk(&mut batch, &parts[2..]).unwrap();
        let events = (0..5).map(|_| (fields("t"), &spans));
        store.finish_batch(batch, events, &mut Vec::new()).unwrap();

        let want: Vec<String> = (0..3)
            .flat_map(|_| bodies.iter().map(|b| format!("{b}}}")))
            .collect();
        assert_eq!(held(&store), want);
        let nbytes: usize = want.iter().map(String::len).sum();
        assert_eq!(store.ring().nbytes(), nbytes, "counted at full length");
        // Three of each five are references: the blocks hold far less than the JSON.
        assert!(
            store.ring().stored_bytes() < nbytes / 4,
            "{}",
            store.ring().stored_bytes()
        );
        let mut out = Vec::new();
        assert_eq!(store.ring().copy_to(7, &mut out).unwrap(), Some(8));
        assert_eq!(out, want[7].as_bytes());
        // Still read back after the store is closed (the ring keeps the file open).
        store.close().unwrap();
        assert_eq!(held(&store), want);
    }

    /// Paths of this process's open files that were deleted.
    fn deleted_open_files() -> Vec<String> {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .map(|target| target.to_string_lossy().into_owned())
            .filter(|target| target.ends_with(" (deleted)"))
            .collect()
    }

    #[test]
    fn references_into_segments_retention_deletes_are_copied_in_so_the_disk_is_freed() {
        let path = temp_path("referenced-retention");
        let store_dir = path.parent().unwrap().to_string_lossy().into_owned();
        let options = StoreOptions {
            max_segment_bytes: 64 << 10,
            max_disk_bytes: Some(200 << 10),
            max_event_bytes: 30_000,
            ..options(1_000)
        };
        let mut store = Store::open(&path, options).unwrap();
        let bodies: Vec<String> = (0..60).map(|i| body_of("t", 20_000, i)).collect();
        for body in &bodies {
            store
                .append(body.as_bytes(), &fields("t"), &KeySpans::default())
                .unwrap();
            store.keeper.wait_idle();
        }
        let stats = store.segment_stats();
        assert!(stats.keeper.segments_dropped > 0, "{stats:?}");
        // One more append looks at what the keeper removed.
        store
            .append(br#"{"type":"a""#, &fields("a"), &KeySpans::default())
            .unwrap();
        let pinned: Vec<String> = deleted_open_files()
            .into_iter()
            .filter(|f| f.starts_with(&store_dir))
            .collect();
        assert!(pinned.is_empty(), "deleted segments still open: {pinned:?}");
        // Every event is still held and reads back alike, copied in or referenced.
        let mut want: Vec<String> = bodies.iter().map(|b| format!("{b}}}")).collect();
        want.push(r#"{"type":"a"}"#.to_string());
        assert_eq!(held(&store), want);
        assert!(
            store.ring().heap_bytes() > 20_000,
            "the copied lines are counted"
        );
    }

    #[test]
    fn finishing_a_batch_with_too_few_header_fields_is_an_error() {
        let path = temp_path("chunked-fields");
        let mut store = store_holding_one(&path);
        let batch = two_lines_written(&mut store);
        let spans = KeySpans::default();
        let one = std::iter::once((fields("b"), &spans));
        let error = store.finish_batch(batch, one, &mut Vec::new()).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("header fields of 1 events for 2 lines"),
            "{error}"
        );
    }

    #[test]
    fn every_durability_mode_writes_and_syncs() {
        for mode in ["none", "flush", "fsync", "group"] {
            let path = temp_path(mode);
            let opts = StoreOptions {
                durability: Durability::parse(mode).unwrap(),
                ..options(5)
            };
            let mut store = Store::open(&path, opts).unwrap();
            store
                .append(br#"{"type":"a""#, &fields("a"), &KeySpans::default())
                .unwrap();
            store.sync().unwrap();
            store.close().unwrap();
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                "{\"type\":\"a\",\"seq\":1}\n",
                "{mode}"
            );
        }
        assert!(Durability::parse("always").is_err());
    }
}
