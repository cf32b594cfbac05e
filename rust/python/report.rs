//! The recovery report as Python sees it: one set of keys for `JsonlStore.recovery` and
//! `file_stats`.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::jsonl::RecoveryReport;

/// Adds the report's keys to `dict`: `events` (valid event lines), `corrupt_lines`,
/// `duplicate_lines`, `torn_tail_bytes`, `padding_bytes`, `unterminated_last_line`, `last_seq`
/// and `snapshot_lines` (their meaning is in `RecoveryReport` and the stubs).
pub(crate) fn add_recovery(dict: &Bound<'_, PyDict>, report: &RecoveryReport) -> PyResult<()> {
    let RecoveryReport {
        events,
        corrupt_lines,
        duplicate_lines,
        torn_tail_bytes,
        padding_bytes,
        unterminated_last_line,
        last_seq,
        snapshot_lines,
    } = report;
    dict.set_item("events", events)?;
    dict.set_item("corrupt_lines", corrupt_lines)?;
    dict.set_item("duplicate_lines", duplicate_lines)?;
    dict.set_item("torn_tail_bytes", torn_tail_bytes)?;
    dict.set_item("padding_bytes", padding_bytes)?;
    dict.set_item("unterminated_last_line", unterminated_last_line)?;
    dict.set_item("last_seq", last_seq)?;
    dict.set_item("snapshot_lines", snapshot_lines)?;
    Ok(())
}
