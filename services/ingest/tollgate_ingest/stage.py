"""The ingest stream stage: raw → ingested, duplicates dropped, malformed messages to the DLQ."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from aiokafka.structs import ConsumerRecord
from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter

from tollgate_core.events import now_iso
from tollgate_core.kafka import OutRecord, dead_letter
from tollgate_core.telemetry import TRACEPARENT, forward_traceparent
from tollgate_ingest import SERVICE
from tollgate_ingest.claims import Claim, ClaimStore
from tollgate_ingest.core import Ingested, Malformed, Normaliser


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "tollgate_ingest_events", "Raw events by outcome", ["outcome"], registry=registry
        )
        self.http_events = Counter(
            "tollgate_ingest_http_events",
            "Events accepted over the HTTP gateway",
            ["source"],
            registry=registry,
        )


class IngestStage:
    def __init__(
        self,
        normaliser: Normaliser,
        claims: ClaimStore,
        *,
        output_topic: str,
        dlq_topic: str,
        metrics: IngestMetrics,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self._normaliser = normaliser
        self._claims = claims
        self._output = output_topic
        self._dlq = dlq_topic
        self._metrics = metrics
        self._tracer = tracer or trace.get_tracer("tollgate.ingest")

    async def __call__(self, records: list[ConsumerRecord[bytes, bytes]]) -> Sequence[OutRecord]:
        ingested_at = now_iso()
        outputs: list[OutRecord] = []
        accepted: dict[str, list[tuple[ConsumerRecord[bytes, bytes], Ingested]]] = defaultdict(list)
        for rec in records:
            try:
                event = self._normaliser.normalise(rec.value, rec.key, ingested_at)
            except Malformed as exc:
                outputs.append(dead_letter(rec, self._dlq, SERVICE, exc))
                continue
            accepted[rec.topic].append((rec, event))
        dead = len(outputs)
        fresh_count = 0
        for topic, items in accepted.items():
            wanted: list[Claim] = [(ev.event_id, rec.partition, rec.offset) for rec, ev in items]
            owned = await self._claims.claim(topic, wanted)
            for (rec, event), claim in zip(items, wanted, strict=True):
                if claim not in owned:
                    continue
                fresh_count += 1
                traceparent = forward_traceparent(
                    self._tracer, "ingest event", rec.headers, {"tollgate.event_id": event.event_id}
                )
                headers = [(TRACEPARENT, traceparent)] if traceparent else []
                outputs.append(OutRecord(self._output, event.encode(), event.key, headers))
        self._metrics.events.labels("ingested").inc(fresh_count)
        self._metrics.events.labels("duplicate").inc(len(records) - dead - fresh_count)
        self._metrics.events.labels("dead_lettered").inc(dead)
        return outputs
