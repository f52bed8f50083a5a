"""Following the registry: ``models.lifecycle`` folded into what should serve, per model.

Every lifecycle event states what serves after it (``production_version``, ``staging_version``,
``canary_weight``, ``shadow``), and the event of each version carries its artifact. Folding the topic from
its beginning therefore gives the current decision for every model, whatever the scorer missed.

It runs on the consumer runtime as a compacted follower (spec: ``tollgate_scorer.consumers.lifecycle``): no
group, nothing committed; on start it is assigned every partition, reads from the beginning up to the end
offsets it saw at start (read_committed), applies the final state of each model once (intermediate versions
are never loaded), and only then reports itself caught up; after that it follows new events as they come. A
restarted scorer thus serves the right versions from its first request. A record that is not a lifecycle
event is dead-lettered to the scorer's DLQ with headers (the fold goes on without it).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from tollgate_core.kafka import TransientError
from tollgate_core.lifecycle import LifecycleEvent, LifecyclePayload
from tollgate_core.runtime import CompactedFollower, ConsumerSpec, build_follower
from tollgate_core.settings import ServiceSettings

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
    """The lifecycle fold on a :class:`~tollgate_core.runtime.CompactedFollower` built from ``spec``."""

    def __init__(
        self,
        *,
        spec: ConsumerSpec,
        settings: ServiceSettings,
        apply: ApplyRoute,
        client_id: str | None = None,
        registry: CollectorRegistry | None = None,
        **factories: Any,
    ) -> None:
        self.topic = spec.topics[0]
        self.state = LifecycleState()
        self._apply = apply
        self._pending: dict[str, DesiredRoute] = {}  # changed routes not applied yet, per model
        self.consumer: CompactedFollower = build_follower(
            spec.bind(self._fold_batch),
            settings,
            client_id=client_id,
            registry=registry,
            on_caught_up=self._apply_pending,
            **factories,
        )

    @property
    def caught_up(self) -> bool:
        return self.consumer.caught_up

    @property
    def events(self) -> int:
        """Records read (dead-lettered ones included)."""
        return self.consumer.stats.consumed

    @property
    def invalid(self) -> int:
        """Records that were not lifecycle events (dead-lettered)."""
        return self.consumer.stats.dead_lettered

    @property
    def healthy(self) -> bool:
        return self.consumer.healthy

    async def start(self) -> None:
        """Connect, read the topic from the beginning to its current end and apply the result."""
        await self.consumer.start()
        await self.consumer.catch_up()
        log.info("lifecycle: caught up on %d events, %d models", self.events, len(self.state.desired))

    async def run(self) -> None:
        """Follow new events; within a fetched batch only each model's last state is applied."""
        await self.consumer.run()

    async def stop(self) -> None:
        await self.consumer.stop()

    async def _fold_batch(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Fold a batch (every record parsed first: one that is not a lifecycle event raises before anything
        is folded, and the runtime isolates and dead-letters it); once caught up, apply what changed."""
        events = [LifecycleEvent.model_validate_json(record.value or b"") for record in records]
        for event in events:
            route = self.state.apply(event.payload)
            if route is not None:
                self._pending[route.model] = route
        if self.consumer.caught_up:
            await self._apply_pending()

    async def _apply_pending(self) -> None:
        """Apply each model's newest desired route once; what fails stays pending and is retried."""
        for model in list(self._pending):
            route = self._pending[model]
            try:
                await self._apply(route)
            except Exception as exc:  # the record is fine; serving it failed: retried, never dead-lettered
                raise TransientError(f"applying {model}'s route failed: {exc!r}") from exc
            if self._pending.get(model) is route:
                del self._pending[model]
