"""The benchmark's models: one fitted scikit-learn pipeline per family, served three ways.

``train_model`` (the trainer's domain function) returns the ONNX artifact but not the fitted pipeline, and
MLServer's scikit-learn runtime needs the pipeline itself. So the pipeline is fitted here the way
``train_model`` fits it (same contract, rows, split, label encoding, hyperparameters and seed), exported with
the trainer's ``export_onnx``, and the result is checked to be byte-identical to ``train_model``'s artifact:
the ONNX file that the bare endpoint and the tollgate scorer load and the joblib file that MLServer loads are
then provably one fitted model.

The joblib copy is for the peer only (tollgate never unpickles). The trainer's two small custom steps are
swapped for stock scikit-learn steps that compute the same thing, so that MLServer's environment does not
need tollgate's code to unpickle it; :func:`plain_pipeline` checks that predictions do not change.
"""

from __future__ import annotations

import copy
import json
import pickle
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from threadpoolctl import threadpool_limits

from tollgate_core.contracts import DatasetContract, load_contract
from tollgate_core.paths import schemas_dir
from tollgate_demo.datasets import generate_records
from tollgate_trainer.evaluate import out_of_time_split
from tollgate_trainer.explanation import explanation_spec
from tollgate_trainer.export import ModelSignature, export_onnx
from tollgate_trainer.features import FeatureLayout, LabelEncoding, raw_frame
from tollgate_trainer.pipeline import Float32Cast, NumericImputer, build_pipeline
from tollgate_trainer.train import TrainingConfig, TrainingResult, train_model

CONTRACT_FILE = "synthetic-risk.v1.yaml"
TRAINING_ROWS = 20_000
SEED = 7

# --models key -> (trainer family, hyperparameter overrides); the model is served as risk-<key>.
FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "lr": ("logistic_regression", {}),
    # 100 trees of depth 8: a realistic production forest (about 33,000 nodes), not a toy and not absurd.
    "rf": ("random_forest", {"n_estimators": 100, "max_depth": 8, "min_samples_leaf": 10}),
}


@dataclass(frozen=True)
class BenchModel:
    key: str
    name: str
    family: str
    onnx_path: Path
    joblib_path: Path
    digest: str
    signature: ModelSignature
    result: TrainingResult
    pipeline: Pipeline  # the plain (stock scikit-learn) copy that MLServer serves
    estimator_joblib_path: Path  # its final estimator alone, for the client-side-preprocessing reference

    def preprocessed(self, frame: pd.DataFrame) -> np.ndarray:
        """The final estimator's input for a model frame: the pipeline's own fitted preprocessing."""
        return np.asarray(self.pipeline[:-1].transform(frame), dtype=np.float64)


def contract() -> DatasetContract:
    return load_contract(schemas_dir() / "datasets" / CONTRACT_FILE)


def training_records(spec: DatasetContract, n: int = TRAINING_ROWS) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = generate_records(spec, n, seed=SEED)
    return records


def fit_pipeline(
    spec: DatasetContract, records: list[dict[str, Any]], config: TrainingConfig
) -> tuple[Pipeline, LabelEncoding, pd.DataFrame]:
    """The pipeline ``train_model`` fits for these arguments (its "prepare" and "fit" phases), with its
    training rows (what the explanation reference in the artifact's metadata is computed from)."""
    layout = FeatureLayout.from_contract(spec)
    raw = raw_frame(spec, records)
    raw = raw[raw[spec.label.name].notna().to_numpy()].reset_index(drop=True)
    split = out_of_time_split(raw, spec, config.holdout_fraction)
    encoding = LabelEncoding.fit(spec.label, raw[spec.label.name].tolist(), spec.label.positive_class)
    y = encoding.encode(raw[spec.label.name].tolist())
    features = layout.model_frame(raw)
    overrides = dict(config.hyperparameters)
    if config.family == "random_forest" and config.threads is not None:
        overrides.setdefault("n_jobs", config.threads)
    pipeline = build_pipeline(spec, config.family, overrides, config.seed)
    # Under train_model's thread limit: BLAS threads change a linear model's last bits.
    with threadpool_limits(limits=config.threads) if config.threads is not None else nullcontext():
        pipeline.fit(features.iloc[split.train], y[split.train])
    return pipeline, encoding, features.iloc[split.train]


def plain_pipeline(pipeline: Pipeline, check_frame: pd.DataFrame) -> Pipeline:
    """A copy of a fitted pipeline with only stock scikit-learn classes, predicting exactly the same."""
    plain = copy.deepcopy(pipeline)
    preprocess = plain.named_steps["preprocess"]
    # Both the fitted blocks (transformers_) and the unfitted templates (transformers) are pickled.
    for _, block, _ in [*preprocess.transformers_, *preprocess.transformers]:
        if not isinstance(block, Pipeline):
            continue
        for i, (step_name, step) in enumerate(block.steps):
            if type(step) is NumericImputer:
                step.__class__ = SimpleImputer  # the subclass only changes how it is exported to ONNX
            elif type(step) is Float32Cast:
                cast = FunctionTransformer(np.asarray, kw_args={"dtype": np.float32})
                if hasattr(step, "n_features_in_"):
                    cast.fit(np.zeros((1, step.n_features_in_)))
                block.steps[i] = (step_name, cast)
    if b"tollgate" in pickle.dumps(plain):
        raise AssertionError("the plain copy of the pipeline still refers to tollgate code")
    estimator = plain.steps[-1][1]
    if "n_jobs" in estimator.get_params():
        # Serving runs on one pinned core; threads only change the summation order of a forest's trees.
        estimator.set_params(n_jobs=1)
    reference = copy.deepcopy(pipeline)
    if "n_jobs" in reference.steps[-1][1].get_params():
        reference.steps[-1][1].set_params(n_jobs=1)
    expected = reference.predict_proba(check_frame)
    got = plain.predict_proba(check_frame)
    if not np.array_equal(expected, got):
        raise AssertionError("the plain copy of the pipeline predicts differently")
    return plain


def build_models(keys: list[str], out_dir: Path, threads: int = 2) -> dict[str, BenchModel]:
    """Train each model with the trainer, fit its pipeline twin, and write ``<name>.onnx`` and joblib files."""
    spec = contract()
    records = training_records(spec)
    layout = FeatureLayout.from_contract(spec)
    check = layout.model_frame(raw_frame(spec, records[:2000]))
    out_dir.mkdir(parents=True, exist_ok=True)
    models: dict[str, BenchModel] = {}
    for key in keys:
        family, overrides = FAMILIES[key]
        config = TrainingConfig(family=family, hyperparameters=overrides, seed=SEED, threads=threads)
        result = train_model(spec, records, config)
        if not result.parity.passed:
            raise RuntimeError(f"{key}: the trainer's parity check failed: {result.parity.reason}")
        pipeline, encoding, x_train = fit_pipeline(spec, records, config)
        # The artifact carries the decision threshold (in its graph) and the explanation reference (in its
        # metadata) that train_model wrote: the same here, so that the bytes can be compared.
        threshold = result.threshold.threshold if result.threshold is not None else None
        explanation = explanation_spec(pipeline, layout, x_train, family)
        exported = export_onnx(pipeline, spec, encoding, threshold, explanation)
        if exported.onnx != result.onnx:
            raise RuntimeError(f"{key}: the refitted pipeline does not export to train_model's artifact")
        name = f"risk-{key}"
        onnx_path = out_dir / f"{name}.onnx"
        onnx_path.write_bytes(result.onnx)
        joblib_path = out_dir / name / "model.joblib"
        joblib_path.parent.mkdir(parents=True, exist_ok=True)
        plain = plain_pipeline(pipeline, check)
        joblib.dump(plain, joblib_path)
        estimator_path = out_dir / f"{name}-estimator" / "model.joblib"
        estimator_path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump(plain.steps[-1][1], estimator_path)
        (out_dir / f"{name}.summary.json").write_text(
            json.dumps(
                {
                    "digest": result.digest,
                    "metrics": result.metrics,
                    "family": family,
                    "hyperparameters": result.hyperparameters,
                },
                indent=2,
                default=str,
            )
            + "\n"
        )
        models[key] = BenchModel(
            key,
            name,
            family,
            onnx_path,
            joblib_path,
            result.digest,
            result.signature,
            result,
            plain,
            estimator_path,
        )
    return models


def request_record(spec: DatasetContract, seed: int = SEED + 1) -> dict[str, Any]:
    """One scoring request's record: the first generated record without a null feature (a typical request)."""
    records: list[dict[str, Any]] = generate_records(spec, 200, seed=seed, start=10_000_000)
    for record in records:
        if all(record.get(name) is not None for name in spec.feature_names):
            return record
    raise RuntimeError("no record without nulls in 200 generated records")


def batch_records(spec: DatasetContract, n: int = 1000, seed: int = SEED + 2) -> list[dict[str, Any]]:
    """``n`` records to score in one request (nulls included, as they come)."""
    records: list[dict[str, Any]] = generate_records(spec, n, seed=seed, start=20_000_000)
    return records
