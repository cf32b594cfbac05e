//! Streaming replay of a JSONL file: validates every line, skips and counts damage, finds where
//! the good data ends (before a torn last line or a zero tail), and hands each event on.

use std::io::{self, Read};

use super::snapshot::{self, Meta};
use crate::json::{scan_event_line, ScannedLine};

const CHUNK: usize = 4 << 20;

/// What a scan of the file found. Python sees it with the same names, as `JsonlStore.recovery`
/// and in `file_stats` (see the stubs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Valid event lines read (kept).
    pub events: u64,
    /// Lines skipped because they are not events (bad JSON, bad UTF-8, NUL runs, no type, ...).
    pub corrupt_lines: u64,
    /// Lines skipped because their `seq` is not above an earlier line's (a duplicated line).
    pub duplicate_lines: u64,
    /// Bytes of a torn last line (no newline, not a valid event): a writer cuts them off, a
    /// reader skips them.
    pub torn_tail_bytes: u64,
    /// NUL bytes skipped: the preallocated tail after a crash, or NULs before a line.
    pub padding_bytes: u64,
    /// Whether a valid last line lacked its newline: it is kept, and a writer adds the newline.
    pub unterminated_last_line: bool,
    /// Highest sequence number in the file (0 for none).
    pub last_seq: u64,
    /// Snapshot lines (segment headers and carried events, see `snapshot.rs`): not events.
    pub snapshot_lines: u64,
}

impl RecoveryReport {
    /// Adds the counts of a later file of the same store.
    pub fn add(&mut self, later: &RecoveryReport) {
        self.events += later.events;
        self.corrupt_lines += later.corrupt_lines;
        self.duplicate_lines += later.duplicate_lines;
        self.torn_tail_bytes += later.torn_tail_bytes;
        self.padding_bytes += later.padding_bytes;
        self.unterminated_last_line |= later.unterminated_last_line;
        self.last_seq = self.last_seq.max(later.last_seq);
        self.snapshot_lines += later.snapshot_lines;
    }
}

/// The result of a scan: the report and where the good data ends.
#[derive(Debug, Clone, Default)]
pub struct ScanOutcome {
    pub report: RecoveryReport,
    /// File offset after the last kept byte; a writer trims the file here.
    pub data_end: u64,
    /// The last kept line has no newline yet.
    pub needs_newline: bool,
}

/// One valid event: its sequence number, indexed fields, and its JSON in two parts whose
/// concatenation is the event without the writer's trailing `seq` member.
pub struct LineEvent<'a, 'b> {
    pub seq: u64,
    pub line: &'b ScannedLine<'a>,
    pub json: [&'a [u8]; 2],
    /// The line's text (without leading NULs); `json[0]` is a prefix of it.
    pub text: &'a [u8],
    /// Byte offset of the line in the file.
    pub offset: u64,
}

struct Scanner<F, M> {
    report: RecoveryReport,
    have_seq: bool,
    on_event: F,
    on_meta: M,
}

impl<F: FnMut(LineEvent<'_, '_>) -> bool, M: FnMut(Meta<'_>)> Scanner<F, M> {
    /// Handles one line without its newline; returns whether it was a valid event or
    /// snapshot line.
    fn line(&mut self, raw: &[u8], offset: u64) -> bool {
        let body_start = raw.iter().position(|&b| b != 0).unwrap_or(raw.len());
        let body = &raw[body_start..];
        if snapshot::looks_like_meta(body) {
            if let Some(meta) = snapshot::parse(body) {
                (self.on_meta)(meta);
                self.report.padding_bytes += body_start as u64;
                self.report.snapshot_lines += 1;
                return true;
            }
        }
        let Ok(scanned) = scan_event_line(body) else {
            self.report.corrupt_lines += 1;
            return false;
        };
        let seq = match scanned.seq {
            Some(seq) if self.have_seq && seq <= self.report.last_seq => {
                self.report.duplicate_lines += 1;
                return true;
            }
            Some(seq) => seq,
            None if self.have_seq => self.report.last_seq + 1,
            None => 1,
        };
        let json = match scanned.trailing_seq_at {
            Some(at) => [&body[..at], &b"}"[..]],
            None => [body, &b""[..]],
        };
        let event = LineEvent {
            seq,
            line: &scanned,
            json,
            text: body,
            offset: offset + body_start as u64,
        };
        if !(self.on_event)(event) {
            self.report.corrupt_lines += 1;
            return false;
        }
        self.report.padding_bytes += body_start as u64;
        self.report.events += 1;
        self.report.last_seq = seq;
        self.have_seq = true;
        true
    }
}

/// Reads `reader` to the end, calling `on_event` for each valid event in file order.
/// `on_event` returns false to reject an event (it is then counted as corrupt).
/// Damaged data never makes this fail; only a read error does.
pub fn scan<R: Read>(
    reader: R,
    on_event: impl FnMut(LineEvent<'_, '_>) -> bool,
) -> io::Result<ScanOutcome> {
    scan_segment(reader, None, on_event, |_| {})
}

/// `scan` of one file of a segmented store: `after` is the highest seq of the files read before
/// it (lines must be above it, and lines without a seq are numbered from it), and snapshot lines
/// go to `on_meta` instead of being counted as corrupt.
pub fn scan_segment<R: Read>(
    mut reader: R,
    after: Option<u64>,
    on_event: impl FnMut(LineEvent<'_, '_>) -> bool,
    on_meta: impl FnMut(Meta<'_>),
) -> io::Result<ScanOutcome> {
    let mut scanner = Scanner {
        report: RecoveryReport {
            last_seq: after.unwrap_or(0),
            ..RecoveryReport::default()
        },
        have_seq: after.is_some(),
        on_event,
        on_meta,
    };
    // `buffer[..filled]` holds unread bytes: the start of a line not yet ended. The buffer is
    // zeroed once (and when it grows for a line longer than it), not on every read.
    let mut buffer: Vec<u8> = vec![0; CHUNK];
    let mut filled = 0;
    let mut buffer_offset = 0u64;
    let mut data_end = 0u64;
    loop {
        if buffer.len() - filled < CHUNK / 2 {
            buffer.resize(buffer.len() * 2, 0);
        }
        let read = loop {
            match reader.read(&mut buffer[filled..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if read == 0 {
            break;
        }
        let mut start = 0;
        for newline in memchr::memchr_iter(b'\n', &buffer[filled..filled + read]) {
            let end = filled + newline;
            scanner.line(&buffer[start..end], buffer_offset + start as u64);
            start = end + 1;
            data_end = buffer_offset + start as u64;
        }
        filled += read;
        buffer.copy_within(start..filled, 0);
        filled -= start;
        buffer_offset += start as u64;
    }
    buffer.truncate(filled);
    let needs_newline = scan_tail(&mut scanner, &buffer, buffer_offset, &mut data_end);
    Ok(ScanOutcome {
        report: scanner.report,
        data_end,
        needs_newline,
    })
}

/// The bytes after the last newline: a zero tail, a torn line, or a valid line missing its newline.
fn scan_tail<F: FnMut(LineEvent<'_, '_>) -> bool, M: FnMut(Meta<'_>)>(
    scanner: &mut Scanner<F, M>,
    tail: &[u8],
    offset: u64,
    data_end: &mut u64,
) -> bool {
    let content_end = tail.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    scanner.report.padding_bytes += (tail.len() - content_end) as u64;
    let content = &tail[..content_end];
    if content.is_empty() {
        return false;
    }
    let corrupt_before = scanner.report.corrupt_lines;
    if scanner.line(content, offset) {
        scanner.report.unterminated_last_line = true;
        *data_end = offset + content_end as u64;
        return true;
    }
    // A torn write is not a corrupt line: it is cut and counted in `torn_tail_bytes`.
    scanner.report.corrupt_lines = corrupt_before;
    let leading_nuls = content
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(content.len());
    scanner.report.padding_bytes += leading_nuls as u64;
    scanner.report.torn_tail_bytes = (content.len() - leading_nuls) as u64;
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(data: &[u8]) -> (ScanOutcome, Vec<(u64, String, String)>) {
        let mut events = Vec::new();
        let outcome = scan(data, |event| {
            let json = [event.json[0], event.json[1]].concat();
            events.push((
                event.seq,
                event.line.event_type.to_string(),
                String::from_utf8(json).unwrap(),
            ));
            true
        })
        .unwrap();
        (outcome, events)
    }

    const A: &str = r#"{"type":"a","seq":1}"#;
    const B: &str = r#"{"type":"b","seq":2}"#;
    const C: &str = r#"{"type":"c","seq":3}"#;

    #[test]
    fn clean_file_strips_the_trailing_seq_in_memory() {
        let data = format!("{A}\n{B}\n");
        let (outcome, events) = collect(data.as_bytes());
        assert_eq!(outcome.report.events, 2);
        assert_eq!(outcome.report.last_seq, 2);
        assert_eq!(outcome.data_end, data.len() as u64);
        assert!(!outcome.needs_newline);
        assert_eq!(events[0], (1, "a".into(), r#"{"type":"a"}"#.into()));
    }

    #[test]
    fn torn_tail_is_cut_and_counted() {
        let data = format!("{A}\n{B}\n{{\"type\":\"c\",\"pay");
        let (outcome, events) = collect(data.as_bytes());
        assert_eq!(events.len(), 2);
        assert_eq!(
            outcome.report.torn_tail_bytes,
            "{\"type\":\"c\",\"pay".len() as u64
        );
        assert_eq!(outcome.report.corrupt_lines, 0);
        assert_eq!(outcome.data_end, (A.len() + B.len() + 2) as u64);
    }

    #[test]
    fn every_truncation_point_of_the_last_line_is_handled() {
        let full = format!("{A}\n{B}\n{C}\n");
        let keep = A.len() + B.len() + 2;
        for cut in keep..full.len() {
            let (outcome, events) = collect(&full.as_bytes()[..cut]);
            let complete_c = cut >= full.len() - 1;
            assert_eq!(events.len(), if complete_c { 3 } else { 2 }, "cut at {cut}");
            if complete_c {
                assert!(outcome.needs_newline);
                assert_eq!(outcome.data_end, cut as u64);
            } else {
                assert_eq!(outcome.data_end, keep as u64);
                assert_eq!(outcome.report.torn_tail_bytes, (cut - keep) as u64);
            }
        }
    }

    #[test]
    fn zero_tail_after_a_crash_is_padding() {
        let mut data = format!("{A}\n{B}\n").into_bytes();
        data.extend(std::iter::repeat_n(0u8, 5000));
        let (outcome, events) = collect(&data);
        assert_eq!(events.len(), 2);
        assert_eq!(outcome.report.padding_bytes, 5000);
        assert_eq!(outcome.report.torn_tail_bytes, 0);
        assert_eq!(outcome.data_end, (A.len() + B.len() + 2) as u64);
    }

    #[test]
    fn corrupt_lines_in_the_middle_are_skipped_and_counted() {
        let data = format!(
            "{A}\nnot json\n\0\0\0\0\n[1]\n{{\"kind\":1}}\n\u{ff}\n\n{{\"type\":\"a\"\n\0\0{B}\n{C}\n"
        );
        let (outcome, events) = collect(data.as_bytes());
        let seqs: Vec<u64> = events.iter().map(|e| e.0).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(outcome.report.corrupt_lines, 7);
        assert_eq!(outcome.report.padding_bytes, 2);
    }

    #[test]
    fn bad_utf8_line_is_corrupt() {
        let mut data = format!("{A}\n").into_bytes();
        data.extend_from_slice(b"{\"type\":\"\xc3\x28\"}\n");
        data.extend_from_slice(format!("{B}\n").as_bytes());
        let (outcome, events) = collect(&data);
        assert_eq!(events.len(), 2);
        assert_eq!(outcome.report.corrupt_lines, 1);
    }

    #[test]
    fn duplicated_lines_are_skipped() {
        let data = format!("{A}\n{B}\n{B}\n{A}\n{C}\n");
        let (outcome, events) = collect(data.as_bytes());
        assert_eq!(events.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(outcome.report.duplicate_lines, 2);
    }

    #[test]
    fn reference_lines_without_seq_are_numbered() {
        let data = "{\"id\":\"x\",\"type\":\"a\"}\n{\"type\":\"b\"}\n";
        let (outcome, events) = collect(data.as_bytes());
        assert_eq!(events.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(events[0].2, "{\"id\":\"x\",\"type\":\"a\"}");
        assert_eq!(outcome.report.last_seq, 2);
        let mixed = format!("{data}{{\"type\":\"c\",\"seq\":10}}\n{{\"type\":\"d\"}}\n");
        let (_, events) = collect(mixed.as_bytes());
        assert_eq!(
            events.iter().map(|e| e.0).collect::<Vec<_>>(),
            [1, 2, 10, 11]
        );
    }

    #[test]
    fn lines_longer_than_a_chunk_are_read_whole() {
        let big = format!(
            "{{\"type\":\"big\",\"p\":\"{}\",\"seq\":1}}",
            "z".repeat(CHUNK + 100)
        );
        let data = format!("{big}\n{B}\n");
        let (outcome, events) = collect(data.as_bytes());
        assert_eq!(outcome.report.events, 2);
        assert_eq!(events[0].2.len(), big.len() - ",\"seq\":1".len());
    }
}
