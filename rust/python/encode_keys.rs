//! Dict keys the encoder has seen before, by object: their ready-made `"key":` JSON and the role
//! an event's top-level key plays.
//!
//! Events built by one program use the same key objects again and again (literals, interned
//! names, the keys of a decoder's cache). Finding a key by its address and copying its JSON skips
//! the UTF-8 read, the escape scan and the name comparisons each key otherwise costs. Every key
//! held keeps a strong reference, so while it is held no other object can take its address: the
//! same address is the same (immutable) string.

use std::cell::RefCell;

use pyo3::ffi;

use crate::keys::token_for;

/// What a top-level key means to the encoder (nested keys are always plain).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Plain,
    Type,
    StreamId,
    Actor,
    CorrelationId,
    Id,
    Timestamp,
    /// Left out: the store assigns `seq`.
    Seq,
}

impl Role {
    #[inline]
    pub(crate) fn of(name: &[u8]) -> Role {
        match name {
            b"type" => Role::Type,
            b"stream_id" => Role::StreamId,
            b"actor" => Role::Actor,
            b"correlation_id" => Role::CorrelationId,
            b"id" => Role::Id,
            b"timestamp" => Role::Timestamp,
            b"seq" => Role::Seq,
            _ => Role::Plain,
        }
    }
}

/// A key's role and its token byte (0: none), as found by `write_key`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyInfo {
    pub(crate) role: Role,
    pub(crate) token: u8,
}

impl KeyInfo {
    #[inline]
    pub(crate) fn of(name: &[u8]) -> KeyInfo {
        KeyInfo {
            role: Role::of(name),
            token: token_for(name).unwrap_or(0),
        }
    }
}

/// Room for `"key":` of the longest cached key.
const JSON_ROOM: usize = 32;
/// Longest key kept (its JSON adds a quote, a quote and a colon).
const MAX_KEY: usize = JSON_ROOM - 3;
/// Sets of two slots: two keys whose addresses share a set do not push each other out.
const SETS: usize = 128;

#[derive(Clone, Copy)]
struct Slot {
    /// A key we hold a strong reference to (null: empty).
    object: *mut ffi::PyObject,
    /// `"key":` followed by zeros.
    json: [u8; JSON_ROOM],
    json_len: u8,
    info: KeyInfo,
}

const EMPTY: Slot = Slot {
    object: std::ptr::null_mut(),
    json: [0; JSON_ROOM],
    json_len: 0,
    info: KeyInfo {
        role: Role::Plain,
        token: 0,
    },
};

/// A two-way set-associative cache of keys by address.
pub(crate) struct KeyCache {
    slots: [Slot; 2 * SETS],
}

thread_local! {
    // Holds strong references; they are released when replaced (with the GIL held) and
    // deliberately leaked at thread exit, when the interpreter may already be gone (as the
    // decoder's key cache does).
    static CACHE: RefCell<KeyCache> = const { RefCell::new(KeyCache { slots: [EMPTY; 2 * SETS] }) };
}

/// Runs `f` with this thread's key cache (None if it is in use further up the stack).
pub(crate) fn with_key_cache<R>(f: impl FnOnce(Option<&mut KeyCache>) -> R) -> R {
    CACHE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut cache) => f(Some(&mut cache)),
        Err(_) => f(None),
    })
}

/// The first of the two slots `key` may be in.
#[inline(always)]
fn set_of(key: *mut ffi::PyObject) -> usize {
    let address = key as usize;
    2 * (((address >> 4) ^ (address >> 11)) % SETS)
}

impl KeyCache {
    /// Appends the cached `"key":` of `key` to `out` and returns its info, if `key` is held.
    #[inline(always)]
    pub(crate) fn write(&self, key: *mut ffi::PyObject, out: &mut Vec<u8>) -> Option<KeyInfo> {
        let set = set_of(key);
        let slot = if self.slots[set].object == key {
            &self.slots[set]
        } else if self.slots[set + 1].object == key {
            &self.slots[set + 1]
        } else {
            return None;
        };
        out.reserve(JSON_ROOM);
        let len = out.len();
        // SAFETY: `reserve` left at least JSON_ROOM bytes of capacity after `len`, so the fixed
        // 32-byte copy stays inside the allocation; the first `json_len` of them are the key's
        // JSON, so they are initialized when the length is set past them.
        unsafe {
            std::ptr::copy_nonoverlapping(slot.json.as_ptr(), out.as_mut_ptr().add(len), JSON_ROOM);
            out.set_len(len + slot.json_len as usize);
        }
        Some(slot.info)
    }

    /// Keeps `key`, an exact str whose UTF-8 is `name`, if its JSON is the name between quotes
    /// and it is short enough. It takes the first slot of its set, whose key moves to the second,
    /// whose key is released.
    ///
    /// # Safety
    /// The GIL must be held and `key` must be a live object of exactly type str with UTF-8 `name`.
    pub(crate) unsafe fn keep(&mut self, key: *mut ffi::PyObject, name: &[u8], info: KeyInfo) {
        if name.len() > MAX_KEY
            || !name
                .iter()
                .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
        {
            return;
        }
        let mut json = [0u8; JSON_ROOM];
        json[0] = b'"';
        json[1..=name.len()].copy_from_slice(name);
        json[name.len() + 1] = b'"';
        json[name.len() + 2] = b':';
        let set = set_of(key);
        let old = self.slots[set + 1].object;
        self.slots[set + 1] = self.slots[set];
        self.slots[set] = Slot {
            object: key,
            json,
            json_len: (name.len() + 3) as u8,
            info,
        };
        // SAFETY: the GIL is held and `key` is alive (the caller's contract), so taking a strong
        // reference is sound. `old`, if any, is a reference this cache owned; releasing it can
        // free only an exact str, whose deallocation runs no Python code.
        unsafe {
            ffi::Py_INCREF(key);
            if !old.is_null() {
                ffi::Py_DECREF(old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_tokens_of_known_keys() {
        assert_eq!(Role::of(b"type"), Role::Type);
        assert_eq!(Role::of(b"seq"), Role::Seq);
        assert_eq!(Role::of(b"payload"), Role::Plain);
        assert_eq!(
            KeyInfo::of(b"payload").token,
            token_for(b"payload").unwrap()
        );
        assert_eq!(KeyInfo::of(b"other").token, 0);
    }
}
