"""The inference log: one ``inference.log`` event per inference, produced off the request path, never lost
without a count.

The request path appends one small tuple per inference to an in-memory queue (no JSON, no hashing, no
I/O); a batch request appends one deferred item instead, a function that makes its tuples when the sender
takes it, so that a 1,000-row request does not spend a millisecond building log entries before it
answers. A background task takes the queue in batches, builds the events (PII hashed/masked/dropped per the
contract, a fresh ``event_id``), and hands them to an idempotent ``acks=all`` producer.

When Kafka cannot take a batch (unreachable, timing out), the batch goes to the on-disk :class:`Spool`, and
so does everything after it until the spool has been replayed: records reach Kafka in the order the
inferences happened. Replay is retried every ``retry_s``. When the spool is full the configured policy
applies:

* ``refuse``: scoring answers 503 until there is room again (``accepting`` is false); events already
  accepted are held in memory meanwhile and spooled or sent first when room frees up.
* ``drop``: the events that do not fit are discarded and counted in ``dropped``.

Memory is bounded the same way: past ``max_queue`` events waiting in memory (Kafka slower than scoring)
the sender spills them to the spool, and past four times that the request path stops adding (``refuse``:
503; ``drop``: counted drops).

Accounting (all on ``/metrics``): ``logged`` inferences = ``acked`` + ``dropped`` + the backlog (queue,
held, spool), where ``acked`` includes ``replayed``; ``produced`` counts records handed to the producer,
``failed`` those whose send failed (they went to the spool, so they are not lost); ``refused`` counts
requests turned away. A record whose send timed out may still have reached the broker; its replay is then
a duplicate with the same ``event_id``, which the platform's idempotent consumers drop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, final

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from tollgate_core.kafka import OutRecord, PartitionedWriter, producer_config
from tollgate_core.telemetry import TRACEPARENT
from tollgate_core.waiting import wait_event
from tollgate_scorer.ids import random_uuids
from tollgate_scorer.spool import Spool, SpoolRecord

if TYPE_CHECKING:
    from tollgate_scorer.model import ServingModel

log = logging.getLogger(__name__)

SpoolPolicy = Literal["refuse", "drop"]
# Log events encoded between two turns of the event loop (about 0.2 ms of work).
ENCODE_SLICE = 32
SLICED_UP_TO = 1000


@dataclass(slots=True)
class LogEntry:
    """One inference as the request path records it; the sender turns it into an ``inference.log`` event.

    Slots, not frozen: one is built per inference on the request path, and a frozen dataclass's
    ``__init__`` (one ``object.__setattr__`` per field) measured about 7x the cost of this one's on
    Python 3.11 (12 fields, ``timeit`` on this project's shared 2-core machine: 12.0 against 1.6 us per
    build; a plain tuple 0.7). Nothing changes an entry after it is built.
    """

    at: float  # unix time of the inference
    request_id: str
    model: ServingModel  # the version that answered (or shadowed)
    route: str  # champion, canary, shadow or direct
    channel: str  # http, oip or kafka
    instance: Any  # the instance as the client sent it; the encoder redacts it
    prediction: Any
    score: float | None  # classifiers: the positive class's probability
    probabilities: list[float] | None  # classifiers: one per class, in the model's class order
    latency_ms: float
    traceparent: bytes | None
    event_id: str | None  # derived from the request (Kafka path), or None: the encoder draws a fresh one
    # The reason codes the catalog asks for (InferenceExplanation's shape), or None: none are logged.
    explanation: dict[str, Any] | None = None


@final  # the queue tells its items apart with ``type(item) is Deferred``: no subclass may exist
class Deferred:
    """``count`` log entries that ``build`` makes when the sender takes them (off the request path)."""

    __slots__ = ("build", "count")

    def __init__(self, count: int, build: Callable[[], list[LogEntry]]) -> None:
        self.count = count
        self.build = build


class LogSink(Protocol):
    """Where serialised events go: Kafka in production, a fake in unit tests."""

    async def start(self) -> None: ...

    async def send(self, records: Sequence[SpoolRecord]) -> None:
        """Deliver all records or raise."""
        ...

    async def stop(self) -> None: ...


_NO_HEADERS: list[tuple[str, bytes]] = []  # shared by records without a trace: read, never modified


class KafkaLogSink:
    """The idempotent ``acks=all`` producer, writing straight into per-partition batches."""

    def __init__(self, bootstrap: str, topic: str, client_id: str, timeout_s: float) -> None:
        self._bootstrap, self._topic, self._client_id, self._timeout_s = (
            bootstrap,
            topic,
            client_id,
            timeout_s,
        )
        self._producer: AIOKafkaProducer | None = None
        self._writer: PartitionedWriter | None = None

    async def start(self) -> None:
        timeout_ms = int(self._timeout_s * 1000)
        producer = AIOKafkaProducer(
            **producer_config(
                self._bootstrap,
                self._client_id,
                linger_ms=2,
                request_timeout_ms=timeout_ms,
                metadata_max_age_ms=60_000,
                max_batch_size=512 * 1024,
            )
        )
        try:
            await asyncio.wait_for(producer.start(), self._timeout_s)
        except BaseException:
            await _stop_quietly(producer, self._timeout_s)
            raise
        self._producer, self._writer = producer, PartitionedWriter(producer)

    async def send(self, records: Sequence[SpoolRecord]) -> None:
        assert self._writer is not None, "start() first"
        topic = self._topic
        none = _NO_HEADERS
        out = [
            OutRecord(topic, value, key, [(TRACEPARENT, tp)] if tp else none) for key, value, tp in records
        ]

        async def deliver() -> None:
            assert self._writer is not None
            futures = await self._writer.write(out)
            await asyncio.gather(*futures)

        await asyncio.wait_for(deliver(), self._timeout_s)

    async def stop(self) -> None:
        producer, self._producer, self._writer = self._producer, None, None
        if producer is not None:
            await _stop_quietly(producer, self._timeout_s)


async def _stop_quietly(producer: AIOKafkaProducer, timeout_s: float) -> None:
    try:
        await asyncio.wait_for(producer.stop(), timeout_s)
    except (KafkaError, TimeoutError, OSError) as exc:
        log.warning("inference log: producer did not stop cleanly: %s", exc)


class InferenceEventEncoder:
    """Turns log entries into ``inference.log`` envelopes (JSON) keyed by model name.

    It runs off the request path but on the same CPU, so it is kept lean (about 3.4 us per event of a
    21-feature contract, measured alone; a plain ``orjson.dumps`` of the whole envelope took about 6): the
    parts that are the same for every event of a (version, route, channel) are serialised once per batch and
    spliced around the variable part, looked up only when they change from one entry to the next; the
    inputs are redacted once and the logged entity id read from them; event ids come from one
    ``os.urandom`` call per batch, timestamps are formatted from a per-second prefix, and hashed PII values
    are remembered (see :class:`~tollgate_core.pii.PiiRedactor`).
    """

    def __init__(self, schema: str, producer: str) -> None:
        self.schema = schema
        self.producer = producer
        self._second = -1
        self._prefix = ""
        dumps = orjson.dumps
        self._head = (
            b'{"event_type":"inference","schema":'
            + dumps(schema)
            + b',"producer":'
            + dumps(producer)
            + b',"event_id":"'
        )

    def __call__(self, entries: Sequence[LogEntry]) -> list[SpoolRecord]:
        out: list[SpoolRecord] = []
        append, dumps, join = out.append, orjson.dumps, b"".join
        head, occurred = self._head, b'","occurred_at":"'
        fresh_ids = iter(random_uuids(len(entries)))
        constants: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        last: tuple[Any, ...] | None = None
        last_ts, iso = None, b""
        for entry in entries:
            model, route, channel = entry.model, entry.route, entry.channel
            ts, tp = entry.at, entry.traceparent
            if last is None or model is not last[0] or route != last[1] or channel != last[2]:
                last = (model, route, channel)
                fixed = constants.get(last)
                if fixed is None:
                    fixed = constants[last] = self._fixed(model, route, channel)
                key, payload_head, entity_field, class_keys, redact = fixed
            if ts != last_ts:  # the entries of one request or one Kafka batch share their time
                last_ts, iso = ts, self._iso(ts).encode()
            inputs = redact(entry.instance)
            outputs: dict[str, Any] = {"prediction": entry.prediction}
            score, probs = entry.score, entry.probabilities
            if score is not None:
                outputs["score"] = score
            if probs is not None:
                outputs["probabilities"] = dict(zip(class_keys, probs, strict=True))
            if model.threshold is not None:
                outputs["threshold"] = model.threshold
            fields = {
                "request_id": entry.request_id,
                # the entity field's value as logged (hashed, masked or dropped like in the inputs)
                "entity_id": inputs.get(entity_field),
                "inputs": inputs,
                "outputs": outputs,
                "latency_ms": entry.latency_ms,
                "trace_id": tp[3:35].decode() if tp is not None and len(tp) >= 35 else None,
            }
            if entry.explanation is not None:
                fields["explanation"] = entry.explanation
            variable = dumps(fields)
            event = (
                head,
                (entry.event_id or next(fresh_ids)).encode(),
                occurred,
                iso,
                payload_head,
                variable[1:],
                b"}",
            )
            append((key, join(event), tp))
        return out

    @staticmethod
    def _fixed(model: ServingModel, route: str, channel: str) -> tuple[Any, ...]:
        """What is the same for every event of a (version, route, channel)."""
        payload_head = orjson.dumps(
            {
                "model": model.name,
                "version": model.version,
                "route": route,
                "channel": channel,
                "contract": model.contract_id,
            }
        )
        # '","payload":{"model":...,"contract":"...",' : the payload's constant fields, left open.
        return (
            model.name.encode(),
            b'","payload":' + payload_head[:-1] + b",",
            model.reader.entity_field,
            model.class_keys,
            model.redactor.redact,
        )

    def _iso(self, ts: float) -> str:
        second = int(ts)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        return f"{self._prefix}{int((ts - second) * 1_000_000):06d}Z"


class InferenceLog:
    def __init__(
        self,
        *,
        sink: LogSink,
        encoder: InferenceEventEncoder,
        spool: Spool,
        policy: SpoolPolicy = "refuse",
        batch_size: int = 2000,
        linger_s: float = 0.005,
        retry_s: float = 1.0,
        max_queue: int = 50_000,
    ) -> None:
        self._sink = sink
        self._encode = encoder
        self.spool = spool
        self.policy = policy
        self._batch_size = batch_size
        self._linger_s = linger_s
        self._retry_s = retry_s
        self._max_queue = max_queue
        # Past this many queued events the request path stops adding (refuse: 503, drop: counted drops);
        # between max_queue and it, the sender spills to the spool.
        self._memory_limit = 4 * max_queue
        self._queue: deque[LogEntry | Deferred] = deque()
        self._queued = 0  # events in _queue (a Deferred item counts for its entries)
        self._held: deque[SpoolRecord] = deque()  # records the full spool refused (policy refuse)
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._sink_started = False
        self._retry_at = 0.0
        self._stopping = False
        self.closed = False
        # Counters (monotonic) and state, exported on /metrics.
        self.logged = 0
        self.produced = 0
        self.acked = 0
        self.failed = 0
        self.spooled = 0
        self.replayed = 0
        self.dropped = 0
        self.refused = 0
        self.kafka_up = False

    # ---- request path

    @property
    def accepting(self) -> bool:
        """False while events cannot be kept (spool full, or far more queued in memory than the sender can
        take) under the ``refuse`` policy: scoring must answer 503."""
        return not self._held and (self.policy == "drop" or self._queued < self._memory_limit)

    def append(self, entry: LogEntry) -> None:
        if self.closed or (self._queued >= self._memory_limit and self.policy == "drop"):
            self._add(entry, 1)
            return
        self.logged += 1  # the common case, kept to the fewest steps: it runs once per inference
        self._queue.append(entry)
        self._queued += 1
        if self._queued >= self._batch_size:
            self._wake.set()

    def defer(self, count: int, build: Callable[[], list[LogEntry]]) -> None:
        """Log ``count`` inferences whose entries ``build`` makes later, in the sender (in queue order)."""
        if count:
            self._add(Deferred(count, build), count)

    def _add(self, item: LogEntry | Deferred, count: int) -> None:
        self.logged += count
        if self.closed:  # an inference finishing during shutdown: straight to disk
            entries = item.build() if type(item) is Deferred else [item]
            self.spooled += self.spool.append(self._encode(entries), beyond_bound=True)
            return
        if self._queued >= self._memory_limit and self.policy == "drop":
            self.dropped += count  # overload: the sender is far behind and memory is bounded
            return
        self._queue.append(item)
        self._queued += count
        if self._queued >= self._batch_size:
            self._wake.set()

    @property
    def backlog(self) -> int:
        return self._queued + len(self._held) + self.spool.records

    # ---- background

    async def run(self) -> None:
        """Deliver forever; returns only once ``close`` has started."""
        while not self._stopping:
            await wait_event(self._wake, self._linger_s)
            self._wake.clear()
            if self._stopping:
                return
            async with self._lock:
                await self._pump()

    async def close(self) -> None:
        """Deliver or spool everything queued; after this, late entries are spooled synchronously."""
        log.info(
            "inference log: closing, %d queued, %d held, %d spooled",
            self._queued,
            len(self._held),
            self.spool.records,
        )
        self._stopping = True
        self._wake.set()
        async with self._lock:
            self._retry_at = 0.0
            await self._pump()
            self._spill_queue()
            self.closed = True
            if self._held:
                # Answered requests' events: better past the bound than lost (the bound is exceeded by at
                # most what was accepted before refusing began).
                held = list(self._held)
                self._held.clear()
                self.spool.append(held, beyond_bound=True)
                self.spooled += len(held)
                log.warning(
                    "inference log: spool full at shutdown; %d held events written beyond its bound",
                    len(held),
                )
            await self._stop_sink()
        # The spool stays open: an inference finishing during shutdown is written to it synchronously.

    async def _pump(self) -> None:
        """Oldest first: spool, then held records, then the queue."""
        if (self._held or not self.spool.empty) and not await self._drain_backlog():
            self._spill_queue()
            return
        while self._queue:
            records = await self._encode_in_slices(self._take())
            if self._queued > self._max_queue:
                self._spill_queue()  # Kafka is slower than scoring: keep memory bounded, the spool takes it
            if not await self._send(records):
                self._store(records)
                self._spill_queue()
                return

    async def _encode_in_slices(self, entries: list[LogEntry]) -> list[SpoolRecord]:
        """Encode a batch a slice at a time, letting requests run in between: the batch costs the same CPU,
        but no request waits behind all of it. Only batches of light traffic are sliced: a large batch
        comes from bulk work (the Kafka path, large requests) that runs in long steps itself, between
        which a sliced encoder would get one slice per turn of the loop and fall behind."""
        if not ENCODE_SLICE < len(entries) <= SLICED_UP_TO:
            return self._encode(entries)
        records: list[SpoolRecord] = []
        for start in range(0, len(entries), ENCODE_SLICE):
            if start:
                await asyncio.sleep(0)
            records += self._encode(entries[start : start + ENCODE_SLICE])
        return records

    def _take(self) -> list[LogEntry]:
        """Up to a batch of entries, oldest first; a deferred item is built here and taken whole."""
        queue, limit = self._queue, self._batch_size
        taken: list[LogEntry] = []
        while queue and len(taken) < limit:
            item = queue.popleft()
            if type(item) is Deferred:
                self._queued -= item.count
                taken += item.build()
            else:
                self._queued -= 1
                taken.append(item)
        return taken

    async def _drain_backlog(self) -> bool:
        """Replay the spool (then held records) into Kafka; False when Kafka is still unreachable."""
        while True:
            self._move_held_to_spool()
            if self.spool.empty and not self._held:
                return True
            if time.monotonic() < self._retry_at:
                return False
            if not self.spool.empty:
                records, cursor = self.spool.peek(self._batch_size)
                if not await self._send(records):
                    return False
                self.spool.commit(cursor)
                self.replayed += len(records)
            else:  # held records that never fitted: the spool is empty now, so they go next
                held = [self._held.popleft() for _ in range(min(self._batch_size, len(self._held)))]
                if not await self._send(held):
                    self._held.extendleft(reversed(held))
                    return False
                self.replayed += len(held)
            if self._queued > self._max_queue:
                self._spill_queue()  # newest events go behind the backlog, keeping memory bounded

    def _move_held_to_spool(self) -> None:
        while self._held:
            chunk = [self._held[i] for i in range(min(self._batch_size, len(self._held)))]
            moved = self.spool.append(chunk)
            for _ in range(moved):
                self._held.popleft()
            self.spooled += moved
            if moved < len(chunk):
                return

    def _spill_queue(self) -> None:
        while self._queue:
            self._store(self._encode(self._take()))

    def _store(self, records: list[SpoolRecord]) -> None:
        """Spool records behind everything older; apply the policy to what does not fit."""
        stored = 0 if self._held else self.spool.append(records)
        self.spooled += stored
        rest = records[stored:]
        if not rest:
            return
        if self.policy == "drop":
            self.dropped += len(rest)
            log.warning(
                "inference log: spool full (%d bytes), %d events dropped (dropped so far: %d)",
                self.spool.max_bytes,
                len(rest),
                self.dropped,
            )
        else:
            self._held.extend(rest)

    async def _send(self, records: list[SpoolRecord]) -> bool:
        if not await self._ensure_sink():
            return False
        self.produced += len(records)
        try:
            await self._sink.send(records)
        except (KafkaError, TimeoutError, OSError) as exc:
            self.failed += len(records)
            self.kafka_up = False
            self._retry_at = time.monotonic() + self._retry_s
            log.warning(
                "inference log: %d events not delivered, spooling until Kafka is back: %r", len(records), exc
            )
            await self._stop_sink()
            return False
        self.acked += len(records)
        return True

    async def _ensure_sink(self) -> bool:
        if self._sink_started:
            return True
        if time.monotonic() < self._retry_at:
            return False
        try:
            await self._sink.start()
        except (KafkaError, TimeoutError, OSError) as exc:
            self.kafka_up = False
            self._retry_at = time.monotonic() + self._retry_s
            log.warning("inference log: Kafka unreachable (%r); spooling, retry in %.1fs", exc, self._retry_s)
            return False
        self._sink_started = True
        self.kafka_up = True
        return True

    async def _stop_sink(self) -> None:
        if self._sink_started:
            self._sink_started = False
            await self._sink.stop()
