//! Reading dicts and ints the way CPython lays them out, behind a runtime check.
//!
//! The limited API reaches a dict's items through `PyDict_Next` and an int's value through
//! `PyLong_AsLongLongAndOverflow`: function calls that, per item, cost more than the rest of
//! encoding it. Every CPython this module is built for (3.9 to 3.14) keeps a dict's items in one
//! array of entries and a small int's value in one or two 30-bit digits, at offsets that differ
//! by version. `enable` picks the layout for the running version and turns each reader on only
//! after it has read probe objects exactly as the C API reads them; on any other interpreter, or
//! if a probe disagrees, the encoder keeps using the C API. Both readers are only ever used on
//! objects of exactly type dict and int, whose layout the probes checked.

use std::sync::atomic::{AtomicU8, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyDictMethods, PyInt};

/// Which dict layout the running interpreter has (0: unknown, use the C API).
static DICT_LAYOUT: AtomicU8 = AtomicU8::new(0);
/// Dict keys objects with `dk_size` and `dk_lookup` (3.9, 3.10).
const DICT_SIZED: u8 = 1;
/// Dict keys objects with `dk_log2_size`, `dk_log2_index_bytes` and `dk_kind` (3.11 to 3.14).
const DICT_LOG2: u8 = 2;

/// Which int layout the running interpreter has (0: unknown, use the C API).
static INT_LAYOUT: AtomicU8 = AtomicU8::new(0);
/// `ob_size` (signed digit count) then the digits (3.9 to 3.11).
const INT_SIZED: u8 = 1;
/// `lv_tag` (digit count << 3 | sign) then the digits (3.12 to 3.14).
const INT_TAGGED: u8 = 2;

// Offsets common to the layouts above (64-bit, non-debug builds): the object header is 16 bytes.
const DICT_MA_USED: usize = 16;
const DICT_MA_KEYS: usize = 32;
const DICT_MA_VALUES: usize = 40;
const INT_SIZE_OR_TAG: usize = 16;
const INT_DIGITS: usize = 24;

/// Reads a field of type `T` at `offset` bytes into the object at `base`.
///
/// # Safety
/// `base + offset .. + size_of::<T>()` must be inside a live allocation.
#[inline(always)]
unsafe fn field<T: Copy>(base: *const u8, offset: usize) -> T {
    // SAFETY: the caller vouches for the bytes; the read is unaligned, which needs no alignment.
    unsafe { base.add(offset).cast::<T>().read_unaligned() }
}

/// The entries of a combined dict: where they start, how far apart, and how many slots.
#[derive(Clone, Copy)]
struct Entries {
    first: *const u8,
    /// Bytes per entry: 24 (hash, key, value) or 16 (key, value: all keys are str, 3.11+).
    stride: usize,
    /// Offset of the key in an entry (the value follows it).
    key: usize,
    /// Slots used so far, deleted ones included (their value is NULL).
    count: usize,
}

/// The entries of `dict` read through `layout`, or None if it is not a combined dict in a shape
/// this reader knows (the caller then uses the C API).
///
/// # Safety
/// The GIL must be held and `dict` must be a live object of exactly type dict; `layout` must be
/// the one `enable` found for this interpreter (or one being probed on dicts that `probe_dict`
/// made, whose shape it bounds before any entry is read).
#[inline(always)]
unsafe fn entries(dict: *mut ffi::PyObject, layout: u8) -> Option<Entries> {
    let object = dict.cast::<u8>();
    // SAFETY: a dict object is at least 48 bytes long in every layout here, so the fields at 32
    // and 40 are inside it; a combined dict's keys object starts with the header read below and
    // is followed by its indices and entries, whose sizes the header gives.
    unsafe {
        if !field::<*const u8>(object, DICT_MA_VALUES).is_null() {
            return None; // a split table (an instance's __dict__)
        }
        let keys = field::<*const u8>(object, DICT_MA_KEYS);
        match layout {
            DICT_SIZED => {
                let size = field::<isize>(keys, 8) as usize;
                let count = field::<isize>(keys, 32) as usize;
                let index_bytes = if size <= 0xff {
                    1
                } else if size <= 0xffff {
                    2
                } else if size <= 0xffff_ffff {
                    4
                } else {
                    8
                };
                Some(Entries {
                    first: keys.add(40 + size * index_bytes),
                    stride: 24,
                    key: 8,
                    count,
                })
            }
            DICT_LOG2 => {
                let log2_index_bytes = field::<u8>(keys, 9);
                let kind = field::<u8>(keys, 10);
                let count = field::<isize>(keys, 24) as usize;
                let (stride, key) = match kind {
                    0 => (24, 8),
                    1 => (16, 0),
                    _ => return None,
                };
                Some(Entries {
                    first: keys.add(32 + (1usize << log2_index_bytes)),
                    stride,
                    key,
                    count,
                })
            }
            _ => None,
        }
    }
}

/// The items of a dict, in the order `PyDict_Next` gives them, read from its entries when the
/// layout is known and through `PyDict_Next` otherwise.
pub(crate) struct DictItems {
    dict: *mut ffi::PyObject,
    entries: Option<Entries>,
    index: usize,
    position: ffi::Py_ssize_t,
}

impl DictItems {
    /// # Safety
    /// The GIL must be held and `dict` must be a live dict (or subclass) that stays alive and
    /// unchanged while the items are read (the encoder runs no Python code).
    #[inline(always)]
    pub(crate) unsafe fn new(dict: *mut ffi::PyObject) -> Self {
        let layout = DICT_LAYOUT.load(Ordering::Relaxed);
        // SAFETY: `dict` is alive and the GIL is held (the caller's contract); its entries are
        // read only if it is exactly a dict and the layout was checked by `enable`.
        let entries = unsafe {
            if layout != 0 && ffi::Py_TYPE(dict) == std::ptr::addr_of_mut!(ffi::PyDict_Type) {
                entries(dict, layout)
            } else {
                None
            }
        };
        Self {
            dict,
            entries,
            index: 0,
            position: 0,
        }
    }

    /// The next (key, value), both borrowed from the dict.
    #[inline(always)]
    pub(crate) fn next(&mut self) -> Option<(*mut ffi::PyObject, *mut ffi::PyObject)> {
        match &self.entries {
            Some(entries) => {
                while self.index < entries.count {
                    // SAFETY: `index < count`, the number of entry slots in use, all inside the
                    // keys object of the live, unchanged dict (`new`'s contract); an entry is
                    // its key then its value.
                    let (key, value) = unsafe {
                        let entry = entries.first.add(self.index * entries.stride + entries.key);
                        (
                            field::<*mut ffi::PyObject>(entry, 0),
                            field::<*mut ffi::PyObject>(entry, 8),
                        )
                    };
                    self.index += 1;
                    if !value.is_null() {
                        return Some((key, value));
                    }
                }
                None
            }
            None => {
                let mut key = std::ptr::null_mut();
                let mut value = std::ptr::null_mut();
                // SAFETY: `dict` is a live dict and the GIL is held (`new`'s contract); the key
                // and value PyDict_Next lends are borrowed from the unchanged dict.
                let found = unsafe {
                    ffi::PyDict_Next(self.dict, &mut self.position, &mut key, &mut value)
                };
                (found != 0).then_some((key, value))
            }
        }
    }
}

/// The value of an exact int with at most two 30-bit digits, read from the object (None: the
/// layout is unknown or the int is larger; use the C API).
///
/// # Safety
/// The GIL must be held and `value` must be a live object of exactly type int.
#[inline(always)]
pub(crate) unsafe fn small_int(value: *mut ffi::PyObject) -> Option<i64> {
    let layout = INT_LAYOUT.load(Ordering::Relaxed);
    if layout == 0 {
        return None;
    }
    // SAFETY: `value` is a live int (the caller's contract) of a layout `enable` checked: the
    // size or tag field is at 16, and the digits it announces (read only when 1 or 2) follow at
    // 24; an int object always has room for at least one digit.
    unsafe { read_int(value.cast::<u8>(), layout) }
}

/// See `small_int`.
///
/// # Safety
/// `object` must be a live int laid out as `layout` says.
#[inline(always)]
unsafe fn read_int(object: *const u8, layout: u8) -> Option<i64> {
    // SAFETY: as `small_int` states.
    unsafe {
        let (digits, negative) = if layout == INT_SIZED {
            let size = field::<isize>(object, INT_SIZE_OR_TAG);
            (size.unsigned_abs(), size < 0)
        } else {
            let tag = field::<usize>(object, INT_SIZE_OR_TAG);
            (tag >> 3, tag & 3 == 2)
        };
        let magnitude = match digits {
            0 => 0,
            1 => i64::from(field::<u32>(object, INT_DIGITS)),
            2 => {
                i64::from(field::<u32>(object, INT_DIGITS))
                    | (i64::from(field::<u32>(object, INT_DIGITS + 4)) << 30)
            }
            _ => return None,
        };
        Some(if negative { -magnitude } else { magnitude })
    }
}

/// Whether reading dicts and ints from their layout is on (for diagnostics and tests).
pub fn fast_dicts_enabled() -> bool {
    DICT_LAYOUT.load(Ordering::Relaxed) != 0
}

pub fn fast_ints_enabled() -> bool {
    INT_LAYOUT.load(Ordering::Relaxed) != 0
}

/// Turns each reader on if this interpreter's version has a layout we know and the probes read
/// through it agree with the C API.
pub fn enable(py: Python<'_>) {
    if std::mem::size_of::<usize>() != 8 {
        return;
    }
    let version = py.version_info();
    let (dict_layout, int_layout) = match (version.major, version.minor) {
        (3, 9..=10) => (DICT_SIZED, INT_SIZED),
        (3, 11) => (DICT_LOG2, INT_SIZED),
        (3, 12..=14) => (DICT_LOG2, INT_TAGGED),
        _ => return,
    };
    if probe_dicts(py, dict_layout).unwrap_or(false) {
        DICT_LAYOUT.store(dict_layout, Ordering::Relaxed);
    }
    if probe_ints(py, int_layout).unwrap_or(false) {
        INT_LAYOUT.store(int_layout, Ordering::Relaxed);
    }
}

/// Whether `layout` reads dicts of every shape the encoder meets as `PyDict_Next` does.
fn probe_dicts(py: Python<'_>, layout: u8) -> PyResult<bool> {
    let mut probes = vec![PyDict::new(py)];
    let small = PyDict::new(py);
    small.set_item("type", "t")?;
    small.set_item("payload", 1)?;
    probes.push(small);
    // Deleted entries (their value is NULL), non-str keys (the general kind), 2-byte indices.
    let holes = PyDict::new(py);
    for index in 0..12 {
        holes.set_item(format!("k{index}"), index)?;
    }
    for index in (0..12).step_by(3) {
        holes.del_item(format!("k{index}"))?;
    }
    probes.push(holes);
    let general = PyDict::new(py);
    general.set_item("a", 1)?;
    general.set_item(7, "b")?;
    probes.push(general);
    let large = PyDict::new(py);
    for index in 0..400 {
        large.set_item(format!("key{index}"), index)?;
    }
    probes.push(large);
    for dict in &probes {
        if !probe_dict(dict, layout) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Reads one probe through `layout` after checking that what its header says is plausible, so
/// a wrong layout is caught before it could send a read outside the dict.
fn probe_dict(dict: &Bound<'_, PyDict>, layout: u8) -> bool {
    let pointer = dict.as_ptr();
    let expected: Vec<(usize, usize)> = {
        let mut items = Vec::new();
        let mut position: ffi::Py_ssize_t = 0;
        let mut key = std::ptr::null_mut();
        let mut value = std::ptr::null_mut();
        // SAFETY: `dict` is a live dict and the GIL is held (it is bound); nothing changes it.
        while unsafe { ffi::PyDict_Next(pointer, &mut position, &mut key, &mut value) } != 0 {
            items.push((key as usize, value as usize));
        }
        items
    };
    // SAFETY: `dict` is a live dict made by `probe_dicts`, so its header fields up to 48 bytes
    // exist. The keys object is dereferenced only for the header fields every layout here has
    // (its first 40 bytes, allocated for any keys object), and the entries only after the header
    // has been found consistent with the dict's length (`ma_used`) and a power-of-two size.
    unsafe {
        let object = pointer.cast::<u8>();
        let used = field::<isize>(object, DICT_MA_USED);
        if used != dict.len() as isize {
            return false;
        }
        if !field::<*const u8>(object, DICT_MA_VALUES).is_null() {
            // 3.9 and 3.10 give a new empty dict the shared empty keys and a shared values
            // array: `entries` refuses it, so the encoder reads it through the C API. Any
            // other dict made here must be combined (values NULL), or the layout is wrong.
            return used == 0 && entries(pointer, layout).is_none();
        }
        let keys = field::<*const u8>(object, DICT_MA_KEYS);
        if keys.is_null() {
            return false;
        }
        let (size, count) = match layout {
            DICT_SIZED => (
                field::<isize>(keys, 8) as usize,
                field::<isize>(keys, 32) as usize,
            ),
            DICT_LOG2 => {
                let log2_size = field::<u8>(keys, 8);
                let log2_index_bytes = field::<u8>(keys, 9);
                let index_bytes = 1usize << log2_index_bytes.saturating_sub(log2_size);
                let expected_bytes = match log2_size {
                    0..=7 => 1,
                    8..=15 => 2,
                    16..=31 => 4,
                    _ => 8,
                };
                if log2_size >= 32 || index_bytes != expected_bytes || field::<u8>(keys, 10) > 1 {
                    return false;
                }
                (1usize << log2_size, field::<isize>(keys, 24) as usize)
            }
            _ => return false,
        };
        if !size.is_power_of_two() || size > 1 << 20 || count > size || count < expected.len() {
            return false;
        }
        let mut items = DictItems {
            dict: pointer,
            entries: entries(pointer, layout),
            index: 0,
            position: 0,
        };
        if items.entries.is_none() {
            return false;
        }
        let mut got = Vec::new();
        while let Some((key, value)) = items.next() {
            got.push((key as usize, value as usize));
            if got.len() > expected.len() {
                return false;
            }
        }
        got == expected
    }
}

/// Whether `layout` reads ints as `PyLong_AsLongLongAndOverflow` does.
fn probe_ints(py: Python<'_>, layout: u8) -> PyResult<bool> {
    let values: [i64; 12] = [
        0,
        1,
        -1,
        7,
        (1 << 30) - 1,
        1 << 30,
        -(1 << 30),
        1_750_000_000_000,
        -1_750_000_000_123,
        (1 << 60) - 1,
        -((1 << 60) - 1),
        123_456_789,
    ];
    for value in values {
        let object = PyInt::new(py, value);
        if object.get_type().as_ptr() != std::ptr::addr_of_mut!(ffi::PyLong_Type).cast() {
            return Ok(false);
        }
        // SAFETY: a live int of the running interpreter; the size or tag field at 16 exists in
        // every int object, and digits are read only when that field announces one or two of
        // them, which are then part of the object. A wrong layout reads a different number of
        // digits or a different sign, which the comparison catches: reading a digit past a
        // shorter int stays within the 32-byte minimum allocation of an int object.
        let read = unsafe { read_int(object.as_ptr().cast::<u8>(), layout) };
        if read != Some(value) {
            return Ok(false);
        }
    }
    // Larger ints must be refused, never misread.
    let big = py.eval(c"2 ** 70", None, None)?;
    // SAFETY: as above, a live int; a three-digit int makes the reader return None before it
    // reads any digit.
    Ok(unsafe { read_int(big.as_ptr().cast::<u8>(), layout) }.is_none())
}
