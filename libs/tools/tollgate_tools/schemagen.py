"""Generated contract documents: JSON Schemas of the topic versions and of the dataset contract, and AsyncAPI
documents of the services. The pydantic models are the single source; the files under ``schemas/`` are their
committed copies, so that reviewers see every contract change and CI can compare versions.

``tollgate dev generate`` (re)writes every generated file and removes stale ones;
``tollgate dev check`` regenerates in memory and exits 1 when a committed file differs
(drift) or a topic example does not validate against its schema and model.

What is generated:

* ``schemas/topics/<topic>/v<N>.schema.json`` for every catalog topic version that names a ``model``;
* ``schemas/datasets/contract.schema.json`` from :class:`tollgate_core.contracts.DatasetContract`;
* ``schemas/asyncapi/<service>.json`` for every service whose package has a module
  ``tollgate_<service>.topology`` with ``build_broker() -> faststream.kafka.KafkaBroker`` or
  ``build_broker(settings)`` (a declared broker, never started); services without it are skipped.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
import typing
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Final

from pydantic import BaseModel

from tollgate_core.contracts import DatasetContract
from tollgate_core.paths import schemas_dir
from tollgate_core.topics import SERVICES, TopicSpec, TopicVersion, catalog

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
CONTRACT_SCHEMA_PATH = "datasets/contract.schema.json"
ASYNCAPI_VERSION = "3.0.0"
_RUN_WRITE = "(run: tollgate dev generate)"
MIN_EXAMPLES = 2  # per modelled topic version: at least one minimal and one with the optional fields

# Topic schemas describe what producers write: ``model_dump(mode="json", by_alias=True)``. For the models of
# this platform the validation and serialization schemas are identical; should they ever differ (a custom
# serializer, a computed field), the wire format is what consumers and the compatibility check care about.
TOPIC_SCHEMA_MODE: Final = "serialization"
# The dataset contract schema describes files people write and the platform validates: validation mode.
CONTRACT_SCHEMA_MODE: Final = "validation"


def topic_schema_file(topic: str, version: int) -> str:
    """Path of a topic version's JSON Schema, relative to the ``schemas/topics/`` folder."""
    return f"{topic}/v{version}.schema.json"


def topic_schema_path(topic: str, version: int) -> str:
    """Path of a topic version's JSON Schema, relative to the ``schemas/`` folder."""
    return f"topics/{topic_schema_file(topic, version)}"


def topic_examples_dir(topic: str, version: int) -> str:
    """Folder of a topic version's examples, relative to the ``schemas/`` folder."""
    return f"topics/{topic}/v{version}.examples"


def topic_schema_id(topic: str, version: int) -> str:
    return f"urn:tollgate:topic:{topic}.v{version}"


def render(document: Any) -> str:
    """Canonical text of a generated document: sorted keywords, 2-space indent, trailing newline.

    Keywords are sorted so that a pydantic or faststream upgrade that only reorders them is no drift; the
    entries of ``properties`` keep the model's field order, which is the order people read a message in.
    """
    return json.dumps(_canonical(document), indent=2, ensure_ascii=False) + "\n"


def _canonical(node: Any, keep_order: bool = False) -> Any:
    if isinstance(node, dict):
        keys = list(node) if keep_order else sorted(node)
        # Only a schema's "properties" map keeps its order; its values are schemas again.
        return {key: _canonical(node[key], keep_order=not keep_order and key == "properties") for key in keys}
    if isinstance(node, list):
        return [_canonical(item) for item in node]
    return node


def topic_schema(spec: TopicSpec, version: TopicVersion) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of one topic version, from its pydantic model."""
    model = spec.model_class(version.version)
    if model is None:
        raise ValueError(f"{spec.name} v{version.version} names no model")
    schema = model.model_json_schema(by_alias=True, mode=TOPIC_SCHEMA_MODE)
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": topic_schema_id(spec.name, version.version),
        **schema,
        "title": f"{spec.name}.v{version.version}",
    }


def contract_schema() -> dict[str, Any]:
    """JSON Schema of the dataset contract files (``schemas/datasets/*.yaml``)."""
    schema = DatasetContract.model_json_schema(by_alias=True, mode=CONTRACT_SCHEMA_MODE)
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": "urn:tollgate:dataset-contract",
        **schema,
        "title": "tollgate dataset contract",
    }


def topology_module(service: str) -> ModuleType | None:
    """The service's ``tollgate_<service>.topology`` module (the broker and topics it uses), or None when the
    service has none (or is not installed in this environment)."""
    package = f"tollgate_{service.replace('-', '_')}"
    if importlib.util.find_spec(package) is None:
        return None
    if importlib.util.find_spec(f"{package}.topology") is None:
        return None
    return importlib.import_module(f"{package}.topology")


def declared_broker(module: ModuleType) -> Any:
    """The broker a service's ``topology`` module declares (never started).

    ``build_broker()`` is called as is; ``build_broker(settings)`` gets the defaults of the settings class its
    parameter names, without reading the environment, so that the document is the same on every machine.
    """
    build = module.build_broker
    parameters = list(inspect.signature(build).parameters.values())
    if len(parameters) > 1:
        raise TypeError(f"{module.__name__}.build_broker takes more than a settings object")
    with _documented_kafka_security():
        if not parameters:
            return build()
        settings_class = typing.get_type_hints(build).get(parameters[0].name)
        if not (isinstance(settings_class, type) and issubclass(settings_class, BaseModel)):
            raise TypeError(f"{module.__name__}.build_broker: annotate its parameter with the settings class")
        return build(settings_class.model_construct())


@contextlib.contextmanager
def _documented_kafka_security() -> Iterator[None]:
    """Brokers take their SASL settings from the environment: while a document is generated, the environment
    says what every deployment of the platform uses (SASL/SCRAM-SHA-512), whatever this machine has."""
    from tollgate_core import kafka_auth

    documented = {
        kafka_auth.ENV_SECURITY_PROTOCOL: "SASL_PLAINTEXT",
        kafka_auth.ENV_SASL_MECHANISM: kafka_auth.DEFAULT_MECHANISM,
        kafka_auth.ENV_USERNAME: "documentation",
        kafka_auth.ENV_PASSWORD: "documentation",
    }
    saved = {name: os.environ.get(name) for name in documented}
    os.environ.update(documented)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def asyncapi_document(service: str, module: ModuleType) -> dict[str, Any]:
    """AsyncAPI 3 document of a service, from the broker its ``topology`` module declares."""
    from faststream.specification import AsyncAPI

    try:
        app_version = importlib.metadata.version(f"tollgate-{service}")
    except importlib.metadata.PackageNotFoundError:
        app_version = "0.0.0"
    factory = AsyncAPI(
        declared_broker(module),
        title=f"tollgate-{service}",
        version=app_version,
        description=(module.__doc__ or "").strip() or None,
        schema_version=ASYNCAPI_VERSION,
    )
    document = factory.to_specification().to_jsonable()
    assert isinstance(document, dict)
    return document


@dataclass(frozen=True)
class Generated:
    """Every generated file, by path relative to the ``schemas/`` folder."""

    files: dict[str, str]
    # The topic versions whose examples are checked: schema path -> (model, examples folder).
    examples: dict[str, tuple[type[BaseModel], str]]


def generate(root: Path | None = None, services: Sequence[str] = SERVICES) -> Generated:
    root = root or schemas_dir()
    files: dict[str, str] = {}
    examples: dict[str, tuple[type[BaseModel], str]] = {}
    for spec in catalog(root / "topics").values():
        for version in spec.versions:
            if version.model is None or version.format != "json":
                continue
            path = topic_schema_path(spec.name, version.version)
            files[path] = render(topic_schema(spec, version))
            model = spec.model_class(version.version)
            assert model is not None
            examples[path] = (model, topic_examples_dir(spec.name, version.version))
    files[CONTRACT_SCHEMA_PATH] = render(contract_schema())
    for service in services:
        module = topology_module(service)
        if module is not None:
            files[f"asyncapi/{service}.json"] = render(asyncapi_document(service, module))
    return Generated(files=files, examples=examples)


def _generated_on_disk(root: Path) -> Iterable[str]:
    """Files on disk that only schemagen writes (to find stale ones)."""
    for path in sorted(root.glob("topics/*/v*.schema.json")):
        yield path.relative_to(root).as_posix()
    for path in sorted(root.glob("asyncapi/*.json")):
        yield path.relative_to(root).as_posix()


def write(root: Path | None = None, services: Sequence[str] = SERVICES) -> list[str]:
    """Write every generated file that changed and remove stale ones; returns what changed."""
    root = root or schemas_dir()
    generated = generate(root, services)
    changed: list[str] = []
    for rel, text in generated.files.items():
        path = root / rel
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        changed.append(f"wrote {_shown(path)}")
    for rel in _generated_on_disk(root):
        if rel not in generated.files:
            (root / rel).unlink()
            changed.append(f"removed {_shown(root / rel)} (nothing generates it any more)")
    return changed


@dataclass(frozen=True)
class CheckReport:
    problems: list[str]
    files: int
    examples: int


def check(root: Path | None = None, services: Sequence[str] = SERVICES) -> CheckReport:
    """Drift of the committed files and invalid or missing examples."""
    root = root or schemas_dir()
    generated = generate(root, services)
    problems: list[str] = []
    for rel, text in generated.files.items():
        path = root / rel
        if not path.is_file():
            problems.append(f"{_shown(path)}: missing {_RUN_WRITE}")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{_shown(path)}: differs from what the model generates {_RUN_WRITE}")
    for rel in _generated_on_disk(root):
        if rel not in generated.files:
            problems.append(f"{_shown(root / rel)}: stale, nothing generates it {_RUN_WRITE}")
    checked = 0
    for rel, (model, examples_rel) in generated.examples.items():
        schema = json.loads(generated.files[rel])
        example_paths = sorted((root / examples_rel).glob("*.json"))
        if len(example_paths) < MIN_EXAMPLES:
            problems.append(
                f"{_shown(root / examples_rel)}: {len(example_paths)} example(s), at least "
                f"{MIN_EXAMPLES} wanted (one minimal, one with the optional fields)"
            )
        for example in example_paths:
            checked += 1
            for error in validate_example(schema, model, example):
                problems.append(f"{_shown(example)}: {error}")
    for stray in sorted(root.glob("topics/*/v*.examples")):
        rel = stray.relative_to(root).as_posix()
        if rel.removesuffix(".examples") + ".schema.json" not in generated.examples:
            problems.append(f"{_shown(stray)}: examples of a topic version that has no generated schema")
    return CheckReport(problems=problems, files=len(generated.files), examples=checked)


def _shown(path: Path) -> str:
    """A path as people type it: relative to the working directory when it is inside it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def validate_example(schema: dict[str, Any], model: type[BaseModel], path: Path) -> list[str]:
    """Errors of one example against its JSON Schema (draft 2020-12, formats checked) and its model."""
    # jsonschema is a development dependency: imported here so that services never need it.
    import jsonschema
    from pydantic import ValidationError

    text = path.read_text(encoding="utf-8")
    try:
        instance = json.loads(text)
    except json.JSONDecodeError as exc:
        return [f"not JSON: {exc}"]
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    errors = [
        f"schema: {error.json_path}: {error.message}"
        for error in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    ]
    try:
        model.model_validate_json(text)
    except ValidationError as exc:
        errors.extend(
            f"model: {'.'.join(str(p) for p in err['loc']) or '$'}: {err['msg']}" for err in exc.errors()
        )
    return errors
