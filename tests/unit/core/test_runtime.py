"""The consumer runtime against the in-memory broker; tests/integration/test_runtime.py runs the same
cases against the real Kafka."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest

from tests.fake_kafka import FakeBroker
from tests.runtime_cases import CASES, Record


class FakeHarness:
    bootstrap = "fake:9092"

    def __init__(self) -> None:
        self.broker = FakeBroker()

    async def topic(self, name: str, partitions: int = 1, max_bytes: int | None = None) -> str:
        self.broker.create_topic(name, partitions, max_bytes or 1_048_576)
        return name

    async def produce(self, topic: str, values: Sequence[bytes]) -> None:
        for value in values:
            self.broker.append(topic, 0, (None, value, []))

    async def read(self, topic: str, expect: int) -> list[Record]:
        deadline = time.monotonic() + 10
        while len(self.broker.records(topic)) < expect and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self.broker.records(topic)

    def factories(self) -> dict[str, Any]:
        return {"consumer_factory": self.broker.consumer, "producer_factory": self.broker.producer}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
async def test_runtime_on_the_fake_broker(case: Any) -> None:
    await case(FakeHarness())
