"""Refused submissions are in the audit trail: trainer and audit-log as real processes on the real broker
and PostgreSQL.

Each way the submission endpoint refuses an attempt — a body over the size limit (answered before it is
parsed), a file over the file limit, an unknown model, a form field missing (FastAPI's validation), declared
parameters that are not JSON, a file that is not an ONNX model, a key without the data-scientist role — is
one ``models.submissions`` event, which the audit-log records in its ``submissions`` stream: the
authenticated principal and roles, every reason, the sha256 and size of each file the trainer read, the
body's size. An attempt without a valid key has no principal to name and is not recorded.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.auth_support import RoleKeys, header, make_keys
from tests.conftest import wait_http_ok
from tests.polling import eventually

MODEL = "submission-attempts-probe"
FILE_LIMIT = 1000


def catalog(directory: Path) -> Path:
    entry = {
        "model": MODEL,
        "contract": "credit-default.v1",
        "risk_tier": "low",
        "training": {
            "family": "logistic_regression",
            "min_rows": 1_000_000,
            "retrain_after_new_rows": 1_000_000,
            "debounce_seconds": 1.0,
            "holdout_fraction": 0.2,
        },
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{MODEL}.yaml").write_text(yaml.safe_dump(entry))
    return directory


async def test_every_refused_submission_is_in_the_audit_trail_with_principal_and_reasons(
    services: Any, tmp_path: Path, own_database: str
) -> None:
    keys: RoleKeys = await make_keys(own_database)
    env = {
        "TOLLGATE_MODELS_DIR": str(catalog(tmp_path / "models")),
        "TOLLGATE_ARTIFACT_DIR": str(tmp_path / "artifacts"),
        "TOLLGATE_DATABASE_URL": own_database,
    }
    trainer = services("trainer", submission_max_file_bytes=str(FILE_LIMIT), env_extra=env)
    audit = services(
        "audit-log",
        env_extra={**env, "TOLLGATE_AUDIT_LOG_SIGNING_KEY_PATH": str(tmp_path / "ed25519.pem")},
    )
    trainer_url, audit_url = (f"http://127.0.0.1:{p.port}" for p in (trainer, audit))
    await wait_http_ok(f"{trainer_url}/readyz", timeout=180, proc=trainer)
    await wait_http_ok(f"{audit_url}/readyz", timeout=180, proc=audit)
    path = f"/v1/models/{MODEL}/submissions"
    small, large = b"not an onnx model", b"o" * (FILE_LIMIT + 500)
    scientist = keys.names["data-scientist"]

    async with httpx.AsyncClient(
        base_url=trainer_url, headers=header(keys["data-scientist"]), timeout=60
    ) as http:
        answers = {
            "body over the limit": await http.post(
                path, files={"onnx": ("m.onnx", b"x" * (2 * FILE_LIMIT + 1024 * 1024 + 10))}
            ),
            "file over the limit": await http.post(
                path, files={"onnx": ("m.onnx", large)}, data={"notes": "too big"}
            ),
            "unknown model": await http.post(
                "/v1/models/no-such-model/submissions",
                files={"onnx": ("m.onnx", small)},
                data={"notes": "n"},
            ),
            "notes missing": await http.post(path, files={"onnx": ("m.onnx", small)}),
            "parameters not JSON": await http.post(
                path, files={"onnx": ("m.onnx", small)}, data={"notes": "n", "parameters": "{C: 1"}
            ),
            "not ONNX": await http.post(path, files={"onnx": ("m.onnx", small)}, data={"notes": "n"}),
            "viewer": await http.post(
                path,
                files={"onnx": ("m.onnx", small)},
                data={"notes": "n"},
                headers=header(keys["viewer"]),
            ),
            "no key": await http.post(
                path, files={"onnx": ("m.onnx", small)}, data={"notes": "n"}, headers={"x-api-key": ""}
            ),
        }
    statuses = {what: r.status_code for what, r in answers.items()}
    assert statuses == {
        "body over the limit": 413,
        "file over the limit": 413,
        "unknown model": 404,
        "notes missing": 422,
        "parameters not JSON": 422,
        "not ONNX": 422,
        "viewer": 403,
        "no key": 401,
    }, {what: r.text for what, r in answers.items()}

    async def recorded() -> list[dict[str, Any]] | None:
        async with httpx.AsyncClient(base_url=audit_url, headers=header(keys["auditor"]), timeout=30) as a:
            got = await a.get("/v1/audit/events", params={"stream": "submissions", "limit": 100})
        items = got.json()["items"] if got.status_code == 200 else []
        return items if len(items) >= 7 else None

    items = await eventually(recorded, timeout=120, interval=1, what="seven attempts in the audit trail")
    assert len(items) == 7  # the attempt without a valid key names no principal: not recorded
    payloads = [i["event"]["payload"] for i in items]
    assert all(i["event"]["schema"] == "models.submissions.v1" for i in items)
    assert all(p["outcome"] == "refused" for p in payloads)
    by_status: dict[int, list[dict[str, Any]]] = {}
    for p in payloads:
        by_status.setdefault(p["status"], []).append(p)
    assert sorted(by_status) == [403, 404, 413, 422]

    viewer = by_status[403][0]
    assert viewer["principal"] == keys.names["viewer"] and viewer["roles"] == ["viewer"]
    assert "may not submit a model" in viewer["reasons"][0]["message"]
    for p in payloads:
        if p is not viewer:
            assert p["principal"] == scientist and p["roles"] == ["data-scientist"]
        assert p["body_bytes"] > 0 and p["received_at"]

    body, file = sorted(by_status[413], key=lambda p: -p["body_bytes"])
    assert "at most" in body["reasons"][0]["message"] and body["files"] == []  # refused before parsing
    assert file["reasons"] == [{"field": None, "message": f"the ONNX file exceeds {FILE_LIMIT} bytes"}]
    assert file["files"] == [{"field": "onnx", "sha256": None, "size_bytes": FILE_LIMIT + 1}]

    small_file = [{"field": "onnx", "sha256": hashlib.sha256(small).hexdigest(), "size_bytes": len(small)}]
    (unknown,) = by_status[404]
    assert (
        unknown["model"] == "no-such-model"
        and "unknown model 'no-such-model'" in unknown["reasons"][0]["message"]
    )
    assert unknown["files"] == small_file
    fields = {tuple(r["field"] for r in p["reasons"]): p for p in by_status[422]}
    assert set(fields) == {("notes",), ("parameters",), ("onnx",)}
    assert fields[("parameters",)]["reasons"][0]["message"].startswith("not JSON")
    assert fields[("parameters",)]["files"] == small_file
    assert fields[("onnx",)]["files"] == small_file
