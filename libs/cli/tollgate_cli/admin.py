"""``tollgate admin`` (the broker's topics and ACLs, as its super user) and ``tollgate consume`` (read topics
as any principal, from a client properties file). The work is done by :mod:`tollgate_core.topics`,
:mod:`tollgate_core.acls` and :mod:`tollgate_core.consume`; this module only reads the options and prints."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from tollgate_cli.common import console, fail, group, table
from tollgate_core.settings import DEFAULT_KAFKA_BOOTSTRAP

admin_app = group(
    "admin", "The broker's topics and ACLs, created from the topic catalog (as its super user)."
)
topics_app = group("topics", "The topic catalog's topics on the broker.")
acls_app = group("acls", "The broker ACLs the topic catalog's producers and consumers imply.")
admin_app.add_typer(topics_app, name="topics")
admin_app.add_typer(acls_app, name="acls")

Bootstrap = Annotated[
    str, typer.Option("--bootstrap", envvar="TOLLGATE_KAFKA_BOOTSTRAP", help="Kafka bootstrap servers.")
]
Namespace = Annotated[
    str, typer.Option("--namespace", envvar="TOLLGATE_TOPIC_NAMESPACE", help="Topic namespace (prefix).")
]


@topics_app.command("apply")
def topics_apply(bootstrap: Bootstrap = DEFAULT_KAFKA_BOOTSTRAP, namespace: Namespace = "tollgate") -> None:
    """Create missing topics with the catalog's partitions and configs (and every service's DLQ topic)."""
    from tollgate_core.topics import ensure_topics

    created = asyncio.run(ensure_topics(bootstrap, namespace))
    typer.echo(f"topics: {len(created)} created" + (f" ({', '.join(created)})" if created else ""))


@topics_app.command("list")
def topics_list() -> None:
    """Print the catalog: every topic version with its partitions and owner."""
    from tollgate_core.topics import Topics

    out = table("topics", ("topic", "partitions", "owner"), right=("partitions",))
    for full, spec in Topics().all_names():
        out.add_row(full, str(spec.partitions), spec.owner)
    console.print(out)


@acls_app.command("apply")
def acls_apply(bootstrap: Bootstrap = DEFAULT_KAFKA_BOOTSTRAP, namespace: Namespace = "tollgate") -> None:
    """Create the ACLs the topic catalog implies (as the super user)."""
    from tollgate_core.acls import apply_acls

    count = asyncio.run(apply_acls(bootstrap, namespace))
    typer.echo(f"acls: {count} bindings applied for namespace {namespace}")


@acls_app.command("list")
def acls_list(namespace: Namespace = "tollgate") -> None:
    """Print the ACLs the topic catalog implies, one binding a line."""
    from tollgate_core.acls import catalog_acls

    for acl in catalog_acls(namespace):
        typer.echo(str(acl))


def consume(
    properties: Annotated[
        Path, typer.Option("-F", "--properties", help="Client properties file (librdkafka/Java names).")
    ],
    topics: Annotated[list[str] | None, typer.Argument(help="Topics to read from the beginning.")] = None,
    list_topics: Annotated[
        bool, typer.Option("-L", "--list", help="List the topics this principal sees.")
    ] = False,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep reading after the end.")] = False,
) -> None:
    """Print the records of topics (their values, one a line) as the principal of a client properties file."""
    from tollgate_core import consume as kafka

    args = kafka.client_args(kafka.read_properties(properties))
    if list_topics:
        for topic in asyncio.run(kafka.list_topics(args)):
            typer.echo(topic)
        return
    if not topics:
        fail("name at least one topic (or -L)", code=2)
    asyncio.run(kafka.consume(args, topics, follow))
