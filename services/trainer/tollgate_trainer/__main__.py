"""``python -m tollgate_trainer``: run the trainer service."""

from __future__ import annotations

import asyncio

from tollgate_core.service import configure_logging, run_service
from tollgate_trainer.app import Trainer
from tollgate_trainer.settings import TrainerSettings


async def main() -> None:
    settings = TrainerSettings()
    settings.require_secrets()
    configure_logging(settings.log_level)
    trainer = await Trainer.create(settings)
    await run_service(
        trainer.http_app(),
        host=settings.http_host,
        port=settings.http_port,
        loops=trainer.loops(),
        on_stop=trainer.stop,
    )


if __name__ == "__main__":
    asyncio.run(main())
