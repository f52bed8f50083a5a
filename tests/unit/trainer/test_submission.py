"""Submitted models: the ONNX contract check, skops loading (never a pickle, never an untrusted type) and
the platform's independent evaluation on its own holdout."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import skops.io
from sklearn.preprocessing import FunctionTransformer

from tests.submission_support import one_input_model, outside_model
from tests.unit.trainer.cases import CREDIT, RISK, dataset
from tollgate_core.lifecycle import evaluation_digest
from tollgate_scorer.explain import build_explainer
from tollgate_scorer.instances import InstanceReader
from tollgate_scorer.signature import read_signature
from tollgate_trainer.features import LabelEncoding
from tollgate_trainer.pipeline import MODEL_FAMILIES
from tollgate_trainer.runner import evaluation_report, parity_record
from tollgate_trainer.submission import (
    SubmissionConfig,
    SubmissionRefused,
    contract_mismatches,
    evaluate_submission,
    explanation_reference,
    load_pipeline,
    prepare,
    read_onnx,
    servable_onnx,
)
from tollgate_trainer.train import TrainingConfig, train_model

CONFIG = SubmissionConfig(holdout_fraction=0.2, parity_tolerance=1e-5, min_label_agreement=1.0)
CREDIT_CLASSES = [False, True]


def credit_records() -> list[dict[str, Any]]:
    return list(dataset("credit-default")[1])[:3000]


def test_an_outside_model_exported_like_the_trainer_matches_the_contract() -> None:
    onnx_bytes, _, _ = outside_model(CREDIT, credit_records())
    model = read_onnx(onnx_bytes)
    assert contract_mismatches(model, CREDIT, CREDIT_CLASSES) == []


def test_the_trainers_own_exports_match_their_contract() -> None:
    contract, records = dataset("synthetic-risk")
    result = train_model(contract, records, TrainingConfig(family="logistic_regression", threads=1))
    classes = list(result.signature.classes or [])
    assert contract_mismatches(onnx.load_model_from_string(result.onnx), contract, classes) == []


def test_every_mismatched_input_and_output_is_named() -> None:
    model = read_onnx(one_input_model(CREDIT, credit_records()))
    problems = contract_mismatches(model, CREDIT, CREDIT_CLASSES)
    text = "\n".join(problems)
    assert any(p.startswith("input 'numeric': missing") and "balance, income" in p for p in problems), text
    assert any(p.startswith("input 'category': missing") and "(student)" in p for p in problems), text
    assert any(p.startswith("input 'input': not an input of contract credit-default.v1") for p in problems)
    assert len(problems) == 3, text  # its outputs (label int64, probabilities [N, 2]) are right


def test_wrong_widths_types_and_class_counts_are_named() -> None:
    onnx_bytes, _, _ = outside_model(RISK, list(dataset("synthetic-risk")[1])[:1500])
    model = read_onnx(onnx_bytes)
    numeric = next(i for i in model.graph.input if i.name == "numeric")
    numeric.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    numeric.type.tensor_type.shape.dim[1].dim_value = 3
    problems = contract_mismatches(model, RISK, [False, True, "third"])
    assert any(
        p.startswith("input 'numeric': type tensor(float), contract needs tensor(double)") for p in problems
    )
    assert any(p.startswith("input 'numeric': shape [N, 3], contract needs") for p in problems), problems
    assert any(p.startswith("output 'probabilities': shape [N, 2]") and "3 classes" in p for p in problems)


def test_a_regressor_is_held_to_its_prediction_output() -> None:
    onnx_bytes, _, _ = outside_model(CREDIT, credit_records())
    from tests.unit.trainer.cases import DELIVERY

    problems = contract_mismatches(read_onnx(onnx_bytes), DELIVERY, None)
    assert "output 'prediction': missing; a regressor needs tensor(float) [N, 1]" in problems


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the ONNX file is empty"),
        (b"definitely not a model", "not an ONNX model"),
        (bytes(range(256)) * 8, "not "),
    ],
)
def test_what_is_not_onnx_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(SubmissionRefused) as refused:
        read_onnx(data)
    assert refused.value.status == 422 and message in str(refused.value)


def test_a_file_over_the_limit_is_413() -> None:
    with pytest.raises(SubmissionRefused) as refused:
        read_onnx(b"x" * 101, limit=100)
    assert refused.value.status == 413 and "at most 100" in str(refused.value)
    with pytest.raises(SubmissionRefused) as refused:
        load_pipeline(b"x" * 101, limit=100)
    assert refused.value.status == 413


def test_a_graph_onnxruntime_cannot_run_is_refused() -> None:
    onnx_bytes, _, _ = outside_model(CREDIT, credit_records())
    model = onnx.load_model_from_string(onnx_bytes)
    model.opset_import[0].version = 99  # an opset no runtime implements
    with pytest.raises(SubmissionRefused) as refused:
        read_onnx(model.SerializeToString())
    assert refused.value.status == 422


# ------------------------------------------------------------------------------------------------ skops


@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_skops_loads_the_trainers_pipelines_of_every_family(family: str) -> None:
    from tollgate_trainer.features import FeatureLayout, raw_frame
    from tollgate_trainer.pipeline import build_pipeline

    contract, records = dataset("credit-default")
    raw = raw_frame(contract, list(records)[:1500])
    x = FeatureLayout.from_contract(contract).model_frame(raw)
    y = LabelEncoding.fit(contract.label, raw["default"].tolist(), True).encode(raw["default"].tolist())
    overrides = {"n_jobs": 1, "n_estimators": 10} if family == "random_forest" else {}
    pipeline = build_pipeline(contract, family, overrides, 0).fit(x, y)  # type: ignore[arg-type]
    loaded = load_pipeline(skops.io.dumps(pipeline))
    assert np.array_equal(loaded.predict_proba(x), pipeline.predict_proba(x))


def test_a_pickle_is_refused_without_being_loaded() -> None:
    _, _, pipeline = outside_model(CREDIT, credit_records())
    with pytest.raises(SubmissionRefused) as refused:
        load_pipeline(pickle.dumps(pipeline))
    assert "pickle, which the platform never loads" in str(refused.value)
    assert refused.value.field == "sklearn" and refused.value.status == 422


def test_a_zip_that_is_not_skops_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("hello.txt", "hi")
    with pytest.raises(SubmissionRefused) as refused:
        load_pipeline(buffer.getvalue())
    assert "cannot be read" in str(refused.value)


def test_a_skops_file_with_untrusted_types_is_refused_naming_them() -> None:
    dangerous = FunctionTransformer(func=os.system)
    with pytest.raises(SubmissionRefused) as refused:
        load_pipeline(skops.io.dumps(dangerous))
    message = str(refused.value)
    assert "types the platform does not trust" in message and "system" in message, message


# ------------------------------------------------------------------------------------------ evaluation


def evaluated(with_pipeline: bool, flip: bool = False) -> Any:
    records = credit_records()
    onnx_bytes, skops_bytes, _ = outside_model(CREDIT, records, flip_labels=flip)
    raw, encoding = prepare(CREDIT, records)
    reference = explanation_reference(CREDIT, raw, CONFIG.holdout_fraction)
    servable, signature = servable_onnx(read_onnx(onnx_bytes), CREDIT, encoding, reference)
    pipeline = load_pipeline(skops_bytes) if with_pipeline else None
    return evaluate_submission(CREDIT, raw, encoding, servable, signature, pipeline, CONFIG), servable


def test_the_platform_evaluates_a_submission_on_its_own_holdout() -> None:
    result, servable = evaluated(with_pipeline=True)
    assert result.holdout_rows == 600 and result.train_rows == 2400
    assert result.metrics["roc_auc"] > 0.9 and {"ece", "brier", "log_loss"} <= set(result.metrics)
    assert set(result.segment_metrics) == {"No", "Yes"} and "roc_auc" in result.fairness_gap
    assert sum(b["count"] for b in result.calibration) == 600
    assert set(result.baselines) == {"majority", "linear"}
    assert result.parity.passed and result.parity.rows_checked >= 600, result.parity
    report = evaluation_report(result, parity_record(result))
    assert len(evaluation_digest(report)) == 64 and report.parity is not None

    # The stored artifact serves: the scorer reads the platform's signature and its contract columns.
    session = ort.InferenceSession(servable, providers=["CPUExecutionProvider"])
    signature = read_signature(session)
    assert signature.classes == [False, True] and signature.positive_index == 1
    InstanceReader(CREDIT, signature)
    # ... and explains its decisions against the training split's reference point (sampled Shapley values).
    explainer = build_explainer(servable, session, signature)
    assert type(explainer).__name__ == "SampledShapleyExplainer"


def test_without_a_pipeline_parity_is_not_checked() -> None:
    result, _ = evaluated(with_pipeline=False)
    assert result.parity.rows_checked == 0
    assert evaluation_report(result, None).parity is None


def test_a_model_worse_than_the_baselines_is_measured_so() -> None:
    result, _ = evaluated(with_pipeline=False, flip=True)
    assert result.metrics["roc_auc"] < 0.2 < result.baselines["linear"]["roc_auc"]


def test_a_pipeline_that_disagrees_with_its_onnx_fails_parity() -> None:
    records = credit_records()
    onnx_bytes, _, _ = outside_model(CREDIT, records)
    _, other_skops, _ = outside_model(CREDIT, records, c=0.001)
    raw, encoding = prepare(CREDIT, records)
    servable, signature = servable_onnx(read_onnx(onnx_bytes), CREDIT, encoding)
    result = evaluate_submission(
        CREDIT, raw, encoding, servable, signature, load_pipeline(other_skops), CONFIG
    )
    assert not result.parity.passed and result.parity.max_abs_diff > 1e-5


def test_the_catalogs_decision_threshold_is_built_into_a_submitted_classifier() -> None:
    from tollgate_core.thresholds import ThresholdPolicy
    from tollgate_trainer.submission import decision_threshold

    records = credit_records()
    onnx_bytes, skops_bytes, _ = outside_model(CREDIT, records)
    raw, encoding = prepare(CREDIT, records)
    for policy in (ThresholdPolicy(rule="fixed", value=0.05), ThresholdPolicy(rule="max_f1")):
        choice = decision_threshold(CREDIT, raw, encoding, onnx_bytes, policy, CONFIG.holdout_fraction)
        assert choice is not None and 0 < choice.threshold < 1
        servable, signature = servable_onnx(read_onnx(onnx_bytes), CREDIT, encoding, None, choice.threshold)
        assert signature.decision_threshold == choice.threshold
        config = SubmissionConfig(0.2, 1e-5, 1.0, threshold=choice)
        result = evaluate_submission(
            CREDIT, raw, encoding, servable, signature, load_pipeline(skops_bytes), config
        )
        # The graph decides by the threshold, and parity compares labels decided the same way.
        assert result.parity.passed and result.threshold == choice, result.parity
        assert result.reference.decision_threshold == choice.threshold
        session = ort.InferenceSession(servable, providers=["CPUExecutionProvider"])
        feeds = {
            "numeric": np.array([[r["balance"], r["income"]] for r in records[:400]], dtype=np.float64),
            "category": np.array([[r["student"]] for r in records[:400]], dtype=object),
        }
        label, proba = session.run(["label", "probabilities"], feeds)
        assert np.array_equal(label, (proba[:, 1] >= choice.threshold).astype(np.int64))
    assert decision_threshold(CREDIT, raw, encoding, onnx_bytes, None, 0.2) is None
