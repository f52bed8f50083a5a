"""The HTTP API over the in-memory repository: responses, OpenAPI, and 404 / 409 / 422 errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from tests.auth_support import header, memory_keys
from tests.unit.registry.candidates import MODEL, candidate, candidate_event, spec
from tollgate_core.artifacts import InMemoryArtifactStore
from tollgate_core.auth import install_keys
from tollgate_registry.api import install
from tollgate_registry.core import ModelRegistry
from tollgate_registry.memory import InMemoryRepository

VERIFIER, KEYS = memory_keys(
    frank=("approver",), gina=("operator",), olga=("viewer",), dana=("data-scientist",)
)


def build_app() -> tuple[FastAPI, ModelRegistry, InMemoryArtifactStore]:
    store = InMemoryArtifactStore()
    core = ModelRegistry(
        InMemoryRepository(),
        {MODEL: spec(), "approved-model": spec("approved-model", mode="approval")},
        store,
        lifecycle_schema="models.lifecycle.v1",
    )
    app = FastAPI()
    install_keys(app, VERIFIER)
    install(app, core)
    return app, core, store


@pytest.fixture
async def world() -> AsyncIterator[tuple[httpx.AsyncClient, ModelRegistry, InMemoryArtifactStore]]:
    app, core, store = build_app()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://registry", headers=header(KEYS["frank"])
    ) as client:
        yield client, core, store


async def test_listing_and_showing(
    world: tuple[httpx.AsyncClient, ModelRegistry, InMemoryArtifactStore],
) -> None:
    client, core, store = world
    await core.on_candidate(candidate_event(candidate("1", store=store)))
    await core.on_candidate(candidate_event(candidate("2", roc_auc=0.87, store=store)))

    models = (await client.get("/v1/models")).json()
    assert [(m["model"], m["production_version"], m["staging_version"], m["versions"]) for m in models] == [
        ("approved-model", None, None, 0),
        (MODEL, "1", "2", 2),
    ]
    model = (await client.get(f"/v1/models/{MODEL}")).json()
    assert model["stages"] == {"production": 1, "staging": 1} and model["rollback_target"] is None
    assert (
        model["gates"]["regression_tolerance"] == {"roc_auc": 0.02} and model["rollout"]["mode"] == "canary"
    )

    versions = (await client.get(f"/v1/models/{MODEL}/versions")).json()
    assert [(v["version"], v["stage"], v["gates_passed"]) for v in versions] == [
        ("1", "production", True),
        ("2", "staging", True),
    ]
    assert versions[1]["canary_until"] is not None

    shown = (await client.get(f"/v1/models/{MODEL}/versions/2")).json()
    assert [g["gate"] for g in shown["gates"]] == [
        "integrity",
        "parity",
        "min:roc_auc",
        "max:log_loss",
        "regression:roc_auc",
        "degradation:roc_auc",
        "fairness:roc_auc",
    ]
    assert shown["lineage"]["family"] == "logistic_regression" and shown["parity"]["passed"]
    assert shown["reference"]["features"] == ["balance", "income"]
    assert shown["reference"]["fairness_gap"] == {"roc_auc": 0.05}
    assert [t["transition"] for t in shown["transitions"]] == ["registered", "staged"]

    serving = (await client.get(f"/v1/models/{MODEL}/production")).json()
    assert serving["production"]["version"] == "1" and serving["staging"]["version"] == "2"
    assert serving["canary_weight"] == 0.2 and serving["shadow"] is False
    assert serving["production"]["artifact"]["digest"] == candidate("1").artifact.digest


async def test_actions(world: tuple[httpx.AsyncClient, ModelRegistry, InMemoryArtifactStore]) -> None:
    client, core, store = world
    model = "approved-model"
    await core.on_candidate(candidate_event(candidate("1", model=model, store=store)))
    await core.on_candidate(candidate_event(candidate("2", model=model, store=store)))
    refused = await client.post(
        f"/v1/models/{model}/versions/2/promote", json={"to": "production", "reason": "r"}
    )
    assert refused.status_code == 409
    assert refused.json()["detail"].startswith(
        "version 2 cannot go from staging to production: this model's rollout mode is approval"
    )
    approved = await client.post(  # a forged "by" is ignored: the actor is the key's principal
        f"/v1/models/{model}/versions/2/approve",
        json={"by": "chief-risk-officer", "reason": "risk committee 2026-03"},
    )
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert [(c["version"], c["transition"], c["actor"]) for c in body["changes"]] == [
        ("2", "approved", "frank"),
        ("1", "archived", "frank"),
    ]
    assert body["production_version"] == "2"
    shown = (await client.get(f"/v1/models/{model}/versions/2")).json()
    assert shown["approval"]["by"] == "frank" and shown["approval"]["reason"] == "risk committee 2026-03"

    rolled = await client.post(
        f"/v1/models/{model}/rollback",
        json={"reason": "complaints", "by": "frank"},
        headers=header(KEYS["gina"]),
    )
    assert rolled.status_code == 200 and rolled.json()["production_version"] == "1"
    assert {c["actor"] for c in rolled.json()["changes"]} == {"gina"}
    again = await client.post(f"/v1/models/{model}/rollback", json={"reason": "more"})
    assert again.status_code == 409 and "no previous production version" in again.json()["detail"]

    await core.on_candidate(candidate_event(candidate("3", model=model, store=store)))
    rejected = await client.post(f"/v1/models/{model}/versions/3/reject", json={"reason": "bias review"})
    assert rejected.status_code == 200 and rejected.json()["changes"][0]["to_stage"] == "rejected"
    assert rejected.json()["changes"][0]["actor"] == "frank"


async def test_roles_and_reasons(
    world: tuple[httpx.AsyncClient, ModelRegistry, InMemoryArtifactStore],
) -> None:
    client, core, store = world
    model = "approved-model"
    await core.on_candidate(candidate_event(candidate("1", model=model, store=store)))
    await core.on_candidate(candidate_event(candidate("2", model=model, store=store)))
    approve = f"/v1/models/{model}/versions/2/approve"
    no_key = await client.post(approve, json={"reason": "r"}, headers={"x-api-key": ""})
    assert no_key.status_code == 401 and no_key.headers["www-authenticate"].startswith("Bearer")
    wrong = await client.post(approve, json={"reason": "r"}, headers={"x-api-key": "tgk_nope"})
    assert wrong.status_code == 401
    for name in ("gina", "olga", "dana"):
        denied = await client.post(approve, json={"reason": "r"}, headers=header(KEYS[name]))
        assert denied.status_code == 403, name
        assert f"principal {name!r}" in denied.json()["detail"] and "approver" in denied.json()["detail"]
    assert (await client.get(f"/v1/models/{model}", headers=header(KEYS["olga"]))).status_code == 200
    for path, body in (
        (approve, {}),
        (f"/v1/models/{model}/versions/2/reject", {"reason": ""}),
        (f"/v1/models/{model}/versions/2/promote", {"to": "staging"}),
        (f"/v1/models/{model}/rollback", {"by": "frank"}),
    ):
        assert (await client.post(path, json=body)).status_code == 422, path


async def test_errors(world: tuple[httpx.AsyncClient, ModelRegistry, InMemoryArtifactStore]) -> None:
    client, core, store = world
    await core.on_candidate(candidate_event(candidate("1", store=store)))
    for path in (
        "/v1/models/nope",
        "/v1/models/nope/versions",
        "/v1/models/nope/versions/1",
        "/v1/models/nope/production",
        f"/v1/models/{MODEL}/versions/9",
    ):
        response = await client.get(path)
        assert response.status_code == 404, path
    assert (await client.get("/v1/models/nope")).json()["detail"].startswith("unknown model 'nope'")
    assert (await client.post("/v1/models/nope/rollback", json={"reason": "x"})).status_code == 404
    assert (
        await client.post(f"/v1/models/{MODEL}/versions/9/reject", json={"reason": "x"})
    ).status_code == 404
    for body in (
        {"to": "production"},
        {"to": "moon", "reason": "x"},
        {"to": "staging", "reason": ""},
        {"to": "staging", "reason": "x", "surprise": 1},
    ):
        response = await client.post(f"/v1/models/{MODEL}/versions/1/promote", json=body)
        assert response.status_code == 422, body
    assert (await client.post(f"/v1/models/{MODEL}/versions/1/approve", json={})).status_code == 422
    conflict = await client.post(f"/v1/models/{MODEL}/versions/1/reject", json={"reason": "x"})
    assert conflict.status_code == 409
    assert conflict.json()["detail"] == (
        "version 1 cannot go from production to rejected: a production version "
        "is replaced by a rollback or a promotion, not rejected"
    )


async def test_openapi_documents_every_endpoint(
    world: tuple[httpx.AsyncClient, ModelRegistry, InMemoryArtifactStore],
) -> None:
    client, _, _ = world
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {
        "/v1/models": {"get"},
        "/v1/models/{model}": {"get"},
        "/v1/models/{model}/versions": {"get"},
        "/v1/models/{model}/versions/{version}": {"get"},
        "/v1/models/{model}/compare": {"get"},
        "/v1/models/{model}/production": {"get"},
        "/v1/models/{model}/versions/{version}/promote": {"post"},
        "/v1/models/{model}/versions/{version}/approve": {"post"},
        "/v1/models/{model}/versions/{version}/reject": {"post"},
        "/v1/models/{model}/rollback": {"post"},
    } == {path: set(ops) for path, ops in paths.items()}
    assert "409" in paths["/v1/models/{model}/rollback"]["post"]["responses"]
