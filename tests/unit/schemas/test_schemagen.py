"""``tollgate_tools.schemagen``: generation, drift detection, example validation, AsyncAPI documents."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_support import exit_status
from tollgate_cli.dev import dev_app
from tollgate_core.paths import schemas_dir
from tollgate_tools import schemagen

RAW = "topics/events.raw/v1.schema.json"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the committed topic catalog, schemas and examples and of the dataset contracts."""
    root = tmp_path / "schemas"
    shutil.copytree(schemas_dir() / "topics", root / "topics")
    shutil.copytree(schemas_dir() / "datasets", root / "datasets")
    return root


@pytest.fixture
def service_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A service package ``tollgate_<name>`` with a ``topology`` module, importable for one test."""
    service = f"probe-{uuid.uuid4().hex[:8]}"
    package = tmp_path / "packages" / f"tollgate_{service.replace('-', '_')}"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "topology.py").write_text(
        textwrap.dedent(
            '''
            """A probe service: reads raw events, writes ingested ones."""

            from faststream import AckPolicy
            from faststream.kafka import KafkaBroker

            from tollgate_core.events import DataEvent, IngestedEvent
            from tollgate_core.settings import ServiceSettings
            from tollgate_core.topics import Topics


            def build_broker(settings: ServiceSettings) -> KafkaBroker:
                topics = Topics(settings.topic_namespace)
                broker = KafkaBroker(settings.kafka_bootstrap)
                publisher = broker.publisher(topics.events_ingested, schema=IngestedEvent, description="Ok.")

                @broker.subscriber(topics.events_raw, group_id="probe", ack_policy=AckPolicy.ACK)
                @publisher
                async def handle(event: DataEvent) -> IngestedEvent:
                    raise NotImplementedError

                return broker
            '''
        )
    )
    monkeypatch.syspath_prepend(str(package.parent))
    yield service
    for name in [m for m in sys.modules if m.startswith(package.name)]:
        del sys.modules[name]


def test_render_is_canonical_and_keeps_property_order() -> None:
    document = {"type": "object", "properties": {"b": {"type": "x", "title": "B"}, "a": {}}, "$id": "u"}
    text = schemagen.render(document)
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert list(json.loads(text)) == ["$id", "properties", "type"]
    assert list(json.loads(text)["properties"]) == ["b", "a"]
    assert list(json.loads(text)["properties"]["b"]) == ["title", "type"]
    assert '\n  "properties": {\n    "b": {' in text


def test_topic_schema_names_its_topic_version() -> None:
    generated = schemagen.generate(schemas_dir(), services=())
    schema = json.loads(generated.files[RAW])
    assert schema["$id"] == "urn:tollgate:topic:events.raw.v1"
    assert schema["title"] == "events.raw.v1"
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "schema" in schema["properties"] and "schema_" not in schema["properties"], "aliases on the wire"
    assert schema["additionalProperties"] is False
    # opaque dead-letter topics get no schema
    assert not any(path.startswith("topics/dlq.") for path in generated.files)
    assert schemagen.CONTRACT_SCHEMA_PATH in generated.files


def test_check_passes_on_an_unchanged_copy(tree: Path) -> None:
    report = schemagen.check(tree, services=())
    assert report.problems == []
    assert report.examples >= 8


def test_check_reports_drift_missing_and_stale_files(tree: Path) -> None:
    (tree / RAW).write_text((tree / RAW).read_text().replace('"Event Id"', '"Event ID"'))
    (tree / "topics/events.rejected/v1.schema.json").unlink()
    (tree / "topics/events.raw/v9.schema.json").write_text("{}\n")
    problems = "\n".join(schemagen.check(tree, services=()).problems)
    assert "events.raw/v1.schema.json: differs from what the model generates" in problems
    assert "events.rejected/v1.schema.json: missing" in problems
    assert "events.raw/v9.schema.json: stale" in problems

    changed = schemagen.write(tree, services=())
    assert len(changed) == 3
    assert schemagen.check(tree, services=()).problems == []
    assert schemagen.write(tree, services=()) == [], "a second write changes nothing"


def test_check_reports_invalid_and_missing_examples(tree: Path) -> None:
    examples = tree / "topics/events.validated/v1.examples"
    bad = json.loads((examples / "credit-default-quality-flags.json").read_text())
    bad["quality_flags"][0]["check"] = "looks_odd"
    bad["occurred_at"] = "2025-03-15T17:02:11"  # no UTC offset: the model refuses it
    del bad["labeled"]
    (examples / "broken.json").write_text(json.dumps(bad))
    (tree / "topics/events.rejected/v1.examples/credit-default-missing-field.json").unlink()
    (tree / "topics/events.raw/v1.examples/not-json.json").write_text("{")

    problems = schemagen.check(tree, services=()).problems
    text = "\n".join(problems)
    assert "broken.json: schema: $.quality_flags[0].check: 'looks_odd' is not one of" in text
    assert "broken.json: schema: $: 'labeled' is a required property" in text
    assert "broken.json: model: occurred_at: Input should have timezone info" in text
    assert "events.rejected/v1.examples: 1 example(s), at least 2 wanted" in text
    assert "not-json.json: not JSON" in text


def test_check_reports_examples_of_a_version_without_schema(tree: Path) -> None:
    (tree / "topics/events.raw/v7.examples").mkdir(parents=True)
    problems = schemagen.check(tree, services=()).problems
    assert any(
        "events.raw/v7.examples: examples of a topic version that has no generated schema" in p
        for p in problems
    )


def test_asyncapi_document_of_a_declared_broker(
    tree: Path, service_package: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The document must not depend on the machine it is generated on.
    monkeypatch.setenv("TOLLGATE_KAFKA_BOOTSTRAP", "elsewhere:19092")
    monkeypatch.setenv("TOLLGATE_TOPIC_NAMESPACE", "somebody-else")
    path = f"asyncapi/{service_package}.json"
    generated = schemagen.generate(tree, services=(service_package, "no-such-service"))
    assert [p for p in generated.files if p.startswith("asyncapi/")] == [path]
    document = json.loads(generated.files[path])
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["title"] == f"tollgate-{service_package}"
    assert document["info"]["description"] == "A probe service: reads raw events, writes ingested ones."
    assert document["servers"]["development"]["host"] == "localhost:9092"
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == {"tollgate.events.raw.v1", "tollgate.events.ingested.v1"}
    assert {op["action"] for op in document["operations"].values()} == {"receive", "send"}
    assert "IngestedEvent" in document["components"]["schemas"]

    assert schemagen.write(tree, services=(service_package,)) != []
    assert json.loads((tree / path).read_text()) == document
    assert schemagen.check(tree, services=(service_package,)).problems == []
    # a service that no longer declares its channels leaves a stale document behind
    assert any("stale" in p for p in schemagen.check(tree, services=()).problems)


def test_zero_argument_build_broker(tmp_path: Path) -> None:
    module = type(sys)("declared")
    module.__doc__ = "Declared without settings."

    def build_broker() -> object:
        from faststream.kafka import KafkaBroker

        broker = KafkaBroker("localhost:9092")
        broker.publisher("tollgate.monitor.alerts.v1")
        return broker

    module.build_broker = build_broker  # type: ignore[attr-defined]
    document = schemagen.asyncapi_document("monitor", module)
    assert [c["address"] for c in document["channels"].values()] == ["tollgate.monitor.alerts.v1"]


def test_committed_asyncapi_documents_belong_to_services() -> None:
    from tollgate_core.topics import SERVICES

    for path in sorted((schemas_dir() / "asyncapi").glob("*.json")):
        assert path.stem in SERVICES
        assert schemagen.topology_module(path.stem) is not None


def test_command_line(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(schemas_dir() / "asyncapi", tree / "asyncapi", dirs_exist_ok=True)
    assert exit_status(dev_app, "check", "--schemas-dir", str(tree)) == 0
    assert "no drift, all valid" in capsys.readouterr().out
    (tree / RAW).write_text("{}\n")
    assert exit_status(dev_app, "check", "--schemas-dir", str(tree)) == 1
    out = capsys.readouterr().out
    assert "events.raw/v1.schema.json: differs" in out and "1 problem(s)" in out
    assert exit_status(dev_app, "generate", "--schemas-dir", str(tree)) == 0
    assert "1 file(s) changed" in capsys.readouterr().out
    assert exit_status(dev_app, "check", "--schemas-dir", str(tree)) == 0
