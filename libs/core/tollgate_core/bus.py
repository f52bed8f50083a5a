"""faststream on Kafka with the platform's delivery rules.

* ``create_broker``: idempotent producers with ``acks=all``; the broker-wide ack policy is ``MANUAL``: never
  faststream's at-most-once default ``ACK_FIRST``, and not ``ACK`` either, which commits even when the
  handler raised (a failed dead-letter publish would lose the message).
* ``subscribe``: every subscriber states its group, ack policy and concurrency in a ``Delivery``, and follows
  the runtime's poison policy (``tollgate_core.kafka.is_transient``): a transient failure (database or broker
  away, a timeout) is retried with backoff until it succeeds and is never dead-lettered; any other failure
  gets bounded retries, then the message goes to the service's DLQ with headers naming the source topic,
  partition, offset, error and attempt. The offset is committed only after the handler succeeded or the
  dead letter was acknowledged; if the dead letter cannot be written, the message is sought back and
  redelivered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from tollgate_core.kafka import dead_letter, is_transient
from tollgate_core.kafka_auth import faststream_security
from tollgate_core.settings import ServiceSettings
from tollgate_core.topics import Topics

if TYPE_CHECKING:
    from aiokafka.structs import ConsumerRecord

log = logging.getLogger(__name__)

# faststream's at-most-once default (commit before the handler runs): refused for every subscriber.
AT_MOST_ONCE = frozenset({AckPolicy["ACK_FIRST"]})


@dataclass(frozen=True)
class Delivery:
    """How a subscriber consumes: stated explicitly for every subscriber in the platform."""

    group_id: str
    ack_policy: AckPolicy = AckPolicy.MANUAL
    max_workers: int = 1
    retries: int = 3
    retry_backoff_s: float = 0.2
    max_backoff_s: float = 10.0

    def __post_init__(self) -> None:
        if self.ack_policy in AT_MOST_ONCE:
            raise ValueError(
                f"subscriber group {self.group_id!r}: {self.ack_policy} commits before the work is done and "
                "loses messages on a crash; use AckPolicy.MANUAL (committed after the work or the dead letter)"
            )
        if self.ack_policy is not AckPolicy.MANUAL:
            raise ValueError(
                f"subscriber group {self.group_id!r}: {self.ack_policy} commits even when the handler raised; "
                "subscribe() commits itself (AckPolicy.MANUAL) after the work or the dead letter"
            )
        if self.retries < 0:
            raise ValueError("retries cannot be negative")


def create_broker(settings: ServiceSettings, service: str, **kwargs: Any) -> KafkaBroker:
    return KafkaBroker(
        settings.kafka_bootstrap,
        client_id=settings.client_id(service),
        acks="all",
        enable_idempotence=True,
        ack_policy=AckPolicy.MANUAL,
        allow_auto_create_topics=False,
        security=faststream_security(),
        **kwargs,
    )


Handler = Callable[[bytes], Awaitable[None]]


def subscribe(
    broker: KafkaBroker,
    topic: str,
    *,
    service: str,
    topics: Topics,
    delivery: Delivery,
    description: str = "",
) -> Callable[[Handler], Any]:
    """Register ``handler(body: bytes)`` on ``topic`` with explicit delivery, bounded retries and a DLQ."""
    dlq_topic = topics.dlq(service)

    def decorator(handler: Handler) -> Any:
        async def with_retries_and_dlq(message: KafkaMessage) -> None:
            body: bytes = message.body  # raw bytes: each handler parses its own payload model
            attempt = 0
            transient_backoff = delivery.retry_backoff_s
            while True:
                try:
                    await handler(body)
                except Exception as exc:
                    if is_transient(exc):  # retried until it works, never dead-lettered
                        log.warning("%s: %s: transient failure, retrying: %r", service, topic, exc)
                        await asyncio.sleep(transient_backoff)
                        transient_backoff = min(transient_backoff * 2, delivery.max_backoff_s)
                        continue
                    attempt += 1
                    if attempt <= delivery.retries:
                        log.warning("%s: %s failed (attempt %d): %s", service, topic, attempt, exc)
                        await asyncio.sleep(delivery.retry_backoff_s * 2 ** (attempt - 1))
                        continue
                    await _dead_letter_then_ack(message, exc)
                    return
                await message.ack()
                return

        async def _dead_letter_then_ack(message: KafkaMessage, exc: Exception) -> None:
            # Not a batch subscriber: raw_message is one record, never a tuple of records.
            record = cast("ConsumerRecord[bytes, bytes]", message.raw_message)
            out = dead_letter(record, dlq_topic, service, exc)
            headers = {k: v.decode("utf-8", "replace") for k, v in out.headers}
            try:
                await broker.publish(out.value, out.topic, key=out.key, headers=headers)
            except Exception:  # not committed: sought back and delivered again
                log.exception("%s: %s offset %s: dead letter not written", service, topic, record.offset)
                await message.nack()
                return
            log.error("%s: %s offset %s sent to %s: %s", service, topic, record.offset, dlq_topic, exc)
            await message.ack()

        with_retries_and_dlq.__name__ = handler.__name__
        with_retries_and_dlq.__doc__ = handler.__doc__
        return broker.subscriber(
            topic,
            group_id=delivery.group_id,
            ack_policy=delivery.ack_policy,
            max_workers=delivery.max_workers,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            description=description or handler.__doc__,
        )(with_retries_and_dlq)

    return decorator


def subscriber_policies(broker: KafkaBroker) -> list[tuple[str, AckPolicy, bool]]:
    """(topics, resolved ack policy, auto-commit) of every subscriber — what the delivery test inspects."""
    found = []
    for sub in broker.subscribers:
        names = ",".join(sub.topic_names)  # type: ignore[attr-defined]
        auto_commit = bool(sub._connection_args.get("enable_auto_commit"))  # type: ignore[attr-defined]
        found.append((names, sub.ack_policy, auto_commit))
    return found
