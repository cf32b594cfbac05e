//! Long strings the encoder leaves out of a chunk, for `side_escape` to escape on another
//! thread.
//!
//! While a chunk of a large batch is encoded (`encode_batch_part_deferring`), a str of
//! `DEFER_MIN_LEN` bytes or more is not escaped into the buffer: the encoder notes where it
//! belongs and its UTF-8 here, and the buffer goes on without it (the chunk's skeleton). A
//! thread-local keeps the encoder's recursive functions free of one more argument: it is
//! looked up only for long strings, whose escaping costs a thousand times more.

use std::cell::RefCell;

/// Strings at least this long are left out. Shorter ones escape in under half a microsecond,
/// less than a job's bookkeeping is worth; the large shape's tool outputs are 4-64 KiB.
pub(crate) const DEFER_MIN_LEN: usize = 4 << 10;

/// A string left out: where it goes in the skeleton, and its UTF-8.
pub(crate) type LeftOut<'a> = (usize, &'a [u8]);

/// The long strings of the chunk being encoded, and the current event's share of them.
#[derive(Default)]
struct Deferral {
    /// Where each string goes in the skeleton, and its UTF-8 (pointer and length).
    holes: Vec<(usize, *const u8, usize)>,
    /// The strings' bytes, unescaped.
    bytes: usize,
    /// Where the event being encoded starts in the skeleton.
    event_base: usize,
    /// The least its left-out strings will take escaped (each at least its text and quotes).
    event_least: usize,
}

thread_local! {
    static DEFERRAL: RefCell<Option<Deferral>> = const { RefCell::new(None) };
}

/// Leaves `text` out of the skeleton if a chunk is being encoded with deferral and the event
/// would stay within `limit` bytes with it escaped at its least (an event that may be too
/// large is encoded inline, so the encoder's own limit check still stops it early). `at` is
/// where the string would go, `base` where its event starts. Returns whether it was left out.
#[cold]
#[inline(never)]
pub(crate) fn defer(text: &[u8], at: usize, base: usize, limit: usize) -> bool {
    DEFERRAL.with(|cell| {
        let Ok(mut slot) = cell.try_borrow_mut() else {
            return false;
        };
        let Some(deferral) = slot.as_mut() else {
            return false;
        };
        if deferral.event_base != base {
            deferral.event_base = base;
            deferral.event_least = 0;
        }
        let least = text.len() + 2;
        // +1 for the event's closing brace, as `check_limit` counts.
        if at - base + deferral.event_least + least + 1 > limit {
            return false;
        }
        deferral.event_least += least;
        deferral.bytes += text.len();
        deferral.holes.push((at, text.as_ptr(), text.len()));
        true
    })
}

/// Bytes of the strings left out so far in this chunk (unescaped).
pub(crate) fn deferred_bytes() -> usize {
    DEFERRAL.with(|cell| {
        cell.try_borrow()
            .ok()
            .and_then(|slot| slot.as_ref().map(|d| d.bytes))
            .unwrap_or(0)
    })
}

/// Deferral on for this thread while it lives; `finish` turns it off and returns the holes.
pub(crate) struct Deferring(());

impl Deferring {
    pub(crate) fn start() -> Self {
        DEFERRAL.with(|cell| {
            if let Ok(mut slot) = cell.try_borrow_mut() {
                *slot = Some(Deferral::default());
            }
        });
        Self(())
    }

    /// The strings left out, in skeleton order: where each goes and its UTF-8.
    ///
    /// # Safety
    /// Each text borrows a str the encoder was given: the caller must use it only while that
    /// str is alive and unchanged, that is while the batch's events are kept alive and no
    /// Python code runs (the GIL is held throughout and not released).
    pub(crate) unsafe fn finish<'a>(self) -> Vec<LeftOut<'a>> {
        let deferral = take();
        deferral
            .map(|d| d.holes)
            .unwrap_or_default()
            .into_iter()
            // SAFETY: each pointer and length came from a live str's UTF-8 (`defer` is given
            // such text); the caller's contract keeps that str alive and unchanged while used.
            .map(|(at, text, len)| (at, unsafe { std::slice::from_raw_parts(text, len) }))
            .collect()
    }
}

impl Drop for Deferring {
    fn drop(&mut self) {
        take();
    }
}

fn take() -> Option<Deferral> {
    DEFERRAL.with(|cell| cell.try_borrow_mut().ok().and_then(|mut slot| slot.take()))
}
