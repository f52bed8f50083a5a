"""The scorer as two worker processes on one port (SO_REUSEPORT), against the real broker.

N requests, each on a new connection so the kernel spreads them over both workers, give exactly N
inference-log events (each worker has its own producer), and any worker's ``/metrics`` adds up to N over
the ``worker`` label. A worker killed with SIGKILL is restarted by the supervisor, and nothing another
worker logged is lost meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ServiceProcess
from tests.e2e.test_scorer import SCORE, Launch, announce, log_events, start_scorer
from tests.kafka_helpers import collect
from tests.polling import eventually
from tests.unit.scorer.support import instances, lifecycle_event

WORKERS = 2


async def per_worker(base: str, sample: str) -> dict[str, float]:
    """One sample's value per worker label, as one scrape (answered by any worker) reports it."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{base}/metrics")).text
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample:
                values[s.labels["worker"]] = values.get(s.labels["worker"], 0.0) + s.value
    return values


def worker_pids(supervisor: ServiceProcess) -> list[int]:
    assert supervisor.proc is not None
    pid = supervisor.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children]


async def score_each_on_new_connection(base: str, rows: list[dict[str, object]]) -> list[str]:
    """One request per row, on a fresh connection each, 8 at a time; the request ids answered."""
    ids: list[str] = []
    limits = httpx.Limits(max_keepalive_connections=0)
    gate = asyncio.Semaphore(8)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http:

        async def one(row: dict[str, object]) -> None:
            async with gate:
                response = await http.post(SCORE, json={"instance": row})
            assert response.status_code == 200, response.text
            ids.append(response.json()["request_id"])

        await asyncio.gather(*(one(row) for row in rows))
    return ids


async def test_two_workers_one_port_exactly_one_log_event_per_request(
    services: Launch, namespace: str, bootstrap: str, tmp_path: Path
) -> None:
    await announce(bootstrap, namespace, lifecycle_event("1", production="1"))
    supervisor, base = await start_scorer(services, tmp_path, workers=str(WORKERS))

    async def all_serving() -> bool:
        return len(await per_worker(base, "tollgate_scorer_serving")) == WORKERS

    await eventually(all_serving, timeout=90)  # every worker has loaded the model (not just the first)

    n = 600
    answered = await score_each_on_new_connection(base, instances(n, start=7000))
    assert len(answered) == n and len(set(answered)) == n

    events = log_events(await collect(bootstrap, f"{namespace}.inference.log.v1", expect=n, settle=3))
    print(f"\n{n} requests -> {len(events)} inference-log events over {WORKERS} workers")
    assert len(events) == n and len({e.event_id for e in events}) == n
    assert sorted(e.payload.request_id for e in events) == sorted(answered)
    by_producer = Counter(e.producer for e in events)
    assert set(by_producer) == {f"scorer-0-w{i}" for i in range(WORKERS)}, by_producer  # both served

    async def acked_adds_up() -> bool:
        acked = await per_worker(base, "tollgate_scorer_inference_log_acked_total")
        return len(acked) == WORKERS and sum(acked.values()) == n

    await eventually(acked_adds_up)
    acked = await per_worker(base, "tollgate_scorer_inference_log_acked_total")
    assert acked == {str(i): float(by_producer[f"scorer-0-w{i}"]) for i in range(WORKERS)}

    # A worker killed outright is replaced; the port keeps answering and nothing is logged twice.
    pids = worker_pids(supervisor)
    assert len(pids) == WORKERS
    os.kill(pids[0], signal.SIGKILL)

    async def replaced() -> bool:
        now = worker_pids(supervisor)
        return len(now) == WORKERS and pids[0] not in now

    await eventually(replaced)
    await eventually(all_serving, timeout=90)
    more = await score_each_on_new_connection(base, instances(100, start=9000))
    events = log_events(await collect(bootstrap, f"{namespace}.inference.log.v1", expect=n + 100, settle=3))
    assert len(events) == n + 100 and len({e.event_id for e in events}) == n + 100
    assert sorted(e.payload.request_id for e in events) == sorted(answered + more)
