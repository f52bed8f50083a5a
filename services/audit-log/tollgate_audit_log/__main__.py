"""``python -m tollgate_audit_log``: run the audit-log service."""

from __future__ import annotations

import asyncio

from tollgate_audit_log.app import AuditLog
from tollgate_audit_log.settings import AuditLogSettings
from tollgate_core.service import configure_logging, run_service


async def main() -> None:
    settings = AuditLogSettings()
    settings.require_secrets()
    configure_logging(settings.log_level)
    service = await AuditLog.create(settings)
    await run_service(
        service.http_app(),
        host=settings.http_host,
        port=settings.http_port,
        loops=service.loops(),
        on_stop=service.stop,
    )


if __name__ == "__main__":
    asyncio.run(main())
