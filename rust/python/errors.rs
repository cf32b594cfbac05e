//! The module's exception classes, and how a core error becomes one of them.

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;

use crate::event::CoreError;

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
