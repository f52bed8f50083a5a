"""One training run, from contract and rows to a checked ONNX artifact and everything the registry records.

``train_model`` is the trainer's whole domain: transports (Kafka, HTTP) and storage wrap it. It never raises
on a parity failure: the result says so, and the registry's gates decide what happens to the candidate.

The model that is exported is the one fitted on the training split and measured on the holdout, so the
reported metrics describe exactly the artifact that ships.

Reproducibility: the same rows, contract and config give byte-identical ONNX and identical predictions.
The seed fixes every estimator's ``random_state`` and the parity check's sampling; boosting does not stop
early by default, so no validation split depends on it. The thread count is part of the config for this
reason too: on large data, BLAS and OpenMP split sums by thread, so another thread count can change the
last bits of a linear model's coefficients (measured: 1e-15 at 100,000 rows) and hence the bytes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

import numpy as np
import orjson
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from threadpoolctl import threadpool_limits

from tollgate_core.artifacts import sha256_digest
from tollgate_core.contracts import DatasetContract, FieldType
from tollgate_core.lifecycle import FeatureImportance
from tollgate_core.models import ModelFamily, SelectionPolicy
from tollgate_core.reference import ReferenceProfile
from tollgate_core.thresholds import ThresholdPolicy
from tollgate_trainer.evaluate import (
    DEFAULT_HOLDOUT_FRACTION,
    evaluate,
    holdout_calibration,
    out_of_time_split,
    segment_keys,
)
from tollgate_trainer.explanation import explanation_spec
from tollgate_trainer.export import ModelSignature, export_onnx
from tollgate_trainer.features import (
    FeatureLayout,
    LabelEncoding,
    Records,
    TrainingDataError,
    boolean_values,
    is_missing,
    numeric_values,
    raw_frame,
)
from tollgate_trainer.importance import ImportanceSettings, permutation_importance
from tollgate_trainer.parity import (
    DEFAULT_BOUNDARY_PAIRS,
    DEFAULT_MIN_LABEL_AGREEMENT,
    DEFAULT_TOLERANCE,
    Decision,
    ParityResult,
    check_parity,
)
from tollgate_trainer.pipeline import build_pipeline, hyperparameters_for, task_of
from tollgate_trainer.reference import build_reference_profile
from tollgate_trainer.selection import Selection, baseline_metrics, select_configuration
from tollgate_trainer.settings import IMPORTANCE_REPEATS, IMPORTANCE_ROWS
from tollgate_trainer.threshold import ThresholdChoice, ThresholdError, choose_threshold

# Distributions whose versions change what a run produces; recorded with every model.
RECORDED_LIBRARIES = (
    "scikit-learn",
    "skl2onnx",
    "onnx",
    "onnxruntime",
    "numpy",
    "protobuf",
    "pandas",
    "scipy",
)
MIN_ROWS = 10


class TrainingConfig(BaseModel):
    """How to train: model family, hyperparameter overrides, seed, and the evaluation and parity settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: ModelFamily = "hist_gradient_boosting"
    hyperparameters: dict[str, Any] = Field(default_factory=dict, description="Overrides of the defaults.")
    seed: int = 0
    holdout_fraction: float = Field(DEFAULT_HOLDOUT_FRACTION, gt=0, lt=1)
    parity_tolerance: float = Field(DEFAULT_TOLERANCE, ge=0)
    min_label_agreement: float = Field(DEFAULT_MIN_LABEL_AGREEMENT, ge=0, le=1)
    boundary_pairs: int = Field(DEFAULT_BOUNDARY_PAIRS, ge=0)
    decision_threshold: ThresholdPolicy | None = Field(
        None, description="Binary classifiers: a fixed threshold or the rule that chooses it."
    )
    selection: SelectionPolicy | None = Field(
        None, description="Champion selection: the family and hyperparameters above are replaced by the best."
    )
    baselines: bool = Field(
        False,
        description="Also measure the simple baselines on the holdout (the cost-of-sophistication gate).",
    )
    importance_rows: int = Field(
        IMPORTANCE_ROWS, ge=2, description="Global feature importance: most holdout rows measured."
    )
    importance_repeats: int = Field(
        IMPORTANCE_REPEATS, ge=1, description="Global feature importance: shuffles per feature."
    )
    threads: int | None = Field(
        None,
        ge=1,
        description=(
            "CPU threads for fitting and scoring; None lets the libraries use every core. Set it where other "
            "processes share the cores: boosting's OpenMP threads spin while waiting, and on an oversubscribed "
            "machine a fit can take ten times longer than on one thread."
        ),
    )


@dataclass(frozen=True)
class TrainingResult:
    """Everything one run produced; ``onnx`` is the artifact, the rest is its record."""

    contract: str
    contract_digest: str
    family: str
    task: str
    onnx: bytes
    digest: str
    signature: ModelSignature
    metrics: dict[str, float]
    segment_metrics: dict[str, dict[str, float]]
    fairness_gap: dict[str, float]
    parity: ParityResult
    reference: ReferenceProfile
    hyperparameters: dict[str, Any]
    seed: int
    library_versions: dict[str, str]
    row_count: int
    train_rows: int
    holdout_rows: int
    unlabelled_rows: int
    data_hash: str
    split_ordered_by: str
    timings: dict[str, float] = field(default_factory=dict)
    threads: int | None = None
    threshold: ThresholdChoice | None = None
    selection: Selection | None = None
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    calibration: list[dict[str, float]] = field(default_factory=list)
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION
    feature_importance: FeatureImportance | None = None


def train_model(
    contract: DatasetContract, data: Records | pd.DataFrame, config: TrainingConfig | None = None
) -> TrainingResult:
    """Fit, evaluate out of time, export to ONNX, check parity and profile one model of ``contract``."""
    config = config or TrainingConfig()
    task = task_of(contract)
    layout = FeatureLayout.from_contract(contract)
    timer = _Timer()

    with timer("prepare"):
        raw = raw_frame(contract, data)
        labelled = raw[contract.label.name].notna().to_numpy()
        unlabelled = int((~labelled).sum())
        raw = raw[labelled].reset_index(drop=True)
        if len(raw) < MIN_ROWS:
            raise TrainingDataError(f"{len(raw)} labelled rows; at least {MIN_ROWS} are needed")
        data_hash = data_content_hash(contract, raw)
        split = out_of_time_split(raw, contract, config.holdout_fraction)
        label_values = raw[contract.label.name].tolist()
        encoding: LabelEncoding | None = None
        if task == "classification":
            encoding = LabelEncoding.fit(contract.label, label_values, contract.label.positive_class)
            y = encoding.encode(label_values)
            missing = sorted(set(range(len(encoding.classes))) - set(y[split.train].tolist()))
            if missing:
                names = ", ".join(repr(encoding.classes[i]) for i in missing)
                raise TrainingDataError(f"the training split has no row of class {names}")
        else:
            y = pd.to_numeric(pd.Series(label_values)).to_numpy(dtype=np.float64)
        features = layout.model_frame(raw)
        x_train, x_holdout = features.iloc[split.train], features.iloc[split.holdout]
        y_train, y_holdout = y[split.train], y[split.holdout]

    threads = config.threads

    def limits() -> AbstractContextManager[Any]:
        """The thread limit, applied anew for each block (threadpoolctl applies it when it is created)."""
        return threadpool_limits(limits=threads) if threads is not None else nullcontext()

    selection: Selection | None = None
    if config.selection is not None:
        with limits(), timer("selection"):
            selection = select_configuration(
                contract,
                raw.iloc[split.train],
                x_train,
                y_train,
                encoding,
                config.selection,
                config.seed,
                threads=config.threads,
            )
        champion = selection.champion
        config = config.model_copy(update={"family": champion.family, "hyperparameters": champion.overrides})
    overrides = dict(config.hyperparameters)
    if config.family == "random_forest" and config.threads is not None:
        overrides.setdefault("n_jobs", config.threads)
    params = hyperparameters_for(config.family, task, overrides, config.seed)
    with limits():
        choice: ThresholdChoice | None = None
        if config.decision_threshold is not None:
            with timer("threshold"):
                choice = _threshold(
                    contract, config, raw.iloc[split.train], features.iloc[split.train], y_train, encoding
                )
        threshold = choice.threshold if choice is not None else None
        with timer("fit"):
            pipeline = build_pipeline(contract, config.family, overrides, config.seed)
            pipeline.fit(x_train, y_train)

        with timer("evaluate"):
            if task == "classification":
                assert encoding is not None
                output = pipeline.predict_proba(x_holdout)
                positive = encoding.positive_index
                scores = output[:, positive] if positive is not None else output.max(axis=1)
            else:
                output = pipeline.predict(x_holdout)
                positive = None
                scores = output
            segments = None
            if contract.segment is not None and contract.segment in raw.columns:
                segments = segment_keys(raw[contract.segment].iloc[split.holdout])
            evaluation = evaluate(y_holdout, output, task, positive, segments, threshold)
            calibration = holdout_calibration(y_holdout, output, positive) if task == "classification" else []

        baselines: dict[str, dict[str, float]] = {}
        if config.baselines:
            with timer("baselines"):
                baselines = baseline_metrics(
                    contract,
                    config.family,
                    x_train,
                    y_train,
                    x_holdout,
                    y_holdout,
                    encoding,
                    config.seed,
                    threshold,
                )

        with timer("convert"):
            explanation = explanation_spec(pipeline, layout, x_train, config.family)
            exported = export_onnx(pipeline, contract, encoding, threshold, explanation)
            digest = sha256_digest(exported.onnx)

        with timer("parity"):
            label_scale = float(np.std(y_train)) if task == "regression" else 1.0
            parity = check_parity(
                pipeline,
                exported.onnx,
                layout,
                x_holdout,
                task,
                tolerance=config.parity_tolerance,
                min_label_agreement=config.min_label_agreement,
                boundary_pairs=config.boundary_pairs,
                label_scale=label_scale,
                seed=config.seed,
                decision=_decision(choice, encoding),
            )

    with timer("importance"):
        importance = permutation_importance(
            exported.onnx,
            layout,
            x_holdout,
            y_holdout,
            task,
            ImportanceSettings(config.importance_rows, config.importance_repeats, config.seed),
        )

    with timer("reference"):
        reference = build_reference_profile(
            contract, raw.iloc[split.train], scores, evaluation, decision_threshold=threshold
        )

    return TrainingResult(
        contract=contract.schema_id,
        contract_digest=contract.digest,
        family=config.family,
        task=task,
        onnx=exported.onnx,
        digest=digest,
        signature=exported.signature,
        metrics=evaluation.metrics,
        segment_metrics=evaluation.segment_metrics,
        fairness_gap=evaluation.fairness_gap,
        parity=parity,
        reference=reference,
        hyperparameters=params,
        seed=config.seed,
        library_versions=library_versions(),
        row_count=len(raw),
        train_rows=len(split.train),
        holdout_rows=len(split.holdout),
        unlabelled_rows=unlabelled,
        data_hash=data_hash,
        split_ordered_by=split.ordered_by,
        timings={**timer.seconds, "total": sum(timer.seconds.values())},
        threads=config.threads,
        threshold=choice,
        selection=selection,
        baselines=baselines,
        calibration=calibration,
        holdout_fraction=config.holdout_fraction,
        feature_importance=importance,
    )


def _threshold(
    contract: DatasetContract,
    config: TrainingConfig,
    raw_train: pd.DataFrame,
    x_train: pd.DataFrame,
    y_train: np.ndarray,
    encoding: LabelEncoding | None,
) -> ThresholdChoice:
    """The catalog's decision threshold: fixed, or chosen on a validation split of the training rows.

    The validation split is the newest ``holdout_fraction`` of the training rows (out of time, like the
    holdout, which stays untouched); a model of the same configuration fitted on the older rows scores it.
    """
    policy = config.decision_threshold
    assert policy is not None
    if encoding is None or len(encoding.classes) != 2 or encoding.positive_index is None:
        raise TrainingDataError("decision_threshold needs a binary classification label")
    if policy.rule == "fixed":
        return choose_threshold(policy, np.zeros(0), np.zeros(0))
    inner = out_of_time_split(raw_train.reset_index(drop=True), contract, config.holdout_fraction)
    if len(np.unique(y_train[inner.train])) < 2:
        raise TrainingDataError(
            "the rows before the validation split have one class: no threshold rule applies"
        )
    model = build_pipeline(contract, config.family, dict(config.hyperparameters), config.seed)
    model.fit(x_train.iloc[inner.train], y_train[inner.train])
    score = model.predict_proba(x_train.iloc[inner.holdout])[:, encoding.positive_index]
    truth = (y_train[inner.holdout] == encoding.positive_index).astype(int)
    try:
        return choose_threshold(policy, truth, score)
    except ThresholdError as exc:
        raise TrainingDataError(str(exc)) from None


def _decision(choice: ThresholdChoice | None, encoding: LabelEncoding | None) -> Decision | None:
    if choice is None or encoding is None or encoding.positive_index is None:
        return None
    return Decision(choice.threshold, encoding.positive_index)


def library_versions() -> dict[str, str]:
    return {name: version(name) for name in RECORDED_LIBRARIES}


def data_content_hash(contract: DatasetContract, raw: pd.DataFrame) -> str:
    """sha256 over a canonical, column by column form of the rows, in contract field order.

    Numbers, integers and booleans are hashed as float64 values plus a null mask, strings and categories as
    a JSON list; so records and a data frame holding the same rows hash the same (an integer read back as
    3.0 is 3, a NaN is a null), whatever the column dtypes. Row order counts, because it decides the holdout.
    """
    specs = {f.name: f for f in contract.all_fields}
    names = [f.name for f in contract.all_fields if f.name in raw.columns]
    digest = hashlib.sha256(
        orjson.dumps({"contract": contract.schema_id, "rows": len(raw), "columns": names})
    )
    for name in names:
        kind = specs[name].type
        column = raw[name]
        if kind in (FieldType.NUMBER, FieldType.INTEGER, FieldType.BOOLEAN):
            values = boolean_values(column) if kind is FieldType.BOOLEAN else numeric_values(column)
            null = np.isnan(values)
            digest.update(np.packbits(null).tobytes())
            digest.update(np.where(null, 0.0, values).astype("<f8").tobytes())
        else:
            texts = [None if _is_null(v) else str(v) for v in column.to_numpy(dtype=object)]
            digest.update(orjson.dumps(texts))
    return digest.hexdigest()


def _is_null(value: Any) -> bool:
    return value is pd.NA or is_missing(value)


class _Timer:
    """Wall-clock seconds per named phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start
