"""Running a service process: its HTTP server and its Kafka loops in one event loop, stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import uvicorn

log = logging.getLogger(__name__)


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


async def run_service(
    app: Any,
    *,
    host: str,
    port: int,
    loops: list[Callable[[], Coroutine[Any, Any, None]]],
    on_stop: Callable[[], Awaitable[None]] | None = None,
    server: Callable[[Any, str, int], Any] | None = None,
) -> None:
    """Serve ``app`` and run each background loop; when the server stops (SIGINT/SIGTERM) or a loop dies,
    stop everything. A loop that fails takes the process down (non-zero exit) rather than limping on.

    ``server`` replaces uvicorn: it is called as ``server(app, host, port)`` and returns a server with a
    ``serve()`` coroutine that returns once its ``should_exit`` attribute is set."""
    if server is None:
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False, lifespan="on"
        )
        http: Any = uvicorn.Server(config)
    else:
        http = server(app, host, port)
    _exit_on_signals(http)
    tasks = [asyncio.create_task(loop(), name=loop.__name__) for loop in loops]
    serving = asyncio.create_task(http.serve(), name="http")
    failure: BaseException | None = None
    try:
        done, _ = await asyncio.wait([serving, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not serving and not task.cancelled() and task.exception() is not None:
                failure = task.exception()
                log.error("background loop %s failed: %r", task.get_name(), failure)
    finally:
        http.should_exit = True
        if on_stop is not None:
            await on_stop()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await serving
    if failure is not None:
        raise SystemExit(1)


def _exit_on_signals(server: Any) -> None:
    """Make SIGTERM/SIGINT stop the service through ``on_stop``.

    uvicorn catches these signals while it serves, then restores the handlers it found and raises the
    caught signal again. With Python's default handlers still in place, that re-raise ends the process (or
    raises KeyboardInterrupt) before ``on_stop`` runs, so nothing is flushed or closed. Handlers that only
    ask the server to exit are installed first; the re-raised signal then lands on them.
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def request_exit(signum: int, frame: Any) -> None:
        server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, request_exit)
