"""Every Kafka consumer of the platform, declared as a :class:`ConsumerSpec` and run on the consumer runtime.

A service declares each of its consumers once, in its ``tollgate_<service>.consumers`` module
(``consumer_specs(settings) -> list[ConsumerSpec]``). From those specs

* the running service starts its consumers (:func:`build_consumer`, with the handler bound by
  :meth:`ConsumerSpec.bind`),
* the AsyncAPI documents declare their subscribers (:func:`declare`; ``make generate``),
* the topic catalog's consumer lists are checked (``tests/unit/schemas/test_catalog_matches_code.py``),

so what runs, what is documented and what the broker's ACLs allow cannot drift apart.

Kinds (one poison policy for all, see ``tollgate_core.kafka``: a record whose handling raises something not
transient is isolated and dead-lettered with headers; transient failures are retried with backoff):

* ``transactional_stage`` (:class:`~tollgate_core.kafka.TransactionalStage`): consume → produce outputs and
  offsets in one Kafka transaction (exactly-once); dead letters inside the transaction.
* ``database_sink`` (:class:`~tollgate_core.kafka.BatchSink`): consume → write idempotently (PostgreSQL) →
  dead letters acknowledged → offsets committed (at-least-once into an idempotent store).
* ``compacted_follower`` (:class:`CompactedFollower`): every replica reads the whole topic from its beginning
  on each start, without a consumer group and without commits, and applies every record idempotently (a fold:
  the newest state per key wins). ``caught_up`` is set once it has read up to the end offsets seen at start.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, cast

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry

from tollgate_core.kafka import (
    BatchSink,
    Record,
    Refused,
    RetryPolicy,
    TransactionalStage,
    _records_and_offsets,
)
from tollgate_core.kafka_auth import kafka_security
from tollgate_core.settings import ServiceSettings

log = logging.getLogger(__name__)

ConsumerKind = Literal["transactional_stage", "database_sink", "compacted_follower"]
KINDS: tuple[ConsumerKind, ...] = ("transactional_stage", "database_sink", "compacted_follower")

# A stage's handler returns output records; a sink's or a follower's returns the records it refused (or None).
Handler: TypeAlias = Callable[[list[Record]], Awaitable[Any]]

# What each kind promises about its offsets, stated in its AsyncAPI description.
_DELIVERY = {
    "transactional_stage": "Exactly-once: outputs, dead letters and offsets are committed in one Kafka "
    "transaction.",
    "database_sink": "At-least-once into an idempotent store: offsets committed after the rows are stored "
    "and every dead letter is acknowledged.",
    "compacted_follower": "Read whole from the beginning by every replica on every start, without a consumer "
    "group and without commits; each record applied idempotently.",
}


@dataclass(frozen=True)
class ConsumerSpec:
    """One Kafka consumer of a service: what it reads, as which group, how, and what it does.

    ``name`` labels the consumer (``/metrics`` label ``consumer``, logs); ``group`` is the full consumer group
    (``ServiceSettings.consumer_group(service, suffix)``), ``None`` for a compacted follower. ``dlq`` is the
    service's dead-letter topic. ``outputs`` lists, for a stage, the topics it produces and what goes there.
    ``handler`` is bound by the running service (:meth:`bind`); documents and tests use the spec without it.
    """

    service: str
    name: str
    kind: ConsumerKind
    topics: tuple[str, ...]
    group: str | None
    description: str
    dlq: str | None = None
    outputs: tuple[tuple[str, str], ...] = ()
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    max_records: int = 500
    handler: Handler | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(
                f"consumer {self.name!r}: unknown kind {self.kind!r} (one of {', '.join(KINDS)})"
            )
        if not self.topics:
            raise ValueError(f"consumer {self.name!r} reads no topic")
        if (self.kind == "compacted_follower") != (self.group is None):
            raise ValueError(
                f"consumer {self.name!r}: a compacted follower has no consumer group and every other kind "
                "has one"
            )
        if self.outputs and self.kind != "transactional_stage":
            raise ValueError(f"consumer {self.name!r}: only a transactional stage declares outputs")
        if self.max_records < 1:
            raise ValueError(f"consumer {self.name!r}: max_records must be at least 1")

    def bind(self, handler: Handler, **changes: Any) -> ConsumerSpec:
        """The same spec with the handler that does the work (and any other field changed)."""
        return dataclasses.replace(self, handler=handler, **changes)


def bind_all(specs: Sequence[ConsumerSpec], handlers: Mapping[str, Handler]) -> dict[str, ConsumerSpec]:
    """Every spec of a service bound to its handler, by consumer name. A spec without a handler, or a handler
    without a spec, is an error: the service runs exactly the consumers it declares."""
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"consumer names repeat: {sorted(names)}")
    missing, extra = set(names) - set(handlers), set(handlers) - set(names)
    if missing or extra:
        raise ValueError(
            f"consumers declared without a handler: {sorted(missing)}; handlers without a spec: {sorted(extra)}"
        )
    return {spec.name: spec.bind(handlers[spec.name]) for spec in specs}


def transactional_id(spec: ConsumerSpec, settings: ServiceSettings) -> str:
    """The prefix of a stage's transactional ids, ``<namespace>.<service>`` (the ACLs grant it by prefix).

    The stage adds ``.<group>-<topic>-<partition>``: one transactional id per input partition, the same in
    every replica, so that the replica a partition moves to fences the one it moved from
    (:class:`~tollgate_core.kafka.TransactionalStage`)."""
    return f"{settings.topic_namespace}.{spec.service}"


def build_consumer(
    spec: ConsumerSpec,
    settings: ServiceSettings | None = None,
    *,
    bootstrap: str | None = None,
    client_id: str | None = None,
    registry: CollectorRegistry | None = None,
    max_message_bytes: Callable[[str], int] | None = None,
    consumer_factory: Callable[..., Any] | None = None,
    producer_factory: Callable[..., Any] | None = None,
    on_caught_up: Callable[[], Awaitable[None]] | None = None,
) -> TransactionalStage | BatchSink | CompactedFollower:
    """The runtime consumer a (bound) spec declares, not started yet. The broker and client id come from
    ``settings`` unless given; a stage's transactional id is :func:`transactional_id` (settings required)."""
    if spec.handler is None:
        raise ValueError(f"consumer {spec.name!r}: bind its handler first (spec.bind(handler))")
    if settings is None and (bootstrap is None or client_id is None or spec.kind == "transactional_stage"):
        raise ValueError(
            f"consumer {spec.name!r}: settings are needed for its broker, client and transaction"
        )
    bootstrap = bootstrap or (settings.kafka_bootstrap if settings is not None else "")
    client = client_id or (settings.client_id(spec.service) if settings is not None else "")
    if max_message_bytes is None:
        from tollgate_core.topics import max_message_bytes as declared_max_message_bytes

        max_message_bytes = declared_max_message_bytes
    # What every kind takes alike: the spec's handler, DLQ and batch policy, the broker and the factories.
    common: dict[str, Any] = {
        "name": spec.name,
        "bootstrap": bootstrap,
        "client_id": client,
        "handler": spec.handler,
        "dlq_topic": spec.dlq,
        "max_records": spec.max_records,
        "retry": spec.retry,
        "registry": registry,
        "max_message_bytes": max_message_bytes,
        "consumer_factory": consumer_factory,
        "producer_factory": producer_factory,
    }
    if spec.kind == "transactional_stage":
        assert spec.group is not None and settings is not None
        return TransactionalStage(
            source_topics=list(spec.topics),
            group_id=spec.group,
            transactional_id=transactional_id(spec, settings),
            **common,
        )
    if spec.kind == "database_sink":
        assert spec.group is not None
        return BatchSink(service=spec.service, topics=list(spec.topics), group_id=spec.group, **common)
    return CompactedFollower(service=spec.service, topics=spec.topics, on_caught_up=on_caught_up, **common)


def _require_kind(spec: ConsumerSpec, kind: ConsumerKind) -> None:
    if spec.kind != kind:
        raise TypeError(f"consumer {spec.name!r} is a {spec.kind}, not a {kind.replace('_', ' ')}")


def build_stage(spec: ConsumerSpec, settings: ServiceSettings, **kwargs: Any) -> TransactionalStage:
    """:func:`build_consumer` for a ``transactional_stage`` spec."""
    _require_kind(spec, "transactional_stage")
    return cast(TransactionalStage, build_consumer(spec, settings, **kwargs))


def build_sink(spec: ConsumerSpec, settings: ServiceSettings | None = None, **kwargs: Any) -> BatchSink:
    """:func:`build_consumer` for a ``database_sink`` spec."""
    _require_kind(spec, "database_sink")
    return cast(BatchSink, build_consumer(spec, settings, **kwargs))


def build_follower(spec: ConsumerSpec, settings: ServiceSettings, **kwargs: Any) -> CompactedFollower:
    """:func:`build_consumer` for a ``compacted_follower`` spec."""
    _require_kind(spec, "compacted_follower")
    return cast(CompactedFollower, build_consumer(spec, settings, **kwargs))


def per_record(handle: Callable[[bytes], Awaitable[None]]) -> Handler:
    """A batch handler that hands each record's value, in order, to ``handle``. A record whose ``handle``
    raises something not transient is isolated by the runtime and dead-lettered; the others are applied
    (possibly again: ``handle`` must be idempotent, as every handler must)."""

    async def handler(records: list[Record]) -> None:
        for record in records:
            await handle(record.value or b"")

    handler.__doc__ = handle.__doc__
    return handler


# --------------------------------------------------------------------------------------------- documents


def channel_title(spec: ConsumerSpec, topic: str) -> str:
    """The AsyncAPI channel of a spec's topic: ``<topic>:<ConsumerName>`` (``monitor-windows`` → ``Windows``)."""
    words = re.split(r"[^0-9A-Za-z]+", spec.name)
    if len(words) > 1 and words[0] == re.split(r"[^0-9A-Za-z]+", spec.service)[0]:
        words = words[len(re.split(r"[^0-9A-Za-z]+", spec.service)) :] or words
    return f"{topic}:{''.join(w[:1].upper() + w[1:] for w in words if w)}"


def declare(broker: Any, spec: ConsumerSpec) -> None:
    """Declare ``spec`` on a faststream broker that is never started, for the AsyncAPI document: one
    subscriber per topic (without a handler: the consumer runs on the runtime), committing nothing itself
    (``AckPolicy.MANUAL``), and a publisher per declared output."""
    from faststream import AckPolicy

    description = f"{spec.description} {_DELIVERY[spec.kind]}"
    if spec.dlq is not None:
        description += " Poison records go to the service's DLQ with headers."
    for topic in spec.topics:
        broker.subscriber(
            topic,
            group_id=spec.group,
            ack_policy=AckPolicy.MANUAL,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            title=channel_title(spec, topic),
            description=description,
        )
    for topic, what in spec.outputs:
        broker.publisher(topic, description=what)


def consumed_topics(specs: Sequence[ConsumerSpec]) -> set[str]:
    return {topic for spec in specs for topic in spec.topics}


# ------------------------------------------------------------------------------------ compacted follower


def follower_consumer(
    bootstrap: str, group_id: str | None, client_id: str, *, topics: Sequence[str] = (), **overrides: Any
) -> AIOKafkaConsumer:
    """A consumer without a group: assigned every partition of ``topics``, committing nothing, reading
    only committed transactional data."""
    config: dict[str, Any] = {
        **kafka_security(),
        "bootstrap_servers": bootstrap,
        "group_id": None,
        "client_id": client_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
    }
    config.update(overrides)
    return AIOKafkaConsumer(*topics, **config)


class CompactedFollower(BatchSink):
    """Read a (compacted) topic whole on every start, then follow it; no group, nothing committed.

    Every record is handed to the handler in batches; the handler applies them idempotently (a fold) and may
    return records it refuses. Poison (a non-transient failure, or a refused record) is isolated and
    dead-lettered with headers before the follower moves past it, so one bad record never stalls the fold;
    transient failures seek back to the first record not yet applied and retry with backoff.

    Because nothing is committed, a poison record is dead-lettered once per start by each replica that reads
    it; the DLQ headers (source topic, partition, offset) identify repeats.

    ``catch_up()`` reads up to the end offsets seen at ``start()`` and then awaits ``on_caught_up`` (where a
    fold applies its final state once); ``caught_up`` is True from then on, and ``run()`` follows new records.
    """

    def __init__(
        self,
        *,
        name: str,
        service: str,
        bootstrap: str,
        topics: Sequence[str],
        client_id: str,
        handler: Callable[[list[Record]], Awaitable[Refused | None]],
        dlq_topic: str | None,
        max_records: int = 500,
        retry: RetryPolicy | None = None,
        registry: CollectorRegistry | None = None,
        max_message_bytes: Callable[[str], int] | None = None,
        on_caught_up: Callable[[], Awaitable[None]] | None = None,
        consumer_factory: Callable[..., Any] | None = None,
        producer_factory: Callable[..., Any] | None = None,
    ) -> None:
        make = consumer_factory or follower_consumer
        topic_list = tuple(topics)

        def without_group(bootstrap: str, group_id: str, client_id: str, **overrides: Any) -> Any:
            return make(bootstrap, None, client_id, topics=topic_list, **overrides)

        super().__init__(
            name=name,
            service=service,
            bootstrap=bootstrap,
            topics=topic_list,
            group_id="",
            client_id=client_id,
            handler=handler,
            dlq_topic=dlq_topic,
            max_records=max_records,
            retry=retry,
            registry=registry,
            max_message_bytes=max_message_bytes,
            consumer_factory=without_group,
            producer_factory=producer_factory,
        )
        self.caught_up = False
        self._on_caught_up = on_caught_up
        self._end: dict[TopicPartition, int] = {}
        self._applied: dict[TopicPartition, int] = {}  # next offset to apply, per partition

    async def start(self) -> None:
        consumer = self._consumer
        await consumer.start()
        assigned = sorted(consumer.assignment())
        if not assigned:
            await consumer.stop()
            raise RuntimeError(f"{self.name}: topics {', '.join(self._topics)} do not exist")
        await consumer.seek_to_beginning(*assigned)
        self._end = await consumer.end_offsets(assigned)
        self.started = True

    async def _reached_end(self) -> bool:
        for tp, end in self._end.items():
            if await self._consumer.position(tp) < end:
                return False
        return True

    async def catch_up(self) -> None:
        """Read and apply everything up to the end offsets seen at start (then ``on_caught_up``)."""
        await self._follow(until_caught_up=True)

    async def run(self) -> None:
        await self._follow(until_caught_up=False)

    async def _follow(self, until_caught_up: bool) -> None:
        backoff = self._retry.backoff_s
        while not self._stopping.is_set():
            if until_caught_up and self.caught_up:
                return
            try:
                batch = await self._consumer.getmany(
                    timeout_ms=200 if not self.caught_up else 1000, max_records=self._max_records
                )
                await self._observe_lag()
                if batch:
                    records, offsets = _records_and_offsets(batch)
                    dead, n_dead = await self._isolate(records, self._written)
                    if dead:
                        await self._send_dead_letters(dead)
                    self._applied.update(offsets)
                    self._write_succeeded()
                    self._dead_lettered(n_dead)
                    self._count(len(records), len(dead))
                if not self.caught_up and await self._reached_end():
                    if self._on_caught_up is not None:
                        await self._on_caught_up()
                    self.caught_up = True
                    log.info("%s: caught up (%d records)", self.name, self.stats.consumed)
                backoff = self._retry.backoff_s
            except Exception:
                if self._stopping.is_set():
                    return
                backoff = await self._recover(backoff)

    async def _recover(self, backoff: float) -> float:
        """Seek back to the first record not applied yet (nothing is committed), wait, double the backoff."""
        self.stats.aborted += 1
        if self._metrics is not None:
            self._metrics.retried_batches.labels(self.name).inc()
        log.warning(
            "%s: batch failed, seeking back to the first record not applied", self.name, exc_info=True
        )
        try:
            for tp in self._consumer.assignment():
                if tp in self._applied:
                    self._consumer.seek(tp, self._applied[tp])
                else:
                    await self._consumer.seek_to_beginning(tp)
        except Exception:
            log.warning("%s: could not seek back yet", self.name, exc_info=True)
        await self._sleep(backoff)
        return min(backoff * 2, self._retry.max_backoff_s)
