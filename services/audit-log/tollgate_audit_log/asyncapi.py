"""The audit-log's Kafka channels, declared for the AsyncAPI document (``make generate``) and the delivery
test. The consumers themselves run on ``BatchSink`` (one per stream, offsets committed after the rows are
stored); the declarations here say so with ``AckPolicy.MANUAL``."""

from __future__ import annotations

from faststream import AckPolicy
from faststream.kafka import KafkaBroker

from tollgate_audit_log.settings import AuditLogSettings
from tollgate_audit_log.sink import SERVICE
from tollgate_audit_log.streams import StreamSpec, stream_specs
from tollgate_core.bus import create_broker
from tollgate_core.topics import Topics


def _declare(broker: KafkaBroker, topic: str, group_id: str, spec: StreamSpec) -> None:
    async def record(body: bytes) -> None:  # documentation only: the broker holding it is never started
        raise NotImplementedError

    record.__name__ = f"audit_{spec.name}"
    description = (
        f"Stream '{spec.name}': {spec.description} Appended to its hash chain (PostgreSQL, idempotent "
        "by event_id) by the one replica holding the stream's lock; offsets committed after the rows "
        "are stored; unrecordable messages go to the DLQ."
    )
    broker.subscriber(
        topic,
        group_id=group_id,
        ack_policy=AckPolicy.MANUAL,
        isolation_level="read_committed",
        description=description,
    )(record)


def build_broker(settings: AuditLogSettings) -> KafkaBroker:
    """The declared broker (never started); any ServiceSettings will do, the audit-log's add the opt-in stream."""
    topics = Topics(settings.topic_namespace)
    broker = create_broker(settings, SERVICE)
    for spec in stream_specs(audit_validated=getattr(settings, "audit_validated", False)):
        _declare(broker, topics.name(spec.topic), settings.consumer_group(SERVICE, spec.name), spec)
    broker.publisher(
        topics.name("operations"),
        description="Operators' actions through this service's API (DLQ redrives: who, why, which "
        "records), committed in one transaction with the redriven records; recorded here as stream "
        "'operations'.",
    )
    broker.publisher(
        topics.name("audit.checkpoints"),
        description="Every signed tree head (checkpoint) of every stream, chained, with the consistency "
        "proof from the previous head; kept forever, so a verifier can compare the database with it.",
    )
    broker.publisher(
        topics.name("monitor.alerts"),
        description="Tampering found by a stream's writer (kind audit_tampering, severity critical).",
    )
    broker.publisher(
        topics.dlq(SERVICE),
        description="Messages the audit trail cannot record, unchanged, with "
        "headers naming the source topic, partition, offset and reason.",
    )
    return broker
