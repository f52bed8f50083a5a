"""Decision thresholds on a rare label: chosen on a validation split, baked into the ONNX graph, gated on."""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from pydantic import ValidationError

from tests.unit.trainer.test_train import feeds_from_signature
from tollgate_core.contracts import DatasetContract, FieldType
from tollgate_core.metrics import metrics_for
from tollgate_core.thresholds import ThresholdPolicy
from tollgate_trainer.features import TrainingDataError
from tollgate_trainer.threshold import ThresholdError, choose_threshold, decide
from tollgate_trainer.train import TrainingConfig, TrainingResult, train_model

RARE = DatasetContract.model_validate(
    {
        "contract": "rare-event",
        "version": 1,
        "entity_id": {"name": "id", "type": "string"},
        "label": {"name": "event", "type": "boolean", "task": "classification", "positive_class": True},
        "features": [{"name": f"x{i}", "type": "number", "minimum": -10, "maximum": 10} for i in range(6)],
        "attributes": [{"name": "at", "type": "string"}],
        "event_time": "at",
    }
)
POSITIVE_RATE = 0.05


@cache
def rare_records(n: int = 6000, seed: int = 7) -> tuple[dict[str, Any], ...]:
    """A 5 %-positive label from a logistic model of six features (intercept set for the rate)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    logit = x @ np.array([1.2, -0.9, 0.7, 0.0, 0.4, -0.3])
    intercept = float(np.log(POSITIVE_RATE / (1 - POSITIVE_RATE))) - 0.9
    y = rng.random(n) < 1 / (1 + np.exp(-(logit + intercept)))
    return tuple(
        {"id": f"r-{i}", "event": bool(y[i]), "at": f"2026-01-01T00:00:{i % 60:02d}.{i:06d}Z"}
        | {f"x{j}": float(x[i, j]) for j in range(6)}
        for i in range(n)
    )


@cache
def trained(rule: str | None, value: float | None = None) -> TrainingResult:
    policy = None if rule is None else ThresholdPolicy(rule=rule, value=value)  # type: ignore[arg-type]
    config = TrainingConfig(family="logistic_regression", decision_threshold=policy, threads=1, seed=3)
    return train_model(RARE, list(rare_records()), config)


def test_the_generated_label_is_rare() -> None:
    rate = np.mean([r["event"] for r in rare_records()])
    assert 0.03 < rate < 0.08


def test_the_trainer_reports_exactly_the_catalog_metrics_of_its_task() -> None:
    metrics = set(trained(None).metrics) - {"count"}
    assert metrics == metrics_for("classification")


def test_max_f1_beats_the_half_threshold_on_a_rare_label() -> None:
    half, tuned = trained(None), trained("max_f1")
    assert tuned.threshold is not None and tuned.threshold.threshold < 0.5
    assert tuned.metrics["f1"] > half.metrics["f1"], (tuned.metrics, half.metrics)
    # The threshold moves decisions, not scores: the ranking metrics are those of the same model.
    assert tuned.metrics["average_precision"] == pytest.approx(half.metrics["average_precision"], abs=0.02)
    assert tuned.signature.decision_threshold == tuned.threshold.threshold
    assert tuned.parity.passed, tuned.parity


def test_the_exported_graph_decides_by_the_threshold() -> None:
    result = trained("fixed", 0.2)
    assert result.signature.decision_threshold == pytest.approx(0.2)
    records = list(rare_records())[-500:]
    session = ort.InferenceSession(result.onnx, providers=["CPUExecutionProvider"])
    label, proba = session.run(["label", "probabilities"], feeds_from_signature(result.signature, records))
    positive = result.signature.positive_index
    assert positive is not None
    assert np.array_equal(np.asarray(label).ravel(), decide(np.asarray(proba), positive, 0.2))
    # Some rows between 0.2 and 0.5: the graph's label is not the argmax there.
    assert (np.asarray(label).ravel() != np.asarray(proba).argmax(axis=1)).any()


def test_target_rules_reach_their_target_on_the_validation_split() -> None:
    precise = trained("min_precision", 0.3).threshold
    sensitive = trained("min_recall", 0.8).threshold
    assert precise is not None and precise.validation_precision is not None
    assert precise.validation_precision >= 0.3
    assert sensitive is not None and sensitive.validation_recall is not None
    assert sensitive.validation_recall >= 0.8
    assert sensitive.threshold <= precise.threshold


def test_choose_threshold_rules_on_known_scores() -> None:
    truth = np.array([0, 0, 0, 0, 1, 0, 1, 1])
    score = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    assert choose_threshold(ThresholdPolicy(rule="max_f1"), truth, score).threshold == 0.5
    assert choose_threshold(ThresholdPolicy(rule="min_precision", value=0.99), truth, score).threshold == 0.7
    assert choose_threshold(ThresholdPolicy(rule="min_recall", value=0.99), truth, score).threshold == 0.5
    with pytest.raises(ThresholdError, match="needs both classes"):
        choose_threshold(ThresholdPolicy(rule="max_f1"), np.zeros(4, dtype=int), score[:4])


def test_an_unreachable_precision_is_an_error_naming_the_best_reached() -> None:
    truth, score = np.array([1, 0, 0]), np.array([0.2, 0.9, 0.5])
    with pytest.raises(ThresholdError, match=r"no threshold reaches precision 0.6 .*best 0.3333 over 3 rows"):
        choose_threshold(ThresholdPolicy(rule="min_precision", value=0.6), truth, score)


def test_a_threshold_needs_a_binary_label() -> None:
    contract = RARE.model_copy(
        update={"label": RARE.label.model_copy(update={"type": FieldType.INTEGER, "positive_class": None})}
    )
    records = [dict(r, event=i % 3) for i, r in enumerate(rare_records()[:600])]
    config = TrainingConfig(family="logistic_regression", decision_threshold=ThresholdPolicy(rule="max_f1"))
    with pytest.raises(TrainingDataError, match="decision_threshold needs a binary classification label"):
        train_model(contract, records, config)


def test_a_threshold_policy_is_checked_when_the_catalog_is_read() -> None:
    with pytest.raises(ValidationError, match="rule fixed needs a value"):
        ThresholdPolicy(rule="fixed")
    with pytest.raises(ValidationError, match="max_f1 takes no value"):
        ThresholdPolicy(rule="max_f1", value=0.3)


def test_a_pr_auc_gate_refuses_a_model_without_signal_that_an_accuracy_gate_passes() -> None:
    """On a 5 %-positive label, "always no" is 95 % accurate: accuracy cannot tell a useful model from a
    useless one, average precision (PR AUC) can."""
    from tollgate_core.models import Gates
    from tollgate_registry.gates import bound_gates

    useful = trained(None)
    rng = np.random.default_rng(11)
    records = [dict(r) for r in rare_records()]
    labels = [r["event"] for r in records]
    for r, y in zip(records, rng.permutation(labels), strict=True):
        r["event"] = bool(y)  # the same rate, no relation to the features
    useless = train_model(RARE, records, TrainingConfig(family="logistic_regression", threads=1, seed=3))

    accuracy_only = Gates(metrics={"accuracy": {"min": 0.9}}, require_parity=False)  # type: ignore[dict-item]
    pr_auc = Gates(metrics={"average_precision": {"min": 0.2}}, require_parity=False)  # type: ignore[dict-item]
    assert all(r.passed for r in bound_gates(useful.metrics, accuracy_only))
    assert all(r.passed for r in bound_gates(useless.metrics, accuracy_only))  # the trap
    assert all(r.passed for r in bound_gates(useful.metrics, pr_auc)), useful.metrics
    (refused,) = bound_gates(useless.metrics, pr_auc)
    assert not refused.passed and refused.gate == "min:average_precision", useless.metrics
