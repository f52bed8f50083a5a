"""The Helm chart's Kafka data, generated from the topic catalog: topics (partitions, configs) and each
service's ACLs. ``tollgate dev helm write`` writes ``infra/helm/tollgate/files/kafka.yaml``,
``check`` fails when the committed copy drifts from the catalog (a unit test runs it).

The chart renders Strimzi ``KafkaTopic`` and ``KafkaUser`` resources from that file; names in it carry no
topic namespace, the chart prefixes its ``topicNamespace``. :func:`kafka_acls` is the one rule that turns
the catalog into ACLs, for the chart and for anything else that grants Kafka rights.

The rule: a service may write (and describe) every live version of each topic it produces; read (and
describe) every live version of each topic it consumes; read with consumer groups whose names start with
``<namespace>.<service>`` (``ServiceSettings.consumer_group``); and use transactional ids starting with
``<namespace>.<service>-`` (the stream stages' ``<namespace>.<service>-<instance>``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tollgate_core.acls import REDRIVE_TARGETS, REDRIVER, principal_of
from tollgate_core.paths import repo_root
from tollgate_core.topics import SERVICES, TopicSpec, catalog

CHART_FILE = Path("infra") / "helm" / "tollgate" / "files" / "kafka.yaml"
HEADER = "# Generated from schemas/topics by `tollgate dev helm write`; do not edit.\n"

Acl = dict[str, Any]


def _live_versions(spec: TopicSpec) -> list[int]:
    return [v.version for v in spec.versions if v.status != "deprecated"]


def kafka_acls(
    specs: dict[str, TopicSpec] | None = None, namespace: str = "tollgate"
) -> dict[str, list[Acl]]:
    """Each service's ACLs (Strimzi ``KafkaUser`` ``spec.authorization.acls`` entries), from the catalog."""
    specs = catalog() if specs is None else specs
    out: dict[str, list[Acl]] = {}
    for service in SERVICES:
        acls: list[Acl] = []
        for name in sorted(specs):
            spec = specs[name]
            operations: list[str] = []
            # The catalog's entries name principals as tollgate_core.acls reads them ("ingest (HTTP gateway)").
            if service in {principal_of(entry) for entry in spec.consumers}:
                operations += ["Read", "Describe"]
            if service in {principal_of(entry) for entry in spec.producers} or (
                service == REDRIVER and spec.name in REDRIVE_TARGETS
            ):
                operations += ["Write", "Describe"]
            if not operations:
                continue
            for version in _live_versions(spec):
                acls.append(
                    {
                        "resource": {
                            "type": "topic",
                            "name": spec.full_name(version, namespace),
                            "patternType": "literal",
                        },
                        "operations": sorted(set(operations)),
                    }
                )
        acls.append(
            {
                "resource": {"type": "group", "name": f"{namespace}.{service}", "patternType": "prefix"},
                "operations": ["Read"],
            }
        )
        acls.append(
            {
                "resource": {
                    "type": "transactionalId",
                    "name": f"{namespace}.{service}-",
                    "patternType": "prefix",
                },
                "operations": ["Describe", "Write"],
            }
        )
        if service == REDRIVER:  # the DLQ redrive's cursor groups and transactions (tollgate_core.dlq)
            acls.append(
                {
                    "resource": {
                        "type": "group",
                        "name": f"{namespace}.dlq-redrive",
                        "patternType": "prefix",
                    },
                    "operations": ["Read"],
                }
            )
            acls.append(
                {
                    "resource": {
                        "type": "transactionalId",
                        "name": f"{namespace}.dlq-redrive",
                        "patternType": "prefix",
                    },
                    "operations": ["Describe", "Write"],
                }
            )
        out[service] = acls
    return out


def _topics(specs: dict[str, TopicSpec]) -> list[dict[str, Any]]:
    topics = []
    for name in sorted(specs):
        spec = specs[name]
        for version in _live_versions(spec):
            topics.append(
                {
                    "name": f"{spec.name}.v{version}",
                    "partitions": spec.partitions,
                    "config": dict(spec.configs),
                }
            )
    return topics


# The chart substitutes its topicNamespace for this marker.
NAMESPACE_MARKER = "@NS@"


def chart_data(specs: dict[str, TopicSpec] | None = None) -> dict[str, Any]:
    specs = catalog() if specs is None else specs
    return {
        "topics": _topics(specs),
        "acls": kafka_acls(specs, NAMESPACE_MARKER),
    }


def render() -> str:
    return HEADER + yaml.safe_dump(chart_data(), sort_keys=True, width=120)


def chart_file() -> Path:
    """Where the chart's Kafka data is committed."""
    return repo_root() / CHART_FILE


def write() -> None:
    """Write the chart's Kafka data from the catalog."""
    path = chart_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(), encoding="utf-8")


def drifted() -> bool:
    """Whether the committed chart data differs from what the catalog gives (or is missing)."""
    path = chart_file()
    return not path.exists() or path.read_text(encoding="utf-8") != render()
