"""The audit verifier's compiled hot loop (src/lib.rs)."""

def accept_rows(
    prefix: bytes, rows: list[object], expected: int, prev: bytes, limit: int
) -> tuple[int, bytes, list[bytes]]:
    """Accept rows from the start of ``rows`` (VERIFY_SQL's columns) while each one holds: its seq is
    ``expected`` (then the next one) and below ``limit``, its fields hash to its stored content hash (the
    header starting with ``prefix``), it links to ``prev`` (then to the row before it) and its stored row
    hash is ``sha256(prev_hash || content_hash)``. Returns the number accepted, the last accepted row's hash
    (``prev`` when none) and their Merkle leaf hashes."""
