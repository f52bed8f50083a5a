"""Models built outside the platform: check a submitted ONNX model against its dataset contract, read its
optional scikit-learn pipeline from a skops file (never a pickle), and evaluate it independently on the
platform's own out-of-time holdout. Transport-free: the HTTP endpoint (``app.py``) and the runner wrap it.

**The contract a submitted ONNX model must meet** is the one every trainer export meets and the scorer
serves (``tollgate_trainer.pipeline``, ``tollgate_scorer.signature``):

* inputs ``numeric`` — ``tensor(double)``, shape ``[N, k]``: the contract's number, integer and boolean
  features in contract order (booleans 1.0 / 0.0, null = NaN) — and ``category`` — ``tensor(string)``,
  ``[N, m]``: its category features in contract order (null = ``""``); each present exactly when the contract
  has such features, and no other input; the batch dimension dynamic;
* classifiers: ``label`` — ``tensor(int64)``, ``[N]`` (or ``[N, 1]``), the class index in the contract's class
  order (booleans ``false, true``; categories as listed; integers ascending) — and ``probabilities`` —
  ``tensor(float)`` or ``tensor(double)``, ``[N, C]``, one column per class in that order (skl2onnx with
  ``zipmap: False``); regressors: ``prediction`` — ``tensor(float)`` or ``tensor(double)``, ``[N]`` or
  ``[N, 1]``.

Every mismatch is named in the refusal (input or output, what the contract needs, what the file has).

**The serving signature** (``tollgate.signature`` metadata) is written by the platform from the contract and
the training store's classes, and the explanation reference (``tollgate.explanation``: the training split's
means and modes) with it, replacing any the file carried; so the stored artifact's sha256 differs from the
submitted file's, which the submission records as ``onnx_digest``.

**skops**: the file must be a skops archive (a zip), never a pickle; only the types a trainer pipeline is made
of beyond skops's own trusted defaults are trusted (:data:`TRUSTED_TYPES`); a file holding any other type is
refused naming it, before anything is built from it.

**Independent validation**: :func:`evaluate_submission` cuts the same out-of-time split as a training run
(``training.holdout_fraction`` of the catalog entry, newest rows by the contract's event time) over the same
rows a run would read (the newest ``max_rows``), runs the ONNX model on the holdout with onnxruntime and
measures it as a trained candidate is measured: metrics, per-segment metrics and fairness gaps, calibration,
the simple baselines trained on the training split, and — when a pipeline came — the parity gate between the
pipeline and the ONNX model. The submitter never sees the holdout rows; only the report.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import onnx
import pandas as pd
from onnx import TensorProto

from tollgate_core.artifacts import sha256_digest
from tollgate_core.contracts import DatasetContract
from tollgate_core.models import ModelFamily
from tollgate_core.thresholds import ThresholdPolicy
from tollgate_trainer.evaluate import evaluate, holdout_calibration, out_of_time_split, segment_keys
from tollgate_trainer.explanation import explanation_spec
from tollgate_trainer.export import (
    TARGET_OPSET,
    ModelSignature,
    TensorSpec,
    decide_by_threshold,
    onnx_session,
    write_metadata,
)
from tollgate_trainer.features import (
    CATEGORY_INPUT,
    NUMERIC_INPUT,
    FeatureLayout,
    LabelEncoding,
    Records,
    TrainingDataError,
    raw_frame,
)
from tollgate_trainer.importance import DEFAULT_SETTINGS, ImportanceSettings, permutation_importance
from tollgate_trainer.parity import Decision, ParityResult, check_parity
from tollgate_trainer.pipeline import MODEL_FAMILIES, task_of
from tollgate_trainer.reference import build_reference_profile
from tollgate_trainer.selection import baseline_metrics
from tollgate_trainer.threshold import ThresholdChoice, ThresholdError, choose_threshold
from tollgate_trainer.train import MIN_ROWS, TrainingResult, data_content_hash, library_versions

MAX_FILE_BYTES = 64 * 1024 * 1024
"""Largest ONNX or skops file accepted (each); the endpoint answers 413 above."""

# Types of the trainer's own pipelines (all three families) that skops does not trust by default; a
# submitted pipeline may hold these and skops's defaults (scikit-learn estimators, numpy arrays), nothing else.
TRUSTED_TYPES: frozenset[str] = frozenset(
    {
        "numpy.dtype",
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "tollgate_trainer.pipeline.NumericImputer",
        "tollgate_trainer.pipeline.Float32Cast",
    }
)
_PICKLE_PROTOCOL = b"\x80"
_FLOATS = ("tensor(float)", "tensor(double)")


class SubmissionRefused(ValueError):
    """A submission the platform does not take; ``problems`` names each reason, ``status`` is the HTTP
    status to answer (422 by default; 413 for a file over the limit), ``field`` the form field at fault."""

    def __init__(self, problems: Sequence[str], status: int = 422, field: str = "onnx") -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)
        self.status = status
        self.field = field


# ------------------------------------------------------------------------------------------- ONNX checks


def read_onnx(data: bytes, limit: int = MAX_FILE_BYTES) -> onnx.ModelProto:
    """The submitted bytes as an ONNX model that onnxruntime loads, or :class:`SubmissionRefused`."""
    if len(data) > limit:
        raise SubmissionRefused([f"the ONNX file has {len(data)} bytes; at most {limit} are accepted"], 413)
    if not data:
        raise SubmissionRefused(["the ONNX file is empty"])
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise SubmissionRefused([f"not an ONNX model: {exc}"]) from None
    if model.ir_version == 0 or not model.graph.node:
        # protobuf reads many byte strings as an almost empty message; a model has a version and a graph.
        raise SubmissionRefused(["not an ONNX model: no IR version or no graph nodes"])
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise SubmissionRefused([f"not a valid ONNX model: {exc}"]) from None
    try:
        onnx_session(data)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise SubmissionRefused([f"onnxruntime cannot load the model: {exc}"]) from None
    return model


def _type_name(value: onnx.ValueInfoProto) -> str:
    tensor = value.type.tensor_type
    if not value.type.HasField("tensor_type"):
        return value.type.WhichOneof("value") or "unknown"
    return f"tensor({TensorProto.DataType.Name(tensor.elem_type).lower()})"


def _dims(value: onnx.ValueInfoProto) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]


def _shape(dims: Sequence[int | None]) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in dims) + "]"


def contract_mismatches(
    model: onnx.ModelProto, contract: DatasetContract, classes: Sequence[Any] | None
) -> list[str]:
    """Every way the model's inputs and outputs differ from what ``contract`` and the scorer need (empty
    when they match). ``classes`` is the label's class order (classifiers), None for a regressor."""
    layout = FeatureLayout.from_contract(contract)
    problems: list[str] = []
    expected = {}
    if layout.numeric:
        expected[NUMERIC_INPUT] = ("tensor(double)", list(layout.numeric))
    if layout.category:
        expected[CATEGORY_INPUT] = ("tensor(string)", list(layout.category))
    inputs = {v.name: v for v in model.graph.input}
    # Initializers listed as inputs (older exporters) are not inputs a caller feeds.
    inputs = {k: v for k, v in inputs.items() if k not in {i.name for i in model.graph.initializer}}
    for name, (kind, columns) in expected.items():
        need = f"{kind} [N, {len(columns)}] ({', '.join(columns)})"
        value = inputs.get(name)
        if value is None:
            problems.append(f"input {name!r}: missing; contract {contract.schema_id} needs {need}")
            continue
        if _type_name(value) != kind:
            problems.append(f"input {name!r}: type {_type_name(value)}, contract needs {need}")
        dims = _dims(value)
        if len(dims) != 2 or dims[1] != len(columns):
            problems.append(f"input {name!r}: shape {_shape(dims)}, contract needs {need}")
        elif dims[0] is not None:
            problems.append(f"input {name!r}: batch dimension fixed at {dims[0]}, it must be dynamic")
    for name in sorted(set(inputs) - set(expected)):
        allowed = ", ".join(repr(n) for n in expected) or "none"
        problems.append(
            f"input {name!r}: not an input of contract {contract.schema_id} (inputs: {allowed}; "
            "features go in the numeric and category blocks in contract order)"
        )
    outputs = {v.name: v for v in model.graph.output}
    if task_of(contract) == "classification":
        n = len(classes or ())
        label, proba = outputs.get("label"), outputs.get("probabilities")
        if label is None:
            problems.append("output 'label': missing; a classifier needs tensor(int64) [N], the class index")
        else:
            if _type_name(label) != "tensor(int64)":
                problems.append(
                    f"output 'label': type {_type_name(label)}, a classifier needs tensor(int64) (the class "
                    f"index in the order {list(classes or ())})"
                )
            dims = _dims(label)
            if not (len(dims) == 1 or (len(dims) == 2 and dims[1] == 1)):
                problems.append(f"output 'label': shape {_shape(dims)}, a classifier needs [N]")
        if proba is None:
            problems.append(
                f"output 'probabilities': missing; a classifier needs tensor(float) [N, {n}] "
                "(no ZipMap: convert with options {'zipmap': False})"
            )
        else:
            if _type_name(proba) not in _FLOATS:
                problems.append(
                    f"output 'probabilities': type {_type_name(proba)}, a classifier needs tensor(float) or "
                    f"tensor(double) [N, {n}] (no ZipMap: convert with options {{'zipmap': False}})"
                )
            dims = _dims(proba)
            if len(dims) != 2 or (dims[1] is not None and dims[1] != n):
                problems.append(
                    f"output 'probabilities': shape {_shape(dims)}, the label of {contract.schema_id} has "
                    f"{n} classes {list(classes or ())}: [N, {n}]"
                )
    else:
        prediction = outputs.get("prediction") or outputs.get("variable")
        if prediction is None:
            problems.append("output 'prediction': missing; a regressor needs tensor(float) [N, 1]")
        else:
            if _type_name(prediction) not in _FLOATS:
                problems.append(
                    f"output {prediction.name!r}: type {_type_name(prediction)}, a regressor needs "
                    "tensor(float) or tensor(double)"
                )
            dims = _dims(prediction)
            if not (len(dims) == 1 or (len(dims) == 2 and dims[1] == 1)):
                problems.append(f"output {prediction.name!r}: shape {_shape(dims)}, a regressor needs [N, 1]")
    return problems


def decision_threshold(
    contract: DatasetContract,
    raw: pd.DataFrame,
    encoding: LabelEncoding | None,
    onnx_bytes: bytes,
    policy: ThresholdPolicy | None,
    holdout_fraction: float,
) -> ThresholdChoice | None:
    """The catalog's decision threshold for a submitted binary classifier: fixed, or chosen by the rule on
    the scores the submitted model gives the validation split (the newest ``holdout_fraction`` of the
    training rows, as for a training run; the model cannot be refitted on the older rows, so this split may
    be rows it was fitted on — the holdout stays untouched either way)."""
    if policy is None:
        return None
    if encoding is None or len(encoding.classes) != 2 or encoding.positive_index is None:
        raise SubmissionRefused(["the catalog's decision_threshold needs a binary classification label"], 409)
    if policy.rule == "fixed":
        return choose_threshold(policy, np.zeros(0), np.zeros(0))
    split = out_of_time_split(raw, contract, holdout_fraction)
    train = raw.iloc[split.train].reset_index(drop=True)
    inner = out_of_time_split(train, contract, holdout_fraction)
    layout = FeatureLayout.from_contract(contract)
    rows = layout.model_frame(train).iloc[inner.holdout]
    try:
        (proba,) = onnx_session(onnx_bytes).run(["probabilities"], layout.onnx_inputs(rows))
    except Exception as exc:  # onnxruntime's own errors
        raise SubmissionRefused([f"the ONNX model fails on the contract's inputs: {exc}"]) from None
    positive = encoding.positive_index
    truth = (encoding.encode(train[contract.label.name].iloc[inner.holdout].tolist()) == positive).astype(int)
    try:
        return choose_threshold(policy, truth, np.asarray(proba, dtype=np.float64)[:, positive])
    except ThresholdError as exc:
        raise SubmissionRefused([f"decision threshold: {exc}"], 409) from None


def explanation_reference(
    contract: DatasetContract, raw: pd.DataFrame, holdout_fraction: float
) -> dict[str, Any]:
    """The reference point the scorer explains a submitted model's decisions against (means and modes of
    the training split, as for trained models; no linear description: the scorer uses sampled Shapley
    values, which need nothing from the model)."""
    split = out_of_time_split(raw, contract, holdout_fraction)
    layout = FeatureLayout.from_contract(contract)
    x_train = layout.model_frame(raw).iloc[split.train]
    return explanation_spec(cast(Any, None), layout, x_train, "submitted")


def servable_onnx(
    model: onnx.ModelProto,
    contract: DatasetContract,
    encoding: LabelEncoding | None,
    explanation: dict[str, Any] | None = None,
    threshold: float | None = None,
) -> tuple[bytes, ModelSignature]:
    """The submitted model with the platform's serving signature (and the explanation reference, when
    given) in its metadata (any the file carried is replaced), as the bytes the artifact store keeps;
    skl2onnx's regressor output ``variable`` is renamed ``prediction`` as in the trainer's exports."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for output in model.graph.output:
        if output.name == "variable" and task_of(contract) == "regression":
            output.name = "prediction"
            for node in model.graph.node:
                node.output[:] = ["prediction" if o == "variable" else o for o in node.output]
    if threshold is not None:  # the catalog's decision rule, built into the graph as for trained models
        if encoding is None or encoding.positive_index is None or len(encoding.classes) != 2:
            raise SubmissionRefused(["a decision threshold needs a binary classifier with a positive class"])
        decide_by_threshold(model.graph, encoding.positive_index, threshold)
    layout = FeatureLayout.from_contract(contract)
    columns = {NUMERIC_INPUT: list(layout.numeric), CATEGORY_INPUT: list(layout.category)}
    initializers = {i.name for i in model.graph.initializer}

    def spec(value: onnx.ValueInfoProto, cols: list[str]) -> TensorSpec:
        dtype = TensorProto.DataType.Name(value.type.tensor_type.elem_type).lower()
        return TensorSpec(name=value.name, dtype=dtype, shape=_dims(value), columns=cols)

    signature = ModelSignature(
        contract=contract.schema_id,
        contract_digest=contract.digest,
        task=task_of(contract),
        inputs=[spec(v, columns.get(v.name, [])) for v in model.graph.input if v.name not in initializers],
        outputs=[spec(v, []) for v in model.graph.output],
        classes=list(encoding.classes) if encoding is not None else None,
        positive_index=encoding.positive_index if encoding is not None else None,
        decision_threshold=threshold,
        opset={entry.domain: entry.version for entry in model.opset_import} or dict(TARGET_OPSET),
    )
    write_metadata(model, signature, explanation)
    return model.SerializeToString(), signature


# ------------------------------------------------------------------------------------------------ skops


def load_pipeline(data: bytes, limit: int = MAX_FILE_BYTES) -> Any:
    """A scikit-learn pipeline from a skops file; a pickle, an unreadable file or untrusted types are
    refused before anything is built."""
    import skops.io  # imported on use: the trainer's start does not pay for it

    if len(data) > limit:
        raise SubmissionRefused(
            [f"the skops file has {len(data)} bytes; at most {limit} are accepted"], 413, "sklearn"
        )
    if data[:1] == _PICKLE_PROTOCOL:
        raise SubmissionRefused(
            ["the scikit-learn file is a pickle, which the platform never loads: save it with skops.io.dump"],
            field="sklearn",
        )
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise SubmissionRefused(
            ["the scikit-learn file is not a skops file (a zip archive with schema.json)"],
            field="sklearn",
        )
    try:
        untrusted = skops.io.get_untrusted_types(data=data)
    except Exception as exc:
        raise SubmissionRefused([f"the skops file cannot be read: {exc}"], field="sklearn") from None
    refused = sorted(set(untrusted) - TRUSTED_TYPES)
    if refused:
        raise SubmissionRefused(
            [f"the skops file holds types the platform does not trust: {', '.join(refused)}"],
            field="sklearn",
        )
    try:
        pipeline = skops.io.loads(data, trusted=list(untrusted))
    except Exception as exc:
        raise SubmissionRefused([f"the skops file cannot be loaded: {exc}"], field="sklearn") from None
    if not callable(getattr(pipeline, "predict", None)):
        raise SubmissionRefused(
            [f"the skops file holds a {type(pipeline).__name__}, not a fitted model"], field="sklearn"
        )
    return pipeline


# ----------------------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class SubmissionConfig:
    """How the platform evaluates a submission: the catalog's holdout and parity settings."""

    holdout_fraction: float
    parity_tolerance: float
    min_label_agreement: float
    family: str | None = None
    parameters: dict[str, Any] | None = None
    seed: int = 0
    threshold: ThresholdChoice | None = None
    importance: ImportanceSettings = DEFAULT_SETTINGS


def prepare(contract: DatasetContract, data: Records) -> tuple[pd.DataFrame, LabelEncoding | None]:
    """The labelled rows as a raw frame and the label's class order (classifiers)."""
    raw = raw_frame(contract, data)
    raw = raw[raw[contract.label.name].notna().to_numpy()].reset_index(drop=True)
    if len(raw) < MIN_ROWS:
        raise TrainingDataError(
            f"the training store holds {len(raw)} labelled rows of {contract.schema_id}; at least "
            f"{MIN_ROWS} are needed to evaluate a model"
        )
    if task_of(contract) != "classification":
        return raw, None
    values = raw[contract.label.name].tolist()
    return raw, LabelEncoding.fit(contract.label, values, contract.label.positive_class)


def evaluate_submission(
    contract: DatasetContract,
    raw: pd.DataFrame,
    encoding: LabelEncoding | None,
    onnx_bytes: bytes,
    signature: ModelSignature,
    pipeline: Any | None,
    config: SubmissionConfig,
) -> TrainingResult:
    """Measure the (servable) ONNX model on the platform's out-of-time holdout, as a trained candidate."""
    task = task_of(contract)
    layout = FeatureLayout.from_contract(contract)
    split = out_of_time_split(raw, contract, config.holdout_fraction)
    labels = raw[contract.label.name].tolist()
    y = encoding.encode(labels) if encoding is not None else np.asarray(labels, dtype=np.float64)
    features = layout.model_frame(raw)
    x_train, x_holdout = features.iloc[split.train], features.iloc[split.holdout]
    y_train, y_holdout = y[split.train], y[split.holdout]

    session = onnx_session(onnx_bytes)
    try:
        wanted = ["probabilities"] if task == "classification" else ["prediction"]
        (output,) = session.run(wanted, layout.onnx_inputs(x_holdout))
    except Exception as exc:  # onnxruntime's own errors: the model cannot run on the contract's inputs
        raise SubmissionRefused([f"the ONNX model fails on the contract's inputs: {exc}"]) from None
    output = np.asarray(output, dtype=np.float64)
    if task == "classification":
        n = len(encoding.classes) if encoding is not None else 0
        if output.ndim != 2 or output.shape != (len(x_holdout), n):
            raise SubmissionRefused(
                [
                    f"output 'probabilities' has shape {list(output.shape)} on {len(x_holdout)} rows; the label "
                    f"has {n} classes"
                ]
            )
    else:
        output = output.reshape(-1)
    if not np.isfinite(output).all():
        raise SubmissionRefused(["the ONNX model answers NaN or infinity on rows of the contract"])

    positive = encoding.positive_index if encoding is not None else None
    scores = (
        (output[:, positive] if positive is not None else output.max(axis=1))
        if task == "classification"
        else output
    )
    segments = None
    if contract.segment is not None and contract.segment in raw.columns:
        segments = segment_keys(raw[contract.segment].iloc[split.holdout])
    threshold = config.threshold.threshold if config.threshold is not None else None
    evaluation = evaluate(y_holdout, output, task, positive, segments, threshold)
    calibration = holdout_calibration(y_holdout, output, positive) if task == "classification" else []

    family = config.family if config.family in MODEL_FAMILIES else None
    baselines = baseline_metrics(
        contract,
        cast(ModelFamily, family or "submitted"),
        x_train,
        y_train,
        x_holdout,
        y_holdout,
        encoding,
        config.seed,
        threshold,
    )
    decision = Decision(threshold, positive) if threshold is not None and positive is not None else None
    parity = _parity(pipeline, onnx_bytes, layout, x_holdout, task, y_train, config, decision)
    reference = build_reference_profile(
        contract, raw.iloc[split.train], scores, evaluation, decision_threshold=threshold
    )
    importance = permutation_importance(onnx_bytes, layout, x_holdout, y_holdout, task, config.importance)
    return TrainingResult(
        contract=contract.schema_id,
        contract_digest=contract.digest,
        family=config.family or "submitted",
        task=task,
        onnx=onnx_bytes,
        digest=sha256_digest(onnx_bytes),
        signature=signature,
        metrics=evaluation.metrics,
        segment_metrics=evaluation.segment_metrics,
        fairness_gap=evaluation.fairness_gap,
        parity=parity,
        reference=reference,
        hyperparameters=dict(config.parameters or {}),
        seed=config.seed,
        library_versions=library_versions(),
        row_count=len(raw),
        train_rows=len(split.train),
        holdout_rows=len(split.holdout),
        unlabelled_rows=0,
        data_hash=data_content_hash(contract, raw),
        split_ordered_by=split.ordered_by,
        baselines=baselines,
        calibration=calibration,
        holdout_fraction=config.holdout_fraction,
        threshold=config.threshold,
        feature_importance=importance,
    )


def _parity(
    pipeline: Any | None,
    onnx_bytes: bytes,
    layout: FeatureLayout,
    x_holdout: pd.DataFrame,
    task: str,
    y_train: np.ndarray,
    config: SubmissionConfig,
    decision: Decision | None,
) -> ParityResult:
    if pipeline is None:  # nothing to compare with: recorded as not checked (no rows)
        return ParityResult(
            passed=True,
            compared="probabilities" if task == "classification" else "scaled_prediction",
            tolerance=config.parity_tolerance,
            min_label_agreement=config.min_label_agreement,
            max_abs_diff=0.0,
            rows_checked=0,
            holdout_rows=len(x_holdout),
            boundary_rows=0,
        )
    try:
        return check_parity(
            pipeline,
            onnx_bytes,
            layout,
            x_holdout,
            task,
            tolerance=config.parity_tolerance,
            min_label_agreement=config.min_label_agreement,
            label_scale=float(np.std(y_train)) if task == "regression" else 1.0,
            seed=config.seed,
            decision=decision,
        )
    except SubmissionRefused:
        raise
    except Exception as exc:  # the submitted pipeline's own code failed on the model frame
        raise SubmissionRefused(
            [
                f"the scikit-learn pipeline cannot score the contract's model frame ({', '.join(layout.columns)}): "
                f"{type(exc).__name__}: {exc}"
            ],
            field="sklearn",
        ) from None


__all__ = [
    "MAX_FILE_BYTES",
    "TRUSTED_TYPES",
    "SubmissionConfig",
    "SubmissionRefused",
    "contract_mismatches",
    "decision_threshold",
    "evaluate_submission",
    "explanation_reference",
    "load_pipeline",
    "prepare",
    "read_onnx",
    "servable_onnx",
]
