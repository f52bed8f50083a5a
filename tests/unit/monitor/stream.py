"""A monitor without Kafka or PostgreSQL: windows of generated records through the domain code only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from tests.unit.monitor.standin import stand_in_scores
from tollgate_core.contracts import DatasetContract
from tollgate_demo.datasets import generate_records
from tollgate_monitor.alerts import Change, Hysteresis
from tollgate_monitor.drift import Layout
from tollgate_monitor.evaluate import Thresholds, WindowReport, judge, observe
from tollgate_monitor.windows import DueWindow, count_window


@dataclass
class Run:
    reports: list[WindowReport] = field(default_factory=list)
    changes: list[tuple[int, Change]] = field(default_factory=list)  # (window index, change)

    def raised(self, kind: str) -> list[int]:
        return [i for i, c in self.changes if c.kind.value == kind and c.state.value == "raised"]


def run_windows(
    contract: DatasetContract,
    layout: Layout,
    windows: int,
    rows: int,
    *,
    seed: int,
    drift_from: int | None = None,
    drift_until: int | None = None,
    drift: Mapping[str, float] | None = None,
    th: Thresholds | None = None,
    latency_ms: float = 5.0,
) -> Run:
    """Judge ``windows`` tumbling windows of ``rows`` generated records; windows ``drift_from`` up to (not
    including) ``drift_until`` carry ``drift``."""
    th = th or Thresholds()
    states: dict[str, Hysteresis] = {}
    run = Run()
    for i in range(windows):
        drifted = drift_from is not None and drift_from <= i < (
            drift_until if drift_until is not None else windows
        )
        records = generate_records(
            contract, rows, seed=seed + i, drift=drift if drifted else None, start=i * rows
        )
        counts = count_window(
            layout, records, stand_in_scores(records), np.full(rows, latency_ms), np.full(rows, 60.0 * i)
        )
        report = judge(layout, DueWindow("m", "1", i, 60.0 * i, 60.0 * (i + 1), counts, 1), th)
        run.reports.append(report)
        run.changes.extend((i, c) for c in observe(report, states, th))
    return run
