//! The hot loops of the audit trail, compiled: the canonical header of a row (`orjson.dumps` of its
//! content fields, byte for byte), its content hash, row hash and Merkle leaf hash (RFC 6962:
//! `sha256(0x00 || row_hash)`).
//!
//! * `accept_rows`, the verifier's: it only ever accepts rows. It stops at the first row that is not
//!   exactly as expected (any check failing, a value of a type it does not encode, a seq at or past the
//!   limit) and says how many rows it accepted; `tollgate_audit_log.verify.ChainChecker` checks the rest
//!   with its Python loop, the reference, which names the problem.
//! * `chain_rows`, the writer's: it places entries after a head as `canonical.iter_chain` does and stops
//!   at the first entry holding a value it does not encode exactly as the Python code would (a type
//!   other than str, int and None, a timestamp not in UTC); `iter_chain` places that one itself.
//!
//! Neither decides anything the Python code does not decide too: the tests compare them with it.

use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::intern;
use pyo3::types::{
    timezone_utc, PyBytes, PyDateAccess, PyDateTime, PyInt, PyList, PyString, PyTimeAccess, PyTuple,
    PyTzInfoAccess,
};
use sha2::{Digest, Sha256};

/// Columns of a row (`VERIFY_SQL`): seq .. trace_id (13, hashed in the header), the envelope, the
/// content hash, the previous row's hash and the row hash.
const COLUMNS: isize = 17;
const HEADER_COLUMNS: isize = 13;

/// A JSON string as orjson writes it: `"` and `\` escaped, control characters as `\b \t \n \f \r` or
/// `\u00xx` (lowercase hex), everything else (UTF-8 included) as it is.
fn json_string(out: &mut Vec<u8>, text: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in text.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x09 => b"\\t",
            0x0a => b"\\n",
            0x0c => b"\\f",
            0x0d => b"\\r",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&text[start..i]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 15) as usize]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&text[start..]);
    out.push(b'"');
}

/// One header value as orjson writes it: None, an exact int that fits 64 bits, or an exact str. Anything
/// else: None here (the row is left to the reference loop).
fn json_value(out: &mut Vec<u8>, value: &Bound<'_, PyAny>, digits: &mut itoa::Buffer) -> Option<()> {
    if value.is_none() {
        out.extend_from_slice(b"null");
    } else if let Ok(text) = value.downcast_exact::<PyString>() {
        json_string(out, text.to_str().ok()?.as_bytes());
    } else if let Ok(number) = value.downcast_exact::<PyInt>() {
        let n: i64 = number.extract().ok()?;
        out.extend_from_slice(digits.format(n).as_bytes());
    } else {
        return None;
    }
    Some(())
}

fn item<'py>(py: Python<'py>, row: &Bound<'py, PyAny>, index: isize) -> Option<Bound<'py, PyAny>> {
    // SAFETY: `row` is a live object; PySequence_GetItem returns a new reference or NULL with an error set.
    let ptr = unsafe { ffi::PySequence_GetItem(row.as_ptr(), index) };
    if ptr.is_null() {
        PyErr::take(py);
        return None;
    }
    // SAFETY: a new, non-null reference, owned from here on.
    Some(unsafe { Bound::from_owned_ptr(py, ptr) })
}

fn hash32<'a>(value: &'a Bound<'_, PyAny>) -> Option<&'a [u8]> {
    let bytes = value.downcast_exact::<PyBytes>().ok()?.as_bytes();
    (bytes.len() == 32).then_some(bytes)
}

/// Checks one row; returns its row hash when every check holds.
fn check_row(
    py: Python<'_>,
    row: &Bound<'_, PyAny>,
    prefix: &[u8],
    expected: i64,
    prev: &[u8; 32],
    header: &mut Vec<u8>,
    digits: &mut itoa::Buffer,
) -> Option<[u8; 32]> {
    // SAFETY: `row` is a live object.
    if unsafe { ffi::PySequence_Size(row.as_ptr()) } != COLUMNS {
        PyErr::take(py);
        return None;
    }
    header.clear();
    header.extend_from_slice(prefix);
    for index in 0..HEADER_COLUMNS {
        let value = item(py, row, index)?;
        if index == 0 {
            let seq = value.downcast_exact::<PyInt>().ok()?.extract::<i64>().ok()?;
            if seq != expected {
                return None;
            }
        }
        if index > 0 {
            header.push(b',');
        }
        json_value(header, &value, digits)?;
    }
    header.extend_from_slice(b"]\n");
    let envelope = item(py, row, 13)?;
    let mut content = Sha256::new();
    content.update(&header[..]);
    if let Ok(bytes) = envelope.downcast_exact::<PyBytes>() {
        content.update(bytes.as_bytes());
    } else {
        content.update(envelope.downcast_exact::<PyString>().ok()?.to_str().ok()?.as_bytes());
    }
    let content: [u8; 32] = content.finalize().into();
    let (stored, prev_hash, row_hash) = (item(py, row, 14)?, item(py, row, 15)?, item(py, row, 16)?);
    if hash32(&stored)? != content || hash32(&prev_hash)? != prev {
        return None;
    }
    let mut link = Sha256::new();
    link.update(prev);
    link.update(content);
    let computed: [u8; 32] = link.finalize().into();
    (hash32(&row_hash)? == computed).then_some(computed)
}

/// Accept rows from the start of `rows` while each holds: its seq is `expected` (then the next one) and
/// below `limit`, its fields hash to its stored content hash, it links to `prev` (then to the row before
/// it), and its stored row hash is `sha256(prev_hash || content_hash)`. `prefix` is the header's start,
/// `orjson.dumps((HASH_FORMAT, stream))` without its closing bracket, and a comma.
///
/// Returns the number of rows accepted, the last accepted row's hash (`prev` when none) and their Merkle
/// leaf hashes (one per accepted row, in order).
#[pyfunction]
fn accept_rows<'py>(
    py: Python<'py>,
    prefix: &[u8],
    rows: &Bound<'py, PyList>,
    expected: i64,
    prev: &[u8],
    limit: i64,
) -> PyResult<(usize, Bound<'py, PyBytes>, Bound<'py, PyList>)> {
    let mut prev: [u8; 32] = prev
        .try_into()
        .map_err(|_| PyValueError::new_err("prev must be a 32-byte hash"))?;
    let mut header = Vec::with_capacity(512);
    let mut digits = itoa::Buffer::new();
    let mut leaves: Vec<Bound<'py, PyBytes>> = Vec::with_capacity(rows.len());
    let mut seq = expected;
    for row in rows.iter() {
        if seq >= limit {
            break;
        }
        let Some(row_hash) = check_row(py, &row, prefix, seq, &prev, &mut header, &mut digits) else {
            break;
        };
        let mut leaf = Sha256::new();
        leaf.update([0u8]);
        leaf.update(row_hash);
        let leaf: [u8; 32] = leaf.finalize().into();
        leaves.push(PyBytes::new(py, &leaf));
        prev = row_hash;
        seq += 1;
    }
    let accepted = leaves.len();
    Ok((accepted, PyBytes::new(py, &prev), PyList::new(py, leaves)?))
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (H. Hinnant's days_from_civil).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Microseconds since the epoch of a `datetime` in UTC (`canonical.micros`); None for anything else.
fn utc_micros(value: &Bound<'_, PyAny>) -> Option<i64> {
    let moment = value.downcast_exact::<PyDateTime>().ok()?;
    let tz = moment.get_tzinfo()?;
    if !tz.is(&timezone_utc(value.py())) {
        return None;
    }
    let days = days_from_civil(
        i64::from(moment.get_year()),
        i64::from(moment.get_month()),
        i64::from(moment.get_day()),
    );
    let seconds = days * 86_400
        + i64::from(moment.get_hour()) * 3_600
        + i64::from(moment.get_minute()) * 60
        + i64::from(moment.get_second());
    Some(seconds * 1_000_000 + i64::from(moment.get_microsecond()))
}

/// One entry placed at `seq` after `prev`: its row (`COPY_COLUMNS` order) and row hash.
#[allow(clippy::too_many_arguments)]
fn place<'py>(
    py: Python<'py>,
    entry: &Bound<'py, PyAny>,
    stream: &Bound<'py, PyString>,
    prefix: &[u8],
    seq: i64,
    prev: &[u8; 32],
    recorded_at: &Bound<'py, PyAny>,
    recorded_us: i64,
    header: &mut Vec<u8>,
    digits: &mut itoa::Buffer,
) -> Option<(Bound<'py, PyTuple>, [u8; 32])> {
    let get = |name: &Bound<'py, PyString>| entry.getattr(name).ok();
    let event_id = get(intern!(py, "event_id"))?;
    let topic = get(intern!(py, "topic"))?;
    let partition = get(intern!(py, "partition"))?;
    let offset = get(intern!(py, "offset"))?;
    let event_type = get(intern!(py, "event_type"))?;
    let occurred_at = get(intern!(py, "occurred_at"))?;
    let request_id = get(intern!(py, "request_id"))?;
    let entity_id = get(intern!(py, "entity_id"))?;
    let model = get(intern!(py, "model"))?;
    let version = get(intern!(py, "version"))?;
    let trace_id = get(intern!(py, "trace_id"))?;
    let envelope = get(intern!(py, "envelope"))?;
    let text = envelope.downcast_exact::<PyString>().ok()?.to_str().ok()?;
    let occurred_us = utc_micros(&occurred_at)?;

    header.clear();
    header.extend_from_slice(prefix);
    header.extend_from_slice(digits.format(seq).as_bytes());
    for value in [&event_id, &topic, &partition, &offset, &event_type] {
        header.push(b',');
        json_value(header, value, digits)?;
    }
    for micros in [occurred_us, recorded_us] {
        header.push(b',');
        header.extend_from_slice(digits.format(micros).as_bytes());
    }
    for value in [&request_id, &entity_id, &model, &version, &trace_id] {
        header.push(b',');
        json_value(header, value, digits)?;
    }
    header.extend_from_slice(b"]\n");
    let mut content = Sha256::new();
    content.update(&header[..]);
    content.update(text.as_bytes());
    let content: [u8; 32] = content.finalize().into();
    let mut link = Sha256::new();
    link.update(prev);
    link.update(content);
    let row_hash: [u8; 32] = link.finalize().into();
    let row = PyTuple::new(
        py,
        [
            stream.clone().into_any(),
            seq.into_pyobject(py).ok()?.into_any(),
            event_id,
            topic,
            partition,
            offset,
            event_type,
            occurred_at,
            recorded_at.clone(),
            request_id,
            entity_id,
            model,
            version,
            trace_id,
            envelope,
            PyBytes::new(py, &content).into_any(),
            PyBytes::new(py, prev).into_any(),
            PyBytes::new(py, &row_hash).into_any(),
        ],
    )
    .ok()?;
    Some((row, row_hash))
}

/// Place `entries` (`canonical.Entry`) after the head `(seq, prev)` as `canonical.iter_chain` does:
/// consecutive seqs, each row linked to the last, recorded at `recorded_at` (`recorded_us` microseconds
/// since the epoch). `prefix` is `orjson.dumps((HASH_FORMAT, stream))` without its closing bracket, and a
/// comma. Stops before the first entry it does not encode exactly as the Python code would.
///
/// Returns the rows placed (`COPY_COLUMNS` order), their Merkle leaf hashes and the last row's hash
/// (`prev` when none).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn chain_rows<'py>(
    py: Python<'py>,
    stream: &Bound<'py, PyString>,
    prefix: &[u8],
    entries: &Bound<'py, PyList>,
    seq: i64,
    prev: &[u8],
    recorded_at: &Bound<'py, PyAny>,
    recorded_us: i64,
) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>, Bound<'py, PyBytes>)> {
    let mut prev: [u8; 32] = prev
        .try_into()
        .map_err(|_| PyValueError::new_err("prev must be a 32-byte hash"))?;
    let mut header = Vec::with_capacity(512);
    let mut digits = itoa::Buffer::new();
    let mut rows: Vec<Bound<'py, PyTuple>> = Vec::with_capacity(entries.len());
    let mut leaves: Vec<Bound<'py, PyBytes>> = Vec::with_capacity(entries.len());
    let mut seq = seq;
    for entry in entries.iter() {
        seq += 1;
        let placed = place(
            py, &entry, stream, prefix, seq, &prev, recorded_at, recorded_us, &mut header, &mut digits,
        );
        let Some((row, row_hash)) = placed else {
            break;
        };
        let mut leaf = Sha256::new();
        leaf.update([0u8]);
        leaf.update(row_hash);
        let leaf: [u8; 32] = leaf.finalize().into();
        rows.push(row);
        leaves.push(PyBytes::new(py, &leaf));
        prev = row_hash;
    }
    Ok((PyList::new(py, rows)?, PyList::new(py, leaves)?, PyBytes::new(py, &prev)))
}

#[pymodule]
fn tollgate_audit_native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(accept_rows, module)?)?;
    module.add_function(wrap_pyfunction!(chain_rows, module)?)?;
    Ok(())
}
