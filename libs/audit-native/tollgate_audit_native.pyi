"""The audit trail's compiled hot loops (src/lib.rs)."""

from datetime import datetime
from typing import Any

def accept_rows(
    prefix: bytes, rows: list[object], expected: int, prev: bytes, limit: int
) -> tuple[int, bytes, list[bytes]]:
    """Accept rows from the start of ``rows`` (VERIFY_SQL's columns) while each one holds: its seq is
    ``expected`` (then the next one) and below ``limit``, its fields hash to its stored content hash (the
    header starting with ``prefix``), it links to ``prev`` (then to the row before it) and its stored row
    hash is ``sha256(prev_hash || content_hash)``. Returns the number accepted, the last accepted row's hash
    (``prev`` when none) and their Merkle leaf hashes."""

def chain_rows(
    stream: str,
    prefix: bytes,
    entries: list[Any],
    seq: int,
    prev: bytes,
    recorded_at: datetime,
    recorded_us: int,
) -> tuple[list[tuple[Any, ...]], list[bytes], bytes]:
    """Place ``entries`` (``canonical.Entry``) after the head ``(seq, prev)`` as ``canonical.iter_chain``
    does, recorded at ``recorded_at`` (``recorded_us`` microseconds since the epoch); stops before the
    first entry it does not encode exactly as the Python code would. Returns the rows (COPY_COLUMNS order),
    their Merkle leaf hashes and the last row's hash (``prev`` when none)."""
