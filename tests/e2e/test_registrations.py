"""Onboarding live: a dataset contract and a model registered while all seven services run (no restart).

Against the real Kafka and PostgreSQL, with every service as its own process:

1. a new contract is registered with ``tollgate contracts register`` (the CLI, a data scientist's key) and a
   catalog entry over HTTP; ingest, the validator, the trainer and the registry show them in force;
2. data of the new contract is uploaded through the gateway; a model is trained, passes its gates, is
   promoted after its canary period and serves on the scorer;
3. a compatible revision of the contract (a wider range) is registered: an event and a scoring request
   that the first revision refused are accepted by the running validator and scorer; a second contract
   version is registered and its events validate;
4. a breaking change to the version in force is refused (409 naming the change) and nothing changes;
5. every registration is in the audit trail with the principal of the key that registered it.

Every wait polls a condition with a deadline.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from tests.audit_support import ensure_writer_role
from tests.auth_support import RoleKeys, header
from tests.conftest import wait_http_ok
from tests.kafka_helpers import collect, produce
from tests.polling import eventually
from tollgate_core.paths import schemas_dir
from tollgate_core.topics import Topics
from tollgate_demo.datasets import load_islp_default

pytestmark = pytest.mark.timeout(900)
SERVICES = ("ingest", "validator", "trainer", "registry", "scorer", "monitor", "audit-log")
ROWS = 2500


def contract_document(name: str, balance_max: float = 10_000) -> dict[str, Any]:
    doc = yaml.safe_load((schemas_dir() / "datasets" / "credit-default.v1.yaml").read_text())
    doc["contract"] = name
    for feature in doc["features"]:
        if feature["name"] == "balance":
            feature["maximum"] = balance_max
    return doc


def model_document(model: str, contract: str) -> dict[str, Any]:
    doc = yaml.safe_load((schemas_dir() / "models" / "credit-default-risk.yaml").read_text())
    doc.update(model=model, contract=contract, description="Onboarded live.")
    doc["training"].update(min_rows=2000, retrain_after_new_rows=1_000_000, debounce_seconds=1)
    doc["rollout"].update(canary_seconds=1, canary_weight=0.2)
    return doc


def event(schema: str, record: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "observation",
        "schema": schema,
        "occurred_at": at.isoformat(),
        "producer": "onboarding-test",
        "payload": record,
    }


def cli(*args: str, key: str, registry: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TOLLGATE_API_KEY": key, "TOLLGATE_REGISTRY_URL": registry}
    return subprocess.run(
        [sys.executable, "-m", "tollgate_cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,  # a cold interpreter importing the CLI on a loaded two-core machine
        check=False,
    )


async def test_contract_and_model_registered_live_train_serve_and_evolve(
    services: Any, namespace: str, bootstrap: str, tmp_path: Path, api_keys: RoleKeys
) -> None:
    assert await ensure_writer_role() is None
    env = {
        "TOLLGATE_ARTIFACT_DIR": str(tmp_path / "artifacts"),
        "TOLLGATE_AUDIT_LOG_SIGNING_KEY_PATH": str(tmp_path / "ed25519.pem"),
        "TOLLGATE_SCORER_LOG_SPOOL_DIR": str(tmp_path / "spool"),
        "TOLLGATE_SCORER_WARMUP_ROUNDS": "3",
        "TOLLGATE_TRAINER_POLL_SECONDS": "0.2",
        "TOLLGATE_REGISTRY_CANARY_POLL_SECONDS": "0.2",
    }
    procs = {name: services(name, env_extra=env) for name in SERVICES}
    base = {name: f"http://127.0.0.1:{proc.port}" for name, proc in procs.items()}
    for name, proc in procs.items():
        await wait_http_ok(f"{base[name]}/readyz", proc=proc, timeout=180)

    tag = uuid.uuid4().hex[:6]
    name, model = f"onboard-{tag}", f"onboard-{tag}-risk"
    v1, v2 = f"{name}.v1", f"{name}.v2"
    scientist = api_keys["data-scientist"]
    ds = header(scientist)

    # 1. Register the contract with the CLI and the model over HTTP, while everything runs.
    contract_file = tmp_path / f"{v1}.yaml"
    contract_file.write_text(yaml.safe_dump(contract_document(name)))
    done = cli("contracts", "register", str(contract_file), key=scientist, registry=base["registry"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"contract {v1} registered: revision 1" in done.stdout
    async with httpx.AsyncClient(timeout=30) as http:
        reply = await http.post(f"{base['registry']}/v1/models", json=model_document(model, v1), headers=ds)
        assert reply.status_code == 201, reply.text
        assert reply.json()["registered_by"] == api_keys.names["data-scientist"]
        again = await http.post(f"{base['registry']}/v1/models", json=model_document(model, v1), headers=ds)
        assert (again.status_code, again.json()["created"]) == (200, False)  # idempotent
        # Only a data scientist registers.
        refused = await http.post(
            f"{base['registry']}/v1/contracts",
            json=contract_document(name),
            headers=header(api_keys["viewer"]),
        )
        assert refused.status_code == 403

        viewer = header(api_keys["viewer"])

        async def validator_has(schema: str) -> Any:
            listed = (await http.get(f"{base['validator']}/v1/contracts", headers=viewer)).json()
            return next((c for c in listed if c["schema"] == schema), None)

        async def trainer_has_model() -> bool:
            listed = (await http.get(f"{base['trainer']}/v1/models", headers=viewer)).json()
            return any(m["model"] == model and m["contract_known"] for m in listed)

        async def registry_has_model() -> bool:
            got = await http.get(f"{base['registry']}/v1/models/{model}", headers=viewer)
            return got.status_code == 200 and got.json()["in_catalog"]

        async def ingest_knows(schema: str) -> bool:
            record = load_islp_default()[0]
            checked = await http.post(
                f"{base['ingest']}/v1/events",
                params={"dry_run": "true"},
                json=[event(schema, record, datetime.now(UTC))],
                headers=header(api_keys["producer"]),
            )
            return checked.status_code == 200 and checked.json()["valid"] == 1

        await eventually(lambda: validator_has(v1), timeout=30, what=f"the validator to enforce {v1}")
        await eventually(trainer_has_model, timeout=30, what=f"the trainer to know {model}")
        await eventually(registry_has_model, timeout=30, what=f"the registry to gate {model}")
        await eventually(lambda: ingest_knows(v1), timeout=30, what=f"ingest to accept {v1}")

        # 2. Upload the data set; a model is trained, gated, promoted and serves.
        records = load_islp_default()[:ROWS]
        start = datetime.now(UTC) - timedelta(hours=1)
        events = [event(v1, r, start + timedelta(seconds=i)) for i, r in enumerate(records)]
        sent = await http.post(
            f"{base['ingest']}/v1/events", json=events, headers=header(api_keys["producer"])
        )
        assert sent.status_code == 202, sent.text

        async def production() -> Any:
            got = await http.get(f"{base['registry']}/v1/models/{model}/production", headers=viewer)
            return got.status_code == 200 and got.json()["production"]

        serving = await eventually(production, timeout=400, interval=1, what=f"{model} in production")
        assert serving["contract"] == v1

        score = f"{base['scorer']}/v1/models/{model}/score"
        client = header(api_keys["scorer-client"])
        instance = {k: v for k, v in records[0].items() if k != "default"}

        async def scored() -> Any:
            got = await http.post(score, json={"instance": instance}, headers=client)
            return got.status_code == 200 and got.json()

        result = await eventually(scored, timeout=90, what=f"the scorer to serve {model}")
        assert result["version"] == serving["version"]

        # 3. A compatible revision widens balance: refused before, accepted by the running services after.
        rich = {**instance, "balance": 30_000.0}
        before = await http.post(score, json={"instance": rich}, headers=client)
        assert before.status_code == 422 and "balance" in before.text, before.text
        topics = Topics(namespace)
        raw_before = event(v1, {**records[1], "balance": 30_000.0}, datetime.now(UTC))
        await produce(bootstrap, topics.events_raw, [(None, orjson.dumps(raw_before))])
        rejected = await collect(bootstrap, topics.events_rejected, expect=1, settle=0.5)
        assert [orjson.loads(r.value)["event_id"] for r in rejected] == [raw_before["event_id"]]

        widened = await http.post(
            f"{base['registry']}/v1/contracts", json=contract_document(name, 50_000), headers=ds
        )
        assert widened.status_code == 201, widened.text
        revision = widened.json()
        assert revision["revision"] == 2 and "balance.maximum: 10000.0 → 50000.0" in revision["changes"]

        async def scorer_accepts() -> Any:
            got = await http.post(score, json={"instance": rich}, headers=client)
            return got.status_code == 200 and got.json()

        accepted = await eventually(scorer_accepts, timeout=60, what="the scorer to read the revision")
        assert accepted["version"] == serving["version"]  # the same version, no restart
        await eventually(
            lambda: _digest_is(validator_has(v1), revision["digest"]),
            timeout=30,
            what="the validator to enforce the revision",
        )
        raw_after = event(v1, {**records[2], "balance": 30_000.0}, datetime.now(UTC))
        await produce(bootstrap, topics.events_raw, [(None, orjson.dumps(raw_after))])

        async def validated_after() -> bool:
            got = await collect(bootstrap, topics.events_validated, expect=ROWS + 1, timeout=10, settle=0.2)
            return raw_after["event_id"] in {orjson.loads(r.value)["event_id"] for r in got}

        await eventually(validated_after, timeout=60, what="the widened event to be validated")

        # A second version (a new nullable feature) is registered; its events validate.
        second = contract_document(name, 50_000)
        second["version"] = 2
        second["features"].append({"name": "tenure_years", "type": "number", "nullable": True})
        added = await http.post(f"{base['registry']}/v1/contracts", json=second, headers=ds)
        assert added.status_code == 201, added.text
        await eventually(lambda: validator_has(v2), timeout=30, what=f"the validator to enforce {v2}")
        await eventually(lambda: ingest_knows(v2), timeout=30, what=f"ingest to accept {v2}")
        raw_v2 = event(v2, {**records[3], "tenure_years": 4.5}, datetime.now(UTC))
        await produce(bootstrap, topics.events_raw, [(None, orjson.dumps(raw_v2))])

        async def validated_v2() -> bool:
            got = await collect(bootstrap, topics.events_validated, expect=ROWS + 2, timeout=10, settle=0.2)
            return raw_v2["event_id"] in {orjson.loads(r.value)["event_id"] for r in got}

        await eventually(validated_v2, timeout=60, what=f"an event of {v2} to be validated")

        # 4. A breaking change to the version in force is refused, naming the change; nothing changes.
        narrowed = await http.post(
            f"{base['registry']}/v1/contracts", json=contract_document(name, 5_000), headers=ds
        )
        assert narrowed.status_code == 409, narrowed.text
        detail = narrowed.json()["detail"]
        assert "balance: maximum-tightened" in detail and f"{name} version 3" in detail, detail
        assert (await validator_has(v1))["digest"] == revision["digest"]
        unknown = await http.post(
            f"{base['registry']}/v1/models", json=model_document(model, f"{name}.v9"), headers=ds
        )
        assert unknown.status_code == 422 and f"{name}.v9 is not registered" in unknown.text

        # 5. Each registration is in the audit trail with the principal that made it.
        auditor = header(api_keys["auditor"])

        async def audited() -> Any:
            got = await http.get(
                f"{base['audit-log']}/v1/audit/events",
                params={"stream": "registrations", "limit": 1000},
                headers=auditor,
            )
            if got.status_code != 200:
                return None
            mine = [
                i["event"]["payload"]
                for i in got.json()["items"]
                if i["event"]["payload"]["name"] in (name, model)
            ]
            return mine if len(mine) >= 4 else None

        trail = await eventually(audited, timeout=60, what="four registrations in the audit trail")
        assert sorted((p["kind"], p["name"], p.get("version"), p["revision"]) for p in trail) == [
            ("contract", name, 1, 1),
            ("contract", name, 1, 2),
            ("contract", name, 2, 1),
            ("model", model, None, 1),
        ]
        assert {p["registered_by"] for p in trail} == {api_keys.names["data-scientist"]}

    for proc in procs.values():  # nobody restarted
        assert proc.proc is not None and proc.proc.poll() is None


async def _digest_is(listing: Any, digest: str) -> bool:
    found = await listing
    return bool(found) and found["digest"] == digest
