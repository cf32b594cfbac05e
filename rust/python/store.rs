//! `JsonlStore`'s Python methods: the durable JSONL event file with its bounded cache (its data
//! is in `classes.rs`).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyRange, PyString};
use pyo3::PyTypeInfo;

use super::args::{positive, query_from_kwargs};
use super::chunked::ChunkWriter;
use super::classes::{closed, DefaultObjects, JsonlStore, RingHolder, SegmentSettings};
use super::decode::record_to_dict;
use super::encode::{
    as_dict, collect_dicts, encode_batch_part, encode_one, Captured, Encoded, FieldDefaults,
};
use super::errors::{to_pyerr, StoreWriteError};
use super::locks::{lock, lock_for_batch, lock_for_event, with_scratch};
use super::report::add_recovery;
use super::view::{self, EventIterator, EventView, Source};
use crate::event::DEFAULT_MAX_EVENT_BYTES;
use crate::jsonl::{
    sync_now, CollectSpec, Durability, OpenClose, SegmentStats, Store, StoreOptions, SyncNeed,
    DEFAULT_MAX_DISK_BYTES, DEFAULT_MAX_SEGMENT_BYTES,
};

impl JsonlStore {
    /// `append`, for the other native callers (`StreamAppender`).
    pub(crate) fn append_event<'py>(
        &self,
        event: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let (dict, seq, generated) = self.store_event(event)?;
        stored_copy(&dict, seq, generated, &self.default_objects)
    }

    /// Stores one event: the caller's dict, its seq and what the store filled in.
    fn store_event<'py>(
        &self,
        event: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyDict>, u64, Generated)> {
        let py = event.py();
        let dict = as_dict(event)?;
        let (seq, generated, need) =
            with_scratch(|buffer| -> PyResult<(u64, Generated, SyncNeed)> {
                // SAFETY: `encode_one`'s contract: this frame keeps `dict` alive, the GIL is held,
                // and no Python code runs before `lock_for_event` (which copies the strings).
                let captured =
                    unsafe { encode_one(&dict, buffer, self.max_event_bytes, &self.defaults) }?;
                let mut copy = None;
                let (mut guard, fields) = lock_for_event(&self.store, &captured, &mut copy);
                let store = guard.as_mut().ok_or_else(|| closed(&self.path))?;
                let seq = store
                    .append(buffer, &fields, &captured.key_spans)
                    .map_err(to_pyerr)?;
                Ok((seq, Generated::of(&captured), store.sync_need()))
            })?;
        self.wait_durable(py, need)?;
        Ok((dict, seq, generated))
    }

    /// Writes a batch; returns the first seq. Only Rust work happens under the lock.
    fn write(
        &self,
        py: Python<'_>,
        events: &[Bound<'_, PyDict>],
    ) -> PyResult<(u64, Vec<Generated>)> {
        let (first, generated, need) =
            with_scratch(|buffer| -> PyResult<(u64, Vec<Generated>, SyncNeed)> {
                let encoded = encode_batch_part::<false>(
                    events,
                    0,
                    WHOLE_BATCH_BYTES,
                    buffer,
                    self.max_event_bytes,
                    false,
                    &self.defaults,
                )?;
                if encoded.len() < events.len() {
                    return self.write_in_chunks(events, encoded, buffer);
                }
                let mut copies = Vec::new();
                let (mut guard, fields) = lock_for_batch(
                    &self.store,
                    encoded.iter().map(|e| &e.captured),
                    &mut copies,
                );
                let store = guard.as_mut().ok_or_else(|| closed(&self.path))?;
                let mut start = 0;
                let mut batch = Vec::with_capacity(encoded.len());
                for (e, f) in encoded.iter().zip(fields) {
                    batch.push((&buffer[start..e.end], f, &e.captured.key_spans));
                    start = e.end;
                }
                let first = store.append_many(&batch).map_err(to_pyerr)?;
                let generated = encoded.iter().map(|e| Generated::of(&e.captured)).collect();
                Ok((first, generated, store.sync_need()))
            })?;
        self.wait_durable(py, need)?;
        Ok((first, generated))
    }

    /// Writes a batch whose first `head.len()` events (in `buffer`) reached `WHOLE_BATCH_BYTES`:
    /// the rest is encoded and written a chunk at a time under the store's lock, and the cache
    /// takes the batch, read back from the file, once every chunk is written. Encoding a large
    /// batch whole first took fresh memory for all of it (a fault per page, 1-2 us each on this
    /// VM) and left the file and the cache to copy it from main memory: with 40 KiB tool outputs,
    /// `extend` of 1,000 ran at 0.6x the rate of `append`. The chunks' long strings are escaped
    /// on a helper thread (`chunked.rs`). An event that fails to encode, or a failed write,
    /// blanks what the batch wrote: it is stored whole or not at all.
    fn write_in_chunks<'a>(
        &'a self,
        events: &'a [Bound<'_, PyDict>],
        head: Vec<Encoded<'a>>,
        buffer: &mut Vec<u8>,
    ) -> PyResult<(u64, Vec<Generated>, SyncNeed)> {
        let mut copies = Vec::new();
        let (mut guard, head_fields) =
            lock_for_batch(&self.store, head.iter().map(|e| &e.captured), &mut copies);
        let store = guard.as_mut().ok_or_else(|| closed(&self.path))?;
        let expected = (buffer.len() as u64 / head.len() as u64 + LINE_OVERHEAD_ESTIMATE)
            * events.len() as u64;
        let mut batch = store
            .begin_batch(events.len() as u64, expected)
            .map_err(to_pyerr)?;
        store
            .write_chunk(&mut batch, &bodies(&head, buffer))
            .map_err(to_pyerr)?;
        // From here on the lock is held and the GIL is not released, so no Python code runs:
        // the strings the chunks' captured fields borrow, and the long strings escaped on the
        // helper thread, stay alive and unchanged without copies.
        let rest = std::thread::scope(|scope| {
            let mut chunks = ChunkWriter::new(
                events,
                self.max_event_bytes,
                &self.defaults,
                &mut *store,
                &mut batch,
            );
            chunks.write_rest(scope, head.len(), buffer)
        })?;
        let fields = head_fields
            .into_iter()
            .zip(head.iter().map(|e| &e.captured.key_spans))
            .chain(
                rest.iter()
                    .map(|e| (e.captured.fields(), &e.captured.key_spans)),
            );
        let first = store
            .finish_batch(batch, fields, buffer)
            .map_err(to_pyerr)?;
        let generated = head
            .iter()
            .chain(&rest)
            .map(|e| Generated::of(&e.captured))
            .collect();
        Ok((first, generated, store.sync_need()))
    }

    fn wait_durable(&self, py: Python<'_>, need: SyncNeed) -> PyResult<()> {
        if let SyncNeed::Fsync(file) = need {
            py.detach(|| file.sync_data()).map_err(|e| {
                StoreWriteError::new_err(format!("the events were written but fsync failed: {e}"))
            })?;
        }
        Ok(())
    }
}

/// Encoded bytes of a batch written in one piece; a larger batch is written in chunks of about
/// `chunked::CHUNK_BYTES` (`write_in_chunks`). With it at 1 MiB, 1,000 tool outputs of 40 KiB ran at
/// 1.23-1.40x the hand-written baseline in chunks against 0.65x whole, and batches of 10 (400
/// KiB, whole) at 1.36x. Chunks cost small events: batches of 2.5-3.2 MB ran at 0.85-0.95x
/// the rate of the same batch written whole on the benchmark, short-string and OpenCode events
/// (1.02x on tiny ones; paired rounds, 7-11 pairs), so batches up to 2 MiB stay whole; with
/// the largest event (1 MiB by default) that still fits the encoding buffer kept between calls
/// (4 MiB), so no batch under the limit gets fresh memory.
const WHOLE_BATCH_BYTES: usize = 2 << 20;
/// A line's bytes beyond its body (`,"seq":N}` and the newline), rounded up, for estimating
/// a batch's size in the file before it is all encoded.
const LINE_OVERHEAD_ESTIMATE: u64 = 32;

/// The bodies of consecutive encoded events in `buffer` (the first starts at 0).
fn bodies<'b>(encoded: &[Encoded<'_>], buffer: &'b [u8]) -> Vec<&'b [u8]> {
    let mut start = 0;
    encoded
        .iter()
        .map(|e| {
            let body = &buffer[start..e.end];
            start = e.end;
            body
        })
        .collect()
}

/// `range(first, first + count)`: the seqs of a batch. Built from Python ints, which hold any
/// seq (`PyRange::new` takes `isize`, narrower than seqs on a 32-bit platform).
fn seq_range(py: Python<'_>, first: u64, count: usize) -> PyResult<Bound<'_, PyAny>> {
    PyRange::type_object(py).call1((first, first.saturating_add(count as u64)))
}

/// Runs `build` with Python's cyclic garbage collector off (if it was on). A batch's returned
/// events are a thousand new dicts: with the collector on, building them sets off collections
/// that walk every one of them (callgrind, `extend` per event: 470-560 instructions on the
/// benchmark, short-string and tiny events, 6-8% of it), although they cannot be in a cycle yet; most callers drop them, uncollected, soon after. No Python code
/// runs while they are built, so no other thread sees the collector off.
fn with_collector_paused<'py, T>(
    py: Python<'py>,
    build: impl FnOnce() -> PyResult<T>,
) -> PyResult<T> {
    static GC: pyo3::sync::PyOnceLock<(Py<PyAny>, Py<PyAny>, Py<PyAny>)> =
        pyo3::sync::PyOnceLock::new();
    let (is_enabled, disable, enable) = GC.get_or_try_init(py, || -> PyResult<_> {
        let gc = py.import("gc")?;
        Ok((
            gc.getattr("isenabled")?.unbind(),
            gc.getattr("disable")?.unbind(),
            gc.getattr("enable")?.unbind(),
        ))
    })?;
    if !is_enabled.call0(py)?.is_truthy(py)? {
        return build();
    }
    disable.call0(py)?;
    let resume = Resume { py, enable };
    let built = build();
    resume.now()?;
    built
}

/// Turns the collector back on: by `now`, or when dropped (if `build` panicked).
struct Resume<'a, 'py> {
    py: Python<'py>,
    enable: &'a Py<PyAny>,
}

impl Resume<'_, '_> {
    fn now(self) -> PyResult<()> {
        let resumed = self.enable.call0(self.py).map(drop);
        std::mem::forget(self);
        resumed
    }
}

impl Drop for Resume<'_, '_> {
    fn drop(&mut self) {
        // Only on a panic in `build`: the panic is what the caller sees, so an error here (there
        // is none to expect from gc.enable) has nowhere better to go.
        let _ = self.enable.call0(self.py);
    }
}

#[derive(Clone, Copy)]
struct Generated {
    id: Option<[u8; crate::event::EVENT_ID_LEN]>,
    timestamp: Option<i64>,
    actor: bool,
    correlation_id: bool,
}

impl Generated {
    fn of(captured: &Captured<'_>) -> Self {
        Self {
            id: captured.generated_id,
            timestamp: captured.generated_timestamp,
            actor: captured.defaulted_actor,
            correlation_id: captured.defaulted_correlation_id,
        }
    }
}

/// The caller's event as stored: a shallow copy with id, timestamp, defaults and seq filled in.
fn stored_copy<'py>(
    event: &Bound<'py, PyDict>,
    seq: u64,
    generated: Generated,
    defaults: &DefaultObjects,
) -> PyResult<Bound<'py, PyDict>> {
    let py = event.py();
    let copy = event.copy()?;
    if let Some(id) = generated.id {
        // SAFETY: `new_event_id` writes only base-36 digits, '_' and hex digits: ASCII, hence
        // valid UTF-8.
        copy.set_item(pyo3::intern!(py, "id"), unsafe {
            std::str::from_utf8_unchecked(&id)
        })?;
    }
    if let Some(timestamp) = generated.timestamp {
        copy.set_item(pyo3::intern!(py, "timestamp"), timestamp)?;
    }
    if let (true, Some(actor)) = (generated.actor, &defaults.actor) {
        copy.set_item(pyo3::intern!(py, "actor"), actor.bind(py))?;
    }
    if let (true, Some(correlation_id)) = (generated.correlation_id, &defaults.correlation_id) {
        copy.set_item(pyo3::intern!(py, "correlation_id"), correlation_id.bind(py))?;
    }
    copy.set_item(pyo3::intern!(py, "seq"), seq)?;
    Ok(copy)
}

/// The segment keys of `stats()`: files, bytes, what retention dropped and carried forward,
/// compression, and the settings.
fn add_segment_stats(
    dict: &Bound<'_, PyDict>,
    segments: &SegmentStats,
    settings: &SegmentSettings,
) -> PyResult<()> {
    let keeper = &segments.keeper;
    for (key, value) in [
        ("segments", segments.segments as u64),
        ("sealed_bytes", segments.sealed_bytes),
        ("disk_bytes", segments.sealed_bytes + segments.active_bytes),
        ("segments_sealed", segments.sealed),
        ("segments_dropped", keeper.segments_dropped),
        ("events_dropped", keeper.events_dropped),
        ("bytes_dropped", keeper.bytes_dropped),
        ("carried_forward", segments.carried_forward),
        ("segments_compressed", keeper.compressed_segments),
        ("compressed_input_bytes", keeper.compressed_in),
        ("compressed_output_bytes", keeper.compressed_out),
        ("compress_failures", keeper.compress_failures),
    ] {
        dict.set_item(key, value)?;
    }
    dict.set_item("compress_seconds", keeper.compress_seconds)?;
    dict.set_item("keeper_error", keeper.last_error.clone())?;
    dict.set_item("max_segment_bytes", settings.max_segment_bytes)?;
    dict.set_item("max_disk_bytes", settings.max_disk_bytes)?;
    dict.set_item("max_age", settings.max_age)?;
    dict.set_item("compress_sealed", settings.compress_sealed)?;
    Ok(())
}

/// A size setting in bytes: a positive int (the core checks how it relates to the others).
fn byte_setting(value: i64, name: &str) -> PyResult<u64> {
    u64::try_from(value).ok().filter(|&v| v > 0).ok_or_else(|| {
        pyo3::exceptions::PyValueError::new_err(format!(
            "{name} must be a positive number of bytes, got {value}"
        ))
    })
}

/// `(open_type, open_fields, close_types, close_fields)`, as Python passes it.
type PairSpec = (String, Vec<String>, Vec<String>, Vec<String>);

#[pymethods]
impl JsonlStore {
    #[new]
    #[pyo3(signature = (path, *, max_cache_size=50_000, durability="flush", max_event_bytes=DEFAULT_MAX_EVENT_BYTES as i64, history_size=None, collect_types=None, collect_pairs=None, group_interval_ms=5.0, default_actor=None, default_correlation_id=None, max_segment_bytes=DEFAULT_MAX_SEGMENT_BYTES as i64, max_disk_bytes=Some(DEFAULT_MAX_DISK_BYTES as i64), max_age=None, compress_sealed=false, compress_history=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        max_cache_size: i64,
        durability: &str,
        max_event_bytes: i64,
        history_size: Option<i64>,
        collect_types: Option<Vec<String>>,
        collect_pairs: Option<Vec<PairSpec>>,
        group_interval_ms: f64,
        default_actor: Option<String>,
        default_correlation_id: Option<String>,
        max_segment_bytes: i64,
        max_disk_bytes: Option<i64>,
        max_age: Option<f64>,
        compress_sealed: bool,
        compress_history: bool,
    ) -> PyResult<Self> {
        let max_cache_size = positive(max_cache_size, "max_cache_size")?;
        let history_size = history_size
            .map(|h| positive(h, "history_size"))
            .transpose()?
            .unwrap_or(max_cache_size);
        if !(group_interval_ms.is_finite()
            && group_interval_ms > 0.0
            && group_interval_ms <= 60_000.0)
        {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "group_interval_ms must be between 0 and 60000",
            ));
        }
        let options = StoreOptions {
            max_cache_size,
            retain: history_size,
            durability: Durability::parse(durability).map_err(to_pyerr)?,
            max_event_bytes: positive(max_event_bytes, "max_event_bytes")?,
            group_interval: Duration::from_secs_f64(group_interval_ms / 1000.0),
            collect: CollectSpec {
                types: collect_types.unwrap_or_default(),
                pairs: collect_pairs
                    .unwrap_or_default()
                    .into_iter()
                    .map(
                        |(open_type, open_fields, close_types, close_fields)| OpenClose {
                            open_type,
                            open_fields,
                            close_types,
                            close_fields,
                        },
                    )
                    .collect(),
            },
            max_segment_bytes: byte_setting(max_segment_bytes, "max_segment_bytes")?,
            max_disk_bytes: max_disk_bytes
                .map(|b| byte_setting(b, "max_disk_bytes"))
                .transpose()?,
            max_age,
            compress_sealed,
            compress_history,
        };
        let opened_path = path.clone();
        let durability = options.durability;
        let max_event_bytes = options.max_event_bytes;
        let settings = SegmentSettings {
            max_segment_bytes: options.max_segment_bytes,
            max_disk_bytes: options.max_disk_bytes,
            max_age: options.max_age,
            compress_sealed: options.compress_sealed,
        };
        let store = py
            .detach(move || Store::open(&opened_path, options))
            .map_err(to_pyerr)?;
        let recovery = store.recovery().clone();
        Ok(Self {
            store: Mutex::new(Some(store)),
            path,
            durability,
            max_cache_size,
            history_size,
            max_event_bytes,
            recovery,
            default_objects: DefaultObjects {
                actor: default_actor
                    .as_deref()
                    .map(|s| PyString::new(py, s).unbind()),
                correlation_id: default_correlation_id
                    .as_deref()
                    .map(|s| PyString::new(py, s).unbind()),
            },
            defaults: FieldDefaults {
                actor: default_actor,
                correlation_id: default_correlation_id,
            },
            segments: settings,
        })
    }

    /// Appends one event; returns it as stored (with id, timestamp and seq), or with
    /// `return_events=False` only its seq (no copy of the event is made). Pass the flag by
    /// position where speed matters: as a keyword its name is matched (about 350 instructions
    /// on the 3.10+ wheel, callgrind), and on 3.9's, whose calling convention builds a dict for
    /// any keyword, it costs about 1,000, about what the copy saves.
    #[pyo3(signature = (event, return_events=true))]
    fn append<'py>(
        &self,
        event: &Bound<'py, PyAny>,
        return_events: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        if return_events {
            return Ok(self.append_event(event)?.into_any());
        }
        let (_, seq, _) = self.store_event(event)?;
        Ok(seq.into_pyobject(event.py())?.into_any())
    }

    /// Appends a batch atomically (every line or none); returns the stored events, or with
    /// `return_events=False` only their seqs, as a `range` (no copies are made).
    #[pyo3(signature = (events, return_events=true))]
    fn extend<'py>(
        &self,
        py: Python<'py>,
        events: &Bound<'py, PyAny>,
        return_events: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let dicts = collect_dicts(events)?;
        if dicts.is_empty() {
            // Nothing to store, but a closed store still says so, as for any other batch.
            let next = lock(&self.store, || {})
                .as_ref()
                .ok_or_else(|| closed(&self.path))?
                .next_seq();
            if return_events {
                return Ok(PyList::empty(py).into_any());
            }
            // An empty range where the next seq will be, as a batch's range starts at its first.
            return seq_range(py, next, 0);
        }
        let (first, generated) = self.write(py, &dicts)?;
        if !return_events {
            return seq_range(py, first, dicts.len());
        }
        with_collector_paused(py, || {
            let stored = PyList::empty(py);
            for (offset, (dict, made)) in dicts.iter().zip(generated).enumerate() {
                stored.append(stored_copy(
                    dict,
                    first + offset as u64,
                    made,
                    &self.default_objects,
                )?)?;
            }
            Ok(stored.into_any())
        })
    }

    /// Everything appended so far is on disk when this returns.
    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        let handles = {
            let guard = lock(&self.store, || {});
            guard
                .as_ref()
                .ok_or_else(|| closed(&self.path))?
                .sync_handles()
                .map_err(to_pyerr)?
        };
        py.detach(move || sync_now(&handles.0, handles.1))
            .map_err(to_pyerr)
    }

    /// Trims the file, syncs (fsync and group modes) and releases the lock. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let taken = lock(&self.store, || {}).take();
        if let Some(mut store) = taken {
            py.detach(move || store.close()).map_err(to_pyerr)?;
        }
        Ok(())
    }

    /// Compresses now, in this thread, every sealed block of the cache still waiting for the
    /// background compressor; returns how many it compressed (0 without `compress_history`).
    fn compress_pending(&self, py: Python<'_>) -> PyResult<usize> {
        let mut guard = lock(&self.store, || {});
        let store = guard.as_mut().ok_or_else(|| closed(&self.path))?;
        let ring = store.ring_mut();
        Ok(py.detach(|| ring.compress_pending()))
    }

    #[getter]
    fn closed(&self) -> bool {
        lock(&self.store, || {}).is_none()
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        self.with_ring(py, |ring| view::view_len(ring, self.max_cache_size))
    }

    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        view::get_item(self, py, self.max_cache_size, key)
    }

    fn __iter__(slf: Bound<'_, Self>) -> PyResult<EventIterator> {
        let window = slf.get().max_cache_size;
        EventIterator::start(slf.py(), Source::Store(slf.unbind()), window)
    }

    /// The newest `history_size` events: a live, read-only view sharing the cache's records.
    #[getter]
    fn history(slf: Bound<'_, Self>) -> EventView {
        let window = slf.get().history_size;
        EventView::new(Source::Store(slf.unbind()), window)
    }

    fn to_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        view::to_list(self, py, self.max_cache_size)
    }

    /// Matching events; keywords: stream_id, type, actor, correlation_id, since, until,
    /// after_seq, limit, newest_first (see the stubs).
    #[pyo3(signature = (**filters))]
    fn query<'py>(
        &self,
        py: Python<'py>,
        filters: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let q = query_from_kwargs("query", filters)?;
        view::query(self, py, self.max_cache_size, &q)
    }

    /// Events found in the whole file when it was opened (taken once, in file order): every
    /// event of `collect_types`, and the opening events of `collect_pairs` that no closing
    /// event matched.
    fn collected<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let records = {
            let mut guard = lock(&self.store, || {});
            guard
                .as_mut()
                .ok_or_else(|| closed(&self.path))?
                .take_collected()
        };
        let list = PyList::empty(py);
        for (seq, json) in records {
            list.append(record_to_dict(py, &json, seq)?)?;
        }
        Ok(list)
    }

    /// Stops carrying forward the opening `item_id` of `open_type` (a `collect_pairs` opening)
    /// into new segments: the caller closed it without a closing event. True if it was open.
    fn forget_open(&self, open_type: &str, item_id: &str) -> PyResult<bool> {
        let mut guard = lock(&self.store, || {});
        let store = guard.as_mut().ok_or_else(|| closed(&self.path))?;
        Ok(store.forget_open(open_type, item_id))
    }

    /// What opening the file found: events, corrupt_lines, duplicate_lines, torn_tail_bytes,
    /// padding_bytes, unterminated_last_line, last_seq (see the stubs).
    #[getter]
    fn recovery<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        add_recovery(&dict, &self.recovery)?;
        Ok(dict)
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    #[getter]
    fn durability(&self) -> &'static str {
        self.durability.name()
    }

    #[getter]
    fn max_cache_size(&self) -> usize {
        self.max_cache_size
    }

    #[getter]
    fn history_size(&self) -> usize {
        self.history_size
    }

    #[getter]
    fn max_event_bytes(&self) -> usize {
        self.max_event_bytes
    }

    /// Counts and sizes: events (cache), history_events, nbytes (the held events' JSON),
    /// stored_bytes (what the cache's blocks take: an event of 4 KiB or more is a short
    /// reference to its line in the log), queued_blocks, memory_bytes, evicted, file_bytes,
    /// next_seq, durability, distinct_strings (the interned types, streams, actors and
    /// repeating correlation ids), compress_history.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (numbers, file_bytes, next_seq, segments, compress_history) = {
            let mut guard = lock(&self.store, || {});
            let store = guard.as_mut().ok_or_else(|| closed(&self.path))?;
            store.ring_mut().absorb();
            let ring = store.ring();
            let numbers = [
                ("events", view::view_len(ring, self.max_cache_size) as u64),
                (
                    "history_events",
                    view::view_len(ring, self.history_size) as u64,
                ),
                ("nbytes", ring.nbytes() as u64),
                ("stored_bytes", ring.stored_bytes() as u64),
                ("queued_blocks", ring.queued_blocks() as u64),
                ("memory_bytes", ring.heap_bytes() as u64),
                ("evicted", ring.evicted()),
                ("distinct_strings", ring.distinct_strings() as u64),
            ];
            (
                numbers,
                store.file_len(),
                store.next_seq(),
                store.segment_stats(),
                ring.compresses(),
            )
        };
        let dict = PyDict::new(py);
        for (key, value) in numbers {
            dict.set_item(key, value)?;
        }
        dict.set_item("file_bytes", file_bytes)?;
        dict.set_item("next_seq", next_seq)?;
        dict.set_item("durability", self.durability.name())?;
        dict.set_item("max_cache_size", self.max_cache_size)?;
        dict.set_item("history_size", self.history_size)?;
        add_segment_stats(&dict, &segments, &self.segments)?;
        dict.set_item("compress_history", compress_history)?;
        Ok(dict)
    }

    fn __repr__(&self) -> String {
        let state = if self.closed() {
            "closed"
        } else {
            self.durability.name()
        };
        format!("<JsonlStore {} ({state})>", self.path.display())
    }
}
