"""The ACLs generated from the topic catalog, and the Kafka security settings read from the environment."""

from __future__ import annotations

import json

import pytest

from tollgate_core.acls import (
    OPERATOR,
    PRODUCER,
    AclBinding,
    Operation,
    PatternType,
    ResourceType,
    catalog_acls,
    principal_of,
)
from tollgate_core.kafka_auth import KafkaAuthError, faststream_security, kafka_security
from tollgate_core.paths import schemas_dir
from tollgate_core.topics import SERVICES, Topics, catalog


def writers(acls: list[AclBinding], topic: str) -> set[str]:
    return {
        a.principal
        for a in acls
        if a.resource_type is ResourceType.TOPIC and a.resource == topic and a.operation is Operation.WRITE
    }


def test_every_catalog_entry_names_a_principal() -> None:
    for spec in catalog().values():
        for entry in (*spec.producers, *spec.consumers):
            principal_of(entry)  # raises for an entry the broker could not grant
    assert principal_of("ingest (HTTP gateway)") == "ingest"
    assert principal_of("external producers") == PRODUCER
    with pytest.raises(ValueError, match="names no principal"):
        principal_of("somebody")


def test_only_the_owners_write_the_control_topics() -> None:
    acls = catalog_acls("ns")
    topics = Topics("ns")
    assert writers(acls, topics.models_lifecycle) == {"registry"}
    assert writers(acls, topics.inference_log) == {"scorer"}
    assert writers(acls, topics.models_candidates) == {"trainer"}
    assert writers(acls, topics.events_raw) == {"ingest", PRODUCER, "audit-log"}  # audit-log: DLQ redrive


def test_outside_producers_write_only_events_raw_and_scoring_requests() -> None:
    acls = catalog_acls("ns")
    written = {a.resource for a in acls if a.principal == PRODUCER and a.operation is Operation.WRITE}
    assert written == {"ns.events.raw.v1", "ns.scoring.requests.v1"}


def test_groups_and_transactional_ids_are_per_service_and_namespace() -> None:
    acls = catalog_acls("ns")
    for service in SERVICES:
        own = {(a.resource_type, a.resource, a.pattern) for a in acls if a.principal == service}
        assert (ResourceType.GROUP, f"ns.{service}", PatternType.PREFIXED) in own
        assert (ResourceType.TRANSACTIONAL_ID, f"ns.{service}", PatternType.PREFIXED) in own
        assert not any(a.resource_type is ResourceType.CLUSTER for a in acls)
    # No principal but the operator gets a prefix over topics, and only for reading.
    prefixed_topics = [
        a for a in acls if a.resource_type is ResourceType.TOPIC and a.pattern is PatternType.PREFIXED
    ]
    assert {a.principal for a in prefixed_topics} == {OPERATOR}
    assert {a.operation for a in prefixed_topics} == {Operation.READ, Operation.DESCRIBE}


def test_every_service_reads_its_consumed_topics_and_writes_its_dlq() -> None:
    acls = {(a.principal, a.resource, a.operation) for a in catalog_acls("ns")}
    topics = Topics("ns")
    for service in SERVICES:
        assert (service, topics.dlq(service), Operation.WRITE) in acls
    assert ("scorer", topics.models_lifecycle, Operation.READ) in acls
    assert ("monitor", topics.inference_log, Operation.READ) in acls


def test_kafka_security_from_the_environment() -> None:
    assert kafka_security({}) == {}
    args = kafka_security({"TOLLGATE_KAFKA_USERNAME": "registry", "TOLLGATE_KAFKA_PASSWORD": "pw"})
    assert args == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "registry",
        "sasl_plain_password": "pw",
    }
    security = faststream_security({"TOLLGATE_KAFKA_USERNAME": "registry", "TOLLGATE_KAFKA_PASSWORD": "pw"})
    assert security is not None and type(security).__name__ == "SASLScram512"
    with pytest.raises(KafkaAuthError, match="TOLLGATE_KAFKA_PASSWORD"):
        kafka_security({"TOLLGATE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "TOLLGATE_KAFKA_USERNAME": "x"})
    with pytest.raises(KafkaAuthError, match="expected one of"):
        kafka_security({"TOLLGATE_KAFKA_SECURITY_PROTOCOL": "SSL-ish"})


def test_the_acls_cover_what_every_service_declares_in_its_asyncapi_document() -> None:
    """A service whose AsyncAPI document reads or writes a topic the catalog does not grant it would be refused
    by the broker: the catalog's producers and consumers must cover the declared channels."""
    granted = {(a.principal, a.resource, a.operation) for a in catalog_acls("tollgate")}
    missing = []
    for service in SERVICES:
        path = schemas_dir() / "asyncapi" / f"{service}.json"
        document = json.loads(path.read_text(encoding="utf-8"))
        for operation in document["operations"].values():
            channel = document["channels"][operation["channel"]["$ref"].rsplit("/", 1)[1]]
            needed = Operation.READ if operation["action"] == "receive" else Operation.WRITE
            if (service, channel["address"], needed) not in granted:
                missing.append(f"{service} {needed.name} {channel['address']}")
    assert missing == []
