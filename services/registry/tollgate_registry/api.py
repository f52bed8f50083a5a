"""The registry's HTTP API (FastAPI, served with its OpenAPI document): list models and versions, show a
version with its gates and lineage, say what serves, and promote, approve, reject or roll back.

The handlers only translate: request → :class:`~tollgate_registry.core.ModelRegistry` call → response model.
Errors: 404 for an unknown model or version, 409 for a transition the state machine refuses (the message
says from which stage to which and why), 422 for a body that does not validate.

Who may call what (API keys, ``tollgate_core.auth``): every read needs one of the read-only roles
(``viewer``, ``data-scientist``, ``approver``, ``operator``, ``auditor``, ``compliance-reader``); promote,
approve and reject need ``approver``; rollback needs ``operator`` or ``approver``. The actor recorded for a
change is the key's principal; a ``by`` field in a body is accepted for old clients and ignored. Every
change needs a reason.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from tollgate_core.apikeys import APPROVER, DATA_SCIENTIST, OPERATOR, Principal
from tollgate_core.auth import READERS, require
from tollgate_core.lifecycle import (
    Artifact,
    EvaluationReport,
    Experiment,
    GateResult,
    Lineage,
    Parity,
    Stage,
    Submission,
    Transition,
    evaluation_digest,
)
from tollgate_core.limits import TEXT_PATTERN
from tollgate_core.models import Gates, Rollout
from tollgate_core.registrations import CONTRACT, registration_key
from tollgate_registry.compare import Comparison, compare_versions
from tollgate_registry.core import (
    ActionResult,
    ModelRegistry,
    ModelView,
    ReportMismatch,
    UnknownModel,
    UnknownVersion,
    staging_traffic,
)
from tollgate_registry.ports import VersionDetail, VersionRecord
from tollgate_registry.registrar import BreakingChange, InvalidDocument, Registered, Registrar
from tollgate_registry.state import IllegalTransition
from tollgate_registry.tiers import TierForbidden, gate_report_digest

Text = Field(min_length=1, max_length=2000, pattern=TEXT_PATTERN)


class Problem(BaseModel):
    detail: str


class TransitionOut(BaseModel):
    version: str
    transition: Transition
    from_stage: Stage | None
    to_stage: Stage
    actor: str = Field(
        description="Who or what made the change: registry, canary, or the principal of the API key used."
    )
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


class ApprovalOut(Approval):
    report_digest: str = Field(description="sha256 of the gate report approved.")


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
    experiment: Experiment | None = Field(
        None, description="The champion selection that chose this configuration: every trial."
    )
    baselines: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Holdout metrics of the simple baselines trained on the same rows."
    )
    evaluation: EvaluationReport | None = Field(
        None,
        description="The platform's evaluation on its own out-of-time holdout (metrics, per-segment fairness, "
        "calibration, parity, baselines); its sha256 is evaluation_digest, part of the gate report.",
    )
    evaluation_digest: str | None = None
    submission: Submission | None = Field(
        None, description="Who submitted the model (built outside the platform), with what they declared."
    )
    candidate_event_id: uuid.UUID
    approval: Approval | None = Field(None, description="Who approved it into production, when and why.")
    approvals: list[ApprovalOut] = Field(
        default_factory=list, description="Every approval recorded, with the digest of the report approved."
    )
    gate_report_digest: str = Field(
        description="sha256 of this version's gate report (artifact digest, metrics, gate results): what an "
        "approval approves; pass it as report_digest to approve exactly this."
    )
    transitions: list[TransitionOut]


class ModelSummary(BaseModel):
    model: str
    description: str
    contract: str | None
    in_catalog: bool
    rollout: Rollout | None
    risk_tier: str | None = Field(
        description="low: automatic canary; medium: one approver; high: two distinct approvers who did not "
        "ask for the training run."
    )
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
    approvals: list[ApprovalOut] = Field(
        default_factory=list, description="On an approval: the version's approvals so far."
    )
    approvals_required: int | None = Field(
        None, description="On an approval: how many the model's risk tier needs before production."
    )


IGNORED_BY = Field(
    None,
    max_length=200,
    description="Ignored: the actor recorded is the principal of the API key that made the request.",
    json_schema_extra={"deprecated": True},
)


class RejectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Text
    by: str | None = IGNORED_BY


class PromoteIn(RejectIn):
    to: Literal["staging", "production"]


class ApproveIn(RejectIn):
    report_digest: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="The gate_report_digest the approver reviewed; refused (409) if the version's differs.",
    )


class RollbackIn(RejectIn):
    pass


Reader = Annotated[Principal, Depends(require("read the registry", READERS))]
Approver = Annotated[Principal, Depends(require("promote, approve or reject model versions", APPROVER))]
RollbackRole = Annotated[Principal, Depends(require("roll back production", OPERATOR, APPROVER))]


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
        experiment=c.experiment,
        baselines=c.baselines,
        evaluation=c.evaluation,
        evaluation_digest=evaluation_digest(c.evaluation) if c.evaluation is not None else None,
        submission=c.submission,
        candidate_event_id=d.candidate_event_id,
        approval=approval,
        approvals=[ApprovalOut(**a.model_dump()) for a in d.approvals],
        gate_report_digest=gate_report_digest(d),
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
        risk_tier=spec.risk_tier if spec else None,
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
        approvals=[ApprovalOut(**a.model_dump()) for a in result.approvals],
        approvals_required=result.approvals_required,
    )


NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "Unknown model or version"}
}
AUTH: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "No API key, or an invalid, revoked or rotated one"},
    403: {"model": Problem, "description": "The key's roles (or the model's risk tier) do not allow this"},
}
NOT_FOUND = {**AUTH, **NOT_FOUND}
CONFLICT: dict[int | str, dict[str, Any]] = {
    **NOT_FOUND,
    409: {"model": Problem, "description": "Transition not allowed from the current stage"},
}


def registry_router(core: ModelRegistry) -> APIRouter:
    router = APIRouter(prefix="/v1/models", tags=["models"])

    @router.get("", summary="Every model: in the catalog or with registered versions", responses=AUTH)
    async def list_models(_: Reader) -> list[ModelSummary]:
        return [_model_summary(await core.model(name)) for name in await core.model_names()]

    @router.get("/{model}", summary="A model: its gates, rollout, serving versions", responses=NOT_FOUND)
    async def show_model(model: str, _: Reader) -> ModelOut:
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
    async def list_versions(model: str, _: Reader) -> list[VersionSummary]:
        return [_summary(r) for r in (await core.model(model)).versions]

    @router.get(
        "/{model}/versions/{version}",
        responses=NOT_FOUND,
        summary="A version: metrics, every gate's result, parity, lineage, reference, transitions",
    )
    async def show_version(model: str, version: str, _: Reader) -> VersionOut:
        return _version_out(await core.version(model, version))

    @router.get(
        "/{model}/compare",
        responses=NOT_FOUND,
        summary="Two versions side by side: metrics, gates, training data and parameters",
    )
    async def compare(
        model: str,
        _: Reader,
        a: Annotated[str, Query(description="The first version.", max_length=64)],
        b: Annotated[str, Query(description="The second version.", max_length=64)],
    ) -> Comparison:
        return compare_versions(await core.version(model, a), await core.version(model, b))

    @router.get(
        "/{model}/production",
        responses=NOT_FOUND,
        summary="What serves now: production, and staging with its canary weight or shadow flag",
    )
    async def serving(model: str, _: Reader) -> ServingOut:
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
        summary="Promote a version to staging or production (production: low-risk-tier canary-mode models "
        "only)",
    )
    async def promote(model: str, version: str, body: PromoteIn, who: Approver) -> ActionOut:
        return _action(await core.promote(model, version, Stage(body.to), who.name, body.reason))

    @router.post(
        "/{model}/versions/{version}/approve",
        responses=CONFLICT,
        summary="Approve a staging version, recording who, when, why and the gate report's digest; it enters "
        "production once its risk tier has the approvals it needs (high: two distinct approvers)",
    )
    async def approve(model: str, version: str, body: ApproveIn, who: Approver) -> ActionOut:
        return _action(await core.approve(model, version, who.name, body.reason, body.report_digest))

    @router.post(
        "/{model}/versions/{version}/reject",
        responses=CONFLICT,
        summary="Reject a candidate or staging version",
    )
    async def reject(model: str, version: str, body: RejectIn, who: Approver) -> ActionOut:
        return _action(await core.reject(model, version, who.name, body.reason))

    @router.post(
        "/{model}/rollback",
        responses=CONFLICT,
        summary="Return production to the previous production version, with the reason recorded",
    )
    async def rollback(model: str, body: RollbackIn, who: RollbackRole) -> ActionOut:
        return _action(await core.rollback(model, who.name, body.reason))

    return router


class RegistrationOut(BaseModel):
    """A registration: what is now in force on every service (within seconds, without a restart)."""

    kind: Literal["contract", "model"]
    name: str
    version: int | None = Field(None, description="The contract's version (contracts only).")
    revision: int = Field(description="How many times this key was registered, this one included.")
    digest: str = Field(description="sha256 of the document.")
    registered_by: str = Field(description="The principal of the API key that registered it.")
    registered_at: datetime
    event_id: uuid.UUID = Field(description="Id of the registrations event that publishes it.")
    created: bool = Field(
        description="False when exactly this document was registered already: nothing was published."
    )
    changes: list[str] = Field(description="How it differs from the revision or version before it.")
    warnings: list[str] = Field(description="Valid but questionable, e.g. gates unsuited to rare labels.")


class ContractOut(BaseModel):
    schema_id: str = Field(alias="schema")
    digest: str
    features: int
    registered_by: str | None = Field(description="Who registered it; null for a schemas/ seed file.")
    revision: int | None


Registrant = Annotated[
    Principal,
    Depends(require("register dataset contracts and model catalog entries", DATA_SCIENTIST)),
]
REGISTER: dict[int | str, dict[str, Any]] = {
    **AUTH,
    200: {"model": RegistrationOut, "description": "Exactly this document was registered: nothing published"},
    409: {"model": Problem, "description": "A breaking change to a contract version in force"},
}  # 422 (not a valid contract or catalog entry, every problem named) has FastAPI's validation shape
DOCUMENT = Body(
    description="The document as JSON: a dataset contract (schemas/datasets/*.yaml) or a model catalog "
    "entry (schemas/models/*.yaml).",
    media_type="application/json",
)


def _registration(result: Registered) -> RegistrationOut:
    p = result.payload
    return RegistrationOut(
        kind=p.kind,
        name=p.name,
        version=p.version,
        revision=p.revision,
        digest=p.digest,
        registered_by=p.registered_by,
        registered_at=p.registered_at,
        event_id=result.event_id,
        created=result.created,
        changes=p.changes,
        warnings=p.warnings,
    )


def registrations_router(registrar: Registrar) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["registrations"])

    def _answer(result: Registered, response: Response) -> RegistrationOut:
        """201 for a new registration (published now: the relay is woken), 200 for one already in force."""
        registrar.notify()
        response.status_code = 201 if result.created else 200
        return _registration(result)

    @router.post(
        "/contracts",
        status_code=201,
        responses=REGISTER,
        summary="Register a dataset contract version; every service applies it within seconds. A change "
        "to a version in force must keep every record it accepted valid (else 409: a new version)",
    )
    async def register_contract(
        who: Registrant, response: Response, document: Annotated[dict[str, Any], DOCUMENT]
    ) -> RegistrationOut:
        return _answer(await registrar.register_contract(document, who.name), response)

    @router.post(
        "/models",
        status_code=201,
        responses=REGISTER,
        summary="Register a model catalog entry (validated against its registered contract); the trainer, "
        "registry, scorer and monitor apply it within seconds",
    )
    async def register_model(
        who: Registrant, response: Response, document: Annotated[dict[str, Any], DOCUMENT]
    ) -> RegistrationOut:
        return _answer(await registrar.register_model(document, who.name), response)

    @router.get("/contracts", responses=AUTH, summary="Dataset contracts in force, with who registered them")
    async def list_contracts(_: Reader) -> list[ContractOut]:
        live = registrar.live
        out = []
        for c in sorted(live.contracts, key=lambda c: (c.contract, c.version)):
            reg = live.registrations.get(registration_key(CONTRACT, c.contract, c.version))
            in_force = reg is not None and reg.digest == c.digest
            out.append(
                ContractOut(
                    schema=c.schema_id,
                    digest=c.digest,
                    features=len(c.features),
                    registered_by=reg.registered_by if reg is not None and in_force else None,
                    revision=reg.revision if reg is not None and in_force else None,
                )
            )
        return out

    return router


def install(app: FastAPI, core: ModelRegistry, registrar: Registrar | None = None) -> None:
    """Mount the API on ``app`` and map the core's errors to HTTP statuses."""

    async def not_found(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    async def conflict(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    app.add_exception_handler(UnknownModel, not_found)
    app.add_exception_handler(UnknownVersion, not_found)

    async def forbidden(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    app.add_exception_handler(IllegalTransition, conflict)
    app.add_exception_handler(ReportMismatch, conflict)
    app.add_exception_handler(TierForbidden, forbidden)
    app.include_router(registry_router(core))
    if registrar is not None:

        async def invalid(_: Request, exc: Exception) -> JSONResponse:
            # FastAPI's validation shape: what the document declares for every 422.
            problem = {"loc": ["body"], "msg": str(exc), "type": "value_error"}
            return JSONResponse({"detail": [problem]}, status_code=422)

        app.add_exception_handler(InvalidDocument, invalid)
        app.add_exception_handler(BreakingChange, conflict)
        app.include_router(registrations_router(registrar))
