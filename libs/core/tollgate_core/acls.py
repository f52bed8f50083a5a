"""The broker's ACLs, generated from the topic catalog: each service is its own Kafka principal and may write
only the topics the catalog lists it as a producer of, and read only those it consumes.

Principals: one per service (its name), ``producer`` for the catalog's outside producers and clients (they may
write ``events.raw`` and ``scoring.requests`` and read ``scoring.results``), ``operator`` for people (reads
every topic of the namespace, writes what the catalog says operators produce). The broker's super user
(``admin`` in the local stack) creates topics and ACLs and is what the test suite's own clients use.

Consumer groups and transactional ids are granted by prefix per service: ``<namespace>.<service>`` covers the
groups ``ServiceSettings.consumer_group`` names and the transactional ids of ``TransactionalStage``.

aiokafka has no ACL API, so the CreateAcls request (Kafka protocol v1) is defined here on aiokafka's protocol
classes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeAlias

from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Int8, Int16, Int32, Schema, String

from tollgate_core.topics import SERVICES, Topics

PRODUCER = "producer"
OPERATOR = "operator"
# Catalog entries that are not services, and the principal each stands for.
OUTSIDE_PRINCIPALS = {
    "external producers": PRODUCER,
    "clients": PRODUCER,
    "operators": OPERATOR,
    "auditors": OPERATOR,  # people too: `tollgate audit verify --kafka-heads` reads with the operator's settings
}
PRINCIPALS = (*SERVICES, PRODUCER, OPERATOR)
REDRIVER = "audit-log"  # serves the operators' DLQ API
# Where the DLQ redrive may send dead letters back to (as the audit-log): never models.candidates,
# models.lifecycle or inference.log, which only their owners write.
REDRIVE_TARGETS = (
    "events.raw",
    "events.ingested",
    "events.validated",
    "training.requests",
    "scoring.requests",
)


class ResourceType(IntEnum):
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5


class PatternType(IntEnum):
    LITERAL = 3
    PREFIXED = 4


class Operation(IntEnum):
    READ = 3
    WRITE = 4
    DESCRIBE = 8


ALLOW = 3


@dataclass(frozen=True, order=True)
class AclBinding:
    principal: str  # without "User:"
    resource_type: ResourceType
    resource: str
    pattern: PatternType
    operation: Operation

    def __str__(self) -> str:
        return (
            f"User:{self.principal} {self.operation.name} {self.resource_type.name} "
            f"{self.pattern.name.lower()} {self.resource}"
        )


def principal_of(entry: str) -> str:
    """The principal a catalog producer/consumer entry names: ``ingest (HTTP gateway)`` → ``ingest``."""
    base = entry.split("(", 1)[0].strip()
    if base in SERVICES:
        return base
    if base in OUTSIDE_PRINCIPALS:
        return OUTSIDE_PRINCIPALS[base]
    known = ", ".join((*SERVICES, *OUTSIDE_PRINCIPALS))
    raise ValueError(f"catalog entry {entry!r} names no principal (known: {known})")


def catalog_acls(namespace: str = "tollgate") -> list[AclBinding]:
    """Every ACL the catalog implies for one topic namespace, sorted, without duplicates."""
    acls: set[AclBinding] = set()

    def grant(who: str, kind: ResourceType, name: str, pattern: PatternType, *ops: Operation) -> None:
        acls.update(AclBinding(who, kind, name, pattern, op) for op in ops)

    for full, spec in Topics(namespace).all_names():
        for entry in spec.producers:
            grant(
                principal_of(entry),
                ResourceType.TOPIC,
                full,
                PatternType.LITERAL,
                Operation.WRITE,
                Operation.DESCRIBE,
            )
        for entry in spec.consumers:
            grant(
                principal_of(entry),
                ResourceType.TOPIC,
                full,
                PatternType.LITERAL,
                Operation.READ,
                Operation.DESCRIBE,
            )
    for service in SERVICES:
        prefix = f"{namespace}.{service}"
        grant(service, ResourceType.GROUP, prefix, PatternType.PREFIXED, Operation.READ)
        grant(
            service,
            ResourceType.TRANSACTIONAL_ID,
            prefix,
            PatternType.PREFIXED,
            Operation.WRITE,
            Operation.DESCRIBE,
        )
    # The audit-log redrives dead letters (tollgate_core.dlq): its cursor groups and transactional ids are
    # <namespace>.dlq-redrive.<service>; the topics it may send them back to are REDRIVE_TARGETS.
    for full, spec in Topics(namespace).all_names():
        if spec.name in REDRIVE_TARGETS:
            grant(
                REDRIVER, ResourceType.TOPIC, full, PatternType.LITERAL, Operation.WRITE, Operation.DESCRIBE
            )
    redrive = f"{namespace}.dlq-redrive"
    grant(REDRIVER, ResourceType.GROUP, redrive, PatternType.PREFIXED, Operation.READ)
    grant(
        REDRIVER,
        ResourceType.TRANSACTIONAL_ID,
        redrive,
        PatternType.PREFIXED,
        Operation.WRITE,
        Operation.DESCRIBE,
    )
    grant(PRODUCER, ResourceType.GROUP, f"{namespace}.clients", PatternType.PREFIXED, Operation.READ)
    grant(
        OPERATOR,
        ResourceType.TOPIC,
        f"{namespace}.",
        PatternType.PREFIXED,
        Operation.READ,
        Operation.DESCRIBE,
    )
    grant(OPERATOR, ResourceType.GROUP, f"{namespace}.operator", PatternType.PREFIXED, Operation.READ)
    return sorted(acls)


# ---------------------------------------------------------------------------------------------- wire format


class CreateAclsResponse_v1(Response):  # type: ignore[misc]  # aiokafka.protocol is untyped
    API_KEY = 30
    API_VERSION = 1
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("results", Array(("error_code", Int16), ("error_message", String("utf-8")))),
    )


class CreateAclsRequest_v1(RequestStruct):  # type: ignore[misc]  # aiokafka.protocol is untyped
    API_KEY = 30
    API_VERSION = 1
    RESPONSE_TYPE = CreateAclsResponse_v1
    SCHEMA = Schema(
        (
            "creations",
            Array(
                ("resource_type", Int8),
                ("resource_name", String("utf-8")),
                ("resource_pattern_type", Int8),
                ("principal", String("utf-8")),
                ("host", String("utf-8")),
                ("operation", Int8),
                ("permission_type", Int8),
            ),
        ),
    )


CreateAclsRequestStruct: TypeAlias = CreateAclsRequest_v1


class CreateAclsRequest(Request[CreateAclsRequestStruct]):  # type: ignore[misc]  # aiokafka.protocol is untyped
    API_KEY = 30

    def __init__(self, acls: list[AclBinding]) -> None:
        self._acls = acls

    def build(self, request_struct_class: type[CreateAclsRequestStruct]) -> CreateAclsRequestStruct:
        return request_struct_class(
            [
                (
                    int(a.resource_type),
                    a.resource,
                    int(a.pattern),
                    f"User:{a.principal}",
                    "*",
                    int(a.operation),
                    ALLOW,
                )
                for a in self._acls
            ]
        )


class DescribeAclsResponse_v1(Response):  # type: ignore[misc]  # aiokafka.protocol is untyped
    API_KEY = 29
    API_VERSION = 1
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("error_message", String("utf-8")),
        (
            "resources",
            Array(
                ("resource_type", Int8),
                ("resource_name", String("utf-8")),
                ("pattern_type", Int8),
                (
                    "acls",
                    Array(
                        ("principal", String("utf-8")),
                        ("host", String("utf-8")),
                        ("operation", Int8),
                        ("permission_type", Int8),
                    ),
                ),
            ),
        ),
    )


class DescribeAclsRequest_v1(RequestStruct):  # type: ignore[misc]  # aiokafka.protocol is untyped
    API_KEY = 29
    API_VERSION = 1
    RESPONSE_TYPE = DescribeAclsResponse_v1
    SCHEMA = Schema(
        ("resource_type_filter", Int8),
        ("resource_name_filter", String("utf-8")),
        ("pattern_type_filter", Int8),
        ("principal_filter", String("utf-8")),
        ("host_filter", String("utf-8")),
        ("operation", Int8),
        ("permission_type", Int8),
    )


DescribeAclsRequestStruct: TypeAlias = DescribeAclsRequest_v1
ANY = 1


class DescribeAclsRequest(Request[DescribeAclsRequestStruct]):  # type: ignore[misc]  # aiokafka.protocol is untyped
    """The ACLs on exactly one resource pattern (any principal, host, operation)."""

    API_KEY = 29

    def __init__(self, resource_type: ResourceType, name: str, pattern: PatternType) -> None:
        self._filter = (int(resource_type), name, int(pattern), None, None, ANY, ANY)

    def build(self, request_struct_class: type[DescribeAclsRequestStruct]) -> DescribeAclsRequestStruct:
        return request_struct_class(*self._filter)


class AclError(RuntimeError):
    pass


async def _await_visible(admin: Any, acls: list[AclBinding], timeout_s: float) -> None:
    """Until the broker's authorizer has every binding: the controller acknowledges CreateAcls before the
    broker has replayed the new metadata, and a client arriving in between would be refused."""
    wanted: dict[tuple[ResourceType, str, PatternType], set[tuple[str, int]]] = {}
    for a in acls:
        wanted.setdefault((a.resource_type, a.resource, a.pattern), set()).add(
            (f"User:{a.principal}", a.operation)
        )
    deadline = asyncio.get_running_loop().time() + timeout_s
    for (kind, name, pattern), entries in wanted.items():
        while True:
            response: Any = await admin._send_request(DescribeAclsRequest(kind, name, pattern))
            seen = {(p, op) for res in response.resources for (p, _host, op, _perm) in res[3]}
            if entries <= seen:
                break
            if asyncio.get_running_loop().time() > deadline:
                raise AclError(f"the broker did not show the ACLs on {kind.name} {name} within {timeout_s} s")
            await asyncio.sleep(0.05)


async def create_acls(bootstrap: str, acls: list[AclBinding], timeout_s: float = 30) -> None:
    """Create the bindings (creating one that exists is a no-op on the broker) and return once the broker
    enforces them; the caller must be allowed to alter the cluster (the super user)."""
    from aiokafka.admin import AIOKafkaAdminClient

    from tollgate_core.kafka_auth import kafka_security

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_security())
    await admin.start()
    try:
        response: Any = await admin._send_request(CreateAclsRequest(acls))
        errors = [
            f"{acl}: error {code} {message or ''}".strip()
            for acl, (code, message) in zip(acls, response.results, strict=True)
            if code
        ]
        if errors:
            raise AclError("CreateAcls refused: " + "; ".join(errors[:5]))
        await _await_visible(admin, acls, timeout_s)
    finally:
        await admin.close()


async def apply_acls(bootstrap: str, namespace: str = "tollgate") -> int:
    """Create every ACL the catalog implies for ``namespace``; returns how many bindings were sent."""
    acls = catalog_acls(namespace)
    await create_acls(bootstrap, acls)
    return len(acls)
