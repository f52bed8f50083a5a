"""Three replicas of every consuming service, over topics of 6 partitions, while replicas die: nothing is
lost and nothing is duplicated.

ingest (3) → validator (3) → (events.validated | events.rejected) → trainer store (3), the monitor's label
join (3) and audit-log (3); candidates on ``models.candidates`` → registry (3: each candidate stored, gated
and its transition published once) and monitor (3: the version's reference profile); inference-log records
on ``inference.log`` (keyed by model) → monitor windows (3: a partition's windows owned by the replica
holding the partition, checkpointed with its offset) and the audit trail.

Events, candidates and inference records are produced in chunks. Five times during the run a random replica
of EACH consuming service is killed with SIGKILL and started again with the same instance id. The owner of
each single-writer role is found and killed once, and another replica must take the role over and do its
work while the owner is dead (polled, with a deadline; the time it took is printed): the audit-log replica writing the validated chain and the one
writing the rejected chain (holders of the chains' advisory locks), the registry replica holding the
candidates partition of a model (its transitions' single writer), the monitor replica holding a model's
inference-log partition (its window state). Then, printed and asserted: every event id exactly once in
validated or rejected, every valid one exactly once in the training store, every one exactly once in the
audit trail; every candidate exactly once in the registry (one version, one transition) and in the audit
trail; every inference record exactly once in the monitor's predictions and in the audit trail, and the
monitor's window counts (summed over the partitions' checkpoints) equal to the records sent.

``TOLLGATE_SCALE_EVENTS`` sets the number of events (default 3,000 so that ``make test`` stays within
minutes on two cores; inference records are a fifth of it); the 100,000-event run (about 45 minutes on a
loaded two-core machine, hence the longer test timeout) is ``TOLLGATE_SCALE_EVENTS=100000
TOLLGATE_SCALE_WAIT_S=900 TOLLGATE_SCALE_TIMEOUT=4000 ip netns exec NAME .venv/bin/pytest
tests/e2e/test_scale_out.py -s``.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from tests.audit_support import ensure_writer_role
from tests.conftest import ServiceProcess, wait_http_ok
from tests.db_support import fetch_rows
from tests.e2e.monitor_feed import candidate_event, inference_event
from tests.kafka_helpers import collect, good_record, produce, raw_event
from tests.polling import eventually
from tests.unit.monitor.standin import CONTRACT_ID as MONITORED_CONTRACT
from tests.unit.monitor.standin import contract as monitored_contract
from tests.unit.monitor.standin import stand_in_scores
from tollgate_core.acls import apply_acls
from tollgate_core.events import dumps
from tollgate_core.kafka import murmur2
from tollgate_core.kafka_auth import kafka_security
from tollgate_core.paths import schemas_dir
from tollgate_core.topics import ensure_topics
from tollgate_demo.datasets import generate_records

EVENTS = int(os.environ.get("TOLLGATE_SCALE_EVENTS", "3000"))
INFERENCES = max(EVENTS // 5, 60)
PROBES = 20  # inference records sent while the owner of their partition's windows is dead
REPLICAS = 3
KILL_ROUNDS = 5
PARTITIONS = 6
CHUNKS = 24
MODELS = 3  # monitored models (not in the model catalog: the registry stores and rejects their candidates)
CONSUMERS = ("ingest", "validator", "trainer", "registry", "monitor", "audit-log")
OWNERS = ("audit-validated-chain", "registry-writer", "monitor-window-owner", "audit-rejected-chain")
CONTRACT = "credit-default.v1"
# How long a replica may take to start, or the pipeline to move after a kill (a loaded machine is slow).
WAIT_S = float(os.environ.get("TOLLGATE_SCALE_WAIT_S", "300"))
# How long a single-writer role may stay without a live owner after its owner was killed: the consumer
# group's session timeout (10 s) or the PostgreSQL session's end, plus a rebalance on a loaded machine.
FAILOVER_S = 180.0

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


def inference_log(models: list[str], n: int, at: datetime) -> list[tuple[bytes, bytes]]:
    """``n`` inference-log records spread over ``models`` (version 1), all at event time ``at``: they fall in
    one window that is never judged during the run, so its count is every record counted."""
    rows = generate_records(monitored_contract(), n, seed=7)
    scores = stand_in_scores(rows)
    label = monitored_contract().label.name
    out = []
    for j, (row, score) in enumerate(zip(rows, scores, strict=True)):
        model = models[j % len(models)]
        inputs = {k: v for k, v in row.items() if k != label}
        event = inference_event(model, MONITORED_CONTRACT, row["account_id"], inputs, score, at)
        out.append((model.encode(), dumps(event)))
    return out


def partition_of(key: str) -> int:
    """The partition Kafka's default partitioner gives ``key`` (murmur2), as every producer here does."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % PARTITIONS


async def progress(dsn: str) -> dict[str, int]:
    """What has been written so far, per sink."""
    rows = await fetch_rows(
        dsn,
        """SELECT (SELECT count(*) FROM trainer_rows) AS stored,
                  (SELECT count(*) FROM audit_events WHERE stream IN ('validated', 'rejected')) AS audited,
                  (SELECT count(*) FROM audit_events WHERE stream = 'inference') AS audited_inference,
                  (SELECT count(*) FROM audit_events WHERE stream = 'candidates') AS audited_candidates,
                  (SELECT count(*) FROM monitor_predictions) AS predictions,
                  (SELECT count(*) FROM audit_events WHERE stream = 'lifecycle') AS audited_lifecycle,
                  (SELECT count(*) FROM registry_versions) AS versions""",
    )
    return {k: int(v) for k, v in rows[0].items()} if rows else {}


async def readiness(proc: ServiceProcess) -> str:
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            body = (await http.get(f"http://127.0.0.1:{proc.port}/readyz")).json()  # type: ignore[attr-defined]
    except (httpx.HTTPError, ValueError):
        return ""
    return str(body.get("checks", {}).get("kafka", ""))


async def chain_owner(replicas: list[ServiceProcess], stream: str) -> ServiceProcess | None:
    """The audit-log replica whose ``stream`` chain is active (it holds the chain's advisory lock)."""
    for proc in replicas:
        if proc.proc is not None and proc.proc.poll() is None and f"{stream} active" in await readiness(proc):
            return proc
    return None


async def partition_owner(bootstrap: str, group: str, topic: str, partition: int) -> str | None:
    """The client id of the member of a stable ``group`` that is assigned ``topic[partition]``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_security())
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    groups = getattr(described[0], "groups", None) or []
    if not groups or groups[0][2] != "Stable":  # (error, id, state, protocol_type, protocol, members)
        return None
    for member in groups[0][
        5
    ]:  # (member_id, [group_instance_id,] client_id, client_host, metadata, assignment)
        client_id, raw = member[-4], member[-1]
        if not raw:
            continue
        for name, parts in ConsumerProtocolMemberAssignment.decode(raw).assignment:
            if name == topic and partition in parts:
                return str(client_id)
    return None


def instance_of(client_id: str, service: str) -> int:
    """``tollgate-<service>-<instance>@<host>`` → instance."""
    return int(client_id.removeprefix(f"tollgate-{service}-").split("@", 1)[0])


def exactly_once(seen: Counter[str], expected: set[str]) -> tuple[int, int, int, int]:
    """(distinct ids seen, lost, duplicated, unexpected)."""
    return (
        len(seen),
        len(expected - set(seen)),
        sum(n - 1 for n in seen.values() if n > 1),
        len(set(seen) - expected),
    )


async def test_three_replicas_of_every_consumer_killed_and_every_owner_failed_over_lose_nothing(
    own_database: str, services: Any, bootstrap: str, tmp_path: Path
) -> None:
    # (own_database first: it is dropped after the services have stopped)
    namespace = f"s{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, namespace, partitions_override=PARTITIONS)
    if kafka_security():  # each service runs as its own Kafka principal
        await apply_acls(bootstrap, namespace)
    await ensure_writer_role()
    env = {
        "TOLLGATE_TOPIC_NAMESPACE": namespace,
        "TOLLGATE_DATABASE_URL": own_database,
        "TOLLGATE_MODELS_DIR": str(quiet_models(tmp_path)),
        "TOLLGATE_ARTIFACT_DIR": str(tmp_path / "artifacts"),
        "TOLLGATE_AUDIT_LOG_AUDIT_VALIDATED": "true",
        "TOLLGATE_AUDIT_LOG_SIGNING_KEY_PATH": str(tmp_path / "ed25519.pem"),
        # One window of an hour that the run never closes: its counts are every record counted.
        "TOLLGATE_MONITOR_WINDOW_SECONDS": "3600",
        "TOLLGATE_MONITOR_REFERENCE_WAIT_SECONDS": "3600",
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

    # The monitored models' first versions (with their reference profiles) before any inference record.
    models = [f"risk-{namespace}-{j}" for j in range(MODELS)]
    candidates_topic = f"{namespace}.models.candidates.v1"
    candidate_ids: set[str] = set()

    async def send_candidates(version: str) -> None:
        events = [candidate_event(m, version) for m in models]
        candidate_ids.update(str(e.event_id) for e in events)
        await produce(bootstrap, candidates_topic, [(e.payload.model.encode(), dumps(e)) for e in events])

    await send_candidates("1")
    await eventually(
        lambda: _count(own_database, "SELECT count(*) FROM monitor_versions WHERE version = '1'", MODELS),
        timeout=WAIT_S,
        interval=0.5,
        what="the monitor stores the monitored versions",
    )

    ids = [str(uuid.uuid4()) for _ in range(EVENTS)]
    invalid = {ids[i] for i in range(EVENTS) if i % 10 == 0}
    at = datetime.now(UTC)
    inferences = inference_log(models, INFERENCES, at)
    # Sent while a single writer's owner is dead: only another replica can process them.
    probes = Probes(inference_log([models[0]], PROBES, at), candidate_event(models[0], "probe"))
    candidate_ids.add(str(probes.candidate.event_id))
    request_ids = {orjson.loads(v)["payload"]["request_id"] for _, v in (*inferences, *probes.inferences)}
    inference_ids = {orjson.loads(v)["event_id"] for _, v in (*inferences, *probes.inferences)}
    sent_inferences = INFERENCES + PROBES

    # A kill round (one random replica of every consuming service) every other chunk, an owner between.
    plan: list[str] = []
    for r in range(KILL_ROUNDS):
        plan.append("round")
        if r < len(OWNERS):
            plan.append(OWNERS[r])
    schedule = {2 * i + 1: what for i, what in enumerate(plan)}
    assert max(schedule) < CHUNKS
    rng = random.Random(11)
    killed: Counter[str] = Counter()
    failovers: dict[str, str] = {}
    size, inf_size = -(-EVENTS // CHUNKS), -(-INFERENCES // CHUNKS)
    raw = f"{namespace}.events.raw.v1"
    inference_topic = f"{namespace}.inference.log.v1"
    started = time.monotonic()
    for chunk in range(CHUNKS):
        batch = [
            (f"C{i:06d}".encode(), raw_event(record(i), event_id=ids[i]))
            for i in range(chunk * size, min((chunk + 1) * size, EVENTS))
        ]
        await produce(bootstrap, raw, batch)
        await produce(bootstrap, inference_topic, inferences[chunk * inf_size : (chunk + 1) * inf_size])
        await send_candidates(str(chunk + 2))
        what = schedule.get(chunk)
        if what is None:
            continue
        before = await progress(own_database)
        if what == "round":
            victims = [rng.choice(replicas[service]) for service in CONSUMERS]
            for service, victim in zip(CONSUMERS, victims, strict=True):
                victim.kill()  # SIGKILL: no shutdown hook runs
                assert victim.proc is not None and victim.proc.returncode == -9
                killed[service] += 1
            for victim in victims:  # the same instance id: its transactional id fences what the dead one left
                victim.start()
        else:
            failovers[what] = await kill_owner(what, replicas, bootstrap, namespace, own_database, probes)
            killed[what] += 1
        # The pipeline keeps moving before the next kill (it is not only the restarts' backlog).
        deadline = time.monotonic() + WAIT_S
        while await progress(own_database) == before:
            assert time.monotonic() < deadline, f"no progress after {what}"
            await asyncio.sleep(0.5)

    valid = EVENTS - len(invalid)
    want = {
        "stored": valid,
        "audited": EVENTS,
        "audited_inference": sent_inferences,
        "audited_candidates": len(candidate_ids),
        "predictions": sent_inferences,
        "audited_lifecycle": len(candidate_ids),  # one transition per candidate: rejected on arrival
        "versions": len(candidate_ids),
    }
    deadline = time.monotonic() + 600 + EVENTS / 50  # what is left after the last chunk, at 50 events/s
    while (now := await progress(own_database)) != want:
        assert time.monotonic() < deadline, f"stuck at {now} of {want}"
        await asyncio.sleep(1)
    elapsed = time.monotonic() - started

    validated = await collect(bootstrap, f"{namespace}.events.validated.v1", expect=valid, timeout=120)
    rejected = await collect(bootstrap, f"{namespace}.events.rejected.v1", expect=len(invalid), timeout=120)
    out = Counter(orjson.loads(r.value)["event_id"] for r in (*validated, *rejected))

    def ids_of(rows: list[asyncpg.Record], column: str = "event_id") -> Counter[str]:
        return Counter(str(r[column]) for r in rows)

    stored = ids_of(
        await fetch_rows(own_database, "SELECT event_id FROM trainer_rows WHERE contract = $1", CONTRACT)
    )
    audited = ids_of(
        await fetch_rows(
            own_database, "SELECT event_id FROM audit_events WHERE stream IN ('validated', 'rejected')"
        )
    )
    audited_inference = ids_of(
        await fetch_rows(own_database, "SELECT event_id FROM audit_events WHERE stream = 'inference'")
    )
    audited_candidates = ids_of(
        await fetch_rows(own_database, "SELECT event_id FROM audit_events WHERE stream = 'candidates'")
    )
    predictions = ids_of(
        await fetch_rows(own_database, "SELECT request_id FROM monitor_predictions"), "request_id"
    )
    registered = ids_of(
        await fetch_rows(own_database, "SELECT candidate_event FROM registry_versions"), "candidate_event"
    )
    lifecycle_ids = {
        str(r["event_id"])
        for r in await fetch_rows(own_database, "SELECT event_id FROM registry_transitions")
    }
    audited_lifecycle = ids_of(
        await fetch_rows(own_database, "SELECT event_id FROM audit_events WHERE stream = 'lifecycle'")
    )
    transitions = Counter(
        f"{r['model']}/{r['version']}"
        for r in await fetch_rows(own_database, "SELECT model, version FROM registry_transitions")
    )
    versions = {f"{m}/{v}" for m in models for v in map(str, range(1, CHUNKS + 2))} | {f"{models[0]}/probe"}
    # The monitor's windows: every record counted once, summed over the partitions' checkpoints.
    window_rows = late = unreferenced = 0
    checkpoints = await fetch_rows(
        own_database, "SELECT state FROM monitor_partitions WHERE topic = $1", inference_topic
    )
    for row in checkpoints:
        state = orjson.loads(row["state"])
        late += int(state.get("late", 0))
        unreferenced += int(state.get("unreferenced", 0))
        for series in state["series"]:
            window_rows += sum(int(b["rows"]) for b in series["buckets"].values())

    report = {
        "validated or rejected": exactly_once(out, set(ids)),
        "training store": exactly_once(stored, set(ids) - invalid),
        "audit trail (data)": exactly_once(audited, set(ids)),
        "registry versions": exactly_once(registered, candidate_ids),
        "registry transitions": exactly_once(transitions, versions),
        "audit trail (lifecycle)": exactly_once(audited_lifecycle, lifecycle_ids),
        "audit trail (candidates)": exactly_once(audited_candidates, candidate_ids),
        "monitor predictions": exactly_once(predictions, request_ids),
        "audit trail (inference)": exactly_once(audited_inference, inference_ids),
    }
    print(
        f"\nscale-out: {EVENTS} events ({len(invalid)} invalid), {sent_inferences} inference records, "
        f"{len(candidate_ids)} candidates; {REPLICAS} replicas each of {', '.join(CONSUMERS)}; "
        f"{PARTITIONS} partitions; SIGKILLs {dict(killed)}; {elapsed:.0f} s"
    )
    for what, took in failovers.items():
        print(f"  failover of {what}: {took}")
    for name, (distinct, lost, duplicated, unexpected) in report.items():
        print(
            f"  {name:26} {distinct:7} distinct ids, {lost} lost, {duplicated} duplicated, {unexpected} unexpected"
        )
    print(
        f"  monitor windows            {window_rows:7} records counted over {len(checkpoints)} partition "
        f"checkpoints ({sent_inferences} sent), {late} late, {unreferenced} unreferenced"
    )
    assert killed == {**{s: KILL_ROUNDS for s in CONSUMERS}, **{o: 1 for o in OWNERS}}
    assert all(r[1:] == (0, 0, 0) for r in report.values()), report
    assert (window_rows, late, unreferenced) == (sent_inferences, 0, 0)


async def _count(dsn: str, sql: str, want: int) -> bool:
    rows = await fetch_rows(dsn, sql)
    return bool(rows) and int(rows[0][0]) >= want


@dataclass
class Probes:
    inferences: list[tuple[bytes, bytes]]
    candidate: Any  # CandidateEvent


async def end_offset(bootstrap: str, topic: str, partition: int) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **kafka_security())
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        return int((await consumer.end_offsets([tp]))[tp])
    finally:
        await consumer.stop()


async def kill_owner(
    what: str,
    replicas: dict[str, list[ServiceProcess]],
    bootstrap: str,
    namespace: str,
    dsn: str,
    probes: Probes,
) -> str:
    """Find the current owner of a single-writer role, SIGKILL it, and while it is dead wait until another
    replica does the role's work (polled): writes the chain, counts the owner's partition's new inference
    records into its windows, registers a new candidate of the owner's model. Then start the dead one again.
    Returns who held the role and how long the failover took."""
    if what.startswith("audit-"):
        stream = what.split("-")[1]
        group = replicas["audit-log"]
        owner = await eventually(
            lambda: chain_owner(group, stream),
            timeout=FAILOVER_S,
            interval=0.5,
            what=f"an owner of the {stream} chain",
        )
        owner.kill()
        t0 = time.monotonic()
        heir = await eventually(
            lambda: chain_owner(group, stream),
            timeout=FAILOVER_S,
            interval=0.5,
            what=f"the {stream} chain fails over",
        )
        taken = time.monotonic() - t0
        assert heir is not owner
        owner.start()
        return f"audit-log@{group.index(owner)} → audit-log@{group.index(heir)} in {taken:.1f} s"
    model = probes.candidate.payload.model
    partition = partition_of(model)
    service, group_id, topic = {
        "registry-writer": ("registry", f"{namespace}.registry", f"{namespace}.models.candidates.v1"),
        "monitor-window-owner": ("monitor", f"{namespace}.monitor.windows", f"{namespace}.inference.log.v1"),
    }[what]
    holder = await eventually(
        lambda: partition_owner(bootstrap, group_id, topic, partition),
        timeout=FAILOVER_S,
        interval=0.5,
        what=f"an owner of {topic}[{partition}]",
    )
    victim = replicas[service][instance_of(holder, service)]
    victim.kill()
    t0 = time.monotonic()
    if service == "monitor":
        await produce(bootstrap, topic, probes.inferences)
        last = await end_offset(bootstrap, topic, partition) - 1

        async def done() -> bool:
            rows = await fetch_rows(
                dsn,
                "SELECT last_offset FROM monitor_partitions WHERE topic = $1 AND partition = $2",
                topic,
                partition,
            )
            return bool(rows) and int(rows[0]["last_offset"]) >= last

    else:
        await produce(bootstrap, topic, [(model.encode(), dumps(probes.candidate))])

        async def done() -> bool:
            sql = "SELECT 1 FROM registry_versions WHERE model = $1 AND version = 'probe'"
            return bool(await fetch_rows(dsn, sql, model))

    await eventually(
        done,
        timeout=WAIT_S,
        interval=0.5,
        what=f"{topic}[{partition}] processed while its owner {holder} is dead",
    )
    taken = time.monotonic() - t0
    victim.start()
    return (
        f"{service}@{instance_of(holder, service)} killed, its {topic.removeprefix(namespace + '.')}"
        f"[{partition}] processed by another replica {taken:.1f} s later"
    )
