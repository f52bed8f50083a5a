"""The scorer's lifecycle follower on the real broker: records on ``models.lifecycle`` that are not lifecycle
events land in ``dlq.scorer`` with their headers, the fold goes on (the scorer serves what the valid events
say, and follows the next one), and nothing stalls."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.e2e.test_scorer import SCORE, Launch, announce, metric, start_scorer
from tests.kafka_helpers import collect
from tests.polling import eventually
from tests.unit.scorer.support import instances, lifecycle_event
from tollgate_core.topics import Topics


async def test_lifecycle_poison_is_dead_lettered_and_the_follower_goes_on(
    services: Launch, namespace: str, bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics(namespace)
    await announce(
        bootstrap,
        namespace,
        b"{not json",
        lifecycle_event("1", production="1"),
        b'{"event_id": "not an envelope"}',
    )
    _, base = await start_scorer(services, tmp_path)  # ready: caught up despite the two bad records

    dead = await collect(bootstrap, topics.dlq("scorer"), expect=2, timeout=60, settle=1.0)
    assert sorted(r.value for r in dead) == [b'{"event_id": "not an envelope"}', b"{not json"]
    for record in dead:
        headers = dict(record.headers)
        assert headers["tollgate-dlq-source-topic"] == topics.models_lifecycle.encode()
        assert headers["tollgate-dlq-service"] == b"scorer"
        assert headers["tollgate-dlq-error-type"] == b"ValidationError"
        assert headers["tollgate-dlq-source-offset"] in (b"0", b"2")
        assert headers["tollgate-dlq-attempt"] == b"1"
    assert await metric(base, 'tollgate_scorer_lifecycle_events_total{valid="false"}') == 2

    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        served = (await http.post(SCORE, json={"instance": instances(1)[0]})).json()
        assert served["version"] == "1"
        await announce(bootstrap, namespace, lifecycle_event("2", production="2"))

        async def serves_v2() -> bool:
            return bool((await http.post(SCORE, json={"instance": instances(1)[0]})).json()["version"] == "2")

        await eventually(serves_v2, timeout=60, what="version 2 served")
    assert await metric(base, 'tollgate_scorer_lifecycle_events_total{valid="true"}') == 2
