"""Waiting on a running system in tests: poll a condition until a deadline (never a sleep standing in for
it), and fail naming what was awaited and the last thing seen."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx


async def eventually(
    check: Callable[[], Awaitable[Any]],
    *,
    timeout: float = 60,
    interval: float = 0.3,
    what: str = "the condition",
) -> Any:
    """Await ``check()`` every ``interval`` seconds until it returns something truthy, and return that;
    AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        last = await check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}: last {str(last)[:1500]}")
        await asyncio.sleep(interval)


async def get_until(
    client: httpx.AsyncClient,
    path: str,
    found: Callable[[Any], Any],
    *,
    timeout: float = 60,
    interval: float = 0.5,
) -> Any:
    """GET ``path`` until ``found(its JSON)`` is truthy and return that; an answer other than 200 counts as
    not yet. The AssertionError after ``timeout`` shows the last body."""
    seen: list[Any] = [None]

    async def check() -> Any:
        response = await client.get(path)
        if response.status_code != 200:
            seen[0] = f"{response.status_code} {response.text}"
            return None
        seen[0] = response.json()
        return found(seen[0])

    try:
        return await eventually(check, timeout=timeout, interval=interval, what=path)
    except AssertionError:
        raise AssertionError(
            f"{path}: not found within {timeout:g} s; last body: {str(seen[0])[:1500]}"
        ) from None
