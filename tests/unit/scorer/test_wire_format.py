"""The wire formats are written once: the hot path's hand-built JSON is held against the pydantic models
that describe it, over generated inputs.

Three fast encoders build JSON by splicing pre-serialised pieces instead of going through the models:
the inference log (:class:`~tollgate_scorer.inference_log.InferenceEventEncoder`, ``inference.log.v1``),
the HTTP answer (:func:`~tollgate_scorer.http.result_rows`, the OpenAPI ``ScoreResult``) and the Kafka
result (:meth:`~tollgate_scorer.stage.ScoringStage._answers`, ``scoring.results.v1``). For each, over
generated outputs, instances, routes, channels, trace contexts and model signatures:

1. the bytes parse as the event model (``extra="forbid"``: no field the model does not declare, every type
   as declared), and dumping the parsed model (only the fields that were sent) gives back the same
   document: nothing the encoder writes changes meaning through the model;
2. the document equals what the model itself serialises for the same inference, built field by field with
   the model's constructors.

The comparison is of parsed documents, not bytes: JSON key order is not part of any of these contracts
(the encoders put the constant fields first, to splice them). An optional field the encoder leaves out
means the same as the model's ``null``: (2) compares every declared field, the absent ones read as their
defaults, while (1) holds the fields actually sent. Timestamps are compared as instants, to the
microsecond the encoder writes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.scorer.support import CONTRACT, PII_KEY
from tollgate_core.pii import PiiRedactor
from tollgate_core.scoring import (
    Channel,
    DecisionExplanation,
    FeatureAttribution,
    InferenceLogEvent,
    InferenceLogPayload,
    InferenceOutputs,
    Route,
    ScoringResultEvent,
    ScoringResultPayload,
)
from tollgate_scorer.core import Part, Scored
from tollgate_scorer.explain import Attribution, Explanation
from tollgate_scorer.http import result_rows
from tollgate_scorer.inference_log import InferenceEventEncoder, LogEntry
from tollgate_scorer.model import Predictions, class_key
from tollgate_scorer.openapi import BatchScoreResponse, ScoreResult

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ENTITY = CONTRACT.entity_id.name
REDACTOR = PiiRedactor(CONTRACT, PII_KEY)


@dataclass(frozen=True)
class _Reader:
    entity_field: str


@dataclass(frozen=True)
class WireModel:
    """What the encoders read of a served version (a :class:`~tollgate_scorer.model.ServingModel` has
    these and more), with a generated signature: classes, decision threshold, names."""

    name: str
    version: str
    contract_id: str
    classes: tuple[Any, ...]
    class_keys: tuple[str, ...]
    positive_index: int | None
    threshold: float | None
    reader: _Reader
    redactor: PiiRedactor
    explain_error: str | None = None


# ---- generators

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=24)
texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
probability = st.floats(0.0, 1.0, allow_nan=False)


@st.composite
def wire_models(draw: st.DrawFn) -> WireModel:
    kind = draw(st.sampled_from(["binary", "multiclass", "regression"]))
    if kind == "binary":
        classes: tuple[Any, ...] = (False, True)
        positive: int | None = 1
        threshold: float | None = draw(probability)
    elif kind == "multiclass":
        classes = tuple(
            draw(
                st.one_of(
                    st.lists(st.integers(-5, 50), min_size=3, max_size=5, unique=True),
                    st.lists(names, min_size=3, max_size=5, unique=True),
                )
            )
        )
        positive, threshold = None, None
    else:
        classes, positive, threshold = (), None, None
    return WireModel(
        name=draw(names),
        version=draw(st.integers(1, 10_000).map(str)),
        contract_id=CONTRACT.schema_id,
        classes=classes,
        class_keys=tuple(class_key(c) for c in classes),
        positive_index=positive,
        threshold=threshold,
        reader=_Reader(ENTITY),
        redactor=REDACTOR,
    )


@st.composite
def outputs(draw: st.DrawFn, model: WireModel, rows: int) -> Predictions:
    """A run's outputs for ``rows`` rows, shaped as the version's signature makes them."""
    if not model.classes:
        values = draw(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=rows, max_size=rows))
        return Predictions(np.asarray(values, dtype=np.float32), None)
    k = len(model.classes)
    weights = draw(
        st.lists(st.lists(st.floats(0.01, 1.0), min_size=k, max_size=k), min_size=rows, max_size=rows)
    )
    matrix = np.asarray(weights, dtype=np.float32)
    matrix /= matrix.sum(axis=1, keepdims=True)
    labels = matrix.argmax(axis=1).astype(np.int64)
    return Predictions(labels, matrix, model.classes, model.positive_index)


@st.composite
def instance(draw: st.DrawFn) -> dict[str, Any]:
    """A valid credit-default instance, the entity id and the PII attribute sometimes left out."""
    out: dict[str, Any] = {
        "student": draw(st.sampled_from(["No", "Yes"])),
        "balance": draw(st.floats(0, 10_000)),
        "income": draw(st.one_of(st.none(), st.floats(0, 1_000_000), st.integers(0, 1_000_000))),
    }
    if draw(st.booleans()):
        out[ENTITY] = draw(texts)
    if draw(st.booleans()):
        out["customer_email"] = draw(st.one_of(st.none(), texts.map(lambda t: f"{t}@example.com")))
    return out


@st.composite
def explanations(draw: st.DrawFn, rows: int) -> list[Explanation]:
    """One explanation per row, as an explainer makes them (values: numbers, categories or missing)."""
    numbers = st.floats(-1e6, 1e6, allow_nan=False)
    features = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    return [
        Explanation(
            draw(st.sampled_from(["linear", "sampled_shapley"])),
            draw(st.sampled_from(["log_odds", "margin", "probability", "prediction"])),
            draw(numbers),
            draw(numbers),
            tuple(
                Attribution(f, draw(st.one_of(st.none(), numbers, texts)), draw(numbers)) for f in features
            ),
        )
        for _ in range(rows)
    ]


traceparents = st.one_of(
    st.none(),
    st.tuples(st.binary(min_size=16, max_size=16), st.binary(min_size=8, max_size=8)).map(
        lambda t: f"00-{t[0].hex()}-{t[1].hex()}-01".encode()
    ),
)
routes = st.sampled_from([r.value for r in Route])
channels = st.sampled_from([c.value for c in Channel])
# Whole microseconds after the epoch, in the years the platform runs.
instants = st.integers(1_700_000_000_000_000, 2_100_000_000_000_000).map(lambda us: us / 1_000_000)


# ---- helpers


def same_instant(a: str, b: str) -> bool:
    delta = datetime.fromisoformat(a) - datetime.fromisoformat(b)
    return abs(delta.total_seconds()) <= 1e-6  # the encoder writes the float time to the microsecond


def round_trips(model: type[Any], raw: bytes) -> dict[str, Any]:
    """The document parsed, after checking that the model parses it and dumps back the same document."""
    document: dict[str, Any] = orjson.loads(raw)
    again = model.model_validate_json(raw).model_dump(mode="json", by_alias=True, exclude_unset=True)
    if "occurred_at" in document:
        assert same_instant(again.pop("occurred_at"), document["occurred_at"])
        assert again == {k: v for k, v in document.items() if k != "occurred_at"}
    else:
        assert again == document
    return document


def full(model: type[Any], document: dict[str, Any]) -> dict[str, Any]:
    """The document with every field the model declares: an optional field left out reads as its default."""
    dumped: dict[str, Any] = model.model_validate(document).model_dump(mode="json", by_alias=True)
    return dumped


def row_values(model: WireModel, out: Predictions, i: int) -> dict[str, Any]:
    """The output fields of row ``i`` as the models declare them."""
    values: dict[str, Any] = {"prediction": out.predictions[i]}
    if out.matrix is not None:
        assert out.scores is not None and out.probabilities is not None
        values["score"] = out.scores[i]
        values["probabilities"] = dict(zip(model.class_keys, out.probabilities[i], strict=True))
    if model.threshold is not None:
        values["threshold"] = model.threshold
    return values


# ---- the inference log


@given(data=st.data(), model=wire_models(), rows=st.integers(1, 6))
@SETTINGS
def test_inference_log_events_are_what_the_event_model_serialises(
    data: st.DataObject, model: WireModel, rows: int
) -> None:
    out = data.draw(outputs(model, rows))
    entries = [
        LogEntry(
            at=data.draw(instants),
            request_id=data.draw(texts),
            model=model,  # type: ignore[arg-type]
            route=data.draw(routes),
            channel=data.draw(channels),
            instance=data.draw(instance()),
            prediction=out.predictions[i],
            score=out.scores[i] if out.scores is not None else None,
            probabilities=out.probabilities[i] if out.probabilities is not None else None,
            latency_ms=data.draw(st.floats(0, 60_000)),
            traceparent=data.draw(traceparents),
            event_id=data.draw(st.one_of(st.none(), st.uuids().map(str))),
        )
        for i in range(rows)
    ]
    encoder = InferenceEventEncoder("inference.log.v1", data.draw(names))
    records = encoder(entries)
    assert len(records) == rows
    for entry, (key, value, tp), i in zip(entries, records, range(rows), strict=True):
        assert key == model.name.encode() and tp == entry.traceparent
        document = full(InferenceLogEvent, round_trips(InferenceLogEvent, value))
        if entry.event_id is not None:
            assert document["event_id"] == entry.event_id
        inputs = REDACTOR.redact(entry.instance)
        expected = InferenceLogEvent(
            event_id=uuid.UUID(document["event_id"]),  # fresh when the entry has none
            event_type="inference",
            schema="inference.log.v1",
            occurred_at=datetime.fromtimestamp(entry.at, UTC),
            producer=encoder.producer,
            payload=InferenceLogPayload(
                request_id=entry.request_id,
                model=model.name,
                version=model.version,
                route=Route(entry.route),
                channel=Channel(entry.channel),
                contract=model.contract_id,
                entity_id=inputs.get(ENTITY),
                inputs=inputs,
                outputs=InferenceOutputs(**row_values(model, out, i)),
                latency_ms=entry.latency_ms,
                trace_id=entry.traceparent[3:35].decode() if entry.traceparent else None,
            ),
        ).model_dump(mode="json", by_alias=True)
        assert same_instant(document.pop("occurred_at"), expected.pop("occurred_at"))
        assert document == expected


# ---- the HTTP answer


@given(data=st.data(), model=wire_models(), rows=st.integers(1, 6))
@SETTINGS
def test_http_results_are_what_the_openapi_models_serialise(
    data: st.DataObject, model: WireModel, rows: int
) -> None:
    out = data.draw(outputs(model, rows))
    batch = [data.draw(instance()) for _ in range(rows)]
    request_ids = [data.draw(texts) for _ in range(rows)]
    route = data.draw(st.sampled_from([Route.CHAMPION.value, Route.CANARY.value, Route.DIRECT.value]))
    # split between two parts (canary routing answers some rows with another version) or one part
    cut = data.draw(st.integers(0, rows))
    if 0 < cut < rows:
        first, second = list(range(cut)), list(range(cut, rows))
        left = Predictions(out.labels[:cut], None if out.matrix is None else out.matrix[:cut], *_sig(out))
        right = Predictions(out.labels[cut:], None if out.matrix is None else out.matrix[cut:], *_sig(out))
        parts = [
            Part(model, route, first, left, {}),  # type: ignore[arg-type]
            Part(model, route, second, right, {}),  # type: ignore[arg-type]
        ]
    else:
        parts = [Part(model, route, None, out, {})]  # type: ignore[arg-type]
    answer = orjson.dumps(
        {"model": model.name, "results": result_rows(model.name, Scored(request_ids, parts, 0.1), batch)}
    )
    document = round_trips(BatchScoreResponse, answer)
    for i, row in enumerate(document["results"]):
        round_trips(ScoreResult, orjson.dumps(row))
        entity = batch[i].get(ENTITY)
        expected = ScoreResult(
            request_id=request_ids[i],
            model=model.name,
            version=model.version,
            route=Route(route),
            entity_id=entity,
            **row_values(model, out, i),
        ).model_dump(mode="json", by_alias=True)
        assert ScoreResult.model_validate(row).model_dump(mode="json", by_alias=True) == expected


def _sig(out: Predictions) -> tuple[tuple[Any, ...], int | None]:
    return out.classes, out.positive


# ---- the Kafka result


@given(data=st.data(), model=wire_models(), rows=st.integers(1, 6))
@SETTINGS
def test_kafka_results_are_what_the_event_model_serialises(
    data: st.DataObject, model: WireModel, rows: int
) -> None:
    from aiokafka.structs import ConsumerRecord

    from tollgate_scorer.stage import ScoringStage

    out = data.draw(outputs(model, rows))
    route = data.draw(st.sampled_from([Route.CHAMPION.value, Route.CANARY.value]))
    producer = data.draw(names)
    stage = ScoringStage(
        None,  # type: ignore[arg-type]  # only the result encoder runs here
        results_topic="ns.scoring.results.v1",
        dlq_topic="ns.dlq.scorer.v1",
        request_schema="scoring.requests.v1",
        result_schema="scoring.results.v1",
        producer=producer,
        recent_request_ids=10,
    )
    items = [(i, data.draw(texts), data.draw(instance()), data.draw(traceparents)) for i in range(rows)]
    records = [
        ConsumerRecord("ns.scoring.requests.v1", 0, i, 0, 0, b"k", b"{}", None, 1, 2, []) for i in range(rows)
    ]
    now = datetime.fromtimestamp(data.draw(instants), UTC).isoformat()
    result_ids = [str(uuid.uuid4()) for _ in range(rows)]
    written: list[Any] = [None] * rows
    # asked to explain: each row's explanation, or the version's reason for having none
    explain = data.draw(st.booleans())
    explained = data.draw(st.one_of(st.none(), explanations(rows))) if explain else None
    part = Part(model, route, None, out, {})  # type: ignore[arg-type]
    part.explanations = explained
    if explain and explained is None:
        part.explain_error = data.draw(names)
    stage._answers(part, model.name, items, records, written, now, iter(result_ids), explain=explain)
    for i, record in enumerate(written):
        assert record.key == b"k"
        assert record.headers == ([("traceparent", items[i][3])] if items[i][3] else [])
        document = full(ScoringResultEvent, round_trips(ScoringResultEvent, record.value))
        entity = items[i][2].get(ENTITY)
        expected = ScoringResultEvent(
            event_id=uuid.UUID(result_ids[i]),
            event_type="scoring_result",
            schema="scoring.results.v1",
            occurred_at=datetime.fromisoformat(now),
            producer=producer,
            payload=ScoringResultPayload(
                request_id=items[i][1],
                model=model.name,
                status="ok",
                version=model.version,
                route=Route(route),
                entity_id=entity,
                **row_values(model, out, i),
                explanation=expected_explanation(explained[i]) if explained is not None else None,
                explanation_error=part.explain_error,
            ),
        ).model_dump(mode="json", by_alias=True)
        assert same_instant(document.pop("occurred_at"), expected.pop("occurred_at"))
        assert document == expected


def expected_explanation(e: Explanation) -> DecisionExplanation:
    return DecisionExplanation(
        method=e.method,
        output=e.output,
        baseline=e.baseline,
        value=e.value,
        attributions=[
            FeatureAttribution(feature=a.feature, value=a.value, contribution=a.contribution)
            for a in e.attributions
        ],
    )


def test_kafka_and_http_explanations_have_one_shape() -> None:
    """``scoring.results`` carries the explanation the HTTP API answers with ``explain: true``."""
    # One model for both: the HTTP document declares the event model's explanation, not a copy of it.
    assert ScoreResult.model_fields["explanation"].annotation == DecisionExplanation | None
    assert DecisionExplanation.model_fields["attributions"].annotation == list[FeatureAttribution]
