"""The topic catalog: ``schemas/topics/<name>.yaml`` files say, per topic, its owner, producers, consumers,
partitions, configs, versions and compatibility mode. Services take topic names from here, never from literals.

``tollgate admin topics apply`` creates every topic version (and the DLQ topics) on the broker with
the declared partitions and configs; topics are never auto-created.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from tollgate_core.paths import schemas_dir

SERVICES = ("ingest", "validator", "trainer", "registry", "scorer", "monitor", "audit-log")


class Compatibility(StrEnum):
    """How the schema of one published topic version may evolve (checked against every earlier revision)."""

    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"  # new readers read all old data
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"  # old readers read all new data
    FULL_TRANSITIVE = "FULL_TRANSITIVE"  # both
    NONE = "NONE"


class TopicVersion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)
    status: str = Field(pattern="^(draft|published|deprecated)$")
    model: str | None = Field(
        None, description="module:Class of the pydantic model that is the source of the JSON Schema."
    )
    format: str = Field("json", pattern="^(json|opaque)$")


class TopicSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Topic name without namespace and version, e.g. events.raw.")
    description: str
    owner: str
    producers: list[str]
    consumers: list[str]
    key: str = Field(description="What the message key is, so order holds where it matters.")
    partitions: int = Field(ge=1)
    configs: dict[str, str] = Field(default_factory=dict)
    compatibility: Compatibility
    versions: list[TopicVersion] = Field(min_length=1)

    def full_name(self, version: int | None = None, namespace: str = "tollgate") -> str:
        return f"{namespace}.{self.name}.v{version or self.current.version}"

    @property
    def schema_id(self) -> str:
        """``<name>.v<N>`` of the current version: what an envelope's ``schema`` says."""
        return f"{self.name}.v{self.current.version}"

    @property
    def current(self) -> TopicVersion:
        """The version producers write: the newest published one (a draft only while none is published)."""
        published = [v for v in self.versions if v.status == "published"]
        live = published or [v for v in self.versions if v.status != "deprecated"]
        return max(live or self.versions, key=lambda v: v.version)

    def model_class(self, version: int | None = None) -> type[BaseModel] | None:
        spec = next(v for v in self.versions if v.version == (version or self.current.version))
        if spec.model is None:
            return None
        module, _, attr = spec.model.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        assert isinstance(cls, type) and issubclass(cls, BaseModel)
        return cls


def _dlq_spec(service: str) -> TopicSpec:
    return TopicSpec(
        name=f"dlq.{service}",
        description=f"Messages the {service} service could not process, unchanged, with headers naming the "
        "source topic, partition, offset, error type and error.",
        owner=service,
        producers=[service],
        consumers=["operators", "audit-log"],
        key="the original message key",
        partitions=1,
        configs={"retention.ms": str(30 * 24 * 3600 * 1000)},
        compatibility=Compatibility.NONE,
        versions=[TopicVersion(version=1, status="published", format="opaque")],
    )


def current_schema_id(topic: str) -> str:
    """The schema id producers of ``topic`` write now (from the catalog files: call it at start-up)."""
    return catalog()[topic].schema_id


@cache  # read once per process: every Topics(...) and schema id comes from it
def catalog(directory: Path | None = None) -> dict[str, TopicSpec]:
    root = directory or schemas_dir() / "topics"
    specs: dict[str, TopicSpec] = {}
    for path in sorted(root.glob("*.yaml")):
        spec = TopicSpec.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
        if path.stem != spec.name:
            raise ValueError(f"{path}: file name must be the topic name {spec.name!r}")
        specs[spec.name] = spec
    for service in SERVICES:
        dlq = _dlq_spec(service)
        specs.setdefault(dlq.name, dlq)
    return specs


# The broker's message.max.bytes, for topics that declare nothing smaller.
BROKER_MAX_MESSAGE_BYTES = 1_048_576


def max_message_bytes(full_name: str) -> int:
    """Largest record ``full_name`` (``<namespace>.<name>.v<N>``) accepts: its catalog ``max.message.bytes``
    when declared, else the broker's default. Outputs are sized against this before they are sent."""
    _, _, rest = full_name.partition(".")
    name, _, _version = rest.rpartition(".")
    spec = catalog().get(name)
    declared = spec.configs.get("max.message.bytes") if spec is not None else None
    return min(int(declared), BROKER_MAX_MESSAGE_BYTES) if declared else BROKER_MAX_MESSAGE_BYTES


class Topics:
    """Resolves catalog names to full topic names under one namespace: ``Topics(ns).events_raw`` is the
    current version of ``events.raw``; :meth:`name` takes any catalog name and version, :meth:`dlq` a service's
    dead-letter topic."""

    def __init__(self, namespace: str = "tollgate") -> None:
        self.namespace = namespace
        self._catalog = catalog()

    def name(self, topic: str, version: int | None = None) -> str:
        try:
            spec = self._catalog[topic]
        except KeyError:
            raise KeyError(f"topic {topic!r} is not in the catalog (schemas/topics)") from None
        return spec.full_name(version, self.namespace)

    def dlq(self, service: str) -> str:
        return self.name(f"dlq.{service}")

    def all_names(self) -> Iterable[tuple[str, TopicSpec]]:
        for spec in self._catalog.values():
            for version in spec.versions:
                if version.status != "deprecated":
                    yield spec.full_name(version.version, self.namespace), spec

    # One property per catalog topic (current version), so that every use is visible to grep and mypy;
    # tests/unit/core/test_topics_catalog.py fails when the catalog and these disagree.
    @property
    def audit_checkpoints(self) -> str:
        return self.name("audit.checkpoints")

    @property
    def events_ingested(self) -> str:
        return self.name("events.ingested")

    @property
    def events_raw(self) -> str:
        return self.name("events.raw")

    @property
    def events_rejected(self) -> str:
        return self.name("events.rejected")

    @property
    def events_validated(self) -> str:
        return self.name("events.validated")

    @property
    def inference_log(self) -> str:
        return self.name("inference.log")

    @property
    def models_candidates(self) -> str:
        return self.name("models.candidates")

    @property
    def models_lifecycle(self) -> str:
        return self.name("models.lifecycle")

    @property
    def models_submissions(self) -> str:
        return self.name("models.submissions")

    @property
    def monitor_alerts(self) -> str:
        return self.name("monitor.alerts")

    @property
    def operations(self) -> str:
        return self.name("operations")

    @property
    def registrations(self) -> str:
        return self.name("registrations")

    @property
    def scoring_requests(self) -> str:
        return self.name("scoring.requests")

    @property
    def scoring_results(self) -> str:
        return self.name("scoring.results")

    @property
    def training_requests(self) -> str:
        return self.name("training.requests")


async def ensure_topics(
    bootstrap: str, namespace: str = "tollgate", partitions_override: int | None = None
) -> list[str]:
    """Create every catalog topic that does not exist yet; returns the names created."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from tollgate_core.kafka_auth import kafka_security

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_security())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted: list[Any] = []
        for full, spec in Topics(namespace).all_names():
            if full not in existing:
                wanted.append(
                    NewTopic(
                        full,
                        num_partitions=partitions_override or spec.partitions,
                        replication_factor=1,
                        topic_configs=dict(spec.configs),
                    )
                )
        if wanted:
            await admin.create_topics(wanted)
        return [t.name for t in wanted]
    finally:
        await admin.close()
