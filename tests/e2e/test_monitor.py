"""The monitor as a real process against Kafka and PostgreSQL.

A production version with a real reference profile; inference-log events in one-minute event-time windows
with drift injected from window 6; late labels joined by entity id; a SIGKILL mid-stream followed by a
replay of the whole partition (the consumer group's offsets reset to 0). Expected: every window counted
exactly once, the data-drift alert raised on the third drifted window, and one debounced training request.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from tests.auth_support import RoleKeys, header
from tests.conftest import wait_http_ok
from tests.e2e.monitor_feed import Stream, publish_versions
from tests.kafka_helpers import collect, produce
from tests.polling import eventually, get_until
from tollgate_core.alerts import AlertEvent
from tollgate_core.kafka_auth import kafka_security
from tollgate_core.lifecycle import TrainingRequestEvent

WINDOWS = 12
ROWS = 400
DRIFT_FROM = 6
MONITOR_SETTINGS = {
    "window_seconds": "60",
    "allowed_lateness_seconds": "0",
    "min_window_rows": "300",
    "min_labels": "200",
    "raise_after": "3",
    "clear_after": "3",
    "retrain_cooldown_seconds": "3600",
    "reference_wait_seconds": "30",
    "idle_close_seconds": "3600",  # event-time windows only here: the wall-clock close has its own test
}


async def reset_group(bootstrap: str, group: str, topic: str, timeout: float = 60) -> None:
    """Commit offset 0 for every partition of ``topic`` in ``group`` (once the killed member has expired):
    Kafka redelivers everything, as after losing committed offsets."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the retries below are expected, not errors
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, **kafka_security(), group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **kafka_security())
        await producer.start()
        try:
            parts = [TopicPartition(topic, p) for p in sorted(await producer.partitions_for(topic))]
        finally:
            await producer.stop()
        consumer.assign(parts)
        refused: list[KafkaError] = []

        async def committed() -> bool:
            try:
                await consumer.commit({tp: 0 for tp in parts})
            except KafkaError as exc:
                refused[:] = [exc]
                return False
            return True

        await eventually(
            committed,
            timeout=timeout,
            interval=1.0,
            what=f"offset 0 committed for {group}",
            seen=lambda: refused,
        )
    finally:
        await consumer.stop()
        logging.getLogger("aiokafka").setLevel(logging.WARNING)


async def test_drift_alert_retraining_and_restart_without_double_counting(
    services: Any, namespace: str, bootstrap: str, api_keys: RoleKeys
) -> None:
    stream = Stream.recent(WINDOWS, ROWS, DRIFT_FROM, {"credit_utilization": 1.0})
    log_topic = f"{namespace}.inference.log.v1"
    await publish_versions(bootstrap, namespace, stream.model)
    monitor = services("monitor", **MONITOR_SETTINGS)
    base = f"http://127.0.0.1:{monitor.port}"
    await wait_http_ok(f"{base}/readyz", proc=monitor)

    async with httpx.AsyncClient(base_url=base, timeout=10, headers=header(api_keys["viewer"])) as client:
        # Phase 1: windows 0-3; 0-2 are judged (3 stays open), then window 1's labels arrive in window 3.
        for window in range(4):
            await produce(bootstrap, log_topic, stream.log_events(window))
        await get_until(
            client, f"/v1/models/{stream.model}/drift", lambda b: len(b["windows"]) == 3, timeout=90
        )
        await produce(
            bootstrap, f"{namespace}.events.validated.v1", stream.label_events(1, arrive_in_window=3)
        )
        await get_until(
            client,
            f"/v1/models/{stream.model}/performance",
            lambda b: b["labels"]["1"]["labeled"] == ROWS,
            timeout=90,
        )

    # SIGKILL, then make Kafka redeliver the whole partition: the checkpoint must make the replay a no-op.
    monitor.kill()
    await reset_group(bootstrap, f"{namespace}.monitor.windows", log_topic)
    monitor = services("monitor", **MONITOR_SETTINGS)
    base = f"http://127.0.0.1:{monitor.port}"
    await wait_http_ok(f"{base}/readyz", proc=monitor)

    async with httpx.AsyncClient(base_url=base, timeout=10, headers=header(api_keys["viewer"])) as client:
        for window in range(4, WINDOWS):
            await produce(bootstrap, log_topic, stream.log_events(window))
        await produce(bootstrap, log_topic, stream.log_events(WINDOWS, count=1))  # closes the last window
        body = await get_until(
            client,
            f"/v1/models/{stream.model}/drift",
            lambda b: b if len(b["windows"]) == WINDOWS else None,
            timeout=90,
        )
        windows = body["windows"]
        assert [w["rows"] for w in windows] == [ROWS] * WINDOWS, "a window was counted twice or partly"
        assert [w["end"] for w in windows] == [stream.window_end(i) for i in range(WINDOWS)]
        drifted = [sorted(f["feature"] for f in w["features"] if f["drifted"]) for w in windows]
        assert drifted == [[]] * DRIFT_FROM + [["credit_utilization"]] * (WINDOWS - DRIFT_FROM)

        perf = (await client.get(f"/v1/models/{stream.model}/performance")).json()
        window3 = perf["windows"][3]["performance"]
        assert window3["labels"] == ROWS  # window 1's labels, joined by entity id, arrived during window 3
        assert abs(window3["metrics"]["roc_auc"] - window3["holdout"]["roc_auc"]) < 0.1

        for view in ("drift", "performance"):  # an unknown model is a 404, a version asked for or not
            for query in ("", "?version=1"):
                assert (await client.get(f"/v1/models/no-such-model/{view}{query}")).status_code == 404

        # Its own model: in the session's database, tests that ran before may have left models of theirs.
        models = (await client.get("/v1/models")).json()
        [mine] = [m for m in models if m["model"] == stream.model]
        assert [v["stage"] for v in mine["versions"]] == ["production"]
        assert {a["kind"] for a in mine["active_alerts"]} >= {"data_drift"}

    alerts = [
        AlertEvent.model_validate_json(r.value)
        for r in await collect(bootstrap, f"{namespace}.monitor.alerts.v1", expect=1, timeout=30, settle=3)
    ]
    drift_alerts = [a.payload for a in alerts if a.payload.kind.value == "data_drift"]
    assert len(drift_alerts) == 1, [a.payload.summary for a in alerts]
    raised = drift_alerts[0]
    assert (raised.state.value, raised.stage, raised.severity, raised.windows) == (
        "raised",
        "production",
        "critical",
        3,
    )
    # Caught on the third drifted window: windows 6, 7 and 8 drifted, the alert carries window 8.
    assert raised.window_end.timestamp() == stream.window_end(DRIFT_FROM + 2)
    assert [f.feature for f in raised.features] == ["credit_utilization"] and raised.features[0].effect >= 0.2
    assert len({a.event_id for a in alerts}) == len(alerts)  # no duplicate after the replay

    requests = [
        TrainingRequestEvent.model_validate_json(r.value)
        for r in await collect(bootstrap, f"{namespace}.training.requests.v1", expect=1, timeout=30, settle=3)
    ]
    assert len(requests) == 1, "training requests are debounced per model"
    request = requests[0].payload
    assert (request.model, request.contract, request.requested_by) == (
        stream.model,
        "synthetic-risk.v1",
        "monitor",
    )
    assert request.alert_id in {a.payload.alert_id for a in alerts}


async def test_a_window_closes_without_later_traffic_and_joins_labels_that_came_after_it(
    services: Any, namespace: str, bootstrap: str, api_keys: RoleKeys
) -> None:
    """Traffic stops: the last window closes once its partition has been idle for idle_close_seconds (event
    time moves on with the wall clock), with the labels that arrived after the last inference."""
    stream = Stream.recent(1, ROWS, DRIFT_FROM, {})
    await publish_versions(bootstrap, namespace, stream.model)
    idle = 20  # room for the labels to be joined first, on a loaded machine
    monitor = services("monitor", **{**MONITOR_SETTINGS, "idle_close_seconds": str(idle)})
    base = f"http://127.0.0.1:{monitor.port}"
    await wait_http_ok(f"{base}/readyz", proc=monitor)
    async with httpx.AsyncClient(base_url=base, timeout=10, headers=header(api_keys["viewer"])) as client:
        await produce(bootstrap, f"{namespace}.inference.log.v1", stream.log_events(0))
        await get_until(
            client,
            f"/v1/models/{stream.model}/performance",
            lambda b: b["labels"].get("1", {}).get("predictions") == ROWS,
            timeout=90,
        )
        assert (await client.get(f"/v1/models/{stream.model}/drift")).json()["windows"] == []
        # No more inference traffic. The labels of window 0 arrive (inside window 0's span).
        await produce(
            bootstrap, f"{namespace}.events.validated.v1", stream.label_events(0, arrive_in_window=0)
        )
        # Window 0 is judged although nothing later arrived: within its end + lateness + idle + a check.
        body = await get_until(
            client,
            f"/v1/models/{stream.model}/drift",
            lambda b: b if len(b["windows"]) == 1 else None,
            timeout=idle + 60,
        )
        assert body["windows"][0]["rows"] == ROWS and body["windows"][0]["end"] == stream.window_end(0)
        perf = (await client.get(f"/v1/models/{stream.model}/performance")).json()
        assert perf["windows"][0]["performance"]["labels"] == ROWS, perf["windows"][0]["performance"]
