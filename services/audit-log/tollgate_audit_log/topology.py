"""The audit-log's Kafka channels, declared for the AsyncAPI document (``make generate``): its consumers from
their specs (``tollgate_audit_log.consumers``, one database sink per stream), and what it publishes."""

from __future__ import annotations

from faststream.kafka import KafkaBroker

from tollgate_audit_log import SERVICE
from tollgate_audit_log.consumers import consumer_specs
from tollgate_audit_log.settings import AuditLogSettings
from tollgate_core.bus import declared_broker
from tollgate_core.topics import Topics


def build_broker(settings: AuditLogSettings) -> KafkaBroker:
    """The declared broker (never started); any ServiceSettings will do, the audit-log's add the opt-in stream."""
    topics = Topics(settings.topic_namespace)
    broker = declared_broker(settings, SERVICE, consumer_specs(settings))
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
