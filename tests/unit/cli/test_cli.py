"""The ``tollgate`` CLI against the registry API (in-process app, in-memory repository)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from tests.cli_support import folded_columns
from tests.unit.registry.candidates import MODEL, candidate, candidate_event
from tests.unit.registry.test_api import KEYS, build_app
from tollgate_cli import common
from tollgate_cli import main as cli
from tollgate_core.lifecycle import (
    EvaluationReport,
    Experiment,
    FeatureImportance,
    FeatureImportanceEntry,
    TrialRecord,
)

EXPERIMENT = Experiment(
    metric="roc_auc",
    chosen=2,
    trials=[
        TrialRecord(
            number=n,
            family=family,
            hyperparameters={"random_state": 0},
            metrics={"roc_auc": auc},
            seconds=0.5,
            digest=f"{n}" * 64,
        )
        for n, family, auc in (
            (1, "logistic_regression", 0.70),
            (2, "hist_gradient_boosting-long-name", 0.72),
        )
    ],
    skipped=1,
    fit_rows=800,
    validation_rows=200,
    budget_seconds=60,
    max_rows=50_000,
)


def evaluation(*ranked: tuple[str, float]) -> EvaluationReport:
    """A report with a global feature importance ranking ``ranked`` (feature, importance)."""
    return EvaluationReport(
        holdout_rows=200,
        holdout_fraction=0.2,
        ordered_by="arrival",
        data_hash="d" * 64,
        metrics={"roc_auc": 0.71},
        feature_importance=FeatureImportance(
            metric="log_loss",
            baseline=0.31,
            rows=200,
            repeats=5,
            seed=0,
            features=[
                FeatureImportanceEntry(feature=name, importance=value, spread=value / 10)
                for name, value in ranked
            ],
        ),
    )


FEATURES_4 = (("balance", 0.412), ("income_of_the_household_in_dollars", 0.0312), ("student", 0.0007))


class SyncASGITransport(httpx.BaseTransport):
    """Runs the ASGI app on one event loop for the CLI's synchronous httpx client."""

    def __init__(self, app: FastAPI, loop: asyncio.AbstractEventLoop) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.loop = loop

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def forward() -> httpx.Response:
            sent = httpx.Request(request.method, request.url, headers=request.headers, content=request.read())
            response = await self.inner.handle_async_request(sent)
            return httpx.Response(
                response.status_code, headers=response.headers, content=await response.aread()
            )

        return self.loop.run_until_complete(forward())


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    app, core, store = build_app()
    loop = asyncio.new_event_loop()
    real_client = httpx.Client

    async def seed() -> None:
        await core.on_candidate(candidate_event(candidate("1", store=store)))
        await core.on_candidate(candidate_event(candidate("2", roc_auc=0.87, store=store)))
        await core.on_candidate(candidate_event(candidate("3", roc_auc=0.70, store=store)))
        selected = candidate("4", roc_auc=0.71, store=store).model_copy(
            update={
                "experiment": EXPERIMENT,
                "baselines": {"majority": {"roc_auc": 0.5}},
                "evaluation": evaluation(*FEATURES_4),
            }
        )
        await core.on_candidate(candidate_event(selected))

    loop.run_until_complete(seed())

    def client(base_url: str, timeout: float, headers: dict[str, str]) -> Any:
        assert base_url == "http://registry.test:8082" and timeout > 0
        return real_client(base_url=base_url, headers=headers, transport=SyncASGITransport(app, loop))

    monkeypatch.setattr(common.httpx, "Client", client)
    monkeypatch.setenv("TOLLGATE_REGISTRY_URL", "http://registry.test:8082")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("TOLLGATE_API_KEY", KEYS["frank"])
    yield CliRunner()
    loop.close()


def test_reading_commands(runner: CliRunner) -> None:
    models = runner.invoke(cli.app, ["models"])
    assert models.exit_code == 0, models.output
    assert MODEL in models.output and "canary 20%" in models.output
    versions = runner.invoke(cli.app, ["versions", MODEL])
    assert versions.exit_code == 0 and "production" in versions.output and "rejected" in versions.output
    shown = runner.invoke(cli.app, ["show", MODEL, "3"])
    assert shown.exit_code == 0, shown.output
    assert "regression:roc_auc" in shown.output and "FAIL" in shown.output
    serving = runner.invoke(cli.app, ["serving", MODEL])
    assert "production: 1" in serving.output and "staging:    2 (20% of traffic" in serving.output


def test_changing_commands_and_errors(runner: CliRunner) -> None:
    promoted = runner.invoke(
        cli.app, ["promote", MODEL, "2", "--to", "production", "--reason", "good canary"]
    )
    assert promoted.exit_code == 0, promoted.output
    assert "promoted" in promoted.output and "frank" in promoted.output and "production: 2" in promoted.output
    rolled = runner.invoke(cli.app, ["rollback", MODEL, "--reason", "alerts"])
    assert rolled.exit_code == 0 and "rolled_back" in rolled.output and "production: 1" in rolled.output
    refused = runner.invoke(cli.app, ["reject", MODEL, "1", "--reason", "x"])
    assert refused.exit_code == 1
    assert "409 Conflict: version 1 cannot go from production to rejected" in refused.output
    unknown = runner.invoke(cli.app, ["approve", "nope", "1", "--reason", "x"])
    assert unknown.exit_code == 1 and "404 Not Found: unknown model 'nope'" in unknown.output
    bad = runner.invoke(cli.app, ["promote", MODEL, "1", "--to", "moon", "--reason", "x"])
    assert bad.exit_code == 1 and "--to must be staging or production" in bad.output


def test_the_key_comes_from_the_option_or_the_environment(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    viewer = runner.invoke(cli.app, ["--api-key", KEYS["olga"], "rollback", MODEL, "--reason", "x"])
    assert viewer.exit_code == 1 and "403 Forbidden: principal 'olga'" in viewer.output
    monkeypatch.delenv("TOLLGATE_API_KEY")
    missing = runner.invoke(cli.app, ["models"])
    assert missing.exit_code == 1 and "401 Unauthorized: an API key is required" in missing.output


def test_unreachable_registry_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(cli.app, ["models", "--registry-url", "http://127.0.0.1:9"])
    assert result.exit_code == 2 and "cannot reach http://127.0.0.1:9" in result.output


@pytest.mark.parametrize(
    "command", [["models"], ["versions", MODEL], ["show", MODEL, "3"], ["show", MODEL, "4"]]
)
def test_narrow_terminals_fold_values_instead_of_cutting_them(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    result = runner.invoke(cli.app, command)
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    # Every cell is whole: a column's fragments, read top to bottom, hold each full value.
    columns = folded_columns(result.output)
    if command == ["models"]:
        assert MODEL in columns[0]
    if command == ["show", MODEL, "4"]:
        assert any("income_of_the_household_in_dollars" in c for c in columns.values())


def test_show_lists_the_trials_and_baselines_and_compare_puts_two_versions_side_by_side(
    runner: CliRunner,
) -> None:
    shown = runner.invoke(cli.app, ["show", MODEL, "4"])
    assert shown.exit_code == 0, shown.output
    assert "champion selection by roc_auc" in shown.output and "2 chosen" in shown.output
    assert "1 trial(s) left out by the time budget" in shown.output
    assert "baselines (holdout)" in shown.output and "majority" in shown.output
    assert "feature importance" in shown.output
    assert "importance: increase of log_loss (from 0.3100) when the feature is shuffled" in shown.output
    ranked = [line.split("│")[1:4] for line in shown.output.splitlines() if line.count("│") == 5]
    ranks = [[cell.strip() for cell in row] for row in ranked if row[1].strip() in dict(FEATURES_4)]
    assert ranks == [
        ["1", "balance", "0.4120"],
        ["2", FEATURES_4[1][0], "0.0312"],
        ["3", "student", "0.0007"],
    ]
    unmeasured = runner.invoke(cli.app, ["show", MODEL, "3"])
    assert "feature importance" not in unmeasured.output  # a version stored before it was measured
    both = runner.invoke(cli.app, ["compare", MODEL, "3", "4"])
    assert both.exit_code == 0, both.output
    assert "top features (global importance on each holdout)" in both.output
    top = next(line for line in both.output.splitlines() if "balance" in line)
    assert [cell.strip() for cell in top.split("│")[1:4]] == ["1", "", "balance"]
    compared = runner.invoke(cli.app, ["compare", MODEL, "1", "2"])
    assert compared.exit_code == 0, compared.output
    assert "1 vs 2" in compared.output and "roc_auc" in compared.output
    row = next(line for line in compared.output.splitlines() if "roc_auc" in line)
    assert "0.8600" in row and "0.8700" in row and "0.0100" in row and row.rstrip(" │").endswith("b")
    assert "top features" not in compared.output  # neither version has a measured importance
    missing = runner.invoke(cli.app, ["compare", MODEL, "1", "9"])
    assert missing.exit_code == 1 and "404 Not Found" in missing.output
