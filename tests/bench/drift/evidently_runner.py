"""Runs inside Evidently's own virtualenv (never imports tollgate): Evidently's data-drift report on the
windows the benchmark wrote, with its tests set to the monitor's decision rules.

Input JSON: {"numeric": [...], "categorical": [...], "reference": {column: values}, "windows": [{column:
values}, ...], "timing_window": i, "repeats": n, "psi_threshold": x, "js_threshold": y}. Output JSON: per
window and column the statistic and verdict, and the seconds of each timed run of the report.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset


def frame(columns: dict[str, list[Any]], numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    data: dict[str, Any] = {}
    for name in numeric:
        data[name] = pd.to_numeric(pd.Series(columns[name], dtype="object"), errors="coerce").astype(
            "float64"
        )
    for name in categorical:
        data[name] = pd.Series([None if v is None else str(v) for v in columns[name]], dtype="object")
    return pd.DataFrame(data)


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    numeric, categorical = spec["numeric"], spec["categorical"]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    reference = Dataset.from_pandas(
        frame(spec["reference"], numeric, categorical), data_definition=definition
    )
    preset = DataDriftPreset(
        num_method="psi",
        num_threshold=spec["psi_threshold"],
        cat_method="jensenshannon",
        cat_threshold=spec["js_threshold"],
    )

    def run(window: dict[str, list[Any]]) -> tuple[dict[str, dict[str, Any]], float]:
        current_frame = frame(window, numeric, categorical)
        started = time.perf_counter()
        current = Dataset.from_pandas(current_frame, data_definition=definition)
        snapshot = Report([preset]).run(current, reference)
        elapsed = time.perf_counter() - started
        out = {}
        for metric in snapshot.dict()["metrics"]:
            config = metric["config"]
            if config.get("type", "").endswith("ValueDrift"):
                value = float(metric["value"])
                out[config["column"]] = {
                    "method": config["method"],
                    "value": value,
                    "drifted": bool(value >= config["threshold"]),
                }
        return out, elapsed

    run(spec["windows"][0])  # warm-up: imports and first-call costs are not the report's
    results = []
    for window in spec["windows"]:
        verdicts, _ = run(window)
        results.append(verdicts)
    timing = spec["windows"][spec["timing_window"]]
    seconds = [run(timing)[1] for _ in range(spec["repeats"])]
    import evidently

    result = {
        "windows": results,
        "seconds": seconds,
        "version": evidently.__version__,
        "pandas": pd.__version__,
        "numpy": np.__version__,
    }
    Path(sys.argv[2]).write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main()
