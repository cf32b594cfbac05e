//! Escaping a chunk's long strings on a second thread.
//!
//! `extend` of large tool outputs spent about a third of the calling thread's time escaping
//! their strings, while the other core sat idle. In a batch written in chunks, the encoder
//! leaves each long string out of the chunk and notes it as a job (`ChunkEscapes`): a helper
//! thread escapes the jobs while the calling thread encodes the next chunk, and when the
//! caller needs the chunk it escapes, itself, every job the helper has not started. So a
//! helper that is not scheduled costs no more than escaping inline, but for a string it has
//! started, which the caller waits for. The escaped text is exactly what `json::write_string`
//! writes inline (quotes included).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::json::write_string;

const FREE: u8 = 0;
const TAKEN: u8 = 1;
const DONE: u8 = 2;

/// One long string: its text, where its escaped form goes, and that form once written.
struct Job<'a> {
    text: &'a [u8],
    /// Offset in the chunk's encoded bytes (the skeleton) where the escaped string belongs.
    hole: usize,
    state: AtomicU8,
    /// Written by whichever thread takes the job; read by the caller once it is `DONE`.
    escaped: Mutex<Vec<u8>>,
}

/// The long strings of one chunk, escaped by whichever thread takes each first.
pub struct ChunkEscapes<'a> {
    jobs: Vec<Job<'a>>,
}

impl<'a> ChunkEscapes<'a> {
    /// Jobs for `(hole, text)` pairs, in the order the holes come in the skeleton, each with a
    /// buffer from `spare` that is large enough, or a new one, taken here on the calling thread.
    /// The helper then allocates nothing: memory it allocated would come from its own glibc
    /// arena, which keeps what is freed there (three rounds of 40 MB batches grew a process's
    /// RSS by 8.3 MiB that way, against 1.1 MiB without a helper). A buffer too small is not
    /// grown: growing copies its old contents, and that, with the fresh pages, took the calling
    /// thread's time for a batch of 250 tool outputs from 12.9 to 23-24 us an event.
    pub fn new(
        holes: impl IntoIterator<Item = (usize, &'a [u8])>,
        spare: &mut Vec<Vec<u8>>,
    ) -> Self {
        let jobs = holes
            .into_iter()
            .map(|(hole, text)| {
                let room = escaped_room(text.len());
                let mut escaped = match spare.iter().position(|b| b.capacity() >= room) {
                    Some(at) => spare.swap_remove(at),
                    None => Vec::with_capacity(room),
                };
                escaped.clear();
                Job {
                    text,
                    hole,
                    state: AtomicU8::new(FREE),
                    escaped: Mutex::new(escaped),
                }
            })
            .collect();
        Self { jobs }
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// The helper's part: escapes every job still free, from the first on.
    pub fn help(&self) {
        for job in &self.jobs {
            run_if_free(job);
        }
    }

    /// The caller's part: escapes every job still free, from the last back (away from the
    /// helper), waits for those the helper is escaping, and returns each escaped string with
    /// its hole, in skeleton order.
    pub fn finish(&self) -> Vec<(usize, Vec<u8>)> {
        for job in self.jobs.iter().rev() {
            run_if_free(job);
        }
        self.jobs
            .iter()
            .map(|job| {
                while job.state.load(Ordering::Acquire) != DONE {
                    // The helper has this one (at most one at a time): a few microseconds.
                    std::thread::yield_now();
                }
                let escaped = std::mem::take(&mut *lock(&job.escaped));
                (job.hole, escaped)
            })
            .collect()
    }
}

/// Escapes `job` if no thread has taken it yet.
fn run_if_free(job: &Job<'_>) {
    let taken = job
        .state
        .compare_exchange(FREE, TAKEN, Ordering::Acquire, Ordering::Relaxed);
    if taken.is_err() {
        return;
    }
    write_string(&mut lock(&job.escaped), job.text);
    job.state.store(DONE, Ordering::Release);
}

/// What a string of `len` bytes is escaped into without growing its buffer, but where it has
/// bytes that need `\u00XX` (those grow it): the escapers reserve two bytes a byte of a segment,
/// and a little more for their last store.
fn escaped_room(len: usize) -> usize {
    2 * len + 256
}

/// The largest of `buffers` whose capacities add up to at most `budget` bytes, largest first:
/// what is kept for the next batch's strings.
pub fn keep_largest(mut buffers: Vec<Vec<u8>>, budget: usize) -> Vec<Vec<u8>> {
    buffers.sort_unstable_by_key(|b| std::cmp::Reverse(b.capacity()));
    let mut total = 0;
    buffers.retain(|b| {
        total += b.capacity();
        total <= budget
    });
    buffers
}

/// A job's buffer: escaping cannot panic half-way through a job, so a poisoned lock still
/// holds whole output (or none).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Each event's pieces in order: the skeleton's bytes between holes and the escaped strings,
/// as `write_string` would have left them inline. `ends` are the events' ends in `skeleton`
/// (the first starts at 0); a hole belongs to the event with `start < hole <= end` (every
/// event's skeleton starts with its `{`, so no hole is at an event's start). Returns the
/// pieces and, per event, the range of its pieces.
pub fn assemble<'s>(
    skeleton: &'s [u8],
    ends: impl IntoIterator<Item = usize>,
    escaped: &'s [(usize, Vec<u8>)],
) -> (Vec<&'s [u8]>, Vec<std::ops::Range<usize>>) {
    let mut pieces = Vec::with_capacity(escaped.len() * 2 + 16);
    let mut events = Vec::new();
    let mut holes = escaped.iter().peekable();
    let mut start = 0;
    for end in ends {
        let first = pieces.len();
        let mut at = start;
        while let Some((hole, text)) = holes.next_if(|(hole, _)| *hole <= end) {
            pieces.push(&skeleton[at..*hole]);
            pieces.push(text.as_slice());
            at = *hole;
        }
        pieces.push(&skeleton[at..end]);
        events.push(first..pieces.len());
        start = end;
    }
    (pieces, events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inline(text: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_string(&mut out, text);
        out
    }

    fn texts() -> Vec<Vec<u8>> {
        (0..40)
            .map(|i| {
                let mut text = b"line\t\"quoted\"\n".repeat(50 + i * 37);
                text.push(b'\x01' + (i % 20) as u8);
                text
            })
            .collect()
    }

    #[test]
    fn every_job_is_escaped_as_inline_whoever_takes_it() {
        let texts = texts();
        for helpers in [0, 1, 2] {
            let escapes = ChunkEscapes::new(
                texts.iter().enumerate().map(|(i, t)| (i * 3 + 1, &t[..])),
                &mut Vec::new(),
            );
            let escaped = std::thread::scope(|scope| {
                for _ in 0..helpers {
                    scope.spawn(|| escapes.help());
                }
                escapes.finish()
            });
            assert_eq!(escaped.len(), texts.len());
            for (i, ((hole, out), text)) in escaped.iter().zip(&texts).enumerate() {
                assert_eq!(*hole, i * 3 + 1);
                assert_eq!(out, &inline(text), "job {i} with {helpers} helpers");
            }
        }
    }

    #[test]
    fn a_buffer_is_not_grown_for_text_that_escapes_to_at_most_twice_its_length() {
        // Quotes, backslashes and newlines: every escaper's worst case short of `\u00XX`.
        let texts: Vec<Vec<u8>> = [1, 4 << 10, 40 << 10, 100 << 10]
            .iter()
            .map(|&len| b"\"\\\n".iter().copied().cycle().take(len).collect())
            .collect();
        let escapes = ChunkEscapes::new(texts.iter().map(|t| (1, &t[..])), &mut Vec::new());
        let given: Vec<usize> = escapes
            .jobs
            .iter()
            .map(|j| lock(&j.escaped).capacity())
            .collect();
        for ((_, out), (text, capacity)) in escapes.finish().iter().zip(texts.iter().zip(given)) {
            assert_eq!(out, &inline(text));
            assert_eq!(
                out.capacity(),
                capacity,
                "a {}-byte text grew its buffer",
                text.len()
            );
        }
    }

    #[test]
    fn buffers_that_fit_are_taken_from_the_spares_and_the_largest_are_kept() {
        let text = vec![b'a'; 5_000];
        let mut spare = vec![Vec::with_capacity(100), Vec::with_capacity(20_000)];
        let escapes = ChunkEscapes::new([(1, &text[..])], &mut spare);
        assert_eq!(spare.len(), 1, "the buffer that fits was taken");
        assert_eq!(spare[0].capacity(), 100);
        let escaped = escapes.finish();
        assert_eq!(escaped[0].1.capacity(), 20_000);
        let buffers = (1..=5).map(|i| Vec::with_capacity(i * 1_000)).collect();
        let kept: Vec<usize> = keep_largest(buffers, 9_500)
            .iter()
            .map(Vec::capacity)
            .collect();
        assert_eq!(kept, [5_000, 4_000]);
    }

    #[test]
    fn a_helper_that_has_finished_leaves_nothing_for_the_caller() {
        let texts = texts();
        let escapes = ChunkEscapes::new(texts.iter().map(|t| (1, &t[..])), &mut Vec::new());
        escapes.help();
        assert!(escapes
            .jobs
            .iter()
            .all(|j| j.state.load(Ordering::Relaxed) == DONE));
        let escaped = escapes.finish();
        assert_eq!(escaped[7].1, inline(&texts[7]));
    }

    #[test]
    fn pieces_put_each_escaped_string_in_its_event_and_place() {
        // Two events: `{"a":` + hole + `,"b":1` and `{"c":` + hole (a hole at its end).
        let skeleton = br#"{"a":,"b":1{"c":"#;
        let escaped = vec![(5, b"\"x\"".to_vec()), (16, b"\"y\\n\"".to_vec())];
        let (pieces, events) = assemble(skeleton, [11, 16], &escaped);
        let event = |i: usize| pieces[events[i].clone()].concat();
        assert_eq!(event(0), br#"{"a":"x","b":1"#);
        assert_eq!(event(1), br#"{"c":"y\n""#);
    }

    #[test]
    fn an_event_without_holes_is_one_piece() {
        let (pieces, events) = assemble(b"{\"a\":1{\"b\":2", [6, 12], &[]);
        assert_eq!(events, vec![0..1, 1..2]);
        assert_eq!(pieces[1], b"{\"b\":2");
    }
}
