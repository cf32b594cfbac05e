//! Records a ring refers to in the store's log instead of holding: large events.
//!
//! A store writes every line to its log, so holding a large event's JSON in the ring as well
//! copies it into fresh memory while the ring grows: for 4-64 KiB tool outputs that copy and its
//! new pages cost about as much again as writing the line (README, "large tool outputs"). For a
//! large line the ring holds a short reference instead (`REFERENCE_LEN` bytes in its block,
//! starting with `MARK`, which no JSON record starts with), and reads the line back from the
//! file, where the kernel's page cache has it. The ring still counts the record's full length
//! against its byte limit, so it holds the same events either way.
//!
//! A reference keeps its segment's file open. Once retention (or compression) removes that file
//! from the directory, its disk space would stay taken for as long as the ring held the
//! reference; `hold_unlinked` then copies such lines into memory, so the store's disk stays
//! within its budget and the ring holds no more memory than it did before references.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::Arc;

use crate::event::CoreError;

/// First byte of a reference. Every record the ring holds otherwise is a JSON object (`{`).
pub const MARK: u8 = 0;
/// Bytes of a reference in a block: the mark and the entry's number.
pub const REFERENCE_LEN: usize = 9;

/// A line of a log file: its body (the JSON without the closing brace, as `Store::append`
/// takes it) is `body_len` bytes at `offset`.
#[derive(Debug, Clone)]
pub struct LineInFile {
    pub file: Arc<File>,
    pub offset: u64,
    pub body_len: usize,
}

enum Line {
    InFile(LineInFile),
    /// The record (body and closing brace), copied once its file was removed.
    Held(Box<[u8]>),
}

struct Entry {
    /// Absolute index of the ring record that refers to this entry.
    record: u64,
    line: Line,
}

/// The entries the references of one ring point to, oldest first.
#[derive(Default)]
pub struct ExternalLines {
    entries: VecDeque<Entry>,
    /// Number of `entries[0]` (entries ever added before it).
    first: u64,
    held_bytes: usize,
}

impl ExternalLines {
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The reference the next entry will have.
    pub fn next_reference(&self) -> [u8; REFERENCE_LEN] {
        let mut reference = [MARK; REFERENCE_LEN];
        let number = self.first + self.entries.len() as u64;
        reference[1..].copy_from_slice(&number.to_le_bytes());
        reference
    }

    /// Adds the entry `next_reference` named, for the ring record at absolute index `record`.
    pub fn push(&mut self, record: u64, line: LineInFile) {
        self.entries.push_back(Entry {
            record,
            line: Line::InFile(line),
        });
    }

    /// If the oldest entry belongs to the record at absolute index `record`, drops it and
    /// returns the record's length (what the ring counts for it).
    pub fn pop_for(&mut self, record: u64) -> Option<usize> {
        if self.entries.front()?.record != record {
            return None;
        }
        let entry = self.entries.pop_front()?;
        self.first += 1;
        Some(match entry.line {
            Line::InFile(line) => line.body_len + 1,
            Line::Held(bytes) => {
                self.held_bytes -= bytes.len();
                bytes.len()
            }
        })
    }

    /// Whether a record's bytes are a reference.
    #[inline]
    pub fn is_reference(bytes: &[u8]) -> bool {
        bytes.len() == REFERENCE_LEN && bytes[0] == MARK
    }

    /// Appends the record `reference` stands for (its JSON, closing brace included) to `out`.
    pub fn read(&self, reference: &[u8], out: &mut Vec<u8>) -> Result<(), CoreError> {
        let entry = self.entry(reference).ok_or_else(|| {
            CoreError::Invalid("internal error: a ring reference without its entry".into())
        })?;
        match &entry.line {
            Line::Held(bytes) => out.extend_from_slice(bytes),
            Line::InFile(line) => read_line(line, out)?,
        }
        Ok(())
    }

    fn entry(&self, reference: &[u8]) -> Option<&Entry> {
        let number = u64::from_le_bytes(reference.get(1..REFERENCE_LEN)?.try_into().ok()?);
        self.entries
            .get(usize::try_from(number.checked_sub(self.first)?).ok()?)
    }

    /// Copies into memory the lines whose file no longer has a name (removed by retention or
    /// compression, or by hand), so that their disk space is freed; returns how many. A line
    /// that cannot be read stays a reference (its file stays open and readable).
    pub fn hold_unlinked(&mut self) -> usize {
        let mut held = 0;
        let mut last: Option<(*const File, bool)> = None;
        for entry in &mut self.entries {
            let Line::InFile(line) = &entry.line else {
                continue;
            };
            let file = Arc::as_ptr(&line.file);
            let unlinked = match last {
                Some((seen, unlinked)) if seen == file => unlinked,
                _ => {
                    // Unknown (fstat failed): treat as linked; the next check tries again.
                    let unlinked = line.file.metadata().is_ok_and(|m| m.nlink() == 0);
                    last = Some((file, unlinked));
                    unlinked
                }
            };
            if !unlinked {
                continue;
            }
            let mut bytes = Vec::with_capacity(line.body_len + 1);
            if read_line(line, &mut bytes).is_ok() {
                self.held_bytes += bytes.len();
                entry.line = Line::Held(bytes.into_boxed_slice());
                held += 1;
            }
        }
        held
    }

    /// Forgets every entry (the ring was cleared); numbers go on from where they were.
    pub fn clear(&mut self) {
        self.first += self.entries.len() as u64;
        self.entries.clear();
        self.held_bytes = 0;
    }

    /// Memory the entries take, lines copied in included.
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>() + self.held_bytes
    }
}

fn read_line(line: &LineInFile, out: &mut Vec<u8>) -> Result<(), CoreError> {
    let start = out.len();
    out.resize(start + line.body_len, 0);
    if let Err(e) = line.file.read_exact_at(&mut out[start..], line.offset) {
        out.truncate(start);
        // Damage, as for a compressed record that does not decompress: the line was written
        // whole, so the file was cut or cannot be read. (Not an I/O error of the store's own,
        // which Python would see as a refused write.)
        return Err(CoreError::Invalid(format!(
            "stored event is damaged: its {} bytes at offset {} of its log segment cannot be \
             read: {e}",
            line.body_len, line.offset
        )));
    }
    out.push(b'}');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(text: &[u8], name: &str) -> (std::path::PathBuf, Arc<File>) {
        let path = std::env::temp_dir().join(format!(
            "oa-external-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.write_all(text).unwrap();
        (path, Arc::new(file))
    }

    /// Adds an entry for record `record`: `body_len` bytes at `offset` of `file`; its reference.
    fn add(
        lines: &mut ExternalLines,
        record: u64,
        file: &Arc<File>,
        offset: u64,
        body_len: usize,
    ) -> [u8; REFERENCE_LEN] {
        let reference = lines.next_reference();
        let file = Arc::clone(file);
        lines.push(
            record,
            LineInFile {
                file,
                offset,
                body_len,
            },
        );
        reference
    }

    #[test]
    fn references_read_their_line_and_pop_in_order() {
        let (path, file) = file_with(b"{\"a\":1,\"seq\":0}\n{\"b\":22,\"seq\":1}\n", "read");
        let mut lines = ExternalLines::default();
        let first = add(&mut lines, 7, &file, 0, 6);
        let second = add(&mut lines, 9, &file, 16, 7);
        assert!(ExternalLines::is_reference(&first) && first != second);
        let mut out = Vec::new();
        lines.read(&second, &mut out).unwrap();
        lines.read(&first, &mut out).unwrap();
        assert_eq!(out, b"{\"b\":22}{\"a\":1}");
        assert_eq!(lines.pop_for(9), None, "not the oldest");
        assert_eq!(lines.pop_for(7), Some(7));
        assert!(lines.read(&first, &mut out).is_err(), "popped");
        assert_eq!(lines.pop_for(9), Some(8));
        assert!(lines.is_empty());
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn lines_of_removed_files_are_copied_in_and_still_read() {
        let (kept_path, kept) = file_with(b"{\"k\":1,\"seq\":0}\n", "kept");
        let (gone_path, gone) = file_with(b"{\"g\":2,\"seq\":1}\n", "gone");
        let mut lines = ExternalLines::default();
        let old = add(&mut lines, 0, &gone, 0, 6);
        let new = add(&mut lines, 1, &kept, 0, 6);
        assert_eq!(lines.hold_unlinked(), 0);
        let before = lines.heap_bytes();
        std::fs::remove_file(&gone_path).unwrap();
        assert_eq!(lines.hold_unlinked(), 1);
        assert_eq!(lines.hold_unlinked(), 0, "held once");
        assert_eq!(lines.heap_bytes(), before + 7, "the copy is counted");
        let mut out = Vec::new();
        lines.read(&old, &mut out).unwrap();
        lines.read(&new, &mut out).unwrap();
        assert_eq!(out, b"{\"g\":2}{\"k\":1}");
        assert_eq!(lines.pop_for(0), Some(7));
        std::fs::remove_file(kept_path).unwrap();
    }

    #[test]
    fn a_line_cut_from_its_file_is_an_error_that_says_where() {
        let (path, file) = file_with(b"{\"a\":1", "cut");
        let mut lines = ExternalLines::default();
        let reference = add(&mut lines, 0, &file, 0, 40);
        let mut out = b"x".to_vec();
        let error = lines.read(&reference, &mut out).unwrap_err().to_string();
        assert!(error.contains("40 bytes at offset 0"), "{error}");
        assert_eq!(out, b"x", "nothing appended");
        std::fs::remove_file(path).unwrap();
    }
}
