"""The consumer runtime against the real Kafka: the same cases as tests/unit/core/test_runtime.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.kafka_helpers import collect, produce
from tests.runtime_cases import CASES, Record
from tollgate_core.kafka_auth import kafka_security


class RealHarness:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    async def topic(self, name: str, partitions: int = 1, max_bytes: int | None = None) -> str:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, **kafka_security())
        await admin.start()
        try:
            configs = {"max.message.bytes": str(max_bytes)} if max_bytes else {}
            await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)])
        finally:
            await admin.close()
        return name

    async def produce(self, topic: str, values: Sequence[bytes]) -> None:
        await produce(self.bootstrap, topic, [(None, v) for v in values])

    async def read(self, topic: str, expect: int) -> list[Record]:
        return await collect(self.bootstrap, topic, expect=expect, timeout=60, settle=1.0)

    def factories(self) -> dict[str, Any]:
        return {}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
async def test_runtime_on_the_real_broker(case: Any, bootstrap: str) -> None:
    await case(RealHarness(bootstrap))
