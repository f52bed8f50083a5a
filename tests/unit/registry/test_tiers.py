"""Risk tiers through the HTTP API (in-memory repository): what each tier needs before a version serves,
who may approve, and what an approval records."""

from __future__ import annotations

import pydantic
import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from tests.auth_support import header, memory_keys
from tests.unit.registry.candidates import candidate, candidate_event, spec
from tollgate_core.artifacts import InMemoryArtifactStore
from tollgate_core.auth import install_keys
from tollgate_core.lifecycle import CandidatePayload, Stage, Transition
from tollgate_core.models import ModelSpec
from tollgate_registry.api import install
from tollgate_registry.core import ModelRegistry
from tollgate_registry.memory import InMemoryRepository
from tollgate_registry.tiers import TierForbidden

HIGH, MEDIUM = "high-risk", "medium-risk"
VERIFIER, KEYS = memory_keys(
    dana=("data-scientist", "approver"),  # asked for the training run of version 2
    frank=("approver",),
    hana=("approver",),
    gina=("operator",),
)


def requested(payload: CandidatePayload, *by: str) -> CandidatePayload:
    lineage = payload.lineage.model_copy(update={"requested_by": list(by), "trigger": "request"})
    return payload.model_copy(update={"lineage": lineage})


def tiered_registry(
    repo: InMemoryRepository, store: InMemoryArtifactStore, *more: ModelSpec
) -> ModelRegistry:
    """The registry's core over a high-tier and a medium-tier model (both in approval mode), and ``more``."""
    specs = [spec(HIGH, risk_tier="high", mode="approval"), spec(MEDIUM, risk_tier="medium", mode="approval")]
    return ModelRegistry(
        repo, {s.model: s for s in [*specs, *more]}, store, lifecycle_schema="models.lifecycle.v1"
    )


async def world() -> tuple[AsyncClient, ModelRegistry, InMemoryRepository]:
    store = InMemoryArtifactStore()
    repo = InMemoryRepository()
    core = tiered_registry(repo, store)
    for model, approvers in ((HIGH, ("frank", "hana")), (MEDIUM, ("frank",))):
        await core.on_candidate(candidate_event(candidate("1", model=model, store=store)))
        for approver in approvers:  # the first version needs its tier's approvals too
            await core.approve(model, "1", approver, "first version reviewed")
        await core.on_candidate(
            candidate_event(requested(candidate("2", model=model, roc_auc=0.87, store=store), "dana"))
        )
    app = FastAPI()
    install_keys(app, VERIFIER)
    install(app, core)
    return AsyncClient(transport=ASGITransport(app=app), base_url="http://registry"), core, repo


async def test_high_tier_needs_two_distinct_approvers_who_did_not_ask_for_the_training() -> None:
    client, _, repo = await world()
    async with client:
        base = f"/v1/models/{HIGH}/versions/2"
        shown = (await client.get(base, headers=header(KEYS["frank"]))).json()
        assert shown["stage"] == "staging" and len(shown["gate_report_digest"]) == 64
        digest = shown["gate_report_digest"]

        promoted = await client.post(
            f"{base}/promote", json={"to": "production", "reason": "r"}, headers=header(KEYS["frank"])
        )
        assert promoted.status_code == 403
        assert promoted.json()["detail"].startswith("risk tier rule tier-needs-approval:")

        builder = await client.post(f"{base}/approve", json={"reason": "mine"}, headers=header(KEYS["dana"]))
        assert builder.status_code == 403
        assert builder.json()["detail"].startswith("risk tier rule approver-not-requester:")

        first = await client.post(
            f"{base}/approve",
            json={"reason": "holdout and fairness reviewed", "by": "hana", "report_digest": digest},
            headers=header(KEYS["frank"]),
        )
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["production_version"] == "1" and body["staging_version"] == "2"
        assert [a["by"] for a in body["approvals"]] == ["frank"] and body["approvals_required"] == 2
        # recorded and published alone: an approval event that leaves the version in staging
        [alone] = body["changes"]
        assert (alone["transition"], alone["from_stage"], alone["to_stage"], alone["actor"]) == (
            "approved",
            "staging",
            "staging",
            "frank",
        )
        [published] = [e for e in repo.published if e.payload.version == "2" and e.payload.actor == "frank"]
        assert published.payload.transition is Transition.APPROVED
        assert published.payload.to_stage.value == "staging" and published.payload.production_version == "1"
        assert [(a.by, a.report_digest) for a in published.payload.approvals] == [("frank", digest)]

        again = await client.post(f"{base}/approve", json={"reason": "twice"}, headers=header(KEYS["frank"]))
        assert again.status_code == 403
        assert again.json()["detail"].startswith("risk tier rule distinct-approvers:")

        stale = await client.post(
            f"{base}/approve", json={"reason": "r", "report_digest": "0" * 64}, headers=header(KEYS["hana"])
        )
        assert stale.status_code == 409 and digest in stale.json()["detail"]

        second = await client.post(
            f"{base}/approve", json={"reason": "second pair of eyes"}, headers=header(KEYS["hana"])
        )
        assert second.status_code == 200, second.text
        assert second.json()["production_version"] == "2"
        entered = second.json()["changes"][0]
        assert (entered["transition"], entered["actor"]) == ("approved", "hana")

        [event] = [
            e
            for e in repo.published
            if e.payload.version == "2"
            and e.payload.transition is Transition.APPROVED
            and e.payload.to_stage.value == "production"
        ]
        approvals = event.payload.approvals
        assert [(a.by, a.reason, a.report_digest) for a in approvals] == [
            ("frank", "holdout and fairness reviewed", digest),
            ("hana", "second pair of eyes", digest),
        ]
        shown = (await client.get(base, headers=header(KEYS["frank"]))).json()
        assert [a["by"] for a in shown["approvals"]] == ["frank", "hana"]

        rolled = await client.post(
            f"/v1/models/{HIGH}/rollback", json={"reason": "incident"}, headers=header(KEYS["gina"])
        )
        assert rolled.status_code == 200 and rolled.json()["production_version"] == "1"


async def test_medium_tier_needs_one_approver_and_no_promotion() -> None:
    client, _, _ = await world()
    async with client:
        base = f"/v1/models/{MEDIUM}/versions/2"
        promoted = await client.post(
            f"{base}/promote", json={"to": "production", "reason": "r"}, headers=header(KEYS["frank"])
        )
        assert promoted.status_code == 403 and "tier-needs-approval" in promoted.json()["detail"]
        approved = await client.post(f"{base}/approve", json={"reason": "ok"}, headers=header(KEYS["dana"]))
        assert approved.status_code == 200 and approved.json()["production_version"] == "2"
        assert approved.json()["approvals_required"] == 1


async def test_the_first_version_of_a_tiered_model_waits_for_its_approvals() -> None:
    """Regression: the first version went straight to production whatever the tier."""
    store = InMemoryArtifactStore()
    repo = InMemoryRepository()
    core = tiered_registry(repo, store, spec("low-risk"))
    for model in (HIGH, MEDIUM, "low-risk"):
        await core.on_candidate(candidate_event(requested(candidate("1", model=model, store=store), "dana")))
    assert (await core.version("low-risk", "1")).record.state.stage.value == "production"
    for model in (HIGH, MEDIUM):
        first = (await core.version(model, "1")).record.state
        assert first.stage.value == "staging" and first.canary_until is None
        assert not [
            e for e in repo.published if e.payload.model == model and e.payload.to_stage.value == "production"
        ]
    with pytest.raises(TierForbidden, match="tier-needs-approval"):
        await core.promote(HIGH, "1", Stage.PRODUCTION, "frank", "no")
    with pytest.raises(TierForbidden, match="approver-not-requester"):
        await core.approve(HIGH, "1", "dana", "mine")

    one = await core.approve(HIGH, "1", "frank", "reviewed")
    assert one.production_version is None and one.staging_version == "1"
    [alone] = [a.event.payload for a in one.applied]
    assert (alone.transition, alone.from_stage, alone.to_stage, alone.actor) == (
        Transition.APPROVED,
        Stage.STAGING,
        Stage.STAGING,
        "frank",
    )
    assert alone.production_version is None and [a.by for a in alone.approvals] == ["frank"]
    assert "approval 1 of 2" in alone.reason and alone.reason.endswith("reviewed")
    assert repo.published[-1].payload == alone

    two = await core.approve(HIGH, "1", "hana", "second look")
    assert two.production_version == "1"
    [entered] = [a.event.payload for a in two.applied]
    assert (entered.transition, entered.to_stage, entered.actor) == (
        Transition.APPROVED,
        Stage.PRODUCTION,
        "hana",
    )
    assert [a.by for a in entered.approvals] == ["frank", "hana"]

    medium = await core.approve(MEDIUM, "1", "frank", "ok")
    assert medium.production_version == "1"


def test_a_tier_above_low_needs_the_approval_rollout() -> None:
    with pytest.raises(pydantic.ValidationError, match="risk_tier high needs rollout mode approval"):
        spec("x-model", risk_tier="high")
    assert spec("y-model").risk_tier == "low"


def submitted(payload: CandidatePayload, by: str, *, with_pipeline: bool) -> CandidatePayload:
    """``payload`` as a data scientist's submission, with the platform's evaluation report."""
    from tollgate_core.lifecycle import EvaluationReport, Submission

    evaluation = EvaluationReport(
        holdout_rows=1000,
        holdout_fraction=0.2,
        ordered_by="arrival",
        data_hash="d" * 64,
        metrics=payload.metrics,
        parity=payload.parity if with_pipeline else None,
    )
    submission = Submission(
        submission_id="s-1",
        submitted_by=by,
        notes="built on my laptop",
        onnx_digest="a" * 64,
        sklearn_digest="b" * 64 if with_pipeline else None,
    )
    lineage = payload.lineage.model_copy(update={"requested_by": [by], "trigger": "submission"})
    return payload.model_copy(update={"lineage": lineage, "evaluation": evaluation, "submission": submission})


async def test_a_submitted_version_is_approved_by_its_evaluation_report_and_not_by_its_submitter() -> None:
    from tollgate_core.lifecycle import evaluation_digest

    client, core, _ = await world()
    store = core.store
    payload = submitted(candidate("3", model=HIGH, roc_auc=0.88, store=store), "dana", with_pipeline=False)
    await core.on_candidate(candidate_event(payload))
    async with client:
        base = f"/v1/models/{HIGH}/versions/3"
        shown = (await client.get(base, headers=header(KEYS["frank"]))).json()
        assert shown["submission"]["submitted_by"] == "dana"
        assert shown["evaluation_digest"] == evaluation_digest(payload.evaluation)  # type: ignore[arg-type]
        parity = next(g for g in shown["gates"] if g["gate"] == "parity")
        assert parity["passed"] and parity["detail"].startswith("not checked: no scikit-learn pipeline")

        # What is approved covers the evaluation report: another report, another digest.
        detail = await core.version(HIGH, "3")
        from tollgate_registry.tiers import gate_report, gate_report_digest

        assert gate_report(detail)["evaluation_digest"] == shown["evaluation_digest"]
        assert gate_report_digest(detail) == shown["gate_report_digest"]

        builder = await client.post(f"{base}/approve", json={"reason": "mine"}, headers=header(KEYS["dana"]))
        assert builder.status_code == 403
        assert builder.json()["detail"].startswith("risk tier rule approver-not-requester:")
