"""Three replicas of every consuming service on the data path, over topics of 6 partitions, while replicas
die: nothing is lost and nothing is duplicated.

ingest (3) → validator (3) → (events.validated | events.rejected) → trainer store (3) and audit-log (3) (the
validated and rejected streams, one hash chain each, one writer each). Events are produced in chunks; after
each chunk one replica of a service (in turn, chosen at random) is killed with SIGKILL and started again
with the same instance id, 5 times per service, and once the replica that owns the audit trail's validated
chain (the holder of its advisory lock). Then every event id must be exactly once in validated or
rejected, every valid one exactly once in the training store, and every one exactly once in the audit
trail: printed and asserted.

``TOLLGATE_SCALE_EVENTS`` sets the number of events (default 3,000 so that ``make test`` stays within
minutes on two cores); the 100,000-event run is
``TOLLGATE_SCALE_EVENTS=100000 ip netns exec NAME .venv/bin/pytest tests/e2e/test_scale_out.py -s``.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import yaml

from tests.audit_support import ensure_writer_role
from tests.conftest import ServiceProcess, wait_http_ok
from tests.kafka_helpers import collect, good_record, produce, raw_event
from tollgate_core.acls import apply_acls
from tollgate_core.kafka_auth import kafka_security
from tollgate_core.paths import schemas_dir
from tollgate_core.topics import ensure_topics

EVENTS = int(os.environ.get("TOLLGATE_SCALE_EVENTS", "3000"))
REPLICAS = 3
KILLS_PER_SERVICE = 5
PARTITIONS = 6
CHUNKS = 24
CONSUMERS = ("ingest", "validator", "trainer", "audit-log")
CONTRACT = "credit-default.v1"
# How long a replica may take to start, or the pipeline to move after a kill (a loaded machine is slow).
WAIT_S = float(os.environ.get("TOLLGATE_SCALE_WAIT_S", "300"))

pytestmark = pytest.mark.timeout(int(os.environ.get("TOLLGATE_SCALE_TIMEOUT", "1500")))


def record(i: int) -> dict[str, Any]:
    row = good_record(i)
    if i % 10 == 0:  # every tenth breaks the contract: rejected
        row["student"] = "Maybe"
    return row


def quiet_models(tmp_path: Path) -> Path:
    """The model catalog with training triggers that never fire: the trainer stores rows, trains nothing."""
    folder = tmp_path / "models"
    folder.mkdir()
    for path in (schemas_dir() / "models").glob("*.yaml"):
        spec = yaml.safe_load(path.read_text())
        spec["training"].update(min_rows=10**9, retrain_after_new_rows=10**9, schedule_seconds=0)
        (folder / path.name).write_text(yaml.safe_dump(spec))
    return folder


async def progress(dsn: str) -> tuple[int, int]:
    """(rows in the training store, rows in the audit trail's validated and rejected chains)."""
    conn = await asyncpg.connect(dsn)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM trainer_rows")
        audited = await conn.fetchval(
            "SELECT count(*) FROM audit_events WHERE stream IN ('validated', 'rejected')"
        )
        return int(stored), int(audited)
    except asyncpg.UndefinedTableError:
        return 0, 0
    finally:
        await conn.close()


async def chain_owner(replicas: list[ServiceProcess], stream: str) -> ServiceProcess | None:
    async with httpx.AsyncClient(timeout=5) as http:
        for proc in replicas:
            try:
                body = (await http.get(f"http://127.0.0.1:{proc.port}/readyz")).json()  # type: ignore[attr-defined]
            except (httpx.HTTPError, ValueError):
                continue
            if f"{stream} active" in str(body.get("checks", {}).get("kafka", "")):
                return proc
    return None


async def test_three_replicas_each_killed_five_times_lose_and_duplicate_nothing(
    services: Any, bootstrap: str, own_database: str, tmp_path: Path
) -> None:
    namespace = f"s{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, namespace, partitions_override=PARTITIONS)
    if kafka_security():  # each service runs as its own Kafka principal
        await apply_acls(bootstrap, namespace)
    await ensure_writer_role()
    env = {
        "TOLLGATE_TOPIC_NAMESPACE": namespace,
        "TOLLGATE_DATABASE_URL": own_database,
        "TOLLGATE_MODELS_DIR": str(quiet_models(tmp_path)),
        "TOLLGATE_AUDIT_LOG_AUDIT_VALIDATED": "true",
        "TOLLGATE_AUDIT_LOG_SIGNING_KEY_PATH": str(tmp_path / "ed25519.pem"),
    }
    replicas: dict[str, list[ServiceProcess]] = {}
    for service in CONSUMERS:
        replicas[service] = []
        for k in range(REPLICAS):
            proc = services(service, env_extra=env, instance_id=str(k))
            replicas[service].append(proc)
            if k == 0:  # the first creates the schema (and the audit signing key) before the others start
                await wait_http_ok(f"http://127.0.0.1:{proc.port}/readyz", proc=proc, timeout=WAIT_S)  # type: ignore[attr-defined]
    for service in CONSUMERS:
        for proc in replicas[service]:
            await wait_http_ok(f"http://127.0.0.1:{proc.port}/readyz", proc=proc, timeout=WAIT_S)  # type: ignore[attr-defined]

    ids = [str(uuid.uuid4()) for _ in range(EVENTS)]
    invalid = {ids[i] for i in range(EVENTS) if i % 10 == 0}
    kills = [s for _ in range(KILLS_PER_SERVICE) for s in CONSUMERS]  # in turn: 5 rounds of 4 services
    kills.insert(len(kills) // 2, "audit-chain-owner")
    rng = random.Random(11)
    killed: Counter[str] = Counter()
    size = -(-EVENTS // CHUNKS)
    raw = f"{namespace}.events.raw.v1"
    started = time.monotonic()
    for chunk, start in enumerate(range(0, EVENTS, size)):
        batch = [
            (f"C{i:06d}".encode(), raw_event(record(i), event_id=ids[i]))
            for i in range(start, min(start + size, EVENTS))
        ]
        await produce(bootstrap, raw, batch)
        if chunk >= len(kills):
            continue
        before = await progress(own_database)
        target = kills[chunk]
        if target == "audit-chain-owner":
            # The owner may have been killed a moment ago: a standby takes the lock within seconds.
            deadline = time.monotonic() + 180
            while (owner := await chain_owner(replicas["audit-log"], "validated")) is None:
                assert time.monotonic() < deadline, "no audit-log replica took the validated chain"
                await asyncio.sleep(0.5)
            victim = owner
        else:
            victim = rng.choice(replicas[target])
        victim.kill()  # SIGKILL: no shutdown hook runs
        assert victim.proc is not None and victim.proc.returncode == -9
        killed[target] += 1
        victim.start()  # the same instance id: its transactional id fences what the dead one left open
        # The pipeline keeps moving before the next kill (it is not only the restarts' backlog).
        deadline = time.monotonic() + WAIT_S
        while await progress(own_database) == before:
            assert time.monotonic() < deadline, f"no progress after killing {target}:\n{victim.log()}"
            await asyncio.sleep(0.5)

    valid = EVENTS - len(invalid)
    deadline = time.monotonic() + 600 + EVENTS / 50  # what is left after the last chunk, at 50 events/s
    while await progress(own_database) != (valid, EVENTS):
        assert time.monotonic() < deadline, f"stuck at {await progress(own_database)} of {(valid, EVENTS)}"
        await asyncio.sleep(1)
    elapsed = time.monotonic() - started

    validated = await collect(bootstrap, f"{namespace}.events.validated.v1", expect=valid, timeout=120)
    rejected = await collect(bootstrap, f"{namespace}.events.rejected.v1", expect=len(invalid), timeout=120)
    out = Counter(orjson.loads(r.value)["event_id"] for r in (*validated, *rejected))
    conn = await asyncpg.connect(own_database)
    try:
        stored = Counter(
            str(r["event_id"])
            for r in await conn.fetch("SELECT event_id FROM trainer_rows WHERE contract = $1", CONTRACT)
        )
        audited = Counter(
            str(r["event_id"])
            for r in await conn.fetch(
                "SELECT event_id FROM audit_events WHERE stream IN ('validated', 'rejected')"
            )
        )
    finally:
        await conn.close()

    report = {}
    for name, seen, expected in (
        ("validated or rejected", out, set(ids)),
        ("training store", stored, set(ids) - invalid),
        ("audit trail", audited, set(ids)),
    ):
        lost = len(expected - set(seen))
        duplicated = sum(n - 1 for n in seen.values() if n > 1)
        unexpected = len(set(seen) - expected)
        report[name] = (len(seen), lost, duplicated, unexpected)
    print(
        f"\nscale-out: {EVENTS} events ({len(invalid)} invalid), {REPLICAS} replicas each of "
        f"{', '.join(CONSUMERS)}, {PARTITIONS} partitions, SIGKILLs {dict(killed)}, {elapsed:.0f} s"
    )
    for name, (distinct, lost, duplicated, unexpected) in report.items():
        print(
            f"  {name:22} {distinct:7} distinct event ids, {lost} lost, {duplicated} duplicated, {unexpected} unexpected"
        )
    assert killed == {**{s: KILLS_PER_SERVICE for s in CONSUMERS}, "audit-chain-owner": 1}
    assert all(r[1:] == (0, 0, 0) for r in report.values()), report
