"""Benchmark: what an explanation costs per request, for the logistic-regression and random-forest models.

Usage::

    python tests/bench/bench_explain.py [--rounds 7] [--requests 300] [--permutations 32]
        [--ab-baseline-ref b3bd405 | --no-ab] [--out .local/bench/explain.json]

No broker or database: the scorer's request path (:meth:`tollgate_scorer.core.Scorer.score`, the call every
transport makes, inference log off) is timed in this process on one-row requests. Models: the trainer's
``train_model`` on 20,000 rows of the 20-feature ``synthetic-risk`` contract, a logistic regression (exact
attributions: one extra run of the graph with its preprocessed input as an output) and a 100-tree forest of
depth 8 (sampled Shapley values: ``permutations x 19 + 1`` coalition rows scored in one run per request).

Each round times, per model, the same requests with ``explain`` off and on, the order alternating from round to
round; reported per model: median microseconds per request of each, the cost of an explanation (on - off) and
the ratio on/off, medians over rounds. Printed and written to ``.local/bench/explain.json``, never asserted.

Then (unless ``--no-ab``; needs Kafka and PostgreSQL, which ``make bench`` starts) the scorer's requests/s
with explanations off against the tree before explanations (``--ab-baseline-ref``, default ``b3bd405``, the
main branch before them): ``bench_scorer_ab.py --baseline-ref b3bd405 --target 0.98`` (HTTP servers under
wrk, alternating rounds, inference log on), its result in ``.local/bench/explain_ab.json``; its target
``>= 0.98x`` is reported here as met or not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1].parent
sys.path.insert(0, str(ROOT))

from tollgate_core.contracts import ContractRegistry, load_contract  # noqa: E402
from tollgate_core.paths import schemas_dir  # noqa: E402
from tollgate_demo.datasets import generate_records  # noqa: E402
from tollgate_scorer.core import Scorer, ScoringStats  # noqa: E402
from tollgate_scorer.model import ServingModel, SessionConfig, load_serving_model  # noqa: E402
from tollgate_scorer.routing import ModelRoute, ModelTable  # noqa: E402
from tollgate_trainer.train import TrainingConfig, train_model  # noqa: E402

AB_BASELINE_REF = "b3bd405"  # main before explanations
AB_TARGET = 0.98

FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "logistic_regression": ("logistic_regression", {}),
    "random_forest": ("random_forest", {"n_estimators": 100, "max_depth": 8, "min_samples_leaf": 10}),
}


def serving(name: str, family: str, overrides: dict[str, Any], permutations: int) -> ServingModel:
    contract = load_contract(schemas_dir() / "datasets" / "synthetic-risk.v1.yaml")
    records = generate_records(contract, 20_000, seed=7)
    config = TrainingConfig(family=family, hyperparameters=overrides, seed=7, threads=1)  # type: ignore[arg-type]
    result = train_model(contract, records, config)
    return load_serving_model(
        name,
        "1",
        result.digest,
        result.onnx,
        contracts=ContractRegistry([contract]),
        expected_contract=None,
        config=SessionConfig(),
        pii_key=b"k" * 32,
        warmup_rounds=20,
        explain_permutations=permutations,
    )


def time_requests(scorer: Scorer, name: str, rows: list[dict[str, Any]], explain: bool) -> float:
    """Microseconds per one-row request."""
    start = time.perf_counter()
    for row in rows:
        scorer.score(name, [row], "http", explain=explain)
    return (time.perf_counter() - start) / len(rows) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--permutations", type=int, default=32)
    parser.add_argument("--out", type=Path, default=ROOT / ".local" / "bench" / "explain.json")
    parser.add_argument("--ab-baseline-ref", default=AB_BASELINE_REF)
    parser.add_argument("--ab-rounds", type=int, default=5)
    parser.add_argument("--no-ab", action="store_true", help="skip the A/B run against the tree before")
    args = parser.parse_args()

    table = ModelTable()
    models: dict[str, ServingModel] = {}
    for key, (family, overrides) in FAMILIES.items():
        print(f"training {key} ...", flush=True)
        model = serving(f"risk-{key}", family, overrides, args.permutations)
        assert model.explainer is not None, model.explain_error
        models[key] = model
        table.set(ModelRoute(name=model.name, production=model, staging=None))
    scorer = Scorer(table, None, ScoringStats())
    contract = next(iter(models.values())).contract
    label = contract.label.name
    rows = [
        {k: v for k, v in r.items() if k != label} for r in generate_records(contract, args.requests, seed=11)
    ]

    samples: dict[str, dict[str, list[float]]] = {k: {"off": [], "on": []} for k in models}
    for model in models.values():  # warm-up
        time_requests(scorer, model.name, rows[:50], False)
        time_requests(scorer, model.name, rows[:50], True)
    for round_ in range(args.rounds):
        for key, model in models.items():
            order = [False, True] if round_ % 2 == 0 else [True, False]
            for explain in order:
                samples[key]["on" if explain else "off"].append(
                    time_requests(scorer, model.name, rows, explain)
                )

    report: dict[str, Any] = {
        "benchmark": "explain",
        "at": datetime.now(UTC).isoformat(),
        "rounds": args.rounds,
        "requests_per_round": args.requests,
        "permutations": args.permutations,
        "features": len(contract.features),
        "load": os.getloadavg(),
        "models": {},
    }
    print(f"\nper one-row request, median of {args.rounds} rounds x {args.requests} requests (Scorer.score)")
    print(f"{'model':<22}{'off us':>10}{'on us':>10}{'cost us':>10}{'on/off':>8}  method")
    for key, model in models.items():
        off = statistics.median(samples[key]["off"])
        on = statistics.median(samples[key]["on"])
        costs = [b - a for a, b in zip(samples[key]["off"], samples[key]["on"], strict=True)]
        ratios = [b / a for a, b in zip(samples[key]["off"], samples[key]["on"], strict=True)]
        explainer = model.explainer
        assert explainer is not None
        entry = {
            "method": explainer.method,
            "off_us": off,
            "on_us": on,
            "cost_us_median_of_rounds": statistics.median(costs),
            "ratio_on_off_median_of_rounds": statistics.median(ratios),
            "samples": samples[key],
        }
        coalitions = getattr(explainer, "coalitions_per_row", None)
        if coalitions is not None:
            entry["coalition_rows_per_request"] = coalitions
        report["models"][key] = entry
        print(
            f"{key:<22}{off:>10.1f}{on:>10.1f}{entry['cost_us_median_of_rounds']:>10.1f}"
            f"{entry['ratio_on_off_median_of_rounds']:>8.2f}  {explainer.method}"
            + (f" ({coalitions} rows per request)" if coalitions else "")
        )
    print(f"load average: {report['load']}")
    report["headline"] = {
        f"{key}.{name}": entry[name]
        for key, entry in report["models"].items()
        for name in ("off_us", "on_us", "cost_us_median_of_rounds")
    }
    if not args.no_ab:
        report["ab"] = ab_run(args.ab_baseline_ref, args.ab_rounds, args.out.parent / "explain_ab.json")
        if report["ab"] is not None:
            report["targets"] = report["ab"].get("targets", [])
            report["headline"].update(report["ab"].get("headline", {}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"written {args.out}")
    return 0


def ab_run(ref: str, rounds: int, out: Path) -> dict[str, Any] | None:
    """The scorer's requests/s with explanations off against ``ref`` (bench_scorer_ab.py, same run)."""
    command = [
        sys.executable,
        str(ROOT / "tests" / "bench" / "bench_scorer_ab.py"),
        "--baseline-ref",
        ref,
        "--target",
        str(AB_TARGET),
        "--rounds",
        str(rounds),
        "--out",
        str(out),
    ]
    print("\n" + " ".join(command), flush=True)
    if subprocess.run(command, cwd=ROOT, check=False).returncode != 0:
        print("the A/B run failed; see its output above")
        return None
    result: dict[str, Any] = json.loads(out.read_text())
    return result


if __name__ == "__main__":
    raise SystemExit(main())
