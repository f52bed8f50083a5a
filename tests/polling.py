"""Waiting on a running system in tests: poll a condition until a deadline (never a sleep standing in for
it), and fail naming what was awaited and the last thing seen."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

import httpx


async def eventually(
    check: Callable[[], Any],
    *,
    timeout: float = 60,
    interval: float = 0.3,
    what: str = "the condition",
    seen: Callable[[], Any] | None = None,
) -> Any:
    """Call ``check()`` (awaiting what it returns when that is awaitable) every ``interval`` seconds until it
    gives something truthy, and return that;
    AssertionError after ``timeout`` seconds, showing ``seen()`` (what the test observed so far; an
    awaitable is awaited) or else the last result of ``check``."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() >= deadline:
            shown = last if seen is None else seen()
            if inspect.isawaitable(shown):
                shown = await shown
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what}: last {str(shown)[:1500]}"
            )
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

    return await eventually(check, timeout=timeout, interval=interval, what=path, seen=lambda: seen[0])
