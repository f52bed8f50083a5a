"""``tollgate admin`` and ``tollgate consume`` without a broker: what the catalog implies, printed whole, and
the errors of a call that names nothing to read."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.cli_support import folded_columns
from tollgate_cli import main as cli
from tollgate_core.acls import catalog_acls
from tollgate_core.topics import Topics


def test_acls_list_prints_one_binding_a_line_for_the_namespace() -> None:
    result = CliRunner().invoke(cli.app, ["admin", "acls", "list", "--namespace", "t1"])
    assert result.exit_code == 0
    assert result.output.splitlines() == [str(acl) for acl in catalog_acls("t1")]


def test_topics_list_folds_instead_of_cutting_on_a_narrow_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "30")
    result = CliRunner().invoke(cli.app, ["admin", "topics", "list"])
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    # Every cell is whole: a column's fragments, read top to bottom, hold each full value in catalog order.
    columns = folded_columns(result.output)
    names = [full for full, _ in Topics().all_names()]
    assert columns[0] == "".join(names)
    assert columns[2] == "".join(spec.owner for _, spec in Topics().all_names())


def test_consume_without_a_topic_exits_2(tmp_path: Path) -> None:
    props = tmp_path / "client.properties"
    props.write_text("bootstrap.servers=127.0.0.1:9\n")
    result = CliRunner().invoke(cli.app, ["consume", "-F", str(props)])
    assert result.exit_code == 2 and "name at least one topic (or -L)" in result.output


def test_consume_refuses_a_properties_file_without_bootstrap(tmp_path: Path) -> None:
    props = tmp_path / "client.properties"
    props.write_text("security.protocol=PLAINTEXT\n")
    result = CliRunner().invoke(cli.app, ["consume", "-F", str(props), "-L"])
    assert result.exit_code != 0 and "bootstrap.servers" in str(result.exception or result.output)


MODELS = Path(__file__).parents[1] / "scorer" / "models"


def test_scorer_tune_prints_every_session_option_folded_to_the_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    artifact = MODELS / "credit-default-risk-1.onnx"
    result = CliRunner().invoke(cli.app, ["scorer", "tune", "--rounds", "1", str(artifact)])
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    assert "credit-default-risk-1.onnx (credit-default.v1," in result.output
    rows = [
        line
        for line in result.output.splitlines()
        if line.startswith("│") and ("on" in line or "off" in line)
    ]
    # 2 thread settings x 3 graph optimisation levels x arena on/off, each with both timings.
    assert len(rows) == 12
    assert all(len(re.findall(r"\d+\.\d", row)) == 2 for row in rows)


def test_scorer_tune_names_a_contract_it_does_not_know(tmp_path: Path) -> None:
    (tmp_path / "contracts").mkdir()
    artifact = MODELS / "credit-default-risk-1.onnx"
    result = CliRunner().invoke(
        cli.app,
        ["scorer", "tune", "--rounds", "1", "--contracts-dir", str(tmp_path / "contracts"), str(artifact)],
    )
    assert result.exit_code == 1
    assert "contract credit-default.v1 not found" in " ".join(result.output.split())
