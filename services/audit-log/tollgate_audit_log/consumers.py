"""The audit-log's Kafka consumers, declared once: one database sink per stream (``streams.stream_specs``).
The running service starts each stream's sink from its spec (while the replica holds the stream's writer
lock) and the AsyncAPI document (``make generate``) declares them from these specs."""

from __future__ import annotations

from tollgate_audit_log import SERVICE
from tollgate_audit_log.chain import ChainDamaged, ChainMoved, LockLost
from tollgate_audit_log.settings import AuditLogSettings
from tollgate_audit_log.streams import StreamSpec, stream_specs
from tollgate_core.kafka import RetryPolicy, is_transient
from tollgate_core.registrations import follower_spec
from tollgate_core.runtime import ConsumerSpec
from tollgate_core.settings import ServiceSettings
from tollgate_core.topics import Topics


def _transient_for_the_trail(exc: BaseException) -> bool:
    """The runtime's classification, plus the writer's own conditions: a lost lock, a chain that moved under
    the writer (tampering included) or damaged rows are the trail's state, not a record's fault, so the batch
    is retried (the writer takes the lock again or stops) and never dead-lettered."""
    return is_transient(exc) or isinstance(exc, LockLost | ChainMoved | ChainDamaged)


def stream_consumer(
    stream: StreamSpec, *, topic: str, group: str, dlq: str, max_records: int = 5000
) -> ConsumerSpec:
    """The database sink of one audited stream."""
    return ConsumerSpec(
        service=SERVICE,
        name=f"{SERVICE}-{stream.name}",
        kind="database_sink",
        topics=(topic,),
        group=group,
        description=f"Stream '{stream.name}': {stream.description} Appended to its hash chain (PostgreSQL, "
        "idempotent by event_id) by the one replica holding the stream's lock.",
        dlq=dlq,
        retry=RetryPolicy(classify=_transient_for_the_trail),
        max_records=max_records,
    )


def contracts_follower(settings: ServiceSettings) -> ConsumerSpec:
    """The dataset contracts registered live, whose PII rules protect rejected and validated records."""
    return follower_spec(
        SERVICE,
        settings,
        "the dataset contracts whose personal-data rules protect rejected and validated records.",
        name=f"{SERVICE}-contracts",
    )


def consumer_specs(settings: ServiceSettings) -> list[ConsumerSpec]:
    """Every stream's sink; with plain ``ServiceSettings`` the defaults of ``AuditLogSettings`` apply."""
    topics = Topics(settings.topic_namespace)
    audit_validated = isinstance(settings, AuditLogSettings) and settings.audit_validated
    max_records = settings.batch_max_records if isinstance(settings, AuditLogSettings) else 5000
    return [
        stream_consumer(
            spec,
            topic=topics.name(spec.topic),
            group=settings.consumer_group(SERVICE, spec.name),
            dlq=topics.dlq(SERVICE),
            max_records=max_records,
        )
        for spec in stream_specs(audit_validated=audit_validated)
    ] + [contracts_follower(settings)]
