//! The PyO3 bindings: the only part of the crate that knows Python.
//!
//! Modules, lowest first (each uses only those above it): `errors` (exception classes),
//! `args` (query keywords, sizes), `layout` (dicts and ints read from CPython's layout, checked
//! at start-up), `encode_keys` (the encoder's cache of dict keys), `encode` (Python objects to
//! JSON), `decode` (JSON to Python objects), `report` (the recovery report as a dict), `locks`
//! (GIL-aware locking, the encoding buffer), `classes` (the data of `EventRing` and
//! `JsonlStore`, and `RingHolder`), `view` (read access shared by the classes, `EventView`,
//! `EventIterator`), then the Python methods: `ring` (`EventRing`), `store` (`JsonlStore`) and
//! `files` (`read_events`, `file_stats`), and `appender` (`StreamAppender`, `DurableStream.append`'s
//! fast path).

mod appender;
mod args;
mod chunked;
mod classes;
mod decode;
mod deferred_strings;
mod encode;
mod encode_keys;
mod errors;
mod files;
mod layout;
mod locks;
mod report;
mod ring;
mod store;
mod view;

use pyo3::prelude::*;

use errors::{StoreClosedError, StoreError, StoreLockedError, StoreWriteError};

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    encode::enable_fast_strings(py);
    layout::enable(py);
    m.add_class::<classes::EventRing>()?;
    m.add_class::<classes::JsonlStore>()?;
    m.add_class::<view::EventView>()?;
    m.add_class::<view::EventIterator>()?;
    m.add_class::<appender::StreamAppender>()?;
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
    m.add("_FAST_DICTS", layout::fast_dicts_enabled())?;
    m.add("_FAST_INTS", layout::fast_ints_enabled())?;
    Ok(())
}
