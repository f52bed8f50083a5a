"""Following the registry: ``models.lifecycle`` folded into what should serve, per model.

Every lifecycle event states what serves after it (``production_version``, ``staging_version``,
``canary_weight``, ``shadow``), and the event of each version carries its artifact. Folding the topic from
its beginning therefore gives the current decision for every model, whatever the scorer missed.

The consumer has no group and commits nothing: on start it is assigned every partition, reads from the
beginning up to the end offsets it saw at start (read_committed), applies the final state of each model
once (intermediate versions are never loaded), and only then reports itself caught up; after that it
follows new events as they come. A restarted scorer thus serves the right versions from its first request.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from tollgate_core.kafka_auth import kafka_security
from tollgate_core.lifecycle import LifecycleEvent, LifecyclePayload

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionRef:
    """A version as the scorer needs it: where its artifact is and what it promises."""

    model: str
    version: str
    digest: str
    contract: str
    task: str


@dataclass(frozen=True)
class DesiredRoute:
    model: str
    production: VersionRef | None
    staging: VersionRef | None
    canary_weight: float
    shadow: bool


class LifecycleState:
    """The fold: every version seen, and the desired route per model."""

    def __init__(self) -> None:
        self._versions: dict[tuple[str, str], VersionRef] = {}
        self.desired: dict[str, DesiredRoute] = {}

    def apply(self, payload: LifecyclePayload) -> DesiredRoute | None:
        """Fold one event; the model's new desired route when it changed, else None."""
        model = payload.model
        self._versions[(model, payload.version)] = VersionRef(
            model, payload.version, payload.artifact.digest, payload.contract, payload.task
        )
        production = self._ref(model, payload.production_version)
        staging = self._ref(model, payload.staging_version)
        route = DesiredRoute(
            model=model,
            production=production,
            staging=staging,
            canary_weight=(payload.canary_weight or 0.0) if staging is not None else 0.0,
            shadow=payload.shadow and staging is not None,
        )
        if self.desired.get(model) == route:
            return None
        self.desired[model] = route
        return route

    def _ref(self, model: str, version: str | None) -> VersionRef | None:
        if version is None:
            return None
        ref = self._versions.get((model, version))
        if ref is None:
            log.error(
                "lifecycle: %s version %s serves, but no event of it carried its artifact", model, version
            )
        return ref


ApplyRoute = Callable[[DesiredRoute], Awaitable[None]]


class LifecycleFollower:
    def __init__(self, *, bootstrap: str, topic: str, client_id: str, apply: ApplyRoute) -> None:
        self.topic = topic
        self.state = LifecycleState()
        self.caught_up = False
        self.events = 0
        self.invalid = 0
        self._apply = apply
        self._consumer = AIOKafkaConsumer(
            topic,  # without a group, a subscription is assigned every partition of the topic
            **kafka_security(),
            bootstrap_servers=bootstrap,
            client_id=client_id,
            group_id=None,  # no group: every replica reads everything, nothing is committed
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )

    async def start(self) -> None:
        """Connect, read the topic from the beginning to its current end and apply the result."""
        consumer = self._consumer
        await consumer.start()
        assigned = sorted(consumer.assignment())
        if not assigned:
            await consumer.stop()
            raise RuntimeError(f"topic {self.topic} does not exist (python -m tollgate_core.topics apply)")
        await consumer.seek_to_beginning(*assigned)
        end = await consumer.end_offsets(assigned)
        changed: dict[str, DesiredRoute] = {}

        async def behind() -> bool:
            for tp in assigned:
                if await consumer.position(tp) < end[tp]:
                    return True
            return False

        while await behind():
            self._fold_batch(await consumer.getmany(timeout_ms=500), changed)
        for route in changed.values():
            await self._apply(route)
        self.caught_up = True
        log.info("lifecycle: caught up on %d events, %d models", self.events, len(self.state.desired))

    async def run(self) -> None:
        """Follow new events; within a fetched batch only each model's last state is applied."""
        while True:
            changed: dict[str, DesiredRoute] = {}
            self._fold_batch(await self._consumer.getmany(timeout_ms=1000), changed)
            for route in changed.values():
                await self._apply(route)

    def _fold_batch(
        self, batch: Mapping[Any, list[ConsumerRecord[bytes, bytes]]], changed: dict[str, DesiredRoute]
    ) -> None:
        """Fold a fetched batch into the desired state; ``changed`` keeps each touched model's last route."""
        for records in batch.values():
            for record in records:
                route = self._fold(record)
                if route is not None:
                    changed[route.model] = route

    async def stop(self) -> None:
        await self._consumer.stop()

    def _fold(self, record: ConsumerRecord[bytes, bytes]) -> DesiredRoute | None:
        self.events += 1
        try:
            event = LifecycleEvent.model_validate_json(record.value or b"")
        except ValidationError as exc:
            self.invalid += 1
            log.error(
                "lifecycle: offset %d of %s is not a lifecycle event, skipped: %s",
                record.offset,
                record.topic,
                str(exc)[:500],
            )
            return None
        return self.state.apply(event.payload)
