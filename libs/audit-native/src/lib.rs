//! The hot loops of the audit trail, compiled: the canonical header of a row (`orjson.dumps` of its
//! content fields, byte for byte), its content hash, row hash and Merkle leaf hash (RFC 6962:
//! `sha256(0x00 || row_hash)`).
//!
//! * `accept_rows`, the verifier's: it only ever accepts rows. It stops at the first row that is not
//!   exactly as expected (any check failing, a value of a type it does not encode, a seq at or past the
//!   limit) and says how many rows it accepted; `tollgate_audit_log.verify.ChainChecker` checks the rest
//!   with its Python loop, the reference, which names the problem.
//! * `chain_copy`, the writer's: it places entries after a head as `canonical.iter_chain` does and
//!   writes them as the tuples of a binary COPY (`canonical.copy_tuple`); it stops at the first entry
//!   holding a value it does not encode exactly as the Python code would (a type other than str, int and
//!   None, a timestamp not in UTC, an event id not in canonical UUID text, a partition past 32 bits);
//!   `canonical.iter_copy` places and encodes that one itself.
//!
//! Neither decides anything the Python code does not decide too: the tests compare them with it.

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{
    timezone_utc, PyBytes, PyDateAccess, PyDateTime, PyInt, PyList, PyString, PyTimeAccess, PyTzInfoAccess,
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

/// `sha256(a || b)`: the content hash (header, envelope), the row hash (prev_hash, content hash) and a
/// Merkle leaf (0x00, row hash) are all this.
fn sha256_of(a: &[u8], b: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(a);
    hash.update(b);
    hash.finalize().into()
}

/// A row's Merkle leaf hash (RFC 6962).
fn leaf_hash(row_hash: &[u8; 32]) -> [u8; 32] {
    sha256_of(&[0u8], row_hash)
}

/// The hash a loop starts from (the row before its first).
fn starting_hash(prev: &[u8]) -> PyResult<[u8; 32]> {
    prev.try_into()
        .map_err(|_| PyValueError::new_err("prev must be a 32-byte hash"))
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
    let envelope = match envelope.downcast_exact::<PyBytes>() {
        Ok(bytes) => bytes.as_bytes(),
        Err(_) => envelope
            .downcast_exact::<PyString>()
            .ok()?
            .to_str()
            .ok()?
            .as_bytes(),
    };
    let content = sha256_of(header, envelope);
    let (stored, prev_hash, row_hash) = (item(py, row, 14)?, item(py, row, 15)?, item(py, row, 16)?);
    if hash32(&stored)? != content || hash32(&prev_hash)? != prev {
        return None;
    }
    let computed = sha256_of(prev, &content);
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
    let mut prev = starting_hash(prev)?;
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
        leaves.push(PyBytes::new(py, &leaf_hash(&row_hash)));
        prev = row_hash;
        seq += 1;
    }
    let accepted = leaves.len();
    Ok((accepted, PyBytes::new(py, &prev), PyList::new(py, leaves)?))
}

/// 2000-01-01 (PostgreSQL's epoch) in microseconds since 1970-01-01.
const PG_EPOCH_US: i64 = 946_684_800_000_000;
/// The signature that starts a binary COPY stream.
const COPY_SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// The verifier's loop over a binary `COPY (VERIFY_SQL) TO STDOUT` stream, fed as it arrives: the same
/// checks as `accept_rows` on the same columns (the caller checks that they have `VERIFY_SQL`'s types
/// first), without a Python object per value. It accepts rows until the first one it does not accept
/// and ignores the rest of the stream; the caller reads from that row on with the cursor and the Python
/// loop, which names the problem.
#[pyclass(module = "tollgate_audit_native")]
struct CopyRows {
    prefix: Vec<u8>,
    expected: i64,
    prev: [u8; 32],
    limit: i64,
    pending: Vec<u8>,
    started: bool,
    stopped: bool,
    ended: bool,
    first: i64,
    leaves: Vec<[u8; 32]>,
    heads: Vec<[u8; 32]>,
    header: Vec<u8>,
    digits: itoa::Buffer,
}

/// A cursor over one COPY tuple's bytes.
struct Fields<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.data.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(out)
    }
    /// The next field: Some(None) for NULL; None when the bytes end first.
    fn field(&mut self) -> Option<Option<&'a [u8]>> {
        let len = i32::from_be_bytes(self.take(4)?.try_into().ok()?);
        if len < 0 {
            return if len == -1 { Some(None) } else { None };
        }
        self.take(len as usize).map(Some)
    }
}

enum Parsed {
    /// A whole tuple of this many bytes was checked: accepted (its row hash) or not.
    Row(usize, Option<[u8; 32]>),
    /// The end of the stream (the trailer), after this many bytes.
    End(usize),
    /// Not all of the tuple has arrived.
    Partial,
}

impl CopyRows {
    /// A text field as orjson writes the str it decodes to; NULL as null. None: not UTF-8.
    fn text(&mut self, value: Option<&[u8]>) -> Option<()> {
        match value {
            None => self.header.extend_from_slice(b"null"),
            Some(bytes) => json_string(&mut self.header, std::str::from_utf8(bytes).ok()?.as_bytes()),
        }
        Some(())
    }

    fn int(&mut self, value: Option<&[u8]>, width: usize, offset: i64) -> Option<()> {
        match value {
            None => self.header.extend_from_slice(b"null"),
            Some(bytes) if bytes.len() == width => {
                let n = if width == 4 {
                    i64::from(i32::from_be_bytes(bytes.try_into().ok()?))
                } else {
                    i64::from_be_bytes(bytes.try_into().ok()?)
                };
                let n = n.checked_add(offset)?;
                self.header.extend_from_slice(self.digits.format(n).as_bytes());
            }
            Some(_) => return None,
        }
        Some(())
    }

    /// One tuple at the start of `data`: its length and, when every check holds, its row hash.
    fn parse(&mut self, data: &[u8]) -> Parsed {
        let mut f = Fields { data, at: 0 };
        let Some(count) = f.take(2) else {
            return Parsed::Partial;
        };
        let count = i16::from_be_bytes([count[0], count[1]]);
        if count == -1 {
            return Parsed::End(2);
        }
        let mut values: [Option<&[u8]>; 17] = [None; 17];
        for index in 0..usize::try_from(count).unwrap_or(0) {
            let Some(value) = f.field() else {
                return Parsed::Partial;
            };
            if index < 17 {
                values[index] = value;
            }
        }
        let size = f.at;
        if count != 17 {
            return Parsed::Row(size, None);
        }
        Parsed::Row(size, self.check(&values))
    }

    fn check(&mut self, v: &[Option<&[u8]>; 17]) -> Option<[u8; 32]> {
        let seq = i64::from_be_bytes(v[0]?.try_into().ok()?);
        if seq != self.expected || seq >= self.limit {
            return None;
        }
        self.header.clear();
        self.header.extend_from_slice(&self.prefix);
        self.header.extend_from_slice(self.digits.format(seq).as_bytes());
        // event_id::text, topic, kafka_partition, kafka_offset, event_type, occurred_at, recorded_at,
        // request_id, entity_id, model, version, trace_id (timestamps: int64 microseconds since 2000)
        self.header.push(b',');
        self.text(v[1])?;
        self.header.push(b',');
        self.text(v[2])?;
        self.header.push(b',');
        self.int(v[3], 4, 0)?;
        self.header.push(b',');
        self.int(v[4], 8, 0)?;
        self.header.push(b',');
        self.text(v[5])?;
        for index in [6, 7] {
            self.header.push(b',');
            self.int(v[index], 8, PG_EPOCH_US)?;
        }
        for index in 8..13 {
            self.header.push(b',');
            self.text(v[index])?;
        }
        self.header.extend_from_slice(b"]\n");
        let envelope = std::str::from_utf8(v[13]?).ok()?;
        let content = sha256_of(&self.header, envelope.as_bytes());
        let stored: [u8; 32] = v[14]?.try_into().ok()?;
        let prev_hash: [u8; 32] = v[15]?.try_into().ok()?;
        let row_hash: [u8; 32] = v[16]?.try_into().ok()?;
        if stored != content || prev_hash != self.prev {
            return None;
        }
        let computed = sha256_of(&self.prev, &content);
        (computed == row_hash).then_some(computed)
    }
}

#[pymethods]
impl CopyRows {
    /// Accept rows from seq `expected` on, linking to `prev`, below `limit`; `prefix` as for `accept_rows`.
    #[new]
    fn new(prefix: &[u8], expected: i64, prev: &[u8], limit: i64) -> PyResult<Self> {
        let prev = starting_hash(prev)?;
        Ok(Self {
            prefix: prefix.to_vec(),
            expected,
            prev,
            limit,
            pending: Vec::new(),
            started: false,
            stopped: false,
            ended: false,
            first: expected,
            leaves: Vec::new(),
            heads: Vec::new(),
            header: Vec::with_capacity(512),
            digits: itoa::Buffer::new(),
        })
    }

    /// The next bytes of the stream: accept the rows they complete.
    fn feed(&mut self, py: Python<'_>, data: PyBuffer<u8>) -> PyResult<()> {
        if self.stopped || self.ended {
            return Ok(());
        }
        let mut buffer = std::mem::take(&mut self.pending);
        let start = buffer.len();
        buffer.resize(start + data.item_count(), 0);
        data.copy_to_slice(py, &mut buffer[start..])?;
        let mut at = 0;
        if !self.started {
            // signature, flags (int32), header extension length (int32) and the extension
            if buffer.len() < COPY_SIGNATURE.len() + 8 {
                self.pending = buffer;
                return Ok(());
            }
            if &buffer[..COPY_SIGNATURE.len()] != COPY_SIGNATURE {
                return Err(PyValueError::new_err("not a binary COPY stream"));
            }
            let ext_at = COPY_SIGNATURE.len() + 4;
            let ext = u32::from_be_bytes(buffer[ext_at..ext_at + 4].try_into().unwrap()) as usize;
            if buffer.len() < ext_at + 4 + ext {
                self.pending = buffer;
                return Ok(());
            }
            at = ext_at + 4 + ext;
            self.started = true;
        }
        while !self.stopped && !self.ended {
            match self.parse(&buffer[at..]) {
                Parsed::Partial => break,
                Parsed::End(size) => {
                    at += size;
                    self.ended = true;
                }
                Parsed::Row(size, Some(row_hash)) => {
                    at += size;
                    self.leaves.push(leaf_hash(&row_hash));
                    self.heads.push(row_hash);
                    self.prev = row_hash;
                    self.expected += 1;
                }
                Parsed::Row(_, None) => self.stopped = true,
            }
        }
        if !self.stopped && !self.ended {
            buffer.drain(..at);
            self.pending = buffer;
        }
        Ok(())
    }

    /// The rows accepted since the last call: the seq of the first, their Merkle leaf hashes and their
    /// row hashes.
    fn take<'py>(&mut self, py: Python<'py>) -> PyResult<(i64, Bound<'py, PyList>, Bound<'py, PyList>)> {
        let first = self.first;
        self.first = self.expected;
        let leaves = PyList::new(py, self.leaves.drain(..).map(|h| PyBytes::new(py, &h)))?;
        let heads = PyList::new(py, self.heads.drain(..).map(|h| PyBytes::new(py, &h)))?;
        Ok((first, leaves, heads))
    }

    /// Accept nothing more (the caller found a problem in what was accepted).
    fn stop(&mut self) {
        self.stopped = true;
    }

    /// The next seq expected (the first not accepted).
    #[getter]
    fn expected(&self) -> i64 {
        self.expected
    }

    /// The last accepted row's hash (the starting one when none).
    #[getter]
    fn prev<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.prev)
    }

    /// Whether the stream ended (its trailer read) with every row accepted.
    #[getter]
    fn complete(&self) -> bool {
        self.ended && !self.stopped
    }
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

/// An entry's fields (`canonical.Entry`), read once.
struct EntryFields<'py> {
    event_id: Bound<'py, PyAny>,
    topic: Bound<'py, PyAny>,
    partition: Bound<'py, PyAny>,
    offset: Bound<'py, PyAny>,
    event_type: Bound<'py, PyAny>,
    occurred_us: i64,
    /// request_id, entity_id, model, version, trace_id.
    ids: [Bound<'py, PyAny>; 5],
    envelope: Bound<'py, PyString>,
}

impl<'py> EntryFields<'py> {
    /// The entry's fields; None when one is missing, the envelope is not an exact str or the timestamp is
    /// not a `datetime` in UTC.
    fn read(py: Python<'py>, entry: &Bound<'py, PyAny>) -> Option<Self> {
        let get = |name: &Bound<'py, PyString>| entry.getattr(name).ok();
        let occurred_at = get(intern!(py, "occurred_at"))?;
        let envelope = get(intern!(py, "envelope"))?
            .downcast_into_exact::<PyString>()
            .ok()?;
        Some(EntryFields {
            event_id: get(intern!(py, "event_id"))?,
            topic: get(intern!(py, "topic"))?,
            partition: get(intern!(py, "partition"))?,
            offset: get(intern!(py, "offset"))?,
            event_type: get(intern!(py, "event_type"))?,
            occurred_us: utc_micros(&occurred_at)?,
            ids: [
                get(intern!(py, "request_id"))?,
                get(intern!(py, "entity_id"))?,
                get(intern!(py, "model"))?,
                get(intern!(py, "version"))?,
                get(intern!(py, "trace_id"))?,
            ],
            envelope,
        })
    }

    fn envelope(&self) -> Option<&str> {
        self.envelope.to_str().ok()
    }

    /// The row's content hash and row hash when placed at `seq` after `prev` (`canonical.content_hash`).
    fn hashes(
        &self,
        prefix: &[u8],
        seq: i64,
        prev: &[u8; 32],
        recorded_us: i64,
        header: &mut Vec<u8>,
        digits: &mut itoa::Buffer,
    ) -> Option<([u8; 32], [u8; 32])> {
        header.clear();
        header.extend_from_slice(prefix);
        header.extend_from_slice(digits.format(seq).as_bytes());
        for value in [
            &self.event_id,
            &self.topic,
            &self.partition,
            &self.offset,
            &self.event_type,
        ] {
            header.push(b',');
            json_value(header, value, digits)?;
        }
        for micros in [self.occurred_us, recorded_us] {
            header.push(b',');
            header.extend_from_slice(digits.format(micros).as_bytes());
        }
        for value in &self.ids {
            header.push(b',');
            json_value(header, value, digits)?;
        }
        header.extend_from_slice(b"]\n");
        let content = sha256_of(header, self.envelope()?.as_bytes());
        let row_hash = sha256_of(prev, &content);
        Some((content, row_hash))
    }
}

/// The 16 bytes of a UUID in its canonical text (lowercase, hyphenated: what `uuid.UUID` prints and
/// PostgreSQL stores); None for any other spelling (the Python loop takes it).
fn canonical_uuid(text: &[u8]) -> Option<[u8; 16]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if text.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut digits = text
        .iter()
        .enumerate()
        .filter(|(i, _)| !matches!(i, 8 | 13 | 18 | 23));
    if [8, 13, 18, 23].iter().any(|&i| text[i] != b'-') {
        return None;
    }
    for byte in out.iter_mut() {
        let high = nibble(*digits.next()?.1)?;
        let low = nibble(*digits.next()?.1)?;
        *byte = high << 4 | low;
    }
    Some(out)
}

/// One field of a binary COPY tuple: its length, then its bytes.
fn copy_field(out: &mut Vec<u8>, value: &[u8]) -> Option<()> {
    out.extend_from_slice(&i32::try_from(value.len()).ok()?.to_be_bytes());
    out.extend_from_slice(value);
    Some(())
}

/// A `text` field: an exact str (NOT NULL columns), or also None (nullable ones).
fn copy_text(out: &mut Vec<u8>, value: &Bound<'_, PyAny>, nullable: bool) -> Option<()> {
    if nullable && value.is_none() {
        out.extend_from_slice(&(-1i32).to_be_bytes());
        return Some(());
    }
    copy_field(
        out,
        value.downcast_exact::<PyString>().ok()?.to_str().ok()?.as_bytes(),
    )
}

/// A `timestamptz` field: microseconds since PostgreSQL's epoch.
fn copy_timestamp(out: &mut Vec<u8>, micros: i64) {
    out.extend_from_slice(&8i32.to_be_bytes());
    out.extend_from_slice(&(micros - PG_EPOCH_US).to_be_bytes());
}

/// One placed row as a binary COPY tuple of `COPY_COLUMNS` (the types of `audit_events`' columns:
/// text, bigint, uuid, text, integer, bigint, text, timestamptz, timestamptz, five nullable texts, text
/// and three bytea); None, with `out` as it was, for a value it does not encode as asyncpg would.
#[allow(clippy::too_many_arguments)]
fn copy_tuple(
    out: &mut Vec<u8>,
    stream: &[u8],
    seq: i64,
    f: &EntryFields<'_>,
    recorded_us: i64,
    content: &[u8; 32],
    prev: &[u8; 32],
    row_hash: &[u8; 32],
) -> Option<()> {
    let start = out.len();
    let written = (|| {
        let event_id = f.event_id.downcast_exact::<PyString>().ok()?.to_str().ok()?;
        let event_id = canonical_uuid(event_id.as_bytes())?;
        let partition: i32 = f.partition.downcast_exact::<PyInt>().ok()?.extract().ok()?;
        let offset: i64 = f.offset.downcast_exact::<PyInt>().ok()?.extract().ok()?;
        out.extend_from_slice(&18i16.to_be_bytes());
        copy_field(out, stream)?;
        copy_field(out, &seq.to_be_bytes())?;
        copy_field(out, &event_id)?;
        copy_text(out, &f.topic, false)?;
        copy_field(out, &partition.to_be_bytes())?;
        copy_field(out, &offset.to_be_bytes())?;
        copy_text(out, &f.event_type, false)?;
        copy_timestamp(out, f.occurred_us);
        copy_timestamp(out, recorded_us);
        for value in &f.ids {
            copy_text(out, value, true)?;
        }
        copy_field(out, f.envelope()?.as_bytes())?;
        for hash in [content, prev, row_hash] {
            copy_field(out, hash)?;
        }
        Some(())
    })();
    if written.is_none() {
        out.truncate(start);
    }
    written
}

/// What `chain_copy` returns.
type Tuples<'py> = (
    Bound<'py, PyBytes>,
    Bound<'py, PyList>,
    Bound<'py, PyList>,
    Bound<'py, PyBytes>,
);

/// Place `entries` (`canonical.Entry`) after the head `(seq, prev)` as `canonical.iter_chain` does
/// (consecutive seqs, each row linked to the last, recorded at `recorded_us` microseconds since the
/// epoch) and write them as the tuples of a binary `COPY audit_events (COPY_COLUMNS) FROM STDIN`
/// (`canonical.copy_tuple`): no Python object a value, and nothing left for asyncpg to encode. `prefix`
/// is `orjson.dumps((HASH_FORMAT, stream))` without its closing bracket, and a comma. Stops before the
/// first entry it does not encode exactly as the Python code would, and after the entry that brings the
/// tuples to `max_bytes` or more (a chunk's size is bounded by that and one entry).
///
/// Returns the tuples (without the stream's signature and trailer), the rows' hashes, their Merkle leaf
/// hashes and the last row's hash (`prev` when none).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn chain_copy<'py>(
    py: Python<'py>,
    stream: &Bound<'py, PyString>,
    prefix: &[u8],
    entries: &Bound<'py, PyList>,
    seq: i64,
    prev: &[u8],
    recorded_us: i64,
    max_bytes: usize,
) -> PyResult<Tuples<'py>> {
    let mut prev = starting_hash(prev)?;
    let name = stream.to_str()?.as_bytes();
    let mut header = Vec::with_capacity(512);
    let mut digits = itoa::Buffer::new();
    let mut out: Vec<u8> = Vec::with_capacity(max_bytes.min(entries.len() * 1024));
    let mut hashes: Vec<Bound<'py, PyBytes>> = Vec::with_capacity(entries.len());
    let mut leaves: Vec<Bound<'py, PyBytes>> = Vec::with_capacity(entries.len());
    let mut seq = seq;
    for entry in entries.iter() {
        seq += 1;
        let Some(f) = EntryFields::read(py, &entry) else {
            break;
        };
        let Some((content, row_hash)) = f.hashes(prefix, seq, &prev, recorded_us, &mut header, &mut digits)
        else {
            break;
        };
        if copy_tuple(&mut out, name, seq, &f, recorded_us, &content, &prev, &row_hash).is_none() {
            break;
        }
        hashes.push(PyBytes::new(py, &row_hash));
        leaves.push(PyBytes::new(py, &leaf_hash(&row_hash)));
        prev = row_hash;
        if out.len() >= max_bytes {
            break;
        }
    }
    Ok((
        PyBytes::new(py, &out),
        PyList::new(py, hashes)?,
        PyList::new(py, leaves)?,
        PyBytes::new(py, &prev),
    ))
}

/// One level up a Merkle tree (RFC 6962): each pair of nodes hashed as `sha256(0x01 || left || right)`, an
/// odd last node carried up unchanged (`merkle._parent_level`).
#[pyfunction]
fn parent_level<'py>(py: Python<'py>, nodes: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyList>> {
    let mut up: Vec<Bound<'py, PyBytes>> = Vec::with_capacity(nodes.len() / 2 + 1);
    let mut pairs = nodes.iter();
    while let Some(left) = pairs.next() {
        let Some(right) = pairs.next() else {
            up.push(left.downcast_into::<PyBytes>()?);
            break;
        };
        let mut node = Sha256::new();
        node.update([1u8]);
        node.update(left.downcast::<PyBytes>()?.as_bytes());
        node.update(right.downcast::<PyBytes>()?.as_bytes());
        let node: [u8; 32] = node.finalize().into();
        up.push(PyBytes::new(py, &node));
    }
    PyList::new(py, up)
}

#[pymodule]
fn tollgate_audit_native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(accept_rows, module)?)?;
    module.add_function(wrap_pyfunction!(chain_copy, module)?)?;
    module.add_class::<CopyRows>()?;
    module.add_function(wrap_pyfunction!(parent_level, module)?)?;
    Ok(())
}
