//! Read access shared by EventRing, JsonlStore and their views: length, indexing, iteration and
//! queries over the newest `window` records of a ring.
//!
//! Matching records are copied out under the lock and decoded after it is released, so building
//! Python objects (which can run arbitrary code through the garbage collector) never happens while
//! a lock is held.

use pyo3::exceptions::{PyIndexError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PySlice};

use super::args::{query_from_kwargs, QueryArgs};
use super::classes::{EventRing, JsonlStore, RingHolder};
use super::decode::Copied;
use super::errors::to_pyerr;
use crate::ring::Ring;

/// Index of the first record of the window.
fn window_start(ring: &Ring, window: usize) -> usize {
    ring.len().saturating_sub(window)
}

pub(crate) fn view_len(ring: &Ring, window: usize) -> usize {
    ring.len().min(window)
}

pub(crate) fn query<'py, H: RingHolder>(
    holder: &H,
    py: Python<'py>,
    window: usize,
    args: &QueryArgs,
) -> PyResult<Bound<'py, PyList>> {
    let copied = holder
        .with_ring(py, |ring| {
            Copied::from_ring(ring, ring.select(&args.query, window))
        })?
        .map_err(to_pyerr)?;
    copied.into_py(py, args.raw)
}

pub(crate) fn to_list<'py, H: RingHolder>(
    holder: &H,
    py: Python<'py>,
    window: usize,
) -> PyResult<Bound<'py, PyList>> {
    let copied = holder
        .with_ring(py, |ring| {
            Copied::from_ring(ring, window_start(ring, window)..ring.len())
        })?
        .map_err(to_pyerr)?;
    copied.into_list(py)
}

/// `view[i]` (negative counts from the newest) or `view[a:b:c]` (a list).
pub(crate) fn get_item<'py, H: RingHolder>(
    holder: &H,
    py: Python<'py>,
    window: usize,
    key: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    if let Ok(slice) = key.cast::<PySlice>() {
        // The bounds' __index__ is Python code: resolve them before taking the lock.
        let length = holder.with_ring(py, |ring| view_len(ring, window))?;
        let bounds = slice.indices(length as isize)?;
        let copied = holder
            .with_ring(py, |ring| {
                // Events may have come or gone meanwhile: the slice is taken of the view as it
                // is now, and positions past its end are skipped.
                let start = window_start(ring, window) as isize;
                let picks = (0..bounds.slicelength)
                    .map(|k| start + bounds.start + k as isize * bounds.step)
                    .filter(|&at| at >= 0)
                    .map(|at| at as usize);
                Copied::from_ring(ring, picks)
            })?
            .map_err(to_pyerr)?;
        return Ok(copied.into_list(py)?.into_any());
    }
    let index: isize = key
        .extract()
        .map_err(|_| PyTypeError::new_err("event indexes must be integers or slices"))?;
    let copied = holder
        .with_ring(py, |ring| {
            let length = view_len(ring, window) as isize;
            let position = if index < 0 { index + length } else { index };
            if position < 0 || position >= length {
                return Ok(Copied::default());
            }
            Copied::from_ring(ring, [window_start(ring, window) + position as usize])
        })?
        .map_err(to_pyerr)?;
    copied
        .into_single(py)?
        .ok_or_else(|| PyIndexError::new_err(format!("event index {index} out of range")))
}

/// Which object an iterator or view reads from.
pub(crate) enum Source {
    Ring(Py<EventRing>),
    Store(Py<JsonlStore>),
}

impl Source {
    fn clone_ref(&self, py: Python<'_>) -> Self {
        match self {
            Source::Ring(ring) => Source::Ring(ring.clone_ref(py)),
            Source::Store(store) => Source::Store(store.clone_ref(py)),
        }
    }
}

impl RingHolder for Source {
    fn with_ring<R>(&self, py: Python<'_>, f: impl FnOnce(&Ring) -> R) -> PyResult<R> {
        match self {
            Source::Ring(ring) => ring.get().with_ring(py, f),
            Source::Store(store) => store.get().with_ring(py, f),
        }
    }
}

/// A read-only, live sequence view of the newest events (no copy of the events is made).
#[pyclass(frozen, module = "opencode_addons._core", sequence)]
pub struct EventView {
    source: Source,
    window: usize,
}

impl EventView {
    pub(crate) fn new(source: Source, window: usize) -> Self {
        Self { source, window }
    }
}

#[pymethods]
impl EventView {
    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        self.source
            .with_ring(py, |ring| view_len(ring, self.window))
    }

    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        get_item(&self.source, py, self.window, key)
    }

    fn __iter__(&self, py: Python<'_>) -> PyResult<EventIterator> {
        EventIterator::start(py, self.source.clone_ref(py), self.window)
    }

    /// How many events the view holds at most.
    #[getter]
    fn window(&self) -> usize {
        self.window
    }

    fn to_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        to_list(&self.source, py, self.window)
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
        query(&self.source, py, self.window, &q)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let length = self.__len__(py)?;
        Ok(format!(
            "<EventView of {length} events (window {})>",
            self.window
        ))
    }
}

/// Iterates oldest-first over the events held when iteration started; events evicted meanwhile
/// are skipped, events appended meanwhile are not included.
#[pyclass(module = "opencode_addons._core")]
pub struct EventIterator {
    source: Source,
    window: usize,
    next_absolute: u64,
    end_absolute: u64,
}

impl EventIterator {
    pub(crate) fn start(py: Python<'_>, source: Source, window: usize) -> PyResult<Self> {
        let (first, end) = source.with_ring(py, |ring| {
            let end = ring.first_absolute() + ring.len() as u64;
            (end - view_len(ring, window) as u64, end)
        })?;
        Ok(Self {
            source,
            window,
            next_absolute: first,
            end_absolute: end,
        })
    }
}

#[pymethods]
impl EventIterator {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let (window, wanted, end) = (self.window, self.next_absolute, self.end_absolute);
        let (copied, taken) = self.source.with_ring(py, |ring| {
            let base = ring.first_absolute();
            let oldest_in_window = base + window_start(ring, window) as u64;
            let at = wanted.max(oldest_in_window);
            if at >= end || at >= base + ring.len() as u64 {
                return (Ok(Copied::default()), end);
            }
            (Copied::from_ring(ring, [(at - base) as usize]), at + 1)
        })?;
        self.next_absolute = taken;
        copied.map_err(to_pyerr)?.into_single(py)
    }
}
