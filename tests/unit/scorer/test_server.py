"""The scorer's own HTTP/1.1 server over real sockets: scoring and operations routes, keep-alive,
pipelining in order, size limits before reading, chunked bodies, 100-continue, HEAD, malformed input,
idle timeout and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import free_port
from tests.unit.scorer.support import MODEL, instances, make_app, trained
from tollgate_scorer.http import ScoringApp
from tollgate_scorer.server import HttpServer

URL = f"/v1/models/{MODEL}/score"


@contextlib.asynccontextmanager
async def serving(app: ScoringApp, **options: Any) -> AsyncIterator[HttpServer]:
    server = HttpServer(app, "127.0.0.1", free_port(), **options)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


async def read_response(
    reader: asyncio.StreamReader, head: bool = False
) -> tuple[int, dict[str, str], bytes]:
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = b"" if head or status == 100 else await reader.readexactly(length)
    return status, headers, body


def post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
        % (
            path.encode(),
            len(body),
            extra,
            body,
        )
    )


def one_row() -> bytes:
    return orjson.dumps({"instance": instances(1)[0]})


async def test_scoring_and_operations_routes_over_http(tmp_path: Path) -> None:
    app, log = make_app(tmp_path)
    async with serving(app) as server, httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
        one = await http.post(URL, content=one_row())
        batch = await http.post(URL, json={"instances": instances(3)})
        health = await http.get("/healthz")
        missing = await http.get("/nothing-here")
        oip = await http.get("/v2/health/live")
        wrong = await http.get(URL)
        openapi = await http.get("/openapi.json")
    assert one.status_code == 200 and one.headers["content-type"] == "application/json"
    expected = trained("1").reference(instances(1))[0, 1]
    assert abs(one.json()["probabilities"]["true"] - expected) < 1e-12
    assert "date" in one.headers
    assert [r["entity_id"] for r in batch.json()["results"]] == ["C00001", "C00002", "C00003"]
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert missing.status_code == 404
    assert oip.json() == {"live": True}
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert URL.replace(MODEL, "{name}") in openapi.json()["paths"]
    assert log.logged == 4


async def test_keep_alive_and_pipelined_requests_are_answered_in_order(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    async with serving(app) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        # A scoring request, an operations request (answered by a task), and two more scoring requests,
        # written at once: the answers come back in request order.
        writer.write(
            post(URL, one_row())
            + b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
            + post(URL, orjson.dumps({"instances": instances(2)}))
            + post(URL, b"{not json")
        )
        await writer.drain()
        answers = [await read_response(reader) for _ in range(4)]
        writer.write(post(URL, one_row()))  # the connection is still open
        again = await read_response(reader)
        writer.close()
    assert [a[0] for a in answers] == [200, 200, 200, 400]
    assert orjson.loads(answers[0][2])["entity_id"] == "C00001"
    assert orjson.loads(answers[1][2])["status"] == "ok"
    assert len(orjson.loads(answers[2][2])["results"]) == 2
    assert orjson.loads(answers[3][2])["error"]["code"] == "invalid_request"
    assert again[0] == 200


async def test_a_declared_oversize_body_is_refused_before_it_is_sent(tmp_path: Path) -> None:
    app, log = make_app(tmp_path, max_body=1000)
    async with serving(app) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        # Headers only: the 413 must come without the client sending any of the 5 MB.
        writer.write(b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: 5000000\r\n\r\n" % URL.encode())
        status, headers, body = await asyncio.wait_for(read_response(reader), 5)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # then the connection is closed
        writer.close()
        # Same for a route the operations app answers.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 5000000\r\n\r\n")
        ops_status, _, _ = await asyncio.wait_for(read_response(reader), 5)
        writer.close()
    assert status == 413 and headers["connection"] == "close"
    assert orjson.loads(body)["error"]["message"] == "the body has 5000000 bytes; at most 1000 are accepted"
    assert ops_status == 413
    assert log.logged == 0


async def test_chunked_bodies_are_read_and_limited(tmp_path: Path) -> None:
    app, log = make_app(tmp_path, max_body=2000)
    row = one_row()
    chunked = b"".join(
        b"%x\r\n%s\r\n" % (len(row[i : i + 50]), row[i : i + 50]) for i in range(0, len(row), 50)
    )
    head = b"POST %s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" % URL.encode()
    async with serving(app) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(head + chunked + b"0\r\n\r\n")
        ok = await read_response(reader)
        big = b"800\r\n" + b" " * 0x800 + b"\r\n"
        writer.write(head + big + big)
        refused = await asyncio.wait_for(read_response(reader), 5)
        closed = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    assert ok[0] == 200 and orjson.loads(ok[2])["entity_id"] == "C00001"
    assert refused[0] == 413 and orjson.loads(refused[2])["error"]["code"] == "too_large"
    assert closed == b""
    assert log.logged == 1


async def test_expect_continue_head_and_connection_close(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    async with serving(app) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        body = one_row()
        writer.write(
            b"POST %s HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"
            % (URL.encode(), len(body))
        )
        interim = await asyncio.wait_for(read_response(reader), 5)
        writer.write(body)
        final = await read_response(reader)
        writer.write(b"HEAD /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n")
        head = await read_response(reader, head=True)
        writer.write(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        last = await read_response(reader)
        rest = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    assert interim[0] == 100 and final[0] == 200
    assert head[0] == 200 and head[1]["content-length"] == str(len(b'{"live":true}'))
    assert last[0] == 200 and last[1]["connection"] == "close" and last[2] == b'{"live":true}'
    assert rest == b""  # HEAD sent no body, and the server closed after the last answer


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NOT A REQUEST\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 400),
        (b"GET /v2 HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
    ],
)
async def test_malformed_requests_are_refused_and_closed(
    tmp_path: Path, request_bytes: bytes, status: int
) -> None:
    app, _ = make_app(tmp_path)
    async with serving(app) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(request_bytes)
        answer = await asyncio.wait_for(read_response(reader), 5)
        rest = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        # The server itself is fine.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            assert (await http.post(URL, content=one_row())).status_code == 200
    assert answer[0] == status and rest == b""


async def test_idle_connections_are_closed_and_shutdown_ends_serving(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    async with serving(app, idle_timeout_s=0.3) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(post(URL, one_row()))
        assert (await read_response(reader))[0] == 200
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed once idle
        writer.close()
        _, busy = await asyncio.open_connection("127.0.0.1", server.port)
    # serving() set should_exit and waited for serve() to return; the open connection was closed.
    assert not server.connections
    busy.close()


async def read_all_or_reset(reader: asyncio.StreamReader) -> bytes:
    """What is left before the server closes (a reset after the answer counts as closed)."""
    try:
        return await asyncio.wait_for(reader.read(), 10)
    except ConnectionResetError:
        return b""


async def test_an_endless_header_is_refused_431_within_a_slice_of_its_cap(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    async with serving(app, max_header_bytes=16 * 1024) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /v2 HTTP/1.1\r\nHost: t\r\nX-Big: ")
        sent = 0
        answer: tuple[int, dict[str, str], bytes] | None = None
        # The header never ends: the client keeps sending until the server answers or hangs up.
        while answer is None and sent < 64 * 1024 * 1024:
            try:
                writer.write(b"a" * 65536)
                await asyncio.wait_for(writer.drain(), 5)
            except (ConnectionResetError, BrokenPipeError):
                break
            sent += 65536
            with contextlib.suppress(TimeoutError):
                answer = await asyncio.wait_for(read_response(reader), 0.01)
        if answer is None:
            answer = await asyncio.wait_for(read_response(reader), 5)
        rest = await read_all_or_reset(reader)
        writer.close()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            assert (await http.post(URL, content=one_row())).status_code == 200
    assert answer[0] == 431 and answer[1]["connection"] == "close"
    assert b"exceed" in answer[2] and rest == b""
    assert sent < 64 * 1024 * 1024  # refused long before the client was done


async def test_a_long_request_target_is_refused_414(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    async with serving(app, max_request_line_bytes=1000) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /v2?" + b"q" * 2000 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        answer = await asyncio.wait_for(read_response(reader), 5)
        rest = await read_all_or_reset(reader)
        writer.close()
        # A target within the cap is served.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            assert (await http.get("/v2/health/live?" + "q" * 900)).status_code == 200
    assert answer[0] == 414 and rest == b""


async def test_a_slow_head_gets_408_at_the_header_deadline_and_is_closed(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    async with serving(app, header_timeout_s=0.3, idle_timeout_s=60) as server:
        connections = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(20)]
        for _, writer in connections:
            writer.write(b"G")  # one byte, then nothing: the request has begun
            await writer.drain()
        answers = [await asyncio.wait_for(read_response(r), 10) for r, _ in connections]
        rests = [await read_all_or_reset(r) for r, _ in connections]
        for _, writer in connections:
            writer.close()
        assert server.timed_out_total == 20
    assert {a[0] for a in answers} == {408} and set(rests) == {b""}


async def test_a_body_that_stops_arriving_gets_408_and_is_closed(tmp_path: Path) -> None:
    app, log = make_app(tmp_path)
    async with serving(app, body_timeout_s=0.3, header_timeout_s=60, idle_timeout_s=60) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        body = one_row()
        writer.write(post(URL, body)[: -len(body) // 2])  # headers and half the body
        answer = await asyncio.wait_for(read_response(reader), 10)
        rest = await read_all_or_reset(reader)
        writer.close()
    assert answer[0] == 408 and b"body" in answer[2] and rest == b""
    assert log.logged == 0


async def test_connections_over_the_limit_get_503_and_served_ones_keep_scoring(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    async with serving(app, max_connections=3) as server:
        served = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
        for reader, writer in served:  # established and answered before the flood
            writer.write(post(URL, one_row()))
            assert (await read_response(reader))[0] == 200
        flood = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(50)]
        for _, writer in flood:
            writer.write(post(URL, one_row()))
        refusals = [await asyncio.wait_for(read_response(r), 10) for r, _ in flood]
        rests = [await read_all_or_reset(r) for r, _ in flood]
        for reader, writer in served:  # still served, several requests each
            for _ in range(3):
                writer.write(post(URL, one_row()))
                assert (await read_response(reader))[0] == 200
        for _, writer in [*served, *flood]:
            writer.close()
        assert server.refused_total == 50
    assert {r[0] for r in refusals} == {503} and {r[1]["retry-after"] for r in refusals} == {"1"}
    assert set(rests) == {b""}


async def test_a_large_pipelined_burst_is_not_mistaken_for_a_large_head(tmp_path: Path) -> None:
    app, log = make_app(tmp_path)
    burst = b"".join(post(URL, one_row()) for _ in range(300))
    assert len(burst) > 8 * 1024 * 8
    async with serving(app, max_header_bytes=2048, max_request_line_bytes=512) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(burst)
        answers = [await asyncio.wait_for(read_response(reader), 10) for _ in range(300)]
        writer.close()
    assert {a[0] for a in answers} == {200}
    assert log.logged == 300
