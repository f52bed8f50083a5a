"""The audit trail's compiled hot loops (src/lib.rs)."""

from typing import Any

def accept_rows(
    prefix: bytes, rows: list[object], expected: int, prev: bytes, limit: int
) -> tuple[int, bytes, list[bytes]]:
    """Accept rows from the start of ``rows`` (VERIFY_SQL's columns) while each one holds: its seq is
    ``expected`` (then the next one) and below ``limit``, its fields hash to its stored content hash (the
    header starting with ``prefix``), it links to ``prev`` (then to the row before it) and its stored row
    hash is ``sha256(prev_hash || content_hash)``. Returns the number accepted, the last accepted row's hash
    (``prev`` when none) and their Merkle leaf hashes."""

def chain_copy(
    stream: str,
    prefix: bytes,
    entries: list[Any],
    seq: int,
    prev: bytes,
    recorded_us: int,
    max_bytes: int,
) -> tuple[bytes, list[bytes], list[bytes], bytes]:
    """Place ``entries`` (``canonical.Entry``) after the head ``(seq, prev)`` as ``canonical.iter_chain``
    does, recorded at ``recorded_us`` microseconds since the epoch, and write them as the tuples of a
    binary ``COPY audit_events (COPY_COLUMNS)`` (``canonical.copy_tuple``); stops before the first entry
    it does not encode exactly as the Python code would, and after the entry that brings the tuples to
    ``max_bytes`` or more. Returns the tuples, the rows' hashes, their
    Merkle leaf hashes and the last row's hash (``prev`` when none)."""

class CopyRows:
    """The verifier's loop over a binary ``COPY (VERIFY_SQL) TO STDOUT`` stream, fed as it arrives: the
    same checks as :func:`accept_rows` (the caller checks the columns' types first); it accepts rows until
    the first one it does not accept and ignores the rest."""

    def __init__(self, prefix: bytes, expected: int, prev: bytes, limit: int) -> None: ...
    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """The next bytes of the stream: accept the rows they complete."""
    def take(self) -> tuple[int, list[bytes], list[bytes]]:
        """The rows accepted since the last call: the first one's seq, their leaf hashes and row hashes."""
    def stop(self) -> None:
        """Accept nothing more."""
    @property
    def expected(self) -> int: ...
    @property
    def prev(self) -> bytes: ...
    @property
    def complete(self) -> bool:
        """Whether the stream ended with every row accepted."""

def parent_level(nodes: list[bytes]) -> list[bytes]:
    """One level up a Merkle tree: each pair hashed as ``sha256(0x01 || left || right)``, an odd last node
    carried up unchanged."""
