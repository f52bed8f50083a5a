"""Training benchmark: time each phase of ``train_model`` per model family on synthetic-risk.

    python tests/bench/bench_training.py [--rows 100000] [--runs 3] [--out .local/bench/training.json]
                                         [--threads N] [--families a,b] [--signatures]

For ``--rows`` records of the 20-feature synthetic-risk contract and each family, it runs ``train_model``
``--runs`` times and reports the median seconds of each phase (prepare, fit, evaluate, convert, parity,
reference), the ONNX size, the parity figures and the holdout ROC AUC, plus each family's total as a ratio
of the logistic-regression total measured in the same run. It also checks that the repeated runs produced
byte-identical ONNX.

``--signatures`` also measures what chose the ONNX input signature: onnxruntime latency of one model
with two inputs (a double block and a string block) against the same fitted model with one input per
feature, for 1 row and 1000 rows, on one thread.

It prints a table and writes everything as JSON; it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from tollgate_core.contracts import ContractRegistry, DatasetContract
from tollgate_demo.datasets import generate_records
from tollgate_trainer.export import TARGET_OPSET, onnx_session
from tollgate_trainer.features import FeatureLayout, LabelEncoding, raw_frame
from tollgate_trainer.pipeline import MODEL_FAMILIES, ModelFamily, build_pipeline
from tollgate_trainer.train import TrainingConfig, library_versions, train_model

PHASES = ("prepare", "fit", "evaluate", "convert", "parity", "reference", "total")
SEED = 7


def bench_training(
    contract: DatasetContract,
    records: list[dict[str, Any]],
    families: list[ModelFamily],
    runs: int,
    threads: int | None,
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for family in families:
        timings: list[dict[str, float]] = []
        digests: set[str] = set()
        last = None
        for run in range(runs):
            result = train_model(contract, records, TrainingConfig(family=family, seed=SEED, threads=threads))
            timings.append(result.timings)
            digests.add(result.digest)
            last = result
            print(
                f"  {family} run {run + 1}/{runs}: {result.timings['total']:.2f} s",
                file=sys.stderr,
                flush=True,
            )
        assert last is not None
        results[family] = {
            "median_seconds": {p: statistics.median(t[p] for t in timings) for p in PHASES},
            "all_seconds": timings,
            "onnx_bytes": len(last.onnx),
            "reproducible": len(digests) == 1,
            "digest": last.digest,
            "parity": last.parity.model_dump(mode="json"),
            "metrics": last.metrics,
            "hyperparameters": last.hyperparameters,
            "train_rows": last.train_rows,
            "holdout_rows": last.holdout_rows,
        }
    return results


def bench_signatures(contract: DatasetContract, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Two-block inputs against one input per feature, same fitted model, onnxruntime on one thread."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType

    from tollgate_trainer.export import _register_converters, export_onnx

    _register_converters()
    layout = FeatureLayout.from_contract(contract)
    raw = raw_frame(contract, records[:20_000])
    frame = layout.model_frame(raw)
    encoding = LabelEncoding.fit(
        contract.label, raw[contract.label.name].tolist(), contract.label.positive_class
    )
    y = encoding.encode(raw[contract.label.name].tolist())
    out: dict[str, Any] = {}
    for family in MODEL_FAMILIES:
        pipeline = build_pipeline(contract, family, {"n_jobs": 1} if family == "random_forest" else {}, SEED)
        pipeline.fit(frame, y)
        two_blocks = export_onnx(pipeline, contract, encoding).onnx
        # Column positions map one to one onto single-column inputs, so the same fitted pipeline converts.
        per_feature_types: list[tuple[str, Any]] = [(n, DoubleTensorType([None, 1])) for n in layout.numeric]
        per_feature_types += [(n, StringTensorType([None, 1])) for n in layout.category]
        per_feature = convert_sklearn(
            pipeline,
            initial_types=per_feature_types,
            options={id(pipeline.steps[-1][1]): {"zipmap": False}},
            target_opset=TARGET_OPSET,
        ).SerializeToString()
        sessions = {"two_blocks": onnx_session(two_blocks), "per_feature": onnx_session(per_feature)}
        row = records[-1]
        figures: dict[str, float] = {}
        for rows in (1, 1000):
            block = frame.iloc[-rows:]
            feeds = {
                "two_blocks": layout.onnx_inputs(block),
                "per_feature": {
                    **{n: block[[n]].to_numpy(dtype=np.float64) for n in layout.numeric},
                    **{n: block[[n]].to_numpy(dtype=object) for n in layout.category},
                },
            }
            for name, session in sessions.items():
                figures[f"{name}_{rows}_rows_us"] = _median_us(
                    lambda s=session, f=feeds[name]: s.run(None, f)
                )
        # One row built from a JSON-like record, as a server does it, then scored.
        two, per = sessions["two_blocks"], sessions["per_feature"]
        figures["two_blocks_1_row_with_feed_building_us"] = _median_us(
            lambda s=two, r=row: s.run(None, _two_block_feeds(layout, r))
        )
        figures["per_feature_1_row_with_feed_building_us"] = _median_us(
            lambda s=per, r=row: s.run(None, _per_feature_feeds(layout, r))
        )
        out[family] = figures
    return out


def _two_block_feeds(layout: FeatureLayout, row: dict[str, Any]) -> dict[str, np.ndarray]:
    numeric = np.array(
        [[np.nan if row[n] is None else float(row[n]) for n in layout.numeric]], dtype=np.float64
    )
    category = np.array([["" if row[n] is None else row[n] for n in layout.category]], dtype=object)
    return {"numeric": numeric, "category": category}


def _per_feature_feeds(layout: FeatureLayout, row: dict[str, Any]) -> dict[str, np.ndarray]:
    feeds = {
        n: np.array([[np.nan if row[n] is None else float(row[n])]], dtype=np.float64) for n in layout.numeric
    }
    feeds.update({n: np.array([["" if row[n] is None else row[n]]], dtype=object) for n in layout.category})
    return feeds


def _median_us(call: Any, repeat: int = 7, min_seconds: float = 0.05) -> float:
    call()
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            call()
        if time.perf_counter() - start >= min_seconds:
            break
        number *= 2
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            call()
        samples.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(samples)


def print_training_table(results: dict[str, Any], runs: int) -> None:
    base = results.get("logistic_regression", {}).get("median_seconds", {}).get("total")
    print(f"\nmedian seconds of {runs} run(s) per phase")
    header = f"{'family':24}" + "".join(f"{p:>10}" for p in PHASES) + f"{'vs LR':>8}{'ONNX MB':>9}"
    print(header + f"{'parity max diff':>17}{'rows checked':>14}{'AUC':>7}{'same bytes':>12}")
    for family, r in results.items():
        s = r["median_seconds"]
        ratio = f"{s['total'] / base:.1f}x" if base else "-"
        print(
            f"{family:24}"
            + "".join(f"{s[p]:10.2f}" for p in PHASES)
            + f"{ratio:>8}{r['onnx_bytes'] / 1e6:9.2f}"
            + f"{r['parity']['max_abs_diff']:17.2e}{r['parity']['rows_checked']:14d}"
            + f"{r['metrics'].get('roc_auc', float('nan')):7.3f}{r['reproducible']!s:>12}"
        )


def print_signature_table(results: dict[str, Any]) -> None:
    print(
        "\nonnxruntime latency (us, median, 1 thread): "
        "two inputs [double N x k, string N x m] vs one input per feature"
    )
    print(
        f"{'family':24}{'2 inputs, 1 row':>17}{'per feature':>13}{'ratio':>7}"
        f"{'2 inputs, 1000':>16}{'per feature':>13}"
    )
    for family, f in results.items():
        print(
            f"{family:24}{f['two_blocks_1_rows_us']:17.1f}{f['per_feature_1_rows_us']:13.1f}"
            f"{f['per_feature_1_rows_us'] / f['two_blocks_1_rows_us']:7.2f}"
            f"{f['two_blocks_1000_rows_us']:16.1f}{f['per_feature_1000_rows_us']:13.1f}"
        )
    print("with building the feeds from one record:")
    for family, f in results.items():
        two, per = f["two_blocks_1_row_with_feed_building_us"], f["per_feature_1_row_with_feed_building_us"]
        print(f"{family:24}{two:17.1f}{per:13.1f}{per / two:7.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument(
        "--runs", type=int, default=3, help="runs per family; the median of each phase is kept"
    )
    parser.add_argument("--out", type=Path, default=Path(".local/bench/training.json"))
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for training (default: all)")
    parser.add_argument("--families", default=",".join(MODEL_FAMILIES))
    parser.add_argument("--signatures", action="store_true", help="also measure the ONNX input signatures")
    args = parser.parse_args(argv)
    families: list[ModelFamily] = []
    for name in args.families.split(","):
        if name not in MODEL_FAMILIES:
            parser.error(f"unknown family {name!r}")
        families.append(name)

    contract = ContractRegistry.from_directory().latest("synthetic-risk")
    start = time.perf_counter()
    records = generate_records(contract, args.rows, seed=SEED)
    generate_seconds = time.perf_counter() - start
    print(
        f"synthetic-risk: {args.rows} rows x {len(contract.features)} features "
        f"generated in {generate_seconds:.2f} s",
        file=sys.stderr,
    )
    report: dict[str, Any] = {
        "benchmark": "training",
        "contract": contract.schema_id,
        "rows": args.rows,
        "features": len(contract.features),
        "runs": args.runs,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "libraries": library_versions(),
        "generate_seconds": generate_seconds,
        "training": bench_training(contract, records, families, args.runs, args.threads),
    }
    print_training_table(report["training"], args.runs)
    if args.signatures:
        report["signatures"] = bench_signatures(contract, records)
        print_signature_table(report["signatures"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
