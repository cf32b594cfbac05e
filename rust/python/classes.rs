//! The data of the two classes that own a ring, `EventRing` and `JsonlStore`, and the one way to
//! reach that ring (`RingHolder`). Their Python methods are in `ring.rs` and `store.rs`; the views
//! and iterators in `view.rs` name these classes to read through them, which is why the structs
//! live here, below all three, instead of beside their methods.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::PyString;

use super::encode::FieldDefaults;
use super::errors::StoreClosedError;
use super::locks::lock;
use crate::jsonl::{Durability, RecoveryReport, Store};
use crate::ring::Ring;

/// Something that owns a ring.
pub(crate) trait RingHolder {
    /// Runs `f` on the ring under the owner's lock (a compressing ring first takes in the blocks
    /// its background compressor finished); an error (a closed store) means `f` did not run.
    fn with_ring<R>(&self, py: Python<'_>, f: impl FnOnce(&Ring) -> R) -> PyResult<R>;
}

pub(crate) struct RingState {
    pub(crate) ring: Ring,
    pub(crate) next_seq: u64,
}

/// A bounded ring of events: fixed capacity in events and, optionally, in bytes of JSON.
#[pyclass(frozen, module = "opencode_addons._core", sequence)]
pub struct EventRing {
    pub(crate) state: Mutex<RingState>,
    pub(crate) max_event_bytes: usize,
}

impl RingHolder for EventRing {
    fn with_ring<R>(&self, _py: Python<'_>, f: impl FnOnce(&Ring) -> R) -> PyResult<R> {
        let mut state = lock(&self.state, || {});
        state.ring.absorb();
        Ok(f(&state.ring))
    }
}

/// An append-only JSONL event file with a bounded in-memory cache of the newest events.
#[pyclass(frozen, module = "opencode_addons._core", sequence)]
pub struct JsonlStore {
    /// None once closed.
    pub(crate) store: Mutex<Option<Store>>,
    pub(crate) path: PathBuf,
    pub(crate) durability: Durability,
    pub(crate) max_cache_size: usize,
    pub(crate) history_size: usize,
    pub(crate) max_event_bytes: usize,
    pub(crate) recovery: RecoveryReport,
    pub(crate) defaults: FieldDefaults,
    /// The same defaults as Python strings, made once: every returned event that takes a
    /// default shares them instead of decoding a new string per event.
    pub(crate) default_objects: DefaultObjects,
    pub(crate) segments: SegmentSettings,
}

/// `FieldDefaults` as Python strings (see `JsonlStore::default_objects`).
pub(crate) struct DefaultObjects {
    pub(crate) actor: Option<Py<PyString>>,
    pub(crate) correlation_id: Option<Py<PyString>>,
}

/// The segment settings a store was opened with (for `stats()`).
pub(crate) struct SegmentSettings {
    pub(crate) max_segment_bytes: u64,
    pub(crate) max_disk_bytes: Option<u64>,
    pub(crate) max_age: Option<f64>,
    pub(crate) compress_sealed: bool,
}

impl RingHolder for JsonlStore {
    fn with_ring<R>(&self, _py: Python<'_>, f: impl FnOnce(&Ring) -> R) -> PyResult<R> {
        let mut guard = lock(&self.store, || {});
        match guard.as_mut() {
            Some(store) => {
                store.ring_mut().absorb();
                Ok(f(store.ring()))
            }
            None => Err(closed(&self.path)),
        }
    }
}

/// The error for using a closed store.
pub(crate) fn closed(path: &Path) -> PyErr {
    StoreClosedError::new_err(format!("the store {} is closed", path.display()))
}
