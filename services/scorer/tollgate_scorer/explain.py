"""Per-decision feature attributions, computed from the served ONNX model (no scikit-learn).

Two methods, chosen per version when it is loaded:

* **Linear models** (the trainer's ``logistic_regression`` family: LogisticRegression, or Ridge for a
  regression label): exact. The model's margin is ``w . z + b``, where ``z`` is the preprocessed input
  (imputed, scaled, one-hot) that enters its linear layer, so the attribution of column j is
  ``w_j * (z_j - mean_j)``, with ``mean_j`` the training mean of that column; a feature's attribution is the
  sum over its columns (a category has one column per value). They sum to ``margin(x) - margin(mean)``,
  the margin being the log-odds of the positive class for a binary classifier (the explained class's
  score for several classes, the prediction for a regressor).
* **Every other model** (tree ensembles): sampled Shapley values (permutation sampling, Strumbelj and
  Kononenko 2014) against the training reference point r, i.e. the Shapley values of the game
  ``v(S) = f(x_S, r_rest)`` (baseline Shapley). A fixed budget of permutations, drawn once per version
  from a fixed seed (half of them the reverse of the other half: antithetic pairs), so the same input
  always gets the same explanation. Every coalition of every permutation, for every row of a request, is
  scored in ONE onnxruntime run. Each permutation's marginal contributions add up to ``f(x) - f(r)``
  exactly, so the attributions sum to prediction - baseline up to float rounding, whatever the budget; the
  budget only sets how close each one is to the exact Shapley value. ``f`` is the positive-class
  probability (binary), the predicted class's probability (several classes) or the prediction.

Where each input comes from, and why:

* The coefficients and the preprocessed input ``z`` are read from the graph with the ``onnx`` package (a
  dependency of the scorer: protobuf and numpy, no scikit-learn): the linear layer is the graph's one
  ``MatMul`` by a constant followed by ``Add`` of a constant (skl2onnx's double-precision form), or an
  ``ai.onnx.ml`` ``LinearClassifier`` / ``LinearRegressor`` node. A second session of the same graph with
  ``z`` added as an output gives the preprocessed input, computed by the very operators that serve, so the
  explanation cannot drift from the model. Coefficients copied elsewhere could.
* The training reference cannot be read from a graph: the trainer writes it into the artifact's metadata
  (``tollgate.explanation``, see :mod:`tollgate_trainer.explanation`): the reference point in the raw input
  layout (numeric means, category modes) and, for a linear model, the feature of each preprocessed column
  and the column's training mean. A version without it (trained before explanations existed, or built
  elsewhere) is served as before; asking it for an explanation is refused with a message that says why.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import onnxruntime as ort

from tollgate_scorer.signature import Signature

EXPLANATION_METADATA_KEY = "tollgate.explanation"
DEFAULT_PERMUTATIONS = 32
DEFAULT_SEED = 0
# A request may ask for more rows than this many coalition rows in one run; beyond, rows are explained in
# chunks (still one run per chunk) so one request cannot allocate without bound.
MAX_COALITION_ROWS = 200_000

Output = Literal["log_odds", "margin", "probability", "prediction"]
Method = Literal["linear", "sampled_shapley"]


class ExplanationUnavailable(Exception):
    """This version cannot be explained (no training reference in its artifact, or an unusable graph)."""


@dataclass(slots=True, frozen=True)
class Attribution:
    """One feature's share of a decision: its value in the request and its contribution to the output."""

    feature: str
    value: float | str | None
    contribution: float

    def as_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "value": self.value, "contribution": self.contribution}


@dataclass(slots=True, frozen=True)
class Explanation:
    """The attributions of one row, in the order of the model's input columns.

    ``value - baseline`` equals the sum of the contributions (exactly for linear models, up to float
    rounding for sampled Shapley values); ``output`` says what ``value`` is.
    """

    method: Method
    output: Output
    baseline: float
    value: float
    attributions: tuple[Attribution, ...]

    def top(self, k: int) -> tuple[Attribution, ...]:
        """The reason codes: the ``k`` largest contributions by magnitude (ties in input order)."""
        order = sorted(range(len(self.attributions)), key=lambda i: -abs(self.attributions[i].contribution))
        return tuple(self.attributions[i] for i in order[:k])

    def reason_codes(self, k: int) -> dict[str, Any]:
        """What the inference log records (``InferenceExplanation``): the top ``k`` contributions, without
        the values (the event's inputs hold them, PII protected)."""
        return {
            "method": self.method,
            "output": self.output,
            "baseline": self.baseline,
            "value": self.value,
            "reasons": [{"feature": a.feature, "contribution": a.contribution} for a in self.top(k)],
        }

    def as_dict(self, top_k: int | None = None) -> dict[str, Any]:
        chosen = self.attributions if top_k is None else self.top(top_k)
        return {
            "method": self.method,
            "output": self.output,
            "baseline": self.baseline,
            "value": self.value,
            "attributions": [a.as_dict() for a in chosen],
        }


class Explainer(Protocol):
    method: Method

    def explain(self, feeds: dict[str, np.ndarray]) -> list[Explanation]:
        """One explanation per row of ``feeds`` (the arrays the model is run on)."""
        ...


@dataclass(slots=True, frozen=True)
class _Column:
    """One raw input column: the contract feature, its input tensor and its index there."""

    feature: str
    input: str
    index: int


def _columns(signature: Signature) -> list[_Column]:
    return [
        _Column(feature, spec.name, j) for spec in signature.inputs for j, feature in enumerate(spec.columns)
    ]


def _raw_value(value: Any) -> float | str | None:
    if isinstance(value, str):
        return value if value != "" else None
    number = float(value)
    return None if math.isnan(number) else number


def _values(
    columns: Sequence[_Column], feeds: dict[str, np.ndarray], n: int
) -> list[list[float | str | None]]:
    lists = {name: array.tolist() for name, array in feeds.items()}
    return [[_raw_value(lists[c.input][i][c.index]) for c in columns] for i in range(n)]


def _rows(feeds: dict[str, np.ndarray]) -> int:
    return len(next(iter(feeds.values())))


def read_spec(session: ort.InferenceSession) -> dict[str, Any] | None:
    metadata: dict[str, str] = session.get_modelmeta().custom_metadata_map
    text = metadata.get(EXPLANATION_METADATA_KEY)
    if text is None:
        return None
    spec = json.loads(text)
    if not isinstance(spec, dict) or not isinstance(spec.get("reference"), dict):
        raise ExplanationUnavailable(f"the {EXPLANATION_METADATA_KEY!r} metadata has no reference point")
    return spec


def build_explainer(
    data: bytes,
    session: ort.InferenceSession,
    signature: Signature,
    options: ort.SessionOptions | None = None,
    *,
    permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = DEFAULT_SEED,
) -> Explainer:
    """The explainer of one version: exact for a linear model, sampled Shapley values otherwise.

    Raises :class:`ExplanationUnavailable` when the artifact carries no training reference.
    """
    spec = read_spec(session)
    if spec is None:
        raise ExplanationUnavailable(
            f"the artifact has no {EXPLANATION_METADATA_KEY!r} metadata (no training reference to explain "
            "against: it was exported before explanations existed or outside the trainer)"
        )
    reference = _reference_feeds(spec["reference"], signature)
    linear = spec.get("linear")
    if isinstance(linear, dict):
        return LinearExplainer.from_graph(data, signature, linear, options)
    return SampledShapleyExplainer(session, signature, reference, permutations=permutations, seed=seed)


def _reference_feeds(reference: dict[str, Any], signature: Signature) -> dict[str, np.ndarray]:
    feeds: dict[str, np.ndarray] = {}
    for spec in signature.inputs:
        values = reference.get(spec.name)
        if not isinstance(values, list) or len(values) != len(spec.columns):
            raise ExplanationUnavailable(
                f"the reference point has no value per column of input {spec.name!r}"
            )
        if spec.dtype == "string":
            feeds[spec.name] = np.array([["" if v is None else str(v) for v in values]], dtype=object)
        else:
            row = [math.nan if v is None else float(v) for v in values]
            feeds[spec.name] = np.array([row], dtype=np.float64 if spec.dtype == "double" else np.float32)
    return feeds


# ---------------------------------------------------------------------------------------------- linear


@dataclass(slots=True, frozen=True)
class _LinearLayer:
    input: str  # the preprocessed input z
    weights: np.ndarray  # columns x scores
    bias: np.ndarray  # scores
    logistic: bool  # scores go through a sigmoid (binary logistic regression) rather than a softmax


def _linear_layer(model: Any) -> _LinearLayer:
    from onnx import helper, numpy_helper

    graph = model.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found: list[_LinearLayer] = []
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in constants:
            adds = [n for n in consumers.get(node.output[0], []) if n.op_type == "Add"]
            bias_names = [i for a in adds for i in a.input if i in constants]
            if len(adds) != 1 or len(bias_names) != 1:
                continue
            weights = np.asarray(constants[node.input[1]], dtype=np.float64)
            bias = np.asarray(constants[bias_names[0]], dtype=np.float64).reshape(-1)
            after = {n.op_type for n in consumers.get(adds[0].output[0], [])}
            found.append(_LinearLayer(node.input[0], weights, bias, "Sigmoid" in after))
        elif node.op_type in ("LinearClassifier", "LinearRegressor"):
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            coefficients = np.asarray(attrs.get("coefficients", []), dtype=np.float64)
            bias = np.asarray(attrs.get("intercepts", []), dtype=np.float64)
            scores = max(len(bias), int(attrs.get("targets", 1)))
            post = attrs.get("post_transform", b"NONE")
            post = post.decode() if isinstance(post, bytes) else str(post)
            weights = coefficients.reshape(scores, -1).T
            if len(bias) == 0:
                bias = np.zeros(scores)
            found.append(_LinearLayer(node.input[0], weights, bias, post == "LOGISTIC"))
    if len(found) != 1:
        raise ExplanationUnavailable(
            f"the artifact says it is linear, but its graph has {len(found)} linear layers (expected one)"
        )
    return found[0]


class LinearExplainer:
    """Exact attributions ``w * (z - mean)`` of a linear model, ``z`` read from its own graph."""

    method: Method = "linear"

    def __init__(
        self,
        session: ort.InferenceSession,
        signature: Signature,
        layer: _LinearLayer,
        column_features: Sequence[str],
        input_mean: Sequence[float],
    ) -> None:
        width = layer.weights.shape[0]
        if len(column_features) != width or len(input_mean) != width:
            raise ExplanationUnavailable(
                f"the linear layer has {width} input columns; the explanation metadata describes "
                f"{len(column_features)} with {len(input_mean)} means"
            )
        self._session = session
        self._layer = layer
        self._columns = _columns(signature)
        self._mean = np.asarray(input_mean, dtype=np.float64)
        features = [c.feature for c in self._columns]
        unknown = sorted(set(column_features) - set(features))
        if unknown:
            raise ExplanationUnavailable(f"preprocessed columns of unknown features: {', '.join(unknown)}")
        # features x columns: sums the columns of each feature.
        self._group = np.array([[f == g for g in column_features] for f in features], dtype=np.float64)
        self.column_features = tuple(column_features)
        scores = layer.weights.shape[1]
        classification = signature.task == "classification"
        classes = len(signature.classes or ())
        self._positive = signature.positive_index
        # The margin whose attributions are reported, as a combination of the layer's scores.
        if classification and classes == 2 and scores == 2:
            positive = self._positive if self._positive is not None else 1
            if layer.logistic:
                # skl2onnx's binary form: scores (-m, m), probabilities sigmoid(score) / sum: log-odds = m.
                self._fixed: np.ndarray | None = np.eye(2)[positive]
            else:  # softmax over two scores: log-odds = s_pos - s_neg
                self._fixed = np.eye(2)[positive] - np.eye(2)[1 - positive]
            self.output: Output = "log_odds"
        elif classification and classes == 2 and scores == 1:
            self._fixed = np.ones(1) if (self._positive or 1) == 1 else -np.ones(1)
            self.output = "log_odds"
        elif classification:
            self._fixed = None  # the predicted class's score, chosen per row
            self.output = "margin"
        else:
            self._fixed = np.ones(1) if scores == 1 else np.eye(scores)[0]
            self.output = "prediction"

    @classmethod
    def from_graph(
        cls,
        data: bytes,
        signature: Signature,
        linear: dict[str, Any],
        options: ort.SessionOptions | None = None,
    ) -> LinearExplainer:
        import onnx

        model = onnx.load_from_string(data)
        layer = _linear_layer(model)
        inferred = onnx.shape_inference.infer_shapes(model)
        info = next((v for v in inferred.graph.value_info if v.name == layer.input), None)
        if info is None:
            info = next((v for v in model.graph.input if v.name == layer.input), None)
        if info is None:
            raise ExplanationUnavailable(f"the type of the linear layer's input {layer.input!r} is unknown")
        if all(o.name != layer.input for o in model.graph.output):
            model.graph.output.append(info)
        session = ort.InferenceSession(
            model.SerializeToString(), options or ort.SessionOptions(), providers=["CPUExecutionProvider"]
        )
        columns = linear.get("columns")
        means = linear.get("input_mean")
        if not isinstance(columns, list) or not isinstance(means, list):
            raise ExplanationUnavailable("the linear explanation metadata needs 'columns' and 'input_mean'")
        return cls(session, signature, layer, [str(c) for c in columns], [float(m) for m in means])

    def _combination(self, z: np.ndarray) -> np.ndarray:
        """Per row, the combination of the layer's scores that is explained (scores x rows)."""
        if self._fixed is not None:
            return np.repeat(self._fixed[:, None], len(z), axis=1)
        scores = z @ self._layer.weights + self._layer.bias
        return np.eye(scores.shape[1])[:, np.argmax(scores, axis=1)]

    def column_contributions(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The preprocessed input (rows x columns) and each column's contribution (rows x columns)."""
        (z,) = self._session.run([self._layer.input], feeds)
        z = np.asarray(z, dtype=np.float64)
        combination = self._combination(z)  # scores x rows
        weights = (self._layer.weights @ combination).T  # rows x columns
        return z, weights * (z - self._mean)

    def explain(self, feeds: dict[str, np.ndarray]) -> list[Explanation]:
        z, contributions = self.column_contributions(feeds)
        combination = self._combination(z)
        weights = self._layer.weights @ combination  # columns x rows
        bias = self._layer.bias @ combination  # rows
        values = np.einsum("rc,cr->r", z, weights) + bias
        baselines = self._mean @ weights + bias
        per_feature = contributions @ self._group.T  # rows x features
        raw = _values(self._columns, feeds, len(z))
        names = [c.feature for c in self._columns]
        return [
            Explanation(
                "linear",
                self.output,
                float(baselines[i]),
                float(values[i]),
                tuple(Attribution(name, raw[i][j], float(per_feature[i, j])) for j, name in enumerate(names)),
            )
            for i in range(len(z))
        ]


# -------------------------------------------------------------------------------------- sampled Shapley


class SampledShapleyExplainer:
    """Baseline Shapley values by permutation sampling, all coalitions scored in one onnxruntime run."""

    method: Method = "sampled_shapley"

    def __init__(
        self,
        session: ort.InferenceSession,
        signature: Signature,
        reference: dict[str, np.ndarray],
        *,
        permutations: int = DEFAULT_PERMUTATIONS,
        seed: int = DEFAULT_SEED,
    ) -> None:
        if permutations < 2 or permutations % 2:
            raise ValueError("permutations must be an even number of at least 2 (antithetic pairs)")
        self._session = session
        self._columns = _columns(signature)
        self._reference = reference
        self._task = signature.task
        self._positive = signature.positive_index
        self._outputs = (
            ["probabilities"] if signature.task == "classification" else [signature.output_names()[-1]]
        )
        if signature.task != "classification" and "prediction" in signature.output_names():
            self._outputs = ["prediction"]
        self.output: Output = "probability" if signature.task == "classification" else "prediction"
        d = len(self._columns)
        rng = np.random.default_rng(seed)
        half = [rng.permutation(d) for _ in range(permutations // 2)]
        orders = np.array([*half, *(p[::-1] for p in half)], dtype=np.intp).reshape(permutations, d)
        self.permutations = orders
        # masks[m, i, f]: feature f comes from the row (not the reference) after the first i+1 features of
        # permutation m are in; prefix sizes 1..d-1 (the empty and the full coalition are the same for
        # every permutation and are scored once).
        masks = np.zeros((permutations, max(d - 1, 0), d), dtype=bool)
        for m, order in enumerate(orders):
            for i in range(d - 1):
                masks[m, i, order[: i + 1]] = True
        self._masks = masks.reshape(-1, d)
        self._position = np.argsort(orders, axis=1)  # position of each feature in each permutation
        # Per input: which feature (column of the masks) each of its columns is.
        self._input_columns = {
            name: np.array([k for k, c in enumerate(self._columns) if c.input == name], dtype=np.intp)
            for name in reference
        }
        self._baseline_scores = self._scores(self._run(reference))
        self.coalitions_per_row = len(self._masks) + 1

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        (out,) = self._session.run(self._outputs, feeds)
        return np.asarray(out, dtype=np.float64)

    def _scores(self, out: np.ndarray) -> np.ndarray:
        """All output columns per row (classes, or the one prediction)."""
        return out.reshape(len(out), -1)

    def explain(self, feeds: dict[str, np.ndarray]) -> list[Explanation]:
        n = _rows(feeds)
        if n == 0:
            return []
        per_chunk = max(1, MAX_COALITION_ROWS // self.coalitions_per_row)
        explanations: list[Explanation] = []
        for start in range(0, n, per_chunk):
            chunk = {name: array[start : start + per_chunk] for name, array in feeds.items()}
            explanations.extend(self._explain(chunk))
        return explanations

    def _explain(self, feeds: dict[str, np.ndarray]) -> list[Explanation]:
        n = _rows(feeds)
        d = len(self._columns)
        masks = self._masks  # coalitions x features
        c = len(masks)
        batch: dict[str, np.ndarray] = {}
        for name, row in self._reference.items():
            x = feeds[name]  # n x k
            keep = masks[:, self._input_columns[name]]  # c x k
            mixed = np.where(keep[None, :, :], x[:, None, :], row[None, :, :])  # n x c x k
            # The rows themselves (the full coalition) go last.
            batch[name] = np.concatenate([mixed.reshape(n * c, -1), x], axis=0).astype(x.dtype, copy=False)
        scores = self._scores(self._run(batch))
        coalition_scores, full_scores = scores[: n * c], scores[n * c :]
        if self._task == "classification":
            if self._positive is not None:
                explained = np.full(n, self._positive, dtype=np.intp)
            else:
                explained = np.argmax(full_scores, axis=1)
        else:
            explained = np.zeros(n, dtype=np.intp)
        picked = coalition_scores.reshape(n, c, -1)[np.arange(n), :, explained]  # n x c
        value = full_scores[np.arange(n), explained]
        baseline = self._baseline_scores[0, explained]
        m = len(self.permutations)
        # Per permutation the chain baseline, prefixes 1..d-1, value; consecutive differences are the
        # marginal contributions of the features in permutation order.
        chain = np.concatenate(
            [
                np.repeat(baseline[:, None, None], m, axis=1),
                picked.reshape(n, m, max(d - 1, 0)),
                np.repeat(value[:, None, None], m, axis=1),
            ],
            axis=2,
        )
        marginal = np.diff(chain, axis=2)  # n x m x d, in permutation order
        by_feature = np.take_along_axis(marginal, np.broadcast_to(self._position, marginal.shape), axis=2)
        phi = by_feature.mean(axis=1)  # n x d
        raw = _values(self._columns, feeds, n)
        names = [col.feature for col in self._columns]
        return [
            Explanation(
                "sampled_shapley",
                self.output,
                float(baseline[i]),
                float(value[i]),
                tuple(Attribution(name, raw[i][j], float(phi[i, j])) for j, name in enumerate(names)),
            )
            for i in range(n)
        ]
