"""Drift computation: the monitor's vectorised drift vs Evidently's data-drift report, on the same data.

Data: the synthetic-risk contract (20 features: 10 numbers, 5 integers, 4 categories, 1 boolean). The
reference is 10,000 generated rows; the shared test set is 8 windows of 10,000 rows each, some drawn from
the training distribution, some with drift injected into chosen features (strong, or so small it is
harmless), 160 (window, feature) verdicts in all.

How the two are made comparable:

* Same decision rules. The monitor decides on PSI >= 0.2 for numbers and Jensen-Shannon distance >= 0.1
  for categories and booleans; Evidently's DataDriftPreset is configured with ``num_method="psi",
  num_threshold=0.2, cat_method="jensenshannon", cat_threshold=0.1`` and told the column types explicitly.
* Same reference data. The monitor's reference profile is built from the 10,000 reference rows with the
  trainer's own profiling code (``tollgate_trainer.reference.summarize_field``); Evidently gets the rows.
* What still differs, by design: the monitor bins numbers with the reference's 10 equal-frequency bins
  (that is all a reference profile keeps), Evidently with equal-width Sturges bins over reference and
  current together (or one bin per value below 21 distinct values). The test set therefore avoids
  borderline shifts; agreement is reported per (window, feature), with both statistics side by side.

Timing, median of repeated runs, one window with drift:

* ``tollgate``: from the window's records (dicts, as the monitor receives them) to per-feature verdicts:
  building the matrices, binning, PSI / JS / chi-square / Wasserstein for all 20 features.
* ``tollgate_from_counts``: the statistics alone from the bin counts, which is the monitor's actual cost at
  a window's close (records are counted batch by batch as they arrive).
* ``evidently``: ``Dataset.from_pandas`` + ``Report([DataDriftPreset(...)]).run`` from a ready DataFrame,
  in its own virtualenv (``.local/bench/evidently-venv``, created from ``evidently-requirements.txt``).

Targets: tollgate <= 50 ms per window, >= 10x faster than Evidently, identical verdicts. Results are written
to ``.local/bench/drift.json``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tollgate_core.contracts import ContractRegistry, FieldType  # noqa: E402
from tollgate_core.reference import ReferenceProfile  # noqa: E402
from tollgate_demo.datasets import generate_records  # noqa: E402
from tollgate_monitor.drift import Layout, feature_drift  # noqa: E402

OUT = ROOT / ".local" / "bench" / "drift.json"
VENV = ROOT / ".local" / "bench" / "evidently-venv"
REQUIREMENTS = Path(__file__).with_name("evidently-requirements.txt")
RUNNER = Path(__file__).parent / "drift" / "evidently_runner.py"
STAMP = ".tollgate-requirements.sha256"
ROWS = 10_000
PSI_THRESHOLD = 0.2
JS_THRESHOLD = 0.1
REPEATS_OURS = 50
REPEATS_EVIDENTLY = 7

# (name, drift) per window: strengths in standard deviations (numbers), tilt (categories), log-odds (boolean).
WINDOWS: list[tuple[str, dict[str, float]]] = [
    ("training distribution", {}),
    ("training distribution, another sample", {}),
    (
        "strong numeric drift",
        {
            "credit_utilization": 1.0,
            "debt_to_income": -1.2,
            "credit_score": 1.5,
            "num_late_payments_12m": 1.0,
        },
    ),
    (
        "category and boolean drift",
        {"employment_type": 1.5, "housing": -1.5, "channel": 2.0, "autopay_enabled": 1.5},
    ),
    (
        "tiny harmless shifts",
        {
            "credit_utilization": 0.1,
            "loan_amount": -0.1,
            "interest_rate": 0.1,
            "employment_type": 0.2,
            "housing": 0.2,
        },
    ),
    (
        "mixed drift",
        {
            "annual_income": 1.2,
            "savings_balance": -1.0,
            "account_age_months": 1.0,
            "loan_purpose": 1.5,
            "num_open_accounts": 1.0,
        },
    ),
    (
        "drift everywhere",
        {
            "avg_monthly_spend": 1.0,
            "payment_to_income": 1.0,
            "revolving_balance": -1.0,
            "interest_rate": 1.0,
            "months_since_last_delinquency": 1.0,
            "num_credit_inquiries_6m": 1.0,
            "housing": 1.5,
            "channel": -2.0,
        },
    ),
    ("training distribution, third sample", {}),
]
TIMING_WINDOW = 2


def reference_profile(contract: Any, records: list[dict[str, Any]]) -> ReferenceProfile:
    """The trainer's profile of ``records`` (its own code), without training a model."""
    import pandas as pd

    from tollgate_trainer.reference import summarize_field, summarize_numeric

    frame = pd.DataFrame(records)
    return ReferenceProfile(
        contract=contract.schema_id,
        row_count=len(records),
        features={f.name: summarize_field(f, frame[f.name]) for f in contract.features},
        prediction=summarize_numeric(np.linspace(0, 1, 101)),
    )


def ensure_venv() -> Path:
    """Evidently's interpreter, (re)creating its virtualenv when the requirements changed."""
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    python = VENV / "bin" / "python"
    stamp = VENV / STAMP
    if python.is_file() and stamp.is_file() and stamp.read_text().strip() == wanted:
        return python
    print(f"creating Evidently's virtualenv in {VENV.relative_to(ROOT)} ...", flush=True)
    shutil.rmtree(VENV, ignore_errors=True)
    base = getattr(sys, "_base_executable", sys.executable)
    made = subprocess.run([base, "-m", "venv", str(VENV)], check=False, capture_output=True)
    uv = shutil.which("uv")
    if made.returncode != 0 or not python.is_file():
        # Debian's Python has no ensurepip without python3-venv; uv (which builds the project's
        # environment) makes the same virtualenv without it.
        if uv is None:
            raise RuntimeError(f"{base} -m venv failed: install Debian's python3-venv package (or uv)")
        shutil.rmtree(VENV, ignore_errors=True)
        subprocess.run([uv, "venv", "--quiet", "--seed", "--python", base, str(VENV)], check=True)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(REQUIREMENTS),
        ],
        check=True,
    )
    stamp.write_text(wanted + "\n")
    return python


def columns_of(records: list[dict[str, Any]], names: list[str]) -> dict[str, list[Any]]:
    return {n: [r.get(n) for r in records] for n in names}


def ours(layout: Layout, records: list[dict[str, Any]]) -> Any:
    numeric = layout.numeric.count(layout.numeric_matrix(records))
    category = layout.category.count(layout.category_columns(records))
    return feature_drift(layout, numeric, category, PSI_THRESHOLD, JS_THRESHOLD)


def median_ms(fn: Any, repeats: int) -> tuple[float, list[float]]:
    fn()
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs), runs


def main() -> None:
    contract = ContractRegistry.from_directory().get("synthetic-risk.v1")
    assert contract is not None
    numeric = [f.name for f in contract.features if f.type in (FieldType.NUMBER, FieldType.INTEGER)]
    categorical = [f.name for f in contract.features if f.type in (FieldType.CATEGORY, FieldType.BOOLEAN)]
    names = numeric + categorical
    print(
        f"data: reference {ROWS:,} rows, {len(WINDOWS)} windows of {ROWS:,} rows x {len(names)} features",
        flush=True,
    )
    reference_records = generate_records(contract, ROWS, seed=1)
    windows = [
        generate_records(contract, ROWS, seed=100 + i, drift=drift) for i, (_, drift) in enumerate(WINDOWS)
    ]
    layout = Layout.from_reference(reference_profile(contract, reference_records))

    # --- tollgate
    tables = [ours(layout, w) for w in windows]
    timing = windows[TIMING_WINDOW]
    ours_ms, ours_runs = median_ms(lambda: ours(layout, timing), REPEATS_OURS)
    counts = (
        layout.numeric.count(layout.numeric_matrix(timing)),
        layout.category.count(layout.category_columns(timing)),
    )
    counts_ms, _ = median_ms(
        lambda: feature_drift(layout, *counts, PSI_THRESHOLD, JS_THRESHOLD), REPEATS_OURS * 4
    )
    print(f"tollgate: {ours_ms:.2f} ms per window from records, {counts_ms:.3f} ms from counts", flush=True)

    # --- Evidently, in its own virtualenv
    python = ensure_venv()
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "spec.json"
        result_path = Path(tmp) / "result.json"
        spec.write_text(
            json.dumps(
                {
                    "numeric": numeric,
                    "categorical": categorical,
                    "psi_threshold": PSI_THRESHOLD,
                    "js_threshold": JS_THRESHOLD,
                    "timing_window": TIMING_WINDOW,
                    "repeats": REPEATS_EVIDENTLY,
                    "reference": columns_of(reference_records, names),
                    "windows": [columns_of(w, names) for w in windows],
                }
            )
        )
        print("evidently: running its data-drift report ...", flush=True)
        subprocess.run([str(python), str(RUNNER), str(spec), str(result_path)], check=True)
        peer = json.loads(result_path.read_text())
    evidently_ms = statistics.median(peer["seconds"]) * 1000

    # --- verdicts side by side
    rows = []
    for i, ((label, drift), table) in enumerate(zip(WINDOWS, tables, strict=True)):
        ev = peer["windows"][i]
        for j, name in enumerate(table.names):
            rows.append(
                {
                    "window": i,
                    "scenario": label,
                    "feature": name,
                    "injected": drift.get(name, 0.0),
                    "tollgate_test": table.tests()[j],
                    "tollgate_value": round(float(table.effect[j]), 5),
                    "tollgate_drifted": bool(table.drifted[j]),
                    "evidently_test": ev[name]["method"],
                    "evidently_value": round(ev[name]["value"], 5),
                    "evidently_drifted": ev[name]["drifted"],
                }
            )
    agree = sum(r["tollgate_drifted"] == r["evidently_drifted"] for r in rows)
    injected_caught = [r for r in rows if abs(r["injected"]) >= 1.0]
    disagreements = [r for r in rows if r["tollgate_drifted"] != r["evidently_drifted"]]

    print(f"\n{'window':<42} {'feature':<30} {'tollgate':>16} {'evidently':>16}")
    for r in rows:
        if r["injected"] or r["tollgate_drifted"] or r["evidently_drifted"]:
            t = f"{r['tollgate_value']:.3f} {'DRIFT' if r['tollgate_drifted'] else 'ok':>5}"
            e = f"{r['evidently_value']:.3f} {'DRIFT' if r['evidently_drifted'] else 'ok':>5}"
            print(f"{r['scenario']:<42} {r['feature']:<30} {t:>16} {e:>16}")
    speedup = evidently_ms / ours_ms
    print(
        f"\nverdicts: {agree}/{len(rows)} agree; drifted by tollgate {sum(r['tollgate_drifted'] for r in rows)}, "
        f"by evidently {sum(r['evidently_drifted'] for r in rows)}"
    )
    print(
        f"median per 10,000 x 20 window: tollgate {ours_ms:.2f} ms (from counts {counts_ms:.3f} ms), "
        f"evidently {evidently_ms:.1f} ms -> {speedup:.0f}x"
    )

    result = {
        "rows": ROWS,
        "features": len(names),
        "windows": len(WINDOWS),
        "tollgate_median_ms": round(ours_ms, 3),
        "tollgate_from_counts_median_ms": round(counts_ms, 4),
        "evidently_median_ms": round(evidently_ms, 1),
        "speedup_ratio": round(speedup, 1),
        "tollgate_runs_ms": [round(x, 3) for x in ours_runs],
        "evidently_runs_ms": [round(s * 1000, 1) for s in peer["seconds"]],
        "verdict_agreement": {
            "agree": agree,
            "total": len(rows),
            "share": round(agree / len(rows), 4),
            "disagreements": disagreements,
        },
        "injected_drift_caught": {
            "tollgate": sum(r["tollgate_drifted"] for r in injected_caught),
            "evidently": sum(r["evidently_drifted"] for r in injected_caught),
            "of": len(injected_caught),
        },
        "thresholds": {"psi": PSI_THRESHOLD, "jensen_shannon": JS_THRESHOLD},
        "peer": {
            "evidently": peer["version"],
            "pandas": peer["pandas"],
            "numpy": peer["numpy"],
            "preset": "DataDriftPreset(num_method='psi', num_threshold=0.2, cat_method='jensenshannon', "
            "cat_threshold=0.1)",
        },
        "verdicts": rows,
        "targets": [
            {
                "name": "tollgate drift per 10,000 x 20 window",
                "op": "<=",
                "target": 50,
                "measured": ours_ms,
                "met": ours_ms <= 50,
            },
            {
                "name": "speed-up over Evidently",
                "op": ">=",
                "target": 10,
                "measured": speedup,
                "met": speedup >= 10,
            },
            {
                "name": "identical verdicts per feature",
                "op": "==",
                "target": len(rows),
                "measured": agree,
                "met": agree == len(rows),
            },
        ],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
