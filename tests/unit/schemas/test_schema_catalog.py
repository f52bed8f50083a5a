"""The committed contracts: catalog consistency, generated files up to date, examples and contracts valid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tollgate_core.contracts import DatasetContract
from tollgate_core.paths import schemas_dir
from tollgate_core.topics import catalog
from tollgate_tools import schemagen

SCHEMAS = schemas_dir()


def _catalog_files() -> list[Path]:
    return sorted((SCHEMAS / "topics").glob("*.yaml"))


def _modelled_versions() -> list[tuple[str, int]]:
    return [
        (spec.name, version.version)
        for spec in catalog().values()
        for version in spec.versions
        if version.model is not None and version.format == "json"
    ]


def _examples() -> list[Path]:
    return sorted((SCHEMAS / "topics").glob("*/v*.examples/*.json"))


def _validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


@pytest.mark.parametrize("path", _catalog_files(), ids=lambda p: p.name)
def test_catalog_topic_name_is_its_file_name(path: Path) -> None:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert document["name"] == path.stem
    versions = [v["version"] for v in document["versions"]]
    assert versions == sorted(set(versions)), "versions are listed once each, in order"


def test_every_published_json_version_has_a_model_and_a_committed_schema() -> None:
    published = [
        (spec, version)
        for spec in catalog().values()
        for version in spec.versions
        if version.status in ("published", "deprecated") and version.format == "json"
    ]
    assert published, "the catalog publishes JSON topics"
    for spec, version in published:
        name = f"{spec.name}.v{version.version}"
        assert version.model is not None, f"{name} is published without a model"
        assert spec.model_class(version.version) is not None
        path = SCHEMAS / schemagen.topic_schema_path(spec.name, version.version)
        assert path.is_file(), f"{name}: {path} is not committed (tollgate dev generate)"


def test_generated_files_match_the_committed_copies() -> None:
    report = schemagen.check(SCHEMAS)
    assert report.problems == []
    assert report.examples >= 2 * len(_modelled_versions())


@pytest.mark.parametrize("topic,version", _modelled_versions(), ids=lambda v: str(v))
def test_each_modelled_version_has_examples_covering_its_optional_fields(topic: str, version: int) -> None:
    schema = json.loads((SCHEMAS / schemagen.topic_schema_path(topic, version)).read_text(encoding="utf-8"))
    examples = sorted((SCHEMAS / schemagen.topic_examples_dir(topic, version)).glob("*.json"))
    assert len(examples) >= 2
    documents = [json.loads(p.read_text(encoding="utf-8")) for p in examples]
    optional = set(schema["properties"]) - set(schema.get("required", []))
    used = {key for document in documents for key in document}
    assert optional <= used, f"no example of {topic}.v{version} uses {sorted(optional - used)}"
    assert any(not (optional & set(document)) for document in documents) or not optional, (
        "one example leaves every optional field out"
    )


@pytest.mark.parametrize(
    "path", _examples(), ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}/{p.name}"
)
def test_example_validates_against_its_schema_and_model(path: Path) -> None:
    topic, version = (
        path.parent.parent.name,
        int(path.parent.name.removeprefix("v").removesuffix(".examples")),
    )
    spec = catalog()[topic]
    model = spec.model_class(version)
    assert model is not None
    schema = json.loads((SCHEMAS / schemagen.topic_schema_path(topic, version)).read_text(encoding="utf-8"))
    assert schemagen.validate_example(schema, model, path) == []
    errors = list(_validator(schema).iter_errors(json.loads(path.read_text(encoding="utf-8"))))
    assert errors == []


def test_committed_schemas_are_valid_draft_2020_12() -> None:
    for path in [*sorted(SCHEMAS.glob("topics/*/v*.schema.json")), SCHEMAS / schemagen.CONTRACT_SCHEMA_PATH]:
        schema = json.loads(path.read_text(encoding="utf-8"))
        assert schema["$schema"] == schemagen.JSON_SCHEMA_DIALECT
        jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("path", sorted((SCHEMAS / "datasets").glob("*.yaml")), ids=lambda p: p.name)
def test_dataset_contract_validates_against_contract_schema(path: Path) -> None:
    schema = json.loads((SCHEMAS / schemagen.CONTRACT_SCHEMA_PATH).read_text(encoding="utf-8"))
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert [e.message for e in _validator(schema).iter_errors(document)] == []
    DatasetContract.model_validate(document)


def test_contract_schema_rejects_a_broken_contract() -> None:
    schema = json.loads((SCHEMAS / schemagen.CONTRACT_SCHEMA_PATH).read_text(encoding="utf-8"))
    broken = {
        "contract": "x",
        "version": 0,
        "entity_id": {"name": "id", "type": "string"},
        "label": {"name": "y", "type": "colour", "task": "classification"},
        "features": [],
        "surprise": True,
    }
    paths = {e.json_path for e in _validator(schema).iter_errors(broken)}
    assert {"$.version", "$.label.type", "$.features", "$"} <= paths
