"""train_model end to end: every family converts and passes parity, runs are reproducible and recorded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn.metrics import roc_auc_score

from tests.unit.trainer.cases import CREDIT, DELIVERY, RISK, dataset
from tollgate_core.reference import ReferenceProfile
from tollgate_demo.datasets import generate_records
from tollgate_trainer.export import ModelSignature
from tollgate_trainer.features import TrainingDataError
from tollgate_trainer.pipeline import MODEL_FAMILIES
from tollgate_trainer.train import TrainingConfig, TrainingResult, train_model

ROOT = Path(__file__).resolve().parents[3]
_RESULTS: dict[tuple[str, str], TrainingResult] = {}


def trained(name: str, family: str) -> TrainingResult:
    """One run per (data set, family), shared by the tests that only read its result."""
    if (name, family) not in _RESULTS:
        contract, records = dataset(name)
        _RESULTS[(name, family)] = train_model(contract, records, TrainingConfig(family=family, threads=1))
    return _RESULTS[(name, family)]


def feeds_from_signature(signature: ModelSignature, records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Build ONNX inputs from the signature alone, as the scorer does."""
    feeds: dict[str, np.ndarray] = {}
    for spec in signature.inputs:
        if spec.dtype == "double":
            feeds[spec.name] = np.array(
                [[np.nan if r[c] is None else float(r[c]) for c in spec.columns] for r in records],
                dtype=np.float64,
            )
        else:
            feeds[spec.name] = np.array(
                [["" if r[c] is None else str(r[c]) for c in spec.columns] for r in records]
            )
            feeds[spec.name] = feeds[spec.name].astype(object)
    return feeds


@pytest.mark.parametrize("family", MODEL_FAMILIES)
@pytest.mark.parametrize("name", ["credit-default", "synthetic-risk", "delivery-time"])
def test_every_family_converts_and_passes_parity(name: str, family: str) -> None:
    result = trained(name, family)
    parity = result.parity
    assert parity.passed, parity
    assert parity.tolerance == 1e-5 and parity.max_abs_diff <= 1e-5
    assert parity.boundary_rows > 0 and parity.rows_checked == parity.holdout_rows + parity.boundary_rows
    if result.task == "classification":
        assert parity.label_agreement == 1.0 and parity.label_disagreements == 0
        assert result.metrics["roc_auc"] > 0.75
        assert {"roc_auc", "log_loss", "accuracy", "f1", "brier", "ece"} <= set(result.metrics)
    else:
        assert parity.max_abs_prediction_diff is not None
        assert result.metrics["r2"] > 0.5
        assert {"rmse", "mae"} <= set(result.metrics)


@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_signature_alone_reproduces_the_holdout_metrics(family: str) -> None:
    """Score the real ISLP holdout (newest 20% by arrival) from the signature and recompute ROC AUC."""
    result = trained("credit-default", family)
    _, records = dataset("credit-default")
    holdout = records[-result.holdout_rows :]
    session = ort.InferenceSession(result.onnx, providers=["CPUExecutionProvider"])
    label, probabilities = session.run(
        ["label", "probabilities"], feeds_from_signature(result.signature, holdout)
    )
    assert result.signature.classes == [False, True] and result.signature.positive_index == 1
    truth = np.array([r["default"] for r in holdout])
    assert np.mean(label == truth) == result.metrics["accuracy"]
    # Tree models give many tied scores; float32 rounding can merge or split a tie, which moves AUC slightly.
    assert roc_auc_score(truth, probabilities[:, 1]) == pytest.approx(result.metrics["roc_auc"], abs=1e-3)
    assert np.array_equal(label, probabilities.argmax(axis=1))


@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_same_inputs_and_seed_give_identical_artifacts(family: str) -> None:
    records = generate_records(RISK, 800, seed=4)
    config = TrainingConfig(family=family, seed=3, threads=1)
    first, second = train_model(RISK, records, config), train_model(RISK, records, config)
    assert first.onnx == second.onnx and first.digest == second.digest
    assert first.data_hash == second.data_hash and first.metrics == second.metrics
    assert first.reference == second.reference
    feeds = feeds_from_signature(first.signature, records)
    outputs = [
        ort.InferenceSession(r.onnx, providers=["CPUExecutionProvider"]).run(None, feeds)
        for r in (first, second)
    ]
    for a, b in zip(*outputs, strict=True):
        assert np.array_equal(a, b)
    if family == "random_forest":  # boosting without early stopping and a linear model draw nothing at random
        assert train_model(RISK, records, config.model_copy(update={"seed": 4})).digest != first.digest


_DIGEST_IN_A_FRESH_PROCESS = """
from tollgate_demo.datasets import generate_records
from tollgate_trainer.train import TrainingConfig, train_model
from tests.unit.trainer.cases import RISK
config = TrainingConfig(family="logistic_regression", threads=1, boundary_pairs=10)
print(train_model(RISK, generate_records(RISK, 200, seed=2), config).digest)
"""


def test_artifacts_do_not_depend_on_the_process() -> None:
    """Byte-identical across processes: 9 is a string hash seed under which skl2onnx, left alone, lists
    the model's opset imports in the other order."""
    digests = []
    for hash_seed in ("0", "9"):
        done = subprocess.run(
            [sys.executable, "-c", _DIGEST_IN_A_FRESH_PROCESS],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
        )
        assert done.returncode == 0, done.stderr
        digests.append(done.stdout.split())
    assert len(digests[0]) == 1 and digests[0] == digests[1]


def test_records_and_data_frame_train_the_same_model() -> None:
    records = generate_records(DELIVERY, 600, seed=2)
    config = TrainingConfig(family="logistic_regression", threads=1)
    from_records = train_model(DELIVERY, records, config)
    from_frame = train_model(DELIVERY, pd.DataFrame(records), config)
    assert from_records.data_hash == from_frame.data_hash
    assert from_records.digest == from_frame.digest
    changed = [dict(r) for r in records]
    changed[10]["distance_km"] += 1.0
    assert train_model(DELIVERY, changed, config).data_hash != from_records.data_hash


def test_result_records_the_run() -> None:
    result = trained("synthetic-risk", "random_forest")
    assert result.contract == "synthetic-risk.v1" and result.contract_digest == RISK.digest
    assert result.seed == 0 and result.hyperparameters["random_state"] == 0
    assert result.hyperparameters["n_estimators"] == 100 and result.hyperparameters["n_jobs"] == 1
    versions = result.library_versions
    assert versions["scikit-learn"] == "1.9.1" and versions["skl2onnx"] == "1.20.0"
    assert versions["onnx"] == "1.23.2" and versions["onnxruntime"] == "1.31.1"
    assert versions["protobuf"].startswith("6.33.")
    assert {"numpy", "pandas", "scipy"} <= set(versions)
    assert result.row_count == 2000 and result.train_rows == 1600 and result.holdout_rows == 400
    assert result.split_ordered_by == "observed_at"
    assert {"prepare", "fit", "evaluate", "convert", "parity", "reference", "total"} <= set(result.timings)
    assert len(result.digest) == 64 and len(result.data_hash) == 64


def test_reference_profile_describes_training_rows_and_holdout_scores() -> None:
    result = trained("synthetic-risk", "hist_gradient_boosting")
    profile = result.reference
    assert ReferenceProfile.model_validate_json(profile.model_dump_json()) == profile
    assert profile.contract == "synthetic-risk.v1" and profile.row_count == result.train_rows
    assert list(profile.features) == RISK.feature_names
    assert profile.prediction.count == result.holdout_rows
    assert 0.0 <= profile.prediction.min <= profile.prediction.max <= 1.0
    assert profile.segment_field == "age_band"
    assert set(profile.segment_metrics) == {"18-29", "30-44", "45-64", "65+"}
    assert profile.segment_metrics == result.segment_metrics and profile.fairness_gap == result.fairness_gap
    gaps = {
        m: max(s[m] for s in result.segment_metrics.values())
        - min(s[m] for s in result.segment_metrics.values())
        for m in ("roc_auc", "accuracy")
    }
    assert result.fairness_gap["roc_auc"] == pytest.approx(gaps["roc_auc"])
    assert result.fairness_gap["accuracy"] == pytest.approx(gaps["accuracy"])


def test_unlabelled_rows_are_skipped() -> None:
    records = generate_records(CREDIT, 1500, seed=5)  # the credit-default label is nullable
    unlabelled = sum(r["default"] is None for r in records)
    assert unlabelled > 0
    result = train_model(CREDIT, records, TrainingConfig(family="logistic_regression", threads=1))
    assert result.unlabelled_rows == unlabelled and result.row_count == 1500 - unlabelled


def test_hyperparameters_can_be_overridden() -> None:
    records = generate_records(RISK, 500, seed=6)
    config = TrainingConfig(
        family="random_forest", hyperparameters={"n_estimators": 7, "max_depth": 3}, threads=1
    )
    result = train_model(RISK, records, config)
    assert result.hyperparameters["n_estimators"] == 7 and result.hyperparameters["max_depth"] == 3
    assert result.parity.passed


def test_invalid_configuration_is_refused() -> None:
    records = generate_records(RISK, 200, seed=6)
    with pytest.raises(ValueError, match="invalid hyperparameters"):
        train_model(RISK, records, TrainingConfig(family="random_forest", hyperparameters={"trees": 3}))
    with pytest.raises(ValidationError):
        TrainingConfig(family="xgboost")


def test_unusable_data_is_refused() -> None:
    records = generate_records(RISK, 200, seed=6)
    with pytest.raises(TrainingDataError, match="labelled rows"):
        train_model(RISK, records[:5])
    one_class = [{**r, "high_risk": False} for r in records]
    with pytest.raises(TrainingDataError, match="no row of class True"):
        train_model(RISK, one_class)
    with pytest.raises(TrainingDataError, match="credit_score"):
        train_model(RISK, pd.DataFrame(records).drop(columns=["credit_score"]))
