"""The lineage of one inference, assembled from the audit trail alone.

Starting from the inference log row(s) of a request id (the answer and, when one ran, the shadow), for each
model version that answered: its lifecycle up to the moment of the inference (gates it passed, who approved
it and why, its stage then), the candidate event that offered it (training run, metrics, parity, the exact
training-data offsets, the experiment and its trials, the baselines, the platform's evaluation report with the
digest approvers approved, and who submitted it when it was built outside the platform), the training request that started the run if any, and the alerts that were active
for the model at that moment. Each part names its audit row (stream, seq, row hash) so it can be proven.

:func:`assemble` is pure (it gets the rows); :func:`lineage` fetches them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from tollgate_audit_log.queries import Conn, find
from tollgate_core.contracts import ContractRegistry
from tollgate_core.lifecycle import EvaluationReport, evaluation_digest

Item = dict[str, Any]


def _ref(item: Item) -> dict[str, Any]:
    return {
        "stream": item["stream"],
        "seq": item["seq"],
        "event_id": item["event_id"],
        "row_hash": item["row_hash"],
    }


def _payload(item: Item) -> dict[str, Any]:
    payload = item["event"].get("payload")
    return payload if isinstance(payload, dict) else {}


def transitions_view(lifecycle: Sequence[Item], at: datetime) -> dict[str, Any]:
    """The version's lifecycle up to ``at``: every transition, the gates last evaluated, the approvals."""
    before = [i for i in lifecycle if i["occurred_at"] <= at]
    transitions = []
    gates: list[Any] = []
    approvals = []
    for item in before:
        p = _payload(item)
        transitions.append(
            {
                "transition": p.get("transition"),
                "from_stage": p.get("from_stage"),
                "to_stage": p.get("to_stage"),
                "actor": p.get("actor"),
                "reason": p.get("reason"),
                "occurred_at": item["occurred_at"],
                "audit": _ref(item),
            }
        )
        if p.get("gates"):
            gates = p["gates"]
        if p.get("transition") == "approved":
            approvals.append(
                {
                    "approved_by": p.get("actor"),
                    "reason": p.get("reason"),
                    "approved_at": item["occurred_at"],
                    "audit": _ref(item),
                }
            )
    return {
        "stage_at_inference": transitions[-1]["to_stage"] if transitions else None,
        "transitions": transitions,
        "gates": gates,
        "approvals": approvals,
        "later_transitions": sum(1 for i in lifecycle if i["occurred_at"] > at),
    }


def evaluation_view(report: Any) -> dict[str, Any] | None:
    """The candidate's evaluation report with its digest (what an approval approves); a report that no
    longer reads as one keeps ``digest: None`` so it is shown, never trusted."""
    if not isinstance(report, dict):
        return None
    try:
        digest: str | None = evaluation_digest(EvaluationReport.model_validate(report))
    except ValidationError:
        digest = None
    return {**report, "digest": digest}


def training_view(candidate: Item | None, request: Item | None) -> dict[str, Any] | None:
    if candidate is None:
        return None
    p = _payload(candidate)
    lineage = p.get("lineage") or {}
    return {
        "run_id": p.get("run_id"),
        "trained_at": p.get("trained_at"),
        "metrics": p.get("metrics"),
        "parity": p.get("parity"),
        "offered": p.get("offered"),
        "artifact": {
            k: (p.get("artifact") or {}).get(k) for k in ("digest", "location", "size_bytes", "format")
        },
        "data": {
            "contract": lineage.get("contract"),
            "contract_digest": lineage.get("contract_digest"),
            "offsets": lineage.get("offsets"),
            "row_count": lineage.get("row_count"),
            "data_hash": lineage.get("data_hash"),
            "holdout": lineage.get("holdout"),
        },
        "family": lineage.get("family"),
        "hyperparameters": lineage.get("hyperparameters"),
        "seed": lineage.get("seed"),
        "code_version": lineage.get("code_version"),
        "libraries": lineage.get("libraries"),
        "trigger": lineage.get("trigger"),
        "experiment": p.get("experiment"),
        "baselines": p.get("baselines") or {},
        "evaluation": evaluation_view(p.get("evaluation")),
        "submission": p.get("submission"),
        "training_request": None
        if request is None
        else {**_payload(request), "requested_at": request["occurred_at"], "audit": _ref(request)},
        "audit": _ref(candidate),
    }


def active_alerts(alerts: Sequence[Item], at: datetime) -> list[dict[str, Any]]:
    """Alerts whose last state at ``at`` was ``raised`` (an episode is keyed by its alert_id)."""
    latest: dict[str, Item] = {}
    for item in alerts:
        if item["occurred_at"] <= at:
            alert_id = str(_payload(item).get("alert_id") or item["event_id"])
            latest[alert_id] = item
    out = []
    for alert_id, item in latest.items():
        p = _payload(item)
        if p.get("state") == "raised":
            out.append(
                {
                    "alert_id": alert_id,
                    "version": p.get("version"),
                    "kind": p.get("kind"),
                    "severity": p.get("severity"),
                    "summary": p.get("summary"),
                    "raised_at": item["occurred_at"],
                    "window_start": p.get("window_start"),
                    "window_end": p.get("window_end"),
                    "audit": _ref(item),
                }
            )
    return out


def inference_view(item: Item, contracts: ContractRegistry | None) -> dict[str, Any]:
    p = _payload(item)
    contract = contracts.get(str(p.get("contract"))) if contracts is not None else None
    return {
        "event_id": item["event_id"],
        "occurred_at": item["occurred_at"],
        "model": p.get("model", item["model"]),
        "version": p.get("version", item["version"]),
        "route": p.get("route"),
        "channel": p.get("channel"),
        "contract": p.get("contract"),
        "entity_id": p.get("entity_id"),
        "inputs": p.get("inputs"),
        "outputs": p.get("outputs"),
        "latency_ms": p.get("latency_ms"),
        "explanation": p.get("explanation"),
        "trace_id": item["trace_id"],
        # How personal data in the inputs was protected before it was logged (by the scorer, per contract).
        "pii_protection": {name: action.value for name, action in contract.pii_fields.items()}
        if contract
        else None,
        "audit": _ref(item),
    }


Fetch = Callable[..., Awaitable[list[Item]]]


async def lineage(conn: Conn, request_id: str, contracts: ContractRegistry | None) -> dict[str, Any] | None:
    async def fetch(where: str, *args: Any) -> list[Item]:
        return await find(conn, where, *args)

    return await assemble(fetch, request_id, contracts)


async def assemble(
    fetch: Fetch, request_id: str, contracts: ContractRegistry | None
) -> dict[str, Any] | None:
    inferences = await fetch("stream = 'inference' AND request_id = $1", request_id)
    if not inferences:
        return None
    out = []
    for inf in inferences:
        view = inference_view(inf, contracts)
        model, version, at = view["model"], view["version"], inf["occurred_at"]
        lifecycle = await fetch("stream = 'lifecycle' AND model = $1 AND version = $2", model, version)
        candidates = await fetch("stream = 'candidates' AND model = $1 AND version = $2", model, version)
        candidate = candidates[-1] if candidates else None
        request = None
        if candidate is not None:
            request_ref = (_payload(candidate).get("lineage") or {}).get("training_request_id")
            if request_ref:
                found = await fetch("stream = 'requests' AND request_id = $1", str(request_ref))
                request = found[-1] if found else None
        alerts = await fetch("stream = 'alerts' AND model = $1 AND occurred_at <= $2", model, at)
        view["model_version"] = {
            "model": model,
            "version": version,
            **transitions_view(lifecycle, at),
            "training": training_view(candidate, request),
            "active_alerts": active_alerts(alerts, at),
        }
        out.append(view)
    answers = [v for v in out if v.get("route") != "shadow"]
    return {"request_id": request_id, "inferences": out, "request_id_reused": max(0, len(answers) - 1)}
