//! The hot loop of the audit trail's verifier, compiled: for each row as `VERIFY_SQL` selects it, the
//! canonical header (`orjson.dumps` of the content fields, byte for byte), the content hash, the link to
//! the previous row, the row hash and the row's Merkle leaf hash (RFC 6962: `sha256(0x00 || row_hash)`).
//!
//! It only ever accepts rows: it stops at the first row that is not exactly as expected (any check
//! failing, a value of a type it does not encode, a seq at or past the limit) and says how many rows it
//! accepted. `tollgate_audit_log.verify.ChainChecker` checks the rest with its Python loop, the
//! reference, which names the problem: this code decides nothing the Python code does not decide too.

use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyInt, PyList, PyString};
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

#[pymodule]
fn tollgate_audit_native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(accept_rows, module)?)?;
    Ok(())
}
