"""``tollgate dlq list | show | redrive``: the services' dead-letter queues, through the audit-log's operator
API (``TOLLGATE_AUDIT_URL``, default http://127.0.0.1:8084) with an API key (``TOLLGATE_API_KEY``; role
``operator`` to redrive, ``operator`` or ``auditor`` to read). The API, not this command, decides who you
are: the audit trail names the key's principal."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from tollgate_cli.common import call, console, group
from tollgate_cli.common import table as cli_table

DEFAULT_AUDIT_URL = "http://127.0.0.1:8084"
TIMEOUT_S = 60.0

dlq_app = group("dlq", "Dead-letter queues: pending records per service, one record, redrive.")

AuditUrl = Annotated[
    str, typer.Option("--audit-url", envvar="TOLLGATE_AUDIT_URL", help="Base URL of the audit-log API.")
]
ApiKey = Annotated[str, typer.Option("--api-key", envvar="TOLLGATE_API_KEY", help="Your API key.")]
Service = Annotated[str, typer.Argument(help="The service whose DLQ, e.g. validator.")]


def _records_table(title: str, records: list[dict[str, Any]]) -> Table:
    table = cli_table(title, ("partition/offset", "failed at", "attempt", "source", "error"))
    for r in records:
        source = f"{r['source_topic']} {r['source_partition']}/{r['source_offset']}"
        error = f"{r['error_type']}: {r['error']}"
        table.add_row(
            f"{r['partition']}/{r['offset']}", r["failed_at"][:19], str(r["attempt"]), source, error[:120]
        )
    return table


@dlq_app.command("list")
def list_dlq(
    service: Annotated[str | None, typer.Argument(help="A service: its pending records.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many records.")] = 100,
    everything: Annotated[bool, typer.Option("--all", help="Also records already redriven.")] = False,
    audit_url: AuditUrl = DEFAULT_AUDIT_URL,
    api_key: ApiKey = "",
) -> None:
    """Without a service: every DLQ's pending count and oldest age. With one: its records."""
    if service is None:
        table = cli_table("dead-letter queues", ("service", "pending", "oldest", "topic"))
        for q in call("GET", audit_url, "/v1/dlq", key=api_key, timeout=TIMEOUT_S):
            age = q["oldest_age_s"]
            table.add_row(q["service"], str(q["pending"]), "" if age is None else f"{age:.0f} s", q["topic"])
        console.print(table)
        return
    params: dict[str, Any] = {"limit": limit, "all": everything}
    records = call("GET", audit_url, f"/v1/dlq/{service}", key=api_key, timeout=TIMEOUT_S, params=params)
    console.print(_records_table(f"dlq.{service}", records))


@dlq_app.command("show")
def show(
    service: Service,
    partition: Annotated[int, typer.Argument(help="DLQ partition.")],
    offset: Annotated[int, typer.Argument(help="DLQ offset.")],
    audit_url: AuditUrl = DEFAULT_AUDIT_URL,
    api_key: ApiKey = "",
) -> None:
    """One record: where it came from, why it failed, its headers (and value, if your role sees values)."""
    record = call("GET", audit_url, f"/v1/dlq/{service}/{partition}/{offset}", key=api_key, timeout=TIMEOUT_S)
    console.print_json(orjson.dumps(record).decode())


@dlq_app.command("redrive")
def redrive(
    service: Service,
    reason: Annotated[str, typer.Option("--reason", help="Why: recorded in the audit trail.")],
    partition: Annotated[int | None, typer.Option(help="Only this DLQ partition.")] = None,
    offset: Annotated[int | None, typer.Option(help="Only the record at this offset.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many pending records.")] = 1000,
    audit_url: AuditUrl = DEFAULT_AUDIT_URL,
    api_key: ApiKey = "",
) -> None:
    """Send pending records (or one) back to their source topics with their attempt count."""
    body: dict[str, Any] = {"reason": reason, "limit": limit, "partition": partition, "offset": offset}
    done = call("POST", audit_url, f"/v1/dlq/{service}/redrive", key=api_key, timeout=TIMEOUT_S, json=body)
    console.print(_records_table(f"redriven from dlq.{service}", done["records"]))
    console.print(f"{done['redriven']} record(s) redriven; audit event {done['operation_event_id']}")
