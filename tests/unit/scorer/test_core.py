"""The scoring core: routing, validation, shadow and the log entries of every inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from tests.unit.scorer.support import MODEL, FakeSink, instances, serving, trained
from tollgate_core.scoring import Route
from tollgate_scorer.core import Scorer, ScoringFailure, ScoringStats
from tollgate_scorer.inference_log import InferenceEventEncoder, InferenceLog
from tollgate_scorer.routing import ModelRoute, ModelTable
from tollgate_scorer.spool import Spool


def make(tmp_path: Path, route: ModelRoute | None) -> tuple[Scorer, InferenceLog, FakeSink]:
    table = ModelTable()
    if route is not None:
        table.set(route)
    sink = FakeSink()
    log = InferenceLog(
        sink=sink,
        encoder=InferenceEventEncoder("inference.log.v1", "t"),
        spool=Spool(tmp_path, 1_000_000, segment_bytes=100_000),
        retry_s=0,
    )
    return Scorer(table, log, ScoringStats()), log, sink


async def test_batch_outputs_match_scikit_learn_and_every_instance_is_logged(tmp_path: Path) -> None:
    scorer, log, sink = make(tmp_path, ModelRoute(MODEL, serving("1")))
    batch = instances(200)
    scored = scorer.score(MODEL, batch, "http")
    [part] = scored.parts
    assert part.route is Route.CHAMPION and part.rows is None and part.model.version == "1"
    probabilities = np.array(part.outputs.probabilities)
    reference = trained("1").reference(batch)
    assert np.abs(probabilities - reference).max() <= 1e-5
    assert part.outputs.predictions == [bool(p) for p in reference.argmax(axis=1)]
    assert part.outputs.scores == probabilities[:, 1].tolist()
    assert len(set(scored.request_ids)) == 200
    await log._pump()
    assert sink.request_ids() == scored.request_ids
    assert scorer.stats.inferences[(MODEL, "1", "champion", "http")] == 200


async def test_canary_rows_are_split_per_entity_and_shadow_is_logged_only(tmp_path: Path) -> None:
    scorer, log, sink = make(tmp_path, ModelRoute(MODEL, serving("1"), serving("2"), canary_weight=0.3))
    batch = instances(1000)
    scored = scorer.score(MODEL, batch, "http")
    routes = {part.route: part for part in scored.parts}
    assert set(routes) == {Route.CHAMPION, Route.CANARY}
    canary_rows = routes[Route.CANARY].rows
    assert canary_rows is not None and 0.25 < len(canary_rows) / 1000 < 0.35
    np.testing.assert_allclose(
        routes[Route.CANARY].outputs.probabilities,
        trained("2").reference([batch[i] for i in canary_rows]),
        atol=1e-5,
    )
    again = scorer.score(MODEL, [batch[i] for i in canary_rows[:20]], "http")
    assert [p.route for p in again.parts] == [Route.CANARY]

    scorer, log, sink = make(tmp_path / "shadow", ModelRoute(MODEL, serving("1"), serving("2"), shadow=True))
    scored = scorer.score(MODEL, batch[:10], "http")
    assert [(p.route, p.model.version) for p in scored.parts] == [(Route.CHAMPION, "1")]
    await log._pump()
    assert len(sink.sent) == 20  # one champion and one shadow inference per instance
    assert sink.request_ids() == scored.request_ids * 2
    assert scorer.stats.inferences[(MODEL, "2", "shadow", "http")] == 10


def test_single_instance_pinned_version_and_errors(tmp_path: Path) -> None:
    scorer, _, _ = make(tmp_path, ModelRoute(MODEL, serving("1"), serving("2"), canary_weight=0.5))
    direct = scorer.score(MODEL, instances(1), "oip", version="2")
    assert [(p.route, p.model.version) for p in direct.parts] == [(Route.DIRECT, "2")]
    with pytest.raises(ScoringFailure) as caught:
        scorer.score(MODEL, instances(1), "oip", version="9")
    assert (caught.value.status, caught.value.code) == (
        404,
        "unknown_model",
    ) and "served: 1, 2" in caught.value.message
    with pytest.raises(ScoringFailure) as caught:
        scorer.score("no-such-model", instances(1), "http")
    assert caught.value.status == 404
    with pytest.raises(ScoringFailure) as caught:
        scorer.score(MODEL, [*instances(3), {"student": "No"}], "http")
    assert (caught.value.status, caught.value.code) == (422, "invalid_instance")
    assert [(v["instance"], v["field"]) for v in caught.value.violations] == [(3, "balance")]
    with pytest.raises(ScoringFailure) as caught:
        scorer.score(MODEL, [], "http")
    assert caught.value.status == 400


async def test_invalid_requests_log_nothing(tmp_path: Path) -> None:
    scorer, log, _ = make(tmp_path, ModelRoute(MODEL, serving("1")))
    with pytest.raises(ScoringFailure):
        scorer.score(MODEL, [{"student": "x", "balance": 1.0}], "http")
    assert log.logged == 0


def test_no_version_and_refusal(tmp_path: Path) -> None:
    scorer, log, _ = make(tmp_path, ModelRoute(MODEL, None))
    with pytest.raises(ScoringFailure) as caught:
        scorer.score(MODEL, instances(1), "http")
    assert (caught.value.status, caught.value.code) == (503, "no_version")
    scorer, log, _ = make(tmp_path / "full", ModelRoute(MODEL, serving("1")))
    log._held.append((b"k", b"v", None))  # what a full spool under policy refuse leaves behind
    with pytest.raises(ScoringFailure) as caught:
        scorer.score(MODEL, instances(1), "http")
    assert (caught.value.status, caught.value.code) == (503, "unavailable") and log.refused == 1


async def test_score_each_fails_only_the_invalid_requests_and_derives_event_ids(tmp_path: Path) -> None:
    scorer, log, sink = make(tmp_path, ModelRoute(MODEL, serving("1"), serving("2"), canary_weight=0.5))
    batch = instances(6)
    batch[2] = {**batch[2], "balance": -3.0}
    ids = [f"event-{i}" for i in range(6)]
    scored, failures = scorer.score_each(MODEL, batch, ids, [None] * 6, "kafka")
    assert scored is not None and list(failures) == [2] and failures[2].violations[0]["field"] == "balance"
    answered = sorted(i for part in scored.parts for i in (part.rows or []))
    assert answered == [0, 1, 3, 4, 5]
    await log._pump()
    first = sorted(orjson.loads(value)["event_id"] for _, value, _ in sink.sent)
    sink.sent.clear()
    scorer.score_each(MODEL, batch, ids, [None] * 6, "kafka")  # a redelivered batch
    await log._pump()
    again = sorted(orjson.loads(value)["event_id"] for _, value, _ in sink.sent)
    assert again == first and len(set(first)) == 5  # the same event ids: consumers deduplicate


async def test_one_valid_request_among_several_logs_that_request(tmp_path: Path) -> None:
    scorer, log, sink = make(tmp_path, ModelRoute(MODEL, serving("1")))
    batch = instances(3)
    batch[0] = {**batch[0], "balance": -3.0}
    batch[2] = {**batch[2], "balance": -4.0}
    scored, failures = scorer.score_each(MODEL, batch, ["a", "b", "c"], [None] * 3, "kafka")
    assert scored is not None and sorted(failures) == [0, 2]
    await log._pump()
    [(_, value, _)] = sink.sent
    payload = orjson.loads(value)["payload"]
    assert payload["request_id"] == "b" and payload["inputs"]["balance"] == batch[1]["balance"]


def test_inferences_are_counted_with_the_log_off() -> None:
    table = ModelTable()
    table.set(ModelRoute(MODEL, serving("1"), serving("2"), shadow=True))
    scorer = Scorer(table, None, ScoringStats())
    scorer.score(MODEL, instances(1), "http")
    scorer.score(MODEL, instances(5), "oip")
    assert dict(scorer.stats.inferences) == {
        (MODEL, "1", "champion", "http"): 1,
        (MODEL, "2", "shadow", "http"): 1,
        (MODEL, "1", "champion", "oip"): 5,
        (MODEL, "2", "shadow", "oip"): 5,
    }
