//! The keeper: a background thread that finishes what sealing starts, off the append path.
//!
//! For each sealed segment it makes the segment durable (fsync of the file and of the
//! directory), compresses the segment if asked, then applies retention: the oldest sealed
//! segments are deleted while the store's files are over budget or (with `max_age`) older than
//! allowed, by the `timestamp` of their newest (last) event (`Newest`: known when the segment
//! was sealed here, read from its last line for one found on opening; a reference-rotated file
//! goes by its modification time). Retention never deletes the active segment, nor the sealed
//! segments that the active one's snapshot does not yet make unneeded (`protected`).
//!
//! Deleting never loses what is still open: every segment made by sealing starts with a
//! snapshot of it (`snapshot.rs`), synced before any older segment is deleted. A sealed
//! segment's snapshot is synced with the segment, so deleting any but the newest sealed segment
//! needs nothing more; the active segment's snapshot is synced only when retention is about to
//! delete the newest sealed segment. Syncing the active segment at every seal wrote back the
//! window the log had just prepared, and the appender then took a write fault on each of its
//! pages again (`benches/segments.py`, the benchmark's events: appends with 4 MiB segments
//! 0.66-0.78x of one segment with that sync, 0.87x without).
//!
//! At most one sealed segment waits for the keeper: sealing the next one first waits for it
//! (`wait_idle`), so the files exceed the budget by at most about one segment however fast
//! events come.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::crash;
use super::segments::{self, Layout};

/// What the keeper enforces.
#[derive(Debug, Clone)]
pub struct KeeperConfig {
    pub layout: Layout,
    pub max_disk_bytes: Option<u64>,
    pub max_segment_bytes: u64,
    pub max_age: Option<Duration>,
    pub compress: bool,
}

/// How old a sealed segment is, for `max_age`: by its newest event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Newest {
    /// Not looked up yet (a segment found on opening): retention reads its last line when it
    /// needs to know (only with `max_age`, and only for the oldest segment).
    Unknown,
    /// The `timestamp` (epoch ms) of its newest (last) event.
    Event(f64),
    /// No event timestamp to go by (a reference-rotated file, or a last event without a
    /// `timestamp`): the file's modification time, if known.
    Modified(Option<SystemTime>),
}

impl Newest {
    /// The newest event's time, when `timestamp_ms` is a usable one (a finite epoch ms > 0).
    pub fn of_event(timestamp_ms: f64) -> Option<Self> {
        (timestamp_ms.is_finite() && timestamp_ms > 0.0).then_some(Self::Event(timestamp_ms))
    }

    /// Whether this is older than `age` now (a time in the future is not old).
    fn older_than(self, age: Duration) -> bool {
        match self {
            Self::Event(ms) => {
                let now_ms = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
                now_ms - ms > age.as_secs_f64() * 1000.0
            }
            Self::Modified(Some(modified)) => modified.elapsed().is_ok_and(|elapsed| elapsed > age),
            Self::Modified(None) | Self::Unknown => false,
        }
    }
}

/// A sealed (or reference-rotated) segment the keeper knows of.
#[derive(Debug, Clone)]
pub struct SealedSegment {
    pub path: PathBuf,
    /// None for a reference-rotated file (its events have no seq in its name).
    pub first_seq: Option<u64>,
    pub bytes: u64,
    /// Its newest event's time (what `max_age` goes by).
    pub newest: Newest,
    /// The file's modification time (what `newest` falls back to).
    pub modified: Option<SystemTime>,
    pub compressed: bool,
}

/// Counters of what the keeper did.
#[derive(Debug, Clone, Default)]
pub struct KeeperStats {
    pub segments_dropped: u64,
    pub events_dropped: u64,
    pub bytes_dropped: u64,
    pub compressed_segments: u64,
    /// Bytes of JSON lines compressed, and what they became.
    pub compressed_in: u64,
    pub compressed_out: u64,
    pub compress_seconds: f64,
    /// Times retention synced the active segment before deleting the newest sealed one.
    pub active_syncs: u64,
    pub compress_failures: u64,
    /// The last thing that went wrong (a failed fsync, compression or deletion), if any.
    pub last_error: Option<String>,
}

enum Job {
    /// A segment was sealed: make it durable, compress it.
    Sealed { first_seq: u64, file: Arc<File> },
    /// Apply retention (after opening).
    Retention,
}

struct State {
    /// Oldest first.
    sealed: VecDeque<SealedSegment>,
    /// The seq the active segment's first event has or will get.
    active_first_seq: u64,
    /// How many of the newest sealed segments retention must keep.
    protected: usize,
    jobs: VecDeque<Job>,
    busy: bool,
    stop: bool,
    /// Sealed files whose data may not be on disk yet (a `sync()` fsyncs them too).
    unsynced: Vec<Arc<File>>,
    /// The active segment, while its snapshot may not be on disk yet (flush and none modes,
    /// since the last seal): retention syncs it before deleting the newest sealed segment.
    unsynced_active: Option<Arc<File>>,
    stats: KeeperStats,
}

pub struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    idle: Condvar,
    active_bytes: AtomicU64,
    /// Segment files removed (by retention, or replaced by their compressed form).
    files_removed: AtomicU64,
    config: KeeperConfig,
}

pub struct Keeper {
    shared: Arc<Shared>,
    handle: Option<JoinHandle<()>>,
    started_in: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain bookkeeping: a panic elsewhere cannot leave it half-updated in a harmful way.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Keeper {
    pub fn start(
        config: KeeperConfig,
        sealed: Vec<SealedSegment>,
        active_first_seq: u64,
        protected: usize,
    ) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                sealed: sealed.into(),
                active_first_seq,
                protected,
                jobs: VecDeque::from([Job::Retention]),
                busy: false,
                stop: false,
                unsynced: Vec::new(),
                unsynced_active: None,
                stats: KeeperStats::default(),
            }),
            wake: Condvar::new(),
            idle: Condvar::new(),
            active_bytes: AtomicU64::new(0),
            files_removed: AtomicU64::new(0),
            config,
        });
        let worker = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("opencode-addons-segment-keeper".into())
            .spawn(move || run(&worker))?;
        Ok(Self {
            shared,
            handle: Some(handle),
            started_in: super::fork::generation(),
        })
    }

    /// The active segment now holds this many bytes (cheap; called after appends).
    pub fn set_active_bytes(&self, bytes: u64) {
        self.shared.active_bytes.store(bytes, Ordering::Relaxed);
    }

    /// How many segment files the keeper has removed so far.
    pub fn files_removed(&self) -> u64 {
        self.shared.files_removed.load(Ordering::Acquire)
    }

    /// Blocks until the keeper has nothing left to do.
    pub fn wait_idle(&self) {
        let mut state = self.shared.lock();
        while (state.busy || !state.jobs.is_empty()) && !state.stop {
            state = self
                .shared
                .idle
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Hands over a segment just sealed; `file` is its handle, `active` the new active segment's.
    /// `synced` says the sealed data and the new snapshot are already on disk (fsync and group
    /// modes).
    pub fn sealed(
        &self,
        segment: SealedSegment,
        file: Arc<File>,
        active: Arc<File>,
        synced: bool,
        next_first_seq: u64,
    ) {
        let mut state = self.shared.lock();
        let first_seq = segment.first_seq.unwrap_or(0);
        state.sealed.push_back(segment);
        state.active_first_seq = next_first_seq;
        state.protected = 0;
        if !synced {
            state.unsynced.push(Arc::clone(&file));
        }
        state.unsynced_active = (!synced).then_some(active);
        state.jobs.push_back(Job::Sealed { first_seq, file });
        self.shared.wake.notify_one();
    }

    /// Sealed files a full sync must fsync as well.
    pub fn unsynced(&self) -> Vec<Arc<File>> {
        self.shared.lock().unsynced.clone()
    }

    /// (sealed segments, their bytes, counters).
    pub fn stats(&self) -> (usize, u64, KeeperStats) {
        let state = self.shared.lock();
        let bytes = state.sealed.iter().map(|s| s.bytes).sum();
        (state.sealed.len(), bytes, state.stats.clone())
    }

    /// Finishes the pending work and stops the thread.
    pub fn stop(&mut self) {
        // In a fork child the lock may be held by a thread that does not exist there.
        if !super::fork::forked_since(self.started_in) {
            self.shared.lock().stop = true;
            self.shared.wake.notify_one();
        }
        super::fork::join_helper(self.handle.take(), self.started_in);
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(shared: &Shared) {
    // With max_age, retention also runs on a timer, so an idle store still drops old segments.
    let period = shared
        .config
        .max_age
        .map(|age| (age / 4).clamp(Duration::from_millis(50), Duration::from_secs(60)));
    loop {
        let job = {
            let mut state = shared.lock();
            loop {
                if let Some(job) = state.jobs.pop_front() {
                    state.busy = true;
                    break Some(job);
                }
                if state.stop {
                    break None;
                }
                match period {
                    Some(period) => {
                        let (next, timeout) = shared
                            .wake
                            .wait_timeout(state, period)
                            .unwrap_or_else(|p| p.into_inner());
                        state = next;
                        if timeout.timed_out() {
                            state.busy = true;
                            break Some(Job::Retention);
                        }
                    }
                    None => {
                        state = shared.wake.wait(state).unwrap_or_else(|p| p.into_inner());
                    }
                }
            }
        };
        let Some(job) = job else { break };
        if let Job::Sealed { first_seq, file } = job {
            finish_seal(shared, first_seq, file);
        }
        retention(shared);
        let mut state = shared.lock();
        state.busy = false;
        shared.idle.notify_all();
    }
    let mut state = shared.lock();
    state.busy = false;
    shared.idle.notify_all();
}

fn note_error(shared: &Shared, what: String) {
    shared.lock().stats.last_error = Some(what);
}

fn finish_seal(shared: &Shared, first_seq: u64, file: Arc<File>) {
    let config = &shared.config;
    let synced = file
        .sync_data()
        .and_then(|()| segments::sync_dir(&config.layout.dir));
    crash::point("keeper.synced");
    match synced {
        Ok(()) => shared.lock().unsynced.retain(|f| !Arc::ptr_eq(f, &file)),
        Err(e) => note_error(shared, format!("fsync of a sealed segment failed: {e}")),
    }
    // Closed before the plain file is replaced by its compressed copy, so that deleting it
    // frees its space at once (an open file keeps its blocks).
    drop(file);
    if config.compress {
        compress_segment(shared, first_seq);
    }
}

fn compress_segment(shared: &Shared, first_seq: u64) {
    let layout = &shared.config.layout;
    let plain = layout.sealed_path(first_seq, false);
    let temporary = layout.compressing_path(first_seq);
    let packed = layout.sealed_path(first_seq, true);
    let started = Instant::now();
    let result = (|| -> io::Result<(u64, u64, Option<SystemTime>)> {
        let source = File::open(&plain)?;
        let modified = source.metadata()?.modified().ok();
        let mut target = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temporary)?;
        let (read, written) = super::compress::compress(source, &mut target)?;
        if let Some(modified) = modified {
            // Kept, for the files whose age falls back to it (and for people listing them).
            let _ = target.set_modified(modified);
        }
        target.sync_all()?;
        crash::point("compress.written");
        std::fs::rename(&temporary, &packed)?;
        crash::point("compress.renamed");
        segments::sync_dir(&layout.dir)?;
        std::fs::remove_file(&plain)?;
        shared.files_removed.fetch_add(1, Ordering::Release);
        crash::point("compress.plain_removed");
        Ok((read, written, modified))
    })();
    let mut state = shared.lock();
    match result {
        Ok((read, written, _)) => {
            if let Some(segment) = state
                .sealed
                .iter_mut()
                .find(|s| s.first_seq == Some(first_seq))
            {
                segment.path = packed;
                segment.bytes = written;
                segment.compressed = true;
            }
            state.stats.compressed_segments += 1;
            state.stats.compressed_in += read;
            state.stats.compressed_out += written;
            state.stats.compress_seconds += started.elapsed().as_secs_f64();
        }
        Err(e) => {
            // The plain segment stays; it is complete and every reader reads it.
            drop(state);
            let _ = std::fs::remove_file(&temporary);
            let mut state = shared.lock();
            state.stats.compress_failures += 1;
            state.stats.last_error = Some(format!("cannot compress {}: {e}", plain.display()));
        }
    }
}

fn over_limits(shared: &Shared, state: &State) -> bool {
    let config = &shared.config;
    let Some(oldest) = state.sealed.front() else {
        return false;
    };
    let active = shared.active_bytes.load(Ordering::Relaxed);
    let total: u64 = state.sealed.iter().map(|s| s.bytes).sum::<u64>() + active;
    // Keep room for the active segment to fill up: the files stay within the budget until the
    // next seal, not only right after this one.
    let over_budget = config
        .max_disk_bytes
        .is_some_and(|budget| total > budget.saturating_sub(config.max_segment_bytes));
    let too_old = config
        .max_age
        .is_some_and(|age| oldest.newest.older_than(age));
    over_budget || too_old
}

/// With `max_age`, finds out how old the oldest sealed segment is if nobody knows yet (a
/// segment found on opening), reading its last line outside the lock.
fn learn_oldest_age(shared: &Shared) {
    if shared.config.max_age.is_none() {
        return;
    }
    let (path, compressed, modified) = {
        let state = shared.lock();
        match state.sealed.front() {
            Some(oldest) if oldest.newest == Newest::Unknown => {
                (oldest.path.clone(), oldest.compressed, oldest.modified)
            }
            _ => return,
        }
    };
    let newest = last_timestamp(&path, compressed)
        .ok()
        .flatten()
        .and_then(Newest::of_event)
        .unwrap_or(Newest::Modified(modified));
    let mut state = shared.lock();
    if let Some(oldest) = state.sealed.front_mut() {
        if oldest.path == path {
            oldest.newest = newest;
        }
    }
}

/// The `timestamp` of a segment's last event line (None if it has no whole event line, or the
/// line has no timestamp). A plain file is read backwards from its end; a compressed one is
/// decoded through (once per segment, in the keeper thread, only with `max_age`).
pub fn last_timestamp(path: &std::path::Path, compressed: bool) -> io::Result<Option<f64>> {
    let line = if compressed {
        last_line_of_stream(segments::reader_of(
            segments::open_for_reading(path)?,
            true,
        )?)?
    } else {
        last_line_of_file(&segments::open_for_reading(path)?)?
    };
    Ok(line.and_then(|line| {
        let scanned = crate::json::scan_event_line(&line).ok()?;
        (scanned.timestamp != 0.0).then_some(scanned.timestamp)
    }))
}

/// The last newline-terminated line of a file, without its newline (a torn or NUL tail after
/// it is skipped), reading backwards in growing steps.
fn last_line_of_file(file: &File) -> io::Result<Option<Vec<u8>>> {
    use std::os::unix::fs::FileExt;
    let size = file.metadata()?.len();
    let mut step = 64u64 << 10;
    loop {
        let start = size.saturating_sub(step);
        let mut tail = vec![0u8; (size - start) as usize];
        file.read_exact_at(&mut tail, start)?;
        let Some(end) = memchr::memrchr(b'\n', &tail) else {
            if start == 0 {
                return Ok(None);
            }
            step = step.saturating_mul(4);
            continue;
        };
        match memchr::memrchr(b'\n', &tail[..end]) {
            Some(before) => return Ok(Some(tail[before + 1..end].to_vec())),
            None if start == 0 => return Ok(Some(tail[..end].to_vec())),
            None => step = step.saturating_mul(4),
        }
    }
}

/// The last newline-terminated line of a stream, without its newline.
fn last_line_of_stream(reader: impl io::Read) -> io::Result<Option<Vec<u8>>> {
    use std::io::BufRead;
    let mut lines = io::BufReader::with_capacity(256 << 10, reader);
    let (mut line, mut last) = (Vec::new(), None::<Vec<u8>>);
    loop {
        line.clear();
        if lines.read_until(b'\n', &mut line)? == 0 || line.last() != Some(&b'\n') {
            return Ok(last);
        }
        line.pop();
        match &mut last {
            Some(kept) => {
                kept.clear();
                kept.extend_from_slice(&line);
            }
            None => last = Some(line.clone()),
        }
    }
}

fn retention(shared: &Shared) {
    let mut deleted = false;
    loop {
        learn_oldest_age(shared);
        let (path, first_seq, next_first_seq, bytes, unsynced_active) = {
            let state = shared.lock();
            if state.sealed.len() <= state.protected || !over_limits(shared, &state) {
                break;
            }
            let Some(oldest) = state.sealed.front() else {
                break;
            };
            let next = state
                .sealed
                .get(1)
                .and_then(|s| s.first_seq)
                .unwrap_or(state.active_first_seq);
            // The newest sealed segment is unneeded only once the active one's snapshot is on disk.
            let unsynced_active = match state.sealed.len() {
                1 => state.unsynced_active.clone(),
                _ => None,
            };
            (
                oldest.path.clone(),
                oldest.first_seq,
                next,
                oldest.bytes,
                unsynced_active,
            )
        };
        if let Some(active) = unsynced_active {
            if let Err(e) = sync_active(shared, &active) {
                note_error(shared, format!("fsync of the active segment failed: {e}"));
                break;
            }
        }
        let events = match first_seq {
            Some(first) => next_first_seq.saturating_sub(first),
            // A reference-rotated file: its events are its lines.
            None => count_lines(&path).unwrap_or(0),
        };
        crash::point("retention.delete");
        match std::fs::remove_file(&path) {
            Ok(()) => {
                shared.files_removed.fetch_add(1, Ordering::Release);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                note_error(shared, format!("cannot delete {}: {e}", path.display()));
                break;
            }
        }
        crash::point("retention.deleted");
        deleted = true;
        let mut state = shared.lock();
        if state.sealed.front().is_some_and(|s| s.path == path) {
            state.sealed.pop_front();
        }
        state.stats.segments_dropped += 1;
        state.stats.events_dropped += events;
        state.stats.bytes_dropped += bytes;
    }
    if deleted {
        if let Err(e) = segments::sync_dir(&shared.config.layout.dir) {
            note_error(shared, format!("cannot sync the store's directory: {e}"));
        }
    }
}

/// Puts the active segment's snapshot on disk (with whatever follows it by now).
fn sync_active(shared: &Shared, active: &Arc<File>) -> io::Result<()> {
    active.sync_data()?;
    crash::point("keeper.active_synced");
    let mut state = shared.lock();
    if state
        .unsynced_active
        .as_ref()
        .is_some_and(|a| Arc::ptr_eq(a, active))
    {
        state.unsynced_active = None;
    }
    state.stats.active_syncs += 1;
    Ok(())
}

fn count_lines(path: &std::path::Path) -> io::Result<u64> {
    use std::io::Read;
    let mut file = segments::open_for_reading(path)?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut lines = 0u64;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            return Ok(lines);
        }
        lines += memchr::memchr_iter(b'\n', &buffer[..read]).count() as u64;
    }
}
