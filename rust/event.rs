//! The event record: indexed fields, ids, timestamps and the errors of the core.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// Default upper bound of one event's compact JSON, in bytes.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;
/// Deepest nesting accepted in an event (also what stops a cyclic structure).
pub const MAX_DEPTH: usize = 128;
/// Highest sequence number a store hands out or accepts from a file (`i64::MAX`, so every
/// JSON reader can hold it exactly and `seq + 1` never overflows).
pub const MAX_SEQ: u64 = i64::MAX as u64;
/// Longest integer literal accepted in a line (CPython's default limit for `int(str)`), so
/// every loaded event can be turned back into a dict.
pub const MAX_INT_DIGITS: usize = 4300;
/// Length of a generated id: 9 base36 digits of epoch ms, `_`, 16 hex digits.
pub const EVENT_ID_LEN: usize = 26;

/// The fields of an event that headers index, borrowed from wherever the event came from.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EventFields<'a> {
    pub event_type: &'a str,
    pub stream_id: Option<&'a str>,
    pub actor: Option<&'a str>,
    pub correlation_id: Option<&'a str>,
    /// Epoch milliseconds (the event's `timestamp`; floats keep their fraction, so inclusive
    /// bounds compare exactly).
    pub timestamp: f64,
}

/// Errors of the core; the Python bindings map each kind to its exception.
#[derive(Debug)]
pub enum CoreError {
    /// The event or an argument is not acceptable; nothing was changed.
    Invalid(String),
    /// The event's JSON is larger than a configured limit; nothing was changed.
    TooLarge {
        size: usize,
        limit: usize,
        what: &'static str,
    },
    /// Another writer holds the file's lock.
    Locked(PathBuf),
    /// The operating system refused a read or write.
    Io { context: String, source: io::Error },
    /// The store was closed.
    Closed,
}

impl CoreError {
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        CoreError::Io {
            context: context.into(),
            source,
        }
    }

    /// The same error with the file it concerns named first.
    pub fn in_file(self, path: &std::path::Path) -> Self {
        match self {
            CoreError::Io { context, source } => CoreError::Io {
                context: format!("{}: {context}", path.display()),
                source,
            },
            other => other,
        }
    }
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::Invalid(message) => f.write_str(message),
            CoreError::TooLarge { size, limit, what } => {
                write!(
                    f,
                    "event is {size} bytes of JSON, over the {what} of {limit} bytes"
                )
            }
            CoreError::Locked(path) => write!(
                f,
                "{} is locked by another writer (one writer per file; close the other store first)",
                path.display()
            ),
            CoreError::Io { context, source } => write!(f, "{context}: {source}"),
            CoreError::Closed => f.write_str("the store is closed"),
        }
    }
}

impl std::error::Error for CoreError {}

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(elapsed) => elapsed.as_millis() as i64,
        Err(before) => -(before.duration().as_millis() as i64),
    }
}

thread_local! {
    static RANDOM_STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer we own.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    let mut value = u64::from_le_bytes(bytes);
    if got != bytes.len() as isize {
        // No kernel randomness: time and thread-local address still differ per thread/process.
        let local = 0u8;
        value = (now_ms() as u64)
            ^ ((&local as *const u8 as u64) << 16)
            ^ u64::from(std::process::id());
    }
    value | 1
}

/// 64 random bits for ids (xorshift64*, seeded per thread from the kernel).
pub fn random_u64() -> u64 {
    RANDOM_STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
const HEX: &[u8; 16] = b"0123456789abcdef";

/// The reference's event id: `<epoch ms in base36, 9 chars>_<16 hex chars>`.
pub fn new_event_id(timestamp_ms: i64) -> [u8; EVENT_ID_LEN] {
    let mut id = [b'0'; EVENT_ID_LEN];
    let mut ms = timestamp_ms.max(0) as u64;
    for slot in id[..9].iter_mut().rev() {
        *slot = BASE36[(ms % 36) as usize];
        ms /= 36;
    }
    id[9] = b'_';
    let mut bits = random_u64();
    for slot in id[10..].iter_mut().rev() {
        *slot = HEX[(bits & 0xf) as usize];
        bits >>= 4;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_id_has_reference_format() {
        let id = new_event_id(1_700_000_000_000);
        let text = std::str::from_utf8(&id).unwrap();
        assert_eq!(text.len(), 26);
        let (ms, rest) = text.split_at(9);
        assert_eq!(i64::from_str_radix(ms, 36).unwrap(), 1_700_000_000_000);
        assert_eq!(&rest[..1], "_");
        assert!(rest[1..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }

    #[test]
    fn event_ids_differ() {
        let a = new_event_id(5);
        let b = new_event_id(5);
        assert_ne!(a, b);
    }

    #[test]
    fn errors_say_what_was_wrong() {
        let err = CoreError::TooLarge {
            size: 10,
            limit: 5,
            what: "max_event_bytes limit",
        };
        assert_eq!(
            err.to_string(),
            "event is 10 bytes of JSON, over the max_event_bytes limit of 5 bytes"
        );
        let err = CoreError::Locked(PathBuf::from("/x/y.jsonl"));
        assert!(err.to_string().starts_with("/x/y.jsonl is locked"));
    }
}
