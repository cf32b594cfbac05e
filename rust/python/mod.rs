//! The PyO3 bindings: the only part of the crate that knows Python.
//!
//! Locking rule: a class's mutex is never held while Python code can run (no Python objects are
//! built under it), and a contended mutex is waited for with the GIL released, so the GIL and our
//! locks can never deadlock.

mod decode;
mod encode;
mod files;
mod ring;
mod store;
mod view;

use std::cell::RefCell;
use std::sync::{Mutex, MutexGuard, TryLockError};

use pyo3::exceptions::{PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::event::{CoreError, EventFields};
use crate::query::Query;
use encode::{Captured, OwnedFields};

pyo3::create_exception!(
    opencode_addons._core,
    StoreError,
    PyOSError,
    "Base class of the JSONL store's errors."
);
pyo3::create_exception!(
    opencode_addons._core,
    StoreLockedError,
    StoreError,
    "Another writer (in this or another process) holds the store file's lock."
);
pyo3::create_exception!(
    opencode_addons._core,
    StoreWriteError,
    StoreError,
    "The operating system refused a write or sync (disk full, file size limit, I/O error)."
);
pyo3::create_exception!(
    opencode_addons._core,
    StoreClosedError,
    StoreError,
    "The store was closed."
);

/// Maps a core error to its Python exception.
pub(crate) fn to_pyerr(error: CoreError) -> PyErr {
    let message = error.to_string();
    match error {
        CoreError::Invalid(_) | CoreError::TooLarge { .. } => PyValueError::new_err(message),
        CoreError::Locked(_) => StoreLockedError::new_err(message),
        CoreError::Io { .. } => StoreWriteError::new_err(message),
        CoreError::Closed => StoreClosedError::new_err(message),
    }
}

/// Locks `mutex`; if another thread holds it, `before_blocking` runs and the wait happens with
/// the GIL released.
pub(crate) fn lock<'a, T>(
    mutex: &'a Mutex<T>,
    before_blocking: impl FnOnce(),
) -> MutexGuard<'a, T> {
    match mutex.try_lock() {
        Ok(guard) => guard,
        Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(TryLockError::WouldBlock) => {
            before_blocking();
            // SAFETY: no Python object is touched between saving and restoring the thread state.
            unsafe {
                let state = pyo3::ffi::PyEval_SaveThread();
                let guard = mutex
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                pyo3::ffi::PyEval_RestoreThread(state);
                guard
            }
        }
    }
}

/// Locks `mutex` to write one event whose header fields borrow the event's Python strings.
///
/// If the lock is contended the wait releases the GIL, and another thread could then free
/// those strings: so the fields are copied into `copy` first and borrowed from there.
pub(crate) fn lock_for_event<'m, 'a, T>(
    mutex: &'m Mutex<T>,
    captured: &Captured<'a>,
    copy: &'a mut Option<OwnedFields>,
) -> (MutexGuard<'m, T>, EventFields<'a>) {
    let guard = lock(mutex, || *copy = Some(captured.owned_fields()));
    let copy: &'a Option<OwnedFields> = copy;
    let fields = copy
        .as_ref()
        .map_or_else(|| captured.fields(), OwnedFields::fields);
    (guard, fields)
}

/// `lock_for_event` for a batch: the fields of every event, in order.
pub(crate) fn lock_for_batch<'m, 'a, T>(
    mutex: &'m Mutex<T>,
    captured: impl Iterator<Item = &'a Captured<'a>> + Clone,
    copies: &'a mut Vec<OwnedFields>,
) -> (MutexGuard<'m, T>, Vec<EventFields<'a>>) {
    let guard = lock(mutex, || {
        *copies = captured.clone().map(Captured::owned_fields).collect()
    });
    let copies: &'a Vec<OwnedFields> = copies;
    let fields = if copies.is_empty() {
        captured.map(Captured::fields).collect()
    } else {
        copies.iter().map(OwnedFields::fields).collect()
    };
    (guard, fields)
}

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's reusable encoding buffer (a fresh one if it is in use).
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut buffer = SCRATCH.with(|cell| {
        cell.try_borrow_mut()
            .map(|mut b| std::mem::take(&mut *b))
            .unwrap_or_default()
    });
    buffer.clear();
    let result = f(&mut buffer);
    if buffer.capacity() <= 4 << 20 {
        SCRATCH.with(|cell| {
            if let Ok(mut slot) = cell.try_borrow_mut() {
                *slot = buffer;
            }
        });
    }
    result
}

/// The keywords every query method takes.
const QUERY_KEYWORDS: [&str; 10] = [
    "stream_id",
    "type",
    "actor",
    "correlation_id",
    "since",
    "until",
    "after_seq",
    "limit",
    "newest_first",
    "raw",
];

/// A query and how its matches come back.
pub(crate) struct QueryArgs {
    pub query: Query,
    /// Each match as the JSON bytes of its line (no dict built) instead of a dict.
    pub raw: bool,
}

/// A query from the keyword arguments of `method`; unknown keywords are a TypeError, as for a
/// Python function.
pub(crate) fn query_from_kwargs(
    method: &str,
    filters: Option<&Bound<'_, PyDict>>,
) -> PyResult<QueryArgs> {
    let Some(filters) = filters else {
        return Ok(QueryArgs {
            query: Query::default(),
            raw: false,
        });
    };
    for key in filters.keys() {
        let name: String = key.extract()?;
        if !QUERY_KEYWORDS.contains(&name.as_str()) {
            return Err(PyTypeError::new_err(format!(
                "{method}() got an unexpected keyword argument '{name}'"
            )));
        }
    }
    let get = |name: &str| filters.get_item(name).ok().flatten();
    let flag = |name: &str| -> PyResult<bool> {
        match get(name) {
            None => Ok(false),
            Some(value) => value
                .extract::<bool>()
                .map_err(|_| PyTypeError::new_err(format!("{name} must be a bool"))),
        }
    };
    let query = build_query(
        get("stream_id").as_ref(),
        get("type").as_ref(),
        get("actor").as_ref(),
        get("correlation_id").as_ref(),
        get("since").as_ref(),
        get("until").as_ref(),
        get("after_seq").as_ref(),
        get("limit").as_ref(),
        flag("newest_first")?,
    )?;
    Ok(QueryArgs {
        query,
        raw: flag("raw")?,
    })
}

/// The keyword filters every query method takes.
#[allow(clippy::too_many_arguments)]
fn build_query(
    stream_id: Option<&Bound<'_, PyAny>>,
    event_type: Option<&Bound<'_, PyAny>>,
    actor: Option<&Bound<'_, PyAny>>,
    correlation_id: Option<&Bound<'_, PyAny>>,
    since: Option<&Bound<'_, PyAny>>,
    until: Option<&Bound<'_, PyAny>>,
    after_seq: Option<&Bound<'_, PyAny>>,
    limit: Option<&Bound<'_, PyAny>>,
    newest_first: bool,
) -> PyResult<Query> {
    let text = |value: Option<&Bound<'_, PyAny>>, name: &str| -> PyResult<Option<String>> {
        value
            .filter(|v| !v.is_none())
            .map(|v| {
                v.extract::<String>()
                    .map_err(|_| PyTypeError::new_err(format!("{name} must be a string")))
            })
            .transpose()
    };
    Ok(Query {
        stream_id: text(stream_id, "stream_id")?,
        types: event_type
            .filter(|v| !v.is_none())
            .map(type_filter)
            .transpose()?,
        actor: text(actor, "actor")?,
        correlation_id: text(correlation_id, "correlation_id")?,
        since: since
            .filter(|v| !v.is_none())
            .map(|v| time_bound(v, "since"))
            .transpose()?,
        until: until
            .filter(|v| !v.is_none())
            .map(|v| time_bound(v, "until"))
            .transpose()?,
        after_seq: after_seq
            .filter(|v| !v.is_none())
            .map(|v| non_negative(v, "after_seq"))
            .transpose()?,
        limit: limit
            .filter(|v| !v.is_none())
            .map(|v| non_negative(v, "limit").map(|n| usize::try_from(n).unwrap_or(usize::MAX)))
            .transpose()?,
        newest_first,
    })
}

fn type_filter(value: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if let Ok(one) = value.extract::<String>() {
        return Ok(vec![one]);
    }
    if value.is_instance_of::<pyo3::types::PyBytes>() {
        return Err(PyTypeError::new_err(
            "type must be a string or an iterable of strings, got bytes",
        ));
    }
    let items = value
        .try_iter()
        .map_err(|_| PyTypeError::new_err("type must be a string or an iterable of strings"))?;
    items
        .map(|item| {
            item?
                .extract::<String>()
                .map_err(|_| PyTypeError::new_err("type must contain only strings"))
        })
        .collect()
}

fn is_bool(value: &Bound<'_, PyAny>) -> bool {
    value.is_instance_of::<pyo3::types::PyBool>()
}

fn time_bound(value: &Bound<'_, PyAny>, name: &str) -> PyResult<f64> {
    if is_bool(value) {
        return Err(PyTypeError::new_err(format!(
            "{name} must be epoch milliseconds (an int or a float)"
        )));
    }
    let ms: f64 = value.extract().map_err(|_| {
        PyTypeError::new_err(format!(
            "{name} must be epoch milliseconds (an int or a float)"
        ))
    })?;
    if ms.is_nan() {
        return Err(PyValueError::new_err(format!("{name} must not be NaN")));
    }
    Ok(ms)
}

fn non_negative(value: &Bound<'_, PyAny>, name: &str) -> PyResult<u64> {
    // Only real ints: older Pythons would otherwise truncate a float through __int__.
    if is_bool(value) || !value.is_instance_of::<pyo3::types::PyInt>() {
        return Err(PyTypeError::new_err(format!("{name} must be an int")));
    }
    if value.lt(0)? {
        return Err(PyValueError::new_err(format!(
            "{name} must be >= 0, got {value}"
        )));
    }
    // Beyond 64 bits is as good as "no limit" for a count or a seq.
    Ok(value.extract::<u64>().unwrap_or(u64::MAX))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    encode::enable_fast_strings(py);
    m.add_class::<ring::EventRing>()?;
    m.add_class::<store::JsonlStore>()?;
    m.add_class::<view::EventView>()?;
    m.add_class::<view::EventIterator>()?;
    m.add_function(wrap_pyfunction!(files::read_events, m)?)?;
    m.add_function(wrap_pyfunction!(files::file_stats, m)?)?;
    m.add("StoreError", py.get_type::<StoreError>())?;
    m.add("StoreLockedError", py.get_type::<StoreLockedError>())?;
    m.add("StoreWriteError", py.get_type::<StoreWriteError>())?;
    m.add("StoreClosedError", py.get_type::<StoreClosedError>())?;
    m.add(
        "DEFAULT_MAX_EVENT_BYTES",
        crate::event::DEFAULT_MAX_EVENT_BYTES,
    )?;
    m.add("MAX_DEPTH", crate::event::MAX_DEPTH)?;
    m.add("_FAST_STRINGS", encode::fast_strings_enabled())?;
    Ok(())
}
