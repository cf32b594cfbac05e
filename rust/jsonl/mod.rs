//! JsonlStore: the append-only JSONL event file with a bounded cache of the newest events.
//!
//! One compact JSON object per line, `\n`-terminated, each with a `seq` that keeps increasing
//! across restarts. The cache is a [`Ring`]; in memory a record is the event without its `seq`
//! member (the header has it), on disk the line ends with `,"seq":N}`.

mod collect;
#[cfg(test)]
mod damage_tests;
mod group;
mod log;
pub mod recovery;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use collect::Collector;
pub use collect::{CollectSpec, OpenClose};
pub use group::GroupSync;
use group::GroupThread;
use log::{lock_exclusive, MappedLog};
pub use recovery::{scan, LineEvent, RecoveryReport, ScanOutcome};

use crate::event::{CoreError, EventFields, DEFAULT_MAX_EVENT_BYTES, MAX_SEQ};
use crate::fork;
use crate::json::ScannedLine;
use crate::keys::{KeySpans, MAX_PARTS};
use crate::ring::{Ring, RingOptions};

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
    /// Events to keep aside while opening (from the whole file, not only the newest), so a
    /// caller can rebuild projections such as pending checkpoints without reading the file again.
    pub collect: CollectSpec,
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
            compress_history: false,
        }
    }
}

/// What a caller must still do after an append for its durability mode.
pub enum SyncNeed {
    Nothing,
    /// fsync this file (outside any lock, so other appenders are not held up).
    Fsync(Arc<File>),
}

pub struct Store {
    path: PathBuf,
    log: MappedLog,
    ring: Ring,
    next_seq: u64,
    options: StoreOptions,
    recovery: RecoveryReport,
    group: Option<GroupThread>,
    sync_file: Arc<File>,
    collected: Vec<(u64, Vec<u8>)>,
    /// The fork generation the store was opened in (see `fork.rs`).
    opened_in: u64,
}

impl Store {
    /// Opens (creating if needed) and locks `path`, recovers it and loads the newest events.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Self, CoreError> {
        validate(&options)?;
        let file = open_locked(path)?;
        let mut ring = Ring::with_options(
            options.retain.max(options.max_cache_size),
            None,
            RingOptions {
                compress: options.compress_history,
                ..RingOptions::default()
            },
        )?;
        let mut collector = Collector::new(&options.collect);
        let collecting = !options.collect.is_empty();
        let outcome = scan(&file, |event| {
            if collecting {
                collector.offer(event.seq, &event.line.event_type, event.text, event.json);
            }
            push_loaded(&mut ring, &event)
        })
        .map_err(|e| CoreError::io(format!("cannot read {}", path.display()), e))?;
        let collected = collector.finish();
        let sync_file = Arc::new(
            file.try_clone()
                .map_err(|e| CoreError::io("cannot duplicate the log handle", e))?,
        );
        let mut log = MappedLog::new(file, outcome.data_end)?;
        if outcome.needs_newline {
            log.append(&[b"\n"])?;
        }
        let last_seq = outcome.report.last_seq;
        let group = match options.durability {
            Durability::Group => Some(start_group(&sync_file, options.group_interval, last_seq)?),
            _ => None,
        };
        Ok(Self {
            path: path.to_path_buf(),
            log,
            ring,
            next_seq: last_seq + 1,
            options,
            recovery: outcome.report,
            group,
            sync_file,
            collected,
            opened_in: fork::generation(),
        })
    }

    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// The events of `collect_types` found while opening, in file order (taken once).
    pub fn take_collected(&mut self) -> Vec<(u64, Vec<u8>)> {
        std::mem::take(&mut self.collected)
    }

    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    pub fn ring_mut(&mut self) -> &mut Ring {
        &mut self.ring
    }

    /// Bytes of data in the file.
    pub fn file_len(&self) -> u64 {
        self.log.data_len()
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
        let seq = self.next_seq;
        self.log
            .append(&[body, SeqSuffix::new(seq).as_bytes()])
            .map_err(|e| e.in_file(&self.path))?;
        self.hold(seq, body, fields, spans)?;
        self.finish_append(seq);
        Ok(seq)
    }

    /// Puts an appended event into the ring, its known keys compacted.
    fn hold(
        &mut self,
        seq: u64,
        body: &[u8],
        fields: &EventFields<'_>,
        spans: &KeySpans,
    ) -> Result<(), CoreError> {
        let mut held = [&b""[..]; MAX_PARTS];
        let count = spans.compact(body, body.len(), b"}", &mut held);
        // Cannot fail: the size was checked and the cache has no byte limit.
        self.ring.push(seq, fields, &held[..count])
    }

    fn finish_append(&mut self, last_seq: u64) {
        self.next_seq = last_seq + 1;
        if let Some(group) = &self.group {
            group.shared().mark_written(last_seq);
        }
    }

    /// Appends a batch atomically (all lines reach the file, or none); returns the first seq.
    /// Each event comes with the spans of its tokenizable keys (offsets in its body).
    pub fn append_many(
        &mut self,
        events: &[(&[u8], EventFields<'_>, KeySpans)],
    ) -> Result<u64, CoreError> {
        self.check_process()?;
        self.check_seqs_left(events.len() as u64)?;
        for (body, _, _) in events {
            self.check_size(body.len() + 1)?;
        }
        let first = self.next_seq;
        let suffixes: Vec<SeqSuffix> = (0..events.len() as u64)
            .map(|i| SeqSuffix::new(first + i))
            .collect();
        let mut parts: Vec<&[u8]> = Vec::with_capacity(events.len() * 2);
        for ((body, _, _), suffix) in events.iter().zip(&suffixes) {
            parts.push(body);
            parts.push(suffix.as_bytes());
        }
        self.log.append(&parts).map_err(|e| e.in_file(&self.path))?;
        for (offset, (body, fields, spans)) in events.iter().enumerate() {
            self.hold(first + offset as u64, body, fields, spans)?;
        }
        if !events.is_empty() {
            self.finish_append(first + events.len() as u64 - 1);
        }
        Ok(first)
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

    /// The file handle a full `sync` fsyncs, and (in group mode) the group to wait on.
    pub fn sync_handles(&self) -> Result<SyncHandles, CoreError> {
        self.check_process()?;
        let group = self
            .group
            .as_ref()
            .map(|g| (Arc::clone(g.shared()), self.next_seq - 1));
        Ok((Arc::clone(&self.sync_file), group))
    }

    /// Everything appended so far is on disk when this returns.
    pub fn sync(&self) -> Result<(), CoreError> {
        let (file, group) = self.sync_handles()?;
        sync_now(&file, group)
    }

    /// Trims the file to its data, syncs (except in "none" and "flush" modes) and stops the
    /// group thread. The store must not be used afterwards.
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

/// What `sync` needs, taken out of the store so the wait can happen outside its lock: the
/// file to fsync, and in group mode the group thread to wait on with the seq to reach.
pub type SyncHandles = (Arc<File>, Option<(Arc<GroupSync>, u64)>);

/// fsyncs `file`, or waits for the group thread to cover `seq`.
pub fn sync_now(file: &File, group: Option<(Arc<GroupSync>, u64)>) -> Result<(), CoreError> {
    match group {
        Some((group, seq)) => group
            .wait(seq)
            .map_err(|message| CoreError::io(message, std::io::Error::other("fsync"))),
        None => file
            .sync_data()
            .map_err(|e| CoreError::io("cannot fsync the log", e)),
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
    Ok(())
}

fn open_locked(path: &Path) -> Result<File, CoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            CoreError::io(format!("cannot create directory {}", parent.display()), e)
        })?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| CoreError::io(format!("cannot open {}", path.display()), e))?;
    match lock_exclusive(&file) {
        Ok(true) => Ok(file),
        Ok(false) => Err(CoreError::Locked(path.to_path_buf())),
        Err(e) => Err(CoreError::io(format!("cannot lock {}", path.display()), e)),
    }
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
    let mut parts = [&b""[..]; MAX_PARTS];
    let count =
        event
            .line
            .key_spans
            .compact(event.text, event.json[0].len(), event.json[1], &mut parts);
    ring.push(event.seq, &fields, &parts[..count]).is_ok()
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
        let bodies: Vec<(&[u8], EventFields, KeySpans)> = vec![
            (br#"{"type":"a""#, fields("a"), spans),
            (br#"{"type":"b""#, fields("b"), spans),
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
