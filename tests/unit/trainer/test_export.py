"""Model inputs from contract values, pipeline construction and the exported graph's interface."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from tests.unit.trainer.cases import CREDIT, DELIVERY, RISK
from tollgate_demo.datasets import generate_records
from tollgate_trainer.export import SIGNATURE_METADATA_KEY, TARGET_OPSET, ModelSignature, export_onnx
from tollgate_trainer.features import FeatureLayout, LabelEncoding, TrainingDataError, raw_frame
from tollgate_trainer.pipeline import MODEL_FAMILIES, ModelFamily, build_pipeline


def test_layout_follows_contract_order() -> None:
    layout = FeatureLayout.from_contract(DELIVERY)
    assert layout.numeric == ("distance_km", "items", "basket_value", "raining")
    assert layout.boolean == {"raining"}
    assert layout.category == ("courier", "zone")
    assert layout.categories == (("bike", "car", "foot"), ("north", "south", "east", "west"))


def test_model_frame_encodes_nulls_and_booleans() -> None:
    raw = pd.DataFrame(
        {
            "distance_km": [1.5, None],
            "items": [2, 3],
            "basket_value": [None, 10.0],
            "raining": [True, None],
            "courier": ["bike", None],
            "zone": [None, "north"],
        }
    )
    layout = FeatureLayout.from_contract(DELIVERY)
    feeds = layout.onnx_inputs(layout.model_frame(raw))
    numeric = feeds["numeric"]
    assert numeric.dtype == np.float64 and numeric.shape == (2, 4)
    assert numeric[0].tolist()[:2] == [1.5, 2.0] and np.isnan(numeric[0, 2]) and numeric[0, 3] == 1.0
    assert np.isnan(numeric[1, 0]) and np.isnan(numeric[1, 3])
    assert feeds["category"].tolist() == [["bike", ""], ["", "north"]]


def test_label_encoding() -> None:
    boolean = LabelEncoding.fit(CREDIT.label, [True, False], True)
    assert boolean.classes == (False, True) and boolean.positive_index == 1
    assert boolean.encode([True, False, np.bool_(True)]).tolist() == [1, 0, 1]
    with pytest.raises(TrainingDataError):
        boolean.encode(["maybe"])


def test_unknown_family_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown model family"):
        build_pipeline(RISK, "svm")  # type: ignore[arg-type]


def _fit(family: ModelFamily) -> tuple[Pipeline, bytes, ModelSignature, pd.DataFrame]:
    records = generate_records(RISK, 400, seed=3)
    raw = raw_frame(RISK, records)
    layout = FeatureLayout.from_contract(RISK)
    encoding = LabelEncoding.fit(RISK.label, raw["high_risk"].tolist(), True)
    params = {"random_forest": {"n_estimators": 5}, "hist_gradient_boosting": {"max_iter": 10}}.get(
        family, {}
    )
    pipeline = build_pipeline(RISK, family, params)
    pipeline.fit(layout.model_frame(raw), encoding.encode(raw["high_risk"].tolist()))
    exported = export_onnx(pipeline, RISK, encoding)
    return pipeline, exported.onnx, exported.signature, raw


@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_graph_interface(family: ModelFamily) -> None:
    _, onnx_bytes, signature, _ = _fit(family)
    model = onnx.load_from_string(onnx_bytes)
    assert "ZipMap" not in {node.op_type for node in model.graph.node}
    opsets = {i.domain or "": i.version for i in model.opset_import}
    assert all(version <= TARGET_OPSET[domain] for domain, version in opsets.items())
    inputs = {spec.name: spec for spec in signature.inputs}
    assert inputs["numeric"].dtype == "double" and inputs["numeric"].shape == [None, 16]
    assert inputs["category"].dtype == "string" and inputs["category"].columns == [
        "employment_type",
        "housing",
        "loan_purpose",
        "channel",
    ]
    assert [o.name for o in signature.outputs] == ["label", "probabilities"]
    assert signature.outputs[0].dtype == "int64"
    embedded = {p.key: p.value for p in model.metadata_props}[SIGNATURE_METADATA_KEY]
    assert ModelSignature.model_validate(json.loads(embedded)) == signature


def test_regression_output_is_named_prediction() -> None:
    records = generate_records(DELIVERY, 300, seed=3)
    raw = raw_frame(DELIVERY, records)
    pipeline = build_pipeline(DELIVERY, "hist_gradient_boosting", {"max_iter": 10})
    pipeline.fit(
        FeatureLayout.from_contract(DELIVERY).model_frame(raw), raw["minutes"].astype(float).to_numpy()
    )
    signature = export_onnx(pipeline, DELIVERY).signature
    assert [o.name for o in signature.outputs] == ["prediction"] and signature.classes is None


@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_unknown_categories_and_nulls_score_the_same_on_both_sides(family: ModelFamily) -> None:
    pipeline, onnx_bytes, _, raw = _fit(family)
    odd = raw.head(4).copy()
    odd.loc[0, "channel"] = "carrier-pigeon"  # not in the contract's list: encoded as all zeros
    odd.loc[1, "annual_income"] = None
    odd.loc[2, "loan_purpose"] = None
    odd.loc[3, "autopay_enabled"] = None
    layout = FeatureLayout.from_contract(RISK)
    frame = layout.model_frame(odd)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    label, probabilities = session.run(None, layout.onnx_inputs(frame))
    assert np.max(np.abs(probabilities - pipeline.predict_proba(frame))) < 1e-5
    assert np.array_equal(label, pipeline.predict(frame))
