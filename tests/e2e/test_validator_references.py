"""Every validator replica learns every training reference.

The references consumer was a consumer group: with N replicas each learned only the candidates of its share
of the partitions (until a restart reloaded them from PostgreSQL), so the statistical expectations depended
on which replica judged an event. It is a compacted follower now: every replica reads every candidate.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.auth_support import RoleKeys, header
from tests.conftest import wait_http_ok
from tests.e2e.monitor_feed import CONTRACT, candidate_event
from tests.kafka_helpers import produce
from tests.polling import get_until
from tollgate_core.events import dumps


async def test_every_replica_learns_every_reference(
    services: Any, namespace: str, bootstrap: str, api_keys: RoleKeys
) -> None:
    replicas = [services("validator"), services("validator")]
    for proc in replicas:
        await wait_http_ok(f"http://127.0.0.1:{proc.port}/readyz", proc=proc)
    # Candidates of several models, keyed by model, so they spread over the topic's partitions.
    events = [candidate_event(f"model-{i}") for i in range(6)]
    await produce(
        bootstrap, f"{namespace}.models.candidates.v1", [(e.payload.model.encode(), dumps(e)) for e in events]
    )
    for proc in replicas:
        base = f"http://127.0.0.1:{proc.port}"
        async with httpx.AsyncClient(base_url=base, timeout=10, headers=header(api_keys["viewer"])) as client:
            await get_until(
                client,
                "/v1/contracts",
                lambda body: any(c["schema"] == CONTRACT and c["reference"] for c in body),
                timeout=90,
            )
