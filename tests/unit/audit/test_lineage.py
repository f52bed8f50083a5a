"""The training part of an inference's lineage carries the experiment, the baselines, the platform's
evaluation report with the digest approvers approved, and the submission (from the candidate row alone)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.unit.registry.candidates import candidate
from tollgate_audit_log.api import TrainingRunOut
from tollgate_audit_log.lineage import training_view
from tollgate_core.lifecycle import (
    EvaluationReport,
    Experiment,
    Submission,
    TrialRecord,
    evaluation_digest,
)


def _item(payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "stream": "candidates",
        "seq": 12,
        "event_id": "e-1",
        "row_hash": "ab" * 32,
        "occurred_at": datetime.now(UTC),
        "event": {"payload": payload},
    }


def _report() -> EvaluationReport:
    return EvaluationReport(
        holdout_rows=500,
        holdout_fraction=0.2,
        ordered_by="event_time",
        data_hash="d" * 64,
        metrics={"roc_auc": 0.91},
        baselines={"majority": {"roc_auc": 0.5}},
    )


def test_training_view_carries_experiment_evaluation_and_submission() -> None:
    trials = [
        TrialRecord(
            number=n, family=f, hyperparameters={}, metrics={"roc_auc": m}, seconds=0.1, digest=str(n) * 64
        )
        for n, f, m in ((1, "logistic_regression", 0.9), (2, "random_forest", 0.93))
    ]
    payload = candidate("3").model_copy(
        update={
            "experiment": Experiment(
                metric="roc_auc",
                chosen=2,
                trials=trials,
                skipped=0,
                fit_rows=800,
                validation_rows=200,
                budget_seconds=60,
                max_rows=10_000,
            ),
            "baselines": {"majority": {"roc_auc": 0.5}},
            "evaluation": _report(),
            "submission": Submission(
                submission_id="s-1", submitted_by="dana", notes="from a notebook", onnx_digest="e" * 64
            ),
        }
    )
    view = training_view(_item(payload.model_dump(mode="json")), None)
    assert view is not None
    assert view["experiment"]["chosen"] == 2
    assert [t["family"] for t in view["experiment"]["trials"]] == ["logistic_regression", "random_forest"]
    assert view["baselines"] == {"majority": {"roc_auc": 0.5}}
    assert view["evaluation"]["digest"] == evaluation_digest(_report())
    assert view["evaluation"]["metrics"] == {"roc_auc": 0.91}
    assert view["submission"]["submitted_by"] == "dana"
    assert view["audit"] == {"stream": "candidates", "seq": 12, "event_id": "e-1", "row_hash": "ab" * 32}
    # The API's response model keeps every part of the view (a field it does not declare is dropped).
    assert set(TrainingRunOut.model_fields) == set(view)
    served = TrainingRunOut.model_validate(view).model_dump(mode="json")
    assert served["experiment"] == view["experiment"] and served["evaluation"] == view["evaluation"]


def test_training_view_of_an_older_candidate_and_of_an_unreadable_report() -> None:
    plain = training_view(_item(candidate("1").model_dump(mode="json")), None)
    assert plain is not None
    assert (plain["experiment"], plain["baselines"], plain["evaluation"], plain["submission"]) == (
        None,
        {},
        None,
        None,
    )
    damaged = candidate("2").model_dump(mode="json")
    damaged["evaluation"] = {"metrics": {"roc_auc": 0.9}}  # not a whole report: shown, never given a digest
    view = training_view(_item(damaged), None)
    assert view is not None and view["evaluation"] == {"metrics": {"roc_auc": 0.9}, "digest": None}
