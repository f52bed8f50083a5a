"""Benchmark: ingest and validator stage throughput against a raw aiokafka consume→produce loop.

All three read the same pre-loaded raw events from the same broker, one process, one after the other:

* ``raw loop``  — aiokafka ``getmany`` → ``send`` per message (idempotent, acks=all) → commit. The peer.
* ``ingest``    — the real ingest stage: parse, envelope checks, PostgreSQL dedup claims, exactly-once
                  transaction (outputs + offsets).
* ``validator`` — the real validator stage on ingest's output: compiled contract checks, exactly-once.

Usage: ``python tests/bench/bench_pipeline.py [--events 100000] [--repeat 3] [--out .local/bench/pipeline.json]``
Needs the local stack (``make up`` or ``infra/stack.sh infra-up``). Prints medians and ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.kafka_helpers import good_record, produce, raw_event  # noqa: E402
from tollgate_core.contracts import ContractRegistry  # noqa: E402
from tollgate_core.db import create_pool  # noqa: E402
from tollgate_core.kafka import TransactionalStage, producer_config  # noqa: E402
from tollgate_core.kafka_auth import kafka_security  # noqa: E402
from tollgate_core.settings import DEFAULT_DATABASE_URL, DEFAULT_KAFKA_BOOTSTRAP  # noqa: E402
from tollgate_core.topics import ensure_topics  # noqa: E402
from tollgate_ingest.app import MIGRATIONS as INGEST_MIGRATIONS  # noqa: E402
from tollgate_ingest.claims import PostgresClaimStore  # noqa: E402
from tollgate_ingest.core import Normaliser  # noqa: E402
from tollgate_ingest.stage import IngestMetrics, IngestStage  # noqa: E402
from tollgate_validator.stage import References, ValidatorMetrics, ValidatorStage  # noqa: E402

BOOTSTRAP = os.environ.get("TOLLGATE_KAFKA_BOOTSTRAP", DEFAULT_KAFKA_BOOTSTRAP)
DSN = os.environ.get("TOLLGATE_DATABASE_URL", DEFAULT_DATABASE_URL)


async def preload(topic: str, n: int) -> None:
    await produce(BOOTSTRAP, topic, ((f"C{i:06d}".encode(), raw_event(good_record(i))) for i in range(n)))


async def raw_loop(source: str, sink: str, n: int) -> float:
    """The peer: the plainest correct at-least-once relay with aiokafka."""
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=BOOTSTRAP,
        **kafka_security(),
        group_id=f"bench-raw-{uuid.uuid4().hex}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    )
    producer = AIOKafkaProducer(**producer_config(BOOTSTRAP, "bench-raw"))
    await consumer.start()
    await producer.start()
    try:
        done = 0
        started: float | None = None
        while done < n:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            if not batch:
                continue
            started = started or time.perf_counter()
            futures = []
            for records in batch.values():
                for rec in records:
                    futures.append(await producer.send(sink, rec.value, key=rec.key))
                    done += 1
            await asyncio.gather(*futures)
            await consumer.commit({tp: recs[-1].offset + 1 for tp, recs in batch.items()})
        assert started is not None
        return n / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        await producer.stop()


async def run_stage(name: str, source: str, handler: Any, n: int, dlq: str) -> float:
    group = f"bench-{name}-{uuid.uuid4().hex}"
    stage = TransactionalStage(
        name=name,
        bootstrap=BOOTSTRAP,
        source_topics=[source],
        group_id=group,
        transactional_id=group,
        client_id=group,
        handler=handler,
        dlq_topic=dlq,
        max_records=5000,
    )
    await stage.start()
    task = asyncio.create_task(stage.run())
    try:
        while stage.stats.consumed == 0:
            await asyncio.sleep(0.001)
        started = time.perf_counter() - (time.time() - stage.stats.last_batch_at)
        while stage.stats.consumed < n:
            await asyncio.sleep(0.001)
            if task.done():
                task.result()
        return n / (time.perf_counter() - started)
    finally:
        await stage.stop()
        task.cancel()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / ".local" / "bench" / "pipeline.json"))
    args = parser.parse_args()

    ns = f"bench{uuid.uuid4().hex[:6]}"
    await ensure_topics(BOOTSTRAP, ns)
    raw, ingested = f"{ns}.events.raw.v1", f"{ns}.events.ingested.v1"
    print(f"pre-loading {args.events} raw events into {raw} ...", flush=True)
    await preload(raw, args.events)

    pool = await create_pool(DSN, "ingest", INGEST_MIGRATIONS, max_size=4)
    contracts = ContractRegistry.from_directory()
    results: dict[str, list[float]] = {"raw_loop": [], "ingest": [], "validator": []}
    try:
        for rep in range(args.repeat):
            results["raw_loop"].append(await raw_loop(raw, f"{ns}.scoring.results.v1", args.events))
            async with pool.acquire() as conn:
                await conn.execute("TRUNCATE ingest_event_claims")
            ingest = IngestStage(
                Normaliser(contracts),
                PostgresClaimStore(pool),
                output_topic=ingested,
                dlq_topic=f"{ns}.dlq.ingest.v1",
                metrics=IngestMetrics(CollectorRegistry()),
            )
            results["ingest"].append(
                await run_stage("ingest", raw, ingest, args.events, f"{ns}.dlq.ingest.v1")
            )
            validator = ValidatorStage(
                contracts,
                References(),
                validated_topic=f"{ns}.events.validated.v1",
                rejected_topic=f"{ns}.events.rejected.v1",
                dlq_topic=f"{ns}.dlq.validator.v1",
                metrics=ValidatorMetrics(CollectorRegistry()),
            )
            results["validator"].append(
                await run_stage("validator", ingested, validator, args.events, f"{ns}.dlq.validator.v1")
            )
            print(
                f"  run {rep + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in results.items()),
                flush=True,
            )
    finally:
        await pool.close()

    med = {k: statistics.median(v) for k, v in results.items()}
    summary = {
        "events": args.events,
        "repeat": args.repeat,
        "events_per_second_median": med,
        "runs": results,
        "ratio_ingest_vs_raw_loop": med["ingest"] / med["raw_loop"],
        "ratio_validator_vs_raw_loop": med["validator"] / med["raw_loop"],
        "pipeline_events_per_second": min(med["ingest"], med["validator"]),
        "targets": {"ratio_min": 0.7, "events_per_second_min": 30_000},
    }
    print()
    print(f"{'stage':<12}{'median events/s':>18}{'vs raw loop':>14}")
    for k in ("raw_loop", "ingest", "validator"):
        print(f"{k:<12}{med[k]:>18,.0f}{med[k] / med['raw_loop']:>13.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
