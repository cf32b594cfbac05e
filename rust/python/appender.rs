//! `StreamAppender`: `DurableStream.append` without a Python frame for the common event.
//!
//! Every append of a `DurableStream` stores the event, then runs the projection of its type (if
//! it has one), notifies subscribers (if there are any) and looks after pending checkpoints (if
//! there are any). Most events need none of the three, and for them the Python method was
//! mostly interpreter overhead: a frame, attribute loads, a bound-method call into the store.
//! This callable does the store call and the three checks natively, on the stream's own
//! containers (shared, never copied: the stream changes them only in place), and calls back
//! into Python only when one of them has work.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::classes::JsonlStore;

/// `appender(event)`: `store.append(event)`, then `after(stored, projector)` if the stored
/// event's type has a projector in `projectors`, or `subscribers` or `pending` is not empty;
/// returns the stored event.
#[pyclass(frozen, module = "opencode_addons._core")]
pub struct StreamAppender {
    store: Py<JsonlStore>,
    projectors: Py<PyDict>,
    subscribers: Py<PyDict>,
    pending: Py<PyDict>,
    after: Py<PyAny>,
}

#[pymethods]
impl StreamAppender {
    #[new]
    fn new(
        store: Py<JsonlStore>,
        projectors: Py<PyDict>,
        subscribers: Py<PyDict>,
        pending: Py<PyDict>,
        after: Py<PyAny>,
    ) -> Self {
        Self {
            store,
            projectors,
            subscribers,
            pending,
            after,
        }
    }

    fn __call__<'py>(&self, event: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
        let py = event.py();
        let stored = self.store.get().append_event(event)?;
        // The stored event has a type: the store refuses events without one.
        let projector = match stored.get_item(pyo3::intern!(py, "type"))? {
            Some(event_type) => self.projectors.bind(py).get_item(event_type)?,
            None => None,
        };
        if projector.is_some()
            || !self.subscribers.bind(py).is_empty()
            || !self.pending.bind(py).is_empty()
        {
            self.after.call1(py, (&stored, projector))?;
        }
        Ok(stored)
    }
}
