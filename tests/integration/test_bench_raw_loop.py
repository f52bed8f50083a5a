"""The scorer benchmark's Kafka-path limit, ``tests/bench/scorer/raw_loop.py``, on the real broker.

The limit is only honest if it moves what it says: one result per request, and with ``--log`` one
``inference.log`` record per request as well, keyed by the model's name, exactly once. A loop that wrote
fewer records would pass for a faster transport.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from tests.kafka_helpers import collect, produce
from tollgate_core.topics import Topics

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = 300


async def test_the_logging_loop_writes_a_result_and_a_log_record_per_request(
    bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    topics = Topics(namespace)
    await produce(
        bootstrap,
        topics.scoring_requests,
        ((f"C-{i % 7}".encode(), b'{"request": %d}' % i) for i in range(REQUESTS)),
    )
    result, log = tmp_path / "result.json", tmp_path / "log.json"
    result.write_bytes(b'{"a result": true}')
    log.write_bytes(b'{"an inference": true}')
    argv = [sys.executable, str(ROOT / "tests" / "bench" / "scorer" / "raw_loop.py")]
    argv += ["--bootstrap", bootstrap, "--namespace", namespace, "--result", str(result)]
    argv += ["--transactional", "--log", str(log), "--log-key", "risk-lr"]
    loop = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        results = await collect(bootstrap, topics.scoring_results, expect=REQUESTS, timeout=120)
        logged = await collect(bootstrap, topics.inference_log, expect=REQUESTS, timeout=60)
    finally:
        loop.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(loop.communicate(), 30)
    assert loop.returncode == 0, output.decode(errors="replace")
    assert len(results) == REQUESTS
    assert sorted(r.key for r in results if r.key is not None) == sorted(
        f"C-{i % 7}".encode() for i in range(REQUESTS)
    )
    assert {r.value for r in results} == {result.read_bytes()}
    assert len(logged) == REQUESTS
    assert {(r.key, r.value) for r in logged} == {(b"risk-lr", log.read_bytes())}
