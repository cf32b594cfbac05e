//! `StreamAppender`: `DurableStream.append` without a Python frame for the common event.
//!
//! Every append of a `DurableStream` stores the event, then runs the projection of its type (if
//! it has one), notifies subscribers (if there are any) and looks after pending checkpoints (if
//! there are any). Most events need none of the three, and for them the Python method was
//! mostly interpreter overhead: a frame, attribute loads, a bound-method call into the store.
//! This callable does the store call and the three checks natively, on the stream's own
//! containers (shared, never copied: the stream changes them only in place), and calls back
//! into Python only when one of them has work. An event whose only work is its projection (a
//! tool call or a checkpoint's end, with no subscribers and nothing pending) has the projector
//! called straight from here, without the two Python frames that wrap it in the method.
//!
//! The stream holds the appender and the appender holds the stream's containers, whose values
//! (projectors, subscribers) hold the stream: a cycle, which the garbage collector can only
//! break if the appender shows it its references (`__traverse__`) and drops them when asked
//! (`__clear__`), as a Python object would.

use std::sync::{Arc, Mutex, PoisonError};

use pyo3::exceptions::PyException;
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
    projection_failed: Py<PyAny>,
    housekeep: Py<PyAny>,
}

/// `appender(event)`: `store.append(event)`; then, if `subscribers` or `pending` is not empty,
/// `after(stored, projector)` (`projector`: the stored event's type's in `projectors`, or None);
/// else, if the type has a projector, `projector(stored)` (an `Exception` from it goes to
/// `projection_failed(stored, error)`), and `housekeep()` if that left `pending` not empty.
/// Returns the stored event. `appender.append(event)` is the same.
#[pyclass(frozen, module = "opencode_addons._core")]
pub struct StreamAppender {
    /// Locked only to read or take the references, never while Python code runs (a subscriber
    /// may append again, and a store wait releases the GIL).
    /// Shared out by reference count: a call takes one count, not one per reference.
    targets: Mutex<Option<Arc<Targets>>>,
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
        projection_failed: Py<PyAny>,
        housekeep: Py<PyAny>,
    ) -> Self {
        Self {
            targets: Mutex::new(Some(Arc::new(Targets {
                store,
                projectors,
                subscribers,
                pending,
                after,
                projection_failed,
                housekeep,
            }))),
        }
    }

    fn __call__<'py>(&self, event: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
        self.append(event)
    }

    /// The same as calling the appender. `DurableStream` installs this bound method, not the
    /// appender: a method is called with the fast convention (METH_FASTCALL, on the 3.10+
    /// wheel), where calling an object builds a tuple of its arguments every time.
    fn append<'py>(&self, event: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
        let py = event.py();
        let targets = self
            .targets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| StoreClosedError::new_err("the durable stream is gone"))?;
        let stored = targets.store.get().append_event(event)?;
        // The stored event has a type: the store refuses events without one.
        let projector = match stored.get_item(pyo3::intern!(py, "type"))? {
            Some(event_type) => targets.projectors.bind(py).get_item(event_type)?,
            None => None,
        };
        let pending = targets.pending.bind(py);
        if !targets.subscribers.bind(py).is_empty() || !pending.is_empty() {
            targets.after.call1(py, (&stored, projector))?;
        } else if let Some(projector) = projector {
            if let Err(error) = projector.call1((&stored,)) {
                // As the method's `except Exception`: the event is stored, a projection bug
                // must not fail the append; anything else (KeyboardInterrupt) goes on up.
                if !error.is_instance_of::<PyException>(py) {
                    return Err(error);
                }
                targets
                    .projection_failed
                    .call1(py, (&stored, error.into_value(py)))?;
            }
            if !pending.is_empty() {
                targets.housekeep.call0(py)?;
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
            visit.call(&t.projection_failed)?;
            visit.call(&t.housekeep)?;
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
