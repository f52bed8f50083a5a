"""The scorer as a real process against the real broker (and PostgreSQL for API keys).

Models are fitted in the test with the trainer's pipeline and exporter (so scikit-learn gives the parity
reference), put in a temporary artifact store, and announced with ``models.lifecycle`` events from a plain
Kafka producer, as the registry would. Inference-log events and Kafka results are read back with a plain
consumer.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jsonschema
import numpy as np
import orjson
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.conftest import ServiceProcess, wait_http_ok
from tests.kafka_helpers import collect, produce
from tests.polling import eventually
from tests.unit.scorer.support import (
    CONTRACT,
    MODEL,
    PARITY_TOLERANCE,
    instances,
    lifecycle_event,
    store_all,
    trained,
)
from tollgate_core.apikeys import create_key
from tollgate_core.artifacts import DirectoryArtifactStore
from tollgate_core.pii import pii_hash
from tollgate_core.scoring import InferenceLogEvent, ScoringResultEvent
from tollgate_core.settings import DEVELOPMENT_PII_KEY

SCORE = f"/v1/models/{MODEL}/score"
Launch = Callable[..., ServiceProcess]


async def announce(bootstrap: str, namespace: str, *events: bytes) -> None:
    await produce(bootstrap, f"{namespace}.models.lifecycle.v1", [(MODEL.encode(), e) for e in events])


async def start_scorer(
    services: Launch,
    tmp_path: Path,
    *,
    artifacts: Path | None = None,
    env: dict[str, str] | None = None,
    **settings: str,
) -> tuple[ServiceProcess, str]:
    store = artifacts or tmp_path / "artifacts"
    if artifacts is None:
        store_all(DirectoryArtifactStore(store), "1", "2", "3")
    defaults = {"auth_required": "false", "log_spool_dir": str(tmp_path / "spool"), "warmup_rounds": "3"}
    proc = services(
        "scorer", env_extra={"TOLLGATE_ARTIFACT_DIR": str(store), **(env or {})}, **{**defaults, **settings}
    )
    base = f"http://127.0.0.1:{proc.port}"
    await wait_http_ok(f"{base}/readyz", proc=proc, timeout=90)
    return proc, base


def log_events(records: list[Any]) -> list[InferenceLogEvent]:
    return [InferenceLogEvent.model_validate_json(r.value) for r in records]


async def metric(base: str, name: str) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{base}/metrics")).text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not on /metrics")


async def test_parity_exactly_one_log_event_per_inference_kafka_path_and_oip(
    services: Launch, namespace: str, bootstrap: str, tmp_path: Path
) -> None:
    await announce(bootstrap, namespace, lifecycle_event("1", production="1"))
    _, base = await start_scorer(services, tmp_path)
    batch = instances(300, start=1000)
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        single = (await http.post(SCORE, json={"instance": batch[0]})).json()
        many = (await http.post(SCORE, json={"instances": batch})).json()["results"]
        invalid = await http.post(SCORE, json={"instances": [batch[0], {**batch[1], "student": "Maybe"}]})
        openapi = (await http.get("/openapi.json")).json()

    # ONNX served over HTTP equals scikit-learn within the trainer's parity tolerance, labels identical.
    probabilities = np.array([[r["probabilities"]["false"], r["probabilities"]["true"]] for r in many])
    reference = trained("1").reference(batch)
    assert np.abs(probabilities - reference).max() <= PARITY_TOLERANCE
    assert [r["prediction"] for r in many] == [bool(p) for p in reference.argmax(axis=1)]
    assert {r["version"] for r in many} == {"1"} and {r["route"] for r in many} == {"champion"}
    assert invalid.status_code == 422 and invalid.json()["error"]["violations"][0]["instance"] == 1
    components = {"components": openapi["components"]}
    jsonschema.validate(single, {**components, "$ref": "#/components/schemas/ScoreResult"})

    # Kafka path: requests in, one committed result each.
    kafka_ids = [str(uuid.uuid4()) for _ in range(400)]
    requests = [
        (
            row["customer_id"].encode(),
            orjson.dumps(
                {
                    "event_id": event_id,
                    "event_type": "scoring_request",
                    "schema": "scoring.requests.v1",
                    "occurred_at": datetime.now(UTC).isoformat(),
                    "producer": "test",
                    "payload": {"model": MODEL, "instance": row},
                }
            ),
        )
        for event_id, row in zip(kafka_ids, instances(400, start=3000), strict=True)
    ]
    await produce(bootstrap, f"{namespace}.scoring.requests.v1", requests)
    results = [
        ScoringResultEvent.model_validate_json(r.value).payload
        for r in await collect(bootstrap, f"{namespace}.scoring.results.v1", expect=400)
    ]
    assert sorted(r.request_id for r in results) == sorted(kafka_ids)
    assert {(r.status, r.version, r.route) for r in results} == {("ok", "1", "champion")}

    # OIP through the real tritonclient (binary tensors, its default).
    oip = triton.InferenceServerClient(base.removeprefix("http://"))
    try:
        assert oip.is_server_live() and oip.is_server_ready() and oip.is_model_ready(MODEL)
        metadata = oip.get_model_metadata(MODEL)
        assert [i["name"] for i in metadata["inputs"]] == CONTRACT.feature_names
        rows = instances(16, start=5000)
        inputs = []
        for spec in metadata["inputs"]:
            tensor = triton.InferInput(spec["name"], [len(rows)], spec["datatype"])
            values = np.array(
                [r[spec["name"]] for r in rows], dtype=object if spec["datatype"] == "BYTES" else None
            )
            tensor.set_data_from_numpy(values)
            inputs.append(tensor)
        result = oip.infer(MODEL, inputs, request_id="oip-1")
        np.testing.assert_allclose(
            result.as_numpy("probabilities"), trained("1").reference(rows), atol=PARITY_TOLERANCE
        )
        oip_ids = result.get_response()["parameters"]["request_ids"]
        try:
            oip.infer("no-such-model", inputs)
            raise AssertionError("an unknown model must fail")
        except InferenceServerException as exc:
            assert "no-such-model" in str(exc)
    finally:
        oip.close()

    # Exactly one inference-log event per inference: 1 + 300 HTTP, 400 Kafka, 16 OIP; none for the refused one.
    expected = 1 + 300 + 400 + 16
    events = log_events(await collect(bootstrap, f"{namespace}.inference.log.v1", expect=expected, settle=3))
    assert len(events) == expected and len({e.event_id for e in events}) == expected
    by_channel = {
        c: sorted(e.payload.request_id for e in events if e.payload.channel == c)
        for c in ("http", "kafka", "oip")
    }
    assert by_channel["http"] == sorted([single["request_id"], *(r["request_id"] for r in many)])
    assert by_channel["kafka"] == sorted(kafka_ids) and by_channel["oip"] == sorted(oip_ids)
    first = next(e for e in events if e.payload.request_id == single["request_id"]).payload
    assert first.inputs["customer_email"] == pii_hash(
        DEVELOPMENT_PII_KEY.encode(), batch[0]["customer_email"]
    )
    assert first.entity_id == batch[0]["customer_id"] and first.outputs.score == single["score"]
    assert first.route == "champion" and first.version == "1" and first.latency_ms > 0
    assert await metric(base, "tollgate_scorer_inference_log_acked_total") == expected
    assert await metric(base, "tollgate_scorer_inference_log_failed_total") == 0


async def test_hot_swap_under_continuous_load_fails_no_request(
    services: Launch, namespace: str, bootstrap: str, tmp_path: Path
) -> None:
    await announce(bootstrap, namespace, lifecycle_event("1", production="1"))
    _, base = await start_scorer(services, tmp_path)
    rows = instances(50)
    statuses: list[int] = []
    versions: list[list[str]] = [[], []]
    stop = asyncio.Event()

    async def hammer(worker: int) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            i = 0
            while not stop.is_set():
                response = await http.post(SCORE, json={"instance": rows[i % len(rows)]})
                statuses.append(response.status_code)
                if response.status_code == 200:
                    versions[worker].append(response.json()["version"])
                i += 1

    async def answered(version: str, count: int) -> bool:
        # Load is counted in answers, not seconds: a busy machine slows the clients, never the assertion.
        return all(sum(1 for v in seen[-count:] if v == version) >= count for seen in versions)

    load = [asyncio.create_task(hammer(w)) for w in range(2)]
    await eventually(lambda: answered("1", 40), timeout=120)
    await announce(bootstrap, namespace, lifecycle_event("2", production="2"))
    await eventually(lambda: _last_is(versions, "2"))
    await eventually(lambda: answered("2", 40), timeout=120)
    await announce(bootstrap, namespace, lifecycle_event("3", production="3"))
    await eventually(lambda: _last_is(versions, "3"))
    await eventually(lambda: answered("3", 40), timeout=120)
    stop.set()
    await asyncio.gather(*load)

    assert len(statuses) > 200 and set(statuses) == {200}, f"non-200 answers: {sorted(set(statuses))}"
    for seen in versions:
        changes = [v for i, v in enumerate(seen) if i == 0 or seen[i - 1] != v]
        assert changes == ["1", "2", "3"], changes  # each client saw each version once, in order, never back
    assert await metric(base, "tollgate_scorer_inference_log_logged_total") == len(statuses)


async def _last_is(versions: list[list[str]], version: str) -> bool:
    return all(seen and seen[-1] == version for seen in versions)


async def test_canary_split_is_sticky_and_shadow_is_logged_never_returned(
    services: Launch, namespace: str, bootstrap: str, tmp_path: Path
) -> None:
    weight = 0.3
    await announce(
        bootstrap,
        namespace,
        lifecycle_event("1", production="1"),
        lifecycle_event(
            "2", production="1", staging="2", canary_weight=weight, transition="staged", to_stage="staging"
        ),
    )
    _, base = await start_scorer(services, tmp_path)
    rows = instances(4000)
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        routes: dict[str, str] = {}
        for start in range(0, len(rows), 500):
            response = await http.post(SCORE, json={"instances": rows[start : start + 500]})
            for result in response.json()["results"]:
                routes[result["entity_id"]] = result["route"]
                assert result["version"] == {"champion": "1", "canary": "2"}[result["route"]]
        share = sum(r == "canary" for r in routes.values()) / len(routes)
        tolerance = 4 * (weight * (1 - weight) / len(routes)) ** 0.5  # four binomial standard deviations
        assert abs(share - weight) <= tolerance, (share, tolerance)
        for row in rows[:300]:  # sticky: one at a time, each entity lands where it did in the batch
            result = (await http.post(SCORE, json={"instance": row})).json()
            assert result["route"] == routes[row["customer_id"]]

        await announce(
            bootstrap,
            namespace,
            lifecycle_event(
                "2", production="1", staging="2", shadow=True, transition="canary_weight", to_stage="staging"
            ),
        )
        polls: list[int] = []
        await eventually(lambda: _no_canary(http, polls))
        shadowed = rows[1000:1200]
        response = (await http.post(SCORE, json={"instances": shadowed})).json()["results"]
    assert {(r["route"], r["version"]) for r in response} == {("champion", "1")}
    shadow_ids = {r["request_id"] for r in response}
    # Batches and singles; the polls (the last one already shadowed: 200 more); 200 champion + 200 shadow.
    expected = 4000 + 300 + 200 * len(polls) + 200 + 400
    events = log_events(await collect(bootstrap, f"{namespace}.inference.log.v1", expect=expected, settle=3))
    assert len(events) == expected
    mine = [e.payload for e in events if e.payload.request_id in shadow_ids]
    assert sorted((p.route, p.version) for p in mine) == [("champion", "1")] * 200 + [("shadow", "2")] * 200
    shadow = {p.request_id: p for p in mine if p.route == "shadow"}
    reference = trained("2").reference(shadowed)
    for result, expected in zip(response, reference, strict=True):
        assert abs(shadow[result["request_id"]].outputs.score - expected[1]) <= PARITY_TOLERANCE  # type: ignore[operator]


async def _no_canary(http: httpx.AsyncClient, polls: list[int]) -> bool:
    polls.append(1)
    results = (await http.post(SCORE, json={"instances": instances(200, start=9000)})).json()["results"]
    return all(r["route"] == "champion" for r in results)


async def test_api_keys_from_postgres(
    services: Launch, namespace: str, bootstrap: str, tmp_path: Path, database_url: str
) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        client_key = await create_key(pool, f"shop-{namespace}", "scorer-client")
        auditor_key = await create_key(pool, f"audit-{namespace}", "auditor")
    finally:
        await pool.close()
    await announce(bootstrap, namespace, lifecycle_event("1", production="1"))
    _, base = await start_scorer(services, tmp_path, auth_required="true")
    body = {"instance": instances(1)[0]}
    async with httpx.AsyncClient(base_url=base) as http:
        assert (await http.post(SCORE, json=body)).status_code == 401
        assert (await http.post(SCORE, json=body, headers={"X-API-Key": client_key + "x"})).status_code == 401
        assert (
            await http.post(SCORE, json=body, headers={"Authorization": f"Bearer {auditor_key}"})
        ).status_code == 403
        assert (
            await http.post(SCORE, json=body, headers={"Authorization": f"Bearer {client_key}"})
        ).status_code == 200
        assert (await http.get("/readyz")).json()["checks"]["postgres"] == "ok"
    oip = triton.InferenceServerClient(base.removeprefix("http://"))
    try:
        assert oip.get_model_metadata(MODEL, headers={"X-API-Key": client_key})["name"] == MODEL
        try:
            oip.get_model_metadata(MODEL)
            raise AssertionError("metadata without a key must fail")
        except InferenceServerException as exc:
            assert "missing API key" in str(exc)
    finally:
        oip.close()


async def test_a_reused_request_id_is_scored_logged_and_counted_on_metrics(
    services: Launch, namespace: str, bootstrap: str, tmp_path: Path
) -> None:
    """Two different Kafka requests with one request id (event id): both are answered and both logged
    with event ids of their own, and /metrics counts the reuse (the window is a setting)."""
    await announce(bootstrap, namespace, lifecycle_event("1", production="1"))
    _, base = await start_scorer(services, tmp_path, request_id_reuse_window="1000")
    reused, other = str(uuid.uuid4()), str(uuid.uuid4())
    rows = instances(3, start=7000)

    def request(event_id: str, row: dict[str, Any]) -> tuple[bytes, bytes]:
        return row["customer_id"].encode(), orjson.dumps(
            {
                "event_id": event_id,
                "event_type": "scoring_request",
                "schema": "scoring.requests.v1",
                "occurred_at": datetime.now(UTC).isoformat(),
                "producer": "test",
                "payload": {"model": MODEL, "instance": row},
            }
        )

    assert await metric(base, "tollgate_scorer_reused_request_ids_total") == 0
    await produce(
        bootstrap,
        f"{namespace}.scoring.requests.v1",
        [request(reused, rows[0]), request(other, rows[1]), request(reused, rows[2])],
    )
    results = [
        ScoringResultEvent.model_validate_json(r.value).payload
        for r in await collect(bootstrap, f"{namespace}.scoring.results.v1", expect=3)
    ]
    assert sorted(r.request_id for r in results) == sorted([reused, reused, other])
    events = log_events(await collect(bootstrap, f"{namespace}.inference.log.v1", expect=3, settle=2))
    assert len({e.event_id for e in events}) == 3
    assert sorted(e.payload.request_id for e in events) == sorted([reused, reused, other])
    assert await metric(base, "tollgate_scorer_reused_request_ids_total") == 1
