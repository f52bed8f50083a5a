"""``python -m tollgate_registry``: run the registry service."""

from __future__ import annotations

import asyncio

from tollgate_core.service import configure_logging, run_service
from tollgate_registry.app import Registry
from tollgate_registry.settings import RegistrySettings


async def main() -> None:
    settings = RegistrySettings()
    settings.require_secrets()
    configure_logging(settings.log_level)
    registry = await Registry.create(settings)
    await run_service(
        registry.http_app(),
        host=settings.http_host,
        port=settings.http_port,
        loops=registry.loops(),
        on_stop=registry.stop,
    )


if __name__ == "__main__":
    asyncio.run(main())
