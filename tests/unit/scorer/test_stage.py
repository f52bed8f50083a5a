"""The Kafka scoring handler: one result per request, errors as results, poison to the DLQ, back-pressure."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from tests.unit.scorer.support import MODEL, FakeSink, instances, serving
from tollgate_core.scoring import ScoringResultEvent
from tollgate_scorer.core import Scorer, ScoringStats
from tollgate_scorer.explain import Attribution, Explanation
from tollgate_scorer.inference_log import InferenceEventEncoder, InferenceLog
from tollgate_scorer.routing import ModelRoute, ModelTable
from tollgate_scorer.spool import Spool
from tollgate_scorer.stage import LogBackpressure, ScoringStage

TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


def request(instance: Any, model: str = MODEL, event_id: str | None = None, explain: Any = None) -> bytes:
    payload: dict[str, Any] = {"model": model, "instance": instance}
    if explain is not None:
        payload["explain"] = explain
    return orjson.dumps(
        {
            "event_id": event_id or str(uuid.uuid4()),
            "event_type": "scoring_request",
            "schema": "scoring.requests.v1",
            "occurred_at": "2026-01-01T00:00:00Z",
            "producer": "client",
            "payload": payload,
        }
    )


def record(value: bytes, offset: int, key: bytes | None = b"C1") -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        "ns.scoring.requests.v1",
        0,
        offset,
        0,
        0,
        key,
        value,
        None,
        len(key or b""),
        len(value),
        [("traceparent", TRACEPARENT)],
    )


def make(
    tmp_path: Path,
    window: int = 100_000,
    *,
    champion: Any = None,
    explain_max_instances: int = 100,
) -> tuple[ScoringStage, InferenceLog, FakeSink]:
    table = ModelTable()
    table.set(ModelRoute(MODEL, champion or serving("1"), serving("2"), shadow=True))
    sink = FakeSink()
    log = InferenceLog(
        sink=sink,
        encoder=InferenceEventEncoder("inference.log.v1", "t"),
        spool=Spool(tmp_path, 1_000_000),
        retry_s=0,
    )
    stage = ScoringStage(
        Scorer(table, log, ScoringStats()),
        results_topic="ns.scoring.results.v1",
        dlq_topic="ns.dlq.scorer.v1",
        request_schema="scoring.requests.v1",
        result_schema="scoring.results.v1",
        producer="scorer-0",
        recent_request_ids=window,
        explain_max_instances=explain_max_instances,
    )
    return stage, log, sink


async def test_results_errors_and_dead_letters_in_input_order(tmp_path: Path) -> None:
    stage, log, sink = make(tmp_path)
    good = instances(3)
    ids = [str(uuid.uuid4()) for _ in range(3)]
    records = [
        record(request(good[0], event_id=ids[0]), 0),
        record(b"not json", 1),
        record(request({**good[1], "balance": "lots"}), 2),
        record(request(good[1], model="unknown-model"), 3),
        record(request(good[2], event_id=ids[2]), 4, key=b"C3"),
        record(orjson.dumps({"event_id": "x", "schema": "events.raw.v1", "payload": {}}), 5),
    ]
    outputs = await stage(records)
    assert [o.topic for o in outputs] == [
        "ns.scoring.results.v1",
        "ns.dlq.scorer.v1",
        "ns.scoring.results.v1",
        "ns.scoring.results.v1",
        "ns.scoring.results.v1",
        "ns.dlq.scorer.v1",
    ]
    results = [
        ScoringResultEvent.model_validate_json(o.value) for o in outputs if o.topic.endswith("results.v1")
    ]
    ok, invalid, unknown, ok2 = (r.payload for r in results)
    assert (ok.request_id, ok.status, ok.version, ok.route, ok.entity_id) == (
        ids[0],
        "ok",
        "1",
        "champion",
        "C00001",
    )
    assert ok.probabilities is not None and ok.score == ok.probabilities["true"]
    assert (
        invalid.status == "error" and invalid.error is not None and invalid.error.code == "invalid_instance"
    )
    assert invalid.error.violations[0].field == "balance" and invalid.error.violations[0].instance is None
    assert unknown.error is not None and unknown.error.code == "unknown_model"
    assert ok2.request_id == ids[2] and outputs[4].key == b"C3"
    assert dict(outputs[0].headers)["traceparent"] == TRACEPARENT
    assert stage.dead_lettered == 2
    await log._pump()
    routes = sorted(orjson.loads(v)["payload"]["route"] for _, v, _ in sink.sent)
    assert routes == ["champion", "champion", "shadow", "shadow"]  # two answered requests, each shadowed


async def test_scoring_a_batch_again_repeats_its_log_event_ids(tmp_path: Path) -> None:
    stage, log, sink = make(tmp_path)
    records = [record(request(instances(1)[0], event_id="11111111-1111-4111-8111-111111111111"), 0)]
    first, second = await stage(records), await stage(records)
    # Results are transactional: a fresh id each time (an aborted batch's results are never seen) ...
    assert orjson.loads(first[0].value)["event_id"] != orjson.loads(second[0].value)["event_id"]
    await log._pump()
    # ... log events are not, so a batch scored again after an abort repeats the same event ids.
    ids = [orjson.loads(v)["event_id"] for _, v, _ in sink.sent]
    assert len(ids) == 4 and len(set(ids)) == 2


async def test_a_reused_request_id_gets_inferences_of_its_own_and_is_counted(tmp_path: Path) -> None:
    """Two different requests that reuse one request id (event id): both are scored and both logged with
    event ids of their own, so the audit trail records both; the reuse is counted. A redelivery of either
    (the same Kafka position) repeats its own ids."""
    stage, log, sink = make(tmp_path)
    reused = "22222222-2222-4222-8222-222222222222"
    a, b = instances(2)
    first = record(request(a, event_id=reused), 10)
    other = record(request(b, event_id=reused), 11)
    await stage([first])
    await stage([other])
    await stage([first])  # redelivered
    await log._pump()
    sent = [orjson.loads(v) for _, v, _ in sink.sent]
    assert {e["payload"]["request_id"] for e in sent} == {reused}
    ids = [e["event_id"] for e in sent]
    assert len(ids) == 6 and len(set(ids)) == 4  # 2 requests x (answer + shadow); the redelivery repeats
    assert ids[4:] == ids[:2]
    assert stage.reused_request_ids == 1


async def test_the_reuse_window_is_the_number_of_request_ids_remembered(tmp_path: Path) -> None:
    """A request id comes back after one other: counted with a window of 2, forgotten with a window of 1."""
    for window, counted in ((2, 1), (1, 0)):
        stage, _, _ = make(tmp_path / str(window), window)
        a, b, c = instances(3)
        await stage([record(request(a, event_id="33333333-3333-4333-8333-333333333333"), 20)])
        await stage([record(request(b, event_id="44444444-4444-4444-8444-444444444444"), 21)])
        await stage([record(request(c, event_id="33333333-3333-4333-8333-333333333333"), 22)])
        assert stage.reused_request_ids == counted, window


async def test_a_full_log_pauses_the_stage(tmp_path: Path) -> None:
    stage, log, _ = make(tmp_path)
    log._held.append((b"k", b"v", None))
    with pytest.raises(LogBackpressure):
        await stage([record(request(instances(1)[0]), 0)])


class CountingExplainer:
    """An explainer that records how many rows each run explains; each row's attributions are its balance
    and a constant, so the answer can be checked against the request."""

    method = "linear"

    def __init__(self) -> None:
        self.runs: list[int] = []

    def explain(self, feeds: dict[str, np.ndarray]) -> list[Explanation]:
        rows = len(next(iter(feeds.values())))
        self.runs.append(rows)
        return [
            Explanation(
                "linear",
                "log_odds",
                -1.0,
                -1.0 + float(i) + 0.5,
                (Attribution("balance", float(i), float(i)), Attribution("student", "No", 0.5)),
            )
            for i in range(rows)
        ]


async def test_requests_asking_to_explain_get_their_attributions_in_runs_of_at_most_the_cap(
    tmp_path: Path,
) -> None:
    explainer = CountingExplainer()
    champion = dataclasses.replace(serving("1"), explainer=explainer, explain_error=None)
    stage, _, _ = make(tmp_path, champion=champion, explain_max_instances=2)
    batch = instances(6)
    records = [record(request(batch[i], explain=True), i) for i in range(5)]
    records.append(record(request(batch[5]), 5))
    records.append(record(request(batch[0], explain="yes"), 6))
    outputs = await stage(records)
    results = [ScoringResultEvent.model_validate_json(o.value).payload for o in outputs]
    assert explainer.runs == [2, 2, 1]  # five explained requests, at most two rows per explainer run
    for result in results[:5]:
        assert result.status == "ok" and result.explanation is not None
        explanation = result.explanation
        assert explanation.method == "linear" and [a.feature for a in explanation.attributions] == [
            "balance",
            "student",
        ]
        total = sum(a.contribution for a in explanation.attributions)
        assert total == pytest.approx(explanation.value - explanation.baseline)
    assert results[5].status == "ok" and results[5].explanation is None
    assert results[5].explanation_error is None
    assert "explanation" not in orjson.loads(outputs[5].value)["payload"]
    refused = results[6]
    assert refused.status == "error" and refused.error is not None
    assert refused.error.code == "invalid_request" and '"explain" is true or false' in refused.error.message


async def test_a_version_without_an_explainer_answers_with_the_reason(tmp_path: Path) -> None:
    """The test models were exported without the training reference: scored, with the reason instead."""
    stage, _, _ = make(tmp_path)
    (output,) = await stage([record(request(instances(1)[0], explain=True), 0)])
    result = ScoringResultEvent.model_validate_json(output.value).payload
    assert result.status == "ok" and result.prediction is not None and result.explanation is None
    assert result.explanation_error is not None and "tollgate.explanation" in result.explanation_error
