//! The files of a segmented store, and how they are named, found, opened and read.
//!
//! A store whose active segment is `<dir>/<stem>.jsonl` keeps its sealed segments beside it as
//! `<dir>/<stem>_<first seq, 20 digits>.jsonl` (or `.jsonl.zst` when compressed), so that a
//! sorted listing is seq order and `cat`/`zstdcat` of the files in name order is the store in
//! order. Files rotated by the reference plugin, `<stem>_<epoch ms>.jsonl` (size rotation) and
//! `<stem>_<YYYY-MM-DD>.jsonl` (daily rotation), are part of the store too: they hold the oldest
//! events and come first, ordered by their time.
//!
//! Names that match none of these (`<stem>_backup.jsonl`, another store's `<stem>_x_...`) are
//! not the store's and are never read or deleted.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Digits of the first seq in a sealed segment's name (enough for any u64, and distinct from
/// the 13-digit epoch milliseconds of the reference's rotated names).
const SEQ_DIGITS: usize = 20;
const PLAIN: &str = ".jsonl";
const COMPRESSED: &str = ".jsonl.zst";
/// A compressed segment being written; never read, removed by the writer on open.
const COMPRESSING: &str = ".jsonl.zst.tmp";

/// Where the files of a store are: the directory, the stem of the names and the active file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub dir: PathBuf,
    pub stem: String,
    pub active: PathBuf,
}

impl Layout {
    /// The layout of the store whose active segment is `path`.
    pub fn of(path: &Path) -> Self {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = name.strip_suffix(PLAIN).unwrap_or(&name).to_string();
        let dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Self {
            dir,
            stem,
            active: path.to_path_buf(),
        }
    }

    /// The name a segment sealed with `first_seq` gets.
    pub fn sealed_path(&self, first_seq: u64, compressed: bool) -> PathBuf {
        let suffix = if compressed { COMPRESSED } else { PLAIN };
        self.dir
            .join(format!("{}_{first_seq:0SEQ_DIGITS$}{suffix}", self.stem))
    }

    /// Where a compressed copy is written before it is renamed into place.
    pub fn compressing_path(&self, first_seq: u64) -> PathBuf {
        self.dir.join(format!(
            "{}_{first_seq:0SEQ_DIGITS$}{COMPRESSING}",
            self.stem
        ))
    }

    /// The lock file every writer of this store holds (the active file itself is renamed away
    /// when it is sealed, so it cannot carry the lock).
    pub fn lock_path(&self) -> PathBuf {
        let mut name = self
            .active
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(".lock");
        self.dir.join(name)
    }
}

/// What a file beside the active one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Rotated by the reference plugin; `key` is the epoch ms its name gives (for a daily file,
    /// the end of that day), used only to order such files.
    Reference { key: i64 },
    /// Sealed by this store.
    Sealed { first_seq: u64, compressed: bool },
}

/// One sealed (or reference-rotated) segment found on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentFile {
    pub path: PathBuf,
    pub kind: Kind,
    pub bytes: u64,
    pub modified: Option<SystemTime>,
}

impl SegmentFile {
    pub fn first_seq(&self) -> Option<u64> {
        match self.kind {
            Kind::Sealed { first_seq, .. } => Some(first_seq),
            Kind::Reference { .. } => None,
        }
    }

    pub fn compressed(&self) -> bool {
        matches!(
            self.kind,
            Kind::Sealed {
                compressed: true,
                ..
            }
        )
    }
}

/// The store's files as found in its directory.
#[derive(Debug, Default)]
pub struct Listing {
    /// Reference-rotated files by time, then sealed segments by first seq.
    pub segments: Vec<SegmentFile>,
    /// Leftovers of an interrupted compression: a partial `.zst.tmp`, or the plain file of a
    /// segment whose compressed copy is complete. Readers skip them; the writer deletes them.
    pub leftovers: Vec<PathBuf>,
}

/// Finds the store's sealed and reference-rotated files. A missing directory is an empty store.
pub fn list(layout: &Layout) -> io::Result<Listing> {
    let entries = match std::fs::read_dir(&layout.dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Listing::default()),
        Err(e) => return Err(e),
    };
    let prefix = format!("{}_", layout.stem);
    let mut found: Vec<SegmentFile> = Vec::new();
    let mut leftovers = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let path = entry.path();
        if let Some(digits) = rest.strip_suffix(COMPRESSING) {
            if parse_seq(digits).is_some() {
                leftovers.push(path);
            }
            continue;
        }
        let Some(kind) = parse_kind(rest) else {
            continue;
        };
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            // Deleted since it was listed (retention) or a dangling link: not a segment.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if let Some(what) = not_regular(meta.file_type()) {
            // Reading it could block (a FIFO) or fail later; skipping it would hide events the
            // name promises. Say what is in the way.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is named like a segment of this store but is {what}, not a regular \
                     file; move it out of the store's directory",
                    path.display()
                ),
            ));
        }
        found.push(SegmentFile {
            path,
            kind,
            bytes: meta.len(),
            modified: meta.modified().ok(),
        });
    }
    found.sort_by(|a, b| {
        order_key(&a.kind)
            .cmp(&order_key(&b.kind))
            .then(a.path.cmp(&b.path))
    });
    // A segment both plain and compressed: the compressed copy was renamed into place only once
    // complete and synced, so the plain one is the leftover.
    let mut segments: Vec<SegmentFile> = Vec::with_capacity(found.len());
    for file in found {
        match (segments.last(), file.kind) {
            (
                Some(previous),
                Kind::Sealed {
                    first_seq,
                    compressed,
                },
            ) if previous.first_seq() == Some(first_seq) => {
                if compressed && !previous.compressed() {
                    if let Some(plain) = segments.pop() {
                        leftovers.push(plain.path);
                    }
                    segments.push(file);
                } else {
                    leftovers.push(file.path);
                }
            }
            _ => segments.push(file),
        }
    }
    Ok(Listing {
        segments,
        leftovers,
    })
}

fn order_key(kind: &Kind) -> (u8, i128) {
    match *kind {
        Kind::Reference { key } => (0, i128::from(key)),
        Kind::Sealed { first_seq, .. } => (1, i128::from(first_seq)),
    }
}

fn parse_seq(digits: &str) -> Option<u64> {
    (digits.len() == SEQ_DIGITS && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

fn parse_kind(rest: &str) -> Option<Kind> {
    if let Some(digits) = rest.strip_suffix(COMPRESSED) {
        return parse_seq(digits).map(|first_seq| Kind::Sealed {
            first_seq,
            compressed: true,
        });
    }
    let part = rest.strip_suffix(PLAIN)?;
    if let Some(first_seq) = parse_seq(part) {
        return Some(Kind::Sealed {
            first_seq,
            compressed: false,
        });
    }
    if !part.is_empty() && part.len() < SEQ_DIGITS && part.bytes().all(|b| b.is_ascii_digit()) {
        return part.parse().ok().map(|key| Kind::Reference { key });
    }
    parse_day(part).map(|day_start| Kind::Reference {
        key: day_start + 86_400_000,
    })
}

/// Epoch ms of the start (UTC) of a `YYYY-MM-DD` day.
fn parse_day(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = &text[range];
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from 1970-01-01 of a proleptic Gregorian date (the civil-from-days inverse).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some(days * 86_400_000)
}

/// What is at a path that must be a regular file, if it is something else.
fn not_regular(file_type: std::fs::FileType) -> Option<&'static str> {
    if file_type.is_file() {
        None
    } else if file_type.is_dir() {
        Some("a directory")
    } else if file_type.is_fifo() {
        Some("a FIFO")
    } else if file_type.is_socket() {
        Some("a socket")
    } else if file_type.is_char_device() {
        Some("a character device")
    } else if file_type.is_block_device() {
        Some("a block device")
    } else {
        Some("not a regular file")
    }
}

/// Why `path` cannot hold a store: it exists and is not a regular file (checked without
/// opening it, so a FIFO never blocks).
pub fn check_regular(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(meta) => match not_regular(meta.file_type()) {
            None => Ok(()),
            Some(what) => Err(format!(
                "{} is {what}, not a regular file; a store is a regular file",
                path.display()
            )),
        },
        Err(_) => Ok(()),
    }
}

/// Opens an existing file for reading, refusing anything but a regular file. The open itself
/// never blocks (O_NONBLOCK, which regular files ignore), and the type is checked on the open
/// descriptor, so a FIFO swapped in after a check cannot hang the reader either.
pub fn open_for_reading(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if let Some(what) = not_regular(meta.file_type()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is {what}, not a regular file", path.display()),
        ));
    }
    Ok(file)
}

/// A reader of a segment's JSON lines: the file itself, or its zstd frames decoded.
pub fn reader_of(file: File, compressed: bool) -> io::Result<Box<dyn Read + Send>> {
    if compressed {
        Ok(Box::new(super::compress::Decoder::new(file)?))
    } else {
        Ok(Box::new(file))
    }
}

/// Whether a path names a compressed segment (by its suffix).
pub fn is_compressed_name(path: &Path) -> bool {
    path.to_str().is_some_and(|p| p.ends_with(".zst"))
}

/// Makes renames, creations and deletions in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// One file of a store, as a reader sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreFile {
    pub path: PathBuf,
    pub compressed: bool,
    /// The seq of its first event, from its name (sealed segments only).
    pub first_seq: Option<u64>,
    /// Whether this is the active segment (the path a store is opened with).
    pub active: bool,
}

impl StoreFile {
    /// A reader of the file's JSON lines.
    pub fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        reader_of(open_for_reading(&self.path)?, self.compressed)
    }
}

/// Every file of the store whose active segment is `path`, oldest first: reference-rotated
/// files, sealed segments, then the active one. A path naming a single segment (`.zst` or a
/// sealed name) is that file alone. NotFound if there is no file at all; InvalidInput if `path`
/// is not a regular file.
pub fn store_files(path: &Path) -> io::Result<Vec<StoreFile>> {
    if let Err(message) = check_regular(path) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
    }
    let exists = path.exists();
    if is_compressed_name(path) {
        if !exists {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such file"));
        }
        return Ok(vec![StoreFile {
            path: path.to_path_buf(),
            compressed: true,
            first_seq: None,
            active: false,
        }]);
    }
    let layout = Layout::of(path);
    let mut files: Vec<StoreFile> = list(&layout)?
        .segments
        .into_iter()
        .map(|segment| StoreFile {
            compressed: segment.compressed(),
            first_seq: segment.first_seq(),
            path: segment.path,
            active: false,
        })
        .collect();
    if exists {
        files.push(StoreFile {
            path: path.to_path_buf(),
            compressed: false,
            first_seq: None,
            active: true,
        });
    }
    if files.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "no such file"));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("oca-seg-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn names_sort_in_seq_order_and_parse_back() {
        let layout = Layout::of(Path::new("/x/events.jsonl"));
        assert_eq!(layout.stem, "events");
        let a = layout.sealed_path(9, false);
        let b = layout.sealed_path(10, true);
        assert_eq!(
            a.file_name().unwrap().to_str().unwrap(),
            "events_00000000000000000009.jsonl"
        );
        assert!(a < b);
        assert_eq!(
            parse_kind("00000000000000000010.jsonl.zst"),
            Some(Kind::Sealed {
                first_seq: 10,
                compressed: true
            })
        );
        assert_eq!(layout.lock_path(), Path::new("/x/events.jsonl.lock"));
        assert_eq!(Layout::of(Path::new("events.jsonl")).dir, Path::new("."));
    }

    #[test]
    fn reference_names_are_recognised_and_others_ignored() {
        assert_eq!(
            parse_kind("1700000000000.jsonl"),
            Some(Kind::Reference {
                key: 1_700_000_000_000
            })
        );
        // 2024-01-01 starts at 1704067200000; a daily file sorts at the end of its day.
        assert_eq!(
            parse_kind("2024-01-01.jsonl"),
            Some(Kind::Reference {
                key: 1_704_067_200_000 + 86_400_000
            })
        );
        assert_eq!(parse_day("1970-01-01"), Some(0));
        assert_eq!(parse_day("2000-03-01"), Some(951_868_800_000));
        for other in [
            "backup.jsonl",
            "2024-13-01.jsonl",
            "x_00000000000000000001.jsonl",
            "00000000000000000001.json",
            ".jsonl",
        ] {
            assert_eq!(parse_kind(other), None, "{other}");
        }
    }

    #[test]
    fn listing_orders_files_and_finds_leftovers() {
        let dir = temp_dir("listing");
        let layout = Layout::of(&dir.join("events.jsonl"));
        for name in [
            "events.jsonl",
            "events_00000000000000000100.jsonl",
            "events_00000000000000000100.jsonl.zst",
            "events_00000000000000000005.jsonl.zst",
            "events_00000000000000000200.jsonl.zst.tmp",
            "events_1700000000000.jsonl",
            "events_2023-11-01.jsonl",
            "events_backup.jsonl",
            "events.jsonl.lock",
            "other_00000000000000000001.jsonl",
        ] {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        let listing = list(&layout).unwrap();
        let names: Vec<String> = listing
            .segments
            .iter()
            .map(|s| s.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "events_2023-11-01.jsonl",
                "events_1700000000000.jsonl",
                "events_00000000000000000005.jsonl.zst",
                "events_00000000000000000100.jsonl.zst",
            ]
        );
        let mut leftovers: Vec<String> = listing
            .leftovers
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        leftovers.sort();
        assert_eq!(
            leftovers,
            [
                "events_00000000000000000100.jsonl",
                "events_00000000000000000200.jsonl.zst.tmp"
            ]
        );
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = temp_dir("fifo");
        let path = dir.join("pipe.jsonl");
        let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let message = check_regular(&path).unwrap_err();
        assert!(message.contains("a FIFO"), "{message}");
        let err = open_for_reading(&path).unwrap_err();
        assert!(err.to_string().contains("a FIFO"), "{err}");
        assert!(check_regular(&dir).unwrap_err().contains("a directory"));
        assert!(check_regular(&dir.join("missing")).is_ok());
    }
}
