"""The closed loop as one test, with all seven services as their own processes on the real Kafka and
PostgreSQL (what ``make demo`` shows live, asserted step by step):

1. a medium-risk-tier model that selects its champion over three configurations (two logistic regressions,
   one boosted ensemble) and must beat the majority class by 0.02 ROC AUC; labeled data uploaded through
   the gateway, validated, trained on: version 1, gated, staged, approved by an approver, in production;
2. scoring traffic over HTTP (every inference logged), first as in training, then drifted (students and low
   incomes over-represented): the monitor raises a drift alert and asks for retraining;
3. the trainer's run selects a champion over the catalog's configurations (every trial recorded); the
   registry gates version 2 (the cost of sophistication included) and stages it as a canary, which the
   scorer serves to part of the traffic; the tier's rule refuses a promotion without approval; one approver
   promotes it; the scorer serves it in production;
4. each step is in the audit trail (alert, training request, candidate with its experiment, lifecycle with
   gates, canary and approval), in that order;
5. the lineage of an inference scored after the promotion returns its chain: inputs, version, training run
   (experiment and trials through the candidate row it names), training-data offsets, the training request
   and the alert behind it, the gates, the approval and the alerts active at that moment.

Its own database (``own_database``): the trainer's store and runs see only this test's rows. Every wait polls
a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.audit_support import ensure_writer_role
from tests.auth_support import RoleKeys, header, make_keys
from tests.conftest import service_dsn, wait_http_ok
from tests.polling import eventually
from tollgate_core.lifecycle import EvaluationReport, evaluation_digest
from tollgate_core.migrate import migrate_all
from tollgate_demo.datasets import load_islp_default

pytestmark = pytest.mark.timeout(1500)

SERVICES = ("ingest", "validator", "trainer", "registry", "scorer", "monitor", "audit-log")
CONTRACT = "credit-default.v1"
TRAINING_ROWS = 2500
CONFIGURATIONS = [
    {"family": "logistic_regression", "hyperparameters": {"C": [0.1, 1.0]}},
    {"family": "hist_gradient_boosting", "hyperparameters": {"max_iter": [30]}},
]
MONITOR = {
    "window_seconds": "5",
    "allowed_lateness_seconds": "0",
    "idle_close_seconds": "5",
    "min_window_rows": "100",
    "raise_after": "2",
    "clear_after": "1000",  # the alert stays raised for the rest of the test
    "retrain_cooldown_seconds": "3600",
    "reference_wait_seconds": "120",
}


def catalog_entry(model: str) -> dict[str, Any]:
    return {
        "model": model,
        "description": "Closed-loop test model.",
        "contract": CONTRACT,
        "risk_tier": "medium",
        "training": {
            "min_rows": 2000,
            "retrain_after_new_rows": 1_000_000,  # only the monitor's request trains a second time
            "debounce_seconds": 1.0,
            "selection": {"metric": "roc_auc", "configurations": CONFIGURATIONS},
        },
        "gates": {
            "metrics": {"roc_auc": {"min": 0.8}},
            "cost_of_sophistication": {"metric": "roc_auc", "margin": 0.02},
        },
        "rollout": {"mode": "approval", "canary_weight": 0.5, "canary_seconds": 3600},
    }


def instance(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "default"}


def shifted(record: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The drifted population of ``make demo``: students and low incomes over-represented."""
    out = instance(record)
    if rng.random() < 0.6:
        out["student"] = "Yes"
    if out.get("income") is not None:
        out["income"] = round(float(out["income"]) * rng.uniform(0.25, 0.55), 2)
    return out


class Traffic:
    """Scoring traffic in the background: batches of instances, as in training until ``drift`` is set."""

    def __init__(self, url: str, key: str, pool: list[dict[str, Any]]) -> None:
        self.url, self.key, self.pool = url, key, pool
        self.drift = False
        self.sent = 0
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        rng = random.Random(7)
        async with httpx.AsyncClient(timeout=30, headers=header(self.key)) as http:
            while not self._stop.is_set():
                rows = [self.pool[rng.randrange(len(self.pool))] for _ in range(50)]
                batch = [shifted(r, rng) if self.drift else instance(r) for r in rows]
                try:
                    answer = await http.post(self.url, json={"instances": batch})
                    if answer.status_code == 200:
                        self.sent += len(batch)
                    else:
                        self.failures.append(f"{answer.status_code} {answer.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.25)


class Audit:
    """The audit-log's query API, as an auditor."""

    def __init__(self, http: httpx.AsyncClient, base: str, key: str) -> None:
        self.http, self.base, self.headers = http, base, header(key)

    async def items(self, stream: str, model: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            params: dict[str, Any] = {"stream": stream, "model": model, "limit": 500}
            if after:
                params["after"] = after
            got = await self.http.get(f"{self.base}/v1/audit/events", params=params, headers=self.headers)
            if got.status_code != 200:
                return found
            page = got.json()
            found.extend(page["items"])
            after = page.get("next")
            if not after or not page["items"]:
                return found

    async def until(self, stream: str, model: str, pick: Any, what: str, timeout: float = 120) -> Any:
        async def check() -> Any:
            return pick([i for i in await self.items(stream, model)])

        return await eventually(check, timeout=timeout, interval=1, what=what)


def payload(item: dict[str, Any]) -> dict[str, Any]:
    p: dict[str, Any] = item["event"]["payload"]
    return p


async def test_drift_alert_retrains_selects_gates_canaries_promotes_and_the_lineage_has_the_chain(
    own_database: str, services: Any, bootstrap: str, tmp_path: Path
) -> None:
    # own_database before services: set up first, dropped last, after every service has stopped.
    await migrate_all(own_database)  # every service's tables and role grants, as the stack does
    assert await ensure_writer_role() is None
    keys: RoleKeys = await make_keys(own_database, prefix="loop")
    model = f"loop-{uuid.uuid4().hex[:6]}-risk"
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / f"{model}.yaml").write_text(yaml.safe_dump(catalog_entry(model)))
    env = {
        "TOLLGATE_MODELS_DIR": str(models_dir),
        "TOLLGATE_ARTIFACT_DIR": str(tmp_path / "artifacts"),
        "TOLLGATE_AUDIT_LOG_SIGNING_KEY_PATH": str(tmp_path / "ed25519.pem"),
        "TOLLGATE_SCORER_LOG_SPOOL_DIR": str(tmp_path / "spool"),
        "TOLLGATE_SCORER_WARMUP_ROUNDS": "3",
        "TOLLGATE_TRAINER_POLL_SECONDS": "0.2",
        "TOLLGATE_REGISTRY_CANARY_POLL_SECONDS": "0.2",
    }
    procs = {}
    for name in SERVICES:
        own = {**env, "TOLLGATE_DATABASE_URL": service_dsn(name, own_database)}
        procs[name] = services(name, env_extra=own, **(MONITOR if name == "monitor" else {}))
    base = {name: f"http://127.0.0.1:{proc.port}" for name, proc in procs.items()}
    for name, proc in procs.items():
        await wait_http_ok(f"{base[name]}/readyz", proc=proc, timeout=240)

    records = load_islp_default()
    training, scoring = records[:TRAINING_ROWS], records[TRAINING_ROWS:]  # scored entities have no labels
    viewer, approver = header(keys["viewer"]), header(keys["approver"])
    score_url = f"{base['scorer']}/v1/models/{model}/score"
    versions = f"{base['registry']}/v1/models/{model}/versions"

    async with httpx.AsyncClient(timeout=60) as http:
        audit = Audit(http, base["audit-log"], keys["auditor"])

        async def version(v: str) -> Any:
            got = await http.get(f"{versions}/{v}", headers=viewer)
            return got.json() if got.status_code == 200 else None

        async def score_one(record: dict[str, Any]) -> Any:
            got = await http.post(
                score_url, json={"instance": instance(record)}, headers=header(keys["scorer-client"])
            )
            return got.json() if got.status_code == 200 else None

        # 1. Labeled data through the gateway; version 1 is trained, gated and staged; the tier wants one
        # approver; then it serves.
        start = datetime.now(UTC) - timedelta(hours=2)
        events = [
            {
                "event_id": str(uuid.uuid4()),
                "event_type": "observation",
                "schema": CONTRACT,
                "occurred_at": (start + timedelta(seconds=i)).isoformat(),
                "producer": "closed-loop-test",
                "payload": r,
            }
            for i, r in enumerate(training)
        ]
        sent = await http.post(f"{base['ingest']}/v1/events", json=events, headers=header(keys["producer"]))
        assert sent.status_code == 202, sent.text
        first = await eventually(
            lambda: _stage(version("1"), "staging"), timeout=600, interval=1, what="version 1 staged"
        )
        assert first["experiment"] is not None and len(first["experiment"]["trials"]) == 3
        approved = await http.post(f"{versions}/1/approve", json={"reason": "first"}, headers=approver)
        assert approved.status_code == 200 and approved.json()["production_version"] == "1", approved.text
        await eventually(
            lambda: _served(score_one(scoring[0]), "1", "champion"), timeout=120, what="v1 serving"
        )

        # 2. Traffic as in training until the monitor has judged a clean window, then drifted traffic.
        traffic = Traffic(score_url, keys["scorer-client"], scoring)
        traffic.start()
        try:

            async def clean_window() -> Any:
                got = await http.get(f"{base['monitor']}/v1/models/{model}/drift", headers=viewer)
                if got.status_code != 200:
                    return None
                windows = got.json()["windows"]
                minimum = int(MONITOR["min_window_rows"])
                return [
                    w
                    for w in windows
                    if w["rows"] >= minimum and not any(f["drifted"] for f in w["features"])
                ]

            await eventually(clean_window, timeout=240, interval=1, what="a window judged without drift")
            traffic.drift = True

            def raised(items: list[dict[str, Any]]) -> Any:
                return next(
                    (payload(i) for i in items if payload(i)["state"] == "raised"),
                    None,
                )

            await audit.until("alerts", model, raised, "a raised alert in the audit trail", 300)
            request_items = await audit.until(
                "requests", model, lambda items: items or None, "the training request in the audit trail"
            )
        finally:
            await traffic.stop()
        assert traffic.sent > 0 and not traffic.failures, traffic.failures[:5]
        alerts = [payload(i) for i in await audit.items("alerts", model)]
        assert any(a["kind"] == "data_drift" and a["state"] == "raised" for a in alerts), alerts
        [request_item] = request_items  # debounced: one request per model
        request = payload(request_item)
        assert request["requested_by"] == "monitor" and request["contract"] == CONTRACT
        assert request["alert_id"] in {a["alert_id"] for a in alerts if a["state"] == "raised"}

        # 3. Champion selection over the catalog's configurations, gates, the canary, the tier's rule.
        second = await eventually(
            lambda: _stage(version("2"), "staging"), timeout=600, interval=1, what="version 2 staged"
        )
        experiment = second["experiment"]
        trials = experiment["trials"]
        assert [t["family"] for t in trials] == [
            "logistic_regression",
            "logistic_regression",
            "hist_gradient_boosting",
        ]
        champion = trials[experiment["chosen"] - 1]
        assert champion["metrics"]["roc_auc"] == max(t["metrics"]["roc_auc"] for t in trials)
        assert second["lineage"]["family"] == champion["family"]
        assert second["lineage"]["trigger"] == "request"
        gates = {g["gate"]: g["passed"] for g in second["gates"]}
        assert all(gates.values()) and "cost of sophistication:majority" in gates, second["gates"]

        # The canary is chosen per entity (a hash of its id against the weight): entities in turn.
        entities = iter(scoring[1:])
        canary = await eventually(
            lambda: _served(score_one(next(entities)), "2", "canary"),
            timeout=120,
            what="v2 on the canary route",
        )
        assert canary["version"] == "2"
        refused = await http.post(
            f"{versions}/2/promote", json={"reason": "no approval", "to": "production"}, headers=approver
        )
        assert refused.status_code == 403 and "tier-needs-approval" in refused.json()["detail"], refused.text
        promoted = await http.post(f"{versions}/2/approve", json={"reason": "reviewed"}, headers=approver)
        assert promoted.status_code == 200 and promoted.json()["production_version"] == "2", promoted.text
        after = await eventually(
            lambda: _served(score_one(scoring[0]), "2", "champion"), timeout=120, what="v2 in production"
        )

        # 4. The audit trail holds every step, in order.
        def v2_moves(items: list[dict[str, Any]]) -> Any:
            moves = [i for i in items if payload(i).get("version") == "2"]
            done = any(payload(i)["transition"] == "approved" for i in moves)
            return moves if done else None

        lifecycle = await audit.until("lifecycle", model, v2_moves, "version 2's lifecycle in the trail")
        moves = [(payload(i)["transition"], payload(i)["to_stage"]) for i in lifecycle]
        assert ("staged", "staging") in moves and moves[-1] == ("approved", "production"), moves
        staged = next(payload(i) for i in lifecycle if payload(i)["transition"] == "staged")
        assert staged["canary_weight"] == 0.5 and all(g["passed"] for g in staged["gates"])
        final = payload(lifecycle[-1])
        assert final["actor"] == keys.names["approver"]
        candidates = await audit.until(
            "candidates",
            model,
            lambda items: [i for i in items if payload(i)["version"] == "2"] or None,
            "version 2's candidate in the trail",
        )
        [candidate_item] = candidates
        candidate = payload(candidate_item)
        assert candidate["lineage"]["training_request_id"] == request_item["event"]["event_id"]
        assert candidate["experiment"] == experiment
        alert_item = next(
            i for i in await audit.items("alerts", model) if payload(i)["alert_id"] == request["alert_id"]
        )
        order = [
            at(alert_item),
            at(request_item),
            at(candidate_item),
            at(next(i for i in lifecycle if payload(i)["transition"] == "staged")),
            at(lifecycle[-1]),
        ]
        assert order == sorted(order), order

        # 5. The lineage of the inference scored after the promotion.
        async def lineage() -> Any:
            got = await http.get(
                f"{base['audit-log']}/v1/audit/lineage/{after['request_id']}", headers=audit.headers
            )
            return got.json() if got.status_code == 200 else None

        view = await eventually(lineage, timeout=120, interval=1, what="the lineage of the inference")
        [inference] = view["inferences"]
        assert (inference["model"], inference["version"], inference["route"]) == (model, "2", "champion")
        assert inference["inputs"]["balance"] == scoring[0]["balance"]
        assert inference["outputs"]["score"] == pytest.approx(after["score"])
        chain = inference["model_version"]
        assert chain["stage_at_inference"] == "production"
        assert [a["approved_by"] for a in chain["approvals"]] == [keys.names["approver"]]
        assert {g["gate"] for g in chain["gates"]} == set(gates) and all(g["passed"] for g in chain["gates"])
        trained = chain["training"]
        assert trained["data"]["offsets"] and trained["data"]["contract"] == CONTRACT
        assert trained["data"]["row_count"] == TRAINING_ROWS
        assert trained["training_request"]["requested_by"] == "monitor"
        assert trained["training_request"]["alert_id"] == request["alert_id"]
        assert request["alert_id"] in {a["alert_id"] for a in chain["active_alerts"]}
        # The experiment and its trials, the baselines and the platform's evaluation (with the digest
        # approvers approved), from the candidate row the lineage names (stream and seq).
        assert trained["audit"]["stream"] == "candidates"
        assert trained["audit"]["seq"] == candidate_item["seq"]
        assert payload(candidate_item)["experiment"]["trials"] == trials
        assert trained["experiment"]["trials"] == trials
        assert trained["baselines"] == payload(candidate_item)["baselines"]
        assert trained["evaluation"]["digest"] == evaluation_digest(
            EvaluationReport.model_validate(payload(candidate_item)["evaluation"])
        )
        assert trained["evaluation"]["holdout_rows"] > 0

    for proc in procs.values():  # nothing restarted
        assert proc.proc is not None and proc.proc.poll() is None


def at(item: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(item["event"]["occurred_at"]).replace("Z", "+00:00"))


async def _stage(detail: Any, stage: str) -> Any:
    found = await detail
    return found if found and found["stage"] == stage else None


async def _served(answer: Any, version: str, route: str) -> Any:
    found = await answer
    return found if found and found["version"] == version and found["route"] == route else None
