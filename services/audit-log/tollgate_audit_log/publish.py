"""Signed tree heads published outside the database: an append-only witness directory and a Kafka topic.

A checkpoint in ``audit_checkpoints`` is only as safe as the database; the same signed head, with its
consistency proof from the previous head, is also

* appended to ``<witness_dir>/<stream>.jsonl`` (one JSON line per head, opened ``O_APPEND`` and fsynced;
  the directory can be a mount of another host, or shipped off by any append-only log shipper), and
* produced to ``audit.checkpoints`` (owned by the audit-log, kept forever), keyed by stream.

Both carry the same ``audit.checkpoints.v1`` envelope. A verifier reads the heads back from either and
compares them with the database (:mod:`tollgate_audit_log.verify`); the writer compares its witness file
with the database when it takes a stream over, so a database rolled back behind a published head is
tampering, not a fresh start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from datetime import UTC
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from tollgate_audit_log.canonical import from_micros, micros
from tollgate_audit_log.chain import Checkpoint
from tollgate_audit_log.signing import ZERO_HASH, KeyRotation, Statement
from tollgate_core.audit_heads import TreeHeadEvent, TreeHeadPayload
from tollgate_core.kafka_auth import kafka_security

log = logging.getLogger(__name__)
SCHEMA = "audit.checkpoints.v1"
_NAMESPACE = uuid.UUID("0c7e3f1a-58a4-4e0e-8a43-6a1f0e9b2d55")
MAX_LINE = 64 * 1024  # a head is about 1 KB; a longer line in a witness file is not one of ours


class PublishedHead:
    """A head as published: the statement, its signature and the consistency proof from the previous one."""

    __slots__ = ("consistency", "signature", "source", "statement")

    def __init__(
        self, statement: Statement, signature: bytes, consistency: tuple[bytes, ...], source: str
    ) -> None:
        self.statement = statement
        self.signature = signature
        self.consistency = consistency
        self.source = source


def head_event(cp: Checkpoint) -> TreeHeadEvent:
    st = cp.statement
    if st.tree_root is None:
        raise ValueError("only tree heads (checkpoint format 2) are published")
    return TreeHeadEvent(
        event_id=uuid.uuid5(_NAMESPACE, st.digest().hex()),
        event_type="tree_head",
        schema_=SCHEMA,
        occurred_at=st.created_at.astimezone(UTC),
        producer="audit-log",
        payload=TreeHeadPayload(
            format="tollgate-audit-checkpoint/2",
            stream=st.stream,
            first_seq=st.first_seq,
            last_seq=st.last_seq,
            merkle_root=st.merkle_root.hex(),
            head_hash=st.head_hash.hex(),
            tree_size=st.last_seq,
            tree_root=st.tree_root.hex(),
            prev_root=(st.prev_root or ZERO_HASH).hex(),
            prev_statement=(st.prev_statement or ZERO_HASH).hex(),
            created_at_us=micros(st.created_at),
            key_id=st.key_id,
            signature=cp.signature.hex(),
            consistency=[h.hex() for h in cp.consistency],
        ),
    )


def head_from_payload(p: TreeHeadPayload, source: str) -> PublishedHead:
    prev_statement = bytes.fromhex(p.prev_statement)
    statement = Statement(
        stream=p.stream,
        first_seq=p.first_seq,
        last_seq=p.last_seq,
        merkle_root=bytes.fromhex(p.merkle_root),
        head_hash=bytes.fromhex(p.head_hash),
        created_at=from_micros(p.created_at_us),
        key_id=p.key_id,
        tree_root=bytes.fromhex(p.tree_root),
        prev_root=bytes.fromhex(p.prev_root),
        prev_statement=None if prev_statement == ZERO_HASH else prev_statement,
    )
    return PublishedHead(
        statement, bytes.fromhex(p.signature), tuple(bytes.fromhex(h) for h in p.consistency), source
    )


def parse_head(line: bytes, source: str) -> PublishedHead:
    """One published head (a witness line or a Kafka message); ValueError when it is not one."""
    return head_from_payload(TreeHeadEvent.model_validate_json(line).payload, source)


class WitnessDir:
    """``<dir>/<stream>.jsonl``: one line per signed head, appended, never rewritten."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def file(self, stream: str) -> Path:
        if not stream or "/" in stream or stream.startswith("."):
            raise ValueError(f"{stream!r} is not a stream name")
        return self.path / f"{stream}.jsonl"

    def append(self, event: TreeHeadEvent) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        line = event.model_dump_json(by_alias=True).encode() + b"\n"
        fd = os.open(self.file(event.payload.stream), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def heads(self, stream: str) -> list[PublishedHead]:
        """Every head of the stream in the file, in file order; a line that is not a head is an error."""
        path = self.file(stream)
        if not path.exists():
            return []
        out = []
        with path.open("rb") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                if len(line) > MAX_LINE:
                    raise ValueError(f"{path}:{n}: line of {len(line)} bytes is not a tree head")
                try:
                    out.append(parse_head(line, "witness"))
                except ValueError as exc:
                    raise ValueError(f"{path}:{n}: not a tree head: {exc}") from None
        return out

    def streams(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(p.stem for p in self.path.glob("*.jsonl"))

    # The journal of unsealed heads, ``<stream>.unsealed``: before the writer commits a batch it appends
    # the head the batch will make (``<seq> <row hash hex>``); once a checkpoint over them is published, the
    # file is rewritten as ``sealed <seq> <row hash hex>`` (that checkpoint's end) plus the lines after it:
    # it holds the few seconds not signed yet. Not fsynced: a crash of the host may lose the last lines,
    # which then reads as foreign rows (an alarm, never a silent pass). A journal whose heads do not include
    # the database's last signed head is not this trail's current one (another writer, with another
    # witness directory, wrote since): it proves nothing and is not used.

    def unsealed_file(self, stream: str) -> Path:
        return self.file(stream).with_suffix(UNSEALED_SUFFIX)

    def intend(self, stream: str, seq: int, row_hash: bytes) -> None:
        """The head a batch about to be committed makes."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.unsealed_file(stream), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{seq} {row_hash.hex()}\n".encode())
        finally:
            os.close(fd)

    def sealed(self, stream: str, seq: int, row_hash: bytes) -> None:
        """A published checkpoint signed the rows up to ``seq`` (ending at ``row_hash``)."""
        path = self.unsealed_file(stream)
        keep = [(s, h) for s, h in self.unsealed_heads(stream) or [] if s > seq]
        temporary = path.with_suffix(UNSEALED_SUFFIX + ".tmp")
        temporary.write_bytes(
            f"sealed {seq} {row_hash.hex()}\n".encode()
            + b"".join(f"{s} {h.hex()}\n".encode() for s, h in keep)
        )
        os.replace(temporary, path)

    def unsealed_heads(self, stream: str) -> list[tuple[int, bytes]] | None:
        """The heads the writer committed (or was about to) since its last published checkpoint, and that
        checkpoint's end; None when the stream has no journal (a writer without a witness directory)."""
        path = self.unsealed_file(stream)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        out = []
        for n, line in enumerate(data.splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            if fields[0] == b"sealed":
                fields = fields[1:]
            try:
                seq, digest = fields
                out.append((int(seq), bytes.fromhex(digest.decode())))
            except ValueError:
                raise ValueError(f"{path}:{n}: not '[sealed] <seq> <row hash hex>'") from None
        return out

    def known_heads(self, stream: str) -> list[tuple[int, bytes]] | None:
        """What the verifier accepts as the end of a batch the writer wrote: the journal's heads and the
        published heads' (a checkpoint made since the snapshot dropped its journal lines); None without a
        journal."""
        journal = self.unsealed_heads(stream)
        if journal is None:
            return None
        return [*journal, *((h.statement.last_seq, h.statement.head_hash) for h in self.heads(stream))]

    def append_rotation(self, rotation: KeyRotation, signature: bytes) -> None:
        """One signed key hand-over as a line of ``key-rotations.log`` (appended, fsynced)."""
        self.path.mkdir(parents=True, exist_ok=True)
        line = orjson.dumps({"rotation": orjson.loads(rotation.message()), "signature": signature.hex()})
        fd = os.open(self.path / ROTATIONS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)

    def rotations(self) -> list[tuple[KeyRotation, bytes]]:
        """Every hand-over in ``key-rotations.log``, as written (its signature is checked by whoever trusts
        the previous key: :func:`tollgate_audit_log.signing.follow_rotations`); a line that is not one is an
        error."""
        path = self.path / ROTATIONS_FILE
        if not path.exists():
            return []
        out = []
        with path.open("rb") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                if len(line) > MAX_LINE:
                    raise ValueError(f"{path}:{n}: line of {len(line)} bytes is not a key rotation")
                try:
                    out.append(parse_rotation(line))
                except (ValueError, KeyError, TypeError) as exc:
                    raise ValueError(f"{path}:{n}: not a key rotation: {exc!r}") from None
        return out


ROTATIONS_FILE = "key-rotations.log"
UNSEALED_SUFFIX = ".unsealed"


def parse_rotation(line: bytes) -> tuple[KeyRotation, bytes]:
    """A ``key-rotations.log`` line: the rotation's signed message (as JSON) and the signature (hex)."""
    doc = orjson.loads(line)
    fields = doc["rotation"]
    if fields.get("format") != "tollgate-audit-key-rotation/1":
        raise ValueError(f"unknown format {fields.get('format')!r}")
    rotation = KeyRotation(
        str(fields["previous_key_id"]),
        bytes.fromhex(fields["new_public_key"]),
        from_micros(int(fields["created_at_us"])),
    )
    if rotation.new_key_id != fields["new_key_id"]:
        raise ValueError("new_key_id is not the id of new_public_key")
    return rotation, bytes.fromhex(doc["signature"])


class Publisher:
    """Publishes each new head to the witness directory and the Kafka topic (either may be absent)."""

    def __init__(
        self, witness: WitnessDir | None, producer: AIOKafkaProducer | None, topic: str | None
    ) -> None:
        self.witness = witness
        self.producer = producer
        self.topic = topic

    async def publish(self, cp: Checkpoint) -> None:
        event = head_event(cp)
        if self.witness is not None:
            await asyncio.to_thread(self.witness.append, event)
        if self.producer is not None and self.topic is not None:
            value = event.model_dump_json(by_alias=True).encode()
            await (await self.producer.send(self.topic, value, key=cp.statement.stream.encode()))


async def kafka_heads(bootstrap: str, topic: str, timeout_s: float = 30.0) -> dict[str, list[PublishedHead]]:
    """Every head on the topic, by stream (read from the beginning to the end offsets, no consumer group)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, **kafka_security(), enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    out: dict[str, list[PublishedHead]] = {}
    try:
        partitions = [
            TopicPartition(topic, p) for p in sorted(await consumer.partitions_for_topic(topic) or [])
        ]
        if not partitions:
            raise ValueError(f"topic {topic} does not exist")
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends: dict[Any, int] = await consumer.end_offsets(partitions)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            if loop.time() > deadline:
                raise TimeoutError(f"reading {topic} took longer than {timeout_s} s")
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in batch.values():
                for record in records:
                    head = parse_head(record.value or b"", "kafka")
                    out.setdefault(head.statement.stream, []).append(head)
    finally:
        await consumer.stop()
    return out
