//! The recovery report as a Python dict.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::jsonl::RecoveryReport;

pub(crate) fn recovery_dict<'py>(
    py: Python<'py>,
    report: &RecoveryReport,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("lines", report.lines)?;
    dict.set_item("corrupt_lines", report.corrupt_lines)?;
    dict.set_item("duplicate_lines", report.duplicate_lines)?;
    dict.set_item("truncated_bytes", report.truncated_bytes)?;
    dict.set_item("padding_bytes", report.padding_bytes)?;
    dict.set_item("repaired_tail", report.repaired_tail)?;
    dict.set_item("last_seq", report.last_seq)?;
    Ok(dict)
}
