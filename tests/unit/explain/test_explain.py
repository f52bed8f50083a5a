"""Per-decision attributions of the scorer (tollgate_scorer.explain) against independent oracles.

The models are built with scikit-learn and the trainer's own pipeline and exporter (tests may; the scorer's
module may not). Oracles:

- linear: coefficient x (preprocessed x - training mean of the preprocessed column), computed here from the
  fitted scikit-learn pipeline, to 1e-6;
- random forest: exact Shapley values of the same game (v(S) = f(x_S, reference_rest)), computed here by
  brute force over all 2^d coalitions of a model with d = 8 features.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from functools import cache
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.pipeline import Pipeline

from tollgate_core.contracts import DatasetContract
from tollgate_demo.datasets import generate_records
from tollgate_scorer.explain import (
    EXPLANATION_METADATA_KEY,
    ExplanationUnavailable,
    LinearExplainer,
    SampledShapleyExplainer,
    build_explainer,
)
from tollgate_scorer.signature import read_signature
from tollgate_trainer.explanation import explanation_spec
from tollgate_trainer.export import export_onnx
from tollgate_trainer.features import FeatureLayout, LabelEncoding, raw_frame
from tollgate_trainer.train import TrainingConfig, train_model

CONTRACT = DatasetContract.model_validate(
    {
        "contract": "explain-test",
        "version": 1,
        "description": "Eight features of every type, for the explanation tests.",
        "entity_id": {"name": "id", "type": "string"},
        "label": {"name": "bad", "type": "boolean", "task": "classification", "positive_class": True},
        "features": [
            {"name": "utilization", "type": "number", "minimum": 0, "maximum": 1},
            {"name": "income", "type": "number", "minimum": 0, "maximum": 200000, "nullable": True},
            {"name": "late_payments", "type": "integer", "minimum": 0, "maximum": 12},
            {"name": "age_months", "type": "integer", "minimum": 0, "maximum": 400},
            {"name": "rate", "type": "number", "minimum": 0, "maximum": 30},
            {"name": "housing", "type": "category", "categories": ["own", "rent", "other"]},
            {"name": "channel", "type": "category", "categories": ["branch", "online"], "nullable": True},
            {"name": "autopay", "type": "boolean"},
        ],
    }
)
REGRESSION = DatasetContract.model_validate(
    {
        **CONTRACT.model_dump(mode="json", exclude_none=True),
        "contract": "explain-test-regression",
        "label": {"name": "loss", "type": "number", "task": "regression"},
    }
)
LAYOUT = FeatureLayout.from_contract(CONTRACT)


class Fitted:
    def __init__(self, contract: DatasetContract, family: str, rows: int = 3000) -> None:
        from tollgate_trainer.pipeline import build_pipeline

        raw = raw_frame(contract, generate_records(contract, rows, seed=1))
        self.layout = FeatureLayout.from_contract(contract)
        labels = raw[contract.label.name].tolist()
        self.encoding: LabelEncoding | None = None
        if contract.label.task == "classification":
            self.encoding = LabelEncoding.fit(contract.label, labels, contract.label.positive_class)
            y = self.encoding.encode(labels)
        else:
            y = np.asarray(labels, dtype=np.float64)
        self.x_train = self.layout.model_frame(raw)
        overrides = {"n_estimators": 30, "max_depth": 6, "n_jobs": 1} if family == "random_forest" else {}
        self.pipeline: Pipeline = build_pipeline(contract, family, overrides, seed=0)  # type: ignore[arg-type]
        self.pipeline.fit(self.x_train, y)
        self.spec = explanation_spec(self.pipeline, self.layout, self.x_train, family)
        self.onnx = export_onnx(self.pipeline, contract, self.encoding, explanation=self.spec).onnx
        self.session = ort.InferenceSession(self.onnx, providers=["CPUExecutionProvider"])
        self.signature = read_signature(self.session)
        test_raw = raw_frame(contract, generate_records(contract, 40, seed=2))
        self.x_test = self.layout.model_frame(test_raw)
        self.feeds = self.layout.onnx_inputs(self.x_test)


@cache
def fitted(contract_name: str, family: str) -> Fitted:
    return Fitted(CONTRACT if contract_name == "classification" else REGRESSION, family)


def _linear_oracle(f: Fitted) -> tuple[np.ndarray, np.ndarray]:
    """Per preprocessed column: coefficient x (z - training mean of z), from scikit-learn alone."""
    preprocess = f.pipeline.steps[0][1]
    estimator = f.pipeline.steps[-1][1]
    z = np.asarray(preprocess.transform(f.x_test), dtype=np.float64)
    mean = np.asarray(preprocess.transform(f.x_train), dtype=np.float64).mean(axis=0)
    coef = np.asarray(estimator.coef_, dtype=np.float64).reshape(-1)
    return z, coef * (z - mean)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_linear_attributions_are_coefficient_times_distance_from_the_reference_mean(task: str) -> None:
    f = fitted(task, "logistic_regression")
    explainer = build_explainer(f.onnx, f.session, f.signature)
    assert isinstance(explainer, LinearExplainer)
    z_expected, expected = _linear_oracle(f)
    z, columns = explainer.column_contributions(f.feeds)
    np.testing.assert_allclose(z, z_expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(columns, expected, rtol=0, atol=1e-6)

    explanations = explainer.explain(f.feeds)
    estimator = f.pipeline.steps[-1][1]
    margin = (
        estimator.decision_function(f.pipeline.steps[0][1].transform(f.x_test))
        if task == "classification"
        else f.pipeline.predict(f.x_test)
    )
    names = [a.feature for a in explanations[0].attributions]
    assert names == [*f.layout.numeric, *f.layout.category]
    for i, explanation in enumerate(explanations):
        assert explanation.output == ("log_odds" if task == "classification" else "prediction")
        per_feature = {
            name: sum(c for c, col in zip(expected[i], explainer.column_features, strict=True) if col == name)
            for name in names
        }
        for attribution in explanation.attributions:
            assert attribution.contribution == pytest.approx(per_feature[attribution.feature], abs=1e-6)
        assert explanation.value == pytest.approx(float(margin[i]), abs=1e-6)
        total = sum(a.contribution for a in explanation.attributions)
        assert total == pytest.approx(explanation.value - explanation.baseline, abs=1e-9)


def _forest_scores(f: Fitted, feeds: dict[str, np.ndarray]) -> np.ndarray:
    (probabilities,) = f.session.run(["probabilities"], feeds)
    assert f.encoding is not None and f.encoding.positive_index is not None
    return np.asarray(probabilities, dtype=np.float64)[:, f.encoding.positive_index]


def _exact_shapley(f: Fitted, x: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> np.ndarray:
    """Shapley values of v(S) = f(x_S, reference_rest) by brute force over all coalitions."""
    columns = [(name, j) for name in ("numeric", "category") if name in x for j in range(x[name].shape[1])]
    d = len(columns)
    coalitions = list(itertools.product([False, True], repeat=d))
    feeds: dict[str, list[np.ndarray]] = {name: [] for name in x}
    for coalition in coalitions:
        row = {name: reference[name].copy() for name in x}
        for inside, (name, j) in zip(coalition, columns, strict=True):
            if inside:
                row[name][0, j] = x[name][0, j]
        for name in x:
            feeds[name].append(row[name])
    values = _forest_scores(f, {name: np.concatenate(rows) for name, rows in feeds.items()})
    v = dict(zip(coalitions, values.tolist(), strict=True))
    phi = np.zeros(d)
    for coalition in coalitions:
        size = sum(coalition)
        for i in range(d):
            if coalition[i]:
                continue
            weight = math.factorial(size) * math.factorial(d - size - 1) / math.factorial(d)
            with_i = tuple(True if k == i else c for k, c in enumerate(coalition))
            phi[i] += weight * (v[with_i] - v[coalition])
    return phi


# The stated tolerances of the sampled Shapley values (64 permutations, 32 antithetic pairs):
# Efficiency holds per permutation, so the sum is exact up to rounding; the forest computes in float32 and
# the same row may differ in its last float32 bits between a run of 1 row and a batched run (about 1e-7).
SUM_TOLERANCE = 1e-6
ABS_TOLERANCE = 0.02  # each value against the exact one, in probability units
MATERIAL = 0.01  # features whose exact |value| is above this must agree in sign


def test_forest_attributions_add_up_and_agree_with_exact_shapley_values() -> None:
    f = fitted("classification", "random_forest")
    assert len(f.layout.columns) == 8
    explainer = build_explainer(f.onnx, f.session, f.signature, permutations=64, seed=7)
    assert isinstance(explainer, SampledShapleyExplainer)
    reference = {
        "numeric": np.array([f.spec["reference"]["numeric"]], dtype=np.float64),
        "category": np.array([f.spec["reference"]["category"]], dtype=object),
    }
    baseline = float(_forest_scores(f, reference)[0])
    rows = 12
    explanations = explainer.explain({name: a[:rows] for name, a in f.feeds.items()})
    predictions = _forest_scores(f, {name: a[:rows] for name, a in f.feeds.items()})
    errors = []
    for i, explanation in enumerate(explanations):
        assert explanation.baseline == pytest.approx(baseline, abs=SUM_TOLERANCE)
        assert explanation.value == pytest.approx(float(predictions[i]), abs=SUM_TOLERANCE)
        total = sum(a.contribution for a in explanation.attributions)
        assert total == pytest.approx(explanation.value - explanation.baseline, abs=1e-12)
        phi = np.array([a.contribution for a in explanation.attributions])
        assert phi.sum() == pytest.approx(predictions[i] - baseline, abs=SUM_TOLERANCE)
        exact = _exact_shapley(f, {name: a[i : i + 1] for name, a in f.feeds.items()}, reference)
        errors.append(float(np.abs(phi - exact).max()))
        material = np.abs(exact) > MATERIAL
        assert (np.sign(phi[material]) == np.sign(exact[material])).all(), (phi, exact)
        # Rank: the order of the material features by |value| is the exact order, except where two exact
        # values are closer than the tolerance (then either order is right).
        order = np.argsort(-np.abs(phi))
        for a, b in itertools.combinations(order, 2):  # a ranked above b by the sampled values
            if material[a] or material[b]:
                assert abs(exact[a]) >= abs(exact[b]) - 2 * ABS_TOLERANCE, (phi, exact)
        top = int(np.argmax(np.abs(exact)))
        if np.abs(exact[top]) - np.sort(np.abs(exact))[-2] > 2 * ABS_TOLERANCE:
            assert int(order[0]) == top
    assert max(errors) <= ABS_TOLERANCE, errors


def test_sampled_explanations_are_deterministic_and_batched_rows_match_single_rows() -> None:
    f = fitted("classification", "random_forest")
    first = build_explainer(f.onnx, f.session, f.signature, permutations=16, seed=3)
    second = build_explainer(f.onnx, f.session, f.signature, permutations=16, seed=3)
    feeds = {name: a[:5] for name, a in f.feeds.items()}
    together = first.explain(feeds)
    assert together == second.explain(feeds)
    for i in range(5):
        (alone,) = first.explain({name: a[i : i + 1] for name, a in feeds.items()})
        for a, b in zip(alone.attributions, together[i].attributions, strict=True):
            assert a.feature == b.feature and a.value == b.value
            assert a.contribution == pytest.approx(b.contribution, abs=1e-12)


def test_one_session_run_per_request() -> None:
    f = fitted("classification", "random_forest")
    explainer = build_explainer(f.onnx, f.session, f.signature, permutations=8, seed=0)
    assert isinstance(explainer, SampledShapleyExplainer)
    calls: list[int] = []
    real = explainer._session

    class Counting:
        def run(self, names: Any, feeds: dict[str, np.ndarray]) -> Any:
            calls.append(len(next(iter(feeds.values()))))
            return real.run(names, feeds)

    explainer._session = Counting()  # type: ignore[assignment]
    explainer.explain({name: a[:3] for name, a in f.feeds.items()})
    assert calls == [3 * explainer.coalitions_per_row]


def test_reason_codes_are_the_largest_contributions_by_magnitude() -> None:
    f = fitted("classification", "logistic_regression")
    explainer = build_explainer(f.onnx, f.session, f.signature)
    (explanation,) = explainer.explain({name: a[:1] for name, a in f.feeds.items()})
    top = explanation.top(3)
    magnitudes = sorted((abs(a.contribution) for a in explanation.attributions), reverse=True)
    assert [abs(a.contribution) for a in top] == magnitudes[:3]
    as_dict = explanation.as_dict(top_k=3)
    assert [a["feature"] for a in as_dict["attributions"]] == [a.feature for a in top]
    values = {a.feature: a.value for a in explanation.attributions}
    assert isinstance(values["housing"], str) and isinstance(values["utilization"], float)


def test_the_trainer_writes_the_reference_into_the_artifact() -> None:
    records = generate_records(CONTRACT, 400, seed=5)
    result = train_model(CONTRACT, records, TrainingConfig(family="logistic_regression", threads=1))
    session = ort.InferenceSession(result.onnx, providers=["CPUExecutionProvider"])
    assert EXPLANATION_METADATA_KEY in session.get_modelmeta().custom_metadata_map
    explainer = build_explainer(result.onnx, session, read_signature(session))
    frame = LAYOUT.model_frame(raw_frame(CONTRACT, records[:3]))
    assert len(explainer.explain(LAYOUT.onnx_inputs(frame))) == 3
    # The numeric reference is the training mean of each feature, as in the reference profile.
    spec_means = explainer_reference_means(result.onnx)
    for name, value in spec_means.items():
        summary = result.reference.features[name]
        assert value == pytest.approx(summary.mean, rel=1e-12)  # type: ignore[union-attr]


def explainer_reference_means(onnx_bytes: bytes) -> dict[str, float]:
    import json

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    spec = json.loads(session.get_modelmeta().custom_metadata_map[EXPLANATION_METADATA_KEY])
    booleans = LAYOUT.boolean
    return {
        name: value
        for name, value in zip(LAYOUT.numeric, spec["reference"]["numeric"], strict=True)
        if name not in booleans
    }


def test_an_artifact_without_a_reference_cannot_be_explained() -> None:
    f = fitted("classification", "logistic_regression")
    bare = export_onnx(f.pipeline, CONTRACT, f.encoding).onnx
    session = ort.InferenceSession(bare, providers=["CPUExecutionProvider"])
    with pytest.raises(ExplanationUnavailable, match=r"no 'tollgate\.explanation' metadata"):
        build_explainer(bare, session, read_signature(session))


def test_the_scorer_module_does_not_import_scikit_learn() -> None:
    code = "import sys, tollgate_scorer.explain; sys.exit('sklearn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_a_loaded_version_carries_its_explainer_or_the_reason_it_has_none() -> None:
    from tollgate_core.contracts import ContractRegistry
    from tollgate_scorer.model import SessionConfig, load_serving_model

    f = fitted("classification", "random_forest")
    contracts = ContractRegistry([CONTRACT])
    load = {
        "contracts": contracts,
        "expected_contract": None,
        "config": SessionConfig(),
        "pii_key": b"k" * 32,
    }
    served = load_serving_model("m", "1", "d", f.onnx, warmup_rounds=1, explain_permutations=4, **load)  # type: ignore[arg-type]
    assert isinstance(served.explainer, SampledShapleyExplainer) and served.explain_error is None
    assert len(served.explainer.permutations) == 4
    bare = export_onnx(f.pipeline, CONTRACT, f.encoding).onnx
    plain = load_serving_model("m", "2", "d", bare, warmup_rounds=1, **load)  # type: ignore[arg-type]
    assert plain.explainer is None
    assert plain.explain_error is not None and "tollgate.explanation" in plain.explain_error
    assert len(plain.run(f.layout.onnx_inputs(f.x_test)).labels) == len(f.x_test)  # it serves all the same


def test_the_catalog_asks_for_reason_codes_and_the_log_event_carries_them_optionally() -> None:
    import yaml

    from tollgate_core.models import ModelSpec
    from tollgate_core.paths import schemas_dir
    from tollgate_core.scoring import InferenceLogPayload

    document = yaml.safe_load((schemas_dir() / "models" / "credit-default-risk.yaml").read_text())
    assert ModelSpec.model_validate(document).explanations is None
    spec = ModelSpec.model_validate({**document, "explanations": {"top_k": 2}})
    assert spec.explanations is not None and spec.explanations.top_k == 2
    with pytest.raises(ValueError, match="top_k"):
        ModelSpec.model_validate({**document, "explanations": {"top_k": 0}})
    event = {
        "request_id": "r",
        "model": "m",
        "version": "1",
        "route": "champion",
        "channel": "http",
        "contract": "credit-default.v1",
        "inputs": {},
        "outputs": {"prediction": True},
        "latency_ms": 1.0,
    }
    assert InferenceLogPayload.model_validate(event).explanation is None  # v1 events stay valid
    reasons = {"method": "linear", "output": "log_odds", "baseline": -1.0, "value": 0.5}
    explained = {
        **event,
        "explanation": {**reasons, "reasons": [{"feature": "balance", "contribution": 1.5}]},
    }
    assert InferenceLogPayload.model_validate(explained).explanation is not None


class CapturedLog:
    """The scorer's inference log, reduced to what it is handed (entries now, deferred ones built here)."""

    accepting = True
    refused = 0

    def __init__(self) -> None:
        self.entries: list[Any] = []

    def append(self, entry: Any) -> None:
        self.entries.append(entry)

    def defer(self, count: int, build: Any) -> None:
        built = build()
        assert len(built) == count
        self.entries.extend(built)


def test_the_request_path_explains_on_request_and_logs_reason_codes_when_the_catalog_asks() -> None:
    import orjson

    from tollgate_core.contracts import ContractRegistry
    from tollgate_core.models import ModelSpec
    from tollgate_core.scoring import InferenceLogEvent
    from tollgate_scorer.core import Scorer, ScoringStats
    from tollgate_scorer.http import result_rows
    from tollgate_scorer.inference_log import InferenceEventEncoder
    from tollgate_scorer.model import SessionConfig, load_serving_model
    from tollgate_scorer.routing import ModelRoute, ModelTable

    contracts = ContractRegistry([CONTRACT])
    table = ModelTable()
    for name, family in (("lin", "logistic_regression"), ("forest", "random_forest")):
        f = fitted("classification", family)
        model = load_serving_model(
            name,
            "1",
            "d",
            f.onnx,
            contracts=contracts,
            expected_contract=None,
            config=SessionConfig(),
            pii_key=b"k" * 32,
            warmup_rounds=1,
            explain_permutations=8,
        )
        table.set(ModelRoute(name=name, production=model))
    catalog = {
        "lin": ModelSpec.model_validate(
            {"model": "lin", "contract": CONTRACT.schema_id, "explanations": {"top_k": 2}}
        )
    }
    captured = CapturedLog()
    scorer = Scorer(table, captured, ScoringStats(), catalog)  # type: ignore[arg-type]
    rows = [{k: v for k, v in r.items() if k != "bad"} for r in generate_records(CONTRACT, 4, seed=9)]

    alone = scorer.score("lin", [rows[0]], "http")  # not asked: explained for the log only
    (row,) = result_rows("lin", alone, [rows[0]])
    assert "explanation" not in row
    logged = captured.entries[-1].explanation
    assert logged is not None and len(logged["reasons"]) == 2
    assert logged == alone.parts[0].explanations[0].reason_codes(2)  # type: ignore[index]

    asked = scorer.score("forest", rows, "http", explain=True)
    answered = result_rows("forest", asked, rows, explain=True)
    assert all(r["explanation"]["method"] == "sampled_shapley" for r in answered)
    assert all(e.explanation is None for e in captured.entries[-4:])  # the forest's catalog asks nothing

    together = scorer.score_rows("lin", rows[:3], [None] * 3, "http")  # coalesced single-row requests
    assert all(not isinstance(r, Exception) for r in together)
    assert captured.entries[-3].explanation == logged  # the same row explains the same together or alone
    kafka, failures = scorer.score_each("lin", rows, ["a", "b", "c", "d"], [None] * 4, "kafka")
    assert not failures and kafka is not None
    assert all(e.explanation is not None for e in captured.entries[-4:])

    encode = InferenceEventEncoder("inference.log.v1", "scorer-test")
    for entry in captured.entries:
        (_, value, _) = encode([entry])[0]
        event = InferenceLogEvent.model_validate_json(value)
        assert (event.payload.explanation is None) == (entry.explanation is None)
        assert ("explanation" in orjson.loads(value)["payload"]) == (entry.explanation is not None)
