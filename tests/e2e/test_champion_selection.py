"""Champion selection and the cost of sophistication, with the trainer and the registry as real processes.

Two catalog entries learn the same rows of ``credit-default.v1``: one selects its champion over three
configurations and must beat the majority class (and, if it is not linear, a linear model) by 0.02 ROC AUC;
the other is a boosted model asked to beat a linear model by 0.3 ROC AUC, which no model of this data can, and
is refused naming the rule. Every trial is recorded with the version and with the trainer's run; two
versions are compared side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.auth_support import RoleKeys, header, make_keys
from tests.conftest import wait_http_ok
from tests.e2e.test_trainer import validated
from tests.kafka_helpers import produce
from tests.polling import eventually, get_until
from tollgate_demo.datasets import load_islp_default

SELECTED = "selection-probe"
SOPHISTICATED = "sophistication-probe"


def catalog(directory: Path) -> Path:
    common = {
        "contract": "credit-default.v1",
        "rollout": {"mode": "canary", "canary_weight": 0.2, "canary_seconds": 3600},
    }
    training = {"min_rows": 2000, "retrain_after_new_rows": 100_000, "debounce_seconds": 1.0}
    entries = {
        SELECTED: {
            **common,
            "model": SELECTED,
            "training": {
                **training,
                "selection": {
                    "metric": "roc_auc",
                    "configurations": [
                        {"family": "logistic_regression", "hyperparameters": {"C": [0.1, 1.0]}},
                        {"family": "hist_gradient_boosting", "hyperparameters": {"max_iter": [30]}},
                    ],
                },
            },
            "gates": {"cost_of_sophistication": {"metric": "roc_auc", "margin": 0.02}},
        },
        SOPHISTICATED: {
            **common,
            "model": SOPHISTICATED,
            "training": {**training, "family": "hist_gradient_boosting", "hyperparameters": {"max_iter": 30}},
            "gates": {"cost_of_sophistication": {"metric": "roc_auc", "margin": 0.3}},
        },
    }
    directory.mkdir(parents=True, exist_ok=True)
    for name, entry in entries.items():
        (directory / f"{name}.yaml").write_text(yaml.safe_dump(entry))
    return directory


async def test_champion_selection_is_recorded_and_a_model_not_worth_its_complexity_is_refused(
    services: Any, namespace: str, bootstrap: str, tmp_path: Path, own_database: str
) -> None:
    keys: RoleKeys = await make_keys(own_database)
    env = {
        "TOLLGATE_MODELS_DIR": str(catalog(tmp_path / "models")),
        "TOLLGATE_ARTIFACT_DIR": str(tmp_path / "artifacts"),
        "TOLLGATE_DATABASE_URL": own_database,
    }
    # One after the other: on a loaded machine, two cold starts at once (scikit-learn, onnxruntime) can take
    # longer than a minute.
    trainer = services("trainer", poll_seconds="0.2", env_extra=env)
    trainer_url = f"http://127.0.0.1:{trainer.port}"
    await wait_http_ok(f"{trainer_url}/readyz", timeout=180, proc=trainer)
    registry = services("registry", env_extra=env)
    registry_url = f"http://127.0.0.1:{registry.port}"
    await wait_http_ok(f"{registry_url}/readyz", timeout=180, proc=registry)

    records = load_islp_default()[:2500]
    await produce(
        bootstrap, f"{namespace}.events.validated.v1", [validated(r, i) for i, r in enumerate(records)]
    )

    async with httpx.AsyncClient(base_url=registry_url, headers=header(keys["viewer"]), timeout=10) as api:
        # The selected model: every trial with the version, the champion's configuration is the version's.
        selected = await get_until(
            api, f"/v1/models/{SELECTED}/versions/1", lambda v: v if v["experiment"] else None, timeout=240
        )
        experiment = selected["experiment"]
        trials = experiment["trials"]
        assert [(t["number"], t["family"]) for t in trials] == [
            (1, "logistic_regression"),
            (2, "logistic_regression"),
            (3, "hist_gradient_boosting"),
        ]
        assert [t["hyperparameters"].get("C") for t in trials[:2]] == [0.1, 1.0]
        assert all(len(t["digest"]) == 64 and t["seconds"] > 0 and "roc_auc" in t["metrics"] for t in trials)
        champion = trials[experiment["chosen"] - 1]
        assert champion["metrics"]["roc_auc"] == max(t["metrics"]["roc_auc"] for t in trials)
        assert selected["lineage"]["family"] == champion["family"]
        assert selected["lineage"]["hyperparameters"] == champion["hyperparameters"]
        assert (
            experiment["fit_rows"] + experiment["validation_rows"]
            == selected["lineage"]["holdout"]["train_rows"]
        )
        sophistication = {g["gate"]: g for g in selected["gates"] if g["gate"].startswith("cost of")}
        assert "cost of sophistication:majority" in sophistication
        assert ("cost of sophistication:linear" in sophistication) == (
            champion["family"] != "logistic_regression"
        )
        assert all(g["passed"] for g in sophistication.values()), sophistication
        assert selected["stage"] == "production" and selected["baselines"]["majority"]["roc_auc"] == 0.5

        # The boosted model cannot beat a linear one by 0.3: refused, naming the rule.
        refused = await get_until(
            api, f"/v1/models/{SOPHISTICATED}/versions/1", lambda v: v if v["stage"] == "rejected" else None
        )
        failing = [g["gate"] for g in refused["gates"] if not g["passed"]]
        assert failing == ["cost of sophistication:linear"], refused["gates"]
        rejection = refused["transitions"][-1]["reason"]
        assert rejection.startswith("gate cost of sophistication:linear failed: roc_auc "), rejection
        assert "does not beat the linear baseline's" in rejection and refused["experiment"] is None

    # The trainer's runs carry the same experiment.
    async with httpx.AsyncClient(
        base_url=trainer_url, headers=header(keys["data-scientist"]), timeout=10
    ) as t:
        runs = (await t.get("/v1/runs", params={"model": SELECTED})).json()
        assert [r["status"] for r in runs] == ["offered"]
        assert runs[0]["experiment"] == experiment
        assert (await t.post(f"/v1/models/{SELECTED}/train", json={"reason": "compare"})).status_code == 202

    # A second version, compared with the first side by side.
    async with httpx.AsyncClient(base_url=registry_url, headers=header(keys["viewer"]), timeout=10) as api:
        await get_until(api, f"/v1/models/{SELECTED}/versions/2", lambda v: v)

        async def comparison() -> Any:
            r = await api.get(f"/v1/models/{SELECTED}/compare", params={"a": "1", "b": "2"})
            return r.json() if r.status_code == 200 else None

        compared = await eventually(comparison, what="the comparison of versions 1 and 2")
        assert (compared["a"], compared["b"]) == ("1", "2")
        auc = compared["metrics"]["roc_auc"]
        assert auc["delta"] == auc["b"] - auc["a"] and auc["better"] in {"a", "b", "same"}
        assert compared["gates"]["cost of sophistication:majority"] == {"a": True, "b": True}
        assert {"field": "trigger", "a": "count", "b": "request"} in compared["differences"]
        missing = await api.get(f"/v1/models/{SELECTED}/compare", params={"a": "1", "b": "9"})
        assert missing.status_code == 404
