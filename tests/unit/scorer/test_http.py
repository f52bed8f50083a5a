"""The HTTP surface through ASGI: scoring routes, size limits before parsing, precise errors, API keys,
the Open Inference Protocol (JSON and Triton's binary tensors, encoded by the real tritonclient), and the
operations app behind it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as triton

from tests.unit.scorer.support import MODEL, instances, make_app, serving, trained
from tollgate_scorer.http import ScoringApp
from tollgate_scorer.routing import ModelRoute

URL = f"/v1/models/{MODEL}/score"


def client(app: ScoringApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://scorer")


async def test_one_instance_and_a_batch(tmp_path: Path) -> None:
    app, log = make_app(tmp_path)
    async with client(app) as http:
        one = await http.post(URL, json={"instance": instances(1)[0]})
        batch = await http.post(URL, json={"instances": instances(5)})
    assert one.status_code == 200
    result = one.json()
    assert set(result) == {
        "request_id",
        "model",
        "version",
        "route",
        "prediction",
        "score",
        "probabilities",
        "entity_id",
        "threshold",
    }
    assert result["threshold"] == 0.5 and result["prediction"] == (result["score"] >= 0.5)
    assert (result["model"], result["version"], result["route"], result["entity_id"]) == (
        MODEL,
        "1",
        "champion",
        "C00001",
    )
    assert abs(result["probabilities"]["true"] - trained("1").reference(instances(1))[0, 1]) < 1e-12
    body = batch.json()
    assert body["model"] == MODEL and [r["entity_id"] for r in body["results"]] == [
        f"C{i:05d}" for i in range(1, 6)
    ]
    assert len({r["request_id"] for r in body["results"]} | {result["request_id"]}) == 6
    assert log.logged == 6


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_request"),
        (b'{"rows": []}', 400, "invalid_request"),
        (b'{"instances": {}}', 400, "invalid_request"),
        (b'{"instances": []}', 400, "invalid_request"),
        (orjson.dumps({"instances": [{}] * 101}), 413, "too_large"),
        (b'{"instance": {"student": "No", "balance": -1}}', 422, "invalid_instance"),
        (b'{"instance": {"student": "No", "balance": 1}, "explain": "yes"}', 400, "invalid_request"),
    ],
)
async def test_malformed_requests_get_precise_errors(
    tmp_path: Path, body: bytes, status: int, code: str
) -> None:
    app, log = make_app(tmp_path)
    async with client(app) as http:
        response = await http.post(URL, content=body)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code and response.json()["error"]["message"]
    assert log.logged == 0


async def test_explanations_have_their_own_instance_limit_and_say_why_a_version_has_none(
    tmp_path: Path,
) -> None:
    app, log = make_app(tmp_path)
    app.explain_max_instances = 2
    async with client(app) as http:
        refused = await http.post(URL, json={"instances": instances(3), "explain": True})
        answered = await http.post(URL, json={"instances": instances(2), "explain": True})
        oip_refused = await http.post(
            f"/v2/models/{MODEL}/infer",
            json={
                "parameters": {"explain": True},
                "inputs": [{"name": "balance", "datatype": "FP64", "shape": [3], "data": [1.0, 2.0, 3.0]}],
            },
        )
    assert refused.status_code == 413 and refused.json()["error"]["code"] == "too_large"
    assert "3 instances to explain" in refused.json()["error"]["message"]
    assert oip_refused.status_code == 413 and "3 instances to explain" in oip_refused.json()["error"]
    # The test models were exported without the training reference: scored, with the reason instead.
    results = answered.json()["results"]
    assert answered.status_code == 200 and all("explanation" not in r for r in results)
    assert all("tollgate.explanation" in r["explanation_error"] for r in results)
    assert log.logged == 2


async def test_contract_violations_are_listed(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    async with client(app) as http:
        response = await http.post(
            URL, json={"instances": [instances(1)[0], {"student": "No", "balance": -1}]}
        )
    error = response.json()["error"]
    assert error["message"] == "instance 1: balance -1 is below the minimum 0"
    assert error["violations"] == [
        {
            "field": "balance",
            "rule": "minimum",
            "message": "balance -1 is below the minimum 0",
            "value": -1,
            "instance": 1,
        }
    ]


async def test_unknown_model_wrong_method_and_other_paths(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    async with client(app) as http:
        assert (await http.post("/v1/models/nope/score", json={"instance": {}})).status_code == 404
        wrong = await http.get(URL)
        assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
        assert (await http.post(f"/v1/models/{MODEL}/explain", json={})).status_code == 404
        assert (await http.get("/healthz")).json() == {"status": "ok"}


async def test_too_large_is_refused_before_the_body_is_read(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path, max_body=1000)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body must not be read")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": URL, "headers": [(b"content-length", b"5000000")]}
    await app(scope, receive, send)
    assert sent[0]["status"] == 413 and b"at most 1000" in sent[1]["body"]
    async with client(app) as http:  # and a chunked body that grows past the limit while it is read

        async def chunks():  # type: ignore[no-untyped-def]
            for _ in range(20):
                yield b" " * 100

        assert (await http.post(URL, content=chunks())).status_code == 413


async def test_api_keys(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path, auth=True)
    body = {"instance": instances(1)[0]}
    async with client(app) as http:
        missing = await http.post(URL, json=body)
        assert missing.status_code == 401 and "missing API key" in missing.json()["error"]["message"]
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert (await http.post(URL, json=body, headers={"X-API-Key": "guess"})).status_code == 401
        assert (await http.post(URL, json=body, headers={"Authorization": "Basic abc"})).status_code == 401
        forbidden = await http.post(URL, json=body, headers={"Authorization": "Bearer auditor-key"})
        assert forbidden.status_code == 403 and "roles auditor" in forbidden.json()["error"]["message"]
        operator = await http.post(URL, json=body, headers={"X-API-Key": "operator-key"})
        assert operator.status_code == 403  # operators run the platform; they do not score
        metadata = await http.get(f"/v2/models/{MODEL}", headers={"X-API-Key": "operator-key"})
        assert metadata.status_code == 200  # but may read a model's metadata
        assert (await http.get("/metrics", headers={"X-API-Key": "client-key"})).status_code == 403
        assert (await http.get("/metrics", headers={"X-API-Key": "operator-key"})).status_code == 200
        assert (await http.get("/metrics")).status_code == 401
        assert (
            await http.post(URL, json=body, headers={"Authorization": "Bearer client-key"})
        ).status_code == 200
        assert (await http.post(URL, json=body, headers={"X-API-Key": "client-key"})).status_code == 200
        assert (await http.get("/v2/health/ready")).status_code == 200  # probes need no key
        assert (await http.get(f"/v2/models/{MODEL}")).status_code == 401


async def test_oip_health_and_metadata(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path, route=ModelRoute(MODEL, serving("1"), serving("2"), canary_weight=0.1))
    async with client(app) as http:
        assert (await http.get("/v2")).json()["extensions"] == ["binary_tensor_data"]
        assert (await http.get("/v2/health/live")).json() == {"live": True}
        assert (await http.get("/v2/health/ready")).json() == {"ready": True}
        assert (await http.get(f"/v2/models/{MODEL}/ready")).json() == {
            "name": MODEL,
            "ready": True,
            "version": "1",
        }
        assert (await http.get(f"/v2/models/{MODEL}/versions/7/ready")).status_code == 400
        assert (await http.get("/v2/models/nope/ready")).status_code == 404
        metadata = (await http.get(f"/v2/models/{MODEL}")).json()
        staging = (await http.get(f"/v2/models/{MODEL}/versions/2")).json()
    assert metadata["versions"] == ["1", "2"] and metadata["parameters"]["version"] == "1"
    assert staging["parameters"]["version"] == "2"
    assert metadata["inputs"] == [
        {"name": "student", "datatype": "BYTES", "shape": [-1]},
        {"name": "balance", "datatype": "FP64", "shape": [-1]},
        {"name": "income", "datatype": "FP64", "shape": [-1]},
    ]
    assert [o["name"] for o in metadata["outputs"]] == ["prediction", "score", "probabilities"]


async def test_oip_not_ready(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path, ready="catching up on the model lifecycle")
    async with client(app) as http:
        response = await http.get("/v2/health/ready")
    assert response.status_code == 400 and response.json()["ready"] is False


def _triton_inputs(rows: list[dict[str, Any]], binary: bool) -> list[Any]:
    student = triton.InferInput("student", [len(rows)], "BYTES")
    student.set_data_from_numpy(np.array([r["student"] for r in rows], dtype=object), binary_data=binary)
    balance = triton.InferInput("balance", [len(rows), 1], "FP64")
    balance.set_data_from_numpy(np.array([[r["balance"]] for r in rows]), binary_data=binary)
    income = triton.InferInput("income", [len(rows)], "FP32")
    income.set_data_from_numpy(np.array([r["income"] for r in rows], dtype=np.float32), binary_data=binary)
    customer = triton.InferInput("customer_id", [len(rows)], "BYTES")
    customer.set_data_from_numpy(np.array([r["customer_id"] for r in rows], dtype=object), binary_data=binary)
    return [student, balance, income, customer]


@pytest.mark.parametrize("binary", [True, False])
async def test_oip_infer_with_tritonclient_encoding(tmp_path: Path, binary: bool) -> None:
    app, log = make_app(tmp_path)
    rows = instances(8)
    inputs = _triton_inputs(rows, binary)
    outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("prediction", "probabilities")]
    body, json_size = triton.InferenceServerClient.generate_request_body(
        inputs, outputs=None if binary else outputs, request_id="abc"
    )
    headers = {"Inference-Header-Content-Length": str(json_size)} if json_size is not None else {}
    async with client(app) as http:
        response = await http.post(f"/v2/models/{MODEL}/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    header_length = response.headers.get("inference-header-content-length")
    assert (header_length is not None) == binary
    result = triton.InferenceServerClient.parse_response_body(
        response.content, header_length=int(header_length) if header_length else None
    )
    reference = trained("1").reference(
        [{**r, "income": float(np.float32(r["income"]))} for r in rows]
    )  # FP32 input, as sent
    np.testing.assert_allclose(result.as_numpy("probabilities"), reference, atol=1e-9)
    assert result.as_numpy("prediction").tolist() == [bool(p) for p in reference.argmax(axis=1)]
    response_json = result.get_response()
    assert response_json["model_version"] == "1" and response_json["id"] == "abc"
    assert (
        response_json["parameters"]["route"] == "champion"
        and len(response_json["parameters"]["request_ids"]) == 8
    )
    if binary:
        assert result.as_numpy("score").shape == (8,)
    assert log.logged == 8


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"inputs": []}, "non-empty 'inputs'"),
        (
            {"inputs": [{"name": "balance", "shape": [2], "datatype": "FP64", "data": [1.0]}]},
            "the data has 1",
        ),
        (
            {"inputs": [{"name": "balance", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}]},
            "one value",
        ),
        (
            {"inputs": [{"name": "balance", "shape": [1], "datatype": "FP16", "data": [1.0]}]},
            "unsupported datatype",
        ),
        (
            {
                "inputs": [
                    {"name": "balance", "shape": [1], "datatype": "FP64", "data": [1.0]},
                    {"name": "student", "shape": [2], "datatype": "BYTES", "data": ["No", "No"]},
                ]
            },
            "an earlier input",
        ),
        (
            {
                "inputs": [
                    {"name": "balance", "shape": [1], "datatype": "FP64", "data": [1.0]},
                    {"name": "student", "shape": [1], "datatype": "BYTES", "data": ["No"]},
                ],
                "outputs": [{"name": "shap"}],
            },
            "unknown output",
        ),
        (
            {
                "inputs": [
                    {"name": "balance", "shape": [1], "datatype": "FP64", "data": [-1.0]},
                    {"name": "student", "shape": [1], "datatype": "BYTES", "data": ["No"]},
                ]
            },
            "below the minimum",
        ),
    ],
)
async def test_oip_errors(tmp_path: Path, document: dict[str, Any], message: str) -> None:
    app, _ = make_app(tmp_path)
    async with client(app) as http:
        response = await http.post(f"/v2/models/{MODEL}/infer", json=document)
    assert response.status_code == (422 if "minimum" in message else 400)
    assert message in response.json()["error"]


async def test_openapi_documents_the_scoring_routes(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    async with client(app) as http:
        document = (await http.get("/openapi.json")).json()
    for path in (
        "/v1/models/{name}/score",
        "/v2/models/{name}/infer",
        "/v2/health/ready",
        "/healthz",
        "/metrics",
    ):
        assert path in document["paths"]
    assert {"ScoreResult", "InferenceRequest", "ErrorResponse"} <= set(document["components"]["schemas"])
    assert set(document["components"]["securitySchemes"]) == {"apiKey", "bearer"}
