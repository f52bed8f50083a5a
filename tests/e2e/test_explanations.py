"""Per-decision explanations from the running scorer, against the real broker.

Two versions, fitted in the test with the trainer's pipeline and exporter (so their artifacts carry the
training reference), served by a real scorer process: a logistic regression whose catalog entry asks for
reason codes (``explanations: {top_k: 2}``) and a random forest whose entry does not. Asked with
``explain: true`` (JSON) or ``parameters.explain`` (OIP), both return every feature's attribution; the
inference-log events of the first carry its top two reason codes whether or not the client asked, those
of the second carry none. Over Kafka, a ``scoring.requests`` event with ``explain: true`` gets the same
explanation in its ``scoring.results`` event.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np
import orjson
import yaml

from tests.e2e.test_scorer import Launch, log_events
from tests.kafka_helpers import collect, produce
from tests.unit.scorer.support import CONTRACT, instances
from tollgate_core.artifacts import DirectoryArtifactStore, sha256_digest
from tollgate_core.lifecycle import LifecycleEvent
from tollgate_core.paths import schemas_dir
from tollgate_core.scoring import ScoringResultEvent
from tollgate_demo.datasets import load_islp_default
from tollgate_trainer.explanation import explanation_spec
from tollgate_trainer.export import export_onnx
from tollgate_trainer.features import FeatureLayout, LabelEncoding, raw_frame
from tollgate_trainer.pipeline import build_pipeline

LINEAR = "credit-default-risk"
FOREST = "credit-default-forest"
FAMILIES = {LINEAR: "logistic_regression", FOREST: "random_forest"}


@cache
def artifact(model: str) -> bytes:
    raw = raw_frame(CONTRACT, load_islp_default()[:4000])
    labels = raw[CONTRACT.label.name].tolist()
    encoding = LabelEncoding.fit(CONTRACT.label, labels, CONTRACT.label.positive_class)
    layout = FeatureLayout.from_contract(CONTRACT)
    frame = layout.model_frame(raw)
    family = FAMILIES[model]
    overrides = {"n_estimators": 30, "max_depth": 6, "n_jobs": 1} if family == "random_forest" else {}
    pipeline = build_pipeline(CONTRACT, family, overrides, seed=0)  # type: ignore[arg-type]
    pipeline.fit(frame, encoding.encode(labels))
    spec = explanation_spec(pipeline, layout, frame, family)
    return export_onnx(pipeline, CONTRACT, encoding, explanation=spec).onnx


def lifecycle(model: str) -> bytes:
    onnx = artifact(model)
    digest = sha256_digest(onnx)
    event = LifecycleEvent.model_validate(
        {
            "event_id": str(uuid.uuid4()),
            "event_type": "promoted",
            "schema": "models.lifecycle.v1",
            "occurred_at": datetime.now(UTC).isoformat(),
            "producer": "registry",
            "payload": {
                "model": model,
                "version": "1",
                "transition": "promoted",
                "from_stage": None,
                "to_stage": "production",
                "reason": "test",
                "actor": "test",
                "artifact": {
                    "digest": digest,
                    "location": f"file:///artifacts/{digest}",
                    "size_bytes": len(onnx),
                    "inputs": [],
                    "outputs": [],
                },
                "contract": CONTRACT.schema_id,
                "task": "classification",
                "production_version": "1",
            },
        }
    )
    return event.model_dump_json(by_alias=True).encode()


def catalog(directory: Path) -> Path:
    """The model catalog the scorer reads: the linear model asks for two reason codes, the forest none."""
    directory.mkdir()
    base = yaml.safe_load((schemas_dir() / "models" / f"{LINEAR}.yaml").read_text())
    (directory / f"{LINEAR}.yaml").write_text(yaml.safe_dump({**base, "explanations": {"top_k": 2}}))
    forest = {**base, "model": FOREST, "training": {**base["training"], "family": "random_forest"}}
    (directory / f"{FOREST}.yaml").write_text(yaml.safe_dump(forest))
    return directory


def check_sums(explanation: dict[str, Any], tolerance: float) -> None:
    total = sum(a["contribution"] for a in explanation["attributions"])
    assert math.isclose(total, explanation["value"] - explanation["baseline"], abs_tol=tolerance)
    assert [a["feature"] for a in explanation["attributions"]] == ["balance", "income", "student"]


async def test_explanations_on_request_and_reason_codes_in_the_inference_log(
    services: Launch, namespace: str, bootstrap: str, tmp_path: Path
) -> None:
    store = DirectoryArtifactStore(tmp_path / "artifacts")
    for model in (LINEAR, FOREST):
        store.put(artifact(model))
    await produce(
        bootstrap,
        f"{namespace}.models.lifecycle.v1",
        [(model.encode(), lifecycle(model)) for model in (LINEAR, FOREST)],
    )
    proc = services(
        "scorer",
        env_extra={
            "TOLLGATE_ARTIFACT_DIR": str(tmp_path / "artifacts"),
            "TOLLGATE_MODELS_DIR": str(catalog(tmp_path / "models")),
        },
        auth_required="false",
        log_spool_dir=str(tmp_path / "spool"),
        warmup_rounds="3",
    )
    from tests.conftest import wait_http_ok

    base = f"http://127.0.0.1:{proc.port}"  # type: ignore[attr-defined]
    await wait_http_ok(f"{base}/v2/models/{FOREST}/ready", proc=proc, timeout=90)
    await wait_http_ok(f"{base}/v2/models/{LINEAR}/ready", proc=proc, timeout=30)
    rows = instances(6, start=7000)
    linear_url, forest_url = f"/v1/models/{LINEAR}/score", f"/v1/models/{FOREST}/score"
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        one = (await http.post(linear_url, json={"instance": rows[0], "explain": True})).json()
        many = (await http.post(linear_url, json={"instances": rows[1:4], "explain": True})).json()["results"]
        plain = (await http.post(linear_url, json={"instance": rows[4]})).json()
        forest = (await http.post(forest_url, json={"instances": rows[:3], "explain": True})).json()[
            "results"
        ]
        forest_plain = (await http.post(forest_url, json={"instance": rows[5]})).json()
        refused = await http.post(linear_url, json={"instance": rows[0], "explain": "yes"})
        oip = (
            await http.post(
                f"/v2/models/{LINEAR}/infer",
                json={
                    "parameters": {"explain": True},
                    "inputs": [
                        {
                            "name": "student",
                            "datatype": "BYTES",
                            "shape": [2],
                            "data": [r["student"] for r in rows[:2]],
                        },
                        {
                            "name": "balance",
                            "datatype": "FP64",
                            "shape": [2],
                            "data": [r["balance"] for r in rows[:2]],
                        },
                        {
                            "name": "income",
                            "datatype": "FP64",
                            "shape": [2],
                            "data": [r["income"] for r in rows[:2]],
                        },
                    ],
                },
            )
        ).json()
        openapi = (await http.get("/openapi.json")).json()

    components = {"components": openapi["components"]}
    jsonschema.validate(one, {**components, "$ref": "#/components/schemas/ScoreResult"})
    # Linear: exact, in log-odds; the value is the logit of the score that was answered.
    for result in [one, *many]:
        explanation = result["explanation"]
        assert explanation["method"] == "linear" and explanation["output"] == "log_odds"
        check_sums(explanation, 1e-9)
        assert math.isclose(
            explanation["value"], math.log(result["score"] / (1 - result["score"])), abs_tol=1e-6
        )
    assert one["explanation"]["attributions"][0]["value"] == rows[0]["balance"]
    assert "explanation" not in plain and "explanation" not in forest_plain
    assert refused.status_code == 400 and "explain" in refused.json()["error"]["message"]
    # Forest: sampled Shapley values in probability, adding up to score - baseline.
    for result in forest:
        explanation = result["explanation"]
        assert explanation["method"] == "sampled_shapley" and explanation["output"] == "probability"
        check_sums(explanation, 1e-9)
        assert math.isclose(explanation["value"], result["score"], abs_tol=1e-6)
    # OIP: one explanation per instance, the same as the JSON endpoint's for the same rows.
    assert len(oip["parameters"]["explanations"]) == 2
    np.testing.assert_allclose(
        [a["contribution"] for a in oip["parameters"]["explanations"][0]["attributions"]],
        [a["contribution"] for a in one["explanation"]["attributions"]],
        atol=1e-9,
    )

    # The log: the linear model's events carry its top two reason codes (asked or not), the forest's none.
    expected = 1 + 3 + 1 + 3 + 1 + 2
    events = log_events(await collect(bootstrap, f"{namespace}.inference.log.v1", expect=expected, settle=2))
    assert len(events) == expected
    linear_events = {e.payload.request_id: e.payload for e in events if e.payload.model == LINEAR}
    assert len(linear_events) == 1 + 3 + 1 + 2
    for payload in linear_events.values():
        assert payload.explanation is not None and len(payload.explanation.reasons) == 2
        magnitudes = [abs(r.contribution) for r in payload.explanation.reasons]
        assert magnitudes == sorted(magnitudes, reverse=True)
    logged = linear_events[one["request_id"]].explanation
    assert logged is not None
    top = sorted(one["explanation"]["attributions"], key=lambda a: -abs(a["contribution"]))[:2]
    assert [(r.feature, r.contribution) for r in logged.reasons] == [
        (a["feature"], a["contribution"]) for a in top
    ]
    assert linear_events[plain["request_id"]].explanation is not None  # the catalog asks, not the client
    assert all(e.payload.explanation is None for e in events if e.payload.model == FOREST)
    # The raw event omits the field where there is none (inference.log v1 readers see nothing new).
    raw = await collect(bootstrap, f"{namespace}.inference.log.v1", expect=expected, settle=0)
    forest_raw = [orjson.loads(r.value) for r in raw if orjson.loads(r.value)["payload"]["model"] == FOREST]
    assert forest_raw and all("explanation" not in e["payload"] for e in forest_raw)

    # Kafka: a request with explain gets the explanation the HTTP API answers, one without gets none.
    def request(model: str, row: dict[str, Any], explain: bool) -> tuple[bytes, bytes]:
        return row["customer_id"].encode(), orjson.dumps(
            {
                "event_id": str(uuid.uuid4()),
                "event_type": "scoring_request",
                "schema": "scoring.requests.v1",
                "occurred_at": datetime.now(UTC).isoformat(),
                "producer": "test",
                "payload": {"model": model, "instance": row} | ({"explain": True} if explain else {}),
            }
        )

    await produce(
        bootstrap,
        f"{namespace}.scoring.requests.v1",
        [request(LINEAR, rows[0], True), request(FOREST, rows[1], True), request(LINEAR, rows[2], False)],
    )
    answers = {
        (r.model, r.entity_id): r
        for r in (
            ScoringResultEvent.model_validate_json(record.value).payload
            for record in await collect(bootstrap, f"{namespace}.scoring.results.v1", expect=3)
        )
    }
    linear_kafka = answers[(LINEAR, rows[0]["customer_id"])]
    assert linear_kafka.status == "ok" and linear_kafka.explanation is not None
    assert linear_kafka.score is not None
    check_sums(linear_kafka.explanation.model_dump(mode="json"), 1e-9)
    assert math.isclose(
        linear_kafka.explanation.value,
        math.log(linear_kafka.score / (1 - linear_kafka.score)),
        abs_tol=1e-6,
    )
    np.testing.assert_allclose(  # the same row over HTTP: the same attributions
        [a.contribution for a in linear_kafka.explanation.attributions],
        [a["contribution"] for a in one["explanation"]["attributions"]],
        atol=1e-9,
    )
    forest_kafka = answers[(FOREST, rows[1]["customer_id"])]
    assert forest_kafka.explanation is not None and forest_kafka.score is not None
    assert forest_kafka.explanation.method == "sampled_shapley"
    check_sums(forest_kafka.explanation.model_dump(mode="json"), 1e-9)
    assert math.isclose(forest_kafka.explanation.value, forest_kafka.score, abs_tol=1e-6)
    unexplained = answers[(LINEAR, rows[2]["customer_id"])]
    assert unexplained.status == "ok" and unexplained.explanation is None
