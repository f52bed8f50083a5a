"""Export a fitted pipeline to ONNX bytes plus the signature a server needs to call it.

Serving never unpickles anything: the ONNX bytes are the model. The signature (inputs with their columns,
outputs, class order, contract) is both returned and embedded in the model's metadata under
``tollgate.signature``, so an artifact describes itself.

Opsets: ``{"": 21, "ai.onnx.ml": 3}``. skl2onnx 1.20 is tested up to opset 22 and onnxruntime 1.31 runs
both; 21 leaves room for an older runtime on the serving side. The conversion itself is deterministic:
the same fitted pipeline gives byte-identical ONNX.
"""

from __future__ import annotations

import copy
import json
import warnings
from functools import cache
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto
from pydantic import BaseModel, ConfigDict, Field
from skl2onnx import convert_sklearn, update_registered_converter
from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.pipeline import Pipeline

from tollgate_core.contracts import DatasetContract
from tollgate_trainer.explanation import EXPLANATION_METADATA_KEY, spec_json
from tollgate_trainer.features import CATEGORY_INPUT, NUMERIC_INPUT, FeatureLayout, LabelEncoding
from tollgate_trainer.pipeline import Float32Cast, NumericImputer, task_of

TARGET_OPSET: dict[str, int] = {"": 21, "ai.onnx.ml": 3}
SIGNATURE_METADATA_KEY = "tollgate.signature"
# skl2onnx names a regressor's output "variable"; the platform calls it "prediction".
_RENAMED_OUTPUTS = {"variable": "prediction"}


class TensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    dtype: str = Field(description="ONNX element type in lower case: double, float, string, int64.")
    shape: list[int | None] = Field(description="None for a dynamic dimension (the batch).")
    columns: list[str] = Field(default_factory=list, description="Contract field per column (inputs only).")


class ModelSignature(BaseModel):
    """How to call an exported model: what to feed under which name, and what comes back."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    contract: str = Field(description="Dataset contract schema id, e.g. credit-default.v1.")
    contract_digest: str
    task: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    classes: list[str | bool | int] | None = Field(
        None, description="Label value of each probability column / label index (classification)."
    )
    positive_index: int | None = Field(None, description="Probability column of the positive class.")
    decision_threshold: float | None = Field(
        None,
        description="Binary classifiers with a catalog threshold: the label is the positive class where its "
        "probability reaches this value (the graph decides so); None: the most probable class.",
    )
    opset: dict[str, int]


class ExportedModel(BaseModel):
    model_config = ConfigDict(frozen=True)

    onnx: bytes
    signature: ModelSignature


def export_onnx(
    pipeline: Pipeline,
    contract: DatasetContract,
    labels: LabelEncoding | None = None,
    threshold: float | None = None,
    explanation: dict[str, Any] | None = None,
) -> ExportedModel:
    """Convert ``pipeline`` (fitted by :func:`tollgate_trainer.pipeline.build_pipeline`) to ONNX.

    ``threshold`` (binary classifiers) makes the graph's ``label`` output the positive class where the
    positive-class probability reaches it, so every consumer of the artifact decides the same way.
    ``explanation`` (:func:`tollgate_trainer.explanation.explanation_spec`) is stored in the metadata under
    ``tollgate.explanation``: the training reference the scorer explains decisions against.
    """
    _register_converters()
    layout = FeatureLayout.from_contract(contract)
    initial_types: list[tuple[str, Any]] = []
    if layout.numeric:
        initial_types.append((NUMERIC_INPUT, DoubleTensorType([None, len(layout.numeric)])))
    if layout.category:
        initial_types.append((CATEGORY_INPUT, StringTensorType([None, len(layout.category)])))
    task = task_of(contract)
    pipeline = _with_float32_thresholds(pipeline)
    options = {id(pipeline.steps[-1][1]): {"zipmap": False}} if task == "classification" else None
    with warnings.catch_warnings():
        # skl2onnx writes Python booleans into integer attributes of tree ensembles (the leaves'
        # "missing value goes left" flag); protobuf 6.33 accepts them with this DeprecationWarning, and
        # protobuf 7.34+ rejects them, which is why protobuf is pinned below 7 (see the design's "Models").
        warnings.filterwarnings(
            "ignore", message=r".*Expected an int, got a boolean", category=DeprecationWarning
        )
        model = convert_sklearn(
            pipeline,
            initial_types=initial_types,
            options=options,
            target_opset=TARGET_OPSET,
            # skl2onnx names the graph with a random UUID unless told; a fixed name keeps bytes reproducible.
            name=contract.schema_id,
        )
    _rename_outputs(model.graph, _RENAMED_OUTPUTS)
    if threshold is not None:
        if labels is None or len(labels.classes) != 2 or labels.positive_index is None:
            raise ValueError("a decision threshold needs a binary classifier with a positive class")
        decide_by_threshold(model.graph, labels.positive_index, threshold)
    _sort_opset_imports(model)

    columns = {NUMERIC_INPUT: list(layout.numeric), CATEGORY_INPUT: list(layout.category)}
    signature = ModelSignature(
        contract=contract.schema_id,
        contract_digest=contract.digest,
        task=task,
        inputs=[_tensor_spec(v, columns.get(v.name, [])) for v in model.graph.input],
        outputs=[_tensor_spec(v, []) for v in model.graph.output],
        classes=list(labels.classes) if labels is not None else None,
        positive_index=labels.positive_index if labels is not None else None,
        decision_threshold=threshold,
        opset=dict(TARGET_OPSET),
    )
    write_metadata(model, signature, explanation)
    onnx.checker.check_model(model)
    return ExportedModel(onnx=model.SerializeToString(), signature=signature)


def onnx_session(onnx_bytes: bytes, threads: int = 1) -> ort.InferenceSession:
    """A CPU session; one thread by default so that timings and results do not depend on the machine."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def write_metadata(
    model: onnx.ModelProto, signature: ModelSignature, explanation: dict[str, Any] | None = None
) -> None:
    """Put the platform's metadata in ``model``: the serving signature (with the decision threshold) and,
    when given, the explanation reference; any earlier entries of these keys are replaced, others kept."""
    ours = {SIGNATURE_METADATA_KEY, EXPLANATION_METADATA_KEY}
    kept = [p for p in model.metadata_props if p.key not in ours]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key = SIGNATURE_METADATA_KEY
    entry.value = json.dumps(signature.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    if explanation is not None:
        entry = model.metadata_props.add()
        entry.key = EXPLANATION_METADATA_KEY
        entry.value = spec_json(explanation)


def _tensor_spec(value: onnx.ValueInfoProto, columns: list[str]) -> TensorSpec:
    tensor = value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    dtype = TensorProto.DataType.Name(tensor.elem_type).lower()
    return TensorSpec(name=value.name, dtype=dtype, shape=dims, columns=columns)


def decide_by_threshold(graph: onnx.GraphProto, positive: int, threshold: float) -> None:
    """Replace the classifier's argmax label by ``probabilities[:, positive] >= threshold``.

    The classifier node's own label output is renamed and left unused; Gather, GreaterOrEqual and Where
    compute the graph output ``label`` with the same element type.
    """
    label = next(o for o in graph.output if o.name == "label")
    proba = next(o for o in graph.output if o.name == "probabilities")
    unused = "label_most_probable"
    for node in graph.node:
        node.output[:] = [unused if o == "label" else o for o in node.output]
    proba_type = proba.type.tensor_type.elem_type
    label_type = label.type.tensor_type.elem_type
    h = onnx.helper
    const = onnx.numpy_helper.from_array
    graph.initializer.extend(
        [
            const(np.array(positive, dtype=np.int64), "decision_positive_column"),
            const(np.array(threshold, dtype=h.tensor_dtype_to_np_dtype(proba_type)), "decision_threshold"),
            const(np.array([positive], dtype=h.tensor_dtype_to_np_dtype(label_type)), "decision_positive"),
            const(
                np.array([1 - positive], dtype=h.tensor_dtype_to_np_dtype(label_type)), "decision_negative"
            ),
        ]
    )
    graph.node.extend(
        [
            h.make_node(
                "Gather",
                ["probabilities", "decision_positive_column"],
                ["positive_probability"],
                axis=1,
                name="DecisionGather",
            ),
            h.make_node(
                "GreaterOrEqual",
                ["positive_probability", "decision_threshold"],
                ["decision_is_positive"],
                name="DecisionCompare",
            ),
            h.make_node(
                "Where",
                ["decision_is_positive", "decision_positive", "decision_negative"],
                ["label"],
                name="DecisionLabel",
            ),
        ]
    )


def _sort_opset_imports(model: onnx.ModelProto) -> None:
    """Order the opset imports by domain: skl2onnx collects them in a set, so their order (and with it the
    model's bytes and digest) would otherwise depend on the process's string hash seed."""
    imports = sorted((entry.domain, entry.version) for entry in model.opset_import)
    del model.opset_import[:]
    model.opset_import.extend(onnx.helper.make_opsetid(domain, version) for domain, version in imports)


def _rename_outputs(graph: onnx.GraphProto, renames: dict[str, str]) -> None:
    for output in graph.output:
        if output.name in renames:
            old, new = output.name, renames[output.name]
            output.name = new
            for node in graph.node:
                node.output[:] = [new if o == old else o for o in node.output]
                node.input[:] = [new if i == old else i for i in node.input]


def _with_float32_thresholds(pipeline: Pipeline) -> Pipeline:
    """The pipeline to convert, with a HistGradientBoosting model's split thresholds made float32-exact.

    skl2onnx adjusts the thresholds of scikit-learn's own trees so that a float32 input takes the same branch
    in ONNX as in scikit-learn, but it rounds HistGradientBoosting thresholds to the nearest float32. When a
    threshold t rounds up, a float32 value equal to the rounded t goes left in ONNX and right in
    scikit-learn; the parity gate's boundary rows find exactly such values. The model only ever sees float32
    values (its first step is :class:`~tollgate_trainer.pipeline.Float32Cast`), and for a float32 x,
    ``x <= t`` holds iff ``x <= w`` with w the largest float32 not above t. So a copy of the model with every
    threshold replaced by that w is the same function, and it converts exactly. The fitted pipeline itself
    is left untouched.
    """
    model = pipeline.steps[-1][1]
    if not isinstance(model, HistGradientBoostingClassifier | HistGradientBoostingRegressor):
        return pipeline
    model = copy.deepcopy(model)
    for predictors in model._predictors:
        for predictor in predictors:
            nodes = predictor.nodes
            split = nodes["is_leaf"] == 0
            threshold = nodes["num_threshold"][split]
            down = threshold.astype(np.float32)
            above = down.astype(np.float64) > threshold
            down[above] = np.nextafter(down[above], np.float32(-np.inf))
            nodes["num_threshold"][split] = down.astype(np.float64)
    return Pipeline([*pipeline.steps[:-1], (pipeline.steps[-1][0], model)])


# ------------------------------------------------------------------------------ converters for our steps


@cache
def _register_converters() -> None:
    """Teach skl2onnx our two small steps; done on first export, never at import time."""
    update_registered_converter(
        NumericImputer, "TollgateNumericImputer", _same_shape, _convert_numeric_imputer
    )
    update_registered_converter(
        Float32Cast, "TollgateFloat32Cast", _float_shape, _convert_float32_cast, parser=_parse_float32_cast
    )


def _parse_float32_cast(scope: Any, model: Float32Cast, inputs: list[Any], custom_parsers: Any = None) -> Any:
    """Declare the cast's output as float at parse time.

    skl2onnx types a ColumnTransformer's concatenation from its first block while parsing, before any
    shape calculator runs; left to the default parser, the cast would be typed like its (double) input and
    a tree model would be converted for double, which onnxruntime cannot run for HistGradientBoosting.
    """
    operator = scope.declare_local_operator("TollgateFloat32Cast", model)
    operator.inputs = inputs
    operator.outputs.append(scope.declare_local_variable("float32", FloatTensorType()))
    return operator.outputs


def _same_shape(operator: Any) -> None:
    source = operator.inputs[0].type
    operator.outputs[0].type = source.__class__([source.shape[0], source.shape[1]])


def _float_shape(operator: Any) -> None:
    source = operator.inputs[0].type
    operator.outputs[0].type = FloatTensorType([source.shape[0], source.shape[1]])


def _convert_numeric_imputer(scope: Any, operator: Any, container: Any) -> None:
    imputer: NumericImputer = operator.raw_operator
    (source,) = operator.inputs
    double = isinstance(source.type, DoubleTensorType)
    statistics = np.asarray(imputer.statistics_, dtype=np.float64 if double else np.float32)
    fill = scope.get_unique_variable_name("fill")
    container.add_initializer(
        fill, TensorProto.DOUBLE if double else TensorProto.FLOAT, [1, statistics.size], statistics.tolist()
    )
    missing = scope.get_unique_variable_name("missing")
    container.add_node("IsNaN", [source.full_name], [missing], name=scope.get_unique_operator_name("IsNaN"))
    container.add_node(
        "Where",
        [missing, fill, source.full_name],
        [operator.outputs[0].full_name],
        name=scope.get_unique_operator_name("Where"),
    )


def _convert_float32_cast(scope: Any, operator: Any, container: Any) -> None:
    container.add_node(
        "Cast",
        [operator.inputs[0].full_name],
        [operator.outputs[0].full_name],
        to=TensorProto.FLOAT,
        name=scope.get_unique_operator_name("Cast"),
    )
