//! The snapshot that starts every segment made by sealing: what was still open when the
//! previous segment was sealed, carried forward so that no older segment is needed to rebuild it.
//!
//! Two kinds of lines, neither of them an event (no `type`, no `seq` of their own, so they
//! never take a sequence number and readers skip them):
//!
//! ```text
//! {"segment":{"first_seq":F,"carried":K,"timestamp":T}}   first line: K carried lines follow
//! {"carried":{...the original event line, with its own "seq"...}}   K times
//! ```
//!
//! `first_seq` is the seq the segment's first event gets, `timestamp` (epoch ms) when it was
//! started. The snapshot is trusted only when it is complete: the header is the segment's first
//! line and all K carried lines follow it intact. A segment cut short while its snapshot was
//! being written is detected that way, and the previous segment (whose snapshot is complete) is
//! read instead.

use crate::json::{scan_event_line, Cursor, ScannedLine};

const HEADER_PREFIX: &[u8] = b"{\"segment\":";
const CARRIED_PREFIX: &[u8] = b"{\"carried\":";

/// A snapshot line, parsed.
pub enum Meta<'a> {
    Header {
        first_seq: u64,
        carried: u64,
    },
    /// A carried event: its whole line (with its own `seq`) and what the scanner found in it.
    Carried {
        line: &'a [u8],
        scanned: Box<ScannedLine<'a>>,
    },
}

/// Whether a line may be a snapshot line (cheap prefix test before any parsing).
pub fn looks_like_meta(line: &[u8]) -> bool {
    line.starts_with(HEADER_PREFIX) || line.starts_with(CARRIED_PREFIX)
}

/// The snapshot line `line` is, if it is a complete and valid one.
pub fn parse(line: &[u8]) -> Option<Meta<'_>> {
    let (key, value) = single_member(line)?;
    match key {
        b"segment" => {
            let number = |name: &str| -> Option<u64> {
                std::str::from_utf8(crate::json::member(value, name)?)
                    .ok()?
                    .parse()
                    .ok()
            };
            Some(Meta::Header {
                first_seq: number("first_seq")?,
                carried: number("carried")?,
            })
        }
        b"carried" => {
            let scanned = scan_event_line(value).ok()?;
            scanned.seq?;
            Some(Meta::Carried {
                line: value,
                scanned: Box::new(scanned),
            })
        }
        _ => None,
    }
}

/// `{"key":value}` with nothing else: the key and the value's bytes.
fn single_member(line: &[u8]) -> Option<(&[u8], &[u8])> {
    std::str::from_utf8(line).ok()?;
    let mut cursor = Cursor::new(line);
    cursor.expect(b'{', "expected '{'").ok()?;
    let key = cursor.string().ok()?;
    if key.escaped {
        return None;
    }
    cursor.expect(b':', "expected ':'").ok()?;
    let start = cursor.pos;
    cursor.skip_value(crate::event::MAX_DEPTH - 1).ok()?;
    let end = cursor.pos;
    cursor.expect(b'}', "expected '}'").ok()?;
    (cursor.pos == line.len()).then_some((key.raw, &line[start..end]))
}

/// The header line (with its newline) of a segment whose first event gets `first_seq` and whose
/// snapshot has `carried` lines.
pub fn header_line(first_seq: u64, carried: usize, timestamp_ms: i64) -> Vec<u8> {
    format!(
        "{{\"segment\":{{\"first_seq\":{first_seq},\"carried\":{carried},\"timestamp\":{timestamp_ms}}}}}\n"
    )
    .into_bytes()
}

/// A carried line (with its newline) for the event `json` (its JSON without `seq`) with `seq`.
pub fn carried_line(seq: u64, json: &[u8]) -> Vec<u8> {
    let body = json.strip_suffix(b"}").unwrap_or(json);
    let mut line = Vec::with_capacity(json.len() + 40);
    line.extend_from_slice(CARRIED_PREFIX);
    line.extend_from_slice(body);
    line.extend_from_slice(b",\"seq\":");
    line.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    line.extend_from_slice(b"}}\n");
    line
}

/// What a segment's first lines hold, read without reading the rest of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Head {
    /// The header's `first_seq`, if the first line is a header.
    pub first_seq: Option<u64>,
    /// The header is there and every carried line it announces follows it intact.
    pub complete: bool,
}

/// Reads the head of a segment: its header and carried lines, stopping at the first line that
/// is neither (or at a damaged one).
pub fn read_head(reader: impl std::io::Read) -> std::io::Result<Head> {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::with_capacity(64 << 10, reader);
    let mut line = Vec::new();
    let mut next = |line: &mut Vec<u8>| -> std::io::Result<bool> {
        line.clear();
        lines.read_until(b'\n', line)?;
        Ok(line.pop() == Some(b'\n'))
    };
    if !next(&mut line)? {
        return Ok(Head::default());
    }
    let Some(Meta::Header { first_seq, carried }) = parse(&line) else {
        return Ok(Head::default());
    };
    let mut head = Head {
        first_seq: Some(first_seq),
        complete: false,
    };
    for _ in 0..carried {
        if !next(&mut line)? || !matches!(parse(&line), Some(Meta::Carried { .. })) {
            return Ok(head);
        }
    }
    head.complete = true;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let header = header_line(42, 2, 1_700_000_000_000);
        assert_eq!(
            header,
            b"{\"segment\":{\"first_seq\":42,\"carried\":2,\"timestamp\":1700000000000}}\n"
        );
        assert!(looks_like_meta(&header));
        match parse(&header[..header.len() - 1]) {
            Some(Meta::Header { first_seq, carried }) => assert_eq!((first_seq, carried), (42, 2)),
            _ => panic!("header not parsed"),
        }
        let carried = carried_line(7, br#"{"type":"cp","payload":{"id":"a"}}"#);
        assert_eq!(
            carried,
            b"{\"carried\":{\"type\":\"cp\",\"payload\":{\"id\":\"a\"},\"seq\":7}}\n"
        );
        match parse(&carried[..carried.len() - 1]) {
            Some(Meta::Carried { line, scanned }) => {
                assert_eq!(line, br#"{"type":"cp","payload":{"id":"a"},"seq":7}"#);
                assert_eq!(scanned.seq, Some(7));
                assert_eq!(scanned.event_type, "cp");
            }
            _ => panic!("carried line not parsed"),
        }
    }

    #[test]
    fn damaged_or_foreign_lines_are_not_snapshot_lines() {
        for line in [
            &b"{\"segment\":{\"first_seq\":42,\"carried\":2}"[..],
            b"{\"segment\":{\"first_seq\":42}}",
            b"{\"carried\":{\"type\":\"cp\"}}",
            b"{\"carried\":{\"type\":\"cp\",\"seq\":1}} x",
            b"{\"carried\":{\"type\":\"cp\",\"seq\":1},\"x\":1}",
            b"{\"type\":\"a\"}",
        ] {
            assert!(parse(line).is_none(), "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn head_is_complete_only_with_every_carried_line() {
        let mut data = header_line(5, 2, 0);
        data.extend(carried_line(1, br#"{"type":"a"}"#));
        assert_eq!(
            read_head(&data[..]).unwrap(),
            Head {
                first_seq: Some(5),
                complete: false
            }
        );
        data.extend(carried_line(2, br#"{"type":"b"}"#));
        assert!(read_head(&data[..]).unwrap().complete);
        let torn = &data[..data.len() - 3];
        assert!(!read_head(torn).unwrap().complete);
        assert_eq!(
            read_head(&b"{\"type\":\"a\"}\n"[..]).unwrap(),
            Head::default()
        );
        assert!(read_head(&header_line(9, 0, 0)[..]).unwrap().complete);
    }
}
