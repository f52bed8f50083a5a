"""Turning desired routes into served ones: load, verify, warm up, then swap in one assignment.

Loading runs in a worker thread (reading and hashing the artifact, building the onnxruntime session,
warm-up), so requests keep being served by the current route meanwhile; only the finished
:class:`~tollgate_scorer.routing.ModelRoute` is put into the table. Requests that already hold the old route
finish on the old sessions, which are freed when the last of them lets go.

A version that cannot be loaded (artifact missing or not matching its digest, not ONNX, not matching its
contract) is never served: the current production keeps serving when a new production fails, a failed
staging version just means no canary or shadow. The failure is logged, counted and shown on
``/v2/models/{name}/ready`` until a later change succeeds.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from tollgate_core.artifacts import ArtifactError, ArtifactStore
from tollgate_core.contracts import ContractRegistry
from tollgate_scorer.explain import DEFAULT_PERMUTATIONS
from tollgate_scorer.follower import DesiredRoute, VersionRef
from tollgate_scorer.model import ModelLoadError, ServingModel, SessionConfig, load_serving_model
from tollgate_scorer.routing import ModelRoute, ModelTable

log = logging.getLogger(__name__)


class ModelManager:
    def __init__(
        self,
        table: ModelTable,
        store: ArtifactStore,
        contracts: ContractRegistry,
        config: SessionConfig,
        pii_key: bytes,
        warmup_rounds: int = 20,
        explain_permutations: int = DEFAULT_PERMUTATIONS,
    ) -> None:
        self.table = table
        self._store = store
        self._contracts = contracts
        self._config = config
        self._pii_key = pii_key
        self._warmup_rounds = warmup_rounds
        self._explain_permutations = explain_permutations
        self._lock = asyncio.Lock()
        self.errors: dict[str, str] = {}
        self.loads: defaultdict[str, int] = defaultdict(int)
        self.load_failures: defaultdict[str, int] = defaultdict(int)
        self.swaps: defaultdict[str, int] = defaultdict(int)
        self._desired: dict[str, DesiredRoute] = {}

    async def contract_changed(self, schema_id: str) -> None:
        """A contract was registered live: reload the versions read against it (the current ones serve
        until the reloaded ones are swapped in)."""
        for desired in list(self._desired.values()):
            route = self.table.get(desired.model)
            served = route.models() if route is not None else []
            refs = [ref for ref in (desired.production, desired.staging) if ref is not None]
            if any(m.contract_id == schema_id for m in served) or any(r.contract == schema_id for r in refs):
                await self.apply(desired)

    async def apply(self, desired: DesiredRoute) -> None:
        async with self._lock:
            self._desired[desired.model] = desired
            current = self.table.get(desired.model)
            production = await self._model(desired.production, current)
            if desired.production is not None and production is None and current is not None:
                production = current.production  # keep serving what worked
            staging = await self._model(desired.staging, current)
            route = ModelRoute(
                name=desired.model,
                production=production,
                staging=staging,
                canary_weight=desired.canary_weight if staging is not None else 0.0,
                shadow=desired.shadow and staging is not None,
            )
            if current is None and desired.production is None and desired.staging is None:
                return  # e.g. a first version rejected by the registry: nothing to serve, nothing to say
            self.table.set(route)
            self.swaps[desired.model] += 1
            if not self._failed(desired, production, staging):
                self.errors.pop(desired.model, None)
            log.info(
                "serving %s: production %s, staging %s%s",
                desired.model,
                production.version if production else "-",
                staging.version if staging else "-",
                (" (shadow)" if route.shadow else f" (canary {route.canary_weight:.0%})") if staging else "",
            )

    def _failed(
        self, desired: DesiredRoute, production: ServingModel | None, staging: ServingModel | None
    ) -> bool:
        wanted = [(desired.production, production), (desired.staging, staging)]
        return any(
            ref is not None and (model is None or model.version != ref.version) for ref, model in wanted
        )

    async def _model(self, ref: VersionRef | None, current: ModelRoute | None) -> ServingModel | None:
        if ref is None:
            return None
        if current is not None:
            for model in current.models():
                if (
                    model.version == ref.version
                    and model.digest == ref.digest
                    and self._contracts.get(model.contract_id) is model.contract
                ):
                    return model  # same artifact, read against the contract in force
        try:
            model = await asyncio.to_thread(self._load, ref)
        except (ArtifactError, ModelLoadError, ValueError, OSError) as exc:
            self.load_failures[ref.model] += 1
            self.errors[ref.model] = f"version {ref.version}: {exc}"
            log.error("cannot serve %s version %s: %s", ref.model, ref.version, exc)
            return None
        self.loads[ref.model] += 1
        return model

    def _load(self, ref: VersionRef) -> ServingModel:
        data = self._store.get(ref.digest)  # recomputes the sha256: a changed file is refused here
        return load_serving_model(
            ref.model,
            ref.version,
            ref.digest,
            data,
            contracts=self._contracts,
            expected_contract=ref.contract,
            config=self._config,
            pii_key=self._pii_key,
            warmup_rounds=self._warmup_rounds,
            explain_permutations=self._explain_permutations,
        )
