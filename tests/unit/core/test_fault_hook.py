"""The test-only fault hook of the consumer runtime: off by default (a record with the header is processed
as any other), on with TOLLGATE_FAULT_INJECTION=1 (the record is poison: dead-lettered, the rest goes on),
and refused in production."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fake_kafka import FakeBroker
from tests.polling import eventually
from tests.runtime_cases import FAST_RETRY, Record, _running
from tollgate_core.kafka import (
    FAULT_HEADER,
    FAULT_INJECTION_ENV,
    BatchSink,
    OutRecord,
    TransactionalStage,
    fault_injection_enabled,
)


def test_off_unless_asked_and_refused_in_production() -> None:
    assert not fault_injection_enabled({})
    assert not fault_injection_enabled({FAULT_INJECTION_ENV: "0", "TOLLGATE_ENV": "production"})
    assert fault_injection_enabled({FAULT_INJECTION_ENV: "1", "TOLLGATE_ENV": "test"})
    with pytest.raises(RuntimeError, match="cannot be enabled in production"):
        fault_injection_enabled({FAULT_INJECTION_ENV: "1", "TOLLGATE_ENV": "production"})


def _loaded(broker: FakeBroker) -> None:
    for name in ("in", "out", "dlq"):
        broker.create_topic(name, 1, 1_048_576)
    for i in range(6):
        headers = [(FAULT_HEADER, b"raise")] if i in (1, 4) else []
        broker.append("in", 0, (None, f"rec-{i}".encode(), headers))


def _stage(broker: FakeBroker, handler: Any) -> TransactionalStage:
    return TransactionalStage(
        name="svc",
        bootstrap="fake:9092",
        source_topics=["in"],
        group_id="g",
        transactional_id="tx",
        client_id="c",
        handler=handler,
        dlq_topic="dlq",
        retry=FAST_RETRY,
        consumer_factory=broker.consumer,
        producer_factory=broker.producer,
    )


async def _copy(records: list[Record]) -> list[OutRecord]:
    return [OutRecord("out", r.value or b"") for r in records]


@pytest.mark.parametrize("enabled", [False, True])
async def test_a_stage_dead_letters_the_marked_records_only_when_the_hook_is_on(
    enabled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOLLGATE_ENV", "test")
    if enabled:
        monkeypatch.setenv(FAULT_INJECTION_ENV, "1")
    else:
        monkeypatch.delenv(FAULT_INJECTION_ENV, raising=False)
    broker = FakeBroker()
    _loaded(broker)
    stage = _stage(broker, _copy)

    async def body() -> None:
        marked = 2 if enabled else 0
        await eventually(
            lambda: len(broker.records("out")) == 6 - marked,
            timeout=10,
            interval=0.05,
            what="the unmarked records out",
        )
        await eventually(
            lambda: len(broker.records("dlq")) == marked,
            timeout=10,
            interval=0.05,
            what="the marked records dead-lettered",
        )
        dead = broker.records("dlq")
        assert sorted(r.value for r in dead) == ([b"rec-1", b"rec-4"] if enabled else [])
        assert all(dict(r.headers)["tollgate-dlq-error-type"] == b"InjectedFault" for r in dead)

    await _running(stage, body)


async def test_a_sink_dead_letters_the_marked_records(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLGATE_ENV", "test")
    monkeypatch.setenv(FAULT_INJECTION_ENV, "1")
    broker = FakeBroker()
    _loaded(broker)
    stored: list[bytes] = []

    async def store(records: list[Record]) -> None:
        stored.extend(r.value or b"" for r in records)

    sink = BatchSink(
        name="svc-sink",
        service="svc",
        bootstrap="fake:9092",
        topics=["in"],
        group_id="g",
        client_id="c",
        handler=store,
        dlq_topic="dlq",
        retry=FAST_RETRY,
        consumer_factory=broker.consumer,
        producer_factory=broker.producer,
    )

    async def body() -> None:
        await eventually(
            lambda: len(broker.records("dlq")) == 2, timeout=10, interval=0.05, what="2 records dead-lettered"
        )
        await eventually(
            lambda: {b"rec-0", b"rec-2", b"rec-3", b"rec-5"} <= set(stored),
            timeout=10,
            interval=0.05,
            what="the unmarked records stored",
        )
        assert not {b"rec-1", b"rec-4"} & set(stored)

    await _running(sink, body)


def test_a_production_consumer_with_the_hook_on_does_not_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLGATE_ENV", "production")
    monkeypatch.setenv(FAULT_INJECTION_ENV, "1")
    with pytest.raises(RuntimeError, match="cannot be enabled in production"):
        _stage(FakeBroker(), _copy)
