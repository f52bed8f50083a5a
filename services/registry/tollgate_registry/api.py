"""The registry's HTTP API (FastAPI, served with its OpenAPI document): list models and versions, show a
version with its gates and lineage, say what serves, and promote, approve, reject or roll back.

The handlers only translate: request → :class:`~tollgate_registry.core.ModelRegistry` call → response model.
Errors: 404 for an unknown model or version, 409 for a transition the state machine refuses (the message
says from which stage to which and why), 422 for a body that does not validate.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from tollgate_core.lifecycle import Artifact, GateResult, Lineage, Parity, Stage, Transition
from tollgate_core.models import Gates, Rollout
from tollgate_registry.core import (
    ActionResult,
    ModelRegistry,
    ModelView,
    UnknownModel,
    UnknownVersion,
    staging_traffic,
)
from tollgate_registry.ports import VersionDetail, VersionRecord
from tollgate_registry.state import IllegalTransition

Text = Field(min_length=1, max_length=2000)
Name = Field(min_length=1, max_length=200)


class Problem(BaseModel):
    detail: str


class TransitionOut(BaseModel):
    version: str
    transition: Transition
    from_stage: Stage | None
    to_stage: Stage
    actor: str = Field(description="Who or what made the change: registry, canary, or an operator's name.")
    reason: str
    at: datetime
    event_id: uuid.UUID = Field(description="Id of the models.lifecycle event that announced it.")


class VersionSummary(BaseModel):
    model: str
    version: str
    stage: Stage
    metrics: dict[str, float]
    gates_passed: bool
    artifact_digest: str
    registered_at: datetime
    stage_changed_at: datetime
    canary_until: datetime | None = Field(None, description="When a canary staging version is promoted.")


class ReferenceSummary(BaseModel):
    contract: str
    row_count: int
    features: list[str]
    segment_field: str | None
    segment_metrics: dict[str, dict[str, float]]
    fairness_gap: dict[str, float]
    prediction: dict[str, Any] = Field(description="Mean, std and quantiles of the training-time scores.")


class Approval(BaseModel):
    by: str
    at: datetime
    reason: str


class VersionOut(VersionSummary):
    task: str
    contract: str
    run_id: str
    trained_at: datetime
    offered: bool
    artifact: Artifact
    gates: list[GateResult] = Field(description="Every gate's result, in evaluation order.")
    parity: Parity
    lineage: Lineage
    reference: ReferenceSummary
    timings_s: dict[str, float]
    candidate_event_id: uuid.UUID
    approval: Approval | None = Field(None, description="Who approved it into production, when and why.")
    transitions: list[TransitionOut]


class ModelSummary(BaseModel):
    model: str
    description: str
    contract: str | None
    in_catalog: bool
    rollout: Rollout | None
    production_version: str | None
    staging_version: str | None
    versions: int


class ModelOut(ModelSummary):
    gates: Gates | None
    stages: dict[str, int] = Field(description="Number of versions per stage.")
    rollback_target: str | None = Field(description="The version a rollback would restore.")


class ServingVersion(BaseModel):
    version: str
    artifact: Artifact
    contract: str
    task: str
    metrics: dict[str, float]
    since: datetime


class ServingOut(BaseModel):
    """What serves now: the production version and the staging version with its share of traffic."""

    model: str
    production: ServingVersion | None
    staging: ServingVersion | None
    canary_weight: float | None
    shadow: bool
    canary_until: datetime | None


class ActionOut(BaseModel):
    model: str
    changes: list[TransitionOut] = Field(description="The state changes made, in publication order.")
    production_version: str | None
    staging_version: str | None


class PromoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: Literal["staging", "production"]
    reason: str = Text
    by: str = Field("operator", min_length=1, max_length=200)


class ApproveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: str = Name
    reason: str = Text


class RejectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Text
    by: str = Field("operator", min_length=1, max_length=200)


class RollbackIn(RejectIn):
    pass


def _transition(t: Any, at: datetime, event_id: uuid.UUID) -> TransitionOut:
    """A stored transition or a change just applied (same fields), with when and which event carried it."""
    return TransitionOut(
        version=t.version,
        transition=t.transition,
        from_stage=t.from_stage,
        to_stage=t.to_stage,
        actor=t.actor,
        reason=t.reason,
        at=at,
        event_id=event_id,
    )


def _summary(r: VersionRecord) -> VersionSummary:
    return VersionSummary(
        model=r.model,
        version=r.version,
        stage=r.stage,
        metrics=r.metrics,
        gates_passed=r.gates_passed,
        artifact_digest=r.artifact.digest,
        registered_at=r.registered_at,
        stage_changed_at=r.stage_changed_at,
        canary_until=r.state.canary_until,
    )


def _version_out(d: VersionDetail) -> VersionOut:
    c = d.candidate
    ref = c.reference
    approvals = [t for t in d.transitions if t.transition is Transition.APPROVED]
    approval = (
        None
        if not approvals
        else Approval(by=approvals[-1].actor, at=approvals[-1].at, reason=approvals[-1].reason)
    )
    return VersionOut(
        **_summary(d.record).model_dump(),
        task=c.task,
        contract=d.record.contract,
        run_id=c.run_id,
        trained_at=c.trained_at,
        offered=c.offered,
        artifact=c.artifact,
        gates=d.gates,
        parity=c.parity,
        lineage=c.lineage,
        reference=ReferenceSummary(
            contract=ref.contract,
            row_count=ref.row_count,
            features=sorted(ref.features),
            segment_field=ref.segment_field,
            segment_metrics=ref.segment_metrics,
            fairness_gap=ref.fairness_gap,
            prediction={
                "mean": ref.prediction.mean,
                "std": ref.prediction.std,
                "quantiles": ref.prediction.quantiles,
            },
        ),
        timings_s=c.timings_s,
        candidate_event_id=d.candidate_event_id,
        approval=approval,
        transitions=[_transition(t, t.at, t.event_id) for t in d.transitions],
    )


def _model_summary(view: ModelView) -> ModelSummary:
    production, staging = view.find(Stage.PRODUCTION), view.find(Stage.STAGING)
    spec = view.spec
    return ModelSummary(
        model=view.model,
        description=spec.description if spec else "",
        contract=spec.contract if spec else None,
        in_catalog=spec is not None,
        rollout=spec.rollout if spec else None,
        production_version=production.version if production else None,
        staging_version=staging.version if staging else None,
        versions=len(view.versions),
    )


def _serving(record: VersionRecord | None) -> ServingVersion | None:
    if record is None:
        return None
    return ServingVersion(
        version=record.version,
        artifact=record.artifact,
        contract=record.contract,
        task=record.task,
        metrics=record.metrics,
        since=record.stage_changed_at,
    )


def _action(result: ActionResult) -> ActionOut:
    return ActionOut(
        model=result.model,
        changes=[_transition(a.change, a.event.occurred_at, a.event.event_id) for a in result.applied],
        production_version=result.production_version,
        staging_version=result.staging_version,
    )


NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "Unknown model or version"}
}
CONFLICT: dict[int | str, dict[str, Any]] = {
    **NOT_FOUND,
    409: {"model": Problem, "description": "Transition not allowed from the current stage"},
}


def registry_router(core: ModelRegistry) -> APIRouter:
    router = APIRouter(prefix="/v1/models", tags=["models"])

    @router.get("", summary="Every model: in the catalog or with registered versions")
    async def list_models() -> list[ModelSummary]:
        return [_model_summary(await core.model(name)) for name in await core.model_names()]

    @router.get("/{model}", summary="A model: its gates, rollout, serving versions", responses=NOT_FOUND)
    async def show_model(model: str) -> ModelOut:
        view = await core.model(model)
        stages: dict[str, int] = {}
        for r in view.versions:
            stages[r.stage.value] = stages.get(r.stage.value, 0) + 1
        return ModelOut(
            **_model_summary(view).model_dump(),
            gates=view.spec.gates if view.spec else None,
            stages=stages,
            rollback_target=view.rollback_target,
        )

    @router.get("/{model}/versions", summary="A model's versions, oldest first", responses=NOT_FOUND)
    async def list_versions(model: str) -> list[VersionSummary]:
        return [_summary(r) for r in (await core.model(model)).versions]

    @router.get(
        "/{model}/versions/{version}",
        responses=NOT_FOUND,
        summary="A version: metrics, every gate's result, parity, lineage, reference, transitions",
    )
    async def show_version(model: str, version: str) -> VersionOut:
        return _version_out(await core.version(model, version))

    @router.get(
        "/{model}/production",
        responses=NOT_FOUND,
        summary="What serves now: production, and staging with its canary weight or shadow flag",
    )
    async def serving(model: str) -> ServingOut:
        view = await core.model(model)
        staging = view.find(Stage.STAGING)
        canary_weight, shadow = staging_traffic(core.rollout(model), staging is not None)
        return ServingOut(
            model=model,
            production=_serving(view.find(Stage.PRODUCTION)),
            staging=_serving(staging),
            canary_weight=canary_weight,
            shadow=shadow,
            canary_until=staging.state.canary_until if staging else None,
        )

    @router.post(
        "/{model}/versions/{version}/promote",
        responses=CONFLICT,
        summary="Promote a version to staging or production (production: canary-mode models only)",
    )
    async def promote(model: str, version: str, body: PromoteIn) -> ActionOut:
        return _action(await core.promote(model, version, Stage(body.to), body.by, body.reason))

    @router.post(
        "/{model}/versions/{version}/approve",
        responses=CONFLICT,
        summary="Approve a staging version into production, recording who, when and why",
    )
    async def approve(model: str, version: str, body: ApproveIn) -> ActionOut:
        return _action(await core.approve(model, version, body.by, body.reason))

    @router.post(
        "/{model}/versions/{version}/reject",
        responses=CONFLICT,
        summary="Reject a candidate or staging version",
    )
    async def reject(model: str, version: str, body: RejectIn) -> ActionOut:
        return _action(await core.reject(model, version, body.by, body.reason))

    @router.post(
        "/{model}/rollback",
        responses=CONFLICT,
        summary="Return production to the previous production version, with the reason recorded",
    )
    async def rollback(model: str, body: RollbackIn) -> ActionOut:
        return _action(await core.rollback(model, body.by, body.reason))

    return router


def install(app: FastAPI, core: ModelRegistry) -> None:
    """Mount the API on ``app`` and map the core's errors to HTTP statuses."""

    async def not_found(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    async def conflict(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    app.add_exception_handler(UnknownModel, not_found)
    app.add_exception_handler(UnknownVersion, not_found)
    app.add_exception_handler(IllegalTransition, conflict)
    app.include_router(registry_router(core))
