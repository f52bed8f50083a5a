"""Requests that arrive together are scored together: a per-key queue flushed once per event-loop turn.

The HTTP server parses every connection that has bytes in one turn of the event loop (one ``epoll`` wake-up
hands the loop all ready sockets) before the loop runs its callbacks. A single-row scoring request parsed
there is submitted here instead of being scored at once; the first submission of a turn schedules one
flush with ``call_soon``, which the loop runs right after the I/O callbacks of that turn, before it polls
again. The flush hands each key's items (key: the model's name) to ``run`` in one call, in submission
order, so that one onnxruntime run answers them all.

No item waits for one that has not arrived: with nothing else parsed in its turn, an item is flushed
alone by the very next callback. ``wait_us`` (default 0, off) trades latency for batch size: the flush is
scheduled that many microseconds later instead, a bound on what any item waits. ``max_items`` bounds a
batch: a key that reaches it is flushed at once, inside ``submit``.

Measured with ``tests/bench/bench_scorer.py`` (8 connections, one row per request, server pinned to one
core): see the commit that introduced this and ``.local/bench/scorer.json``
(``tollgate`` coalescing against ``tollgate_single``, the same scorer scoring each request alone).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Coalescer(Generic[T]):
    """Collects the items submitted in one event-loop turn and hands each key's items to ``run`` together.

    ``run(key, items)`` must deal with every item (answer it or fail it); an exception it raises is logged
    and does not stop the other keys' batches.
    """

    __slots__ = ("_delay_s", "_handle", "_max_items", "_open", "_run", "batches", "items")

    def __init__(self, run: Callable[[str, list[T]], None], *, wait_us: int = 0, max_items: int = 64) -> None:
        if wait_us < 0:
            raise ValueError("wait_us is a duration: 0 or more microseconds")
        if max_items < 1:
            raise ValueError("max_items is at least 1")
        self._run = run
        self._delay_s = wait_us / 1_000_000
        self._max_items = max_items
        self._open: dict[str, list[T]] = {}
        self._handle: asyncio.Handle | asyncio.TimerHandle | None = None
        self.batches = 0  # batches handed to run
        self.items = 0  # items handed to run (items / batches: the mean batch size)

    @property
    def waiting(self) -> int:
        """Items submitted and not yet handed to ``run``."""
        return sum(map(len, self._open.values()))

    def submit(self, key: str, item: T) -> None:
        """Queue ``item`` for the current turn's batch of ``key`` (called from the event loop's thread)."""
        batch = self._open.get(key)
        if batch is None:
            self._open[key] = [item]
            if self._handle is None:
                loop = asyncio.get_running_loop()
                self._handle = (
                    loop.call_later(self._delay_s, self.flush)
                    if self._delay_s
                    else loop.call_soon(self.flush)
                )
            if self._max_items > 1:
                return
            batch = self._open[key]
        else:
            batch.append(item)
        if len(batch) >= self._max_items:
            del self._open[key]
            self._hand(key, batch)

    def flush(self) -> None:
        """Hand every open batch to ``run`` now (the scheduled callback; also usable directly)."""
        if self._handle is not None:
            self._handle.cancel()  # a no-op when this is the scheduled call itself
            self._handle = None
        while self._open:
            key = next(iter(self._open))
            self._hand(key, self._open.pop(key))

    def _hand(self, key: str, batch: list[T]) -> None:
        self.batches += 1
        self.items += len(batch)
        try:
            self._run(key, batch)
        except Exception:  # run answers its items itself; a bug there must not strand other keys' items
            log.exception("scorer: a batch of %d request(s) for %s failed", len(batch), key)
