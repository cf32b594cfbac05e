//! The chunks of a large batch after its head (`JsonlStore::write_in_chunks`): each is encoded
//! with its long strings left out (`deferred_strings.rs`), which a helper thread escapes
//! (`side_escape.rs`) while the calling thread encodes the next chunk; the chunk is then
//! written with each long string in its place.

use std::cell::RefCell;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::Scope;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::deferred_strings::DEFER_MIN_LEN;
use super::encode::{encode_batch_part_deferring, too_large, Encoded, FieldDefaults};
use super::errors::to_pyerr;
use crate::jsonl::{ChunkedBatch, Store, REFERENCED_FROM};
use crate::side_escape::{assemble, keep_largest, ChunkEscapes};

/// Unescaped bytes a chunk holds, about (its skeleton and its long strings).
const CHUNK_BYTES: usize = 512 << 10;

// An event's key spans are noted in skeleton offsets, which a string put back in before them
// would make wrong. They are never used: an event with a string left out is at least
// `DEFER_MIN_LEN` bytes, so the cache refers to its line in the file instead of holding it.
const _: () = assert!(DEFER_MIN_LEN >= REFERENCED_FROM);

/// What the chunks are written with: the events, the encoder's settings and the store.
pub(crate) struct ChunkWriter<'a, 's, 'py> {
    events: &'a [Bound<'py, PyDict>],
    max_event_bytes: usize,
    defaults: &'a FieldDefaults,
    store: &'s mut Store,
    batch: &'s mut ChunkedBatch,
    /// Buffers of escaped strings already written, for the next chunk's strings (those kept
    /// between batches while the batch is written).
    escaped_buffers: Vec<Vec<u8>>,
}

/// A chunk encoded and waiting to be written.
struct Pending<'a> {
    /// Its first event's place in the batch.
    first: usize,
    encoded: Vec<Encoded<'a>>,
    skeleton: Vec<u8>,
    escapes: Arc<ChunkEscapes<'a>>,
}

impl<'a, 's, 'py> ChunkWriter<'a, 's, 'py> {
    pub(crate) fn new(
        events: &'a [Bound<'py, PyDict>],
        max_event_bytes: usize,
        defaults: &'a FieldDefaults,
        store: &'s mut Store,
        batch: &'s mut ChunkedBatch,
    ) -> Self {
        Self {
            events,
            max_event_bytes,
            defaults,
            store,
            batch,
            escaped_buffers: Vec::new(),
        }
    }

    /// Encodes and writes `events[from..]`; returns them encoded. `buffer` is lent as one of
    /// the two skeletons (the chunk being encoded and the one being written) and gets one back.
    /// On an error the batch is blanked (as `write_chunk` does).
    ///
    /// The helper reads the long strings until `scope` ends (which joins it; on an error it
    /// may still be escaping a chunk that will not be written): the caller must hold the GIL
    /// and run no Python code until then.
    pub(crate) fn write_rest<'scope>(
        &mut self,
        scope: &'scope Scope<'scope, '_>,
        from: usize,
        buffer: &mut Vec<u8>,
    ) -> PyResult<Vec<Encoded<'a>>>
    where
        'a: 'scope,
    {
        self.escaped_buffers = take_kept_buffers();
        let mut helper = Helper::Unstarted;
        let mut rest = Vec::with_capacity(self.events.len() - from);
        let mut spare = std::mem::take(buffer);
        let mut pending: Option<Pending<'a>> = None;
        let mut next = from;
        while next < self.events.len() {
            let mut skeleton = std::mem::take(&mut spare);
            skeleton.clear();
            // SAFETY: the strings returned are used only before this returns: the GIL is held
            // throughout and no Python code runs (the caller's contract), and `self.events`
            // keeps the events alive.
            let part = unsafe {
                encode_batch_part_deferring(
                    self.events,
                    next,
                    CHUNK_BYTES,
                    &mut skeleton,
                    self.max_event_bytes,
                    self.defaults,
                )
            };
            let (encoded, holes) = part.inspect_err(|_| self.store.abort_batch(self.batch))?;
            let escapes = Arc::new(ChunkEscapes::new(holes, &mut self.escaped_buffers));
            if !escapes.is_empty() {
                helper.hand(scope, &escapes);
            }
            let chunk = Pending {
                first: next,
                encoded,
                skeleton,
                escapes,
            };
            next += chunk.encoded.len();
            if let Some(done) = pending.replace(chunk) {
                spare = self.write(done, &mut rest)?;
            }
        }
        if let Some(done) = pending.take() {
            let last = self.write(done, &mut rest)?;
            // Keep the larger of the two (the encoding buffer kept between calls, which the
            // batch's head filled): freeing it would leave the next batch to grow a new one,
            // and a freed buffer of megabytes raises glibc's thresholds so that its memory stays
            // in the heap (three rounds of 40 MB batches kept 4.5 MiB more heap that way).
            spare = std::cmp::max_by_key(spare, last, Vec::capacity);
        }
        *buffer = spare;
        keep_buffers(std::mem::take(&mut self.escaped_buffers));
        Ok(rest)
    }

    /// Writes a chunk once its long strings are escaped (escaping those the helper has not
    /// started); returns its skeleton for reuse. An event over `max_event_bytes` once escaped
    /// blanks the batch and is the error.
    fn write(&mut self, mut chunk: Pending<'a>, rest: &mut Vec<Encoded<'a>>) -> PyResult<Vec<u8>> {
        let escaped = chunk.escapes.finish();
        {
            let ends = chunk.encoded.iter().map(|e| e.end);
            let (pieces, lines) = assemble(&chunk.skeleton, ends, &escaped);
            let bodies: Vec<&[&[u8]]> = lines.iter().map(|r| &pieces[r.clone()]).collect();
            for (offset, body) in bodies.iter().enumerate() {
                // +1 for the closing brace, as the encoder counts.
                let size = body.iter().map(|p| p.len()).sum::<usize>() + 1;
                if size > self.max_event_bytes {
                    self.store.abort_batch(self.batch);
                    let error = too_large(size, self.max_event_bytes);
                    return Err(error.into_pyerr(Some(chunk.first + offset)));
                }
            }
            self.store
                .write_chunk_in_pieces(self.batch, &bodies)
                .map_err(to_pyerr)?;
        }
        rest.append(&mut chunk.encoded);
        self.escaped_buffers
            .extend(escaped.into_iter().map(|(_, buffer)| buffer));
        Ok(chunk.skeleton)
    }
}

thread_local! {
    /// Buffers of escaped strings kept between batches: made afresh for each, they cost the
    /// calling thread a page fault a page (`ChunkEscapes::new`).
    static KEPT_BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// The most bytes of buffers kept between batches: a chunk's strings take about twice the
/// chunk, and two chunks are in flight.
const BUFFERS_KEPT: usize = 4 << 20;

fn take_kept_buffers() -> Vec<Vec<u8>> {
    KEPT_BUFFERS.with(|kept| {
        kept.try_borrow_mut()
            .map(|mut k| std::mem::take(&mut *k))
            .unwrap_or_default()
    })
}

/// Keeps the largest of `buffers` for the next batch, up to `BUFFERS_KEPT` bytes.
fn keep_buffers(buffers: Vec<Vec<u8>>) {
    let buffers = keep_largest(buffers, BUFFERS_KEPT);
    KEPT_BUFFERS.with(|kept| {
        if let Ok(mut kept) = kept.try_borrow_mut() {
            *kept = buffers;
        }
    });
}

/// How long the helper waits for the next chunk awake before it sleeps. A chunk comes every
/// 100 us or so; waiting awake, large `extend` ran at 4.16-4.86x the baseline against
/// 3.66-4.36x with the helper sleeping between chunks (fresh processes alternating, ten each).
/// Why the wake-ups cost that much was not measured.
const HELPER_SPIN: Duration = Duration::from_micros(300);

/// The helper's loop: escapes the strings of each chunk it is given, until the calling thread
/// drops its end of the channel.
fn help_with_chunks(chunks: &Receiver<Arc<ChunkEscapes<'_>>>) {
    loop {
        let waiting = Instant::now();
        let chunk = loop {
            match chunks.try_recv() {
                Ok(chunk) => break Some(chunk),
                Err(TryRecvError::Disconnected) => return,
                Err(TryRecvError::Empty) if waiting.elapsed() < HELPER_SPIN => {
                    std::hint::spin_loop()
                }
                Err(TryRecvError::Empty) => break None,
            }
        };
        match chunk.map_or_else(|| chunks.recv().ok(), Some) {
            Some(chunk) => chunk.help(),
            None => return,
        }
    }
}

/// The helper thread, started for the first chunk with long strings.
enum Helper<'a> {
    Unstarted,
    Running(Sender<Arc<ChunkEscapes<'a>>>),
    /// It could not be started: the calling thread escapes every string.
    Unavailable,
}

impl<'a> Helper<'a> {
    /// Gives the helper a chunk's strings to escape, starting it if need be.
    fn hand<'scope>(&mut self, scope: &'scope Scope<'scope, '_>, escapes: &Arc<ChunkEscapes<'a>>)
    where
        'a: 'scope,
    {
        if let Helper::Unstarted = self {
            let (sender, receiver) = std::sync::mpsc::channel::<Arc<ChunkEscapes<'a>>>();
            let started = std::thread::Builder::new()
                .name("oa-escape".into())
                .spawn_scoped(scope, move || help_with_chunks(&receiver));
            *self = match started {
                Ok(_) => Helper::Running(sender),
                // No thread to be had (a process at its limit): the strings are escaped inline.
                Err(_) => Helper::Unavailable,
            };
        }
        if let Helper::Running(sender) = self {
            // A helper that has gone leaves the strings to the calling thread.
            let _ = sender.send(Arc::clone(escapes));
        }
    }
}
