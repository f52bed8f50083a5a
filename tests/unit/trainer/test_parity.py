"""The parity gate compares honestly: it finds the boundary, fails on a wrong model, applies its settings."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from tests.unit.trainer.cases import DELIVERY, RISK
from tollgate_core.contracts import DatasetContract
from tollgate_demo.datasets import generate_records
from tollgate_trainer.export import export_onnx
from tollgate_trainer.features import FeatureLayout, LabelEncoding, raw_frame
from tollgate_trainer.parity import boundary_rows, check_parity
from tollgate_trainer.pipeline import ModelFamily, build_pipeline


def fitted(
    contract: DatasetContract, family: ModelFamily, seed: int, **params: object
) -> tuple[Pipeline, pd.DataFrame, LabelEncoding | None]:
    raw = raw_frame(contract, generate_records(contract, 600, seed=seed))
    raw = raw[raw[contract.label.name].notna()].reset_index(drop=True)
    frame = FeatureLayout.from_contract(contract).model_frame(raw)
    labels = raw[contract.label.name].tolist()
    encoding = None
    if contract.label.task == "classification":
        encoding = LabelEncoding.fit(contract.label, labels, contract.label.positive_class)
        y = encoding.encode(labels)
    else:
        y = np.asarray(labels, dtype=float)
    pipeline = build_pipeline(contract, family, params, seed=0).fit(frame, y)
    return pipeline, frame, encoding


def test_boundary_rows_straddle_the_decision_boundary() -> None:
    pipeline, frame, _ = fitted(RISK, "logistic_regression", seed=1)
    layout = FeatureLayout.from_contract(RISK)
    rows = boundary_rows(pipeline, layout, frame, pairs=50, steps=24, rng=np.random.default_rng(0))
    half = len(rows) // 2
    assert half > 0 and len(rows) == 2 * half
    below, above = rows.iloc[:half], rows.iloc[half:]
    assert np.all(pipeline.predict(below) != pipeline.predict(above))
    # Bisected to the boundary: the positive-class probability is 0.5 to within a float32 step of the path.
    p = pipeline.predict_proba(rows)[:, 1]
    assert np.max(np.abs(p - 0.5)) < 1e-4
    # Category features are copied from real rows, never invented.
    assert set(rows["channel"]) <= set(frame["channel"])


def test_parity_fails_for_a_different_model() -> None:
    exported_from, frame, encoding = fitted(RISK, "random_forest", seed=1, n_estimators=10)
    other, _, _ = fitted(RISK, "random_forest", seed=2, n_estimators=10)
    onnx_bytes = export_onnx(exported_from, RISK, encoding).onnx
    layout = FeatureLayout.from_contract(RISK)
    same = check_parity(exported_from, onnx_bytes, layout, frame, "classification", boundary_pairs=20)
    assert same.passed
    wrong = check_parity(other, onnx_bytes, layout, frame, "classification", boundary_pairs=20)
    assert not wrong.passed
    assert wrong.max_abs_diff > 1e-2 and wrong.label_disagreements > 0 and wrong.label_agreement is not None
    assert wrong.label_agreement < 1.0


def test_tolerance_and_agreement_are_applied_as_configured() -> None:
    pipeline, frame, encoding = fitted(RISK, "hist_gradient_boosting", seed=1, max_iter=20)
    onnx_bytes = export_onnx(pipeline, RISK, encoding).onnx
    layout = FeatureLayout.from_contract(RISK)
    strict = check_parity(pipeline, onnx_bytes, layout, frame, "classification", tolerance=0.0)
    assert strict.max_abs_diff > 0.0 and not strict.passed  # float32 trees are not bit-exact
    assert strict.tolerance == 0.0 and strict.min_label_agreement == 1.0
    loose = check_parity(pipeline, onnx_bytes, layout, frame, "classification", boundary_pairs=0)
    assert loose.passed and loose.boundary_rows == 0 and loose.rows_checked == len(frame)


def test_regression_parity_is_relative_to_the_label_spread() -> None:
    pipeline, frame, _ = fitted(DELIVERY, "random_forest", seed=1, n_estimators=10)
    onnx_bytes = export_onnx(pipeline, DELIVERY).onnx
    layout = FeatureLayout.from_contract(DELIVERY)
    result = check_parity(
        pipeline, onnx_bytes, layout, frame, "regression", label_scale=20.0, boundary_pairs=30
    )
    assert result.passed and result.compared == "scaled_prediction" and result.label_agreement is None
    assert result.max_abs_prediction_diff is not None
    assert result.max_abs_diff == result.max_abs_prediction_diff / 20.0
    assert result.boundary_rows == 30


def test_histogram_boosting_thresholds_convert_exactly() -> None:
    """A split threshold that rounds up to a float32 value must not send that value the other way in ONNX.

    Between adjacent float32 values a < b (b with an even mantissa), the threshold (a + b) / 2 rounds to b;
    scikit-learn sends b right (b > threshold), a plain float32 copy of the threshold would send it left.
    """
    contract = DatasetContract.model_validate(
        {
            "contract": "tiny",
            "version": 1,
            "entity_id": {"name": "id", "type": "string"},
            "label": {"name": "y", "type": "boolean", "task": "classification"},
            "features": [{"name": "x", "type": "number"}],
        }
    )
    a = np.nextafter(np.float32(1.0), np.float32(2.0))
    b = np.nextafter(a, np.float32(2.0))
    assert np.float32((float(a) + float(b)) / 2) == b
    frame = pd.DataFrame({"x": np.repeat([float(a), float(b)], 200)})
    y = np.repeat([0, 1], 200)
    encoding = LabelEncoding.fit(contract.label, [False, True], None)
    pipeline = build_pipeline(contract, "hist_gradient_boosting", {"max_iter": 3}).fit(frame, y)
    onnx_bytes = export_onnx(pipeline, contract, encoding).onnx
    layout = FeatureLayout.from_contract(contract)
    result = check_parity(pipeline, onnx_bytes, layout, frame, "classification", boundary_pairs=0)
    assert result.passed, result
    assert result.label_agreement == 1.0
