//! Compact JSON bytes to Python objects, built directly with the C API.
//!
//! Records come from our own encoder or from lines the scanner validated, but the decoder still
//! checks every step and reports a damaged record as an error instead of panicking.

use std::os::raw::c_char;

use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict};

use crate::event::MAX_DEPTH;
use crate::json::{unescape, Cursor};

fn damaged(what: &str) -> PyErr {
    PyValueError::new_err(format!("stored event is damaged: {what}"))
}

/// Decodes one record into a dict and sets its `seq`.
pub fn record_to_dict<'py>(py: Python<'py>, json: &[u8], seq: u64) -> PyResult<Bound<'py, PyAny>> {
    let mut decoder = Decoder { py, cursor: Cursor::new(json), scratch: Vec::new() };
    decoder.cursor.skip_ws();
    let value = decoder.value(MAX_DEPTH + 1)?;
    let dict = value.cast_into::<PyDict>().map_err(|_| damaged("not an object"))?;
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
            Some(b'f') => self.literal(b"false", || Ok(PyBool::new(py, false).to_owned().into_any())),
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
            let key = self.string()?;
            self.cursor.skip_ws();
            self.cursor.expect(b':', "expected ':'").map_err(damaged)?;
            let value = self.value(depth - 1)?;
            // SAFETY: a fresh dict and live objects; PyDict_SetItem does not steal references.
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
        let list = pyo3::types::PyList::empty(self.py);
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

    fn string(&mut self) -> PyResult<Bound<'py, PyAny>> {
        let raw = self.cursor.string().map_err(damaged)?;
        let text: &[u8] = if raw.escaped {
            self.scratch.clear();
            unescape(raw.raw, &mut self.scratch).map_err(damaged)?;
            &self.scratch
        } else {
            raw.raw
        };
        // SAFETY: a pointer/length pair into a live slice; CPython validates the UTF-8.
        let object = unsafe { ffi::PyUnicode_FromStringAndSize(text.as_ptr().cast::<c_char>(), text.len() as ffi::Py_ssize_t) };
        // SAFETY: a new reference or NULL with an exception set.
        unsafe { Bound::from_owned_ptr_or_err(self.py, object) }
    }

    fn number(&mut self) -> PyResult<Bound<'py, PyAny>> {
        let (text, integer) = self.cursor.number().map_err(damaged)?;
        // SAFETY: the scanner accepted only ASCII digits, signs, '.', 'e' and 'E'.
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
