"""``tollgate``: the platform's command line. The model commands talk to the registry's HTTP API
(``TOLLGATE_REGISTRY_URL``, default http://127.0.0.1:8082; ``runs``: the trainer's) and print tables that
fold, never cut, on a narrow terminal. Every call sends the API
key from ``--api-key`` (before the command: ``tollgate --api-key tgk_... promote ...``) or
``TOLLGATE_API_KEY``; the registry records its principal as the actor. ``tollgate keys`` manages the keys.

Each command group is a module of this package (``contracts``, ``keys``, ``audit``, ``dlq``; ``admin`` for the
broker's topics and ACLs and ``consume``; ``dev`` for the generated schemas and their history; ``run`` for
``scorer tune`` and ``demo``, which import the package they run only when they run) added to the same
:data:`app` with ``app.add_typer(group, name=...)``; :mod:`tollgate_cli.common` holds what they share, so every command reports HTTP errors the same way (the server's message, exit status 1; exit status
2 when the service cannot be reached).
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer

from tollgate_cli.admin import admin_app, consume
from tollgate_cli.audit import audit_app
from tollgate_cli.common import call, console, fail, group
from tollgate_cli.common import table as cli_table
from tollgate_cli.contracts import ApiKey, contracts_app, register_files
from tollgate_cli.dev import dev_app
from tollgate_cli.dlq import dlq_app
from tollgate_cli.keys import keys_app
from tollgate_cli.run import demo, scorer_app

DEFAULT_REGISTRY_URL = "http://127.0.0.1:8082"
DEFAULT_TRAINER_URL = "http://127.0.0.1:8086"
TOP_FEATURES = 5  # tollgate compare: features ranked per version

app = group("tollgate", "tollgate: models, versions, promotions, approvals and rollbacks.")

RegistryUrl = Annotated[
    str, typer.Option("--registry-url", envvar="TOLLGATE_REGISTRY_URL", help="Base URL of the registry API.")
]
TrainerUrl = Annotated[
    str, typer.Option("--trainer-url", envvar="TOLLGATE_TRAINER_URL", help="Base URL of the trainer API.")
]
Model = Annotated[str, typer.Argument(help="Model name, e.g. credit-default-risk.")]
Version = Annotated[str, typer.Argument(help="Model version.")]
Reason = Annotated[str, typer.Option("--reason", help="Why: recorded with the change and published.")]

# The key every HTTP call sends (set by the --api-key option or TOLLGATE_API_KEY).
_credentials: dict[str, str | None] = {"api_key": None}


@app.callback()
def main(
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="TOLLGATE_API_KEY",
            help="API key sent to the services (X-API-Key); its principal is recorded as the actor.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """tollgate: models, versions, promotions, approvals and rollbacks; API keys."""
    _credentials["api_key"] = api_key
    if api_key:
        # Command groups of other packages (tollgate dlq ...) read TOLLGATE_API_KEY when their own
        # options are parsed, which happens after this callback.
        os.environ["TOLLGATE_API_KEY"] = api_key


def request(
    method: str,
    base_url: str,
    path: str,
    body: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
) -> Any:
    """Call a tollgate HTTP API with the key; a non-2xx answer ends the command with the server's message."""
    return call(method, base_url, path, key=_credentials["api_key"], timeout=30.0, json=body, params=params)


def _time(value: str | None) -> str:
    return "" if not value else value.replace("T", " ")[:19]


def _num(value: Any) -> str:
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _stage(stage: str | None) -> str:
    colours = {
        "production": "bold green",
        "staging": "yellow",
        "rejected": "red",
        "archived": "dim",
        "candidate": "cyan",
    }
    return "" if not stage else f"[{colours.get(stage, 'white')}]{stage}[/]"


def _print_action(result: dict[str, Any]) -> None:
    table = cli_table(
        f"{result['model']}: changes", ("version", "transition", "from → to", "actor", "reason")
    )
    for c in result["changes"]:
        table.add_row(
            c["version"],
            c["transition"],
            f"{c['from_stage'] or 'new'} → {_stage(c['to_stage'])}",
            c["actor"],
            c["reason"],
        )
    console.print(table)
    console.print(
        f"production: [bold]{result['production_version'] or '-'}[/]   "
        f"staging: [bold]{result['staging_version'] or '-'}[/]"
    )


models_app = typer.Typer(
    name="models",
    help="List models (no command), register catalog entries (tollgate models register FILE) or submit a "
    "model built outside the platform (tollgate models submit MODEL --onnx FILE).",
    invoke_without_command=True,
    add_completion=False,
)


@models_app.callback()
def models(ctx: typer.Context, registry_url: RegistryUrl = DEFAULT_REGISTRY_URL) -> None:
    """List models with their production and staging versions (or run a command: register, submit)."""
    if ctx.invoked_subcommand is None:
        list_models(registry_url)


@models_app.command("register")
def register_models(
    files: Annotated[list[str], typer.Argument(help="Model catalog YAML files.")],
    registry_url: RegistryUrl = DEFAULT_REGISTRY_URL,
    api_key: ApiKey = None,
) -> None:
    """Register model catalog entries with the registry (checked against their registered contract);
    the trainer, registry, scorer and monitor apply them without a restart."""
    from pathlib import Path

    register_files([Path(f) for f in files], "/v1/models", registry_url, api_key or _credentials["api_key"])


@models_app.command("submit")
def submit_model(
    model: Model,
    onnx: Annotated[str, typer.Option("--onnx", help="The ONNX model file (what serves).")],
    notes: Annotated[str, typer.Option("--notes", help="What the model is and how it was built.")],
    sklearn: Annotated[
        str | None,
        typer.Option("--sklearn", help="Its scikit-learn pipeline as a skops file (never a pickle): parity."),
    ] = None,
    code_reference: Annotated[
        str | None, typer.Option("--code", help="Where the training code is, e.g. git URL@commit.")
    ] = None,
    parameters: Annotated[
        str | None, typer.Option("--parameters", help="Training parameters, a JSON object.")
    ] = None,
    training_data: Annotated[
        str | None, typer.Option("--training-data", help="The training data you used (declared).")
    ] = None,
    family: Annotated[
        str | None, typer.Option("--family", help="Model family, e.g. logistic_regression or random_forest.")
    ] = None,
    trainer_url: TrainerUrl = DEFAULT_TRAINER_URL,
) -> None:
    """Submit a model built outside the platform (role data-scientist). The trainer checks it against the
    model's contract, evaluates it on the platform's own holdout and offers it to the registry, whose gates,
    risk tier and rollout then decide (tollgate show MODEL VERSION)."""
    from pathlib import Path

    files: dict[str, Any] = {"onnx": (Path(onnx).name, Path(onnx).read_bytes(), "application/octet-stream")}
    if sklearn is not None:
        files["sklearn"] = (Path(sklearn).name, Path(sklearn).read_bytes(), "application/octet-stream")
    fields = {
        "notes": notes,
        "code_reference": code_reference,
        "parameters": parameters,
        "training_data": training_data,
        "family": family,
    }
    result = call(
        "POST",
        trainer_url,
        f"/v1/models/{model}/submissions",
        key=_credentials["api_key"],
        timeout=600.0,  # the upload and the evaluation on the holdout
        files=files,
        data={k: v for k, v in fields.items() if v is not None},
    )
    table = cli_table(f"{model}: submission {result['submission_id']}", ("field", "value"))
    for name in ("version", "status", "submitted_by", "artifact_digest", "evaluation_digest", "holdout_rows"):
        table.add_row(name, str(result.get(name)))
    for metric, value in sorted(result["metrics"].items()):
        table.add_row(metric, _num(value))
    parity = result.get("parity")
    table.add_row("parity", "not checked (no --sklearn)" if parity is None else str(parity["passed"]))
    console.print(table)
    console.print(f"the registry gates it now: tollgate show {model} {result['version']}")


def list_models(registry_url: str) -> None:
    """List models with their production and staging versions."""
    table = cli_table("models", ("model", "production", "staging", "versions", "rollout", "contract"))
    for m in request("GET", registry_url, "/v1/models"):
        rollout = m["rollout"] or {}
        mode = rollout.get("mode", "")
        if mode == "canary":
            mode += " (shadow)" if rollout.get("shadow") else f" {rollout.get('canary_weight', 0):.0%}"
        table.add_row(
            m["model"],
            m["production_version"] or "-",
            m["staging_version"] or "-",
            str(m["versions"]),
            mode,
            m["contract"] or "(not in catalog)",
        )
    console.print(table)


@app.command("versions")
def list_versions(model: Model, registry_url: RegistryUrl = DEFAULT_REGISTRY_URL) -> None:
    """List a model's versions, oldest first."""
    versions = request("GET", registry_url, f"/v1/models/{model}/versions")
    metric_names = sorted({k for v in versions for k in v["metrics"]} - {"count"})[:6]
    table = cli_table(
        f"{model}: versions", ("version", "stage", "gates", "registered", *metric_names), metric_names
    )
    for v in versions:
        table.add_row(
            v["version"],
            _stage(v["stage"]),
            "[green]pass[/]" if v["gates_passed"] else "[red]fail[/]",
            _time(v["registered_at"]),
            *(_num(v["metrics"].get(m)) for m in metric_names),
        )
    console.print(table)


@app.command("show")
def show_version(model: Model, version: Version, registry_url: RegistryUrl = DEFAULT_REGISTRY_URL) -> None:
    """Show a version: stage, gates, metrics, lineage and every transition."""
    v = request("GET", registry_url, f"/v1/models/{model}/versions/{version}")
    lineage = v["lineage"]
    console.print(
        f"[bold]{model} {version}[/]  {_stage(v['stage'])}  task={v['task']}  contract={v['contract']}"
    )
    console.print(f"artifact sha256:{v['artifact']['digest']} ({v['artifact']['size_bytes']} bytes)")
    console.print(
        f"run {v['run_id']}, trained {_time(v['trained_at'])}, family {lineage['family']}, "
        f"{lineage['row_count']} rows, data {lineage['data_hash'][:16]}, code {lineage['code_version']}"
    )
    if v.get("submission"):
        s = v["submission"]
        console.print(
            f"submitted by [bold]{s['submitted_by']}[/] (file sha256:{s['onnx_digest']}"
            f"{', with a skops pipeline' if s.get('sklearn_digest') else ''}): {s['notes']}"
        )
    if v.get("evaluation_digest"):
        console.print(
            f"evaluated by the platform on {v['evaluation']['holdout_rows']} holdout rows, report "
            f"sha256:{v['evaluation_digest']}; approvals approve gate report sha256:{v['gate_report_digest']}"
        )
    if v.get("approval"):
        a = v["approval"]
        console.print(f"approved by [bold]{a['by']}[/] at {_time(a['at'])}: {a['reason']}")

    gates = cli_table("gates", ("gate", "result", "observed", "threshold", "detail"))
    for g in v["gates"]:
        gates.add_row(
            g["gate"],
            "[green]pass[/]" if g["passed"] else "[red]FAIL[/]",
            _num(g.get("observed")),
            _num(g.get("threshold")),
            g["detail"],
        )
    console.print(gates)

    metrics = cli_table("holdout metrics", ("metric", "value"), ("value",))
    for name, value in sorted(v["metrics"].items()):
        metrics.add_row(name, _num(value))
    console.print(metrics)
    importance = _importance_of(v)
    if importance:
        _print_importance(importance)
    if v.get("baselines"):
        names = sorted(v["baselines"])
        baselines = cli_table("baselines (holdout)", ("metric", *names), names)
        for name in sorted({m for b in v["baselines"].values() for m in b} - {"count"}):
            baselines.add_row(name, *(_num(v["baselines"][b].get(name)) for b in names))
        console.print(baselines)
    if v.get("experiment"):
        _print_experiment(v["experiment"])

    history = cli_table("transitions", ("at", "transition", "from → to", "actor", "reason"))
    for t in v["transitions"]:
        history.add_row(
            _time(t["at"]),
            t["transition"],
            f"{t['from_stage'] or 'new'} → {_stage(t['to_stage'])}",
            t["actor"],
            t["reason"],
        )
    console.print(history)


def _print_importance(importance: dict[str, Any]) -> None:
    """The version's global feature importance, most important first (a folding table: any width)."""
    ranked = cli_table(
        "feature importance", ("rank", "feature", "importance", "spread"), ("rank", "importance", "spread")
    )
    for rank, f in enumerate(importance["features"], 1):
        ranked.add_row(str(rank), f["feature"], _num(f["importance"]), _num(f["spread"]))
    console.print(ranked)
    console.print(
        f"importance: increase of {importance['metric']} (from {_num(importance['baseline'])}) when the "
        f"feature is shuffled, permutation on {importance['rows']} holdout rows; spread: its standard "
        f"deviation over {importance['repeats']} repeats"
    )


def _importance_of(v: dict[str, Any]) -> dict[str, Any] | None:
    """A version's global feature importance from its evaluation report (None when not measured)."""
    importance: dict[str, Any] | None = (v.get("evaluation") or {}).get("feature_importance")
    return importance


def _top_features(v: dict[str, Any], k: int) -> list[str]:
    importance = _importance_of(v)
    return [f["feature"] for f in importance["features"][:k]] if importance else []


def _print_experiment(experiment: dict[str, Any]) -> None:
    metric = experiment["metric"]
    trials = cli_table(
        f"champion selection by {metric} (validation split: {experiment['fit_rows']} rows fitted, "
        f"{experiment['validation_rows']} measured)",
        ("trial", "family", "hyperparameters", metric, "seconds", "digest"),
        (metric, "seconds"),
    )
    for t in experiment["trials"]:
        mark = " [bold green]chosen[/]" if t["number"] == experiment["chosen"] else ""
        params = ", ".join(f"{k}={v}" for k, v in sorted(t["hyperparameters"].items()))
        trials.add_row(
            f"{t['number']}{mark}",
            t["family"],
            params,
            _num(t["metrics"].get(metric)),
            f"{t['seconds']:.2f}",
            t["digest"][:12],
        )
    console.print(trials)
    if experiment["skipped"]:
        console.print(f"{experiment['skipped']} trial(s) left out by the time budget")


@app.command("compare")
def compare(
    model: Model,
    a: Annotated[str, typer.Argument(help="The first version.")],
    b: Annotated[str, typer.Argument(help="The second version.")],
    registry_url: RegistryUrl = DEFAULT_REGISTRY_URL,
) -> None:
    """Two versions side by side: metrics (which is better), gates, training data and parameters."""
    c = request("GET", registry_url, f"/v1/models/{model}/compare", params={"a": a, "b": b})
    metrics = cli_table(f"{model}: {a} vs {b}", ("metric", a, b, "b - a", "better"), (a, b, "b - a"))
    for name, m in c["metrics"].items():
        metrics.add_row(name, _num(m["a"]), _num(m["b"]), _num(m["delta"]), m["better"] or "")
    console.print(metrics)

    def passed(value: bool | None) -> str:
        return "" if value is None else "[green]pass[/]" if value else "[red]FAIL[/]"

    gates = cli_table("gates", ("gate", a, b))
    for name, g in c["gates"].items():
        gates.add_row(name, passed(g["a"]), passed(g["b"]))
    console.print(gates)
    differences = cli_table("what differs", ("field", a, b))
    for d in c["differences"]:
        differences.add_row(d["field"], str(d["a"]), str(d["b"]))
    console.print(differences if c["differences"] else "same data, parameters, code and libraries")
    tops = [
        _top_features(request("GET", registry_url, f"/v1/models/{model}/versions/{v}"), TOP_FEATURES)
        for v in (a, b)
    ]
    if any(tops):
        features = cli_table("top features (global importance on each holdout)", ("rank", a, b), ("rank",))
        for rank in range(max(len(t) for t in tops)):
            features.add_row(str(rank + 1), *(t[rank] if rank < len(t) else "" for t in tops))
        console.print(features)


@app.command("runs")
def runs(
    model: Annotated[str | None, typer.Argument(help="Only this model's runs.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many runs, newest first.")] = 20,
    trainer_url: TrainerUrl = DEFAULT_TRAINER_URL,
) -> None:
    """Training runs, newest first, and the trials of each run's champion selection (the experiments)."""
    params: dict[str, Any] = {"limit": limit} | ({"model": model} if model else {})
    found = request("GET", trainer_url, "/v1/runs", params=params)
    table = cli_table("training runs", ("model", "version", "status", "trigger", "started", "rows", "trials"))
    for r in found:
        experiment = r.get("experiment")
        table.add_row(
            r["model"],
            str(r["version"]),
            r["status"],
            r["trigger"],
            _time(r["started_at"]),
            "" if r["row_count"] is None else str(r["row_count"]),
            str(len(experiment["trials"])) if experiment else "",
        )
    console.print(table)
    for r in found:
        if r.get("experiment"):
            console.print(f"[bold]{r['model']} {r['version']}[/]")
            _print_experiment(r["experiment"])


@app.command("serving")
def serving(model: Model, registry_url: RegistryUrl = DEFAULT_REGISTRY_URL) -> None:
    """Show what serves now: the production version and the staging version with its traffic share."""
    s = request("GET", registry_url, f"/v1/models/{model}/production")
    production, staging = s["production"], s["staging"]
    console.print(f"production: [bold]{production['version'] if production else '-'}[/]")
    if staging:
        share = "shadow" if s["shadow"] else f"{s['canary_weight']:.0%} of traffic"
        until = f", promoted at {_time(s['canary_until'])}" if s["canary_until"] else ", awaiting approval"
        console.print(f"staging:    [bold]{staging['version']}[/] ({share}{until})")
    else:
        console.print("staging:    -")


@app.command("promote")
def promote(
    model: Model,
    version: Version,
    to: Annotated[str, typer.Option("--to", help="staging or production.")],
    reason: Reason,
    registry_url: RegistryUrl = DEFAULT_REGISTRY_URL,
) -> None:
    """Promote a version to staging or production."""
    if to not in ("staging", "production"):
        fail(f"--to must be staging or production, not {to!r}")
    _print_action(
        request(
            "POST",
            registry_url,
            f"/v1/models/{model}/versions/{version}/promote",
            {"to": to, "reason": reason},
        )
    )


@app.command("approve")
def approve(
    model: Model,
    version: Version,
    reason: Reason,
    registry_url: RegistryUrl = DEFAULT_REGISTRY_URL,
) -> None:
    """Approve a staging version into production."""
    _decide("approve", model, version, reason, registry_url)


@app.command("reject")
def reject(
    model: Model,
    version: Version,
    reason: Reason,
    registry_url: RegistryUrl = DEFAULT_REGISTRY_URL,
) -> None:
    """Reject a candidate or staging version."""
    _decide("reject", model, version, reason, registry_url)


def _decide(decision: str, model: str, version: str, reason: str, registry_url: str) -> None:
    """POST .../versions/VERSION/approve or /reject with the reason, and print the changes."""
    path = f"/v1/models/{model}/versions/{version}/{decision}"
    _print_action(request("POST", registry_url, path, {"reason": reason}))


@app.command("rollback")
def rollback(model: Model, reason: Reason, registry_url: RegistryUrl = DEFAULT_REGISTRY_URL) -> None:
    """Return production to the previous production version."""
    _print_action(request("POST", registry_url, f"/v1/models/{model}/rollback", {"reason": reason}))


app.add_typer(models_app, name="models")
app.add_typer(keys_app, name="keys")
app.add_typer(contracts_app, name="contracts")

app.add_typer(audit_app, name="audit")
app.add_typer(dlq_app, name="dlq")
app.add_typer(admin_app, name="admin")
app.command("consume")(consume)
app.add_typer(scorer_app, name="scorer")
app.add_typer(dev_app, name="dev")
app.command("demo")(demo)

if __name__ == "__main__":
    app()
