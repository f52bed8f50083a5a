"""Run every benchmark (``tests/bench/bench_*.py``) in turn and print a combined summary.

Each benchmark is a program that measures its peer in the same run, prints its own tables and writes its
results to ``.local/bench/<name>.json`` (``bench_scorer.py`` -> ``scorer.json``). This runner starts them one
after the other (never two at once: they would measure each other), streams their output, then reads the
result files they wrote and prints one summary: status, time taken, headline numbers and, where a benchmark
reports them, its targets as met or not. The summary goes to ``.local/bench/summary.json``.

Targets missed are reported, not failed: benchmarks are measurements, not assertions. The exit code is
non-zero only when a benchmark itself fails (crashes or exits non-zero).

Usage: ``python tests/bench/run.py [--only scorer,pipeline] [--list]``; ``make bench`` runs it after
starting Kafka and PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BENCH_DIR = Path(__file__).resolve().parent
OUT_DIR = ROOT / ".local" / "bench"


def benchmarks() -> dict[str, Path]:
    return {p.stem.removeprefix("bench_"): p for p in sorted(BENCH_DIR.glob("bench_*.py"))}


def headline(result: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Numbers worth a line: a benchmark's own ``headline`` mapping when it has one, else its top-level
    ratios, rates and medians (nested one level for dicts of them)."""
    lines: list[tuple[str, Any]] = []
    if not isinstance(result, dict):
        return lines
    own = result.get("headline")
    if isinstance(own, dict):
        return [(k, v) for k, v in own.items() if isinstance(v, int | float) and not isinstance(v, bool)]
    for key, value in result.items():
        wanted = any(word in key for word in ("ratio", "per_second", "events_per_s", "median", "speedup"))
        if isinstance(value, int | float) and not isinstance(value, bool) and wanted:
            lines.append((prefix + key, value))
        elif isinstance(value, dict) and wanted and not prefix:
            lines.extend(
                headline({f"{key}.{k}": v for k, v in value.items() if isinstance(v, int | float)}, "")
            )
    return lines


def targets_of(result: Any) -> list[dict[str, Any]]:
    """A benchmark's targets when it lists them as ``[{"name", "met", ...}]``."""
    targets = result.get("targets") if isinstance(result, dict) else None
    if isinstance(targets, list):
        return [t for t in targets if isinstance(t, dict) and "met" in t]
    return []


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the benchmarks in tests/bench one after the other.")
    parser.add_argument("--only", help="comma-separated benchmark names (e.g. scorer,pipeline)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args()

    found = benchmarks()
    if args.list:
        for name, path in found.items():
            print(f"{name:<12} {path.relative_to(ROOT)}")
        return 0
    selected = found
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in found]
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)}; have {', '.join(found)}")
        selected = {n: found[n] for n in wanted}

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {}
    for name, path in selected.items():
        out = OUT_DIR / f"{name}.json"
        print(f"\n=== {name}: {path.relative_to(ROOT)} ===", flush=True)
        started = time.time()
        code = subprocess.run([sys.executable, str(path)], cwd=ROOT, check=False).returncode
        elapsed = time.time() - started
        result: Any = None
        if out.is_file() and out.stat().st_mtime >= started:
            try:
                result = json.loads(out.read_text())
            except ValueError:
                result = None
        summary[name] = {
            "exit_code": code,
            "seconds": round(elapsed, 1),
            "result_file": str(out.relative_to(ROOT)) if result is not None else None,
            "headline": dict(headline(result)),
            "targets": targets_of(result),
        }

    print("\n=== summary ===")
    for name, entry in summary.items():
        state = "ok" if entry["exit_code"] == 0 else f"FAILED (exit {entry['exit_code']})"
        where = entry["result_file"] or "no result file written"
        print(f"{name:<12} {state:<18} {entry['seconds']:>7.0f} s   {where}")
        for key, value in entry["headline"].items():
            print(f"    {key:<48} {value:,.3f}" if abs(value) < 100 else f"    {key:<48} {value:,.0f}")
        for t in entry["targets"]:
            met = "not measured" if t["met"] is None else ("met" if t["met"] else "NOT met")
            measured = t.get("measured")
            shown = "n/a" if measured is None else f"{measured:,.2f}"
            label = f"{t.get('model', '')} {t.get('name', '')}".strip()
            print(f"    target {label:<62} {t.get('op', '')} {t.get('target', '')!s:<8} {shown:>10}  {met}")
    (OUT_DIR / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwritten to {(OUT_DIR / 'summary.json').relative_to(ROOT)}")
    return 0 if all(entry["exit_code"] == 0 for entry in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
