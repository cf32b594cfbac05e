//! `EventRing`'s Python methods: the in-memory bounded event history (its data is in `classes.rs`).

use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::args::{positive, query_from_kwargs};
use super::classes::{EventRing, RingHolder, RingState};
use super::encode::{as_dict, collect_dicts, encode_batch, encode_one, Encoded, FieldDefaults};
use super::errors::to_pyerr;
use super::locks::{lock, lock_for_batch, lock_for_event, with_scratch};
use super::view::{self, EventIterator, Source};
use crate::event::DEFAULT_MAX_EVENT_BYTES;
use crate::ring::Ring;
use crate::ring::{RingOptions, BLOCK_SIZE};

impl EventRing {
    fn push_encoded(&self, buffer: &[u8], encoded: &[Encoded<'_>]) -> PyResult<u64> {
        let mut copies = Vec::new();
        let (mut state, fields) = lock_for_batch(
            &self.state,
            encoded.iter().map(|e| &e.captured),
            &mut copies,
        );
        let mut start = 0;
        let mut records = Vec::with_capacity(encoded.len());
        for e in encoded {
            let json = &buffer[start..e.end];
            let held = e.captured.key_spans.compacted_len(json.len(), 0);
            state.ring.check_fits(held).map_err(to_pyerr)?;
            records.push((json, &e.captured.key_spans));
            start = e.end;
        }
        let first = state.next_seq;
        for ((json, spans), fields) in records.into_iter().zip(&fields) {
            let seq = state.next_seq;
            state
                .ring
                .push_compacted(seq, fields, json, json.len(), b"", spans)
                .map_err(to_pyerr)?;
            state.next_seq += 1;
        }
        Ok(first)
    }
}

#[pymethods]
impl EventRing {
    #[new]
    #[pyo3(signature = (capacity=100_000, *, max_bytes=None, max_event_bytes=DEFAULT_MAX_EVENT_BYTES as i64, compress=false, _block_bytes=BLOCK_SIZE as i64))]
    fn new(
        capacity: i64,
        max_bytes: Option<i64>,
        max_event_bytes: i64,
        compress: bool,
        _block_bytes: i64,
    ) -> PyResult<Self> {
        let capacity = positive(capacity, "capacity")?;
        let max_bytes = max_bytes.map(|b| positive(b, "max_bytes")).transpose()?;
        let max_event_bytes = positive(max_event_bytes, "max_event_bytes")?;
        // A standalone ring makes its own blocks: a helper thread per ring is not worth it for
        // the many small rings a program may hold (a store's ring has one).
        let options = RingOptions {
            compress,
            block_size: positive(_block_bytes, "_block_bytes")?,
        };
        let ring = Ring::with_options(capacity, max_bytes, options).map_err(to_pyerr)?;
        Ok(Self {
            state: Mutex::new(RingState { ring, next_seq: 1 }),
            max_event_bytes,
        })
    }

    /// Appends one event; returns its sequence number.
    fn append(&self, event: &Bound<'_, PyAny>) -> PyResult<u64> {
        let dict = as_dict(event)?;
        with_scratch(|buffer| {
            // SAFETY: `encode_one`'s contract: this frame keeps `dict` alive, the GIL is held,
            // and no Python code runs before `lock_for_event` (which copies the strings).
            let captured =
                unsafe { encode_one(&dict, buffer, self.max_event_bytes, &FieldDefaults::NONE) }?;
            buffer.push(b'}');
            let mut copy = None;
            let (mut state, fields) = lock_for_event(&self.state, &captured, &mut copy);
            let seq = state.next_seq;
            state
                .ring
                .push_compacted(seq, &fields, buffer, buffer.len(), b"", &captured.key_spans)
                .map_err(to_pyerr)?;
            state.next_seq += 1;
            Ok(seq)
        })
    }

    /// Appends a batch in one call; all or nothing. Returns how many were appended.
    fn extend(&self, events: &Bound<'_, PyAny>) -> PyResult<usize> {
        let dicts = collect_dicts(events)?;
        with_scratch(|buffer| {
            let encoded = encode_batch(
                &dicts,
                buffer,
                self.max_event_bytes,
                true,
                &FieldDefaults::NONE,
            )?;
            self.push_encoded(buffer, &encoded)?;
            Ok(encoded.len())
        })
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        self.with_ring(py, Ring::len)
    }

    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        view::get_item(self, py, usize::MAX, key)
    }

    fn __iter__(slf: Bound<'_, Self>) -> PyResult<EventIterator> {
        EventIterator::start(slf.py(), Source::Ring(slf.unbind()), usize::MAX)
    }

    #[getter]
    fn capacity(&self, py: Python<'_>) -> PyResult<usize> {
        self.with_ring(py, Ring::capacity)
    }

    #[getter]
    fn max_bytes(&self, py: Python<'_>) -> PyResult<Option<usize>> {
        self.with_ring(py, Ring::max_bytes)
    }

    #[getter]
    fn max_event_bytes(&self) -> usize {
        self.max_event_bytes
    }

    /// Exact bytes of event JSON held.
    #[getter]
    fn nbytes(&self, py: Python<'_>) -> PyResult<usize> {
        self.with_ring(py, Ring::nbytes)
    }

    /// Events evicted so far.
    #[getter]
    fn evicted(&self, py: Python<'_>) -> PyResult<u64> {
        self.with_ring(py, Ring::evicted)
    }

    /// Bytes of memory the ring has reserved (blocks, headers, indexes, interned strings).
    #[getter]
    fn memory_bytes(&self, py: Python<'_>) -> PyResult<usize> {
        self.with_ring(py, Ring::heap_bytes)
    }

    /// Whether sealed blocks are compressed.
    #[getter]
    fn compress(&self, py: Python<'_>) -> PyResult<bool> {
        self.with_ring(py, Ring::compresses)
    }

    /// Bytes the blocks hold (compressed blocks at their compressed size); about `nbytes` without
    /// compression.
    #[getter]
    fn stored_bytes(&self, py: Python<'_>) -> PyResult<usize> {
        self.with_ring(py, Ring::stored_bytes)
    }

    /// Sealed blocks waiting for the background compressor.
    #[getter]
    fn queued_blocks(&self, py: Python<'_>) -> PyResult<usize> {
        self.with_ring(py, Ring::queued_blocks)
    }

    /// Compresses now, in this thread, every sealed block still waiting for the background
    /// compressor; returns how many it compressed.
    fn compress_pending(&self, py: Python<'_>) -> usize {
        let mut state = lock(&self.state, || {});
        let ring = &mut state.ring;
        py.detach(|| ring.compress_pending())
    }

    fn clear(&self) {
        lock(&self.state, || {}).ring.clear();
    }

    fn to_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        view::to_list(self, py, usize::MAX)
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
        view::query(self, py, usize::MAX, &q)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        self.with_ring(py, |ring| {
            format!(
                "<EventRing {} of {} events, {} bytes, {} evicted>",
                ring.len(),
                ring.capacity(),
                ring.nbytes(),
                ring.evicted()
            )
        })
    }
}
