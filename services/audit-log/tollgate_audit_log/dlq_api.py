"""The operator API over the services' dead-letter queues (``/v1/dlq``) and their depth on ``/metrics``.

Reading a DLQ needs role ``operator`` or ``auditor``; an operator sees each record's headers, size and
sha256 but not its value (the role sees no data records, as everywhere in this API). Redriving needs
``operator``: the records go back to their source topics with their attempt count, and an ``operations``
event naming the authenticated principal and the reason is committed in the same Kafka transaction; this
service records that topic in its own trail. See :mod:`tollgate_core.dlq`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Annotated, Any

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field

from tollgate_audit_log.access import ALLOWED, Action, sees_payloads
from tollgate_audit_log.api import require
from tollgate_core.apikeys import Principal
from tollgate_core.dlq import DEPTH_EXACT_MAX_OFFSETS, DeadLetterQueues, Depth, DlqError, UnknownRecord
from tollgate_core.http import error_response, invalid
from tollgate_core.limits import TEXT_PATTERN
from tollgate_core.operations import MAX_RECORDS
from tollgate_core.topics import SERVICES

log = logging.getLogger(__name__)

ServiceName = Annotated[str, Path(description="The service whose DLQ: " + ", ".join(SERVICES) + ".")]


class DlqMetrics(Collector):
    """DLQ depth and oldest pending age per service, from the last refresh (ages computed at scrape)."""

    def __init__(self, queues: DeadLetterQueues) -> None:
        self.queues = queues
        self.depths: dict[str, Depth] = {}
        self.redriven: dict[str, int] = {}
        self.refreshed_at = 0.0
        self.refresh_failures = 0

    async def refresh(self) -> None:
        for service in SERVICES:
            try:
                self.depths[service] = await self.queues.depth(service)
            except (KafkaError, DlqError, TimeoutError) as exc:
                self.refresh_failures += 1
                log.warning("dlq.%s: depth not read: %s", service, exc)
        self.refreshed_at = time.time()

    async def run(self, every_s: float) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(every_s)

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "tollgate_dlq_depth",
            "Pending records in the service's DLQ (not yet redriven); beyond "
            f"{DEPTH_EXACT_MAX_OFFSETS} pending offsets, the offset span (an upper bound)",
            labels=["service"],
        )
        age = GaugeMetricFamily(
            "tollgate_dlq_oldest_age_seconds",
            "Age of the oldest pending record in the service's DLQ (0 when empty)",
            labels=["service"],
        )
        for service, d in sorted(self.depths.items()):
            depth.add_metric([service], d.pending)
            age.add_metric([service], d.oldest_age_s() or 0.0)
        redriven = CounterMetricFamily(
            "tollgate_dlq_redriven",
            "Records redriven from the service's DLQ by this replica",
            labels=["service"],
        )
        for service, n in sorted(self.redriven.items()):
            redriven.add_metric([service], n)
        refreshed = GaugeMetricFamily(
            "tollgate_dlq_refreshed_at_seconds", "When the DLQ figures were last read (Unix time)"
        )
        refreshed.add_metric([], self.refreshed_at)
        failures = CounterMetricFamily("tollgate_dlq_refresh_failures", "DLQ depth reads that failed")
        failures.add_metric([], self.refresh_failures)
        yield from (depth, age, redriven, refreshed, failures)


class RedriveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        min_length=1, max_length=1000, pattern=TEXT_PATTERN, description="Why: recorded in the audit trail."
    )
    partition: int | None = Field(None, ge=0, description="Only this DLQ partition.")
    offset: int | None = Field(None, ge=0, description="Only the record at this offset (needs partition).")
    limit: int = Field(1000, ge=1, le=MAX_RECORDS, description="At most this many pending records.")


def _not_found(exc: DlqError) -> HTTPException:
    """404 for what does not exist; otherwise a 422 naming the parameter, shaped like every other 422."""
    if isinstance(exc, UnknownRecord):
        return HTTPException(404, str(exc))
    return invalid(exc.location, exc.name, str(exc))


NOT_FOUND: dict[int | str, dict[str, Any]] = {404: error_response("No such DLQ record")}


def build_dlq_router() -> APIRouter:
    router = APIRouter(prefix="/v1/dlq", tags=["dead letters"])

    def queues(request: Request) -> DeadLetterQueues:
        return request.app.state.dlq  # type: ignore[no-any-return]

    @router.get("", summary="Every service's DLQ: pending records, oldest pending, cursor")
    async def overview(
        request: Request, who: Annotated[Principal, Depends(require(Action.DLQ_READ))]
    ) -> list[dict[str, Any]]:
        out = []
        for service in SERVICES:
            try:
                d = await queues(request).depth(service)
            except (KafkaError, TimeoutError) as exc:
                raise HTTPException(503, f"Kafka: {exc}") from None
            out.append(
                {
                    "service": service,
                    "topic": queues(request).topics.dlq(service),
                    "pending": d.pending,
                    "pending_exact": d.exact,
                    "oldest_age_s": d.oldest_age_s(),
                    "cursor": d.cursor,
                    "end": d.end,
                }
            )
        return out

    @router.get(
        "/{service}", summary="Records of one DLQ: pending ones, or every retained one", responses=NOT_FOUND
    )
    async def records(
        request: Request,
        service: ServiceName,
        who: Annotated[Principal, Depends(require(Action.DLQ_READ))],
        limit: Annotated[int, Query(ge=1, le=MAX_RECORDS)] = 100,
        partition: Annotated[int | None, Query(ge=0)] = None,
        everything: Annotated[bool, Query(alias="all", description="Also records already redriven.")] = False,
    ) -> list[dict[str, Any]]:
        try:
            found = await queues(request).pending(
                service, limit=limit, partition=partition, everything=everything
            )
        except DlqError as exc:
            raise _not_found(exc) from None
        return [r.describe(with_value=False) for r in found]

    @router.get(
        "/{service}/{partition}/{offset}", summary="One DLQ record with its headers", responses=NOT_FOUND
    )
    async def show(
        request: Request,
        service: ServiceName,
        partition: Annotated[int, Path(ge=0)],
        offset: Annotated[int, Path(ge=0)],
        who: Annotated[Principal, Depends(require(Action.DLQ_READ))],
    ) -> dict[str, Any]:
        try:
            record = await queues(request).get(service, partition, offset)
        except DlqError as exc:
            raise _not_found(exc) from None
        return record.describe(with_value=sees_payloads(who))

    @router.post(
        "/{service}/redrive",
        summary="Send pending records (or one) back to their source topics; recorded in the audit trail",
        responses=NOT_FOUND,
    )
    async def redrive(
        request: Request,
        service: ServiceName,
        body: RedriveIn,
        who: Annotated[Principal, Depends(require(Action.DLQ_REDRIVE))],
    ) -> dict[str, Any]:
        try:
            done = await queues(request).redrive(
                service,
                actor=who.name,
                actor_role=min(who.roles & ALLOWED[Action.DLQ_REDRIVE]),  # the role that allows it
                reason=body.reason,
                partition=body.partition,
                offset=body.offset,
                limit=body.limit,
            )
        except DlqError as exc:
            raise _not_found(exc) from None
        metrics: DlqMetrics = request.app.state.dlq_metrics
        metrics.redriven[service] = metrics.redriven.get(service, 0) + len(done.records)
        return {
            "redriven": len(done.records),
            "operation_event_id": done.event_id if done.records else None,
            "cursor": done.cursor,
            "records": [r.describe(with_value=False) for r in done.records],
        }

    return router
