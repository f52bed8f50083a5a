"""Benchmark: the validator as 1, 2 and 3 replicas (real service processes) over a topic of 6 partitions.

Per replica count, in one run on the same broker and payloads: start the replicas (instance ids 0..R-1,
so each has its own transactional id), wait until the consumer group has all R members, then produce N
ingested events and time until N validated events are committed (read_committed). Events/s is N over
that time, from the first produce; the producer and the counting reader are the same for every R.

What 2 cores allow: replicas are processes, so they add CPU, not magic. On a machine with two cores shared
with the broker, PostgreSQL, the producer and the reader, more replicas than free cores only add
rebalancing and transaction overhead; the ratios printed say what this machine gave.

Usage: ``python tests/bench/bench_replicas.py [--events 50000] [--replicas 1,2,3] [--repeat 1]``
Needs Kafka and PostgreSQL (``make bench`` starts them). Writes ``.local/bench/replicas.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.kafka_helpers import good_record, produce  # noqa: E402
from tollgate_core.kafka_auth import kafka_security  # noqa: E402
from tollgate_core.settings import DEFAULT_DATABASE_URL, DEFAULT_KAFKA_BOOTSTRAP  # noqa: E402
from tollgate_core.topics import ensure_topics  # noqa: E402

BOOTSTRAP = os.environ.get("TOLLGATE_KAFKA_BOOTSTRAP", DEFAULT_KAFKA_BOOTSTRAP)
DSN = os.environ.get("TOLLGATE_DATABASE_URL", DEFAULT_DATABASE_URL)
PARTITIONS = 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ingested(i: int) -> bytes:
    now = datetime.now(UTC).isoformat()
    return orjson.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "event_type": "observation",
            "schema": "credit-default.v1",
            "occurred_at": now,
            "producer": "bench",
            "payload": good_record(i),
            "ingested_at": now,
        }
    )


def start_replicas(ns: str, count: int, logs: Path) -> list[tuple[subprocess.Popen[bytes], int]]:
    procs = []
    for k in range(count):
        port = free_port()
        env = {
            "TOLLGATE_ENV": "test",  # no secrets of its own (``make bench`` sets development)
            **os.environ,
            "TOLLGATE_KAFKA_BOOTSTRAP": BOOTSTRAP,
            "TOLLGATE_DATABASE_URL": DSN,
            "TOLLGATE_TOPIC_NAMESPACE": ns,
            "TOLLGATE_VALIDATOR_INSTANCE_ID": str(k),
            "TOLLGATE_VALIDATOR_HTTP_PORT": str(port),
        }
        with open(logs / f"validator-{ns}-{k}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tollgate_validator"], env=env, stdout=log, stderr=log
            )
        procs.append((proc, port))
    return procs


async def wait_ready(procs: list[tuple[subprocess.Popen[bytes], int]], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as http:
        for proc, port in procs:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"validator on :{port} exited with {proc.returncode}")
                try:
                    if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"validator on :{port} not ready in {timeout} s")
                await asyncio.sleep(0.3)


async def wait_members(group: str, count: int, timeout: float = 120) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP, **kafka_security())
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            described = await admin.describe_consumer_groups([group])
            groups = getattr(described[0], "groups", None) or []
            members = groups[0][5] if groups else []  # (error, id, state, protocol_type, protocol, members)
            state = groups[0][2] if groups else ""
            if len(members) == count and state == "Stable":
                return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"group {group} did not reach {count} stable members")
    finally:
        await admin.close()


async def count_until(topic: str, n: int, timeout: float = 900) -> float:
    """Read ``topic`` (read_committed) until ``n`` records; returns when the n-th arrived (perf_counter)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=BOOTSTRAP,
        **kafka_security(),
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        seen = 0
        deadline = time.monotonic() + timeout
        while seen < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{seen} of {n} validated in {timeout} s")
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            seen += sum(len(records) for records in batch.values())
        return time.perf_counter()
    finally:
        await consumer.stop()


async def one_run(count: int, events: int, logs: Path) -> float:
    ns = f"brep{uuid.uuid4().hex[:6]}"
    await ensure_topics(BOOTSTRAP, ns, partitions_override=PARTITIONS)
    procs = start_replicas(ns, count, logs)
    try:
        await wait_ready(procs)
        await wait_members(f"{ns}.validator", count)
        counter = asyncio.create_task(count_until(f"{ns}.events.validated.v1", events))
        started = time.perf_counter()
        await produce(
            BOOTSTRAP,
            f"{ns}.events.ingested.v1",
            ((f"C{i:06d}".encode(), ingested(i)) for i in range(events)),
        )
        done = await counter
        return events / (done - started)
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--replicas", default="1,2,3")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / ".local" / "bench" / "replicas.json"))
    args = parser.parse_args()
    counts = [int(c) for c in args.replicas.split(",")]
    logs = Path(args.out).parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    runs: dict[str, list[float]] = {str(c): [] for c in counts}
    for rep in range(args.repeat):
        for c in counts:  # interleaved, so drift in the machine's load spreads over every count
            rate = await one_run(c, args.events, logs)
            runs[str(c)].append(rate)
            print(f"  run {rep + 1}: {c} replica(s) {rate:,.0f} validated events/s", flush=True)
    med = {c: statistics.median(v) for c, v in runs.items()}
    base = med[str(counts[0])]
    summary: dict[str, Any] = {
        "events": args.events,
        "partitions": PARTITIONS,
        "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "events_per_second_median": med,
        "runs": runs,
        "speedup_vs_1": {c: v / base for c, v in med.items()},
        "headline": {f"validator_x{c}_speedup": v / base for c, v in med.items()},
    }
    print(f"\n{'replicas':<10}{'median events/s':>18}{'vs 1 replica':>14}")
    for c, v in med.items():
        print(f"{c:<10}{v:>18,.0f}{v / base:>13.2f}x")
    print(f"(cpus: {os.cpu_count()}, load average at the end: {os.getloadavg()[0]:.1f})")
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
