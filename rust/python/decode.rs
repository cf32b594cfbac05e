//! Compact JSON bytes to Python objects, built directly with the C API.
//!
//! Records come from our own encoder or from lines the scanner validated, but the decoder still
//! checks every step and reports a damaged record as an error instead of panicking. `Copied`
//! holds records copied out of a ring under its lock, to be decoded once the lock is released.

use std::os::raw::c_char;

use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyList};

use crate::event::{CoreError, MAX_DEPTH};
use crate::json::{unescape, Cursor};
use crate::keys::{expand_record, key_for_token};
use crate::ring::Ring;

/// Keys repeat across events (type, payload, stream_id, ...): reuse one interned str per key
/// instead of building a new one for every dict.
const KEY_SLOTS: usize = 512;
const CACHED_KEY_LEN: usize = 48;

/// A cached key: its UTF-8 and an owned reference to the interned str.
type CachedKey = (Box<[u8]>, *mut ffi::PyObject);

struct KeyCache {
    slots: Vec<Option<CachedKey>>,
}

thread_local! {
    // Holds strong references; they are released when replaced (with the GIL held) and
    // deliberately leaked at thread exit, when the interpreter may already be gone.
    static KEYS: std::cell::RefCell<KeyCache> = std::cell::RefCell::new(KeyCache { slots: vec![None; KEY_SLOTS] });
}

fn cached_key<'py>(py: Python<'py>, raw: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    use std::hash::BuildHasher;
    let slot = (crate::interner::FastHash::default().hash_one(raw) as usize) % KEY_SLOTS;
    let hit = KEYS.with(|keys| {
        let keys = keys.borrow();
        match &keys.slots[slot] {
            Some((bytes, object)) if **bytes == *raw => {
                // SAFETY: the cache owns a strong reference to `object`, so it is alive, and the
                // GIL is held (`py`); the Bound takes a new reference of its own.
                Some(unsafe { Bound::from_borrowed_ptr(py, *object) })
            }
            _ => None,
        }
    });
    if let Some(key) = hit {
        return Ok(key);
    }
    let key = new_str(py, raw)?;
    let mut object = key.clone().into_ptr();
    // SAFETY: `object` is a str we own a strong reference to, and the GIL is held (`py`).
    // Interning may replace it with an equal interned str, moving our reference to that one, so
    // `object` stays a reference we own.
    unsafe { ffi::PyUnicode_InternInPlace(&mut object) };
    KEYS.with(|keys| {
        if let Ok(mut keys) = keys.try_borrow_mut() {
            if let Some((_, old)) = keys.slots[slot].replace((raw.into(), object)) {
                // SAFETY: the GIL is held (`py`), and `old` is the strong reference the slot
                // owned, just taken out of the cache, so it is released exactly once.
                unsafe { ffi::Py_DecRef(old) };
            }
        } else {
            // SAFETY: the GIL is held (`py`), and `object` is our own strong reference, which
            // the cache did not take, so releasing it here balances it.
            unsafe { ffi::Py_DecRef(object) };
        }
    });
    Ok(key)
}

fn new_str<'py>(py: Python<'py>, text: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: the pointer and length describe the live slice `text`, which CPython only reads
    // (it copies and validates the UTF-8); the GIL is held (`py`).
    let object = unsafe {
        ffi::PyUnicode_FromStringAndSize(
            text.as_ptr().cast::<c_char>(),
            text.len() as ffi::Py_ssize_t,
        )
    };
    // SAFETY: PyUnicode_FromStringAndSize returns a new reference, or NULL with an exception
    // set, which is what from_owned_ptr_or_err takes.
    unsafe { Bound::from_owned_ptr_or_err(py, object) }
}

fn damaged(what: &str) -> PyErr {
    PyValueError::new_err(format!("stored event is damaged: {what}"))
}

/// Decodes one record into a dict and sets its `seq`.
pub fn record_to_dict<'py>(py: Python<'py>, json: &[u8], seq: u64) -> PyResult<Bound<'py, PyAny>> {
    let mut decoder = Decoder {
        py,
        cursor: Cursor::new(json),
        scratch: Vec::new(),
    };
    decoder.cursor.skip_ws();
    let value = decoder.value(MAX_DEPTH + 1)?;
    let dict = value
        .cast_into::<PyDict>()
        .map_err(|_| damaged("not an object"))?;
    dict.set_item(pyo3::intern!(py, "seq"), seq)?;
    Ok(dict.into_any())
}

struct Decoder<'py, 'a> {
    py: Python<'py>,
    cursor: Cursor<'a>,
    scratch: Vec<u8>,
}

impl<'py> Decoder<'py, '_> {
    fn value(&mut self, depth: usize) -> PyResult<Bound<'py, PyAny>> {
        if depth == 0 {
            return Err(damaged("nesting too deep"));
        }
        self.cursor.skip_ws();
        let py = self.py;
        match self.cursor.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string(),
            Some(b't') => self.literal(b"true", || Ok(PyBool::new(py, true).to_owned().into_any())),
            Some(b'f') => self.literal(b"false", || {
                Ok(PyBool::new(py, false).to_owned().into_any())
            }),
            Some(b'n') => self.literal(b"null", || Ok(py.None().into_bound(py))),
            Some(_) => self.number(),
            None => Err(damaged("unexpected end")),
        }
    }

    fn literal(
        &mut self,
        word: &'static [u8],
        make: impl FnOnce() -> PyResult<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.cursor.literal(word).map_err(damaged)?;
        make()
    }

    fn object(&mut self, depth: usize) -> PyResult<Bound<'py, PyAny>> {
        self.cursor.pos += 1;
        let dict = PyDict::new(self.py);
        self.cursor.skip_ws();
        if self.cursor.peek() == Some(b'}') {
            self.cursor.pos += 1;
            return Ok(dict.into_any());
        }
        loop {
            self.cursor.skip_ws();
            let key = match self.cursor.peek().and_then(key_for_token) {
                // A compacted key: one byte for `"key":` (see keys.rs).
                Some(name) => {
                    self.cursor.pos += 1;
                    cached_key(self.py, name.as_bytes())?
                }
                None => {
                    let key = self.key()?;
                    self.cursor.skip_ws();
                    self.cursor.expect(b':', "expected ':'").map_err(damaged)?;
                    key
                }
            };
            let value = self.value(depth - 1)?;
            // SAFETY: `dict`, `key` and `value` are live objects held by Bounds, and the GIL is
            // held; PyDict_SetItem takes references of its own (it steals none).
            if unsafe { ffi::PyDict_SetItem(dict.as_ptr(), key.as_ptr(), value.as_ptr()) } != 0 {
                return Err(PyErr::fetch(self.py));
            }
            self.cursor.skip_ws();
            match self.cursor.peek() {
                Some(b',') => self.cursor.pos += 1,
                Some(b'}') => {
                    self.cursor.pos += 1;
                    return Ok(dict.into_any());
                }
                _ => return Err(damaged("expected ',' or '}'")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> PyResult<Bound<'py, PyAny>> {
        self.cursor.pos += 1;
        let list = PyList::empty(self.py);
        self.cursor.skip_ws();
        if self.cursor.peek() == Some(b']') {
            self.cursor.pos += 1;
            return Ok(list.into_any());
        }
        loop {
            list.append(self.value(depth - 1)?)?;
            self.cursor.skip_ws();
            match self.cursor.peek() {
                Some(b',') => self.cursor.pos += 1,
                Some(b']') => {
                    self.cursor.pos += 1;
                    return Ok(list.into_any());
                }
                _ => return Err(damaged("expected ',' or ']'")),
            }
        }
    }

    fn key(&mut self) -> PyResult<Bound<'py, PyAny>> {
        let start = self.cursor.pos;
        let raw = self.cursor.string().map_err(damaged)?;
        if raw.escaped || raw.raw.len() > CACHED_KEY_LEN {
            self.cursor.pos = start;
            return self.string();
        }
        cached_key(self.py, raw.raw)
    }

    fn string(&mut self) -> PyResult<Bound<'py, PyAny>> {
        let raw = self.cursor.string().map_err(damaged)?;
        let text: &[u8] = if raw.escaped {
            self.scratch.clear();
            unescape(raw.raw, &mut self.scratch).map_err(damaged)?;
            &self.scratch
        } else {
            raw.raw
        };
        new_str(self.py, text)
    }

    fn number(&mut self) -> PyResult<Bound<'py, PyAny>> {
        let (text, integer) = self.cursor.number().map_err(damaged)?;
        // SAFETY: `Cursor::number` returns only bytes it matched as ASCII digits, signs, '.',
        // 'e' and 'E': valid UTF-8.
        let text = unsafe { std::str::from_utf8_unchecked(text) };
        if integer {
            if let Ok(small) = text.parse::<i64>() {
                return Ok(small.into_pyobject(self.py)?.into_any());
            }
            if let Ok(large) = text.parse::<u64>() {
                return Ok(large.into_pyobject(self.py)?.into_any());
            }
            // Written by another program: Python's int parser takes any size.
            return self.py.get_type::<pyo3::types::PyInt>().call1((text,));
        }
        let float: f64 = text.parse().map_err(|_| damaged("bad number"))?;
        Ok(float.into_pyobject(self.py)?.into_any())
    }
}

/// Records copied out of a ring: their bytes back to back, with sequence numbers.
#[derive(Default)]
pub(crate) struct Copied {
    bytes: Vec<u8>,
    records: Vec<(usize, usize, u64)>,
}

impl Copied {
    pub(crate) fn push(&mut self, json: &[u8], seq: u64) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(json);
        self.records.push((start, self.bytes.len(), seq));
    }

    /// The records at `indexes` (those past the end skipped). An error only if a compressed
    /// record cannot be decompressed.
    pub(crate) fn from_ring(
        ring: &Ring,
        indexes: impl IntoIterator<Item = usize>,
    ) -> Result<Self, CoreError> {
        let mut copied = Self::default();
        for index in indexes {
            let start = copied.bytes.len();
            if let Some(seq) = ring.copy_to(index, &mut copied.bytes)? {
                copied.records.push((start, copied.bytes.len(), seq));
            }
        }
        Ok(copied)
    }

    /// Each record as the bytes of its JSON line (tokens expanded, `seq` added); no dict.
    pub(crate) fn into_raw_list<'py>(self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        let mut line = Vec::new();
        for &(start, end, seq) in &self.records {
            line.clear();
            expand_record(&self.bytes[start..end], seq, &mut line);
            list.append(PyBytes::new(py, &line))?;
        }
        Ok(list)
    }

    /// The records as `raw` lines (see `into_raw_list`) or as dicts.
    pub(crate) fn into_py<'py>(self, py: Python<'py>, raw: bool) -> PyResult<Bound<'py, PyList>> {
        if raw {
            self.into_raw_list(py)
        } else {
            self.into_list(py)
        }
    }

    pub(crate) fn into_list<'py>(self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for &(start, end, seq) in &self.records {
            list.append(record_to_dict(py, &self.bytes[start..end], seq)?)?;
        }
        Ok(list)
    }

    pub(crate) fn into_single<'py>(self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        match self.records.first() {
            Some(&(start, end, seq)) => Ok(Some(record_to_dict(py, &self.bytes[start..end], seq)?)),
            None => Ok(None),
        }
    }
}
