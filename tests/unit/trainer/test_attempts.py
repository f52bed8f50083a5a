"""The record of submission attempts (tollgate_trainer.attempts): what is recorded of an answer, and a
refusal that cannot be recorded is not answered as if it had been."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request

from tests.auth_support import header, memory_keys
from tollgate_core.apikeys import DATA_SCIENTIST, Principal
from tollgate_core.auth import install_keys, require
from tollgate_core.limits import BodyLimits, RequestLimitMiddleware
from tollgate_core.submissions import SubmissionAttemptEvent
from tollgate_trainer.attempts import FILES_STATE, SubmissionAttempts, submitted_file

ROUTE = r"/v1/models/[^/]+/submissions"


def app(recorded: list[SubmissionAttemptEvent], *, fail: bool = False) -> tuple[FastAPI, dict[str, str]]:
    keys, named = memory_keys(alice=(DATA_SCIENTIST,), vic=("viewer",))

    async def record(event: SubmissionAttemptEvent) -> None:
        if fail:
            raise ConnectionError("database away")
        recorded.append(event)

    api = FastAPI()
    api.add_middleware(RequestLimitMiddleware, limits=BodyLimits(max_body_bytes=200))
    api.add_middleware(SubmissionAttempts, route=ROUTE, keys=keys, record=record, producer="t")
    install_keys(api, keys)
    who = Depends(require("submit a model", DATA_SCIENTIST))

    @api.post("/v1/models/{model}/submissions", status_code=201)
    async def submit(request: Request, model: str, principal: Principal = who) -> dict[str, Any]:
        setattr(request.state, FILES_STATE, [submitted_file("onnx", b"abc", whole=True, sha256="a" * 64)])
        if model == "bad":
            raise HTTPException(422, [{"loc": ["body", "onnx"], "msg": "input 'x': missing", "type": "v"}])
        return {"submission_id": "s-1", "version": "7"}

    return api, named


async def post(api: FastAPI, path: str, key: str, body: bytes = b"{}") -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://t") as http:
        return await http.post(path, content=body, headers={**header(key), "content-type": "text/plain"})


async def test_accepted_refused_and_over_the_limit_attempts_name_the_principal() -> None:
    recorded: list[SubmissionAttemptEvent] = []
    api, keys = app(recorded)
    accepted = await post(api, "/v1/models/m/submissions", keys["alice"])
    refused = await post(api, "/v1/models/bad/submissions", keys["alice"])
    too_large = await post(api, "/v1/models/m/submissions", keys["alice"], b"x" * 300)
    forbidden = await post(api, "/v1/models/m/submissions", keys["vic"])
    unknown_key = await post(api, "/v1/models/m/submissions", "tgk_not-a-key")
    other_route = await post(api, "/v1/models/m/train", keys["alice"])
    assert [r.status_code for r in (accepted, refused, too_large, forbidden, unknown_key, other_route)] == [
        201, 422, 413, 403, 401, 404
    ]  # fmt: skip
    assert accepted.json() == {"submission_id": "s-1", "version": "7"}  # the answer passes unchanged
    payloads = [e.payload for e in recorded]
    assert [(p.outcome, p.status, p.principal, p.model) for p in payloads] == [
        ("accepted", 201, "alice", "m"),
        ("refused", 422, "alice", "bad"),
        ("refused", 413, "alice", "m"),
        ("refused", 403, "vic", "m"),
    ]
    assert (payloads[0].submission_id, payloads[0].version, payloads[0].reasons) == ("s-1", "7", [])
    assert [(r.field, r.message) for r in payloads[1].reasons] == [("onnx", "input 'x': missing")]
    assert payloads[1].files[0].sha256 == "a" * 64 and payloads[1].roles == [DATA_SCIENTIST]
    assert payloads[2].files == [] and payloads[2].body_bytes == 300
    assert "at most 200" in payloads[2].reasons[0].message
    assert payloads[3].roles == ["viewer"] and "may not submit a model" in payloads[3].reasons[0].message
    assert all(e.schema_ == "models.submissions.v1" for e in recorded)
    assert [e.event_type for e in recorded] == ["submission_accepted", *["submission_refused"] * 3]


async def test_a_refusal_that_cannot_be_recorded_is_answered_503() -> None:
    api, keys = app([], fail=True)
    refused = await post(api, "/v1/models/bad/submissions", keys["alice"])
    assert refused.status_code == 503 and "could not be recorded" in refused.json()["detail"]
    assert refused.headers["retry-after"] == "5"
    # An accepted one is a candidate already (its event carries the submission): answered as it is.
    accepted = await post(api, "/v1/models/m/submissions", keys["alice"])
    assert accepted.status_code == 201
