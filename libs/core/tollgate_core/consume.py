"""Read the platform's topics with a Kafka client properties file, like ``kcat -F FILE``:

    tollgate consume -F .local/kafka/client.properties -L
    tollgate consume -F .local/kafka/client.properties tollgate.models.lifecycle.v1

The file uses librdkafka/Java property names (``bootstrap.servers``, ``security.protocol``, ``sasl.mechanism``,
``sasl.username``, ``sasl.password``); the local stack writes one for the operator principal. Messages are
printed one per line (value as text) from the beginning of each topic; without ``-f`` it stops at the end.
No group is joined and nothing is committed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tollgate_core.kafka_auth import (
    ENV_PASSWORD,
    ENV_SASL_MECHANISM,
    ENV_SECURITY_PROTOCOL,
    ENV_USERNAME,
    kafka_security,
)


def read_properties(path: Path) -> dict[str, str]:
    props: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "!")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        props[key.strip()] = value.strip()
    return props


def client_args(props: dict[str, str]) -> dict[str, Any]:
    """aiokafka arguments from librdkafka/Java client properties."""
    bootstrap = props.get("bootstrap.servers") or props.get("metadata.broker.list")
    if not bootstrap:
        raise SystemExit("the properties file names no bootstrap.servers")
    security = kafka_security(
        {
            ENV_SECURITY_PROTOCOL: props.get("security.protocol", "PLAINTEXT").upper(),
            ENV_SASL_MECHANISM: props.get("sasl.mechanism", ""),
            ENV_USERNAME: props.get("sasl.username", ""),
            ENV_PASSWORD: props.get("sasl.password", ""),
        }
    )
    return {"bootstrap_servers": bootstrap, **security}


async def list_topics(args: dict[str, Any]) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**args)
    await admin.start()
    try:
        return sorted(await admin.list_topics())
    finally:
        await admin.close()


async def consume(args: dict[str, Any], topics: list[str], follow: bool, out: Any = sys.stdout) -> int:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        *topics, **args, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    printed = 0
    try:
        ends = await consumer.end_offsets(list(consumer.assignment()))
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for rec in records:
                    out.write((rec.value or b"").decode("utf-8", "replace") + "\n")
                    printed += 1
            if not follow and all([await consumer.position(tp) >= end for tp, end in ends.items()]):
                return printed
    finally:
        await consumer.stop()
