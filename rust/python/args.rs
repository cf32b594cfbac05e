//! Checking arguments from Python: the keywords every query method takes, and sizes.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::query::Query;

/// The keywords every query method takes.
const QUERY_KEYWORDS: [&str; 10] = [
    "stream_id",
    "type",
    "actor",
    "correlation_id",
    "since",
    "until",
    "after_seq",
    "limit",
    "newest_first",
    "raw",
];

/// A query and how its matches come back.
pub(crate) struct QueryArgs {
    pub query: Query,
    /// Each match as the JSON bytes of its line (no dict built) instead of a dict.
    pub raw: bool,
}

/// A query from the keyword arguments of `method`; unknown keywords are a TypeError, as for a
/// Python function.
pub(crate) fn query_from_kwargs(
    method: &str,
    filters: Option<&Bound<'_, PyDict>>,
) -> PyResult<QueryArgs> {
    let Some(filters) = filters else {
        return Ok(QueryArgs {
            query: Query::default(),
            raw: false,
        });
    };
    for key in filters.keys() {
        let name: String = key.extract()?;
        if !QUERY_KEYWORDS.contains(&name.as_str()) {
            return Err(PyTypeError::new_err(format!(
                "{method}() got an unexpected keyword argument '{name}'"
            )));
        }
    }
    let get = |name: &str| filters.get_item(name).ok().flatten();
    let flag = |name: &str| -> PyResult<bool> {
        match get(name) {
            None => Ok(false),
            Some(value) => value
                .extract::<bool>()
                .map_err(|_| PyTypeError::new_err(format!("{name} must be a bool"))),
        }
    };
    let query = build_query(
        get("stream_id").as_ref(),
        get("type").as_ref(),
        get("actor").as_ref(),
        get("correlation_id").as_ref(),
        get("since").as_ref(),
        get("until").as_ref(),
        get("after_seq").as_ref(),
        get("limit").as_ref(),
        flag("newest_first")?,
    )?;
    Ok(QueryArgs {
        query,
        raw: flag("raw")?,
    })
}

/// The keyword filters every query method takes.
#[allow(clippy::too_many_arguments)]
fn build_query(
    stream_id: Option<&Bound<'_, PyAny>>,
    event_type: Option<&Bound<'_, PyAny>>,
    actor: Option<&Bound<'_, PyAny>>,
    correlation_id: Option<&Bound<'_, PyAny>>,
    since: Option<&Bound<'_, PyAny>>,
    until: Option<&Bound<'_, PyAny>>,
    after_seq: Option<&Bound<'_, PyAny>>,
    limit: Option<&Bound<'_, PyAny>>,
    newest_first: bool,
) -> PyResult<Query> {
    let text = |value: Option<&Bound<'_, PyAny>>, name: &str| -> PyResult<Option<String>> {
        value
            .filter(|v| !v.is_none())
            .map(|v| {
                v.extract::<String>()
                    .map_err(|_| PyTypeError::new_err(format!("{name} must be a string")))
            })
            .transpose()
    };
    Ok(Query {
        stream_id: text(stream_id, "stream_id")?,
        types: event_type
            .filter(|v| !v.is_none())
            .map(type_filter)
            .transpose()?,
        actor: text(actor, "actor")?,
        correlation_id: text(correlation_id, "correlation_id")?,
        since: since
            .filter(|v| !v.is_none())
            .map(|v| time_bound(v, "since"))
            .transpose()?,
        until: until
            .filter(|v| !v.is_none())
            .map(|v| time_bound(v, "until"))
            .transpose()?,
        after_seq: after_seq
            .filter(|v| !v.is_none())
            .map(|v| non_negative(v, "after_seq"))
            .transpose()?,
        limit: limit
            .filter(|v| !v.is_none())
            .map(|v| non_negative(v, "limit").map(|n| usize::try_from(n).unwrap_or(usize::MAX)))
            .transpose()?,
        newest_first,
    })
}

fn type_filter(value: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if let Ok(one) = value.extract::<String>() {
        return Ok(vec![one]);
    }
    if value.is_instance_of::<pyo3::types::PyBytes>() {
        return Err(PyTypeError::new_err(
            "type must be a string or an iterable of strings, got bytes",
        ));
    }
    let items = value
        .try_iter()
        .map_err(|_| PyTypeError::new_err("type must be a string or an iterable of strings"))?;
    items
        .map(|item| {
            item?
                .extract::<String>()
                .map_err(|_| PyTypeError::new_err("type must contain only strings"))
        })
        .collect()
}

fn is_bool(value: &Bound<'_, PyAny>) -> bool {
    value.is_instance_of::<pyo3::types::PyBool>()
}

fn time_bound(value: &Bound<'_, PyAny>, name: &str) -> PyResult<f64> {
    if is_bool(value) {
        return Err(PyTypeError::new_err(format!(
            "{name} must be epoch milliseconds (an int or a float)"
        )));
    }
    let ms: f64 = value.extract().map_err(|_| {
        PyTypeError::new_err(format!(
            "{name} must be epoch milliseconds (an int or a float)"
        ))
    })?;
    if ms.is_nan() {
        return Err(PyValueError::new_err(format!("{name} must not be NaN")));
    }
    Ok(ms)
}

fn non_negative(value: &Bound<'_, PyAny>, name: &str) -> PyResult<u64> {
    // Only real ints: older Pythons would otherwise truncate a float through __int__.
    if is_bool(value) || !value.is_instance_of::<pyo3::types::PyInt>() {
        return Err(PyTypeError::new_err(format!("{name} must be an int")));
    }
    if value.lt(0)? {
        return Err(PyValueError::new_err(format!(
            "{name} must be >= 0, got {value}"
        )));
    }
    // Beyond 64 bits is as good as "no limit" for a count or a seq.
    Ok(value.extract::<u64>().unwrap_or(u64::MAX))
}

/// `value` as a size of at least 1.
pub(crate) fn positive(value: i64, name: &str) -> PyResult<usize> {
    if value < 1 {
        return Err(PyValueError::new_err(format!(
            "{name} must be at least 1, got {value}"
        )));
    }
    usize::try_from(value).map_err(|_| PyValueError::new_err(format!("{name} is too large")))
}
