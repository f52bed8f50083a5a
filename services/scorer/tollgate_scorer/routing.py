"""Which version answers: champion, a sticky weighted canary, and shadow scoring.

A :class:`ModelRoute` is one immutable decision per model: the production and staging versions (loaded
:class:`~tollgate_scorer.model.ServingModel` objects), the canary weight and the shadow flag. The
:class:`ModelTable` maps model names to routes; a promotion replaces one route by one reference
assignment, so a request holds on to the route (and the models) it started with and nothing it uses
changes under it.

Canary routing is sticky: an entity's bucket is ``blake2b(model, entity id) mod 10,000`` and buckets below
``weight * 10,000`` go to the staging version. The same entity always lands on the same side, and raising
the weight only moves entities from champion to canary, never back. Hashing the model name in picks
different entities for the canaries of different models. Without an entity id, the request id is hashed
instead: the split still holds, stickiness cannot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from tollgate_core.scoring import Route
from tollgate_scorer.model import ServingModel

BUCKETS = 10_000


def bucket(model: str, key: str) -> int:
    """Stable bucket in [0, 10,000) of an entity (or request) id for one model."""
    digest = hashlib.blake2b(f"{model}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


@dataclass(frozen=True, eq=False)
class ModelRoute:
    name: str
    production: ServingModel | None
    staging: ServingModel | None = None
    canary_weight: float = 0.0
    shadow: bool = False
    canary_buckets: int = field(init=False)

    def __post_init__(self) -> None:
        live_canary = self.staging is not None and not self.shadow
        object.__setattr__(self, "canary_buckets", round(self.canary_weight * BUCKETS) if live_canary else 0)

    @property
    def shadow_model(self) -> ServingModel | None:
        return self.staging if self.shadow else None

    def pick(self, key: str) -> tuple[ServingModel, Route] | None:
        """The version that answers for this entity (or request) id, and why; None when none serves."""
        production = self.production
        if production is None:
            if self.staging is not None and not self.shadow:
                return self.staging, Route.CANARY
            return None
        if self.canary_buckets and bucket(self.name, key) < self.canary_buckets:
            assert self.staging is not None
            return self.staging, Route.CANARY
        return production, Route.CHAMPION

    def version(self, version: str) -> ServingModel | None:
        """A served version by its id (for clients that name one explicitly)."""
        for model in (self.production, self.staging):
            if model is not None and model.version == version:
                return model
        return None

    def models(self) -> list[ServingModel]:
        return [m for m in (self.production, self.staging) if m is not None]


class ModelTable:
    """Model name → current route. Writes replace the whole mapping (copy on write), reads never lock."""

    def __init__(self) -> None:
        self._routes: dict[str, ModelRoute] = {}

    def get(self, name: str) -> ModelRoute | None:
        return self._routes.get(name)

    def set(self, route: ModelRoute) -> None:
        self._routes = {**self._routes, route.name: route}

    def remove(self, name: str) -> None:
        self._routes = {k: v for k, v in self._routes.items() if k != name}

    def __iter__(self) -> Iterator[ModelRoute]:
        return iter(list(self._routes.values()))

    def __len__(self) -> int:
        return len(self._routes)
