//! Property test of recovery: valid JSONL files are damaged at random (truncated anywhere,
//! garbage, NUL runs, bad UTF-8, huge lines, duplicated lines, flipped bytes) and scanned.
//!
//! Checked on every case: `scan` never panics; every line that is byte-identical to an undamaged
//! original line is delivered with its seq and content, unless an earlier delivered line already
//! had a seq at least as high (then it is a duplicate); the report's counts add up with what the
//! callback saw and with the file's own line count; `data_end` is where the good data ends.
//! Dependency-free: a seeded xorshift generator, a fixed number of iterations.

use super::recovery::scan;

/// xorshift64*: small, deterministic, good enough to pick damage.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

const TYPES: [&str; 5] = ["tool.start", "tool.end", "message", "checkpoint", "é.😀"];
const TEXTS: [&str; 6] = ["x", "é€😀", "quote\\\"d", "tab\\t", "\\u00e9", "a b c"];

/// One writer-shaped event line (no newline) with `seq`.
fn original_line(rng: &mut Rng, seq: u64) -> Vec<u8> {
    let text: String = (0..rng.below(40))
        .map(|_| TEXTS[rng.below(TEXTS.len())])
        .collect();
    let line = format!(
        "{{\"id\":\"e{seq}\",\"type\":\"{}\",\"stream_id\":\"s{}\",\"actor\":\"agent\",\
         \"timestamp\":{},\"payload\":{{\"n\":{},\"text\":\"{text}\",\"list\":[1,null,true,0.25,-3e2],\
         \"nested\":{{\"k\":[{{}}]}}}},\"seq\":{seq}}}",
        TYPES[rng.below(TYPES.len())],
        rng.below(7),
        1_700_000_000_000u64 + seq,
        rng.next() as i64,
    );
    line.into_bytes()
}

/// A valid file: `count` lines with strictly increasing seqs.
fn original_file(rng: &mut Rng, count: usize) -> Vec<Vec<u8>> {
    let mut seq = rng.below(5) as u64;
    (0..count)
        .map(|_| {
            seq += 1 + rng.below(3) as u64;
            original_line(rng, seq)
        })
        .collect()
}

fn garbage(rng: &mut Rng) -> Vec<u8> {
    match rng.below(8) {
        0 => b"not json at all".to_vec(),
        1 => vec![0u8; 1 + rng.below(5000)],
        2 => b"{\"type\":\"bad\xc3\x28utf8\",\"seq\":7}".to_vec(),
        3 => b"\xff\xfe\xfd".to_vec(),
        4 => b"[1,2,3]".to_vec(),
        5 => b"{\"kind\":\"no type\"}".to_vec(),
        6 => b"{\"type\":\"unterminated".to_vec(),
        _ => {
            let len = 1 + rng.below(300);
            rng.bytes(len)
        }
    }
}

/// Applies 1..=4 random damages to the file `lines` (joined with newlines).
fn damage(rng: &mut Rng, lines: &[Vec<u8>], allow_huge: bool) -> Vec<u8> {
    // Work on a list of segments first (line-level damage), then on the bytes.
    let mut segments: Vec<Vec<u8>> = lines.to_vec();
    let mut data: Option<Vec<u8>> = None;
    for _ in 0..1 + rng.below(4) {
        if let Some(bytes) = data.as_mut() {
            // Byte-level damage (after a join): flip, insert, truncate.
            if bytes.is_empty() {
                break;
            }
            match rng.below(3) {
                0 => {
                    let at = rng.below(bytes.len());
                    bytes[at] ^= 1 << rng.below(8);
                }
                1 => {
                    let at = rng.below(bytes.len() + 1);
                    let junk = garbage(rng);
                    bytes.splice(at..at, junk);
                }
                _ => {
                    let at = rng.below(bytes.len() + 1);
                    bytes.truncate(at);
                }
            }
            continue;
        }
        match rng.below(9) {
            0 if !segments.is_empty() => {
                // Duplicate a line somewhere later (a replayed write).
                let from = rng.below(segments.len());
                let to = from + rng.below(segments.len() - from + 1);
                let copy = segments[from].clone();
                segments.insert(to, copy);
            }
            1 => {
                let at = rng.below(segments.len() + 1);
                let junk = garbage(rng);
                segments.insert(at, junk);
            }
            2 if !segments.is_empty() => {
                // NULs before a line (a zeroed block the line was rewritten after).
                let at = rng.below(segments.len());
                let mut line = vec![0u8; 1 + rng.below(64)];
                line.extend_from_slice(&segments[at]);
                segments[at] = line;
            }
            3 if allow_huge => {
                // A line longer than the scanner's read chunk, valid or not.
                let at = rng.below(segments.len() + 1);
                let mut huge = b"{\"type\":\"huge\",\"p\":\"".to_vec();
                huge.resize(huge.len() + (4 << 20) + rng.below(1000), b'z');
                if rng.chance(2) {
                    huge.extend_from_slice(b"\"}");
                }
                segments.insert(at, huge);
            }
            4 if !segments.is_empty() => {
                let at = rng.below(segments.len());
                let len = segments[at].len();
                segments[at].truncate(rng.below(len + 1));
            }
            5 if !segments.is_empty() => {
                // Two lines run together (a lost newline).
                let at = rng.below(segments.len());
                if at + 1 < segments.len() {
                    let next = segments.remove(at + 1);
                    segments[at].extend_from_slice(&next);
                }
            }
            6 => segments.insert(rng.below(segments.len() + 1), Vec::new()),
            _ => {
                let mut joined = segments.join(&b'\n');
                if !segments.is_empty() && !rng.chance(4) {
                    joined.push(b'\n');
                }
                data = Some(joined);
            }
        }
    }
    let mut bytes = data.unwrap_or_else(|| {
        let mut joined = segments.join(&b'\n');
        if !segments.is_empty() {
            joined.push(b'\n');
        }
        joined
    });
    match rng.below(6) {
        0 => bytes.extend(std::iter::repeat_n(0u8, 1 + rng.below(9000))),
        1 => {
            let cut = rng.below(bytes.len() + 1);
            bytes.truncate(cut);
        }
        _ => {}
    }
    bytes
}

/// The original line's seq: the digits after the last `,"seq":`.
fn seq_of(line: &[u8]) -> u64 {
    let text = std::str::from_utf8(line).unwrap();
    let at = text.rfind(",\"seq\":").unwrap();
    text[at + 7..text.len() - 1].parse().unwrap()
}

struct Seen {
    offset: u64,
    seq: u64,
    json: Vec<u8>,
}

/// Scans `data`, rejecting every `reject_every`-th event (0: none), and checks every property.
fn check(data: &[u8], originals: &[Vec<u8>], reject_every: usize, case: &str) -> usize {
    let mut seen: Vec<Seen> = Vec::new();
    let mut offered = 0usize;
    let outcome = scan(data, |event| {
        offered += 1;
        let json = [event.json[0], event.json[1]].concat();
        // What the callback is given is a prefix-stripped, seq-stripped copy of bytes in the file.
        assert!(
            event.offset < data.len() as u64,
            "{case}: offset past the end"
        );
        if reject_every > 0 && offered.is_multiple_of(reject_every) {
            return false;
        }
        seen.push(Seen {
            offset: event.offset,
            seq: event.seq,
            json,
        });
        true
    })
    .unwrap();
    let report = &outcome.report;

    // Lines of the file as the scanner should see them: newline-terminated, then a tail.
    let newlines = data.iter().filter(|&&b| b == b'\n').count();
    let tail_start = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let tail = &data[tail_start..];
    let tail_trailing_nuls = tail.iter().rev().take_while(|&&b| b == 0).count();
    let tail_content = &tail[..tail.len() - tail_trailing_nuls];

    // Counts add up.
    assert_eq!(
        report.events as usize,
        seen.len(),
        "{case}: lines vs delivered"
    );
    let counted = report.events + report.corrupt_lines + report.duplicate_lines;
    let tail_kept = usize::from(report.unterminated_last_line);
    assert_eq!(
        counted as usize,
        newlines + tail_kept,
        "{case}: every line is counted once"
    );
    assert!(
        tail_kept == 0 || !tail_content.is_empty(),
        "{case}: empty tail repaired"
    );
    assert!(outcome.data_end <= data.len() as u64, "{case}: data_end");
    if report.unterminated_last_line {
        assert!(outcome.needs_newline, "{case}");
        assert_eq!(report.torn_tail_bytes, 0, "{case}");
        assert_eq!(
            outcome.data_end as usize,
            tail_start + tail_content.len(),
            "{case}"
        );
    } else {
        assert!(!outcome.needs_newline, "{case}");
        assert_eq!(outcome.data_end as usize, tail_start, "{case}: data_end");
        let leading = tail_content.iter().take_while(|&&b| b == 0).count();
        assert_eq!(
            report.torn_tail_bytes as usize,
            tail_content.len() - leading,
            "{case}: truncated bytes"
        );
    }
    // Padding is never more than the NULs in the file.
    let nuls = data.iter().filter(|&&b| b == 0).count();
    assert!(report.padding_bytes as usize <= nuls, "{case}: padding");

    // Delivered events: strictly increasing seqs, last_seq is the last one.
    for pair in seen.windows(2) {
        assert!(pair[0].seq < pair[1].seq, "{case}: seqs not increasing");
        assert!(
            pair[0].offset < pair[1].offset,
            "{case}: offsets not increasing"
        );
    }
    assert_eq!(
        report.last_seq,
        seen.last().map_or(0, |s| s.seq),
        "{case}: last_seq"
    );

    if reject_every > 0 {
        return seen.len();
    }
    // Every intact original line is delivered unless an earlier delivered seq covers it.
    let mut starts = vec![0usize];
    starts.extend(
        data.iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .map(|(i, _)| i + 1),
    );
    let mut by_offset = seen.iter().peekable();
    let mut max_seq: Option<u64> = None;
    for (index, &start) in starts.iter().enumerate() {
        let end = starts
            .get(index + 1)
            .map_or(tail_start + tail_content.len(), |next| next - 1);
        let line = &data[start..end.max(start)];
        // Events delivered before this line.
        while let Some(event) = by_offset.peek() {
            if event.offset >= start as u64 {
                break;
            }
            max_seq = Some(event.seq);
            by_offset.next();
        }
        let Ok(position) = originals.binary_search_by(|o| o.as_slice().cmp(line)) else {
            if originals.iter().any(|o| o.as_slice() == line) {
                unreachable!("originals are sorted for the search");
            }
            continue;
        };
        let original = &originals[position];
        let seq = seq_of(original);
        if max_seq.is_some_and(|m| m >= seq) {
            continue;
        }
        let event = by_offset
            .peek()
            .filter(|e| e.offset == start as u64)
            .unwrap_or_else(|| panic!("{case}: intact line at {start} (seq {seq}) not delivered"));
        assert_eq!(event.seq, seq, "{case}: seq of the line at {start}");
        let mut expected = original[..original.len() - 1].to_vec();
        let cut = expected.len() - format!(",\"seq\":{seq}").len();
        expected.truncate(cut);
        expected.push(b'}');
        assert_eq!(
            event.json, expected,
            "{case}: content of the line at {start}"
        );
    }
    seen.len()
}

/// How long each property test runs: `OCA_DAMAGE_SECONDS` (default 1 s; a debug build scans
/// a small file in ~15 ms because `scan` zero-fills its 4 MiB read buffer, a release build in
/// well under 1 ms). At least `minimum` iterations run whatever the clock says.
fn keep_going(started: std::time::Instant, iteration: usize, minimum: usize) -> bool {
    let seconds = std::env::var("OCA_DAMAGE_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(1.0);
    iteration < minimum || started.elapsed().as_secs_f64() < seconds
}

#[test]
fn damaged_files_never_panic_and_keep_every_intact_line() {
    let mut rng = Rng::new(0x5EED_0001);
    let started = std::time::Instant::now();
    let mut iteration = 0;
    while keep_going(started, iteration, 40) {
        iteration += 1;
        let count = rng.below(40);
        let lines = original_file(&mut rng, count);
        let allow_huge = iteration % 25 == 7;
        let data = damage(&mut rng, &lines, allow_huge);
        let mut sorted = lines.clone();
        sorted.sort();
        let case = format!("iteration {iteration}");
        check(&data, &sorted, 0, &case);
        if iteration % 8 == 0 {
            check(
                &data,
                &sorted,
                1 + rng.below(4),
                &format!("{case} (rejecting)"),
            );
        }
    }
}

#[test]
fn every_truncation_point_of_the_last_line_keeps_the_lines_before_it() {
    let mut rng = Rng::new(0x5EED_0002);
    let mut lines = original_file(&mut rng, 3);
    // A short last line, so that every byte of it can be a cut point within the time budget.
    let seq = seq_of(&lines[2]) + 1;
    lines.push(format!("{{\"type\":\"é😀\",\"p\":[1,{{}}],\"seq\":{seq}}}").into_bytes());
    let mut sorted = lines.clone();
    sorted.sort();
    let mut data = lines.join(&b'\n');
    data.push(b'\n');
    let keep = data.len() - lines[3].len() - 1;
    for cut in keep..=data.len() {
        for nul_tail in [0usize, 4096] {
            let mut damaged = data[..cut].to_vec();
            damaged.extend(std::iter::repeat_n(0u8, nul_tail));
            let case = format!("cut at {cut}, {nul_tail} NULs after it");
            let delivered = check(&damaged, &sorted, 0, &case);
            // Whole lines, plus a last line that lost only its newline.
            let complete = cut >= data.len() - 1;
            assert_eq!(delivered, 3 + usize::from(complete), "{case}");
        }
    }
}

#[test]
fn random_bytes_never_panic_and_counts_add_up() {
    let mut rng = Rng::new(0x5EED_0003);
    let alphabet: &[u8] = b"{}[]\":,\\\n\0 0123456789-.eEtrufalsnyp\xc3\xa9\xff\x80";
    let started = std::time::Instant::now();
    let mut iteration = 0;
    while keep_going(started, iteration, 60) {
        iteration += 1;
        let len = rng.below(600);
        let data: Vec<u8> = if iteration % 2 == 0 {
            rng.bytes(len)
        } else {
            (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect()
        };
        check(&data, &[], 0, &format!("random bytes {iteration}"));
    }
}
