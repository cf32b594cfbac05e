//! Python objects to compact JSON, in one pass, straight from the C API.
//!
//! Exact built-in types take a fast path that runs no Python code (so the GIL is never given up
//! mid-encoding); subclasses of dict, list, tuple, str, int and float are accepted through the
//! slower checks. Anything else is an error that names where in the event it was found.

use std::os::raw::c_char;
use std::sync::atomic::{AtomicUsize, Ordering};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::deferred_strings::{defer, deferred_bytes, Deferring, LeftOut, DEFER_MIN_LEN};
use super::encode_keys::{with_key_cache, KeyCache, KeyInfo, Role};
use super::layout::{small_int, DictItems};
use crate::event::{new_event_id, now_ms, EventFields, MAX_DEPTH};
use crate::json::write_string;
use crate::keys::{token_for, KeySpans};

extern "C" {
    // Part of the limited API only from 3.10, but exported by every CPython 3.x since 3.3 with
    // this signature; it returns the string's cached UTF-8 without making a bytes object.
    fn PyUnicode_AsUTF8AndSize(
        unicode: *mut ffi::PyObject,
        size: *mut ffi::Py_ssize_t,
    ) -> *const c_char;
}

/// Where in the event an error was found, built while the error unwinds.
enum Segment {
    Key(String),
    Index(usize),
}

pub struct EncodeError {
    kind: ErrorKind,
    message: String,
    path: Vec<Segment>,
    /// The object the message describes. Its type name and repr are filled into the message
    /// only once encoding has stopped: they can run Python code, which could free the objects
    /// the encoder still borrows.
    culprit: Option<Py<PyAny>>,
}

/// Placeholders in a message for the culprit's type name and repr.
const TYPE_NAME: &str = "\u{0}type\u{0}";
const REPR: &str = "\u{0}repr\u{0}";

#[derive(Clone, Copy)]
enum ErrorKind {
    Type,
    Value,
}

impl EncodeError {
    fn type_error(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Type,
            message: message.into(),
            path: Vec::new(),
            culprit: None,
        }
    }

    /// A TypeError about `value`, whose message may use the TYPE_NAME and REPR placeholders.
    ///
    /// # Safety
    /// The GIL must be held and `value` alive.
    unsafe fn about(value: *mut ffi::PyObject, message: String) -> Self {
        let mut error = Self::type_error(message);
        // SAFETY: the caller holds the GIL, so assuming it is attached is true, and `value` is
        // alive, so taking a new strong reference to it is sound.
        let culprit = unsafe { Bound::from_borrowed_ptr(Python::assume_attached(), value) };
        error.culprit = Some(culprit.unbind());
        error
    }

    fn value_error(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Value,
            message: message.into(),
            path: Vec::new(),
            culprit: None,
        }
    }

    fn at_key(mut self, key: &[u8]) -> Self {
        self.path
            .push(Segment::Key(String::from_utf8_lossy(key).into_owned()));
        self
    }

    fn at_index(mut self, index: usize) -> Self {
        self.path.push(Segment::Index(index));
        self
    }

    fn location(&self) -> String {
        const SHOWN: usize = 12;
        let mut text = String::new();
        for (depth, segment) in self.path.iter().rev().enumerate() {
            if depth == SHOWN {
                text.push_str(&format!("... ({} levels)", self.path.len()));
                break;
            }
            match segment {
                Segment::Key(key) if text.is_empty() => text.push_str(key),
                Segment::Key(key) => {
                    text.push('.');
                    text.push_str(key);
                }
                Segment::Index(index) => text.push_str(&format!("[{index}]")),
            }
        }
        text
    }

    /// The Python exception; `event_index` names the event within a batch.
    pub fn into_pyerr(self, event_index: Option<usize>) -> PyErr {
        let mut message = self.message.clone();
        if let Some(culprit) = &self.culprit {
            // Encoding has stopped: running Python code (a repr, a type's name) is safe now.
            Python::attach(|py| {
                let culprit = culprit.bind(py);
                if message.contains(TYPE_NAME) {
                    let name = culprit.get_type().name().map(|n| n.to_string());
                    message = message.replace(TYPE_NAME, &name.unwrap_or_else(|_| "?".into()));
                }
                if message.contains(REPR) {
                    let shown = culprit
                        .repr()
                        .map(|r| r.to_string().chars().take(60).collect::<String>());
                    message = message.replace(REPR, &shown.unwrap_or_else(|_| "?".into()));
                }
            });
        }
        let location = self.location();
        if !location.is_empty() {
            message = format!("{message} (at {location})");
        }
        if let Some(index) = event_index {
            message = format!("event {index}: {message}");
        }
        match self.kind {
            ErrorKind::Type => PyTypeError::new_err(message),
            ErrorKind::Value => PyValueError::new_err(message),
        }
    }
}

type Result<T> = std::result::Result<T, EncodeError>;

/// The indexed fields found while encoding, borrowed from the event's Python strings.
#[derive(Default, Clone, Copy)]
pub struct Captured<'a> {
    pub event_type: Option<&'a str>,
    pub stream_id: Option<&'a str>,
    pub actor: Option<&'a str>,
    pub correlation_id: Option<&'a str>,
    pub timestamp: Option<f64>,
    /// The id and timestamp this encoder generated (the caller adds them to returned dicts).
    pub generated_id: Option<[u8; crate::event::EVENT_ID_LEN]>,
    pub generated_timestamp: Option<i64>,
    /// Where the tokenizable top-level keys are, relative to the event's first byte.
    pub key_spans: KeySpans,
    /// Fields filled in from the store's defaults (the caller adds them to returned dicts).
    pub defaulted_actor: bool,
    pub defaulted_correlation_id: bool,
}

/// Values for `actor` and `correlation_id` when an event lacks them or has None there.
#[derive(Debug, Clone, Default)]
pub struct FieldDefaults {
    pub actor: Option<String>,
    pub correlation_id: Option<String>,
}

impl FieldDefaults {
    pub const NONE: FieldDefaults = FieldDefaults {
        actor: None,
        correlation_id: None,
    };

    #[inline]
    fn for_role(&self, role: Role) -> Option<&str> {
        match role {
            Role::Actor => self.actor.as_deref(),
            Role::CorrelationId => self.correlation_id.as_deref(),
            _ => None,
        }
    }

    /// The defaults whose key the event did not have at all.
    fn missing(&self, seen: &SeenDefaults) -> impl Iterator<Item = (Role, &str)> {
        let actor = self
            .actor
            .as_deref()
            .filter(|_| !seen.actor)
            .map(|d| (Role::Actor, d));
        let correlation = self
            .correlation_id
            .as_deref()
            .filter(|_| !seen.correlation_id)
            .map(|d| (Role::CorrelationId, d));
        actor.into_iter().chain(correlation)
    }
}

#[derive(Default)]
struct SeenDefaults {
    actor: bool,
    correlation_id: bool,
}

impl SeenDefaults {
    fn mark(&mut self, role: Role) {
        match role {
            Role::Actor => self.actor = true,
            _ => self.correlation_id = true,
        }
    }
}

impl<'a> Captured<'a> {
    fn set_default(&mut self, role: Role, value: &'a str) {
        if role == Role::Actor {
            self.actor = Some(value);
            self.defaulted_actor = true;
        } else {
            self.correlation_id = Some(value);
            self.defaulted_correlation_id = true;
        }
    }

    pub fn fields(&self) -> EventFields<'a> {
        EventFields {
            event_type: self.event_type.unwrap_or(""),
            stream_id: self.stream_id,
            actor: self.actor,
            correlation_id: self.correlation_id,
            timestamp: self.timestamp.unwrap_or(0.0),
        }
    }

    /// Copies of the borrowed strings, for when the event's objects may change under us.
    pub fn owned_fields(&self) -> OwnedFields {
        OwnedFields {
            event_type: self.event_type.unwrap_or("").to_owned(),
            stream_id: self.stream_id.map(str::to_owned),
            actor: self.actor.map(str::to_owned),
            correlation_id: self.correlation_id.map(str::to_owned),
            timestamp: self.timestamp.unwrap_or(0.0),
        }
    }
}

#[derive(Clone, Default)]
pub struct OwnedFields {
    pub event_type: String,
    pub stream_id: Option<String>,
    pub actor: Option<String>,
    pub correlation_id: Option<String>,
    pub timestamp: f64,
}

impl OwnedFields {
    pub fn fields(&self) -> EventFields<'_> {
        EventFields {
            event_type: &self.event_type,
            stream_id: self.stream_id.as_deref(),
            actor: self.actor.as_deref(),
            correlation_id: self.correlation_id.as_deref(),
            timestamp: self.timestamp,
        }
    }
}

/// Encodes one event into `out` as `{...` without the closing brace, filling `id` and
/// `timestamp` when missing and leaving out any `seq` (the store assigns it), and its header
/// fields into `captured`, which must be fresh (`Captured::default()`). Filled where it lies
/// rather than returned: a returned `Captured` (about 250 bytes) was copied five times on its way into
/// a batch's list (callgrind: 145 instructions an event in `encode_batch`'s calls to `memcpy`).
///
/// # Safety
/// The GIL must be held and `dict` must be a live dict (or subclass). The strings borrowed into
/// `captured` point into the dict's keys and values: the caller must not use them once those
/// may have been freed or changed (a wait that releases the GIL counts; see `locks`).
pub unsafe fn encode_event_into<'a>(
    dict: *mut ffi::PyObject,
    out: &mut Vec<u8>,
    limit: usize,
    defaults: &'a FieldDefaults,
    captured: &mut Captured<'a>,
) -> Result<()> {
    // SAFETY: the caller's contract is this function's.
    with_key_cache(|mut keys| unsafe {
        encode_event_with(dict, out, limit, defaults, &mut keys, captured)
    })
}

/// The key cache the encoder uses, if it has one (see `encode_keys`).
type Keys<'k> = Option<&'k mut KeyCache>;

/// `encode_event_into` for one appended event, its error as the Python exception to raise.
/// Inlined, so the captured fields are built in the caller's frame rather than copied there.
///
/// # Safety
/// As `encode_event_into`, with `dict` a dict: the caller keeps it alive, holds the GIL, and
/// lets no Python code run while the captured strings are used (`lock_for_event` copies them
/// before a wait that releases the GIL).
#[inline(always)]
pub(crate) unsafe fn encode_one<'a>(
    dict: &Bound<'_, PyDict>,
    buffer: &mut Vec<u8>,
    limit: usize,
    defaults: &'a FieldDefaults,
) -> PyResult<Captured<'a>> {
    let mut captured = Captured::default();
    // SAFETY: the caller's contract is `encode_event_into`'s.
    unsafe { encode_event_into(dict.as_ptr(), buffer, limit, defaults, &mut captured) }
        .map_err(|e| e.into_pyerr(None))?;
    Ok(captured)
}

/// `encode_event_into` with the key cache.
///
/// # Safety
/// As `encode_event_into`.
unsafe fn encode_event_with<'a>(
    dict: *mut ffi::PyObject,
    out: &mut Vec<u8>,
    limit: usize,
    defaults: &'a FieldDefaults,
    keys: &mut Keys<'_>,
    captured: &mut Captured<'a>,
) -> Result<()> {
    let limit = Budget {
        base: out.len(),
        limit,
    };
    let mut has_id = false;
    let mut seen = SeenDefaults::default();
    out.push(b'{');
    let mut first = true;
    // SAFETY: `dict` is a live dict and the GIL is held (the caller's contract). The keys and
    // values it lends are borrowed references that stay alive while the dict is unchanged, and
    // the encoder runs no Python code that could change it.
    let mut items = unsafe { DictItems::new(dict) };
    while let Some((key, value)) = items.next() {
        let mark = out.len();
        if !first {
            out.push(b',');
        }
        let key_start = out.len() - limit.base;
        // SAFETY: `key` was lent by the dict just above, so it is alive; the GIL is held.
        let info = unsafe { write_key(key, out, keys) }?;
        if info.role == Role::Seq {
            out.truncate(mark);
            continue;
        }
        first = false;
        captured
            .key_spans
            .note_token(info.token, key_start, out.len() - limit.base);
        if let Some(default) = defaults.for_role(info.role) {
            seen.mark(info.role);
            // SAFETY: Py_None only gives the address of the None singleton.
            if value == unsafe { ffi::Py_None() } {
                write_string(out, default.as_bytes());
                captured.set_default(info.role, default);
                continue;
            }
        }
        // SAFETY: `value` was lent by the dict above, so it is alive; the GIL is held. The
        // strings `capture` borrows from it live as long as the dict's values, which is what
        // this function's caller promised to respect.
        let text = unsafe { capture(captured, &mut has_id, info.role, value) }
            // SAFETY: `key` is alive (lent by the dict) and the GIL is held.
            .map_err(|e| e.at_key(unsafe { key_name(key) }))?;
        let written = match text {
            // A header's UTF-8, already read: written as `encode_value` would write the str.
            Some(text) => {
                write_string(out, text.as_bytes());
                check_limit(out, limit)
            }
            // SAFETY: as above, `value` is alive and the GIL is held.
            None => unsafe { encode_value(value, out, limit, 1, keys) },
        };
        // SAFETY: `key` is alive (lent by the dict) and the GIL is held.
        written.map_err(|e| e.at_key(unsafe { key_name(key) }))?;
    }
    for (role, default) in defaults.missing(&seen) {
        let name: &[u8] = if role == Role::Actor {
            b"actor"
        } else {
            b"correlation_id"
        };
        out.extend_from_slice(b",");
        let key_start = out.len() - limit.base;
        write_string(out, name);
        out.push(b':');
        captured.key_spans.note_token(
            token_for(name).unwrap_or(0),
            key_start,
            out.len() - limit.base,
        );
        write_string(out, default.as_bytes());
        captured.set_default(role, default);
    }
    if captured.event_type.is_none() {
        return Err(EncodeError::value_error(
            "event has no 'type' (a non-empty string is required)",
        ));
    }
    complete_defaults(captured, has_id, out, limit.base);
    check_limit(out, limit)
}

/// Appends `"key":` for a dict key: from the cache when it holds the key, else built and then
/// kept. A TypeError naming the key if it is not a str.
///
/// # Safety
/// The GIL must be held and `key` alive.
#[inline(always)]
unsafe fn write_key(
    key: *mut ffi::PyObject,
    out: &mut Vec<u8>,
    keys: &mut Keys<'_>,
) -> Result<KeyInfo> {
    if let Some(info) = keys.as_deref().and_then(|cache| cache.write(key, out)) {
        return Ok(info);
    }
    // SAFETY: the caller's contract is `write_new_key`'s.
    unsafe { write_new_key(key, out, keys) }
}

/// `write_key` for a key the cache does not hold.
///
/// # Safety
/// The GIL must be held and `key` alive.
#[cold]
#[inline(never)]
unsafe fn write_new_key(
    key: *mut ffi::PyObject,
    out: &mut Vec<u8>,
    keys: &mut Keys<'_>,
) -> Result<KeyInfo> {
    // SAFETY: `key` is alive and the GIL is held (the caller's contract).
    let name = unsafe { key_utf8(key) }?;
    write_string(out, name);
    out.push(b':');
    let info = KeyInfo::of(name);
    if let Some(cache) = keys.as_deref_mut() {
        // SAFETY: `key` is alive and the GIL is held, so its type can be read; `keep` is called
        // only for an exact str, whose UTF-8 `name` is.
        unsafe {
            if ffi::Py_TYPE(key) == std::ptr::addr_of_mut!(ffi::PyUnicode_Type) {
                cache.keep(key, name, info);
            }
        }
    }
    Ok(info)
}

/// A key's UTF-8 for an error message (the key is known to be a str).
///
/// # Safety
/// The GIL must be held and `key` alive; the result borrows from `key`.
unsafe fn key_name<'a>(key: *mut ffi::PyObject) -> &'a [u8] {
    // SAFETY: the caller's contract is `key_utf8`'s.
    unsafe { key_utf8(key) }.unwrap_or(b"?")
}

/// Adds `id` and `timestamp` when the event lacks them (in that order).
fn complete_defaults(captured: &mut Captured<'_>, has_id: bool, out: &mut Vec<u8>, base: usize) {
    if captured.timestamp.is_none() {
        let now = now_ms();
        captured.timestamp = Some(now as f64);
        captured.generated_timestamp = Some(now);
    }
    if !has_id {
        let id = new_event_id(captured.timestamp.unwrap_or(0.0) as i64);
        let key_start = out.len() + 1 - base;
        out.extend_from_slice(b",\"id\":\"");
        captured.key_spans.note_token(
            token_for(b"id").unwrap_or(0),
            key_start,
            out.len() - 1 - base,
        );
        out.extend_from_slice(&id);
        out.push(b'"');
        captured.generated_id = Some(id);
    }
    if let Some(now) = captured.generated_timestamp {
        let key_start = out.len() + 1 - base;
        out.extend_from_slice(b",\"timestamp\":");
        captured.key_spans.note_token(
            token_for(b"timestamp").unwrap_or(0),
            key_start,
            out.len() - base,
        );
        out.extend_from_slice(itoa::Buffer::new().format(now).as_bytes());
    }
}

/// Checks and keeps the top-level fields headers index. Returns a header's UTF-8 when the
/// value is a str, so that it is written without being read again.
///
/// # Safety
/// The GIL must be held and `value` alive; the strings kept in `captured` borrow from `value`.
unsafe fn capture<'a>(
    captured: &mut Captured<'a>,
    has_id: &mut bool,
    role: Role,
    value: *mut ffi::PyObject,
) -> Result<Option<&'a str>> {
    // SAFETY: every reader below needs only what the caller promised: a live `value` and the GIL.
    unsafe {
        Ok(match role {
            Role::Type => {
                let text = str_of(value, "'type' must be a string")?;
                if text.is_empty() {
                    return Err(EncodeError::value_error("'type' must not be empty"));
                }
                captured.event_type = Some(text);
                Some(text)
            }
            Role::StreamId => {
                captured.stream_id = optional_str(value, "stream_id")?;
                captured.stream_id
            }
            Role::Actor => {
                captured.actor = optional_str(value, "actor")?;
                captured.actor
            }
            Role::CorrelationId => {
                captured.correlation_id = optional_str(value, "correlation_id")?;
                captured.correlation_id
            }
            Role::Id => {
                let text = str_of(value, "'id' must be a string")?;
                *has_id = true;
                Some(text)
            }
            Role::Timestamp => {
                captured.timestamp = Some(timestamp_ms(value)?);
                None
            }
            Role::Plain | Role::Seq => None,
        })
    }
}

/// `value` as a str, or None for None; a TypeError for anything else.
///
/// # Safety
/// The GIL must be held and `value` alive; the result borrows from `value`.
unsafe fn optional_str<'a>(value: *mut ffi::PyObject, name: &str) -> Result<Option<&'a str>> {
    // SAFETY: `value` is alive and the GIL is held (the caller's contract), which is all the
    // None comparison, the type check, `wrong_type` and `utf8_of` need.
    unsafe {
        if value == ffi::Py_None() {
            return Ok(None);
        }
        if !is_str(value) {
            let expected = format!("'{name}' must be a string or None");
            return Err(wrong_type(&expected, value));
        }
        utf8_of(value).map(Some)
    }
}

/// `value` as epoch milliseconds: an int or a finite float, not a bool.
///
/// # Safety
/// The GIL must be held and `value` alive.
unsafe fn timestamp_ms(value: *mut ffi::PyObject) -> Result<f64> {
    let message = "'timestamp' must be epoch milliseconds (an int or a float)";
    // SAFETY: `value` is alive and the GIL is held (the caller's contract). The int and float
    // readers are called only after the matching type check, so they read the number stored in
    // the object and run no Python code.
    unsafe {
        if ffi::Py_TYPE(value) == std::ptr::addr_of_mut!(ffi::PyLong_Type) {
            if let Some(ms) = small_int(value) {
                return Ok(ms as f64);
            }
        }
        if ffi::PyBool_Check(value) != 0 {
            return Err(wrong_type(message, value));
        }
        if ffi::PyLong_Check(value) != 0 {
            let mut overflow = 0;
            let ms = ffi::PyLong_AsLongLongAndOverflow(value, &mut overflow);
            if overflow != 0 {
                return Err(EncodeError::value_error(
                    "'timestamp' is out of the 64-bit range",
                ));
            }
            return Ok(ms as f64);
        }
        if ffi::PyFloat_Check(value) != 0 {
            let ms = ffi::PyFloat_AsDouble(value);
            if !ms.is_finite() || ms.abs() >= 9.2e18 {
                return Err(EncodeError::value_error(
                    "'timestamp' must be a finite number of milliseconds",
                ));
            }
            return Ok(ms);
        }
        Err(wrong_type(message, value))
    }
}

/// The size limit of the event being encoded, which starts at `base` in the buffer.
#[derive(Clone, Copy)]
struct Budget {
    base: usize,
    limit: usize,
}

fn check_limit(out: &[u8], budget: Budget) -> Result<()> {
    // +1 for the closing brace the caller adds.
    let size = out.len() - budget.base + 1;
    if size > budget.limit {
        return Err(too_large(size, budget.limit));
    }
    Ok(())
}

/// The error for an event of `size` bytes of JSON (or more) over `limit`.
pub(crate) fn too_large(size: usize, limit: usize) -> EncodeError {
    EncodeError::value_error(format!(
        "event is {size} bytes of JSON or more, over the max_event_bytes limit of {limit} bytes"
    ))
}

/// A str's UTF-8 (cached inside the str object); a TypeError saying `expected` if `value` is
/// not a str, a ValueError if it cannot be UTF-8.
///
/// # Safety
/// The GIL must be held and `value` alive; the result borrows from `value`.
unsafe fn str_of<'a>(value: *mut ffi::PyObject, expected: &str) -> Result<&'a str> {
    // SAFETY: `value` is alive and the GIL is held (the caller's contract); `utf8_of` is reached
    // only for a str, as it requires.
    unsafe {
        if !is_str(value) {
            return Err(wrong_type(expected, value));
        }
        utf8_of(value)
    }
}

/// A str's UTF-8, or a ValueError if it has none (a lone surrogate).
///
/// # Safety
/// The GIL must be held and `value` must be a live str; the result borrows the str's UTF-8,
/// which lives as long as the str.
unsafe fn utf8_of<'a>(value: *mut ffi::PyObject) -> Result<&'a str> {
    // SAFETY: `value` is alive and the GIL is held (the caller's contract).
    if let Some(ascii) = unsafe { compact_ascii(value) } {
        return Ok(ascii);
    }
    let mut size: ffi::Py_ssize_t = 0;
    // SAFETY: `value` is a live str and the GIL is held; `size` is a live local the call writes.
    let data = unsafe { PyUnicode_AsUTF8AndSize(value, &mut size) };
    if data.is_null() {
        // SAFETY: the GIL is held; this clears the exception the failed call just set.
        unsafe { ffi::PyErr_Clear() };
        return Err(EncodeError::value_error(
            "string is not valid UTF-8 (it has a lone surrogate)",
        ));
    }
    // SAFETY: on success `data` points to `size` bytes of UTF-8 cached in the str, alive as long
    // as the str is, and CPython's UTF-8 of a str is always valid UTF-8.
    Ok(unsafe {
        std::str::from_utf8_unchecked(std::slice::from_raw_parts(data.cast::<u8>(), size as usize))
    })
}

/// Whether `value` is a str: the exact type is compared first, since asking for the type's
/// flags is a function call in the stable ABI.
///
/// # Safety
/// The GIL must be held and `value` alive.
#[inline]
unsafe fn is_str(value: *mut ffi::PyObject) -> bool {
    // SAFETY: `value` is alive (the caller's contract), so its type pointer can be read, and
    // PyUnicode_Check only reads that type's flags.
    unsafe {
        ffi::Py_TYPE(value) == std::ptr::addr_of_mut!(ffi::PyUnicode_Type)
            || ffi::PyUnicode_Check(value) != 0
    }
}

/// Where a compact ASCII str keeps its characters, as an offset from the object (0: unknown).
///
/// Most strings in events are compact ASCII: CPython stores their characters, which are also
/// their UTF-8, right after the object header. Reading them there skips a C-API call per string.
/// The header size differs by version (48 bytes up to 3.11, 40 from 3.12); `enable_fast_strings`
/// sets it only after checking the layout on a real string.
static ASCII_DATA_OFFSET: AtomicUsize = AtomicUsize::new(0);
const LENGTH_OFFSET: usize = 16;
const STATE_OFFSET: usize = 32;
const COMPACT_ASCII_BITS: u32 = (1 << 5) | (1 << 6);

/// The characters of an exact, compact ASCII str, without a C-API call.
///
/// # Safety
/// The GIL must be held and `value` alive; the result borrows the str's characters.
#[inline]
unsafe fn compact_ascii<'a>(value: *mut ffi::PyObject) -> Option<&'a str> {
    let data_offset = ASCII_DATA_OFFSET.load(Ordering::Relaxed);
    if data_offset == 0 {
        return None;
    }
    // SAFETY: `value` is alive (the caller's contract), so its type pointer can be read.
    if unsafe { ffi::Py_TYPE(value) } != std::ptr::addr_of_mut!(ffi::PyUnicode_Type) {
        return None;
    }
    // SAFETY: `value` is a live object of exactly type str, as `ascii_header` requires.
    let (length, is_compact_ascii) = unsafe { ascii_header(value) };
    if !is_compact_ascii {
        return None;
    }
    // SAFETY: `data_offset` is non-zero only once `enable_fast_strings` has checked, on real
    // strings of this interpreter, that a compact ASCII str keeps its `length` characters at that
    // offset inside the object. They are ASCII, hence UTF-8, and live as long as the str.
    Some(unsafe {
        let bytes = std::slice::from_raw_parts(value.cast::<u8>().add(data_offset), length);
        std::str::from_utf8_unchecked(bytes)
    })
}

/// A str's length and whether it is compact ASCII, read from the header fields every CPython 3
/// has at these offsets (the object is at least 40 bytes long).
///
/// # Safety
/// `value` must point to a live object of exactly type str.
unsafe fn ascii_header(value: *mut ffi::PyObject) -> (usize, bool) {
    let base = value.cast::<u8>();
    // SAFETY: a live str object is at least 40 bytes long on every CPython 3 (the caller's
    // contract gives a live str), so the 8 bytes at 16 and the 4 at 32 are inside it; the reads
    // are unaligned ones, which need no alignment.
    let (state, length) = unsafe {
        (
            base.add(STATE_OFFSET).cast::<u32>().read_unaligned(),
            base.add(LENGTH_OFFSET).cast::<isize>().read_unaligned() as usize,
        )
    };
    (length, state & COMPACT_ASCII_BITS == COMPACT_ASCII_BITS)
}

/// Turns the fast string path on if this interpreter's layout is the one we know: the probe
/// strings' headers must say what they are, and their characters must be where we expect them.
/// Whether the fast string path is on (for diagnostics and tests).
pub fn fast_strings_enabled() -> bool {
    ASCII_DATA_OFFSET.load(Ordering::Relaxed) != 0
}

pub fn enable_fast_strings(py: Python<'_>) {
    let version = py.version_info();
    let offset: usize = match (version.major, version.minor) {
        (3, 9..=11) => 48,
        (3, 12..=14) => 40,
        _ => return,
    };
    let probes = [
        "opencode_addons",
        "",
        "a",
        "é not ascii",
        "0123456789abcdef0123456789abcdef0",
    ];
    let agrees = probes.iter().all(|text| {
        let object = pyo3::types::PyString::new(py, text);
        // SAFETY: a live str and the GIL is held; the characters are read only after the header
        // has given the length we expect, so a wrong guess cannot read past the object.
        unsafe {
            let (length, is_compact_ascii) = ascii_header(object.as_ptr());
            if is_compact_ascii != text.is_ascii() || (is_compact_ascii && length != text.len()) {
                return false;
            }
            if !is_compact_ascii {
                return true;
            }
            let read = std::slice::from_raw_parts(object.as_ptr().cast::<u8>().add(offset), length);
            read == text.as_bytes()
        }
    });
    ASCII_DATA_OFFSET.store(if agrees { offset } else { 0 }, Ordering::Relaxed);
}

/// A dict key's UTF-8, or a TypeError naming the key if it is not a str.
///
/// # Safety
/// The GIL must be held and `key` alive; the result borrows from `key`.
unsafe fn key_utf8<'a>(key: *mut ffi::PyObject) -> Result<&'a [u8]> {
    // SAFETY: `key` is alive and the GIL is held (the caller's contract), which is what the type
    // check and `EncodeError::about` need; `utf8_of` is reached only for a str.
    unsafe {
        if !is_str(key) {
            return Err(EncodeError::about(
                key,
                format!("keys must be strings, got {REPR} of type {TYPE_NAME}"),
            ));
        }
        utf8_of(key).map(str::as_bytes)
    }
}

/// Appends `value` as JSON. Exact built-in types are recognised by their type pointer; the
/// common scalars are written here (inlined into each container's loop), the rest by
/// `encode_other`.
///
/// # Safety
/// The GIL must be held and `value` alive.
#[inline(always)]
unsafe fn encode_value(
    value: *mut ffi::PyObject,
    out: &mut Vec<u8>,
    limit: Budget,
    depth: usize,
    keys: &mut Keys<'_>,
) -> Result<()> {
    // SAFETY: `value` is alive and the GIL is held (the caller's contract). Each branch hands it
    // to the encoder of the exact type it just matched, whose contract that meets.
    unsafe {
        let kind = ffi::Py_TYPE(value);
        if kind == std::ptr::addr_of_mut!(ffi::PyUnicode_Type) {
            let text = utf8_of(value)?.as_bytes();
            if text.len() >= DEFER_MIN_LEN && defer(text, out.len(), limit.base, limit.limit) {
                return Ok(());
            }
            write_string(out, text);
            return check_limit(out, limit);
        }
        if kind == std::ptr::addr_of_mut!(ffi::PyLong_Type) {
            if let Some(number) = small_int(value) {
                out.extend_from_slice(itoa::Buffer::new().format(number).as_bytes());
                return Ok(());
            }
        }
        encode_other(value, out, limit, depth, keys)
    }
}

/// `encode_value` for everything but strs and small ints.
///
/// # Safety
/// The GIL must be held and `value` alive.
#[inline(never)]
unsafe fn encode_other(
    value: *mut ffi::PyObject,
    out: &mut Vec<u8>,
    limit: Budget,
    depth: usize,
    keys: &mut Keys<'_>,
) -> Result<()> {
    // SAFETY: `value` is alive and the GIL is held (the caller's contract). Each branch hands it
    // to the encoder of the exact type it just matched, whose contract that meets.
    unsafe {
        let kind = ffi::Py_TYPE(value);
        if kind == std::ptr::addr_of_mut!(ffi::PyLong_Type) {
            return encode_int(value, out);
        }
        if value == ffi::Py_None() {
            out.extend_from_slice(b"null");
            return Ok(());
        }
        if value == ffi::Py_True() {
            out.extend_from_slice(b"true");
            return Ok(());
        }
        if value == ffi::Py_False() {
            out.extend_from_slice(b"false");
            return Ok(());
        }
        if kind == std::ptr::addr_of_mut!(ffi::PyFloat_Type) {
            return encode_float(value, out);
        }
        if kind == std::ptr::addr_of_mut!(ffi::PyDict_Type) {
            return encode_dict(value, out, limit, depth + 1, keys);
        }
        if kind == std::ptr::addr_of_mut!(ffi::PyList_Type)
            || kind == std::ptr::addr_of_mut!(ffi::PyTuple_Type)
        {
            return encode_sequence(value, out, limit, depth + 1, keys);
        }
        encode_subclass(value, out, limit, depth, keys)
    }
}

/// Subclasses of the JSON types (str enums, int enums, OrderedDict, named tuples, ...).
///
/// # Safety
/// The GIL must be held and `value` alive.
unsafe fn encode_subclass(
    value: *mut ffi::PyObject,
    out: &mut Vec<u8>,
    limit: Budget,
    depth: usize,
    keys: &mut Keys<'_>,
) -> Result<()> {
    // SAFETY: `value` is alive and the GIL is held (the caller's contract). Each branch hands it
    // to the encoder of the type family it just checked (a subclass is laid out as its base),
    // whose contract that meets.
    unsafe {
        if ffi::PyUnicode_Check(value) != 0 {
            write_string(out, utf8_of(value)?.as_bytes());
            check_limit(out, limit)
        } else if ffi::PyBool_Check(value) != 0 {
            out.extend_from_slice(if ffi::PyObject_IsTrue(value) == 1 {
                b"true"
            } else {
                b"false"
            });
            Ok(())
        } else if ffi::PyLong_Check(value) != 0 {
            encode_int(value, out)
        } else if ffi::PyFloat_Check(value) != 0 {
            encode_float(value, out)
        } else if ffi::PyDict_Check(value) != 0 {
            encode_dict(value, out, limit, depth + 1, keys)
        } else if ffi::PyList_Check(value) != 0 || ffi::PyTuple_Check(value) != 0 {
            encode_sequence(value, out, limit, depth + 1, keys)
        } else {
            Err(EncodeError::about(
                value,
                format!(
                    "value of type '{TYPE_NAME}' is not JSON serializable (use str, int, float, bool, None, dict, list or tuple)"
                ),
            ))
        }
    }
}

/// Appends an int (signed or unsigned 64-bit).
///
/// # Safety
/// The GIL must be held and `value` must be a live int (or subclass).
unsafe fn encode_int(value: *mut ffi::PyObject, out: &mut Vec<u8>) -> Result<()> {
    // SAFETY: `value` is a live int and the GIL is held (the caller's contract); the readers take
    // the number stored in the object, and PyErr_Occurred/PyErr_Clear only look at and clear
    // the error they may set.
    unsafe {
        let mut overflow = 0;
        let signed = ffi::PyLong_AsLongLongAndOverflow(value, &mut overflow);
        if overflow == 0 {
            if signed == -1 && !ffi::PyErr_Occurred().is_null() {
                ffi::PyErr_Clear();
                return Err(EncodeError::value_error("integer could not be read"));
            }
            out.extend_from_slice(itoa::Buffer::new().format(signed).as_bytes());
            return Ok(());
        }
        if overflow > 0 {
            let unsigned = ffi::PyLong_AsUnsignedLongLong(value);
            if ffi::PyErr_Occurred().is_null() {
                out.extend_from_slice(itoa::Buffer::new().format(unsigned).as_bytes());
                return Ok(());
            }
            ffi::PyErr_Clear();
        }
    }
    Err(EncodeError::value_error(
        "integer is out of the 64-bit range JSON events can hold",
    ))
}

/// Appends a finite float.
///
/// # Safety
/// The GIL must be held and `value` must be a live float (or subclass).
unsafe fn encode_float(value: *mut ffi::PyObject, out: &mut Vec<u8>) -> Result<()> {
    // SAFETY: `value` is a live float and the GIL is held (the caller's contract), so this reads
    // the number stored in it.
    let number = unsafe { ffi::PyFloat_AsDouble(value) };
    if !number.is_finite() {
        return Err(EncodeError::value_error(format!(
            "{number} is not valid JSON (NaN and Infinity are not allowed)"
        )));
    }
    out.extend_from_slice(ryu::Buffer::new().format_finite(number).as_bytes());
    Ok(())
}

fn too_deep() -> EncodeError {
    EncodeError::value_error(format!(
        "nesting deeper than {MAX_DEPTH} levels (or a container that contains itself)"
    ))
}

/// Appends a nested dict.
///
/// # Safety
/// The GIL must be held and `dict` must be a live dict (or subclass).
unsafe fn encode_dict(
    dict: *mut ffi::PyObject,
    out: &mut Vec<u8>,
    limit: Budget,
    depth: usize,
    keys: &mut Keys<'_>,
) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    out.push(b'{');
    let mut first = true;
    // SAFETY: `dict` is a live dict and the GIL is held (the caller's contract). The keys and
    // values it lends are borrowed references that stay alive while the dict is unchanged, and
    // the encoder runs no Python code that could change it; so `write_key` and `encode_value`
    // get live objects.
    unsafe {
        let mut items = DictItems::new(dict);
        while let Some((key, value)) = items.next() {
            if !first {
                out.push(b',');
            }
            first = false;
            write_key(key, out, keys)?;
            encode_value(value, out, limit, depth, keys).map_err(|e| e.at_key(key_name(key)))?;
        }
    }
    out.push(b'}');
    check_limit(out, limit)
}

/// Appends a list or a tuple.
///
/// # Safety
/// The GIL must be held and `sequence` must be a live list or tuple (or subclass).
unsafe fn encode_sequence(
    sequence: *mut ffi::PyObject,
    out: &mut Vec<u8>,
    limit: Budget,
    depth: usize,
    keys: &mut Keys<'_>,
) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    // SAFETY: `sequence` is a live list or tuple and the GIL is held (the caller's contract).
    // The size is read again before each item and the item is fetched by a checked index, as a
    // borrowed reference that stays alive while the sequence is unchanged; the encoder runs no
    // Python code that could change it, so `encode_value` gets a live object.
    unsafe {
        let is_list = ffi::PyList_Check(sequence) != 0;
        out.push(b'[');
        let mut index = 0;
        loop {
            // Re-read the size each time: nothing here runs Python code, but be exact anyway.
            let size = if is_list {
                ffi::PyList_Size(sequence)
            } else {
                ffi::PyTuple_Size(sequence)
            };
            if index as ffi::Py_ssize_t >= size {
                break;
            }
            let item = if is_list {
                ffi::PyList_GetItem(sequence, index as ffi::Py_ssize_t)
            } else {
                ffi::PyTuple_GetItem(sequence, index as ffi::Py_ssize_t)
            };
            if item.is_null() {
                ffi::PyErr_Clear();
                break;
            }
            if index > 0 {
                out.push(b',');
            }
            encode_value(item, out, limit, depth, keys).map_err(|e| e.at_index(index))?;
            index += 1;
        }
    }
    out.push(b']');
    check_limit(out, limit)
}

/// A TypeError "`message`, got <type of value>".
///
/// # Safety
/// The GIL must be held and `value` alive.
unsafe fn wrong_type(message: &str, value: *mut ffi::PyObject) -> EncodeError {
    // SAFETY: the caller's contract (GIL held, `value` alive) is `about`'s.
    unsafe { EncodeError::about(value, format!("{message}, got {TYPE_NAME}")) }
}

/// Turns any mapping into a dict we own (a dict or subclass is used as is).
pub fn as_dict<'py>(event: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
    if let Ok(dict) = event.cast::<PyDict>() {
        return Ok(dict.clone());
    }
    let py = event.py();
    let mapping = py.import("collections.abc")?.getattr("Mapping")?;
    if !event.is_instance(&mapping)? {
        let name = event
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into());
        return Err(PyTypeError::new_err(format!(
            "event must be a mapping (a dict), got {name}"
        )));
    }
    let dict = PyDict::new(py);
    dict.update(event.cast::<pyo3::types::PyMapping>()?)?;
    Ok(dict)
}

/// One encoded event: where its JSON is in the batch buffer, and its header fields.
#[derive(Default)]
pub(crate) struct Encoded<'a> {
    pub(crate) end: usize,
    pub(crate) captured: Captured<'a>,
}

/// Encodes `events` back to back into `buffer` (each closed with `}`), or fails naming the event.
pub(crate) fn encode_batch<'a>(
    events: &'a [Bound<'_, PyDict>],
    buffer: &mut Vec<u8>,
    limit: usize,
    close: bool,
    defaults: &'a FieldDefaults,
) -> PyResult<Vec<Encoded<'a>>> {
    encode_batch_part::<false>(events, 0, usize::MAX, buffer, limit, close, defaults)
}

/// `encode_batch_part` (not closing events) with every str of `DEFER_MIN_LEN` bytes or more
/// left out of `buffer` (`deferred_strings.rs`), their bytes counted towards `budget`. Returns
/// the events and, in order, where each string left out goes in `buffer` and its UTF-8. An
/// event's size is checked against `limit` only as far as its strings' least escaped size:
/// the caller checks it again once they are escaped.
///
/// # Safety
/// The strings returned borrow the events' strs: the caller must use them only while `events`
/// are alive and no Python code runs (the GIL held and not released).
pub(crate) unsafe fn encode_batch_part_deferring<'a>(
    events: &'a [Bound<'_, PyDict>],
    from: usize,
    budget: usize,
    buffer: &mut Vec<u8>,
    limit: usize,
    defaults: &'a FieldDefaults,
) -> PyResult<(Vec<Encoded<'a>>, Vec<LeftOut<'a>>)> {
    let deferring = Deferring::start();
    let encoded = encode_batch_part::<true>(events, from, budget, buffer, limit, false, defaults)?;
    // SAFETY: the caller's contract is `finish`'s.
    Ok((encoded, unsafe { deferring.finish() }))
}

/// Encodes `events[from..]` into `buffer` as `encode_batch` does, stopping after the event
/// that takes the buffer to `budget` bytes or more (errors name the event by its place in the
/// whole batch); with `DEFERRING`, the bytes of strings left out count towards `budget`
/// (`encode_batch_part_deferring`). The part ends at `from` plus the length of what it returns.
#[inline]
pub(crate) fn encode_batch_part<'a, const DEFERRING: bool>(
    events: &'a [Bound<'_, PyDict>],
    from: usize,
    budget: usize,
    buffer: &mut Vec<u8>,
    limit: usize,
    close: bool,
    defaults: &'a FieldDefaults,
) -> PyResult<Vec<Encoded<'a>>> {
    let mut encoded: Vec<Encoded<'a>> = Vec::with_capacity(events.len() - from);
    for (offset, event) in events[from..].iter().enumerate() {
        let index = from + offset;
        // Encoded straight into its place (an event that fails ends the batch).
        encoded.push(Encoded::default());
        let last = encoded.len() - 1;
        let slot = &mut encoded[last];
        // SAFETY: `event` is a dict (its type says so) that `events` keeps alive, and the GIL is
        // held. The strings `captured` borrows stay alive while no Python code runs: none does
        // until the caller locks, and `lock_for_batch` copies them before a wait that releases
        // the GIL (a caller that encodes under the lock never releases it).
        unsafe { encode_event_into(event.as_ptr(), buffer, limit, defaults, &mut slot.captured) }
            .map_err(|e| e.into_pyerr((events.len() > 1).then_some(index)))?;
        if close {
            buffer.push(b'}');
        }
        slot.end = buffer.len();
        let used = match DEFERRING {
            true => buffer.len() + deferred_bytes(),
            false => buffer.len(),
        };
        if used >= budget {
            break;
        }
    }
    Ok(encoded)
}

/// The batch's events as dicts we own, converting other mappings.
pub(crate) fn collect_dicts<'py>(events: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyDict>>> {
    let mut dicts = Vec::new();
    for (index, item) in events.try_iter()?.enumerate() {
        let item = item?;
        dicts.push(as_dict(&item).map_err(|e| {
            PyTypeError::new_err(format!("event {index}: {}", e.value(events.py())))
        })?);
    }
    Ok(dicts)
}
