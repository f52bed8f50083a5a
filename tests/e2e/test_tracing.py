"""Traces leave the services over OTLP: one client trace follows an event from the gateway through the
validator to its audit row, and an inference from the scorer to its audit row, as real processes export
them to an OTLP/HTTP receiver running in the test."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.auth_support import RoleKeys, header
from tests.conftest import ServiceProcess, wait_http_ok
from tests.e2e.test_scorer import SCORE, announce, start_scorer
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.polling import eventually
from tests.unit.scorer.support import instances, lifecycle_event

Launch = Callable[..., ServiceProcess]


def otel_env(receiver: OtlpReceiver) -> dict[str, str]:
    # Only the standard variables: the collector's address and a short batch delay so the test waits less.
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200"}


async def spans_of(
    receiver: OtlpReceiver, trace_id: str, want: Callable[[list[ReceivedSpan]], bool]
) -> list[ReceivedSpan]:
    def wanted() -> list[ReceivedSpan] | None:
        spans = receiver.of_trace(trace_id)
        return spans if want(spans) else None

    found: list[ReceivedSpan] = await eventually(
        wanted,
        timeout=90,
        interval=0.25,
        what=f"the spans of trace {trace_id}",
        seen=lambda: f"{receiver.of_trace(trace_id)}; errors {receiver.errors}",
    )
    return found


async def test_one_trace_from_gateway_and_scorer_to_audit_rows(
    services: Launch, namespace: str, bootstrap: str, tmp_path: Path, api_keys: RoleKeys
) -> None:
    with OtlpReceiver() as receiver:
        env = otel_env(receiver)
        audit = services(
            "audit-log",
            env_extra={**env, "TOLLGATE_AUDIT_LOG_SIGNING_KEY_PATH": str(tmp_path / "ed25519.pem")},
        )
        ingest = services("ingest", env_extra=env)
        validator = services("validator", env_extra=env)
        await announce(bootstrap, namespace, lifecycle_event("1", production="1"))
        _, scorer = await start_scorer(services, tmp_path, env=env)
        for proc in (audit, ingest, validator):
            await wait_http_ok(f"http://127.0.0.1:{proc.port}/readyz", proc=proc, timeout=90)  # type: ignore[attr-defined]

        # The client's own trace: its span id is the parent of the gateway's and the scorer's spans.
        trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
        traceparent = {"traceparent": f"00-{trace_id}-{client_span}-01"}
        event_id = str(uuid.uuid4())
        bad = {"customer_id": "T1", "student": "Maybe", "balance": 10.0, "income": 1.0, "default": False}
        async with httpx.AsyncClient(timeout=30) as http:
            posted = await http.post(
                f"http://127.0.0.1:{ingest.port}/v1/events",  # type: ignore[attr-defined]
                json={"events": [{"event_id": event_id, "schema": "credit-default.v1", "payload": bad}]},
                headers={
                    **traceparent,
                    **header(api_keys["producer"]),
                    "x-tollgate-producer": "tracing-test",
                },
            )
            assert posted.status_code == 202, posted.text
            scored = await http.post(
                f"{scorer}{SCORE}", json={"instance": instances(1)[0]}, headers=traceparent
            )
            assert scored.status_code == 200, scored.text

        def complete(spans: list[ReceivedSpan]) -> bool:
            names = {(s.service, s.name) for s in spans}
            audited = sum(1 for s in spans if s.service == "tollgate-audit-log")
            return (
                audited >= 2
                and {
                    ("tollgate-ingest", "gateway json"),
                    ("tollgate-ingest", "ingest event"),
                    ("tollgate-validator", "validate event"),
                    ("tollgate-scorer", "score http"),
                }
                <= names
            )

        spans = await spans_of(receiver, trace_id, complete)

    by_name = {(s.service, s.name, s.attributes.get("tollgate.audit.stream")): s for s in spans}
    gateway = by_name[("tollgate-ingest", "gateway json", None)]
    ingest_span = by_name[("tollgate-ingest", "ingest event", None)]
    validate = by_name[("tollgate-validator", "validate event", None)]
    score = by_name[("tollgate-scorer", "score http", None)]
    audit_rejected = by_name[("tollgate-audit-log", "audit record", "rejected")]
    audit_inference = by_name[("tollgate-audit-log", "audit record", "inference")]
    # One trace id for all of them (spans_of selected by it), and each hop is the child of the one before.
    assert gateway.parent_span_id == client_span and score.parent_span_id == client_span
    assert ingest_span.parent_span_id == gateway.span_id
    assert validate.parent_span_id == ingest_span.span_id
    assert audit_rejected.parent_span_id == validate.span_id
    assert audit_inference.parent_span_id == score.span_id
    assert ingest_span.attributes["tollgate.event_id"] == event_id
    assert receiver.errors == []
