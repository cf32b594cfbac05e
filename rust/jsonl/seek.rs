//! Finding where a reader that wants only the events after a given seq can start in a plain
//! segment, without scanning it from the top: the file is read backwards from its end, one line
//! at a time, until a line whose seq is at most the one asked for.
//!
//! The writer ends every line with `,"seq":N}` and its seqs only increase, so the lines after
//! that one are the only ones that can hold a later event, and a forward scan that starts after
//! it (with that seq as the highest one seen) finds exactly what a scan from the top finds.
//! The line is fully validated (a corrupt line is not trusted) and the event before it must have
//! a lower seq; anything the backward read cannot vouch for (a line without a seq, seqs going
//! down there, no such line at all, the file shrinking under the reader) gives `None`, and the
//! caller scans the whole file. What the backward read does not see is trusted to be in order:
//! a file whose seqs go down further back (`... 9, 4, 5, 10` read after 5: the forward scan
//! skips 4 and 5 as duplicates, 9 having come before them, and returns 9 and 10) is a file no
//! store writes, and its reader gets only 10 here. Snapshot lines, corrupt lines and NUL padding
//! are skipped the way the forward scan skips them (they never change what it counts as the last
//! seq).
//! The bytes after the last newline (a torn or unterminated line, the writer's zero tail) are
//! left to the forward scan, which handles them as it always does.

use std::io::{self, Read, Seek, SeekFrom};

use super::snapshot;
use crate::json::scan_event_line;

/// Bytes read at a time, backwards.
const CHUNK: usize = 64 << 10;

/// Where a forward scan can start: the offset of a line and the seq of the event before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeekPoint {
    pub offset: u64,
    pub last_seq: u64,
}

/// What one line, read backwards, tells.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// Not an event (corrupt, NULs, a snapshot line): the forward scan skips it too.
    Skipped,
    /// An event with this seq.
    Seq(u64),
    /// An event without a seq: its number depends on every line before it.
    Unnumbered,
}

/// `,"seq":N}` at the end of `body`, as the writer puts it: N, without validating the rest.
fn trailing_seq(body: &[u8]) -> Option<u64> {
    let without_brace = body.strip_suffix(b"}")?;
    let digits = without_brace
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 || digits > 20 {
        return None;
    }
    let (head, number) = without_brace.split_at(without_brace.len() - digits);
    if !head.ends_with(b",\"seq\":") {
        return None;
    }
    std::str::from_utf8(number).ok()?.parse().ok()
}

/// Classifies one line (no newline) exactly as the forward scan would; `quick_above` lets a
/// line whose trailing seq is above it pass without full validation (skipping past any line is
/// always safe: it is read again by the forward scan).
fn classify(raw: &[u8], quick_above: Option<u64>) -> Line {
    let body_start = raw.iter().position(|&b| b != 0).unwrap_or(raw.len());
    let body = &raw[body_start..];
    if snapshot::looks_like_meta(body) && snapshot::parse(body).is_some() {
        return Line::Skipped;
    }
    if let (Some(above), Some(seq)) = (quick_above, trailing_seq(body)) {
        if seq > above {
            return Line::Seq(seq);
        }
    }
    match scan_event_line(body) {
        Err(_) => Line::Skipped,
        Ok(scanned) => scanned.seq.map_or(Line::Unnumbered, Line::Seq),
    }
}

/// Reads a file backwards, line by line: `buffer` holds the bytes `[start, start + len)` that
/// are not yet handed out.
struct Backwards<'r, R> {
    reader: &'r mut R,
    buffer: Vec<u8>,
    start: u64,
}

impl<R: Read + Seek> Backwards<'_, R> {
    /// Reads up to a chunk (or as much as is held already, for long lines) before `start`;
    /// false at the top of the file or when the file shrank (a writer trimmed its zero tail).
    fn extend(&mut self) -> io::Result<bool> {
        if self.start == 0 {
            return Ok(false);
        }
        let want = CHUNK.max(self.buffer.len()) as u64;
        let from = self.start.saturating_sub(want);
        let mut chunk = vec![0; (self.start - from) as usize];
        self.reader.seek(SeekFrom::Start(from))?;
        match self.reader.read_exact(&mut chunk) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
            other => other?,
        }
        chunk.extend_from_slice(&self.buffer);
        self.buffer = chunk;
        self.start = from;
        Ok(true)
    }

    /// Drops everything from the last newline on (the tail the forward scan handles); false if
    /// there is no newline.
    fn drop_tail(&mut self) -> io::Result<bool> {
        loop {
            if let Some(at) = memchr::memrchr(b'\n', &self.buffer) {
                self.buffer.truncate(at);
                return Ok(true);
            }
            // No line ends in what is held: none of it is needed (a long zero tail stays small).
            self.buffer.clear();
            if !self.extend()? {
                return Ok(false);
            }
        }
    }

    /// The previous line: its offset and whether it is the file's first; None when the file
    /// shrank. Its bytes are `self.buffer[offset - start..]`.
    fn previous(&mut self) -> io::Result<Option<u64>> {
        loop {
            if let Some(at) = memchr::memrchr(b'\n', &self.buffer) {
                return Ok(Some(self.start + at as u64 + 1));
            }
            if self.start == 0 {
                return Ok(Some(0));
            }
            if !self.extend()? {
                return Ok(None);
            }
        }
    }

    fn line_at(&self, offset: u64) -> &[u8] {
        &self.buffer[(offset - self.start) as usize..]
    }

    /// Forgets the line at `offset` and its newline.
    fn pop(&mut self, offset: u64) {
        self.buffer
            .truncate((offset - self.start).saturating_sub(1) as usize);
    }
}

/// Where a forward scan of `reader` (a plain segment) can start to find every event whose seq
/// is above `after`, or None when the whole file has to be scanned.
pub fn seek_after<R: Read + Seek>(reader: &mut R, after: u64) -> io::Result<Option<SeekPoint>> {
    let len = reader.seek(SeekFrom::End(0))?;
    let mut lines = Backwards {
        reader,
        buffer: Vec::new(),
        start: len,
    };
    if !lines.drop_tail()? {
        return Ok(None);
    }
    // The offset after the newline of the line being looked at.
    let mut line_end = lines.start + lines.buffer.len() as u64 + 1;
    // Set once a line with a seq at most `after` is found: (the offset after it, its seq).
    let mut found: Option<(u64, u64)> = None;
    loop {
        let Some(offset) = lines.previous()? else {
            return Ok(None);
        };
        let quick = if found.is_none() { Some(after) } else { None };
        match (classify(lines.line_at(offset), quick), found) {
            (Line::Unnumbered, _) => return Ok(None),
            (Line::Skipped, _) => {}
            (Line::Seq(seq), None) if seq > after => {}
            (Line::Seq(seq), None) => found = Some((line_end, seq)),
            // The event before the one found: its seq must be lower, or the file is not in order.
            (Line::Seq(before), Some((start, seq))) => {
                return Ok((before < seq).then_some(SeekPoint {
                    offset: start,
                    last_seq: seq,
                }));
            }
        }
        if offset == 0 {
            // Nothing before: the first event's state depends on the files before this one.
            return Ok(None);
        }
        lines.pop(offset);
        line_end = offset;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonl::scan_segment;
    use std::io::Cursor;

    fn seek(data: &[u8], after: u64) -> Option<SeekPoint> {
        seek_after(&mut Cursor::new(data), after).unwrap()
    }

    /// (seq, json) of the events above `after`, scanning from the top or from the seek point.
    fn events(data: &[u8], after: u64, seeking: bool) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        let (from, state) = match seeking.then(|| seek(data, after)).flatten() {
            Some(point) => (point.offset as usize, Some(point.last_seq)),
            None => (0, None),
        };
        scan_segment(
            &data[from..],
            state,
            |event| {
                if event.seq > after {
                    out.push((event.seq, [event.json[0], event.json[1]].concat()));
                }
                true
            },
            |_| {},
        )
        .unwrap();
        out
    }

    fn line(seq: u64) -> String {
        format!(
            "{{\"type\":\"t{seq}\",\"payload\":\"{}\",\"seq\":{seq}}}\n",
            "p".repeat(seq as usize % 7)
        )
    }

    fn store(seqs: impl IntoIterator<Item = u64>) -> String {
        seqs.into_iter().map(line).collect()
    }

    #[test]
    fn trailing_seq_is_read_only_in_the_writers_layout() {
        assert_eq!(trailing_seq(b"{\"type\":\"a\",\"seq\":42}"), Some(42));
        assert_eq!(trailing_seq(b"{\"type\":\"a\",\"seq\": 42}"), None);
        assert_eq!(trailing_seq(b"{\"type\":\"a\"}"), None);
        assert_eq!(trailing_seq(b",\"seq\":}"), None);
        assert_eq!(trailing_seq(b",\"seq\":99999999999999999999}"), None);
    }

    #[test]
    fn seeks_to_the_line_after_the_last_one_at_or_below() {
        let data = store(1..=100);
        let point = seek(data.as_bytes(), 90).unwrap();
        assert_eq!(point.last_seq, 90);
        assert_eq!(point.offset as usize, store(1..=90).len());
        assert_eq!(
            events(data.as_bytes(), 90, true),
            events(data.as_bytes(), 90, false)
        );
        // Nothing newer: the seek point is the end.
        assert_eq!(
            seek(data.as_bytes(), 100).unwrap().offset as usize,
            data.len()
        );
        assert_eq!(
            seek(data.as_bytes(), 1000).unwrap().offset as usize,
            data.len()
        );
    }

    #[test]
    fn the_whole_file_is_scanned_when_no_line_vouches_for_the_start() {
        let data = store(5..=20);
        // Every line is above: the state before the file is not known here.
        assert_eq!(seek(data.as_bytes(), 3), None);
        // The first line is the one: nothing before it to check the order against.
        assert_eq!(seek(data.as_bytes(), 5), None);
        assert_eq!(seek(b"", 5), None);
        assert_eq!(seek(b"{\"type\":\"a\",\"seq\":1}", 5), None);
    }

    #[test]
    fn lines_without_a_seq_fall_back_to_the_full_scan() {
        let data = format!("{}{{\"type\":\"x\"}}\n{}", store(1..=10), store(12..=14));
        let point = seek(data.as_bytes(), 13).unwrap();
        assert_eq!(point.offset as usize, data.len() - line(14).len());
        assert_eq!(point.last_seq, 13);
        // The line before 12 has no seq, nor does it vouch for any.
        assert_eq!(seek(data.as_bytes(), 12), None);
        assert_eq!(seek(data.as_bytes(), 11), None);
        for after in 0..=15 {
            assert_eq!(
                events(data.as_bytes(), after, true),
                events(data.as_bytes(), after, false)
            );
        }
    }

    #[test]
    fn seqs_going_down_fall_back_to_the_full_scan() {
        let data = store([1, 2, 3, 9, 5, 10]);
        assert_eq!(seek(data.as_bytes(), 5), None);
        assert_eq!(
            events(data.as_bytes(), 5, true),
            events(data.as_bytes(), 5, false)
        );
    }

    #[test]
    fn damage_is_skipped_as_the_forward_scan_skips_it() {
        const HEADER: &str = r#"{"segment":{"first_seq":1,"carried":1,"timestamp":1}}"#;
        const CARRIED: &str = r#"{"carried":{"type":"o","seq":1}}"#;
        let torn = "{\"type\":\"t\",\"seq\":2";
        let cases = [
            format!("{}{}", store(1..=30), torn),
            format!("{}{}", store(1..=30), "\0".repeat(200_000)),
            format!(
                "{}{}{}",
                store(1..=30),
                line(31).trim_end(),
                "\0".repeat(50)
            ),
            format!(
                "{}not json\n\0\0\0\n\0\0{}{}",
                store(1..=20),
                line(21),
                store(22..=30)
            ),
            format!(
                "{}{{\"type\":\"a\",\"x\":1,\"seq\":18}}\n{}",
                store(1..=20),
                store(21..=30)
            ),
            format!("{}{HEADER}\n{}", store(1..=20), store(21..=30)),
            format!("{HEADER}\n{CARRIED}\n{}", store(2..=30)),
            format!("{}{}", store(1..=20), store(15..=30)),
            format!("{}\u{ff}bad,\"seq\":3}}\n{}", store(1..=20), store(21..=30)),
        ];
        for (index, data) in cases.iter().enumerate() {
            for after in 0..=32 {
                assert_eq!(
                    events(data.as_bytes(), after, true),
                    events(data.as_bytes(), after, false),
                    "case {index}, after {after}"
                );
            }
        }
    }

    #[test]
    fn lines_longer_than_a_chunk_are_read_whole() {
        let big = format!(
            "{{\"type\":\"big\",\"p\":\"{}\",\"seq\":5}}\n",
            "z".repeat(3 * CHUNK)
        );
        let data = format!("{}{big}{}", store(1..=4), store(6..=9));
        for after in 0..=10 {
            assert_eq!(
                events(data.as_bytes(), after, true),
                events(data.as_bytes(), after, false)
            );
        }
        assert_eq!(seek(data.as_bytes(), 5).unwrap().last_seq, 5);
        // And the seek reads far less than the file when the point is near the end.
        let long = store(1..=20_000);
        let point = seek(long.as_bytes(), 19_990).unwrap();
        assert_eq!(point.offset as usize, store(1..=19_990).len());
    }

    #[test]
    fn a_file_that_shrinks_under_the_reader_is_scanned_whole() {
        /// Claims a longer file than it can read.
        struct Shrunk(Cursor<Vec<u8>>, u64);
        impl Read for Shrunk {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.0.read(buf)
            }
        }
        impl Seek for Shrunk {
            fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
                match pos {
                    SeekFrom::End(_) => Ok(self.1),
                    other => self.0.seek(other),
                }
            }
        }
        let data = store(1..=10).into_bytes();
        let mut reader = Shrunk(Cursor::new(data), 1 << 20);
        assert_eq!(seek_after(&mut reader, 5).unwrap(), None);
    }
}
