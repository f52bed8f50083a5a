"""The scorer returns and logs the decision threshold it decided with: the version's catalog threshold (built
into the ONNX graph's label) or 0.5 for a binary classifier without one."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson

from tests.unit.scorer.support import CONTRACT, MODEL, PII_KEY, THRESHOLD, instances, make_app, thresholded
from tollgate_core.artifacts import sha256_digest
from tollgate_core.contracts import ContractRegistry
from tollgate_scorer.model import SessionConfig, load_serving_model
from tollgate_scorer.routing import ModelRoute

URL = f"/v1/models/{MODEL}/score"


def with_threshold(threshold: float) -> object:
    """Version 1's pipeline exported with a decision threshold (the fixture models/generate.py wrote)."""
    assert threshold == THRESHOLD, "models/generate.py exports the threshold THRESHOLD"
    onnx = thresholded()
    return load_serving_model(
        MODEL,
        "7",
        sha256_digest(onnx),
        onnx,
        contracts=ContractRegistry.from_directory(),
        expected_contract=CONTRACT.schema_id,
        config=SessionConfig(),
        pii_key=PII_KEY,
        warmup_rounds=1,
    )


async def score(app: object, rows: list[dict[str, object]]) -> list[dict[str, object]]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://scorer") as http:
        reply = await http.post(URL, json={"instances": rows})
    assert reply.status_code == 200, reply.text
    results: list[dict[str, object]] = reply.json()["results"]
    return results


async def test_results_and_log_carry_the_threshold_the_decision_used(tmp_path: Path) -> None:
    rows = instances(100)
    default_app, _ = make_app(tmp_path / "a")
    plain = await score(default_app, rows)
    assert {r["threshold"] for r in plain} == {0.5}

    model = with_threshold(THRESHOLD)
    assert model.threshold == THRESHOLD  # type: ignore[attr-defined]
    app, log = make_app(tmp_path / "b", route=ModelRoute(MODEL, model))  # type: ignore[arg-type]
    decided = await score(app, rows)
    assert {r["threshold"] for r in decided} == {THRESHOLD}
    probabilities = [r["probabilities"]["true"] for r in decided]  # type: ignore[index]
    assert [r["prediction"] for r in decided] == [p >= THRESHOLD for p in probabilities]
    # The threshold changed some decisions: it is the one they were made with.
    assert [r["prediction"] for r in decided] != [r["prediction"] for r in plain]

    await log._pump()
    sent = log._sink.sent  # type: ignore[attr-defined]  # the support's FakeSink
    logged = [orjson.loads(value)["payload"]["outputs"] for _, value, _ in sent]
    assert {o["threshold"] for o in logged} == {THRESHOLD} and len(logged) == len(rows)
