"""A model built outside the platform, submitted, validated on the platform's holdout, gated, canaried,
promoted and served — trainer, registry and scorer as real processes on the real broker and PostgreSQL.

The test trains logistic regressions itself with scikit-learn on ``credit-default.v1`` rows and exports them
with skl2onnx the way the trainer exports (``tests/submission_support.py``), with their skops files:

1. a model fed one float tensor instead of the contract's ``numeric`` and ``category`` blocks is refused (422)
   naming each mismatched input;
2. a good model with its skops pipeline, submitted with ``tollgate models submit``: evaluated on the trainer's
   out-of-time holdout (parity against the pipeline measured), it is the model's first version → production;
3. a model that learned the opposite label is evaluated, offered, and refused by the registry naming the
   cost-of-sophistication rule (it does not beat the majority-class baseline);
4. another good model (no pipeline: parity not checked) enters as a canary and is promoted when the canary
   period ends; the scorer then answers with it.

The candidates on ``models.candidates`` (the audit-log's ``candidates`` stream) name the submitter, and the
registry's version of a submitted model carries the global feature importance the platform measured on
its holdout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.auth_support import RoleKeys, header, make_keys
from tests.conftest import wait_http_ok
from tests.e2e.test_trainer import validated
from tests.kafka_helpers import collect, produce
from tests.polling import eventually, get_until
from tests.submission_support import one_input_model, outside_model
from tollgate_core.contracts import ContractRegistry
from tollgate_core.lifecycle import CandidateEvent
from tollgate_demo.datasets import load_islp_default

MODEL = "submission-probe"
ROWS = 2500


def catalog(directory: Path) -> Path:
    entry = {
        "model": MODEL,
        "contract": "credit-default.v1",
        "risk_tier": "low",
        # The trainer never trains this model by itself here: every version is a submission.
        "training": {
            "family": "logistic_regression",
            "min_rows": 1_000_000,
            "retrain_after_new_rows": 1_000_000,
            "debounce_seconds": 1.0,
            "holdout_fraction": 0.2,
        },
        "gates": {
            "require_parity": True,
            "cost_of_sophistication": {"metric": "roc_auc", "margin": 0.02},
        },
        "rollout": {"mode": "canary", "canary_weight": 0.5, "canary_seconds": 3},
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{MODEL}.yaml").write_text(yaml.safe_dump(entry))
    return directory


def cli(*args: str, key: str, trainer: str) -> subprocess.CompletedProcess[str]:
    tollgate = Path(sys.executable).parent / "tollgate"  # the console script, wherever the CLI package lives
    return subprocess.run(
        [str(tollgate), *args],
        env={**os.environ, "TOLLGATE_API_KEY": key, "TOLLGATE_TRAINER_URL": trainer},
        capture_output=True,
        text=True,
        timeout=240,  # a cold interpreter importing the CLI on a loaded two-core machine
        check=False,
    )


async def trainer_rows(base: str, key: str) -> float:
    async with httpx.AsyncClient(base_url=base, headers=header(key), timeout=10) as http:
        text = (await http.get("/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("tollgate_trainer_rows_total{") and 'contract="credit-default.v1"' in line
    )


async def test_a_submitted_model_is_validated_gated_canaried_promoted_and_served(
    services: Any, namespace: str, bootstrap: str, tmp_path: Path, own_database: str
) -> None:
    keys: RoleKeys = await make_keys(own_database)
    env = {
        "TOLLGATE_MODELS_DIR": str(catalog(tmp_path / "models")),
        "TOLLGATE_ARTIFACT_DIR": str(tmp_path / "artifacts"),
        "TOLLGATE_DATABASE_URL": own_database,
    }
    trainer = services("trainer", poll_seconds="0.2", env_extra=env)
    trainer_url = f"http://127.0.0.1:{trainer.port}"
    await wait_http_ok(f"{trainer_url}/readyz", timeout=180, proc=trainer)
    registry = services("registry", canary_poll_seconds="0.3", env_extra=env)
    registry_url = f"http://127.0.0.1:{registry.port}"
    await wait_http_ok(f"{registry_url}/readyz", timeout=180, proc=registry)
    scorer = services("scorer", log_spool_dir=str(tmp_path / "spool"), warmup_rounds="3", env_extra=env)
    scorer_url = f"http://127.0.0.1:{scorer.port}"
    await wait_http_ok(f"{scorer_url}/readyz", timeout=180, proc=scorer)

    records = load_islp_default()[:ROWS]
    await produce(
        bootstrap, f"{namespace}.events.validated.v1", [validated(r, i) for i, r in enumerate(records)]
    )
    await eventually(
        lambda: _at_least(trainer_rows(trainer_url, keys["operator"]), ROWS),
        timeout=120,
        what=f"{ROWS} rows in the trainer's store",
    )
    contract = ContractRegistry.from_directory().get("credit-default.v1")
    assert contract is not None
    # The data scientist's own rows: the older ones (the platform holds out the newest and never shows them).
    own_rows = records[:2000]
    submitter = keys.names["data-scientist"]
    submit_path = f"/v1/models/{MODEL}/submissions"

    async with httpx.AsyncClient(
        base_url=trainer_url, headers=header(keys["data-scientist"]), timeout=300
    ) as trainer_api:
        # 1. Inputs that are not the contract's: refused, each mismatch named; nothing is stored.
        mismatched = await trainer_api.post(
            submit_path,
            files={"onnx": ("model.onnx", one_input_model(contract, own_rows))},
            data={"notes": "one tensor of raw numbers"},
        )
        assert mismatched.status_code == 422, mismatched.text
        problems = mismatched.json()["detail"]  # FastAPI's validation shape: one entry per problem
        assert {tuple(p["loc"]) for p in problems} == {("body", "onnx")} and len(problems) == 3, problems
        detail = "\n".join(p["msg"] for p in problems)
        assert "input 'numeric': missing; contract credit-default.v1 needs tensor(double) [N, 2]" in detail
        assert "input 'category': missing" in detail and "input 'input': not an input" in detail
        # Only a data scientist may submit.
        viewer = await trainer_api.post(
            submit_path,
            files={"onnx": ("model.onnx", b"x")},
            data={"notes": "n"},
            headers=header(keys["viewer"]),
        )
        assert viewer.status_code == 403

    # 2. A good model with its pipeline, through the CLI: the first version, straight to production.
    good_onnx, good_skops, _ = outside_model(contract, own_rows)
    (tmp_path / "good.onnx").write_bytes(good_onnx)
    (tmp_path / "good.skops").write_bytes(good_skops)
    submitted = cli(
        "models", "submit", MODEL,
        "--onnx", str(tmp_path / "good.onnx"),
        "--sklearn", str(tmp_path / "good.skops"),
        "--notes", "logistic regression on balance, income and student",
        "--code", "git@example.org:risk/models.git@4f2c1e0",
        "--parameters", '{"C": 1.0}',
        "--training-data", "credit-default.v1 rows 1-2000",
        "--family", "logistic_regression",
        key=keys["data-scientist"],
        trainer=trainer_url,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert "offered" in submitted.stdout and "tollgate show submission-probe 1" in submitted.stdout

    async with (
        httpx.AsyncClient(base_url=registry_url, headers=header(keys["viewer"]), timeout=10) as api,
        httpx.AsyncClient(
            base_url=trainer_url, headers=header(keys["data-scientist"]), timeout=300
        ) as trainer_api,
    ):
        first = await get_until(
            api,
            f"/v1/models/{MODEL}/versions/1",
            lambda v: v if v["stage"] == "production" else None,
            timeout=120,
        )
        evaluation = first["evaluation"]
        assert first["submission"]["submitted_by"] == submitter
        assert first["submission"]["code_reference"] == "git@example.org:risk/models.git@4f2c1e0"
        assert first["lineage"]["trigger"] == "submission" and first["lineage"]["requested_by"] == [submitter]
        assert evaluation["holdout_rows"] == ROWS // 5 and evaluation["metrics"]["roc_auc"] > 0.9
        assert evaluation["parity"]["passed"] and evaluation["parity"]["rows_checked"] >= ROWS // 5
        assert set(evaluation["segment_metrics"]) == {"No", "Yes"} and evaluation["calibration"]
        assert len(first["evaluation_digest"]) == 64
        # The platform measured the submitted model's global feature importance on its holdout, per
        # contract feature (student is one feature, whatever its encoding in the graph): balance first.
        importance = evaluation["feature_importance"]
        assert importance["method"] == "permutation" and importance["metric"] == "log_loss"
        assert importance["rows"] == ROWS // 5 and importance["repeats"] >= 1
        ranked = [f["feature"] for f in importance["features"]]
        assert sorted(ranked) == ["balance", "income", "student"] and ranked[0] == "balance"
        assert importance["features"][0]["importance"] > 10 * abs(importance["features"][-1]["importance"])
        gates = {g["gate"]: g for g in first["gates"]}
        assert gates["parity"]["passed"] and gates["cost of sophistication:majority"]["passed"]

        # 3. A model worse than the simplest baseline: evaluated, offered, refused naming the rule.
        worse_onnx, _, _ = outside_model(contract, own_rows, flip_labels=True)
        worse = await trainer_api.post(
            submit_path,
            files={"onnx": ("worse.onnx", worse_onnx)},
            data={"notes": "learned the wrong way round", "family": "logistic_regression"},
        )
        assert worse.status_code == 201, worse.text
        assert worse.json()["version"] == "2" and worse.json()["metrics"]["roc_auc"] < 0.5
        refused = await get_until(
            api, f"/v1/models/{MODEL}/versions/2", lambda v: v if v["stage"] == "rejected" else None
        )
        assert [g["gate"] for g in refused["gates"] if not g["passed"]] == ["cost of sophistication:majority"]
        reason = refused["transitions"][-1]["reason"]
        assert reason.startswith("gate cost of sophistication:majority failed: roc_auc "), reason
        assert "does not beat the majority baseline's 0.5000 by the margin 0.0200" in reason

        # 4. Another good model, without a pipeline: a canary first, then production, then it serves.
        better_onnx, _, _ = outside_model(contract, own_rows, c=0.5)
        better = await trainer_api.post(
            submit_path,
            files={"onnx": ("better.onnx", better_onnx)},
            data={"notes": "less regularised", "family": "logistic_regression", "parameters": '{"C": 0.5}'},
        )
        assert better.status_code == 201, better.text
        assert better.json()["version"] == "3" and better.json()["parity"] is None
        third = await get_until(
            api,
            f"/v1/models/{MODEL}/versions/3",
            lambda v: v if v["stage"] == "production" else None,
            timeout=120,
        )
        assert [t["to_stage"] for t in third["transitions"]] == ["candidate", "staging", "production"]
        assert third["transitions"][-1]["actor"] == "canary"
        parity = next(g for g in third["gates"] if g["gate"] == "parity")
        assert parity["detail"].startswith("not checked: no scikit-learn pipeline")
        assert third["evaluation"]["parity"] is None and third["submission"]["sklearn_digest"] is None

    instance = {k: v for k, v in records[-1].items() if k not in {"default", "customer_email"}}

    async def served_by_three() -> Any:
        async with httpx.AsyncClient(base_url=scorer_url, headers=header(keys["scorer-client"])) as http:
            r = await http.post(f"/v1/models/{MODEL}/score", json={"instance": instance})
        return r.json() if r.status_code == 200 and r.json().get("version") == "3" else None

    scored = await eventually(served_by_three, timeout=60, what="version 3 serving")
    assert 0.0 <= scored["probabilities"]["true"] <= 1.0

    # The submissions and their outcomes are on the candidates topic, each naming its submitter.
    candidates = [
        CandidateEvent.model_validate_json(r.value).payload
        for r in await collect(bootstrap, f"{namespace}.models.candidates.v1", expect=3)
    ]
    assert sorted(c.version for c in candidates) == ["1", "2", "3"]
    assert {c.submission.submitted_by for c in candidates if c.submission} == {submitter}
    assert all(c.evaluation is not None for c in candidates)


async def _at_least(value: Any, wanted: float) -> bool:
    return float(await value) >= wanted
