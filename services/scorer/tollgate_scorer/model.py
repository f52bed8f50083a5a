"""One served model version: its onnxruntime session, signature, contract and compiled input reader.

A :class:`ServingModel` is immutable and built completely (loaded, checked, warmed up) before anything can
route to it; swapping versions replaces references to these objects, never their insides, so a request
that picked a model finishes on it.

Session options, measured with ``tollgate scorer tune`` (onnxruntime 1.31.1; credit-default
logistic regression, synthetic-risk logistic regression and a 100-tree random forest; one row and 1,000 rows
per call; rounds interleaved, best round kept) on this project's 2-core machines, which are shared, so only
differences that repeated across runs count:

* ``intra_op_num_threads=1``: never slower on one row (15-17 us credit-default, 35-40 us synthetic-risk);
  the default pool (a thread per core) made 1,000-row runs up to 1.5-3x slower in some runs, its threads
  competing with the event loop and the broker on two cores. The scorer is one event-loop thread;
  parallelism comes from running more processes.
* graph optimisation ``ORT_ENABLE_ALL``: within noise of BASIC; DISABLE_ALL 5-10 % slower on 1,000 rows of
  the 20-feature models.
* ``enable_cpu_mem_arena=False``: one row 1-9 us faster in most runs (e.g. 36.5 vs 45.7 us for the forest,
  16.4 vs 25.8 us credit-default), no consistent difference on 1,000 rows, and less memory per loaded
  version.
* ``ORT_SEQUENTIAL`` execution: these graphs are chains; a parallel executor only adds scheduling.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np
import onnxruntime as ort

from tollgate_core.contracts import ContractRegistry, DatasetContract
from tollgate_core.pii import PiiRedactor
from tollgate_scorer.explain import DEFAULT_PERMUTATIONS, Explainer, build_explainer
from tollgate_scorer.instances import Feeds, InstanceReader, example_instance
from tollgate_scorer.signature import Signature, read_signature

GraphOptimization = Literal["disable", "basic", "extended", "all"]
_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(frozen=True)
class SessionConfig:
    intra_op_threads: int = 1
    graph_optimization: GraphOptimization = "all"
    cpu_mem_arena: bool = False
    sequential: bool = True

    def options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = _LEVELS[self.graph_optimization]
        options.enable_cpu_mem_arena = self.cpu_mem_arena
        options.execution_mode = (
            ort.ExecutionMode.ORT_SEQUENTIAL if self.sequential else ort.ExecutionMode.ORT_PARALLEL
        )
        return options


class ModelLoadError(Exception):
    """A version cannot be served: missing or corrupt artifact, not ONNX, or not matching its contract."""


class Predictions:
    """Outputs of one ``run``: onnxruntime's arrays, and the same as Python values (one entry per row),
    made on first use. A binary OIP answer needs only the arrays; JSON answers, Kafka results and the
    inference log (built after the answer) use the lists."""

    __slots__ = ("_predictions", "_probabilities", "_scores", "classes", "labels", "matrix", "positive")

    def __init__(
        self,
        labels: np.ndarray,
        matrix: np.ndarray | None,
        classes: tuple[Any, ...] = (),
        positive: int | None = None,
    ) -> None:
        self.labels = labels  # class indices (classifiers) or predicted values (regressors), 1-D
        self.matrix = matrix  # class probabilities, rows x classes (classifiers)
        self.classes = classes
        self.positive = positive
        self._predictions: list[Any] | None = None
        self._scores: list[float] | None = None
        self._probabilities: list[list[float]] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def predictions(self) -> list[Any]:
        if self._predictions is None:
            if self.matrix is None:
                self._predictions = self.labels.tolist()
            else:
                classes = self.classes
                self._predictions = [classes[i] for i in self.labels.tolist()]
        return self._predictions

    @property
    def scores(self) -> list[float] | None:
        if self.matrix is None:
            return None
        if self._scores is None:
            self._scores = self.score_array().tolist()
        return self._scores

    @property
    def probabilities(self) -> list[list[float]] | None:
        if self.matrix is None:
            return None
        if self._probabilities is None:
            self._probabilities = self.matrix.tolist()
        return self._probabilities

    def split(self) -> list[Predictions]:
        """One :class:`Predictions` per row, its Python values taken from this run's lists (each array is
        converted once for all rows, not once per row): the outputs of requests scored together."""
        matrix, classes, positive = self.matrix, self.classes, self.positive
        predictions, scores, probabilities = self.predictions, self.scores, self.probabilities
        rows = []
        for i, labels in enumerate(self.labels.reshape(-1, 1)):
            row = Predictions(labels, None if matrix is None else matrix[i : i + 1], classes, positive)
            row._predictions = [predictions[i]]
            if scores is not None and probabilities is not None:
                row._scores = [scores[i]]
                row._probabilities = [probabilities[i]]
            rows.append(row)
        return rows

    def score_array(self) -> np.ndarray:
        """The positive class's probability per row, or the predicted class's when there is none."""
        assert self.matrix is not None
        if self.positive is not None:
            return self.matrix[:, self.positive]
        return cast(np.ndarray, self.matrix[np.arange(len(self.labels)), self.labels])

    def prediction_array(self) -> np.ndarray:
        if self.matrix is None:
            return self.labels
        return cast(np.ndarray, np.asarray(self.classes)[self.labels])


def class_key(value: bool | int | str) -> str:
    """A class label as the text it has in JSON (``true``, ``3``, ``Yes``): the key of ``probabilities``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True, eq=False)
class ServingModel:
    name: str
    version: str
    digest: str
    contract: DatasetContract
    signature: Signature
    session: ort.InferenceSession
    reader: InstanceReader
    redactor: PiiRedactor
    loaded_at: float = field(default_factory=time.time)
    # Per-decision attributions (tollgate_scorer.explain); None with the reason when this version has none.
    explainer: Explainer | None = None
    explain_error: str | None = None
    # Derived from the signature in __post_init__.
    task: str = field(init=False)
    classes: tuple[bool | int | str, ...] = field(init=False)
    class_keys: tuple[str, ...] = field(init=False)
    positive_index: int | None = field(init=False)
    output_names: list[str] = field(init=False)
    # Binary classifiers: the positive-class probability from which the decision is positive (the graph
    # decides by it: the catalog's threshold, else the most probable class, i.e. 0.5); None otherwise.
    threshold: float | None = field(init=False)

    def __post_init__(self) -> None:
        classes = tuple(self.signature.classes or ())
        set_ = object.__setattr__
        set_(self, "task", self.signature.task)
        set_(self, "classes", classes)
        set_(self, "class_keys", tuple(class_key(c) for c in classes))
        set_(self, "positive_index", self.signature.positive_index)
        names = ["label", "probabilities"] if self.signature.task == "classification" else ["prediction"]
        set_(self, "output_names", names)
        binary = self.signature.task == "classification" and len(classes) == 2
        decided = self.signature.decision_threshold
        set_(self, "threshold", (0.5 if decided is None else decided) if binary else None)

    @property
    def contract_id(self) -> str:
        return self.contract.schema_id

    def run(self, feeds: Feeds) -> Predictions:
        outputs = self.session.run(self.output_names, feeds)
        if self.task != "classification":
            return Predictions(outputs[0].ravel(), None)
        return Predictions(outputs[0].ravel(), outputs[1], self.classes, self.positive_index)


def load_serving_model(
    name: str,
    version: str,
    digest: str,
    data: bytes,
    *,
    contracts: ContractRegistry,
    expected_contract: str | None,
    config: SessionConfig,
    pii_key: bytes,
    warmup_rounds: int = 20,
    explain_permutations: int = DEFAULT_PERMUTATIONS,
) -> ServingModel:
    """Build, check and warm up a version from its (already digest-verified) ONNX bytes.

    Its explainer is built too; a version that cannot be explained is served all the same (the reason is
    kept in ``explain_error`` and given to whoever asks for an explanation)."""
    try:
        session = ort.InferenceSession(data, config.options(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unparsable graphs
        raise ModelLoadError(f"{name} {version}: not a loadable ONNX model: {exc}") from exc
    try:
        signature = read_signature(session)
    except ValueError as exc:
        raise ModelLoadError(f"{name} {version}: {exc}") from exc
    if expected_contract is not None and signature.contract != expected_contract:
        raise ModelLoadError(
            f"{name} {version}: the lifecycle event says contract {expected_contract}, "
            f"the artifact was trained on {signature.contract}"
        )
    contract = contracts.get(signature.contract)
    if contract is None:
        raise ModelLoadError(f"{name} {version}: dataset contract {signature.contract} is not known here")
    try:
        reader = InstanceReader(contract, signature)
    except ValueError as exc:
        raise ModelLoadError(f"{name} {version}: {exc}") from exc
    explainer: Explainer | None = None
    explain_error: str | None = None
    try:
        explainer = build_explainer(
            data, session, signature, config.options(), permutations=explain_permutations
        )
    except Exception as exc:  # explanations are optional: the version serves without them
        explain_error = str(exc)
    model = ServingModel(
        name=name,
        version=version,
        digest=digest,
        contract=contract,
        signature=signature,
        session=session,
        reader=reader,
        redactor=PiiRedactor(contract, pii_key),
        explainer=explainer,
        explain_error=explain_error,
    )
    warm_up(model, warmup_rounds)
    return model


def warm_up(model: ServingModel, rounds: int) -> None:
    """Run the whole read → run path on contract-made rows, so the first request pays no first-call costs
    (allocations, kernel selection); one row and a batch, since both shapes are served."""
    example = example_instance(model.contract)
    batch = [example] * 64
    for _ in range(rounds):
        model.run(model.reader.read([example]))
    for _ in range(max(1, rounds // 10)):
        model.run(model.reader.read(batch))
