"""``python -m tollgate_validator``: run the validator service."""

from __future__ import annotations

import asyncio

from tollgate_core.service import configure_logging, run_service
from tollgate_validator.app import Validator
from tollgate_validator.settings import ValidatorSettings


async def main() -> None:
    settings = ValidatorSettings()
    settings.require_secrets()
    configure_logging(settings.log_level)
    validator = await Validator.create(settings)
    await run_service(
        validator.http_app(),
        host=settings.http_host,
        port=settings.http_port,
        loops=validator.loops(),
        on_stop=validator.stop,
    )


if __name__ == "__main__":
    asyncio.run(main())
