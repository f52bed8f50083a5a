"""A high-risk-tier model on the running registry and audit-log, with real keys: its new version can be
promoted neither by one approver nor by the principal who asked for its training; two distinct approvers
put it in production; the approval recorded in the audit trail names both principals and the digest of
the gate report they approved. A forged actor field changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.auth_support import RoleKeys, header, make_keys
from tests.conftest import wait_http_ok
from tests.e2e.test_registry import LifecycleFollower, offer
from tests.polling import get_until
from tests.unit.registry.candidates import candidate, spec
from tollgate_core.artifacts import DirectoryArtifactStore
from tollgate_core.lifecycle import CandidatePayload

MODEL = "high-risk-limits"


def requested(payload: CandidatePayload, *by: str) -> CandidatePayload:
    lineage = payload.lineage.model_copy(update={"requested_by": list(by), "trigger": "request"})
    return payload.model_copy(update={"lineage": lineage})


async def test_high_tier_promotion_needs_two_approvers_who_did_not_build_it(
    services: Any,
    namespace: str,
    bootstrap: str,
    database_url: str,
    api_keys: RoleKeys,
    tmp_path: Path,
) -> None:
    models, artifacts = tmp_path / "models", tmp_path / "artifacts"
    models.mkdir()
    high = spec(MODEL, risk_tier="high", mode="approval").model_dump(mode="json")
    (models / f"{MODEL}.yaml").write_text(yaml.safe_dump(high), encoding="utf-8")
    env = {"TOLLGATE_MODELS_DIR": str(models), "TOLLGATE_ARTIFACT_DIR": str(artifacts)}
    registry = services("registry", env_extra=env)
    audit = services(
        "audit-log",
        env_extra={**env, "TOLLGATE_AUDIT_LOG_SIGNING_KEY_PATH": str(tmp_path / "ed25519.pem")},
    )
    base, audit_base = f"http://127.0.0.1:{registry.port}", f"http://127.0.0.1:{audit.port}"
    await wait_http_ok(f"{base}/readyz", proc=registry)
    await wait_http_ok(f"{audit_base}/readyz", proc=audit)

    # The data scientist who asks for the training run is an approver too; two other approvers.
    people = await make_keys(database_url, prefix="tier")
    builder = await make_keys(database_url, prefix="builder")
    second = await make_keys(database_url, prefix="second")
    store = DirectoryArtifactStore(artifacts)
    topic = f"{namespace}.models.candidates.v1"
    follower = LifecycleFollower(bootstrap, f"{namespace}.models.lifecycle.v1")
    await follower.start()
    try:
        await offer(bootstrap, topic, candidate("1", model=MODEL, store=store))
        # The first version honours the tier too: staged, and in production only after two approvals, the
        # first of which is recorded and published alone.
        await follower.until("v1 staged", lambda: len(follower.of(MODEL, "1")) == 2)
        assert follower.moves(MODEL, "1")[-1] == ("staged", "staging")
        async with httpx.AsyncClient(base_url=base, timeout=10) as api:
            for n, key in enumerate((people["approver"], second["approver"]), 1):
                answer = await api.post(
                    f"/v1/models/{MODEL}/versions/1/approve", json={"reason": "first"}, headers=header(key)
                )
                assert answer.status_code == 200, answer.text
                assert answer.json()["production_version"] == ("1" if n == 2 else None)
        await follower.until(
            "v1 approved", lambda: follower.moves(MODEL, "1")[-1] == ("approved", "production")
        )
        assert follower.moves(MODEL, "1")[-2] == ("approved", "staging")
        await offer(
            bootstrap,
            topic,
            requested(candidate("2", model=MODEL, roc_auc=0.87, store=store), builder.names["all-roles"]),
        )
        await follower.until("v2 staged", lambda: len(follower.of(MODEL, "2")) == 2)
        path = f"/v1/models/{MODEL}/versions/2"
        async with httpx.AsyncClient(base_url=base, timeout=10) as api:
            digest = (await api.get(path, headers=header(people["viewer"]))).json()["gate_report_digest"]

            async def act(action: str, key: str, **body: Any) -> httpx.Response:
                return await api.post(
                    f"{path}/{action}", json={"reason": "reviewed", **body}, headers=header(key)
                )

            one = await act("promote", people["approver"], to="production")
            assert one.status_code == 403 and "tier-needs-approval" in one.json()["detail"]
            own = await act("approve", builder["all-roles"])
            assert own.status_code == 403 and "approver-not-requester" in own.json()["detail"]

            first = await act("approve", people["approver"], by="chief-risk-officer", report_digest=digest)
            assert first.status_code == 200
            assert [(c["transition"], c["to_stage"]) for c in first.json()["changes"]] == [
                ("approved", "staging")
            ]
            assert (await api.get(path, headers=header(people["viewer"]))).json()["stage"] == "staging"
            twice = await act("approve", people["approver"])
            assert twice.status_code == 403 and "distinct-approvers" in twice.json()["detail"]
            assert (await act("approve", people["operator"])).status_code == 403  # not an approver

            final = await act("approve", second["approver"], by="chief-risk-officer")
            assert final.status_code == 200 and final.json()["production_version"] == "2"

        await follower.until(
            "v2 approved", lambda: follower.moves(MODEL, "2")[-1] == ("approved", "production")
        )
        approved = follower.of(MODEL, "2")[-1].payload
        expected = [people.names["approver"], second.names["approver"]]
        assert approved.actor == second.names["approver"]
        assert [a.by for a in approved.approvals] == expected
        assert {a.report_digest for a in approved.approvals} == {digest}
    finally:
        await follower.stop()

    # The audit trail holds the approval with both principals and the digest of the report approved.
    async with httpx.AsyncClient(
        base_url=audit_base, timeout=30, headers=header(api_keys["auditor"])
    ) as trail:

        def approval_row(page: dict[str, Any]) -> Any:
            rows = [
                i
                for i in page["items"]
                if i["event"]["payload"].get("model") == MODEL
                and i["event"]["payload"].get("version") == "2"
                and i["event"]["event_type"] == "approved"
                and i["event"]["payload"].get("to_stage") == "production"
            ]
            return rows[0] if rows else None

        row = await get_until(
            trail, f"/v1/audit/events?model={MODEL}&stream=lifecycle&limit=100", approval_row
        )
    payload = row["event"]["payload"]
    assert payload["actor"] == second.names["approver"]
    assert [(a["by"], a["report_digest"]) for a in payload["approvals"]] == [
        (who, digest) for who in expected
    ]
    assert "chief-risk-officer" not in str(payload)


pytestmark = pytest.mark.timeout(300)
