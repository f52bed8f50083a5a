"""The scorer's HTTP edges against the real process (``python -m tollgate_scorer``, real broker and
database): a 64 MiB header, a flood of one-byte connections beyond the connection limit, and what they
cost in memory.

Deadlines are proven by the status a client gets, never by timing it: a head refused for its size is
answered 431 as its bytes arrive; one still incomplete at the header deadline is answered 408.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import orjson

from tests.e2e.test_scorer import Launch, announce, start_scorer
from tests.polling import eventually
from tests.unit.scorer.support import MODEL, instances, lifecycle_event
from tests.unit.scorer.test_server import read_all_or_reset, read_response

SCORE = f"/v1/models/{MODEL}/score"
HEADER_TIMEOUT_S = 3.0
MAX_CONNECTIONS = 300
FLOOD = 400
# What the scorer may grow by over this whole module's abuse (the 64 MiB header and the flood), measured
# as resident memory after a warm-up and again at the end. Before the hardening, one 64 MiB header alone
# grew it by about 116 MB.
RSS_BOUND_BYTES = 24 * 1024 * 1024


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def score_request() -> bytes:
    body = orjson.dumps({"instance": instances(1)[0]})
    return (
        b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (
            SCORE.encode(),
            len(body),
            body,
        )
    )


async def score_on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    writer.write(score_request())
    status, _, _ = await asyncio.wait_for(read_response(reader), 10)
    return status


async def send_endless_header(port: int, limit: int) -> tuple[int, int, bytes]:
    """Send one header of up to ``limit`` bytes; return the status, the bytes sent and what followed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\nX-Big: ")
    chunk = b"a" * (1024 * 1024)
    sent = 0
    answer = None
    while sent < limit and answer is None:
        try:
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), HEADER_TIMEOUT_S * 3)
        except (ConnectionResetError, BrokenPipeError):
            break
        sent += len(chunk)
        with contextlib.suppress(TimeoutError):
            answer = await asyncio.wait_for(read_response(reader), 0.001)
    if answer is None:
        answer = await asyncio.wait_for(read_response(reader), HEADER_TIMEOUT_S * 3)
    rest = await read_all_or_reset(reader)
    writer.close()
    return answer[0], sent, rest


async def test_header_caps_deadlines_and_connection_limit_on_the_real_scorer(
    services: Launch, namespace: str, bootstrap: str, tmp_path: Path
) -> None:
    await announce(bootstrap, namespace, lifecycle_event("1", production="1"))
    proc, base = await start_scorer(
        services,
        tmp_path,
        http_header_timeout_s=str(HEADER_TIMEOUT_S),
        http_max_connections=str(MAX_CONNECTIONS),
    )
    assert proc.proc is not None
    pid = proc.proc.pid
    port = int(base.rsplit(":", 1)[1])
    established = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
    for _ in range(50):  # warm-up: every code path this test uses has run before memory is measured
        assert {await score_on(r, w) for r, w in established} == {200}
    rss_before = rss(pid)

    # A 64 MiB header: refused with 431 as it arrives (a 408 would mean it was held to the deadline),
    # and the connection closed long before the client is done sending.
    status, sent, rest = await send_endless_header(port, 64 * 1024 * 1024)
    assert status == 431 and rest == b""
    assert sent < 64 * 1024 * 1024

    # A flood of one-byte connections beyond the limit: those over it get 503 at once, the others are
    # held until the header deadline and then get 408; the established connections are served throughout.
    flood: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for _ in range(FLOOD):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"P")
        flood.append((reader, writer))
    during = [await score_on(r, w) for r, w in established for _ in range(5)]
    answers = await asyncio.gather(*(asyncio.wait_for(read_response(r), 60) for r, _ in flood))
    rests = await asyncio.gather(*(read_all_or_reset(r) for r, _ in flood))
    for _, writer in flood:
        writer.close()
    statuses = [a[0] for a in answers]
    assert set(during) == {200}
    assert set(statuses) == {408, 503} and set(rests) == {b""}
    # Every connection the limit let in was held until its deadline, no more were let in than the limit.
    assert statuses.count(408) <= MAX_CONNECTIONS - len(established)
    assert statuses.count(503) >= FLOOD - (MAX_CONNECTIONS - len(established))

    # After all that: the established connections and new ones are served, and memory stayed bounded.
    assert {await score_on(r, w) for r, w in established} == {200}
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await score_on(reader, writer) == 200
    writer.close()
    for _, w in established:
        w.close()

    def within_bound() -> int | None:
        after = rss(pid)
        return after if after - rss_before <= RSS_BOUND_BYTES else None

    # Freed memory returned to the system a moment later is within bound.
    rss_after = await eventually(
        within_bound,
        timeout=10,
        interval=0.2,
        what="the scorer's RSS back within bound",
        seen=lambda: f"before {rss_before}, now {rss(pid)}",
    )
    print(f"scorer RSS before {rss_before / 2**20:.1f} MiB, after {rss_after / 2**20:.1f} MiB")
    assert rss_after - rss_before <= RSS_BOUND_BYTES, (rss_before, rss_after)
