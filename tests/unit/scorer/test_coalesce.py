"""Requests that arrive together are scored together: the coalescer, ``Scorer.score_rows`` and the HTTP
server answering batched requests in their connections' order."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from tests.polling import eventually
from tests.unit.scorer.support import MODEL, FakeSink, instances, make_app, serving
from tests.unit.scorer.test_core import make
from tests.unit.scorer.test_server import URL, post, read_response
from tests.unit.scorer.test_server import serving as http_serving
from tollgate_scorer.coalesce import Coalescer
from tollgate_scorer.core import Scored, Scorer, ScoringFailure
from tollgate_scorer.routing import ModelRoute

# ---- the coalescer


async def test_items_of_one_turn_are_handed_together_per_key_in_submission_order() -> None:
    handed: list[tuple[str, list[int]]] = []
    coalescer: Coalescer[int] = Coalescer(lambda key, items: handed.append((key, items)))
    for i in range(5):
        coalescer.submit("a" if i % 2 == 0 else "b", i)
    assert handed == [] and coalescer.waiting == 5  # nothing is scored inside the parser's callbacks
    await asyncio.sleep(0)  # the next turn of the loop
    assert handed == [("a", [0, 2, 4]), ("b", [1, 3])] and coalescer.waiting == 0
    coalescer.submit("a", 9)  # alone in its turn: handed alone, at once, waiting for nothing
    await asyncio.sleep(0)
    assert handed[-1] == ("a", [9]) and (coalescer.batches, coalescer.items) == (3, 6)


async def test_a_batch_that_reaches_its_bound_is_handed_at_once() -> None:
    handed: list[list[int]] = []
    coalescer: Coalescer[int] = Coalescer(lambda key, items: handed.append(items), max_items=3)
    for i in range(4):
        coalescer.submit("a", i)
    assert handed == [[0, 1, 2]]
    await asyncio.sleep(0)
    assert handed == [[0, 1, 2], [3]]
    single: Coalescer[int] = Coalescer(lambda key, items: handed.append(items), max_items=1)
    single.submit("a", 7)
    assert handed[-1] == [7] and single.waiting == 0


async def test_a_bounded_wait_holds_the_batch_until_it_ends() -> None:
    handed: list[list[int]] = []
    coalescer: Coalescer[int] = Coalescer(lambda key, items: handed.append(items), wait_us=10_000)
    coalescer.submit("a", 1)
    await asyncio.sleep(0)
    coalescer.submit("a", 2)  # a later turn, still inside the wait: joins the batch
    assert handed == []

    async def handed_once() -> bool:
        return handed == [[1, 2]]

    await eventually(handed_once, timeout=10, interval=0.005)


async def test_a_failing_batch_does_not_stop_the_other_keys(caplog: pytest.LogCaptureFixture) -> None:
    handed: list[str] = []

    def run(key: str, items: list[int]) -> None:
        if key == "broken":
            raise RuntimeError("a bug")
        handed.append(key)

    coalescer: Coalescer[int] = Coalescer(run)
    coalescer.submit("broken", 1)
    coalescer.submit("fine", 2)
    with caplog.at_level(logging.ERROR):
        await asyncio.sleep(0)
    assert handed == ["fine"] and "a batch of 1 request(s) for broken failed" in caplog.text


def test_the_coalescer_refuses_meaningless_bounds() -> None:
    with pytest.raises(ValueError, match="wait_us"):
        Coalescer(lambda key, items: None, wait_us=-1)
    with pytest.raises(ValueError, match="max_items"):
        Coalescer(lambda key, items: None, max_items=0)


# ---- Scorer.score_rows: each request as if it were scored alone


def _answer(outcome: Scored | ScoringFailure) -> Any:
    """What a request's answer and counts depend on, without its request id."""
    if isinstance(outcome, ScoringFailure):
        return (outcome.status, outcome.code, outcome.message, outcome.violations)
    [part] = outcome.parts
    out = part.outputs
    return (part.model.version, part.route, out.predictions, out.scores, out.probabilities, len(out))


def _alone(scorer: Scorer, rows: list[dict[str, Any]]) -> list[Scored | ScoringFailure]:
    outcomes: list[Scored | ScoringFailure] = []
    for row in rows:
        try:
            outcomes.append(scorer.score(MODEL, [row], "http"))
        except ScoringFailure as failure:
            outcomes.append(failure)
    return outcomes


def _logged(sink: FakeSink) -> list[tuple[Any, ...]]:
    events = [orjson.loads(value)["payload"] for _, value, _ in sink.sent]
    return [
        (e["version"], e["route"], e["channel"], e["entity_id"], e["inputs"], e["outputs"]) for e in events
    ]


@pytest.mark.parametrize("n", [3, 12])  # row by row, and the column reader (8 rows or more)
@pytest.mark.parametrize("routing", ["champion", "canary", "shadow"])
async def test_rows_scored_together_answer_count_and_log_as_alone(
    tmp_path: Path, n: int, routing: str
) -> None:
    def route() -> ModelRoute:
        if routing == "canary":
            return ModelRoute(MODEL, serving("1"), serving("2"), canary_weight=0.5)
        if routing == "shadow":
            return ModelRoute(MODEL, serving("1"), serving("2"), shadow=True)
        return ModelRoute(MODEL, serving("1"))

    rows = instances(n, start=40)
    rows[1] = {**rows[1], "balance": -3.0}  # breaks the contract: fails alone, as it would by itself
    together, log, sink = make(tmp_path / "together", route())
    alone, alone_log, alone_sink = make(tmp_path / "alone", route())

    outcomes = together.score_rows(MODEL, rows, [None] * n, "http")
    expected = _alone(alone, rows)

    assert [_answer(o) for o in outcomes] == [_answer(o) for o in expected]
    assert isinstance(outcomes[1], ScoringFailure) and outcomes[1].violations[0]["instance"] == 0
    if routing == "canary":
        assert {_answer(o)[1] for o in outcomes if isinstance(o, Scored)} == {"champion", "canary"}
    ids = [o.request_ids[0] for o in outcomes if isinstance(o, Scored)]
    assert len(set(ids)) == n - 1
    await log._pump()
    await alone_log._pump()
    assert _logged(sink) == _logged(alone_sink)  # one event per request (and its shadow's), same contents
    per_request = 2 if routing == "shadow" else 1
    assert len(sink.sent) == (n - 1) * per_request and log.logged == alone_log.logged
    assert list(dict.fromkeys(sink.request_ids())) == ids  # in request order
    assert together.stats.inferences == alone.stats.inferences
    assert together.stats.invalid == alone.stats.invalid == {(MODEL, "http"): 1}
    assert sum(together.stats.latency[(MODEL, "http")][0:1]) == n - 1  # one latency sample per request


class _FailsOnMarkedRows:
    """An onnxruntime session that cannot score a row whose balance is the marker (and any run holding it)."""

    MARKER = 1234.5

    def __init__(self, session: Any) -> None:
        self.session = session
        self.runs = 0

    def run(self, names: Any, feeds: dict[str, np.ndarray]) -> Any:
        self.runs += 1
        if (feeds["numeric"] == self.MARKER).any():
            raise RuntimeError("cannot score this row")
        return self.session.run(names, feeds)


async def test_a_row_the_model_cannot_score_fails_only_its_own_request(tmp_path: Path) -> None:
    session = _FailsOnMarkedRows(serving("1").session)
    flaky = dataclasses.replace(serving("1"), session=session)
    scorer, log, sink = make(tmp_path, ModelRoute(MODEL, flaky))
    rows = instances(5, start=70)
    rows[3] = {**rows[3], "balance": _FailsOnMarkedRows.MARKER}
    outcomes = scorer.score_rows(MODEL, rows, [None] * 5, "http")
    failure = outcomes[3]
    assert isinstance(failure, ScoringFailure) and (failure.status, failure.code) == (500, "model_error")
    assert all(isinstance(o, Scored) for i, o in enumerate(outcomes) if i != 3)
    reference, _, _ = make(tmp_path / "reference", ModelRoute(MODEL, serving("1")))
    good = [r for i, r in enumerate(rows) if i != 3]
    assert [_answer(o) for i, o in enumerate(outcomes) if i != 3] == [
        _answer(o) for o in _alone(reference, good)
    ]
    assert session.runs == 1 + 5  # the batch, then one run per row to find the one that fails
    assert scorer.stats.failures[(MODEL, "model_error")] == 1
    await log._pump()
    assert len(sink.sent) == 4


async def test_rows_for_an_unknown_model_or_a_full_log_fail_each(tmp_path: Path) -> None:
    scorer, log, _ = make(tmp_path, ModelRoute(MODEL, serving("1")))
    unknown = scorer.score_rows("no-such-model", instances(3), [None] * 3, "http")
    assert [(o.status, o.code) for o in unknown if isinstance(o, ScoringFailure)] == [
        (404, "unknown_model")
    ] * 3
    log._held.append((b"k", b"v", None))  # what a full spool under policy refuse leaves behind
    refused = scorer.score_rows(MODEL, instances(3), [None] * 3, "http")
    assert [(o.status, o.code) for o in refused if isinstance(o, ScoringFailure)] == [
        (503, "unavailable")
    ] * 3
    assert log.refused == 3 and log.logged == 0


# ---- over HTTP


async def test_concurrent_connections_are_scored_together_and_answered_as_alone(tmp_path: Path) -> None:
    app, log = make_app(tmp_path, coalesce=True)
    alone, _ = make_app(tmp_path / "alone")
    rows = instances(16, start=100)
    rows[5] = {**rows[5], "student": "Maybe"}
    bodies = [orjson.dumps({"instance": r} if i % 2 else {"instances": [r]}) for i, r in enumerate(rows)]
    assert app.coalescer is not None
    async with http_serving(app) as server, http_serving(alone) as reference:
        connections = [await asyncio.open_connection("127.0.0.1", server.port) for _ in rows]
        for (_, writer), body in zip(connections, bodies, strict=True):
            writer.write(post(URL, body))  # every connection's request lands before the server's next turn
        answers = [await read_response(reader) for reader, _ in connections]
        ref_reader, ref_writer = await asyncio.open_connection("127.0.0.1", reference.port)
        expected = []
        for body in bodies:
            ref_writer.write(post(URL, body))
            expected.append(await read_response(ref_reader))
        for _, writer in [*connections, (ref_reader, ref_writer)]:
            writer.close()
    assert app.coalescer.batches < app.coalescer.items == 16  # at least two requests shared a run

    def comparable(answer: tuple[int, dict[str, str], bytes]) -> Any:
        document = orjson.loads(answer[2])
        for row in document.get("results", [document]):
            row.pop("request_id", None)
        return answer[0], answer[1]["content-type"], document

    assert [comparable(a) for a in answers] == [comparable(e) for e in expected]
    assert [a[0] for a in answers].count(422) == 1 and answers[5][0] == 422
    assert log.logged == 15


async def test_pipelined_requests_keep_their_order_around_batched_ones(tmp_path: Path) -> None:
    app, log = make_app(tmp_path, coalesce=True)
    async with http_serving(app) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        rows = instances(3, start=200)
        writer.write(
            post(URL, orjson.dumps({"instance": rows[0]}))
            + b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
            + post(URL, orjson.dumps({"instances": rows}))
            + post(URL, orjson.dumps({"instance": rows[1]}))
            + post(URL, b"{not json")
            + post(URL, orjson.dumps({"instance": rows[2]}), b"Connection: close\r\n")
        )
        answers = [await read_response(reader) for _ in range(6)]
        assert await reader.read() == b""  # closed after the last answer
        writer.close()
    assert [a[0] for a in answers] == [200, 200, 200, 200, 400, 200]
    assert orjson.loads(answers[0][2])["entity_id"] == rows[0]["customer_id"]
    assert orjson.loads(answers[1][2])["status"] == "ok"
    assert len(orjson.loads(answers[2][2])["results"]) == 3
    assert orjson.loads(answers[3][2])["entity_id"] == rows[1]["customer_id"]
    assert orjson.loads(answers[5][2])["entity_id"] == rows[2]["customer_id"]
    assert answers[5][1]["connection"] == "close"
    assert log.logged == 6


async def test_the_asgi_path_waits_for_the_batch(tmp_path: Path) -> None:
    import httpx

    app, log = make_app(tmp_path, coalesce=True)
    rows = instances(6, start=300)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        answers = await asyncio.gather(*(http.post(URL, json={"instance": r}) for r in rows))
    assert [a.status_code for a in answers] == [200] * 6
    assert [a.json()["entity_id"] for a in answers] == [r["customer_id"] for r in rows]
    assert log.logged == 6
