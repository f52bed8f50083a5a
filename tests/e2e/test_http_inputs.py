"""Inputs that reached PostgreSQL and came back as 500s, against the real service processes: a NUL byte
(PostgreSQL text cannot hold one) in a query parameter or a path segment is a 400 naming where it was."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.conftest import wait_http_ok

CASES = {
    "trainer": ["/v1/runs?model=%00", "/v1/runs?model=a%00b&limit=3"],
    "monitor": [
        "/v1/models/credit-default-risk/drift?version=%00",
        "/v1/models/%00/drift",
        "/v1/models/%00/performance",
        "/v1/alerts?model=%00",
    ],
}


@pytest.mark.parametrize("service", sorted(CASES))
async def test_a_nul_byte_in_the_url_is_a_400_not_a_500(services: Any, service: str) -> None:
    proc = services(service)
    base = f"http://127.0.0.1:{proc.port}"
    await wait_http_ok(f"{base}/readyz", proc=proc, timeout=90)
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        answers = await asyncio.gather(*(http.get(url) for url in CASES[service]))
        healthy = await http.get("/healthz")
    for url, answer in zip(CASES[service], answers, strict=True):
        assert answer.status_code == 400, (url, answer.status_code, answer.text)
        assert "NUL" in answer.json()["detail"], answer.text
    assert healthy.status_code == 200
