"""``python -m tollgate_monitor``: run the monitor service."""

from __future__ import annotations

import asyncio

from tollgate_core.service import configure_logging, run_service
from tollgate_monitor.api import create_app
from tollgate_monitor.app import Monitor
from tollgate_monitor.settings import MonitorSettings


async def main() -> None:
    settings = MonitorSettings()
    settings.require_secrets()
    configure_logging(settings.log_level)
    monitor = await Monitor.create(settings)
    await run_service(
        create_app(monitor),
        host=settings.http_host,
        port=settings.http_port,
        loops=monitor.loops(),
        on_stop=monitor.stop,
    )


if __name__ == "__main__":
    asyncio.run(main())
