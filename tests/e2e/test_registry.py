"""The registry as a real process against the real broker and database: candidates in through a plain Kafka
producer, lifecycle events out through a plain consumer, operator actions through the HTTP API and the CLI.

One registry process serves the whole scenario (a test model catalog with a 2-second canary period):
first version straight to production; a better one canaried then promoted; a worse one rejected naming its
gate; rollback; a tampered artifact refused; a parity failure rejected; redelivered candidates changing
nothing and a malformed one dead-lettered; an approval-mode model approved once by two racing approvers.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml
from aiokafka import AIOKafkaConsumer

from tests.auth_support import ALL, RoleKeys, header
from tests.conftest import wait_http_ok
from tests.kafka_helpers import collect, produce
from tests.polling import eventually
from tests.unit.registry.candidates import MODEL, candidate, candidate_event, spec
from tollgate_core.artifacts import DirectoryArtifactStore
from tollgate_core.kafka_auth import kafka_security
from tollgate_core.lifecycle import CandidatePayload, LifecycleEvent

APPROVAL_MODEL = "approval-risk"


class LifecycleFollower:
    """Reads ``models.lifecycle`` from the start, the way the scorer would."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            **kafka_security(),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        self.events: list[tuple[bytes | None, LifecycleEvent]] = []
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=100)
            for records in batch.values():
                self.events += [(r.key, LifecycleEvent.model_validate_json(r.value or b"")) for r in records]

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        await self.consumer.stop()

    def of(self, model: str, version: str | None = None) -> list[LifecycleEvent]:
        return [
            e
            for _, e in self.events
            if e.payload.model == model and (version is None or e.payload.version == version)
        ]

    def moves(self, model: str, version: str) -> list[tuple[str, str]]:
        return [(e.event_type, e.payload.to_stage.value) for e in self.of(model, version)]

    async def until(self, what: str, condition: Callable[[], bool], timeout: float = 20) -> None:
        def lifecycle() -> list[tuple[str, str, str]]:
            return [(e.payload.model, e.payload.version, e.event_type) for _, e in self.events]

        await eventually(condition, timeout=timeout, interval=0.05, what=what, seen=lifecycle)


def write_catalog(folder: Path) -> None:
    folder.mkdir()
    for model_spec in (spec(canary_seconds=2, canary_weight=0.25), spec(APPROVAL_MODEL, mode="approval")):
        data = model_spec.model_dump(mode="json")
        (folder / f"{model_spec.model}.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")


async def offer(
    bootstrap: str, topic: str, *payloads: CandidatePayload, event_ids: list[Any] | None = None
) -> list[bytes]:
    events = [
        candidate_event(p, event_id=(event_ids or [None] * len(payloads))[i]) for i, p in enumerate(payloads)
    ]
    values = [e.model_dump_json(by_alias=True).encode() for e in events]
    await produce(bootstrap, topic, [(p.model.encode(), v) for p, v in zip(payloads, values, strict=True)])
    return values


async def test_registry_end_to_end(
    services: Any,
    namespace: str,
    bootstrap: str,
    database_url: str,
    api_keys: RoleKeys,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_catalog(tmp_path / "models")
    artifacts = tmp_path / "artifacts"
    monkeypatch.setenv("TOLLGATE_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("TOLLGATE_ARTIFACT_DIR", str(artifacts))
    store = DirectoryArtifactStore(artifacts)
    candidates_topic = f"{namespace}.models.candidates.v1"

    registry = services("registry", canary_poll_seconds="0.2")
    base = f"http://127.0.0.1:{registry.port}"
    await wait_http_ok(f"{base}/readyz", proc=registry)
    follower = LifecycleFollower(bootstrap, f"{namespace}.models.lifecycle.v1")
    await follower.start()
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10, headers=header(api_keys[ALL])) as api:
            # (1) The first good candidate: registered, then straight to production.
            v1_event = (await offer(bootstrap, candidates_topic, candidate("1", roc_auc=0.86, store=store)))[
                0
            ]
            await follower.until("v1 promoted", lambda: len(follower.of(MODEL, "1")) == 2)
            assert follower.moves(MODEL, "1") == [("registered", "candidate"), ("promoted", "production")]
            assert all(key == MODEL.encode() for key, _ in follower.events)
            promoted = follower.of(MODEL, "1")[1]
            assert promoted.payload.production_version == "1" and promoted.schema_ == "models.lifecycle.v1"
            assert promoted.payload.artifact.digest == candidate("1").artifact.digest

            # (2) A better candidate: staged as a 25% canary, promoted by the canary after 2 s, v1 archived.
            v2_event = (await offer(bootstrap, candidates_topic, candidate("2", roc_auc=0.87, store=store)))[
                0
            ]
            await follower.until("v2 staged", lambda: len(follower.of(MODEL, "2")) >= 2)
            staged = follower.of(MODEL, "2")[1]
            assert staged.event_type == "staged" and staged.payload.canary_weight == 0.25
            assert (staged.payload.production_version, staged.payload.staging_version) == ("1", "2")
            serving = (await api.get(f"/v1/models/{MODEL}/production")).json()
            assert serving["staging"]["version"] == "2" and serving["canary_weight"] == 0.25
            await follower.until(
                "v2 promoted by the canary", lambda: len(follower.of(MODEL, "2")) == 3, timeout=15
            )
            canary = follower.of(MODEL, "2")[2]
            assert (canary.event_type, canary.payload.actor, canary.payload.production_version) == (
                "promoted",
                "canary",
                "2",
            )
            await follower.until(
                "v1 archived", lambda: follower.moves(MODEL, "1")[-1] == ("archived", "archived")
            )

            # (3) A worse candidate: rejected, naming the failing gate.
            await offer(bootstrap, candidates_topic, candidate("3", roc_auc=0.83, store=store))
            await follower.until("v3 rejected", lambda: len(follower.of(MODEL, "3")) == 2)
            rejected = follower.of(MODEL, "3")[1]
            assert rejected.event_type == "rejected"
            assert rejected.payload.reason.startswith("gate regression:roc_auc failed: roc_auc 0.8300")
            shown = (await api.get(f"/v1/models/{MODEL}/versions/3")).json()
            assert shown["stage"] == "rejected"
            assert [g["gate"] for g in shown["gates"] if not g["passed"]] == ["regression:roc_auc"]

            # (4) Rollback: production back to v1, the reason recorded and published. The actor is the
            # key's principal: the "by" in the body is ignored.
            rollback = await api.post(
                f"/v1/models/{MODEL}/rollback",
                json={"reason": "approval rate dropped", "by": "chief-risk-officer@bank.example"},
                headers=header(api_keys["operator"]),
            )
            assert rollback.status_code == 200, rollback.text
            assert rollback.json()["production_version"] == "1"
            await follower.until(
                "rollback events", lambda: follower.moves(MODEL, "2")[-1] == ("archived", "archived")
            )
            restored = follower.of(MODEL, "1")[-1]
            operator = api_keys.names["operator"]
            assert (restored.event_type, restored.payload.actor, restored.payload.production_version) == (
                "rolled_back",
                operator,
                "1",
            )
            assert restored.payload.reason == "rollback from version 2: approval rate dropped"
            assert (await api.get(f"/v1/models/{MODEL}/production")).json()["production"]["version"] == "1"
            history = (await api.get(f"/v1/models/{MODEL}/versions/2")).json()["transitions"]
            assert history[-1]["reason"] == "rolled back to version 1: approval rate dropped"
            assert history[-1]["actor"] == operator
            again = await api.post(f"/v1/models/{MODEL}/rollback", json={"reason": "once more"})
            assert again.status_code == 409 and "no previous production version" in again.json()["detail"]

            # (5) A tampered artifact: its bytes changed on disk after the trainer stored them.
            tampered = candidate("4", roc_auc=0.88, store=store)
            store.path(tampered.artifact.digest).write_bytes(b"tampered model bytes")
            await offer(bootstrap, candidates_topic, tampered, candidate("5", offered=False, store=store))
            await follower.until(
                "v4 refused, v5 rejected",
                lambda: bool(follower.of(MODEL, "4")) and bool(follower.of(MODEL, "5")),
            )
            [refused] = follower.of(MODEL, "4")
            assert refused.event_type == "refused" and refused.payload.to_stage.value == "rejected"
            assert refused.payload.reason.startswith("artifact integrity check failed")
            [not_offered] = follower.of(MODEL, "5")
            assert not_offered.payload.reason.startswith("gate parity failed")

            # (6) Redelivered candidate events change nothing; a later candidate proves they were consumed.
            count_before = len(follower.of(MODEL))
            poison = b'{"event_id": "not a candidate"}'
            await produce(
                bootstrap,
                candidates_topic,
                [(MODEL.encode(), v1_event), (MODEL.encode(), v2_event), (MODEL.encode(), poison)],
            )
            await offer(bootstrap, candidates_topic, candidate("6", roc_auc=0.865, store=store))
            await follower.until("v6 staged", lambda: len(follower.of(MODEL, "6")) >= 2)
            since = [e for e in follower.of(MODEL)[count_before:] if e.payload.version != "6"]
            # The only other event allowed meanwhile: v1 archived because v6's canary ended.
            assert all((e.payload.version, e.event_type) == ("1", "archived") for e in since), since
            [dead] = await collect(bootstrap, f"{namespace}.dlq.registry.v1", expect=1, settle=0.5)
            assert dead.value == poison
            assert dict(dead.headers)["tollgate-dlq-source-topic"] == candidates_topic.encode()
            versions = (await api.get(f"/v1/models/{MODEL}/versions")).json()
            assert [(v["version"], v["stage"]) for v in versions][:5] == [
                ("1", "production"),
                ("2", "archived"),
                ("3", "rejected"),
                ("4", "rejected"),
                ("5", "rejected"),
            ]

            # Approval mode: staged without a deadline; two racing approvals, exactly one wins.
            await offer(
                bootstrap,
                candidates_topic,
                candidate("1", model=APPROVAL_MODEL, store=store),
                candidate("2", model=APPROVAL_MODEL, roc_auc=0.87, store=store),
            )
            await follower.until("a2 staged", lambda: len(follower.of(APPROVAL_MODEL, "2")) == 2)
            path = f"/v1/models/{APPROVAL_MODEL}/versions/2/approve"
            first, second = await asyncio.gather(
                api.post(path, json={"by": "risk-committee", "reason": "reviewed holdout and fairness"}),
                api.post(path, json={"by": "someone-else", "reason": "same time"}),
            )
            assert sorted([first.status_code, second.status_code]) == [200, 409]
            winner = first if first.status_code == 200 else second
            await follower.until("a2 approved", lambda: len(follower.of(APPROVAL_MODEL, "2")) == 3)
            approved = follower.of(APPROVAL_MODEL, "2")[2]
            assert (
                approved.event_type == "approved"
                and approved.payload.actor == winner.json()["changes"][0]["actor"]
            )
            shown = (await api.get(f"/v1/models/{APPROVAL_MODEL}/versions/2")).json()
            assert shown["approval"]["by"] == approved.payload.actor

        # The CLI, as an operator runs it: with a key from TOLLGATE_API_KEY, and refused without one.
        def tollgate(*args: str, key: str | None) -> subprocess.CompletedProcess[str]:
            env = {**os.environ, "TOLLGATE_REGISTRY_URL": base, "COLUMNS": "160"}
            env.pop("TOLLGATE_API_KEY", None)
            if key is not None:
                env["TOLLGATE_API_KEY"] = key
            return subprocess.run(
                [str(Path(sys.executable).with_name("tollgate")), *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )

        cli = await asyncio.to_thread(tollgate, "versions", MODEL, key=api_keys["viewer"])
        assert cli.returncode == 0, cli.stderr
        assert "production" in cli.stdout and "rejected" in cli.stdout
        refused = await asyncio.to_thread(tollgate, "versions", MODEL, key=None)
        assert refused.returncode == 1 and "401" in refused.stderr

        # Every stored transition was published exactly once, in order per model (one model, one partition).
        await follower.until(
            "v6 promoted by the canary",
            lambda: follower.moves(MODEL, "1")[-1] == ("archived", "archived"),
            timeout=15,
        )
        conn = await asyncpg.connect(database_url)
        try:
            stored = await conn.fetch("SELECT model, event_id FROM registry_transitions ORDER BY id")
            pending = await conn.fetchval("SELECT count(*) FROM registry_outbox WHERE published_at IS NULL")
        finally:
            await conn.close()
        await asyncio.sleep(1)  # anything published twice would show up now
        assert pending == 0
        for model in (MODEL, APPROVAL_MODEL):
            assert [e.event_id for e in follower.of(model)] == [
                r["event_id"] for r in stored if r["model"] == model
            ]
    finally:
        await follower.stop()
