"""``python -m tollgate_ingest``: run the ingest service."""

from __future__ import annotations

import asyncio

from tollgate_core.service import configure_logging, run_service
from tollgate_ingest.app import Ingest
from tollgate_ingest.settings import IngestSettings


async def main() -> None:
    settings = IngestSettings()
    settings.require_secrets()
    configure_logging(settings.log_level)
    ingest = await Ingest.create(settings)
    await run_service(
        ingest.http_app(),
        host=settings.http_host,
        port=settings.http_port,
        loops=ingest.loops(),
        on_stop=ingest.stop,
    )


if __name__ == "__main__":
    asyncio.run(main())
