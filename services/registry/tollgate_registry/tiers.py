"""Risk tiers: what a model's catalog entry (``risk_tier``) requires before a version serves, as pure rules.

=======  ===========================================================================================
tier     production needs
=======  ===========================================================================================
low      nothing more: the canary period ends in an automatic promotion (or an approver promotes or
         approves early)
medium   one approval (``POST .../approve`` by an ``approver``); a manual promotion to production is
         refused
high     two approvals by distinct principals, neither of whom asked for the training run that built
         the version (``lineage.requested_by``); a manual promotion to production is refused
=======  ===========================================================================================

The tier binds from the first version on: a medium or high model's first version waits in staging for its
approvals like any later one (nothing serves until then). An approval short of the number needed is
recorded and published on its own (an ``approved`` event that leaves the version in staging).

Rollback is never restricted by the tier: operators and approvers may always roll back, and it is always
recorded. A refusal is :class:`TierForbidden` (HTTP 403), naming the rule.

Every approval records who, when, why and :func:`gate_report_digest`: the sha256 of the gate report the
approver was shown (artifact digest, holdout metrics, every gate's result), so what was approved can be
checked against the version later; for a version with an evaluation report, the report's own sha256 is
part of it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import orjson

from tollgate_core.lifecycle import ApprovalRecord, Stage, evaluation_digest
from tollgate_core.models import TIER_RULES, ModelSpec
from tollgate_registry.ports import VersionDetail

RULE_NEEDS_APPROVAL = "tier-needs-approval"
RULE_NOT_THE_REQUESTER = "approver-not-requester"
RULE_DISTINCT_APPROVERS = "distinct-approvers"


class TierForbidden(PermissionError):
    """What the model's risk tier forbids (HTTP 403); ``rule`` names the rule."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"risk tier rule {rule}: {message}")
        self.rule = rule


def needs_approval(spec: ModelSpec | None) -> bool:
    """Whether a version enters production only by approvals, the model's first version included."""
    return spec is not None and spec.risk_tier != "low"


def approvals_required(spec: ModelSpec | None) -> int:
    """Approvals a version needs to enter production through ``approve`` (at least the one given)."""
    return max(1, spec.approvals_required if spec is not None else 1)


def gate_report(detail: VersionDetail) -> dict[str, object]:
    """What an approver approves. A version evaluated by the platform (every candidate since evaluation
    reports exist) adds the sha256 of its evaluation report, so the approval covers the holdout metrics,
    fairness, calibration and parity the platform measured; older versions keep their digest."""
    record = detail.record
    report: dict[str, object] = {
        "model": record.model,
        "version": record.version,
        "artifact_digest": record.artifact.digest,
        "metrics": record.metrics,
        "gates_passed": record.gates_passed,
        "gates": [g.model_dump(mode="json") for g in detail.gates],
    }
    if detail.candidate.evaluation is not None:
        report["evaluation_digest"] = evaluation_digest(detail.candidate.evaluation)
    return report


def gate_report_digest(detail: VersionDetail) -> str:
    canonical = orjson.dumps(gate_report(detail), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def check_promotion(spec: ModelSpec | None, version: str, to: Stage) -> None:
    if spec is None or to is not Stage.PRODUCTION or spec.risk_tier == "low":
        return
    raise TierForbidden(
        RULE_NEEDS_APPROVAL,
        f"model {spec.model} is risk tier {spec.risk_tier}: version {version} enters production only with "
        f"{TIER_RULES[spec.risk_tier]} (POST .../approve), not by promotion",
    )


def check_approval(
    spec: ModelSpec | None,
    version: str,
    approver: str,
    requested_by: Sequence[str],
    prior: Sequence[ApprovalRecord],
) -> None:
    if spec is None or spec.risk_tier != "high":
        return
    if approver in requested_by:
        raise TierForbidden(
            RULE_NOT_THE_REQUESTER,
            f"model {spec.model} is risk tier high: {approver!r} asked for the training run of version "
            f"{version} and may not approve it",
        )
    if any(a.by == approver for a in prior):
        raise TierForbidden(
            RULE_DISTINCT_APPROVERS,
            f"model {spec.model} is risk tier high: {approver!r} approved version {version} already; "
            "the second approval must come from another approver",
        )
