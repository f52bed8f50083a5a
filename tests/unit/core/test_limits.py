"""Body limits of every FastAPI service (``tollgate_core.limits``), over a real socket with uvicorn as the
services run it: 413 before the body is read, chunked bodies counted as they come, deep JSON refused."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from tests.conftest import free_port
from tollgate_core.http import create_http_app
from tollgate_core.limits import BodyLimits, json_depth


class Item(BaseModel):
    name: str
    tags: Any = None


def make_app(limits: BodyLimits | None) -> Any:
    app = create_http_app(
        title="t",
        version="1",
        description="d",
        registry=CollectorRegistry(),
        checks={},
        keys=None,
        auth_required=False,
        limits=limits,
    )

    @app.post("/items")
    async def items(item: Item) -> dict[str, str]:
        return {"name": item.name}

    return app


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[int]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b"1", 0),
        (b"{}", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b'{"a": "[[[[[[{{{{"}', 1),  # brackets in strings are text
        (b'["\\"[[["]', 1),  # an escaped quote does not end the string
        (b"[" * 5000, 5000),
    ],
)
def test_json_depth(body: bytes, depth: int) -> None:
    assert json_depth(body) == depth


async def test_a_declared_oversize_body_is_413_before_it_is_sent() -> None:
    async with serving(make_app(BodyLimits(max_body_bytes=1000))) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /items HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 5000000\r\nExpect: 100-continue\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.close()
    assert head.startswith(b"HTTP/1.1 413") and b"100 Continue" not in head


async def test_chunked_bodies_are_counted_as_they_arrive() -> None:
    async def chunks(n: int) -> AsyncIterator[bytes]:
        for _ in range(n):
            yield b"x" * 400

    limits = BodyLimits(max_body_bytes=1000)
    async with (
        serving(make_app(limits)) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        json_chunked = await http.post(
            "/items", content=chunks(10), headers={"content-type": "application/json"}
        )
        text_chunked = await http.post("/items", content=chunks(10), headers={"content-type": "text/plain"})
        ok = await http.post("/items", json={"name": "a"})
    assert json_chunked.status_code == 413 and "exceeds 1000 bytes" in json_chunked.json()["detail"]
    assert text_chunked.status_code == 413
    assert ok.status_code == 200 and ok.json() == {"name": "a"}


async def test_deep_json_is_a_400_not_a_500() -> None:
    deep = b'{"name": "a", "tags": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    async with (
        serving(make_app(None)) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        refused = await http.post("/items", content=deep, headers={"content-type": "application/json"})
        shallow = await http.post("/items", json={"name": "a", "tags": [[1, [2]]]})
    assert refused.status_code == 400
    assert refused.json()["detail"] == "the JSON body nests 50001 levels deep; at most 32 are accepted"
    assert shallow.status_code == 200


async def test_a_nul_byte_in_path_or_query_is_a_400() -> None:
    transport = httpx.ASGITransport(app=make_app(None))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        query = await http.get("/healthz?model=a%00b")
        path = await http.get("/items/%00")
        fine = await http.get("/healthz?model=a%2500b")  # a literal "%00" in a value is text, not NUL
    assert query.status_code == 400 and "query string contains a NUL byte" in query.json()["detail"]
    assert path.status_code == 400 and "path contains a NUL byte" in path.json()["detail"]
    assert fine.status_code == 200


async def test_a_route_may_have_a_larger_limit_than_the_service() -> None:
    limits = BodyLimits(max_body_bytes=1000, routes=((r"/uploads/[^/]+", 5000),))
    app = make_app(limits)

    @app.post("/uploads/{name}")
    async def upload(name: str, item: Item) -> dict[str, str]:
        return {"name": name}

    big = {"name": "a", "tags": "x" * 3000}
    async with (
        serving(app) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        on_route = await http.post("/uploads/m", json=big)
        elsewhere = await http.post("/items", json=big)
        beyond = await http.post("/uploads/m", json={"name": "a", "tags": "x" * 6000})
        deeper = await http.post("/uploads/m/more", json=big)
    assert on_route.status_code == 200 and on_route.json() == {"name": "m"}
    assert elsewhere.status_code == 413 and beyond.status_code == 413
    assert deeper.status_code == 413  # the pattern matches the whole path only
    assert limits.limit_for("/uploads/m") == 5000 and limits.limit_for("/items") == 1000
