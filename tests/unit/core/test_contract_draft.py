"""``tollgate contracts draft``: a drafted contract validates the file it was drafted from."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from tollgate_cli.main import app
from tollgate_core.contract_draft import DraftError, draft_contract, read_rows
from tollgate_core.contract_rules import CompiledContract, read_text
from tollgate_core.contracts import ContractRegistry, DatasetContract, load_contract
from tollgate_demo.datasets import generate_records, load_islp_default
from tollgate_ingest.gateway import _csv_rows

CONTRACTS = ContractRegistry.from_directory()


def shipped() -> dict[str, tuple[list[dict[str, Any]], str, str, str | None]]:
    risk = CONTRACTS.latest("synthetic-risk")
    return {
        "credit-default": (load_islp_default(), "customer_id", "default", None),
        "synthetic-risk": (
            generate_records(risk, 3000, seed=5),
            risk.entity_id.name,
            risk.label.name,
            risk.event_time,
        ),
    }


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    if path.suffix == ".csv":
        names = list(dict.fromkeys(k for r in records for k in r))
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=names)
            writer.writeheader()
            for r in records:
                writer.writerow({k: "" if r.get(k) is None else r[k] for k in names})
    else:
        path.write_bytes(b"\n".join(orjson.dumps(r) for r in records) + b"\n")
    return path


def violations(contract: DatasetContract, path: Path) -> list[tuple[int, list[dict[str, Any]]]]:
    """Every violation of the file's records, read as the gateway reads an upload of it."""
    compiled = CompiledContract(contract)
    if path.suffix == ".csv":
        rows = [
            (line, {k: read_text(contract, k, v) for k, v in row.items()})
            for line, row in _csv_rows(path.read_text(encoding="utf-8"))
        ]
    else:
        rows = list(enumerate(read_rows(path), start=1))
    return [(line, found) for line, row in rows if (found := compiled.violations(row))]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
@pytest.mark.parametrize("name", ["credit-default", "synthetic-risk"])
def test_a_drafted_contract_validates_its_own_source(tmp_path: Path, name: str, suffix: str) -> None:
    records, entity, label, event_time = shipped()[name]
    source = write(tmp_path / f"{name.replace('-', '_')}{suffix}", records)
    out = tmp_path / f"{name}.v1.yaml"
    args = ["contracts", "draft", str(source), "--entity-id", entity, "--label", label, "-o", str(out)]
    if event_time is not None:
        args += ["--event-time", event_time]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    contract = load_contract(out)
    assert contract.contract == name
    assert violations(contract, source) == []
    checked = CliRunner().invoke(app, ["contracts", "check", str(out)])
    assert checked.exit_code == 0 and "ok" in checked.output


def test_the_draft_infers_types_ranges_nullability_and_personal_data() -> None:
    rows = [
        {
            "id": "a1",
            "y": "yes",
            "age": "30",
            "score": "0.5",
            "plan": "gold",
            "email": "a@x.org",
            "note": "n1",
        },
        {"id": "a2", "y": "no", "age": "", "score": "1.5", "plan": "basic", "email": "", "note": "n2"},
        {
            "id": "a3",
            "y": "no",
            "age": "50",
            "score": "2.5",
            "plan": "gold",
            "email": "c@x.org",
            "note": "n3",
        },
        {
            "id": "a4",
            "y": "no",
            "age": "41",
            "score": "-1",
            "plan": "basic",
            "email": "d@x.org",
            "note": "n4",
        },
    ]
    doc = draft_contract(rows, name="toy", entity_id="id", label="y", text_values=True)
    fields = {f["name"]: f for f in [*doc["features"], *doc.get("attributes", [])]}
    assert doc["label"]["type"] == "boolean" and doc["label"]["positive_class"] is True
    assert fields["age"] == {
        "name": "age",
        "type": "integer",
        "nullable": True,
        "minimum": 28,
        "maximum": 52,
        "description": "TODO: describe.",
    }
    assert fields["score"]["minimum"] == -1.35 and fields["score"]["maximum"] == 2.85
    assert fields["plan"]["categories"] == ["basic", "gold"]
    assert fields["email"]["pii"] == "hash" and fields["email"] in doc["attributes"]
    assert fields["note"]["type"] == "string" and fields["note"] in doc["attributes"]  # text: carried only


def test_what_cannot_be_drafted_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DraftError, match="label column 'outcome' is not in the file"):
        draft_contract([{"id": "1", "x": 1}], name="t", entity_id="id", label="outcome")
    with pytest.raises(DraftError, match="entity id 'id' is missing in 1 row"):
        draft_contract(
            [{"id": "1", "x": 1, "y": True}, {"x": 2, "y": False}], name="t", entity_id="id", label="y"
        )
    bad = tmp_path / "extra.csv"
    bad.write_text("id,x,y\n1,2,true\n2,3,false,surplus\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["contracts", "draft", str(bad), "--entity-id", "id", "--label", "y"])
    assert result.exit_code == 1 and "extra.csv: line 3: more values than the header names" in result.output


def test_check_model_names_errors_and_warnings(tmp_path: Path) -> None:
    entry = tmp_path / "m-1.yaml"
    entry.write_text(
        "model: m-1\ncontract: credit-default.v1\ngates:\n  metrics:\n    accuracy: {min: 0.9}\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["contracts", "check-model", str(entry)])
    assert result.exit_code == 0 and "unsuitable for imbalanced labels" in result.output
    entry.write_text(
        "model: m-1\ncontract: credit-default.v1\ngates:\n  metrics:\n    rmse: {max: 0.9}\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["contracts", "check-model", str(entry)])
    assert (
        result.exit_code == 1 and "'rmse' is not computed by the trainer for classification" in result.output
    )
