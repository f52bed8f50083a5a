"""The inference log across a Kafka outage, with the scorer as a real process.

How the outage is made: the log producer's bootstrap (``TOLLGATE_SCORER_LOG_BOOTSTRAP``) points at a
loopback port where nothing listens, while the rest of the scorer (lifecycle, Kafka scoring) uses the real
broker. Stopping the shared broker would disturb every other test, and a TCP proxy cannot cut Kafka off:
the broker advertises its own address, so clients reconnect to it directly after bootstrapping. The scorer
is then stopped and started again with the real bootstrap and the same spool folder, which is exactly what
an operator's restart after an outage looks like; the spool must be replayed, in order, before anything
new. Mid-process recovery (Kafka failing and coming back under the same producer) is covered by the unit
tests with a failing sink.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port
from tests.e2e.test_scorer import SCORE, Launch, announce, log_events, metric, start_scorer
from tests.kafka_helpers import collect
from tests.unit.scorer.support import MODEL, instances, lifecycle_event


async def score_one_by_one(base: str, rows: list[dict[str, Any]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        return [await http.post(SCORE, json={"instance": row}) for row in rows]


async def test_exactly_n_events_through_the_spool_and_a_restart(
    services: Launch, namespace: str, bootstrap: str, tmp_path: Path
) -> None:
    await announce(bootstrap, namespace, lifecycle_event("1", production="1"))
    unreachable = f"127.0.0.1:{free_port()}"
    scorer, base = await start_scorer(services, tmp_path, log_bootstrap=unreachable, log_retry_s="0.2")
    responses = await score_one_by_one(base, instances(60))
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        batch = (await http.post(SCORE, json={"instances": instances(40, start=60)})).json()["results"]
    assert {r.status_code for r in responses} == {200}
    request_ids = [r.json()["request_id"] for r in responses] + [r["request_id"] for r in batch]
    assert await metric(base, "tollgate_scorer_inference_log_kafka_up") == 0
    assert await metric(base, "tollgate_scorer_inference_log_acked_total") == 0
    assert await metric(base, "tollgate_scorer_inference_log_logged_total") == 100
    scorer.stop()
    assert len(list((tmp_path / "spool").glob("*.seg"))) >= 1

    # While the scorer is down the registry promotes version 2: the restarted scorer catches up first.
    await announce(bootstrap, namespace, lifecycle_event("2", production="2"))
    _, base = await start_scorer(services, tmp_path)
    after = await score_one_by_one(base, instances(5, start=200))
    assert {r.json()["version"] for r in after} == {"2"}
    events = log_events(await collect(bootstrap, f"{namespace}.inference.log.v1", expect=105, settle=3))
    assert [e.payload.request_id for e in events] == request_ids + [r.json()["request_id"] for r in after]
    assert len({e.event_id for e in events}) == 105
    assert await metric(base, "tollgate_scorer_inference_log_replayed_total") == 100
    assert await metric(base, 'tollgate_scorer_inference_log_backlog{where="spool"}') == 0


async def test_full_spool_refuse_policy_answers_503_and_loses_nothing(
    services: Launch, namespace: str, bootstrap: str, tmp_path: Path
) -> None:
    await announce(bootstrap, namespace, lifecycle_event("1", production="1"))
    unreachable = f"127.0.0.1:{free_port()}"
    scorer, base = await start_scorer(
        services,
        tmp_path,
        log_bootstrap=unreachable,
        log_spool_max_bytes="12000",
        log_spool_policy="refuse",
        log_linger_ms="1",
    )
    responses = await score_one_by_one(base, instances(60))
    statuses = [r.status_code for r in responses]
    accepted = [r.json()["request_id"] for r in responses if r.status_code == 200]
    assert 0 < len(accepted) < 60 and set(statuses) == {200, 503}
    refused = [r for r in responses if r.status_code == 503]
    assert refused[0].json()["error"]["code"] == "unavailable"
    assert await metric(base, "tollgate_scorer_requests_refused_total") == len(refused)
    async with httpx.AsyncClient() as http:
        ready = (await http.get(f"{base}/readyz")).json()
    assert ready["checks"]["inference_log"].startswith("error")
    scorer.stop()
    _, base = await start_scorer(services, tmp_path)
    events = log_events(
        await collect(bootstrap, f"{namespace}.inference.log.v1", expect=len(accepted), settle=3)
    )
    assert [e.payload.request_id for e in events] == accepted


async def test_full_spool_drop_policy_counts_every_dropped_event(
    services: Launch, namespace: str, bootstrap: str, tmp_path: Path
) -> None:
    await announce(bootstrap, namespace, lifecycle_event("1", production="1"))
    unreachable = f"127.0.0.1:{free_port()}"
    scorer, base = await start_scorer(
        services, tmp_path, log_bootstrap=unreachable, log_spool_max_bytes="12000", log_spool_policy="drop"
    )
    responses = await score_one_by_one(base, instances(60))
    assert {r.status_code for r in responses} == {200}
    dropped = await metric(base, "tollgate_scorer_inference_log_dropped_total")
    spooled = await metric(base, "tollgate_scorer_inference_log_spooled_total")
    assert dropped > 0 and spooled + dropped == 60
    scorer.stop()
    _, base = await start_scorer(services, tmp_path)
    events = log_events(
        await collect(bootstrap, f"{namespace}.inference.log.v1", expect=int(spooled), settle=3)
    )
    assert len(events) == spooled
    ids = [r.json()["request_id"] for r in responses]
    assert [e.payload.request_id for e in events] == ids[: int(spooled)]  # the oldest kept, in order
    assert events[0].payload.model == MODEL
