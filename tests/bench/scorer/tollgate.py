"""The tollgate scorer as a contender: a fresh topic namespace, the artifact in the store, a promotion event.

The scorer learns its models the way it does in production: the ONNX bytes go into the content-addressed
artifact store, and a ``models.lifecycle.v1`` event (transition ``promoted``, to stage ``production``) is
produced with plain aiokafka, keyed by model name. The benchmark then waits until the scorer says the model
is ready.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from tests.kafka_helpers import produce
from tollgate_core.artifacts import DirectoryArtifactStore
from tollgate_core.events import dumps, utcnow
from tollgate_core.kafka_auth import kafka_security
from tollgate_core.lifecycle import Artifact, LifecycleEvent, LifecyclePayload, Stage, Transition
from tollgate_core.topics import Topics, current_schema_id, ensure_topics


def scorer_available() -> str | None:
    """None when ``python -m tollgate_scorer`` can run, else why not."""
    import importlib.util

    if importlib.util.find_spec("tollgate_scorer") is None:
        return "the tollgate_scorer package is not installed in the project's environment"
    if importlib.util.find_spec("tollgate_scorer.__main__") is None:
        return "tollgate_scorer has no __main__ module yet (python -m tollgate_scorer cannot run)"
    return None


async def prepare_namespace(bootstrap: str) -> str:
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, namespace)
    return namespace


def store_artifact(root: Path, onnx: bytes) -> tuple[str, str]:
    store = DirectoryArtifactStore(root)
    digest = store.put(onnx)
    return digest, store.location(digest)


def promotion_event(
    model: str, version: str, digest: str, location: str, size: int, signature: Any
) -> LifecycleEvent:
    artifact = Artifact(
        digest=digest,
        location=location,
        size_bytes=size,
        inputs=[spec.model_dump(mode="json") for spec in signature.inputs],
        outputs=[spec.model_dump(mode="json") for spec in signature.outputs],
    )
    payload = LifecyclePayload(
        model=model,
        version=version,
        transition=Transition.PROMOTED,
        from_stage=Stage.CANDIDATE,
        to_stage=Stage.PRODUCTION,
        reason="benchmark: promoted directly",
        actor="bench",
        artifact=artifact,
        contract=signature.contract,
        task=signature.task,
        production_version=version,
    )
    return LifecycleEvent(
        event_id=uuid.uuid4(),
        event_type="promoted",
        schema=current_schema_id("models.lifecycle"),
        occurred_at=utcnow(),
        producer="bench",
        payload=payload,
    )


async def publish_lifecycle(bootstrap: str, namespace: str, events: list[LifecycleEvent]) -> None:
    messages = [(event.payload.model.encode(), dumps(event)) for event in events]
    await produce(bootstrap, Topics(namespace).models_lifecycle, messages)


def scorer_env(
    *, port: int, namespace: str, artifacts: Path, logging_on: bool, bootstrap: str, instance: str
) -> dict[str, str]:
    return {
        "TOLLGATE_KAFKA_BOOTSTRAP": bootstrap,
        "TOLLGATE_TOPIC_NAMESPACE": namespace,
        "TOLLGATE_ARTIFACT_DIR": str(artifacts),
        "TOLLGATE_SCORER_HTTP_PORT": str(port),
        "TOLLGATE_SCORER_HTTP_HOST": "127.0.0.1",
        "TOLLGATE_SCORER_AUTH_REQUIRED": "false",
        "TOLLGATE_SCORER_INFERENCE_LOG": "true" if logging_on else "false",
        # Distinct replicas: the instance id names the Kafka transactional id, and two scorers sharing one
        # would fence each other.
        "TOLLGATE_SCORER_INSTANCE_ID": instance,
        "TOLLGATE_SCORER_LOG_SPOOL_DIR": str(artifacts.parent / "spool" / instance),
    }


def model_ready(base: str, name: str) -> bool:
    from tests.bench.scorer.procs import http_status

    return http_status(f"{base}/v2/models/{name}/ready")[0] == 200


def score_url(base: str, name: str) -> str:
    return f"{base}/v1/models/{name}/score"


def kafka_path_missing() -> str | None:
    import importlib.util

    if importlib.util.find_spec("tollgate_core.scoring") is None:
        return "tollgate_core.scoring (the Kafka scoring request format) does not exist yet"
    return None


async def preload_requests(
    bootstrap: str, namespace: str, model: str, rows: list[dict[str, Any]], n: int
) -> None:
    """``n`` ``scoring.requests.v1`` events for ``model``, cycling through ``rows``, keyed by entity id."""
    import orjson

    from tollgate_core.scoring import ScoringRequestEvent

    topic = Topics(namespace).scoring_requests
    occurred = utcnow().isoformat().replace("+00:00", "Z")
    key_field = next(iter(rows[0]))  # rows start with the contract's entity id

    def event(i: int) -> dict[str, Any]:
        return {
            "event_id": str(uuid.uuid4()),
            "event_type": "scoring_request",
            "schema": "scoring.requests.v1",
            "occurred_at": occurred,
            "producer": "bench",
            "payload": {"model": model, "instance": rows[i % len(rows)]},
        }

    ScoringRequestEvent.model_validate(event(0))  # the hand-built form is the schema's
    messages = ((str(rows[i % len(rows)][key_field]).encode(), orjson.dumps(event(i))) for i in range(n))
    await produce(bootstrap, topic, messages)


async def count_results(bootstrap: str, namespace: str, n: int, timeout: float) -> dict[str, Any]:
    """Read ``scoring.results.v1`` until ``n`` results and measure the scorer's rate from their timestamps.

    The scorer stamps every result of one transaction (one consumed batch) with the time it wrote them, so
    the results after the first batch, over the time from the first write to the last, are its throughput
    (consume, score, log, produce, commit), free of this reader's own lag.
    """
    from collections import Counter

    import orjson
    from aiokafka import AIOKafkaConsumer

    topic = Topics(namespace).scoring_results
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        **kafka_security(),
        group_id=f"bench-results-{uuid.uuid4().hex}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    )
    await consumer.start()
    try:
        seen = ok = 0
        stamps: Counter[int] = Counter()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while seen < n and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batch.values():
                for record in records:
                    seen += 1
                    stamps[record.timestamp] += 1
                    if orjson.loads(record.value)["payload"]["status"] == "ok":
                        ok += 1
        rate = None
        span = 0.0
        if len(stamps) >= 2 and seen >= n:
            first, last = min(stamps), max(stamps)
            span = (last - first) / 1000
            rate = (seen - stamps[first]) / span
        return {
            "events": n,
            "results": seen,
            "ok": ok,
            "writes": len(stamps),
            "seconds": span,
            "events_per_s": rate,
            "complete": seen >= n,
        }
    finally:
        await consumer.stop()


async def delete_namespace(bootstrap: str, namespace: str) -> None:
    """Drop the run's topics so that repeated runs do not pile them up on the broker."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_security())
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(f"{namespace}.")]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


def oip_binary_body(rows: list[dict[str, Any]], spec: Any) -> tuple[bytes, int]:
    """An OIP request as ``tritonclient`` sends numpy arrays: numbers, integers and booleans as binary
    tensor data (``FP64``/``INT64``/``BOOL``; a column with nulls as ``FP64`` with NaN), strings as
    ``BYTES`` JSON data, binary outputs asked for. Returns the body and its JSON header's length."""
    import numpy as np
    import orjson

    from tollgate_core.contracts import FieldType

    binary_types = {
        FieldType.NUMBER: ("FP64", np.float64),
        FieldType.INTEGER: ("INT64", np.int64),
        FieldType.BOOLEAN: ("BOOL", np.bool_),
    }
    inputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for field in (spec.entity_id, *spec.features):
        values = [row.get(field.name) for row in rows]
        if field.type not in binary_types:
            inputs.append({"name": field.name, "datatype": "BYTES", "shape": [len(rows)], "data": values})
            continue
        datatype, dtype = binary_types[field.type]
        if any(v is None for v in values):
            datatype, dtype = "FP64", np.float64
            values = [float("nan") if v is None else v for v in values]
        blob = np.asarray(values, dtype=dtype).tobytes()
        inputs.append(
            {
                "name": field.name,
                "datatype": datatype,
                "shape": [len(rows)],
                "parameters": {"binary_data_size": len(blob)},
            }
        )
        blobs.append(blob)
    head = orjson.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}})
    return head + b"".join(blobs), len(head)


def oip_binary_scores(body: bytes, header_length: int) -> list[float]:
    """The ``score`` output of a binary OIP answer."""
    import numpy as np
    import orjson

    head = orjson.loads(body[:header_length])
    offset = header_length
    for output in head["outputs"]:
        size = output["parameters"]["binary_data_size"]
        if output["name"] == "score":
            return np.frombuffer(body[offset : offset + size], dtype="<f8").tolist()  # type: ignore[no-any-return]
        offset += size
    raise ValueError("no score output in the answer")


def infer_url(base: str, name: str) -> str:
    return f"{base}/v2/models/{name}/infer"
