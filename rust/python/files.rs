//! Reading store files without opening them for writing: no lock, nothing changed on disk.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::args::query_from_kwargs;
use super::decode::Copied;
use super::errors::StoreError;
use super::report::add_recovery;
use crate::jsonl::{fields_of, scan, ScanOutcome};
use crate::query::Query;
use crate::ring::Ring;

fn open(path: &PathBuf) -> PyResult<File> {
    File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => pyo3::exceptions::PyFileNotFoundError::new_err(format!(
            "no such file: {}",
            path.display()
        )),
        _ => StoreError::new_err(format!("cannot open {}: {e}", path.display())),
    })
}

fn read_error(path: &std::path::Path, e: std::io::Error) -> PyErr {
    StoreError::new_err(format!("cannot read {}: {e}", path.display()))
}

/// Events of a store file matching the filters (the keywords of `query`), read with the GIL
/// released.
#[pyfunction]
#[pyo3(signature = (path, **filters))]
pub fn read_events<'py>(
    py: Python<'py>,
    path: PathBuf,
    filters: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyList>> {
    let args = query_from_kwargs("read_events", filters)?;
    let file = open(&path)?;
    let copied = py
        .detach(|| matching(file, &args.query))
        .map_err(|e| read_error(&path, e))?;
    copied.into_py(py, args.raw)
}

/// Keeps matches in a ring: bounded by `limit` when the newest are wanted, so memory stays flat
/// however large the file is.
fn matching(file: File, query: &Query) -> std::io::Result<Copied> {
    if query.limit == Some(0) {
        return Ok(Copied::default());
    }
    let keep = if query.newest_first {
        query.limit.unwrap_or(usize::MAX)
    } else {
        usize::MAX
    };
    let mut ring = match Ring::new(keep.clamp(1, u32::MAX as usize - 1), None) {
        Ok(ring) => ring,
        Err(_) => return Ok(Copied::default()),
    };
    let single = Query {
        limit: None,
        newest_first: false,
        ..query.clone()
    };
    let mut probe = match Ring::new(1, None) {
        Ok(ring) => ring,
        Err(_) => return Ok(Copied::default()),
    };
    let oldest_limit = if query.newest_first {
        usize::MAX
    } else {
        query.limit.unwrap_or(usize::MAX)
    };
    scan(file, |event| {
        if ring.len() >= oldest_limit {
            return true;
        }
        // Evaluate the filter on this line's header alone, with the same code queries use.
        let fields = fields_of(event.line);
        if probe.push(event.seq, &fields, &event.json).is_err()
            || probe.select(&single, 1).is_empty()
        {
            return true;
        }
        ring.push(event.seq, &fields, &event.json).is_ok()
    })?;
    let order: Vec<usize> = if query.newest_first {
        (0..ring.len()).rev().collect()
    } else {
        (0..ring.len()).collect()
    };
    Copied::from_ring(&ring, order).map_err(|e| std::io::Error::other(e.to_string()))
}

#[derive(Default)]
struct FileSummary {
    outcome: ScanOutcome,
    streams: BTreeMap<String, u64>,
    types: BTreeMap<String, u64>,
    first_timestamp: Option<f64>,
    last_timestamp: Option<f64>,
    file_bytes: u64,
}

/// What a store file holds: path, file_bytes, streams, types (with counts), first_timestamp,
/// last_timestamp, and the recovery report's keys (events, corrupt_lines, ...; see `report.rs`).
#[pyfunction]
pub fn file_stats<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    let file = open(&path)?;
    let summary = py
        .detach(|| summarize(file))
        .map_err(|e| read_error(&path, e))?;
    let report = &summary.outcome.report;
    let dict = PyDict::new(py);
    dict.set_item("path", path)?;
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

fn summarize(file: File) -> std::io::Result<FileSummary> {
    let mut summary = FileSummary {
        file_bytes: file.metadata()?.len(),
        ..FileSummary::default()
    };
    let outcome = scan(file, |event| {
        let line = event.line;
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
    })?;
    summary.outcome = outcome;
    Ok(summary)
}
