"""One consumed batch into the chain: parse part k+1 while part k is being inserted.

Parsing (JSON, envelope checks, index columns) and hashing are Python; inserting is PostgreSQL's work in
another process. Cutting the batch into parts, each appended in its own transaction while the next part
is parsed, keeps both busy. The offsets of the batch are committed only after every part is stored, so a
crash part-way redelivers the batch, and the parts already stored are recognised by their event ids.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tollgate_audit_log.canonical import Entry
from tollgate_audit_log.chain import ChainWriter
from tollgate_audit_log.streams import EntryBuilder, PoisonMessage

PART = 1000  # messages parsed while the previous part is inserted
YIELD_EVERY = 100  # messages parsed between two chances for the insert in flight to progress


class Message(Protocol):
    """What is read from a consumed Kafka record (aiokafka's ConsumerRecord has it)."""

    @property
    def value(self) -> bytes | None: ...
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def headers(self) -> Any: ...


@dataclass
class Outcome:
    inserted: int = 0
    duplicates: int = 0
    rejected: list[tuple[Any, Exception]] = field(default_factory=list)  # (message, why): for the DLQ


async def record_batch(writer: ChainWriter, builder: EntryBuilder, messages: Sequence[Message]) -> Outcome:
    outcome = Outcome()
    pending: asyncio.Future[tuple[int, list[tuple[Entry, Exception]]]] | None = None
    pending_count = 0
    by_position: dict[tuple[int, int], Message] = {}

    def settle(result: tuple[int, list[tuple[Entry, Exception]]], submitted: int) -> None:
        inserted, refused = result
        outcome.inserted += inserted
        outcome.duplicates += submitted - inserted - len(refused)
        outcome.rejected += [(by_position[(e.partition, e.offset)], error) for e, error in refused]

    try:
        for first in range(0, len(messages), PART):
            entries: list[Entry] = []
            for i, msg in enumerate(messages[first : first + PART]):
                try:
                    entries.append(
                        builder.build(msg.value, msg.topic, msg.partition, msg.offset, msg.headers)
                    )
                    by_position[(msg.partition, msg.offset)] = msg
                except PoisonMessage as exc:
                    outcome.rejected.append((msg, exc))
                if pending is not None and i % YIELD_EVERY == YIELD_EVERY - 1:
                    await asyncio.sleep(0)
            if pending is not None:
                settle(await pending, pending_count)
                pending = None
            if entries:
                pending, pending_count = asyncio.ensure_future(writer.append_isolating(entries)), len(entries)
                await asyncio.sleep(0)
        if pending is not None:
            settle(await pending, pending_count)
            pending = None
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
    return outcome
