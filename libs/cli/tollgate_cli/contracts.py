"""``tollgate contracts``: draft a dataset contract from a data file, and check contract and catalog files.

    tollgate contracts draft FILE --entity-id COL --label COL [--event-time COL] [--name NAME] [-o OUT]
    tollgate contracts check FILE...         a dataset contract is valid (schema and rules)
    tollgate contracts check-model FILE...   a model catalog entry is valid against its contract
    tollgate contracts register FILE...      register contracts live with the registry (role data-scientist)

``register`` (and ``tollgate models register``) sends each file to the registry (``TOLLGATE_REGISTRY_URL``,
default http://127.0.0.1:8082) with the API key from ``--api-key`` or ``TOLLGATE_API_KEY``; the registry
validates it, refuses a breaking change to a registered version (409, naming the change) and publishes it;
every service applies it within seconds, without a restart.

``draft`` writes YAML to stdout (or ``-o``) for a person to review; ``check`` and ``check-model`` exit 1
naming every problem, and print the warnings of an entry that is valid but questionable (a classifier gated
only on metrics that a majority-class model passes on rare labels).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console

from tollgate_cli.common import call, console, fail, group
from tollgate_core.contract_draft import (
    DEFAULT_MARGIN,
    DEFAULT_MAX_CATEGORIES,
    DraftError,
    draft_contract,
    is_text_file,
    read_rows,
    to_yaml,
)
from tollgate_core.contracts import ContractRegistry, DatasetContract, load_contract
from tollgate_core.models import check_model, load_model_spec

contracts_app = group(
    "contracts", "Dataset contracts: draft FILE --entity-id COL --label COL | check FILE | check-model FILE."
)
_out = Console(stderr=True, highlight=False, soft_wrap=True)  # one line per file, never wrapped


def _problem(path: Path, message: str) -> None:
    _out.print(f"[bold red]{path}:[/] {message}")


@contracts_app.command("draft")
def draft(
    file: Annotated[Path, typer.Argument(help="A CSV (with a header) or JSONL file of records.")],
    entity_id: Annotated[str, typer.Option("--entity-id", help="Column that identifies the entity.")],
    label: Annotated[str, typer.Option("--label", help="Column the model learns to predict.")],
    event_time: Annotated[
        str | None, typer.Option("--event-time", help="Column with the business time.")
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Contract name (default: the file name).")
    ] = None,
    task: Annotated[
        str | None, typer.Option("--task", help="classification | regression (default: from the label).")
    ] = None,
    segment: Annotated[str | None, typer.Option("--segment", help="Field compared for fairness.")] = None,
    pii: Annotated[
        list[str] | None, typer.Option("--pii", help="A column with personal data (repeat).")
    ] = None,
    max_categories: Annotated[int, typer.Option(help="Most distinct texts a category may have.")] = (
        DEFAULT_MAX_CATEGORIES
    ),
    margin: Annotated[
        float, typer.Option(help="Share of the observed span added to each range.")
    ] = DEFAULT_MARGIN,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Draft a contract from FILE: types, ranges with a margin, categories, nullability; review it."""
    if task not in (None, "classification", "regression"):
        raise typer.BadParameter("--task is classification or regression")
    contract_name = name or file.stem.lower().replace("_", "-").split(".")[0]
    try:
        rows = read_rows(file)
        doc = draft_contract(
            rows,
            name=contract_name,
            entity_id=entity_id,
            label=label,
            event_time=event_time,
            task=task,
            segment=segment,
            pii=pii or (),
            max_categories=max_categories,
            margin=margin,
            source=file.name,
            text_values=is_text_file(file),
        )
    except (DraftError, ValidationError, OSError) as exc:
        _problem(file, str(exc))
        raise typer.Exit(1) from None
    text = to_yaml(
        doc,
        header=f"Drafted by 'tollgate contracts draft' from {file.name} ({len(rows):,} rows).\n"
        "Review every type, range, category and description, then check it: tollgate contracts check FILE",
    )
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        _out.print(f"wrote {output}: {len(doc['features'])} features, label {label} ({doc['label']['task']})")


@contracts_app.command("check")
def check(files: Annotated[list[Path], typer.Argument(help="Dataset contract YAML files.")]) -> None:
    """Validate dataset contract files without registering them."""
    failed = False
    for path in files:
        try:
            contract = load_contract(path)
        except (ValidationError, ValueError, OSError) as exc:
            _problem(path, str(exc))
            failed = True
            continue
        _out.print(
            f"{path}: ok, {contract.schema_id}: {len(contract.features)} features, label {contract.label.name}"
        )
    if failed:
        raise typer.Exit(1)


@contracts_app.command("check-model")
def check_model_files(
    files: Annotated[list[Path], typer.Argument(help="Model catalog YAML files.")],
    contracts_dir: Annotated[
        Path | None, typer.Option("--contracts", help="Directory of dataset contracts (default: schemas/).")
    ] = None,
) -> None:
    """Validate model catalog entries against their dataset contracts, without registering them."""
    registry = ContractRegistry.from_directory(contracts_dir)
    failed = False
    for path in files:
        try:
            spec = load_model_spec(path)
            contract: DatasetContract | None = registry.get(spec.contract)
            if contract is None:
                raise ValueError(f"{spec.model}: no dataset contract {spec.contract}")
            warnings = check_model(spec, contract)
        except (ValidationError, ValueError, OSError) as exc:
            _problem(path, str(exc))
            failed = True
            continue
        for warning in warnings:
            _out.print(f"[yellow]{path}: warning:[/] {warning}")
        _out.print(f"{path}: ok, {spec.model} learns {spec.contract} (risk tier {spec.risk_tier})")
    if failed:
        raise typer.Exit(1)


DEFAULT_REGISTRY_URL = "http://127.0.0.1:8082"
RegistryUrl = Annotated[
    str, typer.Option("--registry-url", envvar="TOLLGATE_REGISTRY_URL", help="Base URL of the registry API.")
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="TOLLGATE_API_KEY",
        help="API key of a data-scientist (X-API-Key); its principal is recorded as who registered.",
        show_default=False,
    ),
]


def register_files(files: list[Path], path: str, registry_url: str, api_key: str | None) -> None:
    """POST each YAML file's document to the registry (``path``: /v1/contracts or /v1/models) and print
    what is in force now; the first refusal ends the command with the registry's message (exit 1)."""
    key = api_key or os.environ.get("TOLLGATE_API_KEY")
    for file in files:
        try:
            document: Any = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            fail(f"{file}: {exc}")
        if not isinstance(document, dict):
            fail(f"{file}: not a YAML mapping")
        result = call("POST", registry_url, path, key=key, timeout=30.0, json=document)
        what = f"{result['name']}.v{result['version']}" if result["kind"] == "contract" else result["name"]
        state = "registered" if result["created"] else "unchanged (already registered)"
        console.print(
            f"{file}: {result['kind']} {what} {state}: revision {result['revision']}, "
            f"digest {result['digest'][:12]}, by {result['registered_by']}",
            highlight=False,
        )
        for change in result["changes"]:
            console.print(f"  change: {change}", highlight=False)
        for warning in result["warnings"]:
            console.print(f"  [yellow]warning:[/] {warning}", highlight=False)


@contracts_app.command("register")
def register(
    files: Annotated[list[Path], typer.Argument(help="Dataset contract YAML files.")],
    registry_url: RegistryUrl = DEFAULT_REGISTRY_URL,
    api_key: ApiKey = None,
) -> None:
    """Register dataset contracts with the registry; every service applies them without a restart."""
    register_files(files, "/v1/contracts", registry_url, api_key)
