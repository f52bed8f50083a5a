"""A bounded, ordered, on-disk spool of inference-log records for when Kafka cannot take them.

Layout under the spool folder (one per scorer instance, ``.local/spool/scorer-<instance>`` by default):

* ``<n>.seg``: append-only segment files of length-prefixed records: a 12-byte header (key, traceparent
  and value lengths, little-endian u32) then the three byte strings. A new segment starts when the current
  one passes ``segment_bytes``.
* ``head``: where replay got to (segment number, byte offset), replaced atomically after every replayed
  chunk, so a restart resumes after the last record Kafka acknowledged.

Records come back out in the order they went in, across segments and restarts. Fully replayed segments
are deleted. ``max_bytes`` bounds the records not yet replayed; what the caller does when an append does not
fit is its policy (refuse or drop), never this module's. A record cut short by a crash in the middle of a
write is cut away on open: a crash can lose what was in memory or half written, nothing already spooled.

Writes are one ``write`` system call per batch, not fsynced: they survive a crash of the process, not of
the machine.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

HEADER = struct.Struct("<III")
HEAD = struct.Struct("<QQ")
SUFFIX = ".seg"

SpoolRecord = tuple[bytes, bytes, bytes | None]  # key, value, traceparent


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in the spool: after reading up to it, ``commit`` makes it the new head."""

    segment: int
    offset: int
    records: int
    size: int


def encode(records: list[SpoolRecord]) -> bytes:
    parts: list[bytes] = []
    for key, value, traceparent in records:
        tp = traceparent or b""
        parts += (HEADER.pack(len(key), len(tp), len(value)), key, tp, value)
    return b"".join(parts)


class Spool:
    def __init__(self, directory: str | Path, max_bytes: int, segment_bytes: int = 8 * 1024 * 1024) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.records = 0  # not yet replayed
        self.bytes = 0
        segments = sorted(int(p.stem) for p in self.directory.glob(f"*{SUFFIX}") if p.stem.isdigit())
        head_segment, head_offset = self._read_head()
        if not segments or head_segment > segments[-1]:
            head_segment, head_offset = (segments[-1] + 1 if segments else 1), 0
        for number in segments:
            if number < head_segment:
                self._path(number).unlink(missing_ok=True)
        self._segments = [n for n in segments if n >= head_segment] or [head_segment]
        self._head = (head_segment, head_offset)
        for number in self._segments:
            start = head_offset if number == head_segment else 0
            count, size = self._scan(number, start)
            self.records += count
            self.bytes += size
        self._write_segment = self._segments[-1]
        self._fd = os.open(self._path(self._write_segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._write_size = os.fstat(self._fd).st_size

    @property
    def empty(self) -> bool:
        return self.records == 0

    def fits(self, size: int) -> bool:
        return self.bytes + size <= self.max_bytes

    def append(self, records: list[SpoolRecord], *, beyond_bound: bool = False) -> int:
        """Append the longest prefix of ``records`` that fits, in order; returns how many were written.

        ``beyond_bound`` writes them all regardless of ``max_bytes``: for shutdown, when the alternative is
        losing events of requests that were already answered.
        """
        if not records:
            return 0
        blob = encode(records)
        count = len(records)
        if not beyond_bound and not self.fits(len(blob)):
            room, size, count = self.max_bytes - self.bytes, 0, 0
            for record in records:
                record_size = HEADER.size + len(record[0]) + len(record[1]) + len(record[2] or b"")
                if size + record_size > room:
                    break
                size, count = size + record_size, count + 1
            if count == 0:
                return 0
            blob = blob[:size]
        if self._write_size >= self.segment_bytes:
            self._rotate()
        written = os.write(self._fd, blob)
        while written < len(blob):  # regular files write fully; kept for correctness on odd file systems
            written += os.write(self._fd, blob[written:])
        self._write_size += len(blob)
        self.records += count
        self.bytes += len(blob)
        return count

    def peek(self, max_records: int) -> tuple[list[SpoolRecord], Cursor]:
        """Up to ``max_records`` from the head, without consuming them."""
        out: list[SpoolRecord] = []
        segment, offset = self._head
        size = 0
        index = self._segments.index(segment) if segment in self._segments else 0
        while len(out) < max_records and index < len(self._segments):
            segment = self._segments[index]
            with open(self._path(segment), "rb") as fh:
                fh.seek(offset)
                data = fh.read()
            position = 0
            while len(out) < max_records and position + HEADER.size <= len(data):
                klen, tlen, vlen = HEADER.unpack_from(data, position)
                end = position + HEADER.size + klen + tlen + vlen
                if end > len(data):
                    break
                start = position + HEADER.size
                key = data[start : start + klen]
                tp = data[start + klen : start + klen + tlen] or None
                out.append((key, data[start + klen + tlen : end], tp))
                size += end - position
                position = end
            offset += position
            if len(out) < max_records and index + 1 < len(self._segments):
                index += 1
                offset = 0
            else:
                break
        return out, Cursor(segment, offset, len(out), size)

    def commit(self, cursor: Cursor) -> None:
        """Consume everything up to ``cursor`` (records Kafka acknowledged)."""
        self._write_head(cursor.segment, cursor.offset)
        for number in [n for n in self._segments if n < cursor.segment]:
            self._path(number).unlink(missing_ok=True)
        self._segments = [n for n in self._segments if n >= cursor.segment]
        self._head = (cursor.segment, cursor.offset)
        self.records -= cursor.records
        self.bytes -= cursor.size
        if self.records == 0 and self._write_size > 0:
            self._rotate()  # start afresh so replayed bytes do not stay on disk
            self._write_head(self._write_segment, 0)
            for number in [n for n in self._segments if n < self._write_segment]:
                self._path(number).unlink(missing_ok=True)
            self._segments = [self._write_segment]
            self._head = (self._write_segment, 0)

    def close(self) -> None:
        os.close(self._fd)

    # ---- internals

    def _path(self, number: int) -> Path:
        return self.directory / f"{number:012d}{SUFFIX}"

    def _rotate(self) -> None:
        os.close(self._fd)
        self._write_segment += 1
        self._segments.append(self._write_segment)
        self._fd = os.open(self._path(self._write_segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._write_size = 0

    def _read_head(self) -> tuple[int, int]:
        try:
            data = (self.directory / "head").read_bytes()
            segment, offset = HEAD.unpack(data)
            return int(segment), int(offset)
        except (FileNotFoundError, struct.error):
            return 0, 0

    def _write_head(self, segment: int, offset: int) -> None:
        tmp = self.directory / "head.tmp"
        tmp.write_bytes(HEAD.pack(segment, offset))
        os.replace(tmp, self.directory / "head")

    def _scan(self, number: int, start: int) -> tuple[int, int]:
        """Count the complete records of a segment from ``start``; cut off a torn last record."""
        path = self._path(number)
        if not path.exists():
            path.touch(mode=0o600)
            return 0, 0
        data = path.read_bytes()
        position, count = start, 0
        while position + HEADER.size <= len(data):
            klen, tlen, vlen = HEADER.unpack_from(data, position)
            end = position + HEADER.size + klen + tlen + vlen
            if end > len(data):
                break
            position, count = end, count + 1
        if position < len(data):
            os.truncate(path, position)
        return count, position - start
