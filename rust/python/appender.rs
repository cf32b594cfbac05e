//! `StreamAppender`: `DurableStream.append` without a Python frame for the common event.
//!
//! Every append of a `DurableStream` stores the event, then runs the projection of its type (if
//! it has one), notifies subscribers (if there are any) and looks after pending checkpoints (if
//! there are any). Most events need none of the three, and for them the Python method was
//! mostly interpreter overhead: a frame, attribute loads, a bound-method call into the store.
//! This callable does the store call and the three checks natively, on the stream's own
//! containers (shared, never copied: the stream changes them only in place), and calls back
//! into Python only when one of them has work.
//!
//! The stream holds the appender and the appender holds the stream's containers, whose values
//! (projectors, subscribers) hold the stream: a cycle, which the garbage collector can only
//! break if the appender shows it its references (`__traverse__`) and drops them when asked
//! (`__clear__`), as a Python object would.

use std::sync::{Mutex, PoisonError};

use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3::{PyTraverseError, PyVisit};

use super::classes::JsonlStore;
use super::errors::StoreClosedError;

/// What the appender works on (None once the garbage collector has cleared it).
struct Targets {
    store: Py<JsonlStore>,
    projectors: Py<PyDict>,
    subscribers: Py<PyDict>,
    pending: Py<PyDict>,
    after: Py<PyAny>,
}

/// `appender(event)`: `store.append(event)`, then `after(stored, projector)` if the stored
/// event's type has a projector in `projectors`, or `subscribers` or `pending` is not empty;
/// returns the stored event.
#[pyclass(frozen, module = "opencode_addons._core")]
pub struct StreamAppender {
    /// Locked only to read or take the references, never while Python code runs (a subscriber
    /// may append again, and a store wait releases the GIL).
    targets: Mutex<Option<Targets>>,
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
            targets: Mutex::new(Some(Targets {
                store,
                projectors,
                subscribers,
                pending,
                after,
            })),
        }
    }

    fn __call__<'py>(&self, event: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
        let py = event.py();
        let (store, projectors, subscribers, pending) = {
            let targets = self.targets.lock().unwrap_or_else(PoisonError::into_inner);
            let targets = targets
                .as_ref()
                .ok_or_else(|| StoreClosedError::new_err("the durable stream is gone"))?;
            (
                targets.store.bind(py).clone(),
                targets.projectors.bind(py).clone(),
                targets.subscribers.bind(py).clone(),
                targets.pending.bind(py).clone(),
            )
        };
        let stored = store.get().append_event(event)?;
        // The stored event has a type: the store refuses events without one.
        let projector = match stored.get_item(pyo3::intern!(py, "type"))? {
            Some(event_type) => projectors.get_item(event_type)?,
            None => None,
        };
        if projector.is_some() || !subscribers.is_empty() || !pending.is_empty() {
            let after = {
                let targets = self.targets.lock().unwrap_or_else(PoisonError::into_inner);
                targets.as_ref().map(|t| t.after.bind(py).clone())
            };
            if let Some(after) = after {
                after.call1((&stored, projector))?;
            }
        }
        Ok(stored)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // Held by a call copying the references out: that call keeps the appender alive, and
        // showing no references now only makes the collector keep what they reach.
        let Ok(targets) = self.targets.try_lock() else {
            return Ok(());
        };
        if let Some(t) = targets.as_ref() {
            visit.call(&t.store)?;
            visit.call(&t.projectors)?;
            visit.call(&t.subscribers)?;
            visit.call(&t.pending)?;
            visit.call(&t.after)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        let taken = self
            .targets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // Dropped after the lock is released: freeing them may run Python code.
        drop(taken);
    }
}
