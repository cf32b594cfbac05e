//! Reading store files without opening them for writing: no lock, nothing changed on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::args::query_from_kwargs;
use super::decode::Copied;
use super::errors::StoreError;
use super::report::add_recovery;
use crate::jsonl::segments::{store_files, StoreFile};
use crate::jsonl::{fields_of, scan_segment, RecoveryReport};
use crate::query::Query;
use crate::ring::Ring;

/// The files of the store at `path` (every segment), or the error a reader raises.
fn files_of(path: &Path) -> PyResult<Vec<StoreFile>> {
    store_files(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => pyo3::exceptions::PyFileNotFoundError::new_err(format!(
            "no such file: {}",
            path.display()
        )),
        std::io::ErrorKind::InvalidInput => pyo3::exceptions::PyValueError::new_err(e.to_string()),
        std::io::ErrorKind::PermissionDenied => pyo3::exceptions::PyPermissionError::new_err(
            format!("permission denied: {}", path.display()),
        ),
        _ => StoreError::new_err(format!("cannot read {}: {e}", path.display())),
    })
}

fn read_error(path: &Path, e: std::io::Error) -> PyErr {
    if e.kind() == std::io::ErrorKind::InvalidInput {
        return pyo3::exceptions::PyValueError::new_err(e.to_string());
    }
    StoreError::new_err(format!("cannot read {}: {e}", path.display()))
}

/// Opens one file of a store; None if it went away (retention deleted it meanwhile).
fn open_file(file: &StoreFile) -> std::io::Result<Option<Box<dyn std::io::Read + Send>>> {
    match file.open() {
        Ok(reader) => Ok(Some(reader)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", file.path.display()),
        )),
    }
}

/// Events of a store (every segment) matching the filters (the keywords of `query`), read with
/// the GIL released.
#[pyfunction]
#[pyo3(signature = (path, **filters))]
pub fn read_events<'py>(
    py: Python<'py>,
    path: PathBuf,
    filters: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyList>> {
    let args = query_from_kwargs("read_events", filters)?;
    let files = py.detach(|| files_of(&path))?;
    let copied = py
        .detach(|| matching(&files, &args.query))
        .map_err(|e| read_error(&path, e))?;
    copied.into_py(py, args.raw)
}

/// Whether a file's events may match `after_seq`: false when its name shows all its seqs are
/// below (the next file's first seq is at most `after + 1`).
fn may_follow(files: &[StoreFile], index: usize, after: Option<u64>) -> bool {
    match (after, files.get(index + 1).and_then(|f| f.first_seq)) {
        (Some(after), Some(next_first)) => next_first > after.saturating_add(1),
        _ => true,
    }
}

/// Scans one file, keeping its matches of `single` (a one-event filter) in `ring` (whose
/// capacity bounds what is kept); stops adding once `stop_at` matches are held.
fn scan_matches(
    file: &StoreFile,
    after: Option<u64>,
    single: &Query,
    ring: &mut Ring,
    stop_at: usize,
) -> std::io::Result<Option<u64>> {
    let Some(reader) = open_file(file)? else {
        return Ok(after);
    };
    let mut probe = match Ring::new(1, None) {
        Ok(ring) => ring,
        Err(_) => return Ok(after),
    };
    let outcome = scan_segment(
        reader,
        after,
        |event| {
            if ring.len() >= stop_at {
                return true;
            }
            // Evaluate the filter on this line's header alone, with the same code queries use.
            let fields = fields_of(event.line);
            if probe.push(event.seq, &fields, &event.json).is_err()
                || probe.select(single, 1).is_empty()
            {
                return true;
            }
            ring.push(event.seq, &fields, &event.json).is_ok()
        },
        |_| {},
    )?;
    Ok(Some(outcome.report.last_seq).filter(|&s| s > 0).or(after))
}

fn new_ring(capacity: usize) -> Option<Ring> {
    Ring::new(capacity.clamp(1, u32::MAX as usize - 1), None).ok()
}

/// Keeps matches in a ring: bounded by `limit` when the newest are wanted, so memory stays flat
/// however large the store is; the newest are found reading the newest segments first.
fn matching(files: &[StoreFile], query: &Query) -> std::io::Result<Copied> {
    if query.limit == Some(0) {
        return Ok(Copied::default());
    }
    let single = Query {
        limit: None,
        newest_first: false,
        ..query.clone()
    };
    if query.newest_first {
        let limit = query.limit.unwrap_or(usize::MAX);
        let mut copied = Copied::default();
        let mut found = 0;
        for (index, file) in files.iter().enumerate().rev() {
            if found >= limit {
                break;
            }
            if !may_follow(files, index, query.after_seq) {
                break;
            }
            let Some(mut ring) = new_ring(limit - found) else {
                break;
            };
            let after = file.first_seq.map(|first| first.saturating_sub(1));
            scan_matches(file, after, &single, &mut ring, usize::MAX)?;
            for at in (0..ring.len()).rev() {
                if let Some(record) = ring.get(at) {
                    copied.push(record.json, record.seq);
                }
            }
            found += ring.len();
        }
        return Ok(copied);
    }
    let limit = query.limit.unwrap_or(usize::MAX);
    let Some(mut ring) = new_ring(usize::MAX) else {
        return Ok(Copied::default());
    };
    let mut after = None;
    let mut started = false;
    for (index, file) in files.iter().enumerate() {
        if !started {
            if !may_follow(files, index, query.after_seq) {
                continue;
            }
            started = true;
            after = file.first_seq.map(|first| first.saturating_sub(1));
        }
        after = scan_matches(file, after, &single, &mut ring, limit)?;
        if ring.len() >= limit {
            break;
        }
    }
    Ok(Copied::from_ring(&ring, 0..ring.len()))
}

#[derive(Default)]
struct FileSummary {
    report: RecoveryReport,
    streams: BTreeMap<String, u64>,
    types: BTreeMap<String, u64>,
    first_timestamp: Option<f64>,
    last_timestamp: Option<f64>,
    file_bytes: u64,
    /// Per file: path, bytes, compressed, its report, its first event's seq.
    segments: Vec<(PathBuf, u64, bool, RecoveryReport, Option<u64>)>,
}

/// What a store holds, all segments together: path, file_bytes, streams, types (with counts),
/// first_timestamp, last_timestamp, the recovery report's keys (events, corrupt_lines, ...; see
/// `report.rs`), and under "segments" one dict per file (path, file_bytes, compressed,
/// first_seq and the report's keys).
#[pyfunction]
pub fn file_stats<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    let files = py.detach(|| files_of(&path))?;
    let summary = py
        .detach(|| summarize(&files))
        .map_err(|e| read_error(&path, e))?;
    let report = &summary.report;
    let dict = PyDict::new(py);
    dict.set_item("path", &path)?;
    dict.set_item("file_bytes", summary.file_bytes)?;
    dict.set_item("streams", summary.streams.len())?;
    dict.set_item("types", summary.types)?;
    dict.set_item(
        "first_timestamp",
        summary
            .first_timestamp
            .map(|t| ms_object(py, t))
            .transpose()?,
    )?;
    dict.set_item(
        "last_timestamp",
        summary
            .last_timestamp
            .map(|t| ms_object(py, t))
            .transpose()?,
    )?;
    add_recovery(&dict, report)?;
    let segments = PyList::empty(py);
    for (file, bytes, compressed, report, first_seq) in &summary.segments {
        let segment = PyDict::new(py);
        segment.set_item("path", file.to_string_lossy())?;
        segment.set_item("file_bytes", bytes)?;
        segment.set_item("compressed", compressed)?;
        segment.set_item("first_seq", first_seq)?;
        add_recovery(&segment, report)?;
        segments.append(segment)?;
    }
    dict.set_item("segments", segments)?;
    Ok(dict)
}

/// Milliseconds as an int when whole (as events usually carry them), else as a float.
fn ms_object(py: Python<'_>, ms: f64) -> PyResult<Bound<'_, PyAny>> {
    if ms.fract() == 0.0 && ms.abs() < 9.0e15 {
        Ok((ms as i64).into_pyobject(py)?.into_any())
    } else {
        Ok(ms.into_pyobject(py)?.into_any())
    }
}

fn summarize(files: &[StoreFile]) -> std::io::Result<FileSummary> {
    let mut summary = FileSummary::default();
    let mut after = None;
    for file in files {
        let Some(reader) = open_file(file)? else {
            continue;
        };
        let bytes = std::fs::metadata(&file.path).map_or(0, |m| m.len());
        summary.file_bytes += bytes;
        let mut first_seq = None;
        let outcome = scan_segment(
            reader,
            after,
            |event| {
                let line = event.line;
                first_seq.get_or_insert(event.seq);
                *summary
                    .types
                    .entry(line.event_type.to_string())
                    .or_default() += 1;
                if let Some(stream) = &line.stream_id {
                    *summary.streams.entry(stream.to_string()).or_default() += 1;
                }
                summary.first_timestamp = Some(
                    summary
                        .first_timestamp
                        .map_or(line.timestamp, |t| t.min(line.timestamp)),
                );
                summary.last_timestamp = Some(
                    summary
                        .last_timestamp
                        .map_or(line.timestamp, |t| t.max(line.timestamp)),
                );
                true
            },
            |_| {},
        )?;
        if after.is_some() || outcome.report.events > 0 {
            after = Some(outcome.report.last_seq);
        }
        summary.report.add(&outcome.report);
        summary.segments.push((
            file.path.clone(),
            bytes,
            file.compressed,
            outcome.report,
            first_seq,
        ));
    }
    Ok(summary)
}
